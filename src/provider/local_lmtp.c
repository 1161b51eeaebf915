/*
 * local_lmtp.c - local delivery through an LMTP server (RFC 2033), e.g.
 * Dovecot's, for [delivery] mailbox = lmtp:HOST:PORT or lmtp:unix:PATH: one
 * transaction for all local recipients of a message, with the server's reply
 * for each recipient (2xx stored, 5xx refused for good, 4xx try later).
 *
 * Exactly once: a 250 from LMTP is followed by a marker file
 * DATA_DIR/lmtp-done/QID.N (fsync'ed) for recipient N of queue file QID; a
 * later attempt of the same message (a retry of the PEC delivery stage, or a
 * restart) skips the recipients that have a marker.  The window left is a
 * crash between the server's 250 and the marker's fsync: that delivery is
 * repeated once (Postfix's LMTP client has the same window).  Markers are
 * removed once they are older than the queue lifetime plus a day.
 */
#include "transport.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "smtp/client.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static GMutex purge_lock;
static time_t last_purge;

static void marker_path(const struct config *cfg, const char *qid, size_t i, char *out,
                        size_t outlen)
{
    snprintf(out, outlen, "%s/lmtp-done/%s.%zu", cfg->data_dir, qid, i);
}

static bool marker_exists(const struct config *cfg, const char *qid, size_t i)
{
    char p[PATH_MAX];
    marker_path(cfg, qid, i, p, sizeof p);
    return access(p, F_OK) == 0;
}

static void marker_write(const struct config *cfg, const char *qid, size_t i)
{
    char dir[PATH_MAX], p[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/lmtp-done", cfg->data_dir);
    marker_path(cfg, qid, i, p, sizeof p);
    if (fs_mkdirs(dir, 0700) == -1) {
        log_err("%s: cannot create %s: %s", qid, dir, strerror(errno));
        return;
    }
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1 || fsync(fd) == -1 || fs_fsync_dir(dir) == -1)
        log_err("%s: cannot record the LMTP delivery to recipient %zu: %s (a retry would "
                "deliver it again)", qid, i, strerror(errno));
    if (fd != -1)
        close(fd);
}

/* Markers older than the queue lifetime (plus a day) belong to messages that
 * left the queue long ago. */
static void purge_markers(const struct config *cfg)
{
    time_t now = time(NULL);
    g_mutex_lock(&purge_lock);
    bool due = now - last_purge >= 3600;
    if (due)
        last_purge = now;
    g_mutex_unlock(&purge_lock);
    if (!due)
        return;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/lmtp-done", cfg->data_dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    time_t old = now - (time_t)cfg->queue_lifetime - 86400;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &st, 0) == -1)
            continue;
        if (st.st_mtime < old)
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

static void set_result(struct deliver_rcpt *x, int code, const char *text, const char *mta)
{
    x->smtp_code = code;
    x->pub.tmp[0] = '\0';   /* nothing for the worker to publish */
    x->result = code / 100 == 2 ? DELIVER_OK : code >= 500 ? DELIVER_PERMFAIL : DELIVER_TEMPFAIL;
    str_copy(x->text, text, sizeof x->text);
    str_copy(x->remote_mta, mta, sizeof x->remote_mta);
}

/* The numeric address of the LMTP server (the client connects to addresses). */
static int lmtp_addr(const struct config *cfg, char *addr, size_t addrlen)
{
    if (cfg->lmtp_port[0] == '\0')
        return str_copy(addr, cfg->lmtp_host, addrlen) < addrlen ? 0 : -1;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    if (getaddrinfo(cfg->lmtp_host, cfg->lmtp_port, &hints, &res) != 0)
        return -1;
    void *p = res->ai_family == AF_INET ? (void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr
                                        : (void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
    const char *ok = inet_ntop(res->ai_family, p, addr, (socklen_t)addrlen);
    freeaddrinfo(res);
    return ok ? 0 : -1;
}

void local_lmtp_deliver(const struct config *cfg, const struct queue_env *env, const char *data,
                        size_t len, const size_t *idx, size_t n, struct deliver_rcpt *r)
{
    purge_markers(cfg);
    char mta[400];
    snprintf(mta, sizeof mta, "%s%s%s", cfg->lmtp_host, cfg->lmtp_port[0] ? ":" : "",
             cfg->lmtp_port);
    /* recipients stored by an earlier attempt are done */
    size_t *todo = xcalloc(n ? n : 1, sizeof *todo);
    size_t nt = 0;
    for (size_t k = 0; k < n; k++) {
        if (marker_exists(cfg, env->qid, env->name_base + idx[k]))
            set_result(&r[idx[k]], 250, "2.0.0 delivered by an earlier attempt", mta);
        else
            todo[nt++] = idx[k];
    }
    if (nt == 0) {
        free(todo);
        return;
    }
    char addr[PATH_MAX];
    struct smtp_reply fail = {0};
    struct smtp_client *c = NULL;
    if (lmtp_addr(cfg, addr, sizeof addr) == -1) {
        fail.code = 451;
        snprintf(fail.text, sizeof fail.text, "4.4.3 cannot resolve the LMTP server %s", mta);
    } else {
        struct smtp_client_opts o = {.helo = cfg->hostname, .lmtp = true, .tls = TLSP_NONE,
                                     .timeout = (unsigned)cfg->out_timeout};
        c = smtp_client_open(cfg->lmtp_host, addr, cfg->lmtp_port[0] ? cfg->lmtp_port : "lmtp",
                             &o, &fail);
    }
    struct smtp_client_rcpt *cr = xcalloc(nt, sizeof *cr);
    for (size_t k = 0; k < nt; k++)
        cr[k].addr = env->rcpts[todo[k]].addr;
    struct smtp_client_msg m = {.sender = env->sender, .size = len, .eightbit = env->body == 2,
                                .smtputf8 = env->smtputf8, .data = data, .len = len,
                                .rcpts = cr, .nrcpts = nt};
    if (c != NULL && smtp_client_send(c, &m, &fail) == -1) {
        smtp_client_close(c, true);
        c = NULL;
        if (fail.code == 0)
            fail.code = 451;
    }
    for (size_t k = 0; k < nt; k++) {
        struct deliver_rcpt *x = &r[todo[k]];
        if (c == NULL) {
            /* the transaction failed as a whole: a refused sender or size is
             * final, a connection problem is not */
            set_result(x, fail.code >= 500 ? fail.code : 451, fail.text, mta);
            continue;
        }
        set_result(x, cr[k].reply.code, cr[k].reply.text, mta);
        if (x->result == DELIVER_OK) {
            marker_write(cfg, env->qid, env->name_base + todo[k]);
            snprintf(x->text, sizeof x->text, "delivered via LMTP %s: %d %s", mta,
                     cr[k].reply.code, cr[k].reply.text);
        }
        log_info("%s: <%s> %s%s", env->qid, env->rcpts[todo[k]].addr,
                 x->result == DELIVER_OK ? "" : "LMTP refused: ", x->text);
    }
    if (c != NULL)
        smtp_client_close(c, true);
    free(cr);
    free(todo);
}
