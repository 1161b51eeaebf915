/*
 * keys_keeper.c - the keeper: a small process forked by pecd before it
 * opens anything or drops its privileges, which keeps them (root, when pecd
 * started as root) so that it can start the signer again when the signer
 * dies: the network-facing process, once unprivileged, could not read the
 * key.  The keeper holds no key and no network socket and reads nothing
 * but pecd's control messages; it forks a signer (keys_signer.c), waits for
 * it to load the keys, hands pecd the signer's sockets (SCM_RIGHTS), and on
 * the signer's death tells pecd so and starts another, backing off while
 * the signer cannot start (a hardware module out of reach: every failure is
 * logged with its reason).  It exits when pecd closes the control socket
 * (or dies: PR_SET_PDEATHSIG), after the signer.
 *
 * Why a keeper rather than pecd restarting the signer itself: pecd drops
 * root before reading anything from the network, and the signer must not
 * be a child that pecd's memory could influence.  Why not the signer
 * restarting itself: a signer killed (or stuck in a module) cannot.
 *
 * Interface: keys_keeper_main (keys_int.h).
 */
#include "keys_int.h"
#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STARTUP_MS (120 * 1000)     /* a module's login may be slow; not forever */
#define BACKOFF_MAX_MS (30 * 1000)

static int chld_pipe[2] = {-1, -1};

static void on_chld(int sig)
{
    (void)sig;
    int e = errno;
    ssize_t w = write(chld_pipe[1], "c", 1);
    (void)w;
    errno = e;
}

/* No core file and no ptrace by the same user: the signer's memory holds
 * the key, the keeper's the means to start it. */
static void harden(void)
{
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* Moves fds[0..n) to 3, 4, … and closes every other descriptor above 2. */
static void keep_only(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 1000);
        if (d == -1)
            _exit(1);
        fds[i] = d;
    }
    close_range(3, 999, 0);
    for (size_t i = 0; i < n; i++) {
        if (dup2(fds[i], 3 + (int)i) == -1)
            _exit(1);
        fds[i] = 3 + (int)i;
    }
    close_range(1000, ~0U, 0);
}

static void send_ctl(int ctl, const struct keys_ctl_msg *m, const int *fds, size_t nfds)
{
    struct iovec iov = {(void *)m, sizeof *m};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 72)];
        struct cmsghdr align;
    } cbuf;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        mh.msg_control = cbuf.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    while (sendmsg(ctl, &mh, MSG_NOSIGNAL) == -1 && errno == EINTR)
        ;
}

static void tell_failed(int ctl, unsigned gen, bool ran, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void tell_failed(int ctl, unsigned gen, bool ran, const char *fmt, ...)
{
    struct keys_ctl_msg m = {.type = KCTL_FAILED, .generation = gen, .ran = ran};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m.reason, sizeof m.reason, fmt, ap);
    va_end(ap);
    send_ctl(ctl, &m, NULL, 0);
}

/* Reads what the signer wrote on its status pipe until it closed it. */
static void read_status(int fd, int ctl, char *out, size_t size, bool *ctl_closed)
{
    size_t o = 0;
    int64_t deadline = clock_ms() + STARTUP_MS;
    out[0] = '\0';
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = ctl, .events = POLLIN}};
        int64_t left = deadline - clock_ms();
        if (left <= 0) {
            str_copy(out, "the signer did not load the keys within 120 s", size);
            return;
        }
        if (poll(p, 2, (int)left) == -1) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            char c;
            if (recv(ctl, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) {
                *ctl_closed = true;
                return;
            }
        }
        if (p[0].revents) {
            ssize_t n = read(fd, out + o, size - 1 - o);
            if (n <= 0 || (o += (size_t)n) >= size - 1) {
                out[o] = '\0';
                return;
            }
            out[o] = '\0';
        }
    }
}

/* Starts signer number gen; its pid, or -1 when it could not load the keys
 * (pecd is told why; *died: how it ended, when it did).  *ctl_closed when
 * pecd went away meanwhile. */
static pid_t start_signer(const struct config *cfg, int ctl, size_t nbulk, unsigned gen,
                          bool *ctl_closed, int *died)
{
    size_t n = 1 + nbulk;
    int ours[72], theirs[72], st[2];
    if (n > 72)
        n = 72;
    for (size_t i = 0; i < n; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
            tell_failed(ctl, gen, false, "socketpair: %s", strerror(errno));
            for (size_t k = 0; k < i; k++) {
                close(ours[k]);
                close(theirs[k]);
            }
            return -1;
        }
        ours[i] = sv[0];
        theirs[i] = sv[1];
    }
    if (pipe2(st, O_CLOEXEC) == -1) {
        tell_failed(ctl, gen, false, "pipe: %s", strerror(errno));
        for (size_t i = 0; i < n; i++) {
            close(ours[i]);
            close(theirs[i]);
        }
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGCHLD, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        int keep[73];
        memcpy(keep, theirs, sizeof(int) * n);
        keep[n] = st[1];
        keep_only(keep, n + 1);
        log_init("pecd-signer", LOG_LVL_INFO);
        _exit(keys_signer_main(cfg, keep, n, keep[n]));
    }
    close(st[1]);
    for (size_t i = 0; i < n; i++)
        close(theirs[i]);
    if (pid == -1) {
        tell_failed(ctl, gen, false, "fork: %s", strerror(errno));
        close(st[0]);
        for (size_t i = 0; i < n; i++)
            close(ours[i]);
        return -1;
    }
    char status[1024];
    read_status(st[0], ctl, status, sizeof status, ctl_closed);
    close(st[0]);
    bool ok = strcmp(status, "OK") == 0;
    if (ok) {
        struct keys_ctl_msg m = {.type = KCTL_SIGNER, .generation = gen, .pid = pid,
                                 .nfds = (uint32_t)n};
        send_ctl(ctl, &m, ours, n);
        log_info("signer started (pid %d, %zu sockets)", (int)pid, n);
    }
    for (size_t i = 0; i < n; i++)
        close(ours[i]);
    if (ok || *ctl_closed)
        return pid;
    /* it did not load the keys: its reason, or how it ended */
    if (status[0] == '\0') {
        if (waitpid(pid, died, 0) == pid && WIFSIGNALED(*died))
            snprintf(status, sizeof status, "the signer (pid %d) was killed by signal %d while "
                     "it started", (int)pid, WTERMSIG(*died));
        else
            snprintf(status, sizeof status, "the signer (pid %d) exited while it started",
                     (int)pid);
    } else {
        kill(pid, SIGKILL);   /* it exits by itself after a failure; never wait on it */
        waitpid(pid, died, 0);
    }
    tell_failed(ctl, gen, false, "%s", status);   /* pecd logs it */
    return -1;
}

/* KCTL_RELOADED: pecd applied a reload, and its signer loaded the keys
 * pecd.conf names now; a signer started later (after a module failure)
 * must load the same ones.  The file is read when pecd says so, not at the
 * signer's start: an edit not yet reloaded is not taken. */
static const struct config *read_again(const struct config *cur, struct config **owned)
{
    char err[1024];
    struct config *n = config_load(cur->path, err, sizeof err);
    if (n != NULL && keys_config_checked(n, err, sizeof err) == -1) {
        config_free(n);
        n = NULL;
    }
    if (n == NULL) {
        log_warn("%s not read again (%s): a later signer loads the keys it named before",
                 cur->path, err);
        return cur;
    }
    config_free(*owned);      /* cur, when it was the previous reread */
    *owned = n;
    return n;
}

static const char *describe(int status, char *buf, size_t size)
{
    if (WIFSIGNALED(status))
        snprintf(buf, size, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    return buf;
}

void keys_keeper_main(const struct config *cfg, int ctl, size_t nbulk)
{
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != parent)
        _exit(0);
    harden();
    log_init("pecd-keeper", LOG_LVL_INFO);
    /* pecd decides when to stop (it needs signatures while it drains): a
     * terminal's ^C or systemd's SIGTERM to the group is for pecd alone */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    int keep[1] = {ctl};
    keep_only(keep, 1);
    ctl = keep[0];
    if (pipe2(chld_pipe, O_CLOEXEC | O_NONBLOCK) == -1)
        _exit(1);
    struct sigaction sa = {.sa_handler = on_chld, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
    sigaction(SIGCHLD, &sa, NULL);

    struct config *owned = NULL;   /* pecd.conf as read again on KCTL_RELOADED */
    unsigned gen = 0;
    int64_t delay = 0;
    bool closed = false;
    while (!closed) {
        gen++;
        int died = 0;
        int64_t started = clock_ms();
        pid_t pid = start_signer(cfg, ctl, nbulk, gen, &closed, &died);
        bool ran = pid > 0;
        /* wait for the signer's end, or for pecd */
        while (pid > 0 && !closed) {
            struct pollfd p[2] = {{.fd = chld_pipe[0], .events = POLLIN},
                                  {.fd = ctl, .events = POLLIN}};
            if (poll(p, 2, -1) == -1 && errno != EINTR)
                break;
            if (p[1].revents) {
                struct keys_ctl_msg m;
                ssize_t r = recv(ctl, &m, sizeof m, MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    closed = true;
                    break;
                }
                if (r == (ssize_t)sizeof m && m.type == KCTL_RESTART && m.generation == gen) {
                    log_warn("signer (pid %d) does not answer: killing it", (int)pid);
                    kill(pid, SIGKILL);
                } else if (r == (ssize_t)sizeof m && m.type == KCTL_RELOADED) {
                    cfg = read_again(cfg, &owned);
                }
            }
            char c;
            while (read(chld_pipe[0], &c, 1) == 1)
                ;
            if (waitpid(pid, &died, WNOHANG) == pid) {
                char how[64];
                describe(died, how, sizeof how);
                log_warn("signer (pid %d) %s: starting another", (int)pid, how);
                tell_failed(ctl, gen, true, "the signer (pid %d) %s", (int)pid, how);
                pid = 0;
            }
        }
        if (closed) {
            /* pecd has closed the signer's sockets too: it ends by itself */
            int64_t end = clock_ms() + 2000;
            int status;
            while (pid > 0 && waitpid(pid, &status, WNOHANG) == 0 && clock_ms() < end)
                poll(NULL, 0, 20);
            if (pid > 0 && waitpid(pid, &status, WNOHANG) == 0) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
            }
            break;
        }
        /* A signer killed (SIGKILL: an operator, the OOM killer, our own stuck
         * signer) or one that ran a while (a module failure) is replaced at
         * once.  One that cannot load the keys (a module out of reach) is
         * tried again after 0.5 s, 1 s, 2 s … 30 s; one that dies on its own
         * within a second of its start (a crash loop) after 0.1 s … 10 s. */
        bool killed = WIFSIGNALED(died) && WTERMSIG(died) == SIGKILL;
        int64_t lived = clock_ms() - started;
        if (killed || (ran && lived >= 1000))
            delay = 0;
        else if (!ran)
            delay = delay < 500 ? 500 : (delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2);
        else
            delay = delay < 100 ? 100 : (delay * 2 > 10000 ? 10000 : delay * 2);
        int64_t until = clock_ms() + delay;
        while (!closed && clock_ms() < until) {
            struct pollfd p = {.fd = ctl, .events = POLLIN};
            int64_t left = until - clock_ms();
            if (poll(&p, 1, (int)(left > 0 ? left : 0)) > 0) {
                struct keys_ctl_msg m;
                ssize_t r = recv(ctl, &m, sizeof m, MSG_DONTWAIT);
                closed = r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
                if (r == (ssize_t)sizeof m && m.type == KCTL_RELOADED)
                    cfg = read_again(cfg, &owned);
            }
        }
    }
    _exit(0);
}
