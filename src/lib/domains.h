/*
 * domains.h - the local domains: the domains whose mailboxes this provider
 * holds, without a fixed cap, each with the settings an operator may give
 * one customer domain (docs/configuration.md, "[provider] local_domains_file").
 *
 * Built by config_load() from [provider] domain, local_domains and
 * local_domains_file; a reload builds a new one with the new configuration.
 * Read-only once built: any thread may look up.  Names are compared in
 * lower case.
 */
#ifndef PEC_DOMAINS_H
#define PEC_DOMAINS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DOMAIN_INHERIT UINT64_MAX    /* a limit not set: [limits] applies */

struct domain {
    char *name;                      /* lower case */
    const char *file;                /* where it was declared (the table's copy) */
    unsigned line;                   /* 0: pecd.conf's [provider] */
    uint64_t messages_per_hour;      /* per user of the domain; DOMAIN_INHERIT */
    uint64_t recipients_per_hour;
    char *receipt;                   /* completa|breve|sintetica when X-TipoRicevuta is absent */
    char *callouts;                  /* a [callouts] list for the domain's addresses */
    char *tls_cert, *tls_key;        /* the certificate SNI chooses for the domain's names */
};

struct domains;

struct domains *domains_new(void);
void domains_free(struct domains *t);

/* Adds a domain without settings (pecd.conf's domain and local_domains); an
 * existing one is kept.  -1 with err when the name is not a domain. */
int domains_add(struct domains *t, const char *name, char *err, size_t errlen);

/* Reads a domains file: one domain a line, then optional KEY=VALUE settings
 * (messages_per_hour, recipients_per_hour, receipt, callouts, tls_certificate,
 * tls_key), '#' comments.  Relative paths are taken from base_dir.  A bad
 * line fails the whole file with "PATH:LINE: reason" in err. */
int domains_load_file(struct domains *t, const char *path, const char *base_dir, char *err,
                      size_t errlen);

/* The domain, case-insensitively; NULL when it is not local. */
const struct domain *domains_get(const struct domains *t, const char *name);

/* The closest domain with a TLS certificate for a host name (SNI): the name
 * itself, else its parent domains in turn; NULL when none has one. */
const struct domain *domains_tls_for(const struct domains *t, const char *host);

size_t domains_count(const struct domains *t);

/* Every domain, sorted by name (g_free the array, not the entries). */
const struct domain **domains_sorted(const struct domains *t, size_t *n);

#endif
