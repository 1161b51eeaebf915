/*
 * fuzz_pec_dirp7m.c - libFuzzer target for the signed providers' directory
 * (issue 19): DER CMS -> LDIF -> model (src/pec/pec_dirp7m.c, then
 * pec_ldif.c and pec_directory.c), as pecd reads a .p7m.
 *
 * The first byte chooses what the rest is:
 *   0: a .p7m, read and checked against a fixed authority (a CA and a
 *      signer made once, RSA-1024 for speed); every refusal has a status
 *      and a reason; what passes goes to the model.
 *   1: an LDIF text, signed by that authority (content attached); the .p7m
 *      must open into the very same bytes, which then go to the model: a
 *      refusal has a reason, an acceptance exports and reads back the same.
 *   2: four bytes (offset, xor) then an LDIF text, signed, then one byte of
 *      the .p7m changed: it may open only into the original content (a
 *      change the signature does not cover cannot change the LDIF).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pec/pec.h"
#include "pec/pec_dirp7m.h"
#include "pec/pec_pki.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pec_signer *signer;
static pec_trust *trust;

static void setup(void)
{
    pec_pki_pair ca, s;
    char err[256];
    if (pec_pki_make_ca("fuzz authority", 3650, 1024, &ca, err, sizeof err) != 0)
        abort();
    pec_pki_req r = {.kind = PEC_PKI_SIGNING, .domain = "igpec.fuzz", .org = "Fuzz", .bits = 1024};
    if (pec_pki_issue(&ca, &r, &s, err, sizeof err) != 0)
        abort();
    signer = pec_signer_new_pem((const char *)s.key_pem.data, s.key_pem.len,
                                (const char *)s.cert_pem.data, s.cert_pem.len, err, sizeof err);
    trust = pec_trust_new();
    if (signer == NULL || pec_trust_add_ca_pem(trust, ca.cert_pem.data, ca.cert_pem.len, err,
                                               sizeof err) != 0)
        abort();
    pec_pki_pair_free(&ca);
    pec_pki_pair_free(&s);
}

/* The model on a verified LDIF, with the invariants of fuzz_pec_directory. */
static void model(const pec_buf *ldif)
{
    char err[512] = "";
    pec_directory *d = pec_directory_parse(ldif->data, ldif->len, err, sizeof err);
    if (d == NULL) {
        if (err[0] == '\0')
            abort();
        return;
    }
    pec_buf a = {0}, b = {0};
    if (pec_directory_to_ldif(d, &a, NULL, 0) != 0)
        abort();
    pec_directory *d2 = pec_directory_parse(a.data, a.len, err, sizeof err);
    if (d2 == NULL || pec_directory_count(d2) != pec_directory_count(d) ||
        pec_directory_to_ldif(d2, &b, NULL, 0) != 0 || a.len != b.len ||
        memcmp(a.data, b.data, a.len) != 0)
        abort();
    pec_buf_free(&a);
    pec_buf_free(&b);
    pec_directory_free(d2);
    pec_directory_free(d);
}

static int open_p7m(const void *der, size_t len, pec_buf *out)
{
    pec_p7m_info info;
    char err[512] = "";
    int rc = pec_dir_p7m_open(trust, der, len, time(NULL), out, &info, err, sizeof err);
    if (rc != 0 && (err[0] == '\0' || info.status == PEC_P7M_OK))
        abort();                        /* every refusal has a status and a reason */
    if (rc == 0 && info.status != PEC_P7M_OK)
        abort();
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (signer == NULL)
        setup();
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 3;
    data++;
    size--;
    pec_buf out = {0};
    if (mode == 0) {
        if (open_p7m(data, size, &out) == 0)
            model(&out);
        pec_buf_free(&out);
        return 0;
    }
    size_t off = 0;
    uint8_t x = 0;
    if (mode == 2) {
        if (size < 4)
            return 0;
        off = (size_t)data[0] << 16 | (size_t)data[1] << 8 | data[2];
        x = data[3] ? data[3] : 1;
        data += 4;
        size -= 4;
    }
    pec_buf der = {0};
    char err[256];
    if (pec_dir_p7m_sign(signer, data, size, &der, err, sizeof err) != 0)
        abort();                        /* any text up to the limit can be signed */
    if (mode == 2)
        der.data[off % der.len] ^= x;
    int rc = open_p7m(der.data, der.len, &out);
    if (mode == 1 && rc != 0)
        abort();                        /* our own signature always opens */
    if (rc == 0) {
        if (out.len != size || (size && memcmp(out.data, data, size) != 0))
            abort();                    /* the content is what was signed */
        model(&out);
    }
    pec_buf_free(&out);
    pec_buf_free(&der);
    return 0;
}
