/*
 * client.c - the SMTP and LMTP client (see client.h).
 *
 * A connection runs on a delivery thread with blocking steps, each bounded by
 * poll() and the configured timeout; that keeps the state machine linear and
 * easy to audit (greeting → EHLO → STARTTLS → EHLO → AUTH → MAIL → RCPT… →
 * DATA or BDAT → per-recipient results), like Postfix's smtp(8) process.
 * With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go in one write.
 */
#include "client.h"
#include "smtp.h"
#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct smtp_client {
    int fd;
    SSL *ssl;
    char rbuf[8192];
    size_t rlen, roff;
    unsigned ext;
    uint64_t max_size;
    bool verified;
    bool dane;
    bool broken;
    bool open_txn;       /* a transaction may still be open on the server: RSET before the next */
    bool data_sent;      /* the last transaction got as far as sending the message */
    char tls_info[96];
    struct smtp_client_opts opts;
    char host[256];
};

static const char *const policy_names[] = {"none", "may", "encrypt", "verify", "dane"};

int tls_policy_parse(const char *s, enum tls_policy *out)
{
    for (size_t i = 0; i < sizeof policy_names / sizeof policy_names[0]; i++) {
        if (str_ieq(s, policy_names[i])) {
            *out = (enum tls_policy)i;
            return 0;
        }
    }
    return -1;
}

const char *tls_policy_name(enum tls_policy p) { return policy_names[p]; }

static void fail_set(struct smtp_reply *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_set(struct smtp_reply *r, int code, const char *fmt, ...)
{
    r->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof r->text, fmt, ap);
    va_end(ap);
}

/* ---- I/O with timeouts ------------------------------------------------------ */

static int wait_fd(struct smtp_client *c, short events)
{
    struct pollfd p = {.fd = c->fd, .events = events};
    int r;
    do
        r = poll(&p, 1, (int)c->opts.timeout * 1000);
    while (r == -1 && errno == EINTR);
    if (r == 0) {
        errno = ETIMEDOUT;
        return -1;
    }
    return r < 0 ? -1 : 0;
}

static ssize_t io_read(struct smtp_client *c, char *buf, size_t n)
{
    for (;;) {
        if (c->ssl == NULL) {
            ssize_t r = read(c->fd, buf, n);
            if (r >= 0)
                return r;
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN || wait_fd(c, POLLIN) == -1)
                return -1;
            continue;
        }
        ERR_clear_error();
        int r = SSL_read(c->ssl, buf, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0;
        if (e == SSL_ERROR_WANT_READ) {
            if (wait_fd(c, POLLIN) == -1)
                return -1;
        } else if (e == SSL_ERROR_WANT_WRITE) {
            if (wait_fd(c, POLLOUT) == -1)
                return -1;
        } else {
            errno = EPROTO;
            return -1;
        }
    }
}

static int io_write(struct smtp_client *c, const char *buf, size_t n)
{
    while (n > 0) {
        if (c->ssl == NULL) {
            ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL);
            if (w > 0) {
                buf += w;
                n -= (size_t)w;
                continue;
            }
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN && wait_fd(c, POLLOUT) == 0)
                continue;
            return -1;
        }
        ERR_clear_error();
        int w = SSL_write(c->ssl, buf, (int)(n > 1 << 20 ? 1 << 20 : n));
        if (w > 0) {
            buf += w;
            n -= (size_t)w;
            continue;
        }
        int e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_READ ? wait_fd(c, POLLIN) == -1
            : e == SSL_ERROR_WANT_WRITE ? wait_fd(c, POLLOUT) == -1
                                        : (errno = EPROTO, true))
            return -1;
    }
    return 0;
}

/* One reply line without its line end; -1 on error or EOF. */
static int read_line(struct smtp_client *c, char *line, size_t max)
{
    size_t n = 0;
    for (;;) {
        while (c->roff < c->rlen) {
            char ch = c->rbuf[c->roff++];
            if (ch == '\n') {
                if (n > 0 && line[n - 1] == '\r')
                    n--;
                line[n] = '\0';
                return 0;
            }
            if (n + 1 < max)
                line[n++] = ch;
        }
        ssize_t r = io_read(c, c->rbuf, sizeof c->rbuf);
        if (r <= 0) {
            if (r == 0)
                errno = ECONNRESET;
            return -1;
        }
        c->rlen = (size_t)r;
        c->roff = 0;
    }
}

/* Reads a (multi-line) reply (reply.c parses it).  With ehlo, records the
 * extensions. */
static int read_reply(struct smtp_client *c, struct smtp_reply *r, bool ehlo)
{
    char line[1024];
    struct smtp_reply_reader rr;
    smtp_reply_start(&rr, r, ehlo);
    for (;;) {
        if (read_line(c, line, sizeof line) == -1) {
            c->broken = true;
            fail_set(r, 451, "4.4.2 connection to %s lost: %s", c->host, strerror(errno));
            return -1;
        }
        enum smtp_reply_step step = smtp_reply_line(&rr, line);
        if (ehlo) {
            c->ext = rr.ext;
            c->max_size = rr.max_size;
        }
        if (step == SMTP_REPLY_MORE)
            continue;
        if (step == SMTP_REPLY_DONE)
            return 0;
        c->broken = true;
        fail_set(r, 451, step == SMTP_REPLY_MALFORMED ? "4.5.0 %s sent a malformed reply"
                                                      : "4.5.0 %s sent an over-long reply",
                 c->host);
        return -1;
    }
}

static int command(struct smtp_client *c, struct smtp_reply *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int command(struct smtp_client *c, struct smtp_reply *r, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf - 2) {
        fail_set(r, 554, "5.5.0 command too long");
        return -1;
    }
    memcpy(buf + n, "\r\n", 2);
    if (io_write(c, buf, (size_t)n + 2) == -1) {
        c->broken = true;
        fail_set(r, 451, "4.4.2 connection to %s lost: %s", c->host, strerror(errno));
        return -1;
    }
    return read_reply(c, r, false);
}

static int hello(struct smtp_client *c, struct smtp_reply *r)
{
    c->ext = 0;
    c->max_size = 0;
    char buf[300];
    snprintf(buf, sizeof buf, "%s %s\r\n", c->opts.lmtp ? "LHLO" : "EHLO", c->opts.helo);
    if (io_write(c, buf, strlen(buf)) == -1) {
        c->broken = true;
        fail_set(r, 451, "4.4.2 connection to %s lost: %s", c->host, strerror(errno));
        return -1;
    }
    if (read_reply(c, r, true) == -1)
        return -1;
    return r->code == 250 ? 0 : -1;
}

/* ---- TLS ---------------------------------------------------------------------- */

static int start_tls(struct smtp_client *c, struct smtp_reply *fail)
{
    struct smtp_reply r;
    if (command(c, &r, "STARTTLS") == -1 || r.code != 220) {
        if (r.code != 0 && !c->broken)
            fail_set(fail, 451, "4.7.5 %s refused STARTTLS: %d %s", c->host, r.code, r.text);
        else
            *fail = r;
        return -1;
    }
    /* nothing the server sent after 220 may be taken as TLS (RFC 3207 §6) */
    c->rlen = c->roff = 0;
    c->ssl = SSL_new(c->opts.tls_ctx);
    SSL_set_fd(c->ssl, c->fd);
    if (c->opts.tls_name != NULL)
        SSL_set_tlsext_host_name(c->ssl, c->opts.tls_name);
    if (c->opts.tls == TLSP_DANE && c->opts.ntlsa > 0) {
        /* RFC 7672: TLSA records found over DNSSEC authenticate the server;
         * DANE-EE(3) binds the key, with no name check (§3.1.1) */
        SSL_dane_enable(c->ssl, c->opts.tls_name ? c->opts.tls_name : c->host);
        SSL_dane_set_flags(c->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
        int usable = 0;
        for (size_t i = 0; i < c->opts.ntlsa; i++) {
            const struct tlsa_rec *t = &c->opts.tlsa[i];
            if (t->usage != 2 && t->usage != 3)
                continue;   /* RFC 7672 §3.1.3: PKIX-TA/EE are not used for SMTP */
            if (SSL_dane_tlsa_add(c->ssl, t->usage, t->selector, t->mtype, t->data, t->len) > 0)
                usable++;
        }
        if (usable == 0) {
            fail_set(fail, 451, "4.7.5 no usable TLSA record for %s", c->host);
            c->broken = true;
            return -1;
        }
        SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    } else if (c->opts.tls >= TLSP_VERIFY) {
        /* RFC 6125: the reference identity is the next hop's name */
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        SSL_set1_host(c->ssl, c->opts.tls_name ? c->opts.tls_name : c->host);
        SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);   /* we check the result ourselves */
    }
    for (;;) {
        ERR_clear_error();
        int rc = SSL_connect(c->ssl);
        if (rc == 1)
            break;
        int e = SSL_get_error(c->ssl, rc);
        if ((e == SSL_ERROR_WANT_READ && wait_fd(c, POLLIN) == 0) ||
            (e == SSL_ERROR_WANT_WRITE && wait_fd(c, POLLOUT) == 0))
            continue;
        char eb[200];
        ERR_error_string_n(ERR_get_error(), eb, sizeof eb);
        c->broken = true;
        fail_set(fail, 451, "4.7.5 TLS handshake with %s failed: %s", c->host, eb);
        return -1;
    }
    long vr = SSL_get_verify_result(c->ssl);
    c->verified = vr == X509_V_OK && SSL_get0_peer_certificate(c->ssl) != NULL;
    if (c->opts.tls == TLSP_DANE && c->opts.ntlsa > 0) {
        c->dane = c->verified && SSL_get0_dane_authority(c->ssl, NULL, NULL) >= 0;
        c->verified = c->dane;
    }
    snprintf(c->tls_info, sizeof c->tls_info, "%s %s", SSL_get_version(c->ssl),
             SSL_get_cipher_name(c->ssl));
    if (c->opts.tls >= TLSP_VERIFY && !c->verified) {
        c->broken = true;
        fail_set(fail, 451, "4.7.5 certificate of %s not verified%s: %s", c->host,
                 c->opts.tls == TLSP_DANE ? " by its TLSA records" : "",
                 vr == X509_V_OK ? "no match" : X509_verify_cert_error_string(vr));
        return -1;
    }
    return 0;
}

/* ---- connection ---------------------------------------------------------------- */

struct smtp_client *smtp_client_open(const char *host, const char *addr, const char *port,
                                     const struct smtp_client_opts *opts,
                                     struct smtp_reply *fail)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    memset(fail, 0, sizeof *fail);
    /* an absolute path is a local socket (LMTP to Dovecot, RFC 2033 §5) */
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    bool local = addr[0] == '/';
    if (local && str_copy(sun.sun_path, addr, sizeof sun.sun_path) >= sizeof sun.sun_path) {
        fail_set(fail, 451, "4.4.3 socket path too long: %s", addr);
        return NULL;
    }
    if (!local && getaddrinfo(addr, port, &hints, &res) != 0) {
        fail_set(fail, 451, "4.4.3 bad next-hop address %s:%s", addr, port);
        return NULL;
    }
    struct smtp_client *c = xcalloc(1, sizeof *c);
    c->opts = *opts;
    if (c->opts.timeout == 0)
        c->opts.timeout = 300;
    str_copy(c->host, host, sizeof c->host);
    c->fd = socket(local ? AF_UNIX : res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                   0);
    if (c->fd != -1 && !local) {
        /* the BDAT line and the body, or a body and its final dot, are written
         * one after the other: without this, Nagle holds the second until the
         * peer's delayed ACK (up to 40 ms a message) */
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int rc = c->fd == -1 ? -1
             : local     ? connect(c->fd, (struct sockaddr *)&sun, sizeof sun)
                         : connect(c->fd, res->ai_addr, res->ai_addrlen);
    if (res != NULL)
        freeaddrinfo(res);
    if (rc == -1 && errno == EINPROGRESS) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (wait_fd(c, POLLOUT) == 0 && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0) {
            rc = soerr == 0 ? 0 : -1;
            errno = soerr;
        }
    }
    if (rc == -1) {
        fail_set(fail, 451, "4.4.1 cannot connect to %s [%s]:%s: %s", host, addr, port,
                 strerror(errno));
        smtp_client_close(c, false);
        return NULL;
    }
    struct smtp_reply r;
    if (read_reply(c, &r, false) == -1) {
        *fail = r;
        smtp_client_close(c, false);
        return NULL;
    }
    if (r.code != 220) {
        fail_set(fail, r.code >= 500 ? 554 : 451, "%s greeting: %d %s",
                 r.code >= 500 ? "5.0.0" : "4.0.0", r.code, r.text);
        smtp_client_close(c, true);
        return NULL;
    }
    if (hello(c, &r) == -1) {
        if (r.code >= 400 && !c->broken)
            fail_set(fail, r.code >= 500 ? 554 : 451, "%s refused %s: %d %s",
                     host, opts->lmtp ? "LHLO" : "EHLO", r.code, r.text);
        else
            *fail = r;
        smtp_client_close(c, !c->broken);
        return NULL;
    }
    if (opts->tls != TLSP_NONE) {
        if (c->ext & EXT_STARTTLS) {
            if (start_tls(c, fail) == -1 || hello(c, &r) == -1) {
                if (fail->code == 0)
                    *fail = r;
                smtp_client_close(c, false);
                return NULL;
            }
        } else if (opts->tls >= TLSP_ENCRYPT) {
            fail_set(fail, 451, "4.7.4 TLS is required (policy %s) but %s does not offer STARTTLS",
                     tls_policy_name(opts->tls), host);
            smtp_client_close(c, true);
            return NULL;
        }
    }
    if (opts->auth_user != NULL) {
        char plain[600], b64[900];
        int n = snprintf(plain, sizeof plain, "%c%s%c%s", 0, opts->auth_user, 0, opts->auth_pass);
        if (c->ssl == NULL || !(c->ext & EXT_AUTH_PLAIN) || n < 0 || (size_t)n >= sizeof plain ||
            smtp_base64_encode(plain, (size_t)n, b64, sizeof b64) < 0) {
            fail_set(fail, 451, "4.7.0 cannot authenticate to %s (AUTH PLAIN over TLS needed)",
                     host);
            smtp_client_close(c, true);
            return NULL;
        }
        explicit_bzero(plain, sizeof plain);
        int cr = command(c, &r, "AUTH PLAIN %s", b64);
        explicit_bzero(b64, sizeof b64);
        if (cr == -1 || r.code != 235) {
            fail_set(fail, 451, "4.7.0 authentication to %s failed: %d %s", host, r.code, r.text);
            smtp_client_close(c, !c->broken);
            return NULL;
        }
    }
    return c;
}

unsigned smtp_client_extensions(const struct smtp_client *c) { return c->ext; }
bool smtp_client_tls_verified(const struct smtp_client *c) { return c->verified; }
bool smtp_client_dane_verified(const struct smtp_client *c) { return c->dane; }
const char *smtp_client_tls_info(const struct smtp_client *c) { return c->tls_info; }

/* xtext-encodes s (RFC 3461 §4) */
static void xtext(const char *s, char *out, size_t outlen)
{
    size_t o = 0;
    for (; *s && o + 4 < outlen; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 33 || ch > 126 || ch == '+' || ch == '=')
            o += (size_t)snprintf(out + o, outlen - o, "+%02X", ch);
        else
            out[o++] = (char)ch;
    }
    out[o] = '\0';
}

/* Sends the message body: dot-stuffed text ending with "<CRLF>.<CRLF>"
 * (DATA) or one BDAT chunk (CHUNKING, no stuffing). */
static int send_body(struct smtp_client *c, const struct smtp_client_msg *m, bool bdat)
{
    if (bdat) {
        /* the command and the chunk in one write: one TLS record and one
         * segment less per message for both sides (up to 1 MB; a bigger
         * message goes in two writes) */
        char hdr[64];
        int hl = snprintf(hdr, sizeof hdr, "BDAT %zu LAST\r\n", m->len);
        char *one = m->len <= (1u << 20) ? malloc((size_t)hl + m->len) : NULL;
        if (one == NULL)
            return io_write(c, hdr, (size_t)hl) == -1 || io_write(c, m->data, m->len) == -1 ? -1
                                                                                           : 0;
        memcpy(one, hdr, (size_t)hl);
        memcpy(one + hl, m->data, m->len);
        int r = io_write(c, one, (size_t)hl + m->len);
        free(one);
        return r;
    }
    char *buf = xmalloc(65536 + 8);
    size_t o = 0;
    bool bol = true;
    for (size_t i = 0; i < m->len; i++) {
        if (bol && m->data[i] == '.')
            buf[o++] = '.';
        buf[o++] = m->data[i];
        bol = m->data[i] == '\n';
        if (o >= 65536) {
            if (io_write(c, buf, o) == -1) {
                free(buf);
                return -1;
            }
            o = 0;
        }
    }
    if (!bol || m->len == 0) {
        if (m->len != 0) {
            buf[o++] = '\r';
            buf[o++] = '\n';
        }
    }
    memcpy(buf + o, ".\r\n", 3);
    o += 3;
    int r = io_write(c, buf, o);
    free(buf);
    return r;
}

int smtp_client_send(struct smtp_client *c, struct smtp_client_msg *m, struct smtp_reply *fail)
{
    memset(fail, 0, sizeof *fail);
    /* what the message needs of the next hop */
    /* RFC 8689 §4.2.1 binds messages with a return path; a bounce of a
     * REQUIRETLS message carries the option where offered but is not held
     * back where it is not (§5). */
    bool is_bounce = m->sender[0] == '\0';
    if (m->requiretls && !is_bounce && !(c->ext & EXT_REQUIRETLS)) {
        fail_set(fail, 550, "5.7.30 REQUIRETLS support required but %s does not offer it",
                 c->host);
        return -1;
    }
    if (m->requiretls && !is_bounce && !c->verified) {
        fail_set(fail, 550, "5.7.10 REQUIRETLS needs a verified TLS session with %s", c->host);
        return -1;
    }
    if (m->smtputf8 && !(c->ext & EXT_SMTPUTF8)) {
        fail_set(fail, 550, "5.6.7 %s does not support SMTPUTF8, which this message needs",
                 c->host);
        return -1;
    }
    if ((c->ext & EXT_SIZE) && c->max_size != 0 && m->size > c->max_size) {
        fail_set(fail, 552, "5.3.4 message too big for %s (limit %llu octets)", c->host,
                 (unsigned long long)c->max_size);
        return -1;
    }
    /* MAIL FROM with the parameters the server understands */
    char mail[1200];
    int n = snprintf(mail, sizeof mail, "MAIL FROM:<%s>", m->sender);
    if (c->ext & EXT_SIZE)
        n += snprintf(mail + n, sizeof mail - (size_t)n, " SIZE=%llu", (unsigned long long)m->size);
    if (m->eightbit && (c->ext & EXT_8BITMIME))
        n += snprintf(mail + n, sizeof mail - (size_t)n, " BODY=8BITMIME");
    if (m->smtputf8)
        n += snprintf(mail + n, sizeof mail - (size_t)n, " SMTPUTF8");
    if (m->requiretls && (c->ext & EXT_REQUIRETLS))
        n += snprintf(mail + n, sizeof mail - (size_t)n, " REQUIRETLS");
    if (c->ext & EXT_DSN) {
        if (m->ret)
            n += snprintf(mail + n, sizeof mail - (size_t)n, " RET=%s", m->ret == 2 ? "HDRS" : "FULL");
        if (m->envid && *m->envid) {
            char x[400];
            xtext(m->envid, x, sizeof x);
            n += snprintf(mail + n, sizeof mail - (size_t)n, " ENVID=%s", x);
        }
    }
    /* The commands of one transaction, written at once with PIPELINING. */
    size_t cap = 2048 + m->nrcpts * 1200, o = 0;
    char *out = xmalloc(cap);
    o += (size_t)snprintf(out + o, cap - o, "%s\r\n", mail);
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct smtp_client_rcpt *r = &m->rcpts[i];
        o += (size_t)snprintf(out + o, cap - o, "RCPT TO:<%s>", r->addr);
        if (c->ext & EXT_DSN) {
            if (r->notify) {
                if (r->notify & SMTP_NOTIFY_NEVER)
                    o += (size_t)snprintf(out + o, cap - o, " NOTIFY=NEVER");
                else
                    o += (size_t)snprintf(out + o, cap - o, " NOTIFY=%s%s%s%s%s",
                                          r->notify & SMTP_NOTIFY_SUCCESS ? "SUCCESS" : "",
                                          (r->notify & SMTP_NOTIFY_SUCCESS) &&
                                                  (r->notify & (SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY))
                                              ? ","
                                              : "",
                                          r->notify & SMTP_NOTIFY_FAILURE ? "FAILURE" : "",
                                          (r->notify & SMTP_NOTIFY_FAILURE) &&
                                                  (r->notify & SMTP_NOTIFY_DELAY)
                                              ? ","
                                              : "",
                                          r->notify & SMTP_NOTIFY_DELAY ? "DELAY" : "");
            }
            if (r->orcpt) {
                const char *semi = strchr(r->orcpt, ';');
                char x[800];
                xtext(semi ? semi + 1 : r->orcpt, x, sizeof x);
                o += (size_t)snprintf(out + o, cap - o, " ORCPT=%.*s;%s",
                                      semi ? (int)(semi - r->orcpt) : 6,
                                      semi ? r->orcpt : "rfc822", x);
            }
        }
        o += (size_t)snprintf(out + o, cap - o, "\r\n");
    }
    bool bdat = (c->ext & EXT_CHUNKING) != 0;
    bool pipelining = (c->ext & EXT_PIPELINING) != 0;
    int rc = -1;
    c->open_txn = true;
    c->data_sent = false;
    struct smtp_reply r;
    size_t accepted = 0;
    if (pipelining) {
        if (!bdat)
            o += (size_t)snprintf(out + o, cap - o, "DATA\r\n");
        if (io_write(c, out, o) == -1) {
            c->broken = true;
            fail_set(fail, 451, "4.4.2 connection to %s lost: %s", c->host, strerror(errno));
            goto done;
        }
    }
    /* MAIL */
    if (pipelining ? read_reply(c, &r, false) : command(c, &r, "%s", mail)) {
        *fail = r;
        goto done;
    }
    bool mail_ok = r.code == 250;
    if (!mail_ok)
        fail_set(fail, r.code, "%s", r.text);
    /* RCPT, one reply each */
    char *line = out + strlen(mail) + 2;
    for (size_t i = 0; i < m->nrcpts; i++) {
        char *eol = strstr(line, "\r\n");
        if (pipelining) {
            if (read_reply(c, &m->rcpts[i].reply, false) == -1) {
                *fail = m->rcpts[i].reply;
                goto done;
            }
        } else if (mail_ok) {
            if (command(c, &m->rcpts[i].reply, "%.*s", (int)(eol - line), line) == -1) {
                *fail = m->rcpts[i].reply;
                goto done;
            }
        }
        if (!mail_ok)
            m->rcpts[i].reply = *fail;
        else if (m->rcpts[i].reply.code == 250 || m->rcpts[i].reply.code == 251)
            accepted++;
        line = eol + 2;
    }
    if (!mail_ok) {
        if (pipelining && !bdat)
            read_reply(c, &r, false);   /* DATA's 503 */
        c->open_txn = false;   /* MAIL refused: no transaction began */
        rc = 0;
        goto done;
    }
    if (accepted == 0) {
        if (pipelining && !bdat)
            read_reply(c, &r, false);
        rc = 0;
        goto done;
    }
    if (!bdat) {
        if (pipelining ? read_reply(c, &r, false) : command(c, &r, "DATA")) {
            *fail = r;
            goto done;
        }
        if (r.code != 354) {
            for (size_t i = 0; i < m->nrcpts; i++)
                if (m->rcpts[i].reply.code / 100 == 2)
                    m->rcpts[i].reply = r;
            rc = 0;
            goto done;
        }
    }
    c->data_sent = true;
    if (send_body(c, m, bdat) == -1) {
        c->broken = true;
        fail_set(fail, 451, "4.4.2 connection to %s lost during data: %s", c->host,
                 strerror(errno));
        goto done;
    }
    /* SMTP: one reply for all; LMTP: one per accepted recipient (RFC 2033 §4.2) */
    if (c->opts.lmtp) {
        for (size_t i = 0; i < m->nrcpts; i++) {
            if (m->rcpts[i].reply.code / 100 != 2)
                continue;
            if (read_reply(c, &m->rcpts[i].reply, false) == -1) {
                *fail = m->rcpts[i].reply;
                goto done;
            }
        }
    } else {
        if (read_reply(c, &r, false) == -1) {
            *fail = r;
            goto done;
        }
        for (size_t i = 0; i < m->nrcpts; i++)
            if (m->rcpts[i].reply.code / 100 == 2)
                m->rcpts[i].reply = r;
    }
    c->open_txn = false;   /* the reply to the message ends the transaction (RFC 5321 §4.1.1.4) */
    rc = 0;
done:
    free(out);
    return rc;
}

bool smtp_client_reset(struct smtp_client *c)
{
    if (c->broken)
        return false;
    if (!c->open_txn)
        return true;   /* nothing to reset: no round trip */
    struct smtp_reply r;
    return command(c, &r, "RSET") == 0 && r.code == 250;
}

bool smtp_client_alive(struct smtp_client *c)
{
    if (c->broken)
        return false;
    struct smtp_reply r;
    if (command(c, &r, "RSET") == 0 && r.code == 250) {
        c->open_txn = false;
        return true;
    }
    c->broken = true;
    return false;
}

bool smtp_client_data_sent(const struct smtp_client *c)
{
    return c->data_sent;
}

void smtp_client_close(struct smtp_client *c, bool quit)
{
    if (c == NULL)
        return;
    if (quit && !c->broken && c->fd != -1) {
        struct smtp_reply r;
        unsigned t = c->opts.timeout;
        c->opts.timeout = t < 10 ? t : 10;
        command(c, &r, "QUIT");
    }
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->fd != -1)
        close(c->fd);
    free(c);
}
