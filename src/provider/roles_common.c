/*
 * roles_common.c - the helpers the three PEC roles share (roles_int.h): the
 * evidence log's events (with the stage's instant, §4.1), message
 * identifiers that a stage run again makes the same, the outputs of a stage
 * (they inherit the source's REQUIRETLS, RFC 8689 §6), building and signing
 * (src/pec), copies for our own mailboxes, mailboxes that do not exist.
 *
 * Called by roles.c (the dispatch and the timeout notices), roles_access.c
 * and roles_incoming.c; calls none of them.
 */
#include "lib/metrics.h"
#include "roles_int.h"
#include "transport.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "pec/pec.h"
#include "store/store.h"
#include "store/tracking.h"
#include "store/evidence.h"

#include <errno.h>
#include <glib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The instant of the stage this thread runs (roles_process), 0 outside one:
 * its events carry the time of the messages they describe. */
static __thread time_t stage_when;

/* One event of the evidence log (§2.3).  Keyed by queue id, type and
 * recipient, so a stage run again after a crash does not log twice.  With
 * the log's deferred mode (r->ev_deferred) it is durable with the stage
 * (the queue's syncfs before the stage's outputs are committed); otherwise
 * before this returns.  Every caller runs in a stage. */
int role_event(struct roles *r, const struct role_ev *e, char *err, size_t errlen)
{
    if (r->ev == NULL)
        return 0;
    char dk[600], why[256];
    snprintf(dk, sizeof dk, "%s:%s:%s", e->qid, e->type, e->key ? e->key : "");
    char om[512] = "";
    if (e->orig_msgid) {
        str_copy(om, e->orig_msgid[0] == '<' ? e->orig_msgid + 1 : e->orig_msgid, sizeof om);
        char *gt = strchr(om, '>');
        if (gt)
            *gt = '\0';
    }
    struct evidence_event ee = {.type = e->type, .pec_id = e->pec_id,
                                .orig_msgid = om[0] ? om : NULL, .message_id = e->message_id,
                                .sender = e->sender, .recipients = e->rcpts,
                                .subject = e->subject, .outcome = e->outcome,
                                .queue_id = e->qid, .dedupe_key = dk,
                                .when = stage_when != 0 ? stage_when : time(NULL)};
    if ((r->ev_deferred ? evidence_append_deferred(r->ev, &ee, why, sizeof why)
                        : evidence_append(r->ev, &ee, why, sizeof why)) == -1) {
        log_err("%s: evidence log: %s", e->qid, why);
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "evidence log: %s", why);
        return -1;
    }
    return 0;
}

void role_set_instant(struct queue_outputs *out, time_t t)
{
    out->when = t;
    stage_when = t;
}

void role_clear_instant(void)
{
    stage_when = 0;
}

/* ---- helpers ------------------------------------------------------------------ */

void role_make_id(struct roles *r, char *buf, size_t size, time_t when)
{
    unsigned long n = atomic_fetch_add(&r->seq, 1);
    pec_make_msgid(buf, size, r->cfg->domain, when, n);
}

/* An identifier derived from source env's arrival and queue id (n > 0 adds
 * ".n"), so a stage run again after a crash makes the same ones. */
void role_source_id(struct roles *r, const struct queue_env *env, unsigned n, char *buf,
                    size_t size)
{
    char stamp[32], suffix[16] = "";
    struct tm tm;
    pec_legal_time(env->arrival, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
    if (n > 0)
        snprintf(suffix, sizeof suffix, ".%u", n);
    snprintf(buf, size, "opec1.%s.%s%s@%s", stamp, env->qid, suffix, r->cfg->domain);
}

/* The identifier of the next message a stage makes for source env: numbered
 * in the order the stage makes them, so each receipt gets the Message-ID the
 * evidence log recorded the first time. */
void role_stage_id(struct roles *r, const struct queue_env *env, struct queue_outputs *out,
                   char *buf, size_t size)
{
    role_source_id(r, env, ++out->ids, buf, size);
}

/* A message a role makes, from 'from' to to[], as an output of the stage
 * (queued: relayed, or run through 'stage').  src: the message it was made
 * from, whose RFC 8689 tag it inherits (requiretls), or NULL. */
void role_add_output_for(struct queue_outputs *out, const struct queue_env *src,
                         const char *from, const char *const *to, size_t nto, const char *stage,
                         const void *data, size_t len)
{
    struct queue_rcpt *rc = xcalloc(nto ? nto : 1, sizeof *rc);
    for (size_t i = 0; i < nto; i++) {
        rc[i].addr = (char *)to[i];
        rc[i].orig = (char *)to[i];
    }
    struct queue_env e = {.sender = (char *)from, .rcpts = rc, .nrcpts = nto,
                          .stage = (char *)stage, .listener = "pec", .proto = "local",
                          .requiretls = src != NULL && src->requiretls};
    queue_outputs_add(out, &e, data, len);
    free(rc);
}

/* A system message from posta-certificata@<domain> to one address. */
void role_add_output(struct queue_outputs *out, const char *from, const char *const *to,
                     size_t nto, const char *stage, const pec_buf *msg)
{
    role_add_output_for(out, NULL, from, to, nto, stage, msg->data, msg->len);
}

int role_build_n(struct roles *r, pec_build_args *a, size_t n, pec_buf *m, char *err,
                 size_t errlen)
{
    char e2[256];
    int64_t t0 = clock_us();
    if (pec_build_n(&r->id, a, n, m, e2, sizeof e2) == -1) {
        metric_inc(&metric_signatures, "sign", "error");
        snprintf(err, errlen, "cannot build %s: %s", pec_type_name(a[0].type), e2);
        return -1;
    }
    /* one observation a signature, as before batching: the batch's time shared */
    int64_t each = (clock_us() - t0) / (int64_t)n;
    for (size_t i = 0; i < n; i++) {
        metric_observe(&metric_signature_seconds, METRIC_OP_SIGN, each);
        metric_inc(&metric_signatures, "sign", "ok");
        metric_inc(&metric_pec_made, pec_type_name(a[i].type), NULL);
    }
    return 0;
}

int role_build(struct roles *r, pec_build_args *a, pec_buf *m, char *err, size_t errlen)
{
    return role_build_n(r, a, 1, m, err, errlen);
}

/* Copies of data for our own mailboxes to[], stored by the stage itself and
 * published at its commit point (no queue file, no second pass).  Named
 * after the source message, so a stage run again after a crash finds them. */
int role_store_copies(struct roles *r, const struct queue_env *src, bool recovered,
                      const char *sender, const char *const *to, size_t nto, const void *data,
                      size_t len, struct queue_outputs *out, char *err, size_t errlen)
{
    struct queue_rcpt *rc = xcalloc(nto ? nto : 1, sizeof *rc);
    for (size_t i = 0; i < nto; i++)
        rc[i].addr = rc[i].orig = (char *)to[i];
    struct queue_env e = {.arrival = src->arrival, .sender = (char *)sender, .rcpts = rc,
                          .nrcpts = nto, .name_base = (unsigned)(out->npubs + 1) << 16};
    memcpy(e.qid, src->qid, sizeof e.qid);
    int res = 0;
    for (size_t i = 0; i < nto && res == 0; i++)
        res = transport_store_local(r->transport, &e, i, data, len, recovered, out, err, errlen);
    free(rc);
    return res;
}

enum users_found role_mailbox(struct roles *r, const char *addr)
{
    /* RFC 5321 §4.5.1: postmaster always has a mailbox; so has the PEC
     * service address (receipts and notices for the provider itself) */
    if (strcasecmp(addr, r->cfg->postmaster) == 0 ||
        strcasecmp(addr, r->cfg->pec_service_address) == 0)
        return USERS_YES;
    return users_db_lookup(r->users, addr);
}

void role_refuse_unknown(const struct queue_env *src, const size_t *idx, size_t n,
                         const char *data, size_t len, struct queue_outputs *out)
{
    if (n == 0)
        return;
    struct queue_rcpt *rc = xcalloc(n, sizeof *rc);
    char **texts = xcalloc(n, sizeof *texts);
    if (rc == NULL || texts == NULL) {
        free(rc);
        free(texts);
        log_err("%s: out of memory: %zu unknown recipients not reported", src->qid, n);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        rc[k] = src->rcpts[idx[k]];
        texts[k] = g_strdup_printf("550 5.1.1 <%s>: no such mailbox here", rc[k].addr);
        rc[k].status = QR_REFUSED;
        rc[k].status_text = texts[k];
        log_info("%s: <%s>: no such mailbox: a non-delivery report goes to <%s>", src->qid,
                 rc[k].addr, src->sender[0] ? src->sender : "(null sender: none)");
    }
    /* no stage: the queue fails these recipients and sends the report */
    struct queue_env e = {.sender = src->sender, .rcpts = rc, .nrcpts = n, .body = src->body,
                          .ret = src->ret, .smtputf8 = src->smtputf8,
                          .requiretls = src->requiretls, .envid = src->envid,
                          .listener = "pec", .proto = "local"};
    queue_outputs_add(out, &e, data, len);
    for (size_t k = 0; k < n; k++)
        g_free(texts[k]);
    free(texts);
    free(rc);
}

/* A system message from our service address: our users get it straight into
 * the mailbox, others' are relayed.  A receipt made for a message that came
 * with REQUIRETLS is relayed with REQUIRETLS (RFC 8689 §6, reorigination):
 * a delivery receipt completa or breve carries the original, and every
 * receipt its metadata, which §5 protects as the original for
 * non-delivery reports. */
int role_send_to(struct roles *r, const struct queue_env *src, bool recovered,
                 struct queue_outputs *out, const char *to, const pec_buf *m, char *err,
                 size_t errlen)
{
    const char *rcpt[1] = {to};
    if (config_is_local_domain(r->cfg, domain_of(to)))
        return role_store_copies(r, src, recovered, r->cfg->pec_service_address, rcpt, 1, m->data,
                                 m->len, out, err, errlen);
    role_add_output_for(out, src, r->cfg->pec_service_address, rcpt, 1, NULL, m->data, m->len);
    return 0;
}

/* ---- callouts and viruses (RFC 6109 §3.1.3, §3.2.3, §3.2.4; src/filters) ------- */

/* The callouts that acted on a message (its REC_CALLOUT trace), in the
 * evidence log so `pecctl trace` shows them (RFC 3238 §2.3). */
int role_callout_event(struct roles *r, const struct queue_env *env, const char *pec_id,
                       const char *omid, char *err, size_t errlen)
{
    if (env->callouts == NULL || env->callouts[0] == '\0')
        return 0;
    return role_event(r, &(struct role_ev){.type = "callout", .qid = env->qid, .pec_id = pec_id,
                                           .orig_msgid = omid, .sender = env->sender,
                                           .outcome = env->callouts}, err, errlen);
}

