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
    fprintf(f, "usage: pecctl -c CONF log verify [--cert FILE | --no-cert] [--json]\n"
               "       pecctl -c CONF log seal\n"
               "       pecctl -c CONF log purge\n"
               "       pecctl -c CONF log search|extract|hold ...  (pecctl help)\n"
               "       pecctl -c CONF trace MESSAGE-ID [--json]\n"
               "  verify: exit 0 intact, 1 tampered (the first broken record or day is named),\n"
               "          2 unreadable; the seals are checked against [pec] signing_certificate\n");
}

static int log_verify(struct config *cfg, int argc, char **argv)
{
    const char *cert = cfg->pec_signing_cert;
    bool json = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--no-cert") == 0) {
            cert = NULL;
        } else {
            usage(stderr);
            return 2;
        }
    }
    char err[1024];
    time_t now = time(NULL);
    struct evidence_verify_opts o = {.cert_pem_file = cert, .now = now};
    /* a purge may not reach into the retention period (one day of slack:
     * purge removes whole days) */
    if (cfg->evidence_retention > 0 && (time_t)cfg->evidence_retention < now)
        o.keep_after = now - (time_t)cfg->evidence_retention + 86400;
    if (!json) {
        int r = evidence_verify_ex(state_evidence_at(cfg), &o, stdout, err, sizeof err);
        return r == 0 ? 0 : r == -1 ? 1 : 2;
    }
    /* --json: the same report, one line an element, and the verdict */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (mem == NULL)
        return 2;
    err[0] = '\0';
    int r = evidence_verify_ex(state_evidence_at(cfg), &o, mem, err, sizeof err);
    fclose(mem);
    fputs("{\"path\":", stdout);
    json_fput(stdout, state_shown(cfg));
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

static pec_signer *load_signer(struct config *cfg)
{
    char err[512];
    char *key = NULL, *chain = NULL;
    size_t keylen = 0, chainlen = 0;
    if (cfg->pec_signing_key == NULL || cfg->pec_signing_cert == NULL) {
        fprintf(stderr, "pecctl: [pec] signing_key and signing_certificate are needed to seal\n");
        return NULL;
    }
    if (fs_read_file(cfg->pec_signing_key, &key, &keylen, 1 << 20) != 0 ||
        fs_read_file(cfg->pec_signing_cert, &chain, &chainlen, 1 << 20) != 0) {
        fprintf(stderr, "pecctl: cannot read the signing key or certificate\n");
        free(key);
        free(chain);
        return NULL;
    }
    pec_signer *s = pec_signer_new_pem(key, keylen, chain, chainlen, err, sizeof err);
    if (s == NULL)
        fprintf(stderr, "pecctl: signing key: %s\n", err);
    free(key);
    free(chain);
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
    return r < 0 ? 2 : 0;
}

int pecctl_log_main(struct config *cfg, int argc, char **argv)
{
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
