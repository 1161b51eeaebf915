/*
 * pec_trust.c - what a verification trusts: anchors (PEM), CRLs (PEM) and
 * the signing-certificate hashes of the providers' directory (RFC 6109
 * §4.5.1 providerCertificateHash, §4.5.2 providerCertificate).
 *
 * The LDIF reader here takes only those two attributes out of an LDIF text
 * (RFC 2849: folded lines, "::" base64 values, comments); the complete
 * directory model (every object class, lookups by domain, refresh) is the
 * subject of issue 7 and will replace it.  No disk I/O: callers pass text.
 *
 * Interface: pec_trust_* (pec.h), pec_trust_has_hash (pec_trust.h).
 */
#include "pec/pec_trust.h"
#include "lib/lib.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

pec_trust *pec_trust_new(void)
{
    pec_trust *t = xcalloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->store = X509_STORE_new();
    t->crls = sk_X509_CRL_new_null();
    pthread_mutex_init(&t->chain_lock, NULL);
    if (!t->store || !t->crls) {
        pec_trust_free(t);
        return NULL;
    }
    return t;
}

void pec_trust_free(pec_trust *t)
{
    if (!t)
        return;
    X509_STORE_free(t->store);
    sk_X509_CRL_pop_free(t->crls, X509_CRL_free);
    free(t->hashes);
    pthread_mutex_destroy(&t->chain_lock);
    free(t);
}

void pec_trust_set_time(pec_trust *t, time_t at)
{
    t->at = at;
}

int pec_trust_add_ca_pem(pec_trust *t, const void *pem, size_t len, char *err, size_t errsz)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    int n = 0;
    X509 *x;
    while (b && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(t->store, x))
            n++;
        X509_free(x);
    }
    BIO_free(b);
    ERR_clear_error();
    if (n == 0)
        return pec_err(err, errsz, "no certificate in the trust anchor PEM");
    t->n_anchors += n;
    t->version++;
    return 0;
}

int pec_trust_add_crl_pem(pec_trust *t, const void *pem, size_t len, char *err, size_t errsz)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    int n = 0;
    X509_CRL *c;
    while (b && (c = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
        sk_X509_CRL_push(t->crls, c);
        n++;
    }
    t->version++;
    BIO_free(b);
    ERR_clear_error();
    return n ? 0 : pec_err(err, errsz, "no CRL in the PEM text");
}

int pec_trust_add_cert_hash(pec_trust *t, const char *sha1hex)
{
    char h[41];
    size_t n = 0;
    /* tolerate "AB:CD:..." and upper case; compare lowercase (§4.5.1 caseIgnoreIA5Match) */
    for (const char *p = sha1hex; *p && n < 41; p++) {
        if (*p == ':' || *p == ' ')
            continue;
        if (!isxdigit((unsigned char)*p))
            return -1;
        h[n++] = (char)tolower((unsigned char)*p);
    }
    if (n != 40)
        return -1;
    h[40] = '\0';
    if (pec_trust_has_hash(t, h))
        return 0;
    char(*nh)[41] = xrealloc(t->hashes, (t->n_hashes + 1) * sizeof *nh);
    if (!nh)
        return -1;
    t->hashes = nh;
    memcpy(t->hashes[t->n_hashes++], h, 41);
    return 0;
}

bool pec_trust_has_hash(const pec_trust *t, const char *sha1hex)
{
    for (size_t i = 0; i < t->n_hashes; i++)
        if (strcasecmp(t->hashes[i], sha1hex) == 0)
            return true;
    return false;
}

/* One unfolded LDIF line "attr[;opts]: value" or "attr[;opts]:: base64". */
static int ldif_attr(pec_trust *t, char *line)
{
    char *colon = strchr(line, ':');
    if (!colon || line[0] == '#')
        return 0;
    *colon = '\0';
    bool b64 = colon[1] == ':';
    char *val = colon + (b64 ? 2 : 1);
    while (*val == ' ')
        val++;
    char *semi = strchr(line, ';');
    if (semi)
        *semi = '\0';
    bool is_hash = strcasecmp(line, "providerCertificateHash") == 0;
    bool is_cert = strcasecmp(line, "providerCertificate") == 0;
    if (!is_hash && !is_cert)
        return 0;
    unsigned char *raw = NULL;
    size_t rawlen = strlen(val);
    if (b64) {
        size_t vl = strlen(val);
        raw = malloc(vl / 4 * 3 + 3);
        int n = raw ? EVP_DecodeBlock(raw, (unsigned char *)val, (int)vl) : -1;
        if (n < 0) {
            free(raw);
            return -1;
        }
        rawlen = (size_t)n - (vl >= 2 && val[vl - 1] == '=' ? (val[vl - 2] == '=' ? 2 : 1) : 0);
    }
    int rc = 0;
    if (is_hash) {
        char *s = raw ? xstrndup((char *)raw, rawlen) : xstrdup(val);
        rc = s ? pec_trust_add_cert_hash(t, s) : -1;
        free(s);
        rc = rc < 0 ? -1 : 1;
    } else if (raw) {
        unsigned char md[SHA_DIGEST_LENGTH];
        char hex[41];
        SHA1(raw, rawlen, md);
        pec_hex(md, sizeof md, hex);
        rc = pec_trust_add_cert_hash(t, hex) < 0 ? -1 : 1;
    }
    free(raw);
    return rc;
}

int pec_trust_load_ldif(pec_trust *t, const void *ldif, size_t len, char *err, size_t errsz)
{
    const char *p = ldif, *end = p + len;
    mime_buf line = {0};
    int added = 0, lineno = 0, first_bad = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        size_t n = (size_t)(e - p);
        if (n && p[n - 1] == '\r')
            n--;
        lineno++;
        if (n && p[0] == ' ') {
            mime_buf_add(&line, p + 1, n - 1); /* RFC 2849: folded line */
        } else {
            if (line.len) {
                int r = ldif_attr(t, (char *)line.data);
                if (r > 0)
                    added++;
                else if (r < 0 && !first_bad)
                    first_bad = lineno - 1;
            }
            line.len = 0;
            mime_buf_add(&line, p, n);
        }
        p = nl ? nl + 1 : end;
    }
    if (line.len) {
        int r = ldif_attr(t, (char *)line.data);
        if (r > 0)
            added++;
        else if (r < 0 && !first_bad)
            first_bad = lineno;
    }
    mime_buf_free(&line);
    if (first_bad)
        return pec_err(err, errsz, "LDIF: bad certificate value near line %d", first_bad);
    return added;
}

int pec_trust_add_crl(pec_trust *t, const void *data, size_t len, char *err, size_t errsz)
{
    if (len > INT_MAX)
        return pec_err(err, errsz, "CRL too large");
    if (len >= 10 && memmem(data, len, "-----BEGIN", 10) != NULL)
        return pec_trust_add_crl_pem(t, data, len, err, errsz);
    const unsigned char *q = data;
    X509_CRL *c = d2i_X509_CRL(NULL, &q, (long)len);
    if (c == NULL) {
        ERR_clear_error();
        return pec_err(err, errsz, "neither a PEM nor a DER CRL");
    }
    sk_X509_CRL_push(t->crls, c);
    t->version++;
    return 0;
}

size_t pec_trust_crl_count(const pec_trust *t)
{
    return (size_t)sk_X509_CRL_num(t->crls);
}

/* RFC 5280 §5.3.1; code 7 is not used */
static const char *const crl_reasons[] = {
    "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
    "cessationOfOperation", "certificateHold", NULL, "removeFromCRL", "privilegeWithdrawn",
    "aACompromise"};

const char *pec_crl_reason_name(int code)
{
    if (code < 0 || code >= (int)(sizeof crl_reasons / sizeof crl_reasons[0]))
        return NULL;
    return crl_reasons[code];
}

int pec_crl_reason_code(const char *name)
{
    for (int i = 0; i < (int)(sizeof crl_reasons / sizeof crl_reasons[0]); i++)
        if (crl_reasons[i] && strcasecmp(crl_reasons[i], name) == 0)
            return i;
    return -1;
}

time_t pec_trust_crl_oldest(const pec_trust *t)
{
    time_t oldest = 0;
    for (int i = 0; i < sk_X509_CRL_num(t->crls); i++) {
        const ASN1_TIME *at = X509_CRL_get0_lastUpdate(sk_X509_CRL_value(t->crls, i));
        struct tm tm;
        if (at == NULL || ASN1_TIME_to_tm(at, &tm) != 1)
            continue;
        time_t w = timegm(&tm);
        if (oldest == 0 || w < oldest)
            oldest = w;
    }
    return oldest;
}
