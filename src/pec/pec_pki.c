/*
 * pec_pki.c - the test PKI (see pec_pki.h) with OpenSSL: RSA keys, X.509v3
 * certificates with the extensions of RFC 6109 §5.5 (and [obs] EKU
 * emailProtection), CRLs.  Memory only.
 */
#include "pec/pec_pki.h"
#include "pec/pec_internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static int bio_to_buf(BIO *b, pec_buf *out)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    out->data = malloc((size_t)n + 1);
    if (!out->data)
        return -1;
    memcpy(out->data, p, (size_t)n);
    out->data[n] = '\0';
    out->len = (size_t)n;
    return 0;
}

/* The certificate and (key not NULL) the private key, in PEM. */
static int pair_out(EVP_PKEY *key, X509 *x, pec_pki_pair *out)
{
    BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
    int rc = -1;
    if (kb && cb && (key == NULL || (PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL,
                                                              NULL) &&
                                     bio_to_buf(kb, &out->key_pem) == 0)) &&
        PEM_write_bio_X509(cb, x) && bio_to_buf(cb, &out->cert_pem) == 0)
        rc = 0;
    BIO_free(kb);
    BIO_free(cb);
    return rc;
}

static bool is_ip_literal(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static EVP_PKEY *new_key(int bits)
{
    return EVP_RSA_gen((unsigned)(bits ? bits : 2048));
}

static void set_serial(X509 *x, unsigned long serial)
{
    if (!serial) {
        unsigned char r[6];
        RAND_bytes(r, sizeof r);
        for (size_t i = 0; i < sizeof r; i++)
            serial = serial << 8 | r[i];
        serial = (serial & 0x7fffffffffffUL) | 1;
    }
    ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), serial);
}

static void set_validity(X509 *x, time_t nb, long days)
{
    if (!nb)
        nb = time(NULL) - 3600;
    ASN1_TIME_set(X509_getm_notBefore(x), nb);
    ASN1_TIME_set(X509_getm_notAfter(x), nb + (time_t)(days ? days : 825) * 86400);
}

static void name_add(X509_NAME *n, const char *field, const char *value)
{
    X509_NAME_add_entry_by_txt(n, field, MBSTRING_UTF8, (const unsigned char *)value, -1, -1, 0);
}

int pec_pki_make_ca(const char *name, long days, int bits, pec_pki_pair *out, char *err,
                    size_t errsz)
{
    memset(out, 0, sizeof *out);
    EVP_PKEY *key = new_key(bits);
    X509 *x = X509_new();
    int rc = -1;
    if (!key || !x) {
        pec_ossl_err(err, errsz, "CA key generation failed");
        goto out;
    }
    X509_set_version(x, 2);
    set_serial(x, 0);
    set_validity(x, 0, days ? days : 3650);
    X509_NAME *n = X509_get_subject_name(x);
    name_add(n, "C", "IT");
    name_add(n, "O", name ? name : "pecmail test CA");
    name_add(n, "CN", name ? name : "pecmail test CA");
    X509_set_issuer_name(x, n);
    X509_set_pubkey(x, key);
    if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") ||
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
        add_ext(x, x, NID_subject_key_identifier, "hash") ||
        add_ext(x, x, NID_authority_key_identifier, "keyid:always") ||
        !X509_sign(x, key, EVP_sha256())) {
        pec_ossl_err(err, errsz, "CA certificate creation failed");
        goto out;
    }
    rc = pair_out(key, x, out);
    if (rc < 0)
        pec_err(err, errsz, "out of memory");
out:
    EVP_PKEY_free(key);
    X509_free(x);
    return rc;
}

static int load_ca(const pec_pki_pair *ca, EVP_PKEY **key, X509 **cert, char *err, size_t errsz)
{
    BIO *kb = BIO_new_mem_buf(ca->key_pem.data, (int)ca->key_pem.len);
    BIO *cb = BIO_new_mem_buf(ca->cert_pem.data, (int)ca->cert_pem.len);
    *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    *cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    BIO_free(kb);
    BIO_free(cb);
    if (*key && *cert && X509_check_private_key(*cert, *key) == 1)
        return 0;
    EVP_PKEY_free(*key);
    X509_free(*cert);
    *key = NULL;
    *cert = NULL;
    return pec_ossl_err(err, errsz, "cannot load the CA key and certificate");
}

int pec_pki_issue(const pec_pki_pair *ca, const pec_pki_req *req, pec_pki_pair *out, char *err,
                  size_t errsz)
{
    memset(out, 0, sizeof *out);
    if (!req->domain || !*req->domain || strpbrk(req->domain, ", \t\r\n@"))
        return pec_err(err, errsz, "a plain domain name is required");
    EVP_PKEY *cakey = NULL, *key = NULL;
    X509 *cacert = NULL, *x = NULL;
    int rc = -1;
    if (load_ca(ca, &cakey, &cacert, err, errsz) < 0)
        return -1;
    if (req->public_key != NULL) {
        key = req->public_key;          /* a key that lives elsewhere (a token) */
        EVP_PKEY_up_ref(key);
    } else {
        key = new_key(req->bits);
    }
    x = X509_new();
    if (!key || !x) {
        pec_ossl_err(err, errsz, "key generation failed");
        goto out;
    }
    X509_set_version(x, 2);
    set_serial(x, req->serial);
    set_validity(x, req->not_before, req->days);
    X509_NAME *n = X509_get_subject_name(x);
    const char *org = req->org ? req->org : req->domain;
    name_add(n, "C", "IT");
    name_add(n, "O", org);
    char cn[256];
    if (req->kind == PEC_PKI_SIGNING)
        snprintf(cn, sizeof cn, "Posta Certificata %s", org); /* §5.5: name in CN or O */
    else
        snprintf(cn, sizeof cn, "%s", req->domain);
    name_add(n, "CN", cn);
    X509_set_issuer_name(x, X509_get_subject_name(cacert));
    X509_set_pubkey(x, key);
    char san[2048];
    int bad = 0;
    if (req->kind == PEC_PKI_SIGNING) {
        /* §5.5: KU critical, SKI, AKI, SAN rfc822Name; no basicConstraints */
        snprintf(san, sizeof san, "email:posta-certificata@%s", req->domain);
        bad |= add_ext(x, cacert, NID_key_usage, "critical,digitalSignature");
        bad |= add_ext(x, cacert, NID_ext_key_usage, "emailProtection");
    } else {
        size_t o = (size_t)snprintf(san, sizeof san, "DNS:%s", req->domain);
        /* an IP literal becomes an iPAddress name (RFC 5280 §4.2.1.6): a
         * test server reached as ldaps://127.0.0.1/ is checked against it */
        for (size_t i = 0; i < req->n_dns && o < sizeof san; i++)
            o += (size_t)snprintf(san + o, sizeof san - o, ",%s:%s",
                                  is_ip_literal(req->dns_names[i]) ? "IP" : "DNS",
                                  req->dns_names[i]);
        if (o >= sizeof san) {
            pec_err(err, errsz, "too many DNS names");
            goto out;
        }
        bad |= add_ext(x, cacert, NID_basic_constraints, "CA:FALSE");
        bad |= add_ext(x, cacert, NID_key_usage, "critical,digitalSignature,keyEncipherment");
        bad |= add_ext(x, cacert, NID_ext_key_usage, "serverAuth,clientAuth");
    }
    bad |= add_ext(x, cacert, NID_subject_key_identifier, "hash");
    bad |= add_ext(x, cacert, NID_authority_key_identifier, "keyid:always");
    bad |= add_ext(x, cacert, NID_subject_alt_name, san);
    if (bad || !X509_sign(x, cakey, EVP_sha256())) {
        pec_ossl_err(err, errsz, "certificate creation failed");
        goto out;
    }
    rc = pair_out(req->public_key != NULL ? NULL : key, x, out);
    if (rc < 0)
        pec_err(err, errsz, "out of memory");
out:
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(key);
    X509_free(cacert);
    X509_free(x);
    return rc;
}

/* One revoked entry with its date and, when given, its reasonCode extension. */
static int crl_entry(X509_CRL *crl, const pec_pki_revoked *e, const ASN1_TIME *now)
{
    X509_REVOKED *r = X509_REVOKED_new();
    ASN1_INTEGER *s = ASN1_INTEGER_new();
    ASN1_TIME *when = e->when ? ASN1_TIME_set(NULL, e->when) : NULL;
    ASN1_ENUMERATED *why = e->reason >= 0 ? ASN1_ENUMERATED_new() : NULL;
    int ok = r && s && (when || !e->when) && (why || e->reason < 0) &&
             ASN1_INTEGER_set_uint64(s, e->serial) && X509_REVOKED_set_serialNumber(r, s) &&
             X509_REVOKED_set_revocationDate(r, when ? when : (ASN1_TIME *)now) &&
             (why == NULL || (ASN1_ENUMERATED_set(why, e->reason) &&
                              X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, why, 0, 0))) &&
             X509_CRL_add0_revoked(crl, r);
    ASN1_INTEGER_free(s);
    ASN1_TIME_free(when);
    ASN1_ENUMERATED_free(why);
    if (!ok)
        X509_REVOKED_free(r);
    return ok ? 0 : -1;
}

int pec_pki_make_crl(const pec_pki_pair *ca, const pec_pki_revoked *revoked, size_t n, long days,
                     pec_buf *crl_pem, char *err, size_t errsz)
{
    crl_pem->data = NULL;
    crl_pem->len = 0;
    EVP_PKEY *cakey = NULL;
    X509 *cacert = NULL;
    if (load_ca(ca, &cakey, &cacert, err, errsz) < 0)
        return -1;
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *now = ASN1_TIME_set(NULL, time(NULL) - 60);
    ASN1_TIME *next = ASN1_TIME_set(NULL, time(NULL) + (time_t)(days ? days : 30) * 86400);
    int rc = -1;
    if (!crl || !now || !next)
        goto out;
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(cacert));
    X509_CRL_set1_lastUpdate(crl, now);
    X509_CRL_set1_nextUpdate(crl, next);
    for (size_t i = 0; i < n; i++)
        if (crl_entry(crl, &revoked[i], now) < 0)
            goto out;
    X509_CRL_sort(crl);
    if (!X509_CRL_sign(crl, cakey, EVP_sha256()))
        goto out;
    BIO *b = BIO_new(BIO_s_mem());
    if (b && PEM_write_bio_X509_CRL(b, crl) && bio_to_buf(b, crl_pem) == 0)
        rc = 0;
    BIO_free(b);
out:
    if (rc < 0)
        pec_ossl_err(err, errsz, "CRL creation failed");
    ASN1_TIME_free(now);
    ASN1_TIME_free(next);
    X509_CRL_free(crl);
    EVP_PKEY_free(cakey);
    X509_free(cacert);
    return rc;
}

int pec_pki_cert_info(const void *cert_pem, size_t len, unsigned long *serial, char sha1hex[41],
                      char *err, size_t errsz)
{
    BIO *b = BIO_new_mem_buf(cert_pem, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!x)
        return pec_ossl_err(err, errsz, "not a PEM certificate");
    uint64_t s = 0;
    if (serial) {
        ASN1_INTEGER_get_uint64(&s, X509_get0_serialNumber(x));
        *serial = (unsigned long)s;
    }
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    X509_free(x);
    if (n <= 0)
        return pec_ossl_err(err, errsz, "cannot encode the certificate");
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1(der, (size_t)n, md);
    OPENSSL_free(der);
    pec_hex(md, sizeof md, sha1hex);
    ERR_clear_error();
    return 0;
}

void pec_pki_pair_free(pec_pki_pair *p)
{
    if (!p)
        return;
    pec_buf_free(&p->key_pem);
    pec_buf_free(&p->cert_pem);
}
