/*
 * spool.c - spool files: typed, length-prefixed records (Postfix style).
 *
 *   record = type (1 octet) | length (4 octets, big-endian) | payload
 *   file   = V I T S O* R+ C* D* E Z? X*
 *
 * The END record carries the data length; a file without it is incomplete
 * and is never delivered.  Files are written in incoming/ and renamed into
 * queue/ by the committer only after fsync.  Status records (X) are appended
 * after END as recipients are settled; a torn last X record is ignored.
 * A reused file (recycle.c) is not cut to what was written: a PAD record (Z)
 * right after END covers the rest of its old contents.
 */
#include "queue.h"
#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define SPOOL_MAX_RECORD (64u * 1024 * 1024)
#define SPOOL_MAX_RCPTS 100000

struct spool_writer {
    FILE *fp;
    int fd;
    char qid[QUEUE_ID_LEN + 1];
    char name[64];
    char path[PATH_MAX];
    char qdir[PATH_MAX];
    uint64_t size;
    uint64_t written;        /* octets written: a reused file is cut here */
    bool failed;
};

static atomic_uint node_tag;   /* queue_set_node_tag: 1..63, 0 none */

void queue_set_node_tag(unsigned num) { atomic_store(&node_tag, num & 63); }

void queue_new_id(char out[QUEUE_ID_LEN + 1])
{
    static atomic_uint counter;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    unsigned tag = atomic_load(&node_tag);
    /* one node: a counter mixed with the pid (several processes may write a
     * queue directory: pecd, pecctl); several nodes: the node's number in
     * the top 6 bits and the counter in the low 6 (64 ids a microsecond) */
    unsigned c = tag != 0 ? tag << 6 | (atomic_fetch_add(&counter, 1) & 63)
                          : atomic_fetch_add(&counter, 1) + (unsigned)getpid() * 2654435761u;
    snprintf(out, QUEUE_ID_LEN + 1, "%013llX%03X", (unsigned long long)(us & 0xFFFFFFFFFFFFFull),
             c & 0xFFFu);
}

/* A record's header: type, then the payload's length in 4 octets, big-endian. */
static void rec_head(void *out, int type, size_t len)
{
    unsigned char *h = out;
    h[0] = (unsigned char)type;
    h[1] = (unsigned char)(len >> 24);
    h[2] = (unsigned char)(len >> 16);
    h[3] = (unsigned char)(len >> 8);
    h[4] = (unsigned char)len;
}

/* The payload length in a record's header. */
static size_t rec_len(const unsigned char *h)
{
    return (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
}

static int put_rec(struct spool_writer *w, int type, const void *p, size_t len)
{
    unsigned char h[5];
    rec_head(h, type, len);
    if (w->failed || fwrite(h, 1, 5, w->fp) != 5 || (len > 0 && fwrite(p, 1, len, w->fp) != len)) {
        w->failed = true;
        return -1;
    }
    w->written += 5 + len;
    return 0;
}

static int put_str(struct spool_writer *w, int type, const char *s)
{
    return put_rec(w, type, s, strlen(s));
}

static int put_opt(struct spool_writer *w, const char *key, const char *val)
{
    if (val == NULL)
        return 0;
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "%s=%s", key, val);
    if (n < 0 || (size_t)n >= sizeof buf)
        return -1;
    return put_rec(w, REC_OPT, buf, (size_t)n);
}

struct spool_writer *spool_writer_open(const char *queue_dir, int fd, const char *name,
                                       const struct queue_env *env)
{
    struct spool_writer *w = xcalloc(1, sizeof *w);
    str_copy(w->qid, env->qid, sizeof w->qid);
    str_copy(w->name, fd == -1 ? env->qid : name, sizeof w->name);
    str_copy(w->qdir, queue_dir, sizeof w->qdir);
    if (str_fmt(w->path, sizeof w->path, "%s/incoming/%s", queue_dir, w->name) < 0)
        goto fail;
    if (fd == -1)
        fd = recycle_take(queue_dir, w->path);
    w->fd = fd != -1 ? fd : open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd == -1)
        goto fail;
    w->fp = fdopen(w->fd, "w");
    if (w->fp == NULL) {
        close(w->fd);
        unlink(w->path);
        goto fail;
    }
    setvbuf(w->fp, NULL, _IOFBF, 65536);
    char t[32];
    snprintf(t, sizeof t, "%lld", (long long)env->arrival);
    put_str(w, REC_VERSION, "1");
    put_str(w, REC_ID, env->qid);
    put_str(w, REC_TIME, t);
    put_str(w, REC_SENDER, env->sender);
    if (env->body)
        put_opt(w, "body", env->body == 2 ? "8BITMIME" : "7BIT");
    if (env->ret)
        put_opt(w, "ret", env->ret == 2 ? "HDRS" : "FULL");
    if (env->smtputf8)
        put_opt(w, "smtputf8", "1");
    if (env->requiretls)
        put_opt(w, "requiretls", "1");
    put_opt(w, "envid", env->envid && *env->envid ? env->envid : NULL);
    put_opt(w, "client", env->client_ip);
    put_opt(w, "helo", env->helo);
    put_opt(w, "auth", env->auth_user);
    put_opt(w, "authmech", env->auth_mech);
    put_opt(w, "tls", env->tls);
    put_opt(w, "proto", env->proto);
    put_opt(w, "listener", env->listener);
    put_opt(w, "stage", env->stage);
    if (env->deadline != 0) {
        char dl[32];
        snprintf(dl, sizeof dl, "%llu", (unsigned long long)env->deadline);
        put_opt(w, "deadline", dl);
    }
    for (size_t i = 0; i < env->nrcpts; i++) {
        const struct queue_rcpt *r = &env->rcpts[i];
        char buf[2048];
        int n = snprintf(buf, sizeof buf, "%s%c%s%c%u%c%s", r->addr, 0, r->orig ? r->orig : r->addr,
                         0, r->notify, 0, r->orcpt ? r->orcpt : "");
        if (n < 0 || (size_t)n >= sizeof buf) {
            w->failed = true;
            break;
        }
        put_rec(w, REC_RCPT, buf, (size_t)n);
    }
    /* the callout stage's results (src/filters/stage.c) */
    const char *co[2][2] = {{"virus", env->virus}, {"trace", env->callouts}};
    for (size_t i = 0; i < 2 && !w->failed; i++) {
        if (co[i][1] == NULL)
            continue;
        char buf[2048];
        int n = snprintf(buf, sizeof buf, "%s=%s", co[i][0], co[i][1]);
        if (n > 0 && (size_t)n < sizeof buf)
            put_rec(w, REC_CALLOUT, buf, (size_t)n);
    }
    if (w->failed) {
        spool_writer_abort(w);
        return NULL;
    }
    return w;
fail:
    log_err("cannot create spool file %s: %s", w->path, strerror(errno));
    free(w);
    return NULL;
}

int spool_writer_data(struct spool_writer *w, const void *buf, size_t len)
{
    if (put_rec(w, REC_DATA, buf, len) == -1)
        return -1;
    w->size += len;
    return 0;
}

int spool_writer_finish(struct spool_writer *w)
{
    char n[32];
    snprintf(n, sizeof n, "%llu", (unsigned long long)w->size);
    if (put_str(w, REC_END, n) == -1 || fflush(w->fp) != 0) {
        w->failed = true;
        return -1;
    }
    /* A reused file longer than what was written keeps its length: a PAD
     * record header covers its old bytes.  Cutting it would free its last
     * blocks (with online discard, a discard request to the disk each time)
     * for the next writer to allocate them again; every spool file holds a
     * message of about the same size.  Much longer files are cut (bounded
     * disk use), and so are the few 1 to 4 octets longer (no room for a
     * header).  A new or grown file is left alone. */
    struct stat st;
    if (fstat(w->fd, &st) == -1) {
        w->failed = true;
        return -1;
    }
    off_t slack = st.st_size - (off_t)w->written;
    if (slack >= 5 && slack <= SPOOL_PAD_MAX) {
        unsigned char h[5];
        rec_head(h, REC_PAD, (size_t)slack - 5);
        if (fwrite(h, 1, 5, w->fp) != 5 || fflush(w->fp) != 0) {
            w->failed = true;
            return -1;
        }
        w->written += (uint64_t)slack;
    } else if (slack > 0 && ftruncate(w->fd, (off_t)w->written) == -1) {
        w->failed = true;
        return -1;
    }
    return 0;
}

int spool_writer_fd(const struct spool_writer *w) { return w->fd; }
const char *spool_writer_qid(const struct spool_writer *w) { return w->qid; }
const char *spool_writer_name(const struct spool_writer *w) { return w->name; }

void spool_writer_abort(struct spool_writer *w)
{
    if (w == NULL)
        return;
    if (w->fp != NULL)
        fflush(w->fp);
    recycle_put(w->qdir, w->path);
    spool_writer_free(w);
}

void spool_writer_free(struct spool_writer *w)
{
    if (w == NULL)
        return;
    if (w->fp)
        fclose(w->fp);
    free(w);
}

void queue_env_free(struct queue_env *env)
{
    if (env == NULL)
        return;
    for (size_t i = 0; i < env->nrcpts; i++) {
        free(env->rcpts[i].addr);
        free(env->rcpts[i].orig);
        free(env->rcpts[i].orcpt);
        free(env->rcpts[i].status_text);
    }
    free(env->rcpts);
    char **s[] = {&env->sender, &env->envid, &env->client_ip, &env->helo, &env->auth_user,
                  &env->auth_mech, &env->tls, &env->proto, &env->listener, &env->stage, &env->virus,
                  &env->callouts};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        free(*s[i]);
    memset(env, 0, sizeof *env);
}

static char *dupn(const char *p, size_t n)
{
    char *s = xmalloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* A queue id as queue_new_id() makes them: QUEUE_ID_LEN upper-case hex digits
 * (it names files). */
static bool valid_qid(const char *p, size_t n)
{
    if (n != QUEUE_ID_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'F')))
            return false;
    return true;
}

static void set_opt(struct queue_env *env, const char *p, size_t n)
{
    char *kv = dupn(p, n);
    char *eq = strchr(kv, '=');
    if (eq == NULL) {
        free(kv);
        return;
    }
    *eq = '\0';
    const char *v = eq + 1;
    if (strcmp(kv, "body") == 0)
        env->body = strcmp(v, "8BITMIME") == 0 ? 2 : 1;
    else if (strcmp(kv, "ret") == 0)
        env->ret = strcmp(v, "HDRS") == 0 ? 2 : 1;
    else if (strcmp(kv, "smtputf8") == 0)
        env->smtputf8 = true;
    else if (strcmp(kv, "requiretls") == 0)
        env->requiretls = true;
    else if (strcmp(kv, "deadline") == 0)
        env->deadline = strtoull(v, NULL, 10);
    else {
        char **dst = strcmp(kv, "envid") == 0      ? &env->envid
                     : strcmp(kv, "client") == 0   ? &env->client_ip
                     : strcmp(kv, "helo") == 0     ? &env->helo
                     : strcmp(kv, "auth") == 0     ? &env->auth_user
                     : strcmp(kv, "authmech") == 0 ? &env->auth_mech
                     : strcmp(kv, "tls") == 0      ? &env->tls
                     : strcmp(kv, "proto") == 0    ? &env->proto
                     : strcmp(kv, "listener") == 0 ? &env->listener
                     : strcmp(kv, "stage") == 0    ? &env->stage
                                                   : NULL;
        if (dst != NULL) {
            free(*dst);
            *dst = xstrdup(v);
        }
    }
    free(kv);
}

int spool_read(const char *path, struct queue_env *env, char **data, size_t *datalen, char *err,
               size_t errlen)
{
    memset(env, 0, sizeof *env);
    char *buf;
    size_t len;
    if (fs_read_file(path, &buf, &len, (size_t)SPOOL_MAX_RECORD * 4) == -1) {
        snprintf(err, errlen, "cannot read: %s", strerror(errno));
        return -1;
    }
    int r = spool_parse(buf, len, env, data, datalen, err, errlen);
    free(buf);
    return r;
}

int spool_parse(const char *buf, size_t len, struct queue_env *env, char **data, size_t *datalen,
                char *err, size_t errlen)
{
    memset(env, 0, sizeof *env);
    size_t off = 0, cap = 0, dlen = 0;
    char *d = NULL;
    bool end = false, version = false;
    const char *why = NULL;
    while (off < len && !end) {
        if (len - off < 5) {
            why = "truncated record header";
            break;
        }
        const unsigned char *h = (const unsigned char *)buf + off;
        size_t rl = rec_len(h);
        const char *p = buf + off + 5;
        if (rl > len - off - 5) {
            why = "truncated record";
            break;
        }
        off += 5 + rl;
        switch (h[0]) {
        case REC_VERSION:
            version = rl == 1 && p[0] == '1';
            if (!version)
                why = "unknown spool version";
            break;
        case REC_ID:
            if (!valid_qid(p, rl)) {
                why = "bad queue id";
                break;
            }
            memcpy(env->qid, p, rl);
            env->qid[rl] = '\0';
            break;
        case REC_TIME: {
            char *t = dupn(p, rl);
            env->arrival = (time_t)strtoll(t, NULL, 10);
            free(t);
            break;
        }
        case REC_SENDER:
            free(env->sender);
            env->sender = dupn(p, rl);
            break;
        case REC_OPT:
            set_opt(env, p, rl);
            break;
        case REC_CALLOUT: {
            char *kv = dupn(p, rl);
            char **dst = strncmp(kv, "virus=", 6) == 0   ? &env->virus
                         : strncmp(kv, "trace=", 6) == 0 ? &env->callouts
                                                         : NULL;
            if (dst != NULL) {
                free(*dst);
                *dst = xstrdup(kv + 6);
            }
            free(kv);
            break;
        }
        case REC_RCPT: {
            if (env->nrcpts >= SPOOL_MAX_RCPTS) {
                why = "too many recipients";
                break;
            }
            const char *f[4] = {p, NULL, NULL, NULL};
            size_t fl[4];
            size_t k = 0, start = 0;
            for (size_t i = 0; i <= rl && k < 4; i++) {
                if (i == rl || p[i] == '\0') {
                    f[k] = p + start;
                    fl[k] = i - start;
                    k++;
                    start = i + 1;
                }
            }
            if (k != 4) {
                why = "bad recipient record";
                break;
            }
            env->rcpts = xrealloc(env->rcpts, (env->nrcpts + 1) * sizeof *env->rcpts);
            struct queue_rcpt *r = &env->rcpts[env->nrcpts++];
            r->addr = dupn(f[0], fl[0]);
            r->orig = dupn(f[1], fl[1]);
            char *nt = dupn(f[2], fl[2]);
            r->notify = (unsigned)strtoul(nt, NULL, 10);
            free(nt);
            r->orcpt = fl[3] ? dupn(f[3], fl[3]) : NULL;
            r->status = QR_PENDING;
            r->status_text = NULL;
            break;
        }
        case REC_DATA:
            if (data != NULL) {
                if (dlen + rl + 1 > cap) {
                    cap = (dlen + rl + 1) * 2;
                    d = xrealloc(d, cap);
                }
                memcpy(d + dlen, p, rl);
            }
            dlen += rl;
            break;
        case REC_END: {
            char *t = dupn(p, rl);
            unsigned long long n = strtoull(t, NULL, 10);
            free(t);
            if (n != dlen)
                why = "END length does not match the data";
            end = true;
            break;
        }
        default:
            why = "unknown record type";
            break;
        }
        if (why)
            break;
    }
    /* status records appended after END; a torn last one is ignored */
    while (why == NULL && end && len - off >= 5) {
        const unsigned char *h = (const unsigned char *)buf + off;
        size_t rl = rec_len(h);
        if ((h[0] != REC_STATUS && h[0] != REC_PROCESSED && h[0] != REC_RETRY &&
             h[0] != REC_PAD) ||
            rl > len - off - 5)
            break;
        if (h[0] == REC_PAD) {
            off += 5 + rl;
            continue;
        }
        if (h[0] == REC_RETRY) {
            char *t = dupn(buf + off + 5, rl);
            unsigned a = 0;
            long long nx = 0;
            if (sscanf(t, "%u %lld", &a, &nx) == 2) {
                env->attempts = a;
                env->next_try = (time_t)nx;
            }
            free(t);
            off += 5 + rl;
            continue;
        }
        if (h[0] == REC_PROCESSED) {
            env->processed = true;
            off += 5 + rl;
            continue;
        }
        const char *p = buf + off + 5;
        off += 5 + rl;
        char *rec = dupn(p, rl);
        char *st = memchr(rec, '\0', rl) ? rec + strlen(rec) + 1 : NULL;
        if (st != NULL && st < rec + rl) {
            size_t idx = strtoul(rec, NULL, 10);
            char *text = st + strlen(st) + 1 <= rec + rl ? st + strlen(st) + 1 : NULL;
            if (idx == env->nrcpts && atoi(st) == QR_WARNED)
                env->delay_warned = true;
            else if (idx < env->nrcpts) {
                env->rcpts[idx].status = atoi(st);
                free(env->rcpts[idx].status_text);
                env->rcpts[idx].status_text = text ? xstrdup(text) : NULL;
            }
        }
        free(rec);
    }
    if (why == NULL && !end)
        why = "no END record (incomplete file)";
    if (why == NULL && (!version || env->qid[0] == '\0' || env->sender == NULL || env->nrcpts == 0))
        why = "missing envelope records";
    if (why != NULL) {
        snprintf(err, errlen, "%s", why);
        free(d);
        queue_env_free(env);
        return -1;
    }
    env->size = dlen;
    if (data != NULL) {
        if (d == NULL)
            d = xmalloc(1);
        d[dlen] = '\0';
        *data = d;
        *datalen = dlen;
    }
    return 0;
}

static int append_record(const char *path, const char *rec, size_t len, bool sync)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd == -1)
        return -1;
    int r = fs_write_all(fd, rec, len) == -1 || (sync && fdatasync(fd) == -1) ? -1 : 0;
    close(fd);
    return r;
}

int spool_append_processed(const char *path, size_t noutputs, bool sync)
{
    char rec[64];
    int n = snprintf(rec + 5, sizeof rec - 5, "%zu", noutputs);
    rec_head(rec, REC_PROCESSED, (size_t)n);
    return append_record(path, rec, 5 + (size_t)n, sync);
}

int spool_append_retry(const char *path, unsigned attempts, time_t next)
{
    char rec[64];
    int n = snprintf(rec + 5, sizeof rec - 5, "%u %lld", attempts, (long long)next);
    rec_head(rec, REC_RETRY, (size_t)n);
    return append_record(path, rec, 5 + (size_t)n, false);
}

/* A STATUS record in rec[1200]; its length, or 0 on error. */
static size_t status_record(char rec[1200], size_t rcpt, int status, const char *text)
{
    int n = snprintf(rec + 5, 1200 - 5, "%zu%c%d%c%.1000s", rcpt, 0, status, 0,
                     text ? text : "");
    if (n < 0)
        return 0;
    size_t len = (size_t)n + 1;   /* with the final NUL */
    rec_head(rec, REC_STATUS, len);
    return 5 + len;
}

int spool_append_status(const char *path, size_t rcpt, int status, const char *text)
{
    char rec[1200];
    size_t len = status_record(rec, rcpt, status, text);
    return len == 0 ? -1 : append_record(path, rec, len, true);
}

int spool_write_file(const char *queue_dir, const char *sub, const char *name,
                     const struct queue_env *env, const char *data, size_t len, bool sync)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s/%s", queue_dir, sub, name);
    int fd = recycle_take(queue_dir, path);
    if (fd == -1)
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return -1;
    struct spool_writer *w = spool_writer_open(queue_dir, fd, name, env);
    if (w == NULL) {
        unlink(path);
        return -1;
    }
    str_copy(w->path, path, sizeof w->path);
    if (spool_writer_data(w, data, len) == -1 || spool_writer_finish(w) == -1) {
        spool_writer_abort(w);
        return -1;
    }
    /* recipients the processor refused (a stage's output): their STATUS
     * records follow END, as if appended when they were refused */
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (env->rcpts[i].status != QR_REFUSED)
            continue;
        char rec[1200];
        size_t rl = status_record(rec, i, QR_REFUSED, env->rcpts[i].status_text);
        if (rl == 0 || append_record(path, rec, rl, false) == -1) {
            spool_writer_abort(w);
            return -1;
        }
    }
    if (sync && fdatasync(w->fd) == -1) {
        spool_writer_abort(w);
        return -1;
    }
    spool_writer_free(w);
    return 0;
}

void queue_outputs_add(struct queue_outputs *o, const struct queue_env *env, const void *data,
                       size_t len)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 4;
        o->v = xrealloc(o->v, o->cap * sizeof *o->v);
    }
    struct queue_output *x = &o->v[o->n++];
    memset(x, 0, sizeof *x);
    struct queue_env *e = &x->env;
    e->arrival = env->arrival;   /* 0: the queue stamps it when the stage commits */
    e->sender = xstrdup(env->sender ? env->sender : "");
    e->nrcpts = env->nrcpts;
    e->rcpts = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *e->rcpts);
    for (size_t i = 0; i < env->nrcpts; i++) {
        e->rcpts[i].addr = xstrdup(env->rcpts[i].addr);
        e->rcpts[i].orig = xstrdup(env->rcpts[i].orig ? env->rcpts[i].orig : env->rcpts[i].addr);
        e->rcpts[i].notify = env->rcpts[i].notify;
        e->rcpts[i].orcpt = env->rcpts[i].orcpt ? xstrdup(env->rcpts[i].orcpt) : NULL;
        if (env->rcpts[i].status == QR_REFUSED) {   /* spool_write_file records it */
            e->rcpts[i].status = QR_REFUSED;
            e->rcpts[i].status_text =
                xstrdup(env->rcpts[i].status_text ? env->rcpts[i].status_text : "");
        }
    }
    e->body = env->body;
    e->ret = env->ret;
    e->smtputf8 = env->smtputf8;
    e->requiretls = env->requiretls;
    e->deadline = env->deadline;
    char **src[] = {env->envid ? (char **)&env->envid : NULL, (char **)&env->stage,
                    (char **)&env->listener, (char **)&env->proto};
    char **dst[] = {&e->envid, &e->stage, &e->listener, &e->proto};
    for (size_t i = 0; i < 4; i++)
        if (src[i] && *src[i])
            *dst[i] = xstrdup(*src[i]);
    x->data = xmalloc(len + 1);
    memcpy(x->data, data, len);
    x->len = len;
}

void queue_outputs_add_pub(struct queue_outputs *o, const struct deliver_pending *p)
{
    if (o->npubs == o->pubcap) {
        o->pubcap = o->pubcap ? o->pubcap * 2 : 4;
        o->pubs = xrealloc(o->pubs, o->pubcap * sizeof *o->pubs);
    }
    o->pubs[o->npubs++] = *p;
}

void queue_outputs_free(struct queue_outputs *o)
{
    for (size_t i = 0; i < o->n; i++) {
        queue_env_free(&o->v[i].env);
        free(o->v[i].data);
    }
    free(o->v);
    free(o->pubs);
    memset(o, 0, sizeof *o);
}

int queue_inject(const char *queue_dir, const struct queue_env *env, const char *data,
                 size_t len, char qid[QUEUE_ID_LEN + 1])
{
    struct queue_env e = *env;
    queue_new_id(e.qid);
    e.arrival = time(NULL);
    struct spool_writer *w = spool_writer_open(queue_dir, -1, NULL, &e);
    if (w == NULL)
        return -1;
    char from[PATH_MAX], to[PATH_MAX];
    snprintf(from, sizeof from, "%s/incoming/%s", queue_dir, e.qid);
    snprintf(to, sizeof to, "%s/queue/%s", queue_dir, e.qid);
    if (spool_writer_data(w, data, len) == -1 || spool_writer_finish(w) == -1 ||
        fdatasync(w->fd) == -1 || rename(from, to) == -1) {
        spool_writer_abort(w);
        return -1;
    }
    spool_writer_free(w);
    snprintf(from, sizeof from, "%s/queue", queue_dir);
    if (fs_fsync_dir(from) == -1) {
        unlink(to);
        return -1;
    }
    memcpy(qid, e.qid, QUEUE_ID_LEN + 1);
    return 0;
}
