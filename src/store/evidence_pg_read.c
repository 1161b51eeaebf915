/*
 * evidence_pg_read.c - reading the evidence log of the shared PostgreSQL
 * database (evidence.h; writing: evidence_pg.c): verification of every
 * chain and its seals, trace, search, the daily report, seals for an
 * extract, and legal holds.
 *
 * Verification, per chain, in one REPEATABLE READ snapshot while the nodes
 * append: the seals contiguous from record 1 and each signed by the
 * provider; the anchor left by retention matching the signed seal of its
 * day; the days kept under a legal hold (evidence_held), each chained from
 * the previous day's signed last hash to its own seal; then the live
 * records from the anchor, record by record (the SHA-256 step of
 * docs/evidence.md), each day against its seal.  Records are streamed
 * (single-row mode): a chain of millions needs no memory for them.
 */
#include "store/evidence_int.h"
#include "store/pg.h"
#include "lib/lib.h"

#include <glib.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COLS                                                                                 \
    "chain, seq, day::text, logged_at, event_time, type, pec_id, orig_msgid, message_id, "   \
    "sender, recipients, subject, outcome, queue_id, dedupe_key, prev_hash, hash"

/* A row of COLS as an evidence_row (pointers into r). */
static void row_of(const PGresult *r, int i, struct evidence_row *row)
{
    memset(row, 0, sizeof *row);
    row->chain = PQgetvalue(r, i, 0);
    row->seq = pg_ll(r, i, 1);
    row->day = PQgetvalue(r, i, 2);
    row->logged_at = pg_ll(r, i, 3);
    row->event_time = pg_ll(r, i, 4);
    for (int k = 0; k < NFIELDS; k++)
        row->fields[k] = pg_text(r, i, 5 + k);
    if (pg_unhex(PQgetvalue(r, i, 15), row->prev_hash, 32) == -1)
        memset(row->prev_hash, 0xff, 32);
    if (pg_unhex(PQgetvalue(r, i, 16), row->hash, 32) == -1)
        memset(row->hash, 0xff, 32);
}

static void describe(const struct evidence_row *r, char *out, size_t outlen)
{
    const char *pec = r->fields[1], *orig = r->fields[2], *mid = r->fields[3];
    snprintf(out, outlen, "chain %s, day %s, type %s%s%s%s%s%s%s", r->chain, r->day,
             r->fields[0] ? r->fields[0] : "?", pec ? ", pec_id <" : "", pec ? pec : "",
             pec ? ">" : "", !pec && (orig || mid) ? ", message-id <" : "",
             !pec && (orig || mid) ? (orig ? orig : mid) : "", !pec && (orig || mid) ? ">" : "");
}

/* Calls fn for each row of a query run in single-row mode; -1 on error. */
static int stream(PGconn *c, const char *sql, int n, const char *const *params,
                  int (*fn)(void *ctx, const PGresult *r), void *ctx, char *err, size_t errlen)
{
    if (!PQsendQueryParams(c, sql, n, NULL, params, NULL, NULL, 0) || !PQsetSingleRowMode(c)) {
        snprintf(err, errlen, "evidence log: %s", PQerrorMessage(c));
        return -1;
    }
    int rc = 0, stop = 0;
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE && rc == 0 && !stop) {
            stop = fn(ctx, r);
            if (stop < 0)
                rc = -1;
        } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && rc == 0) {
            char why[400];
            str_copy(why, PQresultErrorMessage(r), sizeof why);
            {
                char *t_ = str_trim(why);
                memmove(why, t_, strlen(t_) + 1);
            }
            snprintf(err, errlen, "evidence log: %s", why);
            rc = -2;
        }
        PQclear(r);
    }
    return rc == -2 ? -1 : rc;
}

/* ---- verification -------------------------------------------------------------------- */

struct seal {
    char day[16];
    long long first, last, count;
    unsigned char hash[32];
};

struct chain_check {
    FILE *out;
    struct stack_st_X509 *allowed;
    char signer[256];
    const char *name;
    struct seal *seals;
    size_t nseals;
    /* the walk */
    unsigned char prev[32];
    long long expect;
    char prev_day[16];
    struct {
        char day[16];
        long long first, last, count;
        unsigned char hash[32];
    } cur;
    bool have_cur;
    GPtrArray *days_seen;        /* "YYYY-MM-DD" of the live days */
    long long records;
    char *err;
    size_t errlen;
};

static const struct seal *find_seal(const struct chain_check *k, const char *day)
{
    for (size_t i = 0; i < k->nseals; i++)
        if (strcmp(k->seals[i].day, day) == 0)
            return &k->seals[i];
    return NULL;
}

/* The walk's finished day against its seal. */
static int close_day(struct chain_check *k, long long *unsealed, size_t *unsealed_days,
                     const char *today, long long sealed_through)
{
    if (!k->have_cur)
        return 0;
    k->have_cur = false;
    g_ptr_array_add(k->days_seen, g_strdup(k->cur.day));
    const struct seal *s = find_seal(k, k->cur.day);
    if (s == NULL) {
        if (sealed_through >= k->cur.first)
            return ev_fail(k->err, k->errlen, "chain %s day %s: no seal, but later records are "
                           "sealed", k->name, k->cur.day);
        (*unsealed_days)++;
        *unsealed += k->cur.count;
        if (strcmp(k->cur.day, today) < 0)
            ev_say(k->out, "warning: chain %s day %s (%lld records) is finished but not sealed "
                   "yet\n", k->name, k->cur.day, k->cur.count);
        return 0;
    }
    if (s->first != k->cur.first || s->count != k->cur.count || s->last != k->cur.last)
        return ev_fail(k->err, k->errlen,
                       "chain %s day %s: the seal covers records %lld..%lld (%lld), the log has "
                       "%lld..%lld (%lld): records %s",
                       k->name, k->cur.day, s->first, s->last, s->count, k->cur.first,
                       k->cur.last, k->cur.count,
                       k->cur.count < s->count ? "deleted" : "added or moved");
    if (memcmp(s->hash, k->cur.hash, 32) != 0)
        return ev_fail(k->err, k->errlen,
                       "chain %s day %s: records %lld..%lld were changed after sealing (the "
                       "last hash differs from the signed one)",
                       k->name, k->cur.day, k->cur.first, k->cur.last);
    return 0;
}

struct walk {
    struct chain_check *k;
    long long *unsealed;
    size_t *unsealed_days;
    const char *today;
    long long sealed_through;
    long long start_seq;
};

/* One record of the live chain (stream callback): 0 go on, -1 broken. */
static int walk_row(void *ctx, const PGresult *r)
{
    struct walk *w = ctx;
    struct chain_check *k = w->k;
    struct evidence_row row;
    row_of(r, 0, &row);
    char what[1024];
    describe(&row, what, sizeof what);
    if (row.seq != k->expect) {
        if (k->expect == w->start_seq && w->start_seq > 1)
            return ev_fail(k->err, k->errlen,
                           "chain %s: records %lld..%lld are missing: the chain continues at "
                           "record %lld (%s) but the purge anchor ends at record %lld",
                           k->name, k->expect, row.seq - 1, row.seq, what, k->expect - 1);
        return ev_fail(k->err, k->errlen,
                       "chain %s: record %lld%s is missing (deleted): record %lld (%s) follows "
                       "record %lld",
                       k->name, k->expect, row.seq - 1 > k->expect ? " and more" : "", row.seq,
                       what, k->expect - 1);
    }
    if (strcmp(row.day, k->prev_day) < 0)
        return ev_fail(k->err, k->errlen, "chain %s record %lld (%s): its day goes back before %s",
                       k->name, row.seq, what, k->prev_day);
    if (memcmp(row.prev_hash, k->prev, 32) != 0)
        return ev_fail(k->err, k->errlen,
                       "chain %s record %lld (%s): chain broken: its previous-hash is not the "
                       "hash of record %lld",
                       k->name, row.seq, what, row.seq - 1);
    unsigned char h[32];
    evidence_record_hash(k->prev, row.seq, row.day, row.logged_at, row.event_time, row.fields, h);
    if (memcmp(row.hash, h, 32) != 0)
        return ev_fail(k->err, k->errlen,
                       "chain %s record %lld (%s) was altered: its content does not match its "
                       "hash",
                       k->name, row.seq, what);
    if (!k->have_cur || strcmp(k->cur.day, row.day) != 0) {
        if (close_day(k, w->unsealed, w->unsealed_days, w->today, w->sealed_through) == -1)
            return -1;
        k->have_cur = true;
        str_copy(k->cur.day, row.day, sizeof k->cur.day);
        k->cur.first = row.seq;
        k->cur.count = 0;
    }
    k->cur.last = row.seq;
    k->cur.count++;
    memcpy(k->cur.hash, h, 32);
    memcpy(k->prev, h, 32);
    str_copy(k->prev_day, row.day, sizeof k->prev_day);
    k->expect = row.seq + 1;
    k->records++;
    return 0;
}

/* The days of a chain kept past retention under a legal hold: each one
 * whole, chained from the seal before it to its own.  The number of days;
 * -1 broken. */
static int check_held(PGconn *c, struct chain_check *k, const char *anchor_day, long long *held)
{
    const char *p[] = {k->name};
    PGresult *r = pg_query(c, k->err, k->errlen, "evidence log: held days",
                           "SELECT " COLS " FROM evidence_held WHERE chain = $1 ORDER BY seq", 1,
                           p);
    if (r == NULL)
        return -1;
    int ndays = 0, rc = 0;
    int n = PQntuples(r);
    for (int i = 0; i < n && rc == 0;) {
        struct evidence_row row;
        row_of(r, i, &row);
        char day[16];
        str_copy(day, row.day, sizeof day);
        const struct seal *s = find_seal(k, day);
        if (s == NULL) {
            rc = ev_fail(k->err, k->errlen, "chain %s: held day %s has no seal", k->name, day);
            break;
        }
        if (anchor_day[0] == '\0' || strcmp(day, anchor_day) > 0) {
            rc = ev_fail(k->err, k->errlen, "chain %s: held day %s is not a purged one (after "
                         "the anchor)", k->name, day);
            break;
        }
        /* the hash the day starts from: the seal of the day before in the chain */
        unsigned char prev[32] = {0};
        for (size_t j = 0; j < k->nseals; j++)
            if (k->seals[j].last == s->first - 1)
                memcpy(prev, k->seals[j].hash, 32);
        long long expect = s->first, count = 0;
        for (; i < n && strcmp(PQgetvalue(r, i, 2), day) == 0; i++) {
            row_of(r, i, &row);
            char what[1024];
            describe(&row, what, sizeof what);
            unsigned char h[32];
            evidence_record_hash(prev, row.seq, row.day, row.logged_at, row.event_time,
                                 row.fields, h);
            if (row.seq != expect || memcmp(row.prev_hash, prev, 32) != 0 ||
                memcmp(row.hash, h, 32) != 0) {
                rc = ev_fail(k->err, k->errlen, "chain %s held record %lld (%s): %s", k->name,
                             row.seq, what,
                             row.seq != expect ? "a record of its day is missing"
                                               : "altered or out of the chain");
                break;
            }
            memcpy(prev, h, 32);
            expect++;
            count++;
        }
        if (rc == 0 && (count != s->count || expect - 1 != s->last ||
                        memcmp(prev, s->hash, 32) != 0))
            rc = ev_fail(k->err, k->errlen, "chain %s held day %s does not match its seal "
                         "(%lld records of %lld)", k->name, day, count, s->count);
        *held += count;
        ndays++;
    }
    PQclear(r);
    return rc == 0 ? ndays : -1;
}

/* One chain.  0 intact, -1 tampered (err), -2 unreadable. */
static int verify_chain(PGconn *c, struct chain_check *k, const struct evidence_verify_opts *o,
                        const char *today, long long *total)
{
    const char *p[] = {k->name};
    PGresult *r = pg_query(c, k->err, k->errlen, "evidence log: seals",
                           "SELECT day::text, first_seq, last_seq, count, last_hash, signed, "
                           "signature FROM evidence_seals WHERE chain = $1 ORDER BY day",
                           1, p);
    if (r == NULL)
        return -2;
    k->nseals = (size_t)PQntuples(r);
    k->seals = g_new0(struct seal, k->nseals + 1);
    long long next = 1;
    int rc = 0;
    for (size_t i = 0; i < k->nseals && rc == 0; i++) {
        struct seal *s = &k->seals[i];
        int row = (int)i;
        str_copy(s->day, PQgetvalue(r, row, 0), sizeof s->day);
        s->first = pg_ll(r, row, 1);
        s->last = pg_ll(r, row, 2);
        s->count = pg_ll(r, row, 3);
        bool hash_ok = pg_unhex(PQgetvalue(r, row, 4), s->hash, 32) == 0;
        if (s->first != next) {
            rc = ev_fail(k->err, k->errlen,
                         "chain %s day %s: its seal starts at record %lld, expected %lld (%s)",
                         k->name, s->day, s->first, next,
                         s->first > next ? "the seal of an earlier day was removed"
                                         : "overlapping seals");
            break;
        }
        char text[640], why[512];
        size_t siglen = 0;
        unsigned char *sig = pg_bytea(r, row, 6, &siglen);
        if (!hash_ok || s->last < s->first || s->count != s->last - s->first + 1 ||
            ev_seal_text_chain(text, sizeof text, k->name, s->day, s->count, s->first, s->last,
                               s->hash) < 0)
            rc = ev_fail(k->err, k->errlen, "chain %s day %s: malformed seal", k->name, s->day);
        else if (strcmp(text, PQgetvalue(r, row, 5)) != 0)
            rc = ev_fail(k->err, k->errlen, "chain %s day %s: seal invalid: the seal's columns "
                         "differ from the text it signs", k->name, s->day);
        else if (sig == NULL || ev_cms_check(k->allowed, sig, siglen, text, k->signer,
                                             sizeof k->signer, why, sizeof why) != 0)
            rc = ev_fail(k->err, k->errlen, "chain %s day %s: seal invalid: %s", k->name, s->day,
                         sig == NULL ? "no signature" : why);
        g_free(sig);
        next = s->last + 1;
    }
    PQclear(r);
    if (rc != 0)
        return -1;
    /* the start: genesis, or the anchor retention left (a signed day end) */
    r = pg_query(c, k->err, k->errlen, "evidence log: anchor",
                 "SELECT anchor_seq, anchor_hash, coalesce(anchor_day::text, '') FROM "
                 "evidence_chains WHERE name = $1",
                 1, p);
    if (r == NULL)
        return -2;
    long long start_seq = 1;
    unsigned char start[32] = {0};
    char start_day[16] = "";
    if (PQntuples(r) == 1 && pg_ll(r, 0, 0) > 0) {
        long long aseq = pg_ll(r, 0, 0);
        const char *aday = PQgetvalue(r, 0, 2);
        const struct seal *s = find_seal(k, aday);
        unsigned char ah[32];
        if (s == NULL || s->last != aseq || pg_unhex(PQgetvalue(r, 0, 1), ah, 32) == -1 ||
            memcmp(ah, s->hash, 32) != 0) {
            rc = ev_fail(k->err, k->errlen, "chain %s: purge anchor (record %lld, day %s) does "
                         "not match the signed seal of that day", k->name, aseq, aday);
        } else {
            memcpy(start, s->hash, 32);
            start_seq = aseq + 1;
            str_copy(start_day, aday, sizeof start_day);
            if (o != NULL && o->keep_after > 0 && ev_day_start(aday) + 86400 > o->keep_after)
                rc = ev_fail(k->err, k->errlen,
                             "chain %s: records up to day %s were purged, inside the retention "
                             "period (records of days ending after %lld must be kept)",
                             k->name, aday, (long long)o->keep_after);
        }
    }
    PQclear(r);
    if (rc != 0)
        return -1;
    long long held = 0;
    int held_days = check_held(c, k, start_day, &held);
    if (held_days < 0)
        return -1;
    /* the live records, streamed */
    memcpy(k->prev, start, 32);
    k->expect = start_seq;
    str_copy(k->prev_day, start_day, sizeof k->prev_day);
    k->days_seen = g_ptr_array_new_with_free_func(g_free);
    long long unsealed = 0;
    size_t unsealed_days = 0;
    struct walk w = {k, &unsealed, &unsealed_days, today, next - 1, start_seq};
    int s = stream(c, "SELECT " COLS " FROM evidence_events WHERE chain = $1 ORDER BY day, seq",
                   1, p, walk_row, &w, k->err, k->errlen);
    if (s == 0)
        s = close_day(k, &unsealed, &unsealed_days, today, next - 1);
    if (s == 0) {
        /* a sealed day after the anchor with no record left: deleted whole */
        for (size_t i = 0; i < k->nseals && s == 0; i++) {
            if (k->seals[i].last < start_seq)
                continue;
            bool present = false;
            for (guint j = 0; j < k->days_seen->len && !present; j++)
                present = strcmp(g_ptr_array_index(k->days_seen, j), k->seals[i].day) == 0;
            if (!present)
                s = ev_fail(k->err, k->errlen,
                            "chain %s day %s: sealed with %lld records (%lld..%lld), none "
                            "present: deleted",
                            k->name, k->seals[i].day, k->seals[i].count, k->seals[i].first,
                            k->seals[i].last);
        }
    }
    if (s == 0) {
        ev_say(k->out, "  chain %s: %lld records in %u days", k->name, k->records,
               k->days_seen->len);
        if (start_seq > 1)
            ev_say(k->out, ", starting after record %lld (days up to %s purged)", start_seq - 1,
                   start_day);
        ev_say(k->out, "; %zu day seals verified", k->nseals);
        if (held_days > 0)
            ev_say(k->out, "; %d purged day(s) kept under legal hold (%lld records) verified",
                   held_days, held);
        ev_say(k->out, "\n");
        if (unsealed > 0)
            ev_say(k->out, "    %lld records in %zu day(s) not sealed yet: protected by the "
                   "hash chain only until the next seal\n", unsealed, unsealed_days);
        *total += k->records;
    }
    g_ptr_array_free(k->days_seen, TRUE);
    k->days_seen = NULL;
    return s == 0 ? 0 : -1;
}

int evpg_verify(const struct evidence_verify_opts *o, FILE *out, char *err, size_t errlen)
{
    time_t now = o != NULL && o->now != 0 ? o->now : time(NULL);
    char today[16];
    ev_utc_day(now, today);
    struct stack_st_X509 *allowed = NULL;
    if (o != NULL && o->cert_pem_file != NULL &&
        (allowed = ev_load_certs(o->cert_pem_file, err, errlen)) == NULL)
        return -2;
    PGconn *c = pg_get(err, errlen);
    if (c == NULL) {
        sk_X509_pop_free(allowed, X509_free);
        ev_say(out, "evidence log: cannot verify: %s\n", err);
        return -2;
    }
    int rc = -2;
    PGresult *r = NULL;
    /* one snapshot: the nodes append meanwhile */
    if (pg_exec(c, err, errlen, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") == -1)
        goto out;
    r = pg_query(c, err, errlen, "evidence log",
                 "SELECT (SELECT value FROM evidence_meta WHERE key = 'format'), name FROM "
                 "(SELECT name FROM evidence_chains UNION SELECT DISTINCT chain FROM "
                 "evidence_seals) n ORDER BY name",
                 0, NULL);
    if (r == NULL)
        goto out;
    if (PQntuples(r) > 0 && strcmp(PQgetvalue(r, 0, 0), EVIDENCE_FORMAT) != 0) {
        ev_fail(err, errlen, "not an evidence log of format %s", EVIDENCE_FORMAT);
        goto out;
    }
    ev_say(out, "evidence log %s (shared, %d chain%s):\n", pg_uri_shown(), PQntuples(r),
           PQntuples(r) == 1 ? "" : "s");
    long long total = 0;
    char signer[256] = "";
    rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        struct chain_check k = {.out = out, .allowed = allowed, .name = PQgetvalue(r, i, 1),
                                .err = err, .errlen = errlen};
        rc = verify_chain(c, &k, o, today, &total);
        if (k.signer[0])
            str_copy(signer, k.signer, sizeof signer);
        g_free(k.seals);
    }
    if (rc == 0) {
        /* records of a chain no chain row or seal names */
        PGresult *t = pg_query(c, err, errlen, "evidence log",
                               "SELECT count(*) FROM evidence_events", 0, NULL);
        if (t == NULL)
            rc = -2;
        else if (pg_ll(t, 0, 0) != total)
            rc = ev_fail(err, errlen, "%lld records belong to no known chain",
                         pg_ll(t, 0, 0) - total);
        PQclear(t);
    }
    if (rc == 0) {
        ev_say(out, "evidence log %s: intact\n  %lld records%s%s%s\n", pg_uri_shown(), total,
               signer[0] ? ", seals signed by " : "", signer,
               allowed ? "" : " (signer identity not checked: no certificate given)");
    } else if (rc == -1) {
        ev_say(out, "evidence log %s: TAMPERED\n  %s\n", pg_uri_shown(), err);
    }
out:
    PQclear(r);
    PQclear(PQexec(c, "COMMIT"));
    pg_put(c);
    if (rc == -2)
        ev_say(out, "evidence log: cannot verify: %s\n", err);
    sk_X509_pop_free(allowed, X509_free);
    return rc;
}

/* ---- trace ------------------------------------------------------------------------------ */

/* id without <>, blanks; -1 when empty or too long. */
static int clean_id(const char *id, char *key, size_t keylen)
{
    while (*id == ' ' || *id == '\t' || *id == '<')
        id++;
    if (str_copy(key, id, keylen) >= keylen)
        return -1;
    size_t n = strlen(key);
    while (n > 0 && (key[n - 1] == ' ' || key[n - 1] == '\t' || key[n - 1] == '>'))
        key[--n] = '\0';
    return n == 0 ? -1 : 0;
}

/* Every event of the transactions id names, and those that name it without
 * one, in log order (logging time, then chain and seq). */
static PGresult *trace_rows(PGconn *c, const char *key, char *err, size_t errlen)
{
    const char *p[] = {key};
    return pg_query(c, err, errlen, "trace",
                    "SELECT " COLS " FROM evidence_events WHERE pec_id IN (SELECT pec_id FROM "
                    "evidence_events WHERE pec_id = $1 OR orig_msgid = $1 OR message_id = $1) "
                    "OR (pec_id IS NULL AND (orig_msgid = $1 OR message_id = $1)) "
                    "ORDER BY logged_at, chain, seq",
                    1, p);
}

int evpg_trace(const char *id, FILE *out)
{
    char key[1024], err[512];
    if (clean_id(id, key, sizeof key) == -1) {
        fprintf(out, "trace: empty or too long identifier\n");
        return -1;
    }
    PGconn *c = pg_get(err, sizeof err);
    PGresult *r = c ? trace_rows(c, key, err, sizeof err) : NULL;
    pg_put(c);
    if (r == NULL) {
        fprintf(out, "trace: %s\n", err);
        return -1;
    }
    int n = PQntuples(r);
    /* grouped per transaction, in order of first appearance */
    GPtrArray *groups = g_ptr_array_new();
    for (int i = 0; i < n; i++) {
        const char *pid = pg_text(r, i, 6);
        bool seen = false;
        for (guint g = 0; g < groups->len && !seen; g++)
            seen = g_strcmp0(g_ptr_array_index(groups, g), pid) == 0;
        if (!seen)
            g_ptr_array_add(groups, (gpointer)pid);
    }
    for (guint g = 0; g < groups->len; g++) {
        const char *pid = g_ptr_array_index(groups, g);
        int shown = 0;
        for (int i = 0; i < n; i++) {
            if (g_strcmp0(pg_text(r, i, 6), pid) != 0)
                continue;
            struct evidence_row row;
            row_of(r, i, &row);
            if (shown++ == 0) {
                if (pid != NULL)
                    fprintf(out, "PEC message <%s>\n", pid);
                else
                    fprintf(out, "Events without a PEC identifier for <%s>\n", key);
                if (row.fields[2])
                    fprintf(out, "  original Message-ID: <%s>\n", row.fields[2]);
                if (row.fields[4])
                    fprintf(out, "  sender: %s\n", row.fields[4]);
                if (row.fields[6])
                    fprintf(out, "  subject: %s\n", row.fields[6]);
            }
            time_t t = (time_t)row.event_time;
            struct tm tm;
            char when[64] = "?";
            if (localtime_r(&t, &tm) != NULL)
                strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %z", &tm);
            fprintf(out, "  %s  %-26s %s", when, row.fields[0] ? row.fields[0] : "?",
                    row.fields[7] ? row.fields[7] : "-");
            if (row.fields[5])
                fprintf(out, "  to %s", row.fields[5]);
            if (row.fields[3])
                fprintf(out, "  <%s>", row.fields[3]);
            if (row.fields[8])
                fprintf(out, "  queue %s", row.fields[8]);
            fprintf(out, "  #%s:%lld\n", row.chain, row.seq);
        }
        fputc('\n', out);
    }
    g_ptr_array_free(groups, TRUE);
    PQclear(r);
    if (n == 0)
        fprintf(out, "no event in the evidence log for <%s>\n", key);
    return n > 0 ? 0 : 1;
}

int evpg_trace_json(const char *id, FILE *out, char *err, size_t errlen)
{
    char key[1024];
    if (clean_id(id, key, sizeof key) == -1)
        return ev_fail(err, errlen, "empty or too long identifier");
    PGconn *c = pg_get(err, errlen);
    PGresult *r = c ? trace_rows(c, key, err, errlen) : NULL;
    pg_put(c);
    if (r == NULL)
        return -1;
    static const char *const names[] = {"type", "pec_id", "orig_msgid", "message_id", "sender",
                                        "recipients", "subject", "outcome", "queue_id"};
    fputs("{\"id\":", out);
    json_fput(out, key);
    fputs(",\"events\":[", out);
    int n = PQntuples(r);
    for (int i = 0; i < n; i++) {
        struct evidence_row row;
        row_of(r, i, &row);
        fprintf(out, "%s{\"chain\":", i ? "," : "");
        json_fput(out, row.chain);
        fprintf(out, ",\"seq\":%lld,\"time\":%lld,\"day\":", row.seq, row.event_time);
        json_fput(out, row.day);
        for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
            fprintf(out, ",\"%s\":", names[f]);
            json_fput(out, row.fields[f]);
        }
        fputc('}', out);
    }
    fputs("]}\n", out);
    PQclear(r);
    return n;
}

/* ---- search, report, seals ------------------------------------------------------------- */

struct search_ctx {
    int (*fn)(void *ctx, const struct evidence_row *r);
    void *ctx;
    int n;
};

static int search_row(void *ctx, const PGresult *r)
{
    struct search_ctx *s = ctx;
    struct evidence_row row;
    row_of(r, 0, &row);
    s->n++;
    return s->fn(s->ctx, &row) != 0 ? 1 : 0;
}

int evpg_search(const struct evidence_query *q,
                int (*fn)(void *ctx, const struct evidence_row *r), void *ctx, char *err,
                size_t errlen)
{
    /* the live log and the days kept under a legal hold */
    static const char cond[] =
        " WHERE ($1::date IS NULL OR day >= $1::date) AND ($2::date IS NULL OR day <= $2::date)"
        " AND ($3::text IS NULL OR lower(sender) = lower($3) OR strpos(',' || replace(lower("
        "coalesce(recipients, '')), ' ', '') || ',', ',' || lower($3) || ',') > 0)"
        " AND ($4::text IS NULL OR strpos(lower(coalesce(subject, '')), lower($4)) > 0)";
    char sql[1536];
    snprintf(sql, sizeof sql,
             "SELECT " COLS " FROM (SELECT " COLS ", logged_at AS o FROM evidence_events%s "
             "UNION ALL SELECT " COLS ", logged_at FROM evidence_held%s) x ORDER BY o, chain, "
             "seq",
             cond, cond);
    /* (the inner COLS cast day to text: compare the column, not the text) */
    char *fixed = g_strdup(sql);
    PGconn *c = pg_get(err, errlen);
    if (c == NULL) {
        g_free(fixed);
        return -1;
    }
    const char *p[] = {q->from, q->to, q->address, q->subject};
    struct search_ctx s = {fn, ctx, 0};
    int rc = stream(c, fixed, 4, p, search_row, &s, err, errlen);
    g_free(fixed);
    pg_put(c);
    return rc < 0 ? -1 : s.n;
}

int evpg_report(const char *from, const char *to,
                int (*fn)(void *ctx, const char *day, const char *type, long long n), void *ctx,
                char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    const char *p[] = {from ? from : "0001-01-01", to ? to : "9999-12-31"};
    PGresult *r = pg_query(c, err, errlen, "report",
                           "SELECT day::text, type, count(*) FROM evidence_events WHERE day >= "
                           "$1::date AND day <= $2::date GROUP BY day, type ORDER BY day, type",
                           2, p);
    pg_put(c);
    if (r == NULL)
        return -1;
    for (int i = 0; i < PQntuples(r); i++)
        if (fn(ctx, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), pg_ll(r, i, 2)) != 0)
            break;
    PQclear(r);
    return 0;
}

int evpg_seal_of(const char *chain, const char *day, char **signed_text, unsigned char **sig,
                 size_t *siglen, char *err, size_t errlen)
{
    *signed_text = NULL;
    *sig = NULL;
    *siglen = 0;
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    const char *p[] = {chain ? chain : "", day};
    PGresult *r = pg_query(c, err, errlen, "seal",
                           "SELECT signed, signature FROM evidence_seals WHERE chain = $1 AND "
                           "day = $2::date",
                           2, p);
    pg_put(c);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (PQntuples(r) == 1) {
        *signed_text = g_strdup(PQgetvalue(r, 0, 0));
        *sig = pg_bytea(r, 0, 1, siglen);
        rc = 1;
    }
    PQclear(r);
    return rc;
}

/* ---- legal holds ------------------------------------------------------------------------- */

long long evpg_hold_add(const char *kind, const char *value, const char *reason, char *err,
                        size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    const char *p[] = {kind, value, reason, now};
    PGresult *r = pg_query(c, err, errlen, "hold",
                           "INSERT INTO evidence_holds (kind, value, reason, created) VALUES "
                           "($1, $2, $3, $4::bigint) RETURNING id",
                           4, p);
    pg_put(c);
    long long id = r != NULL && PQntuples(r) == 1 ? pg_ll(r, 0, 0) : -1;
    PQclear(r);
    return id;
}

int evpg_hold_del(long long id, char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    char s[32];
    snprintf(s, sizeof s, "%lld", id);
    const char *p[] = {s};
    long n = pg_command(c, err, errlen, "hold", "DELETE FROM evidence_holds WHERE id = $1::bigint",
                        1, p);
    pg_put(c);
    if (n == 0)
        return ev_fail(err, errlen, "no hold %lld", id);
    return n < 0 ? -1 : 0;
}

int evpg_hold_list(int (*fn)(void *ctx, long long id, const char *kind, const char *value,
                             const char *reason, long long created),
                   void *ctx, char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    PGresult *r = pg_query(c, err, errlen, "holds",
                           "SELECT id, kind, value, reason, created FROM evidence_holds "
                           "ORDER BY id",
                           0, NULL);
    pg_put(c);
    if (r == NULL)
        return -1;
    int n = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        n++;
        if (fn(ctx, pg_ll(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), pg_text(r, i, 3),
               pg_ll(r, i, 4)) != 0)
            break;
    }
    PQclear(r);
    return n;
}
