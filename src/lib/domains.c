/*
 * domains.c - the local domains table (domains.h): a hash table of lower-case
 * names, filled from pecd.conf and from [provider] local_domains_file.
 *
 * The file is the operator's (mode checked like pecd.conf's other files by
 * whoever writes it), but a provider hosts thousands of customer domains in
 * it, so it is read line by line with a bound on each line, and each name and
 * setting is checked: a mistake names the file and the line, and nothing
 * starts (or a reload changes nothing).  Only a regular file is read (a FIFO
 * or a device would hold the event loop that reloads).
 */
#include "domains.h"
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_OCTETS 4096

struct domains {
    GHashTable *by_name;     /* name -> struct domain * (owned) */
    GPtrArray *files;        /* the paths entries point at */
};

static void domain_free(gpointer p)
{
    struct domain *d = p;
    free(d->name);
    free(d->receipt);
    free(d->callouts);
    free(d->tls_cert);
    free(d->tls_key);
    free(d);
}

struct domains *domains_new(void)
{
    struct domains *t = xcalloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->by_name = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, domain_free);
    t->files = g_ptr_array_new_with_free_func(g_free);
    return t;
}

void domains_free(struct domains *t)
{
    if (t == NULL)
        return;
    g_hash_table_destroy(t->by_name);
    g_ptr_array_free(t->files, TRUE);
    free(t);
}

/* name lower-cased into buf; false when it does not fit */
static bool lower_into(char *buf, size_t size, const char *name)
{
    size_t n = strlen(name);
    if (n >= size)
        return false;
    for (size_t i = 0; i <= n; i++)
        buf[i] = (char)g_ascii_tolower(name[i]);
    return true;
}

static struct domain *get_or_add(struct domains *t, const char *name, bool *added)
{
    char key[256];
    if (!lower_into(key, sizeof key, name))
        return NULL;
    struct domain *d = g_hash_table_lookup(t->by_name, key);
    *added = d == NULL;
    if (d != NULL)
        return d;
    d = xcalloc(1, sizeof *d);
    if (d == NULL || (d->name = xstrdup(key)) == NULL) {
        free(d);
        return NULL;
    }
    d->messages_per_hour = d->recipients_per_hour = DOMAIN_INHERIT;
    g_hash_table_insert(t->by_name, d->name, d);
    return d;
}

int domains_add(struct domains *t, const char *name, char *err, size_t errlen)
{
    if (!str_domain_ok(name)) {
        snprintf(err, errlen, "'%s' is not a domain name (letters, digits, '-', labels of at "
                              "most 63 and at most 253 octets)", name);
        return -1;
    }
    bool added;
    if (get_or_add(t, name, &added) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int set_setting(struct domain *d, const char *key, const char *value,
                       const char *base_dir, char *why, size_t whylen)
{
    if (strcmp(key, "messages_per_hour") == 0 || strcmp(key, "recipients_per_hour") == 0) {
        uint64_t v;
        if (parse_size(value, &v) == -1) {
            snprintf(why, whylen, "%s: '%s' is not a number", key, value);
            return -1;
        }
        *(key[0] == 'm' ? &d->messages_per_hour : &d->recipients_per_hour) = v;
        return 0;
    }
    if (strcmp(key, "receipt") == 0) {
        if (strcmp(value, "completa") != 0 && strcmp(value, "breve") != 0 &&
            strcmp(value, "sintetica") != 0) {
            snprintf(why, whylen, "receipt: '%s' is not completa, breve or sintetica", value);
            return -1;
        }
        free(d->receipt);
        d->receipt = xstrdup(value);
        return 0;
    }
    if (strcmp(key, "callouts") == 0) {
        free(d->callouts);
        d->callouts = xstrdup(value);   /* names checked with [callouts] (config_callout.c) */
        return 0;
    }
    if (strcmp(key, "tls_key") == 0 && strncmp(value, "pkcs11:", 7) == 0) {
        free(d->tls_key);          /* in a hardware module ([pec] pkcs11_module) */
        d->tls_key = xstrdup(value);
        return 0;
    }
    if (strcmp(key, "tls_certificate") == 0 || strcmp(key, "tls_key") == 0) {
        char *path = value[0] == '/' ? g_strdup(value) : g_build_filename(base_dir, value, NULL);
        if (access(path, R_OK) == -1) {
            snprintf(why, whylen, "%s: %s: %s", key, path, strerror(errno));
            g_free(path);
            return -1;
        }
        char **dst = strcmp(key, "tls_key") == 0 ? &d->tls_key : &d->tls_cert;
        free(*dst);
        *dst = xstrdup(path);
        g_free(path);
        return 0;
    }
    snprintf(why, whylen, "unknown setting '%s' (messages_per_hour, recipients_per_hour, "
                          "receipt, callouts, tls_certificate, tls_key)", key);
    return -1;
}

/* One line's fields: the domain, then KEY=VALUE settings. */
static int load_line(struct domains *t, char *line, const char *file, unsigned lineno,
                     const char *base_dir, char *why, size_t whylen)
{
    char *save = NULL;
    const char *name = strtok_r(line, " \t", &save);
    if (name == NULL)
        return 0;
    if (!str_domain_ok(name)) {
        snprintf(why, whylen, "'%s' is not a domain name", name);
        return -1;
    }
    bool added;
    struct domain *d = get_or_add(t, name, &added);
    if (d == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    if (!added && d->line > 0) {
        snprintf(why, whylen, "%s is already on line %u", d->name, d->line);
        return -1;
    }
    d->file = file;
    d->line = lineno;
    for (char *kv = strtok_r(NULL, " \t", &save); kv; kv = strtok_r(NULL, " \t", &save)) {
        char *eq = strchr(kv, '=');
        if (eq == NULL || eq == kv || eq[1] == '\0') {
            snprintf(why, whylen, "'%s' is not KEY=VALUE", kv);
            return -1;
        }
        *eq = '\0';
        if (set_setting(d, kv, eq + 1, base_dir, why, whylen) == -1)
            return -1;
    }
    if ((d->tls_cert == NULL) != (d->tls_key == NULL)) {
        snprintf(why, whylen, "tls_certificate and tls_key go together");
        return -1;
    }
    return 0;
}

/* Whether someone other than root can change path: it, or a directory above
 * it (renaming counts), owned by another user or writable by another group
 * or by everyone (a sticky directory excepted).  The uid, or 0. */
static uid_t changeable_by(const char *path)
{
    char real[PATH_MAX];
    struct stat st;
    if (realpath(path, real) == NULL)
        return 0;
    for (;;) {
        if (stat(real[0] ? real : "/", &st) == -1)
            return 0;
        bool sticky_dir = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
        if (st.st_uid != 0)
            return st.st_uid;
        if ((st.st_mode & S_IWGRP) && st.st_gid != 0 && !sticky_dir)
            return (uid_t)-1;
        if ((st.st_mode & S_IWOTH) && !sticky_dir)
            return (uid_t)-1;
        char *slash = strrchr(real, '/');
        if (slash == NULL || real[0] == '\0')
            return 0;
        *slash = '\0';
    }
}

/* One line of f into buf (at most LINE_MAX_OCTETS octets and its end):
 * its length, -1 at the end of the file, -2 when it is longer (the rest of
 * it is not read: a file without a line end, /dev/zero, must not grow a
 * buffer without bound), -3 on a NUL byte. */
static ssize_t read_line(FILE *f, char *buf, size_t size)
{
    size_t n = 0;
    int c;
    while ((c = getc(f)) != EOF) {
        if (c == '\0')
            return -3;
        if (n + 1 >= size)
            return -2;
        buf[n++] = (char)c;
        if (c == '\n')
            break;
    }
    buf[n] = '\0';
    return n == 0 && c == EOF ? -1 : (ssize_t)n;
}

int domains_load_file(struct domains *t, const char *path, const char *base_dir, char *err,
                      size_t errlen)
{
    /* a regular file only: a FIFO would stop pecd's event loop in open() or
     * read() at a reload, a device would never end */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    if (fd != -1 && fstat(fd, &st) == -1) {
        int e = errno;
        close(fd);
        errno = e;
        fd = -1;
    } else if (fd != -1 && !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "%s: not a regular file (a FIFO or a device?)", path);
        return -1;
    }
    FILE *f = fd == -1 ? NULL : fdopen(fd, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd != -1)
            close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    char *file = g_strdup(path);
    g_ptr_array_add(t->files, file);
    char line[LINE_MAX_OCTETS + 2];
    ssize_t n;
    unsigned lineno = 0;
    int rc = 0;
    char why[512];
    while ((n = read_line(f, line, sizeof line)) != -1) {
        lineno++;
        if (n == -2) {
            snprintf(err, errlen, "%s:%u: line longer than %d octets", path, lineno,
                     LINE_MAX_OCTETS);
            rc = -1;
            break;
        }
        if (n == -3) {
            snprintf(err, errlen, "%s:%u: a NUL byte", path, lineno);
            rc = -1;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        line[strcspn(line, "\r\n")] = '\0';
        if (load_line(t, line, file, lineno, base_dir, why, sizeof why) == -1) {
            snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    /* read by root (pecd's start, the signer's reload), a file that names
     * private keys is as powerful as the keys: whoever could change it could
     * have the signer load any key root can read and sign with it for the
     * network-facing process.  So it must be root's alone. */
    if (rc == 0 && geteuid() == 0) {
        const struct domain *named = NULL;
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, t->by_name);
        while (named == NULL && g_hash_table_iter_next(&it, NULL, &v))
            if (((struct domain *)v)->file == file && ((struct domain *)v)->tls_key != NULL)
                named = v;
        uid_t who = named ? changeable_by(path) : 0;
        if (who != 0) {
            snprintf(err, errlen, "%s:%u: tls_key of %s: this file (or a directory above it) "
                     "can be changed by %s other than root, who could name any key here: "
                     "chown root:root and chmod go-w it and its directories", path,
                     named->line, named->name, who == (uid_t)-1 ? "a group or everyone" : "a user");
            rc = -1;
        }
    }
    return rc;
}

const struct domain *domains_get(const struct domains *t, const char *name)
{
    char key[256];
    if (t == NULL || name == NULL || !lower_into(key, sizeof key, name))
        return NULL;
    return g_hash_table_lookup(t->by_name, key);
}

const struct domain *domains_tls_for(const struct domains *t, const char *host)
{
    char key[256];
    if (t == NULL || host == NULL || !lower_into(key, sizeof key, host))
        return NULL;
    size_t n = strlen(key);
    if (n > 1 && key[n - 1] == '.')
        key[n - 1] = '\0';            /* the absolute form names the same host */
    for (const char *p = key; p != NULL && *p; p = strchr(p, '.') ? strchr(p, '.') + 1 : NULL) {
        const struct domain *d = g_hash_table_lookup(t->by_name, p);
        if (d != NULL && d->tls_cert != NULL)
            return d;
    }
    return NULL;
}

size_t domains_count(const struct domains *t)
{
    return t ? g_hash_table_size(t->by_name) : 0;
}

static gint by_name(gconstpointer a, gconstpointer b)
{
    return strcmp((*(const struct domain *const *)a)->name,
                  (*(const struct domain *const *)b)->name);
}

const struct domain **domains_sorted(const struct domains *t, size_t *n)
{
    GPtrArray *a = g_ptr_array_sized_new(domains_count(t));
    if (t != NULL) {
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, t->by_name);
        while (g_hash_table_iter_next(&it, NULL, &v))
            g_ptr_array_add(a, v);
    }
    g_ptr_array_sort(a, by_name);
    *n = a->len;
    return (const struct domain **)g_ptr_array_free(a, FALSE);
}
