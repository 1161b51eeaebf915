/*
 * keys_client.c - pecd's side of the signer: keys_start() forks the keeper
 * (keys_keeper.c) and waits for the first signer; then a thread takes each
 * later signer from the keeper's control socket.  A signer comes as one
 * socket for the TLS handshakes (the event loop's, one request at a time)
 * and a pool of sockets for the PEC signatures: a delivery thread takes a
 * free socket, sends the SHA-256 of what it signs and waits for the CMS
 * SignedData, so the eight delivery threads and the timers' thread sign in
 * parallel (the signer has a thread per socket) without a multiplexer.
 *
 * When the signer dies, every request on its sockets sees the end of file:
 * the request is sent again to the next signer the keeper starts, up to
 * SIGN_WAIT_MS after it began (a stage waits rather than fails; a signature
 * asked again is over the same digest, so nothing is ever signed twice with
 * different content); after that the stage fails and the queue retries it
 * later.  While no signer answers keys_client_up() is false and pecd
 * answers new messages 451 4.3.0 (src/cmd/pecd.c).  A TLS handshake does
 * not wait: it fails at once while the signer is down.  A signer that does
 * not answer within ANSWER_MS (stuck in a module) is killed by the keeper
 * at our request.
 *
 * Interface: keys_start, keys_client_* (keys.h); keys_client_tls_op for
 * keys_tlsproxy.c (keys_int.h).
 */
#include "keys_int.h"
#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define START_WAIT_MS (125 * 1000)   /* the keeper's own limit, plus a little */
#define SIGN_WAIT_MS (15 * 1000)     /* a signature waits this long for a signer */
#define ANSWER_MS (60 * 1000)        /* one answer (a slow module), then the signer is stuck */
#define TLS_ANSWER_MS (5 * 1000)     /* the event loop is waiting */

/* One signer: its sockets, shared by the requests under way. */
struct gen {
    unsigned id;
    int pid;
    int tls_fd;
    pthread_mutex_t tls_lock;      /* one TLS request at a time */
    int *bulk;
    size_t nbulk;
    size_t *free;                  /* indexes of bulk sockets not in use */
    size_t nfree;
    int refs;                      /* requests under way + 1 while current */
    bool dead;
};

struct keys_client {
    const struct config *cfg;
    int ctl;
    pid_t keeper;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct gen *cur;               /* NULL while no signer answers */
    atomic_bool up;
    atomic_int signer_pid;
    bool stopping, running;
    pthread_t thread;
    bool has_pec, has_dir;
    char pec_email[256];
    unsigned char dir_id[32];
    pec_signer *pec;
    int watch_fd;                  /* a copy of the current signer's TLS socket: its hang-up
                                      tells the signer died, even before the keeper does */
    unsigned watch_gen;
};

static struct gen *gen_new(const struct keys_ctl_msg *m, const int *fds, size_t n)
{
    struct gen *g = xcalloc(1, sizeof *g);
    if (g == NULL || n < 2)
        goto fail;
    g->id = m->generation;
    g->pid = m->pid;
    g->tls_fd = fds[0];
    g->nbulk = n - 1;
    g->bulk = xmalloc(sizeof *g->bulk * g->nbulk);
    g->free = xmalloc(sizeof *g->free * g->nbulk);
    if (g->bulk == NULL || g->free == NULL)
        goto fail;
    /* a signature's answer comes within ANSWER_MS, or the signer is stuck */
    struct timeval tv = {.tv_sec = ANSWER_MS / 1000, .tv_usec = (ANSWER_MS % 1000) * 1000};
    for (size_t i = 0; i < g->nbulk; i++) {
        g->bulk[i] = fds[i + 1];
        g->free[i] = g->nbulk - 1 - i;
        if (setsockopt(g->bulk[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == -1)
            goto fail;
    }
    g->nfree = g->nbulk;
    g->refs = 1;
    pthread_mutex_init(&g->tls_lock, NULL);
    return g;
fail:
    if (g != NULL) {
        free(g->bulk);
        free(g->free);
        free(g);
    }
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    return NULL;
}

/* Drops a reference (the client's lock held); the sockets close with the last. */
static void gen_unref(struct gen *g)
{
    if (--g->refs > 0)
        return;
    close(g->tls_fd);
    for (size_t i = 0; i < g->nbulk; i++)
        close(g->bulk[i]);
    pthread_mutex_destroy(&g->tls_lock);
    free(g->bulk);
    free(g->free);
    free(g);
}

/* The current signer is gone (lock held): requests wait for the next. */
static void mark_down(struct keys_client *c, struct gen *g, bool stuck)
{
    if (g->dead)
        return;
    g->dead = true;
    if (c->cur == g) {
        c->cur = NULL;
        atomic_store(&c->up, false);
        if (stuck) {
            struct keys_ctl_msg m = {.type = KCTL_RESTART, .generation = g->id};
            send(c->ctl, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (!c->stopping)
            log_warn("signer (pid %d) %s: signatures wait for the next one", g->pid,
                     stuck ? "does not answer" : "is gone");
        gen_unref(g);   /* the reference of the current signer; g may be gone now */
    }
}

/* One request on fd and its answer: 0 with the data (malloc'ed) in *ans,
 * 1 with the signer's reason in err, -1 when the socket broke (EOF, error)
 * or -2 when no answer came before the deadline (-1: the socket's own
 * SO_RCVTIMEO, as the pool's sockets have: no poll before each answer).
 * The answer is read on the stack and copied at its size: a 64 KB buffer
 * malloc'ed and freed for each signature was given back to the system
 * (and faulted in again) every time. */
static int call(int fd, const struct keys_req *rq, pec_buf *ans, int64_t deadline, char *err,
                size_t errlen)
{
    ans->data = NULL;
    ans->len = 0;
    if (keys_send(fd, rq, offsetof(struct keys_req, data) + rq->len, NULL, 0) == -1)
        return -1;
    unsigned char buf[KEYS_MSG_MAX];
    ssize_t n = keys_recv(fd, buf, sizeof buf, deadline);
    if (n <= 0)
        return n < 0 && (errno == ETIMEDOUT || errno == EAGAIN || errno == EWOULDBLOCK) ? -2
                                                                                        : -1;
    struct keys_ans_hdr h;
    if ((size_t)n < sizeof h)
        return -1;
    memcpy(&h, buf, sizeof h);
    if (h.len != (size_t)n - sizeof h)
        return -1;
    if (h.status != 0) {
        snprintf(err, errlen, "signer: %.*s", (int)h.len, buf + sizeof h);
        return 1;
    }
    if ((ans->data = malloc(h.len ? h.len : 1)) == NULL)
        return -1;
    memcpy(ans->data, buf + sizeof h, h.len);
    ans->len = h.len;
    return 0;
}

/* A request on the pool of the current signer, sent again to the next one
 * when the signer dies under it: 0 with the answer, 1 when the signer
 * refused it (err), -1 when no signer answered (err). */
static int bulk_call(struct keys_client *c, const struct keys_req *rq, pec_buf *ans, char *err,
                     size_t errlen)
{
    int64_t deadline = clock_ms() + SIGN_WAIT_MS;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while ((c->cur == NULL || c->cur->nfree == 0) && !c->stopping) {
            int64_t left = deadline - clock_ms();
            if (left <= 0)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += left / 1000;
            ts.tv_nsec += (left % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&c->changed, &c->lock, &ts);
        }
        if (c->cur == NULL || c->cur->nfree == 0 || c->stopping) {
            pthread_mutex_unlock(&c->lock);
            snprintf(err, errlen, "the signer process is not available (being restarted, "
                                  "or the hardware module is out of reach)");
            return -1;
        }
        struct gen *g = c->cur;
        size_t idx = g->free[--g->nfree];
        g->refs++;
        pthread_mutex_unlock(&c->lock);
        int r = call(g->bulk[idx], rq, ans, -1, err, errlen);   /* SO_RCVTIMEO: ANSWER_MS */
        pthread_mutex_lock(&c->lock);
        if (r >= 0)
            g->free[g->nfree++] = idx;
        else
            mark_down(c, g, r == -2);
        gen_unref(g);
        pthread_cond_broadcast(&c->changed);
        if (r >= 0) {
            pthread_mutex_unlock(&c->lock);
            return r;          /* 0, or 1: the signer's refusal (err) */
        }
    }
}

int keys_client_tls_op(struct keys_client *c, const struct keys_req *rq, pec_buf *ans, char *err,
                       size_t errlen)
{
    pthread_mutex_lock(&c->lock);
    struct gen *g = c->cur;
    if (g == NULL) {
        pthread_mutex_unlock(&c->lock);
        snprintf(err, errlen, "the signer process is not available");
        return -1;
    }
    g->refs++;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&g->tls_lock);
    int r = call(g->tls_fd, rq, ans, clock_ms() + TLS_ANSWER_MS, err, errlen);
    pthread_mutex_unlock(&g->tls_lock);
    pthread_mutex_lock(&c->lock);
    if (r < 0) {
        mark_down(c, g, r == -2);
        snprintf(err, errlen, "the signer process did not answer");
    }
    gen_unref(g);
    pthread_mutex_unlock(&c->lock);
    return r == 0 ? 0 : -1;
}

/* ---- the remote pec_signer -------------------------------------------------------- */

static int remote_sign(void *ctx, const void *data, size_t len, pec_buf *der, char *err,
                       size_t errsz)
{
    struct keys_client *c = ctx;
    struct keys_req rq = {.op = KOP_PEC_SIGN, .len = 32};
    unsigned int mdlen = 0;
    der->data = NULL;
    der->len = 0;
    if (EVP_Digest(data, len, rq.data, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        snprintf(err, errsz, "SHA-256 failed");
        return -1;
    }
    return bulk_call(c, &rq, der, err, errsz) == 0 ? 0 : -1;
}

/* n signatures in one request (the messages a stage makes at once): the
 * digests one after the other, the answer each signature's length (u32)
 * and DER.  An answer that would not fit one message is refused by the
 * signer: then one request each. */
static int remote_sign_n(void *ctx, size_t n, const void *const *data, const size_t *len,
                         pec_buf *der, char *err, size_t errsz)
{
    struct keys_client *c = ctx;
    struct keys_req rq = {.op = KOP_PEC_SIGN, .len = (uint32_t)(32 * n)};
    for (size_t i = 0; i < n; i++)
        der[i] = (pec_buf){0};
    if (n == 0 || 32 * n > sizeof rq.data) {
        snprintf(err, errsz, "%zu signatures in one request", n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned int mdlen = 0;
        if (EVP_Digest(data[i], len[i], rq.data + 32 * i, &mdlen, EVP_sha256(), NULL) != 1 ||
            mdlen != 32) {
            snprintf(err, errsz, "SHA-256 failed");
            return -1;
        }
    }
    pec_buf ans;
    int r = bulk_call(c, &rq, &ans, err, errsz);
    if (r == 1 && n > 1) {
        for (size_t i = 0; i < n; i++) {
            if (remote_sign(ctx, data[i], len[i], &der[i], err, errsz) == -1) {
                while (i-- > 0)
                    pec_buf_free(&der[i]);
                return -1;
            }
        }
        return 0;
    }
    if (r != 0)
        return -1;
    size_t off = 0, i = 0;
    for (; i < n; i++) {
        uint32_t l;
        if (ans.len - off < sizeof l)
            break;
        memcpy(&l, ans.data + off, sizeof l);
        off += sizeof l;
        if (l == 0 || l > ans.len - off || (der[i].data = malloc(l)) == NULL)
            break;
        memcpy(der[i].data, ans.data + off, l);
        der[i].len = l;
        off += l;
    }
    size_t total = ans.len;
    pec_buf_free(&ans);
    if (i == n && off == total)
        return 0;
    for (size_t k = 0; k < n; k++)
        pec_buf_free(&der[k]);
    snprintf(err, errsz, "the signer's answer to %zu signatures is malformed", n);
    return -1;
}

/* ---- control messages from the keeper --------------------------------------------- */

/* One control message; the descriptors it carries in fds (*nfds). */
static ssize_t recv_ctl(int ctl, struct keys_ctl_msg *m, int *fds, size_t *nfds, int64_t deadline)
{
    *nfds = 0;
    if (deadline >= 0 && fd_wait(ctl, POLLIN, deadline) <= 0)
        return -1;
    struct iovec iov = {m, sizeof *m};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 72)];
        struct cmsghdr align;
    } cbuf;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                        .msg_controllen = sizeof cbuf.buf};
    ssize_t n;
    while ((n = recvmsg(ctl, &mh, MSG_CMSG_CLOEXEC)) == -1 && errno == EINTR)
        ;
    for (struct cmsghdr *h = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; h; h = CMSG_NXTHDR(&mh, h)) {
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
            size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds + *nfds, CMSG_DATA(h), sizeof(int) * k);
            *nfds += k;
        }
    }
    if (n > 0 && (size_t)n != sizeof *m) {
        for (size_t i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        errno = EPROTO;
        return -1;
    }
    return n;
}

/* HELLO on a new signer's TLS socket: what it holds. */
static int hello(struct gen *g, struct keys_hello *h, char **chain, size_t *chain_len, bool reload,
                 char *err, size_t errlen)
{
    struct keys_req rq = {.op = reload ? KOP_RELOAD : KOP_HELLO};
    pec_buf ans;
    pthread_mutex_lock(&g->tls_lock);
    int r = call(g->tls_fd, &rq, &ans, clock_ms() + (reload ? ANSWER_MS : TLS_ANSWER_MS), err,
                 errlen);
    pthread_mutex_unlock(&g->tls_lock);
    if (r != 0) {
        if (r < 0)
            snprintf(err, errlen, "the signer process did not answer");
        return -1;
    }
    if (ans.len < sizeof *h) {
        pec_buf_free(&ans);
        snprintf(err, errlen, "the signer's answer is too short");
        return -1;
    }
    memcpy(h, ans.data, sizeof *h);
    h->pec_email[sizeof h->pec_email - 1] = '\0';
    if (chain != NULL) {
        *chain_len = ans.len - sizeof *h;
        *chain = malloc(*chain_len + 1);
        if (*chain != NULL) {
            memcpy(*chain, ans.data + sizeof *h, *chain_len);
            (*chain)[*chain_len] = '\0';
        }
    }
    pec_buf_free(&ans);
    return 0;
}

/* A signer from the keeper becomes the current one. */
static int install(struct keys_client *c, const struct keys_ctl_msg *m, const int *fds,
                   size_t nfds, char *err, size_t errlen)
{
    struct gen *g = gen_new(m, fds, nfds);
    struct keys_hello h;
    if (g == NULL) {
        snprintf(err, errlen, "the keeper sent no sockets");
        return -1;
    }
    if (hello(g, &h, NULL, NULL, false, err, errlen) == -1) {
        pthread_mutex_lock(&c->lock);
        gen_unref(g);
        pthread_mutex_unlock(&c->lock);
        return -1;
    }
    pthread_mutex_lock(&c->lock);
    c->has_pec = h.has_pec;
    c->has_dir = h.has_dir;
    memcpy(c->dir_id, h.dir_id, sizeof c->dir_id);
    str_copy(c->pec_email, h.pec_email, sizeof c->pec_email);
    if (c->cur != NULL)
        mark_down(c, c->cur, false);
    c->cur = g;
    if (c->watch_fd >= 0)
        close(c->watch_fd);
    c->watch_fd = fcntl(g->tls_fd, F_DUPFD_CLOEXEC, 3);
    c->watch_gen = g->id;
    atomic_store(&c->signer_pid, g->pid);
    atomic_store(&c->up, true);
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static void *ctl_thread(void *arg)
{
    struct keys_client *c = arg;
    for (;;) {
        struct keys_ctl_msg m;
        int fds[72];
        size_t nfds = 0;
        ssize_t n;
        pthread_mutex_lock(&c->lock);
        int watch = c->watch_fd;
        pthread_mutex_unlock(&c->lock);
        struct pollfd p[2] = {{.fd = c->ctl, .events = POLLIN},
                              {.fd = watch, .events = POLLRDHUP}};
        if (poll(p, watch >= 0 ? 2 : 1, -1) == -1) {
            if (errno == EINTR)
                continue;
            n = -1;
        } else if (watch >= 0 && (p[1].revents & (POLLHUP | POLLRDHUP | POLLERR)) &&
                   !(p[0].revents & POLLIN)) {
            /* the signer died: requests stop waiting on it now, new messages get 451 */
            pthread_mutex_lock(&c->lock);
            if (c->watch_fd == watch) {
                if (c->cur != NULL && c->cur->id == c->watch_gen)
                    mark_down(c, c->cur, false);
                close(c->watch_fd);
                c->watch_fd = -1;
            }
            pthread_mutex_unlock(&c->lock);
            continue;
        } else {
            n = recv_ctl(c->ctl, &m, fds, &nfds, -1);
        }
        pthread_mutex_lock(&c->lock);
        bool stopping = c->stopping;
        pthread_mutex_unlock(&c->lock);
        if (stopping) {
            for (size_t i = 0; i < nfds; i++)
                close(fds[i]);
            return NULL;
        }
        if (n <= 0) {
            log_err("the keeper (pid %d) is gone: no signer can be started again; pecd stops",
                    (int)c->keeper);
            pthread_mutex_lock(&c->lock);
            if (c->cur != NULL)
                mark_down(c, c->cur, false);
            pthread_mutex_unlock(&c->lock);
            kill(getpid(), SIGTERM);
            return NULL;
        }
        char err[512];
        if (m.type == KCTL_SIGNER) {
            if (install(c, &m, fds, nfds, err, sizeof err) == -1)
                log_err("signer (pid %d): %s", (int)m.pid, err);
            else
                log_info("signer (pid %d) answers: signatures go on", (int)m.pid);
        } else if (m.type == KCTL_FAILED) {
            m.reason[sizeof m.reason - 1] = '\0';
            pthread_mutex_lock(&c->lock);
            if (c->cur != NULL && c->cur->id == m.generation)
                mark_down(c, c->cur, false);
            pthread_mutex_unlock(&c->lock);
            if (!m.ran)     /* a death is the keeper's to log */
                log_err("signer: cannot start: %s (tried again)", m.reason);
            for (size_t i = 0; i < nfds; i++)
                close(fds[i]);
        } else {
            for (size_t i = 0; i < nfds; i++)
                close(fds[i]);
        }
    }
}

struct keys_client *keys_start(const struct config *cfg, char *err, size_t errlen)
{
    struct keys_client *c = xcalloc(1, sizeof *c);
    int sv[2];
    if (c == NULL || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
        snprintf(err, errlen, "cannot start the signer: %s", strerror(errno));
        free(c);
        return NULL;
    }
    /* the delivery threads, the timers' thread and one more (start, seals) */
    size_t nbulk = cfg->delivery_workers + 2;
    if (nbulk > 64)
        nbulk = 64;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        keys_keeper_main(cfg, sv[1], nbulk);
    }
    close(sv[1]);
    if (pid == -1) {
        snprintf(err, errlen, "cannot start the keeper: %s", strerror(errno));
        close(sv[0]);
        free(c);
        return NULL;
    }
    c->cfg = cfg;
    c->ctl = sv[0];
    c->keeper = pid;
    c->watch_fd = -1;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->changed, NULL);
    struct keys_ctl_msg m;
    int fds[72];
    size_t nfds = 0;
    ssize_t n = recv_ctl(c->ctl, &m, fds, &nfds, clock_ms() + START_WAIT_MS);
    if (n > 0 && m.type == KCTL_SIGNER && install(c, &m, fds, nfds, err, errlen) == 0) {
        if (c->has_pec) {
            c->pec = xcalloc(1, sizeof *c->pec);
            if (c->pec != NULL) {
                c->pec->sign = remote_sign;
                c->pec->sign_n = remote_sign_n;
                c->pec->ctx = c;
                str_copy(c->pec->email, c->pec_email, sizeof c->pec->email);
            }
        }
        return c;
    }
    if (n > 0 && m.type == KCTL_FAILED) {
        m.reason[sizeof m.reason - 1] = '\0';
        snprintf(err, errlen, "%s", m.reason);
    } else if (n <= 0) {
        snprintf(err, errlen, "the signer process did not start");
    }
    for (size_t i = 0; n > 0 && m.type != KCTL_SIGNER && i < nfds; i++)
        close(fds[i]);
    keys_client_stop(c);
    free(c);
    return NULL;
}

int keys_client_run(struct keys_client *c)
{
    if (pthread_create(&c->thread, NULL, ctl_thread, c) != 0)
        return -1;
    c->running = true;
    return 0;
}

int keys_client_signer_pid(struct keys_client *c)
{
    return atomic_load(&c->signer_pid);
}

bool keys_client_up(struct keys_client *c)
{
    return c == NULL || atomic_load(&c->up);
}

pec_signer *keys_client_pec_signer(struct keys_client *c)
{
    return c->pec;
}

/* HELLO (or RELOAD) on the current signer. */
static int hello_current(struct keys_client *c, struct keys_hello *h, char **chain,
                         size_t *chain_len, bool reload, char *err, size_t errlen)
{
    pthread_mutex_lock(&c->lock);
    struct gen *g = c->cur;
    if (g != NULL)
        g->refs++;
    pthread_mutex_unlock(&c->lock);
    if (g == NULL) {
        snprintf(err, errlen, "the signer process is not available");
        return -1;
    }
    int r = hello(g, h, chain, chain_len, reload, err, errlen);
    pthread_mutex_lock(&c->lock);
    gen_unref(g);
    pthread_mutex_unlock(&c->lock);
    return r;
}

int keys_client_reload(struct keys_client *c, char *err, size_t errlen)
{
    struct keys_hello h;
    if (hello_current(c, &h, NULL, NULL, true, err, errlen) == -1)
        return -1;
    /* a signer started later (after a module failure) reads the same file */
    struct keys_ctl_msg m = {.type = KCTL_RELOADED};
    send(c->ctl, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT);
    return 0;
}

int keys_client_tls(struct keys_client *c, char **chain, size_t *chain_len, EVP_PKEY **key,
                    char *err, size_t errlen)
{
    *chain = NULL;
    *key = NULL;
    struct keys_hello h;
    if (hello_current(c, &h, chain, chain_len, false, err, errlen) == -1)
        return -1;
    if (!h.has_tls || *chain == NULL) {
        snprintf(err, errlen, "the signer holds no TLS key");
        free(*chain);
        *chain = NULL;
        return -1;
    }
    BIO *b = BIO_new_mem_buf(*chain, (int)*chain_len);
    X509 *cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    EVP_PKEY *pub = cert ? X509_get0_pubkey(cert) : NULL;
    if (pub != NULL)
        *key = keys_tls_proxy_new(c, pub, h.tls_id, err, errlen);
    else
        snprintf(err, errlen, "the signer's TLS certificate is unreadable");
    X509_free(cert);
    if (*key == NULL) {
        free(*chain);
        *chain = NULL;
        return -1;
    }
    return 0;
}

EVP_PKEY *keys_client_dir_key(struct keys_client *c, const char *cert_path, char *err,
                              size_t errlen)
{
    pthread_mutex_lock(&c->lock);
    bool has = c->has_dir;
    unsigned char id[32];
    memcpy(id, c->dir_id, sizeof id);
    pthread_mutex_unlock(&c->lock);
    if (!has) {
        snprintf(err, errlen, "the signer holds no [pec] directory_client_key");
        return NULL;
    }
    char *pem = NULL;
    size_t len = 0;
    if (fs_read_file(cert_path, &pem, &len, 1 << 20) == -1) {
        snprintf(err, errlen, "[pec] directory_client_cert %s: %s", cert_path, strerror(errno));
        return NULL;
    }
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    free(pem);
    EVP_PKEY *key = NULL;
    if (cert == NULL)
        snprintf(err, errlen, "[pec] directory_client_cert %s: no PEM certificate", cert_path);
    else
        key = keys_tls_proxy_new(c, X509_get0_pubkey(cert), id, err, errlen);
    X509_free(cert);
    return key;
}

void keys_client_stop(struct keys_client *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    if (c->cur != NULL)
        mark_down(c, c->cur, false);
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
    /* the keeper sees the end of its control socket, the signer of its own */
    shutdown(c->ctl, SHUT_RDWR);
    if (c->running)
        pthread_join(c->thread, NULL);
    close(c->ctl);
    if (c->watch_fd >= 0)
        close(c->watch_fd);
    c->watch_fd = -1;
    int status;
    while (waitpid(c->keeper, &status, 0) == -1 && errno == EINTR)
        ;
    free(c->pec);
    /* c itself stays: a TLS context may still hold a proxy key naming it */
}
