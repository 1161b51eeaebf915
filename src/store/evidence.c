/*
 * evidence.c - the evidence log (RFC 6109 §2.3, §2.2.4): an append-only,
 * hash-chained SQLite table with one signed seal per finished UTC day.
 * This file: the schema, open/close, the chain step and evidence_append()
 * (group commit), and the helpers the other evidence_*.c files share
 * (evidence_int.h).  Day seals and retention: evidence_seal.c.
 * Verification and trace: evidence_verify.c.
 *
 * Interface: evidence.h.  Format and the independent check: docs/evidence.md.
 *
 *   events(seq, day, logged_at, event_time, type, pec_id, orig_msgid,
 *          message_id, sender, recipients, subject, outcome, queue_id,
 *          dedupe_key, prev_hash, hash)
 *       hash = SHA-256(prev_hash || canonical record), prev_hash of seq 1 =
 *       32 zero bytes (or the anchor's hash after a purge)
 *   seals(day, first_seq, last_seq, count, last_hash, signed, signature,
 *         sealed_at)       signature = detached CMS over the text `signed`
 *   anchor(id = 1, seq, hash, day, purged_at)   last record removed by purge
 *
 * Writes: one connection, WAL, synchronous=FULL (NORMAL for a batch of only
 * evidence_append_deferred(), which its callers sync).  evidence_append() queues
 * the event and waits; the first waiting thread that finds no commit in
 * progress becomes the committer and writes every queued event in one
 * transaction (group commit: one WAL fsync for the whole batch), so the
 * cost of durability is shared by every concurrent caller.  The committer
 * re-reads the chain head inside BEGIN IMMEDIATE, so another process writing
 * the same file (pecctl log seal/purge) cannot fork the chain.  A thread
 * may also hold its appends in a batch (evidence_batch_begin) and queue them
 * as one entry: the queue's delivery threads log a whole pass of stages in
 * one transaction, which writes each touched page of the table and its
 * indexes to the WAL once instead of once per event.
 *
 * Days: a record's day is the UTC day of its logging time, but never earlier
 * than the previous record's day nor than the day after the last sealed one,
 * so every day is one contiguous range of seq and a sealed day never grows.
 *
 * Assumes: field values are C strings (no NUL inside); each field is capped
 * at EVIDENCE_FIELD_MAX bytes (longer values are cut, with a marker).
 */
#include "store/evidence_int.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#define EVIDENCE_MAGIC "pecmail-evidence-1"
#define EVIDENCE_FIELD_MAX (64u * 1024)
#define EVIDENCE_TRUNC_MARK "...[truncated]"

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES('format', '" EVIDENCE_FORMAT "');"
    "CREATE TABLE IF NOT EXISTS events("
    " seq INTEGER PRIMARY KEY, day TEXT NOT NULL, logged_at INTEGER NOT NULL,"
    " event_time INTEGER NOT NULL, type TEXT NOT NULL, pec_id TEXT, orig_msgid TEXT,"
    " message_id TEXT, sender TEXT, recipients TEXT, subject TEXT, outcome TEXT,"
    " queue_id TEXT, dedupe_key TEXT UNIQUE, prev_hash BLOB NOT NULL, hash BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_day ON events(day);"
    /* no query selects by type; logs made before 2026-12 had this index */
    "DROP INDEX IF EXISTS events_type;"
    "CREATE INDEX IF NOT EXISTS events_pec_id ON events(pec_id);"
    "CREATE INDEX IF NOT EXISTS events_orig_msgid ON events(orig_msgid);"
    "CREATE INDEX IF NOT EXISTS events_message_id ON events(message_id);"
    "CREATE TABLE IF NOT EXISTS seals("
    " day TEXT PRIMARY KEY, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,"
    " count INTEGER NOT NULL, last_hash BLOB NOT NULL, signed TEXT NOT NULL,"
    " signature BLOB NOT NULL, sealed_at INTEGER NOT NULL);"
    /* legal holds (pecctl log hold): records of a transaction or an address
     * that retention must keep; not part of the chain */
    "CREATE TABLE IF NOT EXISTS holds(id INTEGER PRIMARY KEY,"
    " kind TEXT NOT NULL CHECK (kind IN ('address', 'pec_id')), value TEXT NOT NULL,"
    " reason TEXT, created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS anchor("
    " id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL,"
    " day TEXT NOT NULL, purged_at INTEGER NOT NULL);"
    /* Append-only against mistakes (not against an attacker, who can drop
     * these: the hash chain and the seals are what detect that). */
    "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events"
    " BEGIN SELECT RAISE(ABORT, 'evidence log is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events"
    " WHEN old.seq > coalesce((SELECT seq FROM anchor WHERE id = 1), 0)"
    " BEGIN SELECT RAISE(ABORT, 'evidence log is append-only: only purged days go'); END;"
    "CREATE TRIGGER IF NOT EXISTS seals_no_update BEFORE UPDATE ON seals"
    " BEGIN SELECT RAISE(ABORT, 'seals are append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS seals_no_delete BEFORE DELETE ON seals"
    " BEGIN SELECT RAISE(ABORT, 'seals are append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS anchor_forward BEFORE UPDATE ON anchor"
    " WHEN new.seq < old.seq BEGIN SELECT RAISE(ABORT, 'the anchor only moves forward'); END;";

const char *ev_schema_sql(void)
{
    return SCHEMA;
}

static const char SQL_INSERT[] =
    "INSERT INTO events(seq, day, logged_at, event_time, type, pec_id, orig_msgid, message_id,"
    " sender, recipients, subject, outcome, queue_id, dedupe_key, prev_hash, hash)"
    " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

/* ---- small helpers ------------------------------------------------------------- */

void ev_say(FILE *out, const char *fmt, ...)
{
    if (out == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
}

int ev_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* "YYYY-MM-DD" of t in UTC */
void ev_utc_day(time_t t, char out[16])
{
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        memset(&tm, 0, sizeof tm);
    strftime(out, 16, "%Y-%m-%d", &tm);
}

/* 00:00 UTC of day, or -1 */
time_t ev_day_start(const char *day)
{
    struct tm tm = {0};
    int y, m, d;
    if (sscanf(day, "%4d-%2d-%2d", &y, &m, &d) != 3)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    return timegm(&tm);
}

static void next_day(const char *day, char out[16])
{
    time_t t = ev_day_start(day);
    ev_utc_day(t < 0 ? 0 : t + 86400, out);
}

static void max_day(char cur[16], const char *other)
{
    if (other != NULL && strcmp(other, cur) > 0)
        str_copy(cur, other, 16);
}

int ev_sql_fail(sqlite3 *db, char *err, size_t errlen, const char *what)
{
    return ev_fail(err, errlen, "evidence log: %s: %s", what, sqlite3_errmsg(db));
}

int ev_sync_mode(struct evidence *ev, bool full, char *err, size_t errlen)
{
    if (full == ev->sync_full)
        return 0;
    if (ev_exec(ev->db, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", err,
                errlen) != 0)
        return full ? -1 : 0;   /* staying FULL is stronger than asked: fine */
    ev->sync_full = full;
    return 0;
}

int ev_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        ev_fail(err, errlen, "evidence log: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* ---- the chain step ---------------------------------------------------------------- */

static void put_field(EVP_MD_CTX *md, const char *s, size_t n)
{
    unsigned char len[4];
    uint32_t l = s == NULL ? UINT32_MAX : (uint32_t)n;
    len[0] = (unsigned char)(l >> 24);
    len[1] = (unsigned char)(l >> 16);
    len[2] = (unsigned char)(l >> 8);
    len[3] = (unsigned char)l;
    EVP_DigestUpdate(md, len, 4);
    if (s != NULL)
        EVP_DigestUpdate(md, s, n);
}

static void put_str(EVP_MD_CTX *md, const char *s)
{
    put_field(md, s, s ? strlen(s) : 0);
}

static void put_num(EVP_MD_CTX *md, long long v)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%lld", v);
    put_field(md, b, (size_t)n);
}

void evidence_record_hash(const unsigned char prev[32], long long seq, const char *day,
                          long long logged_at, long long event_time,
                          const char *const fields[NFIELDS], unsigned char out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int n = 0;
    if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
        abort(); /* out of memory in a 100-byte allocation: nothing sane to do */
    EVP_DigestUpdate(md, prev, 32);
    EVP_DigestUpdate(md, EVIDENCE_MAGIC, strlen(EVIDENCE_MAGIC));
    put_num(md, seq);
    put_str(md, day);
    put_num(md, logged_at);
    put_num(md, event_time);
    for (int i = 0; i < NFIELDS; i++)
        put_str(md, fields[i]);
    EVP_DigestFinal_ex(md, out, &n);
    EVP_MD_CTX_free(md);
}

/* ---- the writer ------------------------------------------------------------------ */

struct pending {
    const struct evidence_event *e;   /* n events */
    size_t n;
    bool deferred;               /* evidence_append_deferred: no sync of its own */
    struct pending *next;
    bool done;
    int rc;
    char err[256];
};

time_t ev_clock_now(struct evidence *ev)
{
    return ev->now != NULL ? ev->now(ev->now_ctx) : time(NULL);
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err, size_t errlen)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
        return ev_sql_fail(db, err, errlen, "prepare");
    return 0;
}

struct evidence *evidence_open(const char *path, char *err, size_t errlen)
{
    if (config_is_postgresql(path)) {
        struct evidence *ev = xcalloc(1, sizeof *ev);
        if (ev == NULL) {
            ev_fail(err, errlen, "out of memory");
            return NULL;
        }
        ev->tail = &ev->head;
        pthread_mutex_init(&ev->db_lock, NULL);
        pthread_mutex_init(&ev->q_lock, NULL);
        pthread_cond_init(&ev->q_cond, NULL);
        if ((ev->pg = evpg_open(err, errlen)) == NULL) {
            evidence_close(ev);
            return NULL;
        }
        return ev;
    }
    char dir[4096];
    if (str_copy(dir, path, sizeof dir) >= sizeof dir) {
        ev_fail(err, errlen, "evidence log: path too long");
        return NULL;
    }
    char *slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        if (fs_mkdirs(dir, 0700) != 0) {
            ev_fail(err, errlen, "evidence log: cannot create %s: %s", dir, strerror(errno));
            return NULL;
        }
    }
    struct evidence *ev = xcalloc(1, sizeof *ev);
    if (ev == NULL) {
        ev_fail(err, errlen, "out of memory");
        return NULL;
    }
    ev->tail = &ev->head;
    pthread_mutex_init(&ev->db_lock, NULL);
    pthread_mutex_init(&ev->q_lock, NULL);
    pthread_cond_init(&ev->q_cond, NULL);
    /* NOMUTEX: db_lock serialises every use of the connection */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &ev->db, flags, NULL) != SQLITE_OK) {
        ev_fail(err, errlen, "evidence log: cannot open %s: %s", path,
                ev->db ? sqlite3_errmsg(ev->db) : "out of memory");
        evidence_close(ev);
        return NULL;
    }
    sqlite3_busy_timeout(ev->db, 10000);
    ev->sync_full = true;
    /* WAL: readers (pecctl) never block the writer.  synchronous=FULL: the
     * WAL is fsynced at every commit, so an event is durable when append
     * returns; group commit makes that one fsync per batch.  A batch of only
     * deferred appends is committed with NORMAL (ev_sync_mode). */
    if (ev_exec(ev->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", err, errlen) != 0 ||
        ev_exec(ev->db, "BEGIN IMMEDIATE", err, errlen) != 0) {
        evidence_close(ev);
        return NULL;
    }
    if (ev_exec(ev->db, SCHEMA, err, errlen) != 0) {
        sqlite3_exec(ev->db, "ROLLBACK", NULL, NULL, NULL);
        evidence_close(ev);
        return NULL;
    }
    sqlite3_stmt *st = NULL;
    const char *fmt = NULL;
    if (sqlite3_prepare_v2(ev->db, "SELECT value FROM meta WHERE key='format'", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        fmt = col_text(st, 0);
    bool fmt_ok = fmt != NULL && strcmp(fmt, EVIDENCE_FORMAT) == 0;
    sqlite3_finalize(st);
    if (!fmt_ok) {
        sqlite3_exec(ev->db, "ROLLBACK", NULL, NULL, NULL);
        ev_fail(err, errlen, "evidence log: %s has an unknown format", path);
        evidence_close(ev);
        return NULL;
    }
    if (ev_exec(ev->db, "COMMIT", err, errlen) != 0 ||
        prepare(ev->db, SQL_INSERT, &ev->st_insert, err, errlen) != 0 ||
        prepare(ev->db, "SELECT 1 FROM events WHERE dedupe_key = ?", &ev->st_dedupe, err,
                errlen) != 0 ||
        prepare(ev->db, "SELECT seq, hash, day FROM events ORDER BY seq DESC LIMIT 1",
                &ev->st_head, err, errlen) != 0 ||
        prepare(ev->db, "SELECT seq, hash, day FROM anchor WHERE id = 1", &ev->st_anchor, err,
                errlen) != 0 ||
        prepare(ev->db, "SELECT max(day) FROM seals", &ev->st_lastseal, err, errlen) != 0) {
        evidence_close(ev);
        return NULL;
    }
    return ev;
}

void evidence_set_signer(struct evidence *ev, evidence_sign_fn fn, void *ctx)
{
    pthread_mutex_lock(&ev->db_lock);
    ev->sign = fn;
    ev->sign_ctx = ctx;
    pthread_mutex_unlock(&ev->db_lock);
}

void evidence_set_clock(struct evidence *ev, time_t (*now)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&ev->db_lock);
    ev->now = now;
    ev->now_ctx = ctx;
    pthread_mutex_unlock(&ev->db_lock);
}

void evidence_close(struct evidence *ev)
{
    if (ev == NULL)
        return;
    evpg_close(ev->pg);
    sqlite3_finalize(ev->st_insert);
    sqlite3_finalize(ev->st_dedupe);
    sqlite3_finalize(ev->st_head);
    sqlite3_finalize(ev->st_anchor);
    sqlite3_finalize(ev->st_lastseal);
    if (ev->db != NULL)
        sqlite3_close(ev->db);
    pthread_mutex_destroy(&ev->db_lock);
    pthread_mutex_destroy(&ev->q_lock);
    pthread_cond_destroy(&ev->q_cond);
    free(ev);
}

struct head {
    long long seq;
    unsigned char hash[32];
    char day[16];       /* day of the last record ("" when none) */
    char min_day[16];   /* the day after the last sealed one ("" when none) */
};

/* The chain head, read inside the write transaction. */
static int read_head(struct evidence *ev, struct head *h, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    sqlite3_stmt *st = ev->st_head;
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        sqlite3_reset(st);
        if (r != SQLITE_DONE)
            return ev_sql_fail(ev->db, err, errlen, "read head");
        st = ev->st_anchor; /* every record purged: continue from the anchor */
        r = sqlite3_step(st);
    }
    if (r == SQLITE_ROW) {
        h->seq = sqlite3_column_int64(st, 0);
        if (sqlite3_column_bytes(st, 1) != 32) {
            sqlite3_reset(st);
            return ev_fail(err, errlen, "evidence log: head record %lld has a bad hash", h->seq);
        }
        memcpy(h->hash, sqlite3_column_blob(st, 1), 32);
        str_copy(h->day, col_text(st, 2) ? col_text(st, 2) : "", sizeof h->day);
    } else if (r != SQLITE_DONE) {
        sqlite3_reset(st);
        return ev_sql_fail(ev->db, err, errlen, "read anchor");
    }
    sqlite3_reset(st);
    if (sqlite3_step(ev->st_lastseal) == SQLITE_ROW && col_text(ev->st_lastseal, 0) != NULL)
        next_day(col_text(ev->st_lastseal, 0), h->min_day);
    sqlite3_reset(ev->st_lastseal);
    return 0;
}

/* Binds a field, cut at EVIDENCE_FIELD_MAX; *tmp holds a cut copy (freed by caller). */
const char *ev_capped(const char *s, char **tmp)
{
    if (s == NULL || strlen(s) <= EVIDENCE_FIELD_MAX)
        return s;
    size_t keep = EVIDENCE_FIELD_MAX - strlen(EVIDENCE_TRUNC_MARK);
    while (keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80)
        keep--; /* cut at a UTF-8 character boundary */
    char *c = malloc(EVIDENCE_FIELD_MAX + 1);
    if (c == NULL)
        return NULL;
    memcpy(c, s, keep);
    memcpy(c + keep, EVIDENCE_TRUNC_MARK, strlen(EVIDENCE_TRUNC_MARK) + 1);
    *tmp = c;
    return c;
}

/* Inserts one event (0 stored, 1 duplicate, -1 error) and advances h. */
static int insert_one(struct evidence *ev, struct head *h, const char *day, time_t now,
                      const struct evidence_event *e, char *err, size_t errlen)
{
    if (e->dedupe_key != NULL) {
        sqlite3_bind_text(ev->st_dedupe, 1, e->dedupe_key, -1, SQLITE_STATIC);
        int r = sqlite3_step(ev->st_dedupe);
        sqlite3_reset(ev->st_dedupe);
        sqlite3_clear_bindings(ev->st_dedupe);
        if (r == SQLITE_ROW)
            return 1;
        if (r != SQLITE_DONE)
            return ev_sql_fail(ev->db, err, errlen, "dedupe lookup");
    }
    char *tmp[NFIELDS] = {0};
    const char *raw[NFIELDS] = {e->type,       e->pec_id,  e->orig_msgid, e->message_id,
                                e->sender,     e->recipients, e->subject, e->outcome,
                                e->queue_id,   e->dedupe_key};
    const char *f[NFIELDS];
    for (int i = 0; i < NFIELDS; i++)
        f[i] = ev_capped(raw[i], &tmp[i]);
    long long seq = h->seq + 1;
    long long when = e->when != 0 ? (long long)e->when : (long long)now;
    unsigned char hash[32];
    evidence_record_hash(h->hash, seq, day, (long long)now, when, f, hash);
    sqlite3_stmt *st = ev->st_insert;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_text(st, 2, day, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (long long)now);
    sqlite3_bind_int64(st, 4, when);
    for (int i = 0; i < NFIELDS; i++) {
        if (f[i] != NULL)
            sqlite3_bind_text(st, 5 + i, f[i], -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 5 + i);
    }
    sqlite3_bind_blob(st, 15, h->hash, 32, SQLITE_STATIC);
    sqlite3_bind_blob(st, 16, hash, 32, SQLITE_STATIC);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    for (int i = 0; i < NFIELDS; i++)
        free(tmp[i]);
    if (r != SQLITE_DONE)
        return ev_sql_fail(ev->db, err, errlen, "insert");
    h->seq = seq;
    memcpy(h->hash, hash, 32);
    str_copy(h->day, day, sizeof h->day);
    return 0;
}

/* Writes a batch in one transaction; sets rc/err of every entry. */
static void commit_batch(struct evidence *ev, struct pending *batch)
{
    char err[256] = "";
    int rc = -1;
    pthread_mutex_lock(&ev->db_lock);
    if (ev->pg != NULL) {
        /* every commit of the server is durable: deferred or not is the same */
        size_t total = 0, k = 0;
        for (struct pending *p = batch; p != NULL; p = p->next)
            total += p->n;
        const struct evidence_event **v = xcalloc(total ? total : 1, sizeof *v);
        for (struct pending *p = batch; v != NULL && p != NULL; p = p->next)
            for (size_t i = 0; i < p->n; i++)
                v[k++] = &p->e[i];
        rc = v != NULL ? evpg_commit(ev, v, k, err, sizeof err)
                       : ev_fail(err, sizeof err, "out of memory");
        free(v);
        pthread_mutex_unlock(&ev->db_lock);
        for (struct pending *p = batch; p != NULL; p = p->next) {
            p->rc = rc;
            if (rc != 0)
                str_copy(p->err, err, sizeof p->err);
        }
        return;
    }
    /* FULL (the WAL fdatasync'ed at COMMIT) unless every append of the batch
     * is made durable by its caller's syncfs (evidence_append_deferred) */
    bool full = false;
    for (struct pending *p = batch; p != NULL; p = p->next)
        full = full || !p->deferred;
    if (ev_sync_mode(ev, full, err, sizeof err) == 0 &&
        ev_exec(ev->db, "BEGIN IMMEDIATE", err, sizeof err) == 0) {
        struct head h;
        time_t now = ev_clock_now(ev);
        char day[16];
        ev_utc_day(now, day);
        rc = read_head(ev, &h, err, sizeof err);
        if (rc == 0) {
            max_day(day, h.day);
            max_day(day, h.min_day);
        }
        for (struct pending *p = batch; p != NULL && rc == 0; p = p->next)
            for (size_t i = 0; i < p->n && rc == 0; i++)
                rc = insert_one(ev, &h, day, now, &p->e[i], err, sizeof err) < 0 ? -1 : 0;
        if (rc == 0)
            rc = ev_exec(ev->db, "COMMIT", err, sizeof err);
        if (rc != 0)
            sqlite3_exec(ev->db, "ROLLBACK", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&ev->db_lock);
    for (struct pending *p = batch; p != NULL; p = p->next) {
        p->rc = rc;
        if (rc != 0)
            str_copy(p->err, err, sizeof p->err);
    }
}

/* Queues n events as one entry of the group commit and waits for it. */
static int commit_wait(struct evidence *ev, const struct evidence_event *e, size_t n,
                       bool deferred, char *err, size_t errlen)
{
    struct pending p = {.e = e, .n = n, .deferred = deferred};
    pthread_mutex_lock(&ev->q_lock);
    *ev->tail = &p;
    ev->tail = &p.next;
    while (!p.done) {
        if (ev->committing) {
            pthread_cond_wait(&ev->q_cond, &ev->q_lock);
            continue;
        }
        /* become the committer for everything queued so far (p included) */
        ev->committing = true;
        struct pending *batch = ev->head;
        ev->head = NULL;
        ev->tail = &ev->head;
        pthread_mutex_unlock(&ev->q_lock);
        commit_batch(ev, batch);
        pthread_mutex_lock(&ev->q_lock);
        for (struct pending *q = batch, *next; q != NULL; q = next) {
            next = q->next; /* q may return (and its frame go) once done is seen */
            q->done = true;
        }
        ev->committing = false;
        pthread_cond_broadcast(&ev->q_cond);
    }
    pthread_mutex_unlock(&ev->q_lock);
    if (p.rc != 0)
        return ev_fail(err, errlen, "%s", p.err);
    return 0;
}

/* ---- batches: a thread's appends held until evidence_batch_commit ---------- */

/* One thread's open batch: copies of the events appended since
 * evidence_batch_begin (each event's strings in one allocation, mem[i]). */
struct batch {
    struct evidence *ev;
    struct evidence_event *v;
    char **mem;
    size_t n, cap;
    bool synced;        /* one of them came through evidence_append */
    bool failed;        /* out of memory: the commit reports it */
};

static __thread struct batch tls_batch;

static void batch_clear(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->mem[i]);
    free(b->v);
    free(b->mem);
    memset(b, 0, sizeof *b);
}

void evidence_batch_begin(struct evidence *ev)
{
    batch_clear(&tls_batch);   /* an earlier batch never committed: dropped */
    tls_batch.ev = ev;
}

/* Keeps a copy of e in the thread's batch. */
static int batch_add(struct batch *b, const struct evidence_event *e, bool synced)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 16;
        struct evidence_event *v = xrealloc(b->v, cap * sizeof *v);
        if (v != NULL)
            b->v = v;
        char **mem = v != NULL ? xrealloc(b->mem, cap * sizeof *mem) : NULL;
        if (mem != NULL)
            b->mem = mem;
        if (v == NULL || mem == NULL) {
            b->failed = true;
            return 0;
        }
        b->cap = cap;
    }
    const char *src[NFIELDS] = {e->type,   e->pec_id,     e->orig_msgid, e->message_id,
                                e->sender, e->recipients, e->subject,    e->outcome,
                                e->queue_id, e->dedupe_key};
    size_t need = 0;
    for (int i = 0; i < NFIELDS; i++)
        need += src[i] != NULL ? strlen(src[i]) + 1 : 0;
    char *mem = malloc(need ? need : 1), *at = mem;
    if (mem == NULL) {
        b->failed = true;
        return 0;
    }
    const char *dst[NFIELDS];
    for (int i = 0; i < NFIELDS; i++) {
        dst[i] = NULL;
        if (src[i] != NULL) {
            size_t l = strlen(src[i]) + 1;
            memcpy(at, src[i], l);
            dst[i] = at;
            at += l;
        }
    }
    b->v[b->n] = (struct evidence_event){
        .type = dst[0], .pec_id = dst[1], .orig_msgid = dst[2], .message_id = dst[3],
        .sender = dst[4], .recipients = dst[5], .subject = dst[6], .outcome = dst[7],
        .queue_id = dst[8], .dedupe_key = dst[9],
        .when = e->when != 0 ? e->when : ev_clock_now(b->ev)};
    b->mem[b->n++] = mem;
    b->synced = b->synced || synced;
    return 0;
}

int evidence_batch_commit(struct evidence *ev, char *err, size_t errlen)
{
    struct batch *b = &tls_batch;
    int rc = 0;
    if (b->ev != ev)
        rc = ev_fail(err, errlen, "evidence log: no batch open on this thread");
    else if (b->failed)
        rc = ev_fail(err, errlen, "evidence log: out of memory");
    else if (b->n > 0)
        rc = commit_wait(ev, b->v, b->n, !b->synced, err, errlen);
    batch_clear(b);
    return rc;
}

size_t evidence_batch_mark(struct evidence *ev)
{
    return tls_batch.ev == ev && ev != NULL ? tls_batch.n : 0;
}

void evidence_batch_rollback(struct evidence *ev, size_t mark)
{
    struct batch *b = &tls_batch;
    if (b->ev != ev || ev == NULL)
        return;
    while (b->n > mark)
        free(b->mem[--b->n]);
}

int evidence_lookup(struct evidence *ev, const char *dedupe_key, char *queue_id,
                    size_t queue_id_len, time_t *when)
{
    if (ev->pg != NULL)
        return evpg_lookup(ev, dedupe_key, queue_id, queue_id_len, when);
    pthread_mutex_lock(&ev->db_lock);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(ev->db, "SELECT queue_id, event_time FROM events WHERE dedupe_key = ?",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, dedupe_key, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_DONE) {
            rc = 0;
        } else if (r == SQLITE_ROW) {
            rc = 1;
            const char *q = col_text(st, 0);
            snprintf(queue_id, queue_id_len, "%s", q ? q : "");
            *when = (time_t)sqlite3_column_int64(st, 1);
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ev->db_lock);
    return rc;
}

int evidence_stage_time(struct evidence *ev, const char *queue_id, time_t *out)
{
    /* a stage's events have the dedupe key "QID:type:key" (the provider's
     * log_event): a range of the key's unique index, no scan */
    char lo[64], hi[64];
    if (queue_id == NULL || snprintf(lo, sizeof lo, "%s:", queue_id) >= (int)sizeof lo)
        return -1;
    snprintf(hi, sizeof hi, "%s;", queue_id);   /* ';' follows ':' */
    if (ev->pg != NULL)
        return evpg_stage_time(ev, queue_id, out);
    pthread_mutex_lock(&ev->db_lock);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(ev->db, "SELECT min(event_time) FROM events WHERE dedupe_key >= ?1 "
                                   "AND dedupe_key < ?2", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            rc = sqlite3_column_type(st, 0) == SQLITE_NULL ? 0 : 1;
            if (rc == 1)
                *out = (time_t)sqlite3_column_int64(st, 0);
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ev->db_lock);
    return rc;
}

static int append(struct evidence *ev, const struct evidence_event *e, bool deferred, char *err,
                  size_t errlen)
{
    if (e == NULL || e->type == NULL || e->type[0] == '\0')
        return ev_fail(err, errlen, "evidence log: an event needs a type");
    if (tls_batch.ev == ev && ev != NULL)
        return batch_add(&tls_batch, e, !deferred);
    return commit_wait(ev, e, 1, deferred, err, errlen);
}

int evidence_append(struct evidence *ev, const struct evidence_event *e, char *err,
                    size_t errlen)
{
    return append(ev, e, false, err, errlen);
}

int evidence_append_deferred(struct evidence *ev, const struct evidence_event *e, char *err,
                             size_t errlen)
{
    return append(ev, e, true, err, errlen);
}

int evidence_stats(struct evidence *ev, long long *records, time_t *last_seal)
{
    if (ev->pg != NULL)
        return evpg_stats(ev, records, last_seal);
    /* never waits behind a group commit or a seal: the scrape tries again */
    if (pthread_mutex_trylock(&ev->db_lock) != 0)
        return -1;
    int rc = -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ev->db, "SELECT (SELECT coalesce(max(seq), 0) FROM events), "
                                   "(SELECT coalesce(max(sealed_at), 0) FROM seals)",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        *records = sqlite3_column_int64(st, 0);
        *last_seal = (time_t)sqlite3_column_int64(st, 1);
        rc = 0;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ev->db_lock);
    return rc;
}
