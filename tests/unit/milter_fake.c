/*
 * milter_fake.c - the fake milter filter of the milter unit tests
 * (milter_fake.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "milter_fake.h"

void fk_send(struct fake *f, char cmd, const void *data, size_t len)
{
    unsigned char h[5] = {(unsigned char)((len + 1) >> 24), (unsigned char)((len + 1) >> 16),
                          (unsigned char)((len + 1) >> 8), (unsigned char)(len + 1),
                          (unsigned char)cmd};
    if (write(f->fd, h, 5) != 5 || (len && write(f->fd, data, len) != (ssize_t)len))
        return;
}

void fk_str2(struct fake *f, char cmd, uint32_t *idx, const char *a, const char *b)
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

void *fk_main(void *arg)
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

const char *const RCPTS[3] = {"a@dest.example", "b@dest.example", "c@dest.example"};
const char MSG[] = "From: <s@src.example>\r\nSubject: hi\r\n  there\r\n\r\nbody\r\n";
const size_t MSG_LEN = sizeof MSG - 1;

struct milter_facts facts(size_t nrcpts)
{
    return (struct milter_facts){
        .hostname = "mx.src.example", .queue_id = "Q123", .client_ip = "192.0.2.7",
        .client_port = 4242, .client_name = "c.example", .helo = "c.example",
        .tls_version = "TLSv1.3", .tls_cipher = "TLS_AES_256_GCM_SHA384",
        .auth_user = "s@src.example", .sender = "s@src.example", .rcpts = RCPTS,
        .nrcpts = nrcpts, .daemon_name = "mx", .auth_type = "PLAIN", .tls_cipher_bits = 256};
}

struct milter_spec spec_ms(unsigned io, unsigned eom)
{
    struct milter_spec s;
    char err[128];
    assert_int_equal(milter_spec_parse(&s, "fake", "unix:/nonexistent/x", err, sizeof err), 0);
    s.io_timeout_ms = io;
    s.eom_timeout_ms = eom;
    return s;
}

void run_fake(struct fake *f, const struct milter_facts *fa, const char *msg, size_t len,
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

void run_simple(struct fake *f, size_t nrcpts, struct milter_result *res)
{
    struct milter_facts fa = facts(nrcpts);
    run_fake(f, &fa, MSG, sizeof MSG - 1, 2000, res);
}

