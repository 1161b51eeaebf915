/*
 * roles_access.c - the access point (RFC 6109 §3.1) as the stage "submission":
 * formal checks, then non-acceptance, or acceptance and one transport
 * envelope; a message the stage found a virus in gets a non-acceptance for
 * virus (§3.1.3).  The envelope re-originates the user's message, so it
 * carries her RFC 8689 tag (§6): REQUIRETLS on MAIL, or the header field
 * "TLS-Required: No".  Split from roles.c (see there and roles_int.h).
 */
#include "lib/metrics.h"
#include "roles_int.h"
#include "roles.h"
#include "transport.h"
#include "lib/config.h"
#include "lib/domains.h"
#include "lib/lib.h"
#include "mime/mime.h"
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
    int rc = role_build(r, a, &m, err, errlen);
    if (rc == 0)
        rc = role_event(r, &(struct role_ev){.type = "non-accettazione", .qid = env->qid,
                                             .pec_id = a->pec_id, .orig_msgid = omid,
                                             .message_id = a->message_id, .sender = env->sender,
                                             .subject = subj, .outcome = why}, err, errlen);
    if (rc == 0)
        rc = role_callout_event(r, env, a->pec_id, omid, err, errlen);
    if (rc == 0)
        rc = role_send_to(r, env, recovered, out, env->sender, &m, err, errlen);
    if (rc == 0) {
        metric_inc(&metric_pec_transactions, "access", "not-accepted");
        log_tagged(LOG_LVL_INFO, &(struct log_fields){.qid = env->qid, .pec_id = a->pec_id, .event = "accettazione", .result = "not-accepted"},
                   "%s: not accepted: %s (PEC %s)", env->qid, why, a->pec_id);
    }
    pec_buf_free(&m);
    return rc;
}

/* ---- access point (§3.1) ------------------------------------------------------- */

/* The envelope's bytes with "TLS-Required: No" added at the end of its header
 * block (outside the signed part, which the header is not in), when the
 * submitted message waived TLS (RFC 8689 §3, §4.1) and did not ask for
 * REQUIRETLS (then the header field is ignored, §4.1); NULL otherwise or when
 * the header block has no end.  free() it. */
static char *envelope_tls_optional(const struct queue_env *env, const char *data, size_t len,
                                   const pec_buf *m, size_t *outlen)
{
    if (env->requiretls || !transport_tls_required_no(data, len) ||
        transport_tls_required_no((const char *)m->data, m->len))
        return NULL;
    const unsigned char *end = memmem(m->data, m->len, "\r\n\r\n", 4);
    if (end == NULL)
        return NULL;
    static const char field[] = "TLS-Required: No\r\n";
    size_t head = (size_t)(end - m->data) + 2, flen = sizeof field - 1;
    char *out = malloc(m->len + flen);
    if (out == NULL)
        return NULL;
    memcpy(out, m->data, head);
    memcpy(out + head, field, flen);
    memcpy(out + head + flen, m->data + head, m->len - head);
    *outlen = m->len + flen;
    return out;
}

int role_access_point(struct roles *r, const struct queue_env *env, const char *data,
                      size_t len, bool recovered, struct queue_outputs *out, char *err,
                      size_t errlen)
{
    time_t now = out->when;
    const char **fwd = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *fwd);
    pec_recipient *rcpts = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *rcpts);
    for (size_t i = 0; i < env->nrcpts; i++) {
        fwd[i] = env->rcpts[i].orig ? env->rcpts[i].orig : env->rcpts[i].addr;
        rcpts[i].addr = (char *)fwd[i];
        rcpts[i].kind = roles_is_pec_domain(r, domain_of(fwd[i])) ? PEC_RCPT_CERTIFICATO
                                                                   : PEC_RCPT_ESTERNO;
    }
    /* the PEC msgid comes from the queue id, so a stage run again after a
     * crash gives the same message the same identity */
    char pec_id[256];
    role_source_id(r, env, 0, pec_id, sizeof pec_id);
    /* the receipt to the sender (acceptance or non-acceptance) is a message of
     * its own: its Message-ID is the first one the stage makes (docs/pec.md),
     * never the envelope's (RFC 5322 §3.6.4: one message, one identifier) */
    char receipt_id[256];
    role_stage_id(r, env, out, receipt_id, sizeof receipt_id);
    pec_check_input in = {.msg = data, .len = len, .reverse_path = env->sender,
                          .forward_paths = fwd, .n_forward = env->nrcpts,
                          .max_total = r->cfg->pec_max_total};
    pec_check_result cr;
    pec_build_args a = {.original = data, .original_len = len, .sender = env->sender,
                        .recipients = rcpts, .n_recipients = env->nrcpts, .when = now,
                        .pec_id = pec_id, .message_id = receipt_id};
    pec_buf m = {0}, envelope = {0};
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
        if (role_build(r, &a, &m, err, errlen) == 0 &&
            role_event(r, &(struct role_ev){.type = "non-accettazione", .qid = env->qid,
                                            .pec_id = pec_id, .message_id = receipt_id,
                                            .sender = env->sender, .subject = subj0,
                                            .outcome = cr.detail}, err, errlen) == 0) {
            rc = role_send_to(r, env, recovered, out, env->sender, &m, err, errlen);
        }
        goto done;
    }
    /* §3.1.4: the receipt type the sender asks for (X-TipoRicevuta), else
     * their domain's default (local_domains_file receipt=), else completa */
    char tipo[32];
    a.variant = PEC_VARIANT_COMPLETA;
    const struct domain *dom = domains_get(r->cfg->domains, domain_of(env->sender));
    if (dom != NULL && dom->receipt != NULL)
        a.variant = pec_variant_parse(dom->receipt);
    if (mail_header_value(data, len, "X-TipoRicevuta", tipo, sizeof tipo)) {
        pec_variant v = pec_variant_parse(tipo);
        if (v != PEC_VARIANT_NONE)
            a.variant = v;
    }
    /* §3.1.4: the acceptance receipt, and §3.1.5: the transport envelope,
     * signed in one request to the signer process */
    pec_build_args both[2] = {a, a};
    both[0].type = PEC_TYPE_ACCETTAZIONE;
    both[1].type = PEC_TYPE_POSTA_CERTIFICATA;
    both[1].message_id = NULL;   /* the envelope's Message-ID is the PEC msgid (§2.2.1) */
    pec_buf made[2];
    if (role_build_n(r, both, 2, made, err, errlen) == -1)
        goto done;
    m = made[0];
    envelope = made[1];
    /* the original's Message-ID as the acceptance quotes it: the timeout
     * notices (§3.1.6) quote the same, from the tracking record */
    char ref[1000];
    const char *orig_ref = NULL;
    if (mail_header_value((const char *)m.data, m.len, "X-Riferimento-Message-ID", ref,
                          sizeof ref) &&
        ref[0] == '<' && strlen(ref) < sizeof ref - 1 && ref[strlen(ref) - 1] == '>')
        orig_ref = ref;
    /* <risposte> as the acceptance certifies it (§4.4: the original's
     * Reply-To, else the sender): the timeout notices certify the same */
    char risposte[512] = "", rt[1000];
    if (mail_header_value(data, len, "Reply-To", rt, sizeof rt)) {
        char *first = mime_first_address(rt);
        if (first != NULL)
            str_copy(risposte, first, sizeof risposte);
        free(first);
    }
    if (role_send_to(r, env, recovered, out, env->sender, &m, err, errlen) == -1)
        goto done;
    pec_buf_free(&m);
    m = envelope;
    envelope = (pec_buf){0};
    /* her RFC 8689 tag follows her content: REQUIRETLS on the outputs,
     * TLS-Required: No in the envelope's header */
    size_t elen = m.len;
    char *tagged = envelope_tls_optional(env, data, len, &m, &elen);
    const char *edata = tagged != NULL ? tagged : (const char *)m.data;
    /* SMTP paths unchanged (§3.1.5): MAIL FROM the sender, RCPT TO the
     * recipients; ours go through our incoming point (§3.4) */
    const char **local = xcalloc(env->nrcpts, sizeof *local), **remote = xcalloc(env->nrcpts, sizeof *remote);
    const char **remote_pec = xcalloc(env->nrcpts, sizeof *remote_pec);
    size_t nl = 0, nr = 0, np = 0;
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (config_is_local_domain(r->cfg, domain_of(env->rcpts[i].addr)))
            local[nl++] = env->rcpts[i].addr;
        else if (rcpts[i].kind == PEC_RCPT_CERTIFICATO)
            remote_pec[np++] = env->rcpts[i].addr;
        else
            remote[nr++] = env->rcpts[i].addr;
    }
    if (nl > 0) {
        struct queue_rcpt *qr = xcalloc(nl, sizeof *qr);
        for (size_t i = 0; i < nl; i++)
            qr[i].addr = qr[i].orig = (char *)local[i];
        struct queue_env e = {.sender = env->sender, .rcpts = qr, .nrcpts = nl,
                              .stage = (char *)pec_stage_name(PEC_STAGE_INCOMING),
                              .listener = "pec", .proto = "local", .requiretls = env->requiretls};
        queue_outputs_add(out, &e, edata, elen);
        free(qr);
    }
    if (nr > 0)   /* esterno: ordinary mail, retried for [queue] lifetime with reports */
        role_add_output_for(out, env, env->sender, remote, nr, NULL, edata, elen);
    if (np > 0) {
        /* another provider's: after [timers] mancata_consegna the 24 h notice
         * has ended the transaction negatively and told the sender (§3.1.6),
         * so the envelope is not retried further and no unsigned report
         * follows days later */
        role_add_output_for(out, env, env->sender, remote_pec, np, NULL, edata, elen);
        out->v[out->n - 1].env.deadline = r->cfg->timer_mancata_consegna;
    }
    free(tagged);
    free(local);
    free(remote);
    free(remote_pec);
    /* §3.1.6: receipts are expected from certificato recipients only */
    if (r->tracking != NULL) {
        const char **cert = xcalloc(env->nrcpts, sizeof *cert);
        size_t nc = 0;
        GString *all = g_string_new(NULL);
        for (size_t i = 0; i < env->nrcpts; i++) {
            g_string_append_printf(all, "%s%s", i ? ", " : "", rcpts[i].addr);
            if (rcpts[i].kind == PEC_RCPT_CERTIFICATO)
                cert[nc++] = rcpts[i].addr;
        }
        char subj[1024] = "";
        mail_header_value(data, len, "Subject", subj, sizeof subj);
        /* <risposte> as the acceptance certified it: the notices certify it too */
        struct tracking_expect_args ta = {.pec_id = pec_id, .orig_msgid = orig_ref,
                                          .reply_to = risposte[0] ? risposte : NULL,
                                          .sender = env->sender, .subject = subj,
                                          .recipients = all->str, .rcpts = cert, .n = nc,
                                          .sent = now};
        int tr = tracking_expect(r->tracking, &ta);
        char omid[512] = "";
        mail_header_value(data, len, "Message-ID", omid, sizeof omid);
        if (tr == 0 &&
            (role_event(r, &(struct role_ev){.type = "accettazione", .qid = env->qid,
                                             .pec_id = pec_id, .orig_msgid = omid,
                                             .message_id = receipt_id, .sender = env->sender,
                                             .rcpts = all->str, .subject = subj, .outcome = "ok"},
                        err, errlen) == -1 ||
             role_callout_event(r, env, pec_id, omid, err, errlen) == -1 ||
             role_event(r, &(struct role_ev){.type = "busta-trasporto", .qid = env->qid,
                                             .pec_id = pec_id, .orig_msgid = omid,
                                             .message_id = pec_id, .sender = env->sender,
                                             .rcpts = all->str, .subject = subj,
                                             .outcome = "inviata"}, err, errlen) == -1))
            tr = -1;
        g_string_free(all, TRUE);
        free(cert);
        if (tr == -1) {
            snprintf(err, errlen, "cannot record the receipts expected for %s", pec_id);
            queue_outputs_free(out);
            goto done;
        }
    }
    metric_inc(&metric_pec_transactions, "access", "accepted");
    log_tagged(LOG_LVL_INFO, &(struct log_fields){.qid = env->qid, .pec_id = pec_id, .event = "accettazione", .result = "accepted"},
               "%s: accepted as PEC %s for %zu recipient%s", env->qid, pec_id, env->nrcpts,
             env->nrcpts == 1 ? "" : "s");
    rc = 0;
done:
    pec_buf_free(&m);
    pec_buf_free(&envelope);
    free(fwd);
    free(rcpts);
    return rc;
}
