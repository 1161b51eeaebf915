/*
 * recycle.c - spool files are reused, not deleted and created again.
 *
 * A PEC transaction creates and removes about ten spool files per provider.
 * On ext4 without a journal (a common layout for mail spools on virtual
 * machines) every inode allocation skips, one by one, each inode freed in the
 * last half minute (ext4's recently_deleted()), so at a few hundred messages
 * a second creating a file costs more than writing it, and the cost grows
 * with the rate.  Other file systems also pay for inode allocation and, with
 * online discard, for freeing blocks.  So a finished spool file is renamed
 * into free/ and the next writer renames it back and overwrites it in place
 * (what it held before is covered by a PAD record, or cut when much longer:
 * spool_writer_finish).
 *
 * free/ holds only garbage: nothing in it is ever read, and a crash at any
 * point loses nothing (a rename is atomic; a file is in free/ or where it
 * was).  The list of free files lives in memory, filled from free/ when the
 * queue opens; at most RECYCLE_MAX files are kept, large ones never.
 */
#include "queue_int.h"
#include "lib/lib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECYCLE_MAX 4096
#define RECYCLE_MAX_SIZE (256 * 1024)   /* bigger files are deleted: bounded disk use */

struct freelist {
    char dir[PATH_MAX];                 /* QUEUE/free */
    GMutex lock;
    GPtrArray *names;                   /* names in free/ */
    unsigned long long seq;
    char prefix[16];
};

/* One queue directory per process in pecd; tests open several in turn. */
static GMutex registry_lock;
static GHashTable *registry;            /* queue dir -> struct freelist* */

static struct freelist *lookup(const char *queue_dir, bool create)
{
    g_mutex_lock(&registry_lock);
    if (registry == NULL)
        registry = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    struct freelist *f = g_hash_table_lookup(registry, queue_dir);
    if (f == NULL && create) {
        f = xcalloc(1, sizeof *f);
        snprintf(f->dir, sizeof f->dir, "%s/free", queue_dir);
        g_mutex_init(&f->lock);
        f->names = g_ptr_array_new_with_free_func(g_free);
        snprintf(f->prefix, sizeof f->prefix, "f%X", (unsigned)g_random_int());
        g_hash_table_insert(registry, g_strdup(queue_dir), f);
    }
    g_mutex_unlock(&registry_lock);
    return f;
}

int recycle_open(const char *queue_dir)
{
    struct freelist *f = lookup(queue_dir, true);
    if (mkdir(f->dir, 0700) == -1 && errno != EEXIST)
        return -1;
    DIR *d = opendir(f->dir);
    if (d == NULL)
        return -1;
    g_mutex_lock(&f->lock);
    g_ptr_array_set_size(f->names, 0);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (f->names->len < RECYCLE_MAX)
            g_ptr_array_add(f->names, g_strdup(de->d_name));
        else
            unlinkat(dirfd(d), de->d_name, 0);
    }
    g_mutex_unlock(&f->lock);
    closedir(d);
    return 0;
}

int recycle_take(const char *queue_dir, const char *path)
{
    struct freelist *f = lookup(queue_dir, false);
    if (f == NULL)
        return -1;
    for (;;) {
        g_mutex_lock(&f->lock);
        char *name = f->names->len ? g_ptr_array_steal_index_fast(f->names, f->names->len - 1)
                                   : NULL;
        g_mutex_unlock(&f->lock);
        if (name == NULL)
            return -1;
        char from[PATH_MAX];
        snprintf(from, sizeof from, "%s/%s", f->dir, name);
        g_free(name);
        /* never over an existing file: link would refuse, rename would not */
        int r = renameat2(AT_FDCWD, from, AT_FDCWD, path, RENAME_NOREPLACE);
        if (r == -1 && errno == EINVAL) {
            /* a file system without RENAME_NOREPLACE: look first */
            if (access(path, F_OK) == 0) {
                errno = EEXIST;
                r = -1;
            } else {
                r = rename(from, path);
            }
        }
        if (r == -1 && errno == EEXIST)
            return -1;   /* the free file stays in free/ (listed again at the next start) */
        if (r == -1)
            continue;   /* gone (removed by hand?): try the next one */
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd == -1)
            unlink(path);
        return fd;
    }
}

int recycle_put(const char *queue_dir, const char *path)
{
    struct freelist *f = lookup(queue_dir, false);
    struct stat st;
    if (f == NULL || stat(path, &st) == -1 || st.st_size > RECYCLE_MAX_SIZE)
        return unlink(path);
    g_mutex_lock(&f->lock);
    bool full = f->names->len >= RECYCLE_MAX;
    unsigned long long n = f->seq++;
    g_mutex_unlock(&f->lock);
    if (full)
        return unlink(path);
    char name[64], to[PATH_MAX];
    snprintf(name, sizeof name, "%s.%llu", f->prefix, n);
    snprintf(to, sizeof to, "%s/%s", f->dir, name);
    if (rename(path, to) == -1)
        return unlink(path);
    g_mutex_lock(&f->lock);
    g_ptr_array_add(f->names, g_strdup(name));
    g_mutex_unlock(&f->lock);
    return 0;
}

size_t recycle_count(const char *queue_dir)
{
    struct freelist *f = lookup(queue_dir, false);
    if (f == NULL)
        return 0;
    g_mutex_lock(&f->lock);
    size_t n = f->names->len;
    g_mutex_unlock(&f->lock);
    return n;
}
