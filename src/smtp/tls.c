/*
 * tls.c - the server's TLS context: TLS 1.2 or later only, the certificate
 * chain and key from the configuration, and a refusal to use a private key
 * that other users can read (secure by default).
 */
#include "smtp.h"
#include "lib/lib.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void ssl_err(char *err, size_t errlen, const char *what, const char *path)
{
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    snprintf(err, errlen, "%s %s: %s", what, path, buf);
}

SSL_CTX *smtp_tls_server_ctx(const char *cert, const char *key, int min_version,
                             const char *ciphers, char *err, size_t errlen)
{
    struct stat st;
    if (stat(key, &st) == -1) {
        snprintf(err, errlen, "TLS key %s: %s", key, strerror(errno));
        return NULL;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen, "TLS key %s is readable by group or others (mode %04o); "
                 "run chmod 600 on it", key, (unsigned)(st.st_mode & 07777));
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle TLS sessions should cost little memory: release buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_err(err, errlen, "cannot load TLS certificate", cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, errlen, "cannot load TLS key", key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "TLS key %s does not match certificate %s", key, cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (ciphers != NULL && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
        snprintf(err, errlen, "[tls] ciphers: OpenSSL accepts none of '%s'", ciphers);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"pecd", 4);
    return ctx;
}
