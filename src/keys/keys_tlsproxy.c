/*
 * keys_tlsproxy.c - the TLS key of pecd's network-facing process: an
 * EVP_PKEY with the certificate's public key whose private operations are
 * done by the signer process, as OpenSMTPD's `ca` process does for its TLS
 * keys.  A TLS handshake signs once (ECDHE key exchange, TLS 1.2 and 1.3),
 * so the event loop asks the signer one RSA or ECDSA operation per
 * handshake; the key itself is never in this process.
 *
 * How: an RSA_METHOD whose private encryption (the PKCS#1 v1.5 signature,
 * and the raw RSA operation under a PSS padding OpenSSL computed) and an
 * EC_KEY_METHOD whose ECDSA signature go over the signer's TLS socket
 * (keys_client_tls_op).  OpenSSL 3 keeps such a key on its legacy path (a
 * key with its own method is "foreign" and never exported to a provider),
 * which is how engines such as libp11's work; the method interface is
 * deprecated in OpenSSL 3.0 but present in Debian 12's build, hence
 * OPENSSL_SUPPRESS_DEPRECATED in this file only.  OpenSSL 3's replacement,
 * a provider of our own, is ten times the code for the same two operations.
 * RSA decryption (the RSA key exchange of TLS 1.2's non-ECDHE suites) is
 * refused: pecd's TLS offers forward-secret key exchanges only when its key
 * is in the signer (docs/operator-guide.md).
 *
 * Interface: keys_tls_proxy_new (keys.h).
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "keys_int.h"
#include "lib/lib.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

struct proxy {
    struct keys_client *c;
    unsigned char id[32];
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int rsa_idx = -1, ec_idx = -1;
static RSA_METHOD *rsa_meth;
static EC_KEY_METHOD *ec_meth;

static void proxy_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                       void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

/* One operation on the signer: the answer into out (at most outsize). */
static int forward(const struct proxy *p, uint32_t op, uint32_t padding, const unsigned char *in,
                   size_t inlen, unsigned char *out, size_t outsize, size_t *outlen)
{
    if (p == NULL || inlen > KEYS_RSA_MAX)
        return -1;
    struct keys_req rq = {.op = op, .padding = padding, .len = (uint32_t)inlen};
    memcpy(rq.id, p->id, sizeof rq.id);
    memcpy(rq.data, in, inlen);
    pec_buf ans;
    char err[512];
    if (keys_client_tls_op(p->c, &rq, &ans, err, sizeof err) == -1) {
        log_warn("TLS handshake: %s", err);
        return -1;
    }
    int rc = -1;
    if (ans.len <= outsize) {
        memcpy(out, ans.data, ans.len);
        *outlen = ans.len;
        rc = 0;
    }
    pec_buf_free(&ans);
    return rc;
}

static int rsa_priv_enc(int flen, const unsigned char *from, unsigned char *to, RSA *rsa,
                        int padding)
{
    size_t outlen = 0;
    if (flen < 0 || forward(RSA_get_ex_data(rsa, rsa_idx), KOP_TLS_RSA, (uint32_t)padding, from,
                            (size_t)flen, to, (size_t)RSA_size(rsa), &outlen) == -1)
        return -1;
    return (int)outlen;
}

static int rsa_priv_dec(int flen, const unsigned char *from, unsigned char *to, RSA *rsa,
                        int padding)
{
    (void)flen;
    (void)from;
    (void)to;
    (void)rsa;
    (void)padding;
    return -1;
}

static int ec_sign(int type, const unsigned char *dgst, int dlen, unsigned char *sig,
                   unsigned int *siglen, const BIGNUM *kinv, const BIGNUM *r, EC_KEY *eckey)
{
    (void)type;
    (void)kinv;
    (void)r;
    size_t outlen = 0;
    if (dlen < 0 || forward(EC_KEY_get_ex_data(eckey, ec_idx), KOP_TLS_ECDSA, 0, dgst,
                            (size_t)dlen, sig, (size_t)ECDSA_size(eckey), &outlen) == -1)
        return 0;
    *siglen = (unsigned int)outlen;
    return 1;
}

static ECDSA_SIG *ec_sign_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv,
                              const BIGNUM *r, EC_KEY *eckey)
{
    unsigned char der[KEYS_RSA_MAX];
    unsigned int len = 0;
    if (ECDSA_size(eckey) > (int)sizeof der || !ec_sign(0, dgst, dlen, der, &len, kinv, r, eckey))
        return NULL;
    const unsigned char *p = der;
    return d2i_ECDSA_SIG(NULL, &p, len);
}

static void init(void)
{
    rsa_idx = RSA_get_ex_new_index(0, NULL, NULL, NULL, proxy_free);
    ec_idx = EC_KEY_get_ex_new_index(0, NULL, NULL, NULL, proxy_free);
    rsa_meth = RSA_meth_dup(RSA_PKCS1_OpenSSL());
    if (rsa_meth != NULL) {
        RSA_meth_set1_name(rsa_meth, "pecd signer process");
        RSA_meth_set_priv_enc(rsa_meth, rsa_priv_enc);
        RSA_meth_set_priv_dec(rsa_meth, rsa_priv_dec);
    }
    ec_meth = EC_KEY_METHOD_new(EC_KEY_get_default_method());
    if (ec_meth != NULL) {
        int (*setup)(EC_KEY *, BN_CTX *, BIGNUM **, BIGNUM **) = NULL;
        EC_KEY_METHOD_get_sign(EC_KEY_get_default_method(), NULL, &setup, NULL);
        EC_KEY_METHOD_set_sign(ec_meth, ec_sign, setup, ec_sign_sig);
    }
}

EVP_PKEY *keys_tls_proxy_new(struct keys_client *c, EVP_PKEY *pub, const unsigned char id[32],
                             char *err, size_t errlen)
{
    pthread_once(&once, init);
    struct proxy *p = calloc(1, sizeof *p);
    EVP_PKEY *pk = EVP_PKEY_new();
    if (p == NULL || pk == NULL || rsa_meth == NULL || ec_meth == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    p->c = c;
    memcpy(p->id, id, sizeof p->id);
    int type = EVP_PKEY_get_base_id(pub);
    if (type == EVP_PKEY_RSA) {
        const RSA *pr = EVP_PKEY_get0_RSA(pub);
        const BIGNUM *n = NULL, *e = NULL;
        RSA *r = pr ? RSA_new() : NULL;
        if (r == NULL || (RSA_get0_key(pr, &n, &e, NULL), n == NULL) ||
            RSA_set_method(r, rsa_meth) != 1 || RSA_set0_key(r, BN_dup(n), BN_dup(e), NULL) != 1 ||
            RSA_set_ex_data(r, rsa_idx, p) != 1) {
            RSA_free(r);
            snprintf(err, errlen, "cannot make the TLS key's stand-in");
            goto fail;
        }
        p = NULL;   /* the RSA owns it now */
        if (EVP_PKEY_assign_RSA(pk, r) != 1) {
            RSA_free(r);
            snprintf(err, errlen, "cannot make the TLS key's stand-in");
            goto fail;
        }
    } else if (type == EVP_PKEY_EC) {
        const EC_KEY *pe = EVP_PKEY_get0_EC_KEY(pub);
        EC_KEY *k = pe ? EC_KEY_new() : NULL;
        if (k == NULL || EC_KEY_set_method(k, ec_meth) != 1 ||
            EC_KEY_set_group(k, EC_KEY_get0_group(pe)) != 1 ||
            EC_KEY_set_public_key(k, EC_KEY_get0_public_key(pe)) != 1 ||
            EC_KEY_set_ex_data(k, ec_idx, p) != 1) {
            EC_KEY_free(k);
            snprintf(err, errlen, "cannot make the TLS key's stand-in");
            goto fail;
        }
        p = NULL;
        if (EVP_PKEY_assign_EC_KEY(pk, k) != 1) {
            EC_KEY_free(k);
            snprintf(err, errlen, "cannot make the TLS key's stand-in");
            goto fail;
        }
    } else {
        snprintf(err, errlen, "the TLS key is neither RSA nor EC (%s): keep it RSA or ECDSA",
                 OBJ_nid2sn(type));
        goto fail;
    }
    ERR_clear_error();
    return pk;
fail:
    ERR_clear_error();
    free(p);
    EVP_PKEY_free(pk);
    return NULL;
}
