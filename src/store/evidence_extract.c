/*
 * evidence_extract.c - what a provider's staff ask of the evidence log
 * (issue 23): the statistics AgID asks for, a user's transactions found by
 * address, date and subject, an extract of them with their chain data and
 * seals (signed by pecctl), and legal holds that retention must respect.
 *
 * All reads open the log read-only (beside a running pecd); holds are
 * written through a connection of their own.  Days are the log's: UTC days
 * (docs/evidence.md).  An address matches an event when it is the event's
 * sender or one of its recipients, compared whole and without case.
 *
 * Interface: evidence.h (evidence_report, evidence_search, evidence_extract,
 * evidence_hold_*) and ev_day_held (evidence_int.h, for the purge).
 */
#include "store/evidence_int.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COLS                                                                               \
    "seq, day, logged_at, event_time, type, pec_id, orig_msgid, message_id, sender, "     \
    "recipients, subject, outcome, queue_id, dedupe_key, prev_hash, hash"

/* The condition "this event concerns :a" (sender or a recipient, whole
 * address, without case): recipients are written "a, b". */
#define ADDR_MATCH                                                                         \
    "(lower(sender) = lower(:a) OR (',' || replace(lower(coalesce(recipients, '')), ' ', '') " \
    "|| ',') LIKE ('%,' || lower(:l) || ',%') ESCAPE '\\')"

int ev_day_held(sqlite3 *db, long long first, long long last, long long *hold_id)
{
    static const char sql[] =
        "SELECT h.id FROM holds h WHERE EXISTS (SELECT 1 FROM events e WHERE e.seq BETWEEN ?1 "
        "AND ?2 AND ((h.kind = 'pec_id' AND e.pec_id = h.value) OR (h.kind = 'address' AND "
        "(lower(e.sender) = lower(h.value) OR (',' || replace(lower(coalesce(e.recipients, "
        "'')), ' ', '') || ',') LIKE ('%,' || lower(h.value) || ',%'))))) LIMIT 1";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        /* a log without the holds table (an older file opened read-only) */
        return strstr(sqlite3_errmsg(db), "no such table") != NULL ? 0 : -1;
    }
    sqlite3_bind_int64(st, 1, first);
    sqlite3_bind_int64(st, 2, last);
    int r = sqlite3_step(st);
    int rc = r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : -1;
    if (rc == 1)
        *hold_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc;
}

/* An address is a plain mailbox: no LIKE wildcard or separator inside. */
static bool plain_address(const char *a)
{
    return a != NULL && *a && strchr(a, '@') != NULL && strpbrk(a, "%,\\ \t\r\n") == NULL &&
           strlen(a) <= 254;
}

bool ev_valid_day(const char *d)
{
    if (d == NULL)
        return true;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(d, "%Y-%m-%d", &tm);
    return end != NULL && *end == '\0' && strlen(d) == 10;
}

int ev_check_query(const struct evidence_query *q, char *err, size_t errlen)
{
    if (q->address != NULL && !plain_address(q->address))
        return ev_fail(err, errlen, "'%s' is not a mailbox address", q->address);
    if (!ev_valid_day(q->from) || !ev_valid_day(q->to))
        return ev_fail(err, errlen, "a date is YYYY-MM-DD");
    if (q->subject != NULL && strlen(q->subject) > 500)
        return ev_fail(err, errlen, "the subject to look for is too long");
    return 0;
}

/* text for LIKE with %, _ and \ escaped, between pre and post. */
static char *like_escaped(const char *pre, const char *text, const char *post)
{
    GString *s = g_string_new(pre);
    for (const char *p = text; *p; p++) {
        if (*p == '%' || *p == '_' || *p == '\\')
            g_string_append_c(s, '\\');
        g_string_append_c(s, *p);
    }
    g_string_append(s, post);
    return g_string_free(s, FALSE);
}

static sqlite3_stmt *query(sqlite3 *db, const struct evidence_query *q, char *err, size_t errlen)
{
    GString *sql = g_string_new("SELECT " COLS " FROM events WHERE 1");
    if (q->from)
        g_string_append(sql, " AND day >= :f");
    if (q->to)
        g_string_append(sql, " AND day <= :t");
    if (q->address)
        g_string_append(sql, " AND " ADDR_MATCH);
    if (q->subject)
        g_string_append(sql, " AND subject LIKE :s ESCAPE '\\'");
    g_string_append(sql, " ORDER BY seq");
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql->str, -1, &st, NULL) != SQLITE_OK) {
        ev_sql_fail(db, err, errlen, "search");
        sqlite3_finalize(st);
        st = NULL;
    }
    g_string_free(sql, TRUE);
    if (st == NULL)
        return NULL;
    if (q->from)
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":f"), q->from, -1,
                          SQLITE_TRANSIENT);
    if (q->to)
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":t"), q->to, -1,
                          SQLITE_TRANSIENT);
    if (q->address) {
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":a"), q->address, -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":l"),
                          like_escaped("", q->address, ""), -1, g_free);
    }
    if (q->subject) {
        char *pat = like_escaped("%", q->subject, "%");
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":s"), pat, -1, g_free);
    }
    return st;
}

static void row_event(sqlite3_stmt *st, struct evidence_row *r)
{
    memset(r, 0, sizeof *r);
    r->seq = sqlite3_column_int64(st, 0);
    r->day = col_text(st, 1);
    r->logged_at = sqlite3_column_int64(st, 2);
    r->event_time = sqlite3_column_int64(st, 3);
    for (int i = 0; i < 10; i++)
        r->fields[i] = col_text(st, 4 + i);
    if (sqlite3_column_bytes(st, 14) == 32)
        memcpy(r->prev_hash, sqlite3_column_blob(st, 14), 32);
    if (sqlite3_column_bytes(st, 15) == 32)
        memcpy(r->hash, sqlite3_column_blob(st, 15), 32);
}

int evidence_search(const char *path, const struct evidence_query *q,
                    int (*fn)(void *ctx, const struct evidence_row *r), void *ctx, char *err,
                    size_t errlen)
{
    if (ev_check_query(q, err, errlen) == -1)
        return -1;
    if (config_is_postgresql(path))
        return evpg_search(q, fn, ctx, err, errlen);
    sqlite3 *db = ev_open_ro(path, err, errlen);
    if (db == NULL)
        return -1;
    sqlite3_stmt *st = query(db, q, err, errlen);
    int n = 0, r = SQLITE_DONE;
    while (st != NULL && (r = sqlite3_step(st)) == SQLITE_ROW) {
        struct evidence_row row;
        row_event(st, &row);
        n++;
        if (fn(ctx, &row) != 0)
            break;
    }
    if (st != NULL && r != SQLITE_ROW && r != SQLITE_DONE) {
        ev_sql_fail(db, err, errlen, "search");
        n = -1;
    }
    if (st == NULL)
        n = -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

int evidence_report(const char *path, const char *from, const char *to,
                    int (*fn)(void *ctx, const char *day, const char *type, long long n),
                    void *ctx, char *err, size_t errlen)
{
    if (!ev_valid_day(from) || !ev_valid_day(to))
        return ev_fail(err, errlen, "a date is YYYY-MM-DD");
    if (config_is_postgresql(path))
        return evpg_report(from, to, fn, ctx, err, errlen);
    sqlite3 *db = ev_open_ro(path, err, errlen);
    if (db == NULL)
        return -1;
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(db, "SELECT day, type, count(*) FROM events WHERE day >= ?1 AND "
                               "day <= ?2 GROUP BY day, type ORDER BY day, type",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = ev_sql_fail(db, err, errlen, "report");
    } else {
        sqlite3_bind_text(st, 1, from ? from : "0000-00-00", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, to ? to : "9999-99-99", -1, SQLITE_STATIC);
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW)
            if (fn(ctx, col_text(st, 0), col_text(st, 1), sqlite3_column_int64(st, 2)) != 0)
                break;
        if (r != SQLITE_ROW && r != SQLITE_DONE)
            rc = ev_sql_fail(db, err, errlen, "report");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

int evidence_seal_of_chain(const char *path, const char *chain, const char *day,
                           char **signed_text, unsigned char **sig, size_t *siglen, char *err,
                           size_t errlen)
{
    if (config_is_postgresql(path))
        return evpg_seal_of(chain, day, signed_text, sig, siglen, err, errlen);
    return evidence_seal_of(path, day, signed_text, sig, siglen, err, errlen);
}

int evidence_seal_of(const char *path, const char *day, char **signed_text,
                     unsigned char **sig, size_t *siglen, char *err, size_t errlen)
{
    sqlite3 *db = ev_open_ro(path, err, errlen);
    if (db == NULL)
        return -1;
    sqlite3_stmt *st = NULL;
    int rc = 0;
    *signed_text = NULL;
    *sig = NULL;
    *siglen = 0;
    if (sqlite3_prepare_v2(db, "SELECT signed, signature FROM seals WHERE day = ?1", -1, &st,
                           NULL) != SQLITE_OK) {
        rc = ev_sql_fail(db, err, errlen, "seal");
    } else {
        sqlite3_bind_text(st, 1, day, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            *signed_text = g_strdup(col_text(st, 0));
            int n = sqlite3_column_bytes(st, 1);
            *sig = g_memdup2(sqlite3_column_blob(st, 1), (gsize)n);
            *siglen = (size_t)n;
            rc = 1;
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

/* ---- legal holds ------------------------------------------------------------------------ */

static sqlite3 *open_rw(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = ev_open_ro(path, err, errlen);   /* checks the format */
    if (db == NULL)
        return NULL;
    sqlite3_close(db);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        ev_fail(err, errlen, "evidence log %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    /* an older log: the table the purge reads */
    if (ev_exec(db, "CREATE TABLE IF NOT EXISTS holds(id INTEGER PRIMARY KEY,"
                    " kind TEXT NOT NULL CHECK (kind IN ('address', 'pec_id')),"
                    " value TEXT NOT NULL, reason TEXT, created INTEGER NOT NULL)",
                err, errlen) != 0) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

int ev_check_hold(const char *kind, const char *value, char *err, size_t errlen)
{
    bool addr = strcmp(kind, "address") == 0;
    if (!addr && strcmp(kind, "pec_id") != 0)
        return ev_fail(err, errlen, "a hold is by address or by pec_id");
    if (addr ? !plain_address(value) : (value == NULL || !*value || strlen(value) > 300 ||
                                        strpbrk(value, " \t\r\n<>") != NULL))
        return ev_fail(err, errlen, "'%s' is not %s", value ? value : "",
                       addr ? "a mailbox address" : "a PEC identifier (without < >)");
    return 0;
}

long long evidence_hold_add(const char *path, const char *kind, const char *value,
                            const char *reason, char *err, size_t errlen)
{
    if (ev_check_hold(kind, value, err, errlen) == -1)
        return -1;
    bool addr = strcmp(kind, "address") == 0;
    if (config_is_postgresql(path))
        return evpg_hold_add(addr ? "address" : "pec_id", value, reason, err, errlen);
    sqlite3 *db = open_rw(path, err, errlen);
    if (db == NULL)
        return -1;
    sqlite3_stmt *st = NULL;
    long long id = -1;
    if (sqlite3_prepare_v2(db, "INSERT INTO holds(kind, value, reason, created) VALUES(?1, ?2, "
                               "?3, ?4)", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, addr ? "address" : "pec_id", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
        if (sqlite3_step(st) == SQLITE_DONE)
            id = sqlite3_last_insert_rowid(db);
    }
    if (id == -1)
        ev_sql_fail(db, err, errlen, "hold");
    sqlite3_finalize(st);
    sqlite3_close(db);
    return id;
}

int evidence_hold_del(const char *path, long long id, char *err, size_t errlen)
{
    if (config_is_postgresql(path))
        return evpg_hold_del(id, err, errlen);
    sqlite3 *db = open_rw(path, err, errlen);
    if (db == NULL)
        return -1;
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "DELETE FROM holds WHERE id = ?1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) == SQLITE_DONE)
            rc = sqlite3_changes(db) == 1 ? 0 : ev_fail(err, errlen, "no hold %lld", id);
        else
            ev_sql_fail(db, err, errlen, "hold");
    } else {
        ev_sql_fail(db, err, errlen, "hold");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

int evidence_hold_list(const char *path,
                       int (*fn)(void *ctx, long long id, const char *kind, const char *value,
                                 const char *reason, long long created),
                       void *ctx, char *err, size_t errlen)
{
    if (config_is_postgresql(path))
        return evpg_hold_list(fn, ctx, err, errlen);
    sqlite3 *db = ev_open_ro(path, err, errlen);
    if (db == NULL)
        return -1;
    sqlite3_stmt *st = NULL;
    int n = 0;
    if (sqlite3_prepare_v2(db, "SELECT id, kind, value, reason, created FROM holds ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK) {
        n = strstr(sqlite3_errmsg(db), "no such table") != NULL ? 0
                                                                 : ev_sql_fail(db, err, errlen,
                                                                               "holds");
    } else {
        while (sqlite3_step(st) == SQLITE_ROW) {
            n++;
            if (fn(ctx, sqlite3_column_int64(st, 0), col_text(st, 1), col_text(st, 2),
                   col_text(st, 3), sqlite3_column_int64(st, 4)) != 0)
                break;
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}
