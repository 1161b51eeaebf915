/*
 * pec_dircopy.c - one copy of the providers' directory: fetched from its
 * source (LDIF file, LDAP, or the signed .p7m of RFC 6109 §4.5 from
 * https:// or a file), verified when signed, checked by the model, and
 * kept in the cache.
 *
 * A signed copy is verified in this order (pec_dir_p7m_verify): the .p7m's
 * structure and signature (libpec, pec_dirp7m.c); its signer against
 * [pec] directory_signer at the current time; then, once the signer is
 * known to chain to the authority, the CRLs of [pec] crl, crl_urls and the
 * signer's own CRL distribution points are fetched (or taken from the CRL
 * cache) and its revocation checked.  Only then is the LDIF read.
 *
 * The cache keeps the .p7m exactly as received beside its LDIF, so the
 * copy used at start, when the source is down, is verified again (a file
 * changed on disk, or a directory_signer replaced since, is noticed); the
 * LDIF alone serves `pecctl directory list/export --cache` and the other
 * sources.  A file's modification time is when its copy was fetched.
 *
 * Interface: pec_dir.h.
 */
#include "pec/pec_dir.h"
#include "lib/lib.h"
#include "pec_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

bool pec_dir_is_p7m(const char *s)
{
    if (s == NULL)
        return false;
    if (pec_dir_is_https(s))
        return true;
    size_t n = strlen(s);
    return n >= 4 && strcasecmp(s + n - 4, ".p7m") == 0;
}

void pec_dir_copy_free(pec_dir_copy *cp)
{
    pec_buf_free(&cp->ldif);
    pec_buf_free(&cp->p7m);
}

static const char *file_path(const char *s)
{
    return strncmp(s, "file:", 5) == 0 ? s + 5 : s;
}

int pec_dir_p7m_verify(const struct pec_dir_conf *c, const void *der, size_t len, pec_buf *ldif,
                       pec_p7m_info *info, char *err, size_t errsz)
{
    ldif->data = NULL;
    ldif->len = 0;
    memset(info, 0, sizeof *info);
    if (c->signer_file == NULL)
        return pec_err(err, errsz, "a signed directory needs [pec] directory_signer");
    char *pem;
    size_t pemlen;
    if (fs_read_file(c->signer_file, &pem, &pemlen, 1u << 20) == -1)
        return pec_err(err, errsz, "[pec] directory_signer %s: %s", c->signer_file,
                       strerror(errno));
    pec_trust *t = pec_trust_new();
    char e[512];
    int rc = t ? pec_trust_add_ca_pem(t, pem, pemlen, e, sizeof e) : -1;
    free(pem);
    if (rc == -1) {
        pec_trust_free(t);
        return pec_err(err, errsz, "[pec] directory_signer %s: %s", c->signer_file,
                       t ? e : "out of memory");
    }
    pec_p7m *p = pec_p7m_read(der, len, info, err, errsz);
    time_t now = time(NULL);
    if (p == NULL || pec_p7m_check_signer(p, t, now, info, err, errsz) == -1) {
        pec_p7m_free(p);
        pec_trust_free(t);
        return -1;
    }
    /* the signer chains to the authority: its CRLs are worth fetching */
    int n = pec_dir_load_crls(c, NULL, t, false, NULL, 0);
    char **urls = pec_p7m_crl_urls(p);
    n += pec_dir_load_crl_urls(c, urls, t);
    pec_strv_free(urls);
    rc = n > 0 ? pec_p7m_check_signer(p, t, now, info, err, errsz) : 0;
    if (rc == 0) {
        const pec_buf *content = pec_p7m_content(p);
        ldif->data = malloc(content->len + 1);
        if (ldif->data == NULL) {
            rc = pec_err(err, errsz, "out of memory");
        } else {
            memcpy(ldif->data, content->data, content->len);
            ldif->data[content->len] = '\0';
            ldif->len = content->len;
        }
    }
    pec_p7m_free(p);
    pec_trust_free(t);
    return rc;
}

/* A signed copy: the .p7m (kept in cp->p7m) verified into cp->ldif. */
static int signed_copy(const struct pec_dir_conf *c, pec_dir_copy *cp, const char *where,
                       char *err, size_t errsz)
{
    char e[768];
    if (pec_dir_p7m_verify(c, cp->p7m.data, cp->p7m.len, &cp->ldif, &cp->info, e,
                           sizeof e) == -1) {
        pec_dir_copy_free(cp);
        return pec_err(err, errsz, "%s: signature: %s", where, e);
    }
    return 0;
}

int pec_dir_fetch_copy(const struct pec_dir_conf *c, pec_dir_copy *out, char *err, size_t errsz)
{
    memset(out, 0, sizeof *out);
    if (!pec_dir_is_p7m(c->source))
        return pec_dir_fetch(c, &out->ldif, err, errsz);
    if (pec_dir_is_https(c->source)) {
        if (pec_dir_https_fetch(c, &out->p7m, err, errsz) == -1)
            return -1;
    } else {
        const char *path = file_path(c->source);
        char *data;
        size_t len;
        if (fs_read_file(path, &data, &len, PEC_P7M_MAX) == -1)
            return pec_err(err, errsz, "%s: %s", path,
                           errno == EFBIG ? "too large" : strerror(errno));
        out->p7m.data = (unsigned char *)data;
        out->p7m.len = len;
    }
    return signed_copy(c, out, c->source, err, errsz);
}

pec_directory *pec_dir_parse(const struct pec_dir_conf *c, const pec_buf *ldif, char *err,
                             size_t errsz)
{
    char e[512];
    pec_directory *d = pec_directory_parse(ldif->data, ldif->len, e, sizeof e);
    if (d == NULL) {
        bool der = ldif->len > 0 && ldif->data[0] == 0x30 && !pec_dir_is_p7m(c->source);
        pec_err(err, errsz, "%s%s", e,
                der ? " (the file looks like DER: a signed directory must be named *.p7m, "
                      "with [pec] directory_signer)"
                    : "");
        return NULL;
    }
    if (pec_directory_count(d) == 0) {
        pec_directory_free(d);
        pec_err(err, errsz, "no provider record in the directory");
        return NULL;
    }
    return d;
}

void pec_dir_cache_path(const struct pec_dir_conf *c, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", c->cache_dir ? c->cache_dir : ".",
             pec_dir_is_p7m(c->source) ? PEC_DIR_CACHE_P7M : PEC_DIR_CACHE_LDIF);
}

int pec_dir_cache_read(const struct pec_dir_conf *c, pec_dir_copy *out, time_t *fetched,
                       char *err, size_t errsz)
{
    memset(out, 0, sizeof *out);
    *fetched = 0;
    char path[PATH_MAX];
    pec_dir_cache_path(c, path, sizeof path);
    bool p7m = pec_dir_is_p7m(c->source);
    char *data;
    size_t len;
    struct stat st;
    if (c->cache_dir == NULL || stat(path, &st) == -1 ||
        fs_read_file(path, &data, &len, p7m ? PEC_P7M_MAX : PEC_LDIF_MAX) == -1)
        return pec_err(err, errsz, "no cached copy (%s: %s)", path,
                       c->cache_dir ? strerror(errno) : "no cache directory");
    *fetched = st.st_mtime;
    pec_buf *b = p7m ? &out->p7m : &out->ldif;
    b->data = (unsigned char *)data;
    b->len = len;
    return p7m ? signed_copy(c, out, path, err, errsz) : 0;
}

int pec_dir_cache_write(const struct pec_dir_conf *c, const pec_dir_copy *cp, mode_t mode,
                        char *err, size_t errsz)
{
    if (c->cache_dir == NULL)
        return 0;
    char path[PATH_MAX];
    if (fs_mkdirs(c->cache_dir, 0700) == -1)
        return pec_err(err, errsz, "cannot create %s: %s", c->cache_dir, strerror(errno));
    if (cp->p7m.len > 0) {
        snprintf(path, sizeof path, "%s/%s", c->cache_dir, PEC_DIR_CACHE_P7M);
        if (fs_write_atomic(path, cp->p7m.data, cp->p7m.len, mode) == -1)
            return pec_err(err, errsz, "cannot write %s: %s", path, strerror(errno));
    }
    snprintf(path, sizeof path, "%s/%s", c->cache_dir, PEC_DIR_CACHE_LDIF);
    if (fs_write_atomic(path, cp->ldif.data, cp->ldif.len, mode) == -1)
        return pec_err(err, errsz, "cannot write %s: %s", path, strerror(errno));
    return 0;
}
