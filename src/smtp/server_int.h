/*
 * server_int.h - what the files of the SMTP server share; not for other
 * modules (their interface is smtp.h).
 *
 *   server.c       listeners, accept, session lifecycle (close, free), I/O
 *                  callbacks, replies, transaction reset, drain
 *   server_cmd.c   the command line reader, dispatch and the handlers of
 *                  EHLO/HELO, MAIL, RCPT, RSET, NOOP, VRFY, EXPN, HELP, QUIT
 *   server_data.c  DATA and BDAT: spool file, Received:, streaming, msg_check,
 *                  the msg_filter callouts and the commit
 *   server_auth.c  STARTTLS and AUTH PLAIN/LOGIN (sync and asynchronous hook)
 */
#ifndef PEC_SMTP_SERVER_INT_H
#define PEC_SMTP_SERVER_INT_H

#include "smtp.h"
#include "lib/config.h"

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

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

/* ---- server.c ------------------------------------------------------------ */

/* Queues a reply line (CRLF added); a 4xx/5xx counts toward max_errors. */
void sess_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same, never counted. */
void sess_reply_nocount(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Forgets the transaction (aborts an open spool file). */
void sess_txn_reset(struct session *s);
/* Fills the session's facts (client, HELO, TLS, AUTH, protocol) into s->txn. */
void session_facts(struct session *s);
/* The command timeouts on both directions. */
void sess_command_timeouts(struct session *s);
/* Back to ST_CMD after a hook's answer, unless closing; reads on. */
void sess_resume(struct session *s);
/* Flushes what is queued, then frees; reads nothing more. */
void session_close(struct session *s);
/* Frees now, or marks dead while a hook is working for the session. */
void session_free(struct session *s);
void sess_on_read(struct bufferevent *bev, void *arg);
void sess_on_event(struct bufferevent *bev, short what, void *arg);

/* ---- server_cmd.c -------------------------------------------------------- */

/* Reads and handles what the input holds, in the session's state. */
void session_process(struct session *s);

/* ---- server_data.c ------------------------------------------------------- */

void sess_cmd_data(struct session *s, const char *args);
void sess_cmd_bdat(struct session *s, const char *args);
/* DATA or BDAT text from the input; true when more may follow. */
bool sess_feed_data(struct session *s, struct evbuffer *in);

/* ---- server_auth.c ------------------------------------------------------- */

void sess_cmd_starttls(struct session *s, const char *args);
void sess_cmd_auth(struct session *s, const char *args);
/* A SASL response line (state ST_AUTH). */
void sess_auth_response(struct session *s, const char *line);

#endif
