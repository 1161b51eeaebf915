/*
 * evidence_json.c - `pecctl trace --json`: the events of the evidence log
 * that concern one message, as one JSON object (read-only; the text form
 * is evidence_trace() in evidence_verify.c).
 *
 *   {"id": "...", "events": [{"seq": 1, "time": 1700000000, "day": "...",
 *    "type": "accettazione", "pec_id": "...", "orig_msgid": ..., "message_id": ...,
 *    "sender": ..., "recipients": ..., "subject": ..., "outcome": ...,
 *    "queue_id": ...}, ...]}
 *
 * The events are those of every transaction (pec_id) the identifier names
 * (as pec_id, original Message-ID or a message's own Message-ID), and those
 * that name it without a transaction, in log order.
 */
#include "store/evidence.h"
#include "evidence_int.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <stdio.h>
#include <string.h>

int evidence_trace_json(const char *path, const char *id, FILE *out, char *err, size_t errlen)
{
    if (config_is_postgresql(path))
        return evpg_trace_json(id, out, err, errlen);
    char key[1024];
    while (*id == ' ' || *id == '\t' || *id == '<')
        id++;
    if (str_copy(key, id, sizeof key) >= sizeof key)
        return ev_fail(err, errlen, "identifier too long");
    size_t n = strlen(key);
    while (n > 0 && (key[n - 1] == ' ' || key[n - 1] == '\t' || key[n - 1] == '>'))
        key[--n] = '\0';
    if (n == 0)
        return ev_fail(err, errlen, "empty identifier");
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        ev_fail(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT seq, event_time, day, type, pec_id, orig_msgid, message_id,"
                           " sender, recipients, subject, outcome, queue_id FROM events"
                           " WHERE pec_id IN (SELECT pec_id FROM events WHERE pec_id = ?1"
                           " OR orig_msgid = ?1 OR message_id = ?1)"
                           " OR orig_msgid = ?1 OR message_id = ?1 ORDER BY seq",
                           -1, &st, NULL) != SQLITE_OK) {
        ev_sql_fail(db, err, errlen, "trace");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    static const char *const names[] = {"type", "pec_id", "orig_msgid", "message_id", "sender",
                                        "recipients", "subject", "outcome", "queue_id"};
    fputs("{\"id\":", out);
    json_fput(out, key);
    fputs(",\"events\":[", out);
    int r, count = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        fprintf(out, "%s{\"seq\":%lld,\"time\":%lld,\"day\":", count++ ? "," : "",
                (long long)sqlite3_column_int64(st, 0), (long long)sqlite3_column_int64(st, 1));
        json_fput(out, col_text(st, 2));
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            fprintf(out, ",\"%s\":", names[i]);
            json_fput(out, col_text(st, 3 + (int)i));
        }
        fputc('}', out);
    }
    fputs("]}\n", out);
    int rc = r == SQLITE_DONE ? count : -1;
    if (rc == -1)
        ev_sql_fail(db, err, errlen, "trace");
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}
