/*
 * bench_sign.c - throughput of the PEC core on one core: build + sign one
 * transport envelope around a 10 KB original, and verify one (signature,
 * chain, directory, daticert), per second.  Compared by bench/pec/run with
 * `openssl speed rsa2048`: the RSA signature is the floor (issue 4 goal:
 * within 1.3x of the raw signature cost).
 *
 * Usage: bench_sign [SECONDS]   (prints "key value" lines)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "pec/pec.h"
#include "pec/pec_pki.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    char err[256];
    pec_pki_pair ca, sig;
    pec_pki_req req = {.kind = PEC_PKI_SIGNING, .domain = "pec.a.example", .org = "Bench"};
    if (pec_pki_make_ca("bench CA", 365, 2048, &ca, err, sizeof err) < 0 ||
        pec_pki_issue(&ca, &req, &sig, err, sizeof err) < 0) {
        fprintf(stderr, "pki: %s\n", err);
        return 1;
    }
    pec_signer *s = pec_signer_new_pem((char *)sig.key_pem.data, sig.key_pem.len,
                                       (char *)sig.cert_pem.data, sig.cert_pem.len, err,
                                       sizeof err);
    if (!s) {
        fprintf(stderr, "signer: %s\n", err);
        return 1;
    }
    /* a 10 KB original: text body and a base64 attachment */
    char *orig = malloc(16384);
    int n = snprintf(orig, 16384,
                     "From: mario@pec.a.example\r\nTo: anna@pec.b.example\r\n"
                     "Subject: bench\r\nMessage-ID: <bench@client.example>\r\n"
                     "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
                     "--b\r\nContent-Type: text/plain\r\n\r\nHello.\r\n--b\r\n"
                     "Content-Type: application/octet-stream; name=\"x.bin\"\r\n"
                     "Content-Transfer-Encoding: base64\r\n\r\n");
    static const char line[] =
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while (n < 10240 - (int)sizeof line) {
        memcpy(orig + n, line, sizeof line - 1);
        n += (int)sizeof line - 1;
    }
    n += snprintf(orig + n, 16384 - (size_t)n, "--b--\r\n");
    pec_recipient r = {"anna@pec.b.example", PEC_RCPT_CERTIFICATO};
    pec_identity id = {.domain = "pec.a.example", .name = "Bench S.p.A.", .signer = s};
    pec_build_args a = {.type = PEC_TYPE_POSTA_CERTIFICATA, .original = orig,
                        .original_len = (size_t)n, .sender = "mario@pec.a.example",
                        .recipients = &r, .n_recipients = 1, .when = time(NULL),
                        .pec_id = "opec1.20250101000000.1.1.1.1@pec.a.example"};
    pec_buf env = {0};
    if (pec_build(&id, &a, &env, err, sizeof err) < 0) {
        fprintf(stderr, "build: %s\n", err);
        return 1;
    }
    pec_trust *tr = pec_trust_new();
    pec_trust_add_ca_pem(tr, ca.cert_pem.data, ca.cert_pem.len, NULL, 0);
    char sha1[41];
    pec_pki_cert_info(sig.cert_pem.data, sig.cert_pem.len, NULL, sha1, NULL, 0);
    pec_trust_add_cert_hash(tr, sha1);

    /* the floor: EVP_PKEY_sign of a SHA-256 digest with the same key and a
     * reused context (what `openssl speed rsa2048` measures) */
    BIO *kb = BIO_new_mem_buf(sig.key_pem.data, (int)sig.key_pem.len);
    EVP_PKEY *key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    BIO_free(kb);
    EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new(key, NULL);
    EVP_PKEY_sign_init(kc);
    EVP_PKEY_CTX_set_rsa_padding(kc, RSA_PKCS1_PADDING);
    EVP_PKEY_CTX_set_signature_md(kc, EVP_sha256());

    /* The machine may be shared: the four workloads run in interleaved
     * rounds and each keeps its best round, so that noise hits all alike. */
    enum { BUILD, VERIFY, CMS, EVP, NW };
    double best[NW] = {0};
    int rounds = 10;
    double slice = secs / rounds;
    for (int round = 0; round < rounds; round++) {
        for (int w = 0; w < NW; w++) {
            long count = 0;
            double t0 = now(), t;
            do {
                if (w == BUILD) {
                    pec_buf_free(&env);
                    if (pec_build(&id, &a, &env, err, sizeof err) < 0)
                        return 1;
                } else if (w == VERIFY) {
                    pec_verdict v;
                    if (pec_verify(tr, env.data, env.len, &v, err, sizeof err) < 0 || !v.valid) {
                        fprintf(stderr, "verify failed: %s\n", v.detail);
                        return 1;
                    }
                    pec_verdict_free(&v);
                } else if (w == CMS) {
                    pec_buf der;
                    if (s->sign(s->ctx, "x", 1, &der, err, sizeof err) < 0)
                        return 1;
                    pec_buf_free(&der);
                } else {
                    unsigned char md[32] = {1}, sb[512];
                    size_t sl = sizeof sb;
                    if (EVP_PKEY_sign(kc, sb, &sl, md, sizeof md) != 1)
                        return 1;
                }
                count++;
            } while ((t = now()) - t0 < slice);
            double rate = (double)count / (t - t0);
            if (rate > best[w])
                best[w] = rate;
        }
    }
    EVP_PKEY_CTX_free(kc);
    EVP_PKEY_free(key);
    double build_rate = best[BUILD], verify_rate = best[VERIFY], cms_rate = best[CMS],
           evp_rate = best[EVP];

    printf("original_bytes %d\n", n);
    printf("evp_rsa2048_sign_per_s %.1f\n", evp_rate);
    printf("envelope_bytes %zu\n", env.len);
    printf("build_sign_per_s %.1f\n", build_rate);
    printf("verify_per_s %.1f\n", verify_rate);
    printf("cms_sign_1byte_per_s %.1f\n", cms_rate);
    pec_buf_free(&env);
    pec_trust_free(tr);
    pec_signer_free(s);
    pec_pki_pair_free(&ca);
    pec_pki_pair_free(&sig);
    free(orig);
    return 0;
}
