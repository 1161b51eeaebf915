/*
 * roles_incoming.c - the incoming point and the delivery point (RFC 6109
 * §3.2, §3.3) as the stage "incoming": duplicates dropped, verification
 * against one directory snapshot, presa in carico, delivery and its
 * receipts, anomaly envelopes (§3.2.2), envelopes with a virus (§3.2.3) and
 * virus detection notices for our own envelopes (§3.2.4).  Split from
 * roles.c (see there and roles_int.h).
 */
#include "lib/metrics.h"
#include "roles_int.h"
#include "roles.h"
#include "transport.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "pec/pec.h"
#include "pec/pec_dir.h"
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
#include <unistd.h>

/* Incoming point: an envelope with a virus is not delivered; one virus
 * detection notice per recipient to the sender provider's mailReceipt
 * (§3.2.3).  The stage has quarantined it. */
static int incoming_virus(struct roles *r, const struct queue_env *env, bool recovered,
                          const pec_verdict *v, const pec_provider *p, struct queue_outputs *out,
                          char *err, size_t errlen)
{
    const pec_daticert *d = v->daticert;
    char why[300];
    snprintf(why, sizeof why, "virus %s", env->virus);
    if (role_callout_event(r, env, d && d->identificativo ? d->identificativo : NULL,
                           d ? d->msgid : NULL, err, errlen) == -1)
        return -1;
    for (size_t i = 0; i < env->nrcpts; i++) {
        time_t now = out->when;
        char mid[256];
        role_stage_id(r, env, out, mid, sizeof mid);
        const char *rcpt = env->rcpts[i].addr;
        pec_build_args a = {.type = PEC_TYPE_RILEVAZIONE_VIRUS, .errore = PEC_ERRORE_VIRUS,
                            .sender = d && d->mittente ? d->mittente : env->sender,
                            .recipients = d ? d->destinatari : NULL,
                            .n_recipients = d ? d->n_destinatari : 0, .when = now,
                            .pec_id = d && d->identificativo ? d->identificativo : "",
                            .orig_msgid = d ? d->msgid : NULL, .message_id = mid,
                            .notify_to = p && p->receipt ? p->receipt : NULL, .consegna = rcpt,
                            .subject = d ? d->oggetto : NULL, .errore_esteso = env->virus,
                            .reply_to = d ? d->risposte : NULL};
        pec_buf m = {0};
        int rc = a.notify_to ? role_build(r, &a, &m, err, errlen) : 0;
        if (rc == 0)
            rc = role_event(r, &(struct role_ev){.type = "rilevazione-virus", .qid = env->qid,
                                                 .pec_id = a.pec_id, .orig_msgid = a.orig_msgid,
                                                 .message_id = mid, .sender = a.sender,
                                                 .rcpts = rcpt, .subject = a.subject,
                                                 .outcome = why, .key = rcpt}, err, errlen);
        if (rc == 0 && a.notify_to)
            rc = role_send_to(r, env, recovered, out, a.notify_to, &m, err, errlen);
        pec_buf_free(&m);
        if (rc == -1)
            return -1;          /* err: role_build's, role_event's or role_send_to's */
        log_info("%s: PEC %s for <%s> not delivered: %s; notice to %s", env->qid, a.pec_id,
                 rcpt, why, a.notify_to ? a.notify_to : "(sender provider unknown)");
    }
    return 0;
}

/* Sender provider: a virus detection notice for our envelope becomes a
 * non-delivery for virus to our user (§3.2.4), and settles the recipient. */
static int virus_notice_received(struct roles *r, const struct queue_env *env, bool recovered,
                                 const pec_daticert *d, struct queue_outputs *out, char *err,
                                 size_t errlen)
{
    if (d == NULL || d->mittente == NULL || d->consegna == NULL || d->identificativo == NULL)
        return 0;
    time_t now = out->when;
    char mid[256];
    role_stage_id(r, env, out, mid, sizeof mid);
    pec_build_args a = {.type = PEC_TYPE_ERRORE_CONSEGNA, .errore = PEC_ERRORE_VIRUS,
                        .sender = d->mittente, .recipients = d->destinatari,
                        .n_recipients = d->n_destinatari, .when = now,
                        .pec_id = d->identificativo, .orig_msgid = d->msgid, .message_id = mid,
                        .consegna = d->consegna, .subject = d->oggetto,
                        .reply_to = d->risposte,
                        .errore_esteso = d->errore_esteso ? d->errore_esteso : "virus"};
    pec_buf m = {0};
    int rc = role_build(r, &a, &m, err, errlen);
    if (rc == 0)
        rc = role_event(r, &(struct role_ev){.type = "errore-consegna", .qid = env->qid,
                                             .pec_id = a.pec_id, .orig_msgid = a.orig_msgid,
                                             .message_id = mid, .sender = a.sender,
                                             .rcpts = d->consegna, .subject = a.subject,
                                             .outcome = "virus", .key = d->consegna}, err, errlen);
    if (rc == 0)
        rc = role_send_to(r, env, recovered, out, d->mittente, &m, err, errlen);
    if (rc == 0) {
        metric_inc(&metric_pec_transactions, "delivery", "virus");
        log_info("%s: virus detected at <%s> for PEC %s: non-delivery to <%s>", env->qid,
                 d->consegna, a.pec_id, d->mittente);
    }
    pec_buf_free(&m);
    return rc;
}

/* ---- incoming point and delivery point (§3.2, §3.3) -------------------------------- */

/* Is a final refusal of the mailbox "full" (RFC 3463 X.2.2, "mailbox full":
 * Dovecot's "552 5.2.2 … Quota exceeded", our own Maildir quota)? */
static bool mailbox_full(const struct deliver_rcpt *x)
{
    const char *t = x->text;
    return (t[0] == '5' || t[0] == '4') && strncmp(t + 1, ".2.2", 4) == 0 &&
           (t[5] == ' ' || t[5] == '\0');
}

/* What the delivery point does for one recipient after the store. */
enum delivery_outcome {
    DELIVERED,        /* avvenuta-consegna */
    NO_MAILBOX,       /* errore-consegna no-dest (§3.3.3) */
    FULL,             /* errore-consegna altro: "casella piena" */
    NOT_DELIVERED,    /* errore-consegna altro: still failing at the deadline */
    LATER,            /* a temporary failure: retried on its own */
};

static enum delivery_outcome outcome_of(const struct deliver_rcpt *x, bool past_deadline)
{
    if (!x->pending)
        return NO_MAILBOX;
    switch (x->result) {
    case DELIVER_OK:
        return DELIVERED;
    case DELIVER_PERMFAIL:
        return mailbox_full(x) ? FULL : NO_MAILBOX;
    case DELIVER_TEMPFAIL:
    default:
        if (!past_deadline)
            return LATER;
        return mailbox_full(x) ? FULL : NOT_DELIVERED;
    }
}

/* The recipients whose mailbox failed for now, in a new queue file of their
 * own (stage "delivery"): the others' receipts and the presa in carico do not
 * wait for them.  Its arrival is the instant the envelope was taken in, which
 * the deadline counts from. */
static void deliver_later(const struct queue_env *env, const size_t *idx, size_t n,
                          const char *data, size_t len, struct queue_outputs *out)
{
    struct queue_rcpt *rc = xcalloc(n, sizeof *rc);
    if (rc == NULL) {
        log_err("%s: out of memory", env->qid);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        rc[k] = env->rcpts[idx[k]];
        rc[k].status = QR_PENDING;
        rc[k].status_text = NULL;
    }
    bool again = pec_stage_parse(env->stage) == PEC_STAGE_DELIVERY;
    struct queue_env e = {.arrival = again ? env->arrival : out->when, .sender = env->sender,
                          .rcpts = rc, .nrcpts = n,
                          .stage = (char *)pec_stage_name(PEC_STAGE_DELIVERY), .listener = "pec",
                          .proto = "local", .requiretls = env->requiretls};
    queue_outputs_add(out, &e, data, len);
    free(rc);
}

/* §3.3: stores the envelope for each recipient with a mailbox (one LMTP
 * transaction with [delivery] mailbox = lmtp:), then gives each recipient its
 * own outcome (issue 18): a delivery receipt for those stored, a
 * non-delivery for an unknown or full mailbox, and a temporary failure is
 * retried for that recipient alone ("delivery" stage) until [timers]
 * mancata_consegna after the envelope was taken in, when it becomes a
 * non-delivery (the sending provider's 24 h notice has told its user by
 * then; this makes our evidence final). */
/* The presa in carico of an envelope taken in (§3.2.1), made with the first
 * delivery receipt of the same stage so that both are signed in one request
 * to the signer process; its event and its sending come first all the same. */
struct presa {
    pec_build_args a;              /* a.notify_to NULL: the sender provider is unknown */
    const char *mid;
    const char *const *ric;
    size_t nric;
    bool pending;
};

/* The presa's event and its message to the sender provider (m, when made). */
static int presa_record(struct roles *r, const struct queue_env *env, bool recovered,
                        const struct presa *p, const pec_buf *m, struct queue_outputs *out,
                        char *err, size_t errlen)
{
    GString *to = g_string_new(NULL);
    for (size_t i = 0; i < p->nric; i++)
        g_string_append_printf(to, "%s%s", i ? ", " : "", p->ric[i]);
    int rc = role_event(r, &(struct role_ev){.type = "presa-in-carico", .qid = env->qid,
                                             .pec_id = p->a.pec_id, .orig_msgid = p->a.orig_msgid,
                                             .message_id = p->mid, .sender = p->a.sender,
                                             .rcpts = to->str, .subject = p->a.subject,
                                             .outcome = p->a.notify_to ? p->a.notify_to
                                                                       : "provider unknown"},
                        err, errlen);
    g_string_free(to, TRUE);
    if (rc == 0 && p->a.notify_to)
        rc = role_send_to(r, env, recovered, out, p->a.notify_to, m, err, errlen);
    return rc;
}

/* A delivery receipt (a, into *m; NULL: none) and, the first time, the
 * presa in carico p still pending: built together, the presa recorded
 * first. */
static int receipt_build(struct roles *r, const struct queue_env *env, bool recovered,
                         struct presa *p, pec_build_args *a, pec_buf *m,
                         struct queue_outputs *out, char *err, size_t errlen)
{
    if (p == NULL || !p->pending)
        return a != NULL ? role_build(r, a, m, err, errlen) : 0;
    p->pending = false;
    pec_buf made[2] = {{0}};
    int rc;
    if (p->a.notify_to == NULL)
        rc = 0;                    /* nothing to sign for the presa */
    else if (a != NULL) {
        pec_build_args both[2] = {p->a, *a};
        rc = role_build_n(r, both, 2, made, err, errlen);
    } else
        rc = role_build(r, &p->a, &made[0], err, errlen);
    if (rc == 0)
        rc = presa_record(r, env, recovered, p, &made[0], out, err, errlen);
    if (rc == 0 && a != NULL && p->a.notify_to == NULL)
        rc = role_build(r, a, m, err, errlen);
    else if (rc == 0 && a != NULL) {
        *m = made[1];
        made[1] = (pec_buf){0};
    }
    pec_buf_free(&made[0]);
    pec_buf_free(&made[1]);
    return rc;
}

static int delivery_point(struct roles *r, const struct queue_env *env, const char *data,
                          size_t len, bool recovered, const pec_verdict *v, struct presa *presa,
                          struct queue_outputs *out, char *err, size_t errlen)
{
    const pec_daticert *d = v->daticert;
    pec_buf orig = {0};
    char e2[256];
    bool have_orig = v->original.data != NULL ||
                     pec_envelope_original(data, len, &orig, e2, sizeof e2) == 0;
    const pec_buf *original = v->original.data != NULL ? &v->original : &orig;
    bool retry_stage = pec_stage_parse(env->stage) == PEC_STAGE_DELIVERY;
    bool past_deadline = retry_stage &&
                         (uint64_t)(out->when - env->arrival) >= r->cfg->timer_mancata_consegna;
    int rc = 0;
    struct deliver_rcpt *st = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *st);
    size_t *later = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *later);
    size_t nlater = 0;
    if (st == NULL || later == NULL) {
        free(st);
        free(later);
        pec_buf_free(&orig);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    bool any_pending = false;
    for (size_t i = 0; i < env->nrcpts; i++) {
        enum users_found ex = role_mailbox(r, env->rcpts[i].addr);
        st[i].pending = ex != USERS_NO;   /* USERS_AT_DELIVERY: the LMTP server decides */
        if (ex == USERS_UNAVAILABLE) {
            /* the users source cannot tell now: this recipient only waits */
            st[i].result = DELIVER_TEMPFAIL;
            snprintf(st[i].text, sizeof st[i].text, "4.4.3 users source unavailable");
        }
        any_pending = any_pending || (ex != USERS_NO && ex != USERS_UNAVAILABLE);
    }
    if (any_pending) {
        for (size_t i = 0; i < env->nrcpts; i++)
            if (st[i].result == DELIVER_TEMPFAIL)
                st[i].pending = false;   /* not stored now (set again below) */
        transport_store_local_all(r->transport, env, data, len, recovered, st, out);
        for (size_t i = 0; i < env->nrcpts; i++)
            if (!st[i].pending && st[i].result == DELIVER_TEMPFAIL)
                st[i].pending = true;
    }
    for (size_t i = 0; i < env->nrcpts && rc == 0; i++) {
        const char *addr = env->rcpts[i].addr;
        enum delivery_outcome o = outcome_of(&st[i], past_deadline);
        if (o == LATER) {
            later[nlater++] = i;
            log_warn("%s: PEC %s for <%s> not stored now (%s): retried on its own", env->qid,
                     d && d->identificativo ? d->identificativo : "", addr, st[i].text);
            continue;
        }
        time_t now = out->when;
        char mid[256];
        role_stage_id(r, env, out, mid, sizeof mid);
        pec_build_args a = {.sender = d && d->mittente ? d->mittente : env->sender,
                            .recipients = d ? d->destinatari : NULL,
                            .n_recipients = d ? d->n_destinatari : 0,
                            .when = now, .pec_id = d && d->identificativo ? d->identificativo : "",
                            .orig_msgid = d ? d->msgid : NULL, .message_id = mid,
                            .consegna = addr, .subject = d ? d->oggetto : NULL,
                            .reply_to = d ? d->risposte : NULL};
        pec_buf m = {0};
        if (o != DELIVERED) {
            /* §3.3.3: the envelope was correct, the mailbox is not there, is
             * full, or could not be reached within the deadline */
            a.type = PEC_TYPE_ERRORE_CONSEGNA;
            char why[400];
            const char *name = r->cfg->name;
            switch (o) {
            case FULL:
                a.errore = PEC_ERRORE_ALTRO;
                snprintf(why, sizeof why, "5.2.2 - %s - casella piena (%.200s)", name,
                         st[i].text);
                break;
            case NOT_DELIVERED:
                a.errore = PEC_ERRORE_ALTRO;
                snprintf(why, sizeof why, "4.2.0 - %s - casella non disponibile entro %llu ore "
                                          "(%.200s)",
                         name, (unsigned long long)(r->cfg->timer_mancata_consegna / 3600),
                         st[i].text);
                break;
            default:
                a.errore = PEC_ERRORE_NO_DEST;
                if (st[i].pending)
                    snprintf(why, sizeof why, "%.200s - %s", st[i].text, name);
                else
                    snprintf(why, sizeof why, "5.1.1 - %s - indirizzo non valido", name);
                break;
            }
            a.errore_esteso = why;
            metric_inc(&metric_pec_transactions, "delivery", "not-delivered");
            log_tagged(LOG_LVL_INFO, &(struct log_fields){.qid = env->qid, .pec_id = a.pec_id, .event = "consegna", .result = "not-delivered"},
                       "%s: PEC %s to <%s> not delivered: %s", env->qid, a.pec_id, addr, why);
            rc = receipt_build(r, env, recovered, presa, &a, &m, out, err, errlen);
            if (rc == 0)
                rc = role_event(r, &(struct role_ev){.type = "errore-consegna", .qid = env->qid,
                                                     .pec_id = a.pec_id, .orig_msgid = a.orig_msgid,
                                                     .message_id = mid, .sender = a.sender,
                                                     .rcpts = addr, .subject = a.subject,
                                                     .outcome = why, .key = addr}, err, errlen);
        } else {
            /* §3.3.2: the receipt follows the stored envelope */
            a.type = PEC_TYPE_AVVENUTA_CONSEGNA;
            a.variant = pec_receipt_variant(have_orig ? (const char *)original->data : data,
                                            have_orig ? original->len : len, addr,
                                            d ? d->ricevuta : PEC_VARIANT_COMPLETA);
            /* breve: pec_build replaces the named parts by their hashes
             * (§3.3.2.2), once; the original is given as received */
            if (a.variant == PEC_VARIANT_BREVE || a.variant == PEC_VARIANT_COMPLETA) {
                if (!have_orig)
                    a.variant = PEC_VARIANT_SINTETICA;
                a.original = original->data;
                a.original_len = original->len;
            }
            metric_inc(&metric_pec_transactions, "delivery", "delivered");
            log_tagged(LOG_LVL_INFO, &(struct log_fields){.qid = env->qid, .pec_id = a.pec_id, .event = "consegna", .result = "delivered"},
                       "%s: PEC %s delivered to <%s> (receipt %s)", env->qid, a.pec_id, addr,
                     pec_variant_name(a.variant));
            rc = receipt_build(r, env, recovered, presa, &a, &m, out, err, errlen);
            if (rc == 0)
                rc = role_event(r, &(struct role_ev){.type = "avvenuta-consegna", .qid = env->qid,
                                                     .pec_id = a.pec_id, .orig_msgid = a.orig_msgid,
                                                     .message_id = mid, .sender = a.sender,
                                                     .rcpts = addr, .subject = a.subject,
                                                     .outcome = pec_variant_name(a.variant),
                                                     .key = addr}, err, errlen);
        }
        if (rc == 0)
            rc = role_send_to(r, env, recovered, out, env->sender, &m, err, errlen);
        pec_buf_free(&m);
    }
    if (rc == 0)                  /* no receipt made now: the presa alone */
        rc = receipt_build(r, env, recovered, presa, NULL, NULL, out, err, errlen);
    if (rc == 0 && nlater > 0) {
        if (retry_stage && nlater == env->nrcpts) {
            /* nothing changed: this stage waits (the queue's back-off) */
            snprintf(err, errlen, "no recipient could be stored: %s", st[later[0]].text);
            rc = -1;
        } else {
            deliver_later(env, later, nlater, data, len, out);
        }
    }
    pec_buf_free(&orig);
    free(st);
    free(later);
    return rc;
}

/* Stage "delivery": the recipients of an envelope that could not be stored
 * when it was taken in (its presa in carico went then).  The envelope is our
 * own copy of one that was verified; it is read again for its certification
 * data (the signature is not what decides here: a CRL published since does
 * not undo a presa in carico already sent). */
int role_delivery_retry(struct roles *r, const struct queue_env *env, const char *data,
                        size_t len, bool recovered, struct queue_outputs *out, char *err,
                        size_t errlen)
{
    const pec_dirsnap *snap = pec_dirmgr_acquire(r->dirs);
    pec_verdict v;
    char e2[256];
    int rc = -1;
    if (pec_verify_flags(snap->trust, data, len, PEC_VERIFY_REPORT, &v, e2, sizeof e2) == -1) {
        snprintf(err, errlen, "cannot read the envelope again: %s", e2);
    } else if (v.cls.type != PEC_TYPE_POSTA_CERTIFICATA || v.daticert == NULL) {
        snprintf(err, errlen, "the envelope has no certification data now: %s", v.detail);
    } else {
        if (!v.valid)
            log_warn("%s: the envelope no longer verifies (%s: %s); it was taken in verified, "
                     "so its delivery goes on", env->qid, pec_reason_name(v.reason), v.detail);
        rc = delivery_point(r, env, data, len, recovered, &v, NULL, out, err, errlen);
    }
    pec_verdict_free(&v);
    pec_dirsnap_release(snap);
    return rc;
}

/* §3.2.2: whatever is not a correct PEC message reaches the mailbox inside a
 * signed anomaly envelope, SMTP paths unchanged. */
static int anomaly(struct roles *r, const struct queue_env *env, const char *data, size_t len,
                   bool recovered, const char *why, struct queue_outputs *out, char *err, size_t errlen)
{
    /* §3.2.2: "Date: [message arrival date]", and the text's "On [date] at
     * [time]": the anomaly's instant is the arrival (§4.1: its log event too) */
    role_set_instant(out, env->arrival);
    time_t now = out->when;
    char pec_id[256];
    role_stage_id(r, env, out, pec_id, sizeof pec_id);
    pec_recipient *rc = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *rc);
    for (size_t i = 0; i < env->nrcpts; i++) {
        rc[i].addr = env->rcpts[i].addr;
        rc[i].kind = PEC_RCPT_CERTIFICATO;
    }
    pec_build_args a = {.type = PEC_TYPE_ANOMALIA, .original = data, .original_len = len,
                        .sender = env->sender[0] ? env->sender : "MAILER-DAEMON",
                        .recipients = rc, .n_recipients = env->nrcpts, .when = now,
                        .pec_id = pec_id, .errore_esteso = why};
    pec_buf m = {0};
    int res = role_build(r, &a, &m, err, errlen);
    free(rc);
    /* only to mailboxes that exist; the sender of the message hears of the
     * others (a non-delivery report), nothing is dropped without notice */
    const char **keep = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *keep);
    size_t *unknown = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *unknown);
    size_t nk = 0, nu = 0;
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (role_mailbox(r, env->rcpts[i].addr) != USERS_NO)
            keep[nk++] = env->rcpts[i].addr;
        else
            unknown[nu++] = i;
    }
    if (res == 0)
        role_refuse_unknown(env, unknown, nu, data, len, out);
    free(unknown);
    if (res == 0 && nk > 0)
        res = role_store_copies(r, env, recovered, env->sender, keep, nk, m.data, m.len, out, err,
                                errlen);
    if (res == 0) {
        /* the reason's stable name (pec_reason_name) before the detail */
        char reason[32] = "unreadable";
        size_t rl = strspn(why, "abcdefghijklmnopqrstuvwxyz-_");
        if (rl > 0 && rl < sizeof reason && why[rl] == ':') {
            memcpy(reason, why, rl);
            reason[rl] = '\0';
        }
        metric_inc(&metric_pec_transactions, "incoming", "anomaly");
        metric_inc(&metric_pec_anomalies, reason, NULL);
    }
    if (res == 0 && nk > 0) {
        log_tagged(LOG_LVL_INFO, &(struct log_fields){.qid = env->qid, .pec_id = pec_id, .event = "anomalia", .result = "delivered"},
                   "%s: anomaly envelope for %zu recipient%s: %s", env->qid, env->nrcpts,
                 env->nrcpts == 1 ? "" : "s", why);
        char omid[512] = "", subj[1024] = "";
        mail_header_value(data, len, "Message-ID", omid, sizeof omid);
        mail_header_value(data, len, "Subject", subj, sizeof subj);
        GString *to = g_string_new(NULL);
        for (size_t i = 0; i < nk; i++)
            g_string_append_printf(to, "%s%s", i ? ", " : "", keep[i]);
        res = role_event(r, &(struct role_ev){.type = "anomalia", .qid = env->qid, .pec_id = pec_id,
                                              .orig_msgid = omid, .message_id = pec_id,
                                              .sender = env->sender, .rcpts = to->str,
                                              .subject = subj, .outcome = why}, err, errlen);
        g_string_free(to, TRUE);
    }
    free(keep);
    pec_buf_free(&m);
    return res;
}

static int incoming_verified(struct roles *r, const struct queue_env *env, const char *data,
                             size_t len, bool recovered, struct queue_outputs *out, char *err,
                             size_t errlen);

/* The Message-ID of msg without < >, or "" */
static void message_id(const char *data, size_t len, char *out, size_t outlen)
{
    out[0] = '\0';
    if (mail_header_value(data, len, "Message-ID", out, outlen)) {
        char *p = out;
        if (*p == '<')
            memmove(p, p + 1, strlen(p));
        char *gt = strchr(p, '>');
        if (gt)
            *gt = '\0';
    }
}

int role_incoming_point(struct roles *r, const struct queue_env *env, const char *data,
                        size_t len, bool recovered, struct queue_outputs *out, char *err,
                        size_t errlen)
{
    return incoming_verified(r, env, data, len, recovered, out, err, errlen);
}

/* The digest of what a verified message certifies (its daticert fields),
 * part of the duplicate key: a message signed by the same provider for
 * another transaction, re-sent with a chosen Message-ID, cannot match. */
static void certified_digest(const pec_verdict *v, char hex[65])
{
    const pec_daticert *d = v->daticert;
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    const char *f[] = {pec_type_name(v->cls.type), d ? d->identificativo : NULL,
                       d ? d->msgid : NULL, d ? d->giorno : NULL, d ? d->ora : NULL,
                       d ? d->zona : NULL, d ? d->consegna : NULL, d ? d->mittente : NULL};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const char *s = f[i] ? f[i] : "";
        g_checksum_update(c, (const guchar *)s, (gssize)strlen(s) + 1);  /* NUL separates */
    }
    for (size_t i = 0; d && i < d->n_ricezione; i++)
        g_checksum_update(c, (const guchar *)d->ricezione[i], (gssize)strlen(d->ricezione[i]) + 1);
    snprintf(hex, 65, "%s", g_checksum_get_string(c));
    g_checksum_free(c);
}

/* A copy the sender transferred again (it never saw our 250) is taken in
 * once per recipient.  Only a verified message enters or matches the record
 * (issue 16): keyed by its signer, Message-ID (unique for every PEC message,
 * §2.2.1), certified data and recipient.  Fills envc with the recipients not
 * taken in before (their array is fresh, owned by the caller); -1 when the
 * record cannot be read. */
static int take_in_once(struct roles *r, const struct queue_env *env, const char *data,
                        size_t len, const pec_verdict *v, struct queue_env *envc,
                        struct queue_rcpt *fresh, char *err, size_t errlen)
{
    *envc = *env;
    envc->rcpts = fresh;
    envc->nrcpts = 0;
    char mid[512], content[65];
    message_id(data, len, mid, sizeof mid);
    certified_digest(v, content);
    for (size_t i = 0; i < env->nrcpts; i++) {
        struct tracking_seen_key k = {.signer = v->signer_sha1, .msgid = mid,
                                      .content = content, .rcpt = env->rcpts[i].addr};
        int s = mid[0] && r->tracking ? tracking_seen(r->tracking, &k, env->qid) : 0;
        if (s == -1) {
            snprintf(err, errlen, "tracking database unavailable");
            return -1;
        }
        if (s == 1) {
            log_info("%s: <%s> for <%s> was taken in before: duplicate dropped", env->qid, mid,
                     env->rcpts[i].addr);
            role_event(r, &(struct role_ev){.type = "duplicato", .qid = env->qid, .message_id = mid,
                                            .sender = env->sender, .rcpts = env->rcpts[i].addr,
                                            .outcome = "dropped", .key = env->rcpts[i].addr},
                       err, errlen);
            continue;
        }
        fresh[envc->nrcpts++] = env->rcpts[i];
    }
    return 0;
}

static int incoming_checked(struct roles *r, const pec_dirsnap *snap,
                            const struct queue_env *env, const char *data, size_t len,
                            bool recovered, struct queue_outputs *out, char *err, size_t errlen);
static int incoming_dispatch(struct roles *r, const struct queue_env *env, const char *data,
                             size_t len, bool recovered, pec_verdict *vp, const pec_dirsnap *snap,
                             struct queue_outputs *out, char *err, size_t errlen);

/* One directory snapshot for the whole verification: a refresh in between
 * cannot mix two copies. */
static int incoming_verified(struct roles *r, const struct queue_env *env, const char *data,
                             size_t len, bool recovered, struct queue_outputs *out, char *err,
                             size_t errlen)
{
    const pec_dirsnap *snap = pec_dirmgr_acquire(r->dirs);
    int rc = incoming_checked(r, snap, env, data, len, recovered, out, err, errlen);
    pec_dirsnap_release(snap);
    return rc;
}

static int incoming_checked(struct roles *r, const pec_dirsnap *snap,
                            const struct queue_env *env, const char *data, size_t len,
                            bool recovered, struct queue_outputs *out, char *err, size_t errlen)
{
    pec_verdict v;
    char e2[256];
    memset(&v, 0, sizeof v);
    int64_t t0 = clock_us();
    int vr = pec_verify(snap->trust, data, len, &v, e2, sizeof e2);
    metric_observe(&metric_signature_seconds, METRIC_OP_VERIFY, clock_us() - t0);
    metric_inc(&metric_signatures, "verify", vr == -1 ? "unreadable" : v.valid ? "valid" : "invalid");
    if (vr == -1)
        return anomaly(r, env, data, len, recovered, "messaggio non leggibile", out, err, errlen);
    int rc;
    if (!v.valid) {
        /* not recorded as taken in: an unverified message proves nothing of
         * who sent it, and must not stop a genuine one later */
        char why[400];
        snprintf(why, sizeof why, "%s: %s", pec_reason_name(v.reason), v.detail);
        rc = anomaly(r, env, data, len, recovered, why, out, err, errlen);
        pec_verdict_free(&v);
        return rc;
    }
    metric_inc(&metric_pec_transactions, "incoming", "verified");
    struct queue_rcpt *fresh = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *fresh);
    struct queue_env envc;
    if (fresh == NULL || take_in_once(r, env, data, len, &v, &envc, fresh, err, errlen) == -1) {
        if (fresh == NULL)
            snprintf(err, errlen, "out of memory");
        free(fresh);
        pec_verdict_free(&v);
        return -1;
    }
    if (envc.nrcpts == 0) {
        free(fresh);
        pec_verdict_free(&v);
        return 0;
    }
    rc = incoming_dispatch(r, &envc, data, len, recovered, &v, snap, out, err, errlen);
    free(fresh);
    pec_verdict_free(&v);
    return rc;
}

/* A verified message, for the recipients not taken in before. */
static int incoming_dispatch(struct roles *r, const struct queue_env *env, const char *data,
                             size_t len, bool recovered, pec_verdict *vp, const pec_dirsnap *snap,
                             struct queue_outputs *out, char *err, size_t errlen)
{
    pec_verdict v = *vp;   /* freed by the caller */
    int rc;
    if (v.cls.type == PEC_TYPE_POSTA_CERTIFICATA) {
        /* §3.2.1: presa in carico to the sender provider, for all our
         * recipients of this transaction */
        const pec_provider *p = pec_directory_by_hash(snap->dir, v.signer_sha1);
        if (env->virus != NULL) {
            rc = incoming_virus(r, env, recovered, &v, p, out, err, errlen);
            return rc;
        }
        const char **ric = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *ric);
        for (size_t i = 0; i < env->nrcpts; i++)
            ric[i] = env->rcpts[i].addr;
        time_t now = out->when;
        char mid[256];
        role_stage_id(r, env, out, mid, sizeof mid);
        const pec_daticert *d = v.daticert;
        struct presa presa = {
            .a = {.type = PEC_TYPE_PRESA_IN_CARICO,
                  .sender = d && d->mittente ? d->mittente : env->sender,
                  .recipients = d ? d->destinatari : NULL,
                  .n_recipients = d ? d->n_destinatari : 0, .when = now,
                  .pec_id = d && d->identificativo ? d->identificativo : "",
                  .orig_msgid = d ? d->msgid : NULL, .message_id = mid,
                  .notify_to = p && p->receipt ? p->receipt : NULL,
                  .ricezione = ric, .n_ricezione = env->nrcpts,
                  .subject = d ? d->oggetto : NULL, .reply_to = d ? d->risposte : NULL},
            .mid = mid, .ric = ric, .nric = env->nrcpts, .pending = true};
        /* made and sent with the first delivery receipt (receipt_build) */
        rc = delivery_point(r, env, data, len, recovered, &v, &presa, out, err, errlen);
        free(ric);
    } else {
        /* a receipt for a message we sent: the tracking learns of it */
        const pec_daticert *d = v.daticert;
        if (r->tracking != NULL && d != NULL && d->identificativo != NULL) {
            pec_type ty = v.cls.type;
            if (ty == PEC_TYPE_PRESA_IN_CARICO) {
                for (size_t i = 0; i < d->n_ricezione; i++)
                    if (tracking_receipt(r->tracking, d->identificativo, d->ricezione[i], 'P') == 1)
                        log_info("%s: presa in carico for %s <%s> was not expected (late or "
                                 "duplicate)", env->qid, d->identificativo, d->ricezione[i]);
            } else if ((ty == PEC_TYPE_AVVENUTA_CONSEGNA || ty == PEC_TYPE_ERRORE_CONSEGNA) &&
                       d->consegna != NULL) {
                if (tracking_receipt(r->tracking, d->identificativo, d->consegna, 'C') == 1)
                    log_info("%s: %s for %s <%s> was not expected (late or duplicate)",
                             env->qid, pec_type_name(ty), d->identificativo, d->consegna);
            } else if (ty == PEC_TYPE_RILEVAZIONE_VIRUS && d->consegna != NULL) {
                tracking_receipt(r->tracking, d->identificativo, d->consegna, 'C');
            }
        }
        if (v.cls.type == PEC_TYPE_RILEVAZIONE_VIRUS &&
            virus_notice_received(r, env, recovered, d, out, err, errlen) == -1) {
            return -1;
        }
        /* a correct receipt or anomaly envelope: unmodified to the mailbox (§3.3) */
        char type[64], mid2[512];
        snprintf(type, sizeof type, "ricevuta:%s", pec_type_name(v.cls.type));
        message_id(data, len, mid2, sizeof mid2);
        GString *to = g_string_new(NULL);
        for (size_t i = 0; i < env->nrcpts; i++)
            g_string_append_printf(to, "%s%s", i ? ", " : "", env->rcpts[i].addr);
        if (role_event(r, &(struct role_ev){.type = type, .qid = env->qid,
                                            .pec_id = d ? d->identificativo : NULL,
                                            .orig_msgid = d ? d->msgid : NULL, .message_id = mid2,
                                            .sender = env->sender, .rcpts = to->str,
                                            .subject = d ? d->oggetto : NULL,
                                            .outcome = d && d->consegna ? d->consegna : "ricevuta"},
                       err, errlen) == -1) {
            g_string_free(to, TRUE);
            return -1;
        }
        g_string_free(to, TRUE);
        const char **addrs = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *addrs);
        size_t *unknown = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *unknown);
        size_t na = 0, nu = 0;
        for (size_t i = 0; i < env->nrcpts; i++) {
            if (role_mailbox(r, env->rcpts[i].addr) != USERS_NO)
                addrs[na++] = env->rcpts[i].addr;
            else
                unknown[nu++] = i;
        }
        rc = role_store_copies(r, env, recovered, env->sender, addrs, na, data, len, out, err,
                               errlen);
        if (rc == 0)
            role_refuse_unknown(env, unknown, nu, data, len, out);
        free(unknown);
        free(addrs);
        if (rc == -1) {
            return -1;
        }
        log_info("%s: PEC %s for %zu local recipient%s", env->qid, pec_type_name(v.cls.type),
                 env->nrcpts, env->nrcpts == 1 ? "" : "s");
        rc = 0;
    }
    return rc;
}
