/*
 * pecd_control.c - the control socket: <data_dir>/control.sock, a UNIX
 * stream socket for pecctl on the same host (mode 0600; a peer must be root
 * or pecd's own user, checked with SO_PEERCRED).
 *
 * One request a connection, one line each way (the line within 5 s of the
 * connection, at most 127 octets; the peer is checked before it is read):
 *
 *   snapshot   ->  ok messages=N bytes=B paused_ms=P spools=K staging=PATH
 *                  error REASON
 *
 * snapshot is the part of `pecctl backup` only pecd can do (the tracking
 * database is held exclusively by its connection): the delivery threads are
 * kept between two batches (queue_pause) while the spool's queue/, hold/ and
 * staged/ are copied and the tracking database is copied (VACUUM INTO) into
 * <data_dir>/backup.staging, so the two are as after a clean stop; then the
 * threads go on.  Messages keep being accepted meanwhile.  pecctl copies the
 * staging directory, the evidence log (read-only, newer than the spool: the
 * order crash recovery expects) and the rest.  With the shared state
 * ([state] database, PostgreSQL) there is no tracking file: pg_dump.  A
 * node of several also copies each spool it runs for a node that died (it
 * took it over, src/provider/cluster.c), its queue paused in the same way,
 * into backup.staging/spools/NODE: that node's acknowledged messages are in
 * no other backup made while it is down (spools=K: how many).
 *
 * Runs on a thread of its own with blocking I/O and timeouts, not on the
 * event loop: a snapshot takes as long as the copy of the spool.
 */
#include "pecd_int.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "provider/cluster.h"
#include "queue/queue.h"
#include "store/tracking.h"

#include <errno.h>
#include <glib.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PAUSE_TIMEOUT_MS 120000   /* the longest batch a snapshot waits for */
#define REQUEST_TIMEOUT_MS 5000   /* a whole request line, from the connection on */

struct pecd_control {
    int fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    GThread *thread;
    struct queue *queue;
    struct tracking *tracking;
    struct cluster *cluster;     /* several nodes: the spools taken over; else NULL */
    /* copies: [provider] data_dir and [queue] directory need a restart to
     * change, and this thread does not read the configuration a reload swaps */
    char data_dir[PATH_MAX], queue_dir[PATH_MAX];
};

/* A spool's queue/, hold/ and staged/ into to, its delivery threads kept
 * between two batches meanwhile; tracking_to not NULL (pecd's own spool):
 * the tracking database too, when it is a file of this node.  0, or -1
 * with err. */
static int copy_spool(struct pecd_control *c, struct queue *q, const char *dir, const char *to,
                      const char *tracking_to, struct fs_copy_stats *st, gint64 *paused_ms,
                      char *err, size_t errlen)
{
    gint64 t0 = g_get_monotonic_time();
    if (queue_pause(q, PAUSE_TIMEOUT_MS) == -1) {
        snprintf(err, errlen, "the delivery threads did not finish their batch in %u s; try "
                 "again", PAUSE_TIMEOUT_MS / 1000);
        return -1;
    }
    char sub[PATH_MAX], dst[PATH_MAX];
    int rc = 0;
    static const char *const subs[] = {"queue", "hold", "staged"};
    for (size_t i = 0; i < 3 && rc == 0; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, subs[i]);
        snprintf(dst, sizeof dst, "%s/%s", to, subs[i]);
        if (access(sub, F_OK) == 0)
            rc = fs_copy_tree(sub, dst, NULL, st, err, errlen);
    }
    /* the shared state (PostgreSQL) is not this node's to copy: pg_dump */
    if (rc == 0 && tracking_to != NULL && c->tracking != NULL &&
        !tracking_is_shared(c->tracking))
        rc = tracking_snapshot(c->tracking, tracking_to, err, errlen);
    queue_resume(q);
    *paused_ms += (g_get_monotonic_time() - t0) / 1000;
    return rc;
}

/* The spools this node took over from dead nodes into staging/spools/NODE,
 * each paused in turn.  The number copied, or -1 with err.  A spool whose
 * lease moved to another node while it was copied is left out (logged). */
static int copy_taken(struct pecd_control *c, const char *staging, struct fs_copy_stats *st,
                      gint64 *paused_ms, char *err, size_t errlen)
{
    struct cluster_spool *v = NULL;
    size_t n = cluster_spools_hold(c->cluster, &v);
    if (n == 0) {
        cluster_spools_release(c->cluster, v, 0, NULL);
        return 0;
    }
    bool *still = xcalloc(n, sizeof *still);
    char to[PATH_MAX];
    int rc = 0;
    snprintf(to, sizeof to, "%s/spools", staging);
    if (mkdir(to, 0700) == -1) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        rc = -1;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        /* the name comes from the shared database: a path component only when it
         * is a node name as [state] node allows it */
        if (!config_node_name_ok(v[i].node)) {
            snprintf(err, errlen, "a spool taken over has a node name that is not one");
            rc = -1;
            break;
        }
        snprintf(to, sizeof to, "%s/spools/%s", staging, v[i].node);
        if (mkdir(to, 0700) == -1) {
            snprintf(err, errlen, "%s: %s", to, strerror(errno));
            rc = -1;
        } else {
            rc = copy_spool(c, v[i].q, v[i].dir, to, NULL, st, paused_ms, err, errlen);
        }
    }
    struct cluster_spool *names = rc == 0 ? g_memdup2(v, n * sizeof *v) : NULL;
    cluster_spools_release(c->cluster, v, n, still);
    int copied = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (still[i]) {
            copied++;
            continue;
        }
        snprintf(to, sizeof to, "%s/spools/%s", staging, names[i].node);
        fs_remove_tree(to);
        log_warn("backup snapshot: the spool of node %s went to another node while it was "
                 "copied: not in this backup (that node's backup holds it)", names[i].node);
    }
    g_free(names);
    free(still);
    return rc == 0 ? copied : -1;
}

static void snapshot(struct pecd_control *c, char *reply, size_t replylen)
{
    char staging[PATH_MAX], to[PATH_MAX], err[1024];
    snprintf(staging, sizeof staging, "%s/backup.staging", c->data_dir);
    fs_remove_tree(staging);
    if (mkdir(staging, 0700) == -1) {
        snprintf(reply, replylen, "error %s: %s", staging, strerror(errno));
        return;
    }
    snprintf(to, sizeof to, "%s/queue", staging);
    if (mkdir(to, 0700) == -1) {
        snprintf(reply, replylen, "error %s: %s", to, strerror(errno));
        return;
    }
    char tracking[PATH_MAX];
    snprintf(tracking, sizeof tracking, "%s/tracking.db", staging);
    struct fs_copy_stats st = {0};
    gint64 paused_ms = 0;
    int rc = copy_spool(c, c->queue, c->queue_dir, to, tracking, &st, &paused_ms, err,
                        sizeof err);
    uint64_t messages = st.files;
    int spools = 0;
    if (rc == 0) {
        spools = copy_taken(c, staging, &st, &paused_ms, err, sizeof err);
        rc = spools < 0 ? -1 : 0;
    }
    if (rc == 0 && fs_fsync_dir(staging) == -1) {
        snprintf(err, sizeof err, "%s: %s", staging, strerror(errno));
        rc = -1;
    }
    if (rc == -1) {
        fs_remove_tree(staging);
        snprintf(reply, replylen, "error %s", err);
        log_err("backup snapshot: %s", err);
        return;
    }
    bool shared = c->tracking != NULL && tracking_is_shared(c->tracking);
    log_info("backup snapshot: %llu queued messages (%llu bytes)%s%s copied into %s; deliveries "
             "paused %lld ms",
             (unsigned long long)messages, (unsigned long long)st.bytes,
             shared ? "" : " and the tracking database",
             spools > 0 ? ", and the spools taken over from other nodes," : "", staging,
             (long long)paused_ms);
    snprintf(reply, replylen, "ok messages=%llu bytes=%llu paused_ms=%lld spools=%d staging=%s",
             (unsigned long long)messages, (unsigned long long)st.bytes, (long long)paused_ms,
             spools, staging);
}

static bool peer_allowed(int fd)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == -1)
        return false;
    return cr.uid == 0 || cr.uid == geteuid();
}

/* The request line, within REQUEST_TIMEOUT_MS in all: one thread serves the
 * socket, so a client that connects and never finishes its line (or sends a
 * byte every few seconds) must not keep it, and the next backup, waiting.
 * 0, or -1 with the reason in why. */
static int read_request(int fd, char *line, size_t size, const char **why)
{
    gint64 end = g_get_monotonic_time() + REQUEST_TIMEOUT_MS * 1000;
    size_t n = 0;
    for (;;) {
        gint64 left = (end - g_get_monotonic_time()) / 1000;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0)
            return *why = "no request in time", -1;
        char ch;
        ssize_t got = read(fd, &ch, 1);
        if (got == -1 && errno == EINTR)
            continue;
        if (got <= 0)
            return *why = "closed", -1;
        if (ch == '\n')
            break;
        if (n + 1 >= size)
            return *why = "request too long", -1;
        line[n++] = ch;
    }
    line[n] = '\0';
    return 0;
}

static void serve(struct pecd_control *c, int fd)
{
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char line[128], reply[PATH_MAX + 256];
    const char *why = NULL;
    if (!peer_allowed(fd))             /* before reading anything of it */
        snprintf(reply, sizeof reply, "error permission denied");
    else if (read_request(fd, line, sizeof line, &why) == -1)
        snprintf(reply, sizeof reply, "error %s", why);
    else if (strcmp(line, "snapshot") == 0)
        snapshot(c, reply, sizeof reply);
    else
        snprintf(reply, sizeof reply, "error unknown request");
    if (why != NULL && strcmp(why, "closed") == 0)
        return;
    str_copy(reply + strlen(reply), "\n", sizeof reply - strlen(reply));
    if (fs_write_all(fd, reply, strlen(reply)) == -1)
        log_warn("control socket: cannot answer: %s", strerror(errno));
}

static gpointer control_main(gpointer arg)
{
    struct pecd_control *c = arg;
    for (;;) {
        int fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break;       /* shut down (pecd_control_stop) */
        }
        serve(c, fd);
        close(fd);
    }
    return NULL;
}

int pecd_control_start(struct pecd *d, char *err, size_t errlen)
{
    struct pecd_control *c = xcalloc(1, sizeof *c);
    if (c == NULL)
        return snprintf(err, errlen, "out of memory"), -1;
    c->queue = d->queue;
    c->tracking = d->tracking;
    c->cluster = d->cluster;
    str_copy(c->data_dir, d->cfg->data_dir, sizeof c->data_dir);
    str_copy(c->queue_dir, d->cfg->queue_dir, sizeof c->queue_dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (str_fmt(c->path, sizeof c->path, "%s/control.sock", d->cfg->data_dir) < 0) {
        free(c);
        return snprintf(err, errlen, "%s/control.sock: path too long for a socket",
                        d->cfg->data_dir), -1;
    }
    str_copy(sa.sun_path, c->path, sizeof sa.sun_path);
    unlink(c->path);     /* a stale one: the queue lock says no other pecd runs here */
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd == -1 || bind(c->fd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
        chmod(c->path, 0600) == -1 || listen(c->fd, 4) == -1) {
        snprintf(err, errlen, "control socket %s: %s", c->path, strerror(errno));
        if (c->fd != -1)
            close(c->fd);
        free(c);
        return -1;
    }
    c->thread = g_thread_new("control", control_main, c);
    d->control = c;
    return 0;
}

void pecd_control_stop(struct pecd *d)
{
    struct pecd_control *c = d->control;
    if (c == NULL)
        return;
    shutdown(c->fd, SHUT_RDWR);   /* accept() returns */
    g_thread_join(c->thread);
    close(c->fd);
    unlink(c->path);
    free(c);
    d->control = NULL;
}
