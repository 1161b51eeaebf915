/*
 * evidence_export_chains.c - a sealed day of the shared evidence log (the
 * [state] database of several nodes, PostgreSQL; evidence_pg.c) as a file
 * of its own, and its verification: `pecctl log export --day D` and
 * `pecctl log verify FILE` (docs/evidence.md, "Exported days").
 *
 * The shared log has a chain per node, each sealed per day.  The file holds,
 * for every chain with records on day D: the day's records, the day's seal,
 * and (unless the day starts the chain) the chain's seal before it, whose
 * signed last hash is where the day's records continue.  It is an SQLite
 * file like the embedded export (evidence_export.c: format 1, rollback
 * journal, 0600, never overwritten), with tables of its own that name the
 * chain of each row (chain_events, chain_seals), so that a verifier made for
 * one chain refuses it instead of reading the chains as one.  meta: export
 * = the day, chains = how many chains it holds.
 *
 * A day is exported only when every chain that has records that day has
 * sealed it: a file missing a node's records would look complete.  The
 * records come from the live partitions or, for a day past retention kept
 * under a legal hold, from evidence_held; one REPEATABLE READ snapshot.
 *
 * What the file proves alone: each chain's records of the day are those the
 * provider signed (count, first, last, last hash of the seal), and they
 * continue that chain's signed history (the previous seal).  That the file
 * holds every chain of the day is a property of the export, checked against
 * the database by `pecctl log verify` (an unsigned chain count cannot prove
 * it).
 *
 * Interface: evidence_int.h (evpg_export_day, ev_export_is_chains,
 * ev_verify_chains_export).
 */
#include "store/evidence_int.h"
#include "store/pg.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <glib.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char CHAINS_SCHEMA[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT INTO meta VALUES('format', '" EVIDENCE_FORMAT "');"
    "CREATE TABLE chain_events("
    " chain TEXT NOT NULL, seq INTEGER NOT NULL, day TEXT NOT NULL, logged_at INTEGER NOT NULL,"
    " event_time INTEGER NOT NULL, type TEXT NOT NULL, pec_id TEXT, orig_msgid TEXT,"
    " message_id TEXT, sender TEXT, recipients TEXT, subject TEXT, outcome TEXT,"
    " queue_id TEXT, dedupe_key TEXT, prev_hash BLOB NOT NULL, hash BLOB NOT NULL,"
    " PRIMARY KEY (chain, seq));"
    "CREATE TABLE chain_seals("
    " chain TEXT NOT NULL, day TEXT NOT NULL, first_seq INTEGER NOT NULL,"
    " last_seq INTEGER NOT NULL, count INTEGER NOT NULL, last_hash BLOB NOT NULL,"
    " signed TEXT NOT NULL, signature BLOB NOT NULL, sealed_at INTEGER NOT NULL,"
    " PRIMARY KEY (chain, day));";

#define PG_COLS                                                                              \
    "seq, day::text, logged_at, event_time, type, pec_id, orig_msgid, message_id, sender, "  \
    "recipients, subject, outcome, queue_id, dedupe_key, prev_hash, hash"

/* ---- writing ----------------------------------------------------------------------- */

/* Binds a bytea hex text ("\x...") as a blob of exactly n bytes; -1 if malformed. */
static int bind_hex(sqlite3_stmt *st, int i, const char *text, size_t n)
{
    unsigned char *b = g_malloc(n ? n : 1);
    int rc = pg_unhex(text, b, n);
    if (rc == 0)
        sqlite3_bind_blob(st, i, b, (int)n, SQLITE_TRANSIENT);
    g_free(b);
    return rc;
}

/* The seal row r (columns: day, first, last, count, last_hash, signed,
 * signature, sealed_at) of chain into chain_seals. */
static int put_seal(sqlite3 *db, const char *chain, const PGresult *r, int i, char *err,
                    size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "INSERT INTO chain_seals VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
                               "?9)", -1, &st, NULL) != SQLITE_OK)
        return ev_sql_fail(db, err, errlen, "export");
    size_t siglen = 0;
    unsigned char *sig = pg_bytea(r, i, 6, &siglen);
    sqlite3_bind_text(st, 1, chain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, PQgetvalue(r, i, 0), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, pg_ll(r, i, 1));
    sqlite3_bind_int64(st, 4, pg_ll(r, i, 2));
    sqlite3_bind_int64(st, 5, pg_ll(r, i, 3));
    int bad = bind_hex(st, 6, PQgetvalue(r, i, 4), 32);
    sqlite3_bind_text(st, 7, PQgetvalue(r, i, 5), -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 8, sig ? (const void *)sig : "", (int)siglen, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 9, pg_ll(r, i, 7));
    int rc = bad == 0 && sig != NULL && sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    if (rc == -1 && (bad != 0 || sig == NULL))
        ev_fail(err, errlen, "chain %s day %s: malformed seal in the database", chain,
                PQgetvalue(r, i, 0));
    else if (rc == -1)
        ev_sql_fail(db, err, errlen, "export");
    g_free(sig);
    sqlite3_finalize(st);
    return rc;
}

/* The records first..last of chain on day into chain_events; their number. */
static long long put_records(PGconn *c, sqlite3 *db, const char *chain, const char *day,
                             long long first, long long last, char *err, size_t errlen)
{
    char f[32], l[32];
    snprintf(f, sizeof f, "%lld", first);
    snprintf(l, sizeof l, "%lld", last);
    const char *p[] = {chain, day, f, l};
    /* the live partition, or the copy kept under a legal hold (the same rows
     * while both exist) */
    PGresult *r = pg_query(c, err, errlen, "evidence log: export",
                           "SELECT DISTINCT ON (seq) " PG_COLS " FROM (SELECT " PG_COLS " FROM "
                           "evidence_events WHERE chain = $1 AND day = $2::date AND seq BETWEEN "
                           "$3::bigint AND $4::bigint UNION ALL SELECT " PG_COLS " FROM "
                           "evidence_held WHERE chain = $1 AND day = $2::date AND seq BETWEEN "
                           "$3::bigint AND $4::bigint) x ORDER BY seq",
                           4, p);
    if (r == NULL)
        return -1;
    sqlite3_stmt *st = NULL;
    long long n = 0;
    if (sqlite3_prepare_v2(db, "INSERT INTO chain_events VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
                               "?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                           -1, &st, NULL) != SQLITE_OK) {
        PQclear(r);
        return ev_sql_fail(db, err, errlen, "export");
    }
    for (int i = 0; i < PQntuples(r); i++) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        sqlite3_bind_text(st, 1, chain, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, pg_ll(r, i, 0));
        sqlite3_bind_text(st, 3, PQgetvalue(r, i, 1), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, pg_ll(r, i, 2));
        sqlite3_bind_int64(st, 5, pg_ll(r, i, 3));
        for (int k = 0; k < NFIELDS; k++) {
            const char *v = pg_text(r, i, 4 + k);
            if (v != NULL)
                sqlite3_bind_text(st, 6 + k, v, -1, SQLITE_STATIC);
        }
        if (bind_hex(st, 16, PQgetvalue(r, i, 14), 32) != 0 ||
            bind_hex(st, 17, PQgetvalue(r, i, 15), 32) != 0) {
            n = ev_fail(err, errlen, "chain %s record %lld: malformed hash in the database",
                        chain, pg_ll(r, i, 0));
            break;
        }
        if (sqlite3_step(st) != SQLITE_DONE) {
            n = ev_sql_fail(db, err, errlen, "export");
            break;
        }
        n++;
    }
    sqlite3_finalize(st);
    PQclear(r);
    return n;
}

/* Every chain's part of day, read in the transaction of c; the number of
 * records, -1 with err.  *nchains: the chains exported. */
static long long export_chains(PGconn *c, sqlite3 *db, const char *day, int *nchains,
                               char *err, size_t errlen)
{
    const char *p[] = {day};
    /* the chains with records that day, and their seal of it (if any) */
    PGresult *r = pg_query(c, err, errlen, "evidence log: export",
                           "SELECT n.chain, n.records, s.day::text, s.first_seq, s.last_seq, "
                           "s.count, s.last_hash, s.signed, s.signature, s.sealed_at FROM "
                           "(SELECT chain, count(DISTINCT seq) AS records FROM (SELECT chain, "
                           "seq FROM evidence_events WHERE day = $1::date UNION ALL SELECT "
                           "chain, seq FROM evidence_held WHERE day = $1::date) x GROUP BY "
                           "chain UNION SELECT chain, 0 FROM evidence_seals WHERE day = $1::date "
                           "AND chain NOT IN (SELECT chain FROM evidence_events WHERE day = "
                           "$1::date UNION SELECT chain FROM evidence_held WHERE day = "
                           "$1::date)) n LEFT JOIN evidence_seals s ON s.chain = n.chain AND "
                           "s.day = $1::date ORDER BY n.chain",
                           1, p);
    if (r == NULL)
        return -1;
    long long total = 0;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        return ev_fail(err, errlen, "day %s has no records in the log (0)", day);
    }
    /* every chain of the day sealed, before anything is written */
    for (int i = 0; i < n; i++)
        if (PQgetisnull(r, i, 2)) {
            ev_fail(err, errlen, "day %s is not sealed yet in chain %s (%lld records; pecd "
                    "seals a finished day within 5 minutes)", day, PQgetvalue(r, i, 0),
                    pg_ll(r, i, 1));
            PQclear(r);
            return -1;
        }
    for (int i = 0; i < n && total >= 0; i++) {
        const char *chain = PQgetvalue(r, i, 0);
        long long first = pg_ll(r, i, 3), last = pg_ll(r, i, 4);
        /* columns 2..9 are a seal row as put_seal reads it from 0..7 */
        PGresult *one = pg_query(c, err, errlen, "evidence log: export",
                                 "SELECT day::text, first_seq, last_seq, count, last_hash, "
                                 "signed, signature, sealed_at FROM evidence_seals WHERE chain "
                                 "= $1 AND (day = $2::date OR last_seq = $3::bigint - 1) "
                                 "ORDER BY day",
                                 3, (const char *[]){chain, day, PQgetvalue(r, i, 3)});
        if (one == NULL) {
            total = -1;
            break;
        }
        if (first > 1 && PQntuples(one) != 2) {
            ev_fail(err, errlen, "chain %s: the seal that ends at record %lld (before day %s) "
                    "is not in the log", chain, first - 1, day);
            total = -1;
        }
        for (int k = 0; total >= 0 && k < PQntuples(one); k++)
            if (put_seal(db, chain, one, k, err, errlen) == -1)
                total = -1;
        PQclear(one);
        if (total < 0)
            break;
        long long got = put_records(c, db, chain, day, first, last, err, errlen);
        if (got < 0) {
            total = -1;
        } else if (got != last - first + 1) {
            ev_fail(err, errlen, "day %s, chain %s: the log holds %lld of its %lld sealed "
                    "records (purged?)", day, chain, got, last - first + 1);
            total = -1;
        } else {
            total += got;
        }
    }
    *nchains = n;
    PQclear(r);
    return total;
}

long long evpg_export_day(const char *day, const char *out_path, char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    long long n = -1;
    sqlite3 *db = NULL;
    /* one snapshot of every chain, while the nodes append */
    if (pg_exec(c, err, errlen, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") == -1)
        goto out;
    db = ev_export_create(out_path, err, errlen);
    if (db == NULL)
        goto out;
    int nchains = 0;
    if (ev_exec(db, "BEGIN", err, errlen) != 0 || ev_exec(db, CHAINS_SCHEMA, err, errlen) != 0)
        goto out;
    long long got = export_chains(c, db, day, &nchains, err, errlen);
    if (got < 0)
        goto out;
    char *meta = sqlite3_mprintf("INSERT INTO meta VALUES('export', %Q), ('chains', '%d')", day,
                                 nchains);
    int rc = meta ? ev_exec(db, meta, err, errlen) : ev_fail(err, errlen, "out of memory");
    sqlite3_free(meta);
    if (rc != 0 || ev_exec(db, "COMMIT", err, errlen) != 0)
        goto out;
    n = got;
out:
    PQclear(PQexec(c, "COMMIT"));
    pg_put(c);
    if (db != NULL)
        return ev_export_finish(db, out_path, n, err, errlen);
    return n;
}

/* ---- verification ------------------------------------------------------------------ */

int ev_export_is_chains(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int r = sqlite3_prepare_v2(db, "SELECT 1 FROM meta WHERE key = 'chains'", -1, &st, NULL) ==
                    SQLITE_OK &&
                sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return r;
}

struct cseal {
    char chain[72], day[16];
    long long first, last, count;
    unsigned char hash[32];
    bool ok;                     /* text and signature checked */
};

struct cverify {
    FILE *out;
    struct stack_st_X509 *allowed;
    char signer[256];
    char day[16];
    struct cseal *seals;
    size_t nseals;
};


/* The seals: each one's text rebuilt from its columns (chain included) and
 * signed by the provider; per chain the day's seal and at most the one
 * right before it.  0, or -1 with err. */
static int check_seals(sqlite3 *db, struct cverify *v, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT chain, day, first_seq, last_seq, count, last_hash, "
                               "signed, signature FROM chain_seals ORDER BY chain, first_seq",
                           -1, &st, NULL) != SQLITE_OK)
        return ev_sql_fail(db, err, errlen, "read seals");
    int rc = 0, r = SQLITE_DONE;
    size_t cap = 0;
    while (rc == 0 && (r = sqlite3_step(st)) == SQLITE_ROW) {
        if (v->nseals == cap) {
            cap = cap ? cap * 2 : 16;
            v->seals = g_renew(struct cseal, v->seals, cap);
        }
        struct cseal *s = &v->seals[v->nseals++];
        memset(s, 0, sizeof *s);
        const char *chain = col_text(st, 0) ? col_text(st, 0) : "";
        const char *day = col_text(st, 1) ? col_text(st, 1) : "";
        /* a chain is named after its node ([state] node): a file from elsewhere
         * names nothing else, and its names reach the report only once known */
        if (!config_node_name_ok(chain) || !ev_valid_day(day)) {
            rc = ev_fail(err, errlen, "a seal names no node's chain or no day");
            break;
        }
        str_copy(s->chain, chain, sizeof s->chain);
        str_copy(s->day, day, sizeof s->day);
        s->first = sqlite3_column_int64(st, 2);
        s->last = sqlite3_column_int64(st, 3);
        s->count = sqlite3_column_int64(st, 4);
        char text[640], why[512];
        bool hash_ok = sqlite3_column_bytes(st, 5) == 32;
        if (hash_ok)
            memcpy(s->hash, sqlite3_column_blob(st, 5), 32);
        if (!hash_ok || s->first < 1 || s->last < s->first ||
            s->count != s->last - s->first + 1 ||
            ev_seal_text_chain(text, sizeof text, s->chain, s->day, s->count, s->first, s->last,
                               s->hash) < 0)
            rc = ev_fail(err, errlen, "chain %s day %s: malformed seal", s->chain, s->day);
        else if (col_text(st, 6) == NULL || strcmp(text, col_text(st, 6)) != 0)
            rc = ev_fail(err, errlen, "chain %s day %s: seal invalid: the seal's columns differ "
                         "from the text it signs", s->chain, s->day);
        else if (ev_cms_check(v->allowed, sqlite3_column_blob(st, 7),
                              (size_t)sqlite3_column_bytes(st, 7), text, v->signer,
                              sizeof v->signer, why, sizeof why) != 0)
            rc = ev_fail(err, errlen, "chain %s day %s: seal invalid: %s", s->chain, s->day,
                         why);
        s->ok = rc == 0;
    }
    sqlite3_finalize(st);
    if (rc != 0)
        return rc;
    if (r != SQLITE_DONE)
        return ev_sql_fail(db, err, errlen, "read seals");
    /* per chain: the day's seal, preceded at most by the seal it continues */
    for (size_t i = 0; i < v->nseals; i++) {
        const struct cseal *s = &v->seals[i];
        bool last_of_chain = i + 1 == v->nseals || strcmp(v->seals[i + 1].chain, s->chain) != 0;
        bool first_of_chain = i == 0 || strcmp(v->seals[i - 1].chain, s->chain) != 0;
        if (last_of_chain && strcmp(s->day, v->day) != 0)
            return ev_fail(err, errlen, "chain %s: no seal of day %s, only of day %s", s->chain,
                           v->day, s->day);
        if (!last_of_chain &&
            (!first_of_chain || strcmp(s->day, v->day) >= 0 ||
             s->last + 1 != v->seals[i + 1].first))
            return ev_fail(err, errlen, "chain %s: an export of day %s holds that day's seal and "
                           "the one before it, and only those (found day %s, records "
                           "%lld..%lld)", s->chain, v->day, s->day, s->first, s->last);
        if (last_of_chain && first_of_chain && s->first != 1)
            return ev_fail(err, errlen, "chain %s day %s: the seal before it (ending at record "
                           "%lld) is missing: the day does not link to the chain", s->chain,
                           v->day, s->first - 1);
    }
    return 0;
}

static const struct cseal *day_seal(const struct cverify *v, const char *chain)
{
    for (size_t i = 0; i < v->nseals; i++)
        if (strcmp(v->seals[i].chain, chain) == 0 && strcmp(v->seals[i].day, v->day) == 0)
            return &v->seals[i];
    return NULL;
}

static const struct cseal *before_seal(const struct cverify *v, const struct cseal *s)
{
    for (size_t i = 0; i < v->nseals; i++)
        if (strcmp(v->seals[i].chain, s->chain) == 0 && v->seals[i].last + 1 == s->first)
            return &v->seals[i];
    return NULL;
}

/* The end of one chain's walk against its day seal; 0 or -1. */
static int chain_end(const struct cverify *v, const struct cseal *s, long long count,
                     long long last, const unsigned char hash[32], char *err, size_t errlen)
{
    if (count != s->count || last != s->last)
        return ev_fail(err, errlen, "chain %s day %s: the seal covers records %lld..%lld (%lld), "
                       "the file has %lld up to %lld: records %s", s->chain, s->day, s->first,
                       s->last, s->count, count, last,
                       count < s->count ? "deleted" : "added or moved");
    if (memcmp(hash, s->hash, 32) != 0)
        return ev_fail(err, errlen, "chain %s day %s: records %lld..%lld were changed after "
                       "sealing (the last hash differs from the signed one)", s->chain, s->day,
                       s->first, s->last);
    return 0;
}

/* The records, chain by chain, each from the hash its previous seal
 * signed.  The number of records, -1 with err. */
static long long check_records(sqlite3 *db, struct cverify *v, size_t *nchains, char *err,
                               size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT chain, seq, day, logged_at, event_time, type, pec_id, "
                               "orig_msgid, message_id, sender, recipients, subject, outcome, "
                               "queue_id, dedupe_key, prev_hash, hash FROM chain_events ORDER "
                               "BY chain, seq",
                           -1, &st, NULL) != SQLITE_OK)
        return ev_sql_fail(db, err, errlen, "read records");
    const struct cseal *cur = NULL;
    unsigned char prev[32];
    long long expect = 0, count = 0, total = 0;
    int r = SQLITE_DONE, rc = 0;
    while (rc == 0 && (r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *chain = col_text(st, 0) ? col_text(st, 0) : "";
        long long seq = sqlite3_column_int64(st, 1);
        const char *day = col_text(st, 2) ? col_text(st, 2) : "";
        if (!config_node_name_ok(chain)) {
            rc = ev_fail(err, errlen, "a record names no node's chain");
            break;
        }
        if (cur == NULL || strcmp(cur->chain, chain) != 0) {
            if (cur != NULL && chain_end(v, cur, count, expect - 1, prev, err, errlen) != 0) {
                rc = -1;
                break;
            }
            cur = day_seal(v, chain);
            if (cur == NULL) {
                rc = ev_fail(err, errlen, "chain %s: records without a seal of day %s", chain,
                             v->day);
                break;
            }
            const struct cseal *b = before_seal(v, cur);
            if (b != NULL)
                memcpy(prev, b->hash, 32);
            else
                memset(prev, 0, 32);    /* the chain starts that day (check_seals) */
            expect = cur->first;
            count = 0;
            (*nchains)++;
        }
        if (seq != expect) {
            rc = ev_fail(err, errlen, "chain %s: record %lld is missing (deleted): record %lld "
                         "follows record %lld", chain, expect, seq, expect - 1);
            break;
        }
        if (strcmp(day, v->day) != 0) {
            rc = ev_fail(err, errlen, "chain %s record %lld: not of day %s, the day exported",
                         chain, seq, v->day);
            break;
        }
        if (sqlite3_column_bytes(st, 15) != 32 || memcmp(sqlite3_column_blob(st, 15), prev, 32)) {
            rc = ev_fail(err, errlen, "chain %s record %lld: chain broken: its previous-hash is "
                         "not the hash of record %lld%s", chain, seq, seq - 1,
                         seq == cur->first && seq > 1 ? " (signed by the seal before the day)"
                                                      : "");
            break;
        }
        const char *f[NFIELDS];
        for (int i = 0; i < NFIELDS; i++)
            f[i] = col_text(st, 5 + i);
        unsigned char h[32];
        evidence_record_hash(prev, seq, day, sqlite3_column_int64(st, 3),
                             sqlite3_column_int64(st, 4), f, h);
        if (sqlite3_column_bytes(st, 16) != 32 || memcmp(sqlite3_column_blob(st, 16), h, 32)) {
            rc = ev_fail(err, errlen, "chain %s record %lld (day %s) was altered: its content "
                         "does not match its hash", chain, seq, day);
            break;
        }
        memcpy(prev, h, 32);
        expect = seq + 1;
        count++;
        total++;
    }
    if (rc == 0 && r != SQLITE_DONE)
        rc = ev_sql_fail(db, err, errlen, "read records");
    sqlite3_finalize(st);
    if (rc == 0 && cur != NULL && chain_end(v, cur, count, expect - 1, prev, err, errlen) != 0)
        rc = -1;
    return rc == 0 ? total : -1;
}

int ev_verify_chains_export(sqlite3 *db, const char *path, struct stack_st_X509 *allowed,
                            FILE *out, char *err, size_t errlen)
{
    struct cverify v = {.out = out, .allowed = allowed};
    int rc = -1;
    sqlite3_stmt *st = NULL;
    long long declared = -1;
    if (sqlite3_prepare_v2(db, "SELECT (SELECT value FROM meta WHERE key = 'export'), (SELECT "
                               "value FROM meta WHERE key = 'chains')",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && col_text(st, 0) != NULL && col_text(st, 1) != NULL &&
        ev_valid_day(col_text(st, 0))) {
        str_copy(v.day, col_text(st, 0), sizeof v.day);
        declared = strtoll(col_text(st, 1), NULL, 10);
    }
    sqlite3_finalize(st);
    if (v.day[0] == '\0') {
        ev_fail(err, errlen, "an export of the shared log names its day and its chains in meta");
        goto report;
    }
    if (check_seals(db, &v, err, errlen) != 0)
        goto report;
    size_t nchains = 0;
    long long n = check_records(db, &v, &nchains, err, errlen);
    if (n < 0)
        goto report;
    /* a sealed chain with no record in the file: deleted whole (the walk
     * matched every chain that has records against its seal) */
    for (size_t i = 0; i < v.nseals; i++) {
        if (strcmp(v.seals[i].day, v.day) != 0)
            continue;
        sqlite3_stmt *q = NULL;
        bool present = sqlite3_prepare_v2(db, "SELECT 1 FROM chain_events WHERE chain = ?1 "
                                              "LIMIT 1", -1, &q, NULL) == SQLITE_OK &&
                       sqlite3_bind_text(q, 1, v.seals[i].chain, -1, SQLITE_STATIC) ==
                           SQLITE_OK &&
                       sqlite3_step(q) == SQLITE_ROW;
        sqlite3_finalize(q);
        if (!present) {
            ev_fail(err, errlen, "chain %s day %s: sealed with %lld records, none in the file: "
                    "deleted", v.seals[i].chain, v.day, v.seals[i].count);
            goto report;
        }
    }
    if (declared != (long long)nchains) {
        ev_fail(err, errlen, "the file says it holds %lld chains, it holds %zu", declared,
                nchains);
        goto report;
    }
    rc = 0;
    ev_say(out, "evidence export of day %s (%s; the shared log, %zu chain%s): intact\n", v.day, path,
        nchains, nchains == 1 ? "" : "s");
    for (size_t i = 0; i < v.nseals; i++) {
        const struct cseal *s = &v.seals[i];
        if (strcmp(s->day, v.day) != 0)
            continue;
        ev_say(out, "  chain %s: records %lld..%lld (%lld)", s->chain, s->first, s->last, s->count);
        if (s->first > 1)
            ev_say(out, ", following record %lld, the last of day %s (its seal checked)\n",
                s->first - 1, before_seal(&v, s)->day);
        else
            ev_say(out, ", the start of the chain\n");
    }
    ev_say(out, "  %lld records in 1 days; %zu day seals verified%s%s%s\n", n, v.nseals,
        v.signer[0] ? ", signer " : "", v.signer,
        allowed ? "" : " (signer identity not checked: no certificate given)");
    goto out;
report:
    ev_say(out, "evidence log %s: TAMPERED\n  %s\n", path, err);
out:
    g_free(v.seals);
    return rc;
}
