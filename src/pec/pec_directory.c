/*
 * pec_directory.c - the providers' directory (RFC 6109 §4.5) in memory, read
 * from LDIF (RFC 2849): who the providers are (providerName), the domains
 * each manages (managedDomains), where their receipts go (mailReceipt), and
 * the SHA-1 hashes of their signing certificates (providerCertificateHash,
 * or computed from providerCertificate;binary).  Searches are
 * case-insensitive (§2.2.1; digest D6).  An LDAP source (issue 7) fills the
 * same model.
 */
#include "pec/pec.h"
#include "pec_internal.h"

#include <glib.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct pec_directory {
    GPtrArray *providers;          /* pec_provider* */
    GHashTable *by_domain;         /* lower-case domain -> pec_provider* */
    GHashTable *by_hash;           /* lower-case sha1 hex -> pec_provider* */
};

/* ---- RFC 2849 reader ------------------------------------------------------ */

/* Calls cb for every attribute of every entry: attr (options removed, e.g.
 * "providerCertificate"), the value (base64-decoded for "::"), and whether a
 * new entry starts.  Returns 0, or -1 with the line of the first error. */
typedef int (*ldif_cb)(void *arg, bool new_entry, const char *attr, const unsigned char *val,
                       size_t vlen);

static int ldif_line(GString *line, bool *new_entry, ldif_cb cb, void *arg)
{
    if (line->len == 0 || line->str[0] == '#')
        return 0;
    char *colon = strchr(line->str, ':');
    if (colon == NULL || colon == line->str)
        return -1;
    *colon = '\0';
    char *semi = strchr(line->str, ';');
    if (semi)
        *semi = '\0';
    bool b64 = colon[1] == ':';
    if (colon[1] == '<')
        return 0;   /* URL values are not fetched */
    char *val = colon + (b64 ? 2 : 1);
    while (*val == ' ')
        val++;
    int r;
    if (b64) {
        gsize n = 0;
        guchar *raw = g_base64_decode(val, &n);
        if (raw == NULL || (n == 0 && *val != '\0')) {
            g_free(raw);
            return -1;
        }
        r = cb(arg, *new_entry, line->str, raw, n);
        g_free(raw);
    } else {
        r = cb(arg, *new_entry, line->str, (const unsigned char *)val, strlen(val));
    }
    *new_entry = false;
    return r;
}

static int ldif_parse(const char *p, size_t len, ldif_cb cb, void *arg, int *bad_line)
{
    const char *end = p + len;
    GString *line = g_string_new(NULL);
    bool new_entry = true;
    int lineno = 0, start = 0, rc = 0;
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        if (n && p[n - 1] == '\r')
            n--;
        lineno++;
        if (n > 0 && p[0] == ' ') {
            g_string_append_len(line, p + 1, (gssize)n - 1);   /* a folded line */
        } else {
            if (ldif_line(line, &new_entry, cb, arg) == -1) {
                rc = -1;
                *bad_line = start;
            }
            g_string_assign(line, "");
            if (n == 0)
                new_entry = true;   /* a blank line ends the entry */
            else
                g_string_append_len(line, p, (gssize)n);
            start = lineno;
        }
        p = nl ? nl + 1 : end;
    }
    if (rc == 0 && ldif_line(line, &new_entry, cb, arg) == -1) {
        rc = -1;
        *bad_line = start;
    }
    g_string_free(line, TRUE);
    return rc;
}

/* ---- the model ------------------------------------------------------------- */

static void provider_free(pec_provider *p)
{
    free(p->name);
    free(p->receipt);
    for (size_t i = 0; i < p->n_domains; i++)
        free(p->domains[i]);
    free(p->domains);
    for (size_t i = 0; i < p->n_hashes; i++)
        free(p->hashes[i]);
    free(p->hashes);
    free(p);
}

struct build {
    pec_directory *d;
    pec_provider *cur;             /* the entry being read, if a provider */
    bool is_provider;
};

static void add_str(char ***arr, size_t *n, const char *s)
{
    *arr = realloc(*arr, (*n + 1) * sizeof **arr);
    (*arr)[(*n)++] = g_ascii_strdown(s, -1);
}

static int on_attr(void *arg, bool new_entry, const char *attr, const unsigned char *val,
                   size_t vlen)
{
    struct build *b = arg;
    if (new_entry) {
        b->cur = calloc(1, sizeof *b->cur);
        g_ptr_array_add(b->d->providers, b->cur);
    }
    char *v = g_strndup((const char *)val, vlen);
    g_strstrip(v);
    if (strcasecmp(attr, "providerName") == 0) {
        free(b->cur->name);
        b->cur->name = strdup(v);
    } else if (strcasecmp(attr, "mailReceipt") == 0) {
        free(b->cur->receipt);
        b->cur->receipt = strdup(v);
    } else if (strcasecmp(attr, "managedDomains") == 0) {
        add_str(&b->cur->domains, &b->cur->n_domains, v);
    } else if (strcasecmp(attr, "providerCertificateHash") == 0) {
        add_str(&b->cur->hashes, &b->cur->n_hashes, v);
    } else if (strcasecmp(attr, "providerCertificate") == 0) {
        unsigned char md[SHA_DIGEST_LENGTH];
        char hex[41];
        SHA1(val, vlen, md);
        pec_hex(md, sizeof md, hex);
        add_str(&b->cur->hashes, &b->cur->n_hashes, hex);
    }
    g_free(v);
    return 0;
}

pec_directory *pec_directory_parse(const void *ldif, size_t len, char *err, size_t errsz)
{
    pec_directory *d = calloc(1, sizeof *d);
    d->providers = g_ptr_array_new();
    d->by_domain = g_hash_table_new(g_str_hash, g_str_equal);
    d->by_hash = g_hash_table_new(g_str_hash, g_str_equal);
    struct build b = {.d = d};
    int bad = 0;
    if (ldif_parse(ldif, len, on_attr, &b, &bad) == -1) {
        pec_err(err, errsz, "LDIF: line %d is not 'attribute: value' or has bad base64", bad);
        pec_directory_free(d);
        return NULL;
    }
    /* keep provider entries only (those with a providerName) */
    GPtrArray *keep = g_ptr_array_new();
    for (guint i = 0; i < d->providers->len; i++) {
        pec_provider *p = g_ptr_array_index(d->providers, i);
        if (p->name == NULL) {
            provider_free(p);
            continue;
        }
        g_ptr_array_add(keep, p);
        for (size_t k = 0; k < p->n_domains; k++)
            g_hash_table_insert(d->by_domain, p->domains[k], p);
        for (size_t k = 0; k < p->n_hashes; k++)
            g_hash_table_insert(d->by_hash, p->hashes[k], p);
    }
    g_ptr_array_free(d->providers, TRUE);
    d->providers = keep;
    return d;
}

size_t pec_directory_count(const pec_directory *d) { return d->providers->len; }

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

void pec_directory_free(pec_directory *d)
{
    if (d == NULL)
        return;
    for (guint i = 0; i < d->providers->len; i++)
        provider_free(g_ptr_array_index(d->providers, i));
    g_ptr_array_free(d->providers, TRUE);
    g_hash_table_destroy(d->by_domain);
    g_hash_table_destroy(d->by_hash);
    free(d);
}
