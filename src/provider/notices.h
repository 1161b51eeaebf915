/*
 * notices.h - the timers of the sending provider (RFC 6109 §3.1.6) and the
 * evidence log's seals and retention, and the watch of our certificates, on
 * a thread of their own (notices.c);
 * the notices themselves are built by the delivery threads (stage "notices",
 * roles.c).
 *
 * Purpose: pecd starts and stops the thread; roles.c decodes the batches
 * the thread queued.
 * Threads: notices_start, notices_set_config (taken at the thread's next
 * turn) and notices_stop on the event loop; the thread calls tracking, the
 * queue (queue_inject, queue_enqueue_async), the evidence log and
 * roles_check_certificates.  encode/decode: any thread (no state).
 * Ownership: the thread borrows cfg, r, t, q and ev: they must outlive
 * notices_stop; notices_encode's body is g_free'd by the caller;
 * notices_decode's array is freed with tracking_due_free.
 * Errors: notices_start gives NULL when out of memory; the thread logs a
 * failed turn (database, queue, seal) and tries again at the next one;
 * notices_decode returns the notices it could read (a broken line is skipped).
 */
#ifndef PEC_PROVIDER_NOTICES_H
#define PEC_PROVIDER_NOTICES_H

#include "queue/queue.h"

#include <stddef.h>

struct config;
struct tracking;
struct tracking_due;
struct evidence;
struct notices;

/* Starts the thread; NULL when out of memory. */
struct roles;
/* Reload: [timers], [evidence] retention from cfg at the thread's next turn. */
void notices_set_config(struct notices *nt, const struct config *cfg);
/* r: whose certificates are watched hourly (roles_check_certificates). */
struct notices *notices_start(const struct config *cfg, struct roles *r, struct tracking *t,
                              struct queue *q, struct evidence *ev);
/* Stops and joins it (a batch being made is finished first). */
void notices_stop(struct notices *nt);
/* A batch's body (g_free) and back: the stage reads what the thread wrote. */
char *notices_encode(const struct tracking_due *d, size_t n, size_t *len);
size_t notices_decode(const char *data, size_t len, struct tracking_due **out);

#endif
