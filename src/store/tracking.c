/*
 * tracking.c - tracking.h over one of two backends: SQLite (a file under the
 * data directory, one node) or PostgreSQL ([state] database, shared by the
 * provider's nodes).  tracking_open() picks by its argument: a path, or a
 * postgresql:// URI registered with state_setup() (state.h).  The backends
 * are tracking_sqlite.c and tracking_pg.c (tracking_int.h).
 */
#include "tracking_int.h"
#include "lib/lib.h"
#include "lib/config.h"

#include <stdio.h>
#include <stdlib.h>

struct tracking {
    const struct tracking_ops *ops;
    void *b;
};

struct tracking *tracking_open(const char *where, char *err, size_t errlen)
{
    bool pg = config_is_postgresql(where);
    void *b = pg ? tracking_pg_open(err, errlen) : tracking_sqlite_open(where, err, errlen);
    if (b == NULL)
        return NULL;
    struct tracking *t = xcalloc(1, sizeof *t);
    if (t == NULL) {
        (pg ? &tracking_pg_ops : &tracking_sqlite_ops)->close(b);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->ops = pg ? &tracking_pg_ops : &tracking_sqlite_ops;
    t->b = b;
    return t;
}

void tracking_close(struct tracking *t)
{
    if (t == NULL)
        return;
    t->ops->close(t->b);
    free(t);
}

int tracking_sync_each(struct tracking *t, bool on) { return t->ops->sync_each(t->b, on); }
int tracking_synchronous(struct tracking *t) { return t->ops->synchronous(t->b); }

int tracking_expect(struct tracking *t, const struct tracking_expect_args *a)
{
    return t->ops->expect(t->b, a);
}

int tracking_receipt(struct tracking *t, const char *pec_id, const char *rcpt, char kind)
{
    return t->ops->receipt(t->b, pec_id, rcpt, kind);
}

size_t tracking_due(struct tracking *t, time_t now, uint64_t t12, uint64_t t24,
                    struct tracking_due **out)
{
    return t->ops->due(t->b, now, t12, t24, out);
}

void tracking_due_abort(struct tracking *t) { t->ops->due_abort(t->b); }

int tracking_claim(struct tracking *t, const struct tracking_due *d, size_t n, const char *qid)
{
    return t->ops->claim(t->b, d, n, qid);
}

int tracking_mark_all(struct tracking *t, const struct tracking_due *d, size_t n)
{
    return t->ops->claim(t->b, d, n, NULL);
}

int tracking_mark(struct tracking *t, const char *pec_id, const char *rcpt, int which)
{
    struct tracking_due d = {.pec_id = (char *)pec_id, .rcpt = (char *)rcpt, .which = which};
    return t->ops->claim(t->b, &d, 1, NULL);
}

int tracking_notice_claim(struct tracking *t, const char *pec_id, const char *rcpt, int which,
                          char *qid, size_t qidlen)
{
    return t->ops->notice_claim(t->b, pec_id, rcpt, which, qid, qidlen);
}

long tracking_purge_seen(struct tracking *t, time_t before, size_t max)
{
    return t->ops->purge_seen(t->b, before, max);
}

int tracking_seen(struct tracking *t, const struct tracking_seen_key *k, const char *qid)
{
    if (k->signer == NULL || k->signer[0] == '\0' || k->msgid == NULL || k->rcpt == NULL)
        return -1;   /* only a verified message has a signer */
    return t->ops->seen(t->b, k, qid);
}

int tracking_snapshot(struct tracking *t, const char *path, char *err, size_t errlen)
{
    if (t->ops->snapshot == NULL) {
        /* the shared database is the operator's PostgreSQL: pg_dump backs it
         * up (docs/backup.md), not one node's pecd */
        snprintf(err, errlen, "the tracking state is in the [state] database (PostgreSQL): "
                              "back it up with pg_dump (docs/backup.md)");
        return -1;
    }
    return t->ops->snapshot(t->b, path, err, errlen);
}

bool tracking_is_shared(const struct tracking *t) { return t->ops->snapshot == NULL; }

void tracking_pass_begin(struct tracking *t) { t->ops->pass_begin(t->b); }
int tracking_pass_end(struct tracking *t) { return t->ops->pass_end(t->b); }
