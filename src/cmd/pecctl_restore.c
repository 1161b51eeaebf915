/*
 * pecctl_restore.c - `pecctl -c CONF restore DIR [--force]`: a backup made by
 * `pecctl backup` (pecctl_backup.c, whose header comment says what it holds)
 * put back (issue 23; the runbook: docs/backup.md).
 *
 * restore checks every file against MANIFEST, refuses to run beside a pecd
 * or over an instance that has state (--force moves that state aside), and
 * puts each file where the configuration names it (pecd.conf itself first
 * when CONF does not exist).  The spools of other nodes (spools/NODE) go
 * where the [state] database says that spool is, under its lock.  Nothing is
 * sent by restore: pecd, at its next start, resumes the restored queue as
 * after a crash.
 *
 * Interface: pecctl_restore_main (pecctl_backup.h).
 */
#include "pecctl_backup.h"
#include "lib/config.h"
#include "lib/domains.h"
#include "lib/lib.h"
#include "store/state.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pwd.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct mfile {
    char role[64], rel[PATH_MAX / 2];
    bool dir;
    uint64_t size;
    char sha[65];
};

/* Reads and checks MANIFEST and every file it lists. */
static GArray *read_manifest(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/MANIFEST", dir);
    if (fs_read_file(path, &text, &len, 256u << 20) == -1) {
        snprintf(err, errlen, "%s: %s (not a complete backup)", path, strerror(errno));
        return NULL;
    }
    GArray *files = g_array_new(FALSE, TRUE, sizeof(struct mfile));
    gchar **lines = g_strsplit(text, "\n", -1);
    free(text);
    bool ended = false, ok = lines[0] != NULL && strcmp(lines[0], MANIFEST_MAGIC) == 0;
    if (!ok)
        snprintf(err, errlen, "%s: not a pecmail backup manifest", path);
    for (size_t i = 1; ok && lines[i] != NULL && !ended; i++) {
        const char *l = lines[i];
        struct mfile f = {0};
        char size[32];
        if (strcmp(l, "end") == 0) {
            ended = true;
        } else if (l[0] == 'f' && l[1] == ' ') {
            ok = sscanf(l + 2, "%63s %2047s %31s %64s", f.role, f.rel, size, f.sha) == 4 &&
                 backup_safe_rel(f.rel) && strlen(f.sha) == 64;
            f.size = strtoull(size, NULL, 10);
            if (ok) {
                /* through descriptors, no link followed: a backup directory
                 * may come from elsewhere, and restore runs as root */
                char fp[PATH_MAX], hex[65], e2[512];
                uint64_t got = 0;
                snprintf(fp, sizeof fp, "%s/%s", dir, f.rel);
                int fd = fs_open_file_beneath(dir, f.rel, e2, sizeof e2);
                if (fd == -1 && errno != ENOENT) {
                    snprintf(err, errlen, "%s (damaged or forged backup)", e2);
                    ok = false;
                    break;
                }
                int r = fd == -1 ? -1 : backup_sha256_fd(fd, f.size, hex, &got);
                if (fd != -1)
                    close(fd);
                if (r == -1 || got != f.size || strcmp(hex, f.sha) != 0) {
                    snprintf(err, errlen, "%s: %s the backup's manifest (damaged backup)", fp,
                             fd == -1 ? "missing, named in" : "differs from");
                    ok = false;
                    break;
                }
                g_array_append_val(files, f);
            }
        } else if (l[0] == 'd' && l[1] == ' ') {
            ok = sscanf(l + 2, "%63s %2047s", f.role, f.rel) == 2 && backup_safe_rel(f.rel);
            f.dir = true;
            if (ok)
                g_array_append_val(files, f);
        } else if (strncmp(l, "created ", 8) != 0 && strncmp(l, "version ", 8) != 0 &&
                   strncmp(l, "domain ", 7) != 0 && strncmp(l, "messages ", 9) != 0) {
            ok = false;
        }
        if (!ok && err[0] == '\0')
            snprintf(err, errlen, "%s:%zu: not understood", path, i + 1);
    }
    g_strfreev(lines);
    if (ok && !ended) {
        snprintf(err, errlen, "%s: no 'end' line (a truncated manifest)", path);
        ok = false;
    }
    if (!ok) {
        g_array_free(files, TRUE);
        return NULL;
    }
    return files;
}

/* Renames path to path.pre-restore-STAMP when it exists. */
static int move_aside(const char *path, const char *stamp)
{
    if (access(path, F_OK) == -1)
        return 0;
    char to[PATH_MAX];
    snprintf(to, sizeof to, "%s.pre-restore-%s", path, stamp);
    if (rename(path, to) == -1)
        return -1;
    printf("moved aside: %s -> %s\n", path, to);
    return 0;
}

static bool has_messages(const char *queue_dir)
{
    static const char *const subs[] = {"queue", "hold", "staged"};
    for (size_t i = 0; i < 3; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", queue_dir, subs[i]);
        GDir *d = g_dir_open(p, 0, NULL);
        bool any = d != NULL && g_dir_read_name(d) != NULL;
        if (d != NULL)
            g_dir_close(d);
        if (any)
            return true;
    }
    return false;
}

/* Restored as root, the state belongs to [pecd] user (pecd, started as
 * root, gives its data directories to it but walks no mail tree); the
 * configuration's files stay root's, the users file readable by its group. */
struct owner {
    bool set;
    uid_t uid;
    gid_t gid;
};

static struct owner pecd_owner(const struct config *cfg)
{
    struct owner o = {0};
    struct passwd *pw;
    if (geteuid() == 0 && cfg->pecd_user != NULL && strcmp(cfg->pecd_user, "root") != 0 &&
        (pw = getpwnam(cfg->pecd_user)) != NULL)
        o = (struct owner){true, pw->pw_uid, pw->pw_gid};
    return o;
}

static bool is_state(const char *role)
{
    static const char *const roles[] = {"queue", "tracking", "evidence", "mail", "quarantine",
                                        "directory_cache", "spools"};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(role, roles[i]) == 0)
            return true;
    return false;
}

/* dst and the directories made for it up to (not including) top */
static void give(const struct owner *o, const char *dst, const char *top)
{
    char p[PATH_MAX];
    str_copy(p, dst, sizeof p);
    size_t n = strlen(top);
    while (strncmp(p, top, n) == 0 && strlen(p) > n) {
        if (lchown(p, o->uid, o->gid) == -1)
            fprintf(stderr, "pecctl restore: %s: chown: %s\n", p, strerror(errno));
        char *slash = strrchr(p, '/');
        if (slash == NULL)
            break;
        *slash = '\0';
    }
}

/* The directory path opened for restoring into, made 0700 where missing.
 * Below data_dir (written by [pecd] user) every level is opened with
 * O_NOFOLLOW from data_dir down and, when o is set, each one below top is
 * given to o with fchown: a directory swapped for a link can neither send
 * the restore's files elsewhere nor make root chown something else.  Other
 * paths are the configuration's and are taken as they are. */
static int open_dest_dir(const struct config *cfg, const char *path, const char *top,
                         const struct owner *o, char *err, size_t errlen)
{
    const char *rel = backup_in_data_dir(cfg, path);
    if (rel == NULL) {
        int fd = -1;
        if (fs_mkdirs(path, 0700) == 0)
            fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd == -1)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        else if (o != NULL)
            give(o, path, top);
        return fd;
    }
    if (fs_mkdirs(cfg->data_dir, 0700) == -1) {
        snprintf(err, errlen, "%s: %s", cfg->data_dir, strerror(errno));
        return -1;
    }
    /* the levels of top inside data_dir keep their owner (give() stops there too) */
    size_t keep = 0;
    const char *trel = backup_in_data_dir(cfg, top);
    for (const char *p = trel; p != NULL && *p; p++)
        keep += p == trel || p[-1] == '/';
    int fd = open(cfg->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1) {
        snprintf(err, errlen, "%s: %s", cfg->data_dir, strerror(errno));
        return -1;
    }
    gchar **parts = g_strsplit(rel, "/", -1);
    for (size_t i = 0; parts[i] != NULL && fd != -1; i++) {
        const char *c = parts[i];
        if (c[0] == '\0')
            continue;
        int next = -1;
        if (strcmp(c, ".") != 0 && strcmp(c, "..") != 0) {
            next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (next == -1 && errno == ENOENT && (mkdirat(fd, c, 0700) == 0 || errno == EEXIST))
                next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        } else {
            errno = EINVAL;
        }
        if (next == -1)
            snprintf(err, errlen, "%s: %s", path,
                     errno == ELOOP || errno == ENOTDIR
                         ? "a symbolic link or a file where a directory belongs: not followed"
                         : strerror(errno));
        else if (o != NULL && i >= keep && fchown(next, o->uid, o->gid) == -1)
            fprintf(stderr, "pecctl restore: %s: chown: %s\n", path, strerror(errno));
        close(fd);
        fd = next;
    }
    g_strfreev(parts);
    return fd;
}

/* The regular file src (open) into name, a new file in dfd, checked while it
 * is copied against the manifest's size and SHA-256 (the backup may have
 * changed since read_manifest); mode and owner set on the descriptor. */
static int restore_copy(int src, const struct mfile *f, int dfd, const char *name,
                        const char *shown, mode_t mode, bool chown_it, uid_t uid, gid_t gid,
                        char *err, size_t errlen)
{
    int out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out == -1) {
        snprintf(err, errlen, "%s: %s", shown, strerror(errno));
        return -1;
    }
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    char buf[65536];
    uint64_t n = 0;
    ssize_t r = 0;
    int rc = 0;
    if (lseek(src, 0, SEEK_SET) == -1)
        rc = -1;
    while (rc == 0 && n <= f->size && (r = read(src, buf, sizeof buf)) > 0) {
        g_checksum_update(c, (const guchar *)buf, r);
        n += (uint64_t)r;
        if (n <= f->size && fs_write_all(out, buf, (size_t)r) == -1)
            rc = -1;
    }
    if (r == -1)
        rc = -1;
    if (rc == -1)
        snprintf(err, errlen, "%s: %s", shown, strerror(errno));
    else if (n != f->size || strcmp(g_checksum_get_string(c), f->sha) != 0) {
        snprintf(err, errlen, "%s: the backup's file changed since it was checked: not "
                 "restored", f->rel);
        rc = -1;
    }
    g_checksum_free(c);
    if (rc == 0 && ((chown_it && fchown(out, uid, gid) == -1) || fchmod(out, mode) == -1 ||
                    fsync(out) == -1)) {
        snprintf(err, errlen, "%s: %s", shown, strerror(errno));
        rc = -1;
    }
    if (close(out) == -1 && rc == 0) {
        snprintf(err, errlen, "%s: %s", shown, strerror(errno));
        rc = -1;
    }
    if (rc == -1)
        unlinkat(dfd, name, 0);
    return rc;
}

/* A spool another node's backup holds (it ran it for this one, or for a
 * third node, that was down): where that node's spool is, by the [state]
 * database (the owner of record), and its lock while restore writes it. */
struct spool_dest {
    char node[72], rel0[96];
    char queue_dir[PATH_MAX], data_dir[PATH_MAX];
    int lock;
};

static void spools_free(GArray *spools)
{
    for (guint i = 0; spools != NULL && i < spools->len; i++) {
        struct spool_dest *d = &g_array_index(spools, struct spool_dest, i);
        if (d->lock != -1)
            close(d->lock);
    }
    if (spools != NULL)
        g_array_free(spools, TRUE);
}

/* The node a file of role "spools" belongs to (rel spools/NODE[/...]), into
 * node; false for "spools" itself or a name that is no node's. */
static bool spool_node_of(const struct mfile *f, char *node, size_t nodelen)
{
    if (strcmp(f->role, "spools") != 0 || strncmp(f->rel, "spools/", 7) != 0)
        return false;
    const char *n = f->rel + 7;
    size_t len = strcspn(n, "/");
    if (len == 0 || len >= nodelen)
        return false;
    memcpy(node, n, len);
    node[len] = '\0';
    return config_node_name_ok(node);
}

/* The spools in the backup, each located in the database, locked (no pecd
 * runs it meanwhile) and, when it holds messages, moved aside with --force
 * (refused without).  NULL with err. */
static GArray *spools_prepare(const struct config *cfg, GArray *files, bool force,
                              const char *stamp, const struct owner *own, char *err,
                              size_t errlen)
{
    GArray *spools = g_array_new(FALSE, TRUE, sizeof(struct spool_dest));
    struct state_node *nodes = NULL;
    size_t nn = 0;
    bool listed = false;
    for (guint i = 0; i < files->len; i++) {
        const struct mfile *f = &g_array_index(files, struct mfile, i);
        char node[72];
        if (!spool_node_of(f, node, sizeof node))
            continue;
        bool known = false;
        for (guint k = 0; k < spools->len && !known; k++)
            known = strcmp(g_array_index(spools, struct spool_dest, k).node, node) == 0;
        if (known)
            continue;
        if (!state_shared(cfg)) {
            snprintf(err, errlen, "the backup holds the spool of node %s, and %s has no [state] "
                     "database to say where it goes", node, cfg->path);
            goto fail;
        }
        if (!listed && state_nodes_list(&nodes, &nn, err, errlen) == -1) {
            char e2[512];
            str_copy(e2, err, sizeof e2);
            snprintf(err, errlen, "the spool of node %s: where it goes is in the [state] "
                     "database, unreachable: %s (restore the database first: pg_restore)",
                     node, e2);
            goto fail;
        }
        listed = true;
        const struct state_node *x = NULL;
        for (size_t k = 0; k < nn && x == NULL; k++)
            if (strcmp(nodes[k].name, node) == 0)
                x = &nodes[k];
        struct spool_dest d = {.lock = -1};
        str_copy(d.node, node, sizeof d.node);
        snprintf(d.rel0, sizeof d.rel0, "spools/%s", node);
        if (x == NULL || strcmp(node, cfg->state_node ? cfg->state_node : "") == 0 ||
            x->queue_dir[0] != '/' || strcmp(x->queue_dir, cfg->queue_dir) == 0) {
            snprintf(err, errlen, "the backup holds the spool of node %s, which the [state] "
                     "database %s", node, x == NULL ? "does not know" : "places here");
            goto fail;
        }
        str_copy(d.queue_dir, x->queue_dir, sizeof d.queue_dir);
        str_copy(d.data_dir, x->data_dir[0] == '/' ? x->data_dir : x->queue_dir,
                 sizeof d.data_dir);
        /* the spool's own lock, as its node's pecd takes it; the directory
         * opened from that node's data directory down, no link followed */
        char lock[PATH_MAX], top[PATH_MAX];
        snprintf(lock, sizeof lock, "%s/pecd.lock", d.queue_dir);
        str_copy(top, d.queue_dir, sizeof top);
        *strrchr(top, '/') = '\0';
        struct config other = *cfg;
        other.data_dir = d.data_dir;
        int dfd = open_dest_dir(&other, d.queue_dir, top, own->set ? own : NULL, err, errlen);
        if (dfd == -1)
            goto fail;
        d.lock = openat(dfd, "pecd.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        close(dfd);
        if (d.lock == -1) {
            snprintf(err, errlen, "%s: %s", lock, strerror(errno));
            goto fail;
        }
        g_array_append_val(spools, d);
        /* made here by root: the lock the spool's pecd (its user) takes next */
        if (own->set && fchown(d.lock, own->uid, own->gid) == -1)
            fprintf(stderr, "pecctl restore: %s: chown: %s\n", lock, strerror(errno));
        if (flock(d.lock, LOCK_EX | LOCK_NB) == -1) {
            snprintf(err, errlen, "the spool of node %s (%s) is run by a pecd (node %s or one "
                     "that took it over): stop it first", node, d.queue_dir, node);
            goto fail;
        }
        if (has_messages(d.queue_dir)) {
            if (!force) {
                snprintf(err, errlen, "the spool of node %s (%s) holds messages; --force moves "
                         "them aside first", node, d.queue_dir);
                goto fail;
            }
            static const char *const subs[] = {"queue", "hold", "staged"};
            for (size_t k = 0; k < 3; k++) {
                char sub[PATH_MAX];
                snprintf(sub, sizeof sub, "%s/%s", d.queue_dir, subs[k]);
                if (move_aside(sub, stamp) == -1) {
                    snprintf(err, errlen, "cannot move %s aside: %s", sub, strerror(errno));
                    goto fail;
                }
            }
        }
    }
    g_free(nodes);
    return spools;
fail:
    g_free(nodes);
    spools_free(spools);
    return NULL;
}

static const struct spool_dest *spool_dest_of(GArray *spools, const struct mfile *f)
{
    char node[72];
    if (spools == NULL || !spool_node_of(f, node, sizeof node))
        return NULL;
    for (guint i = 0; i < spools->len; i++)
        if (strcmp(g_array_index(spools, struct spool_dest, i).node, node) == 0)
            return &g_array_index(spools, struct spool_dest, i);
    return NULL;
}

/* Where the file of role goes: the item's path + what follows its rel. */
static bool destination(GArray *items, GArray *spools, const struct config *cfg,
                        const struct mfile *f, char *out, size_t outlen, char *top,
                        size_t toplen)
{
    char tracking[PATH_MAX];
    snprintf(tracking, sizeof tracking, "%s/tracking.db", cfg->data_dir);
    const char *base = NULL, *rel0 = NULL;
    const struct spool_dest *sd = spool_dest_of(spools, f);
    if (sd != NULL)
        base = sd->queue_dir, rel0 = sd->rel0;
    else if (strcmp(f->role, "spools") == 0)
        return false;
    else if (strcmp(f->role, "queue") == 0)
        base = cfg->queue_dir, rel0 = "queue";
    else if (strcmp(f->role, "tracking") == 0)
        base = tracking, rel0 = "tracking.db";
    else if (strcmp(f->role, "evidence") == 0)
        base = cfg->evidence_path, rel0 = "evidence.db";
    else {
        const struct item *it = backup_find_role(items, f->role);
        if (it == NULL)
            return false;
        base = it->path, rel0 = it->rel;
    }
    size_t n = strlen(rel0);
    if (strncmp(f->rel, rel0, n) != 0 || (f->rel[n] != '\0' && f->rel[n] != '/'))
        return false;
    /* top: the directory the item is in (what is made below it is the item's) */
    str_copy(top, base, toplen);
    char *slash = strrchr(top, '/');
    if (slash != NULL)
        *slash = '\0';
    return str_fmt(out, outlen, "%s%s", base, f->rel + n) >= 0;
}

int pecctl_restore_main(const char *conf, int argc, char **argv)
{
    const char *dir = NULL;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--force") == 0)
            force = true;
        else if (argv[i][0] != '-' && dir == NULL)
            dir = argv[i];
        else
            dir = NULL, i = argc;
    }
    if (dir == NULL) {
        fprintf(stderr, "usage: pecctl -c CONF restore DIR [--force]\n");
        return 2;
    }
    char err[1024] = "", path[PATH_MAX];
    GArray *files = read_manifest(dir, err, sizeof err);
    if (files == NULL) {
        fprintf(stderr, "pecctl restore: %s\n", err);
        return 1;
    }
    /* pecd.conf first, when this host has none yet */
    if (access(conf, F_OK) == -1) {
        const struct mfile *cf = NULL;
        for (guint i = 0; i < files->len && cf == NULL; i++) {
            const struct mfile *f = &g_array_index(files, struct mfile, i);
            if (strcmp(f->role, "config") == 0 && strcmp(f->rel, "pecd.conf") == 0 && !f->dir)
                cf = f;
        }
        char cdir[PATH_MAX];
        str_copy(cdir, conf, sizeof cdir);
        char *slash = strrchr(cdir, '/');
        const char *name = slash ? conf + (slash - cdir) + 1 : conf;
        if (slash != NULL)
            *slash = '\0';
        else
            str_copy(cdir, ".", sizeof cdir);
        int src = -1, dfd = -1, r = -1;
        if (cf == NULL)
            snprintf(err, sizeof err, "%s/MANIFEST names no pecd.conf and %s does not exist",
                     dir, conf);
        else if ((src = fs_open_file_beneath(dir, "pecd.conf", err, sizeof err)) == -1)
            ;
        else if (fs_mkdirs(cdir, 0750) == -1 ||
                 (dfd = open(cdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
            snprintf(err, sizeof err, "%s: %s", cdir, strerror(errno));
        else
            r = restore_copy(src, cf, dfd, name, conf, 0640, false, 0, 0, err, sizeof err);
        if (src != -1)
            close(src);
        if (dfd != -1)
            close(dfd);
        if (r == -1) {
            fprintf(stderr, "pecctl restore: %s\n", err);
            g_array_free(files, TRUE);
            return 1;
        }
        printf("restored %s from the backup\n", conf);
    }
    struct config *cfg = config_load(conf, err, sizeof err);
    if (cfg == NULL) {
        fprintf(stderr, "pecctl restore: configuration error: %s\n", err);
        g_array_free(files, TRUE);
        return 1;
    }
    state_setup(cfg, "pecctl");   /* the configuration read here (it may be the backup's) */
    int rc = 1;
    bool running;
    GArray *spools = NULL;
    GArray *items = backup_items(cfg);
    char mroot[PATH_MAX];
    backup_mail_root(cfg, mroot, sizeof mroot);
    if (mroot[0])
        backup_item_add(items, "mail", "mail", mroot, true, false);
    int qlock = backup_lock_queue(cfg, &running, err, sizeof err);
    if (qlock == -1) {
        fprintf(stderr, "pecctl restore: %s%s\n", err, running ? ": stop it first" : "");
        goto out;
    }
    /* an instance with state of its own is not written over (--force: moved aside) */
    char tracking[PATH_MAX], stamp[32];
    snprintf(tracking, sizeof tracking, "%s/tracking.db", cfg->data_dir);
    time_t now = time(NULL);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", gmtime(&now));
    bool state = has_messages(cfg->queue_dir) || access(tracking, F_OK) == 0 ||
                 access(cfg->evidence_path, F_OK) == 0;
    if (state && !force) {
        fprintf(stderr, "pecctl restore: %s already has a queue, a tracking database or an "
                        "evidence log; --force moves them aside first\n", cfg->data_dir);
        goto out;
    }
    if (state) {
        static const char *const subs[] = {"queue", "hold", "staged"};
        for (size_t i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s/%s", cfg->queue_dir, subs[i]);
            if (move_aside(path, stamp) == -1)
                goto moved;
        }
        const char *dbs[] = {tracking, cfg->evidence_path};
        for (size_t i = 0; i < 2; i++) {
            if (move_aside(dbs[i], stamp) == -1)
                goto moved;
            char side[PATH_MAX];
            static const char *const sfx[] = {"-wal", "-shm"};
            for (size_t k = 0; k < 2; k++) {
                snprintf(side, sizeof side, "%s%s", dbs[i], sfx[k]);
                if (move_aside(side, stamp) == -1)
                    goto moved;
            }
        }
    }
    /* spools of other nodes this node ran: where the database says */
    struct owner own = pecd_owner(cfg);
    spools = spools_prepare(cfg, files, force, stamp, &own, err, sizeof err);
    if (spools == NULL)
        goto fail;
    /* every file where the configuration puts it */
    size_t restored = 0, kept = 0;
    for (guint i = 0; i < files->len; i++) {
        const struct mfile *f = &g_array_index(files, struct mfile, i);
        char dst[PATH_MAX], top[PATH_MAX];
        if (strcmp(f->role, "config") == 0)
            continue;    /* read above */
        if (strcmp(f->role, "spools") == 0 && strcmp(f->rel, "spools") == 0)
            continue;    /* the directory of the spools, not one of them */
        if (!destination(items, spools, cfg, f, dst, sizeof dst, top, sizeof top)) {
            printf("skipped %s (%s): this configuration has no place for it\n", f->rel,
                   f->role);
            continue;
        }
        const struct owner *o = own.set && is_state(f->role) ? &own : NULL;
        /* a spool of another node: opened, no link followed, below its data directory */
        const struct spool_dest *sd = spool_dest_of(spools, f);
        struct config other;
        const struct config *where = cfg;
        if (sd != NULL) {
            other = *cfg;
            other.data_dir = (char *)sd->data_dir;
            where = &other;
        }
        if (f->dir) {
            int dfd = open_dest_dir(where, dst, top, o, err, sizeof err);
            if (dfd == -1)
                goto fail;
            close(dfd);
            continue;
        }
        bool state_file = strcmp(f->role, "queue") == 0 || strcmp(f->role, "tracking") == 0 ||
                          strcmp(f->role, "evidence") == 0 || strcmp(f->role, "mail") == 0 ||
                          sd != NULL;
        char pdir[PATH_MAX];
        str_copy(pdir, dst, sizeof pdir);
        char *slash = strrchr(pdir, '/');
        if (slash == NULL || slash == pdir) {
            snprintf(err, sizeof err, "%s: not a path this restore writes", dst);
            goto fail;
        }
        *slash = '\0';
        const char *name = dst + (slash - pdir) + 1;
        int src = fs_open_file_beneath(dir, f->rel, err, sizeof err);
        if (src == -1)
            goto fail;
        int dfd = open_dest_dir(where, pdir, top, o, err, sizeof err);
        if (dfd == -1) {
            close(src);
            goto fail;
        }
        struct stat ex;
        if (fstatat(dfd, name, &ex, AT_SYMLINK_NOFOLLOW) == 0) {
            char hex[65];
            uint64_t size = 0;
            int efd = S_ISREG(ex.st_mode)
                          ? openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
                          : -1;
            bool same = efd != -1 && backup_sha256_fd(efd, f->size, hex, &size) == 0 &&
                        size == f->size && strcmp(hex, f->sha) == 0;
            if (efd != -1)
                close(efd);
            if (same || (!state_file && !force)) {
                if (!same) {
                    printf("kept %s (%s): it differs from the backup's (--force replaces it)\n",
                           dst, f->role);
                    kept++;
                }
                close(src), close(dfd);
                continue;      /* the same file is there, or the operator's is kept */
            }
            /* renamed, never followed: what is there may be a link */
            char aside[NAME_MAX + 1];
            if (str_fmt(aside, sizeof aside, "%s.pre-restore-%s", name, stamp) < 0 ||
                renameat(dfd, name, dfd, aside) == -1) {
                close(src), close(dfd);
                goto moved;
            }
            printf("moved aside: %s -> %s/%s\n", dst, pdir, aside);
        }
        bool users = own.set && strcmp(f->role, "users") == 0;
        int r = restore_copy(src, f, dfd, name, dst, users ? 0640 : 0600, o != NULL || users,
                             o ? o->uid : 0, users ? own.gid : o ? o->gid : 0, err, sizeof err);
        close(src);
        close(dfd);
        if (r == -1)
            goto fail;
        restored++;
    }
    /* secrets are not in a backup made without --include-keys */
    for (guint i = 0; i < items->len; i++) {
        const struct item *it = &g_array_index(items, struct item, i);
        if (it->key && access(it->path, F_OK) == -1)
            printf("missing: %s %s (not in the backup): put it there before starting pecd\n",
                   it->role, it->path);
    }
    for (guint i = 0; i < spools->len; i++) {
        const struct spool_dest *d = &g_array_index(spools, struct spool_dest, i);
        printf("restored the spool of node %s into %s (this node ran it when the backup was "
               "made): the node that runs it next - %s back, or a node that takes it over - "
               "resumes it as after a crash\n", d->node, d->queue_dir, d->node);
    }
    if (state_shared(cfg))
        printf("the [state] database %s (tracking, evidence log, quarantine index) is not in "
               "a backup: restore it with pg_restore before starting pecd (docs/backup.md)\n",
               state_shown(cfg));
    printf("%s restored into %s: %zu files%s%s\n", dir, cfg->data_dir, restored,
           kept ? "; some files kept as they are (above)" : "",
           "\nnext: start pecd; it resumes the restored queue as after a crash "
           "(docs/backup.md says what is done again)");
    rc = 0;
    goto out;
moved:
    snprintf(err, sizeof err, "cannot move the existing state aside: %s", strerror(errno));
fail:
    fprintf(stderr, "pecctl restore: %s\n", err);
out:
    spools_free(spools);
    if (qlock != -1)
        close(qlock);
    g_array_free(items, TRUE);
    g_array_free(files, TRUE);
    config_free(cfg);
    return rc;
}
