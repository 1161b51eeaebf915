/*
 * dovecot_auth.c - a client of Dovecot's authentication server, so SMTP AUTH
 * and mailbox existence checks can use whatever Dovecot's passdb/userdb say
 * (passwd-file, SQL, LDAP...):
 *
 *   auth-client socket (client protocol 1.2):
 *     C: VERSION 1 2 / CPID pid
 *     S: VERSION 1 x / MECH name flags... / SPID / CUID / COOKIE / DONE
 *     C: AUTH id PLAIN service=smtp secured nologin resp=BASE64(\0user\0pass)
 *     S: OK id ... | FAIL id [temp] ... | CONT id ...
 *   auth-userdb socket (master protocol 1.0):
 *     C: VERSION 1 0 / USER id user service=smtp
 *     S: VERSION 1 x / SPID pid / USER id user fields... | NOTFOUND id | FAIL id
 *
 * Fields are TAB-separated, one command per LF-terminated line.  One
 * connection per request (the handshake is one local round trip), every read
 * and write bounded by a deadline.  The calls block: pecd runs them on worker
 * threads, never on the event loop.  Replies are untrusted: lines are capped
 * at DOVECOT_LINE_MAX, ids must match, anything unexpected is a temporary
 * failure (the server is misbehaving, not the user).
 */
#include "store.h"
#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REQ_ID 1u

/* ---- reply parser (pure; fuzzed) ------------------------------------------ */

void dovecot_parse_init(struct dovecot_parse *p, enum dovecot_mode mode)
{
    memset(p, 0, sizeof *p);
    p->mode = mode;
    p->result = DOVECOT_TEMP;
}

static int perr(struct dovecot_parse *p, const char *why)
{
    snprintf(p->err, sizeof p->err, "Dovecot auth protocol: %s", why);
    p->state = DOVECOT_ST_ERROR;
    p->result = DOVECOT_TEMP;
    return -1;
}

static int finish(struct dovecot_parse *p, int result)
{
    p->state = DOVECOT_ST_DONE;
    p->result = result;
    return 1;
}

/* Splits line (no LF) at TABs into at most max fields, in place. */
static size_t split_tabs(char *line, char **f, size_t max)
{
    size_t n = 0;
    char *s = line;
    while (n < max) {
        f[n++] = s;
        char *t = strchr(s, '\t');
        if (t == NULL)
            break;
        *t = '\0';
        s = t + 1;
    }
    return n;
}

static bool id_is(const char *s, unsigned id)
{
    char want[16];
    snprintf(want, sizeof want, "%u", id);
    return strcmp(s, want) == 0;
}

static bool has_field(char **f, size_t n, size_t from, const char *name)
{
    for (size_t i = from; i < n; i++)
        if (strcmp(f[i], name) == 0 || (strncmp(f[i], name, strlen(name)) == 0 &&
                                        f[i][strlen(name)] == '='))
            return true;
    return false;
}

static int handshake_line(struct dovecot_parse *p, char **f, size_t n)
{
    if (strcmp(f[0], "VERSION") == 0) {
        if (n < 3 || strcmp(f[1], "1") != 0)
            return perr(p, "unsupported VERSION");
        p->got_version = true;
        return 0;
    }
    if (!p->got_version)
        return perr(p, "no VERSION first");
    if (p->mode == DOVECOT_MODE_AUTH && strcmp(f[0], "MECH") == 0) {
        if (n >= 2 && strcmp(f[1], "PLAIN") == 0)
            p->has_plain = true;
        return 0;
    }
    if (p->mode == DOVECOT_MODE_AUTH && strcmp(f[0], "DONE") == 0) {
        if (!p->has_plain)
            return perr(p, "the server offers no PLAIN mechanism");
        p->state = DOVECOT_ST_REPLY;
        return 0;
    }
    if (p->mode == DOVECOT_MODE_USERDB && strcmp(f[0], "SPID") == 0) {
        p->state = DOVECOT_ST_REPLY;   /* the master handshake ends with SPID */
        return 0;
    }
    /* SPID, CUID, COOKIE and later additions: ignored */
    return 0;
}

static int reply_line(struct dovecot_parse *p, char **f, size_t n)
{
    if (n < 2 || !id_is(f[1], REQ_ID)) {
        if (n >= 1 && strcmp(f[0], "SPID") == 0)
            return 0;   /* harmless if it comes late */
        return perr(p, "reply for an unknown request");
    }
    if (p->mode == DOVECOT_MODE_AUTH) {
        if (strcmp(f[0], "OK") == 0) {
            /* user=: the canonical name the passdb settled on (a login by
             * another name, an alias): pecd goes on with that one */
            for (size_t i = 2; i < n; i++) {
                const char *v = f[i];
                if (strncmp(v, "user=", 5) != 0)
                    continue;
                v += 5;
                size_t vl = strlen(v);
                bool ok = vl > 0 && vl < sizeof p->user;
                for (size_t k = 0; ok && k < vl; k++)
                    ok = (unsigned char)v[k] > 0x20 && v[k] != 0x7f;
                if (ok)
                    memcpy(p->user, v, vl + 1);
            }
            return finish(p, DOVECOT_OK);
        }
        if (strcmp(f[0], "FAIL") == 0) {
            bool temp = has_field(f, n, 2, "temp");
            for (size_t i = 2; i < n; i++)
                if (strcmp(f[i], "code=temp_fail") == 0)
                    temp = true;
            return finish(p, temp ? DOVECOT_TEMP : DOVECOT_FAIL);
        }
        if (strcmp(f[0], "CONT") == 0)
            return perr(p, "CONT after a complete PLAIN response");
        return perr(p, "unexpected reply to AUTH");
    }
    if (strcmp(f[0], "USER") == 0)
        return finish(p, DOVECOT_OK);
    if (strcmp(f[0], "NOTFOUND") == 0)
        return finish(p, DOVECOT_FAIL);
    if (strcmp(f[0], "FAIL") == 0)
        return finish(p, DOVECOT_TEMP);
    return perr(p, "unexpected reply to USER");
}

int dovecot_parse_line(struct dovecot_parse *p, const char *line, size_t len)
{
    if (p->state == DOVECOT_ST_DONE)
        return 1;
    if (p->state == DOVECOT_ST_ERROR)
        return -1;
    if (len >= DOVECOT_LINE_MAX)
        return perr(p, "line too long");
    if (memchr(line, '\0', len) != NULL)
        return perr(p, "NUL in a reply");
    char buf[DOVECOT_LINE_MAX];
    memcpy(buf, line, len);
    buf[len] = '\0';
    if (len > 0 && buf[len - 1] == '\r')
        buf[len - 1] = '\0';
    char *f[32];
    size_t n = split_tabs(buf, f, sizeof f / sizeof f[0]);
    if (++p->lines > DOVECOT_LINES_MAX)
        return perr(p, "too many lines");
    if (p->state == DOVECOT_ST_HANDSHAKE)
        return handshake_line(p, f, n);
    return reply_line(p, f, n);
}

int dovecot_parse_feed(struct dovecot_parse *p, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p->state == DOVECOT_ST_DONE)
            return 1;
        if (p->state == DOVECOT_ST_ERROR)
            return -1;
        if (data[i] != '\n') {
            if (p->buflen >= sizeof p->buf)
                return perr(p, "line too long");
            p->buf[p->buflen++] = data[i];
            continue;
        }
        int r = dovecot_parse_line(p, p->buf, p->buflen);
        p->buflen = 0;
        if (r != 0)
            return r;
    }
    return p->state == DOVECOT_ST_DONE ? 1 : p->state == DOVECOT_ST_ERROR ? -1 : 0;
}

/* ---- socket I/O with a deadline -------------------------------------------- */

static int send_all(int fd, const char *s, size_t len, long long deadline)
{
    while (len > 0) {
        if (fd_wait(fd, POLLOUT, deadline) != 1)
            return -1;
        ssize_t w = send(fd, s, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        s += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads until the parser has its answer; the result code. */
static int run_parser(int fd, struct dovecot_parse *p, long long deadline, char *err,
                      size_t errlen, bool *sent, const char *req, size_t reqlen)
{
    char buf[4096];
    size_t total = 0;
    for (;;) {
        if (fd_wait(fd, POLLIN, deadline) != 1) {
            snprintf(err, errlen, "Dovecot auth: %s", errno == ETIMEDOUT ? "no answer in time"
                                                                         : strerror(errno));
            return DOVECOT_TEMP;
        }
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0) {
            snprintf(err, errlen, "Dovecot auth: connection closed%s%s", r < 0 ? ": " : "",
                     r < 0 ? strerror(errno) : "");
            return DOVECOT_TEMP;
        }
        total += (size_t)r;
        if (total > DOVECOT_REPLY_MAX) {
            snprintf(err, errlen, "Dovecot auth: reply too long");
            return DOVECOT_TEMP;
        }
        /* the request goes out once the handshake is read, mid-buffer too */
        size_t off = 0;
        while (off < (size_t)r) {
            size_t take = 1;
            int pr = dovecot_parse_feed(p, buf + off, take);
            off += take;
            if (pr == -1) {
                snprintf(err, errlen, "%s", p->err);
                return DOVECOT_TEMP;
            }
            if (pr == 1)
                return p->result;
            if (!*sent && p->state == DOVECOT_ST_REPLY) {
                if (send_all(fd, req, reqlen, deadline) == -1) {
                    snprintf(err, errlen, "Dovecot auth: write: %s", strerror(errno));
                    return DOVECOT_TEMP;
                }
                *sent = true;
            }
        }
    }
}

static bool clean_user(const char *user)
{
    size_t n = strlen(user);
    if (n == 0 || n > 512)
        return false;
    for (const unsigned char *s = (const unsigned char *)user; *s; s++)
        if (*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* An address for rip=: digits, hex, '.' and ':' only (it goes on the wire). */
static bool clean_ip(const char *ip)
{
    if (ip == NULL || ip[0] == '\0' || strlen(ip) > 45)
        return false;
    return strspn(ip, "0123456789abcdefABCDEF.:") == strlen(ip);
}

int dovecot_auth_plain_fd(int fd, const char *user, const char *pass, const char *client_ip,
                          unsigned timeout_ms, char *canonical, size_t canonlen, char *err,
                          size_t errlen)
{
    if (canonical != NULL && canonlen > 0)
        canonical[0] = '\0';
    size_t ul = strlen(user), pl = strlen(pass);
    if (!clean_user(user) || pl == 0 || pl > 1024) {
        snprintf(err, errlen, "user name or password not acceptable");
        return DOVECOT_FAIL;
    }
    long long deadline = clock_ms() + timeout_ms;
    /* RFC 4616: authzid (empty) NUL authcid NUL passwd */
    unsigned char plain[1 + 513 + 1025];
    size_t mlen = 0;
    plain[mlen++] = '\0';
    memcpy(plain + mlen, user, ul);
    mlen += ul;
    plain[mlen++] = '\0';
    memcpy(plain + mlen, pass, pl);
    mlen += pl;
    char b64[2200];
    EVP_EncodeBlock((unsigned char *)b64, plain, (int)mlen);
    explicit_bzero(plain, sizeof plain);
    char hello[64], req[2400];
    int hl = snprintf(hello, sizeof hello, "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
    /* rip: Dovecot's failure penalty then applies to that client only */
    char rip[64] = "";
    if (clean_ip(client_ip))
        snprintf(rip, sizeof rip, "\trip=%s", client_ip);
    int rl = snprintf(req, sizeof req, "AUTH\t%u\tPLAIN\tservice=smtp\tsecured\tnologin%s\t"
                                       "resp=%s\n", REQ_ID, rip, b64);
    explicit_bzero(b64, sizeof b64);
    struct dovecot_parse *p = xmalloc(sizeof *p);
    dovecot_parse_init(p, DOVECOT_MODE_AUTH);
    bool sent = false;
    int r;
    if (send_all(fd, hello, (size_t)hl, deadline) == -1) {
        snprintf(err, errlen, "Dovecot auth: write: %s", strerror(errno));
        r = DOVECOT_TEMP;
    } else {
        r = run_parser(fd, p, deadline, err, errlen, &sent, req, (size_t)rl);
    }
    explicit_bzero(req, sizeof req);
    if (r == DOVECOT_OK && canonical != NULL && canonlen > 0)
        str_copy(canonical, p->user, canonlen);
    free(p);
    return r;
}

int dovecot_userdb_lookup_fd(int fd, const char *user, unsigned timeout_ms, char *err,
                             size_t errlen)
{
    if (!clean_user(user) || strchr(user, '\t') != NULL) {
        snprintf(err, errlen, "user name not acceptable");
        return DOVECOT_FAIL;
    }
    long long deadline = clock_ms() + timeout_ms;
    char hello[32], req[700];
    int hl = snprintf(hello, sizeof hello, "VERSION\t1\t0\n");
    int rl = snprintf(req, sizeof req, "USER\t%u\t%s\tservice=smtp\n", REQ_ID, user);
    struct dovecot_parse *p = xmalloc(sizeof *p);
    dovecot_parse_init(p, DOVECOT_MODE_USERDB);
    bool sent = false;
    int r;
    if (send_all(fd, hello, (size_t)hl, deadline) == -1) {
        snprintf(err, errlen, "Dovecot userdb: write: %s", strerror(errno));
        r = DOVECOT_TEMP;
    } else {
        r = run_parser(fd, p, deadline, err, errlen, &sent, req, (size_t)rl);
    }
    free(p);
    return r;
}

static int connect_unix(const char *path, unsigned timeout_ms, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (str_copy(sa.sun_path, path, sizeof sa.sun_path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "Dovecot socket path too long: %s", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd == -1) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
        /* a unix socket with a full backlog answers EAGAIN: wait once */
        if (errno != EAGAIN && errno != EINPROGRESS) {
            snprintf(err, errlen, "cannot connect to Dovecot at %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (fd_wait(fd, POLLOUT, clock_ms() + timeout_ms) != 1) {
            snprintf(err, errlen, "cannot connect to Dovecot at %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}

int dovecot_auth_plain(const char *socket_path, const char *user, const char *pass,
                       const char *client_ip, unsigned timeout_ms, char *canonical,
                       size_t canonlen, char *err, size_t errlen)
{
    int fd = connect_unix(socket_path, timeout_ms, err, errlen);
    if (fd == -1)
        return DOVECOT_TEMP;
    int r = dovecot_auth_plain_fd(fd, user, pass, client_ip, timeout_ms, canonical, canonlen,
                                  err, errlen);
    close(fd);
    return r;
}

int dovecot_userdb_lookup(const char *socket_path, const char *user, unsigned timeout_ms,
                          char *err, size_t errlen)
{
    int fd = connect_unix(socket_path, timeout_ms, err, errlen);
    if (fd == -1)
        return DOVECOT_TEMP;
    int r = dovecot_userdb_lookup_fd(fd, user, timeout_ms, err, errlen);
    close(fd);
    return r;
}
