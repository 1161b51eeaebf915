/*
 * pec_sign.c - S/MIME signing of PEC messages (RFC 6109 §2.1, §5.1;
 * RFC 5751 §3.4.3): a signer behind the narrow "sign these bytes" interface
 * of pec.h, a PEM implementation with OpenSSL CMS (detached SignedData,
 * SHA-256, signer certificate and chain embedded, signed attributes
 * contentType, signingTime, messageDigest), and the assembly of the
 * multipart/signed entity around already canonical (CRLF) content.
 *
 * Interface: pec_signer_new_pem, pec_signer_free, pec_smime_sign (pec.h).
 * Assumes the content handed to pec_smime_sign is exactly what goes on the
 * wire: the signed bytes are embedded unchanged, so `openssl cms -verify`
 * and `openssl smime -verify` accept the output as is.
 */
#include "pec/pec_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct pem_signer {
    EVP_PKEY *key;
    X509 *cert;
    STACK_OF(X509) *chain; /* intermediates, may be empty */
    /* the SMIMECapabilities attribute (RFC 5751 §2.5.2, as real providers
     * send it), built once instead of for every signature */
    STACK_OF(X509_ALGOR) *smimecap;
};

static int pem_sign(void *ctx, const void *data, size_t len, pec_buf *der, char *err,
                    size_t errsz)
{
    struct pem_signer *ps = ctx;
    der->data = NULL;
    der->len = 0;
    BIO *in = BIO_new_mem_buf(data, (int)len);
    if (!in || len > INT32_MAX) {
        BIO_free(in);
        return pec_err(err, errsz, "content too large to sign");
    }
    /* CMS_BINARY: the content is already canonical, sign it unchanged */
    unsigned flags = CMS_DETACHED | CMS_BINARY | CMS_PARTIAL;
    CMS_ContentInfo *cms = CMS_sign(NULL, NULL, ps->chain, NULL, flags);
    int rc = -1;
    CMS_SignerInfo *si = cms ? CMS_add1_signer(cms, ps->cert, ps->key, EVP_sha256(),
                                               (flags & ~CMS_PARTIAL) | CMS_NOSMIMECAP)
                             : NULL;
    if (!si || (ps->smimecap && CMS_add_smimecap(si, ps->smimecap) != 1) ||
        !CMS_final(cms, in, NULL, flags)) {
        pec_ossl_err(err, errsz, "CMS signing failed");
        goto out;
    }
    unsigned char *buf = NULL;
    int n = i2d_CMS_ContentInfo(cms, &buf);
    if (n <= 0) {
        pec_ossl_err(err, errsz, "CMS encoding failed");
        goto out;
    }
    der->data = malloc((size_t)n);
    if (der->data) {
        memcpy(der->data, buf, (size_t)n);
        der->len = (size_t)n;
        rc = 0;
    } else {
        pec_err(err, errsz, "out of memory");
    }
    OPENSSL_free(buf);
out:
    CMS_ContentInfo_free(cms);
    BIO_free(in);
    return rc;
}

static void pem_destroy(void *ctx)
{
    struct pem_signer *ps = ctx;
    if (!ps)
        return;
    EVP_PKEY_free(ps->key);
    X509_free(ps->cert);
    sk_X509_pop_free(ps->chain, X509_free);
    sk_X509_ALGOR_pop_free(ps->smimecap, X509_ALGOR_free);
    free(ps);
}

/* The first rfc822Name of the subjectAltName (§5.5: the e-mail goes there). */
static void cert_email(X509 *cert, char *out, size_t size)
{
    out[0] = '\0';
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_EMAIL) {
            const unsigned char *s = ASN1_STRING_get0_data(g->d.rfc822Name);
            int n = ASN1_STRING_length(g->d.rfc822Name);
            if (n > 0 && (size_t)n < size && !memchr(s, '\0', (size_t)n)) {
                memcpy(out, s, (size_t)n);
                out[n] = '\0';
                break;
            }
        }
    }
    GENERAL_NAMES_free(gens);
}

void pec_cert_email(const void *x509, char *out, size_t size)
{
    cert_email((X509 *)x509, out, size);
}

pec_signer *pec_signer_new_pem(const char *key_pem, size_t key_len, const char *chain_pem,
                               size_t chain_len, char *err, size_t errsz)
{
    struct pem_signer *ps = calloc(1, sizeof *ps);
    pec_signer *s = calloc(1, sizeof *s);
    if (!ps || !s) {
        free(ps);
        free(s);
        pec_err(err, errsz, "out of memory");
        return NULL;
    }
    BIO *kb = BIO_new_mem_buf(key_pem, (int)key_len);
    BIO *cb = BIO_new_mem_buf(chain_pem, (int)chain_len);
    ps->key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    ps->cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    ps->chain = sk_X509_new_null();
    if (!ps->key) {
        pec_ossl_err(err, errsz, "cannot read the private key (PEM)");
        goto fail;
    }
    if (!ps->cert) {
        pec_ossl_err(err, errsz, "cannot read the signing certificate (PEM)");
        goto fail;
    }
    X509 *x;
    while (cb && (x = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL)
        sk_X509_push(ps->chain, x);
    ERR_clear_error(); /* the end of the PEM stream */
    if (X509_check_private_key(ps->cert, ps->key) != 1) {
        pec_ossl_err(err, errsz, "the private key does not match the certificate");
        goto fail;
    }
    BIO_free(kb);
    BIO_free(cb);
    cert_email(ps->cert, s->email, sizeof s->email);
    if (CMS_add_standard_smimecap(&ps->smimecap) != 1) {
        sk_X509_ALGOR_pop_free(ps->smimecap, X509_ALGOR_free);
        ps->smimecap = NULL;   /* signatures then go without the attribute */
    }
    s->sign = pem_sign;
    s->destroy = pem_destroy;
    s->ctx = ps;
    return s;
fail:
    BIO_free(kb);
    BIO_free(cb);
    pem_destroy(ps);
    free(s);
    return NULL;
}

void pec_signer_free(pec_signer *s)
{
    if (!s)
        return;
    if (s->destroy)
        s->destroy(s->ctx);
    free(s);
}

int pec_smime_sign(pec_signer *s, const char *headers, const void *content, size_t len,
                   pec_buf *out, char *err, size_t errsz)
{
    out->data = NULL;
    out->len = 0;
    pec_buf der;
    if (!s || !s->sign)
        return pec_err(err, errsz, "no signer");
    if (s->sign(s->ctx, content, len, &der, err, errsz) < 0)
        return -1;
    unsigned char rnd[12];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 0x3c, sizeof rnd);
    char hex[2 * sizeof rnd + 1], b[64];
    pec_hex(rnd, sizeof rnd, hex);
    snprintf(b, sizeof b, "----%s", hex);
    /* a boundary is safe only when absent from the content (RFC 2046 §5.1.1) */
    if (memmem(content, len, b, strlen(b))) {
        pec_buf_free(&der);
        return pec_err(err, errsz, "boundary collision");
    }
    mime_buf m = {0};
    if (mime_buf_reserve(&m, len + der.len * 4 / 3 + 1024) < 0) {
        pec_buf_free(&der);
        return pec_err(err, errsz, "out of memory");
    }
    int rc = 0;
    if (headers)
        rc |= mime_buf_adds(&m, headers);
    /* RFC 5751 §3.4.3.2: protocol and micalg of the standard form */
    rc |= mime_buf_addf(&m,
                        "MIME-Version: 1.0\r\n"
                        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";"
                        " micalg=sha-256;\r\n boundary=\"%s\"\r\n\r\n"
                        "This is an S/MIME signed message\r\n\r\n--%s\r\n",
                        b, b);
    rc |= mime_buf_add(&m, content, len);
    /* the CRLF before the delimiter belongs to the delimiter (RFC 2046 §5.1.1) */
    rc |= mime_buf_addf(&m,
                        "\r\n--%s\r\n"
                        "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"
                        "Content-Transfer-Encoding: base64\r\n"
                        "Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n",
                        b);
    rc |= mime_buf_add_base64(&m, der.data, der.len);
    rc |= mime_buf_addf(&m, "\r\n--%s--\r\n", b);
    pec_buf_free(&der);
    if (rc) {
        mime_buf_free(&m);
        return pec_err(err, errsz, "out of memory");
    }
    pec_buf_take(out, &m);
    return 0;
}
