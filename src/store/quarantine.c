/*
 * quarantine.c - the quarantine store (quarantine.h).  Messages are files
 * written with fs_write_atomic() (temp file, fsync, rename, fsync of the
 * directory), so a message is in the store before the client hears 250.
 * Their index is the .info file beside each one; with the shared database
 * ([state] database) each is also a row of the quarantine table (node,
 * queue id, day, path, reason, sender, recipients), written before the
 * reply too, so that any node or the operator finds what every node holds;
 * the daily purge removes the rows with the day directories.
 */
#include "quarantine.h"
#include "pg.h"
#include "lib/lib.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void day_of(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d", &tm);
}

/* "YYYY-MM-DD": a day directory of the store (anything else is never purged) */
static bool day_dir_name(const char *s)
{
    if (strlen(s) != 10)
        return false;
    for (int i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? s[i] != '-' : !isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool safe_name(const char *s)
{
    return s[0] != '\0' && s[0] != '.' && strchr(s, '/') == NULL;
}

int quarantine_store(const char *dir, const struct quarantine_info *qi, const char *data,
                     size_t len, char *path_out, size_t pathlen, char *err, size_t errlen)
{
    time_t now = time(NULL);
    char day[16], ddir[PATH_MAX], path[PATH_MAX];
    day_of(now, day, sizeof day);
    if (!safe_name(qi->qid) || str_fmt(ddir, sizeof ddir, "%s/%s", dir, day) < 0 ||
        str_fmt(path, sizeof path, "%s/%s.eml", ddir, qi->qid) < 0) {
        snprintf(err, errlen, "quarantine: bad queue id or path too long");
        return -1;
    }
    if (fs_mkdirs(ddir, 0700) == -1 || fs_write_atomic(path, data, len, 0600) == -1) {
        snprintf(err, errlen, "quarantine %s: %s", path, strerror(errno));
        return -1;
    }
    char date[64];
    rfc5322_date(date, sizeof date, now);
    size_t cap = 512 + strlen(qi->reason) + strlen(qi->sender);
    for (size_t i = 0; i < qi->nrcpts; i++)
        cap += strlen(qi->rcpts[i]) + 2;
    char *buf = xmalloc(cap);
    int n = snprintf(buf, cap, "queue-id: %s\ndate: %s\nreason: %s\nclient: %s\nsender: %s\n"
                     "recipients:", qi->qid, date, qi->reason,
                     qi->client_ip ? qi->client_ip : "local", qi->sender);
    for (size_t i = 0; i < qi->nrcpts && n > 0; i++)
        n += snprintf(buf + n, cap - (size_t)n, " %s", qi->rcpts[i]);
    n += snprintf(buf + n, cap - (size_t)n, "\n");
    char ipath[PATH_MAX];
    snprintf(ipath, sizeof ipath, "%s/%s.info", ddir, qi->qid);
    int r = fs_write_atomic(ipath, buf, (size_t)n, 0600);
    free(buf);
    if (r == -1) {
        snprintf(err, errlen, "quarantine %s: %s", ipath, strerror(errno));
        return -1;
    }
    if (pg_configured()) {
        /* the shared index: without it the message is stored but unfindable
         * from the other nodes, so the client tries again later */
        GString *to = g_string_new(NULL);
        for (size_t i = 0; i < qi->nrcpts; i++)
            g_string_append_printf(to, "%s%s", i ? ", " : "", qi->rcpts[i]);
        char at[32], e2[512];
        snprintf(at, sizeof at, "%lld", (long long)now);
        const char *p[] = {pg_node(), qi->qid, day, path, qi->reason, qi->sender, to->str,
                           qi->client_ip, at};
        PGconn *c = pg_get(e2, sizeof e2);
        long rows = c ? pg_command(c, e2, sizeof e2, "quarantine index",
                                "INSERT INTO quarantine (node, qid, day, path, reason, sender, "
                                "recipients, client, stored_at) VALUES ($1, $2, $3::date, $4, "
                                "$5, $6, $7, $8, $9::bigint) ON CONFLICT (node, qid) DO UPDATE "
                                "SET path = excluded.path, reason = excluded.reason",
                                9, p)
                      : -1;
        pg_put(c);
        g_string_free(to, TRUE);
        if (rows < 0) {
            snprintf(err, errlen, "quarantine %s: %s", path, e2);
            return -1;
        }
    }
    if (path_out != NULL)
        str_copy(path_out, path, pathlen);
    return 0;
}

static int remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    struct dirent *e;
    char p[PATH_MAX];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(path);
}

int quarantine_purge(const char *dir, time_t older_than, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "quarantine %s: %s", dir, strerror(errno));
        return -1;
    }
    /* a day directory goes once the whole day is older than older_than:
     * its name sorts before the day of older_than */
    char limit[16];
    day_of(older_than, limit, sizeof limit);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!day_dir_name(e->d_name) || strcmp(e->d_name, limit) >= 0)
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (remove_tree(p) == 0)
            n++;
    }
    closedir(d);
    if (n > 0)
        fs_fsync_dir(dir);
    if (pg_configured()) {
        /* this node's rows of the days gone (a node's purge, its own files) */
        char e2[512];
        const char *p[] = {pg_node(), limit};
        PGconn *c = pg_get(e2, sizeof e2);
        if (c == NULL ||
            pg_command(c, e2, sizeof e2, "quarantine index",
                       "DELETE FROM quarantine WHERE node = $1 AND day < $2::date", 2, p) < 0)
            log_warn("quarantine index: %s (tried again at the next purge)", e2);
        pg_put(c);
    }
    return n;
}
