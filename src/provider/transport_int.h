/*
 * transport_int.h - private to transport.c and transport_route.c: the struct
 * transport, next hops, and the lookups and connection cache of
 * transport_route.c that the relay uses.
 *
 * Purpose: what the relay (transport.c) asks of the routing and the
 * connection cache (transport_route.c).
 * Threads: delivery threads, several at once: idle, active and route_addrs
 * under lock (cond wakes a thread waiting for a per-destination slot); the
 * resolver (libunbound's ub_ctx) is shared; cfg and callouts are atomic
 * pointers read under a configuration hold.
 * Ownership: tr_cache_take hands an idle connection to the caller, who
 * gives it back with tr_cache_put or closes it; a slot taken is given back
 * by the same thread; hops are filled into the caller's struct.
 * Errors: a failed lookup is in hops (fail_code 4xx/5xx, fail) and
 * tlsa_state (TLSA_FAILED); the cache answers NULL when empty.
 */
#ifndef PEC_PROVIDER_TRANSPORT_INT_H
#define PEC_PROVIDER_TRANSPORT_INT_H

#include "transport.h"
#include "smtp/client.h"

#include <arpa/inet.h>
#include <glib.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <time.h>

#define MAX_HOPS 16
#define MAX_ADDRS 8

struct idle_conn {
    struct smtp_client *c;
    gint64 since;        /* g_get_monotonic_time() when it became idle */
};

struct transport {
    /* swapped by a reload (transport_set_config): read under a configuration
     * hold (lib/config.h) */
    const struct config *_Atomic cfg;
    SSL_CTX *client_ctx;
    struct ub_ctx *ub;
    bool dnssec;
    GMutex lock;
    GCond cond;
    GHashTable *idle;       /* "host|addr|port|policy" -> GQueue of idle_conn */
    GHashTable *active;     /* domain -> count of running deliveries */
    GHashTable *route_addrs;  /* static route's host|port -> struct route_addrs (below) */
    bool (*is_pec)(void *arg, const char *domain);
    void *is_pec_arg;
    enum users_found (*user_lookup)(void *arg, const char *addr);
    void *user_lookup_arg;
    bool (*user_quota)(void *arg, const char *addr, uint64_t *octets);
    void *user_quota_arg;
    struct callouts *_Atomic callouts;  /* the outgoing milters (DKIM signing), or NULL */
};

struct hop {
    char host[256];
    char port[8];
    char addrs[MAX_ADDRS][INET6_ADDRSTRLEN];
    size_t naddrs;
};

struct hops {
    struct hop h[MAX_HOPS];
    size_t n;
    bool lmtp;              /* a route "lmtp:HOST:PORT" (RFC 2033, e.g. Dovecot) */
    bool secure;            /* DNSSEC-validated, or a static route */
    int fail_code;          /* 0 ok; 4xx/5xx when the lookup failed */
    char fail[256];
};

/* The addresses of a static route's host, kept ROUTE_ADDRS_TTL_US: glibc
 * reads /etc/hosts (and stats nsswitch.conf and resolv.conf) at every
 * getaddrinfo, once per relayed message otherwise. */
#define ROUTE_ADDRS_TTL_US (10 * G_USEC_PER_SEC)
struct route_addrs {
    char addrs[MAX_ADDRS][INET6_ADDRSTRLEN];
    size_t naddrs;
    gint64 until;           /* g_get_monotonic_time() */
};

enum tlsa_state { TLSA_NONE, TLSA_FOUND, TLSA_INSECURE, TLSA_FAILED };

/* transport_route.c (comments at the definitions) */
void tr_resolve(struct transport *t, const char *domain, struct hops *hs);
enum tlsa_state tr_tlsa_lookup(struct transport *t, const struct hop *h,
                               struct tlsa_rec *out, size_t max, size_t *n);
void tr_conn_key(char *key, size_t n, const struct hop *h, const char *addr,
                 enum tls_policy p, bool lmtp);
struct smtp_client *tr_cache_take(struct transport *t, const char *key);
void tr_cache_put(struct transport *t, const char *key, struct smtp_client *c);
void tr_slot_take(struct transport *t, const char *domain);
void tr_slot_give(struct transport *t, const char *domain);

#endif
