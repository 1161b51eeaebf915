/*
 * pec_dirsnap.c - the directory in use by pecd: a refcounted snapshot
 * (pec_directory + the pec_trust built from it, CRLs included) that
 * delivery threads take with pec_dirmgr_acquire() and give back with
 * pec_dirsnap_release(), and a refresh thread that builds a new snapshot
 * off the event loop and swaps it in under a mutex, so SMTP never waits on
 * LDAP or a CRL server and a verification never sees half a directory.
 *
 * Refresh: every c->refresh seconds and on request (SIGHUP).  A failing
 * source, a broken answer or one without providers keeps the previous
 * snapshot (warning) and is retried after RETRY seconds.  Each good copy
 * is written to CACHE_DIR/directory.ldif (fs_write_atomic: temp file,
 * fsync, rename); at start, when the source fails, that copy serves.
 */
#include "pec/pec_dir.h"
#include "lib/lib.h"
#include "pec_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct pec_dirmgr {
    struct pec_dir_conf c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stop, requested;
    pec_dirsnap *cur;
    char cache[PATH_MAX];          /* CACHE_DIR/directory.ldif */
    char cache_dir[PATH_MAX];      /* m->c.cache_dir points here */
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
    pec_directory *d = pec_directory_parse(ldif->data, ldif->len, err, errsz);
    if (d == NULL)
        return NULL;
    if (pec_directory_count(d) == 0) {
        pec_directory_free(d);
        pec_err(err, errsz, "no provider record in the directory");
        return NULL;
    }
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
    pec_dirsnap *s = calloc(1, sizeof *s);
    s->dir = d;
    s->trust = t;
    s->loaded = time(NULL);
    atomic_init(&s->refs, 1);
    return s;
bad:
    free(ca);
    pec_trust_free(t);
    pec_directory_free(d);
    return NULL;
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
    pec_buf ldif;
    char e[768];
    if (pec_dir_fetch(&m->c, &ldif, e, sizeof e) == -1)
        return pec_err(err, errsz, "%s", e);
    pec_dirsnap *s = snap_build(m, &ldif, m->cur == NULL, e, sizeof e);
    if (s == NULL) {
        pec_buf_free(&ldif);
        return pec_err(err, errsz, "%s: %s", m->c.source, e);
    }
    if (m->c.cache_dir && fs_write_atomic(m->cache, ldif.data, ldif.len, 0600) == -1)
        log_warn("providers' directory: cannot keep a copy in %s: %s", m->cache,
                 strerror(errno));
    pec_buf_free(&ldif);
    log_info("providers' directory loaded from %s: %zu providers, %zu CRLs", m->c.source,
             pec_directory_count(s->dir), pec_trust_crl_count(s->trust));
    install(m, s);
    return 0;
}

static int load_cache(struct pec_dirmgr *m, char *err, size_t errsz)
{
    char *data;
    size_t len;
    if (m->c.cache_dir == NULL || fs_read_file(m->cache, &data, &len, PEC_LDIF_MAX) == -1)
        return pec_err(err, errsz, "no cached copy (%s)", m->cache);
    pec_buf b = {.data = (unsigned char *)data, .len = len};
    char e[512];
    pec_dirsnap *s = snap_build(m, &b, true, e, sizeof e);
    pec_buf_free(&b);
    if (s == NULL)
        return pec_err(err, errsz, "the cached copy %s: %s", m->cache, e);
    s->from_cache = true;
    install(m, s);
    return 0;
}

struct pec_dirmgr *pec_dirmgr_new(const struct pec_dir_conf *c, char *err, size_t errsz)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);   /* once, before any thread uses libcurl */
    struct pec_dirmgr *m = calloc(1, sizeof *m);
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
        snprintf(m->cache, sizeof m->cache, "%s/directory.ldif", c->cache_dir);
    }
    char e[1024], e2[600];
    if (pec_dirmgr_refresh(m, e, sizeof e) == 0)
        return m;
    if (load_cache(m, e2, sizeof e2) == 0) {
        log_warn("providers' directory: %s; using the cached copy %s (%zu providers)", e,
                 m->cache, pec_directory_count(m->cur->dir));
        return m;
    }
    pec_err(err, errsz, "%s; %s", e, e2);
    pec_dirmgr_free(m);
    return NULL;
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
        char e[1024];
        failing = pec_dirmgr_refresh(m, e, sizeof e) == -1;
        if (failing) {
            const pec_dirsnap *s = pec_dirmgr_acquire(m);
            log_warn("providers' directory not refreshed: %s; keeping the previous copy "
                     "(%zu providers%s), retrying in %u s", e, pec_directory_count(s->dir),
                     s->from_cache ? ", from the cache" : "", retry);
            pec_dirsnap_release(s);
        }
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
