/*
 * milter.h - a Sendmail milter client (protocol version 6, negotiated down to
 * 2), used by the callout stage (src/filters) on incoming mail and on what
 * pecd sends out.  One call runs a whole conversation for one message over one
 * connection (connect, helo, mail, rcpt, data, headers, eoh, body, eom, quit),
 * honouring the protocol flags the filter asked for (SMFIP_NO*, SMFIP_NR_*),
 * and returns the filter's verdict and the modifications it asked for.
 *
 * Purpose: callout.c runs each [milter.NAME] through milter_run and applies
 * what it returns with milter_apply (milter_apply.c).
 * Threads: any thread (no shared state); a conversation blocks, bounded by
 * the spec's connect, I/O and end-of-message timeouts.
 * Ownership: facts and msg are borrowed for the call; the result's
 * modifications and refusals are malloc'ed (milter_result_free);
 * milter_apply's *out is the caller's; milter_run_fd leaves fd open.
 * Errors: milter_run returns 0 with the action; MILTER_FAILED (unreachable,
 * protocol error, timeout) carries the reason in res->err and the caller
 * applies its default; parse and apply return -1 with the reason in err.
 */
#ifndef PEC_MILTER_H
#define PEC_MILTER_H

#include <stdbool.h>
#include <stddef.h>

struct milter_spec {
    char name[64];                 /* operator's name, for logs and trace headers */
    char socket[256];              /* "unix:/path" or "inet:PORT@HOST" or "inet:HOST:PORT" */
    unsigned connect_timeout_ms;
    unsigned io_timeout_ms;        /* each read/write */
    unsigned eom_timeout_ms;       /* wait for the end-of-message answer */
};
/* Parses "unix:/p" / "inet:PORT@HOST" / "inet:HOST:PORT"; 0 or -1 with reason. */
int milter_spec_parse(struct milter_spec *s, const char *name, const char *socket, char *err,
                      size_t errlen);

/* The facts a filter receives (as macros too: j, {daemon_name}, _, {client_addr},
 * {client_port}, {if_addr}, i (queue id), {auth_authen}, {auth_type}, {tls_version},
 * {cipher}, {cipher_bits}, {mail_addr}, {rcpt_addr}, {mail_host} ...). */
struct milter_facts {
    const char *hostname;          /* our host name (macro j) */
    const char *queue_id;          /* macro i */
    const char *client_ip;         /* "127.0.0.1" or "::1"; NULL for locally produced mail */
    unsigned client_port;
    const char *client_name;       /* reverse name or "[ip]" */
    const char *helo;
    const char *tls_version;       /* NULL: no TLS */
    const char *tls_cipher;
    const char *auth_user;         /* NULL: not authenticated */
    const char *sender;            /* reverse path without <>; "" for the null path */
    const char *const *rcpts;      /* forward paths without <> */
    size_t nrcpts;
    /* optional, added after the fixed API (NULL / 0: macro not sent) */
    const char *daemon_name;       /* {daemon_name}, e.g. the listener's name ("mx") */
    const char *if_addr;           /* {if_addr}: our address on the connection */
    const char *auth_type;         /* {auth_type}: SASL mechanism, e.g. "PLAIN" */
    unsigned tls_cipher_bits;      /* {cipher_bits} */
};

enum milter_action {
    MILTER_ACCEPT,                 /* accept / continue to the end */
    MILTER_REJECT,                 /* 5xx (reply holds it) */
    MILTER_TEMPFAIL,               /* 4xx (reply holds it) */
    MILTER_DISCARD,                /* accept and drop silently */
    MILTER_QUARANTINE,             /* accept, hold; reason in quarantine_reason */
    MILTER_FAILED,                 /* filter unreachable / protocol error / timeout: err says why;
                                      the caller applies its configured default */
};

enum milter_mod_kind {
    MILTER_MOD_ADD_HEADER,         /* SMFIR_ADDHEADER: name, value, appended */
    MILTER_MOD_INSERT_HEADER,      /* SMFIR_INSHEADER: index, name, value */
    MILTER_MOD_CHANGE_HEADER,      /* SMFIR_CHGHEADER: index (1-based occurrence of name), value ("" deletes) */
    MILTER_MOD_REPLACE_BODY,       /* SMFIR_REPLBODY: data/len (chunks concatenated) */
    MILTER_MOD_ADD_RCPT,           /* SMFIR_ADDRCPT(_PAR): value = address */
    MILTER_MOD_DEL_RCPT,           /* SMFIR_DELRCPT: value = address */
    MILTER_MOD_CHANGE_FROM,        /* SMFIR_CHGFROM: value = address */
};
struct milter_mod {
    enum milter_mod_kind kind;
    unsigned index;
    char *name;
    char *value;
    char *data;                    /* body replacement */
    size_t len;
};

/* A recipient the filter refused at RCPT (REJECT or TEMPFAIL for that one). */
struct milter_refusal {
    size_t rcpt;                   /* index into facts->rcpts */
    int smtp_code;                 /* 5xx or 4xx */
    char reply[512];
};

struct milter_result {
    enum milter_action action;
    int smtp_code;                 /* from SMFIR_REPLYCODE or the default 550/451; 0 for accept */
    char reply[512];               /* full reply line, e.g. "550 5.7.1 Command rejected" */
    char quarantine_reason[256];
    struct milter_mod *mods;
    size_t nmods;
    char err[256];                 /* for MILTER_FAILED */
    /* added after the fixed API */
    struct milter_refusal *refused; /* recipients refused at RCPT; when all are, the
                                       message is rejected (action REJECT/TEMPFAIL) */
    size_t nrefused;
    unsigned version;              /* negotiated protocol version (2..6) */
    unsigned actions;              /* SMFIF_* the filter asked for */
    unsigned protocol;             /* SMFIP_* the filter asked for */
};

/* Runs one conversation: msg is the whole message (header + CRLF CRLF + body, CRLF
 * lines, no dot-stuffing).  Returns 0 with *res filled (action may be MILTER_FAILED). */
int milter_run(const struct milter_spec *spec, const struct milter_facts *facts, const char *msg,
               size_t len, struct milter_result *res);
/* The same over a socket the caller connected (tests, pools); fd stays open. */
int milter_run_fd(const struct milter_spec *spec, int fd, const struct milter_facts *facts,
                  const char *msg, size_t len, struct milter_result *res);
void milter_result_free(struct milter_result *res);
/* "accept", "reject", "tempfail", "discard", "quarantine", "failed". */
const char *milter_action_name(enum milter_action a);

/* Applies the header and body modifications of res to msg into a new buffer (*out, malloc'd).
 * With signed_pec=true, only ADD_HEADER/INSERT_HEADER of new top-level header fields are
 * allowed (as DKIM does); any other change fails with -1 and err naming the refused change,
 * and nothing is applied.  Envelope changes (ADD/DEL_RCPT, CHANGE_FROM) are returned by the
 * caller's own logic, not applied here. */
int milter_apply(const struct milter_result *res, const char *msg, size_t len, bool signed_pec,
                 char **out, size_t *outlen, char *err, size_t errlen);

#endif
