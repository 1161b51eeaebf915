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

#include <stdatomic.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <event2/event.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue_int.h"

/* ---- event-loop side ------------------------------------------------------- */

static void entry_free(struct qentry *e)
{
    if (e->timer)
        event_free(e->timer);
    if (e->injected)
        g_ptr_array_free(e->injected, TRUE);
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

static void schedule_retry(struct queue *q, struct qentry *e)
{
    time_t now = time(NULL);
    uint64_t life = e->deadline != 0 && e->deadline < q->cfg->queue_lifetime
                        ? e->deadline
                        : q->cfg->queue_lifetime;
    if ((uint64_t)(now - e->arrival) >= life) {
        /* one last pass: what is pending fails (and the sender is told,
         * unless the message's deadline says it was told otherwise) */
        log_warn("%s: %s exceeded (%s)", e->qid, life == q->cfg->queue_lifetime ? "queue lifetime"
                                                                               : "deadline",
                 e->err);
        e->expire = true;
        dispatch(e);
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
    /* remembered in the spool file, so a restart keeps the schedule */
    char path[PATH_MAX];
    path_of(q, "queue", e->qid, path, sizeof path);
    if (spool_append_retry(path, e->attempts, now + (time_t)((ms + 999) / 1000)) == -1)
        log_warn("%s: cannot record the retry time: %s", e->qid, strerror(errno));
}

static void on_results(evutil_socket_t fd, short what, void *arg)
{
    struct queue *q = arg;
    (void)what;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    struct qentry *e;
    char *id;
    while ((id = g_async_queue_try_pop(q->injects)) != NULL) {
        if (!q->stopping)
            queue_enqueue(q, id);   /* else it waits in queue/ for the next start */
        g_free(id);
    }
    while ((e = g_async_queue_try_pop(q->results)) != NULL) {
        e->busy = false;
        q->busy--;
        e->attempts++;
        if (e->injected != NULL) {
            for (guint i = 0; i < e->injected->len; i++)
                queue_enqueue(q, g_ptr_array_index(e->injected, i));
            g_ptr_array_free(e->injected, TRUE);
            e->injected = NULL;
        }
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
    struct qentry *e = xcalloc(1, sizeof *e);
    str_copy(e->qid, qid, sizeof e->qid);
    e->q = q;
    e->arrival = arrival;
    e->recovered = recovered;
    e->timer = evtimer_new(q->base, on_timer, e);
    g_hash_table_insert(q->entries, e->qid, e);
    return e;
}

void queue_enqueue_async(struct queue *q, const char *qid)
{
    g_async_queue_push(q->injects, g_strdup(qid));
    uint64_t one = 1;
    ssize_t wr = write(q->efd, &one, sizeof one);   /* wakes on_results on the event loop */
    (void)wr;
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
        char f[PATH_MAX + 256];
        snprintf(f, sizeof f, "%s/%s", p, de->d_name);
        if (recycle_put(dir, f) == 0)
            purged++;
    }
    closedir(d);
    return purged;
}

static int ensure_dirs(const char *dir, char *err, size_t errlen)
{
    static const char *const subs[] = {"incoming", "queue", "hold", "staged"};
    for (size_t i = 0; i < 4; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, subs[i]);
        if (fs_mkdirs(p, 0700) == -1) {
            snprintf(err, errlen, "cannot create %s: %s", p, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* One process per queue directory: its start-up recovery drops unacknowledged
 * files and its workers take every message, so a second pecd on the same
 * directory (another configuration naming it, other ports) would lose mail in
 * flight and deliver twice.  The lock is an flock() on QUEUE/pecd.lock, which
 * holds the owner's pid; the kernel releases it when the process dies. */
int queue_lock_dir(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/pecd.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        str_trim(pid);
        if (e == EWOULDBLOCK)
            snprintf(err, errlen, "queue %s is in use by another pecd (pid %s, %s)", dir,
                     pid[0] ? pid : "unknown", path);
        else
            snprintf(err, errlen, "%s: flock: %s", path, strerror(e));
        close(fd);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == -1 || pwrite(fd, pid, (size_t)n, 0) != n)
        log_warn("%s: cannot write the pid: %s", path, strerror(errno));
    return fd;
}

struct queue *queue_new(struct event_base *base, const struct config *cfg, deliver_fn deliver,
                        void *deliver_arg, char *err, size_t errlen)
{
    return queue_new_at(base, cfg, cfg->queue_dir, -1, deliver, deliver_arg, err, errlen);
}

struct queue *queue_new_at(struct event_base *base, const struct config *cfg, const char *dir,
                           int lock_fd, deliver_fn deliver, void *deliver_arg, char *err,
                           size_t errlen)
{
    if (ensure_dirs(dir, err, errlen) == -1) {
        if (lock_fd != -1)
            close(lock_fd);
        return NULL;
    }
    if (lock_fd == -1)
        lock_fd = queue_lock_dir(dir, err, errlen);
    if (lock_fd == -1)
        return NULL;
    struct queue *q = xcalloc(1, sizeof *q);
    q->lock_fd = lock_fd;
    q->base = base;
    q->cfg = cfg;
    q->deliver = deliver;
    q->deliver_arg = deliver_arg;
    str_copy(q->dir, dir, sizeof q->dir);
    if (recycle_open(q->dir) == -1)
        log_warn("%s/free: %s (spool files are deleted, not reused)", q->dir, strerror(errno));
    q->purged = purge_incoming(q->dir);
    q->committer = committer_new(base, q->dir, cfg->sync_fs, cfg->commit_delay_us);
    if (q->committer == NULL) {
        snprintf(err, errlen, "cannot start the committer for %s", q->dir);
        close(q->lock_fd);
        free(q);
        return NULL;
    }
    q->entries = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                       (GDestroyNotify)entry_free);
    q->work = g_async_queue_new();
    q->results = g_async_queue_new();
    q->injects = g_async_queue_new_full(g_free);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, on_results, q);
    event_add(q->ev, NULL);
    g_mutex_init(&q->gate);
    g_cond_init(&q->gate_cond);
    q->nworkers = cfg->delivery_workers;
    q->worker_nice = (int)cfg->worker_nice;
    for (size_t i = 0; i < q->nworkers; i++)
        q->workers[i] = g_thread_new("deliver", queue_worker_thread, q);
    return q;
}

struct committer *queue_committer(struct queue *q) { return q->committer; }

void queue_set_processor(struct queue *q, process_fn fn, void *arg)
{
    q->process = fn;
    q->process_arg = arg;
}

void queue_set_fence(struct queue *q, fence_fn fn, void *arg)
{
    q->fence = fn;
    q->fence_arg = arg;
}

const char *queue_dir(const struct queue *q) { return q->dir; }

void queue_set_pass_hooks(struct queue *q, pass_begin_fn begin, pass_end_fn end, void *arg)
{
    q->pass_begin = begin;
    q->pass_end = end;
    q->pass_arg = arg;
}


/* Schedules every file of queue/ not known yet; counts those resumed and
 * those found damaged (moved to hold/). */
static int scan_queue(struct queue *q, size_t *resumed, size_t *bad)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/queue", q->dir);
    DIR *d = opendir(p);
    if (d == NULL) {
        log_err("cannot open %s: %s", p, strerror(errno));
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strlen(de->d_name) != QUEUE_ID_LEN ||
            g_hash_table_contains(q->entries, de->d_name))
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
            (*bad)++;
            continue;
        }
        struct qentry *e = entry_add(q, env.qid, env.arrival, true);
        unsigned attempts = env.attempts;
        time_t next = env.next_try;
        queue_env_free(&env);
        if (e != NULL) {
            /* a deferred message keeps its back-off across the restart */
            e->attempts = attempts;
            time_t now = time(NULL);
            if (next > now) {
                struct timeval tv = {.tv_sec = next - now};
                event_add(e->timer, &tv);
            } else {
                dispatch(e);
            }
            (*resumed)++;
        }
    }
    closedir(d);
    return 0;
}

int queue_recover(struct queue *q)
{
    size_t resumed = 0, bad = 0, purged = q->purged;
    if (scan_queue(q, &resumed, &bad) == -1)
        return -1;
    log_info("queue %s: %zu messages resumed, %zu unacknowledged files dropped, %zu damaged",
             q->dir, resumed, purged, bad);
    return 0;
}

void queue_rescan(struct queue *q)
{
    size_t resumed = 0, bad = 0;
    if (scan_queue(q, &resumed, &bad) == 0 && (resumed > 0 || bad > 0))
        log_info("queue %s: %zu released messages taken, %zu damaged", q->dir, resumed, bad);
}

int queue_release(const char *queue_dir, const char *qid, char *err, size_t errlen)
{
    size_t n = strlen(qid);
    bool ok = n == QUEUE_ID_LEN;
    for (size_t i = 0; ok && i < n; i++)
        ok = (qid[i] >= '0' && qid[i] <= '9') || (qid[i] >= 'A' && qid[i] <= 'F');
    if (!ok) {
        snprintf(err, errlen, "'%s' is not a queue id (16 upper-case hex digits)", qid);
        return -1;
    }
    char from[PATH_MAX], to[PATH_MAX];
    snprintf(from, sizeof from, "%s/hold/%s", queue_dir, qid);
    snprintf(to, sizeof to, "%s/queue/%s", queue_dir, qid);
    /* one more attempt now: the retry schedule starts again */
    if (spool_append_retry(from, 0, 0) == -1) {
        snprintf(err, errlen, "%s: %s", from, errno == ENOENT ? "no such message on hold"
                                                              : strerror(errno));
        return -1;
    }
    if (fs_publish(from, to) == -1) {
        snprintf(err, errlen, "cannot move %s to %s: %s", from, to, strerror(errno));
        return -1;
    }
    /* the pecd that holds the queue picks it up on SIGHUP */
    char lock[PATH_MAX], pid[32] = "";
    snprintf(lock, sizeof lock, "%s/pecd.lock", queue_dir);
    int fd = open(lock, O_RDONLY | O_CLOEXEC);
    if (fd == -1 || flock(fd, LOCK_SH | LOCK_NB) == 0) {
        if (fd != -1)
            close(fd);
        return 0;   /* no pecd runs: taken at its next start */
    }
    ssize_t r = pread(fd, pid, sizeof pid - 1, 0);
    close(fd);
    pid[r > 0 ? r : 0] = '\0';
    long p = strtol(pid, NULL, 10);
    if (p > 1 && kill((pid_t)p, SIGHUP) == 0)
        return 1;
    snprintf(err, errlen, "released, but pecd (pid %s) could not be told: send it SIGHUP", pid);
    return -1;
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
        g_async_queue_push(q->work, &queue_stop_entry);
}

bool queue_idle(const struct queue *q) { return q->busy == 0; }

int queue_pause(struct queue *q, unsigned timeout_ms)
{
    g_mutex_lock(&q->gate);
    q->paused = true;
    gint64 until = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    while (q->in_batch > 0)
        if (!g_cond_wait_until(&q->gate_cond, &q->gate, until))
            break;
    bool idle = q->in_batch == 0;
    if (!idle) {
        q->paused = false;
        g_cond_broadcast(&q->gate_cond);
    }
    g_mutex_unlock(&q->gate);
    return idle ? 0 : -1;
}

void queue_resume(struct queue *q)
{
    g_mutex_lock(&q->gate);
    q->paused = false;
    g_cond_broadcast(&q->gate_cond);
    g_mutex_unlock(&q->gate);
}

void queue_set_config(struct queue *q, const struct config *cfg) { atomic_store(&q->cfg, cfg); }

void queue_stats(struct queue *q, struct queue_stats *st)
{
    memset(st, 0, sizeof *st);
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, q->entries);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        const struct qentry *e = v;
        if (e->attempts > 0 && !e->busy)
            st->deferred++;
        else
            st->active++;
        if (st->oldest == 0 || (e->arrival != 0 && e->arrival < st->oldest))
            st->oldest = e->arrival;
    }
    char p[PATH_MAX];
    path_of(q, "hold", "", p, sizeof p);
    DIR *d = opendir(p);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            st->hold += de->d_name[0] != '.';
        closedir(d);
    }
}

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
    g_async_queue_unref(q->injects);
    close(q->lock_fd);   /* releases the lock */
    g_mutex_clear(&q->gate);
    g_cond_clear(&q->gate_cond);
    free(q);
}

static void list_dir(const char *dir, const char *sub, FILE *out, size_t *count, bool json)
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
            if (json) {
                fputs((*count)++ ? ",{\"qid\":" : "{\"qid\":", out);
                json_fput(out, name);
                fprintf(out, ",\"hold\":%s,\"error\":", strcmp(sub, "hold") == 0 ? "true" : "false");
                json_fput(out, err);
                fputc('}', out);
            } else {
                fprintf(out, "%-16s  (%s: %s)\n", name, sub, err);
                (*count)++;
            }
            continue;
        }
        if (json) {
            fputs((*count)++ ? ",{\"qid\":" : "{\"qid\":", out);
            json_fput(out, env.qid);
            fprintf(out, ",\"hold\":%s,\"size\":%llu,\"arrival\":%lld,\"sender\":",
                    strcmp(sub, "hold") == 0 ? "true" : "false", (unsigned long long)env.size,
                    (long long)env.arrival);
            json_fput(out, env.sender);
            fputs(",\"recipients\":[", out);
            for (size_t r = 0; r < env.nrcpts; r++) {
                if (r)
                    fputc(',', out);
                json_fput(out, env.rcpts[r].addr);
            }
            fputs("]}", out);
            queue_env_free(&env);
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

int queue_list(const char *queue_dir, FILE *out) { return queue_list_ex(queue_dir, out, false); }

int queue_list_ex(const char *queue_dir, FILE *out, bool json)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/queue", queue_dir);
    /* an instance whose pecd never ran has no queue/ yet: an empty queue */
    if (access(p, R_OK) == -1 && errno != ENOENT) {
        fprintf(stderr, "cannot read the queue %s: %s\n", p, strerror(errno));
        return -1;
    }
    size_t n = 0;
    if (json)
        fputc('[', out);
    list_dir(queue_dir, "queue", out, &n, json);
    list_dir(queue_dir, "hold", out, &n, json);
    if (json)
        fputs("]\n", out);
    else if (n == 0)
        fprintf(out, "Queue is empty\n");
    else
        fprintf(out, "-- %zu message%s in queue (! = on hold)\n", n, n == 1 ? "" : "s");
    return 0;
}
