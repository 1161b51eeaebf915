/*
 * pecctl_backup.c - online backups of a provider instance and their restore
 * (issue 23; the runbook: docs/backup.md).
 *
 *   pecctl -c CONF backup DIR [--no-mail] [--include-keys]
 *
 * A backup is consistent as a clean stop is: with pecd running, pecd itself
 * copies the spool and the tracking database (duplicate records, timers)
 * between two batches of its delivery threads (the snapshot request of its
 * control socket, pecd_control.c); the evidence log is copied after them, so
 * it is never older than the spool (what a restart after a crash expects:
 * a stage whose events are recorded is made again with the same instant and
 * the same bytes).  Without pecd, pecctl holds the queue's lock and copies
 * everything itself.  Then the files the configuration names (users, sender
 * map, domains, certificates; private keys only with --include-keys), the
 * providers' directory cache, the quarantine and, when they live in the data
 * directory, the Maildirs.  MANIFEST, written last, lists every file with its
 * size and SHA-256: a directory without it is not a backup.
 *
 * With [state] database = postgresql://... (several nodes) the tracking
 * records, the evidence log and the quarantine index are in that database,
 * shared by the nodes: a backup holds this node's spool and files, says so,
 * and the database is backed up with pg_dump after the spools (docs/backup.md;
 * the same order: the log never older than a spool).  It also holds the
 * spool of each dead node this node runs (taken over, src/provider/
 * cluster.c): pecd copies it too, into spools/NODE, since no backup of the
 * dead node can; restore puts it where the database says that spool is.
 * The dead node's own backup says which node runs its spool.
 *
 * Its restore is pecctl_restore.c; what the two share is pecctl_backup.h.
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
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SNAPSHOT_TIMEOUT 900      /* seconds pecctl waits for pecd's snapshot */

/* ---- what a backup holds --------------------------------------------------- */

void backup_item_add(GArray *items, const char *role, const char *rel, const char *path,
                     bool tree, bool key)
{
    if (path == NULL || strncmp(path, "pkcs11:", 7) == 0)
        return;          /* not set, or a key in a hardware module: never copied */
    struct item it = {.tree = tree, .key = key};
    str_copy(it.role, role, sizeof it.role);
    str_copy(it.rel, rel, sizeof it.rel);
    str_copy(it.path, path, sizeof it.path);
    g_array_append_val(items, it);
}

/* The Maildirs' root when the mailbox template keeps them in the data
 * directory ("DATA_DIR/mail/%d/%n" -> "DATA_DIR/mail"); "" otherwise. */
void backup_mail_root(const struct config *cfg, char *out, size_t outlen)
{
    out[0] = '\0';
    if (cfg->lmtp_host != NULL || cfg->mailbox == NULL)
        return;
    char t[PATH_MAX];
    str_copy(t, cfg->mailbox, sizeof t);
    char *pct = strchr(t, '%');
    if (pct != NULL)
        *pct = '\0';
    char *slash = strrchr(t, '/');
    if (slash == NULL)
        return;
    *slash = '\0';
    size_t n = strlen(cfg->data_dir);
    if (strncmp(t, cfg->data_dir, n) == 0 && t[n] == '/' && strstr(t, "/..") == NULL)
        str_copy(out, t, outlen);
}

/* Every item of the instance cfg describes (the state is added apart). */
GArray *backup_items(const struct config *cfg)
{
    GArray *items = g_array_new(FALSE, TRUE, sizeof(struct item));
    char p[PATH_MAX];
    backup_item_add(items, "config", "pecd.conf", cfg->path, false, false);
    backup_item_add(items, "users", "files/users", cfg->passwd_file, false, false);
    backup_item_add(items, "senders", "files/senders", cfg->sender_map, false, false);
    backup_item_add(items, "domains", "files/domains", cfg->local_domains_file, false, false);
    backup_item_add(items, "tls_certificate", "files/tls.crt", cfg->tls_cert, false, false);
    backup_item_add(items, "tls_key", "files/tls.key", cfg->tls_key, false, true);
    backup_item_add(items, "signing_certificate", "files/signing.crt", cfg->pec_signing_cert, false, false);
    backup_item_add(items, "signing_certificate_next", "files/signing-next.crt",
        cfg->pec_signing_cert_next, false, false);
    backup_item_add(items, "signing_key", "files/signing.key", cfg->pec_signing_key, false, true);
    backup_item_add(items, "trust", "files/trust.pem", cfg->pec_trust, false, false);
    backup_item_add(items, "crl", "files/crl.pem", cfg->pec_crl, false, false);
    if (cfg->pec_directory != NULL && strstr(cfg->pec_directory, "://") == NULL)
        backup_item_add(items, "directory_file", "files/directory",
            strncmp(cfg->pec_directory, "file:", 5) == 0 ? cfg->pec_directory + 5
                                                          : cfg->pec_directory,
            false, false);
    backup_item_add(items, "directory_ca_file", "files/directory-ca.pem", cfg->pec_dir_ca_file, false,
        false);
    backup_item_add(items, "directory_signer", "files/directory-signer.pem", cfg->pec_dir_signer, false,
        false);
    backup_item_add(items, "directory_client_certificate", "files/directory-client.crt",
        cfg->pec_dir_client_cert, false, false);
    backup_item_add(items, "directory_client_key", "files/directory-client.key", cfg->pec_dir_client_key,
        false, true);
    backup_item_add(items, "directory_password_file", "files/directory-password",
        cfg->pec_dir_password_file, false, true);
    backup_item_add(items, "outbound_ca_file", "files/outbound-ca.pem", cfg->out_ca_file, false, false);
    backup_item_add(items, "dns_trust_anchor", "files/dns-trust-anchor", cfg->dns_trust_anchor, false,
        false);
    size_t n;
    const struct domain **all = domains_sorted(cfg->domains, &n);
    for (size_t i = 0; i < n; i++) {
        if (all[i]->tls_cert == NULL)
            continue;
        char role[64], rel[PATH_MAX];
        snprintf(role, sizeof role, "sni_certificate:%s", all[i]->name);
        snprintf(rel, sizeof rel, "files/sni/%s.crt", all[i]->name);
        backup_item_add(items, role, rel, all[i]->tls_cert, false, false);
        snprintf(role, sizeof role, "sni_key:%s", all[i]->name);
        snprintf(rel, sizeof rel, "files/sni/%s.key", all[i]->name);
        backup_item_add(items, role, rel, all[i]->tls_key, false, true);
    }
    g_free(all);
    snprintf(p, sizeof p, "%s/directory", cfg->data_dir);
    backup_item_add(items, "directory_cache", "directory", p, true, false);
    backup_item_add(items, "quarantine", "quarantine", cfg->av_quarantine, true, false);
    return items;
}

const struct item *backup_find_role(GArray *items, const char *role)
{
    for (guint i = 0; i < items->len; i++)
        if (strcmp(g_array_index(items, struct item, i).role, role) == 0)
            return &g_array_index(items, struct item, i);
    return NULL;
}

/* ---- MANIFEST ---------------------------------------------------------------- */

/* SHA-256 of what fd holds from its start, reading at most limit + 1 bytes
 * (a file larger than its manifest says is not read to its end). */
int backup_sha256_fd(int fd, uint64_t limit, char hex[65], uint64_t *size)
{
    if (lseek(fd, 0, SEEK_SET) == -1)
        return -1;
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    char buf[65536];
    ssize_t r = 0;
    *size = 0;
    while (*size <= limit && (r = read(fd, buf, sizeof buf)) > 0) {
        g_checksum_update(c, (const guchar *)buf, r);
        *size += (uint64_t)r;
    }
    int e = errno;
    if (r == -1) {
        g_checksum_free(c);
        errno = e;
        return -1;
    }
    str_copy(hex, g_checksum_get_string(c), 65);
    g_checksum_free(c);
    return 0;
}

static int sha256_file(const char *path, char hex[65], uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd == -1)
        return -1;
    int rc = backup_sha256_fd(fd, UINT64_MAX - 1, hex, size);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* A name from MANIFEST that stays inside the backup: relative, no "..",
 * printable, no blank. */
bool backup_safe_rel(const char *rel)
{
    if (rel[0] == '\0' || rel[0] == '/' || strlen(rel) >= PATH_MAX / 2)
        return false;
    for (const char *p = rel; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return false;
    gchar **parts = g_strsplit(rel, "/", -1);
    bool ok = true;
    for (size_t i = 0; parts[i] != NULL; i++)
        if (parts[i][0] == '\0' || strcmp(parts[i], ".") == 0 || strcmp(parts[i], "..") == 0)
            ok = false;
    g_strfreev(parts);
    return ok;
}

/* "f ROLE REL SIZE SHA256" for every regular file under base/rel. */
static int manifest_files(GString *m, const char *base, const char *role, const char *rel,
                          char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    struct stat st;
    if (lstat(path, &st) == -1) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode)) {
        char hex[65];
        uint64_t size;
        if (sha256_file(path, hex, &size) == -1) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        g_string_append_printf(m, "f %s %s %llu %s\n", role, rel, (unsigned long long)size, hex);
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return 0;
    g_string_append_printf(m, "d %s %s\n", role, rel);
    GDir *d = g_dir_open(path, 0, NULL);
    if (d == NULL) {
        snprintf(err, errlen, "%s: cannot read", path);
        return -1;
    }
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL)
        g_ptr_array_add(names, g_strdup(name));
    g_dir_close(d);
    g_ptr_array_sort(names, (GCompareFunc)g_ascii_strcasecmp);
    int rc = 0;
    for (guint i = 0; i < names->len && rc == 0; i++) {
        char sub[PATH_MAX];
        if (str_fmt(sub, sizeof sub, "%s/%s", rel, (char *)names->pdata[i]) < 0 ||
            !backup_safe_rel(sub)) {
            snprintf(err, errlen, "%s/%s: a name the backup cannot hold (blanks, control "
                     "characters or too long)", path, (char *)names->pdata[i]);
            rc = -1;
        } else {
            rc = manifest_files(m, base, role, sub, err, errlen);
        }
    }
    g_ptr_array_free(names, TRUE);
    return rc;
}

/* ---- pecd's snapshot --------------------------------------------------------- */

/* 1: pecd answered (reply in out), 0: no pecd listens, -1 error */
static int ask_pecd(const struct config *cfg, const char *req, char *out, size_t outlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (str_fmt(sa.sun_path, sizeof sa.sun_path, "%s/control.sock", cfg->data_dir) < 0) {
        snprintf(out, outlen, "%s/control.sock: path too long", cfg->data_dir);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(out, outlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
        int e = errno;
        close(fd);
        if (e == ENOENT || e == ECONNREFUSED)
            return 0;
        snprintf(out, outlen, "%s: %s", sa.sun_path, strerror(e));
        return -1;
    }
    struct timeval tv = {.tv_sec = SNAPSHOT_TIMEOUT};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char line[128];
    snprintf(line, sizeof line, "%s\n", req);
    size_t n = 0;
    int rc = -1;
    if (fs_write_all(fd, line, strlen(line)) == 0) {
        while (n < outlen - 1) {
            ssize_t r = read(fd, out + n, 1);
            if (r <= 0 || out[n] == '\n')
                break;
            n++;
        }
        out[n] = '\0';
        rc = n > 0 ? 1 : -1;
    }
    if (rc == -1)
        snprintf(out, outlen, "no answer from pecd on %s: %s", sa.sun_path,
                 errno ? strerror(errno) : "closed");
    close(fd);
    return rc;
}

/* The queue's lock (QUEUE/pecd.lock): held by a running pecd.  Returns the
 * fd holding it (pecd cannot start meanwhile), or -1 with *running set. */
int backup_lock_queue(const struct config *cfg, bool *running, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/pecd.lock", cfg->queue_dir);
    *running = false;
    if (fs_mkdirs(cfg->queue_dir, 0700) == -1) {
        snprintf(err, errlen, "%s: %s", cfg->queue_dir, strerror(errno));
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        *running = errno == EWOULDBLOCK;
        snprintf(err, errlen, "%s: %s", path,
                 *running ? "pecd is running" : strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* VACUUM INTO: a consistent copy of an SQLite database (read-only source). */
static int sqlite_copy(const char *from, const char *to, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = -1;
    if (sqlite3_open_v2(from, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 30000);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, "VACUUM INTO ?1", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_bind_text(st, 1, to, -1, SQLITE_STATIC) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_DONE)
            rc = 0;
        sqlite3_finalize(st);
    }
    if (rc == -1)
        snprintf(err, errlen, "%s: %s", from, db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    if (rc == 0 && chmod(to, 0600) == -1) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        rc = -1;
    }
    return rc;
}

/* pecctl may run as root, and the data directory is written by [pecd] user
 * (and, for the Maildirs, by their owners): a source inside it is opened
 * through directory descriptors from data_dir down, no link followed, so a
 * directory swapped for a symbolic link cannot make root copy (or, for the
 * staging directory, remove) something else.  Paths outside data_dir are the
 * configuration's own and are taken as they are.  An fd, or -1 with err. */
const char *backup_in_data_dir(const struct config *cfg, const char *path)
{
    size_t n = strlen(cfg->data_dir);
    while (n > 1 && cfg->data_dir[n - 1] == '/')
        n--;
    return strncmp(path, cfg->data_dir, n) == 0 && path[n] == '/' ? path + n + 1 : NULL;
}

static int open_source_dir(const struct config *cfg, const char *path, char *err,
                           size_t errlen)
{
    const char *rel = backup_in_data_dir(cfg, path);
    if (rel != NULL)
        return fs_open_dir_beneath(cfg->data_dir, rel, false, err, errlen);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return fd;
}

static int open_source_file(const struct config *cfg, const char *path, char *err,
                            size_t errlen)
{
    const char *rel = backup_in_data_dir(cfg, path);
    if (rel != NULL)
        return fs_open_file_beneath(cfg->data_dir, rel, err, errlen);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd == -1)
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return fd;
}

/* The tree (a directory) or file at from, in the instance, into to: 0, 1
 * when from is a link (not copied, counted), -1 with err. */
static int copy_source(const struct config *cfg, const char *from, const char *to, bool tree,
                       struct fs_copy_stats *st, char *err, size_t errlen)
{
    int fd = tree ? open_source_dir(cfg, from, err, errlen)
                  : open_source_file(cfg, from, err, errlen);
    if (fd == -1 && (errno == ELOOP || errno == ENOTDIR || (!tree && errno == EINVAL))) {
        printf("not copied: %s\n", err);   /* a link where a directory or file belongs */
        st->skipped++;
        return 1;
    }
    if (fd == -1)
        return -1;
    int rc = tree ? fs_copy_tree_fd(fd, from, to, st, err, errlen)
                  : fs_copy_file_fd(fd, from, to, 0600, &st->bytes, err, errlen);
    close(fd);
    if (rc == 0 && !tree)
        st->files++;
    return rc;
}

static int copy_item(const struct config *cfg, const char *from, const char *to, bool tree,
                     struct fs_copy_stats *st, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    str_copy(dir, to, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
        if (fs_mkdirs(dir, 0700) == -1) {
            snprintf(err, errlen, "%s: %s", dir, strerror(errno));
            return -1;
        }
    }
    return copy_source(cfg, from, to, tree, st, err, errlen);
}

/* ---- spools taken over (several nodes) ------------------------------------------- */

/* A node's name as [state] node allows (1 to 64 of a-z 0-9 . - _): names
 * read from a staging directory or a backup name nothing else. */
static uint64_t count_entries(const char *dir, const char *sub)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, sub);
    uint64_t n = 0;
    GDir *d = g_dir_open(p, 0, NULL);
    while (d != NULL && g_dir_read_name(d) != NULL)
        n++;
    if (d != NULL)
        g_dir_close(d);
    return n;
}

/* pecd's copies of the spools it runs for dead nodes (staging/spools/NODE)
 * into DIR/spools/NODE.  The number of spools, -1 with err. */
static int copy_taken(const struct config *cfg, const char *staging, const char *dir,
                      struct fs_copy_stats *st, char *err, size_t errlen)
{
    char from[PATH_MAX], to[PATH_MAX];
    snprintf(from, sizeof from, "%s/spools", staging);
    if (access(from, F_OK) == -1)
        return 0;
    GDir *d = g_dir_open(from, 0, NULL);
    if (d == NULL) {
        snprintf(err, errlen, "%s: cannot read", from);
        return -1;
    }
    int n = 0;
    const char *name;
    while (n >= 0 && (name = g_dir_read_name(d)) != NULL) {
        if (!config_node_name_ok(name)) {
            snprintf(err, errlen, "%s: an entry that names no node: not a snapshot of pecd's",
                     from);
            n = -1;
            break;
        }
        snprintf(from, sizeof from, "%s/spools/%s", staging, name);
        snprintf(to, sizeof to, "%s/spools/%s", dir, name);
        if (fs_mkdirs(to, 0700) == -1) {
            snprintf(err, errlen, "%s: %s", to, strerror(errno));
            n = -1;
        } else if (copy_source(cfg, from, to, true, st, err, errlen) != 0) {
            n = -1;      /* a link: pecd made these, so no snapshot (err says where) */
        } else {
            printf("the spool of node %s, which this node runs since it took it over (that "
                   "node is down): %llu queued and %llu held messages, in spools/%s\n",
                   name, (unsigned long long)count_entries(to, "queue"),
                   (unsigned long long)count_entries(to, "hold"), name);
            n++;
        }
    }
    g_dir_close(d);
    return n;
}

/* Several nodes, pecd not answering here and its queue's lock held: by the
 * node that took this node's spool over while it was down?  1 yes (said),
 * 0 no. */
static int spool_run_elsewhere(const struct config *cfg)
{
    if (!state_shared(cfg) || cfg->state_node == NULL)
        return 0;
    struct state_node *v = NULL;
    size_t n = 0;
    char err[512];
    if (state_nodes_list(&v, &n, err, sizeof err) == -1)
        return 0;
    int r = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, cfg->state_node) == 0 && v[i].owner[0] &&
            strcmp(v[i].owner, cfg->state_node) != 0) {
            printf("not copied: the spool of this node (%s, %s) is run by node %s, which took "
                   "it over while this node was down: that node's backup holds it "
                   "(pecctl -c ITS-CONF backup, spools/%s)\n",
                   cfg->state_node, cfg->queue_dir, v[i].owner, cfg->state_node);
            r = 1;
        }
    g_free(v);
    return r;
}

/* pecd not running: the spool (and the tracking database, embedded) copied
 * under the queue's lock, which the caller holds.  0, or -1 (said). */
static int copy_locked(const struct config *cfg, const char *dir, const char *tracking,
                       struct fs_copy_stats *st)
{
    char err[1024], to[PATH_MAX];
    snprintf(to, sizeof to, "%s/queue", dir);
    static const char *const subs[] = {"queue", "hold", "staged"};
    if (fs_mkdirs(to, 0700) == -1) {
        fprintf(stderr, "pecctl backup: %s: %s\n", to, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < 3; i++) {
        char sub[PATH_MAX], dst[PATH_MAX];
        snprintf(sub, sizeof sub, "%s/%s", cfg->queue_dir, subs[i]);
        snprintf(dst, sizeof dst, "%s/%s", to, subs[i]);
        if (access(sub, F_OK) == 0 && copy_source(cfg, sub, dst, true, st, err, sizeof err) == -1) {
            fprintf(stderr, "pecctl backup: %s\n", err);
            return -1;
        }
    }
    char db[PATH_MAX];
    snprintf(db, sizeof db, "%s/tracking.db", dir);
    if (!state_shared(cfg) && access(tracking, F_OK) == 0 &&
        sqlite_copy(tracking, db, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl backup: %s\n", err);
        return -1;
    }
    printf("pecd is not running: spool%s copied under its lock\n",
           state_shared(cfg) ? "" : " and tracking database");
    return 0;
}

/* ---- pecctl backup ------------------------------------------------------------ */

static void backup_usage(void)
{
    fprintf(stderr, "usage: pecctl -c CONF backup DIR [--no-mail] [--include-keys]\n");
}

int pecctl_backup_main(struct config *cfg, int argc, char **argv)
{
    const char *dir = NULL;
    bool no_mail = false, keys = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-mail") == 0)
            no_mail = true;
        else if (strcmp(argv[i], "--include-keys") == 0)
            keys = true;
        else if (argv[i][0] != '-' && dir == NULL)
            dir = argv[i];
        else
            return backup_usage(), 2;
    }
    if (dir == NULL)
        return backup_usage(), 2;
    char err[1024], path[PATH_MAX], to[PATH_MAX];
    if (mkdir(dir, 0700) == -1) {
        fprintf(stderr, "pecctl backup: %s: %s (give a new directory)\n", dir,
                errno == EEXIST ? "exists" : strerror(errno));
        return 1;
    }
    /* one backup at a time (the staging directory is shared) */
    snprintf(path, sizeof path, "%s/backup.lock", cfg->data_dir);
    int lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lockfd == -1 || flock(lockfd, LOCK_EX | LOCK_NB) == -1) {
        fprintf(stderr, "pecctl backup: %s: %s\n", path,
                errno == EWOULDBLOCK ? "another backup is running" : strerror(errno));
        rmdir(dir);
        return 1;
    }
    int rc = 1, qlock = -1;
    struct fs_copy_stats st = {0};
    GString *m = g_string_new(MANIFEST_MAGIC "\n");
    GArray *items = backup_items(cfg);
    char reply[PATH_MAX + 256] = "", when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    g_string_append_printf(m, "created %s\nversion %s\ndomain %s\n", when, PEC_VERSION,
                           cfg->domain);

    /* 1. the spool and the tracking database, at rest */
    snprintf(to, sizeof to, "%s/queue", dir);
    char tracking[PATH_MAX];
    snprintf(tracking, sizeof tracking, "%s/tracking.db", cfg->data_dir);
    int asked = ask_pecd(cfg, "snapshot", reply, sizeof reply);
    if (asked == 1) {
        if (strncmp(reply, "ok ", 3) != 0) {
            fprintf(stderr, "pecctl backup: pecd: %s\n", reply);
            goto out;
        }
        /* the staging directory is ours to name, never the answer's: whoever
         * holds the socket (pecd's user) must not choose what root copies
         * and then removes */
        char *sp = strstr(reply, "staging=");
        char staging[PATH_MAX];
        snprintf(staging, sizeof staging, "%s/backup.staging", cfg->data_dir);
        if (sp == NULL || strcmp(sp + 8, staging) != 0) {
            fprintf(stderr, "pecctl backup: pecd's answer names a staging directory other "
                            "than %s: refused\n", staging);
            goto out;
        }
        snprintf(path, sizeof path, "%s/queue", staging);
        int r = copy_source(cfg, path, to, true, &st, err, sizeof err);
        snprintf(path, sizeof path, "%s/tracking.db", staging);
        if (r == 0 && access(path, F_OK) == 0) {
            snprintf(to, sizeof to, "%s/tracking.db", dir);
            uint64_t files = st.files;
            r = copy_source(cfg, path, to, false, &st, err, sizeof err);
            st.files = files;
        }
        if (r == 1)
            r = -1;       /* pecd made them: a link there is no snapshot (err says where) */
        if (r == 0)
            printf("pecd's snapshot: %s\n", reply + 3);
        if (r == 0)
            r = copy_taken(cfg, staging, dir, &st, err, sizeof err) < 0 ? -1 : 0;
        fs_remove_tree(staging);
        if (r == -1) {
            fprintf(stderr, "pecctl backup: %s\n", err);
            goto out;
        }
    } else if (asked == 0) {
        bool running;
        qlock = backup_lock_queue(cfg, &running, err, sizeof err);
        if (qlock == -1 && !(running && spool_run_elsewhere(cfg))) {
            fprintf(stderr, "pecctl backup: %s%s\n", err,
                    running ? " but does not answer on its control socket (an older pecd? "
                              "restart it)" : "");
            goto out;
        }
        if (qlock != -1 && copy_locked(cfg, dir, tracking, &st) == -1)
            goto out;
    } else {
        fprintf(stderr, "pecctl backup: %s\n", reply);
        goto out;
    }
    uint64_t messages = 0;
    static const char *const msgdirs[] = {"queue/queue", "queue/hold"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, msgdirs[i]);
        GDir *d = g_dir_open(path, 0, NULL);
        while (d != NULL && g_dir_read_name(d) != NULL)
            messages++;
        if (d != NULL)
            g_dir_close(d);
    }
    g_string_append_printf(m, "messages %llu\n", (unsigned long long)messages);
    snprintf(to, sizeof to, "%s/queue", dir);
    if (access(to, F_OK) == 0 && manifest_files(m, dir, "queue", "queue", err, sizeof err) == -1)
        goto fail;
    snprintf(to, sizeof to, "%s/spools", dir);
    if (access(to, F_OK) == 0 &&
        manifest_files(m, dir, "spools", "spools", err, sizeof err) == -1)
        goto fail;
    snprintf(to, sizeof to, "%s/tracking.db", dir);
    if (access(to, F_OK) == 0 && manifest_files(m, dir, "tracking", "tracking.db", err,
                                                sizeof err) == -1)
        goto fail;

    /* 2. the files the configuration names, the caches, the mailboxes */
    char mroot[PATH_MAX];
    backup_mail_root(cfg, mroot, sizeof mroot);
    if (mroot[0] && !no_mail)
        backup_item_add(items, "mail", "mail", mroot, true, false);
    for (guint i = 0; i < items->len; i++) {
        const struct item *it = &g_array_index(items, struct item, i);
        if (it->key && !keys) {
            printf("not copied (private key; --include-keys): %s %s\n", it->role, it->path);
            continue;
        }
        if (access(it->path, F_OK) == -1)
            continue;    /* a cache or a quarantine not made yet */
        snprintf(to, sizeof to, "%s/%s", dir, it->rel);
        int copied = copy_item(cfg, it->path, to, it->tree, &st, err, sizeof err);
        if (copied == -1 ||
            (copied == 0 && manifest_files(m, dir, it->role, it->rel, err, sizeof err) == -1))
            goto fail;
    }
    if (mroot[0] == '\0' && !no_mail)
        printf("mailboxes are not in the data directory (%s): back them up with their "
               "server's tools (doveadm backup)\n",
               cfg->lmtp_host ? "LMTP delivery" : "Maildir elsewhere");

    /* 3. the evidence log, last: never older than the spool; the shared
     * database is the operator's to dump (pg_dump), after every node's spool */
    if (state_shared(cfg)) {
        printf("not copied: the tracking records, the evidence log and the quarantine index "
               "are in the [state] database %s, shared by the nodes: back it up with pg_dump "
               "now, after this backup (docs/backup.md)\n",
               state_shown(cfg));
    } else if (access(cfg->evidence_path, F_OK) == 0) {
        snprintf(to, sizeof to, "%s/evidence.db", dir);
        if (sqlite_copy(cfg->evidence_path, to, err, sizeof err) == -1 ||
            manifest_files(m, dir, "evidence", "evidence.db", err, sizeof err) == -1)
            goto fail;
    }

    /* 4. MANIFEST, durable: its presence makes the directory a backup */
    g_string_append(m, "end\n");
    snprintf(path, sizeof path, "%s/MANIFEST", dir);
    if (fs_write_atomic(path, m->str, m->len, 0600) == -1 || fs_fsync_dir(dir) == -1) {
        snprintf(err, sizeof err, "%s: %s", path, strerror(errno));
        goto fail;
    }
    printf("%s: backup of %s made %s: %llu queued message%s, %llu files, %llu bytes\n", dir,
           cfg->domain, when, (unsigned long long)messages, messages == 1 ? "" : "s",
           (unsigned long long)st.files, (unsigned long long)st.bytes);
    if (st.skipped > 0)
        printf("not copied: %llu symbolic link%s or special file%s (never followed; a spool "
               "or a Maildir holds none)\n", (unsigned long long)st.skipped,
               st.skipped == 1 ? "" : "s", st.skipped == 1 ? "" : "s");
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "pecctl backup: %s\n", err);
out:
    if (rc != 0)
        fprintf(stderr, "pecctl backup: %s is incomplete (no MANIFEST): remove it\n", dir);
    if (qlock != -1)
        close(qlock);
    close(lockfd);
    g_array_free(items, TRUE);
    g_string_free(m, TRUE);
    return rc;
}
