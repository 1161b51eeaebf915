/*
 * test_milter_proto.c - the milter client's protocol against an in-process
 * fake filter (milter_fake.h): negotiation down to version 2, the step and
 * no-reply flags, each reply and reply code, refused recipients, body
 * chunks and SKIP, progress, timeouts, hostile packets, socket
 * specifications and connecting.  Modifications: test_milter_apply.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "filters/milter.h"
#include "milter_fake.h"

/* ---- negotiation and steps ----------------------------------------------- */

static void test_accept_all_steps(void **state)
{
    (void)state;
    struct fake f = {.actions = 0, .proto = 0};
    struct milter_result r;
    run_simple(&f, 2, &r);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_int_equal(r.version, 6);
    assert_string_equal(f.seq, "CHMRRTLLNBEQ");
    assert_int_equal(f.connect_family, '4');
    assert_string_equal(f.headers, "From=<s@src.example>\nSubject=hi\n  there\n");
    const char *want[] = {"j=mx.src.example\n", "{client_addr}=192.0.2.7\n",
                          "{client_port}=4242\n", "_=c.example [192.0.2.7]\n",
                          "{daemon_name}=mx\n", "{tls_version}=TLSv1.3\n", "{cipher_bits}=256\n",
                          "{auth_authen}=s@src.example\n", "{auth_type}=PLAIN\n", "i=Q123\n",
                          "{mail_addr}=s@src.example\n", "{mail_host}=src.example\n",
                          "{rcpt_addr}=b@dest.example\n", "{rcpt_host}=dest.example\n"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(f.macros, want[i]))
            fail_msg("macro %s missing in:\n%s", want[i], f.macros);
    milter_result_free(&r);
}

static void test_negotiate_v2(void **state)
{
    (void)state;
    struct fake f = {.version = 2};
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_int_equal(r.version, 2);
    assert_string_equal(f.seq, "CHMRLLNBEQ");   /* no DATA before version 4 */
    milter_result_free(&r);
}

static void test_negotiate_bad(void **state)
{
    (void)state;
    uint32_t bad[][3] = {{1, 0, 0}, {7, 0, 0}, {6, 0x1000, 0}, {6, 0, 0x800}};
    for (size_t i = 0; i < 4; i++) {
        struct fake f = {.version = bad[i][0], .actions = bad[i][1], .proto = bad[i][2]};
        struct milter_result r;
        run_simple(&f, 1, &r);
        assert_int_equal(r.action, MILTER_FAILED);
        assert_non_null(strstr(r.err, "negotiation"));
        milter_result_free(&r);
    }
}

static void test_no_steps(void **state)
{
    (void)state;
    /* NOCONNECT NOHELO NOMAIL NORCPT NOBODY NOHDRS NOEOH NODATA */
    struct fake f = {.proto = 0x7f | 0x200};
    struct milter_result r;
    run_simple(&f, 2, &r);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_string_equal(f.seq, "EQ");
    /* the end of message still carries the message's facts */
    assert_non_null(strstr(f.macros, "{client_addr}=192.0.2.7\n"));
    assert_non_null(strstr(f.macros, "{mail_addr}=s@src.example\n"));
    milter_result_free(&r);
}

static void test_no_reply_flags(void **state)
{
    (void)state;
    /* the fake does not answer these; a client that waited would time out */
    struct fake f = {.proto = 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x40000 | 0x80000 | 0x80};
    struct milter_result r;
    struct milter_facts fa = facts(3);
    run_fake(&f, &fa, MSG, MSG_LEN, 300, &r);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_string_equal(f.seq, "CHMRRRTLLNBEQ");
    milter_result_free(&r);
}

static void test_local_mail(void **state)
{
    (void)state;
    struct fake f = {0};
    struct milter_result r;
    struct milter_facts fa = facts(1);
    fa.client_ip = NULL;
    fa.helo = NULL;
    fa.sender = "";
    run_fake(&f, &fa, MSG, MSG_LEN, 2000, &r);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_int_equal(f.connect_family, 'U');
    assert_string_equal(f.seq, "CMRTLLNBEQ");
    assert_non_null(strstr(f.macros, "{mail_addr}=\n"));
    milter_result_free(&r);
}

/* ---- verdicts -------------------------------------------------------------- */

static char g_at, g_reply;
static const char *g_code;

static int hook_verdict(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != g_at)
        return 0;
    if (g_code)
        fk_send(f, 'y', g_code, strlen(g_code) + 1);
    else
        fk_send(f, g_reply, NULL, 0);
    return 1;
}

static struct milter_result verdict(char at, char reply, const char *code, char *seq)
{
    struct fake f = {.hook = hook_verdict, .actions = ALL_ACTIONS};
    struct milter_result r;
    g_at = at, g_reply = reply, g_code = code;
    run_simple(&f, 1, &r);
    strcpy(seq, f.seq);
    return r;
}

static void test_reject_at_connect(void **state)
{
    (void)state;
    char seq[256];
    struct milter_result r = verdict('C', 'r', NULL, seq);
    assert_int_equal(r.action, MILTER_REJECT);
    assert_int_equal(r.smtp_code, 550);
    assert_string_equal(r.reply, "550 5.7.1 Command rejected");
    assert_string_equal(seq, "CQ");
    milter_result_free(&r);
}

static void test_tempfail_at_mail(void **state)
{
    (void)state;
    char seq[256];
    struct milter_result r = verdict('M', 't', NULL, seq);
    assert_int_equal(r.action, MILTER_TEMPFAIL);
    assert_int_equal(r.smtp_code, 451);
    assert_string_equal(seq, "CHMAQ");
    milter_result_free(&r);
}

static void test_replycode_eom(void **state)
{
    (void)state;
    char seq[256];
    struct milter_result r = verdict('E', 0, "554 5.7.1 Spam detected", seq);
    assert_int_equal(r.action, MILTER_REJECT);
    assert_int_equal(r.smtp_code, 554);
    assert_string_equal(r.reply, "554 5.7.1 Spam detected");
    milter_result_free(&r);
    r = verdict('E', 0, "421 4.3.0 busy", seq);
    assert_int_equal(r.action, MILTER_TEMPFAIL);
    assert_int_equal(r.smtp_code, 421);
    milter_result_free(&r);
    r = verdict('E', 0, "hello", seq);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "malformed reply code"));
    milter_result_free(&r);
}

static void test_discard(void **state)
{
    (void)state;
    char seq[256];
    struct milter_result r = verdict('E', 'd', NULL, seq);
    assert_int_equal(r.action, MILTER_DISCARD);
    milter_result_free(&r);
}

static void test_accept_at_header(void **state)
{
    (void)state;
    char seq[256];
    struct milter_result r = verdict('L', 'a', NULL, seq);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_int_equal(r.smtp_code, 0);
    assert_string_equal(seq, "CHMRTLQ");    /* nothing after the accept */
    milter_result_free(&r);
}

static void test_unknown_reply(void **state)
{
    (void)state;
    char seq[256];
    struct milter_result r = verdict('H', 'Z', NULL, seq);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "unknown reply 0x5a"));
    milter_result_free(&r);
}

/* ---- recipients ------------------------------------------------------------ */

/* n = 0: only b refused (550); 1: all refused (451); 2: b 550, the others plain REJECT */
static int hook_rcpt(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)len;
    if (cmd != 'R')
        return 0;
    bool b = strstr(d, "b@") != NULL;
    const char *m = f->n == 1 ? "451 4.2.0 try later" : "550 5.1.1 no such user";
    if (b || f->n == 1)
        fk_send(f, 'y', m, strlen(m) + 1);
    else if (f->n == 2)
        fk_send(f, 'r', NULL, 0);
    else
        fk_send(f, 'c', NULL, 0);
    return 1;
}

static void test_rcpt_one_refused(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_rcpt};
    struct milter_result r;
    run_simple(&f, 3, &r);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_string_equal(f.seq, "CHMRRRTLLNBEQ");
    assert_int_equal(r.nrefused, 1);
    assert_int_equal(r.refused[0].rcpt, 1);
    assert_int_equal(r.refused[0].smtp_code, 550);
    assert_string_equal(r.refused[0].reply, "550 5.1.1 no such user");
    milter_result_free(&r);
}

static void test_rcpt_all_refused(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_rcpt, .n = 2};   /* plain REJECT for each */
    struct milter_result r;
    run_simple(&f, 3, &r);
    assert_int_equal(r.action, MILTER_REJECT);
    assert_int_equal(r.nrefused, 3);
    assert_string_equal(r.reply, "550 5.7.1 Command rejected");   /* the first (a) */
    assert_string_equal(r.refused[1].reply, "550 5.1.1 no such user");
    assert_string_equal(f.seq, "CHMRRRAQ");
    milter_result_free(&r);

    struct fake g = {.hook = hook_rcpt, .n = 1};   /* temporary for each */
    run_simple(&g, 2, &r);
    assert_int_equal(r.action, MILTER_TEMPFAIL);
    assert_int_equal(r.smtp_code, 451);
    assert_string_equal(r.reply, "451 4.2.0 try later");
    milter_result_free(&r);
}

/* ---- body ---------------------------------------------------------------- */

static int hook_skip(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'B')
        return 0;
    fk_send(f, 's', NULL, 0);
    return 1;
}

static char *big_message(size_t body, size_t *len)
{
    const char *h = "Subject: big\r\n\r\n";
    char *m = malloc(strlen(h) + body + 1);
    strcpy(m, h);
    for (size_t i = 0; i < body; i++)
        m[strlen(h) + i] = i % 80 == 78 ? '\r' : i % 80 == 79 ? '\n' : 'x';
    *len = strlen(h) + body;
    m[*len] = '\0';
    return m;
}

static void test_body_chunks(void **state)
{
    (void)state;
    size_t len;
    char *m = big_message(200000, &len);
    struct fake f = {0};
    struct milter_result r;
    struct milter_facts fa = facts(1);
    run_fake(&f, &fa, m, len, 2000, &r);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_string_equal(f.seq, "CHMRTLNBBBBEQ");
    assert_int_equal(f.max_body_chunk, 65535);
    assert_int_equal(f.body_octets, 200000);
    milter_result_free(&r);

    struct fake g = {.hook = hook_skip, .proto = 0x400};
    run_fake(&g, &fa, m, len, 2000, &r);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_string_equal(g.seq, "CHMRTLNBEQ");
    milter_result_free(&r);

    struct fake h = {.hook = hook_skip};      /* SKIP not negotiated */
    run_fake(&h, &fa, m, len, 2000, &r);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "SKIP"));
    milter_result_free(&r);
    free(m);
}

/* ---- end of message: progress, modifications -------------------------------- */

static int hook_progress(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'E')
        return 0;
    for (int i = 0; i < 4; i++) {
        usleep(150000);
        fk_send(f, 'p', NULL, 0);
    }
    usleep(150000);
    fk_send(f, 'a', NULL, 0);
    return 1;
}

static void test_progress(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_progress};
    struct milter_result r;
    struct milter_facts fa = facts(1);
    run_fake(&f, &fa, MSG, MSG_LEN, 300, &r);   /* 750 ms in all, 150 ms gaps */
    assert_int_equal(r.action, MILTER_ACCEPT);
    milter_result_free(&r);
}

/* ---- hostile and broken filters ------------------------------------------------ */

static const char *g_raw;
static size_t g_rawlen;
static char g_raw_at;

static int hook_raw(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != g_raw_at)
        return 0;
    if (g_rawlen && write(f->fd, g_raw, g_rawlen) < 0)
        return 1;
    if (g_rawlen != 1)
        shutdown(f->fd, SHUT_WR);     /* then the filter goes away */
    return 1;
}

static struct milter_result raw(char at, const char *bytes, size_t n, unsigned io_ms)
{
    struct fake f = {.hook = hook_raw};
    struct milter_result r;
    struct milter_facts fa = facts(1);
    g_raw = bytes, g_rawlen = n, g_raw_at = at;
    run_fake(&f, &fa, MSG, MSG_LEN, io_ms, &r);
    return r;
}

static void test_hostile_packets(void **state)
{
    (void)state;
    struct { char at; const char *bytes; size_t n; const char *err; } cases[] = {
        {'H', "\x7f\xff\xff\xff" "c", 5, "over the limit"},
        {'H', "\xff\xff\xff\xff" "h", 5, "over the limit"},
        {'H', "\0\0\0\0", 4, "empty packet"},
        {'H', "\0\0\0\x0a" "yab", 8, "closed"},
        {'H', "\0\0", 2, "closed"},
        {'E', "\0\0\0\x01" "Z", 5, "unknown reply"},
        {'O', "\0\0\0\x05" "O\0\0\0\6", 9, "negotiation"},
        {'O', "\0\0\0\x0d" "c\0\0\0\6\0\0\0\0\0\0\0\0", 17, "negotiation"},
        {'E', "\0\0\0\x05" "i\0\0\0\1", 9, "not negotiated"},
        {'M', "", 0, "closed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct milter_result r = raw(cases[i].at, cases[i].bytes, cases[i].n, 1000);
        if (r.action != MILTER_FAILED || !strstr(r.err, cases[i].err))
            fail_msg("case %zu: %s / %s", i, milter_action_name(r.action), r.err);
        milter_result_free(&r);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int hook_silent(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)f, (void)d, (void)len;
    return cmd == g_raw_at;    /* no answer at all */
}

static void test_timeouts(void **state)
{
    (void)state;
    const char stages[] = {'O', 'R', 'E'};
    for (size_t i = 0; i < 3; i++) {
        struct fake f = {.hook = hook_silent};
        struct milter_result r;
        struct milter_facts fa = facts(1);
        g_raw_at = stages[i];
        double t0 = now_s();
        run_fake(&f, &fa, MSG, MSG_LEN, 200, &r);
        double dt = now_s() - t0;
        assert_int_equal(r.action, MILTER_FAILED);
        assert_non_null(strstr(r.err, "timed out"));
        if (dt < 0.19 || dt > 1.5)
            fail_msg("stage %c: timed out after %.3f s", stages[i], dt);
        milter_result_free(&r);
    }
}

/* ---- specification and connecting ------------------------------------------------ */

static void test_spec_parse(void **state)
{
    (void)state;
    struct milter_spec s;
    char err[256];
    const char *good[] = {"unix:/run/x.sock", "local:/a", "inet:8891@127.0.0.1",
                          "inet:localhost:8891", "inet:[::1]:25", "inet6:25@::1"};
    const char *bad[] = {"", "unix:rel", "inet:8891", "inet:0@h", "inet:70000@h", "inet:x@h",
                         "inet:@h", "inet:25@", "tcp:1.2.3.4:5", "inet:h:2a"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (milter_spec_parse(&s, "m", good[i], err, sizeof err) != 0)
            fail_msg("%s: %s", good[i], err);
    assert_int_equal(s.io_timeout_ms, 10000);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        if (milter_spec_parse(&s, "m", bad[i], err, sizeof err) == 0 || !err[0])
            fail_msg("%s accepted", bad[i]);
    }
    assert_int_equal(milter_spec_parse(&s, "", "unix:/a", err, sizeof err), -1);
}

static void test_unreachable(void **state)
{
    (void)state;
    struct milter_spec s;
    struct milter_result r;
    struct milter_facts fa = facts(1);
    char err[256];
    assert_int_equal(milter_spec_parse(&s, "gone", "unix:/nonexistent/milter.sock", err, sizeof err), 0);
    double t0 = now_s();
    assert_int_equal(milter_run(&s, &fa, MSG, MSG_LEN, &r), 0);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "connect"));
    milter_result_free(&r);
    /* a closed loopback port: refused at once */
    assert_int_equal(milter_spec_parse(&s, "gone", "inet:1@127.0.0.1", err, sizeof err), 0);
    assert_int_equal(milter_run(&s, &fa, MSG, MSG_LEN, &r), 0);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_true(now_s() - t0 < 1.0);
    milter_result_free(&r);
}

static void *accept_one(void *arg)
{
    struct fake *f = arg;
    int lfd = f->fd;
    f->fd = accept(lfd, NULL, NULL);
    if (f->fd >= 0) {
        fk_main(f);
        close(f->fd);
    }
    return NULL;
}

static void test_unix_socket(void **state)
{
    (void)state;
    char path[108], sock[128], err[256];
    snprintf(path, sizeof path, "/tmp/pec-milter-test-%d.sock", (int)getpid());
    unlink(path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    strcpy(su.sun_path, path);
    assert_int_equal(bind(l, (struct sockaddr *)&su, sizeof su), 0);
    assert_int_equal(listen(l, 1), 0);
    struct fake f = {.fd = l, .version = 6};
    pthread_t t;
    pthread_create(&t, NULL, accept_one, &f);
    struct milter_spec s;
    snprintf(sock, sizeof sock, "unix:%s", path);
    assert_int_equal(milter_spec_parse(&s, "local", sock, err, sizeof err), 0);
    struct milter_result r;
    struct milter_facts fa = facts(1);
    assert_int_equal(milter_run(&s, &fa, MSG, MSG_LEN, &r), 0);
    pthread_join(t, NULL);
    close(l);
    unlink(path);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_string_equal(f.seq, "CHMRTLLNBEQ");
    milter_result_free(&r);
}


int main(void)
{
    signal(SIGPIPE, SIG_IGN);     /* the fake filter writes to clients that are gone */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_all_steps),  cmocka_unit_test(test_negotiate_v2),
        cmocka_unit_test(test_negotiate_bad),     cmocka_unit_test(test_no_steps),
        cmocka_unit_test(test_no_reply_flags),    cmocka_unit_test(test_local_mail),
        cmocka_unit_test(test_reject_at_connect), cmocka_unit_test(test_tempfail_at_mail),
        cmocka_unit_test(test_replycode_eom),     cmocka_unit_test(test_discard),
        cmocka_unit_test(test_accept_at_header),  cmocka_unit_test(test_unknown_reply),
        cmocka_unit_test(test_rcpt_one_refused),  cmocka_unit_test(test_rcpt_all_refused),
        cmocka_unit_test(test_body_chunks),       cmocka_unit_test(test_progress),
        cmocka_unit_test(test_hostile_packets),   cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_spec_parse),        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_unix_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
