/*
 * cluster.h - one node among the provider's nodes ([state] database =
 * postgresql://...; docs/scaling.md): its heartbeat, the lease on its own
 * spool, and the spools it takes over from nodes that died (cluster.c).
 *
 * Every node keeps its queue (the ordinary spool) in its own directory on
 * storage all nodes reach.  A node whose heartbeat stops for longer than
 * [state] lease loses its spool to a survivor, which runs it as a second
 * queue exactly as a restart of the dead node would (the start-up recovery)
 * and delivers it; a node that comes back waits until the survivor hands it
 * back.  The lease's epoch fences every commit of a pass of stages.
 *
 * Purpose: pecd.c joins at start when [state] database is shared, asks
 * cluster_ready at MAIL, passes reloads, stops at exit; the control socket
 * holds the spools taken over while a backup copies them.
 * Threads: join, start, set_config and stop on the event loop; cluster_ready
 * from the event loop (atomic reads); spools_hold/release from any thread; the heartbeat thread alone talks to
 * the database for leases and asks the event loop, through an eventfd, to
 * make or free a queue taken over.
 * Ownership: the cluster borrows cfg (until the next set_config), q,
 * roles, transport and tracking (until cluster_stop); the queue lock's
 * descriptor goes to queue_new_at; cluster_stop frees everything.
 * Errors: NULL or -1 with the reason in err (join: database, lease or lock);
 * a lost lease is logged and stops the node's processing by its own clock.
 */
#ifndef PEC_PROVIDER_CLUSTER_H
#define PEC_PROVIDER_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct event_base;
struct queue;
struct roles;
struct transport;
struct tracking;
struct cluster;

/* Joins: registers the node, takes the lock of its queue directory and the
 * lease on its spool - waiting, with a log line every 10 s, while the node
 * that took the spool over hands it back - and makes queue ids carry the
 * node's number.  Blocks.  NULL with the reason in err. */
struct cluster *cluster_join(const struct config *cfg, char *err, size_t errlen);
/* The lock of the node's queue directory, for queue_new_at() (once). */
int cluster_take_queue_lock(struct cluster *cl);
/* Starts the heartbeat thread and installs the lease's fence and the
 * fenced pass hooks on q (roles may be NULL: no stages).  Spools taken over
 * run on base with transport's delivery and roles' stages.  0 or -1. */
int cluster_start(struct cluster *cl, struct event_base *base, struct queue *q,
                  struct roles *roles, struct transport *t, struct tracking *tracking,
                  char *err, size_t errlen);
/* Whether the node takes new mail: it holds its lease (by its own clock)
 * and the database answers.  Cheap (the event loop asks at MAIL). */
bool cluster_ready(const struct cluster *cl);
/* Reload: the configuration in force from now on (the queues taken over
 * follow it too). */
void cluster_set_config(struct cluster *cl, const struct config *cfg);
/* Stops the thread; spools taken over are stopped and given back. */
void cluster_stop(struct cluster *cl);

/* For a backup (pecd_control.c): the spools this node runs for nodes that
 * died, each held - neither stopped nor handed back - until released, so
 * that its queue can be paused and its directory copied. */
struct cluster_spool {
    char node[72];               /* whose spool */
    char dir[4096];
    struct queue *q;
    long long epoch;
    void *sp;                    /* the cluster's */
};
/* The running spools taken over, held (*out: release it).  cl NULL: 0. */
size_t cluster_spools_hold(struct cluster *cl, struct cluster_spool **out);
/* Lets them go (a hand-back asked meanwhile proceeds); still[i] false when
 * spool i's lease went to another node while it was held (its copy is not
 * a consistent one).  Frees v. */
void cluster_spools_release(struct cluster *cl, struct cluster_spool *v, size_t n, bool *still);

#endif
