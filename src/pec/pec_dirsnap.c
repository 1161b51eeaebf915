/*
 * pec_dirsnap.c - the directory in use by pecd: a refcounted snapshot
 * (pec_directory + the pec_trust built from it, CRLs included) that
 * delivery threads take with pec_dirmgr_acquire() and give back with
 * pec_dirsnap_release(), and a refresh thread that builds a new snapshot
 * off the event loop and swaps it in under a mutex, so SMTP never waits on
 * LDAP, an HTTPS server or a CRL server and a verification never sees half
 * a directory.
 *
 * Refresh: every c->refresh seconds and on request (SIGHUP).  A failing
 * source (a refused signature too), a broken answer or one without
 * providers keeps the previous snapshot (warning with the reason) and is
 * retried after RETRY seconds.  Each good copy is written to the cache
 * (pec_dir_cache_write: CACHE_DIR/directory.ldif, and the .p7m as received
 * for a signed source; temp file, fsync, rename); at start, when the source
 * fails, that copy serves (a .p7m verified again).  When a refresh fails
 * and the cache file changed since we last wrote or read it (`pecctl
 * directory refresh` wrote a newer copy, `pecctl directory import` one of
 * its own), that copy is taken, after the same checks.  A copy in use
 * fetched more than PEC_DIR_STALE (48 h) ago is warned about at every
 * attempt (RFC 6109 §4.5: a local copy updated daily).
 */
#include "pec/pec_dir.h"
#include "lib/lib.h"
#include "lib/config.h"
#include "pec_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct pec_dirmgr {
    struct pec_dir_conf c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stop, requested;
    pec_dirsnap *cur;
    char cache[PATH_MAX];          /* the cache file read at start (pec_dir_cache_path) */
    char cache_dir[PATH_MAX];      /* m->c.cache_dir points here */
    struct timespec cache_seen;    /* its mtime when we last wrote or read it */
    struct pec_dir_conf next;      /* pec_dirmgr_reconfigure: taken at the next turn */
    bool has_next;
};

static void snap_free(pec_dirsnap *s)
{
    pec_directory_free(s->dir);
    pec_trust_free(s->trust);
    free(s);
}

void pec_dirsnap_release(const pec_dirsnap *cs)
{
    pec_dirsnap *s = (pec_dirsnap *)cs;
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        snap_free(s);
}

const pec_dirsnap *pec_dirmgr_acquire(struct pec_dirmgr *m)
{
    pthread_mutex_lock(&m->mu);
    pec_dirsnap *s = m->cur;
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&m->mu);
    return s;
}

/* A snapshot from LDIF text: parse, check, trust anchors, hashes, CRLs. */
static pec_dirsnap *snap_build(struct pec_dirmgr *m, const pec_buf *ldif, bool first,
                               char *err, size_t errsz)
{
    pec_directory *d = pec_dir_parse(&m->c, ldif, err, errsz);
    if (d == NULL)
        return NULL;
    char *ca = NULL;
    size_t calen = 0;
    pec_trust *t = pec_trust_new();
    char e2[256];
    if (fs_read_file(m->c.trust_file, &ca, &calen, 16u << 20) == -1) {
        pec_err(err, errsz, "[pec] trust %s: %s", m->c.trust_file, strerror(errno));
        goto bad;
    }
    if (pec_trust_add_ca_pem(t, ca, calen, e2, sizeof e2) == -1) {
        pec_err(err, errsz, "[pec] trust %s: %s", m->c.trust_file, e2);
        goto bad;
    }
    pec_directory_add_to_trust(d, t);
    if (pec_dir_load_crls(&m->c, d, t, first, e2, sizeof e2) == -1) {
        pec_err(err, errsz, "[pec] crl %s", e2);
        goto bad;
    }
    free(ca);
    pec_dirsnap *s = xcalloc(1, sizeof *s);
    s->dir = d;
    s->trust = t;
    s->loaded = time(NULL);
    s->fetched = s->loaded;
    atomic_init(&s->refs, 1);
    return s;
bad:
    free(ca);
    pec_trust_free(t);
    pec_directory_free(d);
    return NULL;
}

static void cache_mark(struct pec_dirmgr *m)
{
    struct stat st;
    if (stat(m->cache, &st) == 0)
        m->cache_seen = st.st_mtim;
}

static bool cache_changed(struct pec_dirmgr *m)
{
    struct stat st;
    return m->c.cache_dir && stat(m->cache, &st) == 0 &&
           (st.st_mtim.tv_sec != m->cache_seen.tv_sec ||
            st.st_mtim.tv_nsec != m->cache_seen.tv_nsec);
}

/* ", signed by SUBJECT at TIME" for a signed copy, else "". */
static void signed_by(const pec_dir_copy *cp, char *buf, size_t n)
{
    buf[0] = '\0';
    if (cp->p7m.len == 0)
        return;
    char when[32] = "an unknown time";
    if (cp->info.signing_time) {
        struct tm tm;
        gmtime_r(&cp->info.signing_time, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    snprintf(buf, n, ", signed by %s at %s", cp->info.signer_subject, when);
}

static void install(struct pec_dirmgr *m, pec_dirsnap *s)
{
    pthread_mutex_lock(&m->mu);
    pec_dirsnap *old = m->cur;
    m->cur = s;
    pthread_mutex_unlock(&m->mu);
    pec_dirsnap_release(old);
}

int pec_dirmgr_refresh(struct pec_dirmgr *m, char *err, size_t errsz)
{
    pec_dir_copy cp;
    char e[1024];
    if (pec_dir_fetch_copy(&m->c, &cp, e, sizeof e) == -1)
        return pec_err(err, errsz, "%s", e);
    pec_dirsnap *s = snap_build(m, &cp.ldif, m->cur == NULL, e, sizeof e);
    if (s == NULL) {
        pec_dir_copy_free(&cp);
        return pec_err(err, errsz, "%s: %s", m->c.source, e);
    }
    if (pec_dir_cache_write(&m->c, &cp, 0600, e, sizeof e) == -1)
        log_warn("providers' directory: cannot keep a copy: %s", e);
    else
        cache_mark(m);
    char by[400];
    signed_by(&cp, by, sizeof by);
    pec_dir_copy_free(&cp);
    log_info("providers' directory loaded from %s: %zu providers, %zu CRLs%s", m->c.source,
             pec_directory_count(s->dir), pec_trust_crl_count(s->trust), by);
    install(m, s);
    return 0;
}

static int load_cache(struct pec_dirmgr *m, bool first, char *err, size_t errsz)
{
    pec_dir_copy cp;
    time_t fetched;
    char e[1024];
    if (pec_dir_cache_read(&m->c, &cp, &fetched, e, sizeof e) == -1)
        return pec_err(err, errsz, "%s", e);
    pec_dirsnap *s = snap_build(m, &cp.ldif, first, e, sizeof e);
    pec_dir_copy_free(&cp);
    if (s == NULL)
        return pec_err(err, errsz, "the cached copy %s: %s", m->cache, e);
    s->from_cache = true;
    s->fetched = fetched;
    install(m, s);
    return 0;
}

/* RFC 6109 §4.5: a local copy updated daily; warned about past 48 hours. */
static void warn_stale(struct pec_dirmgr *m)
{
    const pec_dirsnap *s = pec_dirmgr_acquire(m);
    time_t age = time(NULL) - s->fetched;
    if (age > PEC_DIR_STALE) {
        char when[32];
        struct tm tm;
        gmtime_r(&s->fetched, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        log_warn("providers' directory: the copy in use was fetched %lld hours ago (%s), "
                 "more than 48: RFC 6109 §4.5 asks for a daily update",
                 (long long)(age / 3600), when);
    }
    pec_dirsnap_release(s);
}

struct pec_dirmgr *pec_dirmgr_new(const struct pec_dir_conf *c, char *err, size_t errsz)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);   /* once, before any thread uses libcurl */
    struct pec_dirmgr *m = xcalloc(1, sizeof *m);
    m->c = *c;
    if (c->cache_dir) {
        str_copy(m->cache_dir, c->cache_dir, sizeof m->cache_dir);
        m->c.cache_dir = m->cache_dir;
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (c->cache_dir) {
        snprintf(m->cache, sizeof m->cache, "%s/crl", c->cache_dir);
        if (fs_mkdirs(m->cache, 0700) == -1)
            log_warn("providers' directory: cannot create %s: %s", m->cache, strerror(errno));
    }
    pec_dir_cache_path(&m->c, m->cache, sizeof m->cache);
    char e[1024], e2[1200];
    if (pec_dirmgr_refresh(m, e, sizeof e) == 0)
        return m;
    cache_mark(m);
    if (load_cache(m, true, e2, sizeof e2) == 0) {
        log_warn("providers' directory: %s; using the cached copy %s (%zu providers)", e,
                 m->cache, pec_directory_count(m->cur->dir));
        warn_stale(m);
        return m;
    }
    pec_err(err, errsz, "%s; %s", e, e2);
    pec_dirmgr_free(m);
    return NULL;
}

/* The source failed: a cache file written since by someone else (pecctl
 * directory refresh or import) is taken after the same checks. */
static void take_newer_cache(struct pec_dirmgr *m)
{
    if (!cache_changed(m))
        return;
    cache_mark(m);                 /* looked at once, whatever the outcome */
    char e[1200];
    if (load_cache(m, false, e, sizeof e) == -1) {
        log_warn("providers' directory: the cache file %s changed but is not taken: %s",
                 m->cache, e);
        return;
    }
    const pec_dirsnap *s = pec_dirmgr_acquire(m);
    log_info("providers' directory loaded from the cached copy %s (written by another "
             "process, e.g. pecctl directory refresh): %zu providers, %zu CRLs", m->cache,
             pec_directory_count(s->dir), pec_trust_crl_count(s->trust));
    pec_dirsnap_release(s);
}

static void *refresher(void *arg)
{
    struct pec_dirmgr *m = arg;
    unsigned retry = m->c.refresh / 10;
    retry = retry < 5 ? 5 : retry > 300 ? 300 : retry;
    bool failing = m->cur->from_cache;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        if (!m->requested) {
            unsigned wait = failing ? retry : m->c.refresh;
            if (wait == 0) {
                pthread_cond_wait(&m->cv, &m->mu);
            } else {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += (time_t)wait;
                if (pthread_cond_timedwait(&m->cv, &m->mu, &ts) != ETIMEDOUT && !m->requested)
                    continue;
            }
            if (m->stop)
                break;
        }
        m->requested = false;
        pthread_mutex_unlock(&m->mu);
        /* the conf's strings belong to the configuration in force: held
         * from before they are taken until the refresh is over (reload) */
        config_hold_begin();
        pthread_mutex_lock(&m->mu);
        if (m->has_next) {
            m->c = m->next;
            m->c.cache_dir = m->cache_dir;
            m->has_next = false;
        }
        pthread_mutex_unlock(&m->mu);
        char e[1024];
        failing = pec_dirmgr_refresh(m, e, sizeof e) == -1;
        if (failing) {
            const pec_dirsnap *s = pec_dirmgr_acquire(m);
            log_warn("providers' directory not refreshed: %s; keeping the previous copy "
                     "(%zu providers%s), retrying in %u s", e, pec_directory_count(s->dir),
                     s->from_cache ? ", from the cache" : "", retry);
            pec_dirsnap_release(s);
            take_newer_cache(m);
            warn_stale(m);
        }
        config_hold_end();
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

int pec_dirmgr_start(struct pec_dirmgr *m)
{
    if (pthread_create(&m->thread, NULL, refresher, m) != 0)
        return -1;
    m->running = true;
    return 0;
}

void pec_dirmgr_request(struct pec_dirmgr *m)
{
    pthread_mutex_lock(&m->mu);
    m->requested = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

void pec_dirmgr_reconfigure(struct pec_dirmgr *m, const struct pec_dir_conf *c, bool refresh)
{
    pthread_mutex_lock(&m->mu);
    m->next = *c;
    m->has_next = true;
    if (refresh) {
        m->requested = true;
        pthread_cond_signal(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
}

void pec_dirmgr_free(struct pec_dirmgr *m)
{
    if (m == NULL)
        return;
    if (m->running) {
        pthread_mutex_lock(&m->mu);
        m->stop = true;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->thread, NULL);
    }
    pec_dirsnap_release(m->cur);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}
