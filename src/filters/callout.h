/*
 * callout.h - the callouts (RFC 4496 "OPES SMTP use cases"): the clamd
 * antivirus and the milter filters of pecd.conf, run on one message.
 *
 *   callout.c  which callouts a message gets (consent, RFC 3238 §2.1), the
 *              incoming phase (verdict, modifications, trace) and the
 *              outgoing phase (header additions such as DKIM-Signature)
 *   stage.c    the callout stage of pecd: a thread pool between the end of
 *              DATA and the queue commit (callout_stage_*)
 *
 * Tracing (RFC 3238 §2.3, RFC 3914): every callout that acted is named in
 * an OPES-Trace header field added on top of the message (outer header, so
 * never inside signed PEC content), in the log and, for PEC, in the
 * evidence log.
 *
 * Purpose: pecd's msg_filter hook submits to the stage; the transport
 * (src/provider/transport.c) runs the outgoing phase on what it sends.
 * Threads: callouts_new/free, callout_stage_new/set_config/submit/free on
 * the event loop (the replaced callouts are retired, lib/config.h); the
 * stage runs jobs on its own threads ([callouts] workers) and calls done
 * back on the event loop; callouts_incoming and callouts_outgoing on any
 * thread (they block on clamd and the milters, each bounded by its timeout).
 * Ownership: struct callout_msg borrows its strings for the call; a result's
 * data, envelope changes and refusals are malloc'ed (callout_result_free);
 * *out of callouts_outgoing and callout_add_trace's result are the caller's
 * (free); the stage borrows cfg and evidence.
 * Errors: the verdict and a whole SMTP reply (REFUSE: 4xx or 5xx); a filter
 * that cannot be reached gets its configured default (tempfail, accept,
 * reject) and is logged; callouts_outgoing -1 with the reply in err.
 */
#ifndef PEC_FILTERS_CALLOUT_H
#define PEC_FILTERS_CALLOUT_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct event_base;

#define CALLOUT_TRACE_HEADER "OPES-Trace"
#define CALLOUT_TRACE_MAX 1024

/* The facts of one message (strings owned by the caller). */
struct callout_msg {
    const char *qid;
    const char *listener;        /* "mx", "submission", … or NULL (locally produced) */
    const char *client_ip;       /* NULL for locally produced mail */
    const char *helo;
    const char *tls;             /* "TLSv1.3 CIPHER" or NULL */
    const char *auth_user;
    const char *auth_type;       /* SASL mechanism ("PLAIN", "LOGIN"), or NULL */
    const char *sender;
    const char *const *rcpts;
    size_t nrcpts;
    /* PEC: every change but added outer header fields is refused, and a
     * virus is accepted and tagged (the roles answer with receipts) */
    bool pec;
};

enum callout_verdict { CALLOUT_ACCEPT, CALLOUT_REFUSE, CALLOUT_DISCARD, CALLOUT_QUARANTINE };

struct callout_result {
    enum callout_verdict verdict;
    char reply[512];             /* REFUSE: the full SMTP reply */
    char virus[128];             /* virus name found ("" none); PEC: accepted and tagged */
    char quarantine[256];        /* QUARANTINE: the reason */
    char trace[CALLOUT_TRACE_MAX];   /* "antivirus=clean, dkim=accept+headers" ("" none ran) */
    bool unscanned;              /* the scanner failed and fail_open let it through */
    char *data;                  /* the changed message (malloc'ed), or NULL: unchanged */
    size_t len;
    /* envelope changes (non-PEC only): new sender, added and removed recipients */
    char *new_sender;
    char **add_rcpts, **del_rcpts;
    size_t nadd, ndel;
    /* recipients a filter refused with a 5xx (non-PEC, not every one): the
     * message goes to the others, these fail with the reply and the sender
     * is notified (a 4xx for one makes the whole message wait: REFUSE) */
    struct callout_refusal {
        char *rcpt;
        char reply[512];
    } *refused;
    size_t nrefused;
};
void callout_result_free(struct callout_result *r);

struct callouts;
struct callouts *callouts_new(const struct config *cfg);
void callouts_free(struct callouts *c);
/* Does anything run in phase (CONFIG_PHASE_*)? */
bool callouts_any(const struct callouts *c, unsigned phase);

/* Is callout name enabled for this message: by the sender's policy or by one
 * recipient's ([callouts]; antivirus by default)? */
bool callout_consented(const struct config *cfg, const char *name, const char *sender,
                       const char *const *rcpts, size_t nrcpts);
/* Is name in the comma/space separated list? */
bool callout_list_has(const char *list, const char *name);

/* The incoming phase on a complete message (any thread). */
void callouts_incoming(struct callouts *c, const struct callout_msg *m, const char *data,
                       size_t len, struct callout_result *res);
/* The outgoing phase on a message we relay (our envelopes, receipts, relayed
 * mail): only added header fields are kept.  0 with *out (malloc'ed) the
 * message to send, or -1 with the SMTP reply to defer or fail it in err
 * (a filter's default is reject or tempfail). */
int callouts_outgoing(struct callouts *c, const struct callout_msg *m, const char *data,
                      size_t len, char **out, size_t *outlen, char *err, size_t errlen);

/* Prepends "OPES-Trace: by HOST; TRACE" to data; malloc'ed. */
char *callout_add_trace(const char *host, const char *trace, const char *data, size_t len,
                        size_t *outlen);

/* ---- the stage (stage.c) ---------------------------------------------------- */
struct callout_stage;
/* evidence may be NULL */
struct evidence;
/* Reload: the callouts of cfg (the old ones retired, lib/config.h); true
 * when some apply to incoming mail (pecd installs its filter hook then). */
bool callout_stage_set_config(struct callout_stage *s, const struct config *cfg);
struct callout_stage *callout_stage_new(struct event_base *base, const struct config *cfg,
                                        struct evidence *ev);
bool callout_stage_active(const struct callout_stage *s);
/* Runs the incoming callouts on the finished spool file incoming/<name> (a
 * worker thread reads it, and rewrites it when the message changed or
 * callouts acted: trace header and a callout record), then calls done on
 * the event loop with the verdict and the SMTP reply. */
typedef void (*callout_stage_done)(void *arg, enum callout_verdict v, const char *reply);
void callout_stage_submit(struct callout_stage *s, const char *spool_name, callout_stage_done done,
                          void *arg);
/* Waits for running jobs; results not yet delivered are dropped. */
void callout_stage_free(struct callout_stage *s);

#endif
