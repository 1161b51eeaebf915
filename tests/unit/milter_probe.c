/*
 * milter_probe.c - runs one milter conversation from the command line, for
 * the integration tests against real filters (tests/integration/
 * test_milter_client.py):
 *
 *   milter_probe [options] SOCKET MESSAGE-FILE
 *     --from ADDR  --rcpt ADDR (repeatable)  --ip IP  --port N  --name NAME
 *     --helo NAME  --tls VERSION  --cipher C  --auth USER  --queue-id ID
 *     --hostname H  --daemon NAME  --pec (apply as to a signed PEC)
 *     --timeout MS (every timeout)  --out FILE (the resulting message)
 *
 * Prints "action: ...", "code: ...", "reply: ...", "quarantine: ...",
 * "refused: INDEX CODE REPLY", "mod: KIND NAME VALUE", "err: ..." and
 * "apply: ok|refused: ..." lines; exit 0 when the conversation ran.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/milter.h"
#include "lib/lib.h"

static const char *const kinds[] = {"addheader", "insheader", "chgheader", "replbody",
                                    "addrcpt", "delrcpt", "chgfrom"};

static void print_result(const struct milter_result *r)
{
    printf("action: %s\ncode: %d\nreply: %s\nquarantine: %s\nerr: %s\n",
           milter_action_name(r->action), r->smtp_code, r->reply, r->quarantine_reason, r->err);
    printf("version: %u\n", r->version);
    for (size_t i = 0; i < r->nrefused; i++)
        printf("refused: %zu %d %s\n", r->refused[i].rcpt, r->refused[i].smtp_code,
               r->refused[i].reply);
    for (size_t i = 0; i < r->nmods; i++) {
        const struct milter_mod *m = &r->mods[i];
        printf("mod: %s %u %s ", kinds[m->kind], m->index, m->name ? m->name : "-");
        for (const char *v = m->value ? m->value : ""; *v; v++)   /* one line */
            fputs(*v == '\n' ? "\\n" : *v == '\r' ? "\\r" : (char[]){*v, 0}, stdout);
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    struct milter_facts f = {.hostname = "mx.probe.test", .queue_id = "PROBE1",
                             .client_ip = "127.0.0.1", .client_port = 40000,
                             .client_name = "localhost", .helo = "client.probe.test",
                             .sender = "sender@probe.test"};
    const char *rcpts[64], *out = NULL, *sock = NULL, *file = NULL;
    unsigned timeout = 0;
    bool pec = false;
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--pec")) { pec = true; continue; }
        if (a[0] != '-' || !a[1]) {
            if (!sock) sock = a; else if (!file) file = a; else goto usage;
            continue;
        }
        if (!v)
            goto usage;
        i++;
        if (!strcmp(a, "--from")) f.sender = v;
        else if (!strcmp(a, "--rcpt") && n < 64) rcpts[n++] = v;
        else if (!strcmp(a, "--ip")) f.client_ip = *v ? v : NULL;
        else if (!strcmp(a, "--port")) f.client_port = (unsigned)atoi(v);
        else if (!strcmp(a, "--name")) f.client_name = v;
        else if (!strcmp(a, "--helo")) f.helo = v;
        else if (!strcmp(a, "--tls")) f.tls_version = v;
        else if (!strcmp(a, "--cipher")) f.tls_cipher = v, f.tls_cipher_bits = 256;
        else if (!strcmp(a, "--auth")) f.auth_user = v, f.auth_type = "PLAIN";
        else if (!strcmp(a, "--queue-id")) f.queue_id = v;
        else if (!strcmp(a, "--hostname")) f.hostname = v;
        else if (!strcmp(a, "--daemon")) f.daemon_name = v;
        else if (!strcmp(a, "--timeout")) timeout = (unsigned)atoi(v);
        else if (!strcmp(a, "--out")) out = v;
        else goto usage;
    }
    if (!sock || !file)
        goto usage;
    if (n == 0)
        rcpts[n++] = "rcpt@probe.test";
    f.rcpts = rcpts;
    f.nrcpts = n;
    char *msg, err[256], *res_msg;
    size_t len, outlen;
    if (fs_read_file(file, &msg, &len, 64u << 20) < 0) {
        fprintf(stderr, "milter_probe: cannot read %s\n", file);
        return 2;
    }
    struct milter_spec spec;
    if (milter_spec_parse(&spec, "probe", sock, err, sizeof err) < 0) {
        fprintf(stderr, "milter_probe: %s\n", err);
        return 2;
    }
    if (timeout)
        spec.connect_timeout_ms = spec.io_timeout_ms = spec.eom_timeout_ms = timeout;
    struct milter_result r;
    if (milter_run(&spec, &f, msg, len, &r) != 0)
        return 2;
    print_result(&r);
    if (milter_apply(&r, msg, len, pec, &res_msg, &outlen, err, sizeof err) == 0) {
        printf("apply: ok\n");
        if (out) {
            FILE *o = fopen(out, "wb");
            if (!o || fwrite(res_msg, 1, outlen, o) != outlen || fclose(o) != 0)
                return 2;
        }
        free(res_msg);
    } else {
        printf("apply: refused: %s\n", err);
    }
    milter_result_free(&r);
    free(msg);
    return 0;
usage:
    fprintf(stderr, "usage: milter_probe [options] SOCKET MESSAGE-FILE (see the source)\n");
    return 2;
}
