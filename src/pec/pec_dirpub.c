/*
 * pec_dirpub.c - our own record of the providers' directory, as a provider
 * publishes it at its LDIFLocationURL (RFC 6109 §4.5, example §4.5.10), and
 * the differences between two copies of the directory (what `pecctl
 * directory refresh` prints).
 *
 * The record lists every signing certificate given, each with its SHA-1
 * (providerCertificateHash, §4.5.1) next to it: during a renewal the next
 * certificate is published beside the current one, with overlapping
 * validity (§4.5).  The text is read back by pec_directory_parse before it
 * is returned, so what we publish passes the checks every reader makes.
 *
 * Interface: pec_dirp7m.h.  No I/O.
 */
#include "pec/pec_dirp7m.h"
#include "pec_internal.h"

#include <glib.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

/* RFC 4514 §2.4: the value of an RDN with its special characters escaped. */
static int dn_value(mime_buf *b, const char *v)
{
    size_t n = strlen(v);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char c = v[i];
        bool esc = strchr(",+\"\\<>;", c) != NULL || (i == 0 && (c == ' ' || c == '#')) ||
                   (i == n - 1 && c == ' ');
        if (esc)
            rc = mime_buf_add(b, "\\", 1);
        if (rc == 0)
            rc = mime_buf_add(b, &c, 1);
    }
    return rc;
}

static int put(pec_buf *out, const char *attr, const char *v)
{
    return pec_ldif_put(out, attr, v, strlen(v));
}

int pec_dir_record_ldif(const pec_dir_record *r, pec_buf *ldif, char *err, size_t errsz)
{
    ldif->data = NULL;
    ldif->len = 0;
    if (r->name == NULL || r->name[0] == '\0' || r->receipt == NULL || r->n_domains == 0 ||
        r->n_certs == 0)
        return pec_err(err, errsz, "a record needs providerName, mailReceipt, managedDomains "
                                   "and a certificate (§4.5.9)");
    if (r->location_url && g_ascii_strncasecmp(r->location_url, "https://", 8) != 0)
        return pec_err(err, errsz, "LDIFLocationURL %s is not an https:// URL (§4.5.6)",
                       r->location_url);
    mime_buf dn = {0};
    int rc = mime_buf_adds(&dn, "providerName=");
    rc |= dn_value(&dn, r->name);
    rc |= mime_buf_adds(&dn, ",o=postacert");
    pec_buf b = {0};
    rc |= pec_ldif_put(&b, "version", "1", 1);
    rc |= pec_ldif_put(&b, NULL, NULL, 0);
    rc |= pec_ldif_put(&b, "dn", dn.data, dn.len);
    mime_buf_free(&dn);
    rc |= put(&b, "objectclass", "top");
    rc |= put(&b, "objectclass", "provider");
    rc |= put(&b, "providerName", r->name);
    for (size_t i = 0; i < r->n_certs; i++) {
        unsigned char md[SHA_DIGEST_LENGTH];
        char hex[41];
        SHA1(r->certs[i].data, r->certs[i].len, md);
        pec_hex(md, sizeof md, hex);
        rc |= put(&b, "providerCertificateHash", hex);
        rc |= pec_ldif_put(&b, "providerCertificate;binary", r->certs[i].data, r->certs[i].len);
    }
    rc |= put(&b, "mailReceipt", r->receipt);
    if (r->location_url)
        rc |= put(&b, "LDIFLocationURL", r->location_url);
    for (size_t i = 0; i < r->n_domains; i++)
        rc |= put(&b, "managedDomains", r->domains[i]);
    if (r->description)
        rc |= put(&b, "description", r->description);
    rc |= pec_ldif_put(&b, NULL, NULL, 0);
    if (rc != 0) {
        pec_buf_free(&b);
        return pec_err(err, errsz, "out of memory");
    }
    char e2[512];
    pec_directory *d = pec_directory_parse(b.data, b.len, e2, sizeof e2);
    if (d == NULL || pec_directory_count(d) != 1 ||
        pec_directory_provider(d, 0)->n_certs != r->n_certs) {
        pec_directory_free(d);
        pec_buf_free(&b);
        return pec_err(err, errsz, "our record does not pass the directory's checks: %s",
                       d ? "a certificate is not DER X.509" : e2);
    }
    pec_directory_free(d);
    *ldif = b;
    return 0;
}

/* ---- differences ------------------------------------------------------------------ */

static char *label(const pec_provider *p)
{
    return p->unit ? g_strdup_printf("%s (unit %s)", p->name, p->unit) : g_strdup(p->name);
}

/* label -> provider, domain -> label, hash -> label, over every record. */
struct index {
    GHashTable *providers, *domains, *hashes;
};

static void index_build(const pec_directory *d, struct index *x)
{
    x->providers = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    x->domains = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
    x->hashes = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
    for (size_t i = 0; d && i < pec_directory_count(d); i++) {
        const pec_provider *p = pec_directory_provider(d, i);
        g_hash_table_insert(x->providers, label(p), (gpointer)p);
        /* a domain goes to the provider the lookups give (main record first) */
        for (size_t k = 0; k < p->n_domains; k++)
            if (pec_directory_by_domain(d, p->domains[k]) == p)
                g_hash_table_insert(x->domains, p->domains[k], label(p));
        for (size_t k = 0; k < p->n_hashes; k++)
            if (pec_directory_by_hash(d, p->hashes[k]) == p)
                g_hash_table_insert(x->hashes, p->hashes[k], label(p));
    }
}

static void index_free(struct index *x)
{
    g_hash_table_destroy(x->providers);
    g_hash_table_destroy(x->domains);
    g_hash_table_destroy(x->hashes);
}

/* Lines for keys of a (of directory da, in record order) that b lacks or
 * names otherwise: sign '+' (a = new) or '-' (a = old, only the missing). */
static int keys_diff(mime_buf *o, size_t *n, const pec_directory *da, GHashTable *a,
                     GHashTable *b, const char *what, char sign, bool domains)
{
    int rc = 0;
    for (size_t i = 0; da && i < pec_directory_count(da); i++) {
        const pec_provider *p = pec_directory_provider(da, i);
        char **keys = domains ? p->domains : p->hashes;
        size_t nk = domains ? p->n_domains : p->n_hashes;
        for (size_t k = 0; k < nk && rc == 0; k++) {
            const char *la = g_hash_table_lookup(a, keys[k]);
            char *lp = label(p);
            bool mine = la && strcmp(la, lp) == 0;
            g_free(lp);
            if (!mine)
                continue;              /* listed under the record the lookups give */
            const char *lb = g_hash_table_lookup(b, keys[k]);
            if (lb == NULL) {
                rc = mime_buf_addf(o, "%c %s %s (%s)\n", sign, what, keys[k], la);
                ++*n;
            } else if (sign == '+' && strcmp(la, lb) != 0) {
                rc = mime_buf_addf(o, "~ %s %s: %s -> %s\n", what, keys[k], lb, la);
                ++*n;
            }
        }
    }
    return rc;
}

int pec_directory_diff(const pec_directory *old, const pec_directory *cur, pec_buf *out,
                       size_t *changes)
{
    struct index xo, xn;
    index_build(old, &xo);
    index_build(cur, &xn);
    mime_buf o = {0};
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; cur && i < pec_directory_count(cur) && rc == 0; i++) {
        const pec_provider *p = pec_directory_provider(cur, i);
        char *l = label(p);
        const pec_provider *q = g_hash_table_lookup(xo.providers, l);
        if (q == NULL) {
            rc = mime_buf_addf(&o, "+ provider %s\n", l);
            n++;
        } else if (g_ascii_strcasecmp(q->receipt, p->receipt) != 0) {
            rc = mime_buf_addf(&o, "~ mailReceipt %s: %s -> %s\n", l, q->receipt, p->receipt);
            n++;
        }
        g_free(l);
    }
    for (size_t i = 0; old && i < pec_directory_count(old) && rc == 0; i++) {
        char *l = label(pec_directory_provider(old, i));
        if (!g_hash_table_contains(xn.providers, l)) {
            rc = mime_buf_addf(&o, "- provider %s\n", l);
            n++;
        }
        g_free(l);
    }
    if (rc == 0)
        rc = keys_diff(&o, &n, cur, xn.hashes, xo.hashes, "certificate", '+', false);
    if (rc == 0)
        rc = keys_diff(&o, &n, old, xo.hashes, xn.hashes, "certificate", '-', false);
    if (rc == 0)
        rc = keys_diff(&o, &n, cur, xn.domains, xo.domains, "domain", '+', true);
    if (rc == 0)
        rc = keys_diff(&o, &n, old, xo.domains, xn.domains, "domain", '-', true);
    index_free(&xo);
    index_free(&xn);
    if (rc != 0) {
        mime_buf_free(&o);
        return -1;
    }
    pec_buf_take(out, &o);
    *changes = n;
    return 0;
}
