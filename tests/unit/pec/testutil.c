/*
 * testutil.c - shared fixtures of the src/pec unit tests (testutil.h).
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

static struct tpki pki;
static bool pki_made;

static void must(int rc, const char *what, const char *err)
{
    if (rc < 0) {
        fprintf(stderr, "fixture %s: %s\n", what, err);
        abort();
    }
}

const struct tpki *tpki_get(void)
{
    if (pki_made)
        return &pki;
    char err[256] = "";
    must(pec_pki_make_ca("pecmail test CA", 3650, 2048, &pki.ca, err, sizeof err), "ca", err);
    must(pec_pki_make_ca("other CA", 3650, 2048, &pki.other_ca, err, sizeof err), "ca2", err);
    pec_pki_req r = {.kind = PEC_PKI_SIGNING, .domain = "pec.a.example", .org = "Gestore A S.p.A."};
    must(pec_pki_issue(&pki.ca, &r, &pki.signer, err, sizeof err), "signer", err);
    must(pec_pki_issue(&pki.other_ca, &r, &pki.other_signer, err, sizeof err), "other", err);
    pec_pki_req e = r;
    e.not_before = time(NULL) - 400 * 86400;
    e.days = 30;
    must(pec_pki_issue(&pki.ca, &e, &pki.expired, err, sizeof err), "expired", err);
    pec_pki_req v = r;
    v.serial = 4242;
    must(pec_pki_issue(&pki.ca, &v, &pki.revoked, err, sizeof err), "revoked", err);
    pec_pki_req t = {.kind = PEC_PKI_TLS, .domain = "mx.pec.a.example", .org = "Gestore A"};
    must(pec_pki_issue(&pki.ca, &t, &pki.tls, err, sizeof err), "tls", err);
    /* 2024-03-01T10:00:00Z, keyCompromise (the verdict names both) */
    pec_pki_revoked rv = {.serial = 4242, .when = 1709287200, .reason = 1};
    must(pec_pki_make_crl(&pki.ca, &rv, 1, 30, &pki.crl, err, sizeof err), "crl", err);
    must(pec_pki_cert_info(pki.signer.cert_pem.data, pki.signer.cert_pem.len, NULL,
                           pki.signer_sha1, err, sizeof err), "info", err);
    pki_made = true;
    return &pki;
}

int tcert_der(const pec_pki_pair *p, unsigned char **der)
{
    *der = NULL;
    BIO *b = BIO_new_mem_buf(p->cert_pem.data, (int)p->cert_pem.len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    int n = x ? i2d_X509(x, der) : -1;
    X509_free(x);
    return n;
}

pec_signer *tsigner(const pec_pki_pair *p)
{
    char err[256] = "";
    pec_signer *s = pec_signer_new_pem((const char *)p->key_pem.data, p->key_pem.len,
                                       (const char *)p->cert_pem.data, p->cert_pem.len, err,
                                       sizeof err);
    if (!s) {
        fprintf(stderr, "signer: %s\n", err);
        abort();
    }
    return s;
}

pec_trust *ttrust(bool with_crl, bool with_directory)
{
    const struct tpki *k = tpki_get();
    pec_trust *t = pec_trust_new();
    pec_trust_add_ca_pem(t, k->ca.cert_pem.data, k->ca.cert_pem.len, NULL, 0);
    if (with_crl)
        pec_trust_add_crl_pem(t, k->crl.data, k->crl.len, NULL, 0);
    if (with_directory)
        pec_trust_add_cert_hash(t, k->signer_sha1);
    return t;
}

static const char orig_msg[] =
    "Return-Path: <mario.rossi@pec.a.example>\r\n"
    "Received: from client.example ([192.0.2.1]) by mx.pec.a.example with ESMTPSA;\r\n"
    "\tMon, 16 Jun 2025 10:15:00 +0200\r\n"
    "From: Mario Rossi <mario.rossi@pec.a.example>\r\n"
    "To: Anna Bianchi <anna.bianchi@pec.b.example>, luca@ordinaria.example\r\n"
    "Cc: carla@pec.b.example\r\n"
    "Subject: =?utf-8?q?Contratto_n=2E_42_=E2=80=93_perch=C3=A9?=\r\n"
    "Date: Mon, 16 Jun 2025 10:14:59 +0200\r\n"
    "Message-ID: <abc123@client.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"xyz\"\r\n"
    "\r\n"
    "--xyz\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Buongiorno, in allegato il contratto.   \r\n"
    "Trailing spaces above are part of the message.\r\n"
    "--xyz\r\n"
    "Content-Type: application/pdf; name=\"contratto.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"contratto.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n"
    "--xyz--\r\n";

const char *torig(size_t *len)
{
    *len = sizeof orig_msg - 1;
    return orig_msg;
}

int tbuild_with(const pec_pki_pair *pair, const char *domain, pec_type type,
                pec_variant variant, pec_errore errore, pec_buf *out)
{
    size_t olen;
    const char *o = torig(&olen);
    static pec_recipient rcpts[] = {
        {"anna.bianchi@pec.b.example", PEC_RCPT_CERTIFICATO},
        {"luca@ordinaria.example", PEC_RCPT_ESTERNO},
        {"carla@pec.b.example", PEC_RCPT_CERTIFICATO},
    };
    static const char *const ric[] = {"anna.bianchi@pec.b.example", "carla@pec.b.example"};
    pec_signer *s = tsigner(pair);
    pec_identity id = {.domain = domain, .name = "Gestore A S.p.A.", .signer = s};
    char pec_id[256];
    pec_make_msgid(pec_id, sizeof pec_id, "pec.a.example", 1750061700, 7);
    pec_build_args a = {
        .type = type,
        .errore = errore,
        .variant = variant,
        .original = o,
        .original_len = olen,
        .sender = "mario.rossi@pec.a.example",
        .recipients = rcpts,
        .n_recipients = 3,
        .when = 1750061700, /* 2025-06-16 10:15:00 +0200 */
        .pec_id = pec_id,
        .orig_msgid = "<abc123@client.example>",
        .message_id = type == PEC_TYPE_POSTA_CERTIFICATA || type == PEC_TYPE_ANOMALIA
                          ? NULL
                          : "opec1.20250616101500.99.8.1.8@pec.a.example",
        .notify_to = (type == PEC_TYPE_PRESA_IN_CARICO || type == PEC_TYPE_RILEVAZIONE_VIRUS)
                         ? "ricevute@pec.a.example"
                         : NULL,
        .consegna = "anna.bianchi@pec.b.example",
        .ricezione = ric,
        .n_ricezione = 2,
        .errore_esteso = errore == PEC_ERRORE_NESSUNO ? NULL : "5.1.1 - Gestore B - utente sconosciuto",
    };
    if (type == PEC_TYPE_ANOMALIA)
        a.errore_esteso = "firma non valida";
    char err[256] = "";
    int rc = pec_build(&id, &a, out, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "build %s: %s\n", pec_type_name(type), err);
    pec_signer_free(s);
    return rc;
}

int tbuild(pec_type type, pec_variant variant, pec_errore errore, pec_buf *out)
{
    return tbuild_with(&tpki_get()->signer, "pec.a.example", type, variant, errore, out);
}

char *tread(const char *path, size_t *len)
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

int twrite(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

int trun(const char *cmd, char *out, size_t outsz)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = 0;
    char buf[512];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, p)) > 0) {
        if (out && n + 1 < outsz) {
            size_t c = r < outsz - n - 1 ? r : outsz - n - 1;
            memcpy(out + n, buf, c);
            n += c;
        }
    }
    if (out && outsz)
        out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *ttmpdir(void)
{
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/pec-unit-XXXXXX");
        if (!mkdtemp(dir))
            abort();
    }
    return dir;
}
