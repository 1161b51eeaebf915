/*
 * pec_dirsource.c - reads the providers' directory (RFC 6109 §4.5) from its
 * source: an LDIF file (PATH or file:PATH), the signed .p7m (https:// or a
 * file named *.p7m, pec_dircopy.c), or an LDAP server with libldap
 * (ldap://HOST:PORT/BASE, ldaps://, StartTLS, simple bind).  LDAP answers
 * are written out as LDIF (pec_ldif_put) so they go through the same checks
 * as a file and land in the same cache format.
 *
 * Limits: a network and a search timeout (c->timeout), a size limit of
 * PEC_LDIF_MAX_ENTRIES entries and PEC_LDIF_MAX bytes, no referrals.
 */
#include "pec/pec_dir.h"
#include "pec/pec_dirtls.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "pec_internal.h"

#include <errno.h>
#include <ldap.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>

bool pec_dir_is_ldap(const char *s)
{
    return s && (strncasecmp(s, "ldap://", 7) == 0 || strncasecmp(s, "ldaps://", 8) == 0);
}

static int file_fetch(const char *path, pec_buf *out, char *err, size_t errsz)
{
    char *data;
    size_t len;
    if (strncmp(path, "file:", 5) == 0)
        path += 5;
    if (fs_read_file(path, &data, &len, PEC_LDIF_MAX) == -1)
        return pec_err(err, errsz, "%s: %s", path, errno == EFBIG ? "too large" : strerror(errno));
    out->data = (unsigned char *)data;
    out->len = len;
    return 0;
}

/* ---- LDAP ------------------------------------------------------------------------ */

struct ldap_target {
    char uri[512];
    const char *base;
    const char *filter;
    int scope;
    bool starttls;
    bool tls;                      /* ldaps:// or StartTLS */
    const char *host;
    int port;
};

static int ldap_target(const struct pec_dir_conf *c, LDAPURLDesc *u, struct ldap_target *t,
                       char *err, size_t errsz)
{
    if (u->lud_host == NULL || u->lud_host[0] == '\0')
        return pec_err(err, errsz, "%s: the URL names no host", c->source);
    bool v6 = strchr(u->lud_host, ':') != NULL;
    if (str_fmt(t->uri, sizeof t->uri, "%s://%s%s%s:%d", u->lud_scheme, v6 ? "[" : "",
                u->lud_host, v6 ? "]" : "", u->lud_port) < 0)
        return pec_err(err, errsz, "%s: URL too long", c->source);
    t->base = u->lud_dn && u->lud_dn[0] ? u->lud_dn : "o=postacert";
    t->filter = u->lud_filter ? u->lud_filter : "(objectClass=*)";
    /* RFC 4516 makes "base" the default scope; a directory wants the subtree
     * unless the URL names a scope (ldap://h/base?attrs?SCOPE) */
    const char *q = strchr(c->source, '?');
    const char *q2 = q ? strchr(q + 1, '?') : NULL;
    bool scoped = q2 && q2[1] != '\0' && q2[1] != '?';
    t->scope = scoped && u->lud_scope != LDAP_SCOPE_DEFAULT ? u->lud_scope : LDAP_SCOPE_SUBTREE;
    t->starttls = c->starttls;
    for (char **e = u->lud_exts; e && *e; e++) {
        const char *x = **e == '!' ? *e + 1 : *e;
        if (strcasecmp(x, "starttls") == 0)
            t->starttls = true;
    }
    if (t->starttls && strcasecmp(u->lud_scheme, "ldaps") == 0)
        return pec_err(err, errsz, "%s: StartTLS and ldaps:// exclude each other", c->source);
    t->tls = t->starttls || strcasecmp(u->lud_scheme, "ldaps") == 0;
    t->host = u->lud_host;
    t->port = u->lud_port;
    return 0;
}

static int ldap_fail(LDAP *ld, int rc, const char *what, const struct pec_dir_conf *c, char *err,
                     size_t errsz)
{
    char *diag = NULL;
    if (ld)
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
    pec_err(err, errsz, "%s: %s: %s%s%s", c->source, what, ldap_err2string(rc),
            diag && *diag ? " - " : "", diag && *diag ? diag : "");
    ldap_memfree(diag);
    return -1;
}

/* A TLS connection failed: libldap (GnuTLS) often says no more than
 * "Can't contact LDAP server"; pec_dirtls_probe names the cause. */
static int ldap_tls_fail(LDAP *ld, int rc, const char *what, const struct pec_dir_conf *c,
                         const struct ldap_target *t, char *err, size_t errsz)
{
    char why[512];
    if ((rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR) && t->tls &&
        pec_dirtls_probe(t->host, t->port, t->starttls, c->ca_file, c->timeout, why,
                         sizeof why) == -1)
        return pec_err(err, errsz, "%s: %s: TLS: %s", c->source, what, why);
    return ldap_fail(ld, rc, what, c, err, errsz);
}

static int ldap_open(const struct pec_dir_conf *c, const struct ldap_target *t, LDAP **ldp,
                     char *err, size_t errsz)
{
    LDAP *ld = NULL;
    int rc = ldap_initialize(&ld, t->uri);
    if (rc != LDAP_SUCCESS)
        return ldap_fail(NULL, rc, "cannot initialise", c, err, errsz);
    *ldp = ld;
    int v3 = LDAP_VERSION3, off = 0, demand = LDAP_OPT_X_TLS_DEMAND;
    struct timeval tv = {.tv_sec = c->timeout ? (time_t)c->timeout : 30};
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
    if (c->ca_file)
        ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, c->ca_file);
    ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &off);
    if (t->starttls && (rc = ldap_start_tls_s(ld, NULL, NULL)) != LDAP_SUCCESS)
        return ldap_tls_fail(ld, rc, "StartTLS", c, t, err, errsz);
    struct berval cred = {.bv_val = (char *)(c->password ? c->password : ""),
                          .bv_len = c->password ? strlen(c->password) : 0};
    rc = ldap_sasl_bind_s(ld, c->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    if (rc != LDAP_SUCCESS) {
        char what[300];
        if (c->bind_dn == NULL || str_fmt(what, sizeof what, "bind as %s", c->bind_dn) < 0)
            str_copy(what, c->bind_dn ? "bind" : "anonymous bind", sizeof what);
        return ldap_tls_fail(ld, rc, what, c, t, err, errsz);
    }
    return 0;
}

/* One entry of the answer as an LDIF record. */
static int ldap_entry(LDAP *ld, LDAPMessage *e, pec_buf *out)
{
    char *dn = ldap_get_dn(ld, e);
    if (dn == NULL)
        return -1;
    int rc = pec_ldif_put(out, "dn", dn, strlen(dn));
    ldap_memfree(dn);
    BerElement *ber = NULL;
    for (char *a = ldap_first_attribute(ld, e, &ber); a && rc == 0;
         a = ldap_next_attribute(ld, e, ber)) {
        struct berval **vals = ldap_get_values_len(ld, e, a);
        for (int i = 0; vals && vals[i] && rc == 0; i++)
            rc = pec_ldif_put(out, a, vals[i]->bv_val, vals[i]->bv_len);
        ldap_value_free_len(vals);
        ldap_memfree(a);
    }
    ber_free(ber, 0);
    return rc == 0 ? pec_ldif_put(out, NULL, NULL, 0) : -1;
}

static int ldap_fetch(const struct pec_dir_conf *c, pec_buf *out, char *err, size_t errsz)
{
    LDAPURLDesc *u = NULL;
    if (ldap_url_parse(c->source, &u) != LDAP_URL_SUCCESS)
        return pec_err(err, errsz, "%s: not an LDAP URL (ldap://HOST:PORT/BASE)", c->source);
    struct ldap_target t;
    LDAP *ld = NULL;
    LDAPMessage *res = NULL;
    int rc = ldap_target(c, u, &t, err, errsz);
    if (rc == 0)
        rc = ldap_open(c, &t, &ld, err, errsz);
    if (rc == 0) {
        struct timeval tv = {.tv_sec = c->timeout ? (time_t)c->timeout : 30};
        int r = ldap_search_ext_s(ld, t.base, t.scope, t.filter, NULL, 0, NULL, NULL, &tv,
                                  (int)PEC_LDIF_MAX_ENTRIES, &res);
        if (r != LDAP_SUCCESS)
            rc = ldap_fail(ld, r, "search", c, err, errsz);
    }
    for (LDAPMessage *e = rc == 0 ? ldap_first_entry(ld, res) : NULL; e && rc == 0;
         e = ldap_next_entry(ld, e)) {
        rc = ldap_entry(ld, e, out);
        if (rc == -1)
            pec_err(err, errsz, "%s: cannot read an entry of the answer", c->source);
        else if (out->len > PEC_LDIF_MAX)
            rc = pec_err(err, errsz, "%s: answer larger than %u bytes", c->source, PEC_LDIF_MAX);
    }
    if (rc == 0 && out->len == 0)
        rc = pec_err(err, errsz, "%s: the search returned no entry", c->source);
    ldap_msgfree(res);
    if (ld)
        ldap_unbind_ext_s(ld, NULL, NULL);
    ldap_free_urldesc(u);
    if (rc != 0)
        pec_buf_free(out);
    return rc;
}

int pec_dir_fetch(const struct pec_dir_conf *c, pec_buf *ldif, char *err, size_t errsz)
{
    ldif->data = NULL;
    ldif->len = 0;
    if (pec_dir_is_ldap(c->source))
        return ldap_fetch(c, ldif, err, errsz);
    if (pec_dir_is_p7m(c->source)) {
        pec_dir_copy cp;
        if (pec_dir_fetch_copy(c, &cp, err, errsz) == -1)
            return -1;
        *ldif = cp.ldif;
        pec_buf_free(&cp.p7m);
        return 0;
    }
    return file_fetch(c->source, ldif, err, errsz);
}

static EVP_PKEY *client_pkey;

void pec_dir_use_client_key(void *evp_pkey)
{
    if (evp_pkey != NULL)
        EVP_PKEY_up_ref(evp_pkey);
    EVP_PKEY_free(client_pkey);
    client_pkey = evp_pkey;
}

int pec_dir_password_read(const struct config *cfg, char **password, char *err, size_t errsz)
{
    *password = NULL;
    if (cfg->pec_dir_password_file != NULL) {
        size_t n;
        if (fs_read_file(cfg->pec_dir_password_file, password, &n, 4096) == -1)
            return pec_err(err, errsz, "[pec] directory_password_file %s: %s",
                           cfg->pec_dir_password_file, strerror(errno));
        (*password)[strcspn(*password, "\r\n")] = '\0';
    }
    return 0;
}

void pec_dir_conf_fill(struct pec_dir_conf *c, const struct config *cfg, char *cache,
                       const char *password)
{
    snprintf(cache, 4096, "%s/directory", cfg->data_dir);
    *c = (struct pec_dir_conf){
        .source = cfg->pec_directory, .bind_dn = cfg->pec_dir_bind_dn,
        .password = password ? password : cfg->pec_dir_password,
        .starttls = cfg->pec_dir_starttls, .ca_file = cfg->pec_dir_ca_file,
        .timeout = (unsigned)cfg->pec_dir_timeout, .trust_file = cfg->pec_trust,
        .crl_file = cfg->pec_crl, .crl_urls = (const char *const *)cfg->pec_crl_urls,
        .n_crl_urls = cfg->pec_n_crl_urls, .cache_dir = cache,
        .refresh = (unsigned)cfg->pec_dir_refresh, .client_cert = cfg->pec_dir_client_cert,
        .client_key = cfg->pec_dir_client_key, .client_pkey = client_pkey,
        .signer_file = cfg->pec_dir_signer};
}

int pec_dir_conf_init(struct pec_dir_conf *c, const struct config *cfg, char *cache,
                      char **password, char *err, size_t errsz)
{
    if (pec_dir_password_read(cfg, password, err, errsz) == -1)
        return -1;
    pec_dir_conf_fill(c, cfg, cache, *password);
    return 0;
}
