/*
 * pec_sign.c - S/MIME signing of PEC messages (RFC 6109 §2.1, §5.1;
 * RFC 5751 §3.4.3): a signer behind the narrow "sign these bytes" interface
 * of pec.h, a PEM implementation with OpenSSL CMS (detached SignedData,
 * SHA-256, signer certificate and chain embedded, signed attributes
 * contentType, signingTime, messageDigest), and the assembly of the
 * multipart/signed entity around already canonical (CRLF) content.
 *
 * The signature is made over the content's SHA-256 (key_sign_digest), so
 * that the holder of the key may be another process that never sees the
 * content (src/keys: the signer process of pecd, a hardware module).
 *
 * Interface: pec_signer_new_pem, pec_signer_new_key, pec_signer_sign_digest,
 * pec_signer_free, pec_smime_sign, pec_smime_sign_n (pec.h).
 * Assumes the content handed to pec_smime_sign is exactly what goes on the
 * wire: the signed bytes are embedded unchanged, so `openssl cms -verify`
 * and `openssl smime -verify` accept the output as is.
 */
#include "pec/pec_internal.h"
#include "lib/lib.h"

#include <stdint.h>
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

#define SIGN_MD_LEN 32      /* SHA-256, the digest of every signature we make */

/* The detached SignedData over content whose SHA-256 is md: the signed
 * attributes CMS_final would add (contentType id-data, messageDigest,
 * signingTime now, SMIMECapabilities), signed with the key.  The content
 * itself is not needed, so a separate signer process is sent 32 octets
 * instead of the message (src/keys). */
static int key_sign_digest(struct pem_signer *ps, const unsigned char *md, size_t mdlen,
                           pec_buf *der, char *err, size_t errsz)
{
    der->data = NULL;
    der->len = 0;
    if (mdlen != SIGN_MD_LEN)
        return pec_err(err, errsz, "a SHA-256 digest is 32 octets, not %zu", mdlen);
    unsigned flags = CMS_DETACHED | CMS_BINARY | CMS_PARTIAL;
    CMS_ContentInfo *cms = CMS_sign(NULL, NULL, ps->chain, NULL, flags);
    int rc = -1;
    CMS_SignerInfo *si = cms ? CMS_add1_signer(cms, ps->cert, ps->key, EVP_sha256(),
                                               flags | CMS_NOSMIMECAP)
                             : NULL;
    /* RFC 5652 §5.3: contentType and messageDigest are required once there
     * are signed attributes; CMS_SignerInfo_sign adds signingTime */
    if (!si || (ps->smimecap && CMS_add_smimecap(si, ps->smimecap) != 1) ||
        !CMS_signed_add1_attr_by_NID(si, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING, md,
                                     (int)mdlen) ||
        !CMS_signed_add1_attr_by_NID(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
                                     OBJ_nid2obj(NID_pkcs7_data), -1) ||
        CMS_SignerInfo_sign(si) != 1) {
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
    return rc;
}

static int pem_sign(void *ctx, const void *data, size_t len, pec_buf *der, char *err,
                    size_t errsz)
{
    unsigned char md[SIGN_MD_LEN];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != SIGN_MD_LEN) {
        der->data = NULL;
        der->len = 0;
        return pec_ossl_err(err, errsz, "SHA-256 failed");
    }
    return key_sign_digest(ctx, md, mdlen, der, err, errsz);
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

/* A signer for key (a reference is taken) and the chain in chain_pem. */
static pec_signer *signer_new(EVP_PKEY *key, const char *chain_pem, size_t chain_len, char *err,
                              size_t errsz)
{
    struct pem_signer *ps = xcalloc(1, sizeof *ps);
    pec_signer *s = xcalloc(1, sizeof *s);
    if (!ps || !s || chain_len > INT32_MAX) {
        free(ps);
        free(s);
        pec_err(err, errsz, ps && s ? "certificate file too large" : "out of memory");
        return NULL;
    }
    BIO *cb = BIO_new_mem_buf(chain_pem, (int)chain_len);
    if (EVP_PKEY_up_ref(key) == 1)
        ps->key = key;
    ps->cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    ps->chain = sk_X509_new_null();
    if (!ps->key || !ps->chain) {
        pec_err(err, errsz, "out of memory");
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
    BIO_free(cb);
    pem_destroy(ps);
    free(s);
    return NULL;
}

pec_signer *pec_signer_new_pem(const char *key_pem, size_t key_len, const char *chain_pem,
                               size_t chain_len, char *err, size_t errsz)
{
    if (key_len > INT32_MAX) {
        pec_err(err, errsz, "key file too large");
        return NULL;
    }
    BIO *kb = BIO_new_mem_buf(key_pem, (int)key_len);
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    BIO_free(kb);
    if (!key) {
        pec_ossl_err(err, errsz, "cannot read the private key (PEM)");
        return NULL;
    }
    pec_signer *s = signer_new(key, chain_pem, chain_len, err, errsz);
    EVP_PKEY_free(key);
    return s;
}

pec_signer *pec_signer_new_key(void *evp_pkey, const char *chain_pem, size_t chain_len, char *err,
                               size_t errsz)
{
    if (evp_pkey == NULL) {
        pec_err(err, errsz, "no private key");
        return NULL;
    }
    return signer_new(evp_pkey, chain_pem, chain_len, err, errsz);
}

int pec_signer_sign_digest(pec_signer *s, const unsigned char *md, size_t mdlen, pec_buf *der,
                           char *err, size_t errsz)
{
    if (s == NULL || s->sign != pem_sign) {
        der->data = NULL;
        der->len = 0;
        return pec_err(err, errsz, "this signer holds no key");
    }
    return key_sign_digest(s->ctx, md, mdlen, der, err, errsz);
}

void pec_signer_free(pec_signer *s)
{
    if (!s)
        return;
    if (s->destroy)
        s->destroy(s->ctx);
    free(s);
}

/* n signatures, through sign_n when the signer has it (one request to a
 * signer process), else one by one; all made or none. */
static int sign_all(pec_signer *s, size_t n, const void *const *content, const size_t *len,
                    pec_buf *der, char *err, size_t errsz)
{
    if (!s || !s->sign)
        return pec_err(err, errsz, "no signer");
    if (n > 1 && s->sign_n)
        return s->sign_n(s->ctx, n, content, len, der, err, errsz);
    for (size_t i = 0; i < n; i++) {
        if (s->sign(s->ctx, content[i], len[i], &der[i], err, errsz) < 0) {
            while (i-- > 0)
                pec_buf_free(&der[i]);
            return -1;
        }
    }
    return 0;
}

/* headers + multipart/signed around content and its signature der. */
static int smime_wrap(const char *headers, const void *content, size_t len, const pec_buf *der,
                      pec_buf *out, char *err, size_t errsz)
{
    unsigned char rnd[12];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 0x3c, sizeof rnd);
    char hex[2 * sizeof rnd + 1], b[64];
    pec_hex(rnd, sizeof rnd, hex);
    snprintf(b, sizeof b, "----%s", hex);
    /* a boundary is safe only when absent from the content (RFC 2046 §5.1.1) */
    if (memmem(content, len, b, strlen(b)))
        return pec_err(err, errsz, "boundary collision");
    mime_buf m = {0};
    if (mime_buf_reserve(&m, len + der->len * 4 / 3 + 1024) < 0)
        return pec_err(err, errsz, "out of memory");
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
    rc |= mime_buf_add_base64(&m, der->data, der->len);
    rc |= mime_buf_addf(&m, "\r\n--%s--\r\n", b);
    if (rc) {
        mime_buf_free(&m);
        return pec_err(err, errsz, "out of memory");
    }
    pec_buf_take(out, &m);
    return 0;
}

int pec_smime_sign_n(pec_signer *s, size_t n, const char *const *headers,
                     const void *const *content, const size_t *len, pec_buf *out, char *err,
                     size_t errsz)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (pec_buf){0};
    if (n == 0 || n > PEC_SIGN_N_MAX)
        return pec_err(err, errsz, "%zu signatures at once (1 to %d)", n, PEC_SIGN_N_MAX);
    pec_buf der[PEC_SIGN_N_MAX];
    if (sign_all(s, n, content, len, der, err, errsz) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = smime_wrap(headers[i], content[i], len[i], &der[i], &out[i], err, errsz);
    for (size_t i = 0; i < n; i++) {
        pec_buf_free(&der[i]);
        if (rc < 0)
            pec_buf_free(&out[i]);
    }
    return rc;
}

int pec_smime_sign(pec_signer *s, const char *headers, const void *content, size_t len,
                   pec_buf *out, char *err, size_t errsz)
{
    return pec_smime_sign_n(s, 1, &headers, &content, &len, out, err, errsz);
}
