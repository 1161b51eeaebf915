/*
 * evidence.c - the evidence log (RFC 6109 §2.3, §2.2.4): an append-only,
 * hash-chained SQLite table with one signed seal per finished UTC day.
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
 * Writes: one connection, WAL, synchronous=FULL.  evidence_append() queues
 * the event and waits; the first waiting thread that finds no commit in
 * progress becomes the committer and writes every queued event in one
 * transaction (group commit: one WAL fsync for the whole batch), so the
 * cost of durability is shared by every concurrent caller.  The committer
 * re-reads the chain head inside BEGIN IMMEDIATE, so another process writing
 * the same file (pecctl log seal/purge) cannot fork the chain.
 *
 * Days: a record's day is the UTC day of its logging time, but never earlier
 * than the previous record's day nor than the day after the last sealed one,
 * so every day is one contiguous range of seq and a sealed day never grows.
 *
 * Assumes: field values are C strings (no NUL inside); each field is capped
 * at EVIDENCE_FIELD_MAX bytes (longer values are cut, with a marker).
 */
#include "store/evidence.h"
#include "lib/lib.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>

#define EVIDENCE_FORMAT "1"
#define EVIDENCE_MAGIC "pecmail-evidence-1"
#define EVIDENCE_FIELD_MAX (64u * 1024)
#define EVIDENCE_TRUNC_MARK "...[truncated]"
#define NFIELDS 10

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES('format', '" EVIDENCE_FORMAT "');"
    "CREATE TABLE IF NOT EXISTS events("
    " seq INTEGER PRIMARY KEY, day TEXT NOT NULL, logged_at INTEGER NOT NULL,"
    " event_time INTEGER NOT NULL, type TEXT NOT NULL, pec_id TEXT, orig_msgid TEXT,"
    " message_id TEXT, sender TEXT, recipients TEXT, subject TEXT, outcome TEXT,"
    " queue_id TEXT, dedupe_key TEXT UNIQUE, prev_hash BLOB NOT NULL, hash BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_day ON events(day);"
    "CREATE INDEX IF NOT EXISTS events_type ON events(type);"
    "CREATE INDEX IF NOT EXISTS events_pec_id ON events(pec_id);"
    "CREATE INDEX IF NOT EXISTS events_orig_msgid ON events(orig_msgid);"
    "CREATE INDEX IF NOT EXISTS events_message_id ON events(message_id);"
    "CREATE TABLE IF NOT EXISTS seals("
    " day TEXT PRIMARY KEY, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,"
    " count INTEGER NOT NULL, last_hash BLOB NOT NULL, signed TEXT NOT NULL,"
    " signature BLOB NOT NULL, sealed_at INTEGER NOT NULL);"
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

static const char SQL_INSERT[] =
    "INSERT INTO events(seq, day, logged_at, event_time, type, pec_id, orig_msgid, message_id,"
    " sender, recipients, subject, outcome, queue_id, dedupe_key, prev_hash, hash)"
    " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
static const char SQL_COLUMNS[] =
    "seq, day, logged_at, event_time, type, pec_id, orig_msgid, message_id, sender,"
    " recipients, subject, outcome, queue_id, dedupe_key, prev_hash, hash";

/* ---- small helpers ------------------------------------------------------------- */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* "YYYY-MM-DD" of t in UTC */
static void utc_day(time_t t, char out[16])
{
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        memset(&tm, 0, sizeof tm);
    strftime(out, 16, "%Y-%m-%d", &tm);
}

/* 00:00 UTC of day, or -1 */
static time_t day_start(const char *day)
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
    time_t t = day_start(day);
    utc_day(t < 0 ? 0 : t + 86400, out);
}

static void max_day(char cur[16], const char *other)
{
    if (other != NULL && strcmp(other, cur) > 0)
        str_copy(cur, other, 16);
}

static int sql_fail(sqlite3 *db, char *err, size_t errlen, const char *what)
{
    return fail(err, errlen, "evidence log: %s: %s", what, sqlite3_errmsg(db));
}

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fail(err, errlen, "evidence log: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
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

/* The text a day seal signs (docs/evidence.md). */
static int seal_text(char *out, size_t outlen, const char *day, long long count, long long first,
                     long long last, const unsigned char hash[32])
{
    char h[65];
    hex(hash, 32, h);
    return str_fmt(out, outlen,
                   "pecmail evidence seal 1\nday: %s\nrecords: %lld\nfirst: %lld\nlast: %lld\n"
                   "last-hash: %s\n",
                   day, count, first, last, h);
}

/* ---- the writer ------------------------------------------------------------------ */

struct pending {
    const struct evidence_event *e;
    struct pending *next;
    bool done;
    int rc;
    char err[256];
};

struct evidence {
    sqlite3 *db;
    pthread_mutex_t db_lock;     /* use of db: one committer, seal or purge at a time */
    pthread_mutex_t q_lock;      /* the queue and 'committing' */
    pthread_cond_t q_cond;
    struct pending *head, **tail;
    bool committing;
    evidence_sign_fn sign;
    void *sign_ctx;
    time_t (*now)(void *);
    void *now_ctx;
    sqlite3_stmt *st_insert, *st_dedupe, *st_head, *st_anchor, *st_lastseal;
};

static time_t clock_now(struct evidence *ev)
{
    return ev->now != NULL ? ev->now(ev->now_ctx) : time(NULL);
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err, size_t errlen)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
        return sql_fail(db, err, errlen, "prepare");
    return 0;
}

struct evidence *evidence_open(const char *path, char *err, size_t errlen)
{
    char dir[4096];
    if (str_copy(dir, path, sizeof dir) >= sizeof dir) {
        fail(err, errlen, "evidence log: path too long");
        return NULL;
    }
    char *slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        if (fs_mkdirs(dir, 0700) != 0) {
            fail(err, errlen, "evidence log: cannot create %s: %s", dir, strerror(errno));
            return NULL;
        }
    }
    struct evidence *ev = calloc(1, sizeof *ev);
    if (ev == NULL) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    ev->tail = &ev->head;
    pthread_mutex_init(&ev->db_lock, NULL);
    pthread_mutex_init(&ev->q_lock, NULL);
    pthread_cond_init(&ev->q_cond, NULL);
    /* NOMUTEX: db_lock serialises every use of the connection */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &ev->db, flags, NULL) != SQLITE_OK) {
        fail(err, errlen, "evidence log: cannot open %s: %s", path,
             ev->db ? sqlite3_errmsg(ev->db) : "out of memory");
        evidence_close(ev);
        return NULL;
    }
    sqlite3_busy_timeout(ev->db, 10000);
    /* WAL: readers (pecctl) never block the writer.  synchronous=FULL: the
     * WAL is fsynced at every commit, so an event is durable when append
     * returns; group commit makes that one fsync per batch. */
    if (exec(ev->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", err, errlen) != 0 ||
        exec(ev->db, "BEGIN IMMEDIATE", err, errlen) != 0) {
        evidence_close(ev);
        return NULL;
    }
    if (exec(ev->db, SCHEMA, err, errlen) != 0) {
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
        fail(err, errlen, "evidence log: %s has an unknown format", path);
        evidence_close(ev);
        return NULL;
    }
    if (exec(ev->db, "COMMIT", err, errlen) != 0 ||
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
            return sql_fail(ev->db, err, errlen, "read head");
        st = ev->st_anchor; /* every record purged: continue from the anchor */
        r = sqlite3_step(st);
    }
    if (r == SQLITE_ROW) {
        h->seq = sqlite3_column_int64(st, 0);
        if (sqlite3_column_bytes(st, 1) != 32) {
            sqlite3_reset(st);
            return fail(err, errlen, "evidence log: head record %lld has a bad hash", h->seq);
        }
        memcpy(h->hash, sqlite3_column_blob(st, 1), 32);
        str_copy(h->day, col_text(st, 2) ? col_text(st, 2) : "", sizeof h->day);
    } else if (r != SQLITE_DONE) {
        sqlite3_reset(st);
        return sql_fail(ev->db, err, errlen, "read anchor");
    }
    sqlite3_reset(st);
    if (sqlite3_step(ev->st_lastseal) == SQLITE_ROW && col_text(ev->st_lastseal, 0) != NULL)
        next_day(col_text(ev->st_lastseal, 0), h->min_day);
    sqlite3_reset(ev->st_lastseal);
    return 0;
}

/* Binds a field, cut at EVIDENCE_FIELD_MAX; *tmp holds a cut copy (freed by caller). */
static const char *capped(const char *s, char **tmp)
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
            return sql_fail(ev->db, err, errlen, "dedupe lookup");
    }
    char *tmp[NFIELDS] = {0};
    const char *raw[NFIELDS] = {e->type,       e->pec_id,  e->orig_msgid, e->message_id,
                                e->sender,     e->recipients, e->subject, e->outcome,
                                e->queue_id,   e->dedupe_key};
    const char *f[NFIELDS];
    for (int i = 0; i < NFIELDS; i++)
        f[i] = capped(raw[i], &tmp[i]);
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
        return sql_fail(ev->db, err, errlen, "insert");
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
    if (exec(ev->db, "BEGIN IMMEDIATE", err, sizeof err) == 0) {
        struct head h;
        time_t now = clock_now(ev);
        char day[16];
        utc_day(now, day);
        rc = read_head(ev, &h, err, sizeof err);
        if (rc == 0) {
            max_day(day, h.day);
            max_day(day, h.min_day);
        }
        for (struct pending *p = batch; p != NULL && rc == 0; p = p->next)
            rc = insert_one(ev, &h, day, now, p->e, err, sizeof err) < 0 ? -1 : 0;
        if (rc == 0)
            rc = exec(ev->db, "COMMIT", err, sizeof err);
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

int evidence_append(struct evidence *ev, const struct evidence_event *e, char *err,
                    size_t errlen)
{
    if (e == NULL || e->type == NULL || e->type[0] == '\0')
        return fail(err, errlen, "evidence log: an event needs a type");
    struct pending p = {.e = e};
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
        return fail(err, errlen, "%s", p.err);
    return 0;
}

/* ---- seals ------------------------------------------------------------------------ */

int evidence_seal(struct evidence *ev, time_t now, char *err, size_t errlen)
{
    char today[16];
    utc_day(now, today);
    pthread_mutex_lock(&ev->db_lock);
    int sealed = 0, rc = -1;
    sqlite3_stmt *days = NULL, *ins = NULL;
    if (ev->sign == NULL) {
        fail(err, errlen, "evidence log: no signer to seal with");
        goto out;
    }
    if (exec(ev->db, "BEGIN IMMEDIATE", err, errlen) != 0)
        goto out;
    /* Days are sealed in order, so the unsealed ones follow the last seal. */
    if (sqlite3_prepare_v2(ev->db,
                           "SELECT d.day, d.first, d.last, d.n, e.hash FROM"
                           " (SELECT day, min(seq) AS first, max(seq) AS last, count(*) AS n"
                           "  FROM events WHERE day < ?1 AND day >"
                           "  coalesce((SELECT max(day) FROM seals), '') GROUP BY day) d"
                           " JOIN events e ON e.seq = d.last ORDER BY d.day",
                           -1, &days, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ev->db,
                           "INSERT INTO seals(day, first_seq, last_seq, count, last_hash,"
                           " signed, signature, sealed_at) VALUES(?,?,?,?,?,?,?,?)",
                           -1, &ins, NULL) != SQLITE_OK) {
        sql_fail(ev->db, err, errlen, "seal");
        goto rollback;
    }
    sqlite3_bind_text(days, 1, today, -1, SQLITE_STATIC);
    int r;
    while ((r = sqlite3_step(days)) == SQLITE_ROW) {
        const char *day = col_text(days, 0);
        long long first = sqlite3_column_int64(days, 1), last = sqlite3_column_int64(days, 2);
        long long count = sqlite3_column_int64(days, 3);
        if (day == NULL || sqlite3_column_bytes(days, 4) != 32) {
            fail(err, errlen, "evidence log: day %s: bad head record", day ? day : "?");
            goto rollback;
        }
        unsigned char hash[32];
        memcpy(hash, sqlite3_column_blob(days, 4), 32);
        char text[512];
        if (seal_text(text, sizeof text, day, count, first, last, hash) < 0) {
            fail(err, errlen, "evidence log: seal text too long");
            goto rollback;
        }
        unsigned char *der = NULL;
        size_t derlen = 0;
        char serr[256] = "";
        if (ev->sign(ev->sign_ctx, text, strlen(text), &der, &derlen, serr, sizeof serr) != 0 ||
            der == NULL) {
            free(der);
            fail(err, errlen, "evidence log: signing the seal of %s failed: %s", day, serr);
            goto rollback;
        }
        sqlite3_bind_text(ins, 1, day, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 2, first);
        sqlite3_bind_int64(ins, 3, last);
        sqlite3_bind_int64(ins, 4, count);
        sqlite3_bind_blob(ins, 5, hash, 32, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 6, text, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(ins, 7, der, (int)derlen, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 8, (long long)now);
        free(der);
        r = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (r != SQLITE_DONE) {
            sql_fail(ev->db, err, errlen, "insert seal");
            goto rollback;
        }
        sealed++;
    }
    if (r != SQLITE_DONE) {
        sql_fail(ev->db, err, errlen, "seal: list days");
        goto rollback;
    }
    sqlite3_finalize(days);
    sqlite3_finalize(ins);
    days = ins = NULL;
    if (exec(ev->db, "COMMIT", err, errlen) != 0)
        goto rollback;
    rc = sealed;
    goto out;
rollback:
    sqlite3_finalize(days);
    sqlite3_finalize(ins);
    sqlite3_exec(ev->db, "ROLLBACK", NULL, NULL, NULL);
out:
    pthread_mutex_unlock(&ev->db_lock);
    return rc;
}

/* ---- retention ---------------------------------------------------------------------- */

int evidence_purge(struct evidence *ev, time_t older_than, char *err, size_t errlen)
{
    /* day D ends at D+1 00:00 UTC; it may go when that is <= older_than */
    char limit[16];
    utc_day(older_than, limit);
    int removed = 0;
    pthread_mutex_lock(&ev->db_lock);
    time_t now = clock_now(ev);
    /* One transaction per day: each commit leaves a verifiable log. */
    for (;;) {
        if (exec(ev->db, "BEGIN IMMEDIATE", err, errlen) != 0) {
            removed = -1;
            break;
        }
        sqlite3_stmt *st = NULL;
        int r = sqlite3_prepare_v2(
            ev->db,
            "SELECT day, last_seq, last_hash FROM seals"
            " WHERE day < ?1 AND last_seq > coalesce((SELECT seq FROM anchor WHERE id = 1), 0)"
            " ORDER BY day LIMIT 1",
            -1, &st, NULL);
        if (r == SQLITE_OK) {
            sqlite3_bind_text(st, 1, limit, -1, SQLITE_STATIC);
            r = sqlite3_step(st);
        }
        if (r == SQLITE_DONE) { /* nothing left to purge */
            sqlite3_finalize(st);
            exec(ev->db, "COMMIT", err, errlen);
            break;
        }
        char day[16] = "";
        long long last = 0;
        unsigned char hash[32];
        bool ok = r == SQLITE_ROW && sqlite3_column_bytes(st, 2) == 32;
        if (ok) {
            str_copy(day, col_text(st, 0), sizeof day);
            last = sqlite3_column_int64(st, 1);
            memcpy(hash, sqlite3_column_blob(st, 2), 32);
        }
        sqlite3_finalize(st);
        st = NULL;
        /* the anchor first: the delete trigger allows only seq <= anchor */
        if (ok)
            ok = sqlite3_prepare_v2(ev->db,
                                    "INSERT INTO anchor(id, seq, hash, day, purged_at)"
                                    " VALUES(1, ?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET"
                                    " seq = ?1, hash = ?2, day = ?3, purged_at = ?4",
                                    -1, &st, NULL) == SQLITE_OK;
        if (ok) {
            sqlite3_bind_int64(st, 1, last);
            sqlite3_bind_blob(st, 2, hash, 32, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, day, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, (long long)now);
            ok = sqlite3_step(st) == SQLITE_DONE;
        }
        sqlite3_finalize(st);
        st = NULL;
        if (ok)
            ok = sqlite3_prepare_v2(ev->db, "DELETE FROM events WHERE seq <= ?1", -1, &st,
                                    NULL) == SQLITE_OK;
        if (ok) {
            sqlite3_bind_int64(st, 1, last);
            ok = sqlite3_step(st) == SQLITE_DONE;
        }
        sqlite3_finalize(st);
        if (!ok) {
            sql_fail(ev->db, err, errlen, "purge");
            sqlite3_exec(ev->db, "ROLLBACK", NULL, NULL, NULL);
            removed = -1;
            break;
        }
        if (exec(ev->db, "COMMIT", err, errlen) != 0) {
            sqlite3_exec(ev->db, "ROLLBACK", NULL, NULL, NULL);
            removed = -1;
            break;
        }
        removed++;
    }
    pthread_mutex_unlock(&ev->db_lock);
    return removed;
}

/* ---- verification -------------------------------------------------------------------- */

static sqlite3 *open_ro(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    /* read-only: SQLite still maps the WAL index (-shm) of a live log, so
     * pecctl can read while pecd writes */
    if (access(path, R_OK) != 0) {
        fail(err, errlen, "evidence log %s: %s", path, strerror(errno));
        return NULL;
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fail(err, errlen, "evidence log %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st = NULL;
    bool ok = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key='format'", -1, &st,
                                 NULL) == SQLITE_OK &&
              sqlite3_step(st) == SQLITE_ROW && col_text(st, 0) != NULL &&
              strcmp(col_text(st, 0), EVIDENCE_FORMAT) == 0;
    sqlite3_finalize(st);
    if (!ok) {
        fail(err, errlen, "evidence log %s: not an evidence log of format %s", path,
             EVIDENCE_FORMAT);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

struct seal_row {
    char day[16];
    long long first, last, count;
    unsigned char hash[32];
    bool hash_ok;
    char *signed_text;
    unsigned char *sig;
    size_t siglen;
};

struct day_seen {
    char day[16];
    long long first, last, count;
    unsigned char hash[32];
};

struct verify {
    sqlite3 *db;
    FILE *out;
    STACK_OF(X509) *allowed;     /* NULL: any signer */
    struct seal_row *seals;
    size_t nseals;
    struct day_seen *days;
    size_t ndays, capdays;
    char signer[256];            /* last signer seen */
};

static void vprint(struct verify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vprint(struct verify *v, const char *fmt, ...)
{
    if (v->out == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(v->out, fmt, ap);
    va_end(ap);
}

static STACK_OF(X509) *load_certs(const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        fail(err, errlen, "cannot read certificate %s: %s", file, strerror(errno));
        return NULL;
    }
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    /* The first certificate is the signer's; later ones count only when they
     * are end-entity certificates too (a renewed key's old certificate), not
     * the CA of the chain that follows the signer in [pec] signing_cert. */
    while (sk != NULL && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        if ((sk_X509_num(sk) > 0 && X509_check_ca(x) != 0) || !sk_X509_push(sk, x))
            X509_free(x);
    fclose(f);
    ERR_clear_error(); /* the read that ended the loop */
    if (sk == NULL || sk_X509_num(sk) == 0) {
        sk_X509_pop_free(sk, X509_free);
        fail(err, errlen, "no certificate in %s", file);
        return NULL;
    }
    return sk;
}

/* Checks a seal signature over text.  0 ok, -1 with why. */
static int check_signature(struct verify *v, const struct seal_row *s, const char *text,
                           char *why, size_t whylen)
{
    const unsigned char *p = s->sig;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)s->siglen);
    if (cms == NULL) {
        ERR_clear_error();
        return fail(why, whylen, "the signature is not a CMS structure");
    }
    int rc = -1;
    BIO *content = BIO_new_mem_buf(text, (int)strlen(text));
    /* The signer's identity is checked below against the provider's
     * certificate, not by path validation: old seals must stay verifiable
     * after the certificate expires. */
    unsigned flags = CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY;
    int ok = content != NULL && CMS_verify(cms, NULL, NULL, content, NULL, flags) == 1;
    if (!ok && content != NULL && v->allowed != NULL &&
        ERR_GET_REASON(ERR_peek_last_error()) == CMS_R_SIGNER_CERTIFICATE_NOT_FOUND) {
        /* a seal made without embedding the certificate */
        ERR_clear_error();
        ok = BIO_reset(content) == 1 &&
             CMS_verify(cms, v->allowed, NULL, content, NULL, flags) == 1;
    }
    if (!ok) {
        unsigned long e = ERR_peek_last_error();
        fail(why, whylen, "bad signature (%s)", e ? ERR_reason_error_string(e) : "CMS");
        ERR_clear_error();
        goto out;
    }
    STACK_OF(X509) *signers = CMS_get0_signers(cms);
    X509 *signer = signers != NULL && sk_X509_num(signers) > 0 ? sk_X509_value(signers, 0) : NULL;
    if (signer != NULL)
        X509_NAME_oneline(X509_get_subject_name(signer), v->signer, sizeof v->signer);
    bool allowed = v->allowed == NULL;
    for (int i = 0; signer != NULL && !allowed && i < sk_X509_num(v->allowed); i++)
        allowed = X509_cmp(signer, sk_X509_value(v->allowed, i)) == 0;
    sk_X509_free(signers);
    if (!allowed) {
        fail(why, whylen, "signed by %s, which is not the provider's signing certificate",
             v->signer);
        goto out;
    }
    rc = 0;
out:
    BIO_free(content);
    CMS_ContentInfo_free(cms);
    return rc;
}

static int load_seals(struct verify *v, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(v->db,
                           "SELECT day, first_seq, last_seq, count, last_hash, signed, signature"
                           " FROM seals ORDER BY day",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(v->db, err, errlen, "read seals");
    size_t cap = 0;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (v->nseals == cap) {
            cap = cap ? cap * 2 : 64;
            struct seal_row *n = realloc(v->seals, cap * sizeof *n);
            if (n == NULL)
                break;
            v->seals = n;
        }
        struct seal_row *s = &v->seals[v->nseals++];
        memset(s, 0, sizeof *s);
        str_copy(s->day, col_text(st, 0) ? col_text(st, 0) : "", sizeof s->day);
        s->first = sqlite3_column_int64(st, 1);
        s->last = sqlite3_column_int64(st, 2);
        s->count = sqlite3_column_int64(st, 3);
        s->hash_ok = sqlite3_column_bytes(st, 4) == 32;
        if (s->hash_ok)
            memcpy(s->hash, sqlite3_column_blob(st, 4), 32);
        s->signed_text = strdup(col_text(st, 5) ? col_text(st, 5) : "");
        s->siglen = (size_t)sqlite3_column_bytes(st, 6);
        s->sig = malloc(s->siglen + 1);
        if (s->sig != NULL && s->siglen > 0)
            memcpy(s->sig, sqlite3_column_blob(st, 6), s->siglen);
        if (s->signed_text == NULL || s->sig == NULL) {
            r = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(st);
    if (r != SQLITE_DONE)
        return fail(err, errlen, "evidence log: cannot read the seals");
    return 0;
}

/* Checks one seal: its text against its columns, its signature. */
static int check_seal(struct verify *v, const struct seal_row *s, char *why, size_t whylen)
{
    char text[512];
    if (!s->hash_ok || seal_text(text, sizeof text, s->day, s->count, s->first, s->last,
                                 s->hash) < 0)
        return fail(why, whylen, "malformed seal row");
    if (strcmp(text, s->signed_text) != 0)
        return fail(why, whylen, "the seal's columns differ from the text it signs");
    return check_signature(v, s, text, why, whylen);
}

static struct day_seen *day_add(struct verify *v, const char *day, long long seq)
{
    if (v->ndays == v->capdays) {
        size_t cap = v->capdays ? v->capdays * 2 : 64;
        struct day_seen *n = realloc(v->days, cap * sizeof *n);
        if (n == NULL)
            return NULL;
        v->days = n;
        v->capdays = cap;
    }
    struct day_seen *d = &v->days[v->ndays++];
    memset(d, 0, sizeof *d);
    str_copy(d->day, day, sizeof d->day);
    d->first = seq;
    return d;
}

static void describe(sqlite3_stmt *st, char *out, size_t outlen)
{
    const char *pec = col_text(st, 5), *orig = col_text(st, 6), *mid = col_text(st, 7);
    snprintf(out, outlen, "day %s, type %s%s%s%s%s%s%s", col_text(st, 1) ? col_text(st, 1) : "?",
             col_text(st, 4) ? col_text(st, 4) : "?", pec ? ", pec_id <" : "", pec ? pec : "",
             pec ? ">" : "", !pec && (orig || mid) ? ", message-id <" : "",
             !pec && (orig || mid) ? (orig ? orig : mid) : "", !pec && (orig || mid) ? ">" : "");
}

/* Walks the chain.  0 intact, -1 with the first broken record in err. */
static int verify_chain(struct verify *v, const unsigned char start_hash[32], long long start_seq,
                        const char *start_day, long long *nrecords, char *err, size_t errlen)
{
    char q[512];
    snprintf(q, sizeof q, "SELECT %s FROM events ORDER BY seq", SQL_COLUMNS);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(v->db, q, -1, &st, NULL) != SQLITE_OK)
        return sql_fail(v->db, err, errlen, "read records");
    unsigned char prev[32];
    memcpy(prev, start_hash, 32);
    long long expect = start_seq;
    char prev_day[16];
    str_copy(prev_day, start_day, sizeof prev_day);
    struct day_seen *cur = NULL;
    int r, rc = 0;
    char what[1024];
    while (rc == 0 && (r = sqlite3_step(st)) == SQLITE_ROW) {
        long long seq = sqlite3_column_int64(st, 0);
        const char *day = col_text(st, 1) ? col_text(st, 1) : "";
        describe(st, what, sizeof what);
        if (seq != expect) {
            if (expect == start_seq && start_seq > 1)
                rc = fail(err, errlen,
                          "records %lld..%lld are missing: the log continues at record %lld "
                          "(%s) but the purge anchor ends at record %lld",
                          expect, seq - 1, seq, what, expect - 1);
            else if (seq - 1 > expect)
                rc = fail(err, errlen,
                          "records %lld..%lld are missing (deleted): record %lld (%s) follows "
                          "record %lld",
                          expect, seq - 1, seq, what, expect - 1);
            else
                rc = fail(err, errlen,
                          "record %lld is missing (deleted): record %lld (%s) follows record "
                          "%lld",
                          expect, seq, what, expect - 1);
            break;
        }
        if (strcmp(day, prev_day) < 0) {
            rc = fail(err, errlen, "record %lld (%s): its day goes back before %s", seq, what,
                      prev_day);
            break;
        }
        if (sqlite3_column_bytes(st, 14) != 32 || memcmp(sqlite3_column_blob(st, 14), prev, 32)) {
            rc = fail(err, errlen,
                      "record %lld (%s): chain broken: its previous-hash is not the hash of "
                      "record %lld",
                      seq, what, seq - 1);
            break;
        }
        const char *f[NFIELDS];
        for (int i = 0; i < NFIELDS; i++)
            f[i] = col_text(st, 4 + i);
        unsigned char h[32];
        evidence_record_hash(prev, seq, day, sqlite3_column_int64(st, 2),
                             sqlite3_column_int64(st, 3), f, h);
        if (sqlite3_column_bytes(st, 15) != 32 || memcmp(sqlite3_column_blob(st, 15), h, 32)) {
            rc = fail(err, errlen,
                      "record %lld (%s) was altered: its content does not match its hash", seq,
                      what);
            break;
        }
        if (cur == NULL || strcmp(cur->day, day) != 0) {
            cur = day_add(v, day, seq);
            if (cur == NULL) {
                rc = fail(err, errlen, "out of memory");
                break;
            }
        }
        cur->last = seq;
        cur->count++;
        memcpy(cur->hash, h, 32);
        memcpy(prev, h, 32);
        str_copy(prev_day, day, sizeof prev_day);
        expect = seq + 1;
        (*nrecords)++;
    }
    if (rc == 0 && r != SQLITE_DONE)
        rc = sql_fail(v->db, err, errlen, "read records");
    sqlite3_finalize(st);
    return rc;
}

static const struct seal_row *find_seal(const struct verify *v, const char *day)
{
    for (size_t i = 0; i < v->nseals; i++)
        if (strcmp(v->seals[i].day, day) == 0)
            return &v->seals[i];
    return NULL;
}

int evidence_verify_ex(const char *path, const struct evidence_verify_opts *o, FILE *out,
                       char *err, size_t errlen)
{
    struct verify v = {.out = out};
    char why[512];
    int rc = -2;
    time_t now = o != NULL && o->now != 0 ? o->now : time(NULL);
    char today[16];
    utc_day(now, today);
    if (o != NULL && o->cert_pem_file != NULL &&
        (v.allowed = load_certs(o->cert_pem_file, err, errlen)) == NULL)
        return -2;
    v.db = open_ro(path, err, errlen);
    if (v.db == NULL)
        goto out;
    /* one read transaction: a consistent snapshot while pecd appends */
    if (exec(v.db, "BEGIN", err, errlen) != 0 || load_seals(&v, err, errlen) != 0)
        goto out;
    rc = -1;

    /* 1. seals: contiguous from record 1, each signed by the provider */
    long long next = 1;
    for (size_t i = 0; i < v.nseals; i++) {
        const struct seal_row *s = &v.seals[i];
        if (s->first != next) {
            fail(err, errlen, "day %s: its seal starts at record %lld, expected %lld (%s)",
                 s->day, s->first, next,
                 s->first > next ? "the seal of an earlier day was removed" : "overlapping seals");
            goto report;
        }
        if (s->last < s->first || s->count != s->last - s->first + 1) {
            fail(err, errlen, "day %s: malformed seal", s->day);
            goto report;
        }
        if (check_seal(&v, s, why, sizeof why) != 0) {
            fail(err, errlen, "day %s: seal invalid: %s", s->day, why);
            goto report;
        }
        next = s->last + 1;
    }

    /* 2. the start: genesis, or the anchor left by a purge (a signed day end) */
    unsigned char start[32] = {0};
    long long start_seq = 1;
    char start_day[16] = "";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(v.db, "SELECT seq, hash, day FROM anchor WHERE id = 1", -1, &st,
                           NULL) != SQLITE_OK) {
        rc = sql_fail(v.db, err, errlen, "read anchor") - 1;
        goto out;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        long long aseq = sqlite3_column_int64(st, 0);
        const char *aday = col_text(st, 2) ? col_text(st, 2) : "";
        const struct seal_row *s = find_seal(&v, aday);
        if (s == NULL || s->last != aseq || sqlite3_column_bytes(st, 1) != 32 ||
            memcmp(sqlite3_column_blob(st, 1), s->hash, 32) != 0) {
            fail(err, errlen,
                 "purge anchor (record %lld, day %s) does not match the signed seal of that day",
                 aseq, aday);
            sqlite3_finalize(st);
            goto report;
        }
        memcpy(start, s->hash, 32);
        start_seq = aseq + 1;
        str_copy(start_day, aday, sizeof start_day);
        if (o != NULL && o->keep_after > 0 && day_start(aday) + 86400 > o->keep_after) {
            fail(err, errlen,
                 "records up to day %s were purged, inside the retention period (records of "
                 "days ending after %lld must be kept)",
                 aday, (long long)o->keep_after);
            sqlite3_finalize(st);
            goto report;
        }
    }
    sqlite3_finalize(st);

    /* 3. the chain, record by record */
    long long nrecords = 0;
    if (verify_chain(&v, start, start_seq, start_day, &nrecords, err, errlen) != 0)
        goto report;

    /* 4. each day against its seal */
    size_t unsealed_days = 0;
    long long unsealed = 0;
    for (size_t i = 0; i < v.ndays; i++) {
        const struct day_seen *d = &v.days[i];
        const struct seal_row *s = find_seal(&v, d->day);
        if (s == NULL) {
            if (next > d->first) {
                fail(err, errlen, "day %s: no seal, but later records are sealed", d->day);
                goto report;
            }
            unsealed_days++;
            unsealed += d->count;
            if (strcmp(d->day, today) < 0)
                vprint(&v, "warning: day %s (%lld records) is finished but not sealed yet\n",
                       d->day, d->count);
            continue;
        }
        if (s->first != d->first || s->count != d->count || s->last != d->last) {
            fail(err, errlen,
                 "day %s: the seal covers records %lld..%lld (%lld), the log has %lld..%lld "
                 "(%lld): records %s",
                 d->day, s->first, s->last, s->count, d->first, d->last, d->count,
                 d->count < s->count ? "deleted" : "added or moved");
            goto report;
        }
        if (memcmp(s->hash, d->hash, 32) != 0) {
            fail(err, errlen,
                 "day %s: records %lld..%lld were changed after sealing (the last hash "
                 "differs from the signed one)",
                 d->day, d->first, d->last);
            goto report;
        }
    }
    /* a sealed day after the anchor with no record left: deleted whole */
    for (size_t i = 0; i < v.nseals; i++) {
        const struct seal_row *s = &v.seals[i];
        if (s->last < start_seq)
            continue;
        bool present = false;
        for (size_t j = 0; j < v.ndays && !present; j++)
            present = strcmp(v.days[j].day, s->day) == 0;
        if (!present) {
            fail(err, errlen, "day %s: sealed with %lld records (%lld..%lld), none present: "
                              "deleted",
                 s->day, s->count, s->first, s->last);
            goto report;
        }
    }
    rc = 0;
    vprint(&v, "evidence log %s: intact\n", path);
    vprint(&v, "  %lld records in %zu days", nrecords, v.ndays);
    if (start_seq > 1)
        vprint(&v, ", starting after record %lld (days up to %s purged)", start_seq - 1,
               start_day);
    vprint(&v, "\n  %zu day seals verified%s%s%s\n", v.nseals,
           v.nseals && v.signer[0] ? ", signer " : "", v.nseals ? v.signer : "",
           v.allowed ? "" : " (signer identity not checked: no certificate given)");
    if (unsealed > 0)
        vprint(&v, "  %lld records in %zu day(s) not sealed yet: protected by the hash chain "
                   "only until the next seal\n",
               unsealed, unsealed_days);
    goto out;
report:
    vprint(&v, "evidence log %s: TAMPERED\n  %s\n", path, err);
out:
    if (v.db != NULL) {
        sqlite3_exec(v.db, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(v.db);
    }
    if (rc == -2)
        vprint(&v, "evidence log: cannot verify: %s\n", err);
    for (size_t i = 0; i < v.nseals; i++) {
        free(v.seals[i].signed_text);
        free(v.seals[i].sig);
    }
    free(v.seals);
    free(v.days);
    sk_X509_pop_free(v.allowed, X509_free);
    return rc;
}

int evidence_verify(const char *path, const char *cert_pem_file, FILE *out, char *err,
                    size_t errlen)
{
    struct evidence_verify_opts o = {.cert_pem_file = cert_pem_file};
    return evidence_verify_ex(path, &o, out, err, errlen);
}

/* ---- trace ------------------------------------------------------------------------ */

static void print_event(FILE *out, sqlite3_stmt *st)
{
    time_t t = (time_t)sqlite3_column_int64(st, 3);
    struct tm tm;
    char when[64] = "?";
    if (localtime_r(&t, &tm) != NULL)
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %z", &tm);
    const char *type = col_text(st, 4), *mid = col_text(st, 7), *rcpt = col_text(st, 9);
    const char *outcome = col_text(st, 11), *qid = col_text(st, 12);
    fprintf(out, "  %s  %-26s %s", when, type ? type : "?", outcome ? outcome : "-");
    if (rcpt != NULL)
        fprintf(out, "  to %s", rcpt);
    if (mid != NULL)
        fprintf(out, "  <%s>", mid);
    if (qid != NULL)
        fprintf(out, "  queue %s", qid);
    fprintf(out, "  #%lld\n", (long long)sqlite3_column_int64(st, 0));
}

static int trace_group(sqlite3 *db, FILE *out, const char *pec_id, const char *id)
{
    char q[512];
    sqlite3_stmt *st = NULL;
    if (pec_id != NULL)
        snprintf(q, sizeof q, "SELECT %s FROM events WHERE pec_id = ?1 ORDER BY seq",
                 SQL_COLUMNS);
    else
        snprintf(q, sizeof q,
                 "SELECT %s FROM events WHERE pec_id IS NULL AND (orig_msgid = ?1 OR"
                 " message_id = ?1) ORDER BY seq",
                 SQL_COLUMNS);
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK) {
        fprintf(out, "trace: %s\n", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_text(st, 1, pec_id != NULL ? pec_id : id, -1, SQLITE_STATIC);
    int n = 0, r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (n++ == 0) {
            const char *orig = col_text(st, 6), *from = col_text(st, 8), *subj = col_text(st, 10);
            if (pec_id != NULL)
                fprintf(out, "PEC message <%s>\n", pec_id);
            else
                fprintf(out, "Events without a PEC identifier for <%s>\n", id);
            if (orig != NULL)
                fprintf(out, "  original Message-ID: <%s>\n", orig);
            if (from != NULL)
                fprintf(out, "  sender: %s\n", from);
            if (subj != NULL)
                fprintf(out, "  subject: %s\n", subj);
        }
        print_event(out, st);
    }
    sqlite3_finalize(st);
    if (n > 0)
        fputc('\n', out);
    return r == SQLITE_DONE ? n : -1;
}

int evidence_trace(const char *path, const char *id, FILE *out)
{
    char err[512];
    char key[1024];
    /* accept "<id>", "id" and surrounding blanks */
    while (*id == ' ' || *id == '\t' || *id == '<')
        id++;
    if (str_copy(key, id, sizeof key) >= sizeof key) {
        fprintf(out, "trace: identifier too long\n");
        return -1;
    }
    size_t n = strlen(key);
    while (n > 0 && (key[n - 1] == ' ' || key[n - 1] == '\t' || key[n - 1] == '>'))
        key[--n] = '\0';
    if (n == 0) {
        fprintf(out, "trace: empty identifier\n");
        return -1;
    }
    sqlite3 *db = open_ro(path, err, sizeof err);
    if (db == NULL) {
        fprintf(out, "trace: %s\n", err);
        return -1;
    }
    int rc = 1;
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    /* the transactions the id belongs to, in order of first appearance */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT pec_id, min(seq) AS first FROM events WHERE pec_id IS NOT NULL"
                           " AND (pec_id = ?1 OR orig_msgid = ?1 OR message_id = ?1)"
                           " GROUP BY pec_id ORDER BY first",
                           -1, &st, NULL) != SQLITE_OK) {
        fprintf(out, "trace: %s\n", sqlite3_errmsg(db));
        rc = -1;
        goto out;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        char *pec_id = strdup(col_text(st, 0));
        int got = pec_id ? trace_group(db, out, pec_id, key) : -1;
        free(pec_id);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got > 0)
            rc = 0;
    }
    sqlite3_finalize(st);
    if (rc >= 0) {
        int got = trace_group(db, out, NULL, key);
        if (got < 0)
            rc = -1;
        else if (got > 0)
            rc = 0;
    }
    if (rc == 1)
        fprintf(out, "no event in the evidence log for <%s>\n", key);
out:
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}
