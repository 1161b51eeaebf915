/*
 * maildir.c - Maildir delivery, compatible with Dovecot: files are written
 * in tmp/, synced, and linked into new/ under a unique name; Dovecot later
 * renames them into cur/ keeping the base name and adding ":2,FLAGS".
 *
 * The name is derived from the queue id and the recipient's index, so a
 * delivery repeated after a crash finds its earlier copy (link() fails with
 * EEXIST in new/; for recovered messages new/ and cur/ are searched by the
 * name without its host part, which differs when another node delivers
 * again (it took a dead node's spool over) or after a restore on another
 * host) and is not stored twice.  CRLF line ends are kept as received: PEC signatures cover them.
 */
#include "store.h"
#include "lib/lib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char host_part[256];

static void init_host(void)
{
    if (host_part[0])
        return;
    char h[200];
    if (gethostname(h, sizeof h) != 0)
        str_copy(h, "localhost", sizeof h);
    h[sizeof h - 1] = '\0';
    /* Maildir: '/' and ':' in the host name are written as \057 and \072 */
    size_t o = 0;
    for (const char *p = h; *p && o + 5 < sizeof host_part; p++) {
        if (*p == '/') {
            memcpy(host_part + o, "\\057", 4);
            o += 4;
        } else if (*p == ':') {
            memcpy(host_part + o, "\\072", 4);
            o += 4;
        } else {
            host_part[o++] = *p;
        }
    }
    host_part[o] = '\0';
}

void maildir_name(char *out, size_t outlen, time_t arrival, const char *qid, size_t n,
                  size_t size)
{
    init_host();
    snprintf(out, outlen, "%lld.Q%sR%zu.%s,S=%zu", (long long)arrival, qid, n, host_part, size);
}

static int ensure_maildir(const char *dir, char *err, size_t errlen)
{
    static const char *const subs[] = {"tmp", "new", "cur"};
    char p[PATH_MAX];
    for (size_t i = 0; i < 3; i++) {
        if (str_fmt(p, sizeof p, "%s/%s", dir, subs[i]) < 0) {
            snprintf(err, errlen, "mailbox path too long");
            return -1;
        }
        if (fs_dir_stat(p, NULL) == 0)
            continue;
        if (fs_mkdirs(p, 0700) == -1) {
            snprintf(err, errlen, "cannot create %s: %s", p, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Is there an entry in DIR/sub whose name starts with the message's key,
 * "ARRIVAL.QqidRn." - the name without the host, which differs when a
 * restored queue, or a dead node's spool taken over, is delivered on another
 * host (cur/ adds ":2,FLAGS")? */
static bool delivered_as(const char *dir, const char *sub, const char *name)
{
    const char *dot = strchr(name, '.');
    dot = dot ? strchr(dot + 1, '.') : NULL;
    if (dot == NULL)
        return false;
    size_t n = (size_t)(dot - name) + 1;
    char p[PATH_MAX];
    if (str_fmt(p, sizeof p, "%s/%s", dir, sub) < 0)
        return false;
    DIR *d = opendir(p);
    if (d == NULL)
        return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d)) != NULL)
        found = strncmp(de->d_name, name, n) == 0;
    closedir(d);
    return found;
}

int maildir_prepare(const char *dir, const char *name, const char *header, size_t hlen,
                    const char *data, size_t len, bool recovered, bool sync, char *tmp_out,
                    char *dst_out, size_t pathlen, char *err, size_t errlen)
{
    if (ensure_maildir(dir, err, errlen) == -1)
        return -1;
    if (str_fmt(tmp_out, pathlen, "%s/tmp/%s", dir, name) < 0 ||
        str_fmt(dst_out, pathlen, "%s/new/%s", dir, name) < 0) {
        snprintf(err, errlen, "mailbox path too long");
        return -1;
    }
    if (recovered) {
        struct stat st;
        if (stat(dst_out, &st) == 0 || delivered_as(dir, "new", name) ||
            delivered_as(dir, "cur", name))
            return 1;   /* delivered before the crash (or the backup restored) */
    }
    int fd = open(tmp_out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd == -1 && errno == ENOENT) {
        /* removed since ensure_maildir last looked (it remembers for a while) */
        char t[PATH_MAX];
        if (str_fmt(t, sizeof t, "%s/tmp", dir) >= 0 && fs_mkdirs(t, 0700) == 0)
            fd = open(tmp_out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    }
    if (fd == -1) {
        snprintf(err, errlen, "cannot create %s: %s", tmp_out, strerror(errno));
        return -1;
    }
    if (fs_write_all(fd, header, hlen) == -1 || fs_write_all(fd, data, len) == -1 ||
        (sync && fdatasync(fd) == -1)) {
        snprintf(err, errlen, "cannot write %s: %s", tmp_out, strerror(errno));
        close(fd);
        unlink(tmp_out);
        return -1;
    }
    if (close(fd) == -1) {
        snprintf(err, errlen, "cannot write %s: %s", tmp_out, strerror(errno));
        unlink(tmp_out);
        return -1;
    }
    return 0;
}


int64_t maildir_usage(const char *dir)
{
    int64_t total = 0;
    static const char *const subs[] = {"new", "cur"};
    for (size_t i = 0; i < 2; i++) {
        char p[PATH_MAX];
        if (str_fmt(p, sizeof p, "%s/%s", dir, subs[i]) < 0)
            return -1;
        DIR *d = opendir(p);
        if (d == NULL) {
            if (errno == ENOENT)
                continue;   /* a mailbox not made yet holds nothing */
            return -1;
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            /* ",S=<size>" in the name (ours and Dovecot's): no stat */
            const char *sz = strstr(de->d_name, ",S=");
            char *end = NULL;
            unsigned long long n = sz ? strtoull(sz + 3, &end, 10) : 0;
            if (sz && end != sz + 3 && (*end == ',' || *end == ':' || *end == '\0')) {
                total += (int64_t)n;
                continue;
            }
            struct stat st;
            if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
                total += st.st_size;
        }
        closedir(d);
    }
    return total;
}
