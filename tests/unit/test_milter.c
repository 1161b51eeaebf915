/*
 * test_milter.c - the milter client against an in-process fake filter (a
 * thread on the other end of a socketpair, scripted per test): negotiation
 * down to version 2, each reply, the modifications, refused recipients,
 * the step and no-reply flags, timeouts and hostile packets; then
 * milter_apply as a set of message edits.
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

/* ---- the fake filter ------------------------------------------------------ */

struct fake;
/* Returns 1 when it answered cmd itself, 0 for the default answer. */
typedef int (*fake_hook)(struct fake *f, char cmd, const char *data, size_t len);

struct fake {
    int fd;
    uint32_t version, actions, proto;
    fake_hook hook;
    int n;                    /* free counter for hooks */
    char seq[256];            /* command letters received (no macros) */
    char macros[4096];        /* "name=value\n" */
    char headers[2048];       /* "name=value\n" as received */
    char connect_family;
    size_t max_body_chunk, body_octets;
    pthread_t thread;
};

static void fk_send(struct fake *f, char cmd, const void *data, size_t len)
{
    unsigned char h[5] = {(unsigned char)((len + 1) >> 24), (unsigned char)((len + 1) >> 16),
                          (unsigned char)((len + 1) >> 8), (unsigned char)(len + 1),
                          (unsigned char)cmd};
    if (write(f->fd, h, 5) != 5 || (len && write(f->fd, data, len) != (ssize_t)len))
        return;
}

static void fk_str2(struct fake *f, char cmd, uint32_t *idx, const char *a, const char *b)
{
    char buf[70000];
    size_t n = 0;
    if (idx) {
        uint32_t v = *idx;
        unsigned char o[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                              (unsigned char)(v >> 8), (unsigned char)v};
        memcpy(buf, o, 4);
        n = 4;
    }
    memcpy(buf + n, a, strlen(a) + 1);
    n += strlen(a) + 1;
    if (b) {
        memcpy(buf + n, b, strlen(b) + 1);
        n += strlen(b) + 1;
    }
    fk_send(f, cmd, buf, n);
}

static int read_n(int fd, char *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void fk_record_macros(struct fake *f, const char *d, size_t len)
{
    size_t off = 1;  /* after the stage letter */
    while (off < len) {
        const char *name = d + off;
        off += strlen(name) + 1;
        if (off >= len)
            break;
        const char *val = d + off;
        off += strlen(val) + 1;
        size_t l = strlen(f->macros);
        snprintf(f->macros + l, sizeof f->macros - l, "%s=%s\n", name, val);
    }
}

static bool no_reply(struct fake *f, char cmd)
{
    static const struct { char cmd; uint32_t flag; } nr[] = {
        {'C', 0x1000}, {'H', 0x2000}, {'M', 0x4000}, {'R', 0x8000}, {'T', 0x10000},
        {'N', 0x40000}, {'B', 0x80000}, {'L', 0x80}};
    for (size_t i = 0; i < sizeof nr / sizeof nr[0]; i++)
        if (nr[i].cmd == cmd)
            return f->proto & nr[i].flag;
    return false;
}

static void *fk_main(void *arg)
{
    struct fake *f = arg;
    char *d = malloc(1 << 20);
    for (;;) {
        unsigned char h[4];
        char cmd;
        if (read_n(f->fd, (char *)h, 4) < 0)
            break;
        size_t len = ((size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3]) - 1;
        if (len >= (1 << 20) || read_n(f->fd, &cmd, 1) < 0 || read_n(f->fd, d, len) < 0)
            break;
        d[len] = '\0';
        if (cmd == 'D') {
            fk_record_macros(f, d, len);
            continue;
        }
        size_t l = strlen(f->seq);
        if (l + 1 < sizeof f->seq && cmd != 'O')
            f->seq[l] = cmd;
        if (cmd == 'C')
            f->connect_family = d[strlen(d) + 1];
        if (cmd == 'L') {
            l = strlen(f->headers);
            snprintf(f->headers + l, sizeof f->headers - l, "%s=%s\n", d, d + strlen(d) + 1);
        }
        if (cmd == 'B') {
            f->body_octets += len;
            if (len > f->max_body_chunk)
                f->max_body_chunk = len;
        }
        if (cmd == 'Q')
            break;
        if (f->hook && f->hook(f, cmd, d, len))
            continue;
        if (cmd == 'O') {
            unsigned char o[12];
            uint32_t v[3] = {f->version, f->actions, f->proto};
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 4; j++)
                    o[i * 4 + j] = (unsigned char)(v[i] >> (24 - 8 * j));
            fk_send(f, 'O', o, 12);
        } else if (cmd != 'A' && !no_reply(f, cmd)) {
            fk_send(f, cmd == 'E' ? 'a' : 'c', NULL, 0);
        }
    }
    free(d);
    return NULL;
}

static const char *const RCPTS[] = {"a@dest.example", "b@dest.example", "c@dest.example"};
static const char MSG[] = "From: <s@src.example>\r\nSubject: hi\r\n  there\r\n\r\nbody\r\n";

static struct milter_facts facts(size_t nrcpts)
{
    return (struct milter_facts){
        .hostname = "mx.src.example", .queue_id = "Q123", .client_ip = "192.0.2.7",
        .client_port = 4242, .client_name = "c.example", .helo = "c.example",
        .tls_version = "TLSv1.3", .tls_cipher = "TLS_AES_256_GCM_SHA384",
        .auth_user = "s@src.example", .sender = "s@src.example", .rcpts = RCPTS,
        .nrcpts = nrcpts, .daemon_name = "mx", .auth_type = "PLAIN", .tls_cipher_bits = 256};
}

static struct milter_spec spec_ms(unsigned io, unsigned eom)
{
    struct milter_spec s;
    char err[128];
    assert_int_equal(milter_spec_parse(&s, "fake", "unix:/nonexistent/x", err, sizeof err), 0);
    s.io_timeout_ms = io;
    s.eom_timeout_ms = eom;
    return s;
}

/* Runs one conversation against a fake with the given options. */
static void run_fake(struct fake *f, const struct milter_facts *fa, const char *msg, size_t len,
                     unsigned io_ms, struct milter_result *res)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    f->fd = sv[1];
    if (!f->version)
        f->version = 6;
    assert_int_equal(pthread_create(&f->thread, NULL, fk_main, f), 0);
    struct milter_spec s = spec_ms(io_ms, io_ms);
    assert_int_equal(milter_run_fd(&s, sv[0], fa, msg, len, res), 0);
    close(sv[0]);
    pthread_join(f->thread, NULL);
    close(sv[1]);
}

static void run_simple(struct fake *f, size_t nrcpts, struct milter_result *res)
{
    struct milter_facts fa = facts(nrcpts);
    run_fake(f, &fa, MSG, sizeof MSG - 1, 2000, res);
}

#define ALL_ACTIONS 0xffu

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
    run_fake(&f, &fa, MSG, sizeof MSG - 1, 300, &r);
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
    run_fake(&f, &fa, MSG, sizeof MSG - 1, 2000, &r);
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
    run_fake(&f, &fa, MSG, sizeof MSG - 1, 300, &r);   /* 750 ms in all, 150 ms gaps */
    assert_int_equal(r.action, MILTER_ACCEPT);
    milter_result_free(&r);
}

static int hook_mods(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'E')
        return 0;
    uint32_t i0 = 0, i2 = 2;
    fk_str2(f, 'h', NULL, "X-Added", "yes");
    fk_str2(f, 'i', &i0, "X-Top", "first");
    fk_str2(f, 'm', &i2, "Received", "");
    fk_send(f, 'b', "new ", 4);
    fk_send(f, 'p', NULL, 0);
    fk_send(f, 'b', "body\r\n", 6);
    fk_str2(f, '+', NULL, "<x@dest.example>", NULL);
    fk_str2(f, '2', NULL, "<y@dest.example>", "NOTIFY=NEVER");
    fk_str2(f, '-', NULL, "<a@dest.example>", NULL);
    fk_str2(f, 'e', NULL, "<bounce@src.example>", NULL);
    fk_str2(f, 'q', NULL, "looks odd", NULL);
    fk_send(f, 'c', NULL, 0);
    return 1;
}

static void test_modifications(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_mods, .actions = ALL_ACTIONS};
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_QUARANTINE);
    assert_string_equal(r.quarantine_reason, "looks odd");
    assert_int_equal(r.nmods, 8);
    assert_int_equal(r.mods[0].kind, MILTER_MOD_ADD_HEADER);
    assert_string_equal(r.mods[0].name, "X-Added");
    assert_int_equal(r.mods[1].kind, MILTER_MOD_INSERT_HEADER);
    assert_int_equal(r.mods[1].index, 0);
    assert_int_equal(r.mods[2].kind, MILTER_MOD_CHANGE_HEADER);
    assert_int_equal(r.mods[2].index, 2);
    assert_string_equal(r.mods[2].value, "");
    assert_int_equal(r.mods[3].kind, MILTER_MOD_REPLACE_BODY);
    assert_int_equal(r.mods[3].len, 10);
    assert_memory_equal(r.mods[3].data, "new body\r\n", 10);
    assert_int_equal(r.mods[4].kind, MILTER_MOD_ADD_RCPT);
    assert_string_equal(r.mods[4].value, "x@dest.example");
    assert_string_equal(r.mods[5].value, "y@dest.example");
    assert_int_equal(r.mods[6].kind, MILTER_MOD_DEL_RCPT);
    assert_string_equal(r.mods[6].value, "a@dest.example");
    assert_int_equal(r.mods[7].kind, MILTER_MOD_CHANGE_FROM);
    assert_string_equal(r.mods[7].value, "bounce@src.example");
    milter_result_free(&r);
    assert_null(r.mods);
}

static void test_mod_not_negotiated(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_mods, .actions = 0x01};   /* ADDHDRS only */
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "not negotiated"));
    assert_int_equal(r.nmods, 0);
    milter_result_free(&r);
}

static int hook_early_mod(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'N')
        return 0;
    fk_str2(f, 'h', NULL, "X-Early", "1");
    fk_send(f, 'c', NULL, 0);
    return 1;
}

static void test_mod_before_eom(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_early_mod, .actions = ALL_ACTIONS};
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "before the end of the message"));
    milter_result_free(&r);
}

static const char *g_bad_name, *g_bad_value;

static int hook_bad_header(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'E')
        return 0;
    fk_str2(f, 'h', NULL, g_bad_name, g_bad_value);
    fk_send(f, 'a', NULL, 0);
    return 1;
}

static void test_mod_bad_header(void **state)
{
    (void)state;
    const char *cases[][2] = {{"X-A", "x\r\nBcc: evil@example"}, {"Bad Name", "v"},
                              {"X:Y", "v"}, {"", "v"}, {"X-A", "v\r"}};
    for (size_t i = 0; i < 5; i++) {
        struct fake f = {.hook = hook_bad_header, .actions = ALL_ACTIONS};
        struct milter_result r;
        g_bad_name = cases[i][0], g_bad_value = cases[i][1];
        run_simple(&f, 1, &r);
        if (r.action != MILTER_FAILED)
            fail_msg("case %zu accepted", i);
        milter_result_free(&r);
    }
}

static int hook_many_mods(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'E')
        return 0;
    for (int i = 0; i < 1001; i++)
        fk_str2(f, 'h', NULL, "X-N", "1");
    fk_send(f, 'a', NULL, 0);
    return 1;
}

static void test_too_many_mods(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_many_mods, .actions = ALL_ACTIONS};
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "more than 1000"));
    milter_result_free(&r);
}

static int hook_big_body(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'E')
        return 0;
    char *chunk = calloc(1, 600000);
    for (int i = 0; i < 4; i++)      /* 2.4 MB for a 60-octet message */
        fk_send(f, 'b', chunk, 600000);
    free(chunk);
    fk_send(f, 'a', NULL, 0);
    return 1;
}

static void test_replbody_limit(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_big_body, .actions = ALL_ACTIONS};
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "limit"));
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
    run_fake(&f, &fa, MSG, sizeof MSG - 1, io_ms, &r);
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
        run_fake(&f, &fa, MSG, sizeof MSG - 1, 200, &r);
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
    assert_int_equal(milter_run(&s, &fa, MSG, sizeof MSG - 1, &r), 0);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "connect"));
    milter_result_free(&r);
    /* a closed loopback port: refused at once */
    assert_int_equal(milter_spec_parse(&s, "gone", "inet:1@127.0.0.1", err, sizeof err), 0);
    assert_int_equal(milter_run(&s, &fa, MSG, sizeof MSG - 1, &r), 0);
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
    assert_int_equal(milter_run(&s, &fa, MSG, sizeof MSG - 1, &r), 0);
    pthread_join(t, NULL);
    close(l);
    unlink(path);
    assert_int_equal(r.action, MILTER_ACCEPT);
    assert_string_equal(f.seq, "CHMRTLLNBEQ");
    milter_result_free(&r);
}

/* ---- milter_apply ------------------------------------------------------------ */

#define HDR(k, i, n, v) {.kind = (k), .index = (i), .name = (char *)(n), .value = (char *)(v)}

static const char AMSG[] = "Received: from a\r\n\tby b\r\nReceived: from c\r\n"
                           "From: <s@src.example>\r\nSubject: one\r\n two\r\n\r\nbody\r\n";

struct apply_case {
    const char *name;
    const char *msg;
    struct milter_mod mods[4];
    size_t nmods;
    bool pec;
    const char *out;     /* NULL: refused, err contains errpart */
    const char *errpart;
};

static const struct apply_case apply_cases[] = {
    {"add", AMSG, {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1")}, 1, false,
     "Received: from a\r\n\tby b\r\nReceived: from c\r\nFrom: <s@src.example>\r\n"
     "Subject: one\r\n two\r\nX-A: 1\r\n\r\nbody\r\n", NULL},
    {"insert top", AMSG, {HDR(MILTER_MOD_INSERT_HEADER, 0, "DKIM-Signature", "v=1;\n\tb=x")}, 1,
     false, "DKIM-Signature: v=1;\r\n\tb=x\r\nReceived: from a\r\n\tby b\r\nReceived: from c\r\n"
     "From: <s@src.example>\r\nSubject: one\r\n two\r\n\r\nbody\r\n", NULL},
    {"insert 2 and past the end", AMSG,
     {HDR(MILTER_MOD_INSERT_HEADER, 2, "X-2", "b"), HDR(MILTER_MOD_INSERT_HEADER, 99, "X-E", "e")},
     2, false, "Received: from a\r\n\tby b\r\nReceived: from c\r\nX-2: b\r\n"
     "From: <s@src.example>\r\nSubject: one\r\n two\r\nX-E: e\r\n\r\nbody\r\n", NULL},
    {"change second occurrence", AMSG, {HDR(MILTER_MOD_CHANGE_HEADER, 2, "received", "from z")}, 1,
     false, "Received: from a\r\n\tby b\r\nreceived: from z\r\nFrom: <s@src.example>\r\n"
     "Subject: one\r\n two\r\n\r\nbody\r\n", NULL},
    {"change folded, index 0 = 1", AMSG, {HDR(MILTER_MOD_CHANGE_HEADER, 0, "Subject", "new")}, 1,
     false, "Received: from a\r\n\tby b\r\nReceived: from c\r\nFrom: <s@src.example>\r\n"
     "Subject: new\r\n\r\nbody\r\n", NULL},
    {"delete folded first", AMSG, {HDR(MILTER_MOD_CHANGE_HEADER, 1, "Received", "")}, 1, false,
     "Received: from c\r\nFrom: <s@src.example>\r\nSubject: one\r\n two\r\n\r\nbody\r\n", NULL},
    {"change missing adds, delete missing is nothing", AMSG,
     {HDR(MILTER_MOD_CHANGE_HEADER, 3, "Received", "from q"),
      HDR(MILTER_MOD_CHANGE_HEADER, 1, "X-None", "")}, 2, false,
     "Received: from a\r\n\tby b\r\nReceived: from c\r\nFrom: <s@src.example>\r\n"
     "Subject: one\r\n two\r\nReceived: from q\r\n\r\nbody\r\n", NULL},
    {"replace body, LF to CRLF", AMSG,
     {{.kind = MILTER_MOD_REPLACE_BODY, .data = (char *)"l1\nl2\r\n", .len = 7}}, 1, false,
     "Received: from a\r\n\tby b\r\nReceived: from c\r\nFrom: <s@src.example>\r\n"
     "Subject: one\r\n two\r\n\r\nl1\r\nl2\r\n", NULL},
    {"envelope changes are not applied", AMSG,
     {{.kind = MILTER_MOD_ADD_RCPT, .value = (char *)"x@y"},
      {.kind = MILTER_MOD_CHANGE_FROM, .value = (char *)"b@y"}}, 2, false, AMSG, NULL},
    {"no mods: same bytes, even without a body", "Subject: x", {{0}}, 0, false, "Subject: x", NULL},
    {"no header section", "\r\nbody\r\n", {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1")}, 1, false,
     "X-A: 1\r\n\r\nbody\r\n", NULL},
    {"no blank line", "Subject: x", {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1")}, 1, false,
     "Subject: x\r\nX-A: 1\r\n", NULL},
    {"injected field refused", AMSG, {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1\r\nBcc: e@x")}, 1,
     false, NULL, "fold"},
    {"pec: DKIM-Signature and Received allowed", AMSG,
     {HDR(MILTER_MOD_INSERT_HEADER, 0, "DKIM-Signature", "v=1"),
      HDR(MILTER_MOD_ADD_HEADER, 0, "X-Spam-Status", "No")}, 2, true,
     "DKIM-Signature: v=1\r\nReceived: from a\r\n\tby b\r\nReceived: from c\r\n"
     "From: <s@src.example>\r\nSubject: one\r\n two\r\nX-Spam-Status: No\r\n\r\nbody\r\n", NULL},
    {"pec: change refused, nothing applied", AMSG,
     {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1"), HDR(MILTER_MOD_CHANGE_HEADER, 1, "Subject", "x")},
     2, true, NULL, "CHGHEADER Subject"},
    {"pec: body refused", AMSG, {{.kind = MILTER_MOD_REPLACE_BODY, .data = (char *)"x", .len = 1}},
     1, true, NULL, "REPLBODY"},
    {"pec: new Subject refused", AMSG, {HDR(MILTER_MOD_ADD_HEADER, 0, "subject", "x")}, 1, true,
     NULL, "ADDHEADER subject"},
    {"pec: Content-Type refused", AMSG, {HDR(MILTER_MOD_INSERT_HEADER, 0, "Content-Type", "x")},
     1, true, NULL, "Content-Type"},
    {"pec: X-Trasporto refused", AMSG, {HDR(MILTER_MOD_ADD_HEADER, 0, "X-Trasporto", "errore")},
     1, true, NULL, "X-Trasporto"},
    {"pec: envelope refused", AMSG, {{.kind = MILTER_MOD_DEL_RCPT, .value = (char *)"x@y"}}, 1,
     true, NULL, "DELRCPT"},
};

static void test_apply_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof apply_cases / sizeof apply_cases[0]; i++) {
        const struct apply_case *c = &apply_cases[i];
        struct milter_result r = {.mods = (struct milter_mod *)c->mods, .nmods = c->nmods};
        char *out = (char *)1, err[256] = "";
        size_t outlen = 99;
        int rc = milter_apply(&r, c->msg, strlen(c->msg), c->pec, &out, &outlen, err, sizeof err);
        if (c->out) {
            if (rc != 0)
                fail_msg("%s: refused: %s", c->name, err);
            if (outlen != strlen(c->out) || memcmp(out, c->out, outlen) != 0)
                fail_msg("%s: got\n%.*s", c->name, (int)outlen, out);
            free(out);
        } else {
            if (rc != -1 || out != NULL || outlen != 0)
                fail_msg("%s: applied", c->name);
            if (!strstr(err, c->errpart))
                fail_msg("%s: error \"%s\"", c->name, err);
        }
    }
}

/* mods from a real conversation apply in arrival order */
static void test_apply_from_run(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_mods, .actions = ALL_ACTIONS};
    struct milter_result r;
    struct milter_facts fa = facts(1);
    run_fake(&f, &fa, AMSG, sizeof AMSG - 1, 2000, &r);
    assert_int_equal(r.action, MILTER_QUARANTINE);
    char *out, err[256];
    size_t outlen;
    assert_int_equal(milter_apply(&r, AMSG, sizeof AMSG - 1, false, &out, &outlen, err, sizeof err), 0);
    const char *want = "X-Top: first\r\nReceived: from a\r\n\tby b\r\nFrom: <s@src.example>\r\n"
                       "Subject: one\r\n two\r\nX-Added: yes\r\n\r\nnew body\r\n";
    assert_int_equal(outlen, strlen(want));
    assert_memory_equal(out, want, outlen);
    free(out);
    assert_int_equal(milter_apply(&r, AMSG, sizeof AMSG - 1, true, &out, &outlen, err, sizeof err), -1);
    assert_non_null(strstr(err, "CHGHEADER Received"));
    milter_result_free(&r);
}

#define APPLY_TESTS cmocka_unit_test(test_apply_table), cmocka_unit_test(test_apply_from_run)

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
        cmocka_unit_test(test_modifications),     cmocka_unit_test(test_mod_not_negotiated),
        cmocka_unit_test(test_mod_before_eom),    cmocka_unit_test(test_mod_bad_header),
        cmocka_unit_test(test_too_many_mods),     cmocka_unit_test(test_replbody_limit),
        cmocka_unit_test(test_hostile_packets),   cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_spec_parse),        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_unix_socket),
        APPLY_TESTS
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
