/*
 * stage.c - the callout stage of pecd (callout.h): between the end of DATA
 * and the queue commit, off the event loop.
 *
 * The spool file incoming/<name> is complete (END written, not yet synced)
 * when a job starts.  A worker of a small GLib thread pool reads it, runs
 * the incoming callouts, and, when callouts acted, rewrites the same file
 * in place with the OPES-Trace header on top of the message and the
 * callout records (REC_CALLOUT: trace, and the virus of a PEC message) so
 * the roles know; the committer's fsync then covers the new content.
 * Infected PEC messages and messages a filter quarantines are copied to the
 * quarantine store (synced) before the client gets its 250.  On a PEC
 * provider a message a callout refused or tempfailed during the dialogue
 * gets a "callout-refused" event in the evidence log (sender, recipients,
 * the callouts and the reply), so `pecctl trace MESSAGE-ID` shows why it
 * was never accepted (RFC 3238 §2.3).  Results come
 * back to the event loop through an eventfd; the SMTP session then commits
 * or answers.  Every scan and filter has its own timeout, so a job ends.
 */
#include "callout.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "lib/pec_stage.h"
#include "queue/queue.h"
#include "store/evidence.h"
#include "store/quarantine.h"

#include <stdatomic.h>
#include <errno.h>
#include <event2/event.h>
#include <glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct job {
    struct callout_stage *s;
    char name[64];
    callout_stage_done done;
    void *arg;
    enum callout_verdict v;
    char reply[512];
};

struct callout_stage {
    struct event_base *base;
    const struct config *_Atomic cfg;   /* swapped by a reload */
    struct evidence *evidence;       /* PEC: refusals go to the evidence log; or NULL */
    struct callouts *_Atomic callouts;  /* likewise, with the old one retired */
    GThreadPool *pool;
    GAsyncQueue *results;
    int efd;
    struct event *ev;
};

/* Is this a PEC message for the roles (a virus is then answered by receipt)? */
static bool pec_flow(const struct config *cfg, const struct queue_env *env, const char *data,
                     size_t len)
{
    enum pec_stage stage = pec_stage_parse(env->stage);
    if (!cfg->pec || stage == PEC_STAGE_NONE)
        return false;
    if (stage == PEC_STAGE_SUBMISSION)
        return true;
    char v[64];
    return mail_header_value(data, len, "X-Trasporto", v, sizeof v) ||
           mail_header_value(data, len, "X-Ricevuta", v, sizeof v);
}

static bool in_list(char **v, size_t n, const char *addr)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(v[i], addr) == 0)
            return true;
    return false;
}

/* Recipients and sender rewritten by filters (ordinary mail only). */
static void apply_envelope(struct queue_env *env, const struct callout_result *res)
{
    if (res->new_sender != NULL) {
        free(env->sender);
        env->sender = xstrdup(res->new_sender);
    }
    size_t k = 0;
    for (size_t i = 0; i < env->nrcpts; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        if (in_list(res->del_rcpts, res->ndel, r->addr)) {
            free(r->addr);
            free(r->orig);
            free(r->orcpt);
            free(r->status_text);
            continue;
        }
        env->rcpts[k++] = *r;
    }
    env->nrcpts = k;
    for (size_t i = 0; i < res->nadd; i++) {
        env->rcpts = xrealloc(env->rcpts, (env->nrcpts + 1) * sizeof *env->rcpts);
        struct queue_rcpt *r = &env->rcpts[env->nrcpts++];
        memset(r, 0, sizeof *r);
        r->addr = xstrdup(res->add_rcpts[i]);
        r->orig = xstrdup(res->add_rcpts[i]);
    }
}

static void quarantine(struct job *j, const struct queue_env *env, const char *data, size_t len,
                       const char *reason)
{
    const char **rc = xcalloc(env->nrcpts + 1, sizeof *rc);
    for (size_t i = 0; i < env->nrcpts; i++)
        rc[i] = env->rcpts[i].addr;
    struct quarantine_info qi = {.qid = env->qid, .reason = reason, .sender = env->sender,
                                 .rcpts = rc, .nrcpts = env->nrcpts,
                                 .client_ip = env->client_ip};
    char path[PATH_MAX], err[512];
    if (quarantine_store(j->s->cfg->av_quarantine, &qi, data, len, path, sizeof path, err,
                         sizeof err) == -1) {
        log_err("%s: %s", env->qid, err);
        j->v = CALLOUT_REFUSE;
        str_copy(j->reply, "451 4.3.0 Quarantine write error, try again later", sizeof j->reply);
    } else {
        log_info("%s: quarantined (%s) as %s", env->qid, reason, path);
    }
    free(rc);
}

/* Rewrites the spool file with the trace header, changes and records. */
static void rewrite(struct job *j, const char *path, struct queue_env *env, const char *data,
                    size_t len, struct callout_result *res)
{
    if (res->virus[0] != '\0')
        env->virus = xstrdup(res->virus);
    env->callouts = xstrdup(res->trace);
    apply_envelope(env, res);
    if (env->nrcpts == 0) {   /* a filter removed every recipient */
        j->v = CALLOUT_DISCARD;
        return;
    }
    /* recipients refused by a filter (5xx): kept, failed at once with the
     * reply, the sender notified by the queue; every one refused: the
     * message is (the first refusal's reply) */
    size_t nref = 0;
    const char **ref = xcalloc(env->nrcpts, sizeof *ref);
    for (size_t i = 0; i < env->nrcpts; i++)
        for (size_t k = 0; k < res->nrefused && ref[i] == NULL; k++)
            if (strcasecmp(env->rcpts[i].addr, res->refused[k].rcpt) == 0) {
                ref[i] = res->refused[k].reply;
                nref++;
            }
    if (nref == env->nrcpts) {
        j->v = CALLOUT_REFUSE;
        str_copy(j->reply, ref[0], sizeof j->reply);
        free(ref);
        return;
    }
    size_t nlen;
    char *n = callout_add_trace(j->s->cfg->hostname, res->trace, res->data ? res->data : data,
                                res->data ? res->len : len, &nlen);
    bool ok = spool_write_file(j->s->cfg->queue_dir, "incoming", j->name, env, n, nlen, false) == 0;
    for (size_t i = 0; ok && i < env->nrcpts; i++)
        if (ref[i] != NULL)
            ok = spool_append_status(path, i, QR_REFUSED, ref[i]) == 0;
    if (!ok) {
        log_err("%s: cannot rewrite %s after the callouts: %s", env->qid, path,
                strerror(errno));
        j->v = CALLOUT_REFUSE;
        str_copy(j->reply, "451 4.3.0 Queue file write error, try again later", sizeof j->reply);
    }
    free(ref);
    free(n);
}

/* The evidence of a refusal during the SMTP dialogue (PEC providers). */
static void refusal_event(struct job *j, const struct queue_env *env, const char *data,
                          size_t len, const struct callout_result *res)
{
    if (j->s->evidence == NULL)
        return;
    char omid[512] = "", subj[1024] = "", rcpts[2048] = "", outcome[1200], err[256];
    mail_header_value(data, len, "Message-ID", omid, sizeof omid);
    mail_header_value(data, len, "Subject", subj, sizeof subj);
    size_t off = 0;
    for (size_t i = 0; i < env->nrcpts && off < sizeof rcpts; i++) {
        int n = snprintf(rcpts + off, sizeof rcpts - off, "%s%s", i ? "," : "",
                         env->rcpts[i].addr);
        if (n < 0 || (size_t)n >= sizeof rcpts - off)
            break;   /* the list is cut at a whole address */
        off += (size_t)n;
    }
    snprintf(outcome, sizeof outcome, "%s (callouts: %s)", res->reply, res->trace);
    /* the client's Message-ID without <> (how evidence stores and traces it) */
    char *id = omid[0] == '<' ? omid + 1 : omid;
    id[strcspn(id, ">")] = '\0';
    char key[128];
    snprintf(key, sizeof key, "%s:callout-refused", env->qid);
    struct evidence_event e = {.type = "callout-refused", .orig_msgid = id[0] ? id : NULL,
                               .sender = env->sender, .recipients = rcpts,
                               .subject = subj[0] ? subj : NULL, .outcome = outcome,
                               .queue_id = env->qid, .dedupe_key = key};
    if (evidence_append(j->s->evidence, &e, err, sizeof err) == -1)
        log_err("%s: evidence log: %s", env->qid, err);
}

static void run_job(struct job *j)
{
    const struct config *cfg = j->s->cfg;
    char path[PATH_MAX], err[256];
    snprintf(path, sizeof path, "%s/incoming/%s", cfg->queue_dir, j->name);
    struct queue_env env;
    char *data;
    size_t len;
    if (spool_read(path, &env, &data, &len, err, sizeof err) == -1) {
        log_err("callouts: %s: %s", path, err);
        j->v = CALLOUT_REFUSE;
        str_copy(j->reply, "451 4.3.0 Queue file read error, try again later", sizeof j->reply);
        return;
    }
    const char **rc = xcalloc(env.nrcpts + 1, sizeof *rc);
    for (size_t i = 0; i < env.nrcpts; i++)
        rc[i] = env.rcpts[i].addr;
    struct callout_msg m = {.qid = env.qid, .listener = env.listener, .client_ip = env.client_ip,
                            .helo = env.helo, .tls = env.tls, .auth_user = env.auth_user,
                            .auth_type = env.auth_mech,
                            .sender = env.sender, .rcpts = rc, .nrcpts = env.nrcpts,
                            .pec = pec_flow(cfg, &env, data, len)};
    struct callout_result res;
    callouts_incoming(j->s->callouts, &m, data, len, &res);
    free(rc);
    j->v = res.verdict;
    if (res.trace[0] != '\0')
        log_info("%s: callouts: %s", env.qid, res.trace);
    switch (res.verdict) {
    case CALLOUT_REFUSE:
        str_copy(j->reply, res.reply, sizeof j->reply);
        refusal_event(j, &env, data, len, &res);
        break;
    case CALLOUT_DISCARD:
        break;
    case CALLOUT_QUARANTINE: {
        char why[300];
        snprintf(why, sizeof why, "held by a filter: %s", res.quarantine);
        quarantine(j, &env, data, len, why);
        break;
    }
    case CALLOUT_ACCEPT:
        if (res.virus[0] != '\0') {
            char why[200];
            snprintf(why, sizeof why, "virus %s", res.virus);
            quarantine(j, &env, data, len, why);
        }
        if (j->v == CALLOUT_ACCEPT && res.trace[0] != '\0')
            rewrite(j, path, &env, data, len, &res);
        break;
    }
    if (j->v == CALLOUT_DISCARD || j->v == CALLOUT_QUARANTINE)
        snprintf(j->reply, sizeof j->reply, "250 2.0.0 Ok: queued as %s", env.qid);
    callout_result_free(&res);
    queue_env_free(&env);
    free(data);
}

static void worker(gpointer data, gpointer user)
{
    struct job *j = data;
    (void)user;
    config_hold_begin();
    run_job(j);
    config_hold_end();
    g_async_queue_push(j->s->results, j);
    uint64_t one = 1;
    (void)!write(j->s->efd, &one, sizeof one);
}

static void on_results(evutil_socket_t fd, short what, void *arg)
{
    struct callout_stage *s = arg;
    (void)what;
    uint64_t n;
    (void)!read(fd, &n, sizeof n);
    struct job *j;
    while ((j = g_async_queue_try_pop(s->results)) != NULL) {
        j->done(j->arg, j->v, j->reply);
        free(j);
    }
}

struct callout_stage *callout_stage_new(struct event_base *base, const struct config *cfg,
                                        struct evidence *ev)
{
    struct callout_stage *s = xcalloc(1, sizeof *s);
    s->base = base;
    s->cfg = cfg;
    s->evidence = cfg->pec ? ev : NULL;
    s->callouts = callouts_new(cfg);
    if (!callouts_any(s->callouts, CONFIG_PHASE_INCOMING))
        return s;   /* inactive: pecd does not install the hook */
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->results = g_async_queue_new();
    s->pool = g_thread_pool_new(worker, s, (gint)cfg->callout_workers, FALSE, NULL);
    s->ev = event_new(base, s->efd, EV_READ | EV_PERSIST, on_results, s);
    event_add(s->ev, NULL);
    return s;
}

static void callouts_free_cb(void *c) { callouts_free(c); }

bool callout_stage_set_config(struct callout_stage *s, const struct config *cfg)
{
    struct callouts *c = callouts_new(cfg);
    bool any = callouts_any(c, CONFIG_PHASE_INCOMING);
    atomic_store(&s->cfg, cfg);
    config_retire(callouts_free_cb, atomic_exchange(&s->callouts, c));
    if (any && s->pool == NULL) {
        s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        s->results = g_async_queue_new();
        s->pool = g_thread_pool_new(worker, s, (gint)cfg->callout_workers, FALSE, NULL);
        s->ev = event_new(s->base, s->efd, EV_READ | EV_PERSIST, on_results, s);
        event_add(s->ev, NULL);
    }
    return any;
}

bool callout_stage_active(const struct callout_stage *s)
{
    return s != NULL && s->pool != NULL;
}

void callout_stage_submit(struct callout_stage *s, const char *spool_name,
                          callout_stage_done done, void *arg)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->s = s;
    str_copy(j->name, spool_name, sizeof j->name);
    j->done = done;
    j->arg = arg;
    g_thread_pool_push(s->pool, j, NULL);
}

void callout_stage_free(struct callout_stage *s)
{
    if (s == NULL)
        return;
    if (s->pool != NULL) {
        g_thread_pool_free(s->pool, TRUE, TRUE);   /* queued jobs dropped, running ones end */
        struct job *j;
        while ((j = g_async_queue_try_pop(s->results)) != NULL)
            free(j);
        g_async_queue_unref(s->results);
        event_free(s->ev);
        close(s->efd);
    }
    callouts_free(s->callouts);
    free(s);
}
