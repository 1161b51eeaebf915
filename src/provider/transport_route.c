/*
 * transport_route.c - where the relay of transport.c goes and how: next hops
 * of a domain (static [routes], else MX and A/AAAA through libunbound, with
 * DNSSEC state), TLSA records for DANE (RFC 7672), the cache of idle
 * connections and the per-destination limit ([outbound]
 * max_per_destination).  Split from transport.c (see there and
 * transport_int.h).
 */
#include "transport_int.h"
#include "transport.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "smtp/client.h"
#include "smtp/smtp.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <glib.h>
#include <limits.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>

#include "filters/callout.h"

#define IDLE_SECONDS 5
#define PROBE_AFTER_US G_USEC_PER_SEC   /* idle longer than this: RSET before reuse */

/* ---- next hops ------------------------------------------------------------- */

static void add_addrs(struct hop *h)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    if (getaddrinfo(h->host, h->port, &hints, &res) != 0)
        return;
    for (struct addrinfo *a = res; a && h->naddrs < MAX_ADDRS; a = a->ai_next) {
        void *p = a->ai_family == AF_INET ? (void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                          : (void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
        char buf[INET6_ADDRSTRLEN];
        if (inet_ntop(a->ai_family, p, buf, sizeof buf) == NULL)
            continue;
        bool dup = false;
        for (size_t i = 0; i < h->naddrs; i++)
            dup = dup || strcmp(h->addrs[i], buf) == 0;
        if (!dup)
            str_copy(h->addrs[h->naddrs++], buf, sizeof h->addrs[0]);
    }
    freeaddrinfo(res);
}

/* add_addrs for a static route's host, through the t->route_addrs cache
 * (failures are not kept: the next message looks again). */
static void route_addrs(struct transport *t, struct hop *h)
{
    char key[300];
    snprintf(key, sizeof key, "%s|%s", h->host, h->port);
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&t->lock);
    const struct route_addrs *c = g_hash_table_lookup(t->route_addrs, key);
    if (c != NULL && c->until > now) {
        memcpy(h->addrs, c->addrs, sizeof h->addrs);
        h->naddrs = c->naddrs;
    }
    g_mutex_unlock(&t->lock);
    if (h->naddrs > 0)
        return;
    add_addrs(h);
    if (h->naddrs == 0)
        return;
    struct route_addrs *n = g_new(struct route_addrs, 1);
    memcpy(n->addrs, h->addrs, sizeof n->addrs);
    n->naddrs = h->naddrs;
    n->until = now + ROUTE_ADDRS_TTL_US;
    g_mutex_lock(&t->lock);
    g_hash_table_replace(t->route_addrs, g_strdup(key), n);
    g_mutex_unlock(&t->lock);
}

/* A/AAAA of name through unbound; *secure is cleared unless validated. */
static void ub_addrs(struct transport *t, struct hop *h, bool *secure)
{
    static const int types[] = {28, 1};   /* AAAA, A */
    for (size_t k = 0; k < 2; k++) {
        struct ub_result *r = NULL;
        if (ub_resolve(t->ub, h->host, types[k], 1, &r) != 0 || r == NULL) {
            *secure = false;
            continue;
        }
        if (!r->secure)
            *secure = false;
        for (int i = 0; r->havedata && r->data[i] && h->naddrs < MAX_ADDRS; i++) {
            char buf[INET6_ADDRSTRLEN];
            if (inet_ntop(types[k] == 28 ? AF_INET6 : AF_INET, r->data[i], buf, sizeof buf))
                str_copy(h->addrs[h->naddrs++], buf, sizeof h->addrs[0]);
        }
        ub_resolve_free(r);
    }
}

/* Decodes a DNS name in wire format (an MX target) into dotted text. */
static int dname_text(const unsigned char *p, int len, char *out, size_t outlen)
{
    size_t o = 0;
    int i = 0;
    while (i < len && p[i] != 0) {
        int l = p[i++];
        if (l > 63 || i + l > len || o + (size_t)l + 2 > outlen)
            return -1;
        if (o > 0)
            out[o++] = '.';
        memcpy(out + o, p + i, (size_t)l);
        o += (size_t)l;
        i += l;
    }
    out[o] = '\0';
    return 0;
}

struct mx {
    int pref;
    char host[256];
};

static int mx_cmp(const void *a, const void *b)
{
    return ((const struct mx *)a)->pref - ((const struct mx *)b)->pref;
}

void tr_resolve(struct transport *t, const char *domain, struct hops *hs)
{
    memset(hs, 0, sizeof *hs);
    const char *route = config_route(t->cfg, domain);
    if (route != NULL) {
        /* a static route: configuration, so as trustworthy as DNSSEC.  Several
         * next hops (the nodes of one provider) are equals, as MX hosts of
         * one preference (RFC 5321 §5.1): each message starts at the next
         * one in rotation, and the relay tries the others in turn when one
         * is down or refuses the transaction */
        if (strncmp(route, "lmtp:", 5) == 0) {
            hs->lmtp = true;
            route += 5;
        }
        gchar **list = g_strsplit(route, ",", MAX_HOPS + 1);
        size_t n = 0;
        struct hop hop[MAX_HOPS];
        for (size_t i = 0; list[i] != NULL && n < MAX_HOPS; i++) {
            char *buf = g_strstrip(list[i]);
            char *colon = strrchr(buf, ':');
            if (colon == NULL)
                continue;   /* config_load checked the form */
            *colon = '\0';
            char *host = buf;
            if (host[0] == '[') {
                host++;
                char *rb = strchr(host, ']');
                if (rb)
                    *rb = '\0';
            }
            memset(&hop[n], 0, sizeof hop[n]);
            str_copy(hop[n].host, host, sizeof hop[n].host);
            str_copy(hop[n].port, colon + 1, sizeof hop[n].port);
            n++;
        }
        g_strfreev(list);
        static atomic_uint turn;
        unsigned first = n > 1 ? atomic_fetch_add(&turn, 1) % (unsigned)n : 0;
        for (size_t i = 0; i < n; i++) {
            struct hop *h = &hs->h[hs->n];
            *h = hop[(first + i) % n];
            route_addrs(t, h);
            if (h->naddrs > 0)
                hs->n++;
        }
        hs->secure = true;
        if (hs->n == 0) {
            hs->fail_code = 451;
            snprintf(hs->fail, sizeof hs->fail, "4.4.3 route %s: cannot resolve %s", route,
                     n == 1 ? hop[0].host : "any of its hosts");
        }
        return;
    }
    struct ub_result *r = NULL;
    int e = ub_resolve(t->ub, domain, 15 /* MX */, 1, &r);
    if (e != 0 || r == NULL) {
        hs->fail_code = 451;
        snprintf(hs->fail, sizeof hs->fail, "4.4.3 DNS lookup of %s failed: %s", domain,
                 ub_strerror(e));
        return;
    }
    hs->secure = t->dnssec && r->secure;
    if (r->bogus) {
        hs->fail_code = 451;
        snprintf(hs->fail, sizeof hs->fail, "4.4.3 DNSSEC validation of %s MX failed: %s",
                 domain, r->why_bogus ? r->why_bogus : "bogus");
        ub_resolve_free(r);
        return;
    }
    if (r->nxdomain) {
        hs->fail_code = 550;
        snprintf(hs->fail, sizeof hs->fail, "5.1.2 domain %s does not exist", domain);
        ub_resolve_free(r);
        return;
    }
    struct mx mxs[MAX_HOPS];
    size_t n = 0;
    for (int i = 0; r->havedata && r->data[i] && n < MAX_HOPS; i++) {
        if (r->len[i] < 3)
            continue;
        const unsigned char *p = (const unsigned char *)r->data[i];
        mxs[n].pref = p[0] << 8 | p[1];
        if (dname_text(p + 2, r->len[i] - 2, mxs[n].host, sizeof mxs[n].host) == -1)
            continue;
        n++;
    }
    ub_resolve_free(r);
    /* RFC 7505: a single MX of "." with preference 0 says: no mail here */
    if (n == 1 && mxs[0].host[0] == '\0') {
        hs->fail_code = 550;
        snprintf(hs->fail, sizeof hs->fail, "5.1.10 domain %s accepts no mail (null MX)", domain);
        return;
    }
    if (n == 0) {
        /* RFC 5321 §5.1: the implicit MX is the domain itself */
        str_copy(mxs[0].host, domain, sizeof mxs[0].host);
        mxs[0].pref = 0;
        n = 1;
    }
    qsort(mxs, n, sizeof mxs[0], mx_cmp);
    for (size_t i = 0; i < n; i++) {
        if (mxs[i].host[0] == '\0')
            continue;
        struct hop *h = &hs->h[hs->n++];
        str_copy(h->host, mxs[i].host, sizeof h->host);
        snprintf(h->port, sizeof h->port, "%u", (unsigned)t->cfg->mx_port);
        ub_addrs(t, h, &hs->secure);
    }
    if (hs->n == 0 || (hs->n > 0 && hs->h[0].naddrs == 0 && hs->n == 1)) {
        hs->fail_code = 451;
        snprintf(hs->fail, sizeof hs->fail, "4.4.3 no address for the mail servers of %s", domain);
    }
}

/* ---- connection cache and per-destination limit --------------------------------- */

void tr_conn_key(char *key, size_t n, const struct hop *h, const char *addr,
                 enum tls_policy p, bool lmtp)
{
    snprintf(key, n, "%s|%s|%s|%d|%d", h->host, addr, h->port, (int)p, (int)lmtp);
}

struct smtp_client *tr_cache_take(struct transport *t, const char *key)
{
    for (;;) {
        struct smtp_client *c = NULL;
        gint64 now = g_get_monotonic_time(), since = now;
        g_mutex_lock(&t->lock);
        GQueue *q = g_hash_table_lookup(t->idle, key);
        struct idle_conn *ic;
        while (q != NULL && (ic = g_queue_pop_head(q)) != NULL) {
            if (now - ic->since <= (gint64)IDLE_SECONDS * G_USEC_PER_SEC) {
                c = ic->c;
                since = ic->since;
                free(ic);
                break;
            }
            smtp_client_close(ic->c, true);
            free(ic);
        }
        g_mutex_unlock(&t->lock);
        /* one that sat idle may have been closed by the server (a restart,
         * its idle timeout): probed, outside the lock */
        if (c == NULL || now - since < PROBE_AFTER_US || smtp_client_alive(c))
            return c;
        smtp_client_close(c, false);
    }
}

void tr_cache_put(struct transport *t, const char *key, struct smtp_client *c)
{
    struct idle_conn *ic = xmalloc(sizeof *ic);
    ic->c = c;
    ic->since = g_get_monotonic_time();
    g_mutex_lock(&t->lock);
    GQueue *q = g_hash_table_lookup(t->idle, key);
    if (q == NULL) {
        q = g_queue_new();
        g_hash_table_insert(t->idle, g_strdup(key), q);
    }
    g_queue_push_tail(q, ic);
    g_mutex_unlock(&t->lock);
}

void tr_slot_take(struct transport *t, const char *domain)
{
    g_mutex_lock(&t->lock);
    for (;;) {
        uintptr_t n = (uintptr_t)g_hash_table_lookup(t->active, domain);
        if (n < t->cfg->out_max_per_destination) {
            g_hash_table_insert(t->active, g_strdup(domain), (gpointer)(n + 1));
            break;
        }
        g_cond_wait(&t->cond, &t->lock);
    }
    g_mutex_unlock(&t->lock);
}

void tr_slot_give(struct transport *t, const char *domain)
{
    g_mutex_lock(&t->lock);
    uintptr_t n = (uintptr_t)g_hash_table_lookup(t->active, domain);
    if (n <= 1)
        g_hash_table_remove(t->active, domain);
    else
        g_hash_table_insert(t->active, g_strdup(domain), (gpointer)(n - 1));
    g_cond_broadcast(&t->cond);
    g_mutex_unlock(&t->lock);
}

/* ---- DANE (RFC 7672) --------------------------------------------------------------- */

/* TLSA records of _PORT._tcp.HOST; usable only when DNSSEC-validated. */
enum tlsa_state tr_tlsa_lookup(struct transport *t, const struct hop *h,
                               struct tlsa_rec *out, size_t max, size_t *n)
{
    char name[300];
    *n = 0;
    snprintf(name, sizeof name, "_%s._tcp.%s", h->port, h->host);
    struct ub_result *r = NULL;
    if (ub_resolve(t->ub, name, 52 /* TLSA */, 1, &r) != 0 || r == NULL)
        return TLSA_FAILED;
    enum tlsa_state st = TLSA_NONE;
    if (r->bogus)
        st = TLSA_FAILED;   /* RFC 7672 §2.2.1: a bogus answer defers delivery */
    else if (!r->secure)
        st = TLSA_INSECURE;
    else {
        for (int i = 0; r->havedata && r->data[i] && *n < max; i++) {
            const unsigned char *p = (const unsigned char *)r->data[i];
            int len = r->len[i];
            if (len < 4 || (size_t)(len - 3) > sizeof out[0].data)
                continue;
            out[*n].usage = p[0];
            out[*n].selector = p[1];
            out[*n].mtype = p[2];
            memcpy(out[*n].data, p + 3, (size_t)(len - 3));
            out[*n].len = (size_t)(len - 3);
            (*n)++;
        }
        st = *n > 0 ? TLSA_FOUND : TLSA_NONE;
    }
    ub_resolve_free(r);
    return st;
}
