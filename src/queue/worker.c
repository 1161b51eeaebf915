/*
 * worker.c - delivery threads.  A worker takes a batch of due messages,
 * hands each one's pending recipients to the delivery function (which may
 * group them by destination), publishes local copies as one group commit,
 * sends the notifications the senders asked for (RFC 3461), records each
 * settled recipient in the spool file, and removes the file once nothing is
 * pending.  Messages with a stage are processed instead (run_stage,
 * commit_stages: their outputs and mailbox copies are committed exactly once).
 * Spool files that are done go to free/ for reuse (recycle.c).  Everything
 * here is replayable after a crash.
 */
#include "queue_int.h"
#include "smtp/smtp.h"   /* SMTP_NOTIFY_* bits */
#include "lib/config.h"
#include "lib/lib.h"
#include "lib/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/syscall.h>

struct qentry queue_stop_entry;

/* One message of a batch while the batch is processed. */
struct work {
    struct qentry *e;
    bool loaded;
    bool staged;             /* handled by the stage processor, not delivered */
    bool stage_written;      /* its outputs are in staged/, not yet committed */
    bool stage_done;         /* outputs moved into queue/ */
    size_t nout;
    struct queue_env env;
    char *data;
    size_t len;
    struct deliver_rcpt *r;
    struct deliver_pending *pubs;   /* mailbox copies of a stage, published at its commit */
    size_t npubs;
    GPtrArray *staged_names;        /* what this pass wrote into staged/ (NULL: not known) */
};

/* ---- local copies: one group commit per batch --------------------------- */

static void unpublish(struct work *w, size_t i, const char *why)
{
    w->r[i].result = DELIVER_TEMPFAIL;
    snprintf(w->r[i].text, sizeof w->r[i].text, "4.3.0 %s", why);
    log_err("%s: to=<%s> deferred: %s", w->e->qid, w->env.rcpts[i].addr, why);
}

/* Syncs the file system of dir (fs) or dir itself. */
static int sync_dir_fs(const char *dir, bool fs)
{
    return fs ? fs_sync_dir_fs(dir) : fs_fsync_dir(dir);
}

/* Notes dst's directory in dirs and, in syncfs mode, syncs its file system
 * the first time one of its directories is seen.  false on a failed sync. */
static bool note_copy(struct queue *q, const char *dst, GHashTable *dirs, GHashTable *devs)
{
    char *dir = g_path_get_dirname(dst);
    dev_t dev;
    bool ok = true;
    if (q->cfg->sync_fs && fs_dir_stat(dir, &dev) == 0 &&
        !g_hash_table_contains(devs, GSIZE_TO_POINTER(dev + 1))) {
        g_hash_table_add(devs, GSIZE_TO_POINTER(dev + 1));
        if (sync_dir_fs(dir, true) == -1) {
            log_err("syncfs %s: %s", dir, strerror(errno));
            ok = false;
        }
    }
    g_hash_table_add(dirs, dir);   /* a set: an equal key is replaced and freed */
    return ok;
}

static void publish_batch(struct queue *q, struct work *ws, size_t n)
{
    GHashTable *dirs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GHashTable *devs = g_hash_table_new(g_direct_hash, g_direct_equal);
    bool failed = false;
    /* 1: the data of every copy durable (one syncfs per file system) */
    for (size_t k = 0; k < n && !failed; k++) {
        struct work *w = &ws[k];
        for (size_t i = 0; w->loaded && i < w->env.nrcpts && !failed; i++) {
            if (!w->r[i].pending || w->r[i].result != DELIVER_OK || !w->r[i].pub.tmp[0])
                continue;
            failed = !note_copy(q, w->r[i].pub.dst, dirs, devs);
        }
    }
    /* 2: link each copy into new/; 3: each new/ synced once */
    for (size_t k = 0; k < n; k++) {
        struct work *w = &ws[k];
        for (size_t i = 0; w->loaded && i < w->env.nrcpts; i++) {
            struct deliver_rcpt *r = &w->r[i];
            if (!r->pending || r->result != DELIVER_OK || !r->pub.tmp[0])
                continue;
            if (failed) {
                unlink(r->pub.tmp);
                unpublish(w, i, "syncfs failed");
            } else if (fs_publish(r->pub.tmp, r->pub.dst) == -1) {
                unpublish(w, i, strerror(errno));
            }
        }
    }
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, dirs);
    while (!failed && g_hash_table_iter_next(&it, &key, NULL)) {
        if (fs_fsync_dir(key) == -1) {
            log_err("fsync %s: %s", (char *)key, strerror(errno));
            /* deliver again later; the copies linked already are then
             * recognised as duplicates */
            for (size_t k = 0; k < n; k++) {
                struct work *w = &ws[k];
                for (size_t i = 0; w->loaded && i < w->env.nrcpts; i++) {
                    if (w->r[i].pending && w->r[i].result == DELIVER_OK && w->r[i].pub.tmp[0]) {
                        w->e->recovered = true;
                        unpublish(w, i, "mailbox directory fsync failed");
                    }
                }
            }
            break;
        }
    }
    g_hash_table_destroy(devs);
    g_hash_table_destroy(dirs);
}

/* ---- notifications (RFC 3461 §4.1) --------------------------------------- */

static bool wants(const struct queue_env *env, size_t i, enum dsn_action a)
{
    if (env->sender[0] == '\0')
        return false;   /* never a notification about a notification */
    unsigned nf = env->rcpts[i].notify;
    if (nf & SMTP_NOTIFY_NEVER)
        return false;
    switch (a) {
    case DSN_FAILED:
        return nf == 0 || (nf & SMTP_NOTIFY_FAILURE);
    case DSN_DELAYED:
        return (nf & SMTP_NOTIFY_DELAY) != 0;
    default:
        return (nf & SMTP_NOTIFY_SUCCESS) != 0;
    }
}

static void notify(struct queue *q, struct work *w, enum dsn_action action, const size_t *idx,
                   size_t n)
{
    if (n == 0)
        return;
    struct dsn_rcpt *d = xcalloc(n, sizeof *d);
    for (size_t k = 0; k < n; k++) {
        size_t i = idx[k];
        d[k].addr = w->env.rcpts[i].addr;
        d[k].orcpt = w->env.rcpts[i].orcpt;
        d[k].smtp_code = w->r[i].smtp_code;
        d[k].text = w->r[i].text[0] ? w->r[i].text : NULL;
        d[k].remote_mta = w->r[i].remote_mta[0] ? w->r[i].remote_mta : NULL;
    }
    size_t len;
    char *msg = dsn_build(&w->env, w->data, w->len, d, n, action, q->cfg->hostname, &len);
    free(d);
    struct queue_rcpt rcpt = {.addr = w->env.sender, .orig = w->env.sender};
    struct queue_env env = {
        .sender = "",
        .rcpts = &rcpt,
        .nrcpts = 1,
        /* RFC 8689 §5: the bounce of a REQUIRETLS message asks for REQUIRETLS too */
        .requiretls = w->env.requiretls,
        .proto = "local",
        .listener = "dsn",
    };
    char qid[QUEUE_ID_LEN + 1];
    if (queue_inject(q->dir, &env, msg, len, qid) == -1) {
        log_err("%s: cannot store the %s notification for <%s>: %s", w->e->qid,
                action == DSN_FAILED ? "non-delivery" : action == DSN_DELAYED ? "delay" : "success",
                w->env.sender, strerror(errno));
    } else {
        log_info("%s: sender notification (%s): %s", w->e->qid,
                 action == DSN_FAILED ? "non-delivery" : action == DSN_DELAYED ? "delay" : "success",
                 qid);
        if (w->e->injected == NULL)
            w->e->injected = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(w->e->injected, g_strdup(qid));
    }
    g_free(msg);
}

/* ---- stages: one message in, new messages out, exactly once -------------------- */

/* Moves the committed outputs of source qid from staged/ into queue/ (the
 * caller syncs queue/). */
/* Moves one committed output (staged/QID.N.NEWQID) into queue/. */
static int finish_output(struct queue *q, struct qentry *e, const char *dir, const char *name)
{
    const char *newqid = strrchr(name, '.') + 1;
    char from[PATH_MAX], to[PATH_MAX];
    snprintf(from, sizeof from, "%s/%s", dir, name);
    path_of(q, "queue", newqid, to, sizeof to);
    if (rename(from, to) == -1) {
        log_err("%s: cannot move output %s into the queue: %s", e->qid, newqid, strerror(errno));
        return -1;
    }
    if (e->injected == NULL)
        e->injected = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(e->injected, g_strdup(newqid));
    return 0;
}

/* Moves the committed outputs of w's stage into queue/: those this pass wrote
 * or, for a stage committed before (a crash, a failed move), all of staged/
 * that bears its queue id. */
static int finish_outputs(struct queue *q, struct work *w)
{
    struct qentry *e = w->e;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/staged", q->dir);
    int rc = 0;
    if (w->staged_names != NULL) {
        for (guint i = 0; i < w->staged_names->len; i++)
            if (finish_output(q, e, dir, g_ptr_array_index(w->staged_names, i)) == -1)
                rc = -1;
        return rc;
    }
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    size_t plen = strlen(e->qid);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, e->qid, plen) == 0 && de->d_name[plen] == '.' &&
            finish_output(q, e, dir, de->d_name) == -1)
            rc = -1;
    closedir(d);
    return rc;
}

static void drop_staged(struct queue *q, const char *qid)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/staged", q->dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    size_t plen = strlen(qid);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, qid, plen) == 0 && de->d_name[plen] == '.') {
            char path[PATH_MAX + 256];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            recycle_put(q->dir, path);
        }
    closedir(d);
}

/* Removes mailbox copies that were written but not published. */
static void discard_copies(struct deliver_pending *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i].tmp[0])
            unlink(p[i].tmp);
}

static void stage_failed(struct queue *q, struct work *w, const char *why)
{
    struct qentry *e = w->e;
    drop_staged(q, e->qid);
    discard_copies(w->pubs, w->npubs);
    free(w->pubs);
    w->pubs = NULL;
    w->npubs = 0;
    e->recovered = true;   /* copies published before the failure are found again */
    e->tempfail = true;
    w->stage_written = false;
    if (w->staged_names != NULL) {
        g_ptr_array_free(w->staged_names, TRUE);
        w->staged_names = NULL;
    }
    snprintf(e->err, sizeof e->err, "%s", why);
    log_err("%s: %s stage deferred: %s", e->qid, w->env.stage, why);
}

/* Runs the stage processor and writes its outputs to staged/ (made durable
 * with the rest of the batch by commit_stages). */
static void run_stage(struct queue *q, struct work *w)
{
    struct qentry *e = w->e;
    w->staged = true;
    if (w->env.processed)
        return;   /* committed before a crash: commit_stages finishes it */
    /* outputs of an interrupted earlier run were never committed (a message
     * received in this process's life has had no earlier run) */
    if (e->recovered)
        drop_staged(q, e->qid);
    struct queue_outputs out = {0};
    char err[512] = "";
    if (q->process(q->process_arg, &w->env, w->data, w->len, e->recovered, &out, err,
                   sizeof err) == -1) {
        e->tempfail = true;
        snprintf(e->err, sizeof e->err, "%s", err);
        log_warn("%s: %s stage deferred: %s", e->qid, w->env.stage, err);
        discard_copies(out.pubs, out.npubs);
        queue_outputs_free(&out);
        return;
    }
    w->pubs = out.pubs;
    w->npubs = out.npubs;
    out.pubs = NULL;
    out.npubs = 0;
    time_t now = time(NULL);
    for (size_t i = 0; i < out.n; i++) {
        struct queue_env *oe = &out.v[i].env;
        queue_new_id(oe->qid);
        if (oe->arrival == 0)
            oe->arrival = now;
        char name[80];
        snprintf(name, sizeof name, "%s.%zu.%s", e->qid, i, oe->qid);
        if (spool_write_file(q->dir, "staged", name, oe, out.v[i].data, out.v[i].len,
                             !q->cfg->sync_fs) == -1) {
            stage_failed(q, w, "cannot write the stage's outputs");
            queue_outputs_free(&out);
            return;
        }
        if (w->staged_names == NULL)
            w->staged_names = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(w->staged_names, g_strdup(name));
    }
    if (w->staged_names == NULL)
        w->staged_names = g_ptr_array_new_with_free_func(g_free);   /* none: nothing to move */
    w->stage_written = true;
    w->nout = out.n;
    log_info("%s: %s stage done, %zu new message%s, %zu stored", e->qid, w->env.stage, out.n,
             out.n == 1 ? "" : "s", w->npubs);
    queue_outputs_free(&out);
}

/* The mailbox copies of the batch's stages: data durable (one syncfs per file
 * system, or fsync'ed as written), linked into new/, new/ synced; a stage
 * whose copies cannot all be published runs again (duplicates suppressed). */
static void publish_stage_copies(struct queue *q, struct work *ws, size_t n)
{
    GHashTable *dirs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GHashTable *devs = g_hash_table_new(g_direct_hash, g_direct_equal);
    dev_t qdev;
    if (q->cfg->sync_fs && fs_dir_stat(q->dir, &qdev) == 0)   /* synced with staged/ just now */
        g_hash_table_add(devs, GSIZE_TO_POINTER(qdev + 1));
    for (size_t k = 0; k < n; k++) {
        struct work *w = &ws[k];
        bool ok = true;
        for (size_t i = 0; w->stage_written && i < w->npubs && ok; i++)
            if (w->pubs[i].tmp[0])
                ok = note_copy(q, w->pubs[i].dst, dirs, devs);
        for (size_t i = 0; w->stage_written && i < w->npubs && ok; i++) {
            if (w->pubs[i].tmp[0] && fs_publish(w->pubs[i].tmp, w->pubs[i].dst) == -1) {
                log_err("%s: cannot publish %s: %s", w->e->qid, w->pubs[i].dst, strerror(errno));
                ok = false;
            }
            w->pubs[i].tmp[0] = '\0';
        }
        if (!ok)
            stage_failed(q, w, "cannot store into the mailbox");
    }
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, dirs);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (fs_fsync_dir(key) == -1) {
            log_err("fsync %s: %s", (char *)key, strerror(errno));
            for (size_t k = 0; k < n; k++)
                if (ws[k].stage_written && ws[k].npubs > 0)
                    stage_failed(q, &ws[k], "mailbox directory fsync failed");
            break;
        }
    }
    g_hash_table_destroy(devs);
    g_hash_table_destroy(dirs);
}

/* Group commit of the batch's stages: outputs durable (one syncfs), the
 * PROCESSED records appended and made durable (the commit point, one more
 * syncfs), the outputs moved into queue/ and queue/ synced once, the sources
 * removed.  In fsync mode every file was synced as it was written. */
static void commit_stages(struct queue *q, struct work *ws, size_t n)
{
    char sdir[PATH_MAX], qdir[PATH_MAX];
    snprintf(sdir, sizeof sdir, "%s/staged", q->dir);
    snprintf(qdir, sizeof qdir, "%s/queue", q->dir);
    bool any_written = false, any = false;
    for (size_t k = 0; k < n; k++) {
        any_written = any_written || ws[k].stage_written;
        any = any || (ws[k].staged && !ws[k].e->tempfail);
    }
    if (!any)
        return;
    /* several nodes: the commit point only while the spool is ours (another
     * node that took it over replays these stages itself) */
    if (q->fence != NULL && !q->fence(q->fence_arg)) {
        for (size_t k = 0; k < n; k++)
            if (ws[k].stage_written)
                stage_failed(q, &ws[k], "the lease on this spool is not held");
        return;
    }
    /* syncfs covers staged/'s entries too; in fsync mode the files are synced
     * as written and staged/ here */
    if (any_written && sync_dir_fs(sdir, q->cfg->sync_fs) == -1) {
        for (size_t k = 0; k < n; k++)
            if (ws[k].stage_written)
                stage_failed(q, &ws[k], "cannot sync the stage's outputs");
    }
    publish_stage_copies(q, ws, n);
    bool appended = false;
    for (size_t k = 0; k < n; k++) {
        struct work *w = &ws[k];
        if (!w->stage_written)
            continue;
        char path[PATH_MAX];
        path_of(q, "queue", w->e->qid, path, sizeof path);
        if (spool_append_processed(path, w->nout, !q->cfg->sync_fs) == -1)
            stage_failed(q, w, "cannot record the stage's commit");
        else
            appended = true;
    }
    if (appended && q->cfg->sync_fs && sync_dir_fs(qdir, true) == -1) {
        /* the commit points may not be durable: run those stages again */
        for (size_t k = 0; k < n; k++)
            if (ws[k].stage_written)
                stage_failed(q, &ws[k], "cannot sync the stage's commit");
    }
    bool moved = false;
    for (size_t k = 0; k < n; k++) {
        struct work *w = &ws[k];
        if (!w->staged || w->e->tempfail)
            continue;
        if (finish_outputs(q, w) == -1) {
            w->e->tempfail = true;
            snprintf(w->e->err, sizeof w->e->err, "cannot move outputs into the queue");
            continue;
        }
        moved = true;
        w->stage_done = true;
    }
    if (moved && sync_dir_fs(qdir, false) == -1) {
        /* the sources stay (with their commit point): recovery moves again */
        for (size_t k = 0; k < n; k++)
            if (ws[k].stage_done) {
                ws[k].stage_done = false;
                ws[k].e->tempfail = true;
            }
        return;
    }
    for (size_t k = 0; k < n; k++) {
        struct work *w = &ws[k];
        if (!w->stage_done)
            continue;
        char path[PATH_MAX];
        path_of(q, "queue", w->e->qid, path, sizeof path);
        if (recycle_put(q->dir, path) == -1 && errno != ENOENT)
            log_err("%s: cannot remove spool file: %s", w->e->qid, strerror(errno));
        w->e->finished = true;
    }
}

/* The pass-end hook (the evidence log's batch and the tracking database's
 * transaction of the pass's stages): if what the stages recorded cannot be
 * stored, none of them is committed. */
static void end_pass(struct queue *q, struct work *ws, size_t n)
{
    if (q->pass_end == NULL || q->process == NULL)
        return;
    char err[256] = "";
    if (q->pass_end(q->pass_arg, err, sizeof err) == 0)
        return;
    char why[300];
    snprintf(why, sizeof why, "%s", err[0] ? err : "the stage's records were not stored");
    for (size_t k = 0; k < n; k++)
        if (ws[k].stage_written)   /* ran in this pass (not one committed before) */
            stage_failed(q, &ws[k], why);
}

/* ---- one message ---------------------------------------------------------- */

/* A stage (a PEC role) that still fails when the message's queue lifetime is
 * over has no recipient to fail: its work is the provider's own (receipts,
 * envelopes, evidence).  It is not run again in a loop nor dropped: the
 * message is held (queue/ -> hold/) for the operator, who repairs the cause
 * and releases it (`pecctl queue release QID`, then pecd picks it up). */
static void hold_expired_stage(struct queue *q, struct work *w, const char *path,
                               const char *last)
{
    struct qentry *e = w->e;
    char to[PATH_MAX];
    path_of(q, "hold", e->qid, to, sizeof to);
    if (rename(path, to) == -1) {
        log_err("%s: cannot hold the message: %s", e->qid, strerror(errno));
        e->tempfail = true;
        snprintf(e->err, sizeof e->err, "cannot move to hold/: %s", strerror(errno));
    } else {
        log_err("%s: ALERT: the %s stage still fails after the queue lifetime (%llu days; last "
                "error: %s): message held in hold/; repair the cause, then `pecctl queue "
                "release %s`",
                e->qid, w->env.stage, (unsigned long long)(q->cfg->queue_lifetime / 86400),
                last[0] ? last : "none", e->qid);
        e->finished = true;
    }
    free(w->data);
    w->data = NULL;
    queue_env_free(&w->env);
}

static void load(struct queue *q, struct work *w)
{
    struct qentry *e = w->e;
    char path[PATH_MAX], err[256];
    path_of(q, "queue", e->qid, path, sizeof path);
    char last[sizeof e->err];   /* the previous attempt's error */
    memcpy(last, e->err, sizeof last);
    e->finished = false;
    e->tempfail = false;
    e->err[0] = '\0';
    if (spool_read(path, &w->env, &w->data, &w->len, err, sizeof err) == -1) {
        snprintf(e->err, sizeof e->err, "unreadable spool file: %s", err);
        log_err("%s: %s", e->qid, e->err);
        e->tempfail = true;
        return;
    }
    e->deadline = w->env.deadline;
    if (w->env.stage != NULL && q->process != NULL && e->expire) {
        hold_expired_stage(q, w, path, last);
        return;
    }
    w->loaded = true;
    if (w->env.stage != NULL && q->process != NULL) {
        w->r = xcalloc(w->env.nrcpts ? w->env.nrcpts : 1, sizeof *w->r);
        run_stage(q, w);
        return;
    }
    if (e->done == NULL) {
        e->nrcpts = w->env.nrcpts;
        e->done = xcalloc(e->nrcpts ? e->nrcpts : 1, 1);
        for (size_t i = 0; i < e->nrcpts; i++)
            e->done[i] = w->env.rcpts[i].status == QR_DONE     ? 1
                         : w->env.rcpts[i].status == QR_FAILED ? 2
                                                               : 0;
    }
    w->r = xcalloc(w->env.nrcpts ? w->env.nrcpts : 1, sizeof *w->r);
    bool any = false;
    size_t nrefused = 0;
    for (size_t i = 0; i < w->env.nrcpts && i < e->nrcpts; i++) {
        if (e->done[i])
            continue;
        if (w->env.rcpts[i].status == QR_REFUSED) {
            nrefused++;   /* not delivered: failed below */
            continue;
        }
        w->r[i].pending = true;
        any = true;
        if (e->expire && w->env.deadline != 0 && w->env.deadline < q->cfg->queue_lifetime) {
            /* RFC 6109 §3.1.6: the 24 h notice has ended the PEC transaction
             * negatively and told the sender (signed); no unsigned report
             * follows days later */
            w->r[i].result = DELIVER_PERMFAIL;
            snprintf(w->r[i].text, sizeof w->r[i].text,
                     "5.4.7 the PEC transaction ended without a delivery receipt within %llu "
                     "hours (RFC 6109 section 3.1.6; the sender has the timeout notice); last "
                     "error: %s",
                     (unsigned long long)(w->env.deadline / 3600), last[0] ? last : "none");
            w->env.rcpts[i].notify = SMTP_NOTIFY_NEVER;
        } else if (e->expire) {
            w->r[i].result = DELIVER_PERMFAIL;
            snprintf(w->r[i].text, sizeof w->r[i].text,
                     "5.4.7 delivery time expired after %llu days in the queue; last error: %s",
                     (unsigned long long)(q->cfg->queue_lifetime / 86400),
                     w->env.rcpts[i].status_text ? w->env.rcpts[i].status_text : "none");
        }
    }
    if (any && !e->expire)
        q->deliver(q->deliver_arg, &w->env, w->data, w->len, e->recovered, !q->cfg->sync_fs,
                   w->r);
    /* refused by a filter when the message came in: failed now, the sender
     * notified with the filter's reply ("550 5.1.1 ...") */
    for (size_t i = 0; nrefused > 0 && i < w->env.nrcpts && i < e->nrcpts; i++) {
        const struct queue_rcpt *qr = &w->env.rcpts[i];
        if (e->done[i] || qr->status != QR_REFUSED)
            continue;
        struct deliver_rcpt *r = &w->r[i];
        const char *t = qr->status_text ? qr->status_text : "550 5.7.1 refused by a filter";
        r->pending = true;
        r->result = DELIVER_PERMFAIL;
        r->smtp_code = atoi(t);
        if (r->smtp_code < 500 || r->smtp_code > 599)
            r->smtp_code = 550;
        while (*t >= '0' && *t <= '9')
            t++;
        str_copy(r->text, *t == ' ' || *t == '-' ? t + 1 : t, sizeof r->text);
    }
}

/* pecmail_deliveries_total: the next hop is the host that answered ("local"
 * for our own mailboxes), the metric's bounded table caps the label set. */
static void count_delivery(const struct deliver_rcpt *r, const char *result)
{
    char hop[128] = "local";
    if (r->remote_mta[0]) {
        size_t n = strcspn(r->remote_mta, " [");
        if (n == 0 || n >= sizeof hop)
            n = strnlen(r->remote_mta, sizeof hop - 1);
        memcpy(hop, r->remote_mta, n);
        hop[n] = '\0';
    }
    metric_inc(&metric_deliveries, result, hop);
}

/* After the batch's publish: settle recipients, notify, record, remove. */
static void settle(struct queue *q, struct work *w)
{
    struct qentry *e = w->e;
    if (!w->loaded || w->staged)
        return;
    char path[PATH_MAX];
    path_of(q, "queue", e->qid, path, sizeof path);
    size_t n = w->env.nrcpts;
    size_t *failed = xcalloc(n + 1, sizeof *failed), nf = 0;
    size_t *ok = xcalloc(n + 1, sizeof *ok), nok = 0;
    size_t *late = xcalloc(n + 1, sizeof *late), nlate = 0;
    bool *newly = xcalloc(n + 1, sizeof *newly);
    bool relayed_only = true;
    time_t now = time(NULL);
    for (size_t i = 0; i < n && i < e->nrcpts; i++) {
        struct deliver_rcpt *r = &w->r[i];
        if (!r->pending)
            continue;
        const char *addr = w->env.rcpts[i].addr;
        switch (r->result) {
        case DELIVER_OK:
            e->done[i] = 1;
            newly[i] = true;
            count_delivery(r, "sent");
            log_tagged(LOG_LVL_INFO, &(struct log_fields){.qid = e->qid, .event = "delivery", .result = "sent"},
                       "%s: to=<%s> status=sent (%s)", e->qid, addr,
                     r->text[0] ? r->text : "delivered to mailbox");
            if (wants(&w->env, i, DSN_DELIVERED)) {
                ok[nok++] = i;
                relayed_only = relayed_only && r->relayed;
            }
            break;
        case DELIVER_PERMFAIL:
            e->done[i] = 2;
            newly[i] = true;
            count_delivery(r, "bounced");
            log_tagged(LOG_LVL_ERR, &(struct log_fields){.qid = e->qid, .event = "delivery", .result = "bounced"},
                       "%s: to=<%s> status=bounced (%s)", e->qid, addr, r->text);
            if (wants(&w->env, i, DSN_FAILED))
                failed[nf++] = i;
            break;
        case DELIVER_TEMPFAIL:
            e->tempfail = true;
            snprintf(e->err, sizeof e->err, "%s", r->text);
            count_delivery(r, "deferred");
            log_tagged(LOG_LVL_WARN, &(struct log_fields){.qid = e->qid, .event = "delivery", .result = "deferred"},
                       "%s: to=<%s> status=deferred (%s)", e->qid, addr, r->text);
            if (!w->env.delay_warned && q->cfg->delay_warning > 0 &&
                (uint64_t)(now - w->env.arrival) >= q->cfg->delay_warning &&
                wants(&w->env, i, DSN_DELAYED))
                late[nlate++] = i;
            break;
        }
    }
    notify(q, w, DSN_FAILED, failed, nf);
    notify(q, w, relayed_only ? DSN_RELAYED : DSN_DELIVERED, ok, nok);
    notify(q, w, DSN_DELAYED, late, nlate);
    e->finished = !e->tempfail;
    if (e->finished) {
        if (recycle_put(q->dir, path) == -1 && errno != ENOENT)
            log_err("%s: cannot remove spool file: %s", e->qid, strerror(errno));
        else
            log_info("%s: removed", e->qid);
    } else {
        /* keep what is settled, so a restart retries only the rest */
        for (size_t i = 0; i < n; i++)
            if (newly[i] && spool_append_status(path, i, e->done[i] == 1 ? QR_DONE : QR_FAILED,
                                                w->r[i].text) == -1)
                log_err("%s: cannot record the status of <%s>: %s", e->qid,
                        w->env.rcpts[i].addr, strerror(errno));
        if (nlate > 0)
            spool_append_status(path, n, QR_WARNED, "delay notification sent");
    }
    free(failed);
    free(ok);
    free(late);
    free(newly);
}

gpointer queue_worker_thread(gpointer arg)
{
    struct queue *q = arg;
    /* Below the event loop and the committer: a client waiting for its 250
     * goes before the queue's work (on Linux a nice value is per thread). */
    if (q->worker_nice > 0) {
        id_t tid = (id_t)syscall(SYS_gettid);
        errno = 0;
        int now = getpriority(PRIO_PROCESS, tid);
        int nice = (errno == 0 ? now : 0) + q->worker_nice;
        if (setpriority(PRIO_PROCESS, tid, nice > 19 ? 19 : nice) == -1)
            log_warn("cannot lower the priority of a delivery thread: %s", strerror(errno));
    }
    for (;;) {
        struct work ws[WORKER_BATCH];
        size_t n = 0;
        struct qentry *e = g_async_queue_pop(q->work);
        if (e == &queue_stop_entry)
            break;
        memset(ws, 0, sizeof ws);
        ws[n++].e = e;
        g_mutex_lock(&q->gate);     /* queue_pause(): wait at the gate */
        while (q->paused)
            g_cond_wait(&q->gate_cond, &q->gate);
        q->in_batch++;
        g_mutex_unlock(&q->gate);
        config_hold_begin();    /* a reload frees the old configuration after the batch */
        bool stop = false;
        while (n < WORKER_BATCH && (e = g_async_queue_try_pop(q->work)) != NULL) {
            if (e == &queue_stop_entry) {
                stop = true;
                break;
            }
            ws[n++].e = e;
        }
        /* several nodes: a spool whose lease this process does not hold
         * (any more) is not touched; its messages wait */
        if (q->fence != NULL && !q->fence(q->fence_arg)) {
            for (size_t i = 0; i < n; i++) {
                ws[i].e->tempfail = true;
                snprintf(ws[i].e->err, sizeof ws[i].e->err,
                         "the lease on this spool is not held");
            }
        } else {
            if (q->pass_begin != NULL && q->process != NULL)
                q->pass_begin(q->pass_arg);
            for (size_t i = 0; i < n; i++)
                load(q, &ws[i]);
            end_pass(q, ws, n);
            commit_stages(q, ws, n);
            publish_batch(q, ws, n);
        }
        for (size_t i = 0; i < n; i++) {
            settle(q, &ws[i]);
            if (ws[i].loaded) {
                free(ws[i].data);
                free(ws[i].r);
                free(ws[i].pubs);
                queue_env_free(&ws[i].env);
            }
            if (ws[i].staged_names != NULL)
                g_ptr_array_free(ws[i].staged_names, TRUE);
            g_async_queue_push(q->results, ws[i].e);
        }
        config_hold_end();
        g_mutex_lock(&q->gate);
        if (--q->in_batch == 0)
            g_cond_broadcast(&q->gate_cond);
        g_mutex_unlock(&q->gate);
        uint64_t one = 1;
        ssize_t wr = write(q->efd, &one, sizeof one);
        (void)wr;
        if (stop)
            break;
    }
    return NULL;
}
