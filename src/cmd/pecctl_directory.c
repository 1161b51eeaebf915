/*
 * pecctl_directory.c - the providers' directory (RFC 6109 §4.5) from the
 * command line; the source is [pec] directory of the configuration.
 *
 *   pecctl -c CONF directory list            providers: name, unit, domains,
 *                                            mailReceipt, certificate hashes, CRLs;
 *                                            then the cached copy and its age
 *   pecctl -c CONF directory export          the directory as LDIF on stdout
 *   pecctl -c CONF directory import FILE     check FILE and install it: as the
 *                                            directory file (file: source) and
 *                                            as pecd's cached copy (a .p7m is
 *                                            verified and kept as it is)
 *   pecctl -c CONF directory refresh         fetch the source now, print what
 *                                            changed against the cached copy,
 *                                            write the new copy into the cache
 *   pecctl -c CONF directory publish OUT.p7m our own record, signed (§4.5)
 *   --cache (list, export)                   read pecd's cached copy instead
 *
 * refresh and pecd: pecd holds the copy in use and the cache
 * (DATA_DIR/directory/).  refresh writes the cache atomically (the .p7m as
 * received, then its LDIF) and does not signal pecd; pecd takes the new
 * copy at its next refresh or SIGHUP: from the source, or, when the source
 * fails there, from this cache file, verified again (pec_dirsnap.c).
 *
 * Exit: 0 done, 1 the source or the file is unusable (reason on stderr),
 * 2 usage.  A running pecd takes an import at its next refresh or SIGHUP.
 */
#include "lib/config.h"
#include "lib/domains.h"
#include "keys/keys.h"
#include "lib/lib.h"
#include "pec/pec.h"
#include "pec/pec_dir.h"
#include "pec/pec_dirp7m.h"

#include <errno.h>
#include <glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

static void dir_usage(FILE *f)
{
    fprintf(f, "usage: pecctl -c CONF directory list [--cache] [--json]\n"
               "       pecctl -c CONF directory export [--cache]\n"
               "       pecctl -c CONF directory import FILE.ldif|FILE.p7m\n"
               "       pecctl -c CONF directory refresh\n"
               "       pecctl -c CONF directory publish OUT.p7m\n");
}

struct dirctx {
    struct pec_dir_conf dc;
    char cdir[4096];
    char *pw;
};

static int ctx_init(const struct config *cfg, struct dirctx *x, const char *what)
{
    char err[1024];
    memset(x, 0, sizeof *x);
    if (pec_dir_conf_init(&x->dc, cfg, x->cdir, &x->pw, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl directory %s: %s\n", what, err);
        return -1;
    }
    return 0;
}

static void ctx_free(struct dirctx *x)
{
    if (x->pw)
        explicit_bzero(x->pw, strlen(x->pw));
    free(x->pw);
}

static void fmt_time(time_t t, char *buf, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "12 h" or "3 d 4 h": a copy's age for people. */
static void fmt_age(time_t age, char *buf, size_t n)
{
    if (age < 0)
        age = 0;
    if (age >= 86400)
        snprintf(buf, n, "%lld d %lld h", (long long)(age / 86400), (long long)(age % 86400 / 3600));
    else if (age >= 3600)
        snprintf(buf, n, "%lld h %lld min", (long long)(age / 3600), (long long)(age % 3600 / 60));
    else
        snprintf(buf, n, "%lld min", (long long)(age / 60));
}

/* The directory from the configured source (or pecd's cache). */
static pec_directory *load(const struct config *cfg, bool cache, pec_dir_copy *cp, time_t *fetched)
{
    struct dirctx x;
    char err[1024];
    memset(cp, 0, sizeof *cp);
    *fetched = 0;
    if (ctx_init(cfg, &x, cache ? "--cache" : "") == -1)
        return NULL;
    int rc = cache ? pec_dir_cache_read(&x.dc, cp, fetched, err, sizeof err)
                   : pec_dir_fetch_copy(&x.dc, cp, err, sizeof err);
    pec_directory *d = NULL;
    if (rc == -1)
        fprintf(stderr, "pecctl directory: %s\n", err);
    else if ((d = pec_dir_parse(&x.dc, &cp->ldif, err, sizeof err)) == NULL)
        fprintf(stderr, "pecctl directory: %s: %s\n", cache ? "the cached copy" : x.dc.source,
                err);
    ctx_free(&x);
    return d;
}

static void print_list(const char *label, char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("  %-10s %s\n", i ? "" : label, v[i]);
}

/* The cached copy pecd keeps (and uses when the source is down) and its
 * age: RFC 6109 §4.5 wants the local copy updated daily. */
static void print_cache_age(const struct config *cfg, FILE *f)
{
    struct dirctx x;
    if (ctx_init(cfg, &x, "list") == -1)
        return;
    char path[PATH_MAX], when[32], age[64];
    pec_dir_cache_path(&x.dc, path, sizeof path);
    ctx_free(&x);
    struct stat st;
    if (stat(path, &st) == -1) {
        fprintf(f, "cached copy: none (%s)\n", path);
        return;
    }
    time_t a = time(NULL) - st.st_mtime;
    fmt_time(st.st_mtime, when, sizeof when);
    fmt_age(a, age, sizeof age);
    fprintf(f, "cached copy: %s, fetched %s, %s old%s\n", path, when, age,
           a > PEC_DIR_STALE ? ": WARNING older than 48 hours (RFC 6109 §4.5 asks for a daily "
                               "update)"
                             : "");
}

static void print_signer(const pec_dir_copy *cp)
{
    if (cp->p7m.len == 0)
        return;
    char when[32] = "(no signing time)", until[32];
    if (cp->info.signing_time)
        fmt_time(cp->info.signing_time, when, sizeof when);
    fmt_time(cp->info.signer_not_after, until, sizeof until);
    printf("signed by %s at %s (certificate %s, valid until %s)\n", cp->info.signer_subject,
           when, cp->info.signer_sha1, until);
}

static void json_list(const char *key, char **v, size_t n)
{
    printf(",\"%s\":[", key);
    for (size_t i = 0; i < n; i++) {
        if (i)
            putchar(',');
        json_fput(stdout, v[i]);
    }
    putchar(']');
}

/* directory list --json: {"providers": [{name, unit, receipt, domains, hashes,
 * crls, ldif}], "count", "records", "signer"} */
static void list_json(const pec_directory *d, const pec_dir_copy *cp)
{
    fputs("{\"providers\":[", stdout);
    for (size_t i = 0; i < pec_directory_count(d); i++) {
        const pec_provider *p = pec_directory_provider(d, i);
        fputs(i ? ",{\"name\":" : "{\"name\":", stdout);
        json_fput(stdout, p->name);
        fputs(",\"unit\":", stdout);
        json_fput(stdout, p->unit);
        fputs(",\"receipt\":", stdout);
        json_fput(stdout, p->receipt);
        json_list("domains", p->domains, p->n_domains);
        json_list("hashes", p->hashes, p->n_hashes);
        json_list("crls", p->crl_urls, p->n_crl_urls);
        fputs(",\"ldif\":", stdout);
        json_fput(stdout, p->ldif_url);
        putchar('}');
    }
    printf("],\"count\":%zu,\"records\":%zu,\"signer\":", pec_directory_count(d),
           pec_directory_entries(d));
    json_fput(stdout, cp->p7m.len ? cp->info.signer_subject : NULL);
    fputs("}\n", stdout);
}

static int cmd_list(const struct config *cfg, bool cache, bool json)
{
    pec_dir_copy cp;
    time_t fetched;
    pec_directory *d = load(cfg, cache, &cp, &fetched);
    if (d == NULL) {
        pec_dir_copy_free(&cp);
        print_cache_age(cfg, stderr);
        return 1;
    }
    if (json) {
        list_json(d, &cp);
        pec_dir_copy_free(&cp);
        pec_directory_free(d);
        return 0;
    }
    for (size_t i = 0; i < pec_directory_count(d); i++) {
        const pec_provider *p = pec_directory_provider(d, i);
        printf("%s%s%s%s\n", p->name, p->unit ? " (unit " : "", p->unit ? p->unit : "",
               p->unit ? ")" : "");
        printf("  %-10s %s\n", "receipt", p->receipt);
        print_list("domains", p->domains, p->n_domains);
        print_list("hashes", p->hashes, p->n_hashes);
        print_list("crls", p->crl_urls, p->n_crl_urls);
        if (p->ldif_url)
            printf("  %-10s %s\n", "ldif", p->ldif_url);
    }
    printf("%zu providers, %zu records\n", pec_directory_count(d), pec_directory_entries(d));
    print_signer(&cp);
    print_cache_age(cfg, stdout);
    pec_dir_copy_free(&cp);
    pec_directory_free(d);
    return 0;
}

static int cmd_export(const struct config *cfg, bool cache)
{
    pec_dir_copy cp;
    pec_buf out = {0};
    time_t fetched;
    pec_directory *d = load(cfg, cache, &cp, &fetched);
    pec_dir_copy_free(&cp);
    char err[256];
    if (d == NULL)
        return 1;
    int rc = pec_directory_to_ldif(d, &out, err, sizeof err);
    pec_directory_free(d);
    if (rc == 0 && fwrite(out.data, 1, out.len, stdout) != out.len)
        rc = -1;
    pec_buf_free(&out);
    if (rc != 0 || fflush(stdout) != 0) {
        fprintf(stderr, "pecctl directory export: write error\n");
        return 1;
    }
    return 0;
}

static int install(const char *path, const void *data, size_t len)
{
    if (fs_write_atomic(path, data, len, 0644) == -1) {
        fprintf(stderr, "pecctl directory import: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    printf("installed %s\n", path);
    return 0;
}

/* import FILE.p7m: verified as pecd would, kept as it is. */
static int import_p7m(const struct config *cfg, const char *file)
{
    struct dirctx x;
    if (ctx_init(cfg, &x, "import") == -1)
        return 1;
    pec_dir_copy cp = {0};
    char err[1024], *data;
    size_t len;
    int rc = 1;
    if (fs_read_file(file, &data, &len, PEC_P7M_MAX) == -1) {
        fprintf(stderr, "pecctl directory import: %s: %s\n", file, strerror(errno));
        goto out;
    }
    cp.p7m.data = (unsigned char *)data;
    cp.p7m.len = len;
    if (pec_dir_p7m_verify(&x.dc, data, len, &cp.ldif, &cp.info, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl directory import: %s: signature: %s\n", file, err);
        goto out;
    }
    pec_directory *d = pec_dir_parse(&x.dc, &cp.ldif, err, sizeof err);
    if (d == NULL) {
        fprintf(stderr, "pecctl directory import: %s: %s\n", file, err);
        goto out;
    }
    printf("%s: %zu providers, %zu records\n", file, pec_directory_count(d),
           pec_directory_entries(d));
    print_signer(&cp);
    pec_directory_free(d);
    if (!pec_dir_is_https(cfg->pec_directory) && strcmp(cfg->pec_directory, file) != 0 &&
        install(cfg->pec_directory, cp.p7m.data, cp.p7m.len) == -1)
        goto out;
    if (pec_dir_cache_write(&x.dc, &cp, 0644, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl directory import: %s\n", err);
        goto out;
    }
    printf("installed %s/%s and %s\n", x.cdir, PEC_DIR_CACHE_P7M, PEC_DIR_CACHE_LDIF);
    rc = 0;
out:
    pec_dir_copy_free(&cp);
    ctx_free(&x);
    return rc;
}

static int cmd_import(const struct config *cfg, const char *file)
{
    size_t fl = strlen(file);
    bool p7m = fl >= 4 && strcasecmp(file + fl - 4, ".p7m") == 0;
    if (pec_dir_is_p7m(cfg->pec_directory) != p7m) {
        fprintf(stderr, "pecctl directory import: the source %s is %s: import a %s file\n",
                cfg->pec_directory, p7m ? "LDIF" : "signed", p7m ? ".ldif" : ".p7m");
        return 1;
    }
    if (p7m)
        return import_p7m(cfg, file);
    char *data, err[1024];
    size_t len;
    if (fs_read_file(file, &data, &len, PEC_LDIF_MAX) == -1) {
        fprintf(stderr, "pecctl directory import: %s: %s\n", file, strerror(errno));
        return 1;
    }
    pec_directory *d = pec_directory_parse(data, len, err, sizeof err);
    if (d == NULL || pec_directory_count(d) == 0) {
        fprintf(stderr, "pecctl directory import: %s: %s\n", file,
                d ? "no provider record" : err);
        pec_directory_free(d);
        free(data);
        return 1;
    }
    /* written back in our own form: what pecd will read is what we checked */
    pec_buf out = {0};
    int rc = pec_directory_to_ldif(d, &out, err, sizeof err);
    printf("%s: %zu providers, %zu records\n", file, pec_directory_count(d),
           pec_directory_entries(d));
    pec_directory_free(d);
    free(data);
    char cdir[4096], path[PATH_MAX];
    snprintf(cdir, sizeof cdir, "%s/directory", cfg->data_dir);
    snprintf(path, sizeof path, "%s/%s", cdir, PEC_DIR_CACHE_LDIF);
    if (rc == 0 && !pec_dir_is_ldap(cfg->pec_directory))
        rc = install(cfg->pec_directory, out.data, out.len);
    if (rc == 0 && fs_mkdirs(cdir, 0700) == -1)
        rc = -1;
    if (rc == 0)
        rc = install(path, out.data, out.len);
    if (rc == 0 && pec_dir_is_ldap(cfg->pec_directory))
        printf("the source is %s: load the file there too (ldapadd, docs/directory.md)\n",
               cfg->pec_directory);
    pec_buf_free(&out);
    return rc == 0 ? 0 : 1;
}

/* ---- refresh ----------------------------------------------------------------------- */

static int cmd_refresh(const struct config *cfg)
{
    struct dirctx x;
    if (ctx_init(cfg, &x, "refresh") == -1)
        return 1;
    pec_dir_copy cp, old;
    time_t fetched = 0;
    char err[1200], path[PATH_MAX], age[64] = "";
    pec_dir_cache_path(&x.dc, path, sizeof path);
    /* the copy pecd keeps: the one the changes are counted from */
    pec_directory *od = NULL;
    char olderr[1200] = "";
    if (pec_dir_cache_read(&x.dc, &old, &fetched, olderr, sizeof olderr) == 0) {
        od = pec_dir_parse(&x.dc, &old.ldif, olderr, sizeof olderr);
        fmt_age(time(NULL) - fetched, age, sizeof age);
    }
    pec_dir_copy_free(&old);
    int rc = 1;
    pec_directory *nd = NULL;
    if (pec_dir_fetch_copy(&x.dc, &cp, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl directory refresh: %s\n", err);
        goto failed;
    }
    if ((nd = pec_dir_parse(&x.dc, &cp.ldif, err, sizeof err)) == NULL) {
        fprintf(stderr, "pecctl directory refresh: %s: %s\n", x.dc.source, err);
        pec_dir_copy_free(&cp);
        goto failed;
    }
    pec_buf diff = {0};
    size_t changes = 0;
    if (pec_directory_diff(od, nd, &diff, &changes) == -1) {
        fprintf(stderr, "pecctl directory refresh: out of memory\n");
        pec_dir_copy_free(&cp);
        goto failed;
    }
    printf("%s: %zu providers\n", x.dc.source, pec_directory_count(nd));
    if (od == NULL)
        printf("no usable cached copy before (%s)\n", olderr);
    print_signer(&cp);
    if (diff.len)
        fwrite(diff.data, 1, diff.len, stdout);
    printf("%zu change%s since the cached copy\n", changes, changes == 1 ? "" : "s");
    pec_buf_free(&diff);
    if (pec_dir_cache_write(&x.dc, &cp, 0644, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl directory refresh: %s\n", err);
        pec_dir_copy_free(&cp);
        goto failed;
    }
    pec_dir_copy_free(&cp);
    printf("cached copy written: %s (pecd takes it at its next refresh or SIGHUP)\n", path);
    rc = 0;
    goto out;
failed:
    if (od)
        fprintf(stderr, "pecctl directory refresh: the cached copy %s (%zu providers, "
                        "fetched %s ago) stays in use\n", path, pec_directory_count(od), age);
    else
        fprintf(stderr, "pecctl directory refresh: no usable cached copy: %s\n", olderr);
out:
    pec_directory_free(od);
    pec_directory_free(nd);
    ctx_free(&x);
    return rc;
}

/* ---- publish ----------------------------------------------------------------------- */

/* The first certificate of a PEM file, as DER. */
static int first_cert(const char *path, pec_buf *der, time_t *not_after, char *err, size_t errsz)
{
    char *pem;
    size_t len;
    if (fs_read_file(path, &pem, &len, 1u << 20) == -1)
        return snprintf(err, errsz, "%s: %s", path, strerror(errno)), -1;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    free(pem);
    unsigned char *buf = NULL;
    int n = x ? i2d_X509(x, &buf) : -1;
    if (x) {
        struct tm tm;
        *not_after = ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1 ? timegm(&tm) : 0;
    }
    X509_free(x);
    ERR_clear_error();
    if (n <= 0)
        return snprintf(err, errsz, "%s: no PEM certificate", path), -1;
    der->data = xmalloc((size_t)n);
    memcpy(der->data, buf, (size_t)n);
    der->len = (size_t)n;
    OPENSSL_free(buf);
    return 0;
}

/* The signer of PEC messages, through the one loader of src/keys (a PEM
 * file or a hardware module's key); the module stays open until the end. */
static struct keys_hsm *publish_hsm;

static pec_signer *load_signer(const struct config *cfg, char *err, size_t errsz)
{
    return keys_load_pec_signer(cfg, &publish_hsm, err, errsz);
}

static int cmd_publish(const struct config *cfg, const char *out)
{
    if (cfg->pec_signing_key == NULL || cfg->pec_signing_cert == NULL) {
        fprintf(stderr, "pecctl directory publish: [pec] signing_key and signing_certificate "
                        "are needed\n");
        return 1;
    }
    char err[1024];
    pec_buf certs[2] = {{0}, {0}};
    time_t until[2] = {0, 0};
    const char *files[2] = {cfg->pec_signing_cert, cfg->pec_signing_cert_next};
    size_t n = 0;
    int rc = 1;
    pec_buf ldif = {0}, der = {0};
    pec_signer *s = NULL;
    const char **names = NULL;    /* managedDomains: every local domain */
    size_t ndomains = 0;
    for (size_t i = 0; i < 2 && files[i]; i++) {
        if (first_cert(files[i], &certs[n], &until[n], err, sizeof err) == -1) {
            fprintf(stderr, "pecctl directory publish: %s\n", err);
            goto out;
        }
        if (n == 1 && certs[1].len == certs[0].len &&
            memcmp(certs[1].data, certs[0].data, certs[0].len) == 0) {
            pec_buf_free(&certs[1]);   /* the same certificate twice */
            continue;
        }
        n++;
    }
    const struct domain **all = domains_sorted(cfg->domains, &ndomains);
    names = g_new(const char *, ndomains + 1);
    for (size_t i = 0; i < ndomains; i++)
        names[i] = all[i]->name;
    g_free(all);
    pec_dir_record r = {
        .name = cfg->name, .receipt = cfg->pec_service_address,
        .domains = names, .n_domains = ndomains,
        .certs = certs, .n_certs = n, .location_url = cfg->pec_dir_location_url,
        .description = cfg->pec_dir_description};
    if (pec_dir_record_ldif(&r, &ldif, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl directory publish: %s\n", err);
        goto out;
    }
    if ((s = load_signer(cfg, err, sizeof err)) == NULL ||
        pec_dir_p7m_sign(s, ldif.data, ldif.len, &der, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl directory publish: %s\n", err);
        goto out;
    }
    if (strcmp(out, "-") == 0) {
        if (fwrite(der.data, 1, der.len, stdout) != der.len || fflush(stdout) != 0) {
            fprintf(stderr, "pecctl directory publish: write error\n");
            goto out;
        }
        rc = 0;
        goto out;
    }
    if (fs_write_atomic(out, der.data, der.len, 0644) == -1) {
        fprintf(stderr, "pecctl directory publish: cannot write %s: %s\n", out, strerror(errno));
        goto out;
    }
    printf("%s: the record of %s (%zu domain%s), signed, %zu bytes\n", out, cfg->name,
           ndomains, ndomains == 1 ? "" : "s", der.len);
    for (size_t i = 0; i < n; i++) {
        char when[32], hex[2 * SHA_DIGEST_LENGTH + 1];
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1(certs[i].data, certs[i].len, md);
        for (size_t k = 0; k < sizeof md; k++)
            snprintf(hex + 2 * k, 3, "%02x", md[k]);
        fmt_time(until[i], when, sizeof when);
        printf("  providerCertificateHash %s, valid until %s (%s)\n", hex, when,
               i == 0 ? "signing_certificate" : "signing_certificate_next");
    }
    if (cfg->pec_dir_location_url == NULL)
        printf("  note: no [pec] directory_location_url: the record names no LDIFLocationURL\n");
    else
        printf("  serve it at %s (docs/directory.md)\n", cfg->pec_dir_location_url);
    rc = 0;
out:
    g_free(names);
    pec_signer_free(s);
    keys_hsm_close(publish_hsm);
    publish_hsm = NULL;
    pec_buf_free(&ldif);
    pec_buf_free(&der);
    for (size_t i = 0; i < 2; i++)
        pec_buf_free(&certs[i]);
    return rc;
}

int pecctl_directory_main(struct config *cfg, int argc, char **argv)
{
    if (argc < 2) {
        dir_usage(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "publish") == 0) {
        if (argc != 3) {
            dir_usage(stderr);
            return 2;
        }
        return cmd_publish(cfg, argv[2]);
    }
    if (cfg->pec_directory == NULL) {
        fprintf(stderr, "pecctl directory: %s has no [pec] directory\n", cfg->path);
        return 1;
    }
    bool cache = argc == 3 && strcmp(argv[2], "--cache") == 0;
    if (strcmp(sub, "list") == 0) {
        bool json = false, ok = true;
        cache = false;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--json") == 0)
                json = true;
            else if (strcmp(argv[i], "--cache") == 0)
                cache = true;
            else
                ok = false;
        }
        if (ok)
            return cmd_list(cfg, cache, json);
    }
    if (strcmp(sub, "export") == 0 && (argc == 2 || cache))
        return cmd_export(cfg, cache);
    if (strcmp(sub, "import") == 0 && argc == 3)
        return cmd_import(cfg, argv[2]);
    if (strcmp(sub, "refresh") == 0 && argc == 2)
        return cmd_refresh(cfg);
    dir_usage(stderr);
    return 2;
}
