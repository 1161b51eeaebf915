/*
 * server_auth.c - STARTTLS (RFC 3207) and AUTH PLAIN and LOGIN (RFC 4954)
 * of an SMTP session: the SASL exchange, then the auth hook, called directly
 * or, with auth_start, asynchronously while the session waits.
 */
#include "server_int.h"
#include "lib/lib.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <string.h>
#include <strings.h>

void sess_cmd_starttls(struct session *s, const char *args)
{
    if (*args != '\0') {
        sess_reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (s->tls) {
        sess_reply(s, "503 5.5.1 TLS already active");
        return;
    }
    if (s->lst->tls != LTLS_STARTTLS || s->srv->tls == NULL) {
        sess_reply(s, "502 5.5.1 STARTTLS not available");
        return;
    }
    sess_reply(s, "220 2.0.0 Ready to start TLS");
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
    bufferevent_setcb(tb, sess_on_read, NULL, sess_on_event, s);
    struct timeval tv = {.tv_sec = (time_t)s->srv->cfg->timeout_tls};
    bufferevent_set_timeouts(tb, &tv, &tv);
    bufferevent_enable(tb, EV_READ | EV_WRITE);
    s->state = ST_TLS;
    /* RFC 3207 §4.2: forget everything learnt before TLS */
    sess_txn_reset(s);
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
        sess_reply(s, "235 2.7.0 Authentication successful");
    } else if (r == -2) {
        sess_reply_nocount(s, "%s", "454 4.7.0 Temporary authentication failure");
    } else {
        log_warn("session %s: authentication failed for %s", s->ip, user);
        sess_reply(s, "535 5.7.8 Authentication credentials invalid");
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
    sess_resume(s);
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
        sess_reply(s, "501 5.5.2 Invalid base64 data");
        return;
    }
    if (smtp_sasl_plain_split(dec, (size_t)n, &z, &user, &pass) == -1 ||
        (*z != '\0' && strcmp(z, user) != 0)) {
        s->auth_step = AUTH_NONE;
        sess_reply(s, "535 5.7.8 Authentication credentials invalid");
        return;
    }
    auth_finish(s, user, pass);
    explicit_bzero(dec, sizeof dec);
}

void sess_auth_response(struct session *s, const char *line)
{
    s->state = ST_CMD;
    if (strcmp(line, "*") == 0) {
        s->auth_step = AUTH_NONE;
        sess_reply(s, "501 5.0.0 Authentication cancelled");
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
        sess_reply(s, "501 5.5.2 Invalid base64 data");
        return;
    }
    if (s->auth_step == AUTH_LOGIN_USER) {
        str_copy(s->auth_login_user, dec, sizeof s->auth_login_user);
        s->auth_step = AUTH_LOGIN_PASS;
        s->state = ST_AUTH;
        sess_reply(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
        return;
    }
    auth_finish(s, s->auth_login_user, dec);
    explicit_bzero(dec, sizeof dec);
}

void sess_cmd_auth(struct session *s, const char *args)
{
    if (!s->tls) {
        sess_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (s->lst->auth == LAUTH_NO) {
        sess_reply(s, "502 5.5.1 AUTH not available on this service");
        return;
    }
    if (!s->greeted) {
        sess_reply(s, "503 5.5.1 Send EHLO first");
        return;
    }
    if (s->authed) {
        sess_reply(s, "503 5.5.1 Already authenticated");
        return;
    }
    if (s->in_mail) {
        sess_reply(s, "503 5.5.1 AUTH not permitted during a mail transaction");
        return;
    }
    char mech[32];
    size_t ml = strcspn(args, " ");
    if (ml == 0 || ml >= sizeof mech) {
        sess_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
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
            sess_reply(s, "334 ");
            return;
        }
        /* "=" is an empty initial response (RFC 4954 §4) */
        auth_plain(s, strcmp(ir, "=") == 0 ? "" : ir);
    } else if (strcasecmp(mech, "LOGIN") == 0) {
        str_copy(s->auth_mech, "LOGIN", sizeof s->auth_mech);
        s->state = ST_AUTH;
        if (*ir != '\0') {
            s->auth_step = AUTH_LOGIN_USER;
            sess_auth_response(s, ir);
            return;
        }
        s->auth_step = AUTH_LOGIN_USER;
        sess_reply(s, "334 VXNlcm5hbWU6");   /* "Username:" */
    } else {
        sess_reply(s, "504 5.5.4 Unrecognized authentication mechanism");
    }
}
