/*
 * keys_load.c - the keys of a configuration, loaded where they are used: by
 * the signer process of pecd, by `pecd -t` (which loads them to check them)
 * and by pecctl (directory publish, log seals).  A key is a PEM file or a
 * pkcs11: URI (keys_pkcs11.c); every error names the setting and the file.
 *
 * Interface: keys_load_pec_signer, keys_load_tls, keys_load_dir_client,
 * keys_public_id (keys.h).
 * The TLS key file must not be readable by group or others (as before, in
 * src/smtp/tls.c); the signing key's mode is warned about by pecd's start.
 */
#include "keys_int.h"
#include "lib/domains.h"
#include "lib/lib.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define FILE_MAX (1024 * 1024)

static char *read_named(const char *setting, const char *path, size_t *len, char *err,
                        size_t errlen)
{
    char *buf = NULL;
    if (fs_read_file(path, &buf, len, FILE_MAX) == -1) {
        snprintf(err, errlen, "%s %s: %s", setting, path, strerror(errno));
        return NULL;
    }
    return buf;
}

static EVP_PKEY *pem_key(const char *setting, const char *path, bool strict, char *err,
                         size_t errlen)
{
    struct stat st;
    if (stat(path, &st) == -1) {
        snprintf(err, errlen, "%s %s: %s", setting, path, strerror(errno));
        return NULL;
    }
    if (strict && (st.st_mode & (S_IRWXG | S_IRWXO))) {
        snprintf(err, errlen, "%s %s is readable by group or others (mode %04o); run chmod "
                 "600 on it", setting, path, (unsigned)(st.st_mode & 07777));
        return NULL;
    }
    size_t len = 0;
    char *pem = read_named(setting, path, &len, err, errlen);
    if (pem == NULL)
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    explicit_bzero(pem, len);
    free(pem);
    if (key == NULL) {
        char why[256];
        ERR_error_string_n(ERR_get_error(), why, sizeof why);
        ERR_clear_error();
        snprintf(err, errlen, "%s %s: not a PEM private key (%s)", setting, path, why);
    }
    return key;
}

/* The private key of setting (value: a path or a pkcs11: URI). */
static EVP_PKEY *load_key(const struct config *cfg, struct keys_hsm **hsm, const char *setting,
                          const char *value, bool strict, char *err, size_t errlen)
{
    if (!pkcs11_uri_is(value))
        return pem_key(setting, value, strict, err, errlen);
    if (*hsm == NULL && (*hsm = keys_hsm_open(cfg->pec_pkcs11_module, err, errlen)) == NULL)
        return NULL;
    return keys_hsm_key(*hsm, value, setting, cfg->pec_pkcs11_pin_file, err, errlen);
}

pec_signer *keys_load_pec_signer(const struct config *cfg, struct keys_hsm **hsm, char *err,
                                 size_t errlen)
{
    size_t clen = 0;
    char *chain = read_named("[pec] signing_certificate", cfg->pec_signing_cert, &clen, err,
                             errlen);
    if (chain == NULL)
        return NULL;
    EVP_PKEY *key = load_key(cfg, hsm, "[pec] signing_key", cfg->pec_signing_key, false, err,
                             errlen);
    pec_signer *s = NULL;
    char e2[256];
    if (key != NULL && (s = pec_signer_new_key(key, chain, clen, e2, sizeof e2)) == NULL)
        snprintf(err, errlen, "[pec] signing_key %s and signing_certificate %s: %s",
                 cfg->pec_signing_key, cfg->pec_signing_cert, e2);
    EVP_PKEY_free(key);
    free(chain);
    /* §2.1: what pecd signs has From posta-certificata@<domain> (the
     * service address), which must be the certificate's address */
    if (s != NULL && strcasecmp(s->email, cfg->pec_service_address) != 0) {
        snprintf(err, errlen, "[pec] signing_certificate %s is for <%s>, not for the service "
                              "address <%s> (RFC 6109 §2.1: From equals the certificate's "
                              "e-mail address)",
                 cfg->pec_signing_cert, s->email[0] ? s->email : "no address",
                 cfg->pec_service_address);
        pec_signer_free(s);
        return NULL;
    }
    return s;
}

/* A private key and the certificate file it belongs to, checked together. */
static int load_pair(const struct config *cfg, struct keys_hsm **hsm, const char *key_setting,
                     const char *key_value, const char *cert_setting, const char *cert_path,
                     bool strict, EVP_PKEY **key, char **chain, size_t *chain_len, char *err,
                     size_t errlen)
{
    *key = NULL;
    *chain = read_named(cert_setting, cert_path, chain_len, err, errlen);
    if (*chain == NULL)
        return -1;
    BIO *b = BIO_new_mem_buf(*chain, (int)*chain_len);
    X509 *cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (cert == NULL) {
        snprintf(err, errlen, "%s %s: no PEM certificate in it", cert_setting, cert_path);
        goto fail;
    }
    *key = load_key(cfg, hsm, key_setting, key_value, strict, err, errlen);
    if (*key == NULL)
        goto fail;
    if (X509_check_private_key(cert, *key) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "%s %s does not match %s %s", key_setting, key_value,
                 cert_setting, cert_path);
        goto fail;
    }
    X509_free(cert);
    return 0;
fail:
    X509_free(cert);
    EVP_PKEY_free(*key);
    *key = NULL;
    free(*chain);
    *chain = NULL;
    return -1;
}

int keys_load_tls(const struct config *cfg, struct keys_hsm **hsm, EVP_PKEY **key, char **chain,
                  size_t *chain_len, char *err, size_t errlen)
{
    return load_pair(cfg, hsm, "[tls] key", cfg->tls_key, "[tls] certificate", cfg->tls_cert,
                     true, key, chain, chain_len, err, errlen);
}

int keys_load_tls_domain(const struct config *cfg, const struct domain *d,
                         struct keys_hsm **hsm, EVP_PKEY **key, char *err, size_t errlen)
{
    char ks[512], cs[512], *chain = NULL;
    size_t len = 0;
    snprintf(ks, sizeof ks, "%s:%u: %s tls_key", d->file ? d->file : "?", d->line, d->name);
    snprintf(cs, sizeof cs, "%s:%u: %s tls_certificate", d->file ? d->file : "?", d->line,
             d->name);
    int r = load_pair(cfg, hsm, ks, d->tls_key, cs, d->tls_cert, true, key, &chain, &len, err,
                      errlen);
    free(chain);
    return r;
}

int keys_load_dir_client(const struct config *cfg, struct keys_hsm **hsm, EVP_PKEY **key,
                         char *err, size_t errlen)
{
    char *chain = NULL;
    size_t len = 0;
    int r = load_pair(cfg, hsm, "[pec] directory_client_key", cfg->pec_dir_client_key,
                      "[pec] directory_client_cert", cfg->pec_dir_client_cert, false, key,
                      &chain, &len, err, errlen);
    free(chain);
    return r;
}

int keys_public_id(EVP_PKEY *key, unsigned char id[32])
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    unsigned int mdlen = 0;
    int ok = n > 0 && EVP_Digest(der, (size_t)n, id, &mdlen, EVP_sha256(), NULL) == 1 &&
             mdlen == 32;
    OPENSSL_free(der);
    return ok ? 0 : -1;
}
