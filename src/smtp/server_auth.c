/*
 * server_auth.c - STARTTLS (RFC 3207) and AUTH PLAIN and LOGIN (RFC 4954)
 * of an SMTP session: the SASL exchange, then the auth hook, called directly
 * or, with auth_start, asynchronously while the session waits.
 *
 * Guessing is slowed down (docs/operator-guide.md): a failure is answered
 * auth_failure_delay after the credentials came, on a timer (the session
 * waits, the others go on); failures are counted per client address and per
 * account in the server's throttle tables (throttle.c), and past their limit
 * an attempt gets 454 without its password being checked; auth_max_failures
 * in one session close it with 421.
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

void sess_cmd_starttls(struct session *s)
{
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
    /* the TLS records wait in the filter's output while the socket's is
     * full, so SMTP_OUTPUT_MAX is measured there (session_process) */
    bufferevent_setwatermark(s->bev, EV_WRITE, 0, SMTP_OUTPUT_MAX);
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    s->bev = tb;
    bufferevent_setcb(tb, sess_on_read, sess_on_write, sess_on_event, s);
    struct timeval tv = {.tv_sec = (time_t)s->srv->cfg->timeout_tls};
    bufferevent_set_timeouts(tb, &tv, &tv);
    bufferevent_setwatermark(tb, EV_READ, 0, 256 * 1024);
    bufferevent_enable(tb, EV_READ | EV_WRITE);
    s->state = ST_TLS;
    sess_deadline(s, DL_TLS);
    /* RFC 3207 §4.2: forget everything learnt before TLS */
    sess_txn_reset(s);
    s->greeted = false;
    s->esmtp = false;
    s->helo[0] = '\0';
}

/* ---- AUTH (RFC 4954) ---------------------------------------------------- */

/* auth_result beyond the hook's 0 / -1 / -2: refused unchecked, too many failures */
#define AUTH_LOCKED (-3)

void sess_auth_tables(struct smtp_server *srv)
{
    const struct config *cfg = srv->cfg;
    srv->auth_by_ip = smtp_throttle_new(cfg->auth_track_max,
                                        (int64_t)cfg->auth_failure_window * 1000);
    srv->auth_by_account = smtp_throttle_new(cfg->auth_track_max,
                                             (int64_t)cfg->auth_failure_window * 1000);
}

/* The account as the failure table keys it: one entry for every case variant. */
static void account_key(const char *user, char *out, size_t outlen)
{
    str_copy(out, user, outlen);
    for (char *p = out; *p; p++)
        *p = (char)g_ascii_tolower(*p);
}

/* The reply to a finished AUTH, after the failure delay if any. */
static void auth_reply(struct session *s)
{
    const struct config *cfg = s->srv->cfg;
    bool waited = s->state == ST_AUTH_WAIT;
    int r = s->auth_result;
    s->state = ST_CMD;
    s->auth_step = AUTH_NONE;
    if (r == 0) {
        sess_reply(s, "235 2.7.0 Authentication successful");
    } else if (r == -2) {
        sess_reply_nocount(s, "%s", "454 4.7.0 Temporary authentication failure");
    } else {
        if (r == AUTH_LOCKED)
            sess_reply(s, "454 4.7.0 Too many authentication failures, try again later");
        else
            sess_reply(s, "535 5.7.8 Authentication credentials invalid");
        /* like Postfix's smtpd_hard_error_limit, for AUTH alone */
        if (s->state != ST_CLOSING && s->auth_failures >= cfg->auth_max_failures) {
            log_warn("session %s on %s: %u failed AUTH in this session (auth_max_failures), "
                     "closing", s->ip, s->lst->name, s->auth_failures);
            sess_reply_nocount(s, "421 4.7.0 %s Too many authentication failures, closing "
                               "connection", cfg->hostname);
            session_close(s);
        }
    }
    if (waited)
        sess_resume(s);
}

static void on_auth_delay(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    if (s->dead) {
        s->state = ST_CLOSING;
        session_free(s);
        return;
    }
    auth_reply(s);
}

/* The outcome of the credentials: counts a failure, then answers, a failure
 * not before auth_failure_delay since the credentials came (the check's own
 * time counts, so a slow hash or Dovecot's own delay adds nothing, and the
 * time of the answer tells nothing).  The wait is a timer: other sessions go
 * on; this one reads nothing meanwhile. */
static void auth_outcome(struct session *s, int r, const char *canonical)
{
    struct smtp_server *srv = s->srv;
    const struct config *cfg = srv->cfg;
    s->auth_result = r;
    char acct[SMTP_PATH_MAX + 1];
    account_key(s->auth_pending, acct, sizeof acct);
    if (r == 0) {
        s->authed = true;
        /* the name the users source settled on (Dovecot's user=, our lower
         * case): what MAIL FROM is checked against and the logs show */
        str_copy(s->auth_user, canonical != NULL && canonical[0] ? canonical : s->auth_pending,
                 sizeof s->auth_user);
        smtp_throttle_clear(srv->auth_by_account, acct);
        log_info("session %s: authenticated as %s", s->ip, s->auth_user);
    }
    if (r == 0 || r == -2) {
        auth_reply(s);
        return;
    }
    s->auth_failures++;
    if (r == -1) {
        int64_t now = clock_ms();
        unsigned by_ip = smtp_throttle_fail(srv->auth_by_ip, s->ckey, now);
        unsigned by_acct = acct[0] ? smtp_throttle_fail(srv->auth_by_account, acct, now) : 0;
        log_warn("session %s on %s: authentication failed for %s (failures: %u in this "
                 "session, %u from %s, %u for the account)", s->ip, s->lst->name,
                 s->auth_pending[0] ? s->auth_pending : "(a malformed PLAIN message)",
                 s->auth_failures, by_ip, s->ckey, by_acct);
    }
    int64_t left = (int64_t)cfg->auth_failure_delay * 1000 - (clock_ms() - s->auth_started);
    if (left <= 0) {
        auth_reply(s);
        return;
    }
    if (s->auth_timer == NULL)
        s->auth_timer = evtimer_new(srv->base, on_auth_delay, s);
    s->state = ST_AUTH_WAIT;
    sess_deadline(s, DL_NONE);
    bufferevent_disable(s->bev, EV_READ);
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)(left % 1000) * 1000};
    evtimer_add(s->auth_timer, &tv);
}

/* The answer of an asynchronous auth hook, on the event loop. */
static void auth_done(void *arg, int r, const char *canonical)
{
    struct session *s = arg;
    if (s->dead) {
        s->state = ST_CLOSING;
        session_free(s);
        return;
    }
    auth_outcome(s, r, canonical);
}

/* Why the client or the account may not try now, or NULL (limits of 0 are off). */
static const char *auth_locked(struct session *s, const char *acct)
{
    struct smtp_server *srv = s->srv;
    const struct config *cfg = srv->cfg;
    int64_t now = clock_ms();
    if (cfg->auth_failures_per_ip != 0 &&
        smtp_throttle_count(srv->auth_by_ip, s->ckey, now) >= cfg->auth_failures_per_ip)
        return "from this address (auth_failures_per_ip)";
    if (cfg->auth_failures_per_account != 0 && acct[0] != '\0' &&
        smtp_throttle_count(srv->auth_by_account, acct, now) >= cfg->auth_failures_per_account)
        return "for this account (auth_failures_per_account)";
    return NULL;
}

static void auth_finish(struct session *s, const char *user, const char *pass)
{
    s->auth_started = clock_ms();
    if (user != s->auth_pending)
        str_copy(s->auth_pending, user, sizeof s->auth_pending);
    char acct[SMTP_PATH_MAX + 1];
    account_key(user, acct, sizeof acct);
    const char *why = auth_locked(s, acct);
    if (why != NULL) {
        /* no password is checked: guessing stops, and so does the work */
        log_warn("session %s on %s: AUTH as %s refused unchecked: too many failures %s",
                 s->ip, s->lst->name, user, why);
        auth_outcome(s, AUTH_LOCKED, NULL);
        return;
    }
    if (s->srv->hooks.auth_start == NULL) {
        auth_outcome(s, s->srv->hooks.auth(s->srv->hooks.arg, user, pass), NULL);
        return;
    }
    /* a password check may be slow (Dovecot, crypt): the session waits,
     * reading nothing, while the others go on */
    s->state = ST_AUTH_WAIT;
    sess_deadline(s, DL_NONE);
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
        /* a failure like a wrong password (delay, counts), but no account */
        explicit_bzero(dec, sizeof dec);
        s->auth_started = clock_ms();
        s->auth_pending[0] = '\0';
        auth_outcome(s, -1, NULL);
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
