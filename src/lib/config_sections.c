/*
 * config_sections.c - the key = value lines of pecd.conf, section by section:
 * [provider], [tls], the listeners ([mx], [submission], [submissions]),
 * [limits], [queue], [delivery], [users], [outbound], [pec] (with the
 * directory* keys), [timers], [evidence], [routes] and [tls_policy]; other
 * sections go on to config_callout.c.  Split from config.c, which loads the
 * file, fills defaults and checks it whole (see config.h and
 * docs/configuration.md).
 */
#include "config_int.h"

#include <glib.h>
#include "domains.h"
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(struct parse_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct parse_ctx *ctx, const char *fmt, ...)
{
    if (!ctx->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
        va_end(ap);
        ctx->failed = true;
    }
    return 0;   /* inih: 0 = error on this line */
}

/* Splits a comma/space separated list into dst (each strdup'ed). */
static int split_list(const char *v, char **dst, size_t max, size_t *n, bool lower)
{
    char *copy = strdup(v);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        if (*n >= max) {
            free(copy);
            return -1;
        }
        dst[*n] = strdup(tok);
        if (lower)
            str_lower(dst[*n]);
        (*n)++;
    }
    free(copy);
    return 0;
}

static struct config_listener *listener_get(struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    if (cfg->nlisteners >= CONFIG_MAX_LISTENERS)
        return NULL;
    struct config_listener *l = &cfg->listeners[cfg->nlisteners++];
    memset(l, 0, sizeof *l);
    str_copy(l->name, name, sizeof l->name);
    /* Defaults per role.  The incoming point offers STARTTLS and MUST accept
     * cleartext as well, for ordinary mail (RFC 6109 §5.3; RFC 3207 §4: a
     * publicly-referenced server does not require TLS); what a PEC message
     * over cleartext gets is [pec] cleartext_pec.  Users submit over TLS
     * with AUTH (RFC 8314). */
    if (strcmp(name, "mx") == 0) {
        l->tls = LTLS_STARTTLS;
        l->require_tls = false;
        l->auth = LAUTH_NO;
    } else if (strcmp(name, "submission") == 0) {
        l->tls = LTLS_STARTTLS;
        l->require_tls = true;
        l->auth = LAUTH_REQUIRED;
    } else {
        l->tls = LTLS_IMPLICIT;
        l->require_tls = true;
        l->auth = LAUTH_REQUIRED;
    }
    return l;
}

static int handle_u64(struct parse_ctx *ctx, const char *name, const char *value,
                      uint64_t *dst, bool size, uint64_t min)
{
    uint64_t v;
    int r = size ? parse_size(value, &v) : parse_duration(value, &v);
    if (r == -1)
        return fail(ctx, "%s: '%s' is not a %s", name, value,
                    size ? "number or size (e.g. 100, 30M)" : "duration (e.g. 30s, 5m, 12h)");
    if (v < min)
        return fail(ctx, "%s: %s is below the minimum %llu", name, value,
                    (unsigned long long)min);
    *dst = v;
    return 1;
}

/* [pec] directory* and crl_urls (issue 7; docs/directory.md). */
static int handle_pec_directory(struct parse_ctx *ctx, const char *name, const char *value)
{
    struct config *cfg = ctx->cfg;
    if (strcmp(name, "directory") == 0) {
        bool ldap = strncasecmp(value, "ldap://", 7) == 0 || strncasecmp(value, "ldaps://", 8) == 0;
        bool https = strncasecmp(value, "https://", 8) == 0;
        const char *host = ldap || https ? strstr(value, "://") + 3 : NULL;
        if (ldap && (host[0] == '\0' || host[0] == '/'))
            return fail(ctx, "directory: '%s' names no LDAP host (ldap://HOST:PORT/BASE)", value);
        if (https && (host[0] == '\0' || host[0] == '/' || strpbrk(value, " \t\"<>\\") != NULL))
            return fail(ctx, "directory: '%s' is not an https://HOST[:PORT]/PATH URL", value);
        if (strncasecmp(value, "http://", 7) == 0)   /* RFC 6109 §5.6 */
            return fail(ctx, "directory: '%s': the directory is downloaded over HTTPS only "
                        "(https://)", value);
        if (!ldap && !https && strstr(value, "://") != NULL)
            return fail(ctx, "directory: '%s' is not PATH, file:PATH, https://, ldap:// or "
                        "ldaps://", value);
        set_str(&cfg->pec_directory, strncmp(value, "file:", 5) == 0 ? value + 5 : value);
        return 1;
    }
    if (strcmp(name, "directory_bind_dn") == 0)
        set_str(&cfg->pec_dir_bind_dn, value);
    else if (strcmp(name, "directory_password") == 0)
        set_str(&cfg->pec_dir_password, value);
    else if (strcmp(name, "directory_password_file") == 0)
        set_str(&cfg->pec_dir_password_file, value);
    else if (strcmp(name, "directory_ca_file") == 0)
        set_str(&cfg->pec_dir_ca_file, value);
    else if (strcmp(name, "directory_client_cert") == 0)
        set_str(&cfg->pec_dir_client_cert, value);
    else if (strcmp(name, "directory_client_key") == 0)
        set_str(&cfg->pec_dir_client_key, value);
    else if (strcmp(name, "directory_signer") == 0)
        set_str(&cfg->pec_dir_signer, value);
    else if (strcmp(name, "directory_description") == 0)
        set_str(&cfg->pec_dir_description, value);
    else if (strcmp(name, "directory_location_url") == 0) {
        if (strncasecmp(value, "https://", 8) != 0 || value[8] == '\0' ||
            strpbrk(value, " \t\"<>\\") != NULL)     /* RFC 6109 §4.5.6 */
            return fail(ctx, "directory_location_url: '%s' is not an https:// URL", value);
        set_str(&cfg->pec_dir_location_url, value);
    }
    else if (strcmp(name, "directory_starttls") == 0) {
        if (parse_bool(value, &cfg->pec_dir_starttls) == -1)
            return fail(ctx, "directory_starttls: '%s' is not yes or no", value);
    } else if (strcmp(name, "directory_refresh") == 0) {
        uint64_t v;
        cfg->pec_dir_refresh_set = true;
        if (parse_duration(value, &v) == 0 && v == 0) { /* "0", "0s": on SIGHUP only */
            cfg->pec_dir_refresh = 0;
            return 1;
        }
        return handle_u64(ctx, name, value, &cfg->pec_dir_refresh, false, 1);
    } else if (strcmp(name, "directory_timeout") == 0) {
        int r = handle_u64(ctx, name, value, &cfg->pec_dir_timeout, false, 1);
        if (r == 1 && cfg->pec_dir_timeout > 600)
            return fail(ctx, "directory_timeout: at most 10m");
        return r;
    } else if (strcmp(name, "crl_urls") == 0) {
        for (size_t i = 0; i < cfg->pec_n_crl_urls; i++)
            free(cfg->pec_crl_urls[i]);
        cfg->pec_n_crl_urls = 0;
        if (split_list(value, cfg->pec_crl_urls, CONFIG_MAX_CRL_URLS, &cfg->pec_n_crl_urls,
                       false) == -1)
            return fail(ctx, "crl_urls: more than %d URLs", CONFIG_MAX_CRL_URLS);
        for (size_t i = 0; i < cfg->pec_n_crl_urls; i++) {
            const char *u = cfg->pec_crl_urls[i];
            if (strncmp(u, "file:", 5) != 0 && strncmp(u, "http://", 7) != 0 &&
                strncmp(u, "https://", 8) != 0)
                return fail(ctx, "crl_urls: '%s' is not a file:, http:// or https:// URL", u);
        }
    } else {
        return fail(ctx, "unknown key '%s' in [pec]", name);
    }
    return 1;
}

/* [delivery] mailbox = maildir:TEMPLATE | lmtp:HOST:PORT | lmtp:[IPv6]:PORT |
 * lmtp:unix:/PATH */
static int handle_mailbox(struct parse_ctx *ctx, const char *value)
{
    struct config *cfg = ctx->cfg;
    free(cfg->lmtp_host);
    free(cfg->lmtp_port);
    cfg->lmtp_host = cfg->lmtp_port = NULL;
    if (strncmp(value, "maildir:", 8) == 0 && value[8] != '\0') {
        set_str(&cfg->mailbox, value + 8);
        return 1;
    }
    if (strncmp(value, "lmtp:unix:", 10) == 0) {
        if (value[10] == '\0' || strlen(value + 10) >= 108)
            return fail(ctx, "mailbox: '%s': the socket path is empty or too long", value);
        cfg->lmtp_host = strdup(value + 10);
        cfg->lmtp_port = strdup("");
        return 1;
    }
    if (strncmp(value, "lmtp:", 5) != 0)
        return fail(ctx, "mailbox: '%s' is not maildir:PATH, lmtp:HOST:PORT or "
                         "lmtp:unix:PATH", value);
    char buf[300];
    if (str_copy(buf, value + 5, sizeof buf) >= sizeof buf)
        return fail(ctx, "mailbox: '%s' is too long", value);
    char *colon = strrchr(buf, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (colon == NULL || colon == buf || end == colon + 1 || *end != '\0' || port < 1 ||
        port > 65535)
        return fail(ctx, "mailbox: '%s' needs lmtp:HOST:PORT (port 1-65535)", value);
    *colon = '\0';
    char *host = buf;
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        host++;
    }
    if (strchr(host, '[') || strchr(host, ']') || strchr(host, '/'))
        return fail(ctx, "mailbox: '%s': bad host", value);
    cfg->lmtp_host = strdup(host);
    cfg->lmtp_port = strdup(colon + 1);
    return 1;
}

static int handle_listener(struct parse_ctx *ctx, const char *section, const char *name,
                           const char *value)
{
    struct config_listener *l = listener_get(ctx->cfg, section);
    if (l == NULL)
        return fail(ctx, "too many listeners");
    if (strcmp(name, "listen") == 0) {
        for (size_t i = 0; i < l->naddrs; i++)
            free(l->addrs[i]);
        l->naddrs = 0;
        if (split_list(value, l->addrs, CONFIG_MAX_ADDRS, &l->naddrs, false) == -1)
            return fail(ctx, "listen: at most %d addresses", CONFIG_MAX_ADDRS);
        for (size_t i = 0; i < l->naddrs; i++)
            if (strrchr(l->addrs[i], ':') == NULL)
                return fail(ctx, "listen: '%s' is not HOST:PORT", l->addrs[i]);
        return 1;
    }
    if (strcmp(name, "tls") == 0) {
        if (str_ieq(value, "starttls"))
            l->tls = LTLS_STARTTLS;
        else if (str_ieq(value, "implicit"))
            l->tls = LTLS_IMPLICIT;
        else if (str_ieq(value, "none"))
            l->tls = LTLS_NONE;
        else
            return fail(ctx, "tls: '%s' is not starttls, implicit or none", value);
        return 1;
    }
    if (strcmp(name, "require_tls") == 0) {
        if (parse_bool(value, &l->require_tls) == -1)
            return fail(ctx, "require_tls: '%s' is not yes or no", value);
        return 1;
    }
    if (strcmp(name, "auth") == 0) {
        if (str_ieq(value, "no"))
            l->auth = LAUTH_NO;
        else if (str_ieq(value, "optional") || str_ieq(value, "yes"))
            l->auth = LAUTH_OPTIONAL;
        else if (str_ieq(value, "required"))
            l->auth = LAUTH_REQUIRED;
        else
            return fail(ctx, "auth: '%s' is not no, optional or required", value);
        return 1;
    }
    if (strcmp(name, "max_connections") == 0)
        return handle_u64(ctx, name, value, &l->max_connections, true, 1);
    if (strcmp(name, "max_connections_per_ip") == 0)
        return handle_u64(ctx, name, value, &l->max_connections_per_ip, true, 1);
    if (strcmp(name, "relay_networks") == 0) {
        char *copy = strdup(value), *save = NULL;
        l->nnets = 0;
        for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
            if (l->nnets >= sizeof l->nets / sizeof l->nets[0]) {
                free(copy);
                return fail(ctx, "relay_networks: at most 16 networks");
            }
            struct config_net *n = &l->nets[l->nnets];
            char *slash = strchr(tok, '/');
            if (slash)
                *slash = '\0';
            n->family = strchr(tok, ':') ? AF_INET6 : AF_INET;
            unsigned max = n->family == AF_INET ? 32 : 128;
            char *end = NULL;
            n->bits = slash ? (unsigned)strtoul(slash + 1, &end, 10) : max;
            if (inet_pton(n->family, tok, n->addr) != 1 || n->bits > max ||
                (slash && (end == slash + 1 || *end != '\0'))) {
                int r = fail(ctx, "relay_networks: '%s' is not an address or ADDRESS/BITS", tok);
                free(copy);
                return r;
            }
            l->nnets++;
        }
        free(copy);
        return 1;
    }
    return fail(ctx, "unknown key '%s' in [%s]", name, section);
}

static bool valid_policy(const char *v)
{
    static const char *const p[] = {"none", "may", "encrypt", "verify", "dane"};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        if (str_ieq(v, p[i]))
            return true;
    return false;
}

int config_handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_ctx *ctx = user;
    struct config *cfg = ctx->cfg;

    if (strcmp(section, "provider") == 0) {
        if (strcmp(name, "domain") == 0) {
            if (!str_domain_ok(value))
                return fail(ctx, "domain: '%s' is not a domain name", value);
            set_str(&cfg->domain, value);
            str_lower(cfg->domain);
        } else if (strcmp(name, "hostname") == 0)
            set_str(&cfg->hostname, value);
        else if (strcmp(name, "name") == 0)
            set_str(&cfg->name, value);
        else if (strcmp(name, "postmaster") == 0)
            set_str(&cfg->postmaster, value);
        else if (strcmp(name, "local_domains") == 0) {
            gchar **v = g_strsplit_set(value, ", \t", -1);
            char why[300];
            for (size_t i = 0; v[i] != NULL; i++)
                if (v[i][0] != '\0' && domains_add(cfg->domains, v[i], why, sizeof why) == -1) {
                    g_strfreev(v);
                    return fail(ctx, "local_domains: %s", why);
                }
            g_strfreev(v);
        } else if (strcmp(name, "local_domains_file") == 0)
            set_str(&cfg->local_domains_file, value);
        else if (strcmp(name, "data_dir") == 0)
            set_str(&cfg->data_dir, value);
        else if (strcmp(name, "log_level") == 0) {
            enum log_level lvl;
            if (log_level_parse(value, &lvl) == -1)
                return fail(ctx, "log_level: '%s' is not debug, info, warning or error", value);
            set_str(&cfg->log_level, value);
        } else
            return fail(ctx, "unknown key '%s' in [provider]", name);
        return 1;
    }
    if (strcmp(section, "pecd") == 0) {
        if (strcmp(name, "user") == 0) {
            /* a user name as useradd(8) takes it, or a number */
            if (value[0] == '\0' || strlen(value) > 32 || value[0] == '-' ||
                strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              "0123456789._-") != strlen(value))
                return fail(ctx, "user: '%s' is not a user name", value);
            set_str(&cfg->pecd_user, value);
            return 1;
        }
        return fail(ctx, "unknown key '%s' in [pecd]", name);
    }
    if (strcmp(section, "tls") == 0) {
        if (strcmp(name, "certificate") == 0)
            set_str(&cfg->tls_cert, value);
        else if (strcmp(name, "key") == 0) {
            char uerr[256];
            struct pkcs11_uri u;
            if (pkcs11_uri_is(value) && pkcs11_uri_parse(value, &u, uerr, sizeof uerr) == -1)
                return fail(ctx, "key: %s: %s", value, uerr);
            set_str(&cfg->tls_key, value);
        }
        else if (strcmp(name, "ciphers") == 0)
            set_str(&cfg->tls_ciphers, value);
        else if (strcmp(name, "min_version") == 0) {
            if (str_ieq(value, "TLSv1.2") || strcmp(value, "1.2") == 0)
                cfg->tls_min_version = 12;
            else if (str_ieq(value, "TLSv1.3") || strcmp(value, "1.3") == 0)
                cfg->tls_min_version = 13;
            else
                return fail(ctx, "min_version: '%s' is not TLSv1.2 or TLSv1.3 "
                                 "(older versions are not supported)", value);
        } else
            return fail(ctx, "unknown key '%s' in [tls]", name);
        return 1;
    }
    if (strcmp(section, "mx") == 0 || strcmp(section, "submission") == 0 ||
        strcmp(section, "submissions") == 0)
        return handle_listener(ctx, section, name, value);
    if (strcmp(section, "limits") == 0) {
        static const struct {
            const char *key;
            size_t off;
            bool size;
            uint64_t min;
        } keys[] = {
            {"max_message_size", offsetof(struct config, max_message_size), true, 1024},
            {"max_recipients", offsetof(struct config, max_recipients), true, 1},
            {"max_line_length", offsetof(struct config, max_line_length), true, 80},
            {"max_errors", offsetof(struct config, max_errors), true, 1},
            {"max_connections", offsetof(struct config, max_connections), true, 1},
            {"max_connections_per_ip", offsetof(struct config, max_connections_per_ip), true, 1},
            {"timeout_command", offsetof(struct config, timeout_command), false, 1},
            {"timeout_data", offsetof(struct config, timeout_data), false, 1},
            {"timeout_tls", offsetof(struct config, timeout_tls), false, 1},
            {"min_data_rate", offsetof(struct config, min_data_rate), true, 0},
            {"auth_failure_delay", offsetof(struct config, auth_failure_delay), false, 0},
            {"auth_max_failures", offsetof(struct config, auth_max_failures), true, 1},
            {"auth_failures_per_ip", offsetof(struct config, auth_failures_per_ip), true, 0},
            {"auth_failures_per_account", offsetof(struct config, auth_failures_per_account),
             true, 0},
            {"auth_failure_window", offsetof(struct config, auth_failure_window), false, 1},
            {"auth_track_max", offsetof(struct config, auth_track_max), true, 100},
            {"messages_per_hour", offsetof(struct config, messages_per_hour), true, 0},
            {"recipients_per_hour", offsetof(struct config, recipients_per_hour), true, 0},
            {"client_messages_per_hour", offsetof(struct config, client_messages_per_hour),
             true, 0},
            {"client_recipients_per_hour", offsetof(struct config, client_recipients_per_hour),
             true, 0},
        };
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            if (strcmp(name, keys[i].key) != 0)
                continue;
            uint64_t *dst = (uint64_t *)((char *)cfg + keys[i].off);
            if (handle_u64(ctx, name, value, dst, keys[i].size, keys[i].min) == 0)
                return 0;
            /* a failed AUTH holds its session this long; the table's memory */
            if (strcmp(name, "auth_failure_delay") == 0 && *dst > 60)
                return fail(ctx, "auth_failure_delay: at most 60s");
            if (strcmp(name, "auth_track_max") == 0 && *dst > 10000000)
                return fail(ctx, "auth_track_max: at most 10000000");
            return 1;
        }
        return fail(ctx, "unknown key '%s' in [limits]", name);
    }
    if (strcmp(section, "queue") == 0) {
        if (strcmp(name, "directory") == 0) {
            set_str(&cfg->queue_dir, value);
            return 1;
        }
        if (strcmp(name, "delivery_workers") == 0) {
            int r = handle_u64(ctx, name, value, &cfg->delivery_workers, true, 1);
            if (r && cfg->delivery_workers > 64)
                return fail(ctx, "delivery_workers: at most 64");
            return r;
        }
        if (strcmp(name, "worker_nice") == 0) {
            int r = handle_u64(ctx, name, value, &cfg->worker_nice, false, 0);
            if (r && cfg->worker_nice > 19)
                return fail(ctx, "worker_nice: 0 to 19");
            return r;
        }
        if (strcmp(name, "retry_min") == 0)
            return handle_u64(ctx, name, value, &cfg->retry_min, false, 1);
        if (strcmp(name, "retry_max") == 0)
            return handle_u64(ctx, name, value, &cfg->retry_max, false, 1);
        if (strcmp(name, "lifetime") == 0)
            return handle_u64(ctx, name, value, &cfg->queue_lifetime, false, 1);
        if (strcmp(name, "delay_warning") == 0) {
            if (strcmp(value, "0") == 0) {
                cfg->delay_warning = 0;
                return 1;
            }
            return handle_u64(ctx, name, value, &cfg->delay_warning, false, 1);
        }
        if (strcmp(name, "commit_delay") == 0) {
            /* "0", "N" or "Nms" milliseconds, "Nus" microseconds; at most 100 ms */
            char *end;
            errno = 0;
            unsigned long long v = strtoull(value, &end, 10);
            unsigned long long mul = 1000;
            if (end != value && strcmp(end, "us") == 0)
                mul = 1;
            else if (end == value || (*end != '\0' && strcmp(end, "ms") != 0) || value[0] == '-')
                return fail(ctx, "commit_delay: '%s' is not a delay (e.g. 1ms, 500us, 0)", value);
            if (errno != 0 || v > 100000 || v * mul > 100000)
                return fail(ctx, "commit_delay: %s is above the maximum 100ms", value);
            cfg->commit_delay_us = v * mul;
            return 1;
        }
        if (strcmp(name, "sync") == 0) {
            if (str_ieq(value, "syncfs"))
                cfg->sync_fs = true;
            else if (str_ieq(value, "fsync"))
                cfg->sync_fs = false;
            else
                return fail(ctx, "sync: '%s' is not syncfs or fsync", value);
            return 1;
        }
        return fail(ctx, "unknown key '%s' in [queue]", name);
    }
    if (strcmp(section, "delivery") == 0) {
        if (strcmp(name, "mailbox") == 0)
            return handle_mailbox(ctx, value);
        if (strcmp(name, "quota") == 0)   /* 0 = none */
            return handle_u64(ctx, name, value, &cfg->delivery_quota, true, 0);
        return fail(ctx, "unknown key '%s' in [delivery]", name);
    }
    if (strcmp(section, "users") == 0) {
        if (strcmp(name, "passwd_file") == 0) {
            set_str(&cfg->passwd_file, value);
            return 1;
        }
        if (strcmp(name, "users") == 0) {
            free(cfg->dovecot_auth);
            cfg->dovecot_auth = NULL;
            if (strcmp(value, "passwd-file") == 0)
                return 1;
            if (strncmp(value, "dovecot:", 8) != 0 || value[8] == '\0')
                return fail(ctx, "users: '%s' is not passwd-file or dovecot:PATH", value);
            set_str(&cfg->dovecot_auth, value + 8);
            return 1;
        }
        if (strcmp(name, "senders") == 0) {
            if (value[0] == '\0')
                return fail(ctx, "senders: a file is required");
            set_str(&cfg->sender_map, value);
            return 1;
        }
        if (strcmp(name, "userdb") == 0) {
            if (value[0] == '\0')
                return fail(ctx, "userdb: a socket path is required");
            set_str(&cfg->dovecot_userdb, value);
            return 1;
        }
        if (strcmp(name, "timeout") == 0) {
            int r = handle_u64(ctx, name, value, &cfg->users_timeout, false, 1);
            if (r && cfg->users_timeout > 300)
                return fail(ctx, "timeout: between 1s and 300s");
            return r;
        }
        return fail(ctx, "unknown key '%s' in [users]", name);
    }
    if (strcmp(section, "outbound") == 0) {
        if (strcmp(name, "helo") == 0)
            set_str(&cfg->out_helo, value);
        else if (strcmp(name, "tls") == 0) {
            if (!valid_policy(value))
                return fail(ctx, "tls: '%s' is not none, may, encrypt, verify or dane", value);
            set_str(&cfg->out_tls, value);
        } else if (strcmp(name, "ca_file") == 0)
            set_str(&cfg->out_ca_file, value);
        else if (strcmp(name, "timeout") == 0)
            return handle_u64(ctx, name, value, &cfg->out_timeout, false, 1);
        else if (strcmp(name, "max_per_destination") == 0)
            return handle_u64(ctx, name, value, &cfg->out_max_per_destination, true, 1);
        else if (strcmp(name, "dns_trust_anchor") == 0)
            set_str(&cfg->dns_trust_anchor, value);
        else if (strcmp(name, "dns_server") == 0)
            set_str(&cfg->dns_server, value);
        else if (strcmp(name, "mx_port") == 0) {
            int r = handle_u64(ctx, name, value, &cfg->mx_port, true, 1);
            if (r && cfg->mx_port > 65535)
                return fail(ctx, "mx_port: at most 65535");
            return r;
        }
        else
            return fail(ctx, "unknown key '%s' in [outbound]", name);
        return 1;
    }
    if (strcmp(section, "pec") == 0) {
        static const struct {
            const char *key;
            size_t off;
        } paths[] = {
            {"signing_key", offsetof(struct config, pec_signing_key)},
            {"signing_certificate", offsetof(struct config, pec_signing_cert)},
            {"signing_certificate_next", offsetof(struct config, pec_signing_cert_next)},
            {"trust", offsetof(struct config, pec_trust)},
            {"crl", offsetof(struct config, pec_crl)},
            {"service_address", offsetof(struct config, pec_service_address)},
            {"pkcs11_module", offsetof(struct config, pec_pkcs11_module)},
            {"pkcs11_pin_file", offsetof(struct config, pec_pkcs11_pin_file)},
        };
        if (strcmp(name, "signing_key") == 0 && pkcs11_uri_is(value)) {
            char uerr[256];
            struct pkcs11_uri u;
            if (pkcs11_uri_parse(value, &u, uerr, sizeof uerr) == -1)
                return fail(ctx, "signing_key: %s: %s", value, uerr);
        }
        for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
            if (strcmp(name, paths[i].key) == 0) {
                set_str((char **)((char *)cfg + paths[i].off), value);
                return 1;
            }
        }
        if (strcmp(name, "enabled") == 0) {
            if (parse_bool(value, &cfg->pec) == -1)
                return fail(ctx, "enabled: '%s' is not yes or no", value);
            return 1;
        }
        if (strncmp(name, "directory", 9) == 0 || strncmp(name, "crl_", 4) == 0)
            return handle_pec_directory(ctx, name, value);
        if (strcmp(name, "max_total_size") == 0)
            return handle_u64(ctx, name, value, &cfg->pec_max_total, true, 1024);
        if (strcmp(name, "accept_ordinary_mail") == 0) {
            if (parse_bool(value, &cfg->pec_accept_ordinary) == -1)
                return fail(ctx, "accept_ordinary_mail: '%s' is not yes or no", value);
            return 1;
        }
        if (strcmp(name, "cleartext_pec") == 0) {
            if (strcmp(value, "accept") != 0 && strcmp(value, "refuse") != 0)
                return fail(ctx, "cleartext_pec: '%s' is not accept or refuse", value);
            cfg->pec_cleartext_refuse = strcmp(value, "refuse") == 0;
            return 1;
        }
        if (strcmp(name, "tls_policy") == 0) {
            if (!valid_policy(value))
                return fail(ctx, "tls_policy: '%s' is not none, may, encrypt, verify or dane",
                            value);
            set_str(&cfg->pec_tls_policy, value);
            return 1;
        }
        if (strcmp(name, "timezone") == 0) {
            /* RFC 6109 §4.2: the legal time; a name of the tz database */
            GTimeZone *z = value[0] ? g_time_zone_new_identifier(value) : NULL;
            if (z == NULL)
                return fail(ctx, "timezone: '%s' is not a time zone of the tz database "
                                 "(e.g. Europe/Rome)", value);
            g_time_zone_unref(z);
            set_str(&cfg->pec_timezone, value);
            return 1;
        }
        return fail(ctx, "unknown key '%s' in [pec]", name);
    }
    if (strcmp(section, "timers") == 0) {
        if (strcmp(name, "preavviso") == 0)
            return handle_u64(ctx, name, value, &cfg->timer_preavviso, false, 1);
        if (strcmp(name, "mancata_consegna") == 0)
            return handle_u64(ctx, name, value, &cfg->timer_mancata_consegna, false, 1);
        if (strcmp(name, "duplicate_window") == 0)
            return handle_u64(ctx, name, value, &cfg->duplicate_window, false, 1);
        return fail(ctx, "unknown key '%s' in [timers]", name);
    }
    if (strcmp(section, "evidence") == 0) {
        if (strcmp(name, "path") == 0) {
            set_str(&cfg->evidence_path, strncmp(value, "sqlite:", 7) == 0 ? value + 7 : value);
            return 1;
        }
        if (strcmp(name, "retention") == 0)
            return handle_u64(ctx, name, value, &cfg->evidence_retention, false, 86400);
        return fail(ctx, "unknown key '%s' in [evidence]", name);
    }
    if (strcmp(section, "routes") == 0 || strcmp(section, "tls_policy") == 0) {
        bool routes = strcmp(section, "routes") == 0;
        struct config_kv *kv = routes ? cfg->routes : cfg->tls_policies;
        size_t *n = routes ? &cfg->nroutes : &cfg->ntls_policies;
        if (*n >= CONFIG_MAX_ROUTES)
            return fail(ctx, "at most %d entries in [%s]", CONFIG_MAX_ROUTES, section);
        if (routes) {
            const char *hp = strncmp(value, "lmtp:", 5) == 0 ? value + 5 : value;
            const char *colon = strrchr(hp, ':');
            if (colon == NULL || colon == hp || colon[1] == '\0' ||
                strspn(colon + 1, "0123456789") != strlen(colon + 1))
                return fail(ctx, "%s: '%s' is not [lmtp:]HOST:PORT", name, value);
        } else if (!valid_policy(value)) {
            return fail(ctx, "%s: '%s' is not none, may, encrypt, verify or dane", name, value);
        }
        kv[*n].key = strdup(name);
        str_lower(kv[*n].key);
        kv[*n].value = strdup(value);
        (*n)++;
        return 1;
    }
    if (strcmp(section, "metrics") == 0) {
        if (strcmp(name, "listen") != 0)
            return fail(ctx, "unknown key '%s' in [metrics]", name);
        /* HOST:PORT or [V6]:PORT; the port decides, the host is bound as given */
        const char *colon = strrchr(value, ':');
        if (colon == NULL || colon == value || colon[1] == '\0' ||
            strspn(colon + 1, "0123456789") != strlen(colon + 1) || strlen(colon + 1) > 5 ||
            atoi(colon + 1) < 1 || atoi(colon + 1) > 65535)
            return fail(ctx, "listen: '%s' is not HOST:PORT (e.g. 127.0.0.1:9125)", value);
        set_str(&cfg->metrics_listen, value);
        return 1;
    }
    if (strcmp(section, "log") == 0) {
        if (strcmp(name, "format") != 0)
            return fail(ctx, "unknown key '%s' in [log]", name);
        if (strcmp(value, "json") == 0)
            cfg->log_json = true;
        else if (strcmp(value, "text") == 0)
            cfg->log_json = false;
        else
            return fail(ctx, "format: '%s' is not text or json", value);
        return 1;
    }
    char cerr[256];
    int r = config_callout_key(cfg, section, name, value, cerr, sizeof cerr);
    if (r == 0)
        return fail(ctx, "%s", cerr);
    if (r == 1)
        return 1;
    return fail(ctx, "unknown section [%s]", section);
}
