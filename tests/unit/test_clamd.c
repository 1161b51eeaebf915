/*
 * test_clamd.c - the clamd reply parser (a table; each case also fed with
 * an IDSESSION "N: " prefix and a NUL terminator) and the clamd client
 * against a scripted fake clamd on a unix socket (a mock is fine here: the
 * real clamd runs in tests/integration/test_antivirus.py).
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
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "filters/clamd.h"
#include "lib/lib.h"

static const struct {
    const char *reply;
    enum clamd_status status;
    const char *name;
} cases[] = {
    {"stream: OK", CLAMD_CLEAN, ""},
    {"stream: Eicar-Signature FOUND", CLAMD_INFECTED, "Eicar-Signature"},
    {"stream: Win.Test.EICAR_HDB-1 FOUND", CLAMD_INFECTED, "Win.Test.EICAR_HDB-1"},
    {"stream: Eicar-Signature.UNOFFICIAL FOUND\n", CLAMD_INFECTED, "Eicar-Signature.UNOFFICIAL"},
    {"INSTREAM size limit exceeded. ERROR", CLAMD_TOO_BIG, ""},
    {"Can't allocate memory ERROR", CLAMD_ERROR, ""},
    {"COMMAND READ TIMED OUT", CLAMD_ERROR, ""},
    {"stream: FOUND", CLAMD_ERROR, ""},
    {"stream:  FOUND", CLAMD_ERROR, ""},
    {"stream: two words FOUND", CLAMD_ERROR, ""},
    {"stream: OK trailing", CLAMD_ERROR, ""},
    {"", CLAMD_ERROR, ""},
    {"UNKNOWN COMMAND", CLAMD_ERROR, ""},
    {"stream: \x01" "bad FOUND", CLAMD_ERROR, ""},
};

static void check(const char *buf, size_t len, size_t i)
{
    struct clamd_verdict v;
    clamd_parse_reply(buf, len, &v);
    if (v.status != cases[i].status)
        fail_msg("case %zu (%s): status %d, want %d", i, cases[i].reply, v.status,
                 cases[i].status);
    assert_string_equal(v.name, cases[i].name);
    if (v.status != CLAMD_CLEAN && v.status != CLAMD_INFECTED)
        assert_true(v.detail[0] != '\0');
}

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        check(cases[i].reply, strlen(cases[i].reply), i);
        int n = snprintf(buf, sizeof buf, "17: %s", cases[i].reply);
        check(buf, (size_t)n + 1, i);   /* with the NUL */
    }
}

static void test_parse_long_name(void **state)
{
    (void)state;
    char buf[600];
    memset(buf, 'A', sizeof buf);
    memcpy(buf, "stream: ", 8);
    memcpy(buf + sizeof buf - 6, " FOUND", 6);
    struct clamd_verdict v;
    clamd_parse_reply(buf, sizeof buf, &v);
    assert_int_equal(v.status, CLAMD_ERROR);
}

/* ---- a scripted fake clamd --------------------------------------------------- */

struct fake {
    int lfd;
    char path[256];
    const char *answer;    /* per INSTREAM */
    int sessions;          /* connections accepted */
    int scans;
    bool close_after_first;
};

static bool read_n(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static bool read_cmd(int fd, char *buf, size_t cap)
{
    for (size_t i = 0; i < cap; i++) {
        if (!read_n(fd, buf + i, 1))
            return false;
        if (buf[i] == '\0')
            return true;
    }
    return false;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        int c = accept(f->lfd, NULL, NULL);
        if (c == -1)
            return NULL;
        f->sessions++;
        char cmd[64];
        unsigned id = 0;
        while (read_cmd(c, cmd, sizeof cmd)) {
            if (strcmp(cmd, "zIDSESSION") == 0 || strcmp(cmd, "zEND") == 0)
                continue;
            if (strcmp(cmd, "zINSTREAM") != 0)
                break;
            unsigned char h[4];
            uint32_t n;
            do {
                if (!read_n(c, h, 4))
                    goto out;
                n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
                char *tmp = malloc(n + 1);
                bool ok = read_n(c, tmp, n);
                free(tmp);
                if (!ok)
                    goto out;
            } while (n > 0);
            char rep[256];
            int k = snprintf(rep, sizeof rep, "%u: %s", ++id, f->answer);
            f->scans++;
            (void)!write(c, rep, (size_t)k + 1);
            if (f->close_after_first)
                break;
        }
    out:
        close(c);
    }
}

static struct fake *fake_start(const char *answer)
{
    struct fake *f = calloc(1, sizeof *f);
    f->answer = answer;
    fs_mkdirs(TEST_TMPDIR, 0700);
    snprintf(f->path, sizeof f->path, "%s/clamd-%d.sock", TEST_TMPDIR, getpid());
    unlink(f->path);
    f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    str_copy(un.sun_path, f->path, sizeof un.sun_path);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&un, sizeof un), 0);
    listen(f->lfd, 8);
    pthread_t t;
    pthread_create(&t, NULL, fake_main, f);
    pthread_detach(t);
    return f;
}

static void test_pool_reuses_the_session(void **state)
{
    (void)state;
    struct fake *f = fake_start("stream: OK");
    char addr[300];
    snprintf(addr, sizeof addr, "unix:%s", f->path);
    struct clamd *c = clamd_new(addr, 2000, 2);
    char *big = calloc(1, 200000);   /* several chunks */
    struct clamd_verdict v;
    for (int i = 0; i < 5; i++) {
        clamd_scan(c, big, 200000, &v);
        assert_int_equal(v.status, CLAMD_CLEAN);
    }
    assert_int_equal(f->sessions, 1);
    assert_int_equal(f->scans, 5);
    /* clamd drops the session: the next scan reconnects once, transparently */
    f->close_after_first = true;
    clamd_scan(c, "x", 1, &v);
    clamd_scan(c, "x", 1, &v);
    assert_int_equal(v.status, CLAMD_CLEAN);
    assert_in_range(f->sessions, 2, 3);   /* the drop may be seen on either scan */
    clamd_free(c);
    free(big);
}

static void test_infected_and_unreachable(void **state)
{
    (void)state;
    struct fake *f = fake_start("stream: Eicar-Signature FOUND");
    char addr[300];
    snprintf(addr, sizeof addr, "unix:%s", f->path);
    struct clamd *c = clamd_new(addr, 2000, 1);
    struct clamd_verdict v;
    clamd_scan(c, "data", 4, &v);
    assert_int_equal(v.status, CLAMD_INFECTED);
    assert_string_equal(v.name, "Eicar-Signature");
    clamd_free(c);
    c = clamd_new("unix:/nonexistent/clamd.sock", 500, 1);
    clamd_scan(c, "data", 4, &v);
    assert_int_equal(v.status, CLAMD_ERROR);
    assert_non_null(strstr(v.detail, "cannot connect"));
    clamd_free(c);
    c = clamd_new("tcp:127.0.0.1:1", 500, 1);
    clamd_scan(c, "data", 4, &v);
    assert_int_equal(v.status, CLAMD_ERROR);
    clamd_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_long_name),
        cmocka_unit_test(test_pool_reuses_the_session),
        cmocka_unit_test(test_infected_and_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
