/*
 * tracking_pg.c - the PostgreSQL backend of tracking.h: the tables expect
 * and taken_in of the database the provider's nodes share (schema: state.c).
 *
 * Passes: a delivery thread's pass of stages writes through one connection
 * of its own, in one transaction (begun at its first write), committed at
 * tracking_pass_end() - after the fencing check of the spool the pass
 * worked on (state_fence_check: the node still holds its lease), so a node
 * that lost its spool to another cannot commit the stages' records.
 * Outside a pass (the timers' thread, the purge) every call takes a pooled
 * connection and commits at once.
 *
 * Across nodes: taken_in's primary key makes a copy retried to another node
 * a duplicate (the second insert waits for the first's transaction, then
 * finds its row); tracking_due() locks the due rows FOR UPDATE SKIP LOCKED
 * until tracking_claim() commits them with the batch's queue id, so every
 * notice is claimed by one node's batch, whichever node accepted the
 * message (and whether or not it is still alive).
 */
#include "tracking_int.h"
#include "pg.h"
#include "state.h"
#include "lib/lib.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tpg {
    int unused;
};

/* This thread's pass: its connection and transaction. */
static __thread struct {
    bool in_pass;
    PGconn *c;
    bool txn;             /* BEGIN sent */
    bool failed;          /* a statement of the pass failed: its transaction is lost */
} tls_pass;

/* This thread's due rows, locked until claimed or let go. */
static __thread PGconn *tls_due;

static void *open_pg(char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return NULL;
    pg_put(c);
    return xcalloc(1, sizeof(struct tpg));
}

void *tracking_pg_open(char *err, size_t errlen) { return open_pg(err, errlen); }

static void o_close(void *b) { free(b); }
static int o_sync_each(void *b, bool on) { (void)b; (void)on; return 0; }
/* every commit is durable on the server (synchronous_commit) */
static int o_synchronous(void *b) { (void)b; return 2; }

/* The connection for one call: the pass's (its transaction begun), or a
 * pooled one (*own: give it back with done()). */
static PGconn *use(bool *own, char *err, size_t errlen)
{
    *own = false;
    if (tls_pass.in_pass) {
        if (tls_pass.failed) {
            snprintf(err, errlen, "an earlier statement of this pass failed");
            return NULL;
        }
        if (tls_pass.c == NULL && (tls_pass.c = pg_get(err, errlen)) == NULL) {
            tls_pass.failed = true;
            return NULL;
        }
        if (!tls_pass.txn) {
            if (pg_exec(tls_pass.c, err, errlen, "BEGIN") == -1) {
                tls_pass.failed = true;
                return NULL;
            }
            tls_pass.txn = true;
        }
        return tls_pass.c;
    }
    *own = true;
    return pg_get(err, errlen);
}

static void done(PGconn *c, bool own, bool ok)
{
    if (own)
        pg_put(c);
    else if (!ok)
        tls_pass.failed = true;
}

static void o_pass_begin(void *b)
{
    (void)b;
    tls_pass.in_pass = true;
    tls_pass.txn = false;
    tls_pass.failed = false;
}

static int o_pass_end(void *b)
{
    (void)b;
    if (!tls_pass.in_pass)
        return 0;
    char err[512] = "";
    int rc = tls_pass.failed ? -1 : 0;
    if (rc == 0 && state_fence_active()) {
        /* the commit point of the pass's records: only while the spool is ours */
        if (tls_pass.c == NULL && (tls_pass.c = pg_get(err, sizeof err)) == NULL)
            rc = -1;
        else if (state_fence_check(tls_pass.c, err, sizeof err) == -1)
            rc = -1;
    }
    if (tls_pass.txn) {
        if (rc == 0 && pg_exec(tls_pass.c, err, sizeof err, "COMMIT") == -1)
            rc = -1;
        if (rc == -1)
            PQclear(PQexec(tls_pass.c, "ROLLBACK"));
    }
    if (rc == -1)
        log_err("tracking: the records of a pass were not stored: %s",
                err[0] ? err : "an earlier statement failed");
    pg_put(tls_pass.c);
    tls_pass.c = NULL;
    tls_pass.txn = false;
    tls_pass.failed = false;
    tls_pass.in_pass = false;
    return rc;
}

static int o_expect(void *b, const struct tracking_expect_args *x)
{
    (void)b;
    char err[512];
    bool own;
    PGconn *c = use(&own, err, sizeof err);
    if (c == NULL) {
        log_err("tracking: cannot record %s: %s", x->pec_id, err);
        return -1;
    }
    int rc = own ? pg_exec(c, err, sizeof err, "BEGIN") : 0;
    char sent[32], slot[16];
    snprintf(sent, sizeof sent, "%lld", (long long)x->sent);
    for (size_t i = 0; i < x->n && rc == 0; i++) {
        snprintf(slot, sizeof slot, "%zu", i);
        const char *p[] = {x->pec_id, x->rcpts[i], x->sender, x->subject, x->recipients, sent,
                           x->orig_msgid, slot, x->reply_to, pg_node()};
        rc = pg_command(c, err, sizeof err, "expect",
                        "INSERT INTO expect (pec_id, rcpt, sender, subject, recipients, sent, "
                        "orig_msgid, slot, reply_to, node) VALUES ($1, $2, $3, $4, $5, $6, $7, "
                        "$8, $9, $10) ON CONFLICT DO NOTHING",
                        10, p) < 0 ? -1 : 0;
    }
    if (own)
        rc = rc == 0 ? pg_exec(c, err, sizeof err, "COMMIT")
                     : (PQclear(PQexec(c, "ROLLBACK")), -1);
    if (rc == -1)
        log_err("tracking: cannot record %s: %s", x->pec_id, err);
    done(c, own, rc == 0);
    return rc;
}

static int o_receipt(void *b, const char *pec_id, const char *rcpt, char kind)
{
    (void)b;
    char err[512];
    bool own;
    PGconn *c = use(&own, err, sizeof err);
    if (c == NULL) {
        log_err("tracking: %s", err);
        return -1;
    }
    const char *p[] = {pec_id, rcpt};
    /* a delivery receipt (or non-delivery) ends the tracking of the
     * recipient; a presa in carico only marks it */
    long n = pg_command(c, err, sizeof err, "receipt",
                        kind == 'P' ? "UPDATE expect SET presa = 1 WHERE pec_id = $1 AND "
                                      "lower(rcpt) = lower($2) AND presa = 0"
                                    : "DELETE FROM expect WHERE pec_id = $1 AND "
                                      "lower(rcpt) = lower($2)",
                        2, p);
    if (n < 0)
        log_err("tracking: %s", err);
    done(c, own, n >= 0);
    return n < 0 ? -1 : n > 0 ? 0 : 1;
}

static char *dup_col(const PGresult *r, int row, int col)
{
    const char *t = pg_text(r, row, col);
    return t ? g_strdup(t) : NULL;
}

static size_t o_due(void *b, time_t now, uint64_t t12, uint64_t t24, struct tracking_due **out)
{
    (void)b;
    GArray *a = g_array_new(FALSE, TRUE, sizeof(struct tracking_due));
    *out = NULL;
    char err[512];
    if (tls_due != NULL) {   /* an earlier batch neither claimed nor let go */
        PQclear(PQexec(tls_due, "ROLLBACK"));
        pg_put(tls_due);
        tls_due = NULL;
    }
    /* §3.1.6: first notice after t12 with neither presa nor delivery; the
     * second in the last part of t24 (not before 22/24 of it) without delivery */
    time_t first = now - (time_t)t12;
    time_t second = now - (time_t)(t24 - t24 / 24);
    char f[32], s[32];
    snprintf(f, sizeof f, "%lld", (long long)first);
    snprintf(s, sizeof s, "%lld", (long long)second);
    PGconn *c = pg_get(err, sizeof err);
    PGresult *r = NULL;
    if (c != NULL && pg_exec(c, err, sizeof err, "BEGIN") == 0) {
        const char *p[] = {f, s};
        r = pg_query(c, err, sizeof err, "due notices",
                     "SELECT pec_id, rcpt, sender, subject, recipients, sent, presa, notice, "
                     "orig_msgid, slot, reply_to FROM expect WHERE notice < 2 AND "
                     "((notice = 0 AND presa = 0 AND sent <= $1) OR sent <= $2) "
                     "ORDER BY sent LIMIT 1000 FOR UPDATE SKIP LOCKED",
                     2, p);
    }
    if (r == NULL) {
        if (c != NULL)
            log_err("tracking: %s", err);
        else
            log_warn("tracking: %s", err);
        pg_put(c);   /* closed: inside a transaction or broken */
        *out = (struct tracking_due *)(void *)g_array_free(a, FALSE);
        return 0;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        struct tracking_due d = {0};
        d.pec_id = dup_col(r, i, 0);
        d.rcpt = dup_col(r, i, 1);
        d.sender = dup_col(r, i, 2);
        d.subject = dup_col(r, i, 3);
        d.recipients = dup_col(r, i, 4);
        d.sent = (time_t)pg_ll(r, i, 5);
        d.orig_msgid = dup_col(r, i, 8);
        long long slot = pg_ll(r, i, 9);
        d.slot = slot > 0 && slot < 1000000 ? (unsigned)slot : 0;
        d.reply_to = dup_col(r, i, 10);
        d.which = d.sent <= second ? 2 : 1;
        g_array_append_val(a, d);
    }
    PQclear(r);
    size_t n = a->len;
    if (n == 0) {
        PQclear(PQexec(c, "ROLLBACK"));
        pg_put(c);
    } else {
        tls_due = c;   /* the rows stay locked for tracking_claim */
    }
    *out = (struct tracking_due *)(void *)g_array_free(a, FALSE);
    return n;
}

static void o_due_abort(void *b)
{
    (void)b;
    if (tls_due == NULL)
        return;
    PQclear(PQexec(tls_due, "ROLLBACK"));
    pg_put(tls_due);
    tls_due = NULL;
}

/* A PostgreSQL array literal of the strings v[0..n) (text[]). */
static void array_of(GString *s, const char *const *v, size_t n)
{
    g_string_append_c(s, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            g_string_append_c(s, ',');
        g_string_append_c(s, '"');
        for (const char *p = v[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                g_string_append_c(s, '\\');
            g_string_append_c(s, *p);
        }
        g_string_append_c(s, '"');
    }
    g_string_append_c(s, '}');
}

static int o_claim(void *b, const struct tracking_due *d, size_t n, const char *qid)
{
    (void)b;
    char err[512] = "";
    PGconn *c = tls_due;
    tls_due = NULL;
    bool begun = c != NULL;
    if (c == NULL && (c = pg_get(err, sizeof err)) == NULL) {
        log_err("tracking: cannot mark %zu notices: %s", n, err);
        return -1;
    }
    int rc = begun ? 0 : pg_exec(c, err, sizeof err, "BEGIN");
    for (int which = 1; which <= 2 && rc == 0; which++) {
        const char **ids = xcalloc(n + 1, sizeof *ids), **rcpts = xcalloc(n + 1, sizeof *rcpts);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if ((d[i].which >= 2 ? 2 : 1) == which) {
                ids[k] = d[i].pec_id;
                rcpts[k++] = d[i].rcpt;
            }
        if (k > 0) {
            GString *a1 = g_string_new(NULL), *a2 = g_string_new(NULL);
            array_of(a1, ids, k);
            array_of(a2, rcpts, k);
            const char *p[] = {a1->str, a2->str, qid};
            rc = pg_command(c, err, sizeof err, "mark notices",
                            which == 1
                                ? "UPDATE expect e SET notice = 1, notice1_qid = $3 FROM "
                                  "unnest($1::text[], $2::text[]) AS v(pec_id, rcpt) WHERE "
                                  "e.pec_id = v.pec_id AND e.rcpt = v.rcpt AND e.notice < 1"
                                : "UPDATE expect e SET notice = 2, notice2_qid = $3 FROM "
                                  "unnest($1::text[], $2::text[]) AS v(pec_id, rcpt) WHERE "
                                  "e.pec_id = v.pec_id AND e.rcpt = v.rcpt AND e.notice < 2",
                            3, p) < 0 ? -1 : 0;
            g_string_free(a1, TRUE);
            g_string_free(a2, TRUE);
        }
        free(ids);
        free(rcpts);
    }
    if (rc == 0)
        rc = pg_exec(c, err, sizeof err, "COMMIT");
    if (rc == -1) {
        PQclear(PQexec(c, "ROLLBACK"));
        log_err("tracking: cannot mark %zu notices: %s", n, err);
    }
    pg_put(c);
    return rc;
}

static int o_notice_claim(void *b, const char *pec_id, const char *rcpt, int which, char *qid,
                          size_t qidlen)
{
    (void)b;
    char err[512];
    bool own;
    PGconn *c = use(&own, err, sizeof err);
    if (c == NULL) {
        log_err("tracking: %s", err);
        return -1;
    }
    const char *p[] = {pec_id, rcpt};
    PGresult *r = pg_query(c, err, sizeof err, "notice claim",
                           "SELECT notice, notice1_qid, notice2_qid FROM expect "
                           "WHERE pec_id = $1 AND rcpt = $2",
                           2, p);
    int rc = -1;
    if (r != NULL) {
        rc = 0;
        if (PQntuples(r) == 1 && pg_ll(r, 0, 0) >= which) {
            const char *q = pg_text(r, 0, which >= 2 ? 2 : 1);
            str_copy(qid, q ? q : "", qidlen);
            rc = 1;
        }
        PQclear(r);
    } else {
        log_err("tracking: %s", err);
    }
    done(c, own, rc >= 0);
    return rc;
}

static long o_purge_seen(void *b, time_t before, size_t max)
{
    (void)b;
    char err[512], t[32], m[32];
    snprintf(t, sizeof t, "%lld", (long long)before);
    snprintf(m, sizeof m, "%zu", max);
    PGconn *c = pg_get(err, sizeof err);
    if (c == NULL)
        return -1;   /* the database is away: said by whoever needs it */
    const char *p[] = {t, m};
    long n = pg_command(c, err, sizeof err, "forget old messages",
                        "DELETE FROM taken_in WHERE ctid = ANY(ARRAY(SELECT ctid FROM taken_in "
                        "WHERE at < $1 LIMIT $2))",
                        2, p);
    if (n >= 0 &&
        pg_command(c, err, sizeof err, "forget ended notices",
                   "DELETE FROM expect WHERE ctid = ANY(ARRAY(SELECT ctid FROM expect WHERE "
                   "notice = 2 AND sent < $1 LIMIT $2))",
                   2, p) < 0)
        n = -1;
    if (n < 0)
        log_err("tracking: %s", err);
    pg_put(c);
    return n;
}

static int o_seen(void *b, const struct tracking_seen_key *k, const char *qid)
{
    (void)b;
    char err[512];
    bool own;
    PGconn *c = use(&own, err, sizeof err);
    if (c == NULL) {
        log_err("tracking: %s", err);
        return -1;
    }
    const char *p[] = {k->signer, k->msgid, k->content ? k->content : "", k->rcpt, qid};
    long n = pg_command(c, err, sizeof err, "taken in",
                        "INSERT INTO taken_in (signer, msgid, content, rcpt, qid, at) VALUES "
                        "($1, $2, $3, lower($4), $5, extract(epoch FROM now())::bigint) "
                        "ON CONFLICT DO NOTHING",
                        5, p);
    int rc = -1;
    if (n == 1) {
        rc = 0;
    } else if (n == 0) {
        /* there before: the same queue file again (a stage replayed after a
         * crash, here or by the node that took the spool over) is not a
         * duplicate */
        PGresult *r = pg_query(c, err, sizeof err, "taken in",
                               "SELECT qid FROM taken_in WHERE signer = $1 AND msgid = $2 AND "
                               "content = $3 AND rcpt = lower($4)",
                               4, p);
        if (r != NULL && PQntuples(r) == 1)
            rc = strcmp(PQgetvalue(r, 0, 0), qid) == 0 ? 0 : 1;
        PQclear(r);
    }
    if (rc == -1)
        log_err("tracking: %s", err);
    done(c, own, rc >= 0);
    return rc;
}

const struct tracking_ops tracking_pg_ops = {
    .close = o_close, .sync_each = o_sync_each, .synchronous = o_synchronous,
    .expect = o_expect, .receipt = o_receipt, .due = o_due, .due_abort = o_due_abort,
    .claim = o_claim, .notice_claim = o_notice_claim, .purge_seen = o_purge_seen,
    .seen = o_seen, .pass_begin = o_pass_begin, .pass_end = o_pass_end,
};
