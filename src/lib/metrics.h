/*
 * metrics.h - the process's counters for the Prometheus endpoint ([metrics]
 * listen; docs/operator-guide.md lists every series).
 *
 * Purpose: one registry per process, global like the logger: every module
 * counts with one call and no plumbing, and the counters outlive a
 * configuration reload by construction.  Gauges that describe a state
 * (queue sizes, certificate expiry...) are not kept here: the daemon
 * computes them at scrape time (metrics_render's collector, pecd_metrics.c).
 * Threads: any thread.  Counting is cheap (C11 atomics, relaxed: a scrape
 * needs no ordering between two series); a new label set is added under one
 * mutex, at most METRIC_SERIES_MAX per family.  metrics_reset: tests only.
 * Ownership: the registry is static; label values are copied (cut at
 * METRIC_LABEL_MAX octets and escaped as the text format asks); render
 * appends to the caller's GString.
 * Errors: none reported: past METRIC_SERIES_MAX the label values read
 * "other", so no outside string (a next hop, a reason) grows the registry.
 */
#ifndef PEC_METRICS_H
#define PEC_METRICS_H

#include <glib.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define METRIC_SERIES_MAX 48
#define METRIC_LABEL_MAX 64

struct metric_series {
    char labels[2 * (METRIC_LABEL_MAX * 2 + 24)];  /* rendered: a="x",b="y" */
    atomic_uint_fast64_t v;
};

struct metric_family {
    const char *name, *help;
    const char *k1, *k2;           /* label names; NULL when fewer */
    _Atomic size_t n;              /* series published (written before n grows) */
    struct metric_series s[METRIC_SERIES_MAX];
};

#define METRIC_BUCKETS 12
struct metric_histogram {
    const char *name, *help, *label_key;
    const char *label_values[2];
    atomic_uint_fast64_t count[2][METRIC_BUCKETS + 1];  /* per bucket, the last is +Inf */
    atomic_uint_fast64_t sum_us[2];
};

/* Counters (names as exported). */
extern struct metric_family metric_connections;         /* listener */
extern struct metric_family metric_connections_refused; /* listener, reason */
extern struct metric_family metric_messages_accepted;   /* listener */
extern struct metric_family metric_messages_refused;    /* listener, code (RFC 3463) */
extern struct metric_family metric_deliveries;          /* result, next_hop */
extern struct metric_family metric_pec_transactions;    /* point, result */
extern struct metric_family metric_pec_made;            /* type */
extern struct metric_family metric_pec_anomalies;       /* reason */
extern struct metric_family metric_signatures;          /* op, result */
extern struct metric_family metric_reloads;             /* result */
/* op = sign (building and signing a receipt or envelope) | verify */
extern struct metric_histogram metric_signature_seconds;
enum { METRIC_OP_SIGN, METRIC_OP_VERIFY };

/* Adds by to the series with these label values (v2 NULL for one label). */
void metric_add(struct metric_family *f, uint64_t by, const char *v1, const char *v2);
static inline void metric_inc(struct metric_family *f, const char *v1, const char *v2)
{
    metric_add(f, 1, v1, v2);
}
void metric_observe(struct metric_histogram *h, int which, int64_t microseconds);
/* The current value of a series (tests, and the daemon's own checks). */
uint64_t metric_value(struct metric_family *f, const char *v1, const char *v2);

/* Appends every counter and histogram in the text format 0.0.4. */
void metrics_render(GString *out);
/* Helpers for collectors: a HELP/TYPE header, and one sample line whose
 * label value is escaped (label may be NULL). */
void metrics_header(GString *out, const char *name, const char *type, const char *help);
void metrics_sample(GString *out, const char *name, const char *label, const char *value,
                    double v);
/* value escaped for a label ("\\", "\"", "\n"), cut at METRIC_LABEL_MAX octets. */
void metrics_escape(char *out, size_t outlen, const char *value);

/* Forgets every count (unit tests only). */
void metrics_reset(void);

#endif
