/*
 * evidence_export.c - a sealed day of the evidence log as a file of its own,
 * for write-once storage (issue 23): `pecctl log export --day D`.
 *
 * The file is an evidence log itself (the same schema, SQLite in rollback
 * journal mode, so that it opens read-only anywhere) holding the day's
 * records, the day's seal, and - when the day does not start the log - the
 * previous day's seal and an anchor at its last record.  The meta row
 * "export" names the day.  evidence_verify_ex() checks it on its own: the
 * chain from the anchor, the day's records against its signed seal, and the
 * anchor against the previous day's signed seal (continuity with the log).
 *
 * The shared log of several nodes ([state] database, PostgreSQL) is
 * exported by evidence_export_chains.c into a file of the same kind with a
 * chain per node; the creation and the closing of the file are shared
 * (ev_export_create, ev_export_finish).
 *
 * Interface: evidence.h (evidence_export_day); evidence_int.h.
 */
#include "store/evidence_int.h"
#include "lib/lib.h"
#include "lib/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static bool valid_day(const char *d)
{
    unsigned y, m, dd;
    char tail;
    return strlen(d) == 10 && sscanf(d, "%4u-%2u-%2u%c", &y, &m, &dd, &tail) == 3 && m >= 1 &&
           m <= 12 && dd >= 1 && dd <= 31 && ev_day_start(d) != (time_t)-1;
}

/* first and last records of day's seal in src; 1 sealed, 0 not, -1 error */
static int day_seal(sqlite3 *db, const char *day, long long *first, long long *last,
                    char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT first_seq, last_seq FROM src.seals WHERE day = ?1", -1,
                           &st, NULL) != SQLITE_OK)
        return ev_sql_fail(db, err, errlen, "read seals");
    sqlite3_bind_text(st, 1, day, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *first = sqlite3_column_int64(st, 0);
        *last = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    if (r == SQLITE_ROW)
        return 1;
    return r == SQLITE_DONE ? 0 : ev_sql_fail(db, err, errlen, "read seals");
}

static int exec_bound(sqlite3 *db, const char *sql, const char *day, long long a, long long b,
                      char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return ev_sql_fail(db, err, errlen, "export");
    int i = sqlite3_bind_parameter_index(st, ":day");
    if (i > 0)
        sqlite3_bind_text(st, i, day, -1, SQLITE_STATIC);
    if ((i = sqlite3_bind_parameter_index(st, ":a")) > 0)
        sqlite3_bind_int64(st, i, a);
    if ((i = sqlite3_bind_parameter_index(st, ":b")) > 0)
        sqlite3_bind_int64(st, i, b);
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : ev_sql_fail(db, err, errlen, "export");
}

sqlite3 *ev_export_create(const char *out_path, char *err, size_t errlen)
{
    /* a new file, never an existing one: write-once storage is fed copies */
    int fd = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1) {
        ev_fail(err, errlen, "%s: %s", out_path, strerror(errno));
        return NULL;
    }
    close(fd);
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI;
    if (sqlite3_open_v2(out_path, &db, flags, NULL) != SQLITE_OK) {
        ev_fail(err, errlen, "%s: %s", out_path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        unlink(out_path);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    /* rollback journal (main only: the log stays in WAL): the file opens
     * read-only on any host, with no -wal or -shm beside it */
    if (ev_exec(db, "PRAGMA main.journal_mode=DELETE", err, errlen) != 0) {
        sqlite3_close(db);
        unlink(out_path);
        return NULL;
    }
    return db;
}

long long ev_export_finish(sqlite3 *db, const char *out_path, long long n, char *err,
                           size_t errlen)
{
    if (db != NULL) {
        if (n < 0)
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_exec(db, "DETACH DATABASE src", NULL, NULL, NULL);
        if (sqlite3_close(db) != SQLITE_OK && n >= 0) {
            ev_fail(err, errlen, "%s: cannot close", out_path);
            n = -1;
        }
    }
    if (n >= 0) {
        /* durable before the caller copies it away */
        int f = open(out_path, O_RDONLY | O_CLOEXEC);
        if (f == -1 || fsync(f) != 0) {
            ev_fail(err, errlen, "%s: %s", out_path, strerror(errno));
            n = -1;
        }
        if (f != -1)
            close(f);
    }
    if (n < 0)
        unlink(out_path);
    return n;
}

long long evidence_export_day(const char *path, const char *day, const char *out_path,
                              char *err, size_t errlen)
{
    if (!valid_day(day)) {
        ev_fail(err, errlen, "'%s' is not a day (YYYY-MM-DD)", day);
        return -1;
    }
    if (config_is_postgresql(path))
        return evpg_export_day(day, out_path, err, errlen);   /* every node's chain */
    sqlite3 *probe = ev_open_ro(path, err, errlen);   /* checks the format */
    if (probe == NULL)
        return -1;
    sqlite3_close(probe);
    long long n = -1, first = 0, last = 0;
    sqlite3 *db = ev_export_create(out_path, err, errlen);
    if (db == NULL)
        return -1;
    char *uri = sqlite3_mprintf("file:%s?mode=ro", path);
    char *attach = sqlite3_mprintf("ATTACH DATABASE %Q AS src", uri);
    int arc = uri && attach ? ev_exec(db, attach, err, errlen) : ev_fail(err, errlen, "no memory");
    sqlite3_free(attach);
    sqlite3_free(uri);
    /* one transaction: the source is read in one snapshot beside a running pecd */
    if (arc != 0 || ev_exec(db, "BEGIN", err, errlen) != 0 ||
        ev_exec(db, ev_schema_sql(), err, errlen) != 0)
        goto out;
    int s = day_seal(db, day, &first, &last, err, errlen);
    if (s == 0) {
        sqlite3_stmt *st = NULL;
        long long k = 0;
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM src.events WHERE day = ?1", -1, &st,
                               NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, day, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW)
                k = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
        ev_fail(err, errlen, k > 0 ? "day %s is not sealed yet (%lld records; pecd seals a "
                                     "finished day within 5 minutes)"
                                   : "day %s has no records in the log (%lld)",
                day, k);
        goto out;
    }
    if (s == -1)
        goto out;
    /* the day's records must all be there (a purged day cannot be exported) */
    if (exec_bound(db,
                   "INSERT INTO events SELECT * FROM src.events WHERE seq BETWEEN :a AND :b",
                   day, first, last, err, errlen) != 0 ||
        exec_bound(db,
                   "INSERT INTO seals SELECT * FROM src.seals WHERE day = :day OR "
                   "last_seq = :a - 1",
                   day, first, last, err, errlen) != 0 ||
        exec_bound(db, "INSERT INTO meta VALUES('export', :day)", day, 0, 0, err, errlen) != 0)
        goto out;
    if (first > 1 &&
        exec_bound(db,
                   "INSERT INTO anchor SELECT 1, s.last_seq, e.prev_hash, s.day, "
                   "CAST(strftime('%s', 'now') AS INTEGER) FROM src.seals s, src.events e "
                   "WHERE s.last_seq = :a - 1 AND e.seq = :a",
                   day, first, last, err, errlen) != 0)
        goto out;
    sqlite3_stmt *st = NULL;
    long long copied = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM main.events", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        copied = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (copied != last - first + 1) {
        ev_fail(err, errlen, "day %s: the log holds %lld of its %lld sealed records (purged?)",
                day, copied, last - first + 1);
        goto out;
    }
    if (ev_exec(db, "COMMIT", err, errlen) != 0)
        goto out;
    n = copied;
out:
    return ev_export_finish(db, out_path, n, err, errlen);
}
