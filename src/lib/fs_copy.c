/*
 * fs_copy.c - copies of files and directory trees for backups and restores
 * (pecctl backup/restore, pecd's snapshot of its spool), and the walks they
 * need below a directory someone else may write to.
 *
 * copy_file_range(2) moves the bytes inside the kernel (a reflink where the
 * file system offers one), falling back to read/write.  Every file and
 * directory written is fsync'ed before the function returns, so a backup
 * that reports success is on disk.  Symbolic links and special files are
 * skipped and counted: a spool or a Maildir holds neither.  Modes are kept
 * (at most 0700 for directories, 0600 for files: these copies hold mail).
 *
 * fs_give_tree: root giving a tree's entries to another user (pecd's start,
 * privilege separation), walked the same way.
 *
 * Trees are walked through directory descriptors (openat with O_NOFOLLOW,
 * fdopendir, unlinkat), never by path: whoever can write inside a tree (the
 * user pecd runs as, a Maildir's owner) cannot swap a directory for a
 * symbolic link between a check and its use and send a copy or a removal
 * running as root elsewhere.  The top of a tree is the configuration's and
 * is taken as it is; below it, nothing is followed.
 */
#include "lib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TREE_DEPTH_MAX 64   /* a spool, a Maildir tree or a backup is a few levels deep */

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

/* A regular file opened for reading: never follows a link, never blocks on
 * a FIFO, refuses devices.  fd, or -1 (errno; EINVAL: not a regular file). */
static int open_regular_at(int dfd, const char *name)
{
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd == -1)
        return -1;
    struct stat st;
    int e = fstat(fd, &st) == -1 ? errno : !S_ISREG(st.st_mode) ? EINVAL : 0;
    if (e != 0) {
        close(fd);
        errno = e;
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl != -1)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

/* in (a regular file) into a new file name in dfd. */
static int copy_into(int in, int dfd, const char *name, const char *shown, mode_t mode,
                     uint64_t *bytes, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(in, &st) == -1) {
        snprintf(err, errlen, "%s: %s", shown, strerror(errno));
        return -1;
    }
    /* O_EXCL: a copy goes into a directory made for it; an entry already
     * there (a link planted to redirect the write) is an error, not a target */
    int out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (out == -1) {
        snprintf(err, errlen, "%s (copy): %s", shown, strerror(errno));
        return -1;
    }
    int rc = 0;
    if (copy_fd(in, out, st.st_size) == -1 || fchmod(out, mode) == -1 || fsync(out) == -1) {
        snprintf(err, errlen, "%s: %s", shown, strerror(errno));
        rc = -1;
    }
    if (close(out) == -1 && rc == 0) {
        snprintf(err, errlen, "%s: %s", shown, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && bytes != NULL)
        *bytes += (uint64_t)st.st_size;
    return rc;
}

int fs_copy_file(const char *from, const char *to, mode_t mode, uint64_t *bytes, char *err,
                 size_t errlen)
{
    int in = open_regular_at(AT_FDCWD, from);
    if (in == -1) {
        snprintf(err, errlen, "%s: %s", from,
                 errno == EINVAL ? "not a regular file" : strerror(errno));
        return -1;
    }
    int rc = copy_into(in, AT_FDCWD, to, to, mode, bytes, err, errlen);
    close(in);
    return rc;
}

int fs_copy_file_fd(int in, const char *from, const char *to, mode_t mode, uint64_t *bytes,
                    char *err, size_t errlen)
{
    struct stat st;
    if (fstat(in, &st) == -1) {
        snprintf(err, errlen, "%s: %s", from, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", from);
        return -1;
    }
    if (lseek(in, 0, SEEK_SET) == -1) {
        snprintf(err, errlen, "%s: %s", from, strerror(errno));
        return -1;
    }
    return copy_into(in, AT_FDCWD, to, to, mode, bytes, err, errlen);
}

static bool excluded(const char *name, const char *const *skip)
{
    for (size_t i = 0; skip != NULL && skip[i] != NULL; i++)
        if (strcmp(name, skip[i]) == 0)
            return true;
    return false;
}

/* The tree open as from_dfd into the directory open as to_dfd (both taken
 * over: closed here); from and to name them in messages. */
static int copy_tree_at(int from_dfd, const char *from, int to_dfd, const char *to,
                        const char *const *skip, struct fs_copy_stats *st, unsigned depth,
                        char *err, size_t errlen)
{
    if (depth > TREE_DEPTH_MAX) {
        close(from_dfd);
        close(to_dfd);
        snprintf(err, errlen, "%s: more than %d levels of directories", from, TREE_DEPTH_MAX);
        return -1;
    }
    DIR *d = fdopendir(from_dfd);
    if (d == NULL) {
        close(from_dfd);
        close(to_dfd);
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
        if (fstatat(dirfd(d), de->d_name, &s, AT_SYMLINK_NOFOLLOW) == -1) {
            if (errno == ENOENT)
                continue;    /* gone meanwhile (a Maildir message moved to cur/) */
            snprintf(err, errlen, "%s: %s", a, strerror(errno));
            rc = -1;
        } else if (S_ISDIR(s.st_mode)) {
            int sub = openat(dirfd(d), de->d_name,
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub == -1 && errno == ENOENT)
                continue;
            if (sub == -1 && (errno == ELOOP || errno == ENOTDIR)) {
                if (st != NULL)
                    st->skipped++;   /* swapped for a link since fstatat: not followed */
                continue;
            }
            if (sub == -1) {
                snprintf(err, errlen, "%s: %s", a, strerror(errno));
                rc = -1;
                break;
            }
            int sub_to = -1;
            if (mkdirat(to_dfd, de->d_name, 0700) == 0 || errno == EEXIST)
                sub_to = openat(to_dfd, de->d_name,
                                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub_to == -1) {
                snprintf(err, errlen, "%s: %s", b,
                         errno == ELOOP || errno == ENOTDIR
                             ? "not a directory (a link?): not followed"
                             : strerror(errno));
                close(sub);
                rc = -1;
                break;
            }
            rc = copy_tree_at(sub, a, sub_to, b, NULL, st, depth + 1, err, errlen);
        } else if (S_ISREG(s.st_mode)) {
            int in = open_regular_at(dirfd(d), de->d_name);
            if (in == -1 && errno == ENOENT)
                continue;    /* removed between readdir and open */
            if (in == -1 && (errno == ELOOP || errno == EINVAL)) {
                if (st != NULL)
                    st->skipped++;   /* swapped for a link or a FIFO: not followed */
                continue;
            }
            if (in == -1) {
                snprintf(err, errlen, "%s: %s", a, strerror(errno));
                rc = -1;
                break;
            }
            rc = copy_into(in, to_dfd, de->d_name, b, s.st_mode & 0600,
                           st ? &st->bytes : NULL, err, errlen);
            close(in);
            if (rc == 0 && st != NULL)
                st->files++;
        } else if (st != NULL) {
            st->skipped++;   /* a link, a FIFO, a socket, a device */
        }
    }
    if (rc == 0 && errno != 0) {
        snprintf(err, errlen, "%s: %s", from, strerror(errno));
        rc = -1;
    }
    closedir(d);
    if (rc == 0 && fsync(to_dfd) == -1) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        rc = -1;
    }
    close(to_dfd);
    return rc;
}

/* The top of a copy: to (the caller's: a new backup, a staging directory)
 * made 0700 if absent and opened. */
static int open_top(const char *to, char *err, size_t errlen)
{
    if (mkdir(to, 0700) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        return -1;
    }
    int fd = open(to, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd == -1)
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
    return fd;
}

/* The tree below fd (ours, closed here) into to. */
static int copy_tree_from(int fd, const char *from, const char *to, const char *const *skip,
                          struct fs_copy_stats *st, char *err, size_t errlen)
{
    if (fd == -1) {
        snprintf(err, errlen, "%s: %s", from, strerror(errno));
        return -1;
    }
    int to_fd = open_top(to, err, errlen);
    if (to_fd == -1) {
        close(fd);
        return -1;
    }
    return copy_tree_at(fd, from, to_fd, to, skip, st, 0, err, errlen);
}

int fs_copy_tree(const char *from, const char *to, const char *const *skip,
                 struct fs_copy_stats *st, char *err, size_t errlen)
{
    return copy_tree_from(open(from, O_RDONLY | O_DIRECTORY | O_CLOEXEC), from, to, skip, st,
                          err, errlen);
}

int fs_copy_tree_fd(int from_dfd, const char *from, const char *to,
                    struct fs_copy_stats *st, char *err, size_t errlen)
{
    return copy_tree_from(dup(from_dfd), from, to, NULL, st, err, errlen);
}

int fs_open_dir_beneath(const char *base, const char *rel, bool create, char *err,
                        size_t errlen)
{
    int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1) {
        snprintf(err, errlen, "%s: %s", base, strerror(errno));
        return -1;
    }
    char buf[PATH_MAX];
    if (str_copy(buf, rel, sizeof buf) >= sizeof buf) {
        close(fd);
        snprintf(err, errlen, "%s/%s: path too long", base, rel);
        return -1;
    }
    char *save = NULL;
    for (char *c = strtok_r(buf, "/", &save); c != NULL; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, "..") == 0 || strcmp(c, ".") == 0) {
            close(fd);
            snprintf(err, errlen, "%s/%s: '%s' in a path", base, rel, c);
            return -1;
        }
        int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next == -1 && errno == ENOENT && create) {
            if (mkdirat(fd, c, 0700) == -1 && errno != EEXIST) {
                snprintf(err, errlen, "%s/%s: %s", base, rel, strerror(errno));
                close(fd);
                return -1;
            }
            next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next == -1) {
            int e = errno;
            close(fd);
            snprintf(err, errlen, "%s/%s: %s", base, rel,
                     e == ELOOP || e == ENOTDIR
                         ? "a symbolic link or a file where a directory belongs: not followed"
                         : strerror(e));
            errno = e;
            return -1;
        }
        close(fd);
        fd = next;
    }
    return fd;
}

int fs_open_file_beneath(const char *base, const char *rel, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    if (str_copy(dir, rel, sizeof dir) >= sizeof dir) {
        snprintf(err, errlen, "%s/%s: path too long", base, rel);
        return -1;
    }
    char *slash = strrchr(dir, '/');
    const char *name = rel;
    if (slash != NULL) {
        *slash = '\0';
        name = rel + (slash - dir) + 1;
    } else {
        dir[0] = '\0';
    }
    int dfd = fs_open_dir_beneath(base, dir, false, err, errlen);
    if (dfd == -1)
        return -1;
    int fd = name[0] && strcmp(name, "..") != 0 && strcmp(name, ".") != 0
                 ? open_regular_at(dfd, name)
                 : (errno = EINVAL, -1);
    int e = errno;
    close(dfd);
    if (fd == -1) {
        snprintf(err, errlen, "%s/%s: %s", base, rel,
                 e == ELOOP || e == EINVAL ? "not a regular file (a link, a directory or a "
                                             "device): refused"
                                           : strerror(e));
        errno = e;
    }
    return fd;
}

/* rm -r of name in dfd, through descriptors only. */
static int remove_at(int dfd, const char *name, unsigned depth)
{
    if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -1;
    if (depth > TREE_DEPTH_MAX) {
        errno = ELOOP;
        return -1;
    }
    int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub == -1 && (errno == ELOOP || errno == ENOTDIR))
        return unlinkat(dfd, name, 0) == 0 || errno == ENOENT ? 0 : -1;  /* swapped in */
    if (sub == -1)
        return errno == ENOENT ? 0 : -1;
    DIR *d = fdopendir(sub);
    if (d == NULL) {
        close(sub);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (remove_at(dirfd(d), de->d_name, depth + 1) == -1)
            rc = -1;
    }
    closedir(d);
    if (rc == 0 && unlinkat(dfd, name, AT_REMOVEDIR) == -1 && errno != ENOENT)
        rc = -1;
    return rc;
}

int fs_remove_tree(const char *path)
{
    char parent[PATH_MAX];
    if (str_copy(parent, path, sizeof parent) >= sizeof parent) {
        errno = ENAMETOOLONG;
        return -1;
    }
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = '\0';
    char *slash = strrchr(parent, '/');
    const char *name = slash ? slash + 1 : parent;
    int dfd;
    if (slash == NULL)
        dfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    else if (slash == parent)
        dfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    else {
        *slash = '\0';
        dfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (dfd == -1)
        return errno == ENOENT ? 0 : -1;
    if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        close(dfd);
        errno = EINVAL;
        return -1;
    }
    int rc = remove_at(dfd, name, 0);
    int e = errno;
    close(dfd);
    errno = e;
    return rc;
}

/* ---- ownership ------------------------------------------------------------------ */

#define GIVE_DEPTH_MAX 32

static int give_below(int dfd, dev_t dev, uid_t from, uid_t uid, gid_t gid, int depth)
{
    DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return 1;
    }
    int failed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 || st.st_dev != dev)
            continue;
        if (st.st_uid == from &&
            fchownat(dirfd(d), e->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) == -1)
            failed++;
        if (!S_ISDIR(st.st_mode) || depth >= GIVE_DEPTH_MAX)
            continue;
        int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub != -1)
            failed += give_below(sub, dev, from, uid, gid, depth + 1);
    }
    closedir(d);
    return failed;
}

int fs_give_tree(const char *dir, uid_t from_uid, uid_t uid, gid_t gid)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);   /* the caller's, as it is */
    if (dfd == -1)
        return 1;
    struct stat st;
    if (fstat(dfd, &st) == -1) {
        close(dfd);
        return 1;
    }
    return give_below(dfd, st.st_dev, from_uid, uid, gid, 0);
}
