/*
 * pec_dirtls.c - why a TLS connection to the directory's LDAP server failed.
 *
 * libldap built with GnuTLS (Debian) reports a failed certificate check as
 * "Can't contact LDAP server - (unknown error code)": it drops GnuTLS's
 * verification status.  When an ldaps:// or StartTLS connection fails,
 * pec_dirtls_probe() repeats the handshake once with OpenSSL, with the same
 * CA file and host name, and names the cause ("certificate verify failed:
 * self-signed certificate in certificate chain").  It runs only after a
 * failure, in the refresh thread, bounded by the directory timeout.
 *
 * StartTLS (RFC 4511 §4.14.1) is spoken by hand: one fixed ExtendedRequest
 * and a bounded read of the ExtendedResponse's resultCode.
 */
#include "pec/pec_dirtls.h"
#include "pec_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

static int tcp_connect(const char *host, int port, unsigned timeout, char *why, size_t whysz)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char serv[16];
    snprintf(serv, sizeof serv, "%d", port);
    int gai = getaddrinfo(host, serv, &hints, &res);
    if (gai != 0)
        return pec_err(why, whysz, "%s: %s", host, gai_strerror(gai));
    struct timeval tv = {.tv_sec = timeout ? (time_t)timeout : 30};
    int fd = -1, e = 0;
    for (struct addrinfo *a = res; a && fd == -1; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd == -1)
            continue;
        /* on Linux SO_SNDTIMEO bounds connect() too */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == -1) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd == -1)
        pec_err(why, whysz, "connect to %s:%d: %s", host, port, strerror(e ? e : EHOSTUNREACH));
    return fd;
}

/* Reads one BER TLV header at p (definite length, at most 2 length bytes). */
static int ber_header(const unsigned char *p, size_t n, unsigned char *tag, size_t *hdr,
                      size_t *len)
{
    if (n < 2)
        return -1;
    *tag = p[0];
    if (p[1] < 0x80) {
        *hdr = 2;
        *len = p[1];
    } else if (p[1] == 0x81 && n >= 3) {
        *hdr = 3;
        *len = p[2];
    } else if (p[1] == 0x82 && n >= 4) {
        *hdr = 4;
        *len = (size_t)p[2] << 8 | p[3];
    } else {
        return -1;
    }
    return 0;
}

int pec_dirtls_starttls_answer(const unsigned char *buf, size_t got, char *why, size_t whysz)
{
    size_t hdr, len;
    unsigned char tag;
    if (ber_header(buf, got, &tag, &hdr, &len) != 0)
        return got < 4 ? 1 : pec_err(why, whysz, "StartTLS: malformed answer");
    if (tag != 0x30)
        return pec_err(why, whysz, "StartTLS: malformed answer");
    if (hdr + len > PEC_DIRTLS_ANSWER_MAX)
        return pec_err(why, whysz, "StartTLS: answer too long");
    if (got < hdr + len)
        return 1;
    got = hdr + len;
    /* LDAPMessage { messageID, [APPLICATION 24] { resultCode ENUMERATED, ... } } */
    size_t o = hdr;
    if (ber_header(buf + o, got - o, &tag, &hdr, &len) || tag != 0x02 || hdr + len > got - o)
        return pec_err(why, whysz, "StartTLS: malformed answer");
    o += hdr + len;
    if (o >= got || ber_header(buf + o, got - o, &tag, &hdr, &len) || tag != 0x78)
        return pec_err(why, whysz, "StartTLS: malformed answer");
    o += hdr;
    if (o + 3 > got || buf[o] != 0x0a || buf[o + 1] != 1)
        return pec_err(why, whysz, "StartTLS: malformed answer");
    if (buf[o + 2] != 0)
        return pec_err(why, whysz, "the server refused StartTLS (resultCode %u)", buf[o + 2]);
    return 0;
}

/* StartTLS: ExtendedRequest 1.3.6.1.4.1.1466.20037 as message 1; 0 when the
 * server answers success. */
static int starttls(int fd, char *why, size_t whysz)
{
    static const char oid[] = "1.3.6.1.4.1.1466.20037";
    unsigned char req[64] = {0x30, 0x1d, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16};
    memcpy(req + 9, oid, sizeof oid - 1);
    if (write(fd, req, 9 + sizeof oid - 1) != (ssize_t)(9 + sizeof oid - 1))
        return pec_err(why, whysz, "StartTLS: cannot send the request: %s", strerror(errno));
    unsigned char buf[PEC_DIRTLS_ANSWER_MAX];
    size_t got = 0, want = 4, hdr, len;
    unsigned char tag;
    int rc = 1;
    while (rc == 1) {
        /* never read past the answer: the TLS handshake follows on this socket */
        ssize_t r = read(fd, buf + got, want - got);
        if (r <= 0)
            return pec_err(why, whysz, "StartTLS: no answer from the server");
        got += (size_t)r;
        if (got < want)
            continue;
        rc = pec_dirtls_starttls_answer(buf, got, why, whysz);
        if (rc == 1 && ber_header(buf, got, &tag, &hdr, &len) == 0)
            want = hdr + len; /* <= sizeof buf: checked by the parser */
    }
    return rc;
}

static int handshake(int fd, const char *host, const char *ca_file, char *why, size_t whysz)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int rc = -1;
    if (!ctx) {
        pec_ossl_err(why, whysz, "TLS");
        goto out;
    }
    if (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
                : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        pec_err(why, whysz, "cannot read the CA file %s", ca_file ? ca_file : "(system)");
        goto out;
    }
    /* verify without aborting: the verification result is what we report */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    ssl = SSL_new(ctx);
    unsigned char a[16];
    bool ip = inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
    if (!ssl || !SSL_set_fd(ssl, fd) ||
        !(ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
             : SSL_set1_host(ssl, host) && SSL_set_tlsext_host_name(ssl, host))) {
        pec_ossl_err(why, whysz, "TLS");
        goto out;
    }
    if (SSL_connect(ssl) != 1) {
        pec_ossl_err(why, whysz, "TLS handshake failed");
        goto out;
    }
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK) {
        pec_err(why, whysz, "the server certificate is not accepted: %s (CA file %s, host %s)",
                X509_verify_cert_error_string(vr), ca_file ? ca_file : "system", host);
        goto out;
    }
    rc = 0;
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

int pec_dirtls_probe(const char *host, int port, bool use_starttls, const char *ca_file,
                     unsigned timeout, char *why, size_t whysz)
{
    /* OpenSSL writes with write(2): a server that hangs up must not kill a
     * process that keeps SIGPIPE (pecctl); block it here and drop a pending one */
    sigset_t pipe, old;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &old);
    int fd = tcp_connect(host, port, timeout, why, whysz);
    int rc = -1;
    if (fd != -1) {
        rc = use_starttls ? starttls(fd, why, whysz) : 0;
        if (rc == 0)
            rc = handshake(fd, host, ca_file, why, whysz);
        close(fd);
    }
    struct timespec zero = {0};
    while (sigtimedwait(&pipe, NULL, &zero) == SIGPIPE)
        ;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
