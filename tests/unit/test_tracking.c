/*
 * test_tracking.c - the incoming point's record of messages taken in
 * (duplicate suppression: keyed by signer, Message-ID, certification data and
 * recipient) and its window: tracking_seen, tracking_purge_seen; the pass
 * transaction of the delivery threads; the sending side's record of the
 * receipts it waits for (what the timeout notices need) and the migration of
 * a database made by an older pecd.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/lib.h"
#include "store/tracking.h"

#include <sqlite3.h>

static struct tracking *open_path(const char *name, bool fresh)
{
    char path[512], err[256];
    assert_int_equal(fs_mkdirs(TEST_TMPDIR, 0700), 0);
    snprintf(path, sizeof path, "%s/%s", TEST_TMPDIR, name);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    if (fresh) {
        unlink(path);
        unlink(wal);
    }
    struct tracking *t = tracking_open(path, err, sizeof err);
    if (t == NULL)
        fail_msg("tracking_open: %s", err);
    return t;
}

static struct tracking *open_fresh(const char *name)
{
    return open_path(name, true);
}

/* tracking_expect with the arguments in their order of old */
static int expect(struct tracking *t, const char *pec_id, const char *orig, const char *sender,
                  const char *subject, const char *recipients, const char *const *rcpts,
                  size_t n, time_t sent)
{
    struct tracking_expect_args a = {.pec_id = pec_id, .orig_msgid = orig, .sender = sender,
                                     .subject = subject, .recipients = recipients,
                                     .rcpts = rcpts, .n = n, .sent = sent};
    return tracking_expect(t, &a);
}

/* tracking_seen with one provider's signer and certification data */
static int seen(struct tracking *t, const char *msgid, const char *rcpt, const char *qid)
{
    struct tracking_seen_key k = {.signer = "5a1f", .msgid = msgid, .content = "c0", .rcpt = rcpt};
    return tracking_seen(t, &k, qid);
}

/* NORMAL by default (the queue's syncfs makes the commits durable); FULL when
 * pecd asks for it (another file system, or [queue] sync = fsync), and the
 * writes still work. */
static void test_sync_each(void **state)
{
    (void)state;
    struct tracking *t = open_fresh("sync.db");
    assert_int_equal(tracking_synchronous(t), 1);
    /* a notice's mark is synced on its own and leaves the setting as it was */
    const char *rcpts[] = {"anna@pec.b.example"};
    assert_int_equal(expect(t, "<e1@pec.a.example>", NULL, "mario@pec.a.example", "s",
                                     "r", rcpts, 1, 1700000000),
                     0);
    assert_int_equal(tracking_mark(t, "<e1@pec.a.example>", "anna@pec.b.example", 1), 0);
    assert_int_equal(tracking_synchronous(t), 1);
    assert_int_equal(tracking_sync_each(t, true), 0);
    assert_int_equal(tracking_synchronous(t), 2);
    assert_int_equal(seen(t, "<s@pec.b.example>", "anna@pec.a.example", "Q1"), 0);
    assert_int_equal(seen(t, "<s@pec.b.example>", "anna@pec.a.example", "Q2"), 1);
    assert_int_equal(tracking_mark(t, "<e1@pec.a.example>", "anna@pec.b.example", 2), 0);
    assert_int_equal(tracking_synchronous(t), 2);
    assert_int_equal(tracking_sync_each(t, false), 0);
    assert_int_equal(tracking_synchronous(t), 1);
    tracking_close(t);
}

struct outside {
    struct tracking *t;
    int rc;
};

/* A write from a thread that is not in a pass (the event loop's). */
static void *outside_main(void *arg)
{
    struct outside *o = arg;
    o->rc = seen(o->t, "<outside@pec.b.example>", "anna@pec.a.example", "QE");
    return NULL;
}

/* Inside a pass the writes share one transaction: they are seen by the
 * pass's own reads, a nested transaction (tracking_expect) works, a write
 * from outside a pass goes through at once, and after the pass everything
 * is stored (the file opened again has it). */
static void test_pass_transaction(void **state)
{
    (void)state;
    struct tracking *t = open_fresh("pass.db");
    assert_int_equal(tracking_pass_end(t), 0);   /* not in a pass: nothing to do */
    tracking_pass_begin(t);
    assert_int_equal(seen(t, "<p1@pec.b.example>", "anna@pec.a.example", "Q1"), 0);
    assert_int_equal(seen(t, "<p1@pec.b.example>", "anna@pec.a.example", "Q2"), 1);
    const char *rcpts[] = {"luca@pec.b.example", "anna@pec.b.example"};
    assert_int_equal(expect(t, "opec1@pec.a.example", "<c1@client.example>",
                                     "mario@pec.a.example", "s", "luca, anna", rcpts, 2,
                                     time(NULL)),
                     0);
    assert_int_equal(tracking_receipt(t, "opec1@pec.a.example", "luca@pec.b.example", 'C'), 0);
    pthread_t th;
    struct outside o = {.t = t, .rc = -9};
    assert_int_equal(pthread_create(&th, NULL, outside_main, &o), 0);
    pthread_join(th, NULL);
    assert_int_equal(o.rc, 0);
    /* the pass goes on after the outside write */
    assert_int_equal(seen(t, "<p2@pec.b.example>", "anna@pec.a.example", "Q1"), 0);
    assert_int_equal(tracking_pass_end(t), 0);
    tracking_close(t);

    t = open_path("pass.db", false);
    assert_int_equal(seen(t, "<p1@pec.b.example>", "anna@pec.a.example", "Q9"), 1);
    assert_int_equal(seen(t, "<p2@pec.b.example>", "anna@pec.a.example", "Q9"), 1);
    assert_int_equal(seen(t, "<outside@pec.b.example>", "anna@pec.a.example", "Q9"), 1);
    /* luca's delivery receipt ended his tracking, anna is still expected */
    assert_int_equal(tracking_receipt(t, "opec1@pec.a.example", "luca@pec.b.example", 'C'), 1);
    assert_int_equal(tracking_receipt(t, "opec1@pec.a.example", "anna@pec.b.example", 'P'), 0);
    tracking_close(t);
}

/* A crash (the process ends without closing) keeps what a finished pass
 * wrote and loses what an open pass wrote: its stages were not committed
 * either, and run again. */
static void test_pass_crash(void **state)
{
    (void)state;
    struct tracking *t = open_fresh("crash.db");
    tracking_close(t);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        t = open_path("crash.db", false);
        tracking_pass_begin(t);
        int a = seen(t, "<c1@pec.b.example>", "anna@pec.a.example", "Q1");
        int b = tracking_pass_end(t);
        tracking_pass_begin(t);
        int c = seen(t, "<c2@pec.b.example>", "anna@pec.a.example", "Q1");
        _exit(a == 0 && b == 0 && c == 0 ? 0 : 1);   /* no pass end, no close */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    t = open_path("crash.db", false);
    assert_int_equal(seen(t, "<c1@pec.b.example>", "anna@pec.a.example", "Q9"), 1);
    assert_int_equal(seen(t, "<c2@pec.b.example>", "anna@pec.a.example", "Q9"), 0);
    tracking_close(t);
}

static void test_seen_and_window(void **state)
{
    (void)state;
    struct tracking *t = open_fresh("seen.db");
    char mid[64];
    for (int i = 0; i < 50; i++) {
        snprintf(mid, sizeof mid, "<m%d@pec.b.example>", i);
        assert_int_equal(seen(t, mid, "Anna@pec.a.example", "Q1"), 0);
    }
    /* a copy from another queue file is a duplicate; the same file again
     * (a stage replayed after a crash) is not; the recipient is compared
     * without case */
    assert_int_equal(seen(t, "<m0@pec.b.example>", "anna@pec.a.example", "Q2"), 1);
    assert_int_equal(seen(t, "<m0@pec.b.example>", "anna@pec.a.example", "Q1"), 0);
    /* nothing older than an hour: nothing forgotten */
    assert_int_equal(tracking_purge_seen(t, time(NULL) - 3600, 100), 0);
    assert_int_equal(seen(t, "<m1@pec.b.example>", "anna@pec.a.example", "Q2"), 1);
    /* all of them before the cut: forgotten oldest first, max per call */
    time_t cut = time(NULL) + 10;
    assert_int_equal(tracking_purge_seen(t, cut, 20), 20);
    assert_int_equal(seen(t, "<m0@pec.b.example>", "anna@pec.a.example", "Q3"), 0);
    assert_int_equal(seen(t, "<m25@pec.b.example>", "anna@pec.a.example", "Q3"), 1);
    /* 30 left before the cut plus the one just added */
    assert_int_equal(tracking_purge_seen(t, cut, 20), 20);
    assert_int_equal(tracking_purge_seen(t, cut, 20), 11);
    assert_int_equal(tracking_purge_seen(t, cut, 20), 0);
    assert_int_equal(seen(t, "<m49@pec.b.example>", "anna@pec.a.example", "Q3"), 0);
    tracking_close(t);
}

/* Issue 16 item 2: the record is keyed by who signed the message and what
 * it certifies, not by a Message-ID anyone can write: a message of another
 * signer, or of the same signer for other certification data, with the same
 * Message-ID is not a duplicate; without a signer nothing is recorded. */
static void test_seen_key(void **state)
{
    (void)state;
    struct tracking *t = open_fresh("key.db");
    struct tracking_seen_key k = {.signer = "aa", .msgid = "<x@pec.b.example>", .content = "c1",
                                  .rcpt = "anna@pec.a.example"};
    assert_int_equal(tracking_seen(t, &k, "Q1"), 0);
    assert_int_equal(tracking_seen(t, &k, "Q2"), 1);
    struct tracking_seen_key other = k;
    other.signer = "bb";
    assert_int_equal(tracking_seen(t, &other, "Q2"), 0);
    other = k;
    other.content = "c2";
    assert_int_equal(tracking_seen(t, &other, "Q2"), 0);
    other = k;
    other.rcpt = "ANNA@pec.a.example";
    assert_int_equal(tracking_seen(t, &other, "Q3"), 1);
    other = k;
    other.signer = "";
    assert_int_equal(tracking_seen(t, &other, "Q4"), -1);
    other.signer = NULL;
    assert_int_equal(tracking_seen(t, &other, "Q4"), -1);
    tracking_close(t);
}

/* A database of an earlier version: its table 'seen' (Message-ID only,
 * written before verification) is dropped at open. */
static void test_seen_old_table_dropped(void **state)
{
    (void)state;
    char path[512];
    assert_int_equal(fs_mkdirs(TEST_TMPDIR, 0700), 0);
    snprintf(path, sizeof path, "%s/oldseen.db", TEST_TMPDIR);
    unlink(path);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE seen (msgid TEXT NOT NULL, rcpt TEXT NOT NULL,"
                                      " qid TEXT NOT NULL, at INTEGER NOT NULL,"
                                      " PRIMARY KEY (msgid, rcpt));"
                                      "INSERT INTO seen VALUES ('<p@x>', 'anna@x', 'Q1', 1);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    struct tracking *t = open_path("oldseen.db", false);
    tracking_close(t);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE name = 'seen'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* The due notices carry what the notice needs (RFC 6109 §3.1.6): the
 * original's Message-ID and the recipient's slot. */
static void test_due_carries_the_original_msgid(void **state)
{
    (void)state;
    struct tracking *t = open_fresh("due.db");
    const char *rcpts[] = {"anna@pec.b.example", "luca@pec.c.example"};
    time_t sent = time(NULL) - 100;
    assert_int_equal(expect(t, "opec1.20250101120000.AB@pec.a.example",
                                     "<x1@client.example>", "mario@pec.a.example", "s",
                                     "anna, luca", rcpts, 2, sent),
                     0);
    struct tracking_due *d;
    size_t n = tracking_due(t, time(NULL), 50, 24 * 50, &d);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(d[i].orig_msgid, "<x1@client.example>");
        assert_int_equal(d[i].which, 1);
        assert_int_equal(d[i].slot, strcmp(d[i].rcpt, rcpts[0]) == 0 ? 0 : 1);
    }
    tracking_due_free(d, n);
    tracking_close(t);
}

/* A tracking.db of schema 0 (no orig_msgid, no slot, user_version 0), as
 * pecd wrote it before: opened, it is migrated with every row kept; the
 * rows of one message get distinct slots, new rows keep the Message-ID, and
 * opening it again changes nothing. */
static void test_migrates_schema_0(void **state)
{
    (void)state;
    char path[512], wal[600];
    assert_int_equal(fs_mkdirs(TEST_TMPDIR, 0700), 0);
    snprintf(path, sizeof path, "%s/old.db", TEST_TMPDIR);
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(path);
    unlink(wal);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "CREATE TABLE expect (pec_id TEXT NOT NULL, rcpt TEXT NOT NULL,"
                     " sender TEXT NOT NULL, subject TEXT, recipients TEXT,"
                     " sent INTEGER NOT NULL, presa INTEGER NOT NULL DEFAULT 0,"
                     " notice INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (pec_id, rcpt));"
                     "CREATE INDEX expect_sent ON expect (sent);"
                     "CREATE TABLE seen (msgid TEXT NOT NULL, rcpt TEXT NOT NULL,"
                     " qid TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (msgid, rcpt));"
                     "INSERT INTO expect (pec_id, rcpt, sender, subject, recipients, sent)"
                     " VALUES ('opec1.old@pec.a.example', 'zeno@pec.b.example',"
                     " 'mario@pec.a.example', 'vecchio', 'zeno, anna', 1000),"
                     " ('opec1.old@pec.a.example', 'anna@pec.b.example',"
                     " 'mario@pec.a.example', 'vecchio', 'zeno, anna', 1000);"
                     "INSERT INTO expect (pec_id, rcpt, sender, sent, notice)"
                     " VALUES ('opec1.old2@pec.a.example', 'anna@pec.b.example',"
                     " 'mario@pec.a.example', 1000, 1);"
                     "INSERT INTO seen VALUES ('<s@pec.b.example>', 'anna@pec.a.example', 'Q1',"
                     " strftime('%s','now'));",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    struct tracking *t = open_path("old.db", false);
    struct tracking_due *d;
    size_t n = tracking_due(t, 100000, 3600, 24 * 3600, &d);
    assert_int_equal(n, 3);   /* every row kept */
    unsigned slots[2] = {9, 9};
    for (size_t i = 0; i < n; i++) {
        assert_null(d[i].orig_msgid);
        assert_int_equal(d[i].which, 2);
        if (strcmp(d[i].pec_id, "opec1.old@pec.a.example") == 0)
            slots[strcmp(d[i].rcpt, "anna@pec.b.example") == 0 ? 0 : 1] = d[i].slot;
        else
            assert_int_equal(d[i].slot, 0);
    }
    assert_int_equal(slots[0], 0);   /* numbered by recipient within the message */
    assert_int_equal(slots[1], 1);
    tracking_due_free(d, n);
    /* the duplicate window of that version (Message-ID only, written before
     * verification) is dropped: a copy of that message is taken in again */
    assert_int_equal(seen(t, "<s@pec.b.example>", "anna@pec.a.example", "Q2"), 0);
    const char *rc[] = {"anna@pec.b.example"};
    assert_int_equal(expect(t, "opec1.new@pec.a.example", "<n@client.example>",
                                     "mario@pec.a.example", "nuovo", "anna", rc, 1, 1000),
                     0);
    tracking_close(t);

    t = open_path("old.db", false);   /* again: nothing to migrate, nothing lost */
    n = tracking_due(t, 100000, 3600, 24 * 3600, &d);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        if (strcmp(d[i].pec_id, "opec1.new@pec.a.example") == 0)
            assert_string_equal(d[i].orig_msgid, "<n@client.example>");
    tracking_due_free(d, n);
    tracking_close(t);

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 3);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Each notice is claimed by the batch (queue id) that carries it: a batch
 * made again after a crash finds the notice claimed by another and does not
 * send it; after the second notice the row stays (not due any more) until
 * the duplicate window ends. */
static void test_notice_claims(void **state)
{
    (void)state;
    struct tracking *t = open_fresh("claims.db");
    const char *rcpts[] = {"anna@pec.b.example"};
    time_t sent = time(NULL) - 100;
    assert_int_equal(expect(t, "opec1.c@pec.a.example", NULL, "mario@pec.a.example", "s", "anna",
                            rcpts, 1, sent),
                     0);
    char q[64] = "x";
    assert_int_equal(tracking_notice_claim(t, "opec1.c@pec.a.example", rcpts[0], 1, q, sizeof q),
                     0);
    struct tracking_due *d;
    size_t n = tracking_due(t, time(NULL), 50, 24 * 50, &d);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].which, 1);
    assert_int_equal(tracking_claim(t, d, n, "BATCH1"), 0);
    tracking_due_free(d, n);
    assert_int_equal(tracking_notice_claim(t, "opec1.c@pec.a.example", rcpts[0], 1, q, sizeof q),
                     1);
    assert_string_equal(q, "BATCH1");
    assert_int_equal(tracking_notice_claim(t, "opec1.c@pec.a.example", rcpts[0], 2, q, sizeof q),
                     0);
    /* the second notice (t24 = 60 s: due 55 s after sending) */
    n = tracking_due(t, time(NULL), 50, 60, &d);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].which, 2);
    assert_int_equal(tracking_claim(t, d, n, "BATCH2"), 0);
    tracking_due_free(d, n);
    assert_int_equal(tracking_notice_claim(t, "opec1.c@pec.a.example", rcpts[0], 2, q, sizeof q),
                     1);
    assert_string_equal(q, "BATCH2");
    assert_int_equal(tracking_notice_claim(t, "opec1.c@pec.a.example", rcpts[0], 1, q, sizeof q),
                     1);
    assert_string_equal(q, "BATCH1");
    n = tracking_due(t, time(NULL) + 86400, 50, 60, &d);   /* ended: never due again */
    assert_int_equal(n, 0);
    tracking_due_free(d, n);
    assert_true(tracking_purge_seen(t, sent - 1, 100) >= 0);   /* not old enough */
    assert_int_equal(tracking_notice_claim(t, "opec1.c@pec.a.example", rcpts[0], 2, q, sizeof q),
                     1);
    assert_true(tracking_purge_seen(t, sent + 1, 100) >= 0);
    assert_int_equal(tracking_notice_claim(t, "opec1.c@pec.a.example", rcpts[0], 2, q, sizeof q),
                     0);
    tracking_close(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sync_each),
                                       cmocka_unit_test(test_due_carries_the_original_msgid),
                                       cmocka_unit_test(test_migrates_schema_0),
                                       cmocka_unit_test(test_seen_and_window),
                                       cmocka_unit_test(test_pass_transaction),
                                       cmocka_unit_test(test_pass_crash),
                                       cmocka_unit_test(test_seen_key),
                                       cmocka_unit_test(test_seen_old_table_dropped),
                                       cmocka_unit_test(test_notice_claims)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
