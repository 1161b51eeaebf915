/*
 * cluster.c - one node among the provider's nodes (cluster.h; the database
 * side is src/store/state_nodes.c; the why is docs/scaling.md).
 *
 *   join        the node's row; the flock of its queue directory (one
 *               process per spool, as on one node); the lease on its spool
 *               (epoch +1).  When another node runs the spool (it took it
 *               over while this one was down), the flock is that node's: we
 *               say we are back (want_back) and wait until it hands over.
 *   heartbeat   a thread, every lease/5: renews the heartbeat and every
 *               lease held.  Each lease is trusted locally until its
 *               renewal's start + lease - lease/3 (the monotonic clock): a
 *               node cut off from the database stops processing before any
 *               other can take its spool (which needs lease_until, set by
 *               the database's clock at the last renewal, to have passed).
 *               The own lease found taken: the node exits at once (as a
 *               crash would: everything is replayable) and its supervisor
 *               restarts it, to wait for the spool at join.
 *   takeover    after a full lease of being connected (so that after an
 *               outage of the database every node renews before anyone
 *               judges others dead): a node whose heartbeat and lease both
 *               expired loses its spool to us - its flock first (a live
 *               process on a shared file system keeps it), then one atomic
 *               UPDATE that raises the epoch - and the event loop runs that
 *               directory as a second queue: queue_new_at() and the start-up
 *               recovery (queue_recover: outputs committed or dropped,
 *               stages replayed with their evidence and duplicates found
 *               in the shared database).
 *   hand back   the owner comes back (heartbeat or want_back): its queue
 *               stops after its current batch, the flock goes, then the
 *               lease (owner NULL), and the owner takes it.
 *   backup      the control socket holds the spools taken over while it
 *               copies them (cluster_spools_hold): a stop asked meanwhile
 *               waits for the release.
 *
 * Threads: the database is only touched by the cluster thread (and the
 * delivery threads' commits); queues are made and freed on the event loop,
 * which the thread asks through an eventfd.
 */
#include "cluster.h"
#include "roles.h"
#include "transport.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "queue/queue.h"
#include "store/state.h"
#include "store/tracking.h"

#include <errno.h>
#include <event2/event.h>
#include <glib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define SEEN_PURGE_MAX 2000

/* One spool this process works on: its own, or one taken over. */
struct spool {
    struct cluster *cl;
    char name[72];               /* the node whose spool it is */
    char dir[4096];
    long long epoch;
    _Atomic gint64 valid_until;  /* g_get_monotonic_time() */
    /* a spool taken over */
    int lock_fd;                 /* until the queue takes it */
    struct queue *q;             /* the event loop's */
    enum { SP_STARTING, SP_RUNNING, SP_STOPPING, SP_LOST } state;
    int holds;                   /* backups copying it (cluster_spools_hold) */
    bool stop_deferred;          /* a stop asked while held: made at the release */
};

enum { REQ_START, REQ_STOP };
struct request {
    int kind;
    struct spool *sp;
};

struct cluster {
    const struct config *_Atomic cfg;
    char name[72];
    int num;
    struct spool own;
    struct event_base *base;
    struct roles *roles;
    struct transport *transport;
    struct tracking *tracking;
    GThread *thread;
    GMutex lock;
    GCond cond;
    bool stop;
    GPtrArray *taken;            /* struct spool *, taken over (lock) */
    GAsyncQueue *to_loop;        /* struct request * */
    GAsyncQueue *done;           /* struct spool * stopped by the loop */
    int efd;
    struct event *ev;
    gint64 connected_since;      /* the thread's: 0 while the database is away */
    gint64 last_warn;
};

static unsigned lease_of(const struct cluster *cl)
{
    return (unsigned)atomic_load(&cl->cfg)->state_lease;
}

/* A lease renewed at t0 (monotonic µs) is trusted until then. */
static gint64 trust_until(const struct cluster *cl, gint64 t0)
{
    gint64 lease = (gint64)lease_of(cl) * G_USEC_PER_SEC;
    return t0 + lease - lease / 3;
}

static bool spool_fence(void *arg)
{
    struct spool *sp = arg;
    return g_get_monotonic_time() < atomic_load(&sp->valid_until);
}

/* The pass hooks of a spool's queue: the lease's epoch fences the commit of
 * the pass's records (state_fence_check, in tracking_pass_end). */
static void spool_pass_begin(void *arg)
{
    struct spool *sp = arg;
    state_fence_set(sp->name, sp->epoch);
    roles_pass_begin(sp->cl->roles);
}

static int spool_pass_end(void *arg, char *err, size_t errlen)
{
    struct spool *sp = arg;
    int rc = roles_pass_end(sp->cl->roles, err, errlen);
    state_fence_set(NULL, 0);
    return rc;
}

static void install(struct cluster *cl, struct queue *q, struct spool *sp)
{
    if (cl->roles != NULL) {
        queue_set_processor(q, roles_process, cl->roles);
        queue_set_pass_hooks(q, spool_pass_begin, spool_pass_end, sp);
    }
    queue_set_fence(q, spool_fence, sp);
}

/* ---- join ------------------------------------------------------------------------ */

struct cluster *cluster_join(const struct config *cfg, char *err, size_t errlen)
{
    struct cluster *cl = xcalloc(1, sizeof *cl);
    cl->cfg = cfg;
    cl->efd = -1;
    str_copy(cl->name, cfg->state_node, sizeof cl->name);
    str_copy(cl->own.name, cfg->state_node, sizeof cl->own.name);
    str_copy(cl->own.dir, cfg->queue_dir, sizeof cl->own.dir);
    cl->own.cl = cl;
    cl->own.lock_fd = -1;
    cl->own.state = SP_RUNNING;
    if (fs_mkdirs(cfg->queue_dir, 0700) == -1) {
        snprintf(err, errlen, "cannot create %s: %s", cfg->queue_dir, strerror(errno));
        free(cl);
        return NULL;
    }
    if (state_node_register(cl->name, cfg->queue_dir, cfg->data_dir, &cl->num, err, errlen) ==
        -1) {
        free(cl);
        return NULL;
    }
    unsigned lease = (unsigned)cfg->state_lease;
    gint64 waited_since = 0, said = 0;
    for (;;) {
        char e2[512], owner[72] = "";
        int fd = queue_lock_dir(cfg->queue_dir, e2, sizeof e2);
        int r;
        gint64 t0 = g_get_monotonic_time();
        if (fd >= 0) {
            r = state_spool_take_own(cl->name, lease, &cl->own.epoch, owner, sizeof owner, err,
                                     errlen);
            if (r == 1) {
                cl->own.lock_fd = fd;
                atomic_store(&cl->own.valid_until, trust_until(cl, t0));
                break;
            }
            close(fd);
        } else {
            /* the flock is held: by the node that took our spool over (it
             * hands it back when it sees us), or by another process of this
             * very node (an error, as on one node) */
            r = state_spool_want_back(cl->name, lease, owner, sizeof owner, err, errlen);
            if (r == 0 && (owner[0] == '\0' || strcmp(owner, cl->name) == 0)) {
                snprintf(err, errlen, "%s", e2);
                r = -1;
            }
        }
        if (r == -1) {
            free(cl);
            return NULL;
        }
        if (waited_since == 0)
            waited_since = t0;
        if (t0 - said >= 10 * G_USEC_PER_SEC) {
            log_warn("node %s: its spool %s is run by node %s, which took it over while this "
                     "node was down: waiting for it to hand it back (%llds so far)",
                     cl->name, cfg->queue_dir, owner[0] ? owner : "(none yet)",
                     (long long)((t0 - waited_since) / G_USEC_PER_SEC));
            said = t0;
        }
        g_usleep(G_USEC_PER_SEC / 2);
    }
    queue_set_node_tag((unsigned)cl->num);
    log_info("node %s (number %d) joined: its spool %s, lease epoch %lld", cl->name, cl->num,
             cfg->queue_dir, cl->own.epoch);
    return cl;
}

int cluster_take_queue_lock(struct cluster *cl)
{
    int fd = cl->own.lock_fd;
    cl->own.lock_fd = -1;
    return fd;
}

bool cluster_ready(const struct cluster *cl)
{
    return cl == NULL || (spool_fence((void *)&cl->own) && state_reachable());
}

void cluster_set_config(struct cluster *cl, const struct config *cfg)
{
    if (cl == NULL)
        return;
    atomic_store(&cl->cfg, cfg);
    g_mutex_lock(&cl->lock);
    for (guint i = 0; i < cl->taken->len; i++) {
        struct spool *sp = g_ptr_array_index(cl->taken, i);
        if (sp->q != NULL)
            queue_set_config(sp->q, cfg);
    }
    g_mutex_unlock(&cl->lock);
}

/* ---- the event loop's side: queues of spools taken over ---------------------------- */

static void on_request(evutil_socket_t fd, short what, void *arg)
{
    struct cluster *cl = arg;
    (void)what;
    uint64_t v;
    ssize_t rd = read(fd, &v, sizeof v);
    (void)rd;
    struct request *rq;
    while ((rq = g_async_queue_try_pop(cl->to_loop)) != NULL) {
        struct spool *sp = rq->sp;
        if (rq->kind == REQ_START) {
            char err[512];
            const struct config *cfg = atomic_load(&cl->cfg);
            struct queue *q = queue_new_at(cl->base, cfg, sp->dir, sp->lock_fd,
                                           transport_deliver, cl->transport, err, sizeof err);
            sp->lock_fd = -1;   /* the queue's now, or closed */
            if (q == NULL) {
                log_err("node %s: cannot run the spool of node %s: %s", cl->name, sp->name, err);
                g_async_queue_push(cl->done, sp);
            } else {
                install(cl, q, sp);
                g_mutex_lock(&cl->lock);
                bool lost = sp->state == SP_LOST;   /* taken from us meanwhile */
                if (!lost) {
                    sp->q = q;
                    sp->state = SP_RUNNING;
                }
                g_mutex_unlock(&cl->lock);
                if (lost) {
                    queue_free(q);
                    g_async_queue_push(cl->done, sp);
                    free(rq);
                    continue;
                }
                /* as a restart of that node would: outputs of committed
                 * stages moved, the rest replayed ('recovered') */
                queue_recover(q);
                log_warn("node %s: now delivering the spool of node %s (%s), lease epoch %lld",
                         cl->name, sp->name, sp->dir, sp->epoch);
            }
        } else {
            /* a backup is copying it: stopped when the backup lets it go */
            g_mutex_lock(&cl->lock);
            bool held = sp->holds > 0;
            sp->stop_deferred = held;
            g_mutex_unlock(&cl->lock);
            if (held) {
                free(rq);
                continue;
            }
            /* stops after the workers' current batch; the flock goes with it */
            queue_free(sp->q);
            g_mutex_lock(&cl->lock);
            sp->q = NULL;
            g_mutex_unlock(&cl->lock);
            g_async_queue_push(cl->done, sp);
        }
        free(rq);
    }
}

static void ask_loop(struct cluster *cl, int kind, struct spool *sp)
{
    struct request *rq = xcalloc(1, sizeof *rq);
    rq->kind = kind;
    rq->sp = sp;
    g_async_queue_push(cl->to_loop, rq);
    uint64_t one = 1;
    ssize_t w = write(cl->efd, &one, sizeof one);
    (void)w;
}

/* ---- the thread --------------------------------------------------------------------- */

static struct spool *find_taken(struct cluster *cl, const char *name)
{
    for (guint i = 0; i < cl->taken->len; i++) {
        struct spool *sp = g_ptr_array_index(cl->taken, i);
        if (strcmp(sp->name, name) == 0)
            return sp;
    }
    return NULL;
}

/* Spools the loop stopped: their leases given back, their entries gone. */
static void reap(struct cluster *cl)
{
    struct spool *sp;
    while ((sp = g_async_queue_try_pop(cl->done)) != NULL) {
        char err[512];
        g_mutex_lock(&cl->lock);
        bool lost = sp->state == SP_LOST;
        g_ptr_array_remove(cl->taken, sp);
        g_mutex_unlock(&cl->lock);
        if (!lost && state_spool_release(sp->name, cl->name, sp->epoch, err, sizeof err) == -1)
            log_err("node %s: cannot give back the spool of node %s: %s (its lease runs out)",
                    cl->name, sp->name, err);
        else if (!lost)
            log_info("node %s: the spool of node %s given back", cl->name, sp->name);
        if (sp->lock_fd != -1)
            close(sp->lock_fd);
        free(sp);
    }
}

static void heartbeat(struct cluster *cl)
{
    unsigned lease = lease_of(cl);
    g_mutex_lock(&cl->lock);
    size_t n = 1 + cl->taken->len;
    struct spool **v = xcalloc(n, sizeof *v);
    const char **names = xcalloc(n, sizeof *names);
    long long *epochs = xcalloc(n, sizeof *epochs);
    bool *held = xcalloc(n, sizeof *held);
    v[0] = &cl->own;
    for (guint i = 0; i < cl->taken->len; i++)
        v[1 + i] = g_ptr_array_index(cl->taken, i);
    for (size_t i = 0; i < n; i++) {
        names[i] = v[i]->name;
        epochs[i] = v[i]->epoch;
    }
    g_mutex_unlock(&cl->lock);
    char err[512];
    gint64 t0 = g_get_monotonic_time();
    if (state_heartbeat(cl->name, lease, names, epochs, held, n, err, sizeof err) == -1) {
        if (cl->connected_since != 0 || t0 - cl->last_warn >= 10 * G_USEC_PER_SEC) {
            log_err("node %s: state database unreachable: %s (new mail is refused with 4xx "
                    "until it answers again; the spool stops within %us)",
                    cl->name, err, lease - lease / 3);
            cl->last_warn = t0;
        }
        cl->connected_since = 0;
        goto out;
    }
    if (cl->connected_since == 0) {
        if (cl->last_warn != 0)
            log_info("node %s: state database reachable again", cl->name);
        cl->connected_since = t0;
        cl->last_warn = 0;
    }
    if (!held[0]) {
        /* another node holds our spool: not one more pass here */
        atomic_store(&cl->own.valid_until, 0);
        log_err("node %s: FATAL: the lease on this node's spool was taken by another node "
                "(this node was cut off for longer than [state] lease); exiting at once so "
                "that the spool is processed by one node only - restarted, it waits for the "
                "spool to be handed back", cl->name);
        _exit(75);   /* EX_TEMPFAIL: the supervisor restarts it */
    }
    atomic_store(&cl->own.valid_until, trust_until(cl, t0));
    g_mutex_lock(&cl->lock);
    for (size_t i = 1; i < n; i++) {
        struct spool *sp = v[i];
        if (held[i]) {
            atomic_store(&sp->valid_until, trust_until(cl, t0));
        } else if (sp->state != SP_LOST) {
            atomic_store(&sp->valid_until, 0);
            log_err("node %s: the lease on the spool of node %s was taken by another node: "
                    "stopping it here", cl->name, sp->name);
            bool running = sp->state == SP_RUNNING;
            sp->state = SP_LOST;
            if (running)
                ask_loop(cl, REQ_STOP, sp);
        }
    }
    g_mutex_unlock(&cl->lock);
out:
    free(v);
    free(names);
    free(epochs);
    free(held);
}

/* Takes over the spool of node n (dead): 1 taken, 0 not. */
static int take_over(struct cluster *cl, const struct state_node *n)
{
    char err[512];
    if (access(n->queue_dir, R_OK | W_OK | X_OK) == -1) {
        log_err("node %s: node %s is gone but its spool %s is out of reach here (%s): it needs "
                "storage every node reaches", cl->name, n->name, n->queue_dir, strerror(errno));
        return 0;
    }
    int fd = queue_lock_dir(n->queue_dir, err, sizeof err);
    if (fd == -1) {
        log_warn("node %s: node %s has no heartbeat but its spool is still locked by a process "
                 "(%s): not taken over", cl->name, n->name, err);
        return 0;
    }
    struct spool *sp = xcalloc(1, sizeof *sp);
    sp->cl = cl;
    str_copy(sp->name, n->name, sizeof sp->name);
    str_copy(sp->dir, n->queue_dir, sizeof sp->dir);
    sp->lock_fd = fd;
    sp->state = SP_STARTING;
    gint64 t0 = g_get_monotonic_time();
    int r = state_spool_adopt(n->name, cl->name, lease_of(cl), &sp->epoch, err, sizeof err);
    if (r != 1) {
        if (r == -1)
            log_err("node %s: taking over the spool of node %s: %s", cl->name, n->name, err);
        close(fd);
        free(sp);
        return 0;
    }
    atomic_store(&sp->valid_until, trust_until(cl, t0));
    log_warn("node %s: node %s is gone (last heartbeat %.0fs ago): its spool %s is taken over "
             "(lease epoch %lld)",
             cl->name, n->name, n->heartbeat_age, n->queue_dir, sp->epoch);
    g_mutex_lock(&cl->lock);
    g_ptr_array_add(cl->taken, sp);
    g_mutex_unlock(&cl->lock);
    ask_loop(cl, REQ_START, sp);
    return 1;
}

static void scan(struct cluster *cl)
{
    char err[512];
    struct state_node *nodes = NULL;
    size_t n = 0;
    if (state_nodes_list(&nodes, &n, err, sizeof err) == -1) {
        log_warn("node %s: cannot list the nodes: %s", cl->name, err);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct state_node *x = &nodes[i];
        if (strcmp(x->name, cl->name) == 0)
            continue;
        g_mutex_lock(&cl->lock);
        struct spool *sp = find_taken(cl, x->name);
        bool back = sp != NULL && sp->state == SP_RUNNING && (x->alive || x->want_back);
        if (back)
            sp->state = SP_STOPPING;
        g_mutex_unlock(&cl->lock);
        if (back) {
            log_warn("node %s: node %s is back: handing its spool over", cl->name, x->name);
            ask_loop(cl, REQ_STOP, sp);
        } else if (sp == NULL && !x->alive && x->lease_left < 0 &&
                   strcmp(x->owner, cl->name) != 0) {
            take_over(cl, x);
        }
    }
    g_free(nodes);
}

static gpointer cluster_main(gpointer arg)
{
    struct cluster *cl = arg;
    for (;;) {
        unsigned lease = lease_of(cl);
        gint64 period = (gint64)lease * G_USEC_PER_SEC / 5;
        g_mutex_lock(&cl->lock);
        gint64 until = g_get_monotonic_time() + period;
        while (!cl->stop && g_cond_wait_until(&cl->cond, &cl->lock, until))
            ;
        bool stop = cl->stop;
        g_mutex_unlock(&cl->lock);
        if (stop)
            break;
        config_hold_begin();
        reap(cl);
        heartbeat(cl);
        if (cl->connected_since != 0) {
            const struct config *cfg = atomic_load(&cl->cfg);
            if (cl->tracking != NULL) {
                long k = tracking_purge_seen(cl->tracking,
                                             time(NULL) - (time_t)cfg->duplicate_window,
                                             SEEN_PURGE_MAX);
                if (k > 0)
                    log_debug("tracking: %ld messages taken in before the duplicate window "
                              "forgotten", k);
            }
            /* judge others only after a full lease of being connected:
             * after an outage of the database they renew first */
            if (g_get_monotonic_time() - cl->connected_since >=
                (gint64)lease * G_USEC_PER_SEC)
                scan(cl);
        }
        config_hold_end();
    }
    return NULL;
}

/* ---- the control socket's side: spools taken over, for a backup ----------------------- */

size_t cluster_spools_hold(struct cluster *cl, struct cluster_spool **out)
{
    *out = NULL;
    if (cl == NULL || cl->taken == NULL)
        return 0;
    g_mutex_lock(&cl->lock);
    struct cluster_spool *v = xcalloc(cl->taken->len + 1, sizeof *v);
    size_t n = 0;
    for (guint i = 0; i < cl->taken->len; i++) {
        struct spool *sp = g_ptr_array_index(cl->taken, i);
        if (sp->state != SP_RUNNING || sp->q == NULL)
            continue;    /* starting (recovering) or on its way out */
        sp->holds++;
        str_copy(v[n].node, sp->name, sizeof v[n].node);
        str_copy(v[n].dir, sp->dir, sizeof v[n].dir);
        v[n].q = sp->q;
        v[n].epoch = sp->epoch;
        v[n].sp = sp;
        n++;
    }
    g_mutex_unlock(&cl->lock);
    *out = v;
    return n;
}

void cluster_spools_release(struct cluster *cl, struct cluster_spool *v, size_t n, bool *still)
{
    if (cl == NULL || v == NULL) {
        free(v);
        return;
    }
    g_mutex_lock(&cl->lock);
    for (size_t i = 0; i < n; i++) {
        struct spool *sp = v[i].sp;
        /* handed back meanwhile (STOPPING) is fine: it stayed ours, paused */
        still[i] = sp->state != SP_LOST && sp->epoch == v[i].epoch;
        if (--sp->holds == 0 && sp->stop_deferred) {
            sp->stop_deferred = false;
            ask_loop(cl, REQ_STOP, sp);
        }
    }
    g_mutex_unlock(&cl->lock);
    free(v);
}

int cluster_start(struct cluster *cl, struct event_base *base, struct queue *q,
                  struct roles *roles, struct transport *t, struct tracking *tracking,
                  char *err, size_t errlen)
{
    cl->base = base;
    cl->roles = roles;
    cl->transport = t;
    cl->tracking = tracking;
    cl->own.q = q;
    install(cl, q, &cl->own);
    g_mutex_init(&cl->lock);
    g_cond_init(&cl->cond);
    cl->taken = g_ptr_array_new();
    cl->to_loop = g_async_queue_new();
    cl->done = g_async_queue_new();
    cl->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (cl->efd == -1) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        return -1;
    }
    cl->ev = event_new(base, cl->efd, EV_READ | EV_PERSIST, on_request, cl);
    event_add(cl->ev, NULL);
    cl->thread = g_thread_new("cluster", cluster_main, cl);
    return 0;
}

void cluster_stop(struct cluster *cl)
{
    if (cl == NULL)
        return;
    if (cl->thread != NULL) {
        g_mutex_lock(&cl->lock);
        cl->stop = true;
        g_cond_signal(&cl->cond);
        g_mutex_unlock(&cl->lock);
        g_thread_join(cl->thread);
        /* requests the loop did not take any more */
        on_request(cl->efd, EV_READ, cl);
        /* spools taken over: stopped here and given back, so that their
         * nodes (or another survivor) take them at once */
        for (guint i = 0; i < cl->taken->len; i++) {
            struct spool *sp = g_ptr_array_index(cl->taken, i);
            if (sp->q != NULL) {
                queue_free(sp->q);
                sp->q = NULL;
            }
            g_async_queue_push(cl->done, sp);
        }
        reap(cl);
        event_free(cl->ev);
        close(cl->efd);
        g_ptr_array_free(cl->taken, TRUE);
        g_async_queue_unref(cl->to_loop);
        g_async_queue_unref(cl->done);
        g_mutex_clear(&cl->lock);
        g_cond_clear(&cl->cond);
    }
    if (cl->own.lock_fd != -1)
        close(cl->own.lock_fd);
    free(cl);
}
