/*
 * commit.c - group commit of spool files.
 *
 * One thread makes spool files durable in batches: every file submitted
 * while the previous batch was syncing goes into the next one.  Per batch:
 * fsync of each file (or one syncfs(2) of the spool file system), the renames
 * from incoming/ into queue/, and one fsync of queue/.  Concurrent sessions
 * therefore share the directory fsync and the journal commit, so throughput
 * does not fall to one disk flush per message.  Results go back to the event
 * loop through an eventfd.
 *
 * Under load (the last batch had more than one file) a batch waits up to
 * [queue] commit_delay after its first file for others to join it: every
 * syncfs writes the file system's changed metadata blocks (bitmaps, inode
 * tables, directories) again, whatever the number of files it makes
 * durable, so fewer and fuller batches cost less CPU and disk (benchmark:
 * +7 % PEC transactions a second, p50 latency +1 ms; docs/performance.md).
 * A lone message on an idle server is not delayed.
 *
 * The same thread keeps a pool of empty files in incoming/: creating a file
 * needs a journal handle, which waits while the journal commits, so the event
 * loop takes ready files instead of creating them.
 */
#include "queue.h"
#include "lib/lib.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define BATCH_MAX 512
#define POOL_SIZE 64

struct pool_file {
    int fd;
    char name[32];
};

struct commit_req {
    struct spool_writer *w;
    commit_cb cb;
    void *arg;
    int result;
};

struct committer {
    GAsyncQueue *in;
    GAsyncQueue *done;
    int efd;
    struct event *ev;
    GThread *thread;
    int incoming_fd, queue_fd;
    bool use_syncfs;
    gint64 delay_us;     /* [queue] commit_delay */
    size_t last_n;       /* files in the last batch (commit thread only) */
    uint64_t batches;   /* written by the thread, read for statistics only */
    GMutex pool_lock;
    struct pool_file pool[POOL_SIZE];
    size_t npool;
    uint64_t pool_seq;
    char pool_prefix[16];
    char qdir[4096];
};

static struct commit_req stop_req;

static void run_batch(struct committer *c, struct commit_req **b, size_t n)
{
    int sync_err = 0;
    if (c->use_syncfs) {
        if (syncfs(c->queue_fd) == -1)
            sync_err = errno;
    } else {
        for (size_t i = 0; i < n; i++)
            if (fdatasync(spool_writer_fd(b[i]->w)) == -1)
                b[i]->result = -1;
    }
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        const char *qid = spool_writer_qid(b[i]->w);
        if (sync_err != 0 || b[i]->result != 0) {
            b[i]->result = -1;
            log_err("%s: fsync failed: %s", qid, strerror(sync_err ? sync_err : EIO));
            unlinkat(c->incoming_fd, spool_writer_name(b[i]->w), 0);
            continue;
        }
        const char *name = spool_writer_name(b[i]->w);
        if (renameat(c->incoming_fd, name, c->queue_fd, qid) == -1) {
            log_err("%s: rename into queue failed: %s", qid, strerror(errno));
            b[i]->result = -1;
            unlinkat(c->incoming_fd, name, 0);
            continue;
        }
        any = true;
    }
    if (any && fsync(c->queue_fd) == -1) {
        /* The renames may not be durable: refuse them all (the client
         * retries) and take the files back out of the queue. */
        log_err("fsync of the queue directory failed: %s", strerror(errno));
        for (size_t i = 0; i < n; i++) {
            if (b[i]->result == 0) {
                unlinkat(c->queue_fd, spool_writer_qid(b[i]->w), 0);
                b[i]->result = -1;
            }
        }
    }
    c->batches++;
}

/* Tops the pool of empty incoming files up (commit thread only). */
static void pool_refill(struct committer *c)
{
    for (;;) {
        g_mutex_lock(&c->pool_lock);
        size_t n = c->npool;
        g_mutex_unlock(&c->pool_lock);
        if (n >= POOL_SIZE)
            return;
        struct pool_file f;
        snprintf(f.name, sizeof f.name, "%s.%llu", c->pool_prefix,
                 (unsigned long long)c->pool_seq++);
        char path[4200];
        snprintf(path, sizeof path, "%s/incoming/%s", c->qdir, f.name);
        f.fd = recycle_take(c->qdir, path);
        if (f.fd == -1)
            f.fd = openat(c->incoming_fd, f.name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (f.fd == -1) {
            log_warn("cannot create a spool file in incoming/: %s", strerror(errno));
            return;
        }
        g_mutex_lock(&c->pool_lock);
        c->pool[c->npool++] = f;
        g_mutex_unlock(&c->pool_lock);
    }
}

int committer_take_file(struct committer *c, char *name, size_t namelen)
{
    int fd = -1;
    g_mutex_lock(&c->pool_lock);
    if (c->npool > 0) {
        struct pool_file *f = &c->pool[--c->npool];
        fd = f->fd;
        str_copy(name, f->name, namelen);
    }
    g_mutex_unlock(&c->pool_lock);
    return fd;
}

static gpointer commit_thread(gpointer arg)
{
    struct committer *c = arg;
    struct commit_req *batch[BATCH_MAX];
    for (;;) {
        pool_refill(c);
        struct commit_req *r = g_async_queue_timeout_pop(c->in, 200000);
        if (r == NULL)
            continue;
        if (r == &stop_req)
            break;
        size_t n = 0;
        batch[n++] = r;
        bool stop = false;
        bool gather = c->delay_us > 0 && c->last_n > 1;
        gint64 until = g_get_monotonic_time() + c->delay_us;
        while (n < BATCH_MAX) {
            r = g_async_queue_try_pop(c->in);
            if (r == NULL && gather) {
                gint64 left = until - g_get_monotonic_time();
                if (left > 0)
                    r = g_async_queue_timeout_pop(c->in, (guint64)left);
            }
            if (r == NULL)
                break;
            if (r == &stop_req) {
                stop = true;
                break;
            }
            batch[n++] = r;
        }
        c->last_n = n;
        run_batch(c, batch, n);
        for (size_t i = 0; i < n; i++)
            g_async_queue_push(c->done, batch[i]);
        uint64_t one = 1;
        ssize_t w = write(c->efd, &one, sizeof one);
        (void)w;
        if (stop)
            break;
    }
    return NULL;
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct committer *c = arg;
    (void)what;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    struct commit_req *req;
    while ((req = g_async_queue_try_pop(c->done)) != NULL) {
        spool_writer_free(req->w);
        req->cb(req->arg, req->result);
        free(req);
    }
}

struct committer *committer_new(struct event_base *base, const char *queue_dir, bool use_syncfs,
                                uint64_t delay_us)
{
    struct committer *c = xcalloc(1, sizeof *c);
    char path[4096];
    snprintf(path, sizeof path, "%s/incoming", queue_dir);
    c->incoming_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(path, sizeof path, "%s/queue", queue_dir);
    c->queue_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->incoming_fd == -1 || c->queue_fd == -1 || c->efd == -1) {
        log_err("committer: cannot open %s: %s", queue_dir, strerror(errno));
        if (c->incoming_fd != -1)
            close(c->incoming_fd);
        if (c->queue_fd != -1)
            close(c->queue_fd);
        if (c->efd != -1)
            close(c->efd);
        free(c);
        return NULL;
    }
    c->use_syncfs = use_syncfs;
    c->delay_us = (gint64)delay_us;
    snprintf(c->qdir, sizeof c->qdir, "%s", queue_dir);
    g_mutex_init(&c->pool_lock);
    snprintf(c->pool_prefix, sizeof c->pool_prefix, "p%X", (unsigned)g_random_int());
    c->in = g_async_queue_new();
    c->done = g_async_queue_new();
    c->ev = event_new(base, c->efd, EV_READ | EV_PERSIST, on_done, c);
    event_add(c->ev, NULL);
    c->thread = g_thread_new("commit", commit_thread, c);
    return c;
}

void committer_submit(struct committer *c, struct spool_writer *w, commit_cb cb, void *arg)
{
    struct commit_req *r = xcalloc(1, sizeof *r);
    r->w = w;
    r->cb = cb;
    r->arg = arg;
    g_async_queue_push(c->in, r);
}

uint64_t committer_batches(const struct committer *c) { return c->batches; }

void committer_free(struct committer *c)
{
    if (c == NULL)
        return;
    g_async_queue_push(c->in, &stop_req);
    g_thread_join(c->thread);
    /* deliver the last results */
    on_done(c->efd, EV_READ, c);
    for (size_t i = 0; i < c->npool; i++) {
        close(c->pool[i].fd);
        unlinkat(c->incoming_fd, c->pool[i].name, 0);
    }
    g_mutex_clear(&c->pool_lock);
    event_free(c->ev);
    close(c->efd);
    close(c->incoming_fd);
    close(c->queue_fd);
    g_async_queue_unref(c->in);
    g_async_queue_unref(c->done);
    free(c);
}
