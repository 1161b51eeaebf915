/*
 * users_db.c - the users pecd looks up: the users file kept in memory and
 * reloaded when it changes, or Dovecot's auth server ([users] users =
 * dovecot:PATH, dovecot_auth.c) behind one interface.  Every call is
 * thread-safe.
 *
 * Reloading: the file is looked at (stat) at most once a second.  A caller
 * that may block (a delivery or authentication thread) reads a changed file
 * itself; one that must not (the event loop) starts a reload in a thread of
 * its own and answers from the copy in use, telling its caller the copy may
 * be stale: 500,000 users take about a second to parse, which the event
 * loop never waits for.  Before an address is found unknown, a blocking
 * caller looks at the file once more: a user added a moment ago is never
 * refused.
 *
 * Interface: users_db_* (store.h).
 */
#include "users_int.h"
#include "lib/lib.h"

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- self-reloading database ---------------------------------------------- */

struct users_db {
    GMutex lock;              /* cur may be replaced while a thread reads it */
    GThread *loader;          /* a background reload (the event loop's), or NULL */
    bool loading;             /* loader is running */
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
    struct users_db *db = xcalloc(1, sizeof *db);
    db->path = xstrdup(path);
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
    gint64 t0 = g_get_monotonic_time();
    struct users *u = users_load(db->path, err, sizeof err);
    double secs = (double)(g_get_monotonic_time() - t0) / G_TIME_SPAN_SECOND;
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
        log_info("users file %s loaded: %zu users in %.2f s", db->path, n, secs);
}

static gpointer loader_main(gpointer arg)
{
    struct users_db *db = arg;
    users_db_reload(db);
    g_mutex_lock(&db->lock);
    db->loading = false;
    g_mutex_unlock(&db->lock);
    return NULL;
}

/* Reloads the file if it changed: looked at (stat) at most once a second, or
 * now when force (before an address is declared unknown: mail is never
 * refused or dropped because the copy in memory is stale).  A caller that
 * must not block gets the reload started in a thread; the return is true
 * when the copy in use may be older than the file (a reload is running). */
static bool db_refresh(struct users_db *db, bool force, bool may_block)
{
    if (db->dovecot_auth != NULL)
        return false;
    time_t now = time(NULL);
    g_mutex_lock(&db->lock);
    bool look = force || now != db->checked;
    db->checked = now;
    struct timespec mt0 = db->mtime;
    ino_t ino0 = db->ino;
    off_t size0 = db->size;
    bool loading = db->loading;
    g_mutex_unlock(&db->lock);
    if (!look)
        return loading;
    struct timespec mt;
    ino_t ino;
    off_t size;
    stat_of(db->path, &mt, &ino, &size);
    if (mt.tv_sec == mt0.tv_sec && mt.tv_nsec == mt0.tv_nsec && ino == ino0 && size == size0)
        return loading;
    if (may_block) {
        users_db_reload(db);
        return false;
    }
    g_mutex_lock(&db->lock);
    bool start = !db->loading;
    if (start) {
        if (db->loader != NULL)
            g_thread_join(db->loader);   /* the previous one, finished */
        db->loading = true;
        db->loader = g_thread_new("users", loader_main, db);
    }
    g_mutex_unlock(&db->lock);
    return true;
}

bool users_db_quota(struct users_db *db, const char *addr, uint64_t *octets)
{
    if (db->dovecot_auth != NULL)
        return false;
    char key[512];
    users_normalise(addr, key, sizeof key);
    db_refresh(db, false, true);
    g_mutex_lock(&db->lock);
    bool r = users_entry_quota(db->cur, key, octets);
    g_mutex_unlock(&db->lock);
    return r;
}

size_t users_db_count(struct users_db *db)
{
    db_refresh(db, false, true);
    g_mutex_lock(&db->lock);
    size_t n = users_count(db->cur);
    g_mutex_unlock(&db->lock);
    return n;
}

static bool lookup(struct users_db *db, const char *addr)
{
    g_mutex_lock(&db->lock);
    bool r = users_exists(db->cur, addr);
    g_mutex_unlock(&db->lock);
    return r;
}

static bool file_exists(struct users_db *db, const char *addr)
{
    db_refresh(db, false, true);
    if (lookup(db, addr))
        return true;
    /* a user added a moment ago: look at the file itself once more */
    db_refresh(db, true, true);
    return lookup(db, addr);
}

/* With Dovecot, "cannot tell" counts as existing: the delivery decides. */
bool users_db_exists(struct users_db *db, const char *addr)
{
    return db->dovecot_auth == NULL ? file_exists(db, addr) : users_db_lookup(db, addr) != USERS_NO;
}

bool users_db_exists_nb(struct users_db *db, const char *addr, bool *stale)
{
    *stale = false;
    if (db->dovecot_auth != NULL) {
        *stale = true;   /* Dovecot is not asked from the event loop */
        return false;
    }
    bool r = lookup(db, addr);
    if (!r) {
        *stale = db_refresh(db, true, false);
        r = lookup(db, addr);   /* the reload may have finished meanwhile */
    } else {
        db_refresh(db, false, false);
    }
    return r;
}

void users_db_use_dovecot(struct users_db *db, const char *auth_client, const char *userdb,
                          unsigned timeout_ms)
{
    free(db->dovecot_auth);
    free(db->dovecot_userdb);
    db->dovecot_auth = auth_client ? xstrdup(auth_client) : NULL;
    db->dovecot_userdb = userdb ? xstrdup(userdb) : NULL;
    db->dovecot_timeout = timeout_ms;
}

bool users_db_is_dovecot(const struct users_db *db) { return db->dovecot_auth != NULL; }

int users_db_verify(struct users_db *db, const char *user, const char *pass,
                    const char *client_ip, char *canonical, size_t canonlen)
{
    if (canonical != NULL && canonlen > 0)
        users_normalise(user, canonical, canonlen);
    if (db->dovecot_auth != NULL) {
        char err[256] = "", canon[256] = "";
        int r = dovecot_auth_plain(db->dovecot_auth, user, pass, client_ip,
                                   db->dovecot_timeout, canon, sizeof canon, err, sizeof err);
        if (r == DOVECOT_TEMP)
            log_warn("authentication of %s through Dovecot: %s", user, err);
        /* the name Dovecot's passdb settled on, in our canonical form */
        if (r == DOVECOT_OK && canon[0] && canonical != NULL && canonlen > 0)
            users_normalise(canon, canonical, canonlen);
        return r == DOVECOT_OK ? 0 : r == DOVECOT_TEMP ? -2 : -1;
    }
    /* copy the hash under the lock: crypt runs outside it */
    char key[512];
    users_normalise(user, key, sizeof key);
    db_refresh(db, false, true);
    g_mutex_lock(&db->lock);
    bool suspended = false;
    char *hash = users_entry_hash(db->cur, key, &suspended);
    char *like = hash ? NULL : users_cost_alike(db->cur, key);
    g_mutex_unlock(&db->lock);
    int r = users_verify_hash(hash, like, pass);
    if (hash)
        explicit_bzero(hash, strlen(hash));
    g_free(hash);
    g_free(like);
    if (r == 0 && suspended) {
        /* the same answer as a wrong password (nothing told to a guesser);
         * the operator reads why */
        log_warn("authentication of %s refused: the account is suspended (pecctl user "
                 "resume)", key);
        return -1;
    }
    return r;
}

enum users_found users_db_lookup(struct users_db *db, const char *addr)
{
    if (db->dovecot_auth == NULL)
        return file_exists(db, addr) ? USERS_YES : USERS_NO;
    if (db->dovecot_userdb == NULL)
        return USERS_AT_DELIVERY;
    char err[256] = "";
    char key[512];
    users_normalise(addr, key, sizeof key);
    int r = dovecot_userdb_lookup(db->dovecot_userdb, key, db->dovecot_timeout, err, sizeof err);
    if (r == DOVECOT_TEMP)
        log_warn("userdb lookup of %s through Dovecot: %s", key, err);
    return r == DOVECOT_OK     ? USERS_YES
           : r == DOVECOT_FAIL ? USERS_NO
                               : USERS_UNAVAILABLE;
}

void users_db_free(struct users_db *db)
{
    if (db == NULL)
        return;
    if (db->loader != NULL)
        g_thread_join(db->loader);
    free(db->dovecot_auth);
    free(db->dovecot_userdb);
    g_mutex_clear(&db->lock);
    users_free(db->cur);
    free(db->path);
    free(db);
}
