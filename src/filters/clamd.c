/*
 * clamd.c - ClamAV daemon client (clamd.h).
 *
 * Protocol (clamd(8)): commands prefixed 'z' end with a NUL, as do their
 * replies.  A connection opens an IDSESSION, so one socket carries many
 * scans (replies then carry an "N: " prefix); each scan is zINSTREAM
 * followed by chunks (4-octet big-endian length, data) and a zero-length
 * chunk.  Why IDSESSION rather than a connection per scan: on a busy server
 * it saves a connect (and for TCP a handshake) per message, and clamd's
 * thread per connection is reused.  clamd closes idle sessions
 * (IdleTimeout, 30 s by default) and after some errors: a scan that fails on
 * a reused connection is retried once on a new one, and connections idle
 * for over IDLE_MAX are not reused.
 */
#include "clamd.h"
#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536
#define REPLY_MAX 1024
#define IDLE_MAX 20          /* seconds: below clamd's default IdleTimeout */
#define POOL_MAX 64

/* ---- the reply parser ----------------------------------------------------- */

static void set_detail(struct clamd_verdict *v, const char *p, size_t n)
{
    if (n >= sizeof v->detail)
        n = sizeof v->detail - 1;
    for (size_t i = 0; i < n; i++)
        v->detail[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
    v->detail[n] = '\0';
}

static bool ends_with(const char *p, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(p + n - k, suffix, k) == 0;
}

void clamd_parse_reply(const char *buf, size_t len, struct clamd_verdict *v)
{
    memset(v, 0, sizeof *v);
    v->status = CLAMD_ERROR;
    while (len > 0 && (buf[len - 1] == '\0' || buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    /* IDSESSION: "N: " */
    size_t i = 0;
    while (i < len && i < 12 && buf[i] >= '0' && buf[i] <= '9')
        i++;
    if (i > 0 && i + 1 < len && buf[i] == ':' && buf[i + 1] == ' ') {
        buf += i + 2;
        len -= i + 2;
    }
    if (len == 0 || memchr(buf, '\0', len) != NULL) {
        set_detail(v, "empty or malformed reply from clamd", 35);
        return;
    }
    if (len == 10 && memcmp(buf, "stream: OK", 10) == 0) {
        v->status = CLAMD_CLEAN;
        return;
    }
    if (len > 8 + 6 && memcmp(buf, "stream: ", 8) == 0 && ends_with(buf, len, " FOUND")) {
        size_t n = len - 8 - 6;
        if (n == 0 || n >= sizeof v->name) {
            set_detail(v, buf, len);
            return;
        }
        for (size_t k = 0; k < n; k++)
            if (buf[8 + k] < 0x21 || buf[8 + k] > 0x7e) {   /* printable, no spaces */
                set_detail(v, buf, len);
                return;
            }
        memcpy(v->name, buf + 8, n);
        v->name[n] = '\0';
        v->status = CLAMD_INFECTED;
        return;
    }
    if (len >= 28 && memcmp(buf, "INSTREAM size limit exceeded", 28) == 0) {
        v->status = CLAMD_TOO_BIG;
        set_detail(v, buf, len);
        return;
    }
    set_detail(v, buf, len);   /* "... ERROR" and anything else */
}

/* ---- sockets with timeouts -------------------------------------------------- */

static int connect_to(int fd, const struct sockaddr *sa, socklen_t salen, unsigned timeout_ms)
{
    if (connect(fd, sa, salen) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EAGAIN)
        return -1;
    if (fd_wait(fd, POLLOUT, clock_ms() + timeout_ms) != 1)
        return -1;
    int soerr = 0;
    socklen_t l = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
    if (soerr != 0) {
        errno = soerr;
        return -1;
    }
    return 0;
}

static int open_socket(const char *addr, unsigned timeout_ms)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        if (str_copy(un.sun_path, addr + 5, sizeof un.sun_path) >= sizeof un.sun_path) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd != -1 && connect_to(fd, (struct sockaddr *)&un, sizeof un, timeout_ms) == -1) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        return fd;
    }
    char host[256];
    const char *hp = addr + 4;   /* "tcp:" */
    const char *colon = strrchr(hp, ':');
    if (colon == NULL || (size_t)(colon - hp) >= sizeof host) {
        errno = EINVAL;
        return -1;
    }
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
        errno = EHOSTUNREACH;
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL && fd == -1; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd != -1) {
            /* a chunk, then the 4-byte end of the stream: not held by Nagle */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        if (fd != -1 && connect_to(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms) == -1) {
            int e = errno;
            close(fd);
            fd = -1;
            errno = e;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const void *buf, size_t len, unsigned timeout_ms)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (fd_wait(fd, POLLOUT, clock_ms() + timeout_ms) != 1)
                return -1;
        } else if (n == -1 && errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

/* Reads one NUL-terminated reply into buf; its length (NUL excluded) or -1. */
static ssize_t read_reply(int fd, char *buf, size_t cap, unsigned timeout_ms)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = recv(fd, buf + got, cap - got, 0);
        if (n > 0) {
            char *nul = memchr(buf + got, '\0', (size_t)n);
            got += (size_t)n;
            if (nul != NULL)
                return nul - buf;
        } else if (n == 0) {
            errno = ECONNRESET;
            return got > 0 ? (ssize_t)got : -1;   /* a reply cut by a close */
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (fd_wait(fd, POLLIN, clock_ms() + timeout_ms) != 1)
                return -1;
        } else if (errno != EINTR) {
            return -1;
        }
    }
    errno = EMSGSIZE;
    return -1;
}

/* ---- the pool -------------------------------------------------------------- */

struct conn {
    int fd;
    time_t last;
    bool busy;
};

struct clamd {
    char addr[300];
    unsigned timeout_ms;
    size_t n;
    struct conn conns[POOL_MAX];
    pthread_mutex_t lock;
    pthread_cond_t freed;
};

struct clamd *clamd_new(const char *addr, unsigned timeout_ms, unsigned pool_size)
{
    struct clamd *c = xcalloc(1, sizeof *c);
    str_copy(c->addr, addr, sizeof c->addr);
    c->timeout_ms = timeout_ms ? timeout_ms : 30000;
    c->n = pool_size < 1 ? 1 : pool_size > POOL_MAX ? POOL_MAX : pool_size;
    for (size_t i = 0; i < c->n; i++)
        c->conns[i].fd = -1;
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->freed, &ca);
    pthread_condattr_destroy(&ca);
    return c;
}

static struct conn *acquire(struct clamd *c)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += c->timeout_ms / 1000;
    until.tv_nsec += (long)(c->timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->lock);
    struct conn *got = NULL;
    while (got == NULL) {
        /* an open idle connection first, then any free slot */
        for (size_t i = 0; i < c->n && got == NULL; i++)
            if (!c->conns[i].busy && c->conns[i].fd != -1)
                got = &c->conns[i];
        for (size_t i = 0; i < c->n && got == NULL; i++)
            if (!c->conns[i].busy)
                got = &c->conns[i];
        if (got == NULL && pthread_cond_timedwait(&c->freed, &c->lock, &until) != 0)
            break;
    }
    if (got != NULL)
        got->busy = true;
    pthread_mutex_unlock(&c->lock);
    return got;
}

static void release(struct clamd *c, struct conn *k)
{
    pthread_mutex_lock(&c->lock);
    k->busy = false;
    k->last = time(NULL);
    pthread_cond_signal(&c->freed);
    pthread_mutex_unlock(&c->lock);
}

static void drop(struct conn *k)
{
    if (k->fd != -1)
        close(k->fd);
    k->fd = -1;
}

static int session_open(struct clamd *c, struct conn *k)
{
    k->fd = open_socket(c->addr, c->timeout_ms);
    if (k->fd == -1)
        return -1;
    if (send_all(k->fd, "zIDSESSION", 11, c->timeout_ms) == -1) {
        drop(k);
        return -1;
    }
    return 0;
}

/* One zINSTREAM on k: 0 with *v set, -1 on an I/O failure before any reply. */
static int instream(struct clamd *c, struct conn *k, const char *data, size_t len,
                    struct clamd_verdict *v)
{
    int w = send_all(k->fd, "zINSTREAM", 10, c->timeout_ms);
    for (size_t off = 0; w == 0 && off < len;) {
        size_t n = len - off < CHUNK ? len - off : CHUNK;
        unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                              (unsigned char)(n >> 8), (unsigned char)n};
        w = send_all(k->fd, h, 4, c->timeout_ms);
        if (w == 0)
            w = send_all(k->fd, data + off, n, c->timeout_ms);
        off += n;
    }
    static const unsigned char zero[4];
    if (w == 0)
        w = send_all(k->fd, zero, 4, c->timeout_ms);
    /* after a failed write clamd may still have said why (size limit) */
    char buf[REPLY_MAX];
    ssize_t r = read_reply(k->fd, buf, sizeof buf, w == 0 ? c->timeout_ms : 1000);
    if (r <= 0)
        return -1;
    clamd_parse_reply(buf, (size_t)r, v);
    return 0;
}

void clamd_scan(struct clamd *c, const char *data, size_t len, struct clamd_verdict *v)
{
    memset(v, 0, sizeof *v);
    v->status = CLAMD_ERROR;
    struct conn *k = acquire(c);
    if (k == NULL) {
        snprintf(v->detail, sizeof v->detail, "clamd %s: no free connection in %u ms", c->addr,
                 c->timeout_ms);
        return;
    }
    if (k->fd != -1 && time(NULL) - k->last > IDLE_MAX)
        drop(k);
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = k->fd != -1;
        if (!reused && session_open(c, k) == -1) {
            snprintf(v->detail, sizeof v->detail, "clamd %s: cannot connect: %s", c->addr,
                     strerror(errno));
            break;
        }
        if (instream(c, k, data, len, v) == 0) {
            /* clamd ends the session after a size-limit or other error */
            if (v->status == CLAMD_TOO_BIG || v->status == CLAMD_ERROR)
                drop(k);
            release(c, k);
            return;
        }
        int e = errno;
        drop(k);
        snprintf(v->detail, sizeof v->detail, "clamd %s: %s", c->addr,
                 e == ETIMEDOUT ? "timed out" : strerror(e));
        if (!reused || e == ETIMEDOUT)
            break;   /* a fresh connection failed, or clamd is slow: do not insist */
    }
    v->status = CLAMD_ERROR;
    release(c, k);
}

void clamd_free(struct clamd *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        if (c->conns[i].fd != -1) {
            (void)!send(c->conns[i].fd, "zEND", 5, MSG_NOSIGNAL | MSG_DONTWAIT);
            close(c->conns[i].fd);
        }
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->freed);
    free(c);
}
