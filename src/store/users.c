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

#include "users_int.h"

/* One user: what the line says beyond the address. */
struct user_entry {
    char *hash;              /* the crypt hash, {SCHEME} removed */
    uint64_t quota;          /* userdb_quota_rule=*:storage=SIZE, when has_quota */
    bool has_quota;
    bool suspended;          /* "nologin" among the extra fields (Dovecot's meaning) */
};

static void entry_free(gpointer p)
{
    struct user_entry *e = p;
    if (e == NULL)
        return;
    if (e->hash)
        explicit_bzero(e->hash, strlen(e->hash));
    g_free(e->hash);
    g_free(e);
}

struct users {
    GHashTable *by_addr;     /* normalised address -> struct user_entry */
    GPtrArray *order;        /* addresses in file order */
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

/* Dovecot's "nologin" among a passwd-file's extra fields (space-separated
 * key[=value]): the account may not log in (pecctl user suspend). */
static bool has_nologin(const char *extra)
{
    for (const char *p = extra; p != NULL && *p;) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, " \t");
        if (n == 7 && strncmp(p, "nologin", 7) == 0)
            return true;
        if (n > 8 && strncmp(p, "nologin=", 8) == 0) {
            char v[8] = "";
            size_t vl = n - 8 < sizeof v - 1 ? n - 8 : sizeof v - 1;
            memcpy(v, p + 8, vl);
            bool yes;
            if (parse_bool(v, &yes) == 0 && yes)
                return true;
        }
        p += n;
    }
    return false;
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
    struct users *u = xcalloc(1, sizeof *u);
    u->by_addr = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, entry_free);
    u->order = g_ptr_array_new();
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
                    struct user_entry *e = g_new0(struct user_entry, 1);
                    e->hash = g_strdup(h);
                    e->quota = quota;
                    e->has_quota = has_quota;
                    e->suspended = extra != NULL && has_nologin(extra);
                    g_hash_table_insert(u->by_addr, k, e);
                    g_ptr_array_add(u->order, k);
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
        const struct user_entry *e = g_hash_table_lookup(u->by_addr, other);
        if (e != NULL)
            return g_strdup(e->hash);
    }
    static GOnce once = G_ONCE_INIT;
    return g_strdup(g_once(&once, make_fallback, NULL));
}

/* crypt(3) of password against hash; an unknown user (hash NULL) does the
 * same work against like and always fails. */
static int verify_hash(const char *hash, const char *like, const char *password)
{
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
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
    const struct user_entry *e = g_hash_table_lookup(u->by_addr, key);
    char *like = e ? NULL : cost_alike(u, key);
    int r = verify_hash(e ? e->hash : NULL, like, password);
    g_free(like);
    /* a suspended account: the same work, and no */
    return r == 0 && e->suspended ? -1 : r;
}

int users_info(const struct users *u, const char *addr, struct users_info *out)
{
    char key[512];
    users_normalise(addr, key, sizeof key);
    const struct user_entry *e = g_hash_table_lookup(u->by_addr, key);
    memset(out, 0, sizeof *out);
    if (e == NULL)
        return -1;
    out->suspended = e->suspended;
    out->has_quota = e->has_quota;
    out->quota = e->quota;
    /* the hash's scheme, from its $id$ (no secret in it) */
    const char *h = e->hash;
    out->scheme = strncmp(h, "$y$", 3) == 0    ? "yescrypt"
                  : strncmp(h, "$gy$", 4) == 0 ? "gost-yescrypt"
                  : strncmp(h, "$6$", 3) == 0  ? "SHA512-CRYPT"
                  : strncmp(h, "$5$", 3) == 0  ? "SHA256-CRYPT"
                  : strncmp(h, "$2", 2) == 0   ? "BLF-CRYPT"
                  : strncmp(h, "$1$", 3) == 0  ? "MD5-CRYPT"
                                               : "CRYPT";
    return 0;
}

/* For users_db (users_int.h): the entry's hash (a copy) and whether the
 * account is suspended; NULL when unknown. */
char *users_entry_hash(const struct users *u, const char *key, bool *suspended)
{
    const struct user_entry *e = g_hash_table_lookup(u->by_addr, key);
    if (e == NULL)
        return NULL;
    *suspended = e->suspended;
    return g_strdup(e->hash);
}

bool users_entry_quota(const struct users *u, const char *key, uint64_t *octets)
{
    const struct user_entry *e = g_hash_table_lookup(u->by_addr, key);
    if (e == NULL || !e->has_quota)
        return false;
    *octets = e->quota;
    return true;
}

char *users_cost_alike(const struct users *u, const char *key)
{
    return cost_alike(u, key);
}

int users_verify_hash(const char *hash, const char *like, const char *password)
{
    return verify_hash(hash, like, password);
}

int users_hash_password(const char *password, char *out, size_t outlen)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof salt) == NULL)
        return -1;
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
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

