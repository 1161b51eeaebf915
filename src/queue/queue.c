/*
 * queue.c - the scheduler: an in-memory index of queue/, delivery workers,
 * retries with exponential back-off and jitter, recovery at start-up.
 *
 * Each queued message has an entry with its own libevent timer, so a
 * deferred message costs nothing until its time comes (no queue rescans on
 * the hot path).  Workers take batches of ready messages, deliver every
 * pending recipient, sync the touched directories once per batch, and only
 * then remove the spool file.  A crash at any point leaves the spool file in
 * queue/, and recovery delivers again; the delivery function suppresses
 * duplicates ('recovered').
 */
#include "queue.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define WORKER_BATCH 32

struct qentry {
    char qid[QUEUE_ID_LEN + 1];
    struct queue *q;
    struct event *timer;
    unsigned attempts;
    time_t arrival;
    bool recovered;
    bool busy;
    unsigned char *done;     /* per recipient: delivered (1) or failed for good (2) */
    size_t nrcpts;
    /* worker results */
    bool finished;
    bool tempfail;
    char err[256];
};

struct queue {
    struct event_base *base;
    const struct config *cfg;
    deliver_fn deliver;
    void *deliver_arg;
    char dir[PATH_MAX];
    struct committer *committer;
    GHashTable *entries;
    GAsyncQueue *work;
    GAsyncQueue *results;
    int efd;
    struct event *ev;
    GThread *workers[64];
    size_t nworkers;
    size_t busy;
    bool stopping;
    size_t purged;      /* unacknowledged files dropped at start-up */
};

static struct qentry stop_entry;

static void path_of(const struct queue *q, const char *sub, const char *qid, char *out, size_t n)
{
    snprintf(out, n, "%s/%s/%s", q->dir, sub, qid);
}

/* ---- worker side ----------------------------------------------------------- */

/* A recipient's copy written but not yet published (see deliver_pending). */
struct pending {
    struct qentry *e;
    size_t rcpt;
    struct deliver_pending p;
};

static void deliver_entry(struct queue *q, struct qentry *e, GPtrArray *pendings)
{
    char path[PATH_MAX], err[256];
    path_of(q, "queue", e->qid, path, sizeof path);
    struct queue_env env;
    char *data;
    size_t len;
    e->finished = false;
    e->tempfail = false;
    e->err[0] = '\0';
    if (spool_read(path, &env, &data, &len, err, sizeof err) == -1) {
        snprintf(e->err, sizeof e->err, "unreadable spool file: %s", err);
        e->tempfail = true;
        return;
    }
    if (e->done == NULL) {
        e->nrcpts = env.nrcpts;
        e->done = calloc(env.nrcpts ? env.nrcpts : 1, 1);
    }
    for (size_t i = 0; i < env.nrcpts && i < e->nrcpts; i++) {
        if (e->done[i])
            continue;
        struct pending *pd = malloc(sizeof *pd);
        pd->e = e;
        pd->rcpt = i;
        pd->p.tmp[0] = '\0';
        enum deliver_result r = q->deliver(q->deliver_arg, &env, i, data, len, e->recovered,
                                           !q->cfg->sync_fs, &pd->p, err, sizeof err);
        if (r == DELIVER_OK) {
            e->done[i] = 1;
            log_info("%s: to=<%s> status=sent (delivered to mailbox)", e->qid, env.rcpts[i].addr);
        } else if (r == DELIVER_PERMFAIL) {
            e->done[i] = 2;
            log_err("%s: to=<%s> status=bounced (%s)", e->qid, env.rcpts[i].addr, err);
        } else {
            e->tempfail = true;
            snprintf(e->err, sizeof e->err, "%s", err);
            log_warn("%s: to=<%s> status=deferred (%s)", e->qid, env.rcpts[i].addr, err);
        }
        if (r == DELIVER_OK && pd->p.tmp[0] != '\0')
            g_ptr_array_add(pendings, pd);
        else
            free(pd);
    }
    free(data);
    queue_env_free(&env);
}

static void pending_failed(struct pending *pd, const char *why)
{
    struct qentry *e = pd->e;
    e->done[pd->rcpt] = 0;
    e->tempfail = true;
    snprintf(e->err, sizeof e->err, "%s", why);
    log_err("%s: recipient %zu deferred: %s", e->qid, pd->rcpt, why);
}

/* Group commit of a batch's deliveries: make the written data durable (one
 * syncfs per file system, or the delivery function's own fsyncs), publish
 * every copy, then fsync each touched directory once. */
static void publish_batch(struct queue *q, GPtrArray *pendings)
{
    if (pendings->len == 0)
        return;
    GHashTable *dirs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GHashTable *devs = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (guint i = 0; i < pendings->len; i++) {
        struct pending *pd = g_ptr_array_index(pendings, i);
        char *dir = g_path_get_dirname(pd->p.dst);
        if (q->cfg->sync_fs) {
            struct stat st;
            if (stat(dir, &st) == 0 && !g_hash_table_contains(devs, GSIZE_TO_POINTER(st.st_dev + 1))) {
                g_hash_table_add(devs, GSIZE_TO_POINTER(st.st_dev + 1));
                int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd == -1 || syncfs(fd) == -1) {
                    log_err("syncfs %s: %s", dir, strerror(errno));
                    /* nothing of this batch is known durable */
                    for (guint j = 0; j < pendings->len; j++)
                        pending_failed(g_ptr_array_index(pendings, j), "syncfs failed");
                    if (fd != -1)
                        close(fd);
                    g_free(dir);
                    goto out;
                }
                close(fd);
            }
        }
        g_hash_table_add(dirs, dir);
    }
    for (guint i = 0; i < pendings->len; i++) {
        struct pending *pd = g_ptr_array_index(pendings, i);
        if (fs_publish(pd->p.tmp, pd->p.dst) == -1)
            pending_failed(pd, strerror(errno));
    }
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, dirs);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (fs_fsync_dir(key) == -1) {
            log_err("fsync %s: %s", (char *)key, strerror(errno));
            /* deliver again later; the copies already linked are duplicates
             * then, and suppressed */
            for (guint j = 0; j < pendings->len; j++) {
                struct pending *pd = g_ptr_array_index(pendings, j);
                pd->e->recovered = true;
                pending_failed(pd, "mailbox directory fsync failed");
            }
            break;
        }
    }
out:
    g_hash_table_destroy(devs);
    g_hash_table_destroy(dirs);
}

static gpointer worker_thread(gpointer arg)
{
    struct queue *q = arg;
    for (;;) {
        struct qentry *batch[WORKER_BATCH];
        size_t n = 0;
        struct qentry *e = g_async_queue_pop(q->work);
        if (e == &stop_entry)
            break;
        batch[n++] = e;
        bool stop = false;
        while (n < WORKER_BATCH && (e = g_async_queue_try_pop(q->work)) != NULL) {
            if (e == &stop_entry) {
                stop = true;
                break;
            }
            batch[n++] = e;
        }
        GPtrArray *pendings = g_ptr_array_new_with_free_func(free);
        for (size_t i = 0; i < n; i++)
            deliver_entry(q, batch[i], pendings);
        publish_batch(q, pendings);
        g_ptr_array_free(pendings, TRUE);
        for (size_t i = 0; i < n; i++) {
            e = batch[i];
            e->finished = !e->tempfail;
            if (e->finished) {
                char path[PATH_MAX];
                path_of(q, "queue", e->qid, path, sizeof path);
                if (unlink(path) == -1 && errno != ENOENT)
                    log_err("%s: cannot remove spool file: %s", e->qid, strerror(errno));
                else
                    log_info("%s: removed", e->qid);
            }
            g_async_queue_push(q->results, e);
        }
        uint64_t one = 1;
        ssize_t w = write(q->efd, &one, sizeof one);
        (void)w;
        if (stop)
            break;
    }
    return NULL;
}

/* ---- event-loop side ------------------------------------------------------- */

static void entry_free(struct qentry *e)
{
    if (e->timer)
        event_free(e->timer);
    free(e->done);
    free(e);
}

static void dispatch(struct qentry *e)
{
    struct queue *q = e->q;
    if (e->busy || q->stopping)
        return;
    e->busy = true;
    q->busy++;
    g_async_queue_push(q->work, e);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    dispatch(arg);
}

static void hold(struct queue *q, struct qentry *e, const char *why)
{
    char from[PATH_MAX], to[PATH_MAX];
    path_of(q, "queue", e->qid, from, sizeof from);
    path_of(q, "hold", e->qid, to, sizeof to);
    if (rename(from, to) == -1)
        log_err("%s: cannot move to hold/: %s", e->qid, strerror(errno));
    else
        log_err("%s: queue lifetime exceeded (%s); moved to hold/", e->qid, why);
    g_hash_table_remove(q->entries, e->qid);
}

static void schedule_retry(struct queue *q, struct qentry *e)
{
    time_t now = time(NULL);
    if ((uint64_t)(now - e->arrival) >= q->cfg->queue_lifetime) {
        hold(q, e, e->err);
        return;
    }
    /* exponential back-off with +-20% jitter, so retries do not synchronise */
    uint64_t d = q->cfg->retry_min;
    for (unsigned i = 1; i < e->attempts && d < q->cfg->retry_max; i++)
        d *= 2;
    if (d > q->cfg->retry_max)
        d = q->cfg->retry_max;
    double jitter = 0.8 + 0.4 * g_random_double();
    uint64_t ms = (uint64_t)((double)d * 1000.0 * jitter);
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    event_add(e->timer, &tv);
}

static void on_results(evutil_socket_t fd, short what, void *arg)
{
    struct queue *q = arg;
    (void)what;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    struct qentry *e;
    while ((e = g_async_queue_try_pop(q->results)) != NULL) {
        e->busy = false;
        q->busy--;
        e->attempts++;
        if (e->finished) {
            g_hash_table_remove(q->entries, e->qid);
            continue;
        }
        if (!q->stopping)
            schedule_retry(q, e);
    }
}

static struct qentry *entry_add(struct queue *q, const char *qid, time_t arrival, bool recovered)
{
    if (g_hash_table_contains(q->entries, qid))
        return NULL;
    struct qentry *e = calloc(1, sizeof *e);
    str_copy(e->qid, qid, sizeof e->qid);
    e->q = q;
    e->arrival = arrival;
    e->recovered = recovered;
    e->timer = evtimer_new(q->base, on_timer, e);
    g_hash_table_insert(q->entries, e->qid, e);
    return e;
}

void queue_enqueue(struct queue *q, const char *qid)
{
    struct qentry *e = entry_add(q, qid, time(NULL), false);
    if (e != NULL)
        dispatch(e);
}

/* incoming/ holds only files never acknowledged (and the committer's empty
 * pool files): drop them before the committer starts. */
static size_t purge_incoming(const char *dir)
{
    char p[PATH_MAX];
    size_t purged = 0;
    snprintf(p, sizeof p, "%s/incoming", dir);
    DIR *d = opendir(p);
    if (d == NULL)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            purged++;
    }
    closedir(d);
    return purged;
}

static int ensure_dirs(const char *dir, char *err, size_t errlen)
{
    static const char *const subs[] = {"incoming", "queue", "hold"};
    for (size_t i = 0; i < 3; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, subs[i]);
        if (fs_mkdirs(p, 0700) == -1) {
            snprintf(err, errlen, "cannot create %s: %s", p, strerror(errno));
            return -1;
        }
    }
    return 0;
}

struct queue *queue_new(struct event_base *base, const struct config *cfg, deliver_fn deliver,
                        void *deliver_arg, char *err, size_t errlen)
{
    if (ensure_dirs(cfg->queue_dir, err, errlen) == -1)
        return NULL;
    struct queue *q = calloc(1, sizeof *q);
    q->base = base;
    q->cfg = cfg;
    q->deliver = deliver;
    q->deliver_arg = deliver_arg;
    str_copy(q->dir, cfg->queue_dir, sizeof q->dir);
    q->purged = purge_incoming(q->dir);
    q->committer = committer_new(base, q->dir, cfg->sync_fs);
    if (q->committer == NULL) {
        snprintf(err, errlen, "cannot start the committer for %s", q->dir);
        free(q);
        return NULL;
    }
    q->entries = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                       (GDestroyNotify)entry_free);
    q->work = g_async_queue_new();
    q->results = g_async_queue_new();
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, on_results, q);
    event_add(q->ev, NULL);
    q->nworkers = cfg->delivery_workers;
    for (size_t i = 0; i < q->nworkers; i++)
        q->workers[i] = g_thread_new("deliver", worker_thread, q);
    return q;
}

struct committer *queue_committer(struct queue *q) { return q->committer; }


int queue_recover(struct queue *q)
{
    char p[PATH_MAX];
    size_t resumed = 0, bad = 0, purged = q->purged;
    snprintf(p, sizeof p, "%s/queue", q->dir);
    DIR *d = opendir(p);
    if (d == NULL) {
        log_err("cannot open %s: %s", p, strerror(errno));
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strlen(de->d_name) != QUEUE_ID_LEN)
            continue;
        char path[PATH_MAX], err[256];
        struct queue_env env;
        path_of(q, "queue", de->d_name, path, sizeof path);
        if (spool_read(path, &env, NULL, NULL, err, sizeof err) == -1) {
            /* cannot happen through our own renames; keep it for the operator */
            char to[PATH_MAX];
            path_of(q, "hold", de->d_name, to, sizeof to);
            rename(path, to);
            log_err("%s: damaged spool file (%s); moved to hold/", de->d_name, err);
            bad++;
            continue;
        }
        struct qentry *e = entry_add(q, env.qid, env.arrival, true);
        queue_env_free(&env);
        if (e != NULL) {
            dispatch(e);
            resumed++;
        }
    }
    closedir(d);
    log_info("queue %s: %zu messages resumed, %zu unacknowledged files dropped, %zu damaged",
             q->dir, resumed, purged, bad);
    return 0;
}

void queue_stop(struct queue *q)
{
    if (q->stopping)
        return;
    q->stopping = true;
    /* drop work not yet started: it stays in queue/ for the next start */
    struct qentry *e;
    while ((e = g_async_queue_try_pop(q->work)) != NULL) {
        e->busy = false;
        q->busy--;
    }
    for (size_t i = 0; i < q->nworkers; i++)
        g_async_queue_push(q->work, &stop_entry);
}

bool queue_idle(const struct queue *q) { return q->busy == 0; }

void queue_free(struct queue *q)
{
    if (q == NULL)
        return;
    queue_stop(q);
    for (size_t i = 0; i < q->nworkers; i++)
        g_thread_join(q->workers[i]);
    on_results(q->efd, EV_READ, q);
    committer_free(q->committer);
    event_free(q->ev);
    close(q->efd);
    g_hash_table_destroy(q->entries);
    g_async_queue_unref(q->work);
    g_async_queue_unref(q->results);
    free(q);
}

static void list_dir(const char *dir, const char *sub, FILE *out, size_t *count)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, sub);
    DIR *d = opendir(p);
    if (d == NULL)
        return;
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            g_ptr_array_add(names, g_strdup(de->d_name));
    closedir(d);
    g_ptr_array_sort(names, (GCompareFunc)(void (*)(void))g_strcmp0);
    for (guint i = 0; i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);
        char path[PATH_MAX], err[256], when[64];
        snprintf(path, sizeof path, "%s/%s", p, name);
        struct queue_env env;
        if (spool_read(path, &env, NULL, NULL, err, sizeof err) == -1) {
            fprintf(out, "%-16s  (%s: %s)\n", name, sub, err);
            (*count)++;
            continue;
        }
        struct tm tm;
        localtime_r(&env.arrival, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        /* one line per message, so it can be grepped: id, size, arrival,
         * sender, recipients */
        fprintf(out, "%s%s %8llu %s  <%s>  ->", env.qid, strcmp(sub, "hold") == 0 ? "!" : " ",
                (unsigned long long)env.size, when, env.sender);
        for (size_t r = 0; r < env.nrcpts; r++)
            fprintf(out, " <%s>", env.rcpts[r].addr);
        fputc('\n', out);
        (*count)++;
        queue_env_free(&env);
    }
    g_ptr_array_free(names, TRUE);
}

int queue_list(const char *queue_dir, FILE *out)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/queue", queue_dir);
    if (access(p, R_OK) == -1) {
        fprintf(stderr, "cannot read the queue %s: %s\n", p, strerror(errno));
        return -1;
    }
    size_t n = 0;
    list_dir(queue_dir, "queue", out, &n);
    list_dir(queue_dir, "hold", out, &n);
    if (n == 0)
        fprintf(out, "Queue is empty\n");
    else
        fprintf(out, "-- %zu message%s in queue (! = on hold)\n", n, n == 1 ? "" : "s");
    return 0;
}
