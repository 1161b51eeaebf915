/*
 * bench_signer.c - what the signer process costs a signature (issue 20): T
 * threads sign 10 KB contents for S seconds with the key in this process
 * (pec_signer_new_key, as pecd did before) and then through a signer
 * process (keys_start: the keeper, the signer, the socket pool), in the same
 * run; prints signatures per second and the CPU time of a signature (this
 * process and its children: the signer's share counted).
 *
 * Usage: bench_signer pecd.conf THREADS SECONDS (bench/keys/run makes the
 * configuration and the keys).
 */
#include "keys/keys.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static pec_signer *signer;
static atomic_bool stop;
static atomic_long done;
static unsigned char content[10240];

static void *worker(void *arg)
{
    (void)arg;
    char err[256];
    while (!atomic_load(&stop)) {
        pec_buf der;
        if (signer->sign(signer->ctx, content, sizeof content, &der, err, sizeof err) != 0) {
            fprintf(stderr, "sign: %s\n", err);
            exit(1);
        }
        pec_buf_free(&der);
        atomic_fetch_add(&done, 1);
    }
    return NULL;
}

/* CPU seconds of this process and of the processes below it (their /proc). */
static double cpu_tree(pid_t pid)
{
    char p[64], buf[4096];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *r = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (r == NULL || sscanf(r + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st) != 2)
        return 0;
    double t = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    snprintf(p, sizeof p, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    if ((f = fopen(p, "r")) != NULL) {
        int c;
        while (fscanf(f, "%d", &c) == 1)
            t += cpu_tree(c);
        fclose(f);
    }
    return t;
}

static void run(const char *what, int threads, int secs)
{
    pthread_t th[64];
    atomic_store(&stop, false);
    atomic_store(&done, 0);
    double c0 = cpu_tree(getpid());
    int64_t t0 = clock_ms();
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    sleep((unsigned)secs);
    atomic_store(&stop, true);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double wall = (double)(clock_ms() - t0) / 1000.0, cpu = cpu_tree(getpid()) - c0;
    long n = atomic_load(&done);
    printf("%-8s %2d threads: %7.1f signatures/s, %.3f ms CPU per signature\n", what, threads,
           (double)n / wall, 1000.0 * cpu / (double)n);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: bench_signer pecd.conf THREADS SECONDS\n");
        return 2;
    }
    log_init("bench_signer", LOG_LVL_WARN);
    int threads = atoi(argv[2]), secs = atoi(argv[3]);
    if (threads < 1 || threads > 64)
        threads = 8;
    char err[1024];
    struct config *cfg = config_load(argv[1], err, sizeof err);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    memset(content, 'x', sizeof content);
    struct keys_client *c = keys_start(cfg, err, sizeof err);   /* before any thread */
    if (c == NULL || keys_client_run(c) == -1) {
        fprintf(stderr, "signer: %s\n", err);
        return 1;
    }
    struct keys_hsm *hsm = NULL;
    pec_signer *local = keys_load_pec_signer(cfg, &hsm, err, sizeof err);
    if (local == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int round = 0; round < 2; round++) {
        signer = local;
        run("local", threads, secs);
        signer = keys_client_pec_signer(c);
        run("signer", threads, secs);
    }
    pec_signer_free(local);
    keys_hsm_close(hsm);
    keys_client_stop(c);
    config_free(cfg);
    return 0;
}
