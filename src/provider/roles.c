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
 */
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

struct roles {
    const struct config *cfg;
    struct transport *transport;
    struct users_db *users;
    struct tracking *tracking;
    struct evidence *ev;
    pec_signer *signer;
    pec_identity id;
    struct pec_dirmgr *dirs;       /* directory + trust: a snapshot per use */
    char *dir_password;            /* [pec] directory_password(_file) */
    atomic_ulong seq;
};

static char *read_all(const char *path, size_t *len, char *err, size_t errlen)
{
    char *buf;
    if (fs_read_file(path, &buf, len, 16 * 1024 * 1024) == -1) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    return buf;
}

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
                        struct tracking *tracking, char *err, size_t errlen)
{
    struct roles *r = calloc(1, sizeof *r);
    r->cfg = cfg;
    r->tracking = tracking;
    r->transport = t;
    r->users = users;
    size_t klen, clen;
    char *key = read_all(cfg->pec_signing_key, &klen, err, errlen);
    char *chain = key ? read_all(cfg->pec_signing_cert, &clen, err, errlen) : NULL;
    char e2[256] = "";
    if (chain != NULL) {
        r->signer = pec_signer_new_pem(key, klen, chain, clen, e2, sizeof e2);
        if (r->signer == NULL)
            snprintf(err, errlen, "[pec] signing key/certificate: %s", e2);
    }
    if (key)
        explicit_bzero(key, klen);
    free(key);
    free(chain);
    if (r->signer == NULL || load_directory(r, cfg, err, errlen) == -1) {
        roles_free(r);
        return NULL;
    }
    r->id.domain = cfg->domain;
    r->id.name = cfg->name;
    r->id.signer = r->signer;
    return r;
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
    pec_signer_free(r->signer);
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

void roles_set_evidence(struct roles *r, struct evidence *ev)
{
    r->ev = ev;
    if (ev != NULL)
        evidence_set_signer(ev, ev_sign, r->signer);
}

/* One event of the evidence log (§2.3).  Keyed by queue id, type and
 * recipient, so a stage run again after a crash does not log twice. */
static int event(struct roles *r, const char *type, const char *qid, const char *pec_id,
                 const char *orig_msgid, const char *message_id, const char *sender,
                 const char *rcpts, const char *subject, const char *outcome, const char *key)
{
    if (r->ev == NULL)
        return 0;
    char dk[600], e[256];
    snprintf(dk, sizeof dk, "%s:%s:%s", qid, type, key ? key : "");
    char om[512] = "";
    if (orig_msgid) {
        str_copy(om, orig_msgid[0] == '<' ? orig_msgid + 1 : orig_msgid, sizeof om);
        char *gt = strchr(om, '>');
        if (gt)
            *gt = '\0';
    }
    struct evidence_event ee = {.type = type, .pec_id = pec_id, .orig_msgid = om[0] ? om : NULL,
                                .message_id = message_id, .sender = sender, .recipients = rcpts,
                                .subject = subject, .outcome = outcome, .queue_id = qid,
                                .dedupe_key = dk, .when = time(NULL)};
    if (evidence_append(r->ev, &ee, e, sizeof e) == -1) {
        log_err("%s: evidence log: %s", qid, e);
        return -1;
    }
    return 0;
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

/* ---- helpers ------------------------------------------------------------------ */

static const char *domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : "";
}

static void make_id(struct roles *r, char *buf, size_t size, time_t when)
{
    unsigned long n = atomic_fetch_add(&r->seq, 1);
    pec_make_msgid(buf, size, r->cfg->domain, when, n);
}

/* A system message from posta-certificata@<domain> to one address. */
static void add_output(struct queue_outputs *out, const char *from, const char *const *to,
                       size_t nto, const char *stage, const pec_buf *msg)
{
    struct queue_rcpt *rc = calloc(nto ? nto : 1, sizeof *rc);
    for (size_t i = 0; i < nto; i++) {
        rc[i].addr = (char *)to[i];
        rc[i].orig = (char *)to[i];
    }
    struct queue_env e = {.sender = (char *)from, .rcpts = rc, .nrcpts = nto,
                          .stage = (char *)stage, .listener = "pec", .proto = "local"};
    queue_outputs_add(out, &e, msg->data, msg->len);
    free(rc);
}

static int build(struct roles *r, pec_build_args *a, pec_buf *m, char *err, size_t errlen)
{
    char e2[256];
    if (pec_build(&r->id, a, m, e2, sizeof e2) == -1) {
        snprintf(err, errlen, "cannot build %s: %s", pec_type_name(a->type), e2);
        return -1;
    }
    return 0;
}

/* Copies of data for our own mailboxes to[], stored by the stage itself and
 * published at its commit point (no queue file, no second pass).  Named
 * after the source message, so a stage run again after a crash finds them. */
static int store_copies(struct roles *r, const struct queue_env *src, bool recovered,
                        const char *sender, const char *const *to, size_t nto, const void *data,
                        size_t len, struct queue_outputs *out, char *err, size_t errlen)
{
    struct queue_rcpt *rc = calloc(nto ? nto : 1, sizeof *rc);
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

/* A system message from our service address: our users get it straight into
 * the mailbox, others' are relayed. */
static int send_to(struct roles *r, const struct queue_env *src, bool recovered,
                   struct queue_outputs *out, const char *to, const pec_buf *m, char *err,
                   size_t errlen)
{
    const char *rcpt[1] = {to};
    if (config_is_local_domain(r->cfg, domain_of(to)))
        return store_copies(r, src, recovered, r->cfg->pec_service_address, rcpt, 1, m->data,
                            m->len, out, err, errlen);
    add_output(out, r->cfg->pec_service_address, rcpt, 1, NULL, m);
    return 0;
}

/* ---- callouts and viruses (RFC 6109 §3.1.3, §3.2.3, §3.2.4; src/filters) ------- */

/* The callouts that acted on a message (its REC_CALLOUT trace), in the
 * evidence log so `pecctl trace` shows them (RFC 3238 §2.3). */
static int callout_event(struct roles *r, const struct queue_env *env, const char *pec_id,
                         const char *omid)
{
    if (env->callouts == NULL || env->callouts[0] == '\0')
        return 0;
    return event(r, "callout", env->qid, pec_id, omid, NULL, env->sender, NULL, NULL,
                 env->callouts, NULL);
}

/* Access point: the stage found a virus (and quarantined the message):
 * a non-acceptance for virus to the sender, nothing sent on (§3.1.3). */
static int access_virus(struct roles *r, const struct queue_env *env, const char *data,
                        size_t len, bool recovered, pec_build_args *a, struct queue_outputs *out,
                        char *err, size_t errlen)
{
    char why[300], subj[1024] = "", omid[512] = "";
    snprintf(why, sizeof why, "virus %s", env->virus);
    mail_header_value(data, len, "Subject", subj, sizeof subj);
    mail_header_value(data, len, "Message-ID", omid, sizeof omid);
    a->type = PEC_TYPE_NON_ACCETTAZIONE;
    a->errore = PEC_ERRORE_VIRUS;
    a->errore_esteso = env->virus;
    pec_buf m = {0};
    int rc = build(r, a, &m, err, errlen);
    if (rc == 0)
        rc = event(r, "non-accettazione", env->qid, a->pec_id, omid, NULL, env->sender, NULL,
                   subj, why, NULL);
    if (rc == 0)
        rc = callout_event(r, env, a->pec_id, omid);
    if (rc == 0)
        rc = send_to(r, env, recovered, out, env->sender, &m, err, errlen);
    if (rc == 0) {
        log_info("%s: not accepted: %s (PEC %s)", env->qid, why, a->pec_id);
    } else if (err[0] == '\0') {
        snprintf(err, errlen, "evidence log unavailable");
    }
    pec_buf_free(&m);
    return rc;
}

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
    if (callout_event(r, env, d && d->identificativo ? d->identificativo : NULL,
                      d ? d->msgid : NULL) == -1) {
        snprintf(err, errlen, "evidence log unavailable");
        return -1;
    }
    for (size_t i = 0; i < env->nrcpts; i++) {
        time_t now = time(NULL);
        char mid[256];
        make_id(r, mid, sizeof mid, now);
        const char *rcpt = env->rcpts[i].addr;
        pec_build_args a = {.type = PEC_TYPE_RILEVAZIONE_VIRUS, .errore = PEC_ERRORE_VIRUS,
                            .sender = d && d->mittente ? d->mittente : env->sender,
                            .recipients = d ? d->destinatari : NULL,
                            .n_recipients = d ? d->n_destinatari : 0, .when = now,
                            .pec_id = d && d->identificativo ? d->identificativo : "",
                            .orig_msgid = d ? d->msgid : NULL, .message_id = mid,
                            .notify_to = p && p->receipt ? p->receipt : NULL, .consegna = rcpt,
                            .subject = d ? d->oggetto : NULL, .errore_esteso = env->virus};
        pec_buf m = {0};
        int rc = a.notify_to ? build(r, &a, &m, err, errlen) : 0;
        if (rc == 0)
            rc = event(r, "rilevazione-virus", env->qid, a.pec_id, a.orig_msgid, mid, a.sender,
                       rcpt, a.subject, why, rcpt);
        if (rc == 0 && a.notify_to)
            rc = send_to(r, env, recovered, out, a.notify_to, &m, err, errlen);
        pec_buf_free(&m);
        if (rc == -1) {
            if (err[0] == '\0')
                snprintf(err, errlen, "evidence log unavailable");
            return -1;
        }
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
    time_t now = time(NULL);
    char mid[256];
    make_id(r, mid, sizeof mid, now);
    pec_build_args a = {.type = PEC_TYPE_ERRORE_CONSEGNA, .errore = PEC_ERRORE_VIRUS,
                        .sender = d->mittente, .recipients = d->destinatari,
                        .n_recipients = d->n_destinatari, .when = now,
                        .pec_id = d->identificativo, .orig_msgid = d->msgid, .message_id = mid,
                        .consegna = d->consegna, .subject = d->oggetto,
                        .errore_esteso = d->errore_esteso ? d->errore_esteso : "virus"};
    pec_buf m = {0};
    int rc = build(r, &a, &m, err, errlen);
    if (rc == 0)
        rc = event(r, "errore-consegna", env->qid, a.pec_id, a.orig_msgid, mid, a.sender,
                   d->consegna, a.subject, "virus", d->consegna);
    if (rc == 0)
        rc = send_to(r, env, recovered, out, d->mittente, &m, err, errlen);
    if (rc == 0) {
        log_info("%s: virus detected at <%s> for PEC %s: non-delivery to <%s>", env->qid,
                 d->consegna, a.pec_id, d->mittente);
    }
    pec_buf_free(&m);
    return rc;
}

/* ---- access point (§3.1) ------------------------------------------------------- */

static int access_point(struct roles *r, const struct queue_env *env, const char *data,
                        size_t len, bool recovered, struct queue_outputs *out, char *err,
                        size_t errlen)
{
    time_t now = time(NULL);
    const char **fwd = calloc(env->nrcpts ? env->nrcpts : 1, sizeof *fwd);
    pec_recipient *rcpts = calloc(env->nrcpts ? env->nrcpts : 1, sizeof *rcpts);
    for (size_t i = 0; i < env->nrcpts; i++) {
        fwd[i] = env->rcpts[i].orig ? env->rcpts[i].orig : env->rcpts[i].addr;
        rcpts[i].addr = (char *)fwd[i];
        rcpts[i].kind = roles_is_pec_domain(r, domain_of(fwd[i])) ? PEC_RCPT_CERTIFICATO
                                                                   : PEC_RCPT_ESTERNO;
    }
    /* the PEC msgid comes from the queue id, so a stage run again after a
     * crash gives the same message the same identity */
    char pec_id[256], stamp[32];
    struct tm tm;
    localtime_r(&env->arrival, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
    snprintf(pec_id, sizeof pec_id, "opec1.%s.%s@%s", stamp, env->qid, r->cfg->domain);
    pec_check_input in = {.msg = data, .len = len, .reverse_path = env->sender,
                          .forward_paths = fwd, .n_forward = env->nrcpts,
                          .max_total = r->cfg->pec_max_total};
    pec_check_result cr;
    pec_build_args a = {.original = data, .original_len = len, .sender = env->sender,
                        .recipients = rcpts, .n_recipients = env->nrcpts, .when = now,
                        .pec_id = pec_id};
    pec_buf m = {0};
    int rc = -1;
    if (env->virus != NULL) {
        rc = access_virus(r, env, data, len, recovered, &a, out, err, errlen);
        goto done;
    }
    if (pec_check_submission(&in, &cr) == -1) {
        /* §3.1.2: nothing is sent on; the sender learns why */
        a.type = PEC_TYPE_NON_ACCETTAZIONE;
        a.errore = PEC_ERRORE_ALTRO;
        a.errore_esteso = cr.detail;
        log_info("%s: not accepted (%s): %s", env->qid, pec_check_rule_name(cr.rule), cr.detail);
        char subj0[1024] = "";
        mail_header_value(data, len, "Subject", subj0, sizeof subj0);
        if (build(r, &a, &m, err, errlen) == 0 &&
            event(r, "non-accettazione", env->qid, pec_id, NULL, NULL, env->sender, NULL, subj0,
                  cr.detail, NULL) == 0) {
            rc = send_to(r, env, recovered, out, env->sender, &m, err, errlen);
        } else if (err[0] == '\0') {
            snprintf(err, errlen, "evidence log unavailable");
        }
        goto done;
    }
    char tipo[32];
    a.variant = PEC_VARIANT_COMPLETA;
    if (mail_header_value(data, len, "X-TipoRicevuta", tipo, sizeof tipo)) {
        pec_variant v = pec_variant_parse(tipo);
        if (v != PEC_VARIANT_NONE)
            a.variant = v;
    }
    /* §3.1.4: the acceptance receipt, then §3.1.5: the transport envelope */
    a.type = PEC_TYPE_ACCETTAZIONE;
    if (build(r, &a, &m, err, errlen) == -1)
        goto done;
    if (send_to(r, env, recovered, out, env->sender, &m, err, errlen) == -1)
        goto done;
    pec_buf_free(&m);
    a.type = PEC_TYPE_POSTA_CERTIFICATA;
    if (build(r, &a, &m, err, errlen) == -1) {
        queue_outputs_free(out);
        goto done;
    }
    /* SMTP paths unchanged (§3.1.5): MAIL FROM the sender, RCPT TO the
     * recipients; ours go through our incoming point (§3.4) */
    const char **local = calloc(env->nrcpts, sizeof *local), **remote = calloc(env->nrcpts, sizeof *remote);
    size_t nl = 0, nr = 0;
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (config_is_local_domain(r->cfg, domain_of(env->rcpts[i].addr)))
            local[nl++] = env->rcpts[i].addr;
        else
            remote[nr++] = env->rcpts[i].addr;
    }
    if (nl > 0) {
        struct queue_rcpt *qr = calloc(nl, sizeof *qr);
        for (size_t i = 0; i < nl; i++)
            qr[i].addr = qr[i].orig = (char *)local[i];
        struct queue_env e = {.sender = env->sender, .rcpts = qr, .nrcpts = nl,
                              .stage = "incoming", .listener = "pec", .proto = "local"};
        queue_outputs_add(out, &e, m.data, m.len);
        free(qr);
    }
    if (nr > 0)
        add_output(out, env->sender, remote, nr, NULL, &m);
    free(local);
    free(remote);
    /* §3.1.6: receipts are expected from certificato recipients only */
    if (r->tracking != NULL) {
        const char **cert = calloc(env->nrcpts, sizeof *cert);
        size_t nc = 0;
        GString *all = g_string_new(NULL);
        for (size_t i = 0; i < env->nrcpts; i++) {
            g_string_append_printf(all, "%s%s", i ? ", " : "", rcpts[i].addr);
            if (rcpts[i].kind == PEC_RCPT_CERTIFICATO)
                cert[nc++] = rcpts[i].addr;
        }
        char subj[1024] = "";
        mail_header_value(data, len, "Subject", subj, sizeof subj);
        int tr = tracking_expect(r->tracking, pec_id, env->sender, subj, all->str, cert, nc, now);
        char omid[512] = "";
        mail_header_value(data, len, "Message-ID", omid, sizeof omid);
        if (tr == 0 &&
            (event(r, "accettazione", env->qid, pec_id, omid, NULL, env->sender, all->str, subj,
                   "ok", NULL) == -1 || callout_event(r, env, pec_id, omid) == -1 ||
             event(r, "busta-trasporto", env->qid, pec_id, omid, pec_id, env->sender, all->str,
                   subj, "inviata", NULL) == -1))
            tr = -1;
        g_string_free(all, TRUE);
        free(cert);
        if (tr == -1) {
            snprintf(err, errlen, "cannot record the receipts expected for %s", pec_id);
            queue_outputs_free(out);
            goto done;
        }
    }
    log_info("%s: accepted as PEC %s for %zu recipient%s", env->qid, pec_id, env->nrcpts,
             env->nrcpts == 1 ? "" : "s");
    rc = 0;
done:
    pec_buf_free(&m);
    free(fwd);
    free(rcpts);
    return rc;
}

/* ---- incoming point and delivery point (§3.2, §3.3) -------------------------------- */

/* Which receipt variant recipient rcpt gets (digest (c)): Cc recipients get
 * sintetica; To (or ambiguous) the requested one. */
static pec_variant variant_for(const char *data, size_t len, const char *rcpt, pec_variant asked)
{
    char to[4096] = "", cc[4096] = "";
    mail_header_value(data, len, "To", to, sizeof to);
    mail_header_value(data, len, "Cc", cc, sizeof cc);
    bool in_to = strcasestr(to, rcpt) != NULL, in_cc = strcasestr(cc, rcpt) != NULL;
    if (in_cc && !in_to)
        return PEC_VARIANT_SINTETICA;
    return asked == PEC_VARIANT_NONE ? PEC_VARIANT_COMPLETA : asked;
}

static int delivery_point(struct roles *r, const struct queue_env *env, const char *data,
                          size_t len, bool recovered, const pec_verdict *v,
                          struct queue_outputs *out, char *err, size_t errlen)
{
    const pec_daticert *d = v->daticert;
    pec_buf orig = {0};
    char e2[256];
    bool have_orig = pec_envelope_original(data, len, &orig, e2, sizeof e2) == 0;
    int rc = 0;
    /* store first, for every recipient with a mailbox (one LMTP transaction
     * with [delivery] mailbox = lmtp:); then one receipt per recipient */
    struct deliver_rcpt *st = calloc(env->nrcpts ? env->nrcpts : 1, sizeof *st);
    for (size_t i = 0; i < env->nrcpts && rc == 0; i++) {
        int ex = users_db_lookup(r->users, env->rcpts[i].addr);
        st[i].pending = ex != 0;   /* -2: the LMTP server decides */
        if (ex == -1) {
            snprintf(err, errlen, "cannot tell whether <%s> exists: users source unavailable",
                     env->rcpts[i].addr);
            rc = -1;
        }
    }
    if (rc == 0)
        transport_store_local_all(r->transport, env, data, len, recovered, st, out);
    for (size_t i = 0; i < env->nrcpts && rc == 0; i++) {
        const char *addr = env->rcpts[i].addr;
        time_t now = time(NULL);
        char mid[256];
        make_id(r, mid, sizeof mid, now);
        pec_build_args a = {.sender = d && d->mittente ? d->mittente : env->sender,
                            .recipients = d ? d->destinatari : NULL,
                            .n_recipients = d ? d->n_destinatari : 0,
                            .when = now, .pec_id = d && d->identificativo ? d->identificativo : "",
                            .orig_msgid = d ? d->msgid : NULL, .message_id = mid,
                            .consegna = addr, .subject = d ? d->oggetto : NULL};
        pec_buf m = {0}, breve = {0};
        if (!st[i].pending || st[i].result == DELIVER_PERMFAIL) {
            /* §3.3.3: the envelope was correct, the mailbox is not there
             * (or the LMTP server refused it for good) */
            a.type = PEC_TYPE_ERRORE_CONSEGNA;
            a.errore = PEC_ERRORE_NO_DEST;
            char why[300];
            if (st[i].pending)
                snprintf(why, sizeof why, "%.200s - %s", st[i].text, r->cfg->name);
            else
                snprintf(why, sizeof why, "5.1.1 - %s - indirizzo non valido", r->cfg->name);
            a.errore_esteso = why;
            log_info("%s: PEC %s to <%s>: no such mailbox", env->qid, a.pec_id, addr);
            rc = build(r, &a, &m, err, errlen);
            if (rc == 0)
                rc = event(r, "errore-consegna", env->qid, a.pec_id, a.orig_msgid, mid, a.sender,
                           addr, a.subject, why, addr);
        } else {
            if (st[i].result != DELIVER_OK) {
                snprintf(err, errlen, "cannot store the envelope for <%s>: %s", addr,
                         st[i].text);
                rc = -1;
                break;
            }
            /* §3.3.2: the receipt follows the stored envelope */
            a.type = PEC_TYPE_AVVENUTA_CONSEGNA;
            a.variant = variant_for(have_orig ? (const char *)orig.data : data,
                                    have_orig ? orig.len : len, addr,
                                    d ? d->ricevuta : PEC_VARIANT_COMPLETA);
            if (a.variant == PEC_VARIANT_BREVE && have_orig &&
                pec_breve_transform(orig.data, orig.len, &breve, e2, sizeof e2) == 0) {
                a.original = breve.data;
                a.original_len = breve.len;
            } else if (a.variant == PEC_VARIANT_BREVE || a.variant == PEC_VARIANT_COMPLETA) {
                if (!have_orig)
                    a.variant = PEC_VARIANT_SINTETICA;
                a.original = orig.data;
                a.original_len = orig.len;
            }
            log_info("%s: PEC %s delivered to <%s> (receipt %s)", env->qid, a.pec_id, addr,
                     pec_variant_name(a.variant));
            rc = build(r, &a, &m, err, errlen);
            if (rc == 0)
                rc = event(r, "avvenuta-consegna", env->qid, a.pec_id, a.orig_msgid, mid,
                           a.sender, addr, a.subject, pec_variant_name(a.variant), addr);
        }
        if (rc == 0)
            rc = send_to(r, env, recovered, out, env->sender, &m, err, errlen);
        pec_buf_free(&m);
        pec_buf_free(&breve);
    }
    pec_buf_free(&orig);
    free(st);
    return rc;
}

/* §3.2.2: whatever is not a correct PEC message reaches the mailbox inside a
 * signed anomaly envelope, SMTP paths unchanged. */
static int anomaly(struct roles *r, const struct queue_env *env, const char *data, size_t len,
                   bool recovered, const char *why, struct queue_outputs *out, char *err, size_t errlen)
{
    time_t now = time(NULL);
    char pec_id[256];
    make_id(r, pec_id, sizeof pec_id, now);
    pec_recipient *rc = calloc(env->nrcpts ? env->nrcpts : 1, sizeof *rc);
    for (size_t i = 0; i < env->nrcpts; i++) {
        rc[i].addr = env->rcpts[i].addr;
        rc[i].kind = PEC_RCPT_CERTIFICATO;
    }
    pec_build_args a = {.type = PEC_TYPE_ANOMALIA, .original = data, .original_len = len,
                        .sender = env->sender[0] ? env->sender : "MAILER-DAEMON",
                        .recipients = rc, .n_recipients = env->nrcpts, .when = now,
                        .pec_id = pec_id, .errore_esteso = why};
    pec_buf m = {0};
    int res = build(r, &a, &m, err, errlen);
    free(rc);
    /* only to mailboxes that exist (an anomaly for nobody is not stored) */
    const char **keep = calloc(env->nrcpts ? env->nrcpts : 1, sizeof *keep);
    size_t nk = 0;
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (users_db_exists(r->users, env->rcpts[i].addr))
            keep[nk++] = env->rcpts[i].addr;
        else
            log_warn("%s: anomaly for unknown mailbox <%s> dropped", env->qid, env->rcpts[i].addr);
    }
    if (res == 0 && nk > 0)
        res = store_copies(r, env, recovered, env->sender, keep, nk, m.data, m.len, out, err,
                           errlen);
    if (res == 0 && nk > 0) {
        log_info("%s: anomaly envelope for %zu recipient%s: %s", env->qid, env->nrcpts,
                 env->nrcpts == 1 ? "" : "s", why);
        char omid[512] = "", subj[1024] = "";
        mail_header_value(data, len, "Message-ID", omid, sizeof omid);
        mail_header_value(data, len, "Subject", subj, sizeof subj);
        GString *to = g_string_new(NULL);
        for (size_t i = 0; i < nk; i++)
            g_string_append_printf(to, "%s%s", i ? ", " : "", keep[i]);
        res = event(r, "anomalia", env->qid, pec_id, omid, pec_id, env->sender, to->str, subj,
                    why, NULL);
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

static int incoming_point(struct roles *r, const struct queue_env *env_in, const char *data,
                          size_t len, bool recovered, struct queue_outputs *out, char *err,
                          size_t errlen)
{
    /* a copy the sender transferred again (it never saw our 250) is taken in
     * once per recipient: deduplicated by Message-ID, which is unique for
     * every PEC message (§2.2.1) */
    struct queue_env envc = *env_in;
    const struct queue_env *env = &envc;
    struct queue_rcpt *fresh = calloc(env_in->nrcpts ? env_in->nrcpts : 1, sizeof *fresh);
    char mid[512];
    message_id(data, len, mid, sizeof mid);
    envc.rcpts = fresh;
    envc.nrcpts = 0;
    for (size_t i = 0; i < env_in->nrcpts; i++) {
        int s = mid[0] && r->tracking
                    ? tracking_seen(r->tracking, mid, env_in->rcpts[i].addr, env_in->qid)
                    : 0;
        if (s == -1) {
            free(fresh);
            snprintf(err, errlen, "tracking database unavailable");
            return -1;
        }
        if (s == 1) {
            log_info("%s: <%s> for <%s> was taken in before: duplicate dropped", env_in->qid, mid,
                     env_in->rcpts[i].addr);
            event(r, "duplicato", env_in->qid, NULL, NULL, mid, env_in->sender,
                  env_in->rcpts[i].addr, NULL, "dropped", env_in->rcpts[i].addr);
            continue;
        }
        fresh[envc.nrcpts++] = env_in->rcpts[i];
    }
    if (envc.nrcpts == 0) {
        free(fresh);
        return 0;
    }
    int res = incoming_verified(r, env, data, len, recovered, out, err, errlen);
    free(fresh);
    return res;
}

static int incoming_checked(struct roles *r, const pec_dirsnap *snap,
                            const struct queue_env *env, const char *data, size_t len,
                            bool recovered, struct queue_outputs *out, char *err, size_t errlen);

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
    if (pec_verify(snap->trust, data, len, &v, e2, sizeof e2) == -1)
        return anomaly(r, env, data, len, recovered, "messaggio non leggibile", out, err, errlen);
    int rc;
    if (!v.valid) {
        char why[400];
        snprintf(why, sizeof why, "%s: %s", pec_reason_name(v.reason), v.detail);
        rc = anomaly(r, env, data, len, recovered, why, out, err, errlen);
    } else if (v.cls.type == PEC_TYPE_POSTA_CERTIFICATA) {
        /* §3.2.1: presa in carico to the sender provider, for all our
         * recipients of this transaction */
        const pec_provider *p = pec_directory_by_hash(snap->dir, v.signer_sha1);
        if (env->virus != NULL) {
            rc = incoming_virus(r, env, recovered, &v, p, out, err, errlen);
            pec_verdict_free(&v);
            return rc;
        }
        const char **ric = calloc(env->nrcpts ? env->nrcpts : 1, sizeof *ric);
        for (size_t i = 0; i < env->nrcpts; i++)
            ric[i] = env->rcpts[i].addr;
        time_t now = time(NULL);
        char mid[256];
        make_id(r, mid, sizeof mid, now);
        const pec_daticert *d = v.daticert;
        pec_build_args a = {.type = PEC_TYPE_PRESA_IN_CARICO,
                            .sender = d && d->mittente ? d->mittente : env->sender,
                            .recipients = d ? d->destinatari : NULL,
                            .n_recipients = d ? d->n_destinatari : 0, .when = now,
                            .pec_id = d && d->identificativo ? d->identificativo : "",
                            .orig_msgid = d ? d->msgid : NULL, .message_id = mid,
                            .notify_to = p && p->receipt ? p->receipt : NULL,
                            .ricezione = ric, .n_ricezione = env->nrcpts,
                            .subject = d ? d->oggetto : NULL};
        pec_buf m = {0};
        rc = a.notify_to ? build(r, &a, &m, err, errlen) : 0;
        if (rc == 0) {
            GString *to = g_string_new(NULL);
            for (size_t i = 0; i < env->nrcpts; i++)
                g_string_append_printf(to, "%s%s", i ? ", " : "", ric[i]);
            rc = event(r, "presa-in-carico", env->qid, a.pec_id, a.orig_msgid, mid, a.sender,
                       to->str, a.subject, a.notify_to ? a.notify_to : "provider unknown", NULL);
            g_string_free(to, TRUE);
        }
        if (rc == 0 && a.notify_to)
            rc = send_to(r, env, recovered, out, a.notify_to, &m, err, errlen);
        pec_buf_free(&m);
        free(ric);
        if (rc == 0)
            rc = delivery_point(r, env, data, len, recovered, &v, out, err, errlen);
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
            pec_verdict_free(&v);
            return -1;
        }
        /* a correct receipt or anomaly envelope: unmodified to the mailbox (§3.3) */
        char type[64], mid2[512];
        snprintf(type, sizeof type, "ricevuta:%s", pec_type_name(v.cls.type));
        message_id(data, len, mid2, sizeof mid2);
        GString *to = g_string_new(NULL);
        for (size_t i = 0; i < env->nrcpts; i++)
            g_string_append_printf(to, "%s%s", i ? ", " : "", env->rcpts[i].addr);
        if (event(r, type, env->qid, d ? d->identificativo : NULL, d ? d->msgid : NULL, mid2,
                  env->sender, to->str, d ? d->oggetto : NULL,
                  d && d->consegna ? d->consegna : "ricevuta", NULL) == -1) {
            g_string_free(to, TRUE);
            pec_verdict_free(&v);
            snprintf(err, errlen, "evidence log unavailable");
            return -1;
        }
        g_string_free(to, TRUE);
        const char **addrs = calloc(env->nrcpts ? env->nrcpts : 1, sizeof *addrs);
        for (size_t i = 0; i < env->nrcpts; i++)
            addrs[i] = env->rcpts[i].addr;
        rc = store_copies(r, env, recovered, env->sender, addrs, env->nrcpts, data, len, out,
                          err, errlen);
        free(addrs);
        if (rc == -1) {
            pec_verdict_free(&v);
            return -1;
        }
        log_info("%s: PEC %s for %zu local recipient%s", env->qid, pec_type_name(v.cls.type),
                 env->nrcpts, env->nrcpts == 1 ? "" : "s");
        rc = 0;
    }
    pec_verdict_free(&v);
    return rc;
}

int roles_timeout_notice(struct roles *r, const struct tracking_due *due, struct queue_env *env,
                         struct queue_rcpt *rcpt, char **data, size_t *len, char *err,
                         size_t errlen)
{
    char key[600];
    snprintf(key, sizeof key, "%s:%d", due->rcpt, due->which);
    time_t now = time(NULL);
    char mid[256];
    make_id(r, mid, sizeof mid, now);
    pec_recipient rc = {.addr = due->rcpt, .kind = PEC_RCPT_CERTIFICATO};
    /* §3.1.6 (digest (h)): the two notices share header and XML, not text */
    const char *why = due->which == 1
        ? "non è stato consegnato nelle prime 12 ore. Il messaggio potrebbe non avere esito "
          "positivo; un ulteriore avviso seguirà nelle successive 12 ore."
        : "non è stato consegnato entro 24 ore dall'invio. La transazione si considera "
          "conclusa con esito negativo.";
    pec_build_args a = {.type = PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA, .errore = PEC_ERRORE_ALTRO,
                        .sender = due->sender, .recipients = &rc, .n_recipients = 1,
                        .when = now, .pec_id = due->pec_id, .message_id = mid,
                        .consegna = due->rcpt, .subject = due->subject, .errore_esteso = why};
    pec_buf m = {0};
    if (build(r, &a, &m, err, errlen) == -1)
        return -1;
    event(r, "preavviso-errore-consegna", due->pec_id, due->pec_id, NULL, mid, due->sender,
          due->rcpt, due->subject, due->which == 1 ? "12h" : "24h", key);
    memset(env, 0, sizeof *env);
    memset(rcpt, 0, sizeof *rcpt);
    rcpt->addr = rcpt->orig = due->sender;
    env->sender = (char *)r->cfg->pec_service_address;
    env->rcpts = rcpt;
    env->nrcpts = 1;
    env->listener = "pec";
    env->proto = "local";
    *data = (char *)m.data;
    *len = m.len;
    return 0;
}

int roles_process(void *arg, const struct queue_env *env, const char *data, size_t len,
                  bool recovered, struct queue_outputs *out, char *err, size_t errlen)
{
    struct roles *r = arg;
    if (strcmp(env->stage, "submission") == 0)
        return access_point(r, env, data, len, recovered, out, err, errlen);
    if (strcmp(env->stage, "incoming") == 0)
        return incoming_point(r, env, data, len, recovered, out, err, errlen);
    snprintf(err, errlen, "unknown stage '%s'", env->stage);
    return -1;
}
