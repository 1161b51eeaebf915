/*
 * pec_dirhttps.c - downloads the signed providers' directory over HTTPS
 * with a client certificate (RFC 6109 §5.6: "queried via [HTTP] on a Secure
 * Socket Layer ... exclusively by licensed providers that have the
 * necessary user certificates").  libcurl, in the refresh thread or in
 * pecctl.
 *
 * Bounds, before any byte is kept: https only (no redirect is followed, so
 * none can lead to http: or to another host that would receive our client
 * certificate), TLS 1.2 or later, the server verified against
 * directory_ca_file (only that file when set, the system's CAs otherwise)
 * and the URL's host name; connect timeout c->timeout, a transfer that
 * stalls for c->timeout seconds is dropped, and the whole download is cut
 * after 10 x c->timeout; at most PEC_P7M_MAX bytes, no content decoding.
 * A status other than 200 is a failure with its number; libcurl's error
 * text (it may quote the server's certificate names) is reduced to
 * printable ASCII before it reaches a log line.
 *
 * Interface: pec_dir_https_fetch (pec_dir.h).
 */
#include "pec/pec_dir.h"
#include "pec/pec_dirp7m.h"
#include "pec_internal.h"

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sink {
    mime_buf b;
    bool too_big;
};

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
    struct sink *s = arg;
    if (n != 0 && sz > (size_t)PEC_P7M_MAX / n)
        return 0;
    if (s->b.len + sz * n > PEC_P7M_MAX) {
        s->too_big = true;
        return 0;
    }
    return mime_buf_add(&s->b, p, sz * n) == 0 ? sz * n : 0;
}

/* Text from outside (libcurl's message quotes names from the server's
 * certificate) as printable ASCII. */
static void printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            *s = '?';
}

bool pec_dir_is_https(const char *source)
{
    return source && strncasecmp(source, "https://", 8) == 0;
}

static int fail_curl(const struct pec_dir_conf *c, CURLcode rc, char *cerr, char *err,
                     size_t errsz)
{
    if (cerr[0] == '\0')
        snprintf(cerr, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
    printable(cerr);
    const char *hint = c->client_cert == NULL
                           ? " (no client certificate: set [pec] directory_client_cert and "
                             "directory_client_key)"
                           : "";
    switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
        return pec_err(err, errsz, "%s: TLS: the server certificate is not accepted: %s "
                       "(CA file %s)", c->source, cerr, c->ca_file ? c->ca_file : "system");
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        return pec_err(err, errsz, "%s: TLS: %s%s", c->source, cerr, hint);
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
        return pec_err(err, errsz, "%s: TLS: our side: %s", c->source, cerr);
    case CURLE_PARTIAL_FILE:
        return pec_err(err, errsz, "%s: truncated download: %s", c->source, cerr);
    case CURLE_OPERATION_TIMEDOUT:
        return pec_err(err, errsz, "%s: timeout: %s", c->source, cerr);
    default:
        return pec_err(err, errsz, "%s: %s", c->source, cerr);
    }
}

/* libcurl's OpenSSL context gets the client certificate and a key object
 * (pecd's: its private operations are the signer process's). */
static CURLcode client_ctx(CURL *h, void *sslctx, void *arg)
{
    (void)h;
    const struct pec_dir_conf *c = arg;
    SSL_CTX *ctx = sslctx;
    if (SSL_CTX_use_certificate_chain_file(ctx, c->client_cert) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, c->client_pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        return CURLE_SSL_CERTPROBLEM;
    return CURLE_OK;
}

int pec_dir_https_fetch(const struct pec_dir_conf *c, pec_buf *out, char *err, size_t errsz)
{
    out->data = NULL;
    out->len = 0;
    if (!pec_dir_is_https(c->source))
        return pec_err(err, errsz, "%s: not an https:// URL", c->source);
    CURL *h = curl_easy_init();
    if (h == NULL)
        return pec_err(err, errsz, "%s: cannot start libcurl", c->source);
    struct sink s = {0};
    char cerr[CURL_ERROR_SIZE] = "";
    long t = c->timeout ? (long)c->timeout : 30;
    curl_easy_setopt(h, CURLOPT_URL, c->source);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);     /* called from a thread */
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, t);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, t);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10 * t);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)PEC_P7M_MAX);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->ca_file) {
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL);  /* that file only */
    }
    if (c->client_cert && c->client_pkey) {
        curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, client_ctx);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, (void *)c);
    } else if (c->client_cert) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->client_cert);
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->client_key ? c->client_key : c->client_cert);
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    }
    curl_easy_setopt(h, CURLOPT_USERAGENT, "pecmail");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    if (s.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        mime_buf_free(&s.b);
        return pec_err(err, errsz, "%s: larger than %u bytes", c->source, (unsigned)PEC_P7M_MAX);
    }
    if (rc != CURLE_OK) {
        mime_buf_free(&s.b);
        return fail_curl(c, rc, cerr, err, errsz);
    }
    if (status != 200) {
        mime_buf_free(&s.b);
        const char *why = "";
        if (status >= 300 && status < 400)
            why = " (redirects are not followed: set [pec] directory to the final URL)";
        else if ((status == 400 || status == 403) && c->client_cert == NULL)
            why = " (no client certificate: set [pec] directory_client_cert and "
                  "directory_client_key)";
        return pec_err(err, errsz, "%s: HTTP status %ld%s", c->source, status, why);
    }
    if (s.b.len == 0) {
        mime_buf_free(&s.b);
        return pec_err(err, errsz, "%s: empty answer", c->source);
    }
    pec_buf_take(out, &s.b);
    return 0;
}
