/*
 * notices.h - the timers of the sending provider (RFC 6109 §3.1.6) and the
 * evidence log's seals and retention, and the watch of our certificates, on
 * a thread of their own (notices.c);
 * the notices themselves are built by the delivery threads (stage "notices",
 * roles.c).
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
