/*
 * server_int.h - what the files of the SMTP server share; not for other
 * modules (their interface is smtp.h).
 *
 *   server.c       listeners, accept, session lifecycle (close, free), I/O
 *                  callbacks, replies, transaction reset, drain
 *   server_cmd.c   the command line reader, the command table (each command's
 *                  preconditions, check and proceed; EHLO keywords and HELP)
 *                  and the commands EHLO/HELO, MAIL, RCPT, RSET, NOOP, VRFY,
 *                  EXPN, HELP, QUIT
 *   server_data.c  DATA and BDAT: spool file, Received:, streaming, msg_check,
 *                  the msg_filter callouts and the commit
 *   server_auth.c  STARTTLS and AUTH PLAIN/LOGIN (sync and asynchronous hook)
 *
 * Purpose: the session and listener state and the helpers these four files
 * call in each other.
 * Threads: the event loop only: no lock anywhere; an asynchronous hook's
 * answer comes back on the event loop, and the session waits (ST_COMMIT,
 * ST_AUTH_WAIT) with its reads stopped.
 * Ownership: the server owns its listeners and sessions; a session owns its
 * transaction (strings malloc'ed, freed at reset), its bufferevent and its
 * spool handle until msg_commit or msg_abort.  cfg and the TLS context are
 * borrowed from the caller of smtp_server_new/set_config/set_tls.
 * Errors: the client gets an SMTP reply with an enhanced status code; a
 * session that breaks its limits or the protocol is answered 421 and closed;
 * a spool failure is answered 451 4.3.0 (a write error is logged here).
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

/* What the session's deadline timer bounds now (docs/configuration.md). */
enum deadline {
    DL_NONE,          /* a hook is working, or closing */
    DL_COMMAND,       /* timeout_command: a whole command line, from the previous one's end */
    DL_TLS,           /* timeout_tls: the whole handshake */
    DL_DATA,          /* DATA/BDAT: timeout_data plus one second per min_data_rate octets */
};

/* Implicit-TLS connections over a limit are answered 421 after the handshake
 * (RFC 8314 clients see a reason); at most this many such handshakes run at
 * once, each for at most SMTP_REFUSE_TLS_SECONDS; beyond, the connection is
 * closed unanswered. */
#define SMTP_REFUSE_TLS_MAX 16
#define SMTP_REFUSE_TLS_SECONDS 10
/* Replies a client leaves unread: past this, its commands wait (in the input
 * buffer, itself bounded by the read watermark). */
#define SMTP_OUTPUT_MAX 65536

/* The sessions of one configured listener (all its addresses). */
struct listener_state {
    const struct config_listener *cfg;
    size_t n;                   /* sessions counted against cfg->max_connections */
    GHashTable *per_ip;         /* client key (smtp_client_key) -> count */
    int64_t log_ms;             /* the last "refused" log line (one a second at most) */
    unsigned long unlogged;     /* refusals since, not logged one by one */
};

struct smtp_server {
    struct event_base *base;
    const struct config *cfg;
    struct smtp_hooks hooks;
    SSL_CTX *tls;
    struct listener *listeners[CONFIG_MAX_LISTENERS * CONFIG_MAX_ADDRS];
    size_t nlisteners;
    struct listener_state lstates[CONFIG_MAX_LISTENERS];
    size_t nlstates;
    size_t nrefusing;           /* implicit-TLS sessions that only say 421 */
    struct smtp_throttle *auth_by_ip;       /* failed AUTH per client key */
    struct smtp_throttle *auth_by_account;  /* failed AUTH per account (lower case) */
    GList *sessions;
    size_t nsessions;
    bool draining;
};

struct session {
    struct smtp_server *srv;
    const struct config_listener *lst;
    struct listener_state *ls;  /* counted there; NULL while refusing */
    GList *link;
    struct bufferevent *bev;
    enum sstate state;
    char ip[INET6_ADDRSTRLEN];
    char ckey[SMTP_CLIENT_KEY_MAX];   /* the client's key for the per-address limits */
    bool refusing;              /* implicit TLS over a limit: handshake, 421, close */
    bool refusing_ip;           /* ... the limit per client address */
    bool out_blocked;           /* too many unread replies: commands wait */
    struct event *timer;        /* the deadline (enum deadline) */
    enum deadline dl;
    int64_t dl_start;           /* clock_ms() when the deadline's period began */
    uint64_t dl_octets;         /* DATA/BDAT octets read in the period */
    char helo[256];
    bool greeted, esmtp, tls, authed;
    bool in_mail;               /* MAIL accepted */
    bool bdat_used, data_failed;
    char auth_user[SMTP_PATH_MAX + 1];
    char auth_mech[16];         /* the mechanism of the AUTH command in progress or done */
    char auth_login_user[SMTP_PATH_MAX + 1];
    char auth_pending[SMTP_PATH_MAX + 1];  /* user being checked (ST_AUTH_WAIT) */
    enum auth_step auth_step;
    int64_t auth_started;       /* clock_ms() when the credentials were complete */
    int auth_result;            /* 0, -1, -2 (as the hook), or AUTH_LOCKED */
    unsigned auth_failures;     /* in this session */
    struct event *auth_timer;   /* auth_failure_delay before a failure is answered */
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
/* Back to reading commands: the command-line deadline and a write timeout. */
void sess_command_timeouts(struct session *s);
/* Starts the deadline of kind dl from now (DL_NONE stops it). */
void sess_deadline(struct session *s, enum deadline dl);
/* Back to ST_CMD after a hook's answer, unless closing; reads on. */
void sess_resume(struct session *s);
/* Flushes what is queued, then frees; reads nothing more. */
void session_close(struct session *s);
/* Frees now, or marks dead while a hook is working for the session. */
void session_free(struct session *s);
void sess_on_read(struct bufferevent *bev, void *arg);
void sess_on_write(struct bufferevent *bev, void *arg);
void sess_on_event(struct bufferevent *bev, short what, void *arg);

/* ---- server_cmd.c -------------------------------------------------------- */

/* Reads and handles what the input holds, in the session's state. */
void session_process(struct session *s);

/* ---- server_data.c ------------------------------------------------------- */

/* The commands once the table's preconditions and checks passed (server_cmd.c):
 * DATA; BDAT of a chunk of n octets (it answers a missing RCPT itself: the
 * chunk is read all the same). */
void sess_cmd_data(struct session *s);
void sess_cmd_bdat(struct session *s, uint64_t n, bool last);
/* DATA or BDAT text from the input; true when more may follow. */
bool sess_feed_data(struct session *s, struct evbuffer *in);

/* ---- server_auth.c ------------------------------------------------------- */

/* STARTTLS and AUTH once the table's preconditions passed (server_cmd.c):
 * STARTTLS is offered and TLS is not on; AUTH is offered, TLS is on, the
 * session greeted, not authenticated and outside a transaction. */
void sess_cmd_starttls(struct session *s);
void sess_cmd_auth(struct session *s, const char *args);
/* A SASL response line (state ST_AUTH). */
void sess_auth_response(struct session *s, const char *line);
/* The AUTH failure tables of a new server, after its configuration. */
void sess_auth_tables(struct smtp_server *srv);

#endif
