/*
 * pecd_reload.c - SIGHUP (systemctl reload): read pecd.conf again and apply
 * every setting that can change without dropping a session.
 *
 * Order: the new file is read and checked whole (config_load), then the
 * signer loads the keys it names (signing, TLS, the domains' own: a
 * renewal), the new TLS context is built and the directory's settings
 * prepared; any failure stops there with the file, line and reason, and
 * nothing has changed (but for the signer's keys when the directory's
 * password file is the one that fails).
 * Then the settings that need a restart (the table below: addresses bound,
 * directories, thread counts, the signing identity...) are taken back from
 * the configuration in force - their strings are swapped, not copied, so a
 * pointer a module kept into them stays valid - and each that differed is
 * logged by name.  Then every module is given the new configuration
 * (atomic pointer stores) and the old one is retired: it is freed once no
 * worker thread's hold that began before the swap is open (config_gen.c).
 *
 * Counters (lib/metrics.c) are process-wide and are not touched.
 */
#include "pecd_int.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "lib/metrics.h"
#include "filters/callout.h"
#include "keys/keys.h"
#include "provider/housekeeping.h"
#include "provider/notices.h"
#include "provider/cluster.h"
#include "provider/roles.h"
#include "provider/transport.h"
#include "queue/queue.h"
#include "smtp/smtp.h"
#include "store/store.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum kind { K_STR, K_U64, K_BOOL, K_INT };

/* The settings a running pecd cannot change: the value in force stays until
 * a restart (docs/configuration.md says which, key by key). */
static const struct restart_key {
    const char *section, *key;
    size_t off;
    enum kind kind;
} restart_keys[] = {
#define K(s, k, f, t) {s, k, offsetof(struct config, f), t}
    K("provider", "domain", domain, K_STR),
    K("provider", "hostname", hostname, K_STR),
    K("provider", "name", name, K_STR),
    K("provider", "postmaster", postmaster, K_STR),
    K("provider", "data_dir", data_dir, K_STR),
    K("queue", "directory", queue_dir, K_STR),
    K("state", "database", state_database, K_STR),
    K("state", "node", state_node, K_STR),
    K("state", "password_file", state_password_file, K_STR),
    K("state", "connect_timeout", state_connect_timeout, K_U64),
    K("queue", "delivery_workers", delivery_workers, K_U64),
    K("queue", "worker_nice", worker_nice, K_U64),
    K("queue", "sync", sync_fs, K_BOOL),
    K("queue", "commit_delay", commit_delay_us, K_U64),
    K("users", "passwd_file", passwd_file, K_STR),
    K("users", "users", dovecot_auth, K_STR),
    K("users", "userdb", dovecot_userdb, K_STR),
    K("users", "timeout", users_timeout, K_U64),
    K("users", "senders", sender_map, K_STR),
    K("outbound", "ca_file", out_ca_file, K_STR),
    K("pecd", "user", pecd_user, K_STR),
    K("pec", "pkcs11_module", pec_pkcs11_module, K_STR),
    K("pec", "pkcs11_pin_file", pec_pkcs11_pin_file, K_STR),
    K("outbound", "dns_server", dns_server, K_STR),
    K("outbound", "dns_trust_anchor", dns_trust_anchor, K_STR),
    K("limits", "auth_failure_window", auth_failure_window, K_U64),
    K("limits", "auth_track_max", auth_track_max, K_U64),
    K("pec", "enabled", pec, K_BOOL),
    K("pec", "service_address", pec_service_address, K_STR),
    K("pec", "timezone", pec_timezone, K_STR),
    K("evidence", "path", evidence_path, K_STR),
    K("callouts", "workers", callout_workers, K_U64),
    K("metrics", "listen", metrics_listen, K_STR),
#undef K
};

static bool differ(const struct config *a, const struct config *b, const struct restart_key *k)
{
    const char *pa = (const char *)a + k->off, *pb = (const char *)b + k->off;
    switch (k->kind) {
    case K_STR: {
        const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
        return (sa == NULL) != (sb == NULL) || (sa != NULL && strcmp(sa, sb) != 0);
    }
    case K_U64:
        return *(const uint64_t *)pa != *(const uint64_t *)pb;
    case K_BOOL:
        return *(const bool *)pa != *(const bool *)pb;
    case K_INT:
        return *(const int *)pa != *(const int *)pb;
    }
    return false;
}

static void swap_key(struct config *a, struct config *b, const struct restart_key *k)
{
    char *pa = (char *)a + k->off, *pb = (char *)b + k->off;
    size_t n = k->kind == K_STR ? sizeof(char *) : k->kind == K_U64 ? sizeof(uint64_t)
               : k->kind == K_BOOL                                  ? sizeof(bool)
                                                                    : sizeof(int);
    char tmp[sizeof(uint64_t)];
    memcpy(tmp, pa, n);
    memcpy(pa, pb, n);
    memcpy(pb, tmp, n);
}

static bool same_listeners(const struct config *a, const struct config *b)
{
    if (a->nlisteners != b->nlisteners)
        return false;
    for (size_t i = 0; i < a->nlisteners; i++) {
        const struct config_listener *x = &a->listeners[i], *y = &b->listeners[i];
        if (strcmp(x->name, y->name) != 0 || x->tls != y->tls || x->naddrs != y->naddrs)
            return false;
        for (size_t j = 0; j < x->naddrs; j++)
            if (strcmp(x->addrs[j], y->addrs[j]) != 0)
                return false;
    }
    return true;
}

/* Gives the new configuration the values in force of the restart keys
 * (swapping them), logs each that differed and names it in names.  Returns
 * how many differed. */
static size_t keep_restart_keys(struct config *cur, struct config *n, GString *names)
{
    size_t changed = 0;
    for (size_t i = 0; i < sizeof restart_keys / sizeof restart_keys[0]; i++) {
        const struct restart_key *k = &restart_keys[i];
        if (differ(cur, n, k)) {
            changed++;
            log_warn("reload: [%s] %s changed: it needs a restart (the value in force "
                     "stays until then)", k->section, k->key);
            g_string_append_printf(names, "%s[%s] %s", names->len ? ", " : "", k->section,
                                   k->key);
        }
        swap_key(cur, n, k);
    }
    if (!same_listeners(cur, n)) {
        changed++;
        for (size_t i = 0; i < CONFIG_MAX_LISTENERS; i++) {
            const char *nm = i < cur->nlisteners ? cur->listeners[i].name
                             : i < n->nlisteners ? n->listeners[i].name
                                                 : NULL;
            const struct config_listener *x = config_listener(cur, nm ? nm : "");
            const struct config_listener *y = config_listener(n, nm ? nm : "");
            bool same = x && y && x->tls == y->tls && x->naddrs == y->naddrs;
            for (size_t j = 0; same && j < x->naddrs; j++)
                same = strcmp(x->addrs[j], y->addrs[j]) == 0;
            if (nm == NULL || same)
                continue;
            log_warn("reload: [%s] listen or tls changed (or the section was added or "
                     "removed): it needs a restart (the listeners in force stay until then)",
                     nm);
            g_string_append_printf(names, "%s[%s] listen", names->len ? ", " : "", nm);
        }
        struct config_listener tmp[CONFIG_MAX_LISTENERS];
        memcpy(tmp, cur->listeners, sizeof tmp);
        memcpy(cur->listeners, n->listeners, sizeof tmp);
        memcpy(n->listeners, tmp, sizeof tmp);
        size_t t = cur->nlisteners;
        cur->nlisteners = n->nlisteners;
        n->nlisteners = t;
    }
    return changed;
}

void pecd_msg_filter(void *msg, const struct smtp_txn *txn, smtp_filter_done done, void *cbarg);

/* A reload refused before anything changed. */
static void reload_refused(struct pecd *d, struct config *n, char *dir_password)
{
    if (dir_password != NULL) {
        explicit_bzero(dir_password, strlen(dir_password));
        free(dir_password);
    }
    config_free(n);
    metric_inc(&metric_reloads, "error", NULL);
    pecd_service_ready(d);
}

void pecd_reload(struct pecd *d)
{
    pecd_service_reloading();
    log_info("SIGHUP: reading %s again", d->conf_path);
    char err[1024];
    struct config *n = config_load(d->conf_path, err, sizeof err);
    if (n == NULL) {
        log_err("reload: %s; nothing changed", err);
        reload_refused(d, NULL, NULL);
        return;
    }
    /* every file the reload reads, before anything changes: the directory's
     * password file first, as the signer's keys cannot be put back */
    char *dir_password = NULL;
    if (d->roles != NULL && roles_config_read(n, &dir_password, err, sizeof err) == -1) {
        log_err("reload: %s: %s; nothing changed", d->conf_path, err);
        reload_refused(d, n, NULL);
        return;
    }
    /* the signer reads pecd.conf again and loads the signing key and
     * certificate, the TLS key and certificate and the local domains' own
     * from it (a renewal): all of them, or none */
    SSL_CTX *tls = NULL;
    if (d->ps.keys != NULL && keys_client_reload(d->ps.keys, err, sizeof err) == -1) {
        log_err("reload: %s: keys: %s; nothing changed", d->conf_path, err);
        reload_refused(d, n, dir_password);
        return;
    }
    if (n->tls_cert != NULL && (tls = pecd_privsep_tls(&d->ps, n, err, sizeof err)) == NULL) {
        log_err("reload: %s: [tls]: %s; nothing changed but the keys read again by the "
                "signer (the TLS key in force keeps answering)", d->conf_path, err);
        reload_refused(d, n, dir_password);
        return;
    }
    GString *names = g_string_new(NULL);
    size_t kept = keep_restart_keys(d->cfg, n, names);
    if (d->roles != NULL)
        roles_set_config(d->roles, n, true, dir_password);
    struct config *old = d->cfg;
    d->cfg = n;
    smtp_server_set_config(d->smtp, n);
    if (tls != NULL) {
        smtp_server_set_tls(d->smtp, tls);
        /* sessions hold their own SSL references; the old context is
         * freed when the last one ends */
        SSL_CTX_free(d->tls);
        d->tls = tls;
    }
    queue_set_config(d->queue, n);
    transport_set_config(d->transport, n);
    bool filter = callout_stage_set_config(d->callouts, n);
    smtp_server_hooks(d->smtp)->msg_filter = filter ? pecd_msg_filter : NULL;
    notices_set_config(d->notices, n);
    housekeeping_set_config(d->housekeeping, n);
    cluster_set_config(d->cluster, n);
    users_db_reload(d->users);
    queue_rescan(d->queue);      /* messages released from hold/ (pecctl queue release) */
    enum log_level lvl = LOG_LVL_INFO;
    if (n->log_level != NULL)
        log_level_parse(n->log_level, &lvl);
    log_set_level(lvl);
    log_set_json(n->log_json);
    config_retire(config_free_cb, old);
    pecd_metrics_certificates(d);
    if (d->roles != NULL)      /* a renewal: is the new certificate in the directory? */
        roles_check_certificates(d->roles);
    metric_inc(&metric_reloads, kept ? "partial" : "ok", NULL);
    if (kept > 0)
        log_info("reload: %s applied, but for %zu setting%s that need%s a restart: %s",
                 d->conf_path, kept, kept == 1 ? "" : "s", kept == 1 ? "s" : "", names->str);
    else
        log_info("reload: %s applied", d->conf_path);
    g_string_free(names, TRUE);
    pecd_service_ready(d);
}

void pecd_reload_free(struct pecd *d)
{
    (void)d;
    config_retired_flush();
}
