/*
 * pecctl_backup.c - online backups of a provider instance and their restore
 * (issue 23; the runbook: docs/backup.md).
 *
 *   pecctl -c CONF backup DIR [--no-mail] [--include-keys]
 *   pecctl -c CONF restore DIR [--force]
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
 * restore checks every file against MANIFEST, refuses to run beside a pecd
 * or over an instance that has state (--force moves that state aside), and
 * puts each file where the configuration names it (pecd.conf itself first
 * when CONF does not exist).  Nothing is sent by restore: pecd, at its next
 * start, resumes the restored queue as after a crash.
 */
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

int pecctl_backup_main(struct config *cfg, int argc, char **argv);
int pecctl_restore_main(const char *conf, int argc, char **argv);

#define MANIFEST_MAGIC "pecmail-backup 1"
#define SNAPSHOT_TIMEOUT 900      /* seconds pecctl waits for pecd's snapshot */

/* ---- what a backup holds --------------------------------------------------- */

/* One file or tree of the instance, by role: where it is in the backup and
 * where the configuration puts it. */
struct item {
    char role[64];      /* users, tls_certificate, sni_certificate:DOMAIN, mail... */
    char rel[PATH_MAX]; /* in the backup */
    char path[PATH_MAX];/* in the instance */
    bool tree;
    bool key;           /* a private key: only with --include-keys */
};

static void add(GArray *items, const char *role, const char *rel, const char *path, bool tree,
                bool key)
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
static void mail_root(const struct config *cfg, char *out, size_t outlen)
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
static GArray *config_items(const struct config *cfg)
{
    GArray *items = g_array_new(FALSE, TRUE, sizeof(struct item));
    char p[PATH_MAX];
    add(items, "config", "pecd.conf", cfg->path, false, false);
    add(items, "users", "files/users", cfg->passwd_file, false, false);
    add(items, "senders", "files/senders", cfg->sender_map, false, false);
    add(items, "domains", "files/domains", cfg->local_domains_file, false, false);
    add(items, "tls_certificate", "files/tls.crt", cfg->tls_cert, false, false);
    add(items, "tls_key", "files/tls.key", cfg->tls_key, false, true);
    add(items, "signing_certificate", "files/signing.crt", cfg->pec_signing_cert, false, false);
    add(items, "signing_certificate_next", "files/signing-next.crt",
        cfg->pec_signing_cert_next, false, false);
    add(items, "signing_key", "files/signing.key", cfg->pec_signing_key, false, true);
    add(items, "trust", "files/trust.pem", cfg->pec_trust, false, false);
    add(items, "crl", "files/crl.pem", cfg->pec_crl, false, false);
    if (cfg->pec_directory != NULL && strstr(cfg->pec_directory, "://") == NULL)
        add(items, "directory_file", "files/directory",
            strncmp(cfg->pec_directory, "file:", 5) == 0 ? cfg->pec_directory + 5
                                                          : cfg->pec_directory,
            false, false);
    add(items, "directory_ca_file", "files/directory-ca.pem", cfg->pec_dir_ca_file, false,
        false);
    add(items, "directory_signer", "files/directory-signer.pem", cfg->pec_dir_signer, false,
        false);
    add(items, "directory_client_certificate", "files/directory-client.crt",
        cfg->pec_dir_client_cert, false, false);
    add(items, "directory_client_key", "files/directory-client.key", cfg->pec_dir_client_key,
        false, true);
    add(items, "directory_password_file", "files/directory-password",
        cfg->pec_dir_password_file, false, true);
    add(items, "outbound_ca_file", "files/outbound-ca.pem", cfg->out_ca_file, false, false);
    add(items, "dns_trust_anchor", "files/dns-trust-anchor", cfg->dns_trust_anchor, false,
        false);
    size_t n;
    const struct domain **all = domains_sorted(cfg->domains, &n);
    for (size_t i = 0; i < n; i++) {
        if (all[i]->tls_cert == NULL)
            continue;
        char role[64], rel[PATH_MAX];
        snprintf(role, sizeof role, "sni_certificate:%s", all[i]->name);
        snprintf(rel, sizeof rel, "files/sni/%s.crt", all[i]->name);
        add(items, role, rel, all[i]->tls_cert, false, false);
        snprintf(role, sizeof role, "sni_key:%s", all[i]->name);
        snprintf(rel, sizeof rel, "files/sni/%s.key", all[i]->name);
        add(items, role, rel, all[i]->tls_key, false, true);
    }
    g_free(all);
    snprintf(p, sizeof p, "%s/directory", cfg->data_dir);
    add(items, "directory_cache", "directory", p, true, false);
    add(items, "quarantine", "quarantine", cfg->av_quarantine, true, false);
    return items;
}

static const struct item *find_role(GArray *items, const char *role)
{
    for (guint i = 0; i < items->len; i++)
        if (strcmp(g_array_index(items, struct item, i).role, role) == 0)
            return &g_array_index(items, struct item, i);
    return NULL;
}

/* ---- MANIFEST ---------------------------------------------------------------- */

/* SHA-256 of what fd holds from its start, reading at most limit + 1 bytes
 * (a file larger than its manifest says is not read to its end). */
static int sha256_fd(int fd, uint64_t limit, char hex[65], uint64_t *size)
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
    int rc = sha256_fd(fd, UINT64_MAX - 1, hex, size);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* A name from MANIFEST that stays inside the backup: relative, no "..",
 * printable, no blank. */
static bool safe_rel(const char *rel)
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
            !safe_rel(sub)) {
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
static int lock_queue(const struct config *cfg, bool *running, char *err, size_t errlen)
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
static const char *in_data_dir(const struct config *cfg, const char *path)
{
    size_t n = strlen(cfg->data_dir);
    while (n > 1 && cfg->data_dir[n - 1] == '/')
        n--;
    return strncmp(path, cfg->data_dir, n) == 0 && path[n] == '/' ? path + n + 1 : NULL;
}

static int open_source_dir(const struct config *cfg, const char *path, char *err,
                           size_t errlen)
{
    const char *rel = in_data_dir(cfg, path);
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
    const char *rel = in_data_dir(cfg, path);
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
    GArray *items = config_items(cfg);
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
        qlock = lock_queue(cfg, &running, err, sizeof err);
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
    mail_root(cfg, mroot, sizeof mroot);
    if (mroot[0] && !no_mail)
        add(items, "mail", "mail", mroot, true, false);
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

/* ---- pecctl restore ----------------------------------------------------------- */

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
                 safe_rel(f.rel) && strlen(f.sha) == 64;
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
                int r = fd == -1 ? -1 : sha256_fd(fd, f.size, hex, &got);
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
            ok = sscanf(l + 2, "%63s %2047s", f.role, f.rel) == 2 && safe_rel(f.rel);
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
    const char *rel = in_data_dir(cfg, path);
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
    const char *trel = in_data_dir(cfg, top);
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
        const struct item *it = find_role(items, f->role);
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
    GArray *items = config_items(cfg);
    char mroot[PATH_MAX];
    mail_root(cfg, mroot, sizeof mroot);
    if (mroot[0])
        add(items, "mail", "mail", mroot, true, false);
    int qlock = lock_queue(cfg, &running, err, sizeof err);
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
            bool same = efd != -1 && sha256_fd(efd, f->size, hex, &size) == 0 &&
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
