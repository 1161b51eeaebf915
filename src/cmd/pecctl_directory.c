/*
 * pecctl_directory.c - the providers' directory (RFC 6109 §4.5) from the
 * command line; the source is [pec] directory of the configuration.
 *
 *   pecctl -c CONF directory list            providers: name, unit, domains,
 *                                            mailReceipt, certificate hashes, CRLs
 *   pecctl -c CONF directory export          the directory as LDIF on stdout
 *   pecctl -c CONF directory import FILE     check FILE and install it: as the
 *                                            directory file (file: source) and
 *                                            as pecd's cached copy
 *   --cache (list, export)                   read pecd's cached copy instead
 *
 * Exit: 0 done, 1 the source or the file is unusable (reason on stderr),
 * 2 usage.  A running pecd takes an import at its next refresh or SIGHUP.
 */
#include "lib/config.h"
#include "lib/lib.h"
#include "pec/pec.h"
#include "pec/pec_dir.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void dir_usage(FILE *f)
{
    fprintf(f, "usage: pecctl -c CONF directory list [--cache]\n"
               "       pecctl -c CONF directory export [--cache]\n"
               "       pecctl -c CONF directory import FILE.ldif\n");
}

/* The directory from the configured source (or pecd's cache). */
static pec_directory *load(const struct config *cfg, bool cache, pec_buf *text)
{
    char cdir[4096], err[1024], *pw = NULL;
    struct pec_dir_conf dc;
    if (pec_dir_conf_init(&dc, cfg, cdir, &pw, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl directory: %s\n", err);
        return NULL;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/directory.ldif", cdir);
    if (cache)
        dc.source = path;
    int rc = pec_dir_fetch(&dc, text, err, sizeof err);
    free(pw);
    if (rc == -1) {
        fprintf(stderr, "pecctl directory: %s\n", err);
        return NULL;
    }
    pec_directory *d = pec_directory_parse(text->data, text->len, err, sizeof err);
    if (d == NULL)
        fprintf(stderr, "pecctl directory: %s: %s\n", dc.source, err);
    return d;
}

static void print_list(const char *label, char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("  %-10s %s\n", i ? "" : label, v[i]);
}

static int cmd_list(const struct config *cfg, bool cache)
{
    pec_buf text = {0};
    pec_directory *d = load(cfg, cache, &text);
    pec_buf_free(&text);
    if (d == NULL)
        return 1;
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
    pec_directory_free(d);
    return 0;
}

static int cmd_export(const struct config *cfg, bool cache)
{
    pec_buf text = {0}, out = {0};
    pec_directory *d = load(cfg, cache, &text);
    pec_buf_free(&text);
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

static int cmd_import(const struct config *cfg, const char *file)
{
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
    snprintf(path, sizeof path, "%s/directory.ldif", cdir);
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

int pecctl_directory_main(struct config *cfg, int argc, char **argv)
{
    if (argc < 2) {
        dir_usage(stderr);
        return 2;
    }
    if (cfg->pec_directory == NULL) {
        fprintf(stderr, "pecctl directory: %s has no [pec] directory\n", cfg->path);
        return 1;
    }
    const char *sub = argv[1];
    bool cache = argc == 3 && strcmp(argv[2], "--cache") == 0;
    if (strcmp(sub, "list") == 0 && (argc == 2 || cache))
        return cmd_list(cfg, cache);
    if (strcmp(sub, "export") == 0 && (argc == 2 || cache))
        return cmd_export(cfg, cache);
    if (strcmp(sub, "import") == 0 && argc == 3)
        return cmd_import(cfg, argv[2]);
    dir_usage(stderr);
    return 2;
}
