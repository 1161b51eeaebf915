/*
 * housekeeping.c - the provider's timers that no message starts
 * (housekeeping.h): the duplicate record's window, the quarantine's
 * retention, the clock check, the last seal at exit.
 */
#include "housekeeping.h"
#include "store/evidence.h"
#include "store/quarantine.h"
#include "store/tracking.h"

#include <event2/event.h>
#include <stdlib.h>
#include <time.h>

/* The oldest of the messages taken in longer ago than [timers]
 * duplicate_window are forgotten every second, a few thousand at a time
 * (each call a few milliseconds): the record would otherwise grow with
 * every message received. */
#define SEEN_PURGE_MAX 2000
#define QUARANTINE_PERIOD_S 3600
#define CLOCK_PERIOD_S 600

struct housekeeping {
    const struct config *cfg;
    struct tracking *tracking;
    struct event *seen_ev, *quarantine_ev, *clock_ev;
    int clock;                  /* enum clock_state of the last check, -1 before */
};

static void on_seen_purge(evutil_socket_t fd, short what, void *arg)
{
    struct housekeeping *h = arg;
    (void)fd;
    (void)what;
    long n = tracking_purge_seen(h->tracking, time(NULL) - (time_t)h->cfg->duplicate_window,
                                 SEEN_PURGE_MAX);
    if (n > 0)
        log_debug("tracking: %ld messages taken in before the duplicate window forgotten", n);
}

/* The quarantine store is kept for its retention (infected messages: 30
 * months, RFC 6109 §3.2.3) and purged by whole days, PEC or not: ordinary
 * mail is quarantined too (filters, viruses). */
static void purge_quarantine(const struct config *cfg)
{
    char err[256];
    int days = quarantine_purge(cfg->av_quarantine,
                                time(NULL) - (time_t)cfg->av_quarantine_retention, err,
                                sizeof err);
    if (days == -1)
        log_err("quarantine: cannot purge: %s", err);
    else if (days > 0)
        log_info("quarantine: %d days past retention removed", days);
}

static void on_quarantine(evutil_socket_t fd, short what, void *arg)
{
    struct housekeeping *h = arg;
    (void)fd;
    (void)what;
    purge_quarantine(h->cfg);
}

/* RFC 6109 §4.1: an accurate temporal reference.  A state that stays the
 * same and is fine is not logged again. */
static void check_clock(struct housekeeping *h)
{
    char why[300];
    enum clock_state s = clock_check(why, sizeof why);
    if (s == CLOCK_UNSYNCED)
        log_err("%s", why);
    else if (s == CLOCK_UNKNOWN)
        log_warn("%s", why);
    else if (h->clock != CLOCK_SYNCED)
        log_info("%s", why);
    h->clock = (int)s;
}

static void on_clock(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    check_clock(arg);
}

static struct event *every(struct event_base *base, int seconds, event_callback_fn fn,
                           void *arg)
{
    struct event *ev = event_new(base, -1, EV_PERSIST, fn, arg);
    if (ev != NULL)
        event_add(ev, &(struct timeval){.tv_sec = seconds});
    return ev;
}

struct housekeeping *housekeeping_start(struct event_base *base, const struct config *cfg,
                                        struct tracking *tracking)
{
    struct housekeeping *h = xcalloc(1, sizeof *h);
    h->cfg = cfg;
    h->tracking = tracking;
    h->clock = -1;
    if (tracking != NULL)
        h->seen_ev = every(base, 1, on_seen_purge, h);
    purge_quarantine(cfg);
    h->quarantine_ev = every(base, QUARANTINE_PERIOD_S, on_quarantine, h);
    check_clock(h);
    h->clock_ev = every(base, CLOCK_PERIOD_S, on_clock, h);
    return h;
}

void housekeeping_set_config(struct housekeeping *h, const struct config *cfg)
{
    if (h != NULL)
        h->cfg = cfg;
}

enum clock_state housekeeping_clock(const struct housekeeping *h)
{
    return h == NULL || h->clock < 0 ? CLOCK_UNKNOWN : (enum clock_state)h->clock;
}

void housekeeping_stop(struct housekeeping *h)
{
    if (h == NULL)
        return;
    struct event *evs[] = {h->seen_ev, h->quarantine_ev, h->clock_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i] != NULL)
            event_free(evs[i]);
    free(h);
}

void housekeeping_final_seal(struct evidence *ev)
{
    char err[256];
    if (ev != NULL && evidence_seal(ev, time(NULL), err, sizeof err) == -1)
        log_err("evidence log: cannot seal: %s", err);
}
