/*
 * queue_int.h - what queue.c (the scheduler, on the event loop) and
 * worker.c (the delivery threads) share.  Not for other modules.
 *
 * Purpose: the scheduler's entries and struct queue, shared by the two
 * files.
 * Threads: the event loop owns entries and the hash table; a worker takes a
 * qentry from the work queue, owns it until it posts it back to results
 * (GAsyncQueue hand-off), and reads cfg atomically (reload); the pause gate
 * is a GMutex and GCond; injects come from any thread.
 * Ownership: struct queue owns its entries (freed by the event loop),
 * threads, queues and lock_fd; a qentry's injected ids are its own.
 * Errors: a worker reports in the entry (finished, tempfail, err) for the
 * event loop to act on and log.
 */
#ifndef PEC_QUEUE_INT_H
#define PEC_QUEUE_INT_H

#include "queue.h"

#include <glib.h>
#include <limits.h>
#include <stdio.h>

#define WORKER_BATCH 32

struct event;

struct qentry {
    char qid[QUEUE_ID_LEN + 1];
    struct queue *q;
    struct event *timer;
    unsigned attempts;
    time_t arrival;
    bool recovered;
    bool busy;
    bool expire;             /* lifetime over: fail what is pending, notify, remove */
    uint64_t deadline;       /* the message's own lifetime, without reports (0: none) */
    unsigned char *done;     /* per recipient: 0 pending, 1 delivered, 2 failed for good */
    size_t nrcpts;
    /* worker results, read by the event loop after the entry comes back */
    bool finished;
    bool tempfail;
    char err[512];
    GPtrArray *injected;     /* ids of notifications stored for this message */
};

struct queue {
    struct event_base *base;
    const struct config *_Atomic cfg;   /* swapped by a reload (queue_set_config) */
    deliver_fn deliver;
    void *deliver_arg;
    process_fn process;
    void *process_arg;
    pass_begin_fn pass_begin;
    pass_end_fn pass_end;
    void *pass_arg;
    fence_fn fence;                 /* several nodes: may this process work on the spool? */
    void *fence_arg;
    char dir[PATH_MAX];
    struct committer *committer;
    GHashTable *entries;
    GAsyncQueue *work;
    GAsyncQueue *results;
    GAsyncQueue *injects;           /* ids stored from other threads (queue_enqueue_async) */
    int efd;
    struct event *ev;
    GThread *workers[64];
    size_t nworkers;
    int worker_nice;                /* setpriority() of each worker thread */
    size_t busy;
    bool stopping;
    size_t purged;      /* unacknowledged files dropped at start-up */
    /* queue_pause(): workers wait at the gate before a batch; in_batch
     * counts those inside one */
    GMutex gate;
    GCond gate_cond;
    bool paused;
    unsigned in_batch;
    int lock_fd;        /* QUEUE/pecd.lock, flock'ed for the queue's life */
};

extern struct qentry queue_stop_entry;

static inline void path_of(const struct queue *q, const char *sub, const char *qid, char *out,
                           size_t n)
{
    snprintf(out, n, "%s/%s/%s", q->dir, sub, qid);
}

gpointer queue_worker_thread(gpointer arg);

#endif
