/*
 * fs.c - durable file-system helpers: the pattern every durable write in
 * pecmail follows (temp name with O_EXCL, write, fsync, rename, fsync of the
 * directory), as OpenSMTPD and Postfix do.
 */
#include "lib.h"

#include <errno.h>
#include <glib.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_mkdirs(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (str_copy(buf, path, sizeof buf) >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) == -1 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, mode) == -1 && errno != EEXIST)
        return -1;
    return 0;
}

int fs_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

int fs_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    if (str_fmt(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) < 0 ||
        str_copy(dir, path, sizeof dir) >= sizeof dir) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd == -1)
        return -1;
    if (fs_write_all(fd, data, len) == -1 || fsync(fd) == -1) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (close(fd) == -1 || rename(tmp, path) == -1) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return fs_fsync_dir(dirname(dir));
}

int fs_read_file(const char *path, char **out, size_t *len, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    struct stat st;
    if (fstat(fd, &st) == -1) {
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        errno = EFBIG;
        return -1;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    if (len)
        *len = got;
    return 0;
}

int fs_publish(const char *tmp, const char *dst)
{
    /* one rename that never replaces: what link + unlink do, in one call and
     * without touching the inode's link count; link where the file system
     * has no RENAME_NOREPLACE */
    int r = renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_NOREPLACE);
    if (r == 0)
        return 0;
    if (errno == EINVAL)
        r = link(tmp, dst);
    if (r == -1 && errno != EEXIST) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    unlink(tmp);
    return 0;
}

bool fs_same_fs(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev;
}

/* ---- directories seen lately (fs_dir_stat) ------------------------------ */

#define DIR_CACHE_MAX 20000   /* then it starts again: bounded memory */

struct dir_seen {
    dev_t dev;
    gint64 until;   /* g_get_monotonic_time() */
};

static GMutex dir_lock;
static GHashTable *dir_seen;   /* path -> struct dir_seen */

int fs_dir_stat(const char *path, dev_t *dev)
{
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&dir_lock);
    const struct dir_seen *d = dir_seen ? g_hash_table_lookup(dir_seen, path) : NULL;
    bool hit = d != NULL && d->until > now;
    if (hit && dev != NULL)
        *dev = d->dev;
    g_mutex_unlock(&dir_lock);
    if (hit)
        return 0;
    struct stat st;
    if (stat(path, &st) == -1)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    if (dev != NULL)
        *dev = st.st_dev;
    struct dir_seen *n = g_new(struct dir_seen, 1);
    n->dev = st.st_dev;
    n->until = now + FS_DIR_TTL_SECONDS * G_USEC_PER_SEC;
    g_mutex_lock(&dir_lock);
    if (dir_seen == NULL || g_hash_table_size(dir_seen) >= DIR_CACHE_MAX) {
        if (dir_seen != NULL)
            g_hash_table_destroy(dir_seen);
        dir_seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    }
    g_hash_table_replace(dir_seen, g_strdup(path), n);
    g_mutex_unlock(&dir_lock);
    return 0;
}
