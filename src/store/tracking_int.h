/*
 * tracking_int.h - the backends of tracking.h: tracking_sqlite.c (the
 * embedded default) and tracking_pg.c (PostgreSQL, shared by the nodes).
 * tracking.c picks one by where the state lives and forwards every call.
 * Each operation has the meaning tracking.h gives it; b is the backend's.
 *
 * Purpose: the table of operations tracking.c forwards to.
 * Threads: as tracking.h (each backend locks its own connection).
 * Ownership: as tracking.h; a backend's state (b) is its own, freed by its
 * close operation.
 * Errors: as tracking.h.
 */
#ifndef PEC_STORE_TRACKING_INT_H
#define PEC_STORE_TRACKING_INT_H

#include "tracking.h"

struct tracking_ops {
    void (*close)(void *b);
    int (*sync_each)(void *b, bool on);
    int (*synchronous)(void *b);
    int (*expect)(void *b, const struct tracking_expect_args *a);
    int (*receipt)(void *b, const char *pec_id, const char *rcpt, char kind);
    size_t (*due)(void *b, time_t now, uint64_t t12, uint64_t t24, struct tracking_due **out);
    void (*due_abort)(void *b);
    int (*claim)(void *b, const struct tracking_due *d, size_t n, const char *qid);
    int (*notice_claim)(void *b, const char *pec_id, const char *rcpt, int which, char *qid,
                        size_t qidlen);
    long (*purge_seen)(void *b, time_t before, size_t max);
    int (*seen)(void *b, const struct tracking_seen_key *k, const char *qid);
    void (*pass_begin)(void *b);
    int (*pass_end)(void *b);
    /* a consistent copy into a new file (backups); NULL when the backend is
     * shared (PostgreSQL: pg_dump's job) */
    int (*snapshot)(void *b, const char *path, char *err, size_t errlen);
};

extern const struct tracking_ops tracking_sqlite_ops;
void *tracking_sqlite_open(const char *path, char *err, size_t errlen);
extern const struct tracking_ops tracking_pg_ops;
void *tracking_pg_open(char *err, size_t errlen);

#endif
