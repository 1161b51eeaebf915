/*
 * pec_crlfetch.c - certificate revocation lists for the incoming point
 * (RFC 6109 §2.2.2, §5.4: a revoked provider certificate is not trusted).
 *
 * Where CRLs come from: [pec] crl (a file), [pec] crl_urls, and the CRL
 * distribution points (RFC 5280 §4.2.1.13) of the providers' certificates
 * in the directory.  file: URLs are read from disk; http: and https: are
 * downloaded with libcurl (timeout, size cap, no redirects, http/https
 * only).  Each good download is kept in CACHE_DIR/crl/<sha1 of URL>.crl;
 * when a download fails the cached copy serves, with a warning, so an
 * unreachable CRL server does not drop revocation checking.  CRLs are
 * fetched by the refresh thread, never while a message is verified.
 */
#include "pec/pec_dir.h"
#include "lib/lib.h"
#include "pec_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

struct sink {
    mime_buf b;
    bool too_big;
};

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
    struct sink *s = arg;
    if (s->b.len + sz * n > PEC_CRL_MAX) {
        s->too_big = true;
        return 0;
    }
    return mime_buf_add(&s->b, p, sz * n) == 0 ? sz * n : 0;
}

static int http_fetch(const char *url, unsigned timeout, pec_buf *out, char *err, size_t errsz)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return pec_err(err, errsz, "%s: cannot start libcurl", url);
    struct sink s = {0};
    char cerr[CURL_ERROR_SIZE] = "";
    long t = timeout ? (long)timeout : 30;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);      /* called from a thread */
    curl_easy_setopt(h, CURLOPT_TIMEOUT, t);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, t);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)PEC_CRL_MAX);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK || s.b.len == 0) {
        mime_buf_free(&s.b);
        return pec_err(err, errsz, "%s: %s", url,
                       s.too_big ? "larger than the CRL size limit"
                       : rc != CURLE_OK ? (cerr[0] ? cerr : curl_easy_strerror(rc))
                                        : "empty answer");
    }
    pec_buf_take(out, &s.b);
    return 0;
}

int pec_crl_fetch(const char *url, unsigned timeout, pec_buf *out, char *err, size_t errsz)
{
    out->data = NULL;
    out->len = 0;
    if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0)
        return http_fetch(url, timeout, out, err, errsz);
    const char *path = url;
    if (strncmp(path, "file://", 7) == 0)
        path += 7;
    else if (strncmp(path, "file:", 5) == 0)
        path += 5;
    else if (strstr(url, "://") != NULL)
        return pec_err(err, errsz, "%s: only file:, http: and https: CRL URLs are fetched", url);
    char *data;
    size_t len;
    if (fs_read_file(path, &data, &len, PEC_CRL_MAX) == -1)
        return pec_err(err, errsz, "%s: %s", path, strerror(errno));
    out->data = (unsigned char *)data;
    out->len = len;
    return 0;
}

static void cache_path(const struct pec_dir_conf *c, const char *url, char *p, size_t n)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    char hex[41];
    SHA1((const unsigned char *)url, strlen(url), md);
    pec_hex(md, sizeof md, hex);
    snprintf(p, n, "%s/crl/%s.crl", c->cache_dir, hex);
}

/* One CRL into t: fetched (and cached), else from the cache.  1 loaded,
 * 0 not loaded (warned), -1 not loaded with err set (for must). */
static int load_one(const struct pec_dir_conf *c, const char *url, pec_trust *t, char *err,
                    size_t errsz)
{
    char e[512], p[PATH_MAX];
    pec_buf b;
    cache_path(c, url, p, sizeof p);
    if (pec_crl_fetch(url, c->timeout, &b, e, sizeof e) == 0) {
        char e2[256];
        if (pec_trust_add_crl(t, b.data, b.len, e2, sizeof e2) == 0) {
            if (c->cache_dir && fs_write_atomic(p, b.data, b.len, 0644) == -1)
                log_warn("CRL %s: cannot keep a copy in %s: %s", url, p, strerror(errno));
            pec_buf_free(&b);
            return 1;
        }
        snprintf(e, sizeof e, "%s: %s", url, e2);
        pec_buf_free(&b);
    }
    pec_err(err, errsz, "%s", e);
    char *data;
    size_t len;
    if (c->cache_dir && fs_read_file(p, &data, &len, PEC_CRL_MAX) == 0) {
        int ok = pec_trust_add_crl(t, data, len, NULL, 0) == 0;
        free(data);
        if (ok) {
            log_warn("CRL %s; using the copy kept in %s", e, p);
            return 1;
        }
    }
    log_warn("CRL %s (no cached copy: revocation by this CRL is not checked)", e);
    return 0;
}

int pec_dir_load_crls(const struct pec_dir_conf *c, const pec_directory *d, pec_trust *t,
                      bool must_crl_file, char *err, size_t errsz)
{
    int n = 0;
    if (c->crl_file) {
        int r = load_one(c, c->crl_file, t, err, errsz);
        if (r == 0 && must_crl_file)
            return -1;
        n += r;
    }
    for (size_t i = 0; i < c->n_crl_urls; i++)
        n += load_one(c, c->crl_urls[i], t, NULL, 0);
    char **urls = d ? pec_directory_crl_urls(d) : NULL;
    n += pec_dir_load_crl_urls(c, urls, t);
    pec_strv_free(urls);
    return n;
}

int pec_dir_load_crl_urls(const struct pec_dir_conf *c, char **urls, pec_trust *t)
{
    int n = 0;
    for (size_t i = 0; urls && urls[i]; i++)
        n += load_one(c, urls[i], t, NULL, 0);
    return n;
}
