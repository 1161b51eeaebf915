/*
 * pecctl_domain.c - `pecctl -c CONF domain list [--json]`: the local domains
 * as pecd would load them now (pecd.conf's domain and local_domains, and
 * [provider] local_domains_file), with each one's settings.  A mistake in the
 * file is reported as pecd -t reports it (config_load), so the command also
 * checks a file before a reload.
 */
#include "lib/config.h"
#include "lib/domains.h"
#include "lib/lib.h"

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int pecctl_domain_main(struct config *cfg, int argc, char **argv);

static void print_limit(FILE *f, const char *key, uint64_t v)
{
    if (v != DOMAIN_INHERIT)
        fprintf(f, " %s=%" PRIu64, key, v);
}

static void json_limit(const char *key, uint64_t v)
{
    if (v == DOMAIN_INHERIT)
        printf(", \"%s\": null", key);
    else
        printf(", \"%s\": %" PRIu64, key, v);
}

static void json_field(const char *key, const char *v)
{
    printf(", \"%s\": ", key);
    json_fput(stdout, v);
}

int pecctl_domain_main(struct config *cfg, int argc, char **argv)
{
    bool json = argc == 3 && strcmp(argv[2], "--json") == 0;
    if (argc < 2 || strcmp(argv[1], "list") != 0 || (argc == 3 && !json) || argc > 3) {
        fprintf(stderr, "usage: pecctl -c CONF domain list [--json]\n");
        return 2;
    }
    size_t n;
    const struct domain **all = domains_sorted(cfg->domains, &n);
    if (json)
        printf("[");
    for (size_t i = 0; i < n; i++) {
        const struct domain *d = all[i];
        if (json) {
            printf("%s{\"domain\": ", i ? ",\n " : "");
            json_fput(stdout, d->name);
            json_limit("messages_per_hour", d->messages_per_hour);
            json_limit("recipients_per_hour", d->recipients_per_hour);
            json_field("receipt", d->receipt);
            json_field("callouts", d->callouts);
            json_field("tls_certificate", d->tls_cert);
            printf("}");
            continue;
        }
        printf("%s", d->name);
        print_limit(stdout, "messages_per_hour", d->messages_per_hour);
        print_limit(stdout, "recipients_per_hour", d->recipients_per_hour);
        if (d->receipt)
            printf(" receipt=%s", d->receipt);
        if (d->callouts)
            printf(" callouts=%s", d->callouts);
        if (d->tls_cert)
            printf(" tls_certificate=%s", d->tls_cert);
        printf("\n");
    }
    if (json)
        printf("]\n");
    g_free(all);
    return 0;
}
