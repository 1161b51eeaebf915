/*
 * pec_verify.c - the checks of the incoming point (RFC 6109 §2.2.2) on one
 * message: signature existence, signature validity over the exact bytes,
 * certification path to the trust anchors at the signing time, revocation
 * (CRL), key usage / extendedKeyUsage emailProtection, signature origin
 * (the SHA-1 of the signer certificate in the providers' directory,
 * §4.5.1), From = certificate e-mail (§2.1), and the certification data
 * (present, parsed, consistent with the header fields).
 *
 * The signed content is cut out of the received bytes at the delimiters of
 * the multipart/signed (RFC 2046 §5.1.1); only bare LF becomes CRLF, the
 * canonical form of RFC 5751 §3.1.1 (a local mail store may have dropped
 * the CR), nothing else is normalised (interop file 12).  SHA-1 signatures
 * are accepted for verification only (digest (f)).
 *
 * The certification data is read only after the signature has held (see
 * pec_verify_flags); a bare signed entity (no outer header fields) is
 * verified on request, its type taken from the signed daticert.
 *
 * Interface: pec_trust_*, pec_verify, pec_verify_flags, pec_verdict_free
 * (pec.h).
 */
#include "pec/pec_classify.h"
#include "lib/lib.h"
#include "pec/pec_trust.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static int fail(pec_verdict *v, pec_reason r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(pec_verdict *v, pec_reason r, const char *fmt, ...)
{
    v->valid = false;
    v->reason = r;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->detail, sizeof v->detail, fmt, ap);
    va_end(ap);
    ERR_clear_error();
    return 0;
}

/* ---- the signed bytes ---------------------------------------------------- */

/* Is p[i..] a delimiter line "--b" [--] WSP* EOL? Sets *close. */
static bool delim_at(const unsigned char *p, size_t len, size_t i, const char *b, size_t blen,
                     bool *close)
{
    if (i + 2 + blen > len || p[i] != '-' || p[i + 1] != '-' || memcmp(p + i + 2, b, blen) != 0)
        return false;
    size_t j = i + 2 + blen;
    *close = j + 1 < len && p[j] == '-' && p[j + 1] == '-';
    if (*close)
        j += 2;
    while (j < len && (p[j] == ' ' || p[j] == '\t'))
        j++;
    return j >= len || p[j] == '\r' || p[j] == '\n';
}

/* The first body part of the multipart whose raw entity is e[0..len). */
static int signed_content(const unsigned char *e, size_t len, const char *b, mime_buf *out)
{
    long hb = mime_header_end(e, len);
    if (hb < 0)
        return -1;
    size_t blen = strlen(b), i = (size_t)hb, start = 0;
    bool close, found = false;
    while (i < len) { /* the first delimiter may follow the preamble */
        if (delim_at(e, len, i, b, blen, &close) && !close) {
            const unsigned char *nl = memchr(e + i, '\n', len - i);
            if (!nl)
                return -1;
            start = (size_t)(nl - e) + 1;
            found = true;
            break;
        }
        const unsigned char *nl = memchr(e + i, '\n', len - i);
        if (!nl)
            return -1;
        i = (size_t)(nl - e) + 1;
    }
    if (!found)
        return -1;
    for (i = start; i < len;) {
        const unsigned char *nl = memchr(e + i, '\n', len - i);
        if (!nl)
            return -1;
        size_t next = (size_t)(nl - e) + 1;
        if (delim_at(e, len, next, b, blen, &close)) {
            size_t end = (size_t)(nl - e); /* the line end before it is the delimiter's */
            if (end > start && e[end - 1] == '\r')
                end--;
            return mime_to_crlf(e + start, end - start, out);
        }
        i = next;
    }
    return -1;
}

/* ---- helpers ------------------------------------------------------------- */

static time_t signing_time(CMS_SignerInfo *si)
{
    int idx = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
    if (idx < 0)
        return 0;
    X509_ATTRIBUTE *at = CMS_signed_get_attr(si, idx);
    ASN1_TYPE *t = at ? X509_ATTRIBUTE_get0_type(at, 0) : NULL;
    if (!t || (t->type != V_ASN1_UTCTIME && t->type != V_ASN1_GENERALIZEDTIME))
        return 0;
    struct tm tm;
    if (ASN1_TIME_to_tm((ASN1_TIME *)t->value.asn1_string, &tm) != 1)
        return 0;
    return timegm(&tm);
}

static void cert_facts(X509 *x, pec_verdict *v)
{
    X509_NAME_oneline(X509_get_subject_name(x), v->signer_subject, sizeof v->signer_subject);
    pec_cert_email(x, v->signer_email, sizeof v->signer_email);
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n > 0) {
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1(der, (size_t)n, md); /* §2.2.2: SHA-1 of the DER certificate */
        pec_hex(md, sizeof md, v->signer_sha1);
    }
    OPENSSL_free(der);
}

/* The topmost certificate of the embedded chain: one whose issuer is not
 * among the others (the anchor when no trust anchors are configured). */
static X509 *embedded_top(STACK_OF(X509) *certs, X509 *signer)
{
    X509 *cur = signer;
    for (int hops = 0; hops < 8; hops++) {
        X509 *up = NULL;
        for (int i = 0; i < sk_X509_num(certs); i++) {
            X509 *c = sk_X509_value(certs, i);
            if (X509_cmp(c, cur) != 0 && X509_check_issued(c, cur) == X509_V_OK) {
                up = c;
                break;
            }
        }
        if (!up)
            break;
        cur = up;
    }
    return cur;
}

static int verify_cb(int ok, X509_STORE_CTX *ctx)
{
    if (ok)
        return ok;
    switch (X509_STORE_CTX_get_error(ctx)) {
    case X509_V_ERR_UNABLE_TO_GET_CRL:      /* no CRL for this issuer: not checked */
    case X509_V_ERR_CRL_NOT_YET_VALID:      /* CRL freshness belongs to the cache */
    case X509_V_ERR_CRL_HAS_EXPIRED:
        return 1;
    default:
        return ok;
    }
}

/* "was revoked on DATE (reason)" for the certificate the path validation
 * found revoked, from its entry in the loaded CRLs (RFC 5280 §5.3.1). */
static void revoked_detail(const pec_trust *t, X509 *bad, X509 *signer, pec_verdict *v)
{
    X509_REVOKED *rev = NULL;
    for (int i = 0; bad && rev == NULL && i < sk_X509_CRL_num(t->crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(t->crls, i);
        if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(bad)) != 0 ||
            X509_CRL_get0_by_cert(crl, &rev, bad) != 1)
            rev = NULL;
    }
    char who[160] = "the signer certificate";
    if (bad && bad != signer) {
        char *dn = X509_NAME_oneline(X509_get_subject_name(bad), NULL, 0);
        snprintf(who, sizeof who, "the certificate %s in the signer's chain", dn ? dn : "?");
        OPENSSL_free(dn);
    }
    if (rev == NULL) {
        fail(v, PEC_R_REVOKED, "%s is revoked (CRL)", who);
        return;
    }
    char date[32] = "an unknown date";
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_REVOKED_get0_revocationDate(rev), &tm) == 1)
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int crit = 0;
    ASN1_ENUMERATED *e = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, &crit, NULL);
    long code = e ? ASN1_ENUMERATED_get(e) : -1;
    ASN1_ENUMERATED_free(e);
    const char *name = pec_crl_reason_name((int)code);
    char reason[48] = "no reason given";
    if (name)
        snprintf(reason, sizeof reason, "%s", name);
    else if (code >= 0)
        snprintf(reason, sizeof reason, "reason code %ld", code);
    ERR_clear_error();
    fail(v, PEC_R_REVOKED, "%s was revoked on %s (%s)", who, date, reason);
}

/* The key of a path validation: SHA-256 over the SHA-256 of the signer and
 * of each certificate given with it, and the validation time.  false if a
 * digest cannot be made (nothing is cached then). */
static bool chain_key(X509 *signer, STACK_OF(X509) *certs, time_t when, unsigned char key[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c != NULL && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    ok = ok && X509_digest(signer, EVP_sha256(), md, &n) == 1 && EVP_DigestUpdate(c, md, n) == 1;
    for (int i = 0; ok && i < sk_X509_num(certs); i++)
        ok = X509_digest(sk_X509_value(certs, i), EVP_sha256(), md, &n) == 1 &&
             EVP_DigestUpdate(c, md, n) == 1;
    int64_t w = (int64_t)when;
    ok = ok && EVP_DigestUpdate(c, &w, sizeof w) == 1 && EVP_DigestFinal_ex(c, key, NULL) == 1;
    EVP_MD_CTX_free(c);
    return ok;
}

/* Whether the same validation succeeded before with this trust's anchors
 * and CRLs (X509_verify_cert gives the same answer for the same inputs; a
 * provider's receipts signed within one second share their key). */
static bool chain_cached(const pec_trust *tc, const unsigned char key[32])
{
    pec_trust *t = (pec_trust *)tc;   /* the cache is the only part that changes */
    bool hit = false;
    pthread_mutex_lock(&t->chain_lock);
    for (unsigned i = 0; i < PEC_TRUST_CHAIN_CACHE && !hit; i++)
        hit = t->chain_ok[i].used && t->chain_ok[i].version == t->version &&
              memcmp(t->chain_ok[i].key, key, 32) == 0;
    pthread_mutex_unlock(&t->chain_lock);
    return hit;
}

static void chain_remember(const pec_trust *tc, const unsigned char key[32])
{
    pec_trust *t = (pec_trust *)tc;
    pthread_mutex_lock(&t->chain_lock);
    unsigned i = t->chain_next++ % PEC_TRUST_CHAIN_CACHE;
    memcpy(t->chain_ok[i].key, key, 32);
    t->chain_ok[i].version = t->version;
    t->chain_ok[i].used = true;
    pthread_mutex_unlock(&t->chain_lock);
}

static int check_chain(const pec_trust *t, X509 *signer, STACK_OF(X509) *certs, time_t when,
                       pec_verdict *v)
{
    /* only with configured anchors: the embedded-anchor path has side effects */
    unsigned char key[32];
    bool keyed = t->n_anchors > 0 && chain_key(signer, certs, when, key);
    if (keyed && chain_cached(t, key))
        return 0;
    X509_STORE *store = t->store;
    X509_STORE *own = NULL;
    if (t->n_anchors == 0) {
        own = X509_STORE_new();
        if (!own || !X509_STORE_add_cert(own, embedded_top(certs, signer))) {
            X509_STORE_free(own);
            return fail(v, PEC_R_UNTRUSTED, "cannot build a trust store"), -1;
        }
        X509_STORE_set_flags(own, X509_V_FLAG_PARTIAL_CHAIN);
        store = own;
        v->trust_embedded = true;
    }
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int rc = -1;
    if (!ctx || !X509_STORE_CTX_init(ctx, store, signer, certs)) {
        fail(v, PEC_R_UNTRUSTED, "cannot initialise the path validation");
        goto out;
    }
    X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(p, when);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SMIME_SIGN); /* KU + EKU emailProtection */
    if (t->crls && sk_X509_CRL_num(t->crls) > 0) {
        X509_STORE_CTX_set0_crls(ctx, t->crls);
        X509_VERIFY_PARAM_set_flags(p, X509_V_FLAG_CRL_CHECK);
    }
    if (own)
        X509_VERIFY_PARAM_set_flags(p, X509_V_FLAG_PARTIAL_CHAIN);
    X509_STORE_CTX_set_verify_cb(ctx, verify_cb);
    if (X509_verify_cert(ctx) == 1) {
        if (keyed)
            chain_remember(t, key);
        rc = 0;
        goto out;
    }
    int e = X509_STORE_CTX_get_error(ctx);
    const char *es = X509_verify_cert_error_string(e);
    char when_s[32];
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(when_s, sizeof when_s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    switch (e) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        fail(v, PEC_R_CERT_EXPIRED, "the signer certificate had expired at %s", when_s);
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        fail(v, PEC_R_CERT_NOT_YET_VALID, "the signer certificate was not yet valid at %s",
             when_s);
        break;
    case X509_V_ERR_CERT_REVOKED:
        revoked_detail(t, X509_STORE_CTX_get_current_cert(ctx), signer, v);
        break;
    case X509_V_ERR_INVALID_PURPOSE:
    case X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE:
        fail(v, PEC_R_BAD_KEY_USAGE,
             "the certificate is not for e-mail signing (keyUsage/extendedKeyUsage): %s", es);
        break;
    default:
        fail(v, PEC_R_UNTRUSTED, "no valid path to a trust anchor: %s", es);
        break;
    }
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(own);
    return rc;
}

static bool same_value(const char *a, const char *b)
{
    char *x = pec_strip_brackets(a), *y = pec_strip_brackets(b);
    bool eq = x && y && strcmp(x, y) == 0;
    free(x);
    free(y);
    return eq;
}

/* The certification data agrees with the header fields (§3, §4.4). */
static int check_consistency(GMimeMessage *m, const pec_class *c, const pec_daticert *d,
                             pec_verdict *v)
{
    if (d->tipo != c->type)
        return fail(v, PEC_R_INCONSISTENT, "daticert tipo=\"%s\" but the header says \"%s\"",
                    pec_type_name(d->tipo), pec_type_name(c->type)), -1;
    const char *xref = mime_header(GMIME_OBJECT(m), "X-Riferimento-Message-ID");
    if (xref && d->msgid && !same_value(xref, d->msgid))
        return fail(v, PEC_R_INCONSISTENT,
                    "daticert msgid differs from X-Riferimento-Message-ID"), -1;
    if (c->type == PEC_TYPE_POSTA_CERTIFICATA) {
        const char *mid = g_mime_message_get_message_id(m);
        if (mid && d->identificativo && !same_value(mid, d->identificativo))
            return fail(v, PEC_R_INCONSISTENT,
                        "daticert identificativo differs from the envelope's Message-ID"), -1;
        pec_variant want = d->ricevuta == PEC_VARIANT_NONE ? PEC_VARIANT_COMPLETA : d->ricevuta;
        if (want != c->variant)
            return fail(v, PEC_R_INCONSISTENT,
                        "daticert ricevuta tipo differs from X-TipoRicevuta"), -1;
    }
    return 0;
}

/* ---- the verification ------------------------------------------------------ */

static int verify_signature(const pec_trust *t, const unsigned char *msg, size_t len,
                            GMimeMessage *m, GMimeObject *s, bool use_raw, bool check_from,
                            pec_verdict *v)
{
    GMimeMultipart *mp = GMIME_MULTIPART(s);
    if (g_mime_multipart_get_count(mp) < 2)
        return fail(v, PEC_R_NO_SIGNATURE, "the multipart/signed has no signature part");
    GMimeObject *sigp = g_mime_multipart_get_part(mp, 1);
    GMimeContentType *ct = g_mime_object_get_content_type(sigp);
    if (!GMIME_IS_PART(sigp) ||
        !(g_mime_content_type_is_type(ct, "application", "pkcs7-signature") ||
          g_mime_content_type_is_type(ct, "application", "x-pkcs7-signature")))
        return fail(v, PEC_R_NO_SIGNATURE, "the second part is not application/pkcs7-signature");

    /* the signature, decoded */
    mime_buf sig = {0}, content = {0}, ent = {0};
    GMimeStream *st = g_mime_stream_mem_new();
    GMimeDataWrapper *w = g_mime_part_get_content(GMIME_PART(sigp));
    if (w)
        g_mime_data_wrapper_write_to_stream(w, st);
    GByteArray *arr = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(st));
    mime_buf_add(&sig, arr->data, arr->len);
    g_object_unref(st);

    /* the signed content, cut from the received bytes */
    const char *b = g_mime_multipart_get_boundary(mp);
    int rc;
    if (use_raw) {
        /* the signed entity is the whole message: cut from the input bytes */
        rc = b ? signed_content(msg, len, b, &content) : -1;
    } else {
        /* nested (re-wrapped): GMime keeps raw headers and encoded bodies */
        rc = mime_write(s, &ent);
        if (rc == 0)
            rc = b ? signed_content(ent.data, ent.len, b, &content) : -1;
    }
    CMS_ContentInfo *cms = NULL;
    BIO *dc = NULL;
    STACK_OF(X509) *certs = NULL;
    if (rc < 0) {
        fail(v, PEC_R_FORMAT, "the signed content cannot be delimited");
        goto out;
    }
    cms = pec_cms_read(sig.data, sig.len, &certs);
    if (!cms || OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed) {
        fail(v, PEC_R_BAD_SIGNATURE_FORMAT, "the signature part is not a readable CMS "
                                            "SignedData");
        goto out;
    }
    STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
    if (!sis || sk_CMS_SignerInfo_num(sis) != 1) {
        fail(v, PEC_R_BAD_SIGNATURE_FORMAT, "expected exactly one signer");
        goto out;
    }
    CMS_SignerInfo *si = sk_CMS_SignerInfo_value(sis, 0);
    X509_ALGOR *dig = NULL;
    CMS_SignerInfo_get0_algs(si, NULL, NULL, &dig, NULL);
    if (dig) {
        snprintf(v->digest, sizeof v->digest, "%s", OBJ_nid2sn(OBJ_obj2nid(dig->algorithm)));
        for (char *q = v->digest; *q; q++)
            *q = (char)tolower((unsigned char)*q); /* "sha256", "sha1" */
    }
    v->signing_time = signing_time(si);

    /* The content behind a buffering BIO, not a bare memory BIO: given a
     * memory BIO, OpenSSL 3.0's CMS_verify reads it through a second memory
     * BIO that it leaks when CMS_dataInit fails (a digestAlgorithms entry it
     * cannot fetch; found by fuzz_pec_verify). */
    dc = BIO_new(BIO_f_buffer());
    BIO *mem = BIO_new_mem_buf(content.data, (int)content.len);
    if (dc == NULL || mem == NULL) {
        BIO_free(mem);
        fail(v, PEC_R_BAD_SIGNATURE_FORMAT, "out of memory");
        goto out;
    }
    BIO_push(dc, mem);
    /* content and signature only; the path is checked below at the signing time */
    if (CMS_verify(cms, certs, NULL, dc, NULL, CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY) != 1) {
        unsigned long e;
        bool changed = false, nocert = false;
        while ((e = ERR_get_error()) != 0) {
            if (ERR_GET_LIB(e) == ERR_LIB_CMS && ERR_GET_REASON(e) == CMS_R_CONTENT_VERIFY_ERROR)
                changed = true;
            if (ERR_GET_LIB(e) == ERR_LIB_CMS && ERR_GET_REASON(e) == CMS_R_SIGNER_CERTIFICATE_NOT_FOUND)
                nocert = true;
        }
        if (nocert)
            fail(v, PEC_R_BAD_SIGNATURE_FORMAT, "the signer certificate is not embedded (§2.1)");
        else if (changed)
            fail(v, PEC_R_CONTENT_CHANGED, "the signed content was changed after signing "
                                           "(message digest mismatch)");
        else
            fail(v, PEC_R_BAD_SIGNATURE, "the signature value does not verify");
        goto out;
    }
    STACK_OF(X509) *signers = CMS_get0_signers(cms);
    X509 *signer = signers && sk_X509_num(signers) ? sk_X509_value(signers, 0) : NULL;
    sk_X509_free(signers);
    if (!signer) {
        fail(v, PEC_R_BAD_SIGNATURE_FORMAT, "no signer certificate");
        goto out;
    }
    cert_facts(signer, v);
    time_t when = t->at ? t->at : v->signing_time ? v->signing_time : time(NULL);
    if (check_chain(t, signer, certs, when, v) < 0)
        goto out;
    if (t->n_hashes) {
        v->directory_checked = true;
        if (!pec_trust_has_hash(t, v->signer_sha1)) {
            fail(v, PEC_R_NOT_IN_DIRECTORY, "certificate %s is not a providerCertificateHash "
                                            "of the providers' directory", v->signer_sha1);
            goto out;
        }
    }
    if (!check_from) { /* a bare signed entity has no From (the caller says so) */
        v->valid = true;
        goto out;
    }
    /* §2.1: the From address equals the certificate's e-mail address */
    char *from = mime_first_address(mime_header(GMIME_OBJECT(m), "From"));
    bool same = from && v->signer_email[0] && strcasecmp(from, v->signer_email) == 0;
    if (!same)
        fail(v, PEC_R_SIGNER_MISMATCH, "From <%s> is not the certificate's address <%s>",
             from ? from : "", v->signer_email);
    free(from);
    if (!same)
        goto out;
    v->valid = true;
out:
    BIO_free_all(dc);
    sk_X509_pop_free(certs, X509_free);
    CMS_ContentInfo_free(cms);
    mime_buf_free(&sig);
    mime_buf_free(&content);
    mime_buf_free(&ent);
    ERR_clear_error();
    return 0;
}

/* The daticert of m through the bounded parser: 0 read (*out), -1 none,
 * -2 not usable (the reason in derr). */
static int read_daticert(GMimeMessage *m, pec_daticert **out, char *derr, size_t dsz)
{
    *out = NULL;
    mime_buf x = {0};
    int rc = pec_find_daticert(g_mime_message_get_mime_part(m), &x);
    if (rc == -2) {
        pec_err(derr, dsz, "daticert: its part is larger than %u bytes",
                4 * PEC_DATICERT_MAX_BYTES);
    } else if (rc == 0) {
        pec_daticert *d = xcalloc(1, sizeof *d);
        if (!d || pec_daticert_parse(x.data, x.len, d, derr, dsz) < 0) {
            if (!d)
                pec_err(derr, dsz, "daticert: out of memory");
            rc = -2;
        }
        if (rc == 0)
            *out = d;
        else
            free(d);
    }
    mime_buf_free(&x);
    return rc;
}

/* A bare signed entity: a multipart/signed whose own header block has no
 * From and no PEC header (a provider's message without its outer header
 * fields, as a list re-wrapper or "save attachment" leaves it). */
static bool bare_entity(GMimeMessage *top)
{
    GMimeObject *o = GMIME_OBJECT(top), *body = g_mime_message_get_mime_part(top);
    return body && GMIME_IS_MULTIPART_SIGNED(body) && !mime_header(o, "From") &&
           !mime_header(o, "X-Trasporto") && !mime_header(o, "X-Ricevuta");
}

/* The class of a bare entity, from its (signed) daticert. */
static void bare_class(pec_class *c, const pec_daticert *d)
{
    c->type = d->tipo;
    c->errore = d->errore;  /* (virus stays false: X-VerificaSicurezza is a header field) */
    c->variant = PEC_VARIANT_NONE;
    if (d->tipo == PEC_TYPE_POSTA_CERTIFICATA)
        c->variant = d->ricevuta == PEC_VARIANT_NONE ? PEC_VARIANT_COMPLETA : d->ricevuta;
    else if (d->tipo == PEC_TYPE_AVVENUTA_CONSEGNA)
        c->variant = d->ricevuta;
}

/*
 * The order matters (docs/pec.md "Hostile daticert"): anyone can send a
 * message to the MX, so the daticert is read only after the signature over
 * the content has held; until then nothing of the message but its MIME
 * structure and the signature is parsed.  PEC_VERIFY_REPORT (pecctl) then
 * reads the daticert of a failed message too, for showing only, through the
 * same bounded parser.
 */
int pec_verify_flags(const pec_trust *t, const void *msg, size_t len, unsigned flags,
                     pec_verdict *v, char *err, size_t errsz)
{
    memset(v, 0, sizeof *v);
    GMimeMessage *top = mime_parse_message(msg, len, err, errsz);
    if (!top || len == 0) {
        if (top)
            g_object_unref(top);
        fail(v, PEC_R_UNREADABLE, "not an RFC 5322 message");
        return pec_err(err, errsz, "not an RFC 5322 message");
    }
    GMimeMessage *m = top;
    bool tried_d = false;
    pec_daticert *d = NULL;
    char derr[200] = "";
    if ((flags & PEC_VERIFY_BARE) && bare_entity(top)) {
        v->bare = true;
        v->cls.signed_entity = true;
    } else {
        pec_classify_msg(top, &v->cls, NULL, false, &m);
        if (v->cls.type == PEC_TYPE_NONE) {
            fail(v, PEC_R_NOT_PEC, "no X-Ricevuta or X-Trasporto header: not a PEC message");
            goto out;
        }
    }
    bool nested = false;
    GMimeObject *s = pec_signed_entity(m, &nested);
    if (!s) {
        fail(v, PEC_R_NO_SIGNATURE, "no S/MIME signature (multipart/signed) found");
        goto out;
    }
    verify_signature(t, msg, len, m, s, m == top && !nested, !v->bare, v);
    if (!v->valid)
        goto out;
    if (v->cls.type == PEC_TYPE_ANOMALIA)
        goto out; /* §3.2.2: no certification data */

    /* the signature holds: the certification data is the signer's */
    tried_d = true;
    int drc = read_daticert(m, &d, derr, sizeof derr);
    v->daticert = d;
    if (drc == -2) {
        snprintf(v->daticert_error, sizeof v->daticert_error, "%s", derr);
        fail(v, PEC_R_DATICERT_INVALID, "%s", derr);
        goto out;
    }
    if (drc == -1 && v->bare) {
        fail(v, PEC_R_NOT_PEC, "a signed entity without X-Ricevuta, X-Trasporto and "
                               "daticert.xml: not a PEC message");
        goto out;
    }
    if (drc == -1) {
        fail(v, PEC_R_DATICERT_MISSING, "no daticert.xml part (§4.3.3)");
        goto out;
    }
    if (v->bare) {
        bare_class(&v->cls, d); /* no header fields to compare it with */
    } else {
        pec_classify_msg(top, &v->cls, d, true, &m);
        if (check_consistency(m, &v->cls, d, v) < 0)
            goto out;
    }
    if (v->cls.type == PEC_TYPE_POSTA_CERTIFICATA)
        pec_original_of(top, &v->original);   /* the delivery point needs it: parsed once */
out:
    if (v->valid) {
        v->reason = PEC_OK;
        v->detail[0] = '\0';
    } else if ((flags & PEC_VERIFY_REPORT) && !tried_d &&
               (v->bare || (v->cls.type != PEC_TYPE_NONE && v->cls.type != PEC_TYPE_ANOMALIA))) {
        int rrc = read_daticert(m, &d, derr, sizeof derr);
        if (rrc == -2)
            snprintf(v->daticert_error, sizeof v->daticert_error, "%s", derr);
        v->daticert = d;            /* shown, not trusted: the verdict stays */
        if (d && !v->bare)
            pec_classify_msg(top, &v->cls, d, true, &m);
    }
    g_object_unref(top);
    return 0;
}

int pec_verify(const pec_trust *t, const void *msg, size_t len, pec_verdict *v, char *err,
               size_t errsz)
{
    return pec_verify_flags(t, msg, len, 0, v, err, errsz);
}

void pec_verdict_free(pec_verdict *v)
{
    if (!v)
        return;
    if (v->daticert) {
        pec_daticert_free(v->daticert);
        free(v->daticert);
    }
    v->daticert = NULL;
    pec_buf_free(&v->original);
}
