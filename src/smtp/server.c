/*
 * server.c - SMTP server sessions (RFC 5321 and rfc5321bis) on libevent
 * bufferevents, with STARTTLS (RFC 3207), implicit TLS (RFC 8314), AUTH PLAIN
 * and LOGIN (RFC 4954), PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME,
 * SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES (RFC 2034), DSN (RFC 3461),
 * CHUNKING (RFC 3030) and REQUIRETLS (RFC 8689).
 *
 * A session is an explicit state plus a command table: each row has a check
 * (state, syntax, limits) and the handler.  Capabilities are gated in one
 * place, ehlo_keywords() and the table's flags.  The server holds no queue or
 * user logic: it calls struct smtp_hooks.  Replies are queued on the output
 * buffer; libevent flushes them, which gives PIPELINING its batching.
 */
#include "smtp.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <glib.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DATA_CHUNK 65536

enum sstate {
    ST_CMD,           /* waiting for a command */
    ST_DATA,          /* reading DATA text */
    ST_BDAT,          /* reading a BDAT chunk */
    ST_AUTH,          /* waiting for a SASL response line */
    ST_COMMIT,        /* message handed to the callouts or the queue; waiting */
    ST_AUTH_WAIT,     /* credentials handed to the auth hook; waiting for its answer */
    ST_TLS,           /* TLS handshake in progress */
    ST_CLOSING,       /* flushing the last reply, then free */
};

enum auth_step { AUTH_NONE, AUTH_PLAIN_WAIT, AUTH_LOGIN_USER, AUTH_LOGIN_PASS };

struct listener {
    struct smtp_server *srv;
    const struct config_listener *cfg;
    struct evconnlistener *ev;
};

struct smtp_server {
    struct event_base *base;
    const struct config *cfg;
    struct smtp_hooks hooks;
    SSL_CTX *tls;
    struct listener *listeners[CONFIG_MAX_LISTENERS * CONFIG_MAX_ADDRS];
    size_t nlisteners;
    GHashTable *per_ip;         /* ip string -> count */
    GList *sessions;
    size_t nsessions;
    bool draining;
};

struct session {
    struct smtp_server *srv;
    const struct config_listener *lst;
    GList *link;
    struct bufferevent *bev;
    enum sstate state;
    char ip[INET6_ADDRSTRLEN];
    char helo[256];
    bool greeted, esmtp, tls, authed;
    bool in_mail;               /* MAIL accepted */
    bool bdat_used, data_failed;
    char auth_user[SMTP_PATH_MAX + 1];
    char auth_mech[16];         /* the mechanism of the AUTH command in progress or done */
    char auth_login_user[SMTP_PATH_MAX + 1];
    char auth_pending[SMTP_PATH_MAX + 1];  /* user being checked (ST_AUTH_WAIT) */
    enum auth_step auth_step;
    char tls_version[32];
    char tls_cipher[64];
    char proto[16];
    unsigned errors;
    struct smtp_line_reader lr;
    struct smtp_txn txn;
    struct smtp_data data;
    uint64_t bdat_left;
    bool bdat_last;
    void *msg;
    char qid[32];
    char *outbuf;               /* DATA scratch: un-stuffed octets */
    char *head;                 /* the first SMTP_HEAD_MAX octets, for msg_check */
    size_t headlen;
    bool dead;                  /* connection gone while a commit or AUTH was pending */
    struct event *close_timer;  /* polls the output while closing */
    unsigned close_ticks;
};

static void session_process(struct session *s);
/* A hook is working for this session: it must not be freed before the answer. */
static bool session_waiting(const struct session *s)
{
    return s->state == ST_COMMIT || s->state == ST_AUTH_WAIT;
}
static void session_close(struct session *s);
static void session_free(struct session *s);
static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

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

static void reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_reply(s, true, fmt, ap);
    va_end(ap);
}

/* Replies without counting an error (our own temporary failures, 421s). */
static void reply_nocount(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reply_nocount(struct session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_reply(s, false, fmt, ap);
    va_end(ap);
}

/* ---- transaction ------------------------------------------------------- */

static void txn_reset(struct session *s)
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

static void session_facts(struct session *s)
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

/* ---- commands ------------------------------------------------------------ */

static void ehlo_keywords(struct session *s)
{
    const struct config *cfg = s->srv->cfg;
    char size[64];
    snprintf(size, sizeof size, "SIZE %llu", (unsigned long long)cfg->max_message_size);
    const char *kw[16];
    size_t n = 0;
    kw[n++] = "PIPELINING";
    kw[n++] = size;
    kw[n++] = "8BITMIME";
    kw[n++] = "SMTPUTF8";
    kw[n++] = "ENHANCEDSTATUSCODES";
    kw[n++] = "DSN";
    kw[n++] = "CHUNKING";
    if (!s->tls && s->lst->tls == LTLS_STARTTLS && s->srv->tls != NULL)
        kw[n++] = "STARTTLS";
    /* RFC 4954 §4 and our policy: AUTH only over TLS. */
    if (s->tls && s->lst->auth != LAUTH_NO)
        kw[n++] = "AUTH PLAIN LOGIN";
    /* RFC 8689 §2: advertised only on a TLS session. */
    if (s->tls)
        kw[n++] = "REQUIRETLS";
    kw[n++] = "HELP";
    reply(s, "250-%s", cfg->hostname);
    for (size_t i = 0; i < n; i++)
        reply(s, "250%c%s", i + 1 == n ? ' ' : '-', kw[i]);
}

static void cmd_helo(struct session *s, const char *args, bool ehlo)
{
    if (*args == '\0' || strlen(args) >= sizeof s->helo || strchr(args, ' ') != NULL) {
        reply(s, "501 5.5.4 Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
        return;
    }
    txn_reset(s);
    str_copy(s->helo, args, sizeof s->helo);
    s->greeted = true;
    s->esmtp = ehlo;
    if (ehlo)
        ehlo_keywords(s);
    else
        reply(s, "250 %s", s->srv->cfg->hostname);
}

static bool param_seen(const struct smtp_path *p, size_t upto, const char *key)
{
    for (size_t i = 0; i < upto; i++)
        if (strcmp(p->params[i].key, key) == 0)
            return true;
    return false;
}

static void cmd_mail(struct session *s, const char *args)
{
    const struct config *cfg = s->srv->cfg;
    if (!s->greeted) {
        reply(s, "503 5.5.1 Send EHLO or HELO first");
        return;
    }
    if (s->in_mail) {
        reply(s, "503 5.5.1 Nested MAIL command");
        return;
    }
    if (s->lst->require_tls && !s->tls) {
        reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (s->lst->auth == LAUTH_REQUIRED && !s->authed) {
        reply(s, "530 5.7.0 Authentication required");
        return;
    }
    struct smtp_path *p = g_malloc(sizeof *p);
    enum smtp_path_error e = smtp_path_parse(args, "FROM:", true, p);
    if (e != SMTP_PATH_OK) {
        reply(s, "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]");
        goto out;
    }
    struct smtp_txn *t = &s->txn;
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < p->nparams; i++) {
        const char *k = p->params[i].key;
        char *v = p->params[i].value;
        if (!s->esmtp || param_seen(p, i, k))
            goto unsupported;
        if (strcmp(k, "SIZE") == 0) {
            char *end;
            if (v == NULL || !g_ascii_isdigit(*v))
                goto badvalue;
            errno = 0;
            unsigned long long n = strtoull(v, &end, 10);
            if (*end != '\0' || errno != 0)
                goto badvalue;
            if (n > cfg->max_message_size) {
                reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
                goto out;
            }
            t->size_hint = n;
        } else if (strcmp(k, "BODY") == 0) {
            if (v != NULL && strcasecmp(v, "7BIT") == 0)
                t->body = SMTP_BODY_7BIT;
            else if (v != NULL && strcasecmp(v, "8BITMIME") == 0)
                t->body = SMTP_BODY_8BITMIME;
            else
                goto badvalue;
        } else if (strcmp(k, "SMTPUTF8") == 0) {
            if (v != NULL)
                goto badvalue;
            t->smtputf8 = true;
        } else if (strcmp(k, "REQUIRETLS") == 0) {
            if (v != NULL)
                goto badvalue;
            if (!s->tls) {
                reply(s, "530 5.7.10 REQUIRETLS needs a TLS session");
                goto out;
            }
            t->requiretls = true;
        } else if (strcmp(k, "RET") == 0) {
            if (v != NULL && strcasecmp(v, "FULL") == 0)
                t->ret = SMTP_RET_FULL;
            else if (v != NULL && strcasecmp(v, "HDRS") == 0)
                t->ret = SMTP_RET_HDRS;
            else
                goto badvalue;
        } else if (strcmp(k, "ENVID") == 0) {
            if (v == NULL || smtp_xtext_decode(v) == -1 || strlen(v) > 100)
                goto badvalue;
            str_copy(t->envid, v, sizeof t->envid);
        } else if (strcmp(k, "AUTH") == 0) {
            /* RFC 4954 §5: accepted; we do not relay the claim further. */
            if (v == NULL || smtp_xtext_decode(v) == -1)
                goto badvalue;
        } else {
            goto unsupported;
        }
        continue;
    unsupported:
        reply(s, "555 5.5.4 Unsupported parameter %s", k);
        goto out;
    badvalue:
        reply(s, "501 5.5.4 Bad value for parameter %s", k);
        goto out;
    }
    if (p->utf8 && !t->smtputf8) {
        reply(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8");
        goto out;
    }
    str_copy(t->sender, p->addr, sizeof t->sender);
    session_facts(s);
    if (s->srv->hooks.mail != NULL) {
        char r[512];
        if (s->srv->hooks.mail(s->srv->hooks.arg, t, r, sizeof r) != 0) {
            reply(s, "%s", r);
            goto out;
        }
    }
    s->in_mail = true;
    reply(s, "250 2.1.0 Sender OK");
out:
    if (!s->in_mail)
        memset(&s->txn, 0, sizeof s->txn);
    g_free(p);
}

static void cmd_rcpt(struct session *s, const char *args)
{
    if (!s->in_mail) {
        reply(s, "503 5.5.1 Need MAIL command first");
        return;
    }
    struct smtp_path *p = g_malloc(sizeof *p);
    struct smtp_txn *t = &s->txn;
    unsigned notify = 0;
    char *orcpt = NULL;
    if (smtp_path_parse(args, "TO:", false, p) != SMTP_PATH_OK) {
        reply(s, "501 5.5.4 Syntax: RCPT TO:<address> [parameters]");
        goto out;
    }
    for (size_t i = 0; i < p->nparams; i++) {
        const char *k = p->params[i].key;
        char *v = p->params[i].value;
        if (param_seen(p, i, k) || !s->esmtp) {
            reply(s, "555 5.5.4 Unsupported parameter %s", k);
            goto out;
        }
        if (strcmp(k, "NOTIFY") == 0 && v != NULL) {
            char *save = NULL;
            for (char *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (strcasecmp(tok, "NEVER") == 0)
                    notify |= SMTP_NOTIFY_NEVER;
                else if (strcasecmp(tok, "SUCCESS") == 0)
                    notify |= SMTP_NOTIFY_SUCCESS;
                else if (strcasecmp(tok, "FAILURE") == 0)
                    notify |= SMTP_NOTIFY_FAILURE;
                else if (strcasecmp(tok, "DELAY") == 0)
                    notify |= SMTP_NOTIFY_DELAY;
                else
                    notify = 0xff;
            }
            /* RFC 3461 §4.1: NEVER stands alone */
            if (notify == 0 || notify == 0xff ||
                ((notify & SMTP_NOTIFY_NEVER) && notify != SMTP_NOTIFY_NEVER)) {
                reply(s, "501 5.5.4 Bad value for parameter %s", k);
                goto out;
            }
        } else if (strcmp(k, "ORCPT") == 0 && v != NULL) {
            char *semi = strchr(v, ';');
            if (semi == NULL || semi == v || smtp_xtext_decode(semi + 1) == -1 ||
                semi[1] == '\0' || strlen(v) > 500) {
                reply(s, "501 5.5.4 Bad value for parameter %s", k);
                goto out;
            }
            orcpt = g_strdup(v);
        } else {
            reply(s, "%s 5.5.4 %s parameter %s",
                  (strcmp(k, "NOTIFY") == 0 || strcmp(k, "ORCPT") == 0) ? "501" : "555",
                  (strcmp(k, "NOTIFY") == 0 || strcmp(k, "ORCPT") == 0) ? "Bad value for"
                                                                       : "Unsupported",
                  k);
            goto out;
        }
    }
    if (p->utf8 && !t->smtputf8) {
        reply(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8");
        goto out;
    }
    if (t->nrcpts >= s->srv->cfg->max_recipients) {
        /* RFC 5321 §4.5.3.1.10 */
        reply(s, "452 4.5.3 Too many recipients");
        goto out;
    }
    char addr[SMTP_PATH_MAX + 1];
    char r[512];
    str_copy(addr, p->addr, sizeof addr);
    if (s->srv->hooks.rcpt(s->srv->hooks.arg, t, p, addr, sizeof addr, r, sizeof r) != 0) {
        reply(s, "%s", r);
        goto out;
    }
    /* the same mailbox twice gets one copy */
    for (size_t i = 0; i < t->nrcpts; i++) {
        if (strcmp(t->rcpts[i].addr, addr) == 0) {
            reply(s, "250 2.1.5 Recipient OK");
            goto out;
        }
    }
    if (t->nrcpts == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 4;
        t->rcpts = g_realloc(t->rcpts, t->cap * sizeof *t->rcpts);
    }
    t->rcpts[t->nrcpts].addr = strdup(addr);
    t->rcpts[t->nrcpts].orig = strdup(p->addr);
    t->rcpts[t->nrcpts].notify = notify;
    t->rcpts[t->nrcpts].orcpt = orcpt ? strdup(orcpt) : NULL;
    t->nrcpts++;
    reply(s, "250 2.1.5 Recipient OK");
out:
    g_free(orcpt);
    g_free(p);
}

/* Writes our Received: header (RFC 5321 §4.4; RFC 3848 protocol names). */
static int write_received(struct session *s)
{
    char date[64], buf[1024];
    rfc5322_date(date, sizeof date, time(NULL));
    session_facts(s);
    int n = snprintf(buf, sizeof buf, "Received: from %s ([%s])\r\n\tby %s (pecmail) with %s id %s",
                     s->helo, s->ip, s->srv->cfg->hostname, s->proto, s->qid);
    if (s->tls)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n\t(using %s with cipher %s)",
                      s->tls_version, s->tls_cipher);
    if (s->txn.nrcpts == 1)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n\tfor <%s>", s->txn.rcpts[0].orig);
    n += snprintf(buf + n, sizeof buf - (size_t)n, ";\r\n\t%s\r\n", date);
    if (n <= 0 || (size_t)n >= sizeof buf)
        return -1;
    return s->srv->hooks.msg_write(s->msg, buf, (size_t)n);
}

/* Opens the spool file for DATA or the first BDAT chunk. */
static bool msg_begin(struct session *s, bool raw)
{
    session_facts(s);
    s->msg = s->srv->hooks.msg_open(s->srv->hooks.arg, &s->txn, s->qid, sizeof s->qid);
    if (s->msg == NULL || write_received(s) == -1) {
        if (s->msg) {
            s->srv->hooks.msg_abort(s->msg);
            s->msg = NULL;
        }
        return false;
    }
    smtp_data_init(&s->data, raw, s->srv->cfg->max_message_size, s->srv->cfg->max_line_length);
    if (s->outbuf == NULL)
        s->outbuf = malloc(DATA_CHUNK + 1);   /* + a held-back CR */
    return true;
}

static void cmd_data(struct session *s, const char *args)
{
    if (*args != '\0') {
        reply(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (s->bdat_used) {
        reply(s, "503 5.5.1 DATA not permitted after BDAT");
        return;
    }
    if (!s->in_mail || s->txn.nrcpts == 0) {
        reply(s, "503 5.5.1 Need RCPT command first");
        return;
    }
    if (!msg_begin(s, false)) {
        reply_nocount(s, "%s", "451 4.3.0 Queue file write error, try again later");
        txn_reset(s);
        return;
    }
    s->data_failed = false;
    s->state = ST_DATA;
    bufferevent_set_timeouts(s->bev,
                             &(struct timeval){.tv_sec = (time_t)s->srv->cfg->timeout_data},
                             &(struct timeval){.tv_sec = (time_t)s->srv->cfg->timeout_data});
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void cmd_bdat(struct session *s, const char *args)
{
    /* BDAT size [LAST] (RFC 3030 §2) */
    char *end;
    if (!g_ascii_isdigit(*args)) {
        reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    errno = 0;
    unsigned long long n = strtoull(args, &end, 10);
    bool last = false;
    if (errno != 0) {
        reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    if (*end == ' ') {
        while (*end == ' ')
            end++;
        if (strcasecmp(end, "LAST") != 0) {
            reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
            return;
        }
        last = true;
    } else if (*end != '\0') {
        reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    s->bdat_left = n;
    s->bdat_last = last;
    if (!s->in_mail || s->txn.nrcpts == 0) {
        /* the chunk must still be read to stay in step with the client */
        s->data_failed = true;
        reply(s, "503 5.5.1 Need RCPT command first");
        s->state = ST_BDAT;
        return;
    }
    if (!s->bdat_used) {
        s->bdat_used = true;
        s->data_failed = false;
        if (!msg_begin(s, true)) {
            s->data_failed = true;
            reply_nocount(s, "%s", "451 4.3.0 Queue file write error, try again later");
        }
    }
    s->state = ST_BDAT;
    bufferevent_set_timeouts(s->bev,
                             &(struct timeval){.tv_sec = (time_t)s->srv->cfg->timeout_data},
                             &(struct timeval){.tv_sec = (time_t)s->srv->cfg->timeout_data});
}

static void command_timeouts(struct session *s)
{
    struct timeval tv = {.tv_sec = (time_t)s->srv->cfg->timeout_command};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
}

static void commit_done(void *arg, int result)
{
    struct session *s = arg;
    s->msg = NULL;
    if (s->dead) {
        session_free(s);
        return;
    }
    if (result == 0) {
        log_info("%s: accepted from=<%s> nrcpt=%zu size=%llu client=%s proto=%s%s%s", s->qid,
                 s->txn.sender, s->txn.nrcpts, (unsigned long long)s->data.size, s->ip,
                 s->proto, s->authed ? " user=" : "", s->authed ? s->auth_user : "");
        reply(s, "250 2.0.0 Ok: queued as %s", s->qid);
    } else {
        reply_nocount(s, "%s", "451 4.3.0 Queue file write error, try again later");
    }
    txn_reset(s);
    if (s->state == ST_CLOSING)
        return;
    s->state = ST_CMD;
    command_timeouts(s);
    bufferevent_enable(s->bev, EV_READ);
    session_process(s);
}

/* The callouts' verdict: commit, or answer and drop the message. */
static void filter_done(void *arg, enum smtp_filter_verdict verdict, const char *text)
{
    struct session *s = arg;
    if (s->dead) {
        session_free(s);    /* aborts the message: the client never got a 250 */
        return;
    }
    if (verdict == SMTP_FILTER_ACCEPT) {
        s->srv->hooks.msg_commit(s->msg, commit_done, s);
        return;
    }
    log_info("%s: %s from=<%s> client=%s: %s", s->qid,
             verdict == SMTP_FILTER_DISCARD ? "discarded" : "refused", s->txn.sender, s->ip,
             text);
    if (verdict == SMTP_FILTER_DISCARD)
        reply(s, "%s", text);
    else
        reply_nocount(s, "%s", text);
    txn_reset(s);
    if (s->state == ST_CLOSING)
        return;
    s->state = ST_CMD;
    command_timeouts(s);
    bufferevent_enable(s->bev, EV_READ);
    session_process(s);
}

/* The end of DATA or of the last BDAT chunk: refuse or make durable. */
/* Keeps the start of the message for the msg_check hook; always true. */
static bool keep_head(struct session *s, const char *p, size_t n)
{
    if (s->head == NULL)
        s->head = malloc(SMTP_HEAD_MAX);
    size_t room = SMTP_HEAD_MAX - s->headlen;
    size_t take = n < room ? n : room;
    memcpy(s->head + s->headlen, p, take);
    s->headlen += take;
    return true;
}

static void msg_finish(struct session *s)
{
    const char *verdict = smtp_data_verdict(&s->data);
    char check[512];
    size_t headlen = s->headlen;
    s->headlen = 0;
    if (verdict == NULL && !s->data_failed && s->srv->hooks.msg_check != NULL &&
        s->srv->hooks.msg_check(s->srv->hooks.arg, &s->txn, s->head ? s->head : "", headlen,
                                check, sizeof check) != 0)
        verdict = check;
    if (s->data_failed) {
        txn_reset(s);
        s->state = ST_CMD;
        command_timeouts(s);
        return;
    }
    if (verdict != NULL) {
        log_info("%s: refused from=<%s> client=%s: %s", s->qid, s->txn.sender, s->ip,
                 strlen(verdict) > 10 ? verdict + 10 : verdict);
        reply(s, "%s", verdict);
        txn_reset(s);
        if (s->state != ST_CLOSING) {
            s->state = ST_CMD;
            command_timeouts(s);
        }
        return;
    }
    s->state = ST_COMMIT;
    bufferevent_disable(s->bev, EV_READ);
    if (s->srv->hooks.msg_filter != NULL) {
        session_facts(s);
        s->srv->hooks.msg_filter(s->msg, &s->txn, filter_done, s);
        return;
    }
    s->srv->hooks.msg_commit(s->msg, commit_done, s);
}

static void cmd_starttls(struct session *s, const char *args)
{
    if (*args != '\0') {
        reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (s->tls) {
        reply(s, "503 5.5.1 TLS already active");
        return;
    }
    if (s->lst->tls != LTLS_STARTTLS || s->srv->tls == NULL) {
        reply(s, "502 5.5.1 STARTTLS not available");
        return;
    }
    reply(s, "220 2.0.0 Ready to start TLS");
    /* RFC 3207 §6 and CVE-2011-0411: whatever the client pipelined after
     * STARTTLS arrived in plaintext; it is thrown away unread. */
    struct evbuffer *in = bufferevent_get_input(s->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    SSL *ssl = SSL_new(s->srv->tls);
    struct bufferevent *tb = bufferevent_openssl_filter_new(
        s->srv->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (tb == NULL) {
        SSL_free(ssl);
        session_close(s);
        return;
    }
    s->bev = tb;
    bufferevent_setcb(tb, on_read, NULL, on_event, s);
    struct timeval tv = {.tv_sec = (time_t)s->srv->cfg->timeout_tls};
    bufferevent_set_timeouts(tb, &tv, &tv);
    bufferevent_enable(tb, EV_READ | EV_WRITE);
    s->state = ST_TLS;
    /* RFC 3207 §4.2: forget everything learnt before TLS */
    txn_reset(s);
    s->greeted = false;
    s->esmtp = false;
    s->helo[0] = '\0';
}

/* ---- AUTH (RFC 4954) ---------------------------------------------------- */

static void auth_result(struct session *s, const char *user, int r)
{
    s->auth_step = AUTH_NONE;
    if (r == 0) {
        s->authed = true;
        str_copy(s->auth_user, user, sizeof s->auth_user);
        log_info("session %s: authenticated as %s", s->ip, user);
        reply(s, "235 2.7.0 Authentication successful");
    } else if (r == -2) {
        reply_nocount(s, "%s", "454 4.7.0 Temporary authentication failure");
    } else {
        log_warn("session %s: authentication failed for %s", s->ip, user);
        reply(s, "535 5.7.8 Authentication credentials invalid");
    }
}

/* The answer of an asynchronous auth hook, on the event loop. */
static void auth_done(void *arg, int r)
{
    struct session *s = arg;
    if (s->dead) {
        s->state = ST_CLOSING;
        session_free(s);
        return;
    }
    s->state = ST_CMD;
    auth_result(s, s->auth_pending, r);
    if (s->state == ST_CLOSING)
        return;
    command_timeouts(s);
    bufferevent_enable(s->bev, EV_READ);
    session_process(s);
}

static void auth_finish(struct session *s, const char *user, const char *pass)
{
    if (s->srv->hooks.auth_start == NULL) {
        auth_result(s, user, s->srv->hooks.auth(s->srv->hooks.arg, user, pass));
        return;
    }
    /* a password check may be slow (Dovecot, crypt): the session waits,
     * reading nothing, while the others go on */
    if (user != s->auth_pending)
        str_copy(s->auth_pending, user, sizeof s->auth_pending);
    s->state = ST_AUTH_WAIT;
    bufferevent_disable(s->bev, EV_READ);
    s->srv->hooks.auth_start(s->srv->hooks.arg, user, pass, s->ip, auth_done, s);
}

static void auth_plain(struct session *s, const char *b64)
{
    char dec[1024];
    int n = smtp_base64_decode(b64, dec, sizeof dec);
    const char *z, *user, *pass;
    if (n < 0) {
        s->auth_step = AUTH_NONE;
        reply(s, "501 5.5.2 Invalid base64 data");
        return;
    }
    if (smtp_sasl_plain_split(dec, (size_t)n, &z, &user, &pass) == -1 ||
        (*z != '\0' && strcmp(z, user) != 0)) {
        s->auth_step = AUTH_NONE;
        reply(s, "535 5.7.8 Authentication credentials invalid");
        return;
    }
    auth_finish(s, user, pass);
    explicit_bzero(dec, sizeof dec);
}

static void auth_response(struct session *s, const char *line)
{
    s->state = ST_CMD;
    if (strcmp(line, "*") == 0) {
        s->auth_step = AUTH_NONE;
        reply(s, "501 5.0.0 Authentication cancelled");
        return;
    }
    if (s->auth_step == AUTH_PLAIN_WAIT) {
        auth_plain(s, line);
        return;
    }
    char dec[SMTP_PATH_MAX + 1];
    int n = smtp_base64_decode(line, dec, sizeof dec);
    if (n < 0 || memchr(dec, '\0', (size_t)n) != NULL) {
        s->auth_step = AUTH_NONE;
        reply(s, "501 5.5.2 Invalid base64 data");
        return;
    }
    if (s->auth_step == AUTH_LOGIN_USER) {
        str_copy(s->auth_login_user, dec, sizeof s->auth_login_user);
        s->auth_step = AUTH_LOGIN_PASS;
        s->state = ST_AUTH;
        reply(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
        return;
    }
    auth_finish(s, s->auth_login_user, dec);
    explicit_bzero(dec, sizeof dec);
}

static void cmd_auth(struct session *s, const char *args)
{
    if (!s->tls) {
        reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (s->lst->auth == LAUTH_NO) {
        reply(s, "502 5.5.1 AUTH not available on this service");
        return;
    }
    if (!s->greeted) {
        reply(s, "503 5.5.1 Send EHLO first");
        return;
    }
    if (s->authed) {
        reply(s, "503 5.5.1 Already authenticated");
        return;
    }
    if (s->in_mail) {
        reply(s, "503 5.5.1 AUTH not permitted during a mail transaction");
        return;
    }
    char mech[32];
    size_t ml = strcspn(args, " ");
    if (ml == 0 || ml >= sizeof mech) {
        reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        return;
    }
    memcpy(mech, args, ml);
    mech[ml] = '\0';
    const char *ir = args + ml;
    while (*ir == ' ')
        ir++;
    if (strcasecmp(mech, "PLAIN") == 0) {
        str_copy(s->auth_mech, "PLAIN", sizeof s->auth_mech);
        if (*ir == '\0') {
            s->auth_step = AUTH_PLAIN_WAIT;
            s->state = ST_AUTH;
            reply(s, "334 ");
            return;
        }
        /* "=" is an empty initial response (RFC 4954 §4) */
        auth_plain(s, strcmp(ir, "=") == 0 ? "" : ir);
    } else if (strcasecmp(mech, "LOGIN") == 0) {
        str_copy(s->auth_mech, "LOGIN", sizeof s->auth_mech);
        s->state = ST_AUTH;
        if (*ir != '\0') {
            s->auth_step = AUTH_LOGIN_USER;
            auth_response(s, ir);
            return;
        }
        s->auth_step = AUTH_LOGIN_USER;
        reply(s, "334 VXNlcm5hbWU6");   /* "Username:" */
    } else {
        reply(s, "504 5.5.4 Unrecognized authentication mechanism");
    }
}

/* ---- dispatch ------------------------------------------------------------ */

static void dispatch(struct session *s, char *line)
{
    struct smtp_command c;
    smtp_command_parse(line, &c);
    if (s->srv->draining && c.verb != SMTP_V_QUIT) {
        reply_nocount(s, "421 4.3.2 %s Service shutting down", s->srv->cfg->hostname);
        session_close(s);
        return;
    }
    switch (c.verb) {
    case SMTP_V_EHLO:
        cmd_helo(s, c.args, true);
        break;
    case SMTP_V_HELO:
        cmd_helo(s, c.args, false);
        break;
    case SMTP_V_MAIL:
        cmd_mail(s, c.args);
        break;
    case SMTP_V_RCPT:
        cmd_rcpt(s, c.args);
        break;
    case SMTP_V_DATA:
        cmd_data(s, c.args);
        break;
    case SMTP_V_BDAT:
        cmd_bdat(s, c.args);
        break;
    case SMTP_V_RSET:
        txn_reset(s);
        reply(s, "250 2.0.0 Reset state");
        break;
    case SMTP_V_NOOP:
        reply(s, "250 2.0.0 OK");
        break;
    case SMTP_V_VRFY:
        /* rfc5321bis §3.5.3: answer conservatively */
        reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
        break;
    case SMTP_V_EXPN:
        reply(s, "502 5.5.1 EXPN not supported");
        break;
    case SMTP_V_HELP:
        reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY "
                 "HELP STARTTLS AUTH");
        break;
    case SMTP_V_QUIT:
        reply(s, "221 2.0.0 %s Bye", s->srv->cfg->hostname);
        session_close(s);
        break;
    case SMTP_V_STARTTLS:
        cmd_starttls(s, c.args);
        break;
    case SMTP_V_AUTH:
        cmd_auth(s, c.args);
        break;
    case SMTP_V_HTTP:
        log_info("session %s: HTTP request on the SMTP port, closing", s->ip);
        reply(s, "554 5.7.0 %s This is an SMTP server, not HTTP", s->srv->cfg->hostname);
        session_close(s);
        break;
    case SMTP_V_UNKNOWN:
        reply(s, "500 5.5.1 Command unrecognized");
        break;
    }
}

/* Feeds DATA or BDAT octets from the input buffer; true when more may follow. */
static bool feed_data(struct session *s, struct evbuffer *in)
{
    while (evbuffer_get_length(in) > 0) {
        size_t avail = evbuffer_get_length(in);
        size_t take = avail < DATA_CHUNK ? avail : DATA_CHUNK;
        if (s->state == ST_BDAT && take > s->bdat_left)
            take = (size_t)s->bdat_left;
        if (take == 0)
            break;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)take);
        size_t used = take, outlen = 0;
        if (!s->data_failed)
            used = smtp_data_feed(&s->data, p, take, s->outbuf, &outlen);
        else if (s->state == ST_DATA) {
            /* keep scanning for the end marker, output discarded */
            used = smtp_data_feed(&s->data, p, take, s->outbuf, &outlen);
            outlen = 0;
        }
        if (outlen > 0 && s->msg != NULL && !s->data_failed &&
            (s->srv->hooks.msg_check == NULL || keep_head(s, s->outbuf, outlen)) &&
            s->srv->hooks.msg_write(s->msg, s->outbuf, outlen) == -1) {
            log_err("%s: spool write failed: %s", s->qid, strerror(errno));
            s->data_failed = true;
        }
        evbuffer_drain(in, used);
        if (s->state == ST_BDAT)
            s->bdat_left -= used;
        if (s->state == ST_DATA && smtp_data_done(&s->data)) {
            if (s->data_failed && s->msg != NULL)
                reply_nocount(s, "%s", "451 4.3.0 Queue file write error, try again later");
            msg_finish(s);
            return true;
        }
    }
    if (s->state == ST_BDAT && s->bdat_left == 0) {
        if (s->data_failed) {
            /* chunk discarded (an error was already replied at BDAT) */
            if (s->msg != NULL) {
                txn_reset(s);
            }
            s->state = ST_CMD;
            command_timeouts(s);
            return true;
        }
        if (s->bdat_last) {
            s->state = ST_CMD;
            msg_finish(s);
        } else {
            reply(s, "250 2.0.0 %llu octets received",
                  (unsigned long long)s->data.size);
            s->state = ST_CMD;
            command_timeouts(s);
        }
        return true;
    }
    return false;
}

static void session_process(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    for (int guard = 0; guard < 10000; guard++) {
        if (s->state == ST_DATA || s->state == ST_BDAT) {
            if (!feed_data(s, in))
                return;
            continue;
        }
        if (s->state != ST_CMD && s->state != ST_AUTH)
            return;
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return;
        /* MAIL and RCPT may carry parameters beyond 512 octets: 2048 with
         * the CRLF (checked per command below) */
        size_t max = SMTP_PATH_LINE_MAX;
        size_t look = len < max ? len : max;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        size_t linelen, consumed;
        enum smtp_line_result r = smtp_line_next(&s->lr, p, look, max, &linelen, &consumed);
        if (r == SMTP_LINE_NEED_MORE) {
            evbuffer_drain(in, consumed);
            if (consumed > 0)
                continue;   /* skipping an over-long line: look at the rest */
            return;
        }
        if (r == SMTP_LINE_TOO_LONG) {
            evbuffer_drain(in, consumed);
            s->state = ST_CMD;
            reply(s, "500 5.5.2 Line too long");
            continue;
        }
        if (r == SMTP_LINE_BARE_LF) {
            evbuffer_drain(in, consumed);
            s->state = ST_CMD;
            s->auth_step = AUTH_NONE;
            reply(s, "500 5.5.2 Bare LF in command; only CRLF ends a line");
            continue;
        }
        char line[SMTP_PATH_LINE_MAX + 1];
        memcpy(line, p, linelen);
        line[linelen] = '\0';
        evbuffer_drain(in, consumed);
        if (memchr(line, '\0', linelen) != NULL) {
            reply(s, "500 5.5.2 NUL in command");
            continue;
        }
        if (s->state == ST_AUTH) {
            auth_response(s, line);
            explicit_bzero(line, sizeof line);
            continue;
        }
        /* only MAIL and RCPT get the longer limit */
        bool path_cmd = linelen >= 4 && (strncasecmp(line, "MAIL", 4) == 0 ||
                                         strncasecmp(line, "RCPT", 4) == 0);
        if (!path_cmd && linelen + 2 > SMTP_CMD_LINE_MAX) {
            reply(s, "500 5.5.2 Line too long");
            continue;
        }
        dispatch(s, line);
    }
}

/* ---- connection --------------------------------------------------------- */

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    session_process(arg);
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

static void session_close(struct session *s)
{
    if (s->state == ST_CLOSING)
        return;
    s->state = ST_CLOSING;
    bufferevent_disable(s->bev, EV_READ);
    bufferevent_setcb(s->bev, NULL, on_write_closing, on_event, s);
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

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        /* TLS handshake complete */
        tls_record(s);
        if (s->state == ST_TLS)
            s->state = ST_CMD;
        command_timeouts(s);
        session_process(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (session_waiting(s)) {
            s->dead = true;    /* freed when the commit or AUTH completes */
            return;
        }
        if (s->state == ST_CLOSING || s->state == ST_TLS) {
            log_info("session %s: timeout%s", s->ip, s->state == ST_TLS ? " in TLS handshake" : "");
            session_free(s);
            return;
        }
        log_info("session %s: timeout", s->ip);
        reply_nocount(s, "421 4.4.2 %s Timeout, closing connection", s->srv->cfg->hostname);
        session_close(s);
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

static void session_free(struct session *s)
{
    struct smtp_server *srv = s->srv;
    if (session_waiting(s) && !s->dead) {
        s->dead = true;
        return;
    }
    txn_reset(s);
    gpointer key, val;
    if (g_hash_table_lookup_extended(srv->per_ip, s->ip, &key, &val)) {
        uintptr_t n = (uintptr_t)val;
        if (n <= 1)
            g_hash_table_remove(srv->per_ip, s->ip);
        else
            g_hash_table_insert(srv->per_ip, g_strdup(s->ip), (gpointer)(n - 1));
    }
    srv->sessions = g_list_delete_link(srv->sessions, s->link);
    srv->nsessions--;
    if (s->close_timer)
        event_free(s->close_timer);
    bufferevent_free(s->bev);
    free(s->outbuf);
    free(s->head);
    free(s);
}

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct listener *l = arg;
    struct smtp_server *srv = l->srv;
    (void)evl;
    (void)salen;
    char ip[INET6_ADDRSTRLEN] = "unknown";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, ip, sizeof ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof ip);

    uintptr_t per_ip = (uintptr_t)g_hash_table_lookup(srv->per_ip, ip);
    if (srv->nsessions >= srv->cfg->max_connections ||
        per_ip >= srv->cfg->max_connections_per_ip) {
        char msg[300];
        int n = snprintf(msg, sizeof msg, "421 4.7.0 %s Too many connections, try again later\r\n",
                         srv->cfg->hostname);
        if (l->cfg->tls != LTLS_IMPLICIT) {
            ssize_t w = send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
            (void)w;
        }
        log_warn("connection from %s refused: too many connections", ip);
        close(fd);
        return;
    }

    struct session *s = calloc(1, sizeof *s);
    s->srv = srv;
    s->lst = l->cfg;
    str_copy(s->ip, ip, sizeof s->ip);
    if (l->cfg->tls == LTLS_IMPLICIT) {
        SSL *ssl = SSL_new(srv->tls);
        s->bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        s->state = ST_TLS;
    } else {
        s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
        s->state = ST_CMD;
    }
    if (s->bev == NULL) {
        close(fd);
        free(s);
        return;
    }
    srv->sessions = g_list_prepend(srv->sessions, s);
    s->link = srv->sessions;
    srv->nsessions++;
    g_hash_table_insert(srv->per_ip, g_strdup(ip), (gpointer)(per_ip + 1));
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    struct timeval tv = {.tv_sec = (time_t)(s->state == ST_TLS ? srv->cfg->timeout_tls
                                                               : srv->cfg->timeout_command)};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    /* Bound what one client can make us buffer. */
    bufferevent_setwatermark(s->bev, EV_READ, 0, 256 * 1024);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    reply_nocount(s, "220 %s ESMTP pecmail", srv->cfg->hostname);
    log_debug("connection from %s on %s", ip, l->cfg->name);
}

/* ---- server ------------------------------------------------------------- */

struct smtp_server *smtp_server_new(struct event_base *base, const struct config *cfg,
                                    const struct smtp_hooks *hooks, SSL_CTX *tls)
{
    struct smtp_server *srv = calloc(1, sizeof *srv);
    srv->base = base;
    srv->cfg = cfg;
    srv->hooks = *hooks;
    srv->tls = tls;
    srv->per_ip = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return srv;
}

void smtp_server_set_tls(struct smtp_server *srv, SSL_CTX *tls) { srv->tls = tls; }

static void on_accept_error(struct evconnlistener *evl, void *arg)
{
    (void)evl;
    (void)arg;
    /* EMFILE and friends: the connection stays in the backlog and is
     * accepted once a session ends; max_connections keeps us below the limit. */
    log_warn("accept failed: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

int smtp_server_listen(struct smtp_server *srv, const struct config_listener *l, char *err,
                       size_t errlen)
{
    if (l->tls != LTLS_NONE && srv->tls == NULL) {
        snprintf(err, errlen, "[%s] needs TLS but no certificate is configured", l->name);
        return -1;
    }
    for (size_t i = 0; i < l->naddrs; i++) {
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
            return -1;
        }
        struct listener *lst = calloc(1, sizeof *lst);
        lst->srv = srv;
        lst->cfg = l;
        lst->ev = evconnlistener_new_bind(srv->base, on_accept, lst,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                              LEV_OPT_CLOSE_ON_EXEC,
                                          1024, res->ai_addr, (int)res->ai_addrlen);
        freeaddrinfo(res);
        if (lst->ev == NULL) {
            snprintf(err, errlen, "[%s] listen %s: %s", l->name, l->addrs[i], strerror(errno));
            free(lst);
            return -1;
        }
        evconnlistener_set_error_cb(lst->ev, on_accept_error);
        srv->listeners[srv->nlisteners++] = lst;
        log_info("listening on %s (%s, tls=%s)", l->addrs[i], l->name,
                 l->tls == LTLS_NONE ? "none" : l->tls == LTLS_STARTTLS ? "starttls" : "implicit");
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
            reply_nocount(s, "421 4.3.2 %s Service shutting down", s->srv->cfg->hostname);
            session_close(s);
        }
    }
    g_list_free(copy);
}

size_t smtp_server_sessions(const struct smtp_server *srv) { return srv->nsessions; }

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
    g_hash_table_destroy(srv->per_ip);
    free(srv);
}
