/*
 * server_cmd.c - the SMTP server's command side: the line reader of a
 * session (session_process), the dispatch of a command line, and the
 * handlers of EHLO/HELO (with the keywords, gated here), MAIL and RCPT with
 * their parameters; RSET, NOOP, VRFY, EXPN, HELP and QUIT are answered in
 * dispatch().  DATA/BDAT are in server_data.c, STARTTLS and AUTH in
 * server_auth.c.
 */
#include "server_int.h"
#include "lib/lib.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    sess_reply(s, "250-%s", cfg->hostname);
    for (size_t i = 0; i < n; i++)
        sess_reply(s, "250%c%s", i + 1 == n ? ' ' : '-', kw[i]);
}

static void cmd_helo(struct session *s, const char *args, bool ehlo)
{
    if (*args == '\0' || strlen(args) >= sizeof s->helo || strchr(args, ' ') != NULL) {
        sess_reply(s, "501 5.5.4 Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
        return;
    }
    sess_txn_reset(s);
    str_copy(s->helo, args, sizeof s->helo);
    s->greeted = true;
    s->esmtp = ehlo;
    if (ehlo)
        ehlo_keywords(s);
    else
        sess_reply(s, "250 %s", s->srv->cfg->hostname);
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
        sess_reply(s, "503 5.5.1 Send EHLO or HELO first");
        return;
    }
    if (s->in_mail) {
        sess_reply(s, "503 5.5.1 Nested MAIL command");
        return;
    }
    if (s->lst->require_tls && !s->tls) {
        sess_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (s->lst->auth == LAUTH_REQUIRED && !s->authed) {
        sess_reply(s, "530 5.7.0 Authentication required");
        return;
    }
    struct smtp_path *p = g_malloc(sizeof *p);
    enum smtp_path_error e = smtp_path_parse(args, "FROM:", true, p);
    if (e != SMTP_PATH_OK) {
        sess_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]");
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
                sess_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
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
                sess_reply(s, "530 5.7.10 REQUIRETLS needs a TLS session");
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
        sess_reply(s, "555 5.5.4 Unsupported parameter %s", k);
        goto out;
    badvalue:
        sess_reply(s, "501 5.5.4 Bad value for parameter %s", k);
        goto out;
    }
    if (p->utf8 && !t->smtputf8) {
        sess_reply(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8");
        goto out;
    }
    str_copy(t->sender, p->addr, sizeof t->sender);
    session_facts(s);
    if (s->srv->hooks.mail != NULL) {
        char r[512];
        if (s->srv->hooks.mail(s->srv->hooks.arg, t, r, sizeof r) != 0) {
            sess_reply(s, "%s", r);
            goto out;
        }
    }
    s->in_mail = true;
    sess_reply(s, "250 2.1.0 Sender OK");
out:
    if (!s->in_mail)
        memset(&s->txn, 0, sizeof s->txn);
    g_free(p);
}

static void cmd_rcpt(struct session *s, const char *args)
{
    if (!s->in_mail) {
        sess_reply(s, "503 5.5.1 Need MAIL command first");
        return;
    }
    struct smtp_path *p = g_malloc(sizeof *p);
    struct smtp_txn *t = &s->txn;
    unsigned notify = 0;
    char *orcpt = NULL;
    if (smtp_path_parse(args, "TO:", false, p) != SMTP_PATH_OK) {
        sess_reply(s, "501 5.5.4 Syntax: RCPT TO:<address> [parameters]");
        goto out;
    }
    for (size_t i = 0; i < p->nparams; i++) {
        const char *k = p->params[i].key;
        char *v = p->params[i].value;
        if (param_seen(p, i, k) || !s->esmtp) {
            sess_reply(s, "555 5.5.4 Unsupported parameter %s", k);
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
                sess_reply(s, "501 5.5.4 Bad value for parameter %s", k);
                goto out;
            }
        } else if (strcmp(k, "ORCPT") == 0 && v != NULL) {
            char *semi = strchr(v, ';');
            if (semi == NULL || semi == v || smtp_xtext_decode(semi + 1) == -1 ||
                semi[1] == '\0' || strlen(v) > 500) {
                sess_reply(s, "501 5.5.4 Bad value for parameter %s", k);
                goto out;
            }
            orcpt = g_strdup(v);
        } else {
            sess_reply(s, "%s 5.5.4 %s parameter %s",
                  (strcmp(k, "NOTIFY") == 0 || strcmp(k, "ORCPT") == 0) ? "501" : "555",
                  (strcmp(k, "NOTIFY") == 0 || strcmp(k, "ORCPT") == 0) ? "Bad value for"
                                                                       : "Unsupported",
                  k);
            goto out;
        }
    }
    if (p->utf8 && !t->smtputf8) {
        sess_reply(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8");
        goto out;
    }
    if (t->nrcpts >= s->srv->cfg->max_recipients) {
        /* RFC 5321 §4.5.3.1.10 */
        sess_reply(s, "452 4.5.3 Too many recipients");
        goto out;
    }
    char addr[SMTP_PATH_MAX + 1];
    char r[512];
    str_copy(addr, p->addr, sizeof addr);
    if (s->srv->hooks.rcpt(s->srv->hooks.arg, t, p, addr, sizeof addr, r, sizeof r) != 0) {
        sess_reply(s, "%s", r);
        goto out;
    }
    /* the same mailbox twice gets one copy */
    for (size_t i = 0; i < t->nrcpts; i++) {
        if (strcmp(t->rcpts[i].addr, addr) == 0) {
            sess_reply(s, "250 2.1.5 Recipient OK");
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
    sess_reply(s, "250 2.1.5 Recipient OK");
out:
    g_free(orcpt);
    g_free(p);
}

/* ---- dispatch ------------------------------------------------------------ */

static void dispatch(struct session *s, char *line)
{
    struct smtp_command c;
    smtp_command_parse(line, &c);
    if (s->srv->draining && c.verb != SMTP_V_QUIT) {
        sess_reply_nocount(s, "421 4.3.2 %s Service shutting down", s->srv->cfg->hostname);
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
        sess_cmd_data(s, c.args);
        break;
    case SMTP_V_BDAT:
        sess_cmd_bdat(s, c.args);
        break;
    case SMTP_V_RSET:
        sess_txn_reset(s);
        sess_reply(s, "250 2.0.0 Reset state");
        break;
    case SMTP_V_NOOP:
        sess_reply(s, "250 2.0.0 OK");
        break;
    case SMTP_V_VRFY:
        /* rfc5321bis §3.5.3: answer conservatively */
        sess_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
        break;
    case SMTP_V_EXPN:
        sess_reply(s, "502 5.5.1 EXPN not supported");
        break;
    case SMTP_V_HELP:
        sess_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY "
                 "HELP STARTTLS AUTH");
        break;
    case SMTP_V_QUIT:
        sess_reply(s, "221 2.0.0 %s Bye", s->srv->cfg->hostname);
        session_close(s);
        break;
    case SMTP_V_STARTTLS:
        sess_cmd_starttls(s, c.args);
        break;
    case SMTP_V_AUTH:
        sess_cmd_auth(s, c.args);
        break;
    case SMTP_V_HTTP:
        log_info("session %s: HTTP request on the SMTP port, closing", s->ip);
        sess_reply(s, "554 5.7.0 %s This is an SMTP server, not HTTP", s->srv->cfg->hostname);
        session_close(s);
        break;
    case SMTP_V_UNKNOWN:
        sess_reply(s, "500 5.5.1 Command unrecognized");
        break;
    }
}

void session_process(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    for (int guard = 0; guard < 10000; guard++) {
        if (s->state == ST_DATA || s->state == ST_BDAT) {
            if (!sess_feed_data(s, in))
                return;
            continue;
        }
        if (s->state != ST_CMD && s->state != ST_AUTH)
            return;
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return;
        /* a client that sends commands and reads no reply: its commands wait
         * until the replies drain (sess_on_write), so the output stays bounded */
        if (evbuffer_get_length(bufferevent_get_output(s->bev)) > SMTP_OUTPUT_MAX) {
            s->out_blocked = true;
            return;
        }
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
        /* a whole line is here: the next one has timeout_command from now */
        sess_deadline(s, DL_COMMAND);
        if (r == SMTP_LINE_TOO_LONG) {
            evbuffer_drain(in, consumed);
            s->state = ST_CMD;
            sess_reply(s, "500 5.5.2 Line too long");
            continue;
        }
        if (r == SMTP_LINE_BARE_LF) {
            evbuffer_drain(in, consumed);
            s->state = ST_CMD;
            s->auth_step = AUTH_NONE;
            sess_reply(s, "500 5.5.2 Bare LF in command; only CRLF ends a line");
            continue;
        }
        char line[SMTP_PATH_LINE_MAX + 1];
        memcpy(line, p, linelen);
        line[linelen] = '\0';
        evbuffer_drain(in, consumed);
        if (memchr(line, '\0', linelen) != NULL) {
            sess_reply(s, "500 5.5.2 NUL in command");
            continue;
        }
        if (s->state == ST_AUTH) {
            sess_auth_response(s, line);
            explicit_bzero(line, sizeof line);
            continue;
        }
        /* only MAIL and RCPT get the longer limit */
        bool path_cmd = linelen >= 4 && (strncasecmp(line, "MAIL", 4) == 0 ||
                                         strncasecmp(line, "RCPT", 4) == 0);
        if (!path_cmd && linelen + 2 > SMTP_CMD_LINE_MAX) {
            sess_reply(s, "500 5.5.2 Line too long");
            continue;
        }
        dispatch(s, line);
    }
}
