/*
 * state_nodes.c - the nodes of a provider in the shared database (state.h):
 * each node's row holds its heartbeat (the process is alive) and the lease
 * on its spool (who may process the messages in its queue directory, with
 * an epoch that grows at every change of hands: the fencing token).
 *
 *   a node at start   registers, takes its own spool (or waits for the node
 *                     that adopted it to give it back: want_back)
 *   every heartbeat   renews its heartbeat and the leases it holds; a lease
 *                     it finds taken is lost (the holder stops at once)
 *   a survivor        takes the spool of a node whose heartbeat and lease
 *                     both expired, with one atomic UPDATE that raises the
 *                     epoch (two survivors cannot both win)
 *   a commit          checks, in its own transaction, that the lease it
 *                     works under is still the spool's (state_fence_check)
 *
 * Times are the database's (now()), so the nodes' clocks need not agree
 * for who is alive; a node stops processing by its own monotonic clock
 * before its lease can have expired (src/provider/cluster.c).
 */
#include "state.h"
#include "pg.h"
#include "lib/lib.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static __thread struct {
    char spool[72];
    long long epoch;
} tls_fence;

void state_fence_set(const char *spool, long long epoch)
{
    str_copy(tls_fence.spool, spool ? spool : "", sizeof tls_fence.spool);
    tls_fence.epoch = epoch;
}

bool state_fence_active(void) { return tls_fence.spool[0] != '\0'; }

int state_fence_check(PGconn *c, char *err, size_t errlen)
{
    if (!state_fence_active())
        return 0;
    char e[32];
    snprintf(e, sizeof e, "%lld", tls_fence.epoch);
    const char *p[] = {tls_fence.spool, pg_node(), e};
    PGresult *r = pg_query(c, err, errlen, "spool lease",
                           "SELECT 1 FROM nodes WHERE name = $1 AND owner = $2 AND epoch = $3 "
                           "FOR SHARE",
                           3, p);
    if (r == NULL)
        return -1;
    int n = PQntuples(r);
    PQclear(r);
    if (n != 1) {
        snprintf(err, errlen, "the lease on the spool of node %s (epoch %lld) is no longer "
                 "ours: another node took it over", tls_fence.spool, tls_fence.epoch);
        return -1;
    }
    return 0;
}

int state_node_register(const char *name, const char *queue_dir, const char *data_dir,
                        int *num, char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    char host[256] = "", pid[32];
    gethostname(host, sizeof host - 1);
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    const char *p[] = {name, queue_dir, data_dir, host, pid};
    int rc = -1;
    /* two nodes registering at once may pick the same free number: the
     * loser's insert fails on the unique index and tries again */
    for (int attempt = 0; attempt < 5 && rc == -1; attempt++) {
        PGresult *r = pg_query(
            c, err, errlen, "register node",
            "INSERT INTO nodes (name, num, queue_dir, data_dir, host, pid, started) VALUES "
            "($1, (SELECT min(n) FROM generate_series(1, 63) AS n WHERE n NOT IN "
            "(SELECT num FROM nodes)), $2, $3, $4, $5::int, now()) ON CONFLICT (name) DO "
            "UPDATE SET queue_dir = $2, data_dir = $3, host = $4, pid = $5::int, "
            "started = now() RETURNING num",
            5, p);
        if (r != NULL && PQntuples(r) == 1) {
            *num = (int)pg_ll(r, 0, 0);
            rc = 0;
        }
        PQclear(r);
        if (rc == -1 && strcmp(pg_last_sqlstate(), "23502") == 0) {   /* num null: full */
            snprintf(err, errlen, "node %s: the database knows 63 nodes already (the most a "
                     "provider may have)", name);
            break;
        }
        if (rc == -1 && strcmp(pg_last_sqlstate(), "23505") != 0)
            break;
    }
    pg_put(c);
    return rc;
}

int state_spool_take_own(const char *name, unsigned lease, long long *epoch, char *owner,
                         size_t ownerlen, char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    char l[16];
    snprintf(l, sizeof l, "%u", lease);
    const char *p[] = {name, l};
    /* ours when nobody holds it, we held it (an earlier process of this
     * node), or the holder's lease expired */
    PGresult *r = pg_query(c, err, errlen, "take own spool",
                           "UPDATE nodes SET owner = $1, epoch = epoch + 1, lease = $2::int, "
                           "lease_until = now() + $2::int * interval '1 second', heartbeat = "
                           "now(), want_back = false WHERE name = $1 AND (owner IS NULL OR "
                           "owner = $1 OR lease_until < now()) RETURNING epoch",
                           2, p);
    int rc = -1;
    if (r != NULL && PQntuples(r) == 1) {
        *epoch = pg_ll(r, 0, 0);
        rc = 1;
    } else if (r != NULL) {
        PQclear(r);
        /* adopted by a live node: say we are back, it hands the spool over */
        r = pg_query(c, err, errlen, "wait for own spool",
                     "UPDATE nodes SET heartbeat = now(), want_back = true, lease = $2::int "
                     "WHERE name = $1 RETURNING coalesce(owner, '')",
                     2, p);
        if (r != NULL && PQntuples(r) == 1) {
            str_copy(owner, PQgetvalue(r, 0, 0), ownerlen);
            rc = 0;
        } else if (r != NULL) {
            snprintf(err, errlen, "node %s is not registered", name);
        }
    }
    PQclear(r);
    pg_put(c);
    return rc;
}

int state_spool_want_back(const char *name, unsigned lease, char *owner, size_t ownerlen,
                          char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    char l[16];
    snprintf(l, sizeof l, "%u", lease);
    const char *p[] = {name, l};
    PGresult *r = pg_query(c, err, errlen, "wait for own spool",
                           "UPDATE nodes SET heartbeat = now(), want_back = true, lease = $2::int "
                           "WHERE name = $1 RETURNING coalesce(owner, '')",
                           2, p);
    int rc = -1;
    if (r != NULL && PQntuples(r) == 1) {
        str_copy(owner, PQgetvalue(r, 0, 0), ownerlen);
        rc = 0;
    } else if (r != NULL) {
        snprintf(err, errlen, "node %s is not registered", name);
    }
    PQclear(r);
    pg_put(c);
    return rc;
}

int state_heartbeat(const char *name, unsigned lease, const char *const *spools,
                    const long long *epochs, bool *held, size_t n, char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    char l[16], pid[32];
    snprintf(l, sizeof l, "%u", lease);
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    const char *p0[] = {name, l, pid};
    int rc = pg_command(c, err, errlen, "heartbeat",
                        "UPDATE nodes SET heartbeat = now(), lease = $2::int, pid = $3::int "
                        "WHERE name = $1",
                        3, p0) < 0 ? -1 : 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char e[32];
        snprintf(e, sizeof e, "%lld", epochs[i]);
        const char *p[] = {spools[i], name, e, l};
        long k = pg_command(c, err, errlen, "renew lease",
                            "UPDATE nodes SET lease_until = now() + $4::int * interval "
                            "'1 second' WHERE name = $1 AND owner = $2 AND epoch = $3",
                            4, p);
        if (k < 0)
            rc = -1;
        else
            held[i] = k == 1;
    }
    pg_put(c);
    return rc;
}

int state_spool_adopt(const char *spool, const char *me, unsigned lease, long long *epoch,
                      char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    char l[16];
    snprintf(l, sizeof l, "%u", lease);
    const char *p[] = {spool, me, l};
    /* the spool's lease ran out and its node's heartbeat is older than that
     * node's own lease time: nobody processes it; the epoch rises, so a
     * holder that wakes up finds its lease gone */
    PGresult *r = pg_query(c, err, errlen, "take over a spool",
                           "UPDATE nodes SET owner = $2, epoch = epoch + 1, lease_until = now() "
                           "+ $3::int * interval '1 second' WHERE name = $1 AND name <> $2 AND "
                           "(lease_until IS NULL OR lease_until < now()) AND (heartbeat IS NULL "
                           "OR heartbeat < now() - lease * interval '1 second') RETURNING epoch",
                           3, p);
    int rc = -1;
    if (r != NULL) {
        rc = PQntuples(r) == 1 ? 1 : 0;
        if (rc == 1)
            *epoch = pg_ll(r, 0, 0);
        PQclear(r);
    }
    pg_put(c);
    return rc;
}

int state_spool_release(const char *spool, const char *me, long long epoch, char *err,
                        size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    char e[32];
    snprintf(e, sizeof e, "%lld", epoch);
    const char *p[] = {spool, me, e};
    long n = pg_command(c, err, errlen, "give back a spool",
                        "UPDATE nodes SET owner = NULL, lease_until = NULL WHERE name = $1 AND "
                        "owner = $2 AND epoch = $3",
                        3, p);
    pg_put(c);
    return n < 0 ? -1 : 0;
}

int state_nodes_list(struct state_node **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    PGresult *r = pg_query(
        c, err, errlen, "nodes",
        "SELECT name, num, queue_dir, data_dir, coalesce(host, ''), coalesce(pid, 0), "
        "coalesce(extract(epoch FROM started)::bigint, 0), "
        "coalesce(extract(epoch FROM heartbeat)::bigint, 0), "
        "coalesce(extract(epoch FROM now() - heartbeat), -1), coalesce(owner, ''), epoch, "
        "coalesce(extract(epoch FROM lease_until - now()), -1e9), "
        "coalesce(heartbeat > now() - lease * interval '1 second', false), want_back "
        "FROM nodes ORDER BY name",
        0, NULL);
    if (r == NULL) {
        pg_put(c);
        return -1;
    }
    size_t k = (size_t)PQntuples(r);
    struct state_node *v = g_new0(struct state_node, k ? k : 1);
    for (size_t i = 0; i < k; i++) {
        int row = (int)i;
        str_copy(v[i].name, PQgetvalue(r, row, 0), sizeof v[i].name);
        v[i].num = (int)pg_ll(r, row, 1);
        str_copy(v[i].queue_dir, PQgetvalue(r, row, 2), sizeof v[i].queue_dir);
        str_copy(v[i].data_dir, PQgetvalue(r, row, 3), sizeof v[i].data_dir);
        str_copy(v[i].host, PQgetvalue(r, row, 4), sizeof v[i].host);
        v[i].pid = (long)pg_ll(r, row, 5);
        v[i].started = (time_t)pg_ll(r, row, 6);
        v[i].heartbeat = (time_t)pg_ll(r, row, 7);
        v[i].heartbeat_age = strtod(PQgetvalue(r, row, 8), NULL);
        str_copy(v[i].owner, PQgetvalue(r, row, 9), sizeof v[i].owner);
        v[i].epoch = pg_ll(r, row, 10);
        v[i].lease_left = strtod(PQgetvalue(r, row, 11), NULL);
        v[i].alive = strcmp(PQgetvalue(r, row, 12), "t") == 0;
        v[i].want_back = strcmp(PQgetvalue(r, row, 13), "t") == 0;
    }
    PQclear(r);
    pg_put(c);
    *out = v;
    *n = k;
    return 0;
}
