/*
 * roles.c - the three roles of a PEC provider (RFC 6109 §2.2, §3) as the
 * queue's stage processor: a message that entered through submission runs
 * the access point, one that arrived on the mx listener the incoming point
 * and the delivery point.  Each turns one queued message into new ones
 * (receipts, envelopes, copies for mailboxes); the queue commits them exactly
 * once (queue.h, process_fn).  Building and checking messages is src/pec's.
 *
 *  submission --> access point: formal checks (§3.1.1) -> non-acceptance, or
 *                 acceptance + one transport envelope (stage "incoming" for
 *                 our own recipients, relayed for the others)
 *  mx ---------> incoming point: verify (§2.2.2) -> envelope: presa in carico
 *                 to the sender provider + delivery point: store, then
 *                 avvenuta-consegna (completa/breve/sintetica) or
 *                 errore-consegna; receipt: to the mailbox; anything else:
 *                 anomaly envelope (§3.2.2)
 *
 * This file: setting up (the signer pecd gives, providers' directory), the
 * timeout notices (§3.1.6), the record of PEC received without TLS (§5.3)
 * and the dispatch by stage.  The access point is in roles_access.c, the
 * incoming and delivery points in roles_incoming.c; the helpers the three
 * share (the evidence log's events, identifiers, outputs) in roles_common.c,
 * which calls none of them (roles_int.h).
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
#include "notices.h"

#include <errno.h>
#include <glib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The providers' directory and the trust built from it (issue 7): loaded
 * now, then refreshed by pecdir's thread (period and SIGHUP). */
static int load_directory(struct roles *r, const struct config *cfg, char *err, size_t errlen)
{
    char cache[4096];
    struct pec_dir_conf dc;
    if (pec_dir_conf_init(&dc, cfg, cache, &r->dir_password, err, errlen) == -1)
        return -1;
    char e2[1024];
    r->dirs = pec_dirmgr_new(&dc, e2, sizeof e2);
    if (r->dirs == NULL) {
        snprintf(err, errlen, "[pec] directory %s: %s", cfg->pec_directory, e2);
        return -1;
    }
    const pec_dirsnap *s = pec_dirmgr_acquire(r->dirs);
    if (pec_directory_by_domain(s->dir, cfg->domain) == NULL)
        log_warn("[pec] our domain %s is not in the providers' directory %s", cfg->domain,
                 cfg->pec_directory);
    log_info("PEC provider %s: %zu providers in the directory", cfg->name,
             pec_directory_count(s->dir));
    pec_dirsnap_release(s);
    if (pec_dirmgr_start(r->dirs) == -1) {
        snprintf(err, errlen, "[pec] directory: cannot start the refresh thread");
        return -1;
    }
    return 0;
}

struct roles *roles_new(const struct config *cfg, struct transport *t, struct users_db *users,
                        struct tracking *tracking, pec_signer *signer, char *err,
                        size_t errlen)
{
    char tz[256];
    if (pec_set_timezone(cfg->pec_timezone, tz, sizeof tz) == -1) {   /* §4.2 legal time */
        snprintf(err, errlen, "[pec] timezone: %s", tz);
        return NULL;
    }
    struct roles *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->tracking = tracking;
    r->transport = t;
    r->users = users;
    r->signer = signer;
    if (r->signer == NULL)
        snprintf(err, errlen, "[pec] signing key: no signer");
    /* §2.1: what pecd signs has From posta-certificata@<domain> (the service
     * address), which must be the certificate's address: found at start, not
     * at the first message */
    if (r->signer != NULL && strcasecmp(r->signer->email, cfg->pec_service_address) != 0) {
        snprintf(err, errlen, "[pec] signing_certificate %s is for <%s>, not for the service "
                              "address <%s> (RFC 6109 §2.1: From equals the certificate's "
                              "e-mail address)",
                 cfg->pec_signing_cert, r->signer->email[0] ? r->signer->email : "no address",
                 cfg->pec_service_address);
        r->signer = NULL;
        roles_free(r);
        return NULL;
    }
    if (r->signer == NULL || load_directory(r, cfg, err, errlen) == -1) {
        roles_free(r);
        return NULL;
    }
    r->id.domain = cfg->domain;
    r->id.name = cfg->name;
    r->id.signer = r->signer;
    return r;
}

static void password_free(void *p)
{
    if (p != NULL)
        explicit_bzero(p, strlen(p));
    free(p);
}

int roles_config_read(const struct config *cfg, char **password, char *err, size_t errlen)
{
    return pec_dir_password_read(cfg, password, err, errlen);
}

void roles_set_config(struct roles *r, const struct config *cfg, bool directory_changed,
                      char *password)
{
    char cache[4096];
    struct pec_dir_conf dc;
    pec_dir_conf_fill(&dc, cfg, cache, password);
    char *old = r->dir_password;
    r->dir_password = password;
    atomic_store(&r->cfg, cfg);
    /* always: the refresh thread's strings must be the new configuration's */
    pec_dirmgr_reconfigure(r->dirs, &dc, directory_changed);
    if (old != NULL)
        config_retire(password_free, old);
}

void roles_reload_directory(struct roles *r)
{
    pec_dirmgr_request(r->dirs);
}

void roles_free(struct roles *r)
{
    if (r == NULL)
        return;
    pec_dirmgr_free(r->dirs);
    if (r->dir_password)
        explicit_bzero(r->dir_password, strlen(r->dir_password));
    free(r->dir_password);
    free(r);
}

/* The evidence log's signer: src/pec's "sign these bytes" interface. */
static int ev_sign(void *ctx, const void *d, size_t n, unsigned char **der, size_t *len, char *err,
                   size_t errlen)
{
    pec_signer *s = ctx;
    pec_buf b = {0};
    if (s->sign(s->ctx, d, n, &b, err, errlen) != 0)
        return -1;
    *der = b.data;
    *len = b.len;
    return 0;
}

void roles_directory_stats(struct roles *r, time_t *fetched, size_t *providers,
                           time_t *crl_oldest)
{
    const pec_dirsnap *s = pec_dirmgr_acquire(r->dirs);
    *fetched = s->fetched;
    *providers = pec_directory_count(s->dir);
    *crl_oldest = pec_trust_crl_oldest(s->trust);
    pec_dirsnap_release(s);
}

void roles_set_evidence(struct roles *r, struct evidence *ev, bool stage_synced)
{
    r->ev = ev;
    r->ev_deferred = stage_synced;
    if (ev != NULL)
        evidence_set_signer(ev, ev_sign, r->signer);
}

bool roles_is_pec_domain(const struct roles *r, const char *domain)
{
    const pec_dirsnap *s = pec_dirmgr_acquire(r->dirs);
    bool pec = pec_directory_by_domain(s->dir, domain) != NULL;
    pec_dirsnap_release(s);
    return pec;
}

bool roles_is_pec_domain_cb(void *arg, const char *domain)
{
    return roles_is_pec_domain(arg, domain);
}

/* One timeout notice (§3.1.6) of a "notices" batch.  Exactly once: its
 * evidence event has a key of its own ("PEC-ID:preavviso-errore-consegna:
 * RCPT:WHICH"); when the log holds it from another batch (made again after a
 * crash between storing a batch and marking it), the notice exists and is
 * not made twice; when it holds it from this very batch (its stage run again
 * before its outputs were committed), the notice is made again with the
 * instant that event recorded (§4.1). */
static int timeout_notice(struct roles *r, const struct queue_env *env,
                          const struct tracking_due *due, bool recovered,
                          struct queue_outputs *out, char *err, size_t errlen)
{
    char key[700];
    snprintf(key, sizeof key, "%s:preavviso-errore-consegna:%s:%d", due->pec_id, due->rcpt,
             due->which);
    time_t now = out->when;
    char owner[64] = "";
    time_t logged = 0;
    int found = r->ev != NULL ? evidence_lookup(r->ev, key, owner, sizeof owner, &logged) : 0;
    if (found == -1) {
        snprintf(err, errlen, "evidence log unavailable");
        return -1;
    }
    if (found == 1 && strcmp(owner, env->qid) != 0) {
        log_info("%s: the %s notice for PEC %s <%s> was made before (%s): not again", env->qid,
                 due->which == 1 ? "12 h" : "24 h", due->pec_id, due->rcpt, owner);
        return 0;
    }
    if (found == 1)
        now = logged;
    /* Not made yet: only by the batch that claimed it (tracking_claim).  A
     * batch stored before a crash that kept it from being claimed, or one
     * whose rows another node's timer claimed meanwhile (PostgreSQL: the
     * rows were locked by the other, SKIP LOCKED), gives way, so that each
     * notice goes out once whichever node and batch made it. */
    if (found == 0 && r->tracking != NULL) {
        char claim[QUEUE_ID_LEN + 8] = "";
        int c = tracking_notice_claim(r->tracking, due->pec_id, due->rcpt, due->which, claim,
                                      sizeof claim);
        if (c == -1) {
            snprintf(err, errlen, "tracking database unavailable");
            return -1;
        }
        if (c == 0 || (claim[0] && strcmp(claim, env->qid) != 0)) {
            log_info("%s: the %s notice for PEC %s <%s> %s%s: not made here", env->qid,
                     due->which == 1 ? "12 h" : "24 h", due->pec_id, due->rcpt,
                     c == 0 ? "is not claimed by this batch (or a receipt ended it)"
                            : "is claimed by batch ",
                     c == 0 ? "" : claim);
            return 0;
        }
    }
    /* Message-ID (docs/pec.md): like every message made about one the
     * provider received, the PEC msgid opec1.<arrival>.<queue id>@<domain>
     * with ".<n>" added.  The access point's receipt is .1; here n = 2 *
     * slot + which + 1, so the two notices of each recipient have their own,
     * and a notice made again has the one the evidence log recorded */
    char mid[300];
    const char *at = strrchr(due->pec_id, '@');
    int n = at == NULL ? -1
                       : snprintf(mid, sizeof mid, "%.*s.%u%s", (int)(at - due->pec_id),
                                  due->pec_id, 2 * due->slot + (unsigned)due->which + 1, at);
    if (n < 0 || (size_t)n >= sizeof mid)
        role_make_id(r, mid, sizeof mid, now);
    /* §3.1.6: the notices quote the original's Message-ID, as its acceptance
     * did (X-Riferimento-Message-ID and daticert <msgid>) */
    const char *omid = due->orig_msgid != NULL && due->orig_msgid[0] == '<' ? due->orig_msgid
                                                                           : NULL;
    /* §4.4: <destinatari> lists every recipient of the original, of the kind
     * the acceptance gave it (the providers' directory decides again) */
    gchar **all = g_strsplit(due->recipients ? due->recipients : "", ",", -1);
    size_t nall = 0;
    pec_recipient *rc = xcalloc(g_strv_length(all) + 1, sizeof *rc);
    for (gchar **x = all; rc != NULL && *x != NULL; x++) {
        g_strstrip(*x);
        if (**x == '\0')
            continue;
        rc[nall].addr = *x;
        rc[nall++].kind = roles_is_pec_domain(r, domain_of(*x)) ? PEC_RCPT_CERTIFICATO
                                                                 : PEC_RCPT_ESTERNO;
    }
    if (rc != NULL && nall == 0) {   /* a row of an older version: the late one at least */
        rc[0].addr = due->rcpt;
        rc[0].kind = PEC_RCPT_CERTIFICATO;
        nall = 1;
    }
    if (rc == NULL) {
        g_strfreev(all);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* §3.1.6 (digest (h)): the two notices share header and XML, not text */
    const char *why = due->which == 1
        ? "non è stato consegnato nelle prime 12 ore. Il messaggio potrebbe non avere esito "
          "positivo; un ulteriore avviso seguirà nelle successive 12 ore."
        : "non è stato consegnato entro 24 ore dall'invio. La transazione si considera "
          "conclusa con esito negativo.";
    pec_build_args a = {.type = PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA, .errore = PEC_ERRORE_ALTRO,
                        .sender = due->sender, .recipients = rc, .n_recipients = nall,
                        .when = now, .pec_id = due->pec_id, .orig_msgid = omid,
                        .message_id = mid, .reply_to = due->reply_to,
                        .consegna = due->rcpt, .subject = due->subject, .errore_esteso = why};
    pec_buf m = {0};
    int built = role_build(r, &a, &m, err, errlen);
    free(rc);
    g_strfreev(all);
    if (built == -1)
        return -1;
    int rc2 = 0;
    if (r->ev != NULL && found == 0) {
        char om[512] = "", e2[256];
        if (omid != NULL) {
            str_copy(om, omid + 1, sizeof om);
            om[strcspn(om, ">")] = '\0';
        }
        struct evidence_event ee = {.type = "preavviso-errore-consegna", .pec_id = due->pec_id,
                                    .orig_msgid = om[0] ? om : NULL, .message_id = mid,
                                    .sender = due->sender, .recipients = due->rcpt,
                                    .subject = due->subject,
                                    .outcome = due->which == 1 ? "12h" : "24h",
                                    .queue_id = env->qid, .dedupe_key = key, .when = now};
        rc2 = (r->ev_deferred ? evidence_append_deferred(r->ev, &ee, e2, sizeof e2)
                              : evidence_append(r->ev, &ee, e2, sizeof e2));
        if (rc2 == -1)
            snprintf(err, errlen, "evidence log: %s", e2);
    }
    if (rc2 == 0)
        rc2 = role_send_to(r, env, recovered, out, due->sender, &m, err, errlen);
    if (rc2 == 0)
        log_info("%s: %s timeout notice for PEC %s to <%s> (recipient <%s>)", env->qid,
                 due->which == 1 ? "first" : "second", due->pec_id, due->sender, due->rcpt);
    pec_buf_free(&m);
    return rc2;
}

/* Stage "notices": a batch of due timeout notices (notices.c). */
static int role_notices(struct roles *r, const struct queue_env *env, const char *data,
                        size_t len, bool recovered, struct queue_outputs *out, char *err,
                        size_t errlen)
{
    struct tracking_due *due = NULL;
    size_t n = notices_decode(data, len, &due);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = timeout_notice(r, env, &due[i], recovered, out, err, errlen);
    tracking_due_free(due, n);
    return rc;
}

void roles_pass_begin(void *arg)
{
    struct roles *r = arg;
    if (r->ev != NULL)
        evidence_batch_begin(r->ev);
    if (r->tracking != NULL)
        tracking_pass_begin(r->tracking);
}

int roles_pass_end(void *arg, char *err, size_t errlen)
{
    struct roles *r = arg;
    int rc = 0;
    if (r->tracking != NULL && tracking_pass_end(r->tracking) == -1) {
        snprintf(err, errlen, "the tracking database could not store the pass's records");
        rc = -1;
    }
    if (r->ev != NULL && evidence_batch_commit(r->ev, err, errlen) == -1) {
        log_err("evidence log: the events of a pass of stages were not stored: %s", err);
        rc = -1;
    }
    return rc;
}

/* The Message-ID-like header field name of msg without < >, or "". */
static void header_id(const char *data, size_t len, const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!mail_header_value(data, len, name, out, outlen))
        return;
    char *p = out + (out[0] == '<');
    size_t n = strcspn(p, ">");
    memmove(out, p, n);
    out[n] = '\0';
}

/* RFC 6109 §5.3: providers exchange mail over TLS, and the incoming point
 * accepts cleartext for ordinary mail.  A PEC message (envelope, receipt,
 * anomaly) that another provider sent over cleartext is taken in ([pec]
 * cleartext_pec = accept; with refuse, pecd refused it after the data): the
 * evidence log records the missing TLS and the client, with the message's
 * identifiers so that `pecctl trace` shows it. */
static int cleartext_event(struct roles *r, const struct queue_env *env, const char *data,
                           size_t len, char *err, size_t errlen)
{
    char tr[64] = "", ri[64] = "";
    if (env->tls != NULL || env->listener == NULL || strcmp(env->listener, "mx") != 0)
        return 0;
    bool envelope = mail_header_value(data, len, "X-Trasporto", tr, sizeof tr);
    if (!envelope && !mail_header_value(data, len, "X-Ricevuta", ri, sizeof ri))
        return 0;   /* ordinary mail: cleartext is what §5.3 allows */
    char mid[512], ref[512], outcome[512];
    header_id(data, len, "Message-ID", mid, sizeof mid);
    header_id(data, len, "X-Riferimento-Message-ID", ref, sizeof ref);
    snprintf(outcome, sizeof outcome, "tls=none client=%s helo=%.200s",
             env->client_ip ? env->client_ip : "unknown", env->helo ? env->helo : "");
    GString *to = g_string_new(NULL);
    for (size_t i = 0; i < env->nrcpts; i++)
        g_string_append_printf(to, "%s%s", i ? ", " : "", env->rcpts[i].addr);
    bool busta = envelope && strcasecmp(tr, "posta-certificata") == 0;
    int rc = role_event(r, &(struct role_ev){.type = "ricezione-senza-tls", .qid = env->qid,
                                             .pec_id = busta && mid[0] ? mid : NULL,
                                             .orig_msgid = ref[0] ? ref : NULL,
                                             .message_id = mid[0] ? mid : NULL,
                                             .sender = env->sender, .rcpts = to->str,
                                             .outcome = outcome}, err, errlen);
    g_string_free(to, TRUE);
    if (rc == 0)
        log_warn("%s: PEC %s from <%s> received without TLS from %s (RFC 6109 section 5.3)",
                 env->qid, busta ? "envelope" : envelope ? "anomaly envelope" : "receipt",
                 env->sender, env->client_ip ? env->client_ip : "unknown");
    return rc;
}

/* The stage's instant (§4.1): now, or, for a stage run again whose events
 * were stored the first time (its outputs were not), the instant those
 * events recorded, so the messages it builds again carry it too. */
static time_t stage_time(struct roles *r, const struct queue_env *env, bool recovered)
{
    time_t t;
    if (r->ev != NULL && (recovered || env->attempts > 0) &&
        evidence_stage_time(r->ev, env->qid, &t) == 1)
        return t;
    return time(NULL);
}

static int run_role(struct roles *r, const struct queue_env *env, const char *data, size_t len,
                    bool recovered, struct queue_outputs *out, char *err, size_t errlen)
{
    switch (pec_stage_parse(env->stage)) {
    case PEC_STAGE_SUBMISSION:
        return role_access_point(r, env, data, len, recovered, out, err, errlen);
    case PEC_STAGE_INCOMING:
        if (cleartext_event(r, env, data, len, err, errlen) == -1)
            return -1;
        return role_incoming_point(r, env, data, len, recovered, out, err, errlen);
    case PEC_STAGE_DELIVERY:
        return role_delivery_retry(r, env, data, len, recovered, out, err, errlen);
    case PEC_STAGE_NOTICES:
        return role_notices(r, env, data, len, recovered, out, err, errlen);
    case PEC_STAGE_NONE:
    case PEC_STAGE_UNKNOWN:
        break;
    }
    str_fmt(err, errlen, "unknown stage '%s'", env->stage ? env->stage : "");
    return -1;
}

int roles_process(void *arg, const struct queue_env *env, const char *data, size_t len,
                  bool recovered, struct queue_outputs *out, char *err, size_t errlen)
{
    struct roles *r = arg;
    role_set_instant(out, stage_time(r, env, recovered));
    /* a stage that fails leaves no event: its outputs are dropped too, and
     * when it runs again it logs what it then does, at that instant */
    size_t mark = evidence_batch_mark(r->ev);
    int rc = run_role(r, env, data, len, recovered, out, err, errlen);
    if (rc == -1)
        evidence_batch_rollback(r->ev, mark);
    role_clear_instant();
    return rc;
}
