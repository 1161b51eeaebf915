/*
 * housekeeping.h - the provider's timers on the event loop that no message
 * starts: forgetting messages taken in before [timers] duplicate_window,
 * the quarantine's retention (RFC 6109 §3.2.3), the clock check of §4.1,
 * and the evidence log's last seal at exit (§2.3).  The timeout notices and
 * the daily seals run in their own thread (notices.h).
 *
 * Purpose: pecd.c starts it once everything it names is open, passes
 * reloads, reads the clock's state for its metrics, and stops it at exit.
 * Threads: the event loop only (the timers' callbacks run there; a purge
 * is a few milliseconds of SQLite or file removals).
 * Ownership: the housekeeping borrows cfg (until the next set_config) and
 * tracking (until stop); housekeeping_stop frees it.
 * Errors: none returned: a purge or a seal that fails is logged and tried
 * again at the next tick; an unsynchronised clock is an error in the log
 * each time (the provider keeps working: refusing mail would not make the
 * clock right).
 */
#ifndef PEC_PROVIDER_HOUSEKEEPING_H
#define PEC_PROVIDER_HOUSEKEEPING_H

#include "lib/config.h"
#include "lib/lib.h"

struct event_base;
struct tracking;
struct evidence;
struct housekeeping;

/* Starts the timers: the duplicate record's purge every second when
 * tracking is given (one node; with the state shared by several nodes the
 * cluster's thread does it), the quarantine's purge now and hourly, the
 * clock check now and every ten minutes. */
struct housekeeping *housekeeping_start(struct event_base *base, const struct config *cfg,
                                        struct tracking *tracking);
void housekeeping_set_config(struct housekeeping *h, const struct config *cfg);
/* The clock's state at the last check (CLOCK_UNKNOWN before the first). */
enum clock_state housekeeping_clock(const struct housekeeping *h);
/* Stops the timers and frees h (NULL: nothing). */
void housekeeping_stop(struct housekeeping *h);
/* At exit, once no stage runs: seals the evidence log's finished days. */
void housekeeping_final_seal(struct evidence *ev);

#endif
