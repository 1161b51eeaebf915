/*
 * users.c - the users file, in Dovecot's passwd-file format, so Dovecot can
 * authenticate IMAP from the very same file:
 *
 *   alice@example.it:{SHA512-CRYPT}$6$...:::::
 *
 * Only crypt(3) hashes are accepted (libxcrypt: yescrypt "$y$", SHA-512-crypt
 * "$6$", SHA-256-crypt "$5$", bcrypt "$2b$"), with or without a {SCHEME}
 * prefix; a plaintext password is a configuration error.  Addresses of our
 * users are case-insensitive (DESIGN.md): the key is the whole address in
 * lower case (ASCII), as Dovecot's default auth_username_format %Lu; two
 * lines that differ only in case are an error, and pecctl user add refuses a
 * case variant of an existing user.
 *
 * users_db wraps the file (reloaded when it changes) or, with [users] users =
 * dovecot:PATH, Dovecot's auth server (dovecot_auth.c) behind one interface.
 */
#include "store.h"
#include "lib/lib.h"

#include <crypt.h>
#include <errno.h>
#include <glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define USERS_MAX_FILE (64u * 1024 * 1024)

struct users {
    GHashTable *by_addr;     /* normalised address -> hash */
    GPtrArray *order;        /* addresses in file order */
    GHashTable *quota;       /* normalised address -> guint64 octets (userdb_quota_rule) */
};

void users_normalise(const char *addr, char *out, size_t outlen)
{
    str_copy(out, addr, outlen);
    str_lower(out);
}

static const char *strip_scheme(const char *h, char *err, size_t errlen)
{
    if (h[0] != '{')
        return h;
    const char *end = strchr(h, '}');
    if (end == NULL) {
        snprintf(err, errlen, "unterminated {SCHEME}");
        return NULL;
    }
    static const char *const ok[] = {"{CRYPT}", "{SHA512-CRYPT}", "{SHA256-CRYPT}",
                                     "{BLF-CRYPT}", "{MD5-CRYPT}"};
    size_t n = (size_t)(end - h) + 1;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strlen(ok[i]) == n && strncasecmp(h, ok[i], n) == 0)
            return end + 1;
    snprintf(err, errlen, "password scheme %.*s is not supported (use a crypt hash, "
             "e.g. pecctl user add)", (int)n, h);
    return NULL;
}

/* Dovecot's per-user quota in a passwd-file's extra fields (space-separated
 * key=value): userdb_quota_rule=*:storage=SIZE (K, M, G; 0 = none).  true
 * when there is one; a malformed one sets why. */
static bool quota_rule(const char *extra, uint64_t *out, char *why, size_t whylen)
{
    static const char key[] = "userdb_quota_rule=*:storage=";
    for (const char *p = extra; p != NULL && *p;) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, " \t");
        if (n > sizeof key - 1 && strncmp(p, key, sizeof key - 1) == 0) {
            char v[32];
            size_t vl = n - (sizeof key - 1);
            if (vl >= sizeof v || (memcpy(v, p + sizeof key - 1, vl), v[vl] = '\0',
                                   parse_size(v, out) == -1)) {
                snprintf(why, whylen, "userdb_quota_rule storage '%.*s' is not a size (e.g. 1G)",
                         (int)(vl < 31 ? vl : 31), p + sizeof key - 1);
                return false;
            }
            return true;
        }
        p += n;
    }
    return false;
}

struct users *users_load(const char *path, char *err, size_t errlen)
{
    struct users *u = calloc(1, sizeof *u);
    u->by_addr = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    u->order = g_ptr_array_new();
    u->quota = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    char *buf;
    size_t len;
    if (fs_read_file(path, &buf, &len, USERS_MAX_FILE) == -1) {
        if (errno == ENOENT)
            return u;
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        users_free(u);
        return NULL;
    }
    char *save = NULL;
    int lineno = 0;
    char *p = buf;
    while (p != NULL && *p != '\0') {
        char *line = p;
        char *nl = strchr(p, '\n');
        if (nl) {
            *nl = '\0';
            p = nl + 1;
        } else {
            p = NULL;
        }
        lineno++;
        size_t ll = strlen(line);
        if (ll > 0 && line[ll - 1] == '\r')
            line[--ll] = '\0';
        char *t = str_trim(line);
        if (*t == '\0' || *t == '#')
            continue;
        char *colon = strchr(t, ':');
        char why[200] = "";
        if (colon == NULL || colon == t) {
            snprintf(why, sizeof why, "expected user@domain:{SCHEME}hash:::::");
        } else {
            *colon = '\0';
            char *hash = colon + 1;
            char *c2 = strchr(hash, ':');
            if (c2)
                *c2 = '\0';
            /* uid:gid:gecos:home:shell:extra fields (Dovecot's passwd-file):
             * the extra fields may hold userdb_quota_rule=*:storage=SIZE */
            const char *extra = c2 ? c2 + 1 : NULL;
            for (int f = 0; extra != NULL && f < 5; f++) {
                extra = strchr(extra, ':');
                extra = extra ? extra + 1 : NULL;
            }
            uint64_t quota = 0;
            bool has_quota = extra != NULL && quota_rule(extra, &quota, why, sizeof why);
            const char *h = strip_scheme(hash, why, sizeof why);
            if (h != NULL && (h[0] != '$' || strlen(h) < 10))
                snprintf(why, sizeof why, "the password field is not a crypt hash");
            else if (h != NULL) {
                char key[512];
                users_normalise(t, key, sizeof key);
                if (strchr(key, '@') == NULL)
                    snprintf(why, sizeof why, "user '%s' is not an address (user@domain)", t);
                else if (g_hash_table_contains(u->by_addr, key))
                    snprintf(why, sizeof why, "user '%s' appears twice (addresses are "
                             "compared without case)", t);
                else if (!why[0]) {
                    char *k = g_strdup(key);
                    g_hash_table_insert(u->by_addr, k, g_strdup(h));
                    g_ptr_array_add(u->order, k);
                    if (has_quota)
                        g_hash_table_insert(u->quota, g_strdup(key), g_memdup2(&quota, sizeof quota));
                }
            }
        }
        if (why[0]) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            free(buf);
            users_free(u);
            return NULL;
        }
    }
    (void)save;
    free(buf);
    return u;
}

void users_free(struct users *u)
{
    if (u == NULL)
        return;
    g_ptr_array_free(u->order, TRUE);
    g_hash_table_destroy(u->by_addr);
    g_hash_table_destroy(u->quota);
    free(u);
}

size_t users_count(const struct users *u) { return g_hash_table_size(u->by_addr); }

bool users_exists(const struct users *u, const char *addr)
{
    char key[512];
    users_normalise(addr, key, sizeof key);
    return g_hash_table_contains(u->by_addr, key);
}

/* The setting a check for an unknown user hashes with when the file has no
 * entry to copy: yescrypt at its default cost, as pecctl user add makes. */
static gpointer make_fallback(gpointer unused)
{
    (void)unused;
    static char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof setting) == NULL)
        str_copy(setting, "$6$pecmaildummysalt$", sizeof setting);
    return setting;
}

/* The hash an unknown user's check is made against: a real entry's, picked by
 * the address, so the check costs what a real account's check costs (the
 * same scheme and cost; the old fixed SHA-512 dummy took 2 ms where a
 * yescrypt entry takes 20: the time told which accounts exist).  Called
 * with the file's lock held where there is one; the result is a copy. */
static char *cost_alike(const struct users *u, const char *key)
{
    if (u != NULL && u->order->len > 0) {
        const char *other = g_ptr_array_index(u->order, g_str_hash(key) % u->order->len);
        const char *h = g_hash_table_lookup(u->by_addr, other);
        if (h != NULL)
            return g_strdup(h);
    }
    static GOnce once = G_ONCE_INIT;
    return g_strdup(g_once(&once, make_fallback, NULL));
}

/* crypt(3) of password against hash; an unknown user (hash NULL) does the
 * same work against like and always fails. */
static int verify_hash(const char *hash, const char *like, const char *password)
{
    struct crypt_data *cd = calloc(1, sizeof *cd);
    const char *out = crypt_r(password, hash ? hash : like, cd);
    int ok = -1;
    if (hash != NULL && out != NULL && out[0] != '*') {
        size_t a = strlen(out), b = strlen(hash);
        unsigned diff = (unsigned)(a ^ b);
        for (size_t i = 0; i < a && i < b; i++)
            diff |= (unsigned)(out[i] ^ hash[i]);
        ok = diff == 0 ? 0 : -1;
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return ok;
}

int users_verify(const struct users *u, const char *addr, const char *password)
{
    char key[512];
    users_normalise(addr, key, sizeof key);
    const char *hash = g_hash_table_lookup(u->by_addr, key);
    char *like = hash ? NULL : cost_alike(u, key);
    int r = verify_hash(hash, like, password);
    g_free(like);
    return r;
}

int users_hash_password(const char *password, char *out, size_t outlen)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof salt) == NULL)
        return -1;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    const char *h = crypt_r(password, salt, cd);
    int r = (h == NULL || h[0] == '*' || str_copy(out, h, outlen) >= outlen) ? -1 : 0;
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return r;
}

void users_each(const struct users *u, void (*fn)(const char *addr, void *arg), void *arg)
{
    for (guint i = 0; i < u->order->len; i++)
        fn(g_ptr_array_index(u->order, i), arg);
}

/* Rewrites the file without addr's line, and with newline appended if given. */
static int rewrite(const char *path, const char *addr, const char *newline, bool must_exist,
                   char *err, size_t errlen)
{
    char key[512];
    users_normalise(addr, key, sizeof key);
    char *buf = NULL;
    size_t len = 0;
    if (fs_read_file(path, &buf, &len, USERS_MAX_FILE) == -1) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        buf = strdup("");
    }
    GString *out = g_string_new(NULL);
    bool found = false;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char copy[1024];
        str_copy(copy, line, sizeof copy);
        char *colon = strchr(copy, ':');
        if (colon != NULL && copy[0] != '#') {
            *colon = '\0';
            char k[512];
            users_normalise(str_trim(copy), k, sizeof k);
            if (strcmp(k, key) == 0) {
                found = true;
                continue;
            }
        }
        g_string_append(out, line);
        g_string_append_c(out, '\n');
    }
    free(buf);
    if (must_exist && !found) {
        snprintf(err, errlen, "no such user: %s", addr);
        g_string_free(out, TRUE);
        return -1;
    }
    if (!must_exist && found) {
        snprintf(err, errlen, "user %s exists already (addresses are compared without case)",
                 key);
        g_string_free(out, TRUE);
        return -1;
    }
    if (newline)
        g_string_append(out, newline);
    /* keep the owner, group and mode an operator gave the file (Dovecot's
     * auth process may read it through its group, docs/dovecot.md) */
    struct stat st;
    bool had = stat(path, &st) == 0;
    int r = fs_write_atomic(path, out->str, out->len, had ? (st.st_mode & 0660) : 0600);
    if (r == -1)
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    else if (had && ((st.st_uid != geteuid() || st.st_gid != getegid()) &&
                     chown(path, st.st_uid, st.st_gid) == -1))
        log_warn("%s: cannot restore its owner: %s", path, strerror(errno));
    g_string_free(out, TRUE);
    return r;
}

int users_file_add(const char *path, const char *addr, const char *hash, char *err,
                   size_t errlen)
{
    char key[512], line[1024];
    users_normalise(addr, key, sizeof key);
    if (str_fmt(line, sizeof line, "%s:{CRYPT}%s:::::\n", key, hash) < 0) {
        snprintf(err, errlen, "address too long");
        return -1;
    }
    return rewrite(path, addr, line, false, err, errlen);
}

int users_file_del(const char *path, const char *addr, char *err, size_t errlen)
{
    return rewrite(path, addr, NULL, true, err, errlen);
}

/* ---- self-reloading database ---------------------------------------------- */

struct users_db {
    GMutex lock;              /* cur may be replaced while a thread reads it */
    char *dovecot_auth;       /* [users] users = dovecot:PATH, else NULL */
    char *dovecot_userdb;     /* [users] userdb, or NULL */
    unsigned dovecot_timeout; /* ms */
    char *path;
    struct users *cur;
    struct timespec mtime;
    ino_t ino;
    off_t size;
    time_t checked;
};

static void stat_of(const char *path, struct timespec *mt, ino_t *ino, off_t *size)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        *mt = st.st_mtim;
        *ino = st.st_ino;
        *size = st.st_size;
    } else {
        memset(mt, 0, sizeof *mt);
        *ino = 0;
        *size = 0;
    }
}

struct users_db *users_db_open(const char *path, char *err, size_t errlen)
{
    struct users_db *db = calloc(1, sizeof *db);
    db->path = strdup(path);
    stat_of(path, &db->mtime, &db->ino, &db->size);
    db->cur = users_load(path, err, errlen);
    if (db->cur == NULL) {
        free(db->path);
        free(db);
        return NULL;
    }
    db->checked = time(NULL);
    g_mutex_init(&db->lock);
    return db;
}

void users_db_reload(struct users_db *db)
{
    char err[512];
    struct timespec mt;
    ino_t ino;
    off_t size;
    stat_of(db->path, &mt, &ino, &size);
    struct users *u = users_load(db->path, err, sizeof err);
    g_mutex_lock(&db->lock);
    /* what was looked at, even when broken: it is not read again until it
     * changes (the previous copy stays in use) */
    db->mtime = mt;
    db->ino = ino;
    db->size = size;
    if (u != NULL) {
        users_free(db->cur);
        db->cur = u;
    }
    size_t n = users_count(db->cur);
    g_mutex_unlock(&db->lock);
    if (u == NULL)
        log_err("users file not reloaded, keeping the previous one: %s", err);
    else
        log_info("users file %s loaded: %zu users", db->path, n);
}

/* Reloads the file if it changed: looked at (stat) at most once a second, or
 * now when force (before an address is declared unknown: mail is never
 * refused or dropped because the copy in memory is stale).  Any thread. */
static void db_refresh(struct users_db *db, bool force)
{
    if (db->dovecot_auth != NULL)
        return;
    time_t now = time(NULL);
    g_mutex_lock(&db->lock);
    bool look = force || now != db->checked;
    db->checked = now;
    struct timespec mt0 = db->mtime;
    ino_t ino0 = db->ino;
    off_t size0 = db->size;
    g_mutex_unlock(&db->lock);
    if (!look)
        return;
    struct timespec mt;
    ino_t ino;
    off_t size;
    stat_of(db->path, &mt, &ino, &size);
    if (mt.tv_sec != mt0.tv_sec || mt.tv_nsec != mt0.tv_nsec || ino != ino0 || size != size0)
        users_db_reload(db);
}

bool users_db_quota(struct users_db *db, const char *addr, uint64_t *octets)
{
    if (db->dovecot_auth != NULL)
        return false;
    char key[512];
    users_normalise(addr, key, sizeof key);
    db_refresh(db, false);
    g_mutex_lock(&db->lock);
    const uint64_t *q = g_hash_table_lookup(db->cur->quota, key);
    if (q != NULL)
        *octets = *q;
    g_mutex_unlock(&db->lock);
    return q != NULL;
}

size_t users_db_count(struct users_db *db)
{
    db_refresh(db, false);
    g_mutex_lock(&db->lock);
    size_t n = users_count(db->cur);
    g_mutex_unlock(&db->lock);
    return n;
}

static bool file_exists(struct users_db *db, const char *addr)
{
    db_refresh(db, false);
    g_mutex_lock(&db->lock);
    bool r = users_exists(db->cur, addr);
    g_mutex_unlock(&db->lock);
    if (!r) {
        /* a user added a moment ago: look at the file itself once more */
        db_refresh(db, true);
        g_mutex_lock(&db->lock);
        r = users_exists(db->cur, addr);
        g_mutex_unlock(&db->lock);
    }
    return r;
}

/* With Dovecot, "cannot tell" counts as existing: the delivery decides. */
bool users_db_exists(struct users_db *db, const char *addr)
{
    return db->dovecot_auth == NULL ? file_exists(db, addr) : users_db_lookup(db, addr) != 0;
}

void users_db_use_dovecot(struct users_db *db, const char *auth_client, const char *userdb,
                          unsigned timeout_ms)
{
    free(db->dovecot_auth);
    free(db->dovecot_userdb);
    db->dovecot_auth = auth_client ? strdup(auth_client) : NULL;
    db->dovecot_userdb = userdb ? strdup(userdb) : NULL;
    db->dovecot_timeout = timeout_ms;
}

bool users_db_is_dovecot(const struct users_db *db) { return db->dovecot_auth != NULL; }

int users_db_verify(struct users_db *db, const char *user, const char *pass,
                    const char *client_ip)
{
    if (db->dovecot_auth != NULL) {
        char err[256] = "";
        int r = dovecot_auth_plain(db->dovecot_auth, user, pass, client_ip,
                                   db->dovecot_timeout, err, sizeof err);
        if (r == DOVECOT_TEMP)
            log_warn("authentication of %s through Dovecot: %s", user, err);
        return r == DOVECOT_OK ? 0 : r == DOVECOT_TEMP ? -2 : -1;
    }
    /* copy the hash under the lock: crypt runs outside it */
    char key[512];
    users_normalise(user, key, sizeof key);
    db_refresh(db, false);
    g_mutex_lock(&db->lock);
    const char *h = g_hash_table_lookup(db->cur->by_addr, key);
    char *hash = h ? g_strdup(h) : NULL;
    char *like = h ? NULL : cost_alike(db->cur, key);
    g_mutex_unlock(&db->lock);
    int r = verify_hash(hash, like, pass);
    g_free(hash);
    g_free(like);
    return r;
}

int users_db_lookup(struct users_db *db, const char *addr)
{
    if (db->dovecot_auth == NULL)
        return file_exists(db, addr) ? 1 : 0;
    if (db->dovecot_userdb == NULL)
        return -2;
    char err[256] = "";
    char key[512];
    users_normalise(addr, key, sizeof key);
    int r = dovecot_userdb_lookup(db->dovecot_userdb, key, db->dovecot_timeout, err, sizeof err);
    if (r == DOVECOT_TEMP)
        log_warn("userdb lookup of %s through Dovecot: %s", key, err);
    return r == DOVECOT_OK ? 1 : r == DOVECOT_FAIL ? 0 : -1;
}

void users_db_free(struct users_db *db)
{
    if (db == NULL)
        return;
    free(db->dovecot_auth);
    free(db->dovecot_userdb);
    g_mutex_clear(&db->lock);
    users_free(db->cur);
    free(db->path);
    free(db);
}
