/*
 * metrics.c - the counters of metrics.h and their text exposition
 * (Prometheus text format 0.0.4: "# HELP", "# TYPE", one sample a line).
 *
 * A series is found by its rendered label string (a linear scan of at most
 * METRIC_SERIES_MAX entries, compared without a lock: an entry is complete
 * before the release store of n that publishes it); a new one is added
 * under one process-wide mutex.  Histograms have fixed buckets, in seconds,
 * fitting a signature (milliseconds) and an HSM or a slow disk (seconds).
 */
#include "lib/metrics.h"
#include "lib/lib.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define FAMILY(var, nm, hlp, a, b) struct metric_family var = {.name = nm, .help = hlp, .k1 = a, .k2 = b}

FAMILY(metric_connections, "pecmail_connections_total",
       "SMTP connections accepted, by listener", "listener", NULL);
FAMILY(metric_connections_refused, "pecmail_connections_refused_total",
       "SMTP connections refused before the greeting, by listener and reason", "listener",
       "reason");
FAMILY(metric_messages_accepted, "pecmail_messages_accepted_total",
       "Messages taken in (250 after DATA/BDAT), by listener", "listener", NULL);
FAMILY(metric_messages_refused, "pecmail_messages_refused_total",
       "Messages refused after their data, by listener and enhanced status code (RFC 3463)",
       "listener", "code");
FAMILY(metric_deliveries, "pecmail_deliveries_total",
       "Delivery attempts per recipient, by result (sent, bounced, deferred) and next hop",
       "result", "next_hop");
FAMILY(metric_pec_transactions, "pecmail_pec_transactions_total",
       "PEC messages handled by each point (access, incoming, delivery), by result", "point",
       "result");
FAMILY(metric_pec_made, "pecmail_pec_messages_made_total",
       "Signed receipts and envelopes made, by type (X-Ricevuta / X-Trasporto value)", "type",
       NULL);
FAMILY(metric_pec_anomalies, "pecmail_pec_anomalies_total",
       "Anomaly envelopes made (RFC 6109 section 3.2.2), by reason", "reason", NULL);
FAMILY(metric_signatures, "pecmail_signatures_total",
       "S/MIME signatures made (sign) and checked (verify), by result", "op", "result");
FAMILY(metric_reloads, "pecmail_config_reloads_total",
       "Configuration reloads (SIGHUP), by result", "result", NULL);

/* seconds */
static const double buckets[METRIC_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                               0.05,   0.1,   0.25,   0.5,   1,    5};
struct metric_histogram metric_signature_seconds = {
    .name = "pecmail_signature_duration_seconds",
    .help = "Time to build and sign a receipt or envelope (sign) or to verify a signed "
            "message (verify)",
    .label_key = "op",
    .label_values = {"sign", "verify"},
};

static struct metric_family *const families[] = {
    &metric_connections,  &metric_connections_refused, &metric_messages_accepted,
    &metric_messages_refused, &metric_deliveries,       &metric_pec_transactions,
    &metric_pec_made,     &metric_pec_anomalies,       &metric_signatures,
    &metric_reloads,
};

static pthread_mutex_t add_lock = PTHREAD_MUTEX_INITIALIZER;

void metrics_escape(char *out, size_t outlen, const char *value)
{
    size_t o = 0, in = 0;
    for (const char *p = value ? value : ""; *p && in < METRIC_LABEL_MAX && o + 3 < outlen;
         p++, in++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\\' || c == '"') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
        }
    }
    out[o] = '\0';
}

static void render_labels(const struct metric_family *f, const char *v1, const char *v2,
                          char *out, size_t outlen)
{
    char e1[METRIC_LABEL_MAX * 2 + 1], e2[METRIC_LABEL_MAX * 2 + 1];
    metrics_escape(e1, sizeof e1, v1);
    metrics_escape(e2, sizeof e2, v2);
    if (f->k2 != NULL)
        snprintf(out, outlen, "%s=\"%s\",%s=\"%s\"", f->k1, e1, f->k2, e2);
    else if (f->k1 != NULL)
        snprintf(out, outlen, "%s=\"%s\"", f->k1, e1);
    else
        out[0] = '\0';
}

static struct metric_series *find(struct metric_family *f, const char *labels, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(f->s[i].labels, labels) == 0)
            return &f->s[i];
    return NULL;
}

static struct metric_series *series(struct metric_family *f, const char *v1, const char *v2)
{
    char labels[sizeof f->s[0].labels];
    render_labels(f, v1, v2, labels, sizeof labels);
    struct metric_series *s =
        find(f, labels, atomic_load_explicit(&f->n, memory_order_acquire));
    if (s != NULL)
        return s;
    pthread_mutex_lock(&add_lock);
    size_t n = atomic_load_explicit(&f->n, memory_order_relaxed);
    s = find(f, labels, n);
    if (s == NULL) {
        if (n == METRIC_SERIES_MAX - 1) {
            /* the last slot gathers every further label set */
            render_labels(f, "other", f->k2 ? "other" : NULL, labels, sizeof labels);
            s = find(f, labels, n);
        }
        if (s == NULL && n < METRIC_SERIES_MAX) {
            s = &f->s[n];
            str_copy(s->labels, labels, sizeof s->labels);
            atomic_store_explicit(&s->v, 0, memory_order_relaxed);
            atomic_store_explicit(&f->n, n + 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&add_lock);
    return s;
}

void metric_add(struct metric_family *f, uint64_t by, const char *v1, const char *v2)
{
    struct metric_series *s = series(f, v1, v2);
    if (s != NULL)
        atomic_fetch_add_explicit(&s->v, by, memory_order_relaxed);
}

uint64_t metric_value(struct metric_family *f, const char *v1, const char *v2)
{
    char labels[sizeof f->s[0].labels];
    render_labels(f, v1, v2, labels, sizeof labels);
    struct metric_series *s =
        find(f, labels, atomic_load_explicit(&f->n, memory_order_acquire));
    return s ? atomic_load_explicit(&s->v, memory_order_relaxed) : 0;
}

void metric_observe(struct metric_histogram *h, int which, int64_t us)
{
    if (which < 0 || which > 1)
        return;
    if (us < 0)
        us = 0;
    double sec = (double)us / 1e6;
    size_t b = 0;
    while (b < METRIC_BUCKETS && sec > buckets[b])
        b++;
    atomic_fetch_add_explicit(&h->count[which][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us[which], (uint_fast64_t)us, memory_order_relaxed);
}

void metrics_header(GString *out, const char *name, const char *type, const char *help)
{
    g_string_append_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_sample(GString *out, const char *name, const char *label, const char *value,
                    double v)
{
    if (label != NULL) {
        char e[METRIC_LABEL_MAX * 2 + 1];
        metrics_escape(e, sizeof e, value);
        g_string_append_printf(out, "%s{%s=\"%s\"} %.17g\n", name, label, e, v);
    } else {
        g_string_append_printf(out, "%s %.17g\n", name, v);
    }
}

static void render_histogram(GString *out, struct metric_histogram *h)
{
    metrics_header(out, h->name, "histogram", h->help);
    for (int w = 0; w < 2; w++) {
        uint64_t cum = 0;
        for (size_t b = 0; b <= METRIC_BUCKETS; b++) {
            cum += atomic_load_explicit(&h->count[w][b], memory_order_relaxed);
            if (b < METRIC_BUCKETS)
                g_string_append_printf(out, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", h->name,
                                       h->label_key, h->label_values[w], buckets[b],
                                       (unsigned long long)cum);
            else
                g_string_append_printf(out, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n",
                                       h->name, h->label_key, h->label_values[w],
                                       (unsigned long long)cum);
        }
        g_string_append_printf(out, "%s_sum{%s=\"%s\"} %.6f\n", h->name, h->label_key,
                               h->label_values[w],
                               (double)atomic_load_explicit(&h->sum_us[w],
                                                            memory_order_relaxed) / 1e6);
        g_string_append_printf(out, "%s_count{%s=\"%s\"} %llu\n", h->name, h->label_key,
                               h->label_values[w], (unsigned long long)cum);
    }
}

void metrics_render(GString *out)
{
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        struct metric_family *f = families[i];
        metrics_header(out, f->name, "counter", f->help);
        size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
        for (size_t k = 0; k < n; k++)
            g_string_append_printf(out, "%s{%s} %llu\n", f->name, f->s[k].labels,
                                   (unsigned long long)atomic_load_explicit(
                                       &f->s[k].v, memory_order_relaxed));
    }
    render_histogram(out, &metric_signature_seconds);
}

void metrics_reset(void)
{
    pthread_mutex_lock(&add_lock);
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        atomic_store(&families[i]->n, 0);
    for (int w = 0; w < 2; w++) {
        for (size_t b = 0; b <= METRIC_BUCKETS; b++)
            atomic_store(&metric_signature_seconds.count[w][b], 0);
        atomic_store(&metric_signature_seconds.sum_us[w], 0);
    }
    pthread_mutex_unlock(&add_lock);
}
