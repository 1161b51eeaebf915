/*
 * smtp.h - the SMTP protocol engine: parsers (pure, table-tested, fuzzed) and
 * the server session (server.c, server_cmd.c, server_data.c, server_auth.c)
 * on libevent bufferevents with OpenSSL.
 *
 * The server knows nothing of queues, users or PEC: it calls the hooks in
 * struct smtp_hooks (check a recipient, check credentials, open/commit a
 * spool file), so each layer above can be tested on its own.
 */
#ifndef PEC_SMTP_H
#define PEC_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 §4.5.3.1: 512 for a command line; MAIL and RCPT grow with the
 * extensions' parameters (RFC 1870, 3461, 6531), so they get more room. */
#define SMTP_CMD_LINE_MAX 512
#define SMTP_PATH_LINE_MAX 2048
#define SMTP_PATH_MAX 256            /* RFC 5321 §4.5.3.1.3 */
#define SMTP_MAX_PARAMS 16

/* ---- line reader (parse.c) ------------------------------------------------ */
enum smtp_line_result {
    SMTP_LINE_NEED_MORE,   /* no complete line yet */
    SMTP_LINE_OK,          /* a line of *linelen octets (CRLF excluded) */
    SMTP_LINE_TOO_LONG,    /* a line over the limit was consumed (up to its CRLF) */
    SMTP_LINE_BARE_LF,     /* a line ended by LF alone was consumed */
};
struct smtp_line_reader {
    bool discarding;       /* inside an over-long line, skipping to its end */
};
/* Examines buf[0..len): returns what it found and sets *consumed (octets to
 * drop from the input, CRLF included) and *linelen.  With too much input and
 * no line end it consumes what it has and keeps discarding. */
enum smtp_line_result smtp_line_next(struct smtp_line_reader *r, const char *buf, size_t len,
                                     size_t max, size_t *linelen, size_t *consumed);

/* ---- commands (parse.c) --------------------------------------------------- */
enum smtp_verb {
    SMTP_V_UNKNOWN, SMTP_V_HELO, SMTP_V_EHLO, SMTP_V_MAIL, SMTP_V_RCPT, SMTP_V_DATA,
    SMTP_V_BDAT, SMTP_V_RSET, SMTP_V_NOOP, SMTP_V_QUIT, SMTP_V_VRFY, SMTP_V_EXPN,
    SMTP_V_HELP, SMTP_V_STARTTLS, SMTP_V_AUTH, SMTP_V_HTTP,
};
struct smtp_command {
    enum smtp_verb verb;
    const char *args;      /* points into the line, after the verb and one SP; "" if none */
};
/* line must be NUL-terminated (the CRLF removed). */
void smtp_command_parse(const char *line, struct smtp_command *out);

struct smtp_param {
    char *key;             /* upper-cased */
    char *value;           /* NULL for keyword-only parameters */
};
struct smtp_path {
    char addr[SMTP_PATH_MAX + 1];  /* "" for the null path <> */
    char *local;           /* points into a private copy: local part */
    char *domain;          /* domain or NULL (e.g. <postmaster>) */
    bool utf8;             /* non-ASCII octets present */
    struct smtp_param params[SMTP_MAX_PARAMS];
    size_t nparams;
    char buf[SMTP_PATH_LINE_MAX + 1];   /* storage for local/domain/params */
};
enum smtp_path_error {
    SMTP_PATH_OK,
    SMTP_PATH_SYNTAX,      /* 501 */
    SMTP_PATH_TOO_LONG,    /* 501 */
    SMTP_PATH_TOO_MANY_PARAMS,
};
/* Parses "FROM:<a@b> PARAMS" (prefix "FROM:") or "TO:<…>".  A source route
 * (<@x,@y:a@b>) is accepted and ignored (RFC 5321 §4.1.2, App. C).  The null
 * path is allowed only when allow_null. */
enum smtp_path_error smtp_path_parse(const char *args, const char *prefix, bool allow_null,
                                     struct smtp_path *out);
/* RFC 3461 §4: xtext decoding in place; -1 when malformed. */
int smtp_xtext_decode(char *s);
/* Is s a valid ESMTP domain or address literal? (RFC 5321 §4.1.2) */
bool smtp_domain_valid(const char *s, bool utf8);

/* ---- DATA un-stuffing (data.c) ------------------------------------------- */
enum smtp_data_state { SD_BOL, SD_TEXT, SD_CR, SD_DOT, SD_DOT_CR, SD_DONE };
struct smtp_data {
    enum smtp_data_state state;
    bool raw;              /* BDAT: no dot-stuffing, no end marker */
    bool bare_lf, bare_cr, nul, line_too_long, too_big;
    uint64_t size;         /* octets of message produced so far */
    uint64_t max_size;
    size_t line_len;
    size_t max_line;       /* text line limit, CRLF included; 0 = none */
};
void smtp_data_init(struct smtp_data *d, bool raw, uint64_t max_size, size_t max_line);
/* Consumes input up to and including the end marker "\r\n.\r\n" (DATA) or
 * all of it (BDAT); writes the un-stuffed message octets to out (capacity >=
 * len + 1: a CR held back at the end of one call comes out in the next) and
 * sets *outlen.  Returns the number of input octets consumed.  Only
 * CRLF ends a line: a bare LF or CR never ends the data (anti-smuggling);
 * it is flagged and the message must then be refused. */
size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len, char *out,
                      size_t *outlen);
bool smtp_data_done(const struct smtp_data *d);
/* After the end (or after the last BDAT chunk): 0 if the message may be
 * accepted, else a full SMTP reply explaining why not. */
const char *smtp_data_verdict(const struct smtp_data *d);

/* ---- AUTH helpers (auth.c) ------------------------------------------------ */
/* Decodes base64 (RFC 4648, padding required) into out (NUL-terminated);
 * returns decoded length or -1. */
int smtp_base64_decode(const char *in, char *out, size_t outlen);
int smtp_base64_encode(const void *in, size_t len, char *out, size_t outlen);
/* Splits an RFC 4616 PLAIN message authzid\0authcid\0passwd. */
int smtp_sasl_plain_split(const char *msg, size_t len, const char **authzid,
                          const char **authcid, const char **passwd);

/* ---- authentication failure counts (throttle.c) -------------------------- */
/* Failures per key (client address or account) within a fixed window from
 * the key's first failure; at most max_entries keys (the oldest goes first).
 * Times are milliseconds of any monotonic clock. */
struct smtp_throttle;
struct smtp_throttle *smtp_throttle_new(size_t max_entries, int64_t window_ms);
void smtp_throttle_free(struct smtp_throttle *t);
/* Failures of key in its current window (0: none, or the window passed). */
unsigned smtp_throttle_count(struct smtp_throttle *t, const char *key, int64_t now_ms);
/* Records a failure of key; returns its count in the window, this one included. */
unsigned smtp_throttle_fail(struct smtp_throttle *t, const char *key, int64_t now_ms);
/* Adds n events at once (the recipients of a message); the count after. */
unsigned smtp_throttle_add(struct smtp_throttle *t, const char *key, unsigned n, int64_t now_ms);
/* Forgets key (e.g. an account after a successful login). */
void smtp_throttle_clear(struct smtp_throttle *t, const char *key);
size_t smtp_throttle_size(const struct smtp_throttle *t);
/* The key that stands for a client address: an IPv4 address as it is (also
 * when IPv4-mapped), an IPv6 address by its /64 ("2001:db8:1:2::/64"). */
#define SMTP_CLIENT_KEY_MAX 64
void smtp_client_key(const char *ip, char *out, size_t outlen);

#endif

/* ---- the server (server.c, tls.c) ----------------------------------------- */
struct event_base;
struct config;
struct config_listener;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct evp_pkey_st EVP_PKEY;

enum { SMTP_NOTIFY_SUCCESS = 1, SMTP_NOTIFY_FAILURE = 2, SMTP_NOTIFY_DELAY = 4,
       SMTP_NOTIFY_NEVER = 8 };
enum smtp_body { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
enum smtp_ret { SMTP_RET_NONE, SMTP_RET_FULL, SMTP_RET_HDRS };

struct smtp_rcpt {
    char *addr;            /* the mailbox we deliver to (after postmaster mapping) */
    char *orig;            /* as the client gave it */
    unsigned notify;       /* SMTP_NOTIFY_*; 0 = not given (RFC 3461 default) */
    char *orcpt;           /* "addr-type;xtext-decoded address" or NULL */
};

/* One mail transaction and the facts of its session, handed to the hooks. */
struct smtp_txn {
    char sender[SMTP_PATH_MAX + 1];
    uint64_t size_hint;
    enum smtp_body body;
    enum smtp_ret ret;
    bool smtputf8;
    bool requiretls;       /* RFC 8689: MAIL … REQUIRETLS */
    char envid[101];       /* RFC 3461 §4.4, decoded; "" if none */
    struct smtp_rcpt *rcpts;
    size_t nrcpts;
    size_t cap;
    /* the session */
    const char *listener;
    const char *client_ip;
    const char *helo;
    const char *auth_user; /* NULL unless authenticated */
    const char *auth_mech; /* the SASL mechanism used ("PLAIN", "LOGIN"), NULL unless authenticated */
    const char *tls_version;   /* NULL on cleartext */
    const char *tls_cipher;
    const char *proto;     /* ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS, … */
};

enum smtp_filter_verdict { SMTP_FILTER_ACCEPT, SMTP_FILTER_REFUSE, SMTP_FILTER_DISCARD };
typedef void (*smtp_filter_done)(void *cbarg, enum smtp_filter_verdict verdict,
                                 const char *reply);

struct smtp_hooks {
    void *arg;
    /* AUTH: 0 ok, -1 wrong credentials, -2 temporary failure */
    int (*auth)(void *arg, const char *user, const char *pass);
    /* Optional, used instead of auth when set: starts the check and calls
     * done(cbarg, result, canonical) later from the event loop (result as for
     * auth; canonical: the account's name as the users source settled it, or
     * NULL to keep the one the client gave).  The session reads nothing
     * until then. */
    void (*auth_start)(void *arg, const char *user, const char *pass, const char *client_ip,
                       void (*done)(void *cbarg, int result, const char *canonical),
                       void *cbarg);
    /* MAIL: 0 ok, else *reply holds the full refusal */
    int (*mail)(void *arg, const struct smtp_txn *txn, char *reply, size_t replylen);
    /* RCPT: 0 ok and addr_out is the mailbox to deliver to; else reply */
    int (*rcpt)(void *arg, const struct smtp_txn *txn, const struct smtp_path *path,
                char *addr_out, size_t addrlen, char *reply, size_t replylen);
    /* DATA/BDAT: opens a spool file for txn; qid receives its id */
    void *(*msg_open)(void *arg, const struct smtp_txn *txn, char *qid, size_t qidlen);
    int (*msg_write)(void *msg, const void *buf, size_t len);
    void (*msg_abort)(void *msg);
    /* Makes the message durable, then calls done(cbarg, 0) (or -1) from the
     * event loop.  Only then may the server answer 250. */
    void (*msg_commit)(void *msg, void (*done)(void *cbarg, int result), void *cbarg);
    /* Optional: looks at the header section of a complete message (up to
     * SMTP_HEAD_MAX octets) before it is stored; 0 accepts, else *reply
     * holds the refusal. */
    int (*msg_check)(void *arg, const struct smtp_txn *txn, const char *head, size_t len,
                     char *reply, size_t replylen);
    /* Optional: the callout stage (content filters), run on a complete
     * message after msg_check and before msg_commit.  It must not block: it
     * calls done(cbarg, verdict, reply) later, on the event loop.  ACCEPT:
     * the server goes on to msg_commit; REFUSE: reply (4xx or 5xx) is
     * answered and the message aborted; DISCARD: the message is aborted and
     * reply (a 250) answered.  The server knows nothing of what ran. */
    void (*msg_filter)(void *msg, const struct smtp_txn *txn, smtp_filter_done done,
                       void *cbarg);
};
#define SMTP_HEAD_MAX 16384

struct smtp_server;
/* The server's TLS context for the certificate chain chain_pem (PEM, the
 * server's certificate first) and its private key (a reference is taken). */
SSL_CTX *smtp_tls_server_ctx_key(const char *chain_pem, size_t chain_len, EVP_PKEY *key,
                                 int min_version, const char *ciphers, char *err, size_t errlen);
/* Binds every address of listener l (as root, before the privileges are
 * dropped): the sockets in fds (at most CONFIG_MAX_ADDRS), their number in *n.
 * They listen once smtp_server_listen_fds adopts them: a client that can
 * connect finds pecd ready. */
int smtp_listen_bind(const struct config_listener *l, int *fds, size_t *n, char *err,
                     size_t errlen);
/* Attaches to ctx the certificates of the local domains that have one,
 * chosen by SNI (tls.c): make(arg, cert, key, ...) builds each one's context
 * (pecd: the signer holds the keys); -1 with "FILE:LINE: domain: reason"
 * when one does not load.  The contexts live as long as ctx. */
struct domains;
typedef SSL_CTX *(*smtp_tls_ctx_fn)(void *arg, const char *cert, const char *key, char *err,
                                    size_t errlen);
int smtp_tls_sni(SSL_CTX *ctx, const struct domains *t, smtp_tls_ctx_fn make, void *arg,
                 char *err, size_t errlen);
struct smtp_server *smtp_server_new(struct event_base *base, const struct config *cfg,
                                    const struct smtp_hooks *hooks, SSL_CTX *tls);
int smtp_server_listen(struct smtp_server *srv, const struct config_listener *l, char *err,
                       size_t errlen);
/* The same with the sockets smtp_listen_bind made (one per address of l). */
int smtp_server_listen_fds(struct smtp_server *srv, const struct config_listener *l,
                           const int *fds, size_t n, char *err, size_t errlen);
/* Stops accepting; idle sessions get 421 now, busy ones after their transaction. */
void smtp_server_drain(struct smtp_server *srv);
size_t smtp_server_sessions(const struct smtp_server *srv);
void smtp_server_set_tls(struct smtp_server *srv, SSL_CTX *tls);
/* The hooks in use (a reload installs or removes msg_filter). */
struct smtp_hooks *smtp_server_hooks(struct smtp_server *srv);
/* Reload: the server reads cfg from now on (limits, timeouts, relay
 * networks, host name), open sessions too.  cfg->listeners must be those the
 * server listens on, in the same order (pecd keeps them: a change of
 * address needs a restart). */
void smtp_server_set_config(struct smtp_server *srv, const struct config *cfg);
/* Sessions open on the i-th listener (and its name); (size_t)-1 past the last. */
size_t smtp_server_open(const struct smtp_server *srv, size_t i, const char **name);
void smtp_server_free(struct smtp_server *srv);
