/*
 * pec_directory.c - the providers' directory (RFC 6109 §4.5) in memory: the
 * records read by pec_ldif.c, checked against the schema of §4.5.1-§4.5.9
 * and indexed for the roles' lookups (provider of a domain, provider of a
 * signing-certificate hash, its mailReceipt).  Searches are
 * case-insensitive (§2.2.1; digest D6).  The LDAP reader (pec_dirsource.c)
 * turns search results into LDIF and comes through here too, so a file and
 * a server are checked alike.  No I/O.
 *
 * Every record is kept as read so pec_directory_to_ldif() writes it back
 * (attributes outside the RFC schema included).
 */
#include "pec/pec.h"
#include "lib/lib.h"
#include "pec/pec_dirp7m.h"
#include "pec_internal.h"
#include "pec_ldif.h"

#include <ctype.h>
#include <glib.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct pec_directory {
    pec_ldif_entry *entries;       /* every record, in the order read */
    size_t n_entries;
    GPtrArray *providers;          /* pec_provider* */
    GHashTable *by_domain;         /* lower-case domain -> pec_provider* */
    GHashTable *by_hash;           /* lower-case sha1 hex -> pec_provider* */
    char *root_url;                /* LDIFLocationURL of o=postacert */
};

/* ---- value checks (§4.5.4, §4.5.5; RFC 5322 §3.2.3 dot-atom) -------------- */

static bool atext(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static bool dot_atom(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' ? s[i + 1] == '.' : !atext((unsigned char)s[i]))
            return false;
    }
    return true;
}

static bool domain_ok(const char *s)
{
    return strlen(s) <= 253 && dot_atom(s, strlen(s));
}

static bool receipt_ok(const char *s)
{
    const char *at = strchr(s, '@');
    return at && strchr(at + 1, '@') == NULL && strlen(s) <= 254 &&
           dot_atom(s, (size_t)(at - s)) && domain_ok(at + 1);
}

static bool text_ok(const unsigned char *v, size_t n)
{
    if (n == 0 || !g_utf8_validate((const char *)v, (gssize)n, NULL))
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x20 || v[i] == 0x7f)
            return false;
    return true;
}

/* "AB:CD..." or "abcd..." -> 40 lowercase hex digits, or false. */
static bool hash_norm(const char *s, char out[41])
{
    size_t n = 0;
    for (; *s; s++) {
        if (*s == ':' || *s == ' ')
            continue;
        if (!isxdigit((unsigned char)*s) || n == 40)
            return false;
        out[n++] = (char)tolower((unsigned char)*s);
    }
    out[n] = '\0';
    return n == 40;
}

/* ---- one provider record ----------------------------------------------------- */

static void strv_add(char ***v, size_t *n, const char *s)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i], s) == 0)
            return;
    *v = xrealloc(*v, (*n + 1) * sizeof **v);
    (*v)[(*n)++] = xstrdup(s);
}

static void provider_free(pec_provider *p)
{
    char **vs[] = {p->domains, p->hashes, p->descriptions, p->crl_urls};
    size_t ns[] = {p->n_domains, p->n_hashes, p->n_descriptions, p->n_crl_urls};
    for (size_t k = 0; k < 4; k++) {
        for (size_t i = 0; i < ns[k]; i++)
            free(vs[k][i]);
        free(vs[k]);
    }
    for (size_t i = 0; i < p->n_certs; i++)
        free(p->certs[i].data);
    free(p->certs);
    free(p->name);
    free(p->receipt);
    free(p->dn);
    free(p->unit);
    free(p->ldif_url);
    free(p);
}

/* CRL distribution points (RFC 5280 §4.2.1.13) that we can fetch, added
 * to *v (n values). */
static void cert_crl_urls(X509 *x, char ***v, size_t *n)
{
    STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
    for (int i = 0; dps && i < sk_DIST_POINT_num(dps); i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
        if (dp->distpoint == NULL || dp->distpoint->type != 0)
            continue;
        GENERAL_NAMES *gns = dp->distpoint->name.fullname;
        for (int k = 0; k < sk_GENERAL_NAME_num(gns); k++) {
            GENERAL_NAME *gn = sk_GENERAL_NAME_value(gns, k);
            if (gn->type != GEN_URI)
                continue;
            const ASN1_IA5STRING *u = gn->d.uniformResourceIdentifier;
            char *url = g_strndup((const char *)u->data, (gsize)u->length);
            if (g_str_has_prefix(url, "http://") || g_str_has_prefix(url, "https://") ||
                g_str_has_prefix(url, "file:"))
                strv_add(v, n, url);
            g_free(url);
        }
    }
    sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
}

char **pec_x509_crl_urls(const void *x509)
{
    char **v = NULL;
    size_t n = 0;
    cert_crl_urls((X509 *)x509, &v, &n);
    v = xrealloc(v, (n + 1) * sizeof *v);
    v[n] = NULL;
    return v;
}

static int add_cert(pec_provider *p, const pec_ldif_attr *a)
{
    const unsigned char *q = a->val;
    X509 *x = d2i_X509(NULL, &q, (long)a->len);
    if (x == NULL || q != a->val + a->len) {
        X509_free(x);
        return -1;
    }
    unsigned char md[SHA_DIGEST_LENGTH];
    char hex[41];
    SHA1(a->val, a->len, md);
    pec_hex(md, sizeof md, hex);
    strv_add(&p->hashes, &p->n_hashes, hex);
    p->certs = xrealloc(p->certs, (p->n_certs + 1) * sizeof *p->certs);
    p->certs[p->n_certs].data = xmalloc(a->len);
    memcpy(p->certs[p->n_certs].data, a->val, a->len);
    p->certs[p->n_certs++].len = a->len;
    cert_crl_urls(x, &p->crl_urls, &p->n_crl_urls);
    X509_free(x);
    return 0;
}

static int set_single(char **slot, const pec_ldif_attr *a, const char **why)
{
    if (*slot != NULL) {
        *why = "is single-valued but appears twice";
        return -1;
    }
    if (!text_ok(a->val, a->len)) {
        *why = "is empty or not UTF-8 text";
        return -1;
    }
    *slot = g_strstrip(xstrdup((const char *)a->val));
    return 0;
}

/* Reads one attribute into p; -1 with *why. */
static int provider_attr(pec_provider *p, const pec_ldif_attr *a, const char **why)
{
    const char *v = (const char *)a->val;
    char buf[256];
    if (strcasecmp(a->name, "providerName") == 0)
        return set_single(&p->name, a, why);
    if (strcasecmp(a->name, "providerUnit") == 0)
        return set_single(&p->unit, a, why);
    if (strcasecmp(a->name, "LDIFLocationURL") == 0)
        return set_single(&p->ldif_url, a, why);
    if (strcasecmp(a->name, "mailReceipt") == 0) {
        if (set_single(&p->receipt, a, why) == -1)
            return -1;
        *why = "is not an address of dot-atoms (local@domain, §4.5.4)";
        return receipt_ok(p->receipt) ? 0 : -1;
    }
    if (strcasecmp(a->name, "managedDomains") == 0) {
        *why = "is not a domain in dot-atom form (§4.5.5)";
        if (a->len >= sizeof buf)
            return -1;
        for (size_t i = 0; i <= a->len; i++)
            buf[i] = (char)tolower((unsigned char)v[i]);
        g_strstrip(buf);
        if (!domain_ok(buf))
            return -1;
        strv_add(&p->domains, &p->n_domains, buf);
        return 0;
    }
    if (strcasecmp(a->name, "providerCertificateHash") == 0) {
        *why = "is not a SHA-1 in 40 hex digits (§4.5.1)";
        if (a->len > 128 || !hash_norm(v, buf))
            return -1;
        strv_add(&p->hashes, &p->n_hashes, buf);
        return 0;
    }
    if (strcasecmp(a->name, "providerCertificate") == 0) {
        *why = "is not a DER X.509 certificate (§4.5.2)";
        return add_cert(p, a);
    }
    if (strcasecmp(a->name, "description") == 0 && text_ok(a->val, a->len))
        strv_add(&p->descriptions, &p->n_descriptions, v);
    return 0;
}

static int provider_from(const pec_ldif_entry *e, pec_provider **out, char *err, size_t errsz)
{
    pec_provider *p = xcalloc(1, sizeof *p);
    p->dn = xstrdup(e->dn);
    p->line = e->line;
    const char *why = NULL;
    for (size_t i = 0; i < e->n_attrs; i++) {
        if (provider_attr(p, &e->attrs[i], &why) == -1) {
            pec_err(err, errsz, "LDIF line %d (%s): %s %s", e->attrs[i].line, e->dn,
                    e->attrs[i].name, why);
            provider_free(p);
            return -1;
        }
    }
    const char *missing = p->name == NULL        ? "providerName"
                          : p->receipt == NULL   ? "mailReceipt"
                          : p->n_domains == 0    ? "managedDomains"
                          : p->n_hashes == 0     ? "providerCertificateHash or providerCertificate"
                                                 : NULL;
    if (missing != NULL) {
        pec_err(err, errsz, "LDIF line %d (%s): provider record without %s (§4.5.9)", e->line,
                e->dn, missing);
        provider_free(p);
        return -1;
    }
    *out = p;
    return 0;
}

/* ---- the directory --------------------------------------------------------------- */

static bool has_value(const pec_ldif_entry *e, const char *name, const char *value)
{
    for (size_t i = 0; i < e->n_attrs; i++)
        if (strcasecmp(e->attrs[i].name, name) == 0 &&
            (value == NULL || strcasecmp((const char *)e->attrs[i].val, value) == 0))
            return true;
    return false;
}

static const char *first_value(const pec_ldif_entry *e, const char *name)
{
    for (size_t i = 0; i < e->n_attrs; i++)
        if (strcasecmp(e->attrs[i].name, name) == 0)
            return (const char *)e->attrs[i].val;
    return NULL;
}

/* Indexes p; a domain claimed by another provider is refused (§7: a
 * domain must lead to one provider's certificates). */
static int index_provider(pec_directory *d, pec_provider *p, char *err, size_t errsz)
{
    for (size_t k = 0; k < p->n_domains; k++) {
        pec_provider *o = g_hash_table_lookup(d->by_domain, p->domains[k]);
        if (o != NULL && strcasecmp(o->name, p->name) != 0)
            return pec_err(err, errsz, "LDIF line %d (%s): managedDomains %s is already "
                           "managed by %s", p->line, p->dn, p->domains[k], o->name);
        if (o == NULL || p->unit == NULL)
            g_hash_table_insert(d->by_domain, p->domains[k], p);
    }
    for (size_t k = 0; k < p->n_hashes; k++)
        if (!g_hash_table_contains(d->by_hash, p->hashes[k]) || p->unit == NULL)
            g_hash_table_insert(d->by_hash, p->hashes[k], p);
    return 0;
}

static int build(pec_directory *d, char *err, size_t errsz)
{
    for (size_t i = 0; i < d->n_entries; i++) {
        const pec_ldif_entry *e = &d->entries[i];
        bool prov = has_value(e, "objectClass", "provider") || has_value(e, "providerName", NULL);
        if (!prov) {
            const char *u = first_value(e, "LDIFLocationURL");
            if (u != NULL && d->root_url == NULL)
                d->root_url = xstrdup(u);
            continue;
        }
        pec_provider *p;
        if (provider_from(e, &p, err, errsz) == -1)
            return -1;
        g_ptr_array_add(d->providers, p);
        if (index_provider(d, p, err, errsz) == -1)
            return -1;
    }
    return 0;
}

pec_directory *pec_directory_parse(const void *ldif, size_t len, char *err, size_t errsz)
{
    pec_directory *d = xcalloc(1, sizeof *d);
    d->providers = g_ptr_array_new();
    d->by_domain = g_hash_table_new(g_str_hash, g_str_equal);
    d->by_hash = g_hash_table_new(g_str_hash, g_str_equal);
    if (pec_ldif_read(ldif, len, &d->entries, &d->n_entries, err, errsz) == -1 ||
        build(d, err, errsz) == -1) {
        pec_directory_free(d);
        return NULL;
    }
    return d;
}

size_t pec_directory_count(const pec_directory *d) { return d->providers->len; }
size_t pec_directory_entries(const pec_directory *d) { return d->n_entries; }
const char *pec_directory_root_url(const pec_directory *d) { return d->root_url; }

const pec_provider *pec_directory_provider(const pec_directory *d, size_t i)
{
    return i < d->providers->len ? g_ptr_array_index(d->providers, i) : NULL;
}

const pec_provider *pec_directory_by_domain(const pec_directory *d, const char *domain)
{
    char *k = g_ascii_strdown(domain, -1);
    const pec_provider *p = g_hash_table_lookup(d->by_domain, k);
    g_free(k);
    return p;
}

const pec_provider *pec_directory_by_hash(const pec_directory *d, const char *sha1hex)
{
    char *k = g_ascii_strdown(sha1hex, -1);
    const pec_provider *p = g_hash_table_lookup(d->by_hash, k);
    g_free(k);
    return p;
}

const char *pec_directory_receipt_for_hash(const pec_directory *d, const char *sha1hex)
{
    const pec_provider *p = pec_directory_by_hash(d, sha1hex);
    return p ? p->receipt : NULL;
}

int pec_directory_add_to_trust(const pec_directory *d, pec_trust *t)
{
    int n = 0;
    for (guint i = 0; i < d->providers->len; i++) {
        const pec_provider *p = g_ptr_array_index(d->providers, i);
        for (size_t k = 0; k < p->n_hashes; k++)
            if (pec_trust_add_cert_hash(t, p->hashes[k]) == 0)
                n++;
    }
    return n;
}

char **pec_directory_crl_urls(const pec_directory *d)
{
    char **v = NULL;
    size_t n = 0;
    for (guint i = 0; i < d->providers->len; i++) {
        const pec_provider *p = g_ptr_array_index(d->providers, i);
        for (size_t k = 0; k < p->n_crl_urls; k++)
            strv_add(&v, &n, p->crl_urls[k]);
    }
    v = xrealloc(v, (n + 1) * sizeof *v);
    v[n] = NULL;
    return v;
}

void pec_strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

int pec_directory_to_ldif(const pec_directory *d, pec_buf *out, char *err, size_t errsz)
{
    mime_buf b = {0};
    int rc = mime_buf_adds(&b, "version: 1\n\n");
    for (size_t i = 0; rc == 0 && i < d->n_entries; i++)
        rc = pec_ldif_write_entry(&b, &d->entries[i]);
    if (rc != 0) {
        mime_buf_free(&b);
        return pec_err(err, errsz, "out of memory writing LDIF");
    }
    pec_buf_take(out, &b);
    return 0;
}

void pec_directory_free(pec_directory *d)
{
    if (d == NULL)
        return;
    for (guint i = 0; i < d->providers->len; i++)
        provider_free(g_ptr_array_index(d->providers, i));
    g_ptr_array_free(d->providers, TRUE);
    g_hash_table_destroy(d->by_domain);
    g_hash_table_destroy(d->by_hash);
    pec_ldif_entries_free(d->entries, d->n_entries);
    free(d->root_url);
    free(d);
}
