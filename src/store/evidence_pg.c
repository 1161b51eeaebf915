/*
 * evidence_pg.c - the evidence log in the PostgreSQL database the nodes of a
 * provider share (evidence.h; schema: state.c; format: docs/evidence.md,
 * "Several nodes").  This file writes: appends, day seals, retention.
 * Reading (verify, trace, search...) is evidence_pg_read.c.
 *
 *   chains      every node appends to a chain of its own, named after the
 *               node ([state] node): seq, day, prev_hash and hash exactly
 *               as in the SQLite log, so the SHA-256 step is the same; the
 *               chain's head is its row in evidence_chains, locked FOR
 *               UPDATE by the transaction that appends, so appends of one
 *               chain are serial and a seal never misses a record
 *   keys        a dedupe key is unique across chains (evidence_keys): a
 *               stage replayed by the node that took a dead node's spool
 *               over finds the events the dead node logged
 *   seals       each finished UTC day of each chain is signed once (primary
 *               key (chain, day)), by whichever node gets there first; a
 *               dead node's last day is sealed by the survivors
 *   retention   whole monthly partitions of evidence_events are dropped once
 *               every day in them is sealed and older than the retention;
 *               before that, every day of a chain that holds a record under
 *               a legal hold is copied whole into evidence_held (so the day
 *               still verifies against its seal), and each chain's anchor
 *               moves to its last dropped record
 *
 * The group commit of evidence.c calls evpg_commit() with its batch under
 * db_lock: one transaction, five statements, whatever the batch's size.
 */
#include "store/evidence_int.h"
#include "store/pg.h"
#include "store/state.h"
#include "lib/lib.h"

#include <glib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* dedupe keys are kept this long (a stage is replayed within the queue's
 * lifetime, a notice batch within the duplicate window: days, not months) */
#define KEYS_KEEP_DAYS 60

struct evpg {
    PGconn *c;                   /* the committer's, used under db_lock */
    char chain[72];
    atomic_llong records;        /* this chain's head (metrics) */
    atomic_llong last_seal;
    time_t partitions_until;     /* partitions made up to this month (committer) */
};

static const char ZERO_HASH[] = "\\x0000000000000000000000000000000000000000000000000000000000000000";

/* The committer's connection, made again after a failure. */
static PGconn *conn(struct evpg *pg, char *err, size_t errlen)
{
    if (pg->c != NULL && PQstatus(pg->c) == CONNECTION_OK &&
        PQtransactionStatus(pg->c) == PQTRANS_IDLE)
        return pg->c;
    PQfinish(pg->c);
    pg->c = pg_get(err, errlen);
    return pg->c;
}

struct evpg *evpg_open(char *err, size_t errlen)
{
    if (!pg_configured() || pg_node()[0] == '\0') {
        snprintf(err, errlen, "evidence log: the shared database needs [state] node");
        return NULL;
    }
    struct evpg *pg = xcalloc(1, sizeof *pg);
    str_copy(pg->chain, pg_node(), sizeof pg->chain);
    PGconn *c = conn(pg, err, errlen);
    if (c == NULL) {
        free(pg);
        return NULL;
    }
    const char *p[] = {pg->chain, ZERO_HASH};
    if (pg_command(c, err, errlen, "evidence log: chain",
                   "INSERT INTO evidence_chains (name, head_hash) VALUES ($1, $2::bytea) "
                   "ON CONFLICT DO NOTHING",
                   2, p) < 0) {
        evpg_close(pg);
        return NULL;
    }
    PGresult *r = pg_query(c, err, errlen, "evidence log: chain",
                           "SELECT head_seq, (SELECT coalesce(max(sealed_at), 0) FROM "
                           "evidence_seals) FROM evidence_chains WHERE name = $1",
                           1, p);
    if (r == NULL) {
        evpg_close(pg);
        return NULL;
    }
    atomic_store(&pg->records, pg_ll(r, 0, 0));
    atomic_store(&pg->last_seal, pg_ll(r, 0, 1));
    PQclear(r);
    time_t now = time(NULL);
    if (state_partitions(now - 86400, now + 62 * 86400, err, errlen) == -1) {
        evpg_close(pg);
        return NULL;
    }
    pg->partitions_until = now + 62 * 86400;
    return pg;
}

void evpg_close(struct evpg *pg)
{
    if (pg == NULL)
        return;
    pg_put(pg->c);
    free(pg);
}

static void next_day(const char *day, char out[16])
{
    time_t t = ev_day_start(day);
    ev_utc_day(t < 0 ? 0 : t + 86400, out);
}

static void max_day(char cur[16], const char *other)
{
    if (other != NULL && other[0] && strcmp(other, cur) > 0)
        str_copy(cur, other, 16);
}

/* One try of the batch; *missing_day set when the month has no partition. */
static int commit_once(struct evidence *ev, const struct evidence_event *const *events, size_t n,
                       char *day_out, bool *missing, char *err, size_t errlen)
{
    struct evpg *pg = ev->pg;
    PGconn *c = conn(pg, err, errlen);
    if (c == NULL)
        return -1;
    if (pg_exec(c, err, errlen, "BEGIN") == -1)
        return -1;
    const char *p1[] = {pg->chain};
    PGresult *r = pg_query(c, err, errlen, "evidence log: head",
                           "SELECT head_seq, head_hash, coalesce(head_day::text, ''), "
                           "coalesce(sealed_day::text, '') FROM evidence_chains WHERE name = $1 "
                           "FOR UPDATE",
                           1, p1);
    long long seq = 0;
    unsigned char prev[32];
    char day[16];
    time_t now = ev_clock_now(ev);
    ev_utc_day(now, day);
    int rc = -1;
    if (r != NULL && PQntuples(r) == 1 && pg_unhex(PQgetvalue(r, 0, 1), prev, 32) == 0) {
        seq = pg_ll(r, 0, 0);
        /* a day never goes back, nor into a sealed one */
        max_day(day, PQgetvalue(r, 0, 2));
        if (PQgetvalue(r, 0, 3)[0]) {
            char after[16];
            next_day(PQgetvalue(r, 0, 3), after);
            max_day(day, after);
        }
        rc = 0;
    } else if (r != NULL) {
        snprintf(err, errlen, "evidence log: chain %s has no head row", pg->chain);
    }
    PQclear(r);
    str_copy(day_out, day, 16);
    /* the dedupe keys first: those already stored are replays */
    GHashTable *fresh = g_hash_table_new(g_str_hash, g_str_equal);
    struct pg_array keys, kq, kt;
    pg_array_init(&keys);
    pg_array_init(&kq);
    pg_array_init(&kt);
    size_t nkeys = 0;
    for (size_t i = 0; i < n; i++) {
        if (events[i]->dedupe_key == NULL)
            continue;
        pg_array_add(&keys, events[i]->dedupe_key);
        pg_array_add(&kq, events[i]->queue_id);
        pg_array_addf(&kt, "%lld", (long long)(events[i]->when ? events[i]->when : now));
        nkeys++;
    }
    PGresult *kr = NULL;
    if (rc == 0 && nkeys > 0) {
        const char *p[] = {pg_array_text(&keys), pg_array_text(&kq), pg_array_text(&kt),
                           pg->chain, day};
        kr = pg_query(c, err, errlen, "evidence log: keys",
                      "INSERT INTO evidence_keys (dedupe_key, chain, queue_id, event_time, day) "
                      "SELECT k, $4, q, t, $5::date FROM unnest($1::text[], $2::text[], "
                      "$3::bigint[]) AS u(k, q, t) ON CONFLICT DO NOTHING RETURNING dedupe_key",
                      5, p);
        if (kr == NULL)
            rc = -1;
        for (int i = 0; kr != NULL && i < PQntuples(kr); i++)
            g_hash_table_add(fresh, PQgetvalue(kr, i, 0));
    }
    /* then the records, chained */
    struct pg_array col[16];
    for (int k = 0; k < 16; k++)
        pg_array_init(&col[k]);
    size_t stored = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct evidence_event *e = events[i];
        if (e->dedupe_key != NULL && !g_hash_table_remove(fresh, e->dedupe_key))
            continue;   /* logged before (or twice in this batch) */
        char *tmp[NFIELDS] = {0};
        const char *raw[NFIELDS] = {e->type,   e->pec_id,     e->orig_msgid, e->message_id,
                                    e->sender, e->recipients, e->subject,    e->outcome,
                                    e->queue_id, e->dedupe_key};
        const char *f[NFIELDS];
        for (int k = 0; k < NFIELDS; k++)
            f[k] = ev_capped(raw[k], &tmp[k]);
        long long when = e->when != 0 ? (long long)e->when : (long long)now;
        unsigned char hash[32];
        seq++;
        evidence_record_hash(prev, seq, day, (long long)now, when, f, hash);
        char hp[70], hh[70];
        pg_hex(prev, 32, hp);
        pg_hex(hash, 32, hh);
        pg_array_addf(&col[0], "%lld", seq);
        pg_array_addf(&col[1], "%lld", (long long)now);
        pg_array_addf(&col[2], "%lld", when);
        for (int k = 0; k < NFIELDS; k++)
            pg_array_add(&col[3 + k], f[k]);
        pg_array_add(&col[13], hp);
        pg_array_add(&col[14], hh);
        memcpy(prev, hash, 32);
        for (int k = 0; k < NFIELDS; k++)
            free(tmp[k]);
        stored++;
    }
    if (rc == 0 && stored > 0) {
        const char *p[17] = {pg->chain, day};
        for (int k = 0; k < 15; k++)
            p[2 + k] = pg_array_text(&col[k]);
        long ins = pg_command(
            c, err, errlen, "evidence log: insert",
            "INSERT INTO evidence_events (chain, seq, day, logged_at, event_time, type, pec_id, "
            "orig_msgid, message_id, sender, recipients, subject, outcome, queue_id, dedupe_key, "
            "prev_hash, hash) SELECT $1, s, $2::date, l, t, ty, pi, om, mi, se, re, su, ou, qi, "
            "dk, ph, h FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::text[], "
            "$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], "
            "$13::text[], $14::text[], $15::text[], $16::bytea[], $17::bytea[]) AS u(s, l, t, "
            "ty, pi, om, mi, se, re, su, ou, qi, dk, ph, h)",
            17, p);
        if (ins < 0) {
            rc = -1;
            *missing = strcmp(pg_last_sqlstate(), "23514") == 0;   /* no partition */
        }
        if (rc == 0) {
            char sq[32], hh[70];
            snprintf(sq, sizeof sq, "%lld", seq);
            pg_hex(prev, 32, hh);
            const char *pu[] = {pg->chain, sq, hh, day};
            rc = pg_command(c, err, errlen, "evidence log: head",
                            "UPDATE evidence_chains SET head_seq = $2::bigint, head_hash = "
                            "$3::bytea, head_day = $4::date WHERE name = $1",
                            4, pu) == 1 ? 0 : -1;
        }
    }
    for (int k = 0; k < 16; k++)
        pg_array_free(&col[k]);
    pg_array_free(&keys);
    pg_array_free(&kq);
    pg_array_free(&kt);
    g_hash_table_destroy(fresh);
    PQclear(kr);
    if (rc == 0)
        rc = pg_exec(c, err, errlen, "COMMIT");
    if (rc == -1) {
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    atomic_store(&pg->records, seq);
    return 0;
}

int evpg_commit(struct evidence *ev, const struct evidence_event *const *events, size_t n,
                char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    char day[16] = "";
    bool missing = false;
    int rc = commit_once(ev, events, n, day, &missing, err, errlen);
    if (rc == -1 && missing) {
        /* the month of day has no partition yet (made ahead daily; a clock
         * far ahead, or a log written in the past by a test clock) */
        time_t t = ev_day_start(day);
        char e2[256];
        if (t >= 0 && state_partitions(t, t, e2, sizeof e2) == 0)
            rc = commit_once(ev, events, n, day, &missing, err, errlen);
    }
    if (rc == -1 && strncmp(err, "evidence log", 12) != 0) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "evidence log: %s", err);
        str_copy(err, tmp, errlen);
    }
    return rc;
}

int evpg_lookup(struct evidence *ev, const char *dedupe_key, char *queue_id,
                size_t queue_id_len, time_t *when)
{
    (void)ev;
    char err[512];
    PGconn *c = pg_get(err, sizeof err);
    if (c == NULL) {
        log_err("evidence log: %s", err);
        return -1;
    }
    const char *p[] = {dedupe_key};
    PGresult *r = pg_query(c, err, sizeof err, "evidence log: key",
                           "SELECT coalesce(queue_id, ''), event_time FROM evidence_keys "
                           "WHERE dedupe_key = $1",
                           1, p);
    int rc = -1;
    if (r != NULL) {
        rc = PQntuples(r) == 1 ? 1 : 0;
        if (rc == 1) {
            snprintf(queue_id, queue_id_len, "%s", PQgetvalue(r, 0, 0));
            *when = (time_t)pg_ll(r, 0, 1);
        }
        PQclear(r);
    } else {
        log_err("%s", err);
    }
    pg_put(c);
    return rc;
}

int evpg_stage_time(struct evidence *ev, const char *queue_id, time_t *out)
{
    (void)ev;
    char lo[64], hi[64], err[512];
    snprintf(lo, sizeof lo, "%s:", queue_id);
    snprintf(hi, sizeof hi, "%s;", queue_id);   /* ';' follows ':' (keys collate "C") */
    PGconn *c = pg_get(err, sizeof err);
    if (c == NULL)
        return -1;
    const char *p[] = {lo, hi};
    PGresult *r = pg_query(c, err, sizeof err, "evidence log: stage time",
                           "SELECT min(event_time) FROM evidence_keys WHERE dedupe_key >= $1 "
                           "AND dedupe_key < $2",
                           2, p);
    int rc = -1;
    if (r != NULL) {
        rc = PQgetisnull(r, 0, 0) ? 0 : 1;
        if (rc == 1)
            *out = (time_t)pg_ll(r, 0, 0);
        PQclear(r);
    }
    pg_put(c);
    return rc;
}

int evpg_stats(struct evidence *ev, long long *records, time_t *last_seal)
{
    /* from memory: a scrape never waits for the database */
    *records = atomic_load(&ev->pg->records);
    *last_seal = (time_t)atomic_load(&ev->pg->last_seal);
    return 0;
}

/* ---- seals --------------------------------------------------------------------------- */

/* Seals the finished days of one chain; the number sealed, -1 on error. */
static int seal_chain(struct evidence *ev, PGconn *c, const char *chain, const char *today,
                      time_t now, char *err, size_t errlen)
{
    if (pg_exec(c, err, errlen, "BEGIN") == -1)
        return -1;
    const char *p1[] = {chain};
    /* the head row's lock: no append of this chain in between */
    PGresult *r = pg_query(c, err, errlen, "evidence log: seal",
                           "SELECT coalesce(sealed_day::text, '') FROM evidence_chains "
                           "WHERE name = $1 FOR UPDATE",
                           1, p1);
    if (r == NULL || PQntuples(r) != 1) {
        PQclear(r);
        PQclear(PQexec(c, "ROLLBACK"));
        return r == NULL ? -1 : 0;
    }
    char sealed[16];
    str_copy(sealed, PQgetvalue(r, 0, 0), sizeof sealed);
    PQclear(r);
    const char *p2[] = {chain, today, sealed[0] ? sealed : "0001-01-01"};
    r = pg_query(c, err, errlen, "evidence log: seal",
                 "SELECT d.day::text, d.first, d.last, d.n, e.hash FROM (SELECT day, min(seq) "
                 "AS first, max(seq) AS last, count(*) AS n FROM evidence_events WHERE chain = "
                 "$1 AND day < $2::date AND day > $3::date GROUP BY day) d JOIN evidence_events "
                 "e ON e.chain = $1 AND e.day = d.day AND e.seq = d.last ORDER BY d.day",
                 3, p2);
    int sealed_n = 0, rc = r != NULL ? 0 : -1;
    char last_day[16] = "";
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        const char *day = PQgetvalue(r, i, 0);
        long long first = pg_ll(r, i, 1), last = pg_ll(r, i, 2), count = pg_ll(r, i, 3);
        unsigned char hash[32];
        char text[640];
        if (pg_unhex(PQgetvalue(r, i, 4), hash, 32) == -1 ||
            ev_seal_text_chain(text, sizeof text, chain, day, count, first, last, hash) < 0) {
            rc = ev_fail(err, errlen, "evidence log: chain %s day %s: bad head record", chain,
                         day);
            break;
        }
        unsigned char *der = NULL;
        size_t derlen = 0;
        char serr[256] = "";
        if (ev->sign(ev->sign_ctx, text, strlen(text), &der, &derlen, serr, sizeof serr) != 0 ||
            der == NULL) {
            free(der);
            rc = ev_fail(err, errlen, "evidence log: signing the seal of %s day %s failed: %s",
                         chain, day, serr);
            break;
        }
        char *sighex = g_malloc(2 * derlen + 3), hh[70], f[32], l[32], n[32], at[32];
        pg_hex(der, derlen, sighex);
        free(der);
        pg_hex(hash, 32, hh);
        snprintf(f, sizeof f, "%lld", first);
        snprintf(l, sizeof l, "%lld", last);
        snprintf(n, sizeof n, "%lld", count);
        snprintf(at, sizeof at, "%lld", (long long)now);
        const char *p3[] = {chain, day, f, l, n, hh, text, sighex, at};
        rc = pg_command(c, err, errlen, "evidence log: insert seal",
                        "INSERT INTO evidence_seals (chain, day, first_seq, last_seq, count, "
                        "last_hash, signed, signature, sealed_at) VALUES ($1, $2::date, "
                        "$3::bigint, $4::bigint, $5::bigint, $6::bytea, $7, $8::bytea, "
                        "$9::bigint)",
                        9, p3) == 1 ? 0 : -1;
        g_free(sighex);
        str_copy(last_day, day, sizeof last_day);
        sealed_n++;
    }
    PQclear(r);
    if (rc == 0 && last_day[0]) {
        const char *p4[] = {chain, last_day};
        rc = pg_command(c, err, errlen, "evidence log: seal",
                        "UPDATE evidence_chains SET sealed_day = $2::date WHERE name = $1", 2,
                        p4) == 1 ? 0 : -1;
    }
    if (rc == 0)
        rc = pg_exec(c, err, errlen, "COMMIT");
    if (rc == -1) {
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    if (sealed_n > 0)
        atomic_store(&ev->pg->last_seal, (long long)now);
    return sealed_n;
}

int evpg_seal(struct evidence *ev, time_t now, char *err, size_t errlen)
{
    if (ev->sign == NULL)
        return ev_fail(err, errlen, "evidence log: no signer to seal with");
    char today[16];
    ev_utc_day(now, today);
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    /* every chain: the chain of a node that died is sealed by the others */
    PGresult *r = pg_query(c, err, errlen, "evidence log: chains",
                           "SELECT name FROM evidence_chains ORDER BY name", 0, NULL);
    int total = r != NULL ? 0 : -1;
    for (int i = 0; r != NULL && i < PQntuples(r); i++) {
        int k = seal_chain(ev, c, PQgetvalue(r, i, 0), today, now, err, errlen);
        if (k < 0) {
            total = -1;
            break;
        }
        total += k;
    }
    PQclear(r);
    pg_put(c);
    /* partitions ahead of need, from the same daily-ish turn */
    if (total >= 0 && now + 31 * 86400 > ev->pg->partitions_until) {
        char e2[256];
        if (state_partitions(now, now + 62 * 86400, e2, sizeof e2) == 0)
            ev->pg->partitions_until = now + 62 * 86400;
        else
            log_warn("evidence log: cannot make the next months' partitions: %s", e2);
    }
    return total;
}

/* ---- retention ------------------------------------------------------------------------ */

/* The condition "event e concerns hold h" (as ev_day_held in SQLite). */
#define HOLD_MATCH                                                                          \
    "((h.kind = 'pec_id' AND e.pec_id = h.value) OR (h.kind = 'address' AND "              \
    "(lower(e.sender) = lower(h.value) OR strpos(',' || replace(lower(coalesce("            \
    "e.recipients, '')), ' ', '') || ',', ',' || lower(h.value) || ',') > 0)))"

/* Drops the oldest month that may go.  1 dropped (*days its days), 0
 * nothing to drop, -1 error or a day not sealed yet (err says). */
static int purge_month(PGconn *c, const char *limit, time_t now, int *days, char *err,
                       size_t errlen)
{
    PGresult *r = pg_query(c, err, errlen, "evidence log: partitions",
                           "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = "
                           "i.inhrelid WHERE i.inhparent = 'evidence_events'::regclass AND "
                           "c.relname ~ '^evidence_events_[0-9]{6}$' ORDER BY c.relname LIMIT 1",
                           0, NULL);
    if (r == NULL)
        return -1;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    char part[64], month[8], next[16];
    str_copy(part, PQgetvalue(r, 0, 0), sizeof part);
    PQclear(r);
    int y = atoi(part + 16) / 100, m = atoi(part + 16) % 100;
    snprintf(month, sizeof month, "%04d-%02d", y, m);
    snprintf(next, sizeof next, "%04d-%02d-01", m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1);
    /* the month ends at or before the limit's day: all its days may go */
    if (strcmp(next, limit) > 0)
        return 0;
    if (pg_exec(c, err, errlen, "BEGIN") == -1)
        return -1;
    int rc = pg_exec(c, err, errlen, "SELECT pg_advisory_xact_lock(7242003)");
    /* every day of the month sealed, in every chain */
    char sql[2048];
    if (rc == 0) {
        snprintf(sql, sizeof sql,
                 "SELECT e.chain, max(e.day)::text FROM %s e JOIN evidence_chains c ON c.name "
                 "= e.chain GROUP BY e.chain, c.sealed_day HAVING c.sealed_day IS NULL OR "
                 "max(e.day) > c.sealed_day LIMIT 1",
                 part);
        r = pg_query(c, err, errlen, "evidence log: retention", sql, 0, NULL);
        if (r == NULL) {
            rc = -1;
        } else if (PQntuples(r) > 0) {
            rc = ev_fail(err, errlen, "evidence log: retention waits: day %s of chain %s is "
                         "not sealed yet", PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 0));
        }
        PQclear(r);
    }
    char at[32];
    snprintf(at, sizeof at, "%lld", (long long)now);
    const char *pat[] = {at};
    /* days that hold a record under a legal hold: kept whole */
    long held = 0;
    if (rc == 0) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO evidence_held SELECT e.*, $1::bigint FROM %s e WHERE (e.chain, "
                 "e.day) IN (SELECT DISTINCT e.chain, e.day FROM %s e JOIN evidence_holds h ON "
                 HOLD_MATCH ") ON CONFLICT DO NOTHING",
                 part, part);
        held = pg_command(c, err, errlen, "evidence log: legal holds", sql, 1, pat);
        rc = held < 0 ? -1 : 0;
    }
    /* each chain continues from its last dropped record */
    if (rc == 0) {
        snprintf(sql, sizeof sql,
                 "UPDATE evidence_chains c SET anchor_seq = a.seq, anchor_hash = a.hash, "
                 "anchor_day = a.day, purged_at = $1::bigint FROM (SELECT DISTINCT ON (chain) "
                 "chain, seq, hash, day FROM %s ORDER BY chain, seq DESC) a WHERE c.name = "
                 "a.chain AND c.anchor_seq < a.seq",
                 part);
        rc = pg_command(c, err, errlen, "evidence log: anchors", sql, 1, pat) < 0 ? -1 : 0;
    }
    if (rc == 0) {
        snprintf(sql, sizeof sql, "SELECT count(DISTINCT day), (SELECT count(DISTINCT (chain, "
                 "day)) FROM evidence_held WHERE held_at = $1::bigint) FROM %s", part);
        r = pg_query(c, err, errlen, "evidence log: retention", sql, 1, pat);
        if (r == NULL) {
            rc = -1;
        } else {
            *days = (int)pg_ll(r, 0, 0);
            if (held > 0)
                log_warn("evidence log: retention of %s: %lld chain-day(s) hold records under "
                         "legal hold (pecctl log hold list): kept whole in evidence_held",
                         month, pg_ll(r, 0, 1));
        }
        PQclear(r);
    }
    if (rc == 0) {
        const char *pm[] = {month};
        rc = pg_command(c, err, errlen, "evidence log: retention",
                        "INSERT INTO evidence_meta VALUES ('purged_through', $1) ON CONFLICT "
                        "(key) DO UPDATE SET value = excluded.value",
                        1, pm) < 0 ? -1 : 0;
    }
    if (rc == 0) {
        snprintf(sql, sizeof sql, "DROP TABLE %s", part);
        rc = pg_exec(c, err, errlen, sql);
    }
    if (rc == 0)
        rc = pg_exec(c, err, errlen, "COMMIT");
    if (rc == -1) {
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    log_info("evidence log: retention: month %s dropped (%d day%s)", month, *days,
             *days == 1 ? "" : "s");
    return 1;
}

int evpg_purge(struct evidence *ev, time_t older_than, char *err, size_t errlen)
{
    char limit[16];
    ev_utc_day(older_than, limit);
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    time_t now = ev_clock_now(ev);
    int removed = 0;
    for (int k = 0; k < 240; k++) {
        int days = 0;
        int r = purge_month(c, limit, now, &days, err, errlen);
        if (r == -1) {
            removed = -1;
            break;
        }
        if (r == 0)
            break;
        removed += days;
    }
    /* dedupe keys long past any replay, in bounded steps */
    char keep[16];
    ev_utc_day(now - (time_t)KEYS_KEEP_DAYS * 86400, keep);
    const char *p[] = {keep};
    for (int k = 0; removed >= 0 && k < 100; k++) {
        char e2[256];
        long n = pg_command(c, e2, sizeof e2, "evidence log: old keys",
                            "DELETE FROM evidence_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM "
                            "evidence_keys WHERE day < $1::date LIMIT 10000))",
                            1, p);
        if (n < 10000)
            break;
    }
    pg_put(c);
    return removed;
}
