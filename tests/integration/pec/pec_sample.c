/*
 * pec_sample.c - test helper for the integration tests: builds one signed
 * PEC message of a given type with src/pec and writes it to a file, so that
 * independent tools (Python's email package, the openssl command line,
 * xmllint, pecctl verify) can check it.
 *
 * usage: pec_sample --key KEY.pem --chain CERT.pem --domain D --type TYPE
 *                   [--variant V] [--errore E] [--original FILE] --out FILE
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pec/pec.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) {
        p[n] = '\0';
        *len = (size_t)n;
    }
    return p;
}

static const char default_original[] =
    "From: Mario Rossi <mario.rossi@pec.a.example>\r\n"
    "To: anna.bianchi@pec.b.example, luca@ordinaria.example\r\n"
    "Cc: carla@pec.b.example\r\n"
    "Subject: Contratto n. 42\r\n"
    "Date: Mon, 16 Jun 2025 10:14:59 +0200\r\n"
    "Message-ID: <abc123@client.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"xyz\"\r\n"
    "\r\n"
    "--xyz\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Buongiorno, in allegato il contratto.\r\n"
    "--xyz\r\n"
    "Content-Type: application/pdf; name=\"contratto.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"contratto.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n"
    "--xyz--\r\n";

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},     {"chain", required_argument, NULL, 'c'},
        {"domain", required_argument, NULL, 'd'},  {"type", required_argument, NULL, 't'},
        {"variant", required_argument, NULL, 'v'}, {"errore", required_argument, NULL, 'e'},
        {"original", required_argument, NULL, 'o'}, {"out", required_argument, NULL, 'O'},
        {NULL, 0, NULL, 0}};
    const char *key = NULL, *chain = NULL, *domain = NULL, *type = NULL, *variant = NULL,
               *errore = NULL, *orig_path = NULL, *out = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'k': key = optarg; break;
        case 'c': chain = optarg; break;
        case 'd': domain = optarg; break;
        case 't': type = optarg; break;
        case 'v': variant = optarg; break;
        case 'e': errore = optarg; break;
        case 'o': orig_path = optarg; break;
        case 'O': out = optarg; break;
        default: return 2;
        }
    }
    if (!key || !chain || !domain || !type || !out) {
        fprintf(stderr, "usage: pec_sample --key K --chain C --domain D --type T --out F\n");
        return 2;
    }
    size_t kl, cl, ol = sizeof default_original - 1;
    char *k = slurp(key, &kl), *ch = slurp(chain, &cl);
    const char *orig = default_original;
    char *obuf = NULL;
    if (orig_path) {
        obuf = slurp(orig_path, &ol);
        orig = obuf;
    }
    char err[256];
    pec_signer *s = k && ch ? pec_signer_new_pem(k, kl, ch, cl, err, sizeof err) : NULL;
    if (!s || !orig) {
        fprintf(stderr, "pec_sample: %s\n", s ? "cannot read the original" : err);
        return 1;
    }
    pec_type t = strcmp(type, "errore") == 0 ? PEC_TYPE_ANOMALIA : pec_type_parse(type);
    pec_errore e = PEC_ERRORE_NESSUNO;
    if (errore)
        pec_errore_parse(errore, &e);
    pec_recipient r[] = {{"anna.bianchi@pec.b.example", PEC_RCPT_CERTIFICATO},
                         {"luca@ordinaria.example", PEC_RCPT_ESTERNO},
                         {"carla@pec.b.example", PEC_RCPT_CERTIFICATO}};
    const char *ric[] = {"anna.bianchi@pec.b.example", "carla@pec.b.example"};
    time_t now = time(NULL);
    char pec_id[256], mid[256];
    pec_make_msgid(pec_id, sizeof pec_id, "pec.a.example", now, 1);
    pec_make_msgid(mid, sizeof mid, domain, now, 2);
    pec_identity id = {.domain = domain, .name = "Gestore di prova S.p.A.", .signer = s};
    pec_build_args a = {
        .type = t, .errore = e, .variant = pec_variant_parse(variant),
        .original = orig, .original_len = ol, .sender = "mario.rossi@pec.a.example",
        .recipients = r, .n_recipients = 3, .when = now, .pec_id = pec_id,
        .orig_msgid = t == PEC_TYPE_ANOMALIA ? NULL : "<abc123@client.example>",
        .message_id = t == PEC_TYPE_POSTA_CERTIFICATA || t == PEC_TYPE_ANOMALIA ? NULL : mid,
        .notify_to = "ricevute@pec.a.example", .consegna = "anna.bianchi@pec.b.example",
        .ricezione = ric, .n_ricezione = 2,
        .errore_esteso = e != PEC_ERRORE_NESSUNO || t == PEC_TYPE_ANOMALIA
                             ? "5.1.1 - Gestore di prova - utente sconosciuto" : NULL};
    if (t == PEC_TYPE_ACCETTAZIONE || t == PEC_TYPE_AVVENUTA_CONSEGNA ||
        t == PEC_TYPE_NON_ACCETTAZIONE || t == PEC_TYPE_ERRORE_CONSEGNA ||
        t == PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA)
        a.notify_to = NULL;
    pec_buf m;
    if (pec_build(&id, &a, &m, err, sizeof err) < 0) {
        fprintf(stderr, "pec_sample: %s\n", err);
        return 1;
    }
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(m.data, 1, m.len, f) != m.len || fclose(f) != 0) {
        fprintf(stderr, "pec_sample: cannot write %s\n", out);
        return 1;
    }
    pec_buf_free(&m);
    pec_signer_free(s);
    free(k);
    free(ch);
    free(obuf);
    return 0;
}
