/*
 * pec_dirp7m.c - the signed providers' directory (RFC 6109 §4.5: "The file,
 * the signature, and the X.509v3 certificate MUST be inserted in a PKCS#7
 * structure in binary ASN.1 DER format as a file with '.p7m' extension").
 *
 * Reading (pec_p7m_read, pec_p7m_check_signer): bounded first (size, the
 * outer DER header against the bytes received, so a cut download is named
 * as such), then OpenSSL's CMS: a SignedData with its content attached, of
 * type id-data, one SignerInfo, the signer certificate included; the
 * signature over the content checked alone, then the signer's path to the
 * anchors of [pec] directory_signer at the current time (S/MIME signing
 * purpose, revocation when CRLs are given).  Every refusal has its status
 * and a sentence.  Order matters: URLs from the signer certificate (its CRL
 * distribution points) are only worth fetching once it chains to an anchor.
 *
 * Signing (pec_dir_p7m_sign): through the pec_signer seam of pec.h, which
 * makes a detached SignedData (the same signer that signs PEC messages, in
 * this process or in a hardware module); the content is then put inside.
 * The signed attributes hold the content's digest, so the signature stays
 * valid; the result is checked before it is returned.
 *
 * Interface: pec_dirp7m.h.  No I/O.
 */
#include "pec/pec_dirp7m.h"
#include "lib/lib.h"
#include "pec/pec_trust.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct pec_p7m {
    CMS_ContentInfo *cms;
    X509 *signer;                  /* a reference of its own */
    STACK_OF(X509) *certs;         /* every certificate included */
    pec_buf content;
};

static const char *const status_names[] = {
    [PEC_P7M_OK] = "ok",
    [PEC_P7M_NOT_DER] = "not-der",
    [PEC_P7M_TRUNCATED] = "truncated",
    [PEC_P7M_TOO_LARGE] = "too-large",
    [PEC_P7M_FORMAT] = "format",
    [PEC_P7M_NO_SIGNER_CERT] = "no-signer-certificate",
    [PEC_P7M_CONTENT_CHANGED] = "content-changed",
    [PEC_P7M_BAD_SIGNATURE] = "bad-signature",
    [PEC_P7M_UNTRUSTED_SIGNER] = "unexpected-signer",
    [PEC_P7M_SIGNER_EXPIRED] = "signer-expired",
    [PEC_P7M_SIGNER_NOT_YET_VALID] = "signer-not-yet-valid",
    [PEC_P7M_SIGNER_REVOKED] = "signer-revoked",
    [PEC_P7M_SIGNER_USAGE] = "signer-usage",
};

const char *pec_p7m_status_name(pec_p7m_status s)
{
    if ((unsigned)s >= sizeof status_names / sizeof status_names[0])
        return "unknown";
    return status_names[s];
}

/* "<status>: <sentence>" into err, the status into info; returns -1. */
static int refuse(pec_p7m_info *info, pec_p7m_status s, char *err, size_t errsz,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int refuse(pec_p7m_info *info, pec_p7m_status s, char *err, size_t errsz,
                  const char *fmt, ...)
{
    info->status = s;
    ERR_clear_error();
    if (err == NULL || errsz == 0)
        return -1;
    int n = snprintf(err, errsz, "%s: ", pec_p7m_status_name(s));
    if (n > 0 && (size_t)n < errsz) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errsz - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void pec_p7m_free(pec_p7m *p)
{
    if (p == NULL)
        return;
    CMS_ContentInfo_free(p->cms);
    X509_free(p->signer);
    sk_X509_pop_free(p->certs, X509_free);
    pec_buf_free(&p->content);
    free(p);
}

const pec_buf *pec_p7m_content(const pec_p7m *p)
{
    return &p->content;
}

/* The outer TLV: a definite length longer than the bytes we have is a cut
 * file, told apart from bytes that are not DER at all. */
static int outer_header(const unsigned char *der, size_t len, pec_p7m_info *info, char *err,
                        size_t errsz)
{
    ERR_clear_error();
    const unsigned char *p = der;
    long body = 0;
    int tag = 0, cls = 0;
    int r = ASN1_get_object(&p, &body, &tag, &cls, (long)len);
    size_t hdr = (size_t)(p - der);
    if (r & 0x80) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_REASON(e) == ASN1_R_TOO_LONG && hdr > 0 && hdr <= len && body > 0 &&
            tag == V_ASN1_SEQUENCE)
            return refuse(info, PEC_P7M_TRUNCATED, err, errsz,
                          "the DER structure announces %zu bytes, %zu received (cut download?)",
                          hdr + (size_t)body, len);
        return refuse(info, PEC_P7M_NOT_DER, err, errsz,
                      "not a DER structure (the first bytes are not an ASN.1 header)");
    }
    if (tag != V_ASN1_SEQUENCE || cls != V_ASN1_UNIVERSAL || !(r & V_ASN1_CONSTRUCTED))
        return refuse(info, PEC_P7M_NOT_DER, err, errsz,
                      "not a CMS ContentInfo (the outer element is not a SEQUENCE)");
    /* r == 0x21: indefinite length (BER); d2i below reads it and finds its end */
    if (r == V_ASN1_CONSTRUCTED && hdr + (size_t)body < len)
        return refuse(info, PEC_P7M_FORMAT, err, errsz,
                      "%zu bytes after the end of the DER structure", len - hdr - (size_t)body);
    return 0;
}

static time_t asn1_time_t(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

static time_t signing_time(CMS_SignerInfo *si)
{
    int i = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
    X509_ATTRIBUTE *a = i >= 0 ? CMS_signed_get_attr(si, i) : NULL;
    ASN1_TYPE *v = a ? X509_ATTRIBUTE_get0_type(a, 0) : NULL;
    if (v == NULL || (v->type != V_ASN1_UTCTIME && v->type != V_ASN1_GENERALIZEDTIME))
        return 0;
    return asn1_time_t((const ASN1_TIME *)v->value.asn1_string);
}

static void cert_facts(X509 *x, pec_p7m_info *info)
{
    char *dn = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
    snprintf(info->signer_subject, sizeof info->signer_subject, "%s", dn ? dn : "?");
    OPENSSL_free(dn);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (X509_digest(x, EVP_sha1(), md, &n) == 1 && n == 20)
        pec_hex(md, n, info->signer_sha1);
    info->signer_not_after = asn1_time_t(X509_get0_notAfter(x));
}

/* CMS_verify of the signature and the content's digest only. */
static int check_signature(CMS_ContentInfo *cms, BIO *out, pec_p7m_info *info, char *err,
                           size_t errsz)
{
    ERR_clear_error();
    if (CMS_verify(cms, NULL, NULL, NULL, out, CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY) == 1)
        return 0;
    unsigned long e;
    bool changed = false, nocert = false;
    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_LIB(e) == ERR_LIB_CMS && ERR_GET_REASON(e) == CMS_R_CONTENT_VERIFY_ERROR)
            changed = true;
        if (ERR_GET_LIB(e) == ERR_LIB_CMS &&
            ERR_GET_REASON(e) == CMS_R_SIGNER_CERTIFICATE_NOT_FOUND)
            nocert = true;
    }
    if (nocert)
        return refuse(info, PEC_P7M_NO_SIGNER_CERT, err, errsz,
                      "the signer certificate is not included (RFC 6109 §4.5)");
    if (changed)
        return refuse(info, PEC_P7M_CONTENT_CHANGED, err, errsz,
                      "the content was changed after signing (message digest mismatch)");
    return refuse(info, PEC_P7M_BAD_SIGNATURE, err, errsz,
                  "the signature value does not verify with the signer's key");
}

pec_p7m *pec_p7m_read(const void *data, size_t len, pec_p7m_info *info, char *err, size_t errsz)
{
    const unsigned char *der = data;
    memset(info, 0, sizeof *info);
    if (len == 0) {
        refuse(info, PEC_P7M_NOT_DER, err, errsz, "empty file");
        return NULL;
    }
    if (len > PEC_P7M_MAX) {
        refuse(info, PEC_P7M_TOO_LARGE, err, errsz, "%zu bytes, more than %u", len,
               (unsigned)PEC_P7M_MAX);
        return NULL;
    }
    if (outer_header(der, len, info, err, errsz) == -1)
        return NULL;
    pec_p7m *p = xcalloc(1, sizeof *p);
    if (p == NULL) {
        refuse(info, PEC_P7M_FORMAT, err, errsz, "out of memory");
        return NULL;
    }
    const unsigned char *q = der;
    p->cms = d2i_CMS_ContentInfo(NULL, &q, (long)len);
    BIO *out = NULL;
    if (p->cms == NULL) {
        refuse(info, PEC_P7M_NOT_DER, err, errsz, "not a readable CMS ContentInfo");
        goto bad;
    }
    if (q != der + len) {
        refuse(info, PEC_P7M_FORMAT, err, errsz, "%zu bytes after the end of the structure",
               (size_t)(der + len - q));
        goto bad;
    }
    if (OBJ_obj2nid(CMS_get0_type(p->cms)) != NID_pkcs7_signed) {
        refuse(info, PEC_P7M_FORMAT, err, errsz, "not a SignedData (%s)",
               OBJ_nid2sn(OBJ_obj2nid(CMS_get0_type(p->cms))));
        goto bad;
    }
    if (OBJ_obj2nid(CMS_get0_eContentType(p->cms)) != NID_pkcs7_data) {
        refuse(info, PEC_P7M_FORMAT, err, errsz, "the signed content is not of type id-data");
        goto bad;
    }
    ASN1_OCTET_STRING **pos = CMS_get0_content(p->cms);
    if (pos == NULL || *pos == NULL) {
        refuse(info, PEC_P7M_FORMAT, err, errsz,
               "detached signature: the LDIF is not inside (content attached expected)");
        goto bad;
    }
    STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(p->cms);
    if (sis == NULL || sk_CMS_SignerInfo_num(sis) != 1) {
        refuse(info, PEC_P7M_FORMAT, err, errsz, "expected one signer, found %d",
               sis ? sk_CMS_SignerInfo_num(sis) : 0);
        goto bad;
    }
    info->signing_time = signing_time(sk_CMS_SignerInfo_value(sis, 0));
    out = BIO_new(BIO_s_mem());
    if (out == NULL) {
        refuse(info, PEC_P7M_FORMAT, err, errsz, "out of memory");
        goto bad;
    }
    if (check_signature(p->cms, out, info, err, errsz) == -1)
        goto bad;
    STACK_OF(X509) *signers = CMS_get0_signers(p->cms);
    X509 *x = signers && sk_X509_num(signers) == 1 ? sk_X509_value(signers, 0) : NULL;
    sk_X509_free(signers);
    if (x == NULL) {
        refuse(info, PEC_P7M_NO_SIGNER_CERT, err, errsz, "no signer certificate");
        goto bad;
    }
    X509_up_ref(x);
    p->signer = x;
    p->certs = CMS_get1_certs(p->cms);
    cert_facts(x, info);
    char *c = NULL;
    long n = BIO_get_mem_data(out, &c);
    if (n < 0 || (p->content.data = malloc((size_t)n + 1)) == NULL) {
        refuse(info, PEC_P7M_FORMAT, err, errsz, "out of memory");
        goto bad;
    }
    if (n > 0)
        memcpy(p->content.data, c, (size_t)n);
    p->content.data[n] = '\0';
    p->content.len = (size_t)n;
    BIO_free(out);
    info->status = PEC_P7M_OK;
    return p;
bad:
    BIO_free(out);
    pec_p7m_free(p);
    ERR_clear_error();
    return NULL;
}

static int verify_cb(int ok, X509_STORE_CTX *ctx)
{
    if (ok)
        return ok;
    switch (X509_STORE_CTX_get_error(ctx)) {
    case X509_V_ERR_UNABLE_TO_GET_CRL:      /* no CRL for this issuer: not checked */
    case X509_V_ERR_CRL_NOT_YET_VALID:      /* CRL freshness belongs to the CRL cache */
    case X509_V_ERR_CRL_HAS_EXPIRED:
        return 1;
    default:
        return ok;
    }
}

static void fmt_time(time_t t, char *buf, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "on DATE (reason)" of x's entry in the CRLs (RFC 5280 §5.3.1). */
static void revocation(STACK_OF(X509_CRL) *crls, X509 *x, char *buf, size_t n)
{
    X509_REVOKED *rev = NULL;
    for (int i = 0; x && rev == NULL && i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);
        if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(x)) != 0 ||
            X509_CRL_get0_by_cert(crl, &rev, x) != 1)
            rev = NULL;
    }
    if (rev == NULL) {
        snprintf(buf, n, "(CRL)");
        return;
    }
    char date[32];
    fmt_time(asn1_time_t(X509_REVOKED_get0_revocationDate(rev)), date, sizeof date);
    int crit = 0;
    ASN1_ENUMERATED *e = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, &crit, NULL);
    long code = e ? ASN1_ENUMERATED_get(e) : -1;
    ASN1_ENUMERATED_free(e);
    const char *name = pec_crl_reason_name((int)code);
    snprintf(buf, n, "on %s (%s)", date, name ? name : "no reason given");
    ERR_clear_error();
}

int pec_p7m_check_signer(const pec_p7m *p, const pec_trust *t, time_t now, pec_p7m_info *info,
                         char *err, size_t errsz)
{
    if (t == NULL || t->n_anchors == 0)
        return refuse(info, PEC_P7M_UNTRUSTED_SIGNER, err, errsz,
                      "no certificate in [pec] directory_signer to check the signer against");
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (ctx == NULL || !X509_STORE_CTX_init(ctx, t->store, p->signer, p->certs)) {
        X509_STORE_CTX_free(ctx);
        return refuse(info, PEC_P7M_UNTRUSTED_SIGNER, err, errsz,
                      "cannot initialise the path validation");
    }
    X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(vp, now);
    /* directory_signer may list the signer's own certificate, not only a root */
    X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SMIME_SIGN);
    if (t->crls && sk_X509_CRL_num(t->crls) > 0) {
        X509_STORE_CTX_set0_crls(ctx, t->crls);
        X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_CRL_CHECK);
    }
    X509_STORE_CTX_set_verify_cb(ctx, verify_cb);
    int rc = 0;
    if (X509_verify_cert(ctx) != 1) {
        int e = X509_STORE_CTX_get_error(ctx);
        X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
        char who[300] = "the signer certificate";
        if (bad && X509_cmp(bad, p->signer) != 0) {
            char *dn = X509_NAME_oneline(X509_get_subject_name(bad), NULL, 0);
            snprintf(who, sizeof who, "the certificate %s above the signer", dn ? dn : "?");
            OPENSSL_free(dn);
        }
        char date[32], rev[96];
        switch (e) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            fmt_time(asn1_time_t(bad ? X509_get0_notAfter(bad) : NULL), date, sizeof date);
            rc = refuse(info, PEC_P7M_SIGNER_EXPIRED, err, errsz, "%s (%s) expired on %s", who,
                        info->signer_subject, date);
            break;
        case X509_V_ERR_CERT_NOT_YET_VALID:
            fmt_time(asn1_time_t(bad ? X509_get0_notBefore(bad) : NULL), date, sizeof date);
            rc = refuse(info, PEC_P7M_SIGNER_NOT_YET_VALID, err, errsz,
                        "%s (%s) is valid from %s only", who, info->signer_subject, date);
            break;
        case X509_V_ERR_CERT_REVOKED:
            revocation(t->crls, bad, rev, sizeof rev);
            rc = refuse(info, PEC_P7M_SIGNER_REVOKED, err, errsz, "%s (%s) was revoked %s", who,
                        info->signer_subject, rev);
            break;
        case X509_V_ERR_INVALID_PURPOSE:
        case X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE:
            rc = refuse(info, PEC_P7M_SIGNER_USAGE, err, errsz,
                        "%s (%s) is not for signing: %s", who, info->signer_subject,
                        X509_verify_cert_error_string(e));
            break;
        default:
            rc = refuse(info, PEC_P7M_UNTRUSTED_SIGNER, err, errsz,
                        "the signer %s does not chain to [pec] directory_signer: %s",
                        info->signer_subject, X509_verify_cert_error_string(e));
            break;
        }
    } else {
        info->status = PEC_P7M_OK;
    }
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

char **pec_p7m_crl_urls(const pec_p7m *p)
{
    return pec_x509_crl_urls(p->signer);
}

int pec_dir_p7m_open(const pec_trust *signers, const void *der, size_t len, time_t now,
                     pec_buf *ldif, pec_p7m_info *info, char *err, size_t errsz)
{
    ldif->data = NULL;
    ldif->len = 0;
    pec_p7m *p = pec_p7m_read(der, len, info, err, errsz);
    if (p == NULL)
        return -1;
    if (pec_p7m_check_signer(p, signers, now, info, err, errsz) == -1) {
        pec_p7m_free(p);
        return -1;
    }
    *ldif = p->content;            /* moved out */
    p->content.data = NULL;
    p->content.len = 0;
    pec_p7m_free(p);
    return 0;
}

int pec_dir_p7m_sign(pec_signer *s, const void *content, size_t len, pec_buf *der, char *err,
                     size_t errsz)
{
    der->data = NULL;
    der->len = 0;
    if (s == NULL || s->sign == NULL)
        return pec_err(err, errsz, "no signer");
    if (len > PEC_LDIF_MAX)
        return pec_err(err, errsz, "content larger than %u bytes", (unsigned)PEC_LDIF_MAX);
    pec_buf det = {0};
    if (s->sign(s->ctx, content, len, &det, err, errsz) < 0)
        return -1;
    const unsigned char *q = det.data;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &q, (long)det.len);
    pec_buf_free(&det);
    ASN1_OCTET_STRING **pos = cms ? CMS_get0_content(cms) : NULL;
    int rc = -1;
    if (pos == NULL) {
        pec_ossl_err(err, errsz, "the signer did not produce a CMS SignedData");
        goto out;
    }
    ASN1_OCTET_STRING_free(*pos);
    *pos = ASN1_OCTET_STRING_new();
    if (*pos == NULL || !ASN1_OCTET_STRING_set(*pos, content, (int)len)) {
        pec_err(err, errsz, "out of memory");
        goto out;
    }
    unsigned char *buf = NULL;
    int n = i2d_CMS_ContentInfo(cms, &buf);
    if (n <= 0) {
        pec_ossl_err(err, errsz, "CMS encoding failed");
        goto out;
    }
    /* what a reader will check: the signature over these very bytes */
    pec_p7m_info info;
    char e2[256];
    pec_p7m *p = pec_p7m_read(buf, (size_t)n, &info, e2, sizeof e2);
    if (p == NULL || p->content.len != len || memcmp(p->content.data, content, len) != 0) {
        pec_err(err, errsz, "the signed file does not verify: %s", p ? "content differs" : e2);
        pec_p7m_free(p);
        OPENSSL_free(buf);
        goto out;
    }
    pec_p7m_free(p);
    der->data = malloc((size_t)n);
    if (der->data == NULL) {
        OPENSSL_free(buf);
        pec_err(err, errsz, "out of memory");
        goto out;
    }
    memcpy(der->data, buf, (size_t)n);
    der->len = (size_t)n;
    OPENSSL_free(buf);
    rc = 0;
out:
    CMS_ContentInfo_free(cms);
    ERR_clear_error();
    return rc;
}
