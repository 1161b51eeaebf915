/*
 * client.h - the SMTP/LMTP client (client.c): one connection to one next hop,
 * driven step by step by a delivery thread with blocking I/O and a timeout on
 * every read and write (RFC 5321 §4.5.3.2).  One transaction per call to
 * smtp_client_send(); the connection can then be reused (RSET) for the next
 * message to the same destination.
 *
 * Purpose: the outbound transport (src/provider/transport.c) relays with it
 * and delivers to LMTP; the tests drive it against real servers.
 * Threads: a connection belongs to one thread at a time (a delivery thread,
 * or the thread that took it from the transport's idle pool); it blocks for
 * at most opts->timeout seconds per read or write.  No shared state.
 * Ownership: the client copies struct smtp_client_opts but not what it
 * points to: helo, tls_ctx, tls_name, tlsa and the credentials must outlive
 * the connection.  A message's strings and data are borrowed for the call;
 * the replies are written into the caller's structs.  smtp_client_close
 * frees the connection.
 * Errors: open gives NULL and send -1 with *fail set (code 4xx = try later,
 * 5xx = permanent; a local failure is described as such a reply); a
 * recipient's fate is its own reply; reset and alive give false when the
 * connection is no longer usable.
 */
#ifndef PEC_SMTP_CLIENT_H
#define PEC_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ssl_ctx_st SSL_CTX;

/* TLS policy of a destination (the names follow Postfix's smtp_tls_security_level). */
enum tls_policy { TLSP_NONE, TLSP_MAY, TLSP_ENCRYPT, TLSP_VERIFY, TLSP_DANE };
int tls_policy_parse(const char *s, enum tls_policy *out);
const char *tls_policy_name(enum tls_policy p);

/* What the server offered after (the last) EHLO. */
enum {
    EXT_PIPELINING = 1 << 0, EXT_SIZE = 1 << 1, EXT_8BITMIME = 1 << 2, EXT_SMTPUTF8 = 1 << 3,
    EXT_DSN = 1 << 4, EXT_STARTTLS = 1 << 5, EXT_AUTH_PLAIN = 1 << 6, EXT_AUTH_LOGIN = 1 << 7,
    EXT_REQUIRETLS = 1 << 8, EXT_CHUNKING = 1 << 9, EXT_ENHANCED = 1 << 10,
};

/* A TLSA record (RFC 6698) found over DNSSEC, for DANE (RFC 7672). */
struct tlsa_rec {
    unsigned char usage, selector, mtype;
    unsigned char data[64];
    size_t len;
};

struct smtp_client_opts {
    const char *helo;            /* our name */
    bool lmtp;                   /* LHLO, one reply per recipient after DATA (RFC 2033) */
    enum tls_policy tls;
    SSL_CTX *tls_ctx;            /* client context; for VERIFY it holds the trust anchors */
    const char *tls_name;        /* name the certificate must match (VERIFY) */
    const struct tlsa_rec *tlsa; /* DANE: the next hop's TLSA records */
    size_t ntlsa;
    const char *auth_user;       /* AUTH PLAIN when set (only over TLS) */
    const char *auth_pass;
    unsigned timeout;            /* seconds per read or write */
};

/* A reply, or our own description of a local failure (code 4xx/5xx set). */
struct smtp_reply {
    int code;                    /* 250, 451, …; 0 = not set */
    char text[512];              /* "5.1.1 <x>: no such user" (first line, no code) */
};

/* ---- a server's reply, line by line (reply.c) ------------------------------ */
#define SMTP_REPLY_MAX_LINES 100     /* a longer reply is refused */
struct smtp_reply_reader {
    struct smtp_reply *r;        /* code and text of the first line */
    bool ehlo;                   /* record the EHLO keywords of the lines after it */
    unsigned ext;                /* EXT_* offered */
    uint64_t max_size;           /* SIZE's value; 0 = none */
    unsigned lines;
};
enum smtp_reply_step {
    SMTP_REPLY_MORE,             /* a "ddd-" line: more follow */
    SMTP_REPLY_DONE,             /* the last line: *r is set */
    SMTP_REPLY_MALFORMED,        /* not "ddd", "ddd SP text" or "ddd-text" (2xx to 5xx) */
    SMTP_REPLY_TOO_LONG,         /* SMTP_REPLY_MAX_LINES lines and no end */
};
void smtp_reply_start(struct smtp_reply_reader *rr, struct smtp_reply *r, bool ehlo);
/* One line of the reply, without its line end. */
enum smtp_reply_step smtp_reply_line(struct smtp_reply_reader *rr, const char *line);

struct smtp_client_rcpt {
    const char *addr;
    unsigned notify;             /* SMTP_NOTIFY_* (smtp.h) */
    const char *orcpt;           /* "rfc822;addr" or NULL */
    struct smtp_reply reply;     /* filled: RCPT reply, or the DATA reply */
};

struct smtp_client_msg {
    const char *sender;
    uint64_t size;
    bool eightbit;               /* BODY=8BITMIME */
    bool smtputf8;
    bool requiretls;             /* RFC 8689: sent only if offered, else refused */
    int ret;                     /* 0, 1 FULL, 2 HDRS */
    const char *envid;
    const char *data;            /* the message, CRLF lines, not dot-stuffed */
    size_t len;
    struct smtp_client_rcpt *rcpts;
    size_t nrcpts;
};

struct smtp_client;
/* Connects to addr:port, reads the greeting, EHLO/LHLO, STARTTLS as the
 * policy says, AUTH when configured.  NULL on failure with *fail set
 * (code 4xx = try later, 5xx = permanent, e.g. a TLS policy failure). */
struct smtp_client *smtp_client_open(const char *host, const char *addr, const char *port,
                                     const struct smtp_client_opts *opts,
                                     struct smtp_reply *fail);
unsigned smtp_client_extensions(const struct smtp_client *c);
bool smtp_client_tls_verified(const struct smtp_client *c);
bool smtp_client_dane_verified(const struct smtp_client *c);
const char *smtp_client_tls_info(const struct smtp_client *c);   /* "TLSv1.3 CIPHER" or "" */
/* One transaction.  Returns 0 when the transaction completed (each recipient's
 * reply says whether it was accepted), -1 when the whole transaction failed
 * (*fail says why; the connection must be closed). */
int smtp_client_send(struct smtp_client *c, struct smtp_client_msg *m, struct smtp_reply *fail);
/* Readies the connection for the next transaction: RSET if the last one may
 * have left a transaction open on the server (refused recipients, a refused
 * DATA), nothing after a transaction that ended with the reply to its
 * message.  false if the connection is no longer usable. */
bool smtp_client_reset(struct smtp_client *c);
/* RSET as a probe of a connection that sat idle (the server may have closed
 * it); false if it is no longer usable. */
bool smtp_client_alive(struct smtp_client *c);
/* Whether the last smtp_client_send() began sending the message itself: if
 * not, a failure left nothing on the server and the message may be sent again
 * at once on another connection. */
bool smtp_client_data_sent(const struct smtp_client *c);
void smtp_client_close(struct smtp_client *c, bool quit);

#endif
