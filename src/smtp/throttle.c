/*
 * throttle.c - counts of authentication failures per key (a client address
 * or an account) over a fixed window, in bounded memory; and the key of a
 * client address (IPv4 as it is, IPv6 by its /64).
 *
 * Interface (smtp.h): smtp_throttle_new/free, _count, _fail, _clear, _size;
 * smtp_client_key.  Pure logic: the caller passes the time, so the unit tests
 * (tests/unit/test_smtp_throttle.c) drive expiry and the cap directly.
 *
 * An entry is made by a key's first failure and forgotten `window` after it,
 * whatever came later: a lock (count at the limit) lasts at most one window,
 * and a client that keeps retrying does not keep itself locked for ever.
 * Entries therefore expire in the order they were made, so one FIFO queue
 * holds them: expired entries are dropped from its head on every call, and
 * when the table is full the oldest entry makes room for a new one.  An
 * attacker who rotates addresses or account names pushes out old entries;
 * memory never grows past max_entries (docs/operator-guide.md).
 */
#include "smtp.h"

#include <arpa/inet.h>
#include <glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char *key;
    unsigned count;
    int64_t first_ms;          /* the failure that made the entry */
    GList *link;               /* in t->fifo */
};

struct smtp_throttle {
    GHashTable *by_key;        /* key -> struct entry (owns it) */
    GQueue fifo;               /* entries, oldest first */
    size_t max_entries;
    int64_t window_ms;
};

static void entry_free(gpointer p)
{
    struct entry *e = p;
    g_free(e->key);
    g_free(e);
}

struct smtp_throttle *smtp_throttle_new(size_t max_entries, int64_t window_ms)
{
    struct smtp_throttle *t = g_new0(struct smtp_throttle, 1);
    t->by_key = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, entry_free);
    g_queue_init(&t->fifo);
    t->max_entries = max_entries < 1 ? 1 : max_entries;
    t->window_ms = window_ms < 1 ? 1 : window_ms;
    return t;
}

void smtp_throttle_free(struct smtp_throttle *t)
{
    if (t == NULL)
        return;
    g_queue_clear(&t->fifo);
    g_hash_table_destroy(t->by_key);
    g_free(t);
}

static void drop(struct smtp_throttle *t, struct entry *e)
{
    g_queue_delete_link(&t->fifo, e->link);
    g_hash_table_remove(t->by_key, e->key);   /* frees e */
}

/* Drops the entries whose window has passed (they sit at the head). */
static void expire(struct smtp_throttle *t, int64_t now_ms)
{
    struct entry *e;
    while ((e = g_queue_peek_head(&t->fifo)) != NULL && now_ms - e->first_ms >= t->window_ms)
        drop(t, e);
}

unsigned smtp_throttle_count(struct smtp_throttle *t, const char *key, int64_t now_ms)
{
    expire(t, now_ms);
    struct entry *e = g_hash_table_lookup(t->by_key, key);
    return e ? e->count : 0;
}

unsigned smtp_throttle_fail(struct smtp_throttle *t, const char *key, int64_t now_ms)
{
    return smtp_throttle_add(t, key, 1, now_ms);
}

unsigned smtp_throttle_add(struct smtp_throttle *t, const char *key, unsigned n, int64_t now_ms)
{
    expire(t, now_ms);
    struct entry *e = g_hash_table_lookup(t->by_key, key);
    if (e != NULL) {
        e->count = e->count > UINT_MAX - n ? UINT_MAX : e->count + n;
        return e->count;
    }
    while (g_hash_table_size(t->by_key) >= t->max_entries)
        drop(t, g_queue_peek_head(&t->fifo));
    e = g_new0(struct entry, 1);
    e->key = g_strdup(key);
    e->count = n;
    /* a clock that went back must not put the entry before older ones */
    struct entry *last = g_queue_peek_tail(&t->fifo);
    e->first_ms = last != NULL && last->first_ms > now_ms ? last->first_ms : now_ms;
    g_queue_push_tail(&t->fifo, e);
    e->link = g_queue_peek_tail_link(&t->fifo);
    g_hash_table_insert(t->by_key, e->key, e);
    return n;
}

void smtp_throttle_clear(struct smtp_throttle *t, const char *key)
{
    struct entry *e = g_hash_table_lookup(t->by_key, key);
    if (e != NULL)
        drop(t, e);
}

size_t smtp_throttle_size(const struct smtp_throttle *t)
{
    return g_hash_table_size(t->by_key);
}

void smtp_client_key(const char *ip, char *out, size_t outlen)
{
    struct in6_addr a6;
    if (inet_pton(AF_INET6, ip, &a6) != 1) {
        snprintf(out, outlen, "%s", ip);    /* IPv4 (or "unknown") */
        return;
    }
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        /* ::ffff:a.b.c.d from a dual-stack socket: the IPv4 client itself */
        inet_ntop(AF_INET, &a6.s6_addr[12], out, (socklen_t)outlen);
        return;
    }
    /* one IPv6 client usually holds a whole /64 (RFC 4291 §2.5.4 interface ids) */
    memset(&a6.s6_addr[8], 0, 8);
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a6, buf, sizeof buf);
    snprintf(out, outlen, "%s/64", buf);
}
