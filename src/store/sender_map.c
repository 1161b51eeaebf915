/*
 * sender_map.c - which logins may send as which addresses, beyond their own
 * ([users] senders = PATH): a provider's identity system where one person's
 * login owns several PEC addresses (an office's shared mailbox, a role
 * address), as Postfix's smtpd_sender_login_maps does.
 *
 *   # SENDER-ADDRESS  LOGIN[,LOGIN...]
 *   protocollo@pec.comune.example   mario.rossi@pec.comune.example,anna@pec.comune.example
 *
 * Addresses and logins are compared in our canonical form (lower case).  The
 * file is read again when it changes (looked at at most once a second); a
 * broken new file keeps the previous one, with the file and line logged.
 *
 * Interface: sender_map_* (store.h).  Thread-safety: one thread (the event
 * loop) uses a map.
 */
#include "store.h"
#include "lib/lib.h"

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SENDER_MAP_MAX_FILE (64u * 1024 * 1024)

struct sender_map {
    char *path;
    GHashTable *owners;    /* sender -> GHashTable set of logins */
    struct timespec mtime;
    off_t size;
    time_t checked;
};

static GHashTable *parse(const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    if (fs_read_file(path, &buf, &len, SENDER_MAP_MAX_FILE) == -1) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    GHashTable *owners = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                               (GDestroyNotify)g_hash_table_destroy);
    int lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;   /* strtok_r skips empty lines: numbers count written lines only */
        char *t = str_trim(line);
        if (*t == '\0' || *t == '#')
            continue;
        char *sp = t + strcspn(t, " \t");
        if (*sp == '\0') {
            snprintf(err, errlen, "%s:%d: expected SENDER LOGIN[,LOGIN...]", path, lineno);
            g_hash_table_destroy(owners);
            free(buf);
            return NULL;
        }
        *sp++ = '\0';
        char sender[512];
        users_normalise(t, sender, sizeof sender);
        if (strchr(sender, '@') == NULL || strpbrk(sender, ":/\\") != NULL) {
            snprintf(err, errlen, "%s:%d: '%s' is not an address", path, lineno, t);
            g_hash_table_destroy(owners);
            free(buf);
            return NULL;
        }
        GHashTable *set = g_hash_table_lookup(owners, sender);
        if (set == NULL) {
            set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
            g_hash_table_insert(owners, g_strdup(sender), set);
        }
        gchar **logins = g_strsplit_set(str_trim(sp), ", \t", -1);
        for (gchar **l = logins; *l != NULL; l++) {
            if (**l == '\0')
                continue;
            char login[512];
            users_normalise(*l, login, sizeof login);
            g_hash_table_add(set, g_strdup(login));
        }
        g_strfreev(logins);
    }
    free(buf);
    return owners;
}

static void stat_of(const char *path, struct timespec *mt, off_t *size)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        *mt = st.st_mtim;
        *size = st.st_size;
    } else {
        memset(mt, 0, sizeof *mt);
        *size = -1;
    }
}

struct sender_map *sender_map_open(const char *path, char *err, size_t errlen)
{
    struct sender_map *m = xcalloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    stat_of(path, &m->mtime, &m->size);
    m->owners = parse(path, err, errlen);
    if (m->owners == NULL) {
        free(m);
        return NULL;
    }
    m->path = xstrdup(path);
    m->checked = time(NULL);
    return m;
}

static void refresh(struct sender_map *m)
{
    time_t now = time(NULL);
    if (now == m->checked)
        return;
    m->checked = now;
    struct timespec mt;
    off_t size;
    stat_of(m->path, &mt, &size);
    if (mt.tv_sec == m->mtime.tv_sec && mt.tv_nsec == m->mtime.tv_nsec && size == m->size)
        return;
    m->mtime = mt;
    m->size = size;
    char err[512];
    GHashTable *o = parse(m->path, err, sizeof err);
    if (o == NULL) {
        log_err("sender map not reloaded, keeping the previous one: %s", err);
        return;
    }
    g_hash_table_destroy(m->owners);
    m->owners = o;
    log_info("sender map %s loaded: %u addresses", m->path, g_hash_table_size(o));
}

bool sender_map_allows(struct sender_map *m, const char *sender, const char *login)
{
    if (m == NULL)
        return false;
    refresh(m);
    char s[512], l[512];
    users_normalise(sender, s, sizeof s);
    users_normalise(login, l, sizeof l);
    GHashTable *set = g_hash_table_lookup(m->owners, s);
    return set != NULL && g_hash_table_contains(set, l);
}

void sender_map_free(struct sender_map *m)
{
    if (m == NULL)
        return;
    g_hash_table_destroy(m->owners);
    free(m->path);
    free(m);
}
