/*
 * test_state_pg.c - the PostgreSQL backend of the state (src/store: the *_pg.c files,
 * state*.c) against a real server: two nodes' evidence chains with a test
 * clock over four months, day seals of every chain, dedupe keys shared by
 * the chains, retention dropping whole monthly partitions while the days
 * that hold a record under a legal hold are kept (and still verify), tamper
 * detection after the drop; the notices' claims with FOR UPDATE SKIP LOCKED
 * between two threads; the quarantine index.
 *
 * Needs a database: PEC_TEST_PG_URI (a fresh, empty database; the password
 * through PGPASSWORD), given by tests/integration/test_multinode.py, which
 * runs this program against its private cluster.  Without it every test is
 * skipped (ctest).
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
#include <unistd.h>

#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "lib/lib.h"
#include "store/evidence.h"
#include "store/pg.h"
#include "store/quarantine.h"
#include "store/state.h"
#include "store/tracking.h"

static const char *uri;

/* ---- a test signer -------------------------------------------------------------------- */

static EVP_PKEY *key;
static X509 *cert;

static void make_signer(void)
{
    key = EVP_EC_gen("P-256");
    cert = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -86400L * 2000);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400L * 400);
    X509_NAME *n = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"test pec", -1, -1,
                               0);
    X509_set_issuer_name(cert, n);
    X509_set_pubkey(cert, key);
    X509_sign(cert, key, EVP_sha256());
}

static int cms_sign(void *ctx, const void *data, size_t len, unsigned char **der, size_t *derlen,
                    char *err, size_t errlen)
{
    (void)ctx;
    BIO *in = BIO_new_mem_buf(data, (int)len);
    CMS_ContentInfo *cms = CMS_sign(cert, key, NULL, in, CMS_DETACHED | CMS_BINARY);
    BIO_free(in);
    if (cms == NULL) {
        snprintf(err, errlen, "CMS_sign failed");
        return -1;
    }
    unsigned char *buf = NULL;
    int n = i2d_CMS_ContentInfo(cms, &buf);
    CMS_ContentInfo_free(cms);
    *der = malloc((size_t)n);
    memcpy(*der, buf, (size_t)n);
    *derlen = (size_t)n;
    OPENSSL_free(buf);
    return 0;
}

static time_t fake_now;
static time_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

/* 00:00 UTC of y-m-d, plus h hours */
static time_t at(int y, int m, int d, int h)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = h};
    return timegm(&tm);
}

static long long sql_ll(const char *sql)
{
    char err[512];
    PGconn *c = pg_get(err, sizeof err);
    assert_non_null(c);
    PGresult *r = pg_query(c, err, sizeof err, "test", sql, 0, NULL);
    if (r == NULL)
        fail_msg("%s: %s", sql, err);
    long long v = pg_ll(r, 0, 0);
    PQclear(r);
    pg_put(c);
    return v;
}

static void sql(const char *text)
{
    char err[512];
    PGconn *c = pg_get(err, sizeof err);
    assert_non_null(c);
    if (pg_command(c, err, sizeof err, "test", text, 0, NULL) < 0)
        fail_msg("%s: %s", text, err);
    pg_put(c);
}

static struct evidence *open_chain(const char *node)
{
    char err[512];
    pg_configure(uri, NULL, node, "test_state_pg", 5);
    struct evidence *ev = evidence_open(uri, err, sizeof err);
    if (ev == NULL)
        fail_msg("evidence_open: %s", err);
    evidence_set_signer(ev, cms_sign, NULL);
    evidence_set_clock(ev, fake_clock, NULL);
    return ev;
}

static void append(struct evidence *ev, const char *type, const char *sender, const char *subject,
                   const char *key_)
{
    char err[512];
    struct evidence_event e = {.type = type, .pec_id = "opec1.x@pec.a.example",
                               .sender = sender, .recipients = "bob@pec.b.example, carol@x.it",
                               .subject = subject, .outcome = "ok", .queue_id = "Q1",
                               .dedupe_key = key_};
    if (evidence_append(ev, &e, err, sizeof err) == -1)
        fail_msg("append: %s", err);
}

static int verify(char *err, size_t errlen, char **report)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    struct evidence_verify_opts o = {.cert_pem_file = "test_state_pg.crt", .now = fake_now};
    int rc = evidence_verify_ex(uri, &o, f, err, errlen);
    fclose(f);
    *report = buf;
    return rc;
}

static int count_row(void *ctx, const struct evidence_row *r)
{
    (*(int *)ctx)++;
    assert_non_null(r->chain);
    return 0;
}

/* ---- the evidence log ------------------------------------------------------------------ */

static void test_evidence_chains_retention_holds(void **state)
{
    (void)state;
    if (uri == NULL)
        skip();
    char err[1024];
    FILE *f = fopen("test_state_pg.crt", "w");
    PEM_write_X509(f, cert);
    fclose(f);
    pg_configure(uri, NULL, "n1", "test_state_pg", 5);
    if (state_init(err, sizeof err) != 0)
        fail_msg("state_init: %s", err);
    struct evidence *n1 = open_chain("n1"), *n2 = open_chain("n2");
    /* two days in each of January to April 2024, both chains; one record of a
     * held address in February, in n1 */
    for (int m = 1; m <= 4; m++)
        for (int d = 10; d <= 11; d++) {
            fake_now = at(2024, m, d, 9);
            for (int i = 0; i < 3; i++) {
                char subj[64];
                snprintf(subj, sizeof subj, "msg %d-%d-%d", m, d, i);
                append(n1, "accettazione", "alice@pec.a.example", subj, NULL);
                append(n2, "presa-in-carico", "alice@pec.a.example", subj, NULL);
            }
            if (m == 2 && d == 10)
                append(n1, "accettazione", "held@pec.a.example", "under hold", NULL);
            /* the day sealed at the next one: every chain, by either node */
            fake_now = at(2024, m, d + 1, 1);
            assert_true(evidence_seal(m % 2 ? n1 : n2, fake_now, err, sizeof err) >= 0);
        }
    /* a dedupe key is one across the chains: the other node's replay is a no-op
     * and finds the first one's queue id */
    fake_now = at(2024, 4, 12, 9);
    append(n1, "preavviso-errore-consegna", "alice@pec.a.example", "n", "KEY1:x");
    append(n2, "preavviso-errore-consegna", "alice@pec.a.example", "n", "KEY1:x");
    assert_int_equal(sql_ll("SELECT count(*) FROM evidence_events WHERE dedupe_key = 'KEY1:x'"),
                     1);
    char qid[64];
    time_t when;
    assert_int_equal(evidence_lookup(n2, "KEY1:x", qid, sizeof qid, &when), 1);
    assert_string_equal(qid, "Q1");
    time_t st;
    assert_int_equal(evidence_stage_time(n2, "KEY1", &st), 1);
    assert_int_equal(evidence_stage_time(n2, "KEY2", &st), 0);
    fake_now = at(2024, 4, 13, 1);
    assert_true(evidence_seal(n2, fake_now, err, sizeof err) > 0);
    assert_int_equal(evidence_seal(n1, fake_now, err, sizeof err), 0);   /* once per chain */
    long long hold = evidence_hold_add(uri, "address", "held@pec.a.example", "court", err,
                                       sizeof err);
    assert_true(hold > 0);
    char *report = NULL;
    int rc = verify(err, sizeof err, &report);
    if (rc != 0)
        fail_msg("verify: %s\n%s", err, report);
    assert_non_null(strstr(report, "chain n1: 26 records in 9 days"));
    free(report);

    /* retention: up to 1 April, the months January to March go whole */
    long long parts = sql_ll("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                             "'evidence_events'::regclass");
    int days = evidence_purge(n1, at(2024, 4, 1, 0), err, sizeof err);
    if (days < 0)
        fail_msg("purge: %s", err);
    assert_int_equal(days, 6);
    assert_int_equal(sql_ll("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                            "'evidence_events'::regclass"),
                     parts - 3);
    /* the held day of n1 kept whole (3 + 1 records), nothing else */
    assert_int_equal(sql_ll("SELECT count(*) FROM evidence_held"), 4);
    assert_int_equal(sql_ll("SELECT count(*) FROM evidence_held WHERE chain = 'n1' AND day = "
                            "'2024-02-10'"),
                     4);
    assert_int_equal(sql_ll("SELECT anchor_seq FROM evidence_chains WHERE name = 'n1'"), 19);
    rc = verify(err, sizeof err, &report);
    if (rc != 0)
        fail_msg("verify after the purge: %s\n%s", err, report);
    assert_non_null(strstr(report, "starting after record 19 (days up to 2024-03-11 purged)"));
    assert_non_null(strstr(report, "1 purged day(s) kept under legal hold (4 records) verified"));
    free(report);
    /* the held record is still found (and extracted) */
    int n = 0;
    struct evidence_query q = {.address = "held@pec.a.example"};
    assert_int_equal(evidence_search(uri, &q, count_row, &n, err, sizeof err), 1);
    assert_int_equal(n, 1);
    /* a purged month is not made again; a second purge has nothing to do */
    assert_int_equal(state_partitions(at(2024, 1, 1, 0), at(2024, 4, 1, 0), err, sizeof err), 0);
    assert_int_equal(evidence_purge(n1, at(2024, 4, 1, 0), err, sizeof err), 0);

    /* tampering after the drop: a held record altered, then a live one */
    sql("ALTER TABLE evidence_held DISABLE TRIGGER USER;"
        "UPDATE evidence_held SET subject = 'forged' WHERE sender = 'held@pec.a.example';"
        "ALTER TABLE evidence_held ENABLE TRIGGER USER");
    rc = verify(err, sizeof err, &report);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "held record"));
    free(report);
    sql("ALTER TABLE evidence_held DISABLE TRIGGER USER;"
        "UPDATE evidence_held SET subject = 'under hold' WHERE sender = 'held@pec.a.example';"
        "ALTER TABLE evidence_held ENABLE TRIGGER USER");
    rc = verify(err, sizeof err, &report);
    assert_int_equal(rc, 0);
    free(report);
    sql("ALTER TABLE evidence_events DISABLE TRIGGER USER;"
        "UPDATE evidence_events SET outcome = 'changed' WHERE chain = 'n2' AND seq = 20;"
        "ALTER TABLE evidence_events ENABLE TRIGGER USER");
    rc = verify(err, sizeof err, &report);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "chain n2 record 20"));
    assert_non_null(strstr(err, "was altered"));
    free(report);
    /* the append-only trigger (against mistakes) */
    char e2[512];
    PGconn *c = pg_get(e2, sizeof e2);
    assert_true(pg_command(c, e2, sizeof e2, "t", "DELETE FROM evidence_seals", 0, NULL) < 0);
    assert_non_null(strstr(e2, "append-only"));
    pg_put(c);
    evidence_close(n1);
    evidence_close(n2);
}

/* ---- the notices' claims ---------------------------------------------------------------- */

struct claimer {
    struct tracking *t;
    pthread_barrier_t *locked, *done;
    size_t got;
};

static void *second_node(void *arg)
{
    struct claimer *c = arg;
    pthread_barrier_wait(c->locked);   /* the first holds its rows now */
    struct tracking_due *d;
    c->got = tracking_due(c->t, time(NULL), 10, 60, &d);
    tracking_due_free(d, c->got);
    tracking_due_abort(c->t);
    pthread_barrier_wait(c->done);
    return NULL;
}

static void test_notice_claims_across_nodes(void **state)
{
    (void)state;
    if (uri == NULL)
        skip();
    char err[512];
    pg_configure(uri, NULL, "n1", "test_state_pg", 5);
    struct tracking *t = tracking_open(uri, err, sizeof err);
    if (t == NULL)
        fail_msg("tracking_open: %s", err);
    const char *rcpts[] = {"anna@pec.b.example", "luca@pec.b.example"};
    struct tracking_expect_args a = {.pec_id = "opec1.claim@pec.a.example", .sender = "m@a",
                                     .subject = "s", .recipients = "anna, luca",
                                     .rcpts = rcpts, .n = 2, .sent = time(NULL) - 30};
    assert_int_equal(tracking_expect(t, &a), 0);
    /* node 1 holds the due rows: node 2's timer (another thread, its own
     * connection) passes them by instead of waiting or taking them too */
    pthread_barrier_t locked, done;
    pthread_barrier_init(&locked, NULL, 2);
    pthread_barrier_init(&done, NULL, 2);
    struct claimer other = {.t = t, .locked = &locked, .done = &done};
    pthread_t th;
    pthread_create(&th, NULL, second_node, &other);
    struct tracking_due *d;
    size_t n = tracking_due(t, time(NULL), 10, 60, &d);
    assert_int_equal(n, 2);
    pthread_barrier_wait(&locked);
    pthread_barrier_wait(&done);
    pthread_join(th, NULL);
    assert_int_equal(other.got, 0);
    assert_int_equal(tracking_claim(t, d, n, "BATCHQID00000001"), 0);
    tracking_due_free(d, n);
    char q[32];
    assert_int_equal(tracking_notice_claim(t, a.pec_id, rcpts[1], 1, q, sizeof q), 1);
    assert_string_equal(q, "BATCHQID00000001");
    assert_int_equal(tracking_notice_claim(t, a.pec_id, rcpts[1], 2, q, sizeof q), 0);
    /* claimed: not due again (until the second deadline) */
    n = tracking_due(t, time(NULL), 10, 3600, &d);
    assert_int_equal(n, 0);
    tracking_due_free(d, n);
    /* a copy retried to the other node is a duplicate there */
    struct tracking_seen_key k = {.signer = "ab12", .msgid = "<m@x>", .content = "c",
                                  .rcpt = "Anna@pec.b.example"};
    assert_int_equal(tracking_seen(t, &k, "Q1"), 0);
    assert_int_equal(tracking_seen(t, &k, "Q2"), 1);
    assert_int_equal(tracking_seen(t, &k, "Q1"), 0);   /* the same queue file again */
    tracking_close(t);
    pthread_barrier_destroy(&locked);
    pthread_barrier_destroy(&done);
}

/* ---- the quarantine index --------------------------------------------------------------- */

static void test_quarantine_index(void **state)
{
    (void)state;
    if (uri == NULL)
        skip();
    char err[512], path[1024];
    pg_configure(uri, NULL, "n1", "test_state_pg", 5);
    const char *rc[] = {"anna@pec.b.example"};
    struct quarantine_info qi = {.qid = "00000000000000AB", .reason = "virus Eicar",
                                 .sender = "m@a", .rcpts = rc, .nrcpts = 1,
                                 .client_ip = "192.0.2.1"};
    fs_mkdirs("tmp-quarantine", 0700);
    assert_int_equal(quarantine_store("tmp-quarantine", &qi, "x", 1, path, sizeof path, err,
                                      sizeof err),
                     0);
    assert_int_equal(sql_ll("SELECT count(*) FROM quarantine WHERE node = 'n1' AND qid = "
                            "'00000000000000AB' AND reason = 'virus Eicar'"),
                     1);
    assert_int_equal(quarantine_purge("tmp-quarantine", time(NULL) + 2 * 86400, err, sizeof err),
                     1);
    assert_int_equal(sql_ll("SELECT count(*) FROM quarantine"), 0);
}

int main(void)
{
    uri = getenv("PEC_TEST_PG_URI");
    if (uri != NULL && uri[0] == '\0')
        uri = NULL;
    make_signer();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_evidence_chains_retention_holds),
        cmocka_unit_test(test_notice_claims_across_nodes),
        cmocka_unit_test(test_quarantine_index),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}
