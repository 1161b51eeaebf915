/*
 * fs_copy.c - copies of files and directory trees for backups and restores
 * (pecctl backup/restore, pecd's snapshot of its spool).
 *
 * copy_file_range(2) moves the bytes inside the kernel (a reflink where the
 * file system offers one), falling back to read/write.  Every file and
 * directory written is fsync'ed before the function returns, so a backup
 * that reports success is on disk.  Symbolic links and special files are
 * skipped and counted: a spool or a Maildir holds neither.  Modes are kept
 * (at most 0700 for directories, 0600 for files: these copies hold mail).
 */
#include "lib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int copy_fd(int in, int out, off_t size)
{
    off_t left = size;
    while (left > 0) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
        if (n == -1 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL ||
                        errno == EOPNOTSUPP))
            break;       /* the read/write loop below */
        if (n == -1)
            return -1;
        if (n == 0)
            return 0;    /* the file shrank meanwhile: what was there is copied */
        left -= n;
    }
    if (left == 0)
        return 0;
    char buf[65536];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            return (int)n;
        if (fs_write_all(out, buf, (size_t)n) == -1)
            return -1;
    }
}

int fs_copy_file(const char *from, const char *to, mode_t mode, uint64_t *bytes, char *err,
                 size_t errlen)
{
    int in = open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in == -1) {
        snprintf(err, errlen, "%s: %s", from, strerror(errno));
        return -1;
    }
    struct stat st;
    int out = -1, rc = -1;
    if (fstat(in, &st) == -1) {
        snprintf(err, errlen, "%s: %s", from, strerror(errno));
        goto done;
    }
    out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (out == -1) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        goto done;
    }
    if (copy_fd(in, out, st.st_size) == -1 || fchmod(out, mode) == -1 || fsync(out) == -1) {
        snprintf(err, errlen, "%s -> %s: %s", from, to, strerror(errno));
        goto done;
    }
    if (bytes != NULL)
        *bytes += (uint64_t)st.st_size;
    rc = 0;
done:
    if (out != -1 && close(out) == -1 && rc == 0) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        rc = -1;
    }
    close(in);
    return rc;
}

static bool excluded(const char *name, const char *const *skip)
{
    for (size_t i = 0; skip != NULL && skip[i] != NULL; i++)
        if (strcmp(name, skip[i]) == 0)
            return true;
    return false;
}

int fs_copy_tree(const char *from, const char *to, const char *const *skip,
                 struct fs_copy_stats *st, char *err, size_t errlen)
{
    if (mkdir(to, 0700) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        return -1;
    }
    DIR *d = opendir(from);
    if (d == NULL) {
        snprintf(err, errlen, "%s: %s", from, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (errno = 0, de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            excluded(de->d_name, skip))
            continue;
        char a[PATH_MAX], b[PATH_MAX];
        if (str_fmt(a, sizeof a, "%s/%s", from, de->d_name) < 0 ||
            str_fmt(b, sizeof b, "%s/%s", to, de->d_name) < 0) {
            snprintf(err, errlen, "%s/%s: path too long", from, de->d_name);
            rc = -1;
            break;
        }
        struct stat s;
        if (lstat(a, &s) == -1) {
            if (errno == ENOENT)
                continue;    /* gone meanwhile (a Maildir message moved to cur/) */
            snprintf(err, errlen, "%s: %s", a, strerror(errno));
            rc = -1;
        } else if (S_ISDIR(s.st_mode)) {
            rc = fs_copy_tree(a, b, NULL, st, err, errlen);
        } else if (S_ISREG(s.st_mode)) {
            rc = fs_copy_file(a, b, s.st_mode & 0600, st ? &st->bytes : NULL, err, errlen);
            if (rc == -1 && access(a, F_OK) == -1)
                rc = 0;      /* removed between readdir and open */
            else if (rc == 0 && st != NULL)
                st->files++;
        } else if (st != NULL) {
            st->skipped++;
        }
    }
    if (rc == 0 && errno != 0) {
        snprintf(err, errlen, "%s: %s", from, strerror(errno));
        rc = -1;
    }
    closedir(d);
    if (rc == 0 && fs_fsync_dir(to) == -1) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        rc = -1;
    }
    return rc;
}

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) == -1 && errno != ENOENT ? -1 : 0;
}

int fs_remove_tree(const char *path)
{
    if (access(path, F_OK) == -1)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}
