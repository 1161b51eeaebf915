/*
 * pec_cms.c - reading a CMS SignedData without parsing its certificates
 * again and again.
 *
 * Every PEC message carries the same one or two certificates of its provider
 * (signer and CA), and OpenSSL 3.0 spends about 0.2 ms in its decoder
 * machinery on the public key of each certificate it parses
 * (OSSL_DECODER_CTX_new_for_pkey), more than the RSA verification itself.
 * So the SignedData is read first with a shallow template in which every
 * element is an opaque ASN1_ANY; the certificates are taken out of it and
 * looked up, by their exact encoding, in a small cache of parsed X509s; the
 * rest is encoded again without them and given to d2i_CMS_ContentInfo.  The
 * signature covers the content and the signed attributes, both carried over
 * byte for byte (only the order of the SET OF elements may change), so the
 * verification sees the same signer, certificates and signature.  Anything
 * the shallow path cannot read goes to d2i_CMS_ContentInfo whole.
 *
 * Interface: pec_cms_read (pec_internal.h).
 */
#include "pec/pec_internal.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include <glib.h>
#include <openssl/asn1t.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#define CERT_CACHE_MAX 256      /* certificates kept; the cache is emptied when full */
#define CERT_CACHE_SIZE 16384   /* larger encodings are parsed but not kept (real ones: 1-2 KB) */

/* SignedData (RFC 5652 §5.1) with opaque elements */
typedef struct {
    ASN1_INTEGER *version;
    STACK_OF(ASN1_TYPE) *digest_algs;
    ASN1_TYPE *encap;
    STACK_OF(ASN1_TYPE) *certs;
    STACK_OF(ASN1_TYPE) *crls;
    STACK_OF(ASN1_TYPE) *signer_infos;
} SHALLOW_SIGNED;

ASN1_SEQUENCE(SHALLOW_SIGNED) = {
    ASN1_SIMPLE(SHALLOW_SIGNED, version, ASN1_INTEGER),
    ASN1_SET_OF(SHALLOW_SIGNED, digest_algs, ASN1_ANY),
    ASN1_SIMPLE(SHALLOW_SIGNED, encap, ASN1_ANY),
    ASN1_IMP_SET_OF_OPT(SHALLOW_SIGNED, certs, ASN1_ANY, 0),
    ASN1_IMP_SET_OF_OPT(SHALLOW_SIGNED, crls, ASN1_ANY, 1),
    ASN1_SET_OF(SHALLOW_SIGNED, signer_infos, ASN1_ANY)
} static_ASN1_SEQUENCE_END(SHALLOW_SIGNED)

/* ContentInfo (RFC 5652 §3) whose content is a SignedData */
typedef struct {
    ASN1_OBJECT *type;
    SHALLOW_SIGNED *signed_data;
} SHALLOW_CI;

ASN1_SEQUENCE(SHALLOW_CI) = {
    ASN1_SIMPLE(SHALLOW_CI, type, ASN1_OBJECT),
    ASN1_EXP(SHALLOW_CI, signed_data, SHALLOW_SIGNED, 0)
} static_ASN1_SEQUENCE_END(SHALLOW_CI)

static GMutex cache_lock;
static GHashTable *cache;       /* GBytes (DER) -> X509 * */

static void cert_unref(gpointer x)
{
    X509_free(x);
}

/* The parsed certificate of this encoding, from the cache or parsed now;
 * a new reference, NULL if the encoding is not a certificate. */
static X509 *cached_cert(const unsigned char *der, long len)
{
    GBytes *key = g_bytes_new(der, (gsize)len);
    g_mutex_lock(&cache_lock);
    if (cache == NULL)
        cache = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                      (GDestroyNotify)g_bytes_unref, cert_unref);
    X509 *x = g_hash_table_lookup(cache, key);
    if (x != NULL)
        X509_up_ref(x);
    g_mutex_unlock(&cache_lock);
    if (x != NULL) {
        g_bytes_unref(key);
        return x;
    }
    const unsigned char *p = der;
    x = d2i_X509(NULL, &p, len);
    if (x == NULL || p != der + len) {
        X509_free(x);
        g_bytes_unref(key);
        return NULL;
    }
    if (len > CERT_CACHE_SIZE) {
        g_bytes_unref(key);
        return x;
    }
    X509_up_ref(x);
    g_mutex_lock(&cache_lock);
    if (g_hash_table_size(cache) >= CERT_CACHE_MAX)
        g_hash_table_remove_all(cache);
    g_hash_table_replace(cache, key, x);
    g_mutex_unlock(&cache_lock);
    return x;
}

static CMS_ContentInfo *read_whole(const unsigned char *der, size_t len, STACK_OF(X509) **certs)
{
    const unsigned char *p = der;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)len);
    if (cms != NULL && OBJ_obj2nid(CMS_get0_type(cms)) == NID_pkcs7_signed)
        *certs = CMS_get1_certs(cms);
    if (*certs == NULL)
        *certs = sk_X509_new_null();
    return cms;
}

CMS_ContentInfo *pec_cms_read(const unsigned char *der, size_t len, STACK_OF(X509) **certs)
{
    *certs = NULL;
    if (len == 0 || len > LONG_MAX)
        return NULL;
    const unsigned char *p = der;
    SHALLOW_CI *ci = (SHALLOW_CI *)ASN1_item_d2i(NULL, &p, (long)len, ASN1_ITEM_rptr(SHALLOW_CI));
    if (ci == NULL || OBJ_obj2nid(ci->type) != NID_pkcs7_signed) {
        ASN1_item_free((ASN1_VALUE *)ci, ASN1_ITEM_rptr(SHALLOW_CI));
        ERR_clear_error();
        return read_whole(der, len, certs);
    }
    STACK_OF(X509) *out = sk_X509_new_null();
    STACK_OF(ASN1_TYPE) *embedded = ci->signed_data->certs;
    bool ok = out != NULL;
    for (int i = 0; ok && i < sk_ASN1_TYPE_num(embedded); i++) {
        ASN1_TYPE *t = sk_ASN1_TYPE_value(embedded, i);
        if (t->type != V_ASN1_SEQUENCE)
            continue;   /* the other CertificateChoices (attribute certificates, ...) */
        X509 *x = cached_cert(t->value.sequence->data, t->value.sequence->length);
        ok = x != NULL && sk_X509_push(out, x) > 0;
        if (!ok)
            X509_free(x);
    }
    CMS_ContentInfo *cms = NULL;
    if (ok) {
        /* the same SignedData without its certificates */
        ci->signed_data->certs = NULL;
        unsigned char *enc = NULL;
        int n = ASN1_item_i2d((ASN1_VALUE *)ci, &enc, ASN1_ITEM_rptr(SHALLOW_CI));
        ci->signed_data->certs = embedded;
        const unsigned char *q = enc;
        cms = n > 0 ? d2i_CMS_ContentInfo(NULL, &q, n) : NULL;
        OPENSSL_free(enc);
    }
    ASN1_item_free((ASN1_VALUE *)ci, ASN1_ITEM_rptr(SHALLOW_CI));
    if (cms == NULL) {
        /* OpenSSL's own reading decides, and says why */
        sk_X509_pop_free(out, X509_free);
        ERR_clear_error();
        return read_whole(der, len, certs);
    }
    *certs = out;
    return cms;
}
