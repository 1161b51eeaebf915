/*
 * fs_sync.c - syncfs(2) shared between the threads of a process.
 *
 * Every delivery thread (a stage's outputs, its commit record, mailbox
 * copies) needs "everything I wrote so far is on disk" for the same file
 * system, several times a second.  (The committer, which the SMTP sessions'
 * 250 waits for, keeps a syncfs of its own: waiting behind a delivery
 * thread's doubled its p99 latency, docs/performance.md.)  syncfs() gives exactly that for the whole file system, so callers
 * that arrive while one is running can share the next one: a caller needs a
 * syncfs that started after it arrived (the one running may have started
 * before its writes), runs it itself if none is running, and otherwise waits
 * for it.  Under load this turns one syncfs per caller into about one per
 * syncfs duration, whatever the number of threads; each one also costs the
 * kernel a pass over the dirty inodes and a flush of the disk's cache.
 *
 * One state per file system (st_dev), kept for the life of the process with
 * its own descriptor: syncfs() reports a writeback error to every descriptor
 * opened before it happened (errseq), so a long-lived descriptor sees every
 * error of the file system.  A failure is reported to every caller whose
 * syncfs could have been the failed one (conservative: possibly one more).
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <sys/stat.h>
#include <unistd.h>

#define SYNCERS 8

struct syncer {
    dev_t dev;
    int fd;                 /* our own descriptor on that file system */
    GMutex lock;
    GCond cond;
    bool running;
    uint64_t started;       /* generations of syncfs calls */
    uint64_t done;
    uint64_t failed;        /* the last generation that failed (0: none) */
    int failed_errno;
    uint64_t calls;         /* fs_syncfs_shared calls, for the statistics */
};

static GMutex syncers_lock;
static struct syncer syncers[SYNCERS];
static size_t nsyncers;

static struct syncer *syncer_for(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == -1)
        return NULL;
    g_mutex_lock(&syncers_lock);
    struct syncer *s = NULL;
    for (size_t i = 0; i < nsyncers && s == NULL; i++)
        if (syncers[i].dev == st.st_dev)
            s = &syncers[i];
    if (s == NULL && nsyncers < SYNCERS) {
        int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (own != -1) {
            s = &syncers[nsyncers];
            s->dev = st.st_dev;
            s->fd = own;
            g_mutex_init(&s->lock);
            g_cond_init(&s->cond);
            nsyncers++;   /* published last: lookups read the slots below nsyncers */
        }
    }
    g_mutex_unlock(&syncers_lock);
    return s;
}

int fs_syncfs_shared(int fd)
{
    struct syncer *s = syncer_for(fd);
    if (s == NULL)
        return syncfs(fd);   /* more file systems than slots: unshared */
    g_mutex_lock(&s->lock);
    s->calls++;
    uint64_t need = s->started + 1;   /* the next one to start, not the running one */
    while (s->done < need) {
        if (s->running) {
            g_cond_wait(&s->cond, &s->lock);
            continue;
        }
        s->running = true;
        uint64_t gen = ++s->started;
        g_mutex_unlock(&s->lock);
        int r = syncfs(s->fd);
        int e = errno;
        g_mutex_lock(&s->lock);
        s->running = false;
        s->done = gen;
        if (r == -1) {
            s->failed = gen;
            s->failed_errno = e;
        }
        g_cond_broadcast(&s->cond);
    }
    int rc = 0;
    if (s->failed >= need) {
        errno = s->failed_errno;
        rc = -1;
    }
    g_mutex_unlock(&s->lock);
    return rc;
}

int fs_sync_dir_fs(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    int r = fs_syncfs_shared(fd);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

void fs_syncfs_stats(uint64_t *calls, uint64_t *syncs)
{
    *calls = *syncs = 0;
    g_mutex_lock(&syncers_lock);
    size_t n = nsyncers;
    g_mutex_unlock(&syncers_lock);
    for (size_t i = 0; i < n; i++) {
        g_mutex_lock(&syncers[i].lock);
        *calls += syncers[i].calls;
        *syncs += syncers[i].done;
        g_mutex_unlock(&syncers[i].lock);
    }
}
