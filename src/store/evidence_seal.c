/*
 * evidence_seal.c - the evidence log's day seals and retention: the last
 * hash of every finished UTC day signed with the provider key (CMS), and
 * the purge of whole sealed days past the retention period, leaving an
 * anchor so that verification still starts from a signed point.
 *
 * Interface: evidence.h (evidence_seal, evidence_purge); ev_seal_text()
 * for evidence_verify.c (evidence_int.h).  The seal text: docs/evidence.md.
 */
#include "store/evidence_int.h"
#include "lib/lib.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The text a day seal signs (docs/evidence.md). */
int ev_seal_text(char *out, size_t outlen, const char *day, long long count, long long first,
                 long long last, const unsigned char hash[32])
{
    char h[65];
    hex(hash, 32, h);
    return str_fmt(out, outlen,
                   "pecmail evidence seal 1\nday: %s\nrecords: %lld\nfirst: %lld\nlast: %lld\n"
                   "last-hash: %s\n",
                   day, count, first, last, h);
}

int ev_seal_text_chain(char *out, size_t outlen, const char *chain, const char *day,
                       long long count, long long first, long long last,
                       const unsigned char hash[32])
{
    char h[65];
    hex(hash, 32, h);
    return str_fmt(out, outlen,
                   "pecmail evidence seal 2\nchain: %s\nday: %s\nrecords: %lld\nfirst: %lld\n"
                   "last: %lld\nlast-hash: %s\n",
                   chain, day, count, first, last, h);
}

/* ---- seals ------------------------------------------------------------------------ */

int evidence_seal(struct evidence *ev, time_t now, char *err, size_t errlen)
{
    if (ev->pg != NULL)
        return evpg_seal(ev, now, err, errlen);
    char today[16];
    ev_utc_day(now, today);
    pthread_mutex_lock(&ev->db_lock);
    int sealed = 0, rc = -1;
    sqlite3_stmt *days = NULL, *ins = NULL;
    if (ev->sign == NULL) {
        ev_fail(err, errlen, "evidence log: no signer to seal with");
        goto out;
    }
    if (ev_sync_mode(ev, true, err, errlen) != 0 ||
        ev_exec(ev->db, "BEGIN IMMEDIATE", err, errlen) != 0)
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
        ev_sql_fail(ev->db, err, errlen, "seal");
        goto rollback;
    }
    sqlite3_bind_text(days, 1, today, -1, SQLITE_STATIC);
    int r;
    while ((r = sqlite3_step(days)) == SQLITE_ROW) {
        const char *day = col_text(days, 0);
        long long first = sqlite3_column_int64(days, 1), last = sqlite3_column_int64(days, 2);
        long long count = sqlite3_column_int64(days, 3);
        if (day == NULL || sqlite3_column_bytes(days, 4) != 32) {
            ev_fail(err, errlen, "evidence log: day %s: bad head record", day ? day : "?");
            goto rollback;
        }
        unsigned char hash[32];
        memcpy(hash, sqlite3_column_blob(days, 4), 32);
        char text[512];
        if (ev_seal_text(text, sizeof text, day, count, first, last, hash) < 0) {
            ev_fail(err, errlen, "evidence log: seal text too long");
            goto rollback;
        }
        unsigned char *der = NULL;
        size_t derlen = 0;
        char serr[256] = "";
        if (ev->sign(ev->sign_ctx, text, strlen(text), &der, &derlen, serr, sizeof serr) != 0 ||
            der == NULL) {
            free(der);
            ev_fail(err, errlen, "evidence log: signing the seal of %s failed: %s", day, serr);
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
            ev_sql_fail(ev->db, err, errlen, "insert seal");
            goto rollback;
        }
        sealed++;
    }
    if (r != SQLITE_DONE) {
        ev_sql_fail(ev->db, err, errlen, "seal: list days");
        goto rollback;
    }
    sqlite3_finalize(days);
    sqlite3_finalize(ins);
    days = ins = NULL;
    if (ev_exec(ev->db, "COMMIT", err, errlen) != 0)
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
    if (ev->pg != NULL)
        return evpg_purge(ev, older_than, err, errlen);
    /* day D ends at D+1 00:00 UTC; it may go when that is <= older_than */
    char limit[16];
    ev_utc_day(older_than, limit);
    int removed = 0;
    pthread_mutex_lock(&ev->db_lock);
    time_t now = ev_clock_now(ev);
    /* One transaction per day: each commit leaves a verifiable log. */
    for (;;) {
        if (ev_sync_mode(ev, true, err, errlen) != 0 ||
            ev_exec(ev->db, "BEGIN IMMEDIATE", err, errlen) != 0) {
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
            ev_exec(ev->db, "COMMIT", err, errlen);
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
        /* a legal hold keeps the day, and the days after it (the log is
         * purged from its start only, so that the rest stays a chain) */
        long long hold = 0;
        int held = ok ? ev_day_held(ev->db, 1, last, &hold) : 0;
        if (held != 0) {
            sqlite3_exec(ev->db, "ROLLBACK", NULL, NULL, NULL);
            if (held == 1)
                log_warn("evidence log: retention stops at %s: it holds records under legal "
                         "hold %lld (pecctl log hold list); that day and the later ones are "
                         "kept", day, hold);
            else
                removed = -1;
            break;
        }
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
            ev_sql_fail(ev->db, err, errlen, "purge");
            sqlite3_exec(ev->db, "ROLLBACK", NULL, NULL, NULL);
            removed = -1;
            break;
        }
        if (ev_exec(ev->db, "COMMIT", err, errlen) != 0) {
            sqlite3_exec(ev->db, "ROLLBACK", NULL, NULL, NULL);
            removed = -1;
            break;
        }
        removed++;
    }
    pthread_mutex_unlock(&ev->db_lock);
    return removed;
}
