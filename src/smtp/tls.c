/*
 * tls.c - the server's TLS context: TLS 1.2 or later only, the certificate
 * chain and a private key given as objects (pecd's key is a stand-in whose
 * operations the signer process does, src/keys/keys_tlsproxy.c; the file
 * was read, and its mode checked, by whoever loaded it).  TLS 1.2's RSA key
 * exchange (no forward secrecy, and a decryption the signer does not do)
 * is never offered.
 */
#include "smtp.h"
#include "lib/lib.h"

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
