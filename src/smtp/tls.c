/*
 * tls.c - the server's TLS context: TLS 1.2 or later only, the certificate
 * chain and a private key given as objects (pecd's key is a stand-in whose
 * operations the signer process does, src/keys/keys_tlsproxy.c; the file
 * was read, and its mode checked, by whoever loaded it).  TLS 1.2's RSA key
 * exchange (no forward secrecy, and a decryption the signer does not do)
 * is never offered.  With local domains that have their own certificate
 * (local_domains_file tls_certificate=), the name a client asks for (SNI,
 * RFC 6066 §3) chooses it: the domain or the closest parent domain that has
 * one, else [tls]'s.
 */
#include "smtp.h"
#include "lib/domains.h"
#include "lib/lib.h"

#include <glib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

SSL_CTX *smtp_tls_server_ctx_key(const char *chain_pem, size_t chain_len, EVP_PKEY *key,
                                 int min_version, const char *ciphers, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    BIO *b = BIO_new_mem_buf(chain_pem, (int)chain_len);
    X509 *leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    if (ctx == NULL || leaf == NULL) {
        snprintf(err, errlen, ctx ? "[tls] certificate: no PEM certificate" : "SSL_CTX_new failed");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle TLS sessions should cost little memory: release buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate(ctx, leaf) != 1) {
        snprintf(err, errlen, "[tls] certificate: OpenSSL refuses it");
        goto fail;
    }
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
            X509_free(x);
            snprintf(err, errlen, "[tls] certificate: a chain certificate is refused");
            goto fail;
        }
    }
    ERR_clear_error();   /* the end of the PEM stream */
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "[tls] key does not match [tls] certificate");
        goto fail;
    }
    char list[512];
    if (str_fmt(list, sizeof list, "%s:!kRSA", ciphers ? ciphers : "DEFAULT") < 0 ||
        SSL_CTX_set_cipher_list(ctx, list) != 1) {
        snprintf(err, errlen, "[tls] ciphers: OpenSSL accepts none of '%s' (RSA key exchange "
                              "excluded)", ciphers ? ciphers : "DEFAULT");
        goto fail;
    }
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"pecd", 4);
    X509_free(leaf);
    BIO_free(b);
    return ctx;
fail:
    ERR_clear_error();
    X509_free(leaf);
    BIO_free(b);
    SSL_CTX_free(ctx);
    return NULL;
}

/* ---- SNI ------------------------------------------------------------------ */

static int sni_index = -1;
static GOnce sni_once = G_ONCE_INIT;

static void sni_map_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (ptr != NULL)
        g_hash_table_destroy(ptr);
}

static gpointer sni_index_new(gpointer arg)
{
    (void)arg;
    sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, sni_map_free);
    return NULL;
}

/* The name's context, or its closest parent domain's. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    GHashTable *map = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char key[256];
    if (name == NULL || strlen(name) >= sizeof key)
        return SSL_TLSEXT_ERR_NOACK;   /* [tls]'s certificate */
    str_copy(key, name, sizeof key);
    str_lower(key);
    size_t n = strlen(key);
    if (n > 1 && key[n - 1] == '.')
        key[n - 1] = '\0';            /* the absolute form names the same host */
    for (const char *p = key; p != NULL && *p; p = strchr(p, '.') ? strchr(p, '.') + 1 : NULL) {
        SSL_CTX *c = g_hash_table_lookup(map, p);
        if (c != NULL) {
            SSL_set_SSL_CTX(ssl, c);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

int smtp_tls_sni(SSL_CTX *ctx, const struct domains *t, smtp_tls_ctx_fn make, void *arg,
                 char *err, size_t errlen)
{
    size_t n;
    const struct domain **all = domains_sorted(t, &n);
    GHashTable *map = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                            (GDestroyNotify)SSL_CTX_free);
    GHashTable *by_file = g_hash_table_new(g_str_hash, g_str_equal);  /* one context a pair */
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct domain *d = all[i];
        if (d->tls_cert == NULL)
            continue;
        char pair[2 * 4096 + 2];
        snprintf(pair, sizeof pair, "%s\n%s", d->tls_cert, d->tls_key);
        SSL_CTX *c = g_hash_table_lookup(by_file, pair);
        if (c == NULL) {
            char why[512];
            c = make(arg, d->tls_cert, d->tls_key, why, sizeof why);
            if (c == NULL) {
                snprintf(err, errlen, "%s:%u: %s: %s", d->file ? d->file : "?", d->line,
                         d->name, why);
                rc = -1;
                break;
            }
            g_hash_table_insert(by_file, g_strdup(pair), c);
        } else {
            SSL_CTX_up_ref(c);
        }
        g_hash_table_insert(map, g_strdup(d->name), c);
    }
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, by_file);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_free(k);
    g_hash_table_destroy(by_file);
    g_free(all);
    if (rc == -1 || g_hash_table_size(map) == 0) {
        g_hash_table_destroy(map);
        return rc;
    }
    g_once(&sni_once, sni_index_new, NULL);
    if (sni_index < 0 || SSL_CTX_set_ex_data(ctx, sni_index, map) != 1) {
        g_hash_table_destroy(map);
        snprintf(err, errlen, "cannot attach the SNI certificates");
        return -1;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, map);
    log_info("TLS: %u local domain%s with a certificate of their own (SNI)",
             g_hash_table_size(map), g_hash_table_size(map) == 1 ? "" : "s");
    return 0;
}
