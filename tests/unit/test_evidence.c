/*
 * test_evidence.c - the evidence log (src/store/evidence.c): hash chain under
 * concurrent appends, day seals, tamper detection naming the record or day,
 * dedupe of replays, trace by every kind of identifier, retention purge.
 *
 * Each tamper case works on a fresh copy of one sealed three-day log and
 * edits it with the SQLite C API, as an attacker with write access would
 * (dropping the append-only triggers first).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>

#include "lib/lib.h"
#include "store/evidence.h"
#include "store/evidence_int.h"   /* the connection, to read PRAGMA synchronous */

/* 2025-03-10 09:00:00 UTC */
#define DAY0 ((time_t)1741597200)
#define DAYS(n) ((time_t)(n) * 86400)

/* ---- a test signer: self-signed EC P-256 ----------------------------------- */

struct signer {
    EVP_PKEY *key;
    X509 *cert;
};

static struct signer make_signer(const char *cn)
{
    struct signer s;
    s.key = EVP_EC_gen("P-256");
    assert_non_null(s.key);
    s.cert = X509_new();
    assert_non_null(s.cert);
    ASN1_INTEGER_set(X509_get_serialNumber(s.cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(s.cert), -86400L * 400);
    X509_gmtime_adj(X509_getm_notAfter(s.cert), 86400L * 400);
    X509_NAME *n = X509_get_subject_name(s.cert);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(s.cert, n);
    X509_set_pubkey(s.cert, s.key);
    assert_true(X509_sign(s.cert, s.key, EVP_sha256()) > 0);
    return s;
}

static void free_signer(struct signer *s)
{
    EVP_PKEY_free(s->key);
    X509_free(s->cert);
}

static void write_cert(const struct signer *s, const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    PEM_write_X509(f, s->cert);
    fclose(f);
}

static int cms_sign(void *ctx, const void *data, size_t len, unsigned char **der, size_t *derlen,
                    char *err, size_t errlen)
{
    struct signer *s = ctx;
    BIO *in = BIO_new_mem_buf(data, (int)len);
    CMS_ContentInfo *cms = CMS_sign(s->cert, s->key, NULL, in, CMS_DETACHED | CMS_BINARY);
    BIO_free(in);
    if (cms == NULL) {
        snprintf(err, errlen, "CMS_sign failed");
        return -1;
    }
    unsigned char *buf = NULL;
    int n = i2d_CMS_ContentInfo(cms, &buf);
    CMS_ContentInfo_free(cms);
    if (n <= 0)
        return -1;
    *der = malloc((size_t)n);
    memcpy(*der, buf, (size_t)n);
    *derlen = (size_t)n;
    OPENSSL_free(buf);
    return 0;
}

/* ---- helpers --------------------------------------------------------------------- */

static time_t fake_now;
static time_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", TEST_TMPDIR, name);
}

static void remove_db(const char *path)
{
    char p[600];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static struct evidence *open_fresh(const char *path)
{
    char err[512];
    fs_mkdirs(TEST_TMPDIR, 0700);
    remove_db(path);
    struct evidence *ev = evidence_open(path, err, sizeof err);
    if (ev == NULL)
        fail_msg("evidence_open: %s", err);
    return ev;
}

static void append(struct evidence *ev, const char *type, const char *pec_id, const char *orig,
                   const char *mid, const char *rcpt, const char *outcome)
{
    char err[512];
    struct evidence_event e = {.type = type,
                               .pec_id = pec_id,
                               .orig_msgid = orig,
                               .message_id = mid,
                               .sender = "alice@pec.a.example",
                               .recipients = rcpt,
                               .subject = "Fattura n. 42",
                               .outcome = outcome,
                               .queue_id = "Q0001",
                               .when = fake_now};
    if (evidence_append(ev, &e, err, sizeof err) != 0)
        fail_msg("evidence_append: %s", err);
}

static long long count_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* Runs SQL on the file as an attacker would: triggers dropped first. */
static void tamper(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int r = sqlite3_exec(db,
                         "DROP TRIGGER IF EXISTS events_no_update;"
                         "DROP TRIGGER IF EXISTS events_no_delete;"
                         "DROP TRIGGER IF EXISTS seals_no_update;"
                         "DROP TRIGGER IF EXISTS seals_no_delete;"
                         "DROP TRIGGER IF EXISTS anchor_forward;",
                         NULL, NULL, &msg);
    if (r == SQLITE_OK)
        r = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (r != SQLITE_OK)
        fail_msg("tamper: %s", msg);
    assert_true(sqlite3_changes(db) > 0 || strstr(sql, "DROP") != NULL);
    sqlite3_close(db);
}

static void copy_file(const char *from, const char *to)
{
    char *data = NULL;
    size_t len = 0;
    remove_db(to);
    assert_int_equal(fs_read_file(from, &data, &len, 1 << 28), 0);
    assert_int_equal(fs_write_atomic(to, data, len, 0600), 0);
    free(data);
}

/* verify into a buffer; returns rc, err in err */
static int verify(const char *path, const char *cert, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    struct evidence_verify_opts o = {.cert_pem_file = cert, .now = fake_now};
    int r = evidence_verify_ex(path, &o, out, err, errlen);
    fclose(out);
    free(buf);
    return r;
}

static char *trace(const char *path, const char *id, int *rc)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    *rc = evidence_trace(path, id, out);
    fclose(out);
    return buf;
}

/* ---- the sealed three-day log used by the tamper cases ------------------------- */

static char g_log[512], g_cert[512], g_other_cert[512];
static struct signer g_signer, g_other;

/* Day 0: a full transaction and a second one; day 1: a third; day 2 (today,
 * unsealed): one more.  Records 1..14. */
static void build_log(void)
{
    fs_mkdirs(TEST_TMPDIR, 0700);
    path_of(g_log, sizeof g_log, "sealed.db");
    path_of(g_cert, sizeof g_cert, "signer.pem");
    path_of(g_other_cert, sizeof g_other_cert, "other.pem");
    g_signer = make_signer("posta-certificata@pec.a.example");
    g_other = make_signer("intruder");
    write_cert(&g_signer, g_cert);
    write_cert(&g_other, g_other_cert);
    struct evidence *ev = open_fresh(g_log);
    evidence_set_clock(ev, fake_clock, NULL);
    evidence_set_signer(ev, cms_sign, &g_signer);
    fake_now = DAY0;
    append(ev, "accettazione", "opec1.1@pec.a.example", "m1@mua", "acc1@pec.a.example",
           "bob@pec.b.example,carol@ext.example", "ok"); /* 1 */
    append(ev, "busta-trasporto", "opec1.1@pec.a.example", "m1@mua", "opec1.1@pec.a.example",
           "bob@pec.b.example", "ok"); /* 2 */
    append(ev, "busta-trasporto", "opec1.1@pec.a.example", "m1@mua", "opec1.1@pec.a.example",
           "carol@ext.example", "ok"); /* 3 */
    fake_now += 2;
    append(ev, "presa-in-carico", "opec1.1@pec.a.example", "m1@mua", "pic1@pec.b.example",
           "bob@pec.b.example", "ok"); /* 4 */
    append(ev, "avvenuta-consegna", "opec1.1@pec.a.example", "m1@mua", "cons1@pec.b.example",
           "bob@pec.b.example", "ok"); /* 5 */
    append(ev, "accettazione", "opec2.2@pec.a.example", "m2@mua", "acc2@pec.a.example",
           "dan@pec.b.example", "ok"); /* 6 */
    append(ev, "busta-trasporto", "opec2.2@pec.a.example", "m2@mua", "opec2.2@pec.a.example",
           "dan@pec.b.example", "ok"); /* 7 */
    append(ev, "non-accettazione", NULL, "m3@mua", "nacc3@pec.a.example", "eve@pec.b.example",
           "Bcc not allowed"); /* 8 */
    fake_now = DAY0 + DAYS(1);
    append(ev, "preavviso-errore-consegna", "opec2.2@pec.a.example", "m2@mua",
           "pre2@pec.a.example", "dan@pec.b.example", "no receipt within 12h"); /* 9 */
    append(ev, "accettazione", "opec4.4@pec.a.example", "m4@mua", "acc4@pec.a.example",
           "bob@pec.b.example", "ok"); /* 10 */
    append(ev, "busta-trasporto", "opec4.4@pec.a.example", "m4@mua", "opec4.4@pec.a.example",
           "bob@pec.b.example", "ok"); /* 11 */
    append(ev, "presa-in-carico", "opec4.4@pec.a.example", "m4@mua", "pic4@pec.b.example",
           "bob@pec.b.example", "ok"); /* 12 */
    fake_now = DAY0 + DAYS(2);
    char err[512];
    int sealed = evidence_seal(ev, fake_now, err, sizeof err);
    if (sealed != 2)
        fail_msg("seal: %d %s", sealed, err);
    assert_int_equal(evidence_seal(ev, fake_now, err, sizeof err), 0); /* idempotent */
    append(ev, "preavviso-errore-consegna", "opec2.2@pec.a.example", "m2@mua",
           "pre2b@pec.a.example", "dan@pec.b.example", "no delivery within 24h"); /* 13 */
    append(ev, "avvenuta-consegna", "opec4.4@pec.a.example", "m4@mua", "cons4@pec.b.example",
           "bob@pec.b.example", "ok"); /* 14 */
    evidence_close(ev);
}

static char g_work[512];
static const char *work_copy(void)
{
    path_of(g_work, sizeof g_work, "work.db");
    copy_file(g_log, g_work);
    return g_work;
}

static void test_sealed_log_verifies(void **state)
{
    (void)state;
    char err[512] = "";
    int r = verify(g_log, g_cert, err, sizeof err);
    if (r != 0)
        fail_msg("verify: %s", err);
    assert_int_equal(verify(g_log, NULL, err, sizeof err), 0); /* chain only */
    assert_int_equal(count_sql(g_log, "SELECT count(*) FROM events"), 14);
    assert_int_equal(count_sql(g_log, "SELECT count(*) FROM seals"), 2);
    assert_int_equal(count_sql(g_log, "SELECT count(*) FROM events WHERE day = '2025-03-10'"), 8);
    /* the report names what it checked */
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_int_equal(evidence_verify(g_log, g_cert, out, err, sizeof err), 0);
    fclose(out);
    assert_non_null(strstr(buf, "intact"));
    assert_non_null(strstr(buf, "14 records in 3 days"));
    assert_non_null(strstr(buf, "2 day seals verified"));
    assert_non_null(strstr(buf, "posta-certificata@pec.a.example"));
    free(buf);
}

static void test_triggers_refuse_edits(void **state)
{
    (void)state;
    const char *p = work_copy();
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "UPDATE events SET subject='x' WHERE seq=1", NULL,
                                      NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM events WHERE seq=14", NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM seals", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_one_byte_edit_named(void **state)
{
    (void)state;
    char err[512];
    /* one byte of the subject of record 5 ('F' -> 'f') */
    const char *p = work_copy();
    tamper(p, "UPDATE events SET subject = 'f' || substr(subject, 2) WHERE seq = 5");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "record 5 "));
    assert_non_null(strstr(err, "altered"));
    assert_non_null(strstr(err, "avvenuta-consegna"));
    assert_non_null(strstr(err, "2025-03-10"));
    /* one byte of a recipient in the unsealed day: the chain alone catches it */
    p = work_copy();
    tamper(p, "UPDATE events SET recipients = replace(recipients, 'bob', 'bOb') WHERE seq = 14");
    assert_int_equal(verify(p, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "record 14 "));
    /* the time of an event */
    p = work_copy();
    tamper(p, "UPDATE events SET event_time = event_time + 1 WHERE seq = 9");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "record 9 "));
    /* a stored hash */
    p = work_copy();
    tamper(p, "UPDATE events SET hash = zeroblob(32) WHERE seq = 3");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "record 3 "));
    /* a NULL turned into an empty string (length-prefixed: not the same) */
    p = work_copy();
    tamper(p, "UPDATE events SET pec_id = '' WHERE seq = 8");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "record 8 "));
}

static void test_deleted_record_named(void **state)
{
    (void)state;
    char err[512];
    const char *p = work_copy();
    tamper(p, "DELETE FROM events WHERE seq = 6");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "record 6 is missing"));
    /* the last record of a sealed day (the chain continues on the next day) */
    p = work_copy();
    tamper(p, "DELETE FROM events WHERE seq = 12");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "record 12 is missing"));
    /* the tail of the log, a whole sealed day included: no gap in the
     * chain, but the seal of 2025-03-11 has no records left */
    p = work_copy();
    tamper(p, "DELETE FROM events WHERE seq >= 9");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "day 2025-03-11"));
    assert_non_null(strstr(err, "deleted"));
}

/* An attacker edits record 4 and recomputes every later hash: each record is
 * self-consistent again, the signed head of the day is not. */
static void test_rehashed_chain_caught_by_seal(void **state)
{
    (void)state;
    const char *p = work_copy();
    tamper(p, "UPDATE events SET outcome = 'errore' WHERE seq = 4");
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL, *up = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT seq, day, logged_at, event_time, type, pec_id,"
                                        " orig_msgid, message_id, sender, recipients, subject,"
                                        " outcome, queue_id, dedupe_key FROM events ORDER BY seq",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "UPDATE events SET prev_hash=?, hash=? WHERE seq=?",
                                        -1, &up, NULL),
                     SQLITE_OK);
    unsigned char prev[32] = {0}, h[32];
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *f[10];
        for (int i = 0; i < 10; i++)
            f[i] = (const char *)sqlite3_column_text(st, 4 + i);
        long long seq = sqlite3_column_int64(st, 0);
        evidence_record_hash(prev, seq, (const char *)sqlite3_column_text(st, 1),
                             sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3), f, h);
        sqlite3_bind_blob(up, 1, prev, 32, SQLITE_TRANSIENT);
        sqlite3_bind_blob(up, 2, h, 32, SQLITE_TRANSIENT);
        sqlite3_bind_int64(up, 3, seq);
        assert_int_equal(sqlite3_step(up), SQLITE_DONE);
        sqlite3_reset(up);
        memcpy(prev, h, 32);
    }
    sqlite3_finalize(st);
    sqlite3_finalize(up);
    sqlite3_close(db);
    char err[512];
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "day 2025-03-10"));
    assert_non_null(strstr(err, "changed after sealing"));
}

static void test_bad_seals(void **state)
{
    (void)state;
    char err[512];
    /* one byte of a signature */
    const char *p = work_copy();
    /* a byte that differs from the one there (x'00' over a 0 octet changed nothing,
     * one run in 256) */
    tamper(p, "UPDATE seals SET signature = substr(signature, 1, length(signature) - 5) ||"
              " CASE WHEN substr(signature, length(signature) - 4, 1) = x'00' THEN x'01'"
              " ELSE x'00' END || substr(signature, length(signature) - 3)"
              " WHERE day = '2025-03-11'");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "day 2025-03-11"));
    assert_non_null(strstr(err, "seal invalid"));
    /* a valid signature by another key over the same text */
    p = work_copy();
    {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT signed FROM seals WHERE day='2025-03-10'",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        char *text = strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        unsigned char *der = NULL;
        size_t derlen = 0;
        assert_int_equal(cms_sign(&g_other, text, strlen(text), &der, &derlen, err, sizeof err),
                         0);
        sqlite3_exec(db, "DROP TRIGGER seals_no_update", NULL, NULL, NULL);
        assert_int_equal(sqlite3_prepare_v2(db, "UPDATE seals SET signature=? WHERE"
                                                " day='2025-03-10'",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_blob(st, 1, der, (int)derlen, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);
        sqlite3_close(db);
        free(der);
        free(text);
    }
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "day 2025-03-10"));
    assert_non_null(strstr(err, "intruder"));
    /* ...which the chain-only mode accepts (it does not know the provider) */
    assert_int_equal(verify(p, NULL, err, sizeof err), 0);
    /* and the genuine log is refused against the wrong certificate */
    assert_int_equal(verify(g_log, g_other_cert, err, sizeof err), -1);
    /* the count in the seal's columns edited */
    p = work_copy();
    tamper(p, "UPDATE seals SET count = 7, last_seq = 7 WHERE day = '2025-03-10'");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "day 2025-03-10"));
    /* a seal removed while a later day is sealed */
    p = work_copy();
    tamper(p, "DELETE FROM seals WHERE day = '2025-03-10'");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "day 2025-03-11"));
    /* the last seal removed: that day falls back to chain-only protection
     * (verify warns that a finished day is unsealed; the next evidence_seal
     * signs it again).  The limit documented in docs/evidence.md. */
    p = work_copy();
    tamper(p, "DELETE FROM seals WHERE day = '2025-03-11'");
    assert_int_equal(verify(p, g_cert, err, sizeof err), 0); /* not yet sealed: warned */
}

static void test_dedupe(void **state)
{
    (void)state;
    char path[512], err[512];
    path_of(path, sizeof path, "dedupe.db");
    struct evidence *ev = open_fresh(path);
    struct evidence_event e = {.type = "avvenuta-consegna",
                               .pec_id = "opec9@pec.a.example",
                               .dedupe_key = "Q77/rcpt/0/avvenuta-consegna",
                               .outcome = "ok"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    e.dedupe_key = "Q77/rcpt/1/avvenuta-consegna";
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    e.dedupe_key = NULL; /* no key: every call is stored */
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    e.type = NULL;
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), -1);
    evidence_close(ev);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), 4);
}

static void test_dedupe_across_reopen(void **state)
{
    (void)state;
    char path[512], err[512];
    path_of(path, sizeof path, "dedupe2.db");
    struct evidence *ev = open_fresh(path);
    struct evidence_event e = {.type = "presa-in-carico", .dedupe_key = "k1", .outcome = "ok"};
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    evidence_close(ev);
    ev = evidence_open(path, err, sizeof err);
    assert_non_null(ev);
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    evidence_close(ev);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), 1);
    assert_int_equal(verify(path, NULL, err, sizeof err), 0);
}

struct worker {
    struct evidence *ev;
    int id, n;
    bool deferred;   /* evidence_append_deferred (a stage's events) */
    int batch;       /* > 0: appends in batches of this many (a delivery thread's pass) */
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char err[256], pec[64], key[64];
    for (int i = 0; i < w->n; i++) {
        snprintf(pec, sizeof pec, "opec%d.%d@pec.a.example", w->id, i);
        snprintf(key, sizeof key, "%d/%d", w->id, i % (w->n - 5)); /* 5 replays per thread */
        struct evidence_event e = {.type = "accettazione",
                                   .pec_id = pec,
                                   .sender = "alice@pec.a.example",
                                   .recipients = "bob@pec.b.example",
                                   .subject = "concurrent",
                                   .outcome = "ok",
                                   .dedupe_key = key,
                                   .when = 0};
        if (w->batch > 0 && i % w->batch == 0)
            evidence_batch_begin(w->ev);
        if ((w->deferred ? evidence_append_deferred(w->ev, &e, err, sizeof err)
                         : evidence_append(w->ev, &e, err, sizeof err)) != 0)
            return (void *)1;
        if (w->batch > 0 && (i % w->batch == w->batch - 1 || i == w->n - 1) &&
            evidence_batch_commit(w->ev, err, sizeof err) != 0)
            return (void *)1;
    }
    return NULL;
}

static void test_threads_chain_intact(void **state)
{
    (void)state;
    char path[512], err[512];
    path_of(path, sizeof path, "threads.db");
    struct evidence *ev = open_fresh(path);
    enum { NT = 8, PER = 205 };
    pthread_t t[NT];
    struct worker w[NT];
    for (int i = 0; i < NT; i++) {
        /* half of them deferred: group commits mix both kinds; some threads
         * hold their appends in batches */
        w[i] = (struct worker){.ev = ev, .id = i, .n = PER, .deferred = i % 2 == 1,
                               .batch = i % 4 < 2 ? 0 : 7 + i};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    evidence_close(ev);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), NT * (PER - 5));
    assert_int_equal(count_sql(path, "SELECT max(seq) - min(seq) + 1 FROM events"),
                     NT * (PER - 5));
    fake_now = time(NULL);
    int r = verify(path, NULL, err, sizeof err);
    if (r != 0)
        fail_msg("verify: %s", err);
}

static int synchronous_of(struct evidence *ev)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(ev->db, "PRAGMA synchronous", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* A deferred append commits with synchronous=NORMAL (its caller syncs the file
 * system), any other transaction with FULL again: appends, seals. */
static void test_deferred_sync_mode(void **state)
{
    (void)state;
    char path[512], err[512];
    path_of(path, sizeof path, "deferred.db");
    struct evidence *ev = open_fresh(path);
    evidence_set_signer(ev, cms_sign, &g_signer);
    fake_now = DAY0;
    evidence_set_clock(ev, fake_clock, NULL);
    assert_int_equal(synchronous_of(ev), 2);   /* FULL */
    struct evidence_event e = {.type = "accettazione", .pec_id = "opec1@pec.a.example",
                               .sender = "alice@pec.a.example", .outcome = "ok",
                               .dedupe_key = "d1", .when = DAY0};
    assert_int_equal(evidence_append_deferred(ev, &e, err, sizeof err), 0);
    assert_int_equal(synchronous_of(ev), 1);   /* NORMAL */
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), 1);   /* committed */
    e.dedupe_key = "d2";
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    assert_int_equal(synchronous_of(ev), 2);
    e.dedupe_key = "d3";
    assert_int_equal(evidence_append_deferred(ev, &e, err, sizeof err), 0);
    assert_int_equal(synchronous_of(ev), 1);
    fake_now = DAY0 + DAYS(1);
    if (evidence_seal(ev, fake_now, err, sizeof err) < 0)
        fail_msg("seal: %s", err);
    assert_int_equal(synchronous_of(ev), 2);   /* a seal is always synced */
    evidence_close(ev);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), 3);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM seals"), 1);
    /* the unused index on type is not made, and goes from a log that has it */
    const char *has_type_index = "SELECT count(*) FROM sqlite_master WHERE name = 'events_type'";
    assert_int_equal(count_sql(path, has_type_index), 0);
    {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "CREATE INDEX events_type ON events(type)", NULL, NULL,
                                      NULL), SQLITE_OK);
        sqlite3_close(db);
    }
    assert_int_equal(count_sql(path, has_type_index), 1);
    ev = evidence_open(path, err, sizeof err);
    assert_non_null(ev);
    evidence_close(ev);
    assert_int_equal(count_sql(path, has_type_index), 0);
    int r = verify(path, g_cert, err, sizeof err);
    if (r != 0)
        fail_msg("verify: %s", err);
}

/* A batch holds a thread's appends until it is committed, then stores them in
 * one transaction: copies (the caller's buffers may change), duplicates
 * skipped as for single appends, synced unless all were deferred. */
static void test_batch(void **state)
{
    (void)state;
    char path[512], other_path[512], err[512];
    path_of(path, sizeof path, "batch.db");
    path_of(other_path, sizeof other_path, "batch-other.db");
    struct evidence *ev = open_fresh(path), *other = open_fresh(other_path);
    char key[32], pec[64];
    struct evidence_event e = {.type = "accettazione", .pec_id = pec, .outcome = "ok",
                               .dedupe_key = key};
    snprintf(key, sizeof key, "before");
    snprintf(pec, sizeof pec, "opec0@pec.a.example");
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);

    /* no batch open on this thread */
    assert_int_equal(evidence_batch_commit(ev, err, sizeof err), -1);
    assert_non_null(strstr(err, "no batch"));

    evidence_batch_begin(ev);
    for (int i = 1; i <= 3; i++) {
        snprintf(key, sizeof key, "k%d", i);
        snprintf(pec, sizeof pec, "opec%d@pec.a.example", i);
        assert_int_equal(evidence_append_deferred(ev, &e, err, sizeof err), 0);
    }
    snprintf(key, sizeof key, "k2");   /* a replay inside the batch */
    assert_int_equal(evidence_append_deferred(ev, &e, err, sizeof err), 0);
    snprintf(key, sizeof key, "before");   /* a replay of a stored event */
    assert_int_equal(evidence_append_deferred(ev, &e, err, sizeof err), 0);
    /* another log's appends are not held */
    snprintf(key, sizeof key, "elsewhere");
    assert_int_equal(evidence_append(other, &e, err, sizeof err), 0);
    assert_int_equal(count_sql(other_path, "SELECT count(*) FROM events"), 1);
    snprintf(pec, sizeof pec, "overwritten");
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), 1);   /* held */
    assert_int_equal(evidence_batch_commit(ev, err, sizeof err), 0);
    assert_int_equal(synchronous_of(ev), 1);   /* all deferred: NORMAL */
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), 4);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events WHERE pec_id = 'opec3@pec.a"
                                     ".example' AND dedupe_key = 'k3'"), 1);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events WHERE pec_id = 'overwritten'"),
                     0);

    /* closed: appends are stored at once again */
    snprintf(key, sizeof key, "after");
    assert_int_equal(evidence_append_deferred(ev, &e, err, sizeof err), 0);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), 5);

    /* one synced append makes the batch's commit synced */
    evidence_batch_begin(ev);
    snprintf(key, sizeof key, "s1");
    assert_int_equal(evidence_append_deferred(ev, &e, err, sizeof err), 0);
    snprintf(key, sizeof key, "s2");
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    assert_int_equal(evidence_batch_commit(ev, err, sizeof err), 0);
    assert_int_equal(synchronous_of(ev), 2);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), 7);

    /* a batch begun again drops what the open one held; an empty one commits */
    evidence_batch_begin(ev);
    snprintf(key, sizeof key, "dropped");
    assert_int_equal(evidence_append_deferred(ev, &e, err, sizeof err), 0);
    evidence_batch_begin(ev);
    assert_int_equal(evidence_batch_commit(ev, err, sizeof err), 0);
    assert_int_equal(count_sql(path, "SELECT count(*) FROM events"), 7);

    evidence_close(other);
    evidence_close(ev);
    fake_now = time(NULL);
    int r = verify(path, NULL, err, sizeof err);
    if (r != 0)
        fail_msg("verify: %s", err);
}

static void test_trace(void **state)
{
    (void)state;
    int rc;
    /* by the PEC id, with <> */
    char *out = trace(g_log, "<opec1.1@pec.a.example>", &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "PEC message <opec1.1@pec.a.example>"));
    assert_non_null(strstr(out, "original Message-ID: <m1@mua>"));
    assert_non_null(strstr(out, "accettazione"));
    assert_non_null(strstr(out, "to carol@ext.example")); /* an envelope per recipient */
    assert_non_null(strstr(out, "presa-in-carico"));
    assert_non_null(strstr(out, "avvenuta-consegna"));
    assert_null(strstr(out, "opec2.2"));
    const char *a = strstr(out, "accettazione"), *c = strstr(out, "avvenuta-consegna");
    assert_true(a < c); /* in log order */
    free(out);
    /* by the client's Message-ID: the same transaction */
    out = trace(g_log, "m1@mua", &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "PEC message <opec1.1@pec.a.example>"));
    assert_non_null(strstr(out, "avvenuta-consegna"));
    free(out);
    /* by the Message-ID of a receipt: the whole transaction, timers included */
    out = trace(g_log, "pre2@pec.a.example", &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "PEC message <opec2.2@pec.a.example>"));
    assert_non_null(strstr(out, "no receipt within 12h"));
    assert_non_null(strstr(out, "no delivery within 24h"));
    assert_non_null(strstr(out, "busta-trasporto"));
    free(out);
    /* a refused submission has no PEC id */
    out = trace(g_log, " <m3@mua> ", &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "non-accettazione"));
    assert_non_null(strstr(out, "Bcc not allowed"));
    free(out);
    out = trace(g_log, "nobody@nowhere", &rc);
    assert_int_equal(rc, 1);
    free(out);
    char missing[512];
    path_of(missing, sizeof missing, "missing.db");
    remove_db(missing);
    out = trace(missing, "x", &rc);
    assert_int_equal(rc, -1);
    free(out);
    char err[256];
    assert_int_equal(verify(missing, NULL, err, sizeof err), -2);
}

static void test_purge(void **state)
{
    (void)state;
    char err[512];
    const char *p = work_copy();
    struct evidence *ev = evidence_open(p, err, sizeof err);
    assert_non_null(ev);
    evidence_set_clock(ev, fake_clock, NULL);
    evidence_set_signer(ev, cms_sign, &g_signer);
    fake_now = DAY0 + DAYS(3);
    /* nothing older than day 0's end */
    assert_int_equal(evidence_purge(ev, DAY0, err, sizeof err), 0);
    /* day 0 ended at DAY0 + 15 h */
    assert_int_equal(evidence_purge(ev, DAY0 + DAYS(1), err, sizeof err), 1);
    assert_int_equal(count_sql(p, "SELECT min(seq) FROM events"), 9);
    assert_int_equal(verify(p, g_cert, err, sizeof err), 0);
    /* day 2 is not sealed: it stays even when older than the limit */
    assert_int_equal(evidence_purge(ev, DAY0 + DAYS(5), err, sizeof err), 1);
    assert_int_equal(count_sql(p, "SELECT count(*) FROM events"), 2);
    assert_int_equal(verify(p, g_cert, err, sizeof err), 0);
    /* seal day 2, purge it: the log is empty and the chain continues */
    assert_int_equal(evidence_seal(ev, fake_now, err, sizeof err), 1);
    assert_int_equal(evidence_purge(ev, DAY0 + DAYS(5), err, sizeof err), 1);
    assert_int_equal(count_sql(p, "SELECT count(*) FROM events"), 0);
    assert_int_equal(verify(p, g_cert, err, sizeof err), 0);
    append(ev, "accettazione", "opec5.5@pec.a.example", "m5@mua", "acc5@pec.a.example",
           "bob@pec.b.example", "ok");
    evidence_close(ev);
    assert_int_equal(count_sql(p, "SELECT min(seq) FROM events"), 15);
    assert_int_equal(verify(p, g_cert, err, sizeof err), 0);
    /* seals of purged days stay: 3 */
    assert_int_equal(count_sql(p, "SELECT count(*) FROM seals"), 3);
    /* retention: verify with keep_after refuses a purge inside the period */
    struct evidence_verify_opts o = {.cert_pem_file = g_cert, .now = fake_now,
                                     .keep_after = DAY0};
    assert_int_equal(evidence_verify_ex(p, &o, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "retention"));
    o.keep_after = DAY0 + DAYS(3);
    assert_int_equal(evidence_verify_ex(p, &o, NULL, err, sizeof err), 0);
    /* a forged anchor (records 1..14 deleted by hand, anchor set to day 0) */
    p = work_copy();
    tamper(p, "DELETE FROM events WHERE seq <= 10;"
              "INSERT INTO anchor VALUES(1, 10, zeroblob(32), '2025-03-10', 0)");
    assert_int_equal(verify(p, g_cert, err, sizeof err), -1);
    assert_non_null(strstr(err, "anchor"));
    /* a purge by hand that stops at a genuine day end: verifies (a prefix
     * removal is what retention does), but keep_after catches it */
    p = work_copy();
    tamper(p, "INSERT INTO anchor SELECT 1, last_seq, last_hash, day, 0 FROM seals"
              " WHERE day = '2025-03-10'; DELETE FROM events WHERE seq <= 8");
    assert_int_equal(verify(p, g_cert, err, sizeof err), 0);
    o.keep_after = DAY0 - DAYS(1);
    assert_int_equal(evidence_verify_ex(p, &o, NULL, err, sizeof err), -1);
}

struct counts {
    long long rows;
    long long seqs[32];
    char days[8][16];
    long long per_type_acc;
};

static int count_row(void *ctx, const struct evidence_row *r)
{
    struct counts *c = ctx;
    if (c->rows < 32)
        c->seqs[c->rows] = r->seq;
    c->rows++;
    return 0;
}

static int count_report(void *ctx, const char *day, const char *type, long long n)
{
    struct counts *c = ctx;
    (void)day;
    if (strcmp(type, "accettazione") == 0)
        c->per_type_acc += n;
    c->rows++;
    return 0;
}

static int count_hold(void *ctx, long long id, const char *kind, const char *value,
                      const char *reason, long long created)
{
    struct counts *c = ctx;
    (void)id, (void)kind, (void)value, (void)reason, (void)created;
    c->rows++;
    return 0;
}

/* Issue 23: a user's records found by address (a whole recipient, without
 * case), date and subject; the counts of a report; legal holds stop the
 * retention at the first day they cover. */
static void test_search_report_holds(void **state)
{
    (void)state;
    char err[512];
    const char *p = work_copy();
    /* dan is a recipient of records 6, 7, 9, 13 */
    struct counts c = {0};
    struct evidence_query q = {.address = "DAN@pec.b.example"};
    assert_int_equal(evidence_search(p, &q, count_row, &c, err, sizeof err), 4);
    assert_true(c.seqs[0] == 6 && c.seqs[1] == 7 && c.seqs[2] == 9 && c.seqs[3] == 13);
    /* "bob@pec.b.example" inside "bob@pec.b.example,carol@ext.example" matches; a
     * look-alike does not */
    memset(&c, 0, sizeof c);
    q.address = "ob@pec.b.example";
    assert_int_equal(evidence_search(p, &q, count_row, &c, err, sizeof err), 0);
    memset(&c, 0, sizeof c);
    q = (struct evidence_query){.address = "bob@pec.b.example", .from = "2025-03-11"};
    assert_int_equal(evidence_search(p, &q, count_row, &c, err, sizeof err), 4);  /* 10-12, 14 */
    q = (struct evidence_query){.address = "alice@pec.a.example", .subject = "fattura"};
    assert_int_equal(evidence_search(p, &q, count_row, &c, err, sizeof err), 14);
    q.subject = "50%_";
    assert_int_equal(evidence_search(p, &q, count_row, &c, err, sizeof err), 0);
    q = (struct evidence_query){.address = "x@y.example", .from = "11/03/2025"};
    assert_int_equal(evidence_search(p, &q, count_row, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "YYYY-MM-DD"));
    /* a report: the acceptances of the whole log, by day and type */
    memset(&c, 0, sizeof c);
    assert_int_equal(evidence_report(p, "2025-03-10", "2025-03-12", count_report, &c, err,
                                     sizeof err), 0);
    assert_int_equal(c.per_type_acc, 3);
    /* a hold on transaction 4 (days 1 and 2): retention removes day 0 and stops */
    long long h = evidence_hold_add(p, "pec_id", "opec4.4@pec.a.example", "causa 12/2025", err,
                                    sizeof err);
    assert_true(h > 0);
    assert_int_equal(evidence_hold_add(p, "address", "not an address", NULL, err, sizeof err),
                     -1);
    memset(&c, 0, sizeof c);
    assert_int_equal(evidence_hold_list(p, count_hold, &c, err, sizeof err), 1);
    struct evidence *ev = evidence_open(p, err, sizeof err);
    evidence_set_clock(ev, fake_clock, NULL);
    evidence_set_signer(ev, cms_sign, &g_signer);
    fake_now = DAY0 + DAYS(3);
    assert_int_equal(evidence_seal(ev, fake_now, err, sizeof err), 1);   /* day 2 */
    assert_int_equal(evidence_purge(ev, DAY0 + DAYS(5), err, sizeof err), 1);
    assert_int_equal(count_sql(p, "SELECT min(seq) FROM events"), 9);
    assert_int_equal(verify(p, g_cert, err, sizeof err), 0);
    /* the hold lifted: the rest goes */
    assert_int_equal(evidence_hold_del(p, h, err, sizeof err), 0);
    assert_int_equal(evidence_hold_del(p, h, err, sizeof err), -1);
    assert_int_equal(evidence_purge(ev, DAY0 + DAYS(5), err, sizeof err), 2);
    assert_int_equal(count_sql(p, "SELECT count(*) FROM events"), 0);
    evidence_close(ev);
    assert_int_equal(verify(p, g_cert, err, sizeof err), 0);
}

/* The clock going back after a seal must not add records to a sealed day. */
static void test_clock_back_after_seal(void **state)
{
    (void)state;
    char err[512];
    const char *p = work_copy();
    struct evidence *ev = evidence_open(p, err, sizeof err);
    assert_non_null(ev);
    evidence_set_clock(ev, fake_clock, NULL);
    fake_now = DAY0; /* day 0 is sealed; day 2 is the last one */
    append(ev, "anomalia", "opec6@pec.a.example", NULL, NULL, "bob@pec.b.example", "unsigned");
    evidence_close(ev);
    assert_int_equal(count_sql(p, "SELECT count(*) FROM events WHERE seq = 15 AND"
                                  " day = '2025-03-12' AND event_time = 1741597200"),
                     1);
    fake_now = DAY0 + DAYS(2);
    assert_int_equal(verify(p, g_cert, err, sizeof err), 0);
}

static void test_long_field_capped(void **state)
{
    (void)state;
    char path[512], err[512];
    path_of(path, sizeof path, "long.db");
    struct evidence *ev = open_fresh(path);
    size_t n = 200 * 1024;
    char *subject = malloc(n + 1);
    memset(subject, 'x', n);
    subject[n] = '\0';
    struct evidence_event e = {.type = "accettazione", .subject = subject, .outcome = "ok"};
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    evidence_close(ev);
    free(subject);
    /* a UTF-8 subject is cut between characters: 'x' then 2-byte 'è's */
    ev = evidence_open(path, err, sizeof err);
    assert_non_null(ev);
    subject = malloc(n + 2);
    subject[0] = 'x';
    for (size_t i = 1; i + 1 < n; i += 2)
        memcpy(subject + i, "\xc3\xa8", 2);
    subject[n - 1 - (n % 2 == 0)] = '\0';
    e.subject = subject;
    assert_int_equal(evidence_append(ev, &e, err, sizeof err), 0);
    evidence_close(ev);
    free(subject);
    assert_int_equal(count_sql(path, "SELECT length(subject) FROM events WHERE seq = 1"),
                     64 * 1024);
    assert_int_equal(count_sql(path, "SELECT length(CAST(subject AS BLOB)) FROM events"
                                     " WHERE seq = 2"),
                     64 * 1024 - 1);
    assert_int_equal(count_sql(path, "SELECT hex(substr(CAST(subject AS BLOB), 65520, 3))"
                                     " = 'C3A82E' FROM events WHERE seq = 2"),
                     1);
    fake_now = time(NULL);
    assert_int_equal(verify(path, NULL, err, sizeof err), 0);
}

/* log export --day (issue 23): a sealed day as a file of its own, checked
 * without the rest of the log; the second day also proves continuity with
 * the first through the first day's seal. */
static void test_export_day(void **state)
{
    (void)state;
    char err[512] = "", out1[512], out2[512], bad[512];
    long long n0;
    path_of(out1, sizeof out1, "export-day0.db");
    path_of(out2, sizeof out2, "export-day1.db");
    path_of(bad, sizeof bad, "export-bad.db");
    remove_db(out1), remove_db(out2), remove_db(bad);
    n0 = evidence_export_day(g_log, "2025-03-10", out1, err, sizeof err);
    if (n0 != 8)
        fail_msg("export day 0: %lld %s", n0, err);
    long long n = evidence_export_day(g_log, "2025-03-11", out2, err, sizeof err);
    if (n != 4)
        fail_msg("export: %lld %s", n, err);
    struct stat st;
    assert_int_equal(stat(out2, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    for (int i = 0; i < 2; i++) {
        const char *p = i ? out2 : out1;
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        struct evidence_verify_opts o = {.cert_pem_file = g_cert, .now = fake_now};
        int r = evidence_verify_ex(p, &o, f, err, sizeof err);
        fclose(f);
        if (r != 0)
            fail_msg("verify export %d: %s\n%s", i, err, buf);
        assert_non_null(strstr(buf, i ? "evidence export of day 2025-03-11" :
                                        "evidence export of day 2025-03-10"));
        assert_non_null(strstr(buf, i ? "4 records in 1 days" : "8 records in 1 days"));
        if (i)
            assert_non_null(strstr(buf, "following record 8, the last of day 2025-03-10"));
        free(buf);
        /* another signer's certificate: refused */
        assert_int_equal(verify(p, g_other_cert, err, sizeof err), -1);
    }
    assert_int_equal(count_sql(out2, "SELECT count(*) FROM seals"), 2);
    /* the export is a copy: it is never written over */
    assert_int_equal(evidence_export_day(g_log, "2025-03-11", out2, err, sizeof err), -1);
    assert_non_null(strstr(err, "File exists"));
    /* today's records are not sealed yet; a day without records; not a day */
    assert_int_equal(evidence_export_day(g_log, "2025-03-12", bad, err, sizeof err), -1);
    assert_non_null(strstr(err, "not sealed yet (2 records"));
    assert_int_equal(access(bad, F_OK), -1);
    assert_int_equal(evidence_export_day(g_log, "2025-01-01", bad, err, sizeof err), -1);
    assert_non_null(strstr(err, "no records"));
    assert_int_equal(evidence_export_day(g_log, "2025-03-1'", bad, err, sizeof err), -1);
    assert_non_null(strstr(err, "is not a day"));

    /* tampering with an export is caught like tampering with the log */
    static const char *const attacks[] = {
        "UPDATE events SET subject = 'altered' WHERE seq = 10",
        "DELETE FROM events WHERE seq = 12",
        "DELETE FROM events WHERE seq = 9",
        "UPDATE anchor SET hash = zeroblob(32)",
        "DELETE FROM seals WHERE day = '2025-03-10'",
        "UPDATE seals SET signature = X'00' WHERE day = '2025-03-11'",
        "UPDATE meta SET value = '2025-03-10' WHERE key = 'export'",
    };
    for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) {
        copy_file(out2, bad);
        tamper(bad, attacks[i]);
        if (verify(bad, g_cert, err, sizeof err) != -1)
            fail_msg("attack %zu not caught: %s", i, attacks[i]);
    }
    remove_db(out1), remove_db(out2), remove_db(bad);
}

static int setup(void **state)
{
    (void)state;
    build_log();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free_signer(&g_signer);
    free_signer(&g_other);
    return 0;
}

int main(void)
{
    setenv("TZ", "Europe/Rome", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sealed_log_verifies),
        cmocka_unit_test(test_deferred_sync_mode),
        cmocka_unit_test(test_triggers_refuse_edits),
        cmocka_unit_test(test_one_byte_edit_named),
        cmocka_unit_test(test_deleted_record_named),
        cmocka_unit_test(test_rehashed_chain_caught_by_seal),
        cmocka_unit_test(test_bad_seals),
        cmocka_unit_test(test_dedupe),
        cmocka_unit_test(test_dedupe_across_reopen),
        cmocka_unit_test(test_threads_chain_intact),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_trace),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_search_report_holds),
        cmocka_unit_test(test_clock_back_after_seal),
        cmocka_unit_test(test_long_field_capped),
        cmocka_unit_test(test_export_day),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
