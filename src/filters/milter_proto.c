/*
 * milter_proto.c - the milter client's transport: the socket specification
 * ("unix:/path", "inet:PORT@HOST", "inet:HOST:PORT"), a connect bounded by
 * a timeout, and the packet reader and writer (4-octet big-endian length,
 * command octet, data), each bounded by poll() deadlines and a size limit.
 *
 * Assumes: sockets are non-blocking after milter_connect (milter_send and
 * milter_recv work on blocking ones too, through poll before each step).
 */
#include "filters/milter_int.h"
#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- packet building ------------------------------------------------------ */

/* The first four octets are kept for the length, so that a packet goes out
 * in one write (two small writes would meet Nagle and delayed ACKs). */
void mbuf_init(struct mbuf *b, char cmd)
{
    memset(b, 0, sizeof *b);
    mbuf_add(b, "\0\0\0\0", 4);
    mbuf_add(b, &cmd, 1);
}

void mbuf_add(struct mbuf *b, const void *data, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > MILTER_MAX_PACKET + 4) {
        b->oom = 1;    /* too large: refused when sent */
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

void mbuf_str(struct mbuf *b, const char *s) { mbuf_add(b, s ? s : "", strlen(s ? s : "") + 1); }

void mbuf_u32(struct mbuf *b, uint32_t v)
{
    unsigned char o[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    mbuf_add(b, o, 4);
}

void mbuf_u16(struct mbuf *b, uint16_t v)
{
    unsigned char o[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    mbuf_add(b, o, 2);
}

void mbuf_free(struct mbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

uint32_t milter_get_u32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* ---- socket specification ------------------------------------------------- */

struct target {
    bool local;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char host[256];
    char port[8];
};

static int port_ok(const char *p)
{
    if (!*p || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p))
        return 0;
    long v = strtol(p, NULL, 10);
    return v > 0 && v < 65536;
}

static int split_target(const char *sock, struct target *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    const char *rest;
    if (!strncmp(sock, "unix:", 5) || !strncmp(sock, "local:", 6)) {
        rest = strchr(sock, ':') + 1;
        if (rest[0] != '/')
            return str_fmt(err, errlen, "milter socket %s: the path must be absolute", sock), -1;
        if (str_copy(t->path, rest, sizeof t->path) >= sizeof t->path)
            return str_fmt(err, errlen, "milter socket %s: path too long", sock), -1;
        t->local = true;
        return 0;
    }
    if (!strncmp(sock, "inet:", 5) || !strncmp(sock, "inet6:", 6)) {
        rest = strchr(sock, ':') + 1;
        const char *at = strchr(rest, '@'), *colon = strrchr(rest, ':');
        const char *h, *p;
        size_t hl, pl;
        if (at) {                                   /* PORT@HOST */
            p = rest, pl = (size_t)(at - rest), h = at + 1, hl = strlen(h);
        } else if (colon) {                         /* HOST:PORT or [v6]:PORT */
            h = rest, hl = (size_t)(colon - rest), p = colon + 1, pl = strlen(p);
            if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
                h++, hl -= 2;
        } else {
            return str_fmt(err, errlen, "milter socket %s: expected inet:PORT@HOST or "
                                        "inet:HOST:PORT", sock), -1;
        }
        if (hl == 0 || hl >= sizeof t->host || pl >= sizeof t->port)
            return str_fmt(err, errlen, "milter socket %s: bad host or port", sock), -1;
        memcpy(t->host, h, hl);
        memcpy(t->port, p, pl);
        if (!port_ok(t->port))
            return str_fmt(err, errlen, "milter socket %s: bad port \"%s\"", sock, t->port), -1;
        if (strpbrk(t->host, " \t/@"))
            return str_fmt(err, errlen, "milter socket %s: bad host \"%s\"", sock, t->host), -1;
        return 0;
    }
    return str_fmt(err, errlen, "milter socket \"%s\": expected unix:/PATH, inet:PORT@HOST "
                                "or inet:HOST:PORT", sock), -1;
}

int milter_spec_parse(struct milter_spec *s, const char *name, const char *socket, char *err,
                      size_t errlen)
{
    struct target t;
    memset(s, 0, sizeof *s);
    if (!name || !*name || str_copy(s->name, name, sizeof s->name) >= sizeof s->name)
        return str_fmt(err, errlen, "milter name empty or longer than %zu", sizeof s->name - 1), -1;
    if (!socket || str_copy(s->socket, socket, sizeof s->socket) >= sizeof s->socket)
        return str_fmt(err, errlen, "milter %s: socket missing or too long", name), -1;
    if (split_target(socket, &t, err, errlen) < 0)
        return -1;
    s->connect_timeout_ms = MILTER_DEF_CONNECT_MS;
    s->io_timeout_ms = MILTER_DEF_IO_MS;
    s->eom_timeout_ms = MILTER_DEF_EOM_MS;
    return 0;
}

/* ---- deadlines and poll ----------------------------------------------------- */

/* ---- connect ---------------------------------------------------------------- */

static int connect_addr(const struct sockaddr *sa, socklen_t salen, int64_t deadline, char *why,
                        size_t whylen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return str_fmt(why, whylen, "socket: %s", strerror(errno)), -1;
    if (sa->sa_family != AF_UNIX) {
        int one = 1;    /* small request/answer packets: no Nagle delay */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (connect(fd, sa, salen) == 0)
        return fd;
    if (errno != EINPROGRESS && errno != EAGAIN) {
        str_fmt(why, whylen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    int r = fd_wait(fd, POLLOUT, deadline), soerr = 0;
    socklen_t l = sizeof soerr;
    if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l) == 0 && soerr == 0)
        return fd;
    str_fmt(why, whylen, "%s", r == 0 ? "connect timed out" : strerror(soerr ? soerr : errno));
    close(fd);
    return -1;
}

int milter_connect(const struct milter_spec *spec, char *err, size_t errlen)
{
    struct target t;
    char why[160] = "no address";
    if (split_target(spec->socket, &t, err, errlen) < 0)
        return -1;
    unsigned ms = spec->connect_timeout_ms ? spec->connect_timeout_ms : MILTER_DEF_CONNECT_MS;
    int64_t deadline = clock_ms() + ms;
    int fd = -1;
    if (t.local) {
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        memcpy(su.sun_path, t.path, sizeof su.sun_path);
        fd = connect_addr((struct sockaddr *)&su, sizeof su, deadline, why, sizeof why);
    } else {
        /* names are resolved by the system resolver (blocking; use addresses
         * or /etc/hosts names where that matters) */
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
        int g = getaddrinfo(t.host, t.port, &hints, &ai);
        if (g != 0)
            return str_fmt(err, errlen, "milter %s: %s: %s", spec->name, t.host, gai_strerror(g)), -1;
        for (struct addrinfo *a = ai; a && fd < 0 && clock_ms() < deadline; a = a->ai_next)
            fd = connect_addr(a->ai_addr, a->ai_addrlen, deadline, why, sizeof why);
        freeaddrinfo(ai);
    }
    if (fd < 0)
        str_fmt(err, errlen, "milter %s: connect to %s: %s", spec->name, spec->socket, why);
    return fd;
}

/* ---- packets ---------------------------------------------------------------- */

static int write_full(int fd, const char *p, size_t n, int64_t deadline, char *err, size_t errlen)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return str_fmt(err, errlen, "write: %s", strerror(errno)), -1;
        int r = fd_wait(fd, POLLOUT, deadline);
        if (r == 0)
            return str_fmt(err, errlen, "write timed out"), -1;
        if (r < 0)
            return str_fmt(err, errlen, "poll: %s", strerror(errno)), -1;
    }
    return 0;
}

int milter_send(int fd, const struct mbuf *b, unsigned timeout_ms, char *err, size_t errlen)
{
    if (b->oom || b->len < 5)
        return str_fmt(err, errlen, "command packet too large or out of memory"), -1;
    size_t n = b->len - 4;
    unsigned char *h = (unsigned char *)b->p;
    h[0] = (unsigned char)(n >> 24), h[1] = (unsigned char)(n >> 16);
    h[2] = (unsigned char)(n >> 8), h[3] = (unsigned char)n;
    return write_full(fd, b->p, b->len, clock_ms() + timeout_ms, err, errlen);
}

static int read_full(int fd, char *p, size_t n, int64_t deadline, char *err, size_t errlen)
{
    while (n > 0) {
#ifdef TCP_QUICKACK
        /* acknowledge at once: a filter that writes its modifications and
         * its verdict in separate small packets (libmilter does) would else
         * wait for our delayed ACK under Nagle, 40 ms each time.  (The flag
         * does not stick, hence each time; fails harmlessly on unix sockets,
         * and before recv, which sets errno itself.) */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
#endif
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0)
            return str_fmt(err, errlen, "filter closed the connection"), -1;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return str_fmt(err, errlen, "read: %s", strerror(errno)), -1;
        int w = fd_wait(fd, POLLIN, deadline);
        if (w == 0)
            return str_fmt(err, errlen, "read timed out"), -1;
        if (w < 0)
            return str_fmt(err, errlen, "poll: %s", strerror(errno)), -1;
    }
    return 0;
}

int milter_recv(int fd, unsigned timeout_ms, size_t max, char *cmd, char **data, size_t *len,
                char *err, size_t errlen)
{
    char hdr[5];
    int64_t deadline = clock_ms() + timeout_ms;
    *data = NULL;
    *len = 0;
    if (read_full(fd, hdr, 4, deadline, err, errlen) < 0)
        return -1;
    uint32_t n = milter_get_u32(hdr);
    if (n == 0)
        return str_fmt(err, errlen, "empty packet"), -1;
    if (read_full(fd, hdr + 4, 1, deadline, err, errlen) < 0)
        return -1;
    if (n - 1 > max)
        return str_fmt(err, errlen, "packet of %u octets (reply '%c') over the limit of %zu",
                       n, hdr[4] > 32 && hdr[4] < 127 ? hdr[4] : '?', max), -1;
    char *p = malloc(n);   /* n-1 octets and a NUL */
    if (!p)
        return str_fmt(err, errlen, "out of memory"), -1;
    if (read_full(fd, p, n - 1, deadline, err, errlen) < 0) {
        free(p);
        return -1;
    }
    p[n - 1] = '\0';
    *cmd = hdr[4];
    *data = p;
    *len = n - 1;
    return 0;
}

/* ---- header checks ------------------------------------------------------------ */

int milter_check_header(const char *name, const char *value, char *err, size_t errlen)
{
    if (!*name || strlen(name) > 998)
        return str_fmt(err, errlen, "header name empty or too long"), -1;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        if (*c <= 32 || *c >= 127 || *c == ':')
            return str_fmt(err, errlen, "bad header name \"%.60s\"", name), -1;
    for (const char *c = value; *c; c++) {
        if (*c == '\r' && c[1] != '\n')
            return str_fmt(err, errlen, "header %.60s: bare CR in value", name), -1;
        /* a line break must be followed by white space (a fold), never by a
         * new field or the end of the header */
        if (*c == '\n' && c[1] != ' ' && c[1] != '\t')
            return str_fmt(err, errlen, "header %.60s: line break not followed by a fold", name), -1;
    }
    return 0;
}
