/*
 * state.h - where a provider's state lives ([state] in pecd.conf;
 * docs/scaling.md): the receipts it waits for and the messages it took in
 * (tracking.h), the evidence log (evidence.h) and the quarantine index
 * (quarantine.h).
 *
 *   embedded (default)  SQLite files under the data directory: one node
 *   shared              a PostgreSQL database ([state] database =
 *                       postgresql://...) that several nodes of the
 *                       provider use at once, each with its name ([state]
 *                       node), its own queue and data directory
 *
 * The modules open their part through the locators below (a path, or the
 * database URI), so the callers do not change with the backend.  The nodes
 * table of the shared database holds each node's heartbeat and the lease
 * on each node's spool (state_nodes.c): a surviving node takes the spool of
 * one whose heartbeat stopped (src/provider/cluster.c).
 *
 * Purpose: pecd and pecctl set the backend up (state_setup) and open the
 * parts through the locators; pecctl state init|migrate, nodes, node add;
 * src/provider/cluster.c registers nodes and moves spool leases.
 * Threads: state_setup once before other threads; the locators and
 * state_shared from any thread (read-only); the database functions from any
 * thread (pg.h's pool); the fence is per thread (state_fence_set).
 * Ownership: locators return a pointer into buf or a string valid while
 * cfg is; state_nodes_list's array is the caller's (g_free).
 * Errors: -1 with the reason in err (the database's message, or "schema
 * version N, this pecd needs M: pecctl state migrate").
 */
#ifndef PEC_STORE_STATE_H
#define PEC_STORE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct config;

/* The schema this pecmail writes (pecmail_schema.version); `pecctl state
 * migrate` brings an older database to it. */
#define STATE_SCHEMA_VERSION 2

/* Registers cfg's [state] for this process (no I/O yet); app names the
 * program in the server's pg_stat_activity. */
void state_setup(const struct config *cfg, const char *app);
/* Whether cfg's state is the shared (PostgreSQL) one. */
bool state_shared(const struct config *cfg);
/* What tracking_open() takes: buf gets DATA_DIR/tracking.db, or the URI. */
const char *state_tracking_at(const struct config *cfg, char *buf, size_t len);
/* What evidence_open(), evidence_verify_ex() and the other evidence.h
 * functions that take a path take: [evidence] path, or the URI. */
const char *state_evidence_at(const struct config *cfg);

/* For messages: the evidence log's path, or the database's URI without its
 * password. */
const char *state_shown(const struct config *cfg);

/* ---- the shared database: schema (state.c) ----------------------------------- */
/* Connects and checks the schema: 0 usable; -1 with the reason in err (the
 * server unreachable, a wrong password, no schema or an older one - naming
 * `pecctl -c CONF state init|migrate` -, or one made by a newer pecmail). */
int state_check(const char *conf_path, char *err, size_t errlen);
/* The schema's version (0: none), the server's version string. */
int state_version(int *version, char *server, size_t serverlen, char *err, size_t errlen);
/* Creates the schema in an empty database (-1 when there is one already). */
int state_init(char *err, size_t errlen);
/* Brings an older schema to STATE_SCHEMA_VERSION: *from is what it was (==
 * STATE_SCHEMA_VERSION: nothing to do).  0 or -1. */
int state_migrate(int *from, char *err, size_t errlen);
/* Whether the database answered the last time it was asked (false from a
 * failure until the next success): pecd refuses new mail with a 4xx while
 * it cannot store what it owes. */
bool state_reachable(void);
/* Creates the monthly partitions of the evidence log from the month of
 * 'from' to the month of 'to' (existing ones are kept).  0 or -1. */
int state_partitions(time_t from, time_t to, char *err, size_t errlen);

/* ---- fencing (state_nodes.c) ---------------------------------------------------- */
/* The spool this thread works on, and the epoch of the lease that lets it:
 * the commit of a pass of stages (tracking_pass_end) checks in the same
 * transaction that the node still holds that lease.  spool NULL: none. */
void state_fence_set(const char *spool, long long epoch);
bool state_fence_active(void);

/* ---- nodes and spool leases (state_nodes.c) --------------------------------------- */
struct state_node {
    char name[72];
    int num;                     /* 1..63: the node's tag in queue ids */
    char queue_dir[4096], data_dir[4096];
    char host[256];
    long pid;
    time_t started, heartbeat;   /* 0: never */
    double heartbeat_age;        /* seconds, by the database's clock (-1: never) */
    char owner[72];              /* who processes this node's spool ("" none) */
    long long epoch;             /* fencing token of the spool's lease */
    double lease_left;           /* seconds (negative: expired) */
    bool alive;                  /* heartbeat within the lease time */
    bool want_back;              /* the node is up and waits for its spool */
};
/* This node's row: created (with the lowest free number) or updated with
 * its directories, host and pid.  *num its number.  0 or -1. */
int state_node_register(const char *name, const char *queue_dir, const char *data_dir,
                        int *num, char *err, size_t errlen);
/* Takes this node's own spool: 1 taken (*epoch), 0 another node holds a
 * live lease on it (owner named; want_back set so that it hands it back),
 * -1 error.  Also its heartbeat. */
int state_spool_take_own(const char *name, unsigned lease, long long *epoch, char *owner,
                         size_t ownerlen, char *err, size_t errlen);
/* This node is up and wants its spool back (it cannot lock its queue: the
 * node that took it over still runs it): its heartbeat and want_back set.
 * The current holder in owner ("" none).  0 or -1. */
int state_spool_want_back(const char *name, unsigned lease, char *owner, size_t ownerlen,
                          char *err, size_t errlen);
/* The heartbeat of node name and the renewal of every lease it holds with
 * the epochs given (spools[i], epochs[i]; its own first).  held[i] false:
 * that lease was lost (taken by another node).  0, or -1 (database away). */
int state_heartbeat(const char *name, unsigned lease, const char *const *spools,
                    const long long *epochs, bool *held, size_t n, char *err, size_t errlen);
/* Takes over spool (another node's) whose owner is dead: its lease expired
 * and its node's heartbeat is older than the lease.  1 taken (*epoch, and
 * its queue directory in dir), 0 not (alive, or taken by someone else), -1. */
int state_spool_adopt(const char *spool, const char *me, unsigned lease, long long *epoch,
                      char *err, size_t errlen);
/* Gives spool back (its lease ends): 0 or -1. */
int state_spool_release(const char *spool, const char *me, long long epoch, char *err,
                        size_t errlen);
/* Every node the database knows, by name (g_free *out). */
int state_nodes_list(struct state_node **out, size_t *n, char *err, size_t errlen);

#endif
