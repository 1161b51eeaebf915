/*
 * test_store.c - users file (Dovecot passwd-file) and Maildir delivery with
 * duplicate suppression.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/lib.h"
#include "store/store.h"

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void test_users(void **state)
{
    (void)state;
    fs_mkdirs(TEST_TMPDIR, 0700);
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/users", TEST_TMPDIR);
    unlink(path);
    char hash[256];
    assert_int_equal(users_hash_password("correct horse", hash, sizeof hash), 0);
    assert_true(strncmp(hash, "$y$", 3) == 0);
    assert_int_equal(users_file_add(path, "alice@Example.IT", hash, err, sizeof err), 0);
    assert_int_equal(users_file_add(path, "alice@example.it", hash, err, sizeof err), -1);
    /* a case variant of an existing user is the same user (issue 16 item 3) */
    assert_int_equal(users_file_add(path, "ALICE@example.it", hash, err, sizeof err), -1);
    assert_non_null(strstr(err, "exists already"));
    /* an SHA-512-crypt hash made by another tool (Dovecot's doveadm pw -s SHA512-CRYPT) */
    FILE *f = fopen(path, "a");
    fprintf(f, "# comment\n\nbob@example.it:{SHA512-CRYPT}$6$saltsalt$"
               "qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/"
               ":1000:1000::/home/bob::\n");
    fclose(f);
    struct users *u = users_load(path, err, sizeof err);
    assert_non_null(u);
    assert_int_equal(users_count(u), 2);
    assert_true(users_exists(u, "alice@example.it"));
    assert_true(users_exists(u, "alice@EXAMPLE.it"));
    assert_true(users_exists(u, "Alice@example.it"));    /* one canonical form */
    assert_int_equal(users_verify(u, "ALICE@Example.it", "correct horse"), 0);
    assert_int_equal(users_verify(u, "alice@example.it", "correct horse"), 0);
    assert_int_equal(users_verify(u, "alice@example.it", "wrong"), -1);
    assert_int_equal(users_verify(u, "nobody@example.it", "correct horse"), -1);
    assert_int_equal(users_verify(u, "bob@example.it", "password"), 0);
    users_free(u);
    assert_int_equal(users_file_del(path, "nobody@example.it", err, sizeof err), -1);
    assert_int_equal(users_file_del(path, "ALICE@example.IT", err, sizeof err), 0);
    u = users_load(path, err, sizeof err);
    assert_int_equal(users_count(u), 1);
    users_free(u);

    static const struct {
        const char *line, *err;
    } bad[] = {
        {"carol@example.it:{PLAIN}secret:::::\n", ":1: password scheme {PLAIN} is not supported"},
        {"carol@example.it:secret:::::\n", ":1: the password field is not a crypt hash"},
        {"carol:{CRYPT}$6$saltsalt$xxxxxxxxxx:::::\n", ":1: user 'carol' is not an address"},
        {"# ok\nnocolon\n", ":2: expected user@domain"},
        {"carol@example.it:{CRYPT}$6$saltsalt$xxxxxxxxxx:::::\n"
         "Carol@example.it:{CRYPT}$6$saltsalt$xxxxxxxxxx:::::\n",
         ":2: user 'Carol@example.it' appears twice (addresses are compared without case)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fopen(path, "w");
        fputs(bad[i].line, f);
        fclose(f);
        assert_null(users_load(path, err, sizeof err));
        if (strstr(err, bad[i].err) == NULL)
            fail_msg("case %zu: '%s'", i, err);
    }
    /* a missing file is an empty user list */
    unlink(path);
    u = users_load(path, err, sizeof err);
    assert_non_null(u);
    assert_int_equal(users_count(u), 0);
    users_free(u);
}

static void deliver(const char *dir, const char *name, const char *hdr, const char *data,
                    bool recovered, int expect)
{
    char tmp[600], dst[600], err[256];
    int r = maildir_prepare(dir, name, hdr, strlen(hdr), data, strlen(data), recovered, true, tmp,
                            dst, sizeof tmp, err, sizeof err);
    if (r != expect)
        fail_msg("maildir_prepare: %d (%s), expected %d", r, err, expect);
    if (r == 0)
        assert_int_equal(fs_publish(tmp, dst), 0);
}

static void test_maildir(void **state)
{
    (void)state;
    char dir[512], name[256], p[600];
    snprintf(dir, sizeof dir, "%s/mail/example.it/alice", TEST_TMPDIR);
    const char hdr[] = "Return-Path: <s@x.it>\r\n";
    const char data[] = "Subject: t\r\n\r\nbody\r\n";
    maildir_name(name, sizeof name, 1700000000, "0123456789ABCDEF", 1,
                 sizeof hdr - 1 + sizeof data - 1);
    assert_non_null(strstr(name, "1700000000.Q0123456789ABCDEFR1."));
    assert_non_null(strstr(name, ",S=43"));
    deliver(dir, name, hdr, data, false, 0);
    snprintf(p, sizeof p, "%s/new", dir);
    assert_int_equal(count_dir(p), 1);
    /* the same delivery again after a crash: found in new/, nothing written */
    deliver(dir, name, hdr, data, true, 1);
    /* ...and not recovered but racing: publishing finds it, still one copy, no tmp/ file */
    deliver(dir, name, hdr, data, false, 0);
    assert_int_equal(count_dir(p), 1);
    snprintf(p, sizeof p, "%s/tmp", dir);
    assert_int_equal(count_dir(p), 0);
    /* the user's IMAP server moved it to cur/ with flags: still a duplicate */
    char from[800], to[800];
    snprintf(from, sizeof from, "%s/new/%s", dir, name);
    snprintf(to, sizeof to, "%s/cur/%s:2,S", dir, name);
    assert_int_equal(rename(from, to), 0);
    deliver(dir, name, hdr, data, true, 1);
    snprintf(p, sizeof p, "%s/new", dir);
    assert_int_equal(count_dir(p), 0);
    /* delivered again on another host (its name in the file name): a node
     * that took the spool of the first over, or a restored queue; the copy
     * is found all the same, in cur/ and new/ */
    char other[256];
    str_copy(other, name, sizeof other);
    char *host = strstr(other, "R1.") + 3;
    memcpy(host, "zz", 2);
    deliver(dir, other, hdr, data, true, 1);
    snprintf(from, sizeof from, "%s/new/%s", dir, name);
    assert_int_equal(rename(to, from), 0);
    deliver(dir, other, hdr, data, true, 1);
    assert_int_equal(rename(from, to), 0);
    /* a copy for another recipient (R11, R1 as prefix) is not taken for it */
    char r2[256];
    maildir_name(r2, sizeof r2, 1700000000, "0123456789ABCDEF", 11,
                 sizeof hdr - 1 + sizeof data - 1);
    deliver(dir, r2, hdr, data, true, 0);
    snprintf(from, sizeof from, "%s/new/%s", dir, r2);
    assert_int_equal(unlink(from), 0);
    /* the content is stored byte for byte, CRLF kept */
    char *got;
    size_t len;
    assert_int_equal(fs_read_file(to, &got, &len, 4096), 0);
    assert_int_equal(len, sizeof hdr - 1 + sizeof data - 1);
    assert_memory_equal(got + sizeof hdr - 1, data, sizeof data - 1);
    free(got);
    /* a mailbox path that is a file: an error with a reason */
    char bad[600], tmp[600], dst[600], err[256];
    snprintf(bad, sizeof bad, "%s/file", TEST_TMPDIR);
    FILE *f = fopen(bad, "w");
    fclose(f);
    assert_int_equal(maildir_prepare(bad, name, hdr, 1, data, 1, false, true, tmp, dst, sizeof tmp,
                                     err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
}

/* fs_dir_stat remembers directories for a while; a mailbox removed within
 * that time is created again by the next delivery, not refused. */
static void test_dir_seen(void **state)
{
    (void)state;
    char dir[512], file[600], sub[600], p[600];
    snprintf(dir, sizeof dir, "%s/seen", TEST_TMPDIR);
    assert_int_equal(fs_mkdirs(dir, 0700), 0);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    dev_t dev = 0;
    assert_int_equal(fs_dir_stat(dir, &dev), 0);
    assert_true(dev == st.st_dev);
    snprintf(file, sizeof file, "%s/f", dir);
    FILE *f = fopen(file, "w");
    fclose(f);
    errno = 0;
    assert_int_equal(fs_dir_stat(file, NULL), -1);
    assert_int_equal(errno, ENOTDIR);
    snprintf(sub, sizeof sub, "%s/missing", dir);
    assert_int_equal(fs_dir_stat(sub, NULL), -1);
    assert_int_equal(errno, ENOENT);
    /* a Maildir delivered to, then removed by hand: still "seen"... */
    char mbox[600], name[256];
    snprintf(mbox, sizeof mbox, "%s/bob", dir);
    const char hdr[] = "Return-Path: <s@x.it>\r\n";
    const char data[] = "Subject: t\r\n\r\nbody\r\n";
    maildir_name(name, sizeof name, 1700000000, "0123456789ABCDEF", 1, 10);
    deliver(mbox, name, hdr, data, false, 0);
    snprintf(p, sizeof p, "%s/new/%s", mbox, name);
    assert_int_equal(unlink(p), 0);
    snprintf(p, sizeof p, "%s/tmp", mbox);
    assert_int_equal(fs_dir_stat(p, NULL), 0);
    assert_int_equal(rmdir(p), 0);
    assert_int_equal(fs_dir_stat(p, NULL), 0);   /* remembered */
    /* ...and the next delivery makes tmp/ again */
    deliver(mbox, name, hdr, data, false, 0);
    snprintf(p, sizeof p, "%s/new", mbox);
    assert_int_equal(count_dir(p), 1);
}

/* Same file system or not (pecd's choice of who syncs the tracking database
 * and the evidence log). */
static void test_same_fs(void **state)
{
    (void)state;
    char dir[512], file[600];
    snprintf(dir, sizeof dir, "%s/samefs", TEST_TMPDIR);
    assert_int_equal(fs_mkdirs(dir, 0700), 0);
    snprintf(file, sizeof file, "%s/f", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_true(fs_same_fs(dir, file));
    assert_true(fs_same_fs(TEST_TMPDIR, dir));
    assert_false(fs_same_fs(dir, "/proc/self"));   /* procfs */
    assert_false(fs_same_fs(dir, "/nonexistent/x"));
    unlink(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_users), cmocka_unit_test(test_maildir),
                                       cmocka_unit_test(test_dir_seen),
                                       cmocka_unit_test(test_same_fs)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
