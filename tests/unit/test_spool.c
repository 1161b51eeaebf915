/*
 * test_spool.c - spool files: a round trip keeps every envelope field and
 * the data byte for byte; a file cut anywhere before END is refused; a
 * recycled file is reused with nothing of its previous message left.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/lib.h"
#include "queue/queue.h"

static void make_env(struct queue_env *env)
{
    static struct queue_rcpt rcpts[2] = {
        {.addr = "a@example.it", .orig = "A@example.it", .notify = 3, .orcpt = "rfc822;A@example.it"},
        {.addr = "postmaster@example.it", .orig = "postmaster", .notify = 0, .orcpt = NULL},
    };
    memset(env, 0, sizeof *env);
    queue_new_id(env->qid);
    env->arrival = 1700000000;
    env->sender = "s@sender.it";
    env->rcpts = rcpts;
    env->nrcpts = 2;
    env->body = 2;
    env->ret = 2;
    env->requiretls = true;
    env->envid = "ENV-1";
    env->client_ip = "127.0.0.1";
    env->helo = "client.test";
    env->proto = "ESMTPS";
    env->auth_user = "s@sender.it";
    env->auth_mech = "LOGIN";
}

static void test_roundtrip(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/incoming", TEST_TMPDIR);
    assert_int_equal(fs_mkdirs(dir, 0700), 0);
    struct queue_env env;
    make_env(&env);
    struct spool_writer *w = spool_writer_open(TEST_TMPDIR, -1, NULL, &env);
    assert_non_null(w);
    const char data[] = "Subject: x\r\n\r\nbody\0with NUL\r\n";
    assert_int_equal(spool_writer_data(w, data, sizeof data - 1), 0);
    assert_int_equal(spool_writer_data(w, "more\r\n", 6), 0);
    assert_int_equal(spool_writer_finish(w), 0);
    spool_writer_free(w);

    char path[600], err[256];
    snprintf(path, sizeof path, "%s/incoming/%s", TEST_TMPDIR, env.qid);
    struct queue_env got;
    char *d;
    size_t dlen;
    assert_int_equal(spool_read(path, &got, &d, &dlen, err, sizeof err), 0);
    assert_string_equal(got.qid, env.qid);
    assert_int_equal(got.arrival, 1700000000);
    assert_string_equal(got.sender, "s@sender.it");
    assert_int_equal(got.nrcpts, 2);
    assert_string_equal(got.rcpts[0].addr, "a@example.it");
    assert_string_equal(got.rcpts[0].orig, "A@example.it");
    assert_int_equal(got.rcpts[0].notify, 3);
    assert_string_equal(got.rcpts[0].orcpt, "rfc822;A@example.it");
    assert_null(got.rcpts[1].orcpt);
    assert_int_equal(got.body, 2);
    assert_int_equal(got.ret, 2);
    assert_true(got.requiretls);
    assert_false(got.smtputf8);
    assert_string_equal(got.envid, "ENV-1");
    assert_string_equal(got.proto, "ESMTPS");
    assert_string_equal(got.auth_user, "s@sender.it");
    assert_string_equal(got.auth_mech, "LOGIN");
    assert_int_equal(dlen, sizeof data - 1 + 6);
    assert_memory_equal(d, data, sizeof data - 1);
    assert_int_equal(got.size, dlen);
    free(d);
    queue_env_free(&got);

    /* every truncation is refused, never half-delivered */
    char *whole;
    size_t len;
    assert_int_equal(fs_read_file(path, &whole, &len, 1 << 20), 0);
    char cut[600];
    snprintf(cut, sizeof cut, "%s/incoming/cut", TEST_TMPDIR);
    for (size_t n = 0; n < len; n++) {
        int fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_int_equal(fs_write_all(fd, whole, n), 0);
        close(fd);
        if (spool_read(cut, &got, &d, &dlen, err, sizeof err) != -1)
            fail_msg("a file cut at %zu of %zu octets was accepted", n, len);
    }
    /* a flipped length octet is caught too */
    whole[len - 3] ^= 1;
    int fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    fs_write_all(fd, whole, len);
    close(fd);
    assert_int_equal(spool_read(cut, &got, &d, &dlen, err, sizeof err), -1);
    free(whole);
    unlink(cut);
    unlink(path);
}

/* Writes data in a new spool file of top/incoming (taken from free/ when it
 * holds one) and returns its path and size. */
static void write_one(const char *top, struct queue_env *env, const char *data, size_t len,
                      char *path, size_t pathsz, off_t *size)
{
    make_env(env);
    struct spool_writer *w = spool_writer_open(top, -1, NULL, env);
    assert_non_null(w);
    assert_int_equal(spool_writer_data(w, data, len), 0);
    assert_int_equal(spool_writer_finish(w), 0);
    spool_writer_free(w);
    snprintf(path, pathsz, "%s/incoming/%s", top, env->qid);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    *size = st.st_size;
}

static void read_back(const char *path, const char *data, size_t len, struct queue_env *got)
{
    char *d, err[256];
    size_t dlen;
    if (spool_read(path, got, &d, &dlen, err, sizeof err) != 0)
        fail_msg("%s: %s", path, err);
    assert_int_equal(dlen, len);
    assert_memory_equal(d, data, len);
    free(d);
}

/* A long message's file, recycled and reused for a short one, reads as the
 * short one: a PAD record covers the old bytes (its blocks stay allocated),
 * and the records appended later are read after it.  A file much longer
 * (over SPOOL_PAD_MAX) or too little longer for a PAD header is cut. */
static void test_recycle(void **state)
{
    (void)state;
    char top[512], dir[600];
    snprintf(top, sizeof top, "%s/recycle", TEST_TMPDIR);
    snprintf(dir, sizeof dir, "%s/incoming", top);
    assert_int_equal(fs_mkdirs(dir, 0700), 0);
    assert_int_equal(recycle_open(top), 0);
    assert_int_equal(recycle_count(top), 0);

    struct queue_env env, got;
    char path[700];
    off_t size, size2;
    static char big[20000], huge[100000];
    memset(big, 'x', sizeof big);
    memset(huge, 'h', sizeof huge);
    write_one(top, &env, big, sizeof big, path, sizeof path, &size);
    assert_int_equal(recycle_put(top, path), 0);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(recycle_count(top), 1);

    write_one(top, &env, "short\r\n", 7, path, sizeof path, &size2);
    assert_int_equal(recycle_count(top), 0);   /* the free file was taken */
    assert_int_equal(size2, size);             /* kept its length */
    read_back(path, "short\r\n", 7, &got);
    assert_false(got.processed);
    assert_int_equal(got.rcpts[0].status, QR_PENDING);
    queue_env_free(&got);
    /* records appended after the PAD are read */
    assert_int_equal(spool_append_status(path, 0, QR_DONE, "250 2.0.0 ok"), 0);
    assert_int_equal(spool_append_processed(path, 2, false), 0);
    read_back(path, "short\r\n", 7, &got);
    assert_true(got.processed);
    assert_int_equal(got.rcpts[0].status, QR_DONE);
    assert_string_equal(got.rcpts[0].status_text, "250 2.0.0 ok");
    queue_env_free(&got);

    /* much longer than the PAD allows: cut */
    assert_int_equal(recycle_put(top, path), 0);
    write_one(top, &env, huge, sizeof huge, path, sizeof path, &size);
    assert_int_equal(recycle_put(top, path), 0);
    write_one(top, &env, "short\r\n", 7, path, sizeof path, &size2);
    assert_true(size2 < 1000);
    read_back(path, "short\r\n", 7, &got);
    queue_env_free(&got);

    /* 3 octets longer (110 and 107 octets of data, END lengths of as many
     * digits): no room for a PAD header, cut to what was written */
    assert_int_equal(recycle_put(top, path), 0);
    write_one(top, &env, big, 110, path, sizeof path, &size);
    assert_int_equal(recycle_put(top, path), 0);
    write_one(top, &env, big, 107, path, sizeof path, &size2);
    assert_int_equal(size2, size - 3);
    read_back(path, big, 107, &got);
    queue_env_free(&got);
    char *d, err[256];
    size_t dlen;

    /* spool_write_file reuses too; free/ is read back when the queue opens again */
    assert_int_equal(recycle_put(top, path), 0);
    assert_int_equal(recycle_open(top), 0);
    assert_int_equal(recycle_count(top), 1);
    assert_int_equal(spool_write_file(top, "incoming", "out.1", &env, "x\r\n", 3, true), 0);
    assert_int_equal(recycle_count(top), 0);
    snprintf(path, sizeof path, "%s/incoming/out.1", top);
    assert_int_equal(spool_read(path, &got, &d, &dlen, err, sizeof err), 0);
    assert_int_equal(dlen, 3);
    free(d);
    queue_env_free(&got);

    /* and a short message's file reused for a longer one holds all of it */
    assert_int_equal(recycle_put(top, path), 0);
    assert_int_equal(spool_write_file(top, "incoming", "out.2", &env, big, sizeof big, false), 0);
    snprintf(path, sizeof path, "%s/incoming/out.2", top);
    assert_int_equal(spool_read(path, &got, &d, &dlen, err, sizeof err), 0);
    assert_int_equal(dlen, sizeof big);
    assert_memory_equal(d, big, sizeof big);
    free(d);
    queue_env_free(&got);

    char other[700];
    /* a processor's output with a refused recipient: its STATUS record
     * follows END, the other recipient stays pending */
    struct queue_rcpt rr[2] = {{.addr = "a@x.example", .orig = "a@x.example"},
                               {.addr = "b@x.example", .orig = "b@x.example",
                                .status = QR_REFUSED, .status_text = "550 5.1.1 <b@x.example>: no"}};
    struct queue_env re = env;
    re.rcpts = rr;
    re.nrcpts = 2;
    assert_int_equal(spool_write_file(top, "incoming", "out.4", &re, "z\r\n", 3, true), 0);
    snprintf(other, sizeof other, "%s/incoming/out.4", top);
    assert_int_equal(spool_read(other, &got, &d, &dlen, err, sizeof err), 0);
    assert_int_equal(got.nrcpts, 2);
    assert_int_equal(got.rcpts[0].status, QR_PENDING);
    assert_int_equal(got.rcpts[1].status, QR_REFUSED);
    assert_string_equal(got.rcpts[1].status_text, "550 5.1.1 <b@x.example>: no");
    assert_int_equal(dlen, 3);
    free(d);
    queue_env_free(&got);
    unlink(other);

    /* a free file is never renamed over an existing one */
    snprintf(other, sizeof other, "%s/incoming/out.3", top);
    assert_int_equal(spool_write_file(top, "incoming", "out.3", &env, "y\r\n", 3, false), 0);
    assert_int_equal(recycle_put(top, other), 0);
    assert_int_equal(recycle_count(top), 1);
    errno = 0;
    assert_int_equal(recycle_take(top, path), -1);
    assert_int_equal(errno, EEXIST);
    assert_int_equal(spool_read(path, &got, &d, &dlen, err, sizeof err), 0);
    assert_int_equal(dlen, sizeof big);
    free(d);
    queue_env_free(&got);
    unlink(path);
    /* the refused free file is still in free/ (listed again when the queue
     * opens): take it out so that the next run starts empty */
    assert_int_equal(recycle_open(top), 0);
    assert_int_equal(recycle_count(top), 1);
    int fd = recycle_take(top, other);
    assert_true(fd >= 0);
    close(fd);
    unlink(other);
    assert_int_equal(recycle_count(top), 0);
}

static int id_cmp(const void *a, const void *b) { return strcmp(a, b); }

/* 1000 new ids: each QUEUE_ID_LEN upper-case hex digits, no two alike (sorted,
 * so that comparing neighbours compares every pair). */
static void test_ids(void **state)
{
    (void)state;
    enum { N = 1000 };
    static char ids[N][QUEUE_ID_LEN + 1];
    for (int i = 0; i < N; i++) {
        queue_new_id(ids[i]);
        assert_int_equal(strlen(ids[i]), QUEUE_ID_LEN);
        assert_true(strspn(ids[i], "0123456789ABCDEF") == QUEUE_ID_LEN);
    }
    qsort(ids, N, sizeof ids[0], id_cmp);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_ids),
                                       cmocka_unit_test(test_recycle)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
