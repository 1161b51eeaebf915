/*
 * callout.c - runs the callouts of one message (callout.h): consent, the
 * clamd scan, then each milter of the phase in configuration order.
 *
 * What a filter may do depends on the message (RFC 6109 and docs/opes.md):
 * on ordinary mail every milter action is honoured (reply codes, header and
 * body changes, recipients and sender rewriting, quarantine); on PEC mail
 * only added outer header fields are kept (DKIM-Signature, spam scores),
 * and every other change is refused, logged and traced: the message goes on
 * intact.  A virus in PEC mail is accepted and tagged, because the access
 * and incoming points answer it with signed receipts, not SMTP replies.
 */
#include "callout.h"
#include "clamd.h"
#include "milter.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct callouts {
    const struct config *cfg;
    struct clamd *clamd;
    struct milter_spec specs[CONFIG_MAX_MILTERS];
    bool spec_ok[CONFIG_MAX_MILTERS];
};

bool callout_list_has(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p != NULL && *p != '\0';) {
        p += strspn(p, ", \t");
        size_t k = strcspn(p, ", \t");
        if (k == n && strncmp(p, name, n) == 0)
            return true;
        p += k;
    }
    return false;
}

bool callout_consented(const struct config *cfg, const char *name, const char *sender,
                       const char *const *rcpts, size_t nrcpts)
{
    if (sender != NULL && *sender != '\0' &&
        callout_list_has(config_callouts_for(cfg, sender), name))
        return true;
    for (size_t i = 0; i < nrcpts; i++)
        if (callout_list_has(config_callouts_for(cfg, rcpts[i]), name))
            return true;
    /* the null sender and no recipient policy: the default decides */
    return (sender == NULL || *sender == '\0') && nrcpts == 0 &&
           callout_list_has(cfg->callouts_default, name);
}

struct callouts *callouts_new(const struct config *cfg)
{
    struct callouts *c = xcalloc(1, sizeof *c);
    c->cfg = cfg;
    if (cfg->av_enabled)
        c->clamd = clamd_new(cfg->av_clamd, (unsigned)cfg->av_timeout * 1000,
                             (unsigned)cfg->av_pool_size);
    for (size_t i = 0; i < cfg->nmilters; i++) {
        const struct config_milter *cm = &cfg->milters[i];
        char err[256];
        c->spec_ok[i] = milter_spec_parse(&c->specs[i], cm->name, cm->socket, err,
                                          sizeof err) == 0;
        if (!c->spec_ok[i]) {
            log_err("[milter.%s]: %s", cm->name, err);
            continue;
        }
        unsigned ms = (unsigned)cm->timeout * 1000;
        c->specs[i].connect_timeout_ms = ms < 5000 ? ms : 5000;
        c->specs[i].io_timeout_ms = ms;
        c->specs[i].eom_timeout_ms = ms;
    }
    return c;
}

void callouts_free(struct callouts *c)
{
    if (c == NULL)
        return;
    clamd_free(c->clamd);
    free(c);
}

bool callouts_any(const struct callouts *c, unsigned phase)
{
    if ((phase & CONFIG_PHASE_INCOMING) && c->clamd != NULL)
        return true;
    for (size_t i = 0; i < c->cfg->nmilters; i++)
        if (c->cfg->milters[i].phase & phase)
            return true;
    return false;
}

void callout_result_free(struct callout_result *r)
{
    free(r->data);
    free(r->new_sender);
    for (size_t i = 0; i < r->nadd; i++)
        free(r->add_rcpts[i]);
    for (size_t i = 0; i < r->ndel; i++)
        free(r->del_rcpts[i]);
    for (size_t i = 0; i < r->nrefused; i++)
        free(r->refused[i].rcpt);
    free(r->add_rcpts);
    free(r->del_rcpts);
    free(r->refused);
    memset(r, 0, sizeof *r);
}

static void trace_add(struct callout_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void trace_add(struct callout_result *res, const char *fmt, ...)
{
    size_t n = strlen(res->trace);
    if (n > 0 && n + 2 < sizeof res->trace) {
        memcpy(res->trace + n, ", ", 3);
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->trace + n, sizeof res->trace - n, fmt, ap);
    va_end(ap);
}

static void refuse(struct callout_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void refuse(struct callout_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->reply, sizeof res->reply, fmt, ap);
    va_end(ap);
    res->verdict = CALLOUT_REFUSE;
}

/* ---- antivirus ------------------------------------------------------------- */

/* false: stop here (refused, or a PEC virus to be answered by receipt) */
static bool antivirus(struct callouts *c, const struct callout_msg *m, const char *data,
                      size_t len, struct callout_result *res)
{
    struct clamd_verdict v;
    clamd_scan(c->clamd, data, len, &v);
    switch (v.status) {
    case CLAMD_CLEAN:
        trace_add(res, "antivirus=clean");
        return true;
    case CLAMD_INFECTED:
        str_copy(res->virus, v.name, sizeof res->virus);
        trace_add(res, "antivirus=infected (%s)", v.name);
        log_info("%s: virus %s found (client %s)", m->qid, v.name,
                 m->client_ip ? m->client_ip : "local");
        if (!m->pec)
            refuse(res, "554 5.7.1 Message refused: virus %s found", v.name);
        return false;
    case CLAMD_TOO_BIG:
    case CLAMD_ERROR:
        break;
    }
    if (c->cfg->av_fail_open) {
        log_warn("%s: accepted UNSCANNED (antivirus fail_open = yes): %s", m->qid, v.detail);
        res->unscanned = true;
        trace_add(res, "antivirus=unscanned");
        return true;
    }
    log_warn("%s: antivirus: %s", m->qid, v.detail);
    trace_add(res, "antivirus=failed");
    if (v.status == CLAMD_TOO_BIG)
        refuse(res, "552 5.3.4 Message too big for the virus scanner");
    else
        refuse(res, "451 4.7.1 Virus scanner unavailable, try again later");
    return false;
}

/* ---- milters --------------------------------------------------------------- */

static void facts_of(const struct callouts *c, const struct callout_msg *m,
                     struct milter_facts *f, char *tlsv, size_t tlsvlen, char *name,
                     size_t namelen)
{
    memset(f, 0, sizeof *f);
    f->hostname = c->cfg->hostname;
    f->queue_id = m->qid;
    f->client_ip = m->client_ip;
    if (m->client_ip != NULL)
        snprintf(name, namelen, "[%s]", m->client_ip);
    f->client_name = m->client_ip ? name : NULL;
    f->helo = m->helo;
    if (m->tls != NULL) {
        str_copy(tlsv, m->tls, tlsvlen);
        char *sp = strchr(tlsv, ' ');
        if (sp != NULL)
            *sp++ = '\0';
        f->tls_version = tlsv;
        f->tls_cipher = sp;
    }
    f->auth_user = m->auth_user;
    f->sender = m->sender;
    f->rcpts = m->rcpts;
    f->nrcpts = m->nrcpts;
    f->daemon_name = m->listener;
    f->auth_type = m->auth_user != NULL ? m->auth_type : NULL;
}

static void push(char ***v, size_t *n, const char *s)
{
    *v = xrealloc(*v, (*n + 1) * sizeof **v);
    (*v)[(*n)++] = xstrdup(s);
}

/* Envelope changes and refused recipients: honoured on ordinary mail only.
 * 0 none asked, 1 taken, -1 refused (PEC). */
static int envelope_mods(const struct callout_msg *m, const char *name,
                         const struct milter_result *mr, struct callout_result *res)
{
    static const char *const what[] = {[MILTER_MOD_ADD_RCPT] = "add recipient",
                                       [MILTER_MOD_DEL_RCPT] = "remove recipient",
                                       [MILTER_MOD_CHANGE_FROM] = "change sender to"};
    size_t n = 0;
    for (size_t i = 0; i < mr->nmods; i++) {
        const struct milter_mod *d = &mr->mods[i];
        if (d->kind != MILTER_MOD_ADD_RCPT && d->kind != MILTER_MOD_DEL_RCPT &&
            d->kind != MILTER_MOD_CHANGE_FROM)
            continue;
        n++;
        if (m->pec || d->value == NULL)
            continue;
        log_info("%s: milter %s: %s <%s>", m->qid, name, what[d->kind], d->value);
        if (d->kind == MILTER_MOD_ADD_RCPT)
            push(&res->add_rcpts, &res->nadd, d->value);
        else if (d->kind == MILTER_MOD_DEL_RCPT)
            push(&res->del_rcpts, &res->ndel, d->value);
        else {
            free(res->new_sender);
            res->new_sender = xstrdup(d->value);
        }
    }
    for (size_t i = 0; i < mr->nrefused; i++) {
        const struct milter_refusal *f = &mr->refused[i];
        if (m->pec || f->rcpt >= m->nrcpts)
            continue;
        log_info("%s: milter %s: recipient <%s> refused: %s", m->qid, name, m->rcpts[f->rcpt],
                 f->reply);
        if (f->smtp_code < 500) {
            /* after DATA one recipient cannot be deferred alone: the whole
             * message is, and the client retries it */
            if (res->verdict == CALLOUT_ACCEPT)
                refuse(res, "%s", f->reply);
            continue;
        }
        struct callout_refusal *g = xrealloc(res->refused, (res->nrefused + 1) * sizeof *g);
        if (g == NULL)
            continue;
        res->refused = g;
        g += res->nrefused++;
        g->rcpt = xstrdup(m->rcpts[f->rcpt]);
        str_copy(g->reply, f->reply, sizeof g->reply);
    }
    if (n == 0 && mr->nrefused == 0)
        return 0;
    if (!m->pec)
        return 1;
    log_warn("%s: milter %s: envelope changes on PEC mail refused (%zu ignored)", m->qid, name,
             n + mr->nrefused);
    return -1;
}

/* Applies one filter's content changes to *cur: 0 none asked, 1 applied,
 * -1 refused (the message is kept as it was). */
static int content_mods(const struct callout_msg *m, const char *name,
                        const struct milter_result *mr, char **cur, size_t *curlen,
                        const char *orig)
{
    size_t content = 0;
    for (size_t i = 0; i < mr->nmods; i++)
        content += mr->mods[i].kind <= MILTER_MOD_REPLACE_BODY;
    if (content == 0)
        return 0;
    char *out, err[256];
    size_t outlen;
    const char *base = *cur ? *cur : orig;
    if (milter_apply(mr, base, *curlen, m->pec, &out, &outlen, err, sizeof err) == -1) {
        log_warn("%s: milter %s: change refused, message kept intact: %s", m->qid, name, err);
        return -1;
    }
    free(*cur);
    *cur = out;
    *curlen = outlen;
    return 1;
}

/* An accepting filter's modifications, and its trace entry:
 * NAME=accept[+changed][+envelope], change-refused, +envelope-refused. */
static void modifications(const struct callout_msg *m, const char *name,
                          const struct milter_result *mr, char **cur, size_t *curlen,
                          const char *orig, struct callout_result *res)
{
    int content = content_mods(m, name, mr, cur, curlen, orig);
    int envelope = envelope_mods(m, name, mr, res);
    trace_add(res, "%s=%s%s%s", name,
              content == -1 ? "change-refused" : milter_action_name(mr->action),
              content == 1 ? "+changed" : "",
              envelope == 1 ? "+envelope" : envelope == -1 ? "+envelope-refused" : "");
}

static void default_action(const struct config_milter *cm, const struct callout_msg *m,
                           const char *why, struct callout_result *res)
{
    log_warn("%s: milter %s failed (%s): default %s", m->qid, cm->name, why,
             cm->dflt == CONFIG_FAIL_ACCEPT ? "accept" : cm->dflt == CONFIG_FAIL_REJECT
                                                           ? "reject" : "tempfail");
    trace_add(res, "%s=unavailable", cm->name);
    if (cm->dflt == CONFIG_FAIL_REJECT)
        refuse(res, "550 5.7.1 Message refused by content filter %s", cm->name);
    else if (cm->dflt == CONFIG_FAIL_TEMPFAIL)
        refuse(res, "451 4.7.1 Content filter %s unavailable, try again later", cm->name);
}

/* false: stop here */
static bool one_milter(struct callouts *c, size_t i, const struct callout_msg *m,
                       const char *orig, char **cur, size_t *curlen, struct callout_result *res)
{
    const struct config_milter *cm = &c->cfg->milters[i];
    if (!c->spec_ok[i]) {
        default_action(cm, m, "bad socket", res);
        return res->verdict == CALLOUT_ACCEPT;
    }
    struct milter_facts f;
    char tlsv[128], cname[80];
    facts_of(c, m, &f, tlsv, sizeof tlsv, cname, sizeof cname);
    struct milter_result mr;
    memset(&mr, 0, sizeof mr);
    if (milter_run(&c->specs[i], &f, *cur ? *cur : orig, *curlen, &mr) == -1 ||
        mr.action == MILTER_FAILED) {
        default_action(cm, m, mr.err, res);
        milter_result_free(&mr);
        return res->verdict == CALLOUT_ACCEPT;
    }
    log_info("%s: milter %s: %s%s%s", m->qid, cm->name, milter_action_name(mr.action),
             mr.reply[0] ? " " : "", mr.reply);
    bool go_on = true;
    switch (mr.action) {
    case MILTER_REJECT:
    case MILTER_TEMPFAIL:
        trace_add(res, "%s=%s", cm->name, milter_action_name(mr.action));
        refuse(res, "%s", mr.reply[0] ? mr.reply
                          : mr.action == MILTER_REJECT ? "550 5.7.1 Command rejected"
                                                       : "451 4.7.1 Service unavailable");
        go_on = false;
        break;
    case MILTER_DISCARD:
        trace_add(res, "%s=discard", cm->name);
        res->verdict = CALLOUT_DISCARD;
        go_on = false;
        break;
    case MILTER_QUARANTINE:
        if (m->pec) {   /* a PEC message is delivered or answered by receipt, never held */
            log_warn("%s: milter %s: quarantine of PEC mail refused (%s)", m->qid, cm->name,
                     mr.quarantine_reason);
            trace_add(res, "%s=quarantine-refused", cm->name);
            break;
        }
        trace_add(res, "%s=quarantine", cm->name);
        str_copy(res->quarantine, mr.quarantine_reason, sizeof res->quarantine);
        res->verdict = CALLOUT_QUARANTINE;
        go_on = false;
        break;
    default:
        modifications(m, cm->name, &mr, cur, curlen, orig, res);
        go_on = res->verdict == CALLOUT_ACCEPT;   /* a recipient's 4xx defers the message */
        break;
    }
    milter_result_free(&mr);
    return go_on;
}

void callouts_incoming(struct callouts *c, const struct callout_msg *m, const char *data,
                       size_t len, struct callout_result *res)
{
    memset(res, 0, sizeof *res);
    res->verdict = CALLOUT_ACCEPT;
    if (c->clamd != NULL &&
        callout_consented(c->cfg, "antivirus", m->sender, m->rcpts, m->nrcpts) &&
        !antivirus(c, m, data, len, res))
        return;
    char *cur = NULL;
    size_t curlen = len;
    for (size_t i = 0; i < c->cfg->nmilters; i++) {
        if (!(c->cfg->milters[i].phase & CONFIG_PHASE_INCOMING) ||
            !callout_consented(c->cfg, c->cfg->milters[i].name, m->sender, m->rcpts, m->nrcpts))
            continue;
        if (!one_milter(c, i, m, data, &cur, &curlen, res))
            break;
    }
    res->data = cur;
    res->len = cur ? curlen : 0;
}

int callouts_outgoing(struct callouts *c, const struct callout_msg *m, const char *data,
                      size_t len, char **out, size_t *outlen, char *err, size_t errlen)
{
    struct callout_result res = {.verdict = CALLOUT_ACCEPT};
    struct callout_msg pm = *m;
    pm.pec = true;   /* outgoing: added header fields only, whatever the message */
    char *cur = NULL;
    size_t curlen = len;
    for (size_t i = 0; i < c->cfg->nmilters && res.verdict == CALLOUT_ACCEPT; i++) {
        if (!(c->cfg->milters[i].phase & CONFIG_PHASE_OUTGOING) ||
            !callout_consented(c->cfg, c->cfg->milters[i].name, m->sender, m->rcpts, m->nrcpts))
            continue;
        if (!one_milter(c, i, &pm, data, &cur, &curlen, &res) &&
            res.verdict != CALLOUT_REFUSE) {
            /* discard or quarantine of what we send: not ours to drop */
            log_warn("%s: outgoing milter %s asked to drop the message: sent anyway", m->qid,
                     c->cfg->milters[i].name);
            res.verdict = CALLOUT_ACCEPT;
        }
    }
    if (res.verdict == CALLOUT_REFUSE) {
        str_copy(err, res.reply, errlen);
        free(cur);
        callout_result_free(&res);
        return -1;
    }
    if (res.trace[0] != '\0') {
        log_info("%s: outgoing callouts: %s", m->qid, res.trace);
        *out = callout_add_trace(c->cfg->hostname, res.trace, cur ? cur : data, curlen, outlen);
    } else {
        *out = xmalloc(curlen + 1);
        memcpy(*out, cur ? cur : data, curlen);
        (*out)[curlen] = '\0';
        *outlen = curlen;
    }
    free(cur);
    callout_result_free(&res);
    return 0;
}

char *callout_add_trace(const char *host, const char *trace, const char *data, size_t len,
                        size_t *outlen)
{
    char head[CALLOUT_TRACE_MAX + 400];
    int n = snprintf(head, sizeof head, "%s: by %s (pecd); %.900s\r\n", CALLOUT_TRACE_HEADER, host,
                     trace);
    if (n < 0 || (size_t)n >= sizeof head)
        n = (int)strlen(head);
    char *out = xmalloc((size_t)n + len + 1);
    memcpy(out, head, (size_t)n);
    memcpy(out + n, data, len);
    out[(size_t)n + len] = '\0';
    *outlen = (size_t)n + len;
    return out;
}
