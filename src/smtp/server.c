/*
 * server.c - SMTP server sessions (RFC 5321 and rfc5321bis) on libevent
 * bufferevents, with STARTTLS (RFC 3207), implicit TLS (RFC 8314), AUTH PLAIN
 * and LOGIN (RFC 4954), PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME,
 * SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES (RFC 2034), DSN (RFC 3461),
 * CHUNKING (RFC 3030) and REQUIRETLS (RFC 8689).
 *
 * A session is an explicit state plus a command table (server_cmd.c): each
 * row names its preconditions, a check (syntax, limits) and a proceed
 * function.  Capabilities are gated in one place, the rows' preconditions,
 * which decide the EHLO keywords as well.  The server holds no queue or
 * user logic: it calls struct smtp_hooks.  Replies are queued on the output
 * buffer; libevent flushes them, which gives PIPELINING its batching.
 *
 * This file: listeners, accept with each listener's connection limits, the
 * session's deadline (a whole command line, TLS handshake or DATA at
 * min_data_rate: a slow client cannot stretch them octet by octet), the
 * session's lifecycle and I/O callbacks, replies and drain.  The commands are in server_cmd.c, DATA/BDAT and the
 * commit in server_data.c, STARTTLS and AUTH in server_auth.c; what they
 * share is in server_int.h.
 */
#include "server_int.h"
#include "lib/lib.h"
#include "lib/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <glib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct listener {
    struct smtp_server *srv;
    const struct config_listener *cfg;
    struct listener_state *state;   /* shared by the listener's addresses */
    struct evconnlistener *ev;
};

/* A hook is working for this session: it must not be freed before the answer. */
static bool session_waiting(const struct session *s)
{
    return s->state == ST_COMMIT || s->state == ST_AUTH_WAIT;
}

/* ---- replies ------------------------------------------------------------- */

static void send_reply(struct session *s, bool count, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void send_reply(struct session *s, bool count, const char *fmt, va_list ap)
{
    char buf[1024];
    int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 3)
        n = (int)sizeof buf - 3;
    buf[n++] = '\r';
    buf[n++] = '\n';
    bufferevent_write(s->bev, buf, (size_t)n);
    /* RFC 5321 §4.2: 4xx/5xx caused by the client count toward the limit. */
    if (count && (buf[0] == '4' || buf[0] == '5') && s->state != ST_CLOSING &&
        ++s->errors >= s->srv->cfg->max_errors) {
        log_info("session %s: too many errors (%u), closing", s->ip, s->errors);
        evbuffer_add_printf(bufferevent_get_output(s->bev),
                            "421 4.7.0 %s Too many errors, closing connection\r\n",
                            s->srv->cfg->hostname);
        session_close(s);
    }
}

void sess_reply(struct session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_reply(s, true, fmt, ap);
    va_end(ap);
}

/* Replies without counting an error (our own temporary failures, 421s). */
void sess_reply_nocount(struct session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_reply(s, false, fmt, ap);
    va_end(ap);
}

/* ---- transaction ------------------------------------------------------- */

void sess_txn_reset(struct session *s)
{
    if (s->msg != NULL) {
        s->srv->hooks.msg_abort(s->msg);
        s->msg = NULL;
    }
    for (size_t i = 0; i < s->txn.nrcpts; i++) {
        free(s->txn.rcpts[i].addr);
        free(s->txn.rcpts[i].orig);
        free(s->txn.rcpts[i].orcpt);
    }
    free(s->txn.rcpts);
    memset(&s->txn, 0, sizeof s->txn);
    s->in_mail = false;
    s->headlen = 0;
    s->bdat_used = false;
    s->data_failed = false;
    s->qid[0] = '\0';
}

void session_facts(struct session *s)
{
    const char *base = s->txn.smtputf8 ? "UTF8SMTP" : (s->esmtp ? "ESMTP" : "SMTP");
    snprintf(s->proto, sizeof s->proto, "%s%s%s", base, s->tls ? "S" : "",
             s->authed ? "A" : "");
    s->txn.listener = s->lst->name;
    s->txn.client_ip = s->ip;
    s->txn.helo = s->helo;
    s->txn.auth_user = s->authed ? s->auth_user : NULL;
    s->txn.auth_mech = s->authed ? s->auth_mech : NULL;
    s->txn.tls_version = s->tls ? s->tls_version : NULL;
    s->txn.tls_cipher = s->tls ? s->tls_cipher : NULL;
    s->txn.proto = s->proto;
}

/* ---- deadlines ----------------------------------------------------------- */

/* When the period of the current deadline ends (clock_ms()); INT64_MAX: never. */
static int64_t deadline_end(const struct session *s)
{
    const struct config *cfg = s->srv->cfg;
    switch (s->dl) {
    case DL_COMMAND:
        return s->dl_start + (int64_t)cfg->timeout_command * 1000;
    case DL_TLS: {
        uint64_t t = cfg->timeout_tls;
        if (s->refusing && t > SMTP_REFUSE_TLS_SECONDS)
            t = SMTP_REFUSE_TLS_SECONDS;
        return s->dl_start + (int64_t)t * 1000;
    }
    case DL_DATA:
        /* a big message on a slow link goes on as long as it averages
         * min_data_rate; a trickle is cut about timeout_data after it began */
        if (cfg->min_data_rate == 0)
            return INT64_MAX;
        return s->dl_start + (int64_t)cfg->timeout_data * 1000 +
               (int64_t)(s->dl_octets * 1000 / cfg->min_data_rate);
    case DL_NONE:
        break;
    }
    return INT64_MAX;
}

static void deadline_arm(struct session *s)
{
    int64_t end = deadline_end(s);
    if (end == INT64_MAX) {
        evtimer_del(s->timer);
        return;
    }
    int64_t left = end - clock_ms();
    if (left < 0)
        left = 0;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000), .tv_usec = (suseconds_t)(left % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

void sess_deadline(struct session *s, enum deadline dl)
{
    s->dl = dl;
    s->dl_start = clock_ms();
    s->dl_octets = 0;
    deadline_arm(s);
}

void sess_command_timeouts(struct session *s)
{
    /* the deadline bounds the whole command line, however it trickles in
     * (DESIGN.md); the write timeout, a client that reads no reply */
    struct timeval tv = {.tv_sec = (time_t)s->srv->cfg->timeout_command};
    bufferevent_set_timeouts(s->bev, NULL, &tv);
    sess_deadline(s, DL_COMMAND);
}

static const char *deadline_name(enum deadline dl)
{
    return dl == DL_COMMAND ? "waiting for a command line (timeout_command)"
           : dl == DL_TLS   ? "in the TLS handshake (timeout_tls)"
           : dl == DL_DATA  ? "in the message data (timeout_data, min_data_rate)"
                            : "";
}

/* The session's time is up (a deadline, or a read or write without progress). */
static void session_timeout(struct session *s, const char *what)
{
    if (session_waiting(s)) {
        s->dead = true;    /* freed when the commit or AUTH completes */
        return;
    }
    if (s->state == ST_CLOSING || s->state == ST_TLS) {
        log_info("session %s on %s: timeout %s", s->ip, s->lst->name, what);
        session_free(s);
        return;
    }
    log_info("session %s on %s: timeout %s", s->ip, s->lst->name, what);
    sess_reply_nocount(s, "421 4.4.2 %s Timeout, closing connection", s->srv->cfg->hostname);
    session_close(s);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    if (s->dl == DL_NONE)
        return;
    if (clock_ms() < deadline_end(s)) {   /* DATA earned more time meanwhile */
        deadline_arm(s);
        return;
    }
    session_timeout(s, deadline_name(s->dl));
}

/* A hook (commit, callouts, auth) has answered: unless its reply closed the
 * session, read commands again, starting with what the client pipelined. */
void sess_resume(struct session *s)
{
    if (s->state == ST_CLOSING)
        return;
    s->state = ST_CMD;
    sess_command_timeouts(s);
    bufferevent_enable(s->bev, EV_READ);
    session_process(s);
}

/* ---- connection --------------------------------------------------------- */

void sess_on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    session_process(arg);
}

/* The output has drained: commands held back behind unread replies go on. */
void sess_on_write(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    (void)bev;
    if (s->out_blocked && (s->state == ST_CMD || s->state == ST_AUTH)) {
        s->out_blocked = false;
        session_process(s);
    }
}

/* Octets not yet handed to the kernel: with STARTTLS the filter passes its
 * output to the underlying bufferevent, which must drain too. */
static size_t pending_output(struct session *s)
{
    size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));
    struct bufferevent *under = bufferevent_get_underlying(s->bev);
    if (under != NULL)
        n += evbuffer_get_length(bufferevent_get_output(under));
    return n;
}

static void on_close_tick(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    /* give up on a client that does not read after 5 s */
    if (pending_output(s) == 0 || ++s->close_ticks > 250)
        session_free(s);
}

static void on_write_closing(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    (void)bev;
    if (pending_output(s) == 0)
        session_free(s);
}

void session_close(struct session *s)
{
    if (s->state == ST_CLOSING)
        return;
    s->state = ST_CLOSING;
    sess_deadline(s, DL_NONE);
    bufferevent_disable(s->bev, EV_READ);
    bufferevent_setcb(s->bev, NULL, on_write_closing, sess_on_event, s);
    if (pending_output(s) == 0) {
        session_free(s);
        return;
    }
    s->close_timer = event_new(s->srv->base, -1, EV_PERSIST, on_close_tick, s);
    event_add(s->close_timer, &(struct timeval){.tv_usec = 20000});
}

static void tls_record(struct session *s)
{
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
    if (ssl == NULL)
        return;
    s->tls = true;
    str_copy(s->tls_version, SSL_get_version(ssl), sizeof s->tls_version);
    str_copy(s->tls_cipher, SSL_get_cipher_name(ssl), sizeof s->tls_cipher);
    log_debug("session %s: TLS %s %s", s->ip, s->tls_version, s->tls_cipher);
}

void sess_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        /* TLS handshake complete */
        tls_record(s);
        if (s->refusing) {
            /* over a limit on an implicit-TLS listener: now the client can read why */
            s->state = ST_CMD;
            sess_reply_nocount(s, "421 4.7.0 %s Too many connections%s, try again later",
                               s->srv->cfg->hostname,
                               s->refusing_ip ? " from your address" : "");
            session_close(s);
            return;
        }
        if (s->state == ST_TLS)
            s->state = ST_CMD;
        sess_command_timeouts(s);
        session_process(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        session_timeout(s, s->state == ST_TLS               ? "in the TLS handshake"
                           : s->state == ST_DATA || s->state == ST_BDAT
                               ? "waiting for message data (timeout_data)"
                               : "writing a reply the client does not read");
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (what & BEV_EVENT_ERROR) {
            unsigned long e = bufferevent_get_openssl_error(s->bev);
            if (e != 0) {
                char buf[256];
                ERR_error_string_n(e, buf, sizeof buf);
                log_info("session %s: TLS error: %s", s->ip, buf);
            }
        }
        if (session_waiting(s)) {
            s->dead = true;   /* freed when the commit or AUTH completes */
            bufferevent_disable(s->bev, EV_READ | EV_WRITE);
            return;
        }
        session_free(s);
    }
}

void session_free(struct session *s)
{
    struct smtp_server *srv = s->srv;
    if (session_waiting(s) && !s->dead) {
        s->dead = true;
        return;
    }
    sess_txn_reset(s);
    struct listener_state *ls = s->ls;
    if (ls != NULL) {
        ls->n--;
        uintptr_t n = (uintptr_t)g_hash_table_lookup(ls->per_ip, s->ckey);
        if (n <= 1)
            g_hash_table_remove(ls->per_ip, s->ckey);
        else
            g_hash_table_insert(ls->per_ip, g_strdup(s->ckey), (gpointer)(n - 1));
    }
    if (s->refusing)
        srv->nrefusing--;
    srv->sessions = g_list_delete_link(srv->sessions, s->link);
    srv->nsessions--;
    if (s->close_timer)
        event_free(s->close_timer);
    event_free(s->timer);
    if (s->auth_timer)
        event_free(s->auth_timer);
    bufferevent_free(s->bev);
    free(s->outbuf);
    free(s->head);
    free(s);
}

/* A refusal's log line: one a second per listener at most, with the count of
 * those not logged (a flood must not flood the log). */
static void log_refusal(struct listener_state *ls, const char *ip, const char *why,
                        uint64_t limit)
{
    int64_t now = clock_ms();
    if (ls->log_ms != 0 && now - ls->log_ms < 1000) {
        ls->unlogged++;
        return;
    }
    if (ls->unlogged > 0)
        log_warn("connection from %s on %s refused: %s (%llu); %lu more refused on %s in the "
                 "last second", ip, ls->cfg->name, why, (unsigned long long)limit, ls->unlogged,
                 ls->cfg->name);
    else
        log_warn("connection from %s on %s refused: %s (%llu)", ip, ls->cfg->name, why,
                 (unsigned long long)limit);
    ls->log_ms = now;
    ls->unlogged = 0;
}

/* A session for the connected socket fd (owned from now on) of listener lc,
 * counted in ls unless refusing; the 220 is queued (or, refusing on an
 * implicit-TLS listener, the 421 once the handshake is done).  -1 when out of
 * memory (fd closed). */
static int session_start(struct smtp_server *srv, const struct config_listener *lc,
                         struct listener_state *ls, int fd, const char *ip, bool refusing,
                         bool refusing_ip)
{
    struct session *s = xcalloc(1, sizeof *s);
    if (s == NULL) {
        close(fd);
        return -1;
    }
    s->srv = srv;
    s->lst = lc;
    s->refusing = refusing;
    s->refusing_ip = refusing_ip;
    str_copy(s->ip, ip, sizeof s->ip);
    smtp_client_key(ip, s->ckey, sizeof s->ckey);
    if (lc->tls == LTLS_IMPLICIT) {
        SSL *ssl = SSL_new(srv->tls);
        s->bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        s->state = ST_TLS;
    } else {
        s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
        s->state = ST_CMD;
    }
    s->timer = s->bev ? evtimer_new(srv->base, on_deadline, s) : NULL;
    if (s->bev == NULL || s->timer == NULL) {
        if (s->bev)
            bufferevent_free(s->bev);
        else
            close(fd);
        free(s);
        return -1;
    }
    srv->sessions = g_list_prepend(srv->sessions, s);
    s->link = srv->sessions;
    srv->nsessions++;
    if (refusing) {
        srv->nrefusing++;
    } else {
        uintptr_t per_ip = (uintptr_t)g_hash_table_lookup(ls->per_ip, s->ckey);
        s->ls = ls;
        ls->n++;
        g_hash_table_insert(ls->per_ip, g_strdup(s->ckey), (gpointer)(per_ip + 1));
    }
    bufferevent_setcb(s->bev, sess_on_read, sess_on_write, sess_on_event, s);
    if (s->state == ST_TLS) {
        struct timeval tv = {.tv_sec = (time_t)srv->cfg->timeout_tls};
        bufferevent_set_timeouts(s->bev, &tv, &tv);
        sess_deadline(s, DL_TLS);
    } else {
        sess_command_timeouts(s);
    }
    /* Bound what one client can make us buffer. */
    bufferevent_setwatermark(s->bev, EV_READ, 0, 256 * 1024);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    if (refusing)
        return 0;   /* the 421 goes out once the handshake is done */
    sess_reply_nocount(s, "220 %s ESMTP pecmail", srv->cfg->hostname);
    metric_inc(&metric_connections, lc->name, NULL);
    log_debug("connection from %s on %s", ip, lc->name);
    return 0;
}

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct listener *l = arg;
    struct smtp_server *srv = l->srv;
    struct listener_state *ls = l->state;
    (void)evl;
    (void)salen;
    char ip[INET6_ADDRSTRLEN] = "unknown";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, ip, sizeof ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof ip);
    char ckey[SMTP_CLIENT_KEY_MAX];
    smtp_client_key(ip, ckey, sizeof ckey);

    /* each listener has its own slots: a flood on one (the MX) leaves the
     * others' to their clients (docs/operator-guide.md) */
    uintptr_t per_ip = (uintptr_t)g_hash_table_lookup(ls->per_ip, ckey);
    bool full = ls->n >= ls->cfg->max_connections;
    bool refusing = false;
    if (full || per_ip >= ls->cfg->max_connections_per_ip) {
        char msg[300];
        int n = snprintf(msg, sizeof msg, "421 4.7.0 %s Too many connections%s, try again later\r\n",
                         srv->cfg->hostname, full ? "" : " from your address");
        metric_inc(&metric_connections_refused, ls->cfg->name,
                   full ? "max_connections" : "max_connections_per_ip");
        log_refusal(ls, ip, full ? "too many connections (max_connections)"
                                 : "too many connections from this address "
                                   "(max_connections_per_ip)",
                    full ? ls->cfg->max_connections : ls->cfg->max_connections_per_ip);
        if (l->cfg->tls != LTLS_IMPLICIT) {
            ssize_t w = send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
            (void)w;
        } else if (srv->nrefusing < SMTP_REFUSE_TLS_MAX && srv->tls != NULL && !srv->draining) {
            refusing = true;      /* the 421 after the handshake */
        }
        if (!refusing) {
            close(fd);
            return;
        }
    }

    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        /* replies go out when written: a client that pipelines or waits for
         * the 250 is not held behind Nagle and its own delayed ACK */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    session_start(srv, l->cfg, ls, fd, ip, refusing, refusing && !full);
}

/* ---- server ------------------------------------------------------------- */

struct smtp_server *smtp_server_new(struct event_base *base, const struct config *cfg,
                                    const struct smtp_hooks *hooks, SSL_CTX *tls)
{
    struct smtp_server *srv = xcalloc(1, sizeof *srv);
    srv->base = base;
    srv->cfg = cfg;
    srv->hooks = *hooks;
    srv->tls = tls;
    sess_auth_tables(srv);
    return srv;
}

void smtp_server_set_tls(struct smtp_server *srv, SSL_CTX *tls) { srv->tls = tls; }

struct smtp_hooks *smtp_server_hooks(struct smtp_server *srv) { return &srv->hooks; }

static void on_accept_error(struct evconnlistener *evl, void *arg)
{
    (void)evl;
    (void)arg;
    /* EMFILE and friends: the connection stays in the backlog and is
     * accepted once a session ends; max_connections keeps us below the limit. */
    log_warn("accept failed: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static struct listener_state *listener_state(struct smtp_server *srv,
                                             const struct config_listener *l)
{
    for (size_t i = 0; i < srv->nlstates; i++)
        if (srv->lstates[i].cfg == l)
            return &srv->lstates[i];
    if (srv->nlstates >= CONFIG_MAX_LISTENERS)
        return NULL;
    struct listener_state *ls = &srv->lstates[srv->nlstates++];
    ls->cfg = l;
    ls->per_ip = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return ls;
}

int smtp_server_adopt(struct smtp_server *srv, const struct config_listener *l, int fd,
                      const char *ip)
{
    struct listener_state *ls = listener_state(srv, l);
    if (ls == NULL) {
        close(fd);
        return -1;
    }
    return session_start(srv, l, ls, fd, ip, false, false);
}

int smtp_listen_bind(const struct config_listener *l, int *fds, size_t *n, char *err,
                     size_t errlen)
{
    *n = 0;
    for (size_t i = 0; i < l->naddrs && i < CONFIG_MAX_ADDRS; i++) {
        char host[256];
        str_copy(host, l->addrs[i], sizeof host);
        char *colon = strrchr(host, ':');
        *colon = '\0';
        const char *port = colon + 1;
        char *h = host;
        if (h[0] == '[') {
            h++;
            char *rb = strchr(h, ']');
            if (rb)
                *rb = '\0';
        }
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *res;
        int gr = getaddrinfo(*h ? h : NULL, port, &hints, &res);
        if (gr != 0) {
            snprintf(err, errlen, "[%s] listen %s: %s", l->name, l->addrs[i], gai_strerror(gr));
            goto fail;
        }
        int one = 1;
        int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1 ||
            bind(fd, res->ai_addr, res->ai_addrlen) == -1) {
            snprintf(err, errlen, "[%s] listen %s: %s", l->name, l->addrs[i], strerror(errno));
            if (fd != -1)
                close(fd);
            freeaddrinfo(res);
            goto fail;
        }
        freeaddrinfo(res);
        fds[(*n)++] = fd;
    }
    return 0;
fail:
    for (size_t i = 0; i < *n; i++)
        close(fds[i]);
    *n = 0;
    return -1;
}

int smtp_server_listen_fds(struct smtp_server *srv, const struct config_listener *l,
                           const int *fds, size_t n, char *err, size_t errlen)
{
    if (l->tls != LTLS_NONE && srv->tls == NULL) {
        snprintf(err, errlen, "[%s] needs TLS but no certificate is configured", l->name);
        return -1;
    }
    struct listener_state *state = listener_state(srv, l);
    if (state == NULL) {
        snprintf(err, errlen, "[%s]: too many listeners", l->name);
        return -1;
    }
    for (size_t i = 0; i < n && i < l->naddrs; i++) {
        struct listener *lst = xcalloc(1, sizeof *lst);
        lst->srv = srv;
        lst->cfg = l;
        lst->state = state;
        lst->ev = evconnlistener_new(srv->base, on_accept, lst,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024, fds[i]);
        if (lst->ev == NULL) {
            snprintf(err, errlen, "[%s] listen %s: %s", l->name, l->addrs[i], strerror(errno));
            free(lst);
            return -1;
        }
        evconnlistener_set_error_cb(lst->ev, on_accept_error);
        srv->listeners[srv->nlisteners++] = lst;
        log_info("listening on %s (%s, tls=%s, max_connections %llu, %llu per client)",
                 l->addrs[i], l->name,
                 l->tls == LTLS_NONE ? "none" : l->tls == LTLS_STARTTLS ? "starttls" : "implicit",
                 (unsigned long long)l->max_connections,
                 (unsigned long long)l->max_connections_per_ip);
    }
    return 0;
}

int smtp_server_listen(struct smtp_server *srv, const struct config_listener *l, char *err,
                       size_t errlen)
{
    int fds[CONFIG_MAX_ADDRS];
    size_t n;
    if (smtp_listen_bind(l, fds, &n, err, errlen) == -1)
        return -1;
    if (smtp_server_listen_fds(srv, l, fds, n, err, errlen) == -1) {
        for (size_t i = 0; i < n; i++)
            close(fds[i]);
        return -1;
    }
    return 0;
}

void smtp_server_drain(struct smtp_server *srv)
{
    srv->draining = true;
    for (size_t i = 0; i < srv->nlisteners; i++) {
        evconnlistener_free(srv->listeners[i]->ev);
        free(srv->listeners[i]);
    }
    srv->nlisteners = 0;
    GList *copy = g_list_copy(srv->sessions);
    for (GList *it = copy; it; it = it->next) {
        struct session *s = it->data;
        if (s->state == ST_CMD && !s->in_mail) {
            sess_reply_nocount(s, "421 4.3.2 %s Service shutting down", s->srv->cfg->hostname);
            session_close(s);
        }
    }
    g_list_free(copy);
}

size_t smtp_server_sessions(const struct smtp_server *srv) { return srv->nsessions; }

/* The same listener in cfg: by its index in the old configuration's array. */
static const struct config_listener *same_listener(const struct smtp_server *srv,
                                                   const struct config *cfg,
                                                   const struct config_listener *l)
{
    ptrdiff_t k = l - srv->cfg->listeners;
    if (k < 0 || (size_t)k >= cfg->nlisteners)
        abort();   /* broken invariant: pecd keeps the listeners on reload */
    return &cfg->listeners[k];
}

void smtp_server_set_config(struct smtp_server *srv, const struct config *cfg)
{
    for (size_t i = 0; i < srv->nlstates; i++)
        srv->lstates[i].cfg = same_listener(srv, cfg, srv->lstates[i].cfg);
    for (size_t i = 0; i < srv->nlisteners; i++)
        srv->listeners[i]->cfg = same_listener(srv, cfg, srv->listeners[i]->cfg);
    for (GList *it = srv->sessions; it; it = it->next) {
        struct session *s = it->data;
        s->lst = same_listener(srv, cfg, s->lst);
        if (s->txn.listener != NULL)   /* the name lives in the configuration: the old
                                        * one is freed once the reload retires it */
            s->txn.listener = s->lst->name;
    }
    srv->cfg = cfg;
}

size_t smtp_server_open(const struct smtp_server *srv, size_t i, const char **name)
{
    if (i >= srv->nlstates)
        return (size_t)-1;
    *name = srv->lstates[i].cfg->name;
    return srv->lstates[i].n;
}

void smtp_server_free(struct smtp_server *srv)
{
    while (srv->sessions != NULL) {
        struct session *s = srv->sessions->data;
        s->state = ST_CMD;
        session_free(s);
    }
    for (size_t i = 0; i < srv->nlisteners; i++) {
        evconnlistener_free(srv->listeners[i]->ev);
        free(srv->listeners[i]);
    }
    for (size_t i = 0; i < srv->nlstates; i++)
        g_hash_table_destroy(srv->lstates[i].per_ip);
    smtp_throttle_free(srv->auth_by_ip);
    smtp_throttle_free(srv->auth_by_account);
    free(srv);
}
