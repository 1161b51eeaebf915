/*
 * config_callout.c - the callout sections of pecd.conf: [antivirus] (clamd),
 * [milter.NAME] (one per filter) and [callouts] (which callouts run for
 * whom: consent per domain and per user, RFC 3238 §2.1).  Split from
 * config.c, which calls in through config_callout_key() for sections it does
 * not know.  docs/antivirus.md, docs/milter.md and docs/opes.md describe them.
 */
#include "config.h"
#include "config_int.h"
#include "domains.h"
#include "lib.h"

#include <glib.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

static int duration(const char *name, const char *value, uint64_t *dst, uint64_t min,
                    char *err, size_t errlen)
{
    uint64_t v;
    if (parse_duration(value, &v) == -1)
        return config_bad(err, errlen, "%s: '%s' is not a duration (e.g. 30s, 5m, 12h)", name, value);
    if (v < min)
        return config_bad(err, errlen, "%s: %s is below the minimum %llus", name, value,
                   (unsigned long long)min);
    *dst = v;
    return 1;
}

static int boolean(const char *name, const char *value, bool *dst, char *err, size_t errlen)
{
    if (parse_bool(value, dst) == -1)
        return config_bad(err, errlen, "%s: '%s' is not yes or no", name, value);
    return 1;
}

/* "unix:/path" or "tcp:HOST:PORT" */
static bool valid_clamd(const char *v)
{
    if (strncmp(v, "unix:/", 6) == 0)
        return strlen(v) < 108 + 5;
    if (strncmp(v, "tcp:", 4) != 0)
        return false;
    const char *colon = strrchr(v + 4, ':');
    return colon != NULL && colon != v + 4 && colon[1] != '\0' &&
           strspn(colon + 1, "0123456789") == strlen(colon + 1) && atoi(colon + 1) > 0 &&
           atoi(colon + 1) < 65536;
}

static int antivirus_key(struct config *cfg, const char *name, const char *value, char *err,
                         size_t errlen)
{
    if (strcmp(name, "clamd") == 0) {
        if (!valid_clamd(value))
            return config_bad(err, errlen, "clamd: '%s' is not unix:/PATH or tcp:HOST:PORT", value);
        set_str(&cfg->av_clamd, value);
        return 1;
    }
    if (strcmp(name, "enabled") == 0)
        return boolean(name, value, &cfg->av_enabled, err, errlen);
    if (strcmp(name, "fail_open") == 0)
        return boolean(name, value, &cfg->av_fail_open, err, errlen);
    if (strcmp(name, "timeout") == 0)
        return duration(name, value, &cfg->av_timeout, 1, err, errlen);
    if (strcmp(name, "quarantine_retention") == 0)
        return duration(name, value, &cfg->av_quarantine_retention, 86400, err, errlen);
    if (strcmp(name, "pool_size") == 0) {
        uint64_t v;
        if (parse_size(value, &v) == -1 || v < 1 || v > 64)
            return config_bad(err, errlen, "pool_size: '%s' is not a number from 1 to 64", value);
        cfg->av_pool_size = v;
        return 1;
    }
    if (strcmp(name, "quarantine") == 0) {
        set_str(&cfg->av_quarantine, value);
        return 1;
    }
    return config_bad(err, errlen, "unknown key '%s' in [antivirus]", name);
}

static struct config_milter *milter_get(struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nmilters; i++)
        if (strcmp(cfg->milters[i].name, name) == 0)
            return &cfg->milters[i];
    if (cfg->nmilters >= CONFIG_MAX_MILTERS)
        return NULL;
    struct config_milter *m = &cfg->milters[cfg->nmilters++];
    m->name = xstrdup(name);
    m->phase = CONFIG_PHASE_INCOMING;
    m->dflt = CONFIG_FAIL_TEMPFAIL;
    m->timeout = 10;
    return m;
}

static int milter_key(struct config *cfg, const char *mname, const char *name,
                      const char *value, char *err, size_t errlen)
{
    if (*mname == '\0' || strlen(mname) > 40 || strspn(mname, NAME_CHARS) != strlen(mname) ||
        strcmp(mname, "antivirus") == 0)
        return config_bad(err, errlen, "[milter.%s]: a filter name is 1-40 letters, digits, '-' or "
                   "'_' and not 'antivirus'", mname);
    struct config_milter *m = milter_get(cfg, mname);
    if (m == NULL)
        return config_bad(err, errlen, "at most %d [milter.NAME] sections", CONFIG_MAX_MILTERS);
    if (strcmp(name, "socket") == 0) {
        bool unix_ok = strncmp(value, "unix:/", 6) == 0 && strlen(value) < 108 + 5;
        bool inet_ok = strncmp(value, "inet:", 5) == 0 && strlen(value) > 5 &&
                       (strchr(value + 5, '@') != NULL || strchr(value + 5, ':') != NULL);
        if (!unix_ok && !inet_ok)
            return config_bad(err, errlen, "socket: '%s' is not unix:/PATH, inet:PORT@HOST or "
                       "inet:HOST:PORT", value);
        set_str(&m->socket, value);
        return 1;
    }
    if (strcmp(name, "phase") == 0) {
        m->phase = strcmp(value, "incoming") == 0   ? CONFIG_PHASE_INCOMING
                   : strcmp(value, "outgoing") == 0 ? CONFIG_PHASE_OUTGOING
                   : strcmp(value, "both") == 0     ? CONFIG_PHASE_INCOMING | CONFIG_PHASE_OUTGOING
                                                    : 0;
        if (m->phase == 0)
            return config_bad(err, errlen, "phase: '%s' is not incoming, outgoing or both", value);
        return 1;
    }
    if (strcmp(name, "default") == 0) {
        m->dflt = strcmp(value, "tempfail") == 0 ? CONFIG_FAIL_TEMPFAIL
                  : strcmp(value, "accept") == 0 ? CONFIG_FAIL_ACCEPT
                  : strcmp(value, "reject") == 0 ? CONFIG_FAIL_REJECT
                                                 : -1;
        if (m->dflt == -1)
            return config_bad(err, errlen, "default: '%s' is not tempfail, accept or reject", value);
        return 1;
    }
    if (strcmp(name, "timeout") == 0)
        return duration(name, value, &m->timeout, 1, err, errlen);
    return config_bad(err, errlen, "unknown key '%s' in [milter.%s]", name, mname);
}

static int callouts_key(struct config *cfg, const char *name, const char *value, char *err,
                        size_t errlen)
{
    if (strcmp(name, "default") == 0) {
        set_str(&cfg->callouts_default, value);
        return 1;
    }
    if (strcmp(name, "workers") == 0) {
        uint64_t v;
        if (parse_size(value, &v) == -1 || v < 1 || v > 64)
            return config_bad(err, errlen, "workers: '%s' is not a number from 1 to 64", value);
        cfg->callout_workers = v;
        return 1;
    }
    /* ADDRESS or DOMAIN = list */
    const char *dom = strrchr(name, '@');
    dom = dom ? dom + 1 : name;
    if (*dom == '\0' || strchr(dom, '.') == NULL || strlen(name) > 254)
        return config_bad(err, errlen, "[callouts] '%s' is not default, workers, a domain or an "
                   "address", name);
    if (cfg->ncallout_policies >= CONFIG_MAX_CALLOUT_POLICIES)
        return config_bad(err, errlen, "at most %d entries in [callouts]", CONFIG_MAX_CALLOUT_POLICIES);
    struct config_kv *kv = &cfg->callout_policies[cfg->ncallout_policies++];
    kv->key = xstrdup(name);
    str_lower(kv->key);
    kv->value = xstrdup(value);
    return 1;
}

void config_callout_defaults(struct config *cfg)
{
    cfg->av_enabled = true;
    cfg->av_timeout = 30;
    cfg->av_pool_size = 4;
    cfg->av_fail_open = false;
    cfg->av_quarantine_retention = 913ULL * 86400;   /* 30 months (RFC 6109 §3.2.3) */
    cfg->callout_workers = 4;
}

int config_callout_key(struct config *cfg, const char *section, const char *name,
                       const char *value, char *err, size_t errlen)
{
    if (strcmp(section, "antivirus") == 0)
        return antivirus_key(cfg, name, value, err, errlen);
    if (strncmp(section, "milter.", 7) == 0)
        return milter_key(cfg, section + 7, name, value, err, errlen);
    if (strcmp(section, "callouts") == 0)
        return callouts_key(cfg, name, value, err, errlen);
    return -1;
}

/* Every name in list is antivirus or a configured milter ("none" = empty). */
static int check_list(const struct config *cfg, const char *key, const char *list, char *err,
                      size_t errlen)
{
    char *copy = xstrdup(list), *save = NULL;
    int r = 0;
    for (char *t = strtok_r(copy, ", \t", &save); t && r == 0; t = strtok_r(NULL, ", \t", &save))
        if (strcmp(t, "antivirus") != 0 && strcmp(t, "none") != 0 && config_milter(cfg, t) == NULL) {
            snprintf(err, errlen, "[callouts] %s: '%s' is neither antivirus nor a [milter.%s] "
                     "section", key, t, t);
            r = -1;
        }
    free(copy);
    return r;
}

int config_callout_finish(struct config *cfg, char *err, size_t errlen)
{
    if (cfg->callouts_default == NULL)
        cfg->callouts_default = xstrdup("antivirus");
    if (cfg->av_clamd == NULL)
        cfg->av_enabled = false;
    if (cfg->av_quarantine == NULL) {
        char buf[PATH_MAX];
        snprintf(buf, sizeof buf, "%s/quarantine", cfg->data_dir);
        cfg->av_quarantine = xstrdup(buf);
    } else if (cfg->av_quarantine[0] != '/') {
        char buf[PATH_MAX];
        snprintf(buf, sizeof buf, "%s/%s", cfg->dir, cfg->av_quarantine);
        set_str(&cfg->av_quarantine, buf);
    }
    for (size_t i = 0; i < cfg->nmilters; i++)
        if (cfg->milters[i].socket == NULL) {
            snprintf(err, errlen, "[milter.%s] needs socket = unix:/PATH or inet:PORT@HOST",
                     cfg->milters[i].name);
            return -1;
        }
    if (check_list(cfg, "default", cfg->callouts_default, err, errlen) == -1)
        return -1;
    for (size_t i = 0; i < cfg->ncallout_policies; i++) {
        const struct config_kv *kv = &cfg->callout_policies[i];
        if (check_list(cfg, kv->key, kv->value, err, errlen) == -1)
            return -1;
        const struct domain *d = strchr(kv->key, '@') ? NULL : domains_get(cfg->domains, kv->key);
        if (d != NULL && d->callouts != NULL) {
            snprintf(err, errlen, "callouts for %s are set twice: in [callouts] and on line %u of "
                     "%s", d->name, d->line, d->file);
            return -1;
        }
    }
    /* the domains file's callouts= lists */
    size_t n;
    const struct domain **all = domains_sorted(cfg->domains, &n);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (all[i]->callouts != NULL &&
            check_list(cfg, all[i]->name, all[i]->callouts, err, errlen) == -1) {
            char tail[400];
            str_copy(tail, err, sizeof tail);
            snprintf(err, errlen, "%s:%u: %s", all[i]->file, all[i]->line, tail);
            rc = -1;
        }
    g_free(all);
    return rc;
}

void config_callout_free(struct config *cfg)
{
    free(cfg->av_clamd);
    free(cfg->av_quarantine);
    free(cfg->callouts_default);
    for (size_t i = 0; i < cfg->nmilters; i++) {
        free(cfg->milters[i].name);
        free(cfg->milters[i].socket);
    }
    for (size_t i = 0; i < cfg->ncallout_policies; i++) {
        free(cfg->callout_policies[i].key);
        free(cfg->callout_policies[i].value);
    }
}

const struct config_milter *config_milter(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nmilters; i++)
        if (strcmp(cfg->milters[i].name, name) == 0)
            return &cfg->milters[i];
    return NULL;
}

const char *config_callouts_for(const struct config *cfg, const char *address)
{
    const char *at = strrchr(address, '@');
    const char *dom = at ? at + 1 : NULL;
    const char *by_domain = NULL;
    for (size_t i = 0; i < cfg->ncallout_policies; i++) {
        const struct config_kv *kv = &cfg->callout_policies[i];
        if (strchr(kv->key, '@') != NULL) {
            if (strcasecmp(kv->key, address) == 0)
                return kv->value;
        } else if (dom != NULL && by_domain == NULL && strcasecmp(kv->key, dom) == 0) {
            by_domain = kv->value;
        }
    }
    if (by_domain != NULL)
        return by_domain;
    const struct domain *d = dom ? domains_get(cfg->domains, dom) : NULL;
    return d != NULL && d->callouts != NULL ? d->callouts : cfg->callouts_default;
}
