/*
 * fuzz_smtp_session.c - a whole SMTP server session (src/smtp/server*.c) fed
 * arbitrary client bytes: the real session code on a libevent base, over a
 * socketpair, with stub hooks (an in-memory spool whose commit and callouts
 * answer later on the event loop, as pecd's do).
 *
 * The first input byte chooses the setting:
 *   bit 0    the session believes TLS is on (a fake STARTTLS: AUTH, REQUIRETLS
 *            and the TLS-only refusals become reachable without a handshake)
 *   bits 1-2 the listener: mx (no TLS, no AUTH), submission (STARTTLS,
 *            require_tls, AUTH required), mx with STARTTLS and AUTH optional
 *   bit 3    a msg_filter callout (its verdict from the message's first octet)
 *   bit 4    the server drains halfway through the input
 *   bit 5    the server has a TLS context: STARTTLS starts a real handshake
 *            (the rest of the input then goes to OpenSSL)
 *   bit 6    the asynchronous auth hook (auth_start) instead of auth
 * The rest is what the client sends; then it half-closes and reads on.
 *
 * Checked beyond the sanitizers: every reply line is "ddd" + SP or "-" and
 * ends with CRLF; the session ends within a bounded number of loop turns
 * once the client has closed; no hook is left pending.
 */
#include <errno.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/lib.h"
#include "smtp/server_int.h"

static struct event_base *base;
static struct config cfg;
static SSL_CTX *tls_ctx;
static int pending;          /* hook answers scheduled on the loop */

/* ---- a TLS context with a throwaway self-signed certificate ------------- */

static SSL_CTX *make_tls(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (key == NULL || x == NULL || ctx == NULL)
        abort();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz.test", -1,
                               -1, 0);
    X509_set_issuer_name(x, n);
    if (X509_sign(x, key, EVP_sha256()) == 0 || SSL_CTX_use_certificate(ctx, x) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, key) != 1)
        abort();
    X509_free(x);
    EVP_PKEY_free(key);
    return ctx;
}

/* ---- hooks ---------------------------------------------------------------- */

struct msg {
    size_t len;
    unsigned writes;
    unsigned char first;     /* the message's first octet: the callout's verdict */
    bool fail_write;
};

static int h_auth(void *arg, const char *user, const char *pass)
{
    (void)arg;
    (void)user;
    return strcmp(pass, "good") == 0 ? 0 : strcmp(pass, "temp") == 0 ? -2 : -1;
}

struct later {
    void (*auth_done)(void *, int, const char *);
    void (*commit_done)(void *, int);
    smtp_filter_done filter_done;
    void *cbarg;
    int result;
    struct msg *msg;
};

static void on_later(evutil_socket_t fd, short what, void *arg)
{
    struct later *l = arg;
    (void)fd;
    (void)what;
    pending--;
    if (l->auth_done != NULL) {
        l->auth_done(l->cbarg, l->result, NULL);
    } else if (l->commit_done != NULL) {
        free(l->msg);
        l->commit_done(l->cbarg, l->result);
    } else {
        unsigned char v = l->msg->first;
        enum smtp_filter_verdict verdict = v == 'R'   ? SMTP_FILTER_REFUSE
                                           : v == 'D' ? SMTP_FILTER_DISCARD
                                                      : SMTP_FILTER_ACCEPT;
        l->filter_done(l->cbarg, verdict,
                       verdict == SMTP_FILTER_REFUSE ? "550 5.7.1 Refused by the callout"
                                                     : "250 2.0.0 Discarded");
    }
    free(l);
}

static void later(struct later *l)
{
    struct later *copy = malloc(sizeof *copy);
    *copy = *l;
    pending++;
    if (event_base_once(base, -1, EV_TIMEOUT, on_later, copy, &(struct timeval){0}) != 0)
        abort();
}

static void h_auth_start(void *arg, const char *user, const char *pass, const char *ip,
                         void (*done)(void *, int, const char *), void *cbarg)
{
    (void)ip;
    later(&(struct later){.auth_done = done, .cbarg = cbarg, .result = h_auth(arg, user, pass)});
}

static int h_mail(void *arg, const struct smtp_txn *t, char *reply, size_t len)
{
    (void)arg;
    if (strncmp(t->sender, "refuse", 6) == 0) {
        snprintf(reply, len, "550 5.7.1 Sender refused");
        return -1;
    }
    return 0;
}

static int h_rcpt(void *arg, const struct smtp_txn *t, const struct smtp_path *p, char *addr,
                  size_t addrlen, char *reply, size_t len)
{
    (void)arg;
    (void)t;
    if (p->domain == NULL) {   /* <postmaster>: ours */
        snprintf(addr, addrlen, "postmaster@fuzz.test");
        return 0;
    }
    if (strcmp(p->local, "nobody") == 0) {
        snprintf(reply, len, "550 5.1.1 No such user");
        return -1;
    }
    return 0;
}

static void *h_msg_open(void *arg, const struct smtp_txn *t, char *qid, size_t qidlen)
{
    (void)arg;
    if (strncmp(t->sender, "nospool", 7) == 0)
        return NULL;
    snprintf(qid, qidlen, "FUZZ0001");
    struct msg *m = calloc(1, sizeof *m);
    m->fail_write = strncmp(t->sender, "badspool", 8) == 0;
    return m;
}

static int h_msg_write(void *msg, const void *buf, size_t len)
{
    struct msg *m = msg;
    if (m->fail_write && m->len > 0)
        return -1;   /* the Received: line goes in, the text does not */
    if (m->writes++ == 1 && len > 0)   /* the first write is our Received: */
        m->first = *(const unsigned char *)buf;
    m->len += len;
    return 0;
}

static void h_msg_abort(void *msg) { free(msg); }

static void h_msg_commit(void *msg, void (*done)(void *, int), void *cbarg)
{
    struct msg *m = msg;
    later(&(struct later){.commit_done = done, .cbarg = cbarg, .msg = m,
                          .result = m->len % 7 == 3 ? -1 : 0});
}

static int h_msg_check(void *arg, const struct smtp_txn *t, const char *head, size_t len,
                       char *reply, size_t replylen)
{
    (void)arg;
    (void)t;
    if (len >= 9 && memcmp(head, "X-Refuse:", 9) == 0) {
        snprintf(reply, replylen, "550 5.7.1 Header refused");
        return -1;
    }
    return 0;
}

static void h_msg_filter(void *msg, const struct smtp_txn *t, smtp_filter_done done, void *cbarg)
{
    (void)t;
    later(&(struct later){.filter_done = done, .cbarg = cbarg, .msg = msg});
}

/* ---- the configuration ----------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LVL_ERR);
    base = event_base_new();
    tls_ctx = make_tls();
    cfg.hostname = "mx.fuzz.test";
    cfg.max_message_size = 20000;
    cfg.max_recipients = 4;
    cfg.max_errors = 30;
    cfg.max_line_length = 1000;
    cfg.timeout_command = 300;
    cfg.timeout_data = 300;
    cfg.timeout_tls = 300;
    cfg.min_data_rate = 0;
    cfg.auth_failure_delay = 0;
    cfg.auth_max_failures = 3;
    cfg.auth_failures_per_ip = 5;
    cfg.auth_failures_per_account = 4;
    cfg.auth_failure_window = 600;
    cfg.auth_track_max = 16;
    static const struct {
        const char *name;
        enum listener_tls tls;
        bool require_tls;
        enum listener_auth auth;
    } ls[] = {
        {"mx", LTLS_NONE, false, LAUTH_NO},
        {"submission", LTLS_STARTTLS, true, LAUTH_REQUIRED},
        {"mx", LTLS_STARTTLS, false, LAUTH_OPTIONAL},
    };
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) {
        struct config_listener *l = &cfg.listeners[i];
        snprintf(l->name, sizeof l->name, "%s", ls[i].name);
        l->tls = ls[i].tls;
        l->require_tls = ls[i].require_tls;
        l->auth = ls[i].auth;
        l->max_connections = 10;
        l->max_connections_per_ip = 10;
    }
    cfg.nlisteners = sizeof ls / sizeof ls[0];
    return 0;
}

/* ---- the client side ------------------------------------------------------ */

struct client {
    int fd;
    struct event *ev;
    struct smtp_server *srv;
    const uint8_t *data;
    size_t size, off;
    bool drain_halfway, drained, closed_write;
    bool tls;                /* STARTTLS answered: the rest is TLS records, not lines */
    char line[1200];
    size_t len;
};

/* Reads what the server wrote; each reply line must be well-formed. */
static void read_replies(struct client *c)
{
    char buf[8192];
    ssize_t n;
    while ((n = read(c->fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n && !c->tls; i++) {
            if (c->len < sizeof c->line)
                c->line[c->len++] = buf[i];
            if (buf[i] != '\n')
                continue;
            if (c->len == sizeof c->line || c->len < 6 || c->line[c->len - 2] != '\r' ||
                c->line[0] < '2' || c->line[0] > '5' || c->line[1] < '0' || c->line[1] > '9' ||
                c->line[2] < '0' || c->line[2] > '9' ||
                (c->line[3] != ' ' && c->line[3] != '-')) {
                fprintf(stderr, "malformed reply line: %.*s\n", (int)c->len, c->line);
                abort();
            }
            c->tls = c->len >= 10 && memcmp(c->line, "220 2.0.0 ", 10) == 0;
            c->len = 0;
        }
    }
}

static void on_client(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    (void)fd;
    if (what & EV_READ)
        read_replies(c);
    if (!(what & EV_WRITE) || c->closed_write)
        return;
    if (c->drain_halfway && !c->drained && c->off >= c->size / 2) {
        smtp_server_drain(c->srv);
        c->drained = true;
    }
    /* a few octets at a time now and then, so commands also arrive split */
    size_t chunk = c->size - c->off;
    if (chunk > 1 && (c->off & 3) == 1)
        chunk = 1 + c->off % 7;
    ssize_t w = send(c->fd, c->data + c->off, chunk, MSG_NOSIGNAL);
    if (w > 0)
        c->off += (size_t)w;
    if ((w < 0 && errno != EAGAIN) || c->off == c->size) {
        shutdown(c->fd, SHUT_WR);
        c->closed_write = true;
        event_del(c->ev);
        event_assign(c->ev, base, c->fd, EV_READ | EV_PERSIST, on_client, c);
        event_add(c->ev, NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    struct smtp_hooks hooks = {
        .auth = h_auth,
        .auth_start = (flags & 64) ? h_auth_start : NULL,
        .mail = h_mail,
        .rcpt = h_rcpt,
        .msg_open = h_msg_open,
        .msg_write = h_msg_write,
        .msg_abort = h_msg_abort,
        .msg_commit = h_msg_commit,
        .msg_check = h_msg_check,
        .msg_filter = (flags & 8) ? h_msg_filter : NULL,
    };
    struct smtp_server *srv = smtp_server_new(base, &cfg, &hooks, (flags & 32) ? tls_ctx : NULL);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    const struct config_listener *l = &cfg.listeners[((flags >> 1) & 3) % cfg.nlisteners];
    if (smtp_server_adopt(srv, l, sv[0], "192.0.2.1") != 0)
        abort();
    if (flags & 1) {
        /* the fake STARTTLS: what tls_record() sets after a handshake */
        struct session *s = srv->sessions->data;
        s->tls = true;
        snprintf(s->tls_version, sizeof s->tls_version, "TLSv1.3");
        snprintf(s->tls_cipher, sizeof s->tls_cipher, "TLS_AES_256_GCM_SHA384");
    }
    struct client c = {.fd = sv[1], .srv = srv, .data = data + 1, .size = size - 1,
                       .drain_halfway = (flags & 16) != 0};
    c.ev = event_new(base, c.fd, EV_READ | EV_WRITE | EV_PERSIST, on_client, &c);
    event_add(c.ev, NULL);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (smtp_server_sessions(srv) > 0 || pending > 0) {
        event_base_loop(base, EVLOOP_ONCE);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 5) {
            fprintf(stderr, "the session did not end within 5 s (state %d, %zu of %zu sent)\n",
                    srv->sessions ? (int)((struct session *)srv->sessions->data)->state : -1,
                    c.off, c.size);
            abort();
        }
    }
    event_free(c.ev);
    smtp_server_free(srv);
    close(sv[1]);
    return 0;
}
