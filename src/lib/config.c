/*
 * config.c - loads pecd.conf (see config.h and docs/configuration.md): fills
 * the defaults, checks the file as a whole and answers lookups (listeners,
 * relay networks, routes, TLS policies, mailbox paths).  The handler of each
 * key = value line is in config_sections.c, the callout sections in
 * config_callout.c.
 */
#include "config_int.h"
#include "domains.h"
#include "lib.h"

#include <errno.h>
#include <glib.h>
#include <arpa/inet.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Makes *p absolute against base (if relative). */
static void resolve(char **p, const char *base)
{
    if (*p == NULL || (*p)[0] == '/')
        return;
    char buf[PATH_MAX];
    if (str_fmt(buf, sizeof buf, "%s/%s", base, *p) < 0)
        return;
    set_str(p, buf);
}

static void default_str(char **p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void default_str(char **p, const char *fmt, ...)
{
    if (*p != NULL)
        return;
    char buf[PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    *p = xstrdup(buf);
}

/* Each listener's connection limit.  [limits] max_connections is the total:
 * a listener without max_connections of its own gets a share of what the
 * others leave, [submission] and [submissions] a tenth each and [mx] the rest,
 * so a flood on the MX never takes the slots of the users' submission
 * (docs/operator-guide.md).  The listeners' limits may not add up to more
 * than the total. */
static int share_connections(struct config *cfg, char *err, size_t errlen)
{
    uint64_t total = cfg->max_connections, fixed = 0;
    size_t unset = 0;
    struct config_listener *mx = NULL;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct config_listener *l = &cfg->listeners[i];
        if (l->max_connections_per_ip == 0)
            l->max_connections_per_ip = cfg->max_connections_per_ip;
        if (l->max_connections != 0)
            fixed += l->max_connections;
        else if (strcmp(l->name, "mx") == 0)
            mx = l;
        else
            unset++;
    }
    if (fixed > total) {
        snprintf(err, errlen, "%s: the listeners' max_connections add up to %llu, more than "
                 "[limits] max_connections = %llu", cfg->path, (unsigned long long)fixed,
                 (unsigned long long)total);
        return -1;
    }
    uint64_t left = total - fixed;
    /* with [mx] to take the rest, the others get a tenth each; else they share */
    uint64_t share = unset == 0 ? 0 : mx != NULL ? total / 10 : left / unset;
    if (share == 0)
        share = 1;
    uint64_t need = share * unset + (mx != NULL ? 1 : 0);
    if (need > left) {
        snprintf(err, errlen, "%s: [limits] max_connections = %llu leaves no room for every "
                 "listener: raise it or set max_connections in each listener's section",
                 cfg->path, (unsigned long long)total);
        return -1;
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct config_listener *l = &cfg->listeners[i];
        if (l->max_connections == 0 && l != mx)
            l->max_connections = share;
    }
    if (mx != NULL)
        mx->max_connections = left - share * unset;
    return 0;
}

/* The signed directory (issue 19, RFC 6109 §4.5, §5.6): https:// and *.p7m
 * sources need the authority's certificates; the client certificate and
 * key go together; https:// is refreshed daily unless directory_refresh
 * says otherwise. */
static int config_check_signed_directory(struct config *cfg, const char *path, char *err,
                                         size_t errlen)
{
    const char *src = cfg->pec_directory;
    size_t n = src ? strlen(src) : 0;
    bool https = src && strncasecmp(src, "https://", 8) == 0;
    bool p7m = https || (n >= 4 && strcasecmp(src + n - 4, ".p7m") == 0);
    if (p7m && cfg->pec_dir_signer == NULL) {
        snprintf(err, errlen, "%s: [pec] directory %s is a signed directory: it needs "
                 "directory_signer (the PEM certificates of who signs it)", path, src);
        return -1;
    }
    if ((cfg->pec_dir_client_cert == NULL) != (cfg->pec_dir_client_key == NULL)) {
        snprintf(err, errlen, "%s: [pec] directory_client_cert and directory_client_key go "
                 "together", path);
        return -1;
    }
    if (https && !cfg->pec_dir_refresh_set)
        cfg->pec_dir_refresh = 86400;               /* RFC 6109 §4.5: daily */
    return 0;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    struct config *cfg = xcalloc(1, sizeof *cfg);
    struct parse_ctx ctx = {.cfg = cfg};
    cfg->path = xstrdup(path);
    char absdir[PATH_MAX];
    {
        char tmp[PATH_MAX];
        str_copy(tmp, path, sizeof tmp);
        char *slash = strrchr(tmp, '/');
        const char *d = slash ? (slash == tmp ? "/" : (*slash = '\0', tmp)) : ".";
        if (realpath(d, absdir) == NULL)
            str_copy(absdir, d, sizeof absdir);
    }
    cfg->dir = xstrdup(absdir);
    cfg->domains = domains_new();

    cfg->max_message_size = 60ULL * 1024 * 1024;   /* DESIGN: twice the legal 30 MB */
    cfg->max_recipients = 100;                      /* RFC 5321 §4.5.3.1.8 minimum */
    cfg->max_line_length = 1000;                    /* RFC 5321 §4.5.3.1.6 */
    cfg->max_errors = 10;
    cfg->max_connections = 1000;
    cfg->max_connections_per_ip = 50;
    cfg->timeout_command = 300;                     /* RFC 5321 §4.5.3.2.7 */
    cfg->timeout_data = 300;
    cfg->timeout_tls = 60;
    cfg->min_data_rate = 500;                       /* as Postfix's smtpd_min_data_rate */
    cfg->auth_failure_delay = 2;                    /* as Dovecot's auth_failure_delay */
    cfg->auth_max_failures = 3;
    cfg->auth_failures_per_ip = 10;
    cfg->auth_failures_per_account = 20;
    cfg->auth_failure_window = 900;
    cfg->auth_track_max = 10000;
    cfg->messages_per_hour = 1000;                  /* per user: abuse control */
    cfg->recipients_per_hour = 10000;
    cfg->tls_min_version = 12;
    cfg->delivery_workers = 0;                      /* auto: see below */
    cfg->worker_nice = 19;
    cfg->retry_min = 60;
    cfg->retry_max = 3600;
    cfg->queue_lifetime = 5 * 86400;
    cfg->delay_warning = 4 * 3600;
    cfg->out_timeout = 300;
    cfg->out_max_per_destination = 10;
    cfg->mx_port = 25;
    cfg->pec_max_total = 30ULL * 1024 * 1024;      /* RFC 6109 §3.1.1 */
    cfg->pec_accept_ordinary = true;
    cfg->pec_dir_refresh = 3600;                    /* RFC 6109 §4.5 asks for daily */
    cfg->pec_dir_timeout = 30;
    cfg->timer_preavviso = 12 * 3600;               /* §3.1.6 */
    cfg->timer_mancata_consegna = 24 * 3600;
    cfg->duplicate_window = 7 * 86400;
    cfg->evidence_retention = 913ULL * 86400;       /* 30 months (§2.2.4) */
    cfg->sync_fs = true;
    cfg->commit_delay_us = 1000;                    /* docs/performance.md */
    cfg->users_timeout = 10;
    config_callout_defaults(cfg);
    config_state_defaults(cfg);

    int line = ini_parse(path, config_handler, &ctx);
    if (line == -1) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto bad;
    }
    if (line == -2) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto bad;
    }
    if (line > 0) {
        snprintf(err, errlen, "%s:%d: %s", path, line,
                 ctx.failed ? ctx.err : "syntax error (expected [section] or key = value)");
        goto bad;
    }

    if (cfg->domain == NULL) {
        snprintf(err, errlen, "%s: [provider] domain is required", path);
        goto bad;
    }
    if (domains_add(cfg->domains, cfg->domain, err, errlen) == -1)
        goto bad;
    if (cfg->local_domains_file != NULL) {
        resolve(&cfg->local_domains_file, cfg->dir);
        if (domains_load_file(cfg->domains, cfg->local_domains_file, cfg->dir, err, errlen) == -1)
            goto bad;
    }
    if (cfg->hostname == NULL) {
        char host[256];
        if (gethostname(host, sizeof host) == 0 && strchr(host, '.') != NULL)
            cfg->hostname = xstrdup(host);
        else
            default_str(&cfg->hostname, "mx.%s", cfg->domain);
    }
    default_str(&cfg->name, "%s", cfg->domain);
    default_str(&cfg->out_helo, "%s", cfg->hostname);
    default_str(&cfg->out_tls, "%s", "may");
    resolve(&cfg->out_ca_file, cfg->dir);
    default_str(&cfg->pec_service_address, "posta-certificata@%s", cfg->domain);
    default_str(&cfg->pec_tls_policy, "%s", "verify");
    default_str(&cfg->pec_timezone, "%s", "Europe/Rome");
    if (!pkcs11_uri_is(cfg->pec_signing_key))
        resolve(&cfg->pec_signing_key, cfg->dir);
    resolve(&cfg->pec_signing_cert, cfg->dir);
    resolve(&cfg->pec_pkcs11_module, cfg->dir);
    resolve(&cfg->pec_pkcs11_pin_file, cfg->dir);
    default_str(&cfg->pecd_user, "%s", "pecmail");
    resolve(&cfg->pec_trust, cfg->dir);
    resolve(&cfg->pec_crl, cfg->dir);
    if (cfg->pec_directory && strstr(cfg->pec_directory, "://") == NULL)
        resolve(&cfg->pec_directory, cfg->dir);
    resolve(&cfg->pec_dir_password_file, cfg->dir);
    resolve(&cfg->pec_dir_ca_file, cfg->dir);
    resolve(&cfg->pec_dir_client_cert, cfg->dir);
    if (!pkcs11_uri_is(cfg->pec_dir_client_key))
        resolve(&cfg->pec_dir_client_key, cfg->dir);
    resolve(&cfg->pec_dir_signer, cfg->dir);
    resolve(&cfg->pec_signing_cert_next, cfg->dir);
    resolve(&cfg->evidence_path, cfg->dir);
    resolve(&cfg->dns_trust_anchor, cfg->dir);
    default_str(&cfg->postmaster, "postmaster@%s", cfg->domain);
    default_str(&cfg->data_dir, "%s", cfg->dir);
    resolve(&cfg->data_dir, cfg->dir);
    default_str(&cfg->queue_dir, "%s/queue", cfg->data_dir);
    default_str(&cfg->evidence_path, "%s/evidence.db", cfg->data_dir);
    default_str(&cfg->mailbox, "%s/mail/%%d/%%n", cfg->data_dir);
    default_str(&cfg->passwd_file, "%s/users", cfg->data_dir);
    resolve(&cfg->queue_dir, cfg->dir);
    resolve(&cfg->sender_map, cfg->dir);
    resolve(&cfg->mailbox, cfg->dir);
    resolve(&cfg->passwd_file, cfg->dir);
    resolve(&cfg->dovecot_auth, cfg->dir);
    resolve(&cfg->dovecot_userdb, cfg->dir);
    if (cfg->lmtp_host != NULL && cfg->lmtp_port[0] == '\0')
        resolve(&cfg->lmtp_host, cfg->dir);
    resolve(&cfg->tls_cert, cfg->dir);
    if (!pkcs11_uri_is(cfg->tls_key))
        resolve(&cfg->tls_key, cfg->dir);
    if (cfg->tls_cert == NULL) {
        size_t n;
        const struct domain **all = domains_sorted(cfg->domains, &n);
        for (size_t i = 0; i < n; i++)
            if (all[i]->tls_cert != NULL) {
                snprintf(err, errlen, "%s:%u: %s has a TLS certificate, but there is no [tls] "
                         "certificate for the names it does not cover", all[i]->file,
                         all[i]->line, all[i]->name);
                g_free(all);
                goto bad;
            }
        g_free(all);
    }
    if ((pkcs11_uri_is(cfg->pec_signing_key) || pkcs11_uri_is(cfg->tls_key) ||
         pkcs11_uri_is(cfg->pec_dir_client_key)) && cfg->pec_pkcs11_module == NULL) {
        snprintf(err, errlen, "%s: %s is a pkcs11: URI: [pec] pkcs11_module (the PKCS#11 "
                 "module, a .so file) is required", path,
                 pkcs11_uri_is(cfg->pec_signing_key) ? "[pec] signing_key"
                 : pkcs11_uri_is(cfg->tls_key)        ? "[tls] key"
                                                      : "[pec] directory_client_key");
        goto bad;
    }

    /* PEC stages sign, verify and sync: more threads overlap that work
     * (bench/pec-exchange: 30/s with 4, 53/s with 8, no gain with 16);
     * plain delivery batches best with few */
    if (cfg->delivery_workers == 0)
        cfg->delivery_workers = cfg->pec ? 8 : 2;
    if (cfg->retry_max < cfg->retry_min) {
        snprintf(err, errlen, "%s: [queue] retry_max is below retry_min", path);
        goto bad;
    }
    if (cfg->pec && (cfg->pec_signing_key == NULL || cfg->pec_signing_cert == NULL ||
                     cfg->pec_trust == NULL || cfg->pec_directory == NULL)) {
        snprintf(err, errlen, "%s: [pec] enabled needs signing_key, signing_certificate, trust "
                 "and directory", path);
        goto bad;
    }
    if (cfg->pec_dir_password && cfg->pec_dir_password_file) {
        snprintf(err, errlen, "%s: [pec] directory_password and directory_password_file "
                 "exclude each other", path);
        goto bad;
    }
    if (cfg->pec_dir_starttls && cfg->pec_directory &&
        strncasecmp(cfg->pec_directory, "ldaps://", 8) == 0) {
        snprintf(err, errlen, "%s: [pec] directory_starttls does not go with ldaps://", path);
        goto bad;
    }
    if (config_check_signed_directory(cfg, path, err, errlen) == -1)
        goto bad;
    if (cfg->dovecot_userdb != NULL && cfg->dovecot_auth == NULL) {
        snprintf(err, errlen, "%s: [users] userdb needs users = dovecot:PATH", path);
        goto bad;
    }
    if (cfg->dovecot_auth != NULL && cfg->dovecot_userdb == NULL && cfg->lmtp_host == NULL) {
        /* nothing would know which mailboxes exist: Maildir delivery would
         * create one for any address */
        snprintf(err, errlen, "%s: [users] users = dovecot: with Maildir delivery needs userdb "
                 "= PATH (Dovecot's auth-userdb socket), or [delivery] mailbox = lmtp:", path);
        goto bad;
    }
    bool need_tls = false;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct config_listener *l = &cfg->listeners[i];
        if (l->naddrs == 0) {
            snprintf(err, errlen, "%s: [%s] needs listen = HOST:PORT", path, l->name);
            goto bad;
        }
        if (l->tls == LTLS_NONE && l->require_tls) {
            snprintf(err, errlen, "%s: [%s] require_tls = yes needs tls = starttls or implicit",
                     path, l->name);
            goto bad;
        }
        if (l->tls == LTLS_NONE && l->auth != LAUTH_NO) {
            snprintf(err, errlen, "%s: [%s] AUTH is only offered over TLS: set tls or auth = no",
                     path, l->name);
            goto bad;
        }
        if (l->tls != LTLS_NONE)
            need_tls = true;
    }
    if (cfg->nlisteners == 0) {
        snprintf(err, errlen, "%s: no listener: add [mx] listen = HOST:PORT", path);
        goto bad;
    }
    if (share_connections(cfg, err, errlen) == -1)
        goto bad;
    if (need_tls && (cfg->tls_cert == NULL || cfg->tls_key == NULL)) {
        snprintf(err, errlen, "%s: [tls] certificate and key are required by the listeners",
                 path);
        goto bad;
    }
    char cerr[512];
    if (config_callout_finish(cfg, cerr, sizeof cerr) == -1 ||
        config_state_finish(cfg, cerr, sizeof cerr) == -1) {
        snprintf(err, errlen, "%s: %s", path, cerr);
        goto bad;
    }
    return cfg;
bad:
    config_free(cfg);
    return NULL;
}

void config_free_cb(void *cfg) { config_free(cfg); }

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    char **strs[] = {&cfg->path,      &cfg->dir,       &cfg->domain,    &cfg->hostname,
                     &cfg->name,      &cfg->postmaster, &cfg->data_dir, &cfg->log_level,
                     &cfg->tls_cert,  &cfg->tls_key,   &cfg->tls_ciphers, &cfg->queue_dir,
                     &cfg->mailbox,   &cfg->passwd_file, &cfg->sender_map, &cfg->lmtp_host, &cfg->lmtp_port,
                     &cfg->dovecot_auth, &cfg->dovecot_userdb, &cfg->out_helo, &cfg->out_tls,
                     &cfg->out_ca_file, &cfg->dns_trust_anchor, &cfg->dns_server,
                     &cfg->pec_signing_key, &cfg->pec_signing_cert, &cfg->pec_trust,
                     &cfg->pec_crl, &cfg->pec_directory, &cfg->pec_service_address,
                     &cfg->pec_tls_policy, &cfg->pec_timezone, &cfg->evidence_path, &cfg->pec_dir_bind_dn,
                     &cfg->pec_dir_password, &cfg->pec_dir_password_file,
                     &cfg->pec_dir_ca_file, &cfg->pec_dir_client_cert, &cfg->pec_dir_client_key,
                     &cfg->pec_dir_signer, &cfg->pec_dir_location_url,
                     &cfg->pec_dir_description, &cfg->pec_signing_cert_next,
                     &cfg->metrics_listen, &cfg->pecd_user, &cfg->pec_pkcs11_module,
                     &cfg->pec_pkcs11_pin_file};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        free(*strs[i]);
    domains_free(cfg->domains);
    free(cfg->local_domains_file);
    for (size_t i = 0; i < cfg->pec_n_crl_urls; i++)
        free(cfg->pec_crl_urls[i]);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].key);
        free(cfg->routes[i].value);
    }
    for (size_t i = 0; i < cfg->ntls_policies; i++) {
        free(cfg->tls_policies[i].key);
        free(cfg->tls_policies[i].value);
    }
    for (size_t i = 0; i < cfg->nlisteners; i++)
        for (size_t j = 0; j < cfg->listeners[i].naddrs; j++)
            free(cfg->listeners[i].addrs[j]);
    config_callout_free(cfg);
    config_state_free(cfg);
    free(cfg);
}

bool config_is_local_domain(const struct config *cfg, const char *domain)
{
    return domains_get(cfg->domains, domain) != NULL;
}

const struct config_listener *config_listener(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

bool config_relay_allowed(const struct config_listener *l, const char *ip)
{
    unsigned char a[16];
    int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(fam, ip, a) != 1)
        return false;
    for (size_t i = 0; i < l->nnets; i++) {
        const struct config_net *n = &l->nets[i];
        if (n->family != fam)
            continue;
        unsigned full = n->bits / 8, rest = n->bits % 8;
        if (memcmp(a, n->addr, full) != 0)
            continue;
        if (rest && ((a[full] ^ n->addr[full]) & (0xFF << (8 - rest))) != 0)
            continue;
        return true;
    }
    return false;
}

static const char *kv_lookup(const struct config_kv *kv, size_t n, const char *domain)
{
    for (size_t i = 0; i < n; i++)
        if (str_ieq(kv[i].key, domain))
            return kv[i].value;
    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i].key, "*") == 0)
            return kv[i].value;
    return NULL;
}

const char *config_route(const struct config *cfg, const char *domain)
{
    return kv_lookup(cfg->routes, cfg->nroutes, domain);
}

const char *config_tls_policy(const struct config *cfg, const char *domain)
{
    return kv_lookup(cfg->tls_policies, cfg->ntls_policies, domain);
}

/* A path component taken from an address must not climb out of the tree. */
static bool safe_component(const char *s)
{
    if (s[0] == '\0' || s[0] == '.')
        return false;
    for (; *s; s++)
        if (*s == '/' || (unsigned char)*s < 0x20)
            return false;
    return true;
}

int config_mailbox_path(const struct config *cfg, const char *local, const char *domain,
                        char *out, size_t outlen)
{
    if (!safe_component(local) || !safe_component(domain))
        return -1;
    /* one mailbox per user whatever the case an address was written in
     * (our users' addresses are case-insensitive, DESIGN.md) */
    char dom[256], loc[256];
    if (str_copy(dom, domain, sizeof dom) >= sizeof dom ||
        str_copy(loc, local, sizeof loc) >= sizeof loc)
        return -1;
    str_lower(dom);
    str_lower(loc);
    local = loc;
    size_t o = 0;
    for (const char *t = cfg->mailbox; *t; t++) {
        const char *ins = NULL;
        char one[2] = {*t, 0};
        char full[1024];
        if (*t == '%' && t[1] != '\0') {
            t++;
            if (*t == 'n')
                ins = local;
            else if (*t == 'd')
                ins = dom;
            else if (*t == 'u') {
                if (str_fmt(full, sizeof full, "%s@%s", local, dom) < 0)
                    return -1;
                ins = full;
            } else if (*t == '%')
                ins = "%";
            else
                return -1;
        } else
            ins = one;
        size_t n = strlen(ins);
        if (o + n >= outlen)
            return -1;
        memcpy(out + o, ins, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

int config_bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return 0;
}
