/*
 * config_gen.c - when a configuration replaced by a reload (and the objects
 * built from it: a TLS context, a milter pool) can be freed.
 *
 * The event loop swaps the modules' configuration pointers (atomic stores)
 * and then retires the old objects.  A worker thread brackets each unit of
 * work (a queue batch, a callout job, a turn of the timers' thread) with
 * config_hold_begin()/config_hold_end(); an object retired at generation g
 * is freed once no hold that began before g is still open: a hold that
 * began after the swap can only have read the new pointers.  This is the
 * grace period of read-copy-update, with a mutex instead of per-CPU
 * counters: two lock round trips per unit of work, nothing on each read.
 */
#include "lib/config.h"
#include "lib/lib.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

struct hold {
    uint64_t start;              /* the generation when it began */
    bool open;
    struct hold *prev, *next;
};

struct retired {
    void (*fn)(void *);
    void *arg;
    uint64_t gen;
    struct retired *next;
};

static pthread_mutex_t gen_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t generation;
static struct hold *holds;
static struct retired *retired;
static _Thread_local struct hold my_hold;

/* Takes off the list what no open hold can still see (the caller holds
 * gen_lock); run_freed() frees it after the lock is given back, so a free
 * function may take locks of its own (join a thread...). */
static struct retired *collect(void)
{
    struct retired *done = NULL;
    uint64_t min = UINT64_MAX;
    for (struct hold *h = holds; h; h = h->next)
        if (h->start < min)
            min = h->start;
    struct retired **pp = &retired;
    while (*pp != NULL) {
        struct retired *r = *pp;
        if (min >= r->gen) {
            *pp = r->next;
            r->next = done;
            done = r;
        } else {
            pp = &r->next;
        }
    }
    return done;
}

static void run_freed(struct retired *r)
{
    while (r != NULL) {
        struct retired *next = r->next;
        r->fn(r->arg);
        free(r);
        r = next;
    }
}

void config_hold_begin(void)
{
    struct hold *h = &my_hold;
    pthread_mutex_lock(&gen_lock);
    if (!h->open) {
        h->start = generation;
        h->open = true;
        h->prev = NULL;
        h->next = holds;
        if (holds)
            holds->prev = h;
        holds = h;
    }
    pthread_mutex_unlock(&gen_lock);
}

void config_hold_end(void)
{
    struct hold *h = &my_hold;
    struct retired *done = NULL;
    pthread_mutex_lock(&gen_lock);
    if (h->open) {
        if (h->prev)
            h->prev->next = h->next;
        else
            holds = h->next;
        if (h->next)
            h->next->prev = h->prev;
        h->open = false;
        if (retired != NULL)
            done = collect();
    }
    pthread_mutex_unlock(&gen_lock);
    run_freed(done);
}

void config_retire(void (*fn)(void *), void *arg)
{
    struct retired *r = xmalloc(sizeof *r);
    if (r == NULL)
        abort();
    pthread_mutex_lock(&gen_lock);
    r->fn = fn;
    r->arg = arg;
    r->gen = ++generation;
    r->next = retired;
    retired = r;
    struct retired *done = collect();
    pthread_mutex_unlock(&gen_lock);
    run_freed(done);
}

size_t config_retired_pending(void)
{
    size_t n = 0;
    pthread_mutex_lock(&gen_lock);
    for (struct retired *r = retired; r; r = r->next)
        n++;
    pthread_mutex_unlock(&gen_lock);
    return n;
}

void config_retired_flush(void)
{
    pthread_mutex_lock(&gen_lock);
    struct retired *all = retired;
    retired = NULL;
    pthread_mutex_unlock(&gen_lock);
    run_freed(all);
}
