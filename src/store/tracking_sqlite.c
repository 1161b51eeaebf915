/*
 * tracking_sqlite.c - the SQLite backend of tracking.h (the embedded
 * default, one node; tracking_pg.c is the shared one): the sending
 * provider's record of the receipts it expects
 * (RFC 6109 §3.1.6): for every certificato recipient of a transport envelope,
 * whether the recipient provider's presa in carico and the delivery receipt
 * (or non-delivery) came back, and which timeout notices went out.  SQLite,
 * one connection behind a mutex (delivery threads and the event loop use it).
 * Keyed by (PEC msgid, recipient), so replays after a crash add nothing.
 * Each row also keeps the original's Message-ID, which both notices quote
 * (§3.1.6), and the recipient's slot, which numbers their own Message-IDs.
 * A database of an older pecd is migrated when opened (migrate()).
 * Each notice records the queue id of the batch that carries it (its
 * claim), so a batch made again after a crash knows whether it is the one
 * that sends it (tracking_notice_claim).
 */
#include "tracking_int.h"
#include "lib/lib.h"

#include <glib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the statements of the per-message calls, prepared once */
enum {
    SQL_EXPECT, SQL_PRESA, SQL_DONE, SQL_NOTICE, SQL_NOTICE_LAST, SQL_SEEN_ADD, SQL_SEEN_QID,
    SQL_SEEN_HEAD, SQL_SEEN_PURGE, SQL_CLAIM, SQL_ENDED_PURGE,
    SQL_N
};
static const char *const sql_text[SQL_N] = {
    [SQL_EXPECT] = "INSERT OR IGNORE INTO expect (pec_id, rcpt, sender, subject, recipients, sent, "
                   "orig_msgid, slot, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    /* a delivery receipt (or non-delivery) ends the tracking of the
     * recipient; a presa in carico only marks it */
    [SQL_PRESA] = "UPDATE expect SET presa = 1 WHERE pec_id = ? AND rcpt = ? COLLATE NOCASE "
                  "AND presa = 0",
    [SQL_DONE] = "DELETE FROM expect WHERE pec_id = ? AND rcpt = ? COLLATE NOCASE",
    /* the notice's claim: the batch (queue id) that carries it.  After the
     * second one the tracking of the recipient ends; the row stays (notice
     * 2) so that a batch made again knows who sends, and goes with the
     * duplicate window (SQL_ENDED_PURGE) */
    [SQL_NOTICE] = "UPDATE expect SET notice = 1, notice1_qid = ?3 WHERE pec_id = ?1 AND "
                   "rcpt = ?2",
    [SQL_NOTICE_LAST] = "UPDATE expect SET notice = 2, notice2_qid = ?3 WHERE pec_id = ?1 AND "
                        "rcpt = ?2",
    [SQL_CLAIM] = "SELECT notice, notice1_qid, notice2_qid FROM expect WHERE pec_id = ?1 AND "
                  "rcpt = ?2",
    [SQL_ENDED_PURGE] = "DELETE FROM expect WHERE rowid IN (SELECT rowid FROM expect WHERE "
                        "notice = 2 AND sent < ?1 LIMIT ?2)",
    [SQL_SEEN_ADD] = "INSERT OR IGNORE INTO taken_in (signer, msgid, content, rcpt, qid, at) "
                     "VALUES (?1, ?2, ?3, lower(?4), ?5, strftime('%s','now'))",
    [SQL_SEEN_QID] = "SELECT qid FROM taken_in WHERE signer = ?1 AND msgid = ?2 AND content = ?3 "
                     "AND rcpt = lower(?4)",
    /* the oldest first: rows are added in time order (tracking_purge_seen) */
    [SQL_SEEN_HEAD] = "SELECT at FROM taken_in ORDER BY rowid LIMIT 1",
    [SQL_SEEN_PURGE] = "DELETE FROM taken_in WHERE rowid IN "
                       "(SELECT rowid FROM taken_in ORDER BY rowid LIMIT ?1) AND at < ?2",
};

struct tsq {
    sqlite3 *db;
    GMutex lock;
    sqlite3_stmt *st[SQL_N];
    /* the pass transaction (tracking_pass_begin): open while a delivery
     * thread is inside a pass */
    int passes;                  /* threads inside a pass */
    bool txn;                    /* the pass transaction is open */
    bool resume;                 /* closed for a statement from outside a pass */
    unsigned long failures;      /* commits of the pass transaction that failed */
    bool sync_each;              /* synchronous=FULL (tracking_sync_each) */
};

/* This thread's pass, if it is in one. */
static __thread struct {
    const struct tsq *t;
    unsigned long failures;      /* t->failures when the pass began */
} tls_pass;

static bool in_pass(const struct tsq *t)
{
    return tls_pass.t == t;
}

/* Commits the pass transaction (caller holds the lock); a failure is counted
 * against every pass open at the time. */
static void txn_commit(struct tsq *t)
{
    if (!t->txn)
        return;
    if (sqlite3_exec(t->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        log_err("tracking: commit failed: %s", sqlite3_errmsg(t->db));
        if (!sqlite3_get_autocommit(t->db))
            sqlite3_exec(t->db, "ROLLBACK", NULL, NULL, NULL);
        t->failures++;
    }
    t->txn = false;
}

static void txn_begin(struct tsq *t)
{
    if (!t->txn && t->passes > 0)
        t->txn = sqlite3_exec(t->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
}

/* Takes the lock.  A statement from a thread outside a pass (the event loop:
 * timeout notices, the duplicate window) is not left in the pass transaction,
 * which might stay open for a while: it is committed first and opened again
 * in leave(). */
static void enter(struct tsq *t)
{
    g_mutex_lock(&t->lock);
    if (t->txn && !in_pass(t)) {
        txn_commit(t);
        t->resume = true;
    }
}

static void leave(struct tsq *t)
{
    if (t->resume) {
        t->resume = false;
        txn_begin(t);
    }
    g_mutex_unlock(&t->lock);
}

static void sq_pass_begin(struct tsq *t)
{
    g_mutex_lock(&t->lock);
    tls_pass.t = t;
    tls_pass.failures = t->failures;
    t->passes++;
    txn_begin(t);
    g_mutex_unlock(&t->lock);
}

static int sq_pass_end(struct tsq *t)
{
    if (!in_pass(t))
        return 0;
    g_mutex_lock(&t->lock);
    txn_commit(t);   /* this pass's writes, and those of passes still open */
    t->passes--;
    txn_begin(t);
    int rc = t->failures != tls_pass.failures ? -1 : 0;
    tls_pass.t = NULL;
    g_mutex_unlock(&t->lock);
    return rc;
}

/* Statement k, ready for binding (caller holds the lock); NULL on error.
 * Give it back with put(). */
static sqlite3_stmt *get(struct tsq *t, int k)
{
    if (t->st[k] == NULL &&
        sqlite3_prepare_v3(t->db, sql_text[k], -1, SQLITE_PREPARE_PERSISTENT, &t->st[k], NULL) !=
            SQLITE_OK) {
        sqlite3_finalize(t->st[k]);
        t->st[k] = NULL;
    }
    return t->st[k];
}

static void put(sqlite3_stmt *st)
{
    if (st != NULL) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

/* Only pecd opens this database, through this one connection: with the
 * exclusive locking mode, set before WAL, SQLite keeps the WAL index in the
 * process's memory instead of a shared -shm file.  That file's pages were
 * dirtied by every transaction and written back by every syncfs of the queue
 * (write-protecting them again costs a TLB shootdown on every CPU and a page
 * fault at the next write); it also takes no file lock per transaction, and
 * a second pecd on the same data directory is refused. */
static const char schema[] =
    "PRAGMA locking_mode=EXCLUSIVE;"
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS expect ("
    "  pec_id TEXT NOT NULL, rcpt TEXT NOT NULL, sender TEXT NOT NULL,"
    "  subject TEXT, recipients TEXT, sent INTEGER NOT NULL,"
    "  presa INTEGER NOT NULL DEFAULT 0,"      /* presa in carico received */
    "  notice INTEGER NOT NULL DEFAULT 0,"     /* timeout notices sent: 0, 1 (12 h), 2 (24 h) */
    "  orig_msgid TEXT,"                       /* schema 1: the original's Message-ID, <…> */
    "  slot INTEGER NOT NULL DEFAULT 0,"       /* schema 1: the recipient's place, from 0 */
    "  reply_to TEXT,"                         /* schema 2: daticert <risposte> (§4.4) */
    "  notice1_qid TEXT, notice2_qid TEXT,"    /* schema 3: the batches that carry the notices */
    "  PRIMARY KEY (pec_id, rcpt));"
    "CREATE INDEX IF NOT EXISTS expect_sent ON expect (sent);"
    /* the rows kept after the second notice, for their purge (schema 3) */
    "CREATE INDEX IF NOT EXISTS expect_ended ON expect (sent) WHERE notice = 2;"
    /* messages taken in by the incoming point, so that a copy the sending
     * side retries (it never saw our 250) is not delivered twice.  Only
     * verified messages are recorded, keyed by who signed them: the table
     * 'seen' of earlier versions was keyed by the Message-ID alone, written
     * before verification (anyone could poison it), and is dropped. */
    "DROP TABLE IF EXISTS seen;"
    "CREATE TABLE IF NOT EXISTS taken_in ("
    "  signer TEXT NOT NULL, msgid TEXT NOT NULL, content TEXT NOT NULL, rcpt TEXT NOT NULL,"
    "  qid TEXT NOT NULL, at INTEGER NOT NULL,"
    "  PRIMARY KEY (signer, msgid, content, rcpt));";

/* The schema this file writes (PRAGMA user_version).  0: the first one,
 * without expect.orig_msgid and expect.slot; 1: without expect.reply_to;
 * 2: without the notices' claims (expect.notice1_qid, notice2_qid). */
#define TRACKING_SCHEMA 3

static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
                     sqlite3_step(st) == SQLITE_ROW
                 ? 0
                 : -1;
    if (rc == 0)
        *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc;
}

/* Brings a database of schema 0 to schema 1 in one transaction, keeping
 * every row: the two columns are added (the table's own columns say whether
 * they are there, whatever user_version says), and the rows that were
 * waiting get slots numbered by recipient within their message, so that
 * their notices still have distinct Message-IDs.  Their original's
 * Message-ID is unknown: their notices go without it, as before. */
static int migrate(sqlite3 *db, const char *path, char **msg)
{
    int version = 0, has = 0, rows = 0;
    if (pragma_int(db, "PRAGMA user_version", &version) == -1)
        return -1;
    if (version >= TRACKING_SCHEMA)
        return 0;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, msg) != SQLITE_OK)
        return -1;
    int rc = pragma_int(db, "SELECT count(*) FROM pragma_table_info('expect') "
                            "WHERE name = 'orig_msgid'", &has);
    if (rc == 0 && !has)
        rc = sqlite3_exec(db,
                          "ALTER TABLE expect ADD COLUMN orig_msgid TEXT;"
                          "ALTER TABLE expect ADD COLUMN slot INTEGER NOT NULL DEFAULT 0;"
                          "UPDATE expect SET slot = (SELECT count(*) FROM expect AS e "
                          "  WHERE e.pec_id = expect.pec_id AND e.rcpt < expect.rcpt);",
                          NULL, NULL, msg) == SQLITE_OK
                 ? 0
                 : -1;
    int has2 = 0;
    if (rc == 0)
        rc = pragma_int(db, "SELECT count(*) FROM pragma_table_info('expect') "
                            "WHERE name = 'reply_to'", &has2);
    if (rc == 0 && !has2)
        rc = sqlite3_exec(db, "ALTER TABLE expect ADD COLUMN reply_to TEXT;", NULL, NULL, msg) ==
                     SQLITE_OK
                 ? 0
                 : -1;
    int has3 = 0;
    if (rc == 0)
        rc = pragma_int(db, "SELECT count(*) FROM pragma_table_info('expect') "
                            "WHERE name = 'notice1_qid'", &has3);
    if (rc == 0 && !has3)
        rc = sqlite3_exec(db, "ALTER TABLE expect ADD COLUMN notice1_qid TEXT;"
                              "ALTER TABLE expect ADD COLUMN notice2_qid TEXT;",
                          NULL, NULL, msg) == SQLITE_OK
                 ? 0
                 : -1;
    if (rc == 0)
        rc = pragma_int(db, "SELECT count(*) FROM expect", &rows);
    if (rc == 0)
        rc = sqlite3_exec(db, "PRAGMA user_version = 3; COMMIT", NULL, NULL, msg) == SQLITE_OK
                 ? 0
                 : -1;
    if (rc == -1) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (!has || !has2 || !has3)
        log_info("tracking database %s: migrated from schema %d to %d, %d waiting "
                 "recipient%s kept",
                 path, version, TRACKING_SCHEMA, rows, rows == 1 ? "" : "s");
    return 0;
}

static struct tsq * sq_open(const char *path, char *err, size_t errlen)
{
    struct tsq *t = xcalloc(1, sizeof *t);
    char *msg = NULL;
    if (sqlite3_open_v2(path, &t->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                          SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK ||
        sqlite3_exec(t->db, schema, NULL, NULL, &msg) != SQLITE_OK ||
        migrate(t->db, path, &msg) == -1) {
        snprintf(err, errlen, "tracking database %s: %s", path,
                 msg ? msg : sqlite3_errmsg(t->db));
        sqlite3_free(msg);
        sqlite3_close(t->db);
        free(t);
        return NULL;
    }
    sqlite3_busy_timeout(t->db, 5000);
    g_mutex_init(&t->lock);
    return t;
}

static int sq_sync_each(struct tsq *t, bool on)
{
    enter(t);
    int rc = sqlite3_exec(t->db, on ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        t->sync_each = on;
    leave(t);
    return rc == SQLITE_OK ? 0 : -1;
}

static int sq_synchronous(struct tsq *t)
{
    enter(t);
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(t->db, "PRAGMA synchronous", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    leave(t);
    return v;
}

static void sq_close(struct tsq *t)
{
    if (t == NULL)
        return;
    txn_commit(t);
    for (int k = 0; k < SQL_N; k++)
        sqlite3_finalize(t->st[k]);
    sqlite3_close(t->db);
    g_mutex_clear(&t->lock);
    free(t);
}

static int sq_expect(struct tsq *t, const struct tracking_expect_args *x)
{
    const char *pec_id = x->pec_id;
    enter(t);
    sqlite3_stmt *st = NULL;
    /* a savepoint: a transaction of its own, or nested in the pass's */
    int rc = sqlite3_exec(t->db, "SAVEPOINT expect", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = (st = get(t, SQL_EXPECT)) != NULL ? SQLITE_OK : SQLITE_ERROR;
    for (size_t i = 0; i < x->n && rc == SQLITE_OK; i++) {
        sqlite3_bind_text(st, 1, pec_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, x->rcpts[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, x->sender, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, x->subject, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, x->recipients, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)x->sent);
        sqlite3_bind_text(st, 7, x->orig_msgid, -1, SQLITE_STATIC);   /* NULL binds NULL */
        sqlite3_bind_int64(st, 8, (sqlite3_int64)i);
        sqlite3_bind_text(st, 9, x->reply_to, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_reset(st);
    }
    put(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(t->db, "RELEASE expect", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        log_err("tracking: cannot record %s: %s", pec_id, sqlite3_errmsg(t->db));
        sqlite3_exec(t->db, "ROLLBACK TO expect", NULL, NULL, NULL);
        sqlite3_exec(t->db, "RELEASE expect", NULL, NULL, NULL);
    }
    leave(t);
    return rc == SQLITE_OK ? 0 : -1;
}

static int sq_receipt(struct tsq *t, const char *pec_id, const char *rcpt, char kind)
{
    enter(t);
    sqlite3_stmt *st = get(t, kind == 'P' ? SQL_PRESA : SQL_DONE);
    int changed = -1;
    if (st != NULL) {
        sqlite3_bind_text(st, 1, pec_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, rcpt, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_DONE)
            changed = sqlite3_changes(t->db);
    }
    put(st);
    leave(t);
    return changed < 0 ? -1 : changed > 0 ? 0 : 1;
}

static size_t sq_due(struct tsq *t, time_t now, uint64_t t12, uint64_t t24,
                    struct tracking_due **out)
{
    /* §3.1.6: first notice after t12 with neither presa nor delivery; the
     * second in the last part of t24 (not before 22/24 of it) without delivery */
    time_t first = now - (time_t)t12;
    time_t second = now - (time_t)(t24 - t24 / 24);
    enter(t);
    sqlite3_stmt *st = NULL;
    GArray *a = g_array_new(FALSE, TRUE, sizeof(struct tracking_due));
    if (sqlite3_prepare_v2(t->db,
                           "SELECT pec_id, rcpt, sender, subject, recipients, sent, presa, notice, "
                           "orig_msgid, slot, reply_to "
                           "FROM expect WHERE (notice = 0 AND presa = 0 AND sent <= ?) "
                           "OR (notice < 2 AND sent <= ?) ORDER BY sent LIMIT 1000",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)first);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)second);
        while (sqlite3_step(st) == SQLITE_ROW) {
            struct tracking_due d = {0};
            d.pec_id = g_strdup((const char *)sqlite3_column_text(st, 0));
            d.rcpt = g_strdup((const char *)sqlite3_column_text(st, 1));
            d.sender = g_strdup((const char *)sqlite3_column_text(st, 2));
            d.subject = g_strdup((const char *)sqlite3_column_text(st, 3));
            d.recipients = g_strdup((const char *)sqlite3_column_text(st, 4));
            d.sent = (time_t)sqlite3_column_int64(st, 5);
            d.orig_msgid = g_strdup((const char *)sqlite3_column_text(st, 8));
            sqlite3_int64 slot = sqlite3_column_int64(st, 9);
            d.slot = slot > 0 && slot < 1000000 ? (unsigned)slot : 0;
            d.reply_to = g_strdup((const char *)sqlite3_column_text(st, 10));
            d.which = d.sent <= second ? 2 : 1;
            g_array_append_val(a, d);
        }
    }
    sqlite3_finalize(st);
    leave(t);
    size_t n = a->len;
    *out = (struct tracking_due *)(void *)g_array_free(a, FALSE);
    return n;
}

static int sq_claim(struct tsq *t, const struct tracking_due *d, size_t n, const char *qid)
{
    enter(t);
    /* one transaction for the batch, synced at once (not at the next syncfs
     * of the queue): the notices are in the queue (stored first, then
     * claimed: a crash in between makes them again, and the notices stage
     * drops what no claim names it for).  Notices are rare: the cost is nil */
    bool full = !in_pass(t) && !t->sync_each;
    if (full)
        sqlite3_exec(t->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    int rc = sqlite3_exec(t->db, "SAVEPOINT mark", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        sqlite3_stmt *st = get(t, d[i].which >= 2 ? SQL_NOTICE_LAST : SQL_NOTICE);
        if (st == NULL) {
            rc = -1;
            break;
        }
        sqlite3_bind_text(st, 1, d[i].pec_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, d[i].rcpt, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, qid, -1, SQLITE_STATIC);   /* NULL binds NULL */
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
        put(st);
    }
    if (rc == 0 && sqlite3_exec(t->db, "RELEASE mark", NULL, NULL, NULL) != SQLITE_OK)
        rc = -1;
    if (rc == -1) {
        log_err("tracking: cannot mark %zu notices: %s", n, sqlite3_errmsg(t->db));
        sqlite3_exec(t->db, "ROLLBACK TO mark", NULL, NULL, NULL);
        sqlite3_exec(t->db, "RELEASE mark", NULL, NULL, NULL);
    }
    if (full)
        sqlite3_exec(t->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    leave(t);
    return rc;
}

static int sq_notice_claim(struct tsq *t, const char *pec_id, const char *rcpt, int which,
                           char *qid, size_t qidlen)
{
    enter(t);
    int rc = -1;
    sqlite3_stmt *st = get(t, SQL_CLAIM);
    if (st != NULL) {
        sqlite3_bind_text(st, 1, pec_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, rcpt, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_DONE) {
            rc = 0;
        } else if (r == SQLITE_ROW) {
            int notice = sqlite3_column_int(st, 0);
            const char *q = (const char *)sqlite3_column_text(st, which >= 2 ? 2 : 1);
            rc = notice >= which ? 1 : 0;
            /* a notice marked by an older pecd names no batch */
            str_copy(qid, rc == 1 && q != NULL ? q : "", qidlen);
        }
    }
    put(st);
    leave(t);
    return rc;
}

void tracking_due_free(struct tracking_due *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        g_free(d[i].pec_id);
        g_free(d[i].rcpt);
        g_free(d[i].sender);
        g_free(d[i].subject);
        g_free(d[i].recipients);
        g_free(d[i].orig_msgid);
        g_free(d[i].reply_to);
    }
    g_free(d);
}

static long sq_purge_seen(struct tsq *t, time_t before, size_t max)
{
    /* Rows are added in time order, so the oldest are the first rowids: the
     * head is looked at, not the whole table (no index on 'at').  A row
     * stamped later than its successors (the clock stepped back) holds the
     * purge until it is old enough itself. */
    long n = -1;
    bool old = false;
    enter(t);
    sqlite3_stmt *st = get(t, SQL_SEEN_HEAD);
    if (st != NULL) {
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW || r == SQLITE_DONE) {
            n = 0;
            old = r == SQLITE_ROW && sqlite3_column_int64(st, 0) < (sqlite3_int64)before;
        }
    }
    put(st);
    if (old) {
        n = -1;
        if ((st = get(t, SQL_SEEN_PURGE)) != NULL) {
            sqlite3_bind_int64(st, 1, (sqlite3_int64)max);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)before);
            if (sqlite3_step(st) == SQLITE_DONE)
                n = (long)sqlite3_changes(t->db);
        }
        put(st);
    }
    /* recipients whose second notice went out long ago: their row only
     * answered tracking_notice_claim for a batch made again */
    if (n >= 0 && (st = get(t, SQL_ENDED_PURGE)) != NULL) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)before);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
        if (sqlite3_step(st) != SQLITE_DONE)
            n = -1;
        put(st);
    }
    if (n == -1)
        log_err("tracking: cannot forget old messages: %s", sqlite3_errmsg(t->db));
    leave(t);
    return n;
}

static void bind_seen_key(sqlite3_stmt *st, const struct tracking_seen_key *k)
{
    sqlite3_bind_text(st, 1, k->signer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->msgid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, k->content ? k->content : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, k->rcpt, -1, SQLITE_STATIC);
}

static int sq_seen(struct tsq *t, const struct tracking_seen_key *k, const char *qid)
{
    if (k->signer == NULL || k->signer[0] == '\0' || k->msgid == NULL || k->rcpt == NULL)
        return -1;   /* only a verified message has a signer */
    enter(t);
    int rc = -1;
    sqlite3_stmt *st = get(t, SQL_SEEN_ADD);
    if (st != NULL) {
        bind_seen_key(st, k);
        sqlite3_bind_text(st, 5, qid, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_DONE)
            rc = sqlite3_changes(t->db) > 0 ? 0 : 2;
    }
    put(st);
    if (rc == 2) {
        /* there before: the same queue file again (a stage replayed after a
         * crash) is not a duplicate */
        rc = -1;
        if ((st = get(t, SQL_SEEN_QID)) != NULL) {
            bind_seen_key(st, k);
            if (sqlite3_step(st) == SQLITE_ROW)
                rc = strcmp((const char *)sqlite3_column_text(st, 0), qid) == 0 ? 0 : 1;
        }
        put(st);
    }
    leave(t);
    return rc;
}

/* ---- the interface (tracking_int.h) --------------------------------------------- */

static void o_close(void *b) { sq_close(b); }
static int o_sync_each(void *b, bool on) { return sq_sync_each(b, on); }
static int o_synchronous(void *b) { return sq_synchronous(b); }
static int o_expect(void *b, const struct tracking_expect_args *a) { return sq_expect(b, a); }
static int o_receipt(void *b, const char *p, const char *r, char k) { return sq_receipt(b, p, r, k); }
static size_t o_due(void *b, time_t now, uint64_t t12, uint64_t t24, struct tracking_due **out)
{
    return sq_due(b, now, t12, t24, out);
}
static void o_due_abort(void *b) { (void)b; }   /* nothing held */
static int o_claim(void *b, const struct tracking_due *d, size_t n, const char *qid)
{
    return sq_claim(b, d, n, qid);
}
static int o_notice_claim(void *b, const char *p, const char *r, int w, char *q, size_t l)
{
    return sq_notice_claim(b, p, r, w, q, l);
}
static long o_purge_seen(void *b, time_t before, size_t max)
{
    return sq_purge_seen(b, before, max);
}
static int o_seen(void *b, const struct tracking_seen_key *k, const char *qid)
{
    return sq_seen(b, k, qid);
}
/* VACUUM INTO: the database is held exclusively by pecd (locking_mode), so
 * only pecd can copy it, for pecctl backup through the control socket. */
static int o_snapshot(void *b, const char *path, char *err, size_t errlen)
{
    struct tsq *t = b;
    enter(t);    /* commits the pass transaction: VACUUM runs outside one */
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(t->db, "VACUUM INTO ?1", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_bind_text(st, 1, path, -1, SQLITE_TRANSIENT) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    else
        snprintf(err, errlen, "tracking database: copy into %s: %s", path,
                 sqlite3_errmsg(t->db));
    sqlite3_finalize(st);
    leave(t);
    return rc;
}

static void o_pass_begin(void *b) { sq_pass_begin(b); }
static int o_pass_end(void *b) { return sq_pass_end(b); }

const struct tracking_ops tracking_sqlite_ops = {
    .close = o_close, .sync_each = o_sync_each, .synchronous = o_synchronous,
    .expect = o_expect, .receipt = o_receipt, .due = o_due, .due_abort = o_due_abort,
    .claim = o_claim, .notice_claim = o_notice_claim, .purge_seen = o_purge_seen,
    .snapshot = o_snapshot,
    .seen = o_seen, .pass_begin = o_pass_begin, .pass_end = o_pass_end,
};

void *tracking_sqlite_open(const char *path, char *err, size_t errlen)
{
    return sq_open(path, err, errlen);
}
