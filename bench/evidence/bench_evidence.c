/*
 * bench_evidence.c - evidence log appends per second (src/store/evidence.c)
 * with T threads appending at once (the provider's delivery workers and
 * listeners), synchronous=FULL + group commit, on the given directory.
 *
 * Usage: bench_evidence DIR [SECONDS] [THREADS...]
 * Prints one "threads T appends_per_s N tx_per_s M cpu_us_per_append C" line per
 * thread count
 * (tx = 5 events, the events of one PEC transaction), then verifies the log.
 */
#include <pthread.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/evidence.h"

static struct evidence *ev;
static atomic_int stop;
static atomic_long total;

static double cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    char pec[96], key[96], err[256];
    static const char *types[] = {"accettazione", "busta-trasporto", "presa-in-carico",
                                  "avvenuta-consegna", "ricevuta-ricevuta"};
    for (long i = 0; !atomic_load(&stop); i++) {
        snprintf(pec, sizeof pec, "opec275.20250310090000.%ld.%ld@pec.a.example", id, i / 5);
        snprintf(key, sizeof key, "T%ld/%ld", id, i);
        struct evidence_event e = {.type = types[i % 5],
                                   .pec_id = pec,
                                   .orig_msgid = "20250310090000.12345@mua.example",
                                   .message_id = pec,
                                   .sender = "alice@pec.a.example",
                                   .recipients = "bob@pec.b.example",
                                   .subject = "Fattura n. 42 del 10/03/2025",
                                   .outcome = "ok",
                                   .queue_id = "1741597200.123456",
                                   .dedupe_key = key};
        if (evidence_append(ev, &e, err, sizeof err) != 0) {
            fprintf(stderr, "append: %s\n", err);
            exit(1);
        }
        atomic_fetch_add(&total, 1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_evidence DIR [SECONDS] [THREADS...]\n");
        return 2;
    }
    double secs = argc > 2 ? atof(argv[2]) : 3;
    int counts[16] = {1, 4, 16, 64}, ncounts = 4;
    if (argc > 3) {
        ncounts = 0;
        for (int i = 3; i < argc && ncounts < 16; i++)
            counts[ncounts++] = atoi(argv[i]);
    }
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/bench-evidence.db", argv[1]);
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
    long all = 0;
    ev = evidence_open(path, err, sizeof err);
    if (ev == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int c = 0; c < ncounts; c++) {
        int t = counts[c];
        pthread_t th[256];
        atomic_store(&stop, 0);
        atomic_store(&total, 0);
        double t0 = now(), c0 = cpu();
        for (long i = 0; i < t && i < 256; i++)
            pthread_create(&th[i], NULL, worker, (void *)(c * 1000L + i));
        usleep((useconds_t)(secs * 1e6));
        atomic_store(&stop, 1);
        for (int i = 0; i < t && i < 256; i++)
            pthread_join(th[i], NULL);
        double dt = now() - t0;
        all += atomic_load(&total);
        double rate = (double)atomic_load(&total) / dt;
        printf("threads %d appends_per_s %.0f tx_per_s %.0f cpu_us_per_append %.1f\n", t, rate,
               rate / 5, (cpu() - c0) * 1e6 / (double)atomic_load(&total));
        fflush(stdout);
    }
    evidence_close(ev);
    double t0 = now();
    int r = evidence_verify(path, NULL, NULL, err, sizeof err);
    printf("verify %s records %ld records_per_s %.0f\n", r == 0 ? "intact" : err, all,
           (double)all / (now() - t0));
    return r == 0 ? 0 : 1;
}
