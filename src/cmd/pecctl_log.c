/*
 * pecctl_log.c - the evidence log from the command line (src/store/evidence.h):
 *
 *   pecctl -c CONF log verify [--cert FILE | --no-cert]   hash chain + day seals
 *   pecctl -c CONF log seal                                seal finished days now
 *   pecctl -c CONF log purge                               apply [evidence] retention
 *   pecctl -c CONF trace MESSAGE-ID                        the life of a PEC message
 *
 * Interface: pecctl_log_main(cfg, argc, argv) with argv[0] == "log",
 * pecctl_trace_main(cfg, argc, argv) with argv[0] == "trace".
 * Exit: 0 intact / found; 1 tampered / nothing found; 2 usage or unreadable.
 * seal and purge are what pecd does by itself; they are here for an instance
 * that is stopped (SQLite locking makes them safe beside a running pecd too).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/config.h"
#include "keys/keys.h"
#include "lib/lib.h"
#include "pec/pec.h"
#include "store/evidence.h"
#include "store/state.h"

int pecctl_log_main(struct config *cfg, int argc, char **argv);
int pecctl_trace_main(struct config *cfg, int argc, char **argv);
/* pecctl_report.c */
int pecctl_log_search(struct config *cfg, int argc, char **argv);
int pecctl_log_extract(struct config *cfg, int argc, char **argv);
int pecctl_log_hold(struct config *cfg, int argc, char **argv);

static void usage(FILE *f)
{
    fprintf(f, "usage: pecctl -c CONF log verify [--cert FILE | --no-cert] [--json] [FILE]\n"
               "       pecctl -c CONF log export --day YYYY-MM-DD [--out FILE]\n"
               "       pecctl -c CONF log seal\n"
               "       pecctl -c CONF log purge\n"
               "       pecctl -c CONF log search|extract|hold ...  (pecctl help)\n"
               "       pecctl -c CONF trace MESSAGE-ID [--json]\n"
               "  verify: exit 0 intact, 1 tampered (the first broken record or day is named),\n"
               "          2 unreadable; the seals are checked against [pec] signing_certificate\n");
}

static int log_verify(struct config *cfg, int argc, char **argv)
{
    /* cfg is NULL for `pecctl log verify FILE` on a host without pecd.conf */
    const char *cert = cfg ? cfg->pec_signing_cert : NULL, *file = NULL;
    bool json = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--no-cert") == 0) {
            cert = NULL;
        } else if (argv[i][0] != '-' && file == NULL) {
            file = argv[i];      /* an exported day, or a copy of a log */
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (cfg == NULL && file == NULL) {
        usage(stderr);
        return 2;
    }
    const char *path = file ? file : state_evidence_at(cfg);
    char err[1024];
    time_t now = time(NULL);
    struct evidence_verify_opts o = {.cert_pem_file = cert, .now = now};
    /* a purge may not reach into the retention period (one day of slack:
     * purge removes whole days); a file given is judged on its own */
    if (file == NULL && cfg->evidence_retention > 0 && (time_t)cfg->evidence_retention < now)
        o.keep_after = now - (time_t)cfg->evidence_retention + 86400;
    if (!json) {
        int r = evidence_verify_ex(path, &o, stdout, err, sizeof err);
        return r == 0 ? 0 : r == -1 ? 1 : 2;
    }
    /* --json: the same report, one line an element, and the verdict */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (mem == NULL)
        return 2;
    err[0] = '\0';
    int r = evidence_verify_ex(path, &o, mem, err, sizeof err);
    fclose(mem);
    fputs("{\"path\":", stdout);
    json_fput(stdout, file ? file : state_shown(cfg));
    printf(",\"result\":\"%s\",\"valid\":%s,\"report\":[",
           r == 0 ? "intact" : r == -1 ? "tampered" : "unreadable", r == 0 ? "true" : "false");
    size_t k = 0;
    for (char *line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (k++)
            putchar(',');
        json_fput(stdout, line);
    }
    fputs("],\"error\":", stdout);
    json_fput(stdout, err[0] ? err : NULL);
    fputs("}\n", stdout);
    free(buf);
    return r == 0 ? 0 : r == -1 ? 1 : 2;
}

static int sign_with_pec(void *ctx, const void *data, size_t len, unsigned char **der,
                         size_t *derlen, char *err, size_t errlen)
{
    pec_signer *s = ctx;
    pec_buf b = {0};
    if (s->sign(s->ctx, data, len, &b, err, errlen) != 0)
        return -1;
    *der = b.data;
    *derlen = b.len;
    return 0;
}

/* The signing key (a PEM file or a hardware module's, src/keys); the
 * module stays open while the seals are made. */
static struct keys_hsm *seal_hsm;

static pec_signer *load_signer(struct config *cfg)
{
    char err[1024];
    if (cfg->pec_signing_key == NULL || cfg->pec_signing_cert == NULL) {
        fprintf(stderr, "pecctl: [pec] signing_key and signing_certificate are needed to seal\n");
        return NULL;
    }
    pec_signer *s = keys_load_pec_signer(cfg, &seal_hsm, err, sizeof err);
    if (s == NULL)
        fprintf(stderr, "pecctl: %s\n", err);
    return s;
}

static int log_maintain(struct config *cfg, bool purge)
{
    char err[1024];
    pec_signer *signer = purge ? NULL : load_signer(cfg);
    if (!purge && signer == NULL)
        return 2;
    struct evidence *ev = evidence_open(state_evidence_at(cfg), err, sizeof err);
    if (ev == NULL) {
        fprintf(stderr, "pecctl: %s\n", err);
        pec_signer_free(signer);
        return 2;
    }
    int r;
    time_t now = time(NULL);
    if (purge) {
        time_t limit = 0;
        if (cfg->evidence_retention < (uint64_t)now)
            limit = now - (time_t)cfg->evidence_retention;
        r = evidence_purge(ev, limit, err, sizeof err);
        if (r >= 0)
            printf("%d day(s) purged\n", r);
    } else {
        evidence_set_signer(ev, sign_with_pec, signer);
        r = evidence_seal(ev, now, err, sizeof err);
        if (r >= 0)
            printf("%d day(s) sealed\n", r);
    }
    if (r < 0)
        fprintf(stderr, "pecctl: %s\n", err);
    evidence_close(ev);
    pec_signer_free(signer);
    keys_hsm_close(seal_hsm);
    seal_hsm = NULL;
    return r < 0 ? 2 : 0;
}

/* log export --day D [--out FILE]: a sealed day as a file of its own (the
 * shared log: every node's chain of that day, evidence_export_chains.c) */
static int log_export(struct config *cfg, int argc, char **argv)
{
    const char *day = NULL, *out = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--day") == 0 && i + 1 < argc)
            day = argv[++i];
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out = argv[++i];
        else
            day = NULL, i = argc;
    }
    if (day == NULL) {
        fprintf(stderr, "usage: pecctl -c CONF log export --day YYYY-MM-DD [--out FILE]\n");
        return 2;
    }
    char name[64];
    if (out == NULL) {
        snprintf(name, sizeof name, "evidence-%.16s.db", day);
        out = name;
    }
    char err[1024];
    long long n = evidence_export_day(state_evidence_at(cfg), day, out, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "pecctl log export: %s\n", err);
        return 1;
    }
    printf("%s: day %s, %lld record%s and %s; check it with pecctl log verify "
           "%s --cert SIGNING-CERT.pem\n",
           out, day, n, n == 1 ? "" : "s",
           state_shared(cfg) ? "every node's chain's seal of the day (the shared log)"
                             : "the day's seal",
           out);
    return 0;
}

int pecctl_log_main(struct config *cfg, int argc, char **argv)
{
    if (cfg == NULL)     /* pecctl log verify FILE without pecd.conf */
        return argc >= 2 && strcmp(argv[1], "verify") == 0 ? log_verify(NULL, argc, argv) : 2;
    if (argc >= 2 && strcmp(argv[1], "export") == 0)
        return log_export(cfg, argc, argv);
    if (argc >= 2 && strcmp(argv[1], "search") == 0)
        return pecctl_log_search(cfg, argc, argv);
    if (argc >= 2 && strcmp(argv[1], "extract") == 0)
        return pecctl_log_extract(cfg, argc, argv);
    if (argc >= 2 && strcmp(argv[1], "hold") == 0)
        return pecctl_log_hold(cfg, argc, argv);
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return log_verify(cfg, argc, argv);
    if (argc == 2 && strcmp(argv[1], "seal") == 0)
        return log_maintain(cfg, false);
    if (argc == 2 && strcmp(argv[1], "purge") == 0)
        return log_maintain(cfg, true);
    usage(stderr);
    return 2;
}

int pecctl_trace_main(struct config *cfg, int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[2], "--json") == 0) {
        char err[512];
        int n = evidence_trace_json(state_evidence_at(cfg), argv[1], stdout, err, sizeof err);
        if (n < 0)
            fprintf(stderr, "pecctl trace: %s\n", err);
        return n > 0 ? 0 : n == 0 ? 1 : 2;
    }
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    int r = evidence_trace(state_evidence_at(cfg), argv[1], stdout);
    return r == 0 ? 0 : r == 1 ? 1 : 2;
}
