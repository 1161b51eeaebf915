/*
 * pecd_metrics.c - [metrics] listen = HOST:PORT: the Prometheus endpoint.
 *
 * A small HTTP/1.1 responder on the event loop: GET /metrics only (other
 * paths 404, other methods 405), one request per connection (Connection:
 * close), the request head bounded (METRICS_REQ_MAX octets, else 431) and
 * the whole exchange bounded in time (METRICS_TIMEOUT seconds), at most
 * METRICS_CONNS connections at once (more are closed at accept).  Meant for
 * loopback or a management network: there is no authentication, and the
 * figures name no address or message.
 *
 * The body is the counters of lib/metrics.c and the gauges computed here at
 * scrape time (queue, sessions, directory, CRLs, certificates, evidence
 * log, clock): all read on the event loop, or through their modules'
 * thread-safe snapshots.
 */
#include "pecd_int.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "lib/metrics.h"
#include "provider/housekeeping.h"
#include "provider/roles.h"
#include "queue/queue.h"
#include "smtp/smtp.h"
#include "store/evidence.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define METRICS_REQ_MAX 8192
#define METRICS_TIMEOUT 5
#define METRICS_CONNS 8

struct pecd_metrics {
    struct pecd *d;
    struct evconnlistener *lev;
    size_t nconns;
};

/* notAfter of the first certificate in a PEM file; 0 when unreadable. */
static time_t not_after(const char *path)
{
    if (path == NULL)
        return 0;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL)
        return 0;
    struct tm tm;
    time_t t = ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1 ? timegm(&tm) : 0;
    X509_free(x);
    return t;
}

void pecd_metrics_certificates(struct pecd *d)
{
    d->tls_not_after = not_after(d->cfg->tls_cert);
    d->sign_not_after = d->cfg->pec ? not_after(d->cfg->pec_signing_cert) : 0;
}

static void gauge(GString *o, const char *name, const char *help, double v)
{
    metrics_header(o, name, "gauge", help);
    metrics_sample(o, name, NULL, NULL, v);
}

static void collect(struct pecd *d, GString *o)
{
    time_t now = time(NULL);
    metrics_render(o);

    metrics_header(o, "pecmail_build_info", "gauge", "The pecd version");
    metrics_sample(o, "pecmail_build_info", "version", PEC_VERSION, 1);
    gauge(o, "pecmail_start_time_seconds", "When pecd started (Unix time)", (double)d->started);

    metrics_header(o, "pecmail_connections_open", "gauge", "SMTP sessions open, by listener");
    const char *name;
    size_t n;
    for (size_t i = 0; (n = smtp_server_open(d->smtp, i, &name)) != (size_t)-1; i++)
        metrics_sample(o, "pecmail_connections_open", "listener", name, (double)n);

    struct queue_stats qs;
    queue_stats(d->queue, &qs);
    metrics_header(o, "pecmail_queue_messages", "gauge",
                   "Messages in the queue: active (waiting for or in a delivery thread), "
                   "deferred (waiting for a retry), hold");
    metrics_sample(o, "pecmail_queue_messages", "state", "active", (double)qs.active);
    metrics_sample(o, "pecmail_queue_messages", "state", "deferred", (double)qs.deferred);
    metrics_sample(o, "pecmail_queue_messages", "state", "hold", (double)qs.hold);
    gauge(o, "pecmail_queue_oldest_message_age_seconds",
          "Age of the oldest message in the queue (0 when empty)",
          qs.oldest ? (double)(now - qs.oldest) : 0);

    if (d->roles != NULL) {
        time_t fetched, crl;
        size_t providers;
        roles_directory_stats(d->roles, &fetched, &providers, &crl);
        gauge(o, "pecmail_directory_age_seconds",
              "Age of the providers' directory copy in use (since fetched from its source)",
              (double)(now - fetched));
        gauge(o, "pecmail_directory_providers", "Providers listed in the directory in use",
              (double)providers);
        if (crl != 0)
            gauge(o, "pecmail_crl_age_seconds",
                  "Age of the oldest CRL in use (since its thisUpdate)", (double)(now - crl));
    }
    metrics_header(o, "pecmail_certificate_expiry_days", "gauge",
                   "Days until a certificate expires (negative: expired)");
    if (d->tls_not_after)
        metrics_sample(o, "pecmail_certificate_expiry_days", "certificate", "tls",
                       (double)(d->tls_not_after - now) / 86400.0);
    if (d->sign_not_after)
        metrics_sample(o, "pecmail_certificate_expiry_days", "certificate", "signing",
                       (double)(d->sign_not_after - now) / 86400.0);

    if (d->evidence != NULL) {
        long long rec;
        time_t seal;
        if (evidence_stats(d->evidence, &rec, &seal) == 0) {
            d->ev_records = rec;
            d->ev_last_seal = seal;
        }
        gauge(o, "pecmail_evidence_records",
              "Records written to the evidence log in its life (its last sequence number)",
              (double)d->ev_records);
        if (d->ev_last_seal != 0)
            gauge(o, "pecmail_evidence_last_seal_age_seconds",
                  "Time since the last day seal of the evidence log was made",
                  (double)(now - d->ev_last_seal));
    }
    enum clock_state clock = housekeeping_clock(d->housekeeping);
    gauge(o, "pecmail_clock_synchronised",
          "1 when the kernel clock is synchronised (RFC 6109 section 4.1), 0 when not, -1 "
          "when unknown",
          clock == CLOCK_SYNCED ? 1 : clock == CLOCK_UNSYNCED ? 0 : -1);
}

static void conn_close(struct bufferevent *bev, struct pecd_metrics *m)
{
    bufferevent_free(bev);
    m->nconns--;
}

static void on_written(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_close(bev, arg);
}

static void respond(struct bufferevent *bev, int code, const char *reason, const char *extra,
                    const char *body, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n%s\r\n",
                        code, reason,
                        code == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                                    : "text/plain; charset=utf-8",
                        len, extra ? extra : "");
    evbuffer_add(out, body, len);
    bufferevent_disable(bev, EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg);

static void on_read(struct bufferevent *bev, void *arg)
{
    struct pecd_metrics *m = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t avail = evbuffer_get_length(in);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (avail >= METRICS_REQ_MAX) {
            static const char b[] = "request header too large\n";
            respond(bev, 431, "Request Header Fields Too Large", NULL, b, sizeof b - 1);
            bufferevent_setcb(bev, NULL, on_written, on_event, m);
        }
        return;
    }
    char line[256];
    ev_ssize_t got = evbuffer_copyout(in, line, sizeof line - 1);
    line[got < 0 ? 0 : got] = '\0';
    line[strcspn(line, "\r\n")] = '\0';   /* the request line */
    char method[16] = "", target[200] = "", version[16] = "";
    if (sscanf(line, "%15s %199s %15s", method, target, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0) {
        static const char b[] = "bad request\n";
        respond(bev, 400, "Bad Request", NULL, b, sizeof b - 1);
    } else if (strcmp(method, "GET") != 0) {
        static const char b[] = "only GET\n";
        respond(bev, 405, "Method Not Allowed", "Allow: GET\r\n", b, sizeof b - 1);
    } else if (strcmp(target, "/metrics") != 0 && strncmp(target, "/metrics?", 9) != 0) {
        static const char b[] = "not found: the metrics are at /metrics\n";
        respond(bev, 404, "Not Found", NULL, b, sizeof b - 1);
    } else {
        GString *o = g_string_sized_new(16384);
        collect(m->d, o);
        respond(bev, 200, "OK", NULL, o->str, o->len);
        g_string_free(o, TRUE);
    }
    bufferevent_setcb(bev, NULL, on_written, on_event, m);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;   /* EOF, error or timeout: the exchange is over */
    conn_close(bev, arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct pecd_metrics *m = arg;
    (void)l;
    (void)sa;
    (void)salen;
    if (m->nconns >= METRICS_CONNS) {
        evutil_closesocket(fd);
        return;
    }
    struct bufferevent *bev =
        bufferevent_socket_new(m->d->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    m->nconns++;
    struct timeval tv = {.tv_sec = METRICS_TIMEOUT};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_setwatermark(bev, EV_READ, 0, METRICS_REQ_MAX);
    bufferevent_setcb(bev, on_read, NULL, on_event, m);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int pecd_metrics_start(struct pecd *d, char *err, size_t errlen)
{
    d->started = time(NULL);
    pecd_metrics_certificates(d);
    if (d->cfg->metrics_listen == NULL)
        return 0;
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    if (evutil_parse_sockaddr_port(d->cfg->metrics_listen, (struct sockaddr *)&ss, &sslen) ==
        -1) {
        snprintf(err, errlen, "[metrics] listen %s: not a numeric HOST:PORT (e.g. "
                              "127.0.0.1:9125 or [::1]:9125)", d->cfg->metrics_listen);
        return -1;
    }
    struct pecd_metrics *m = xcalloc(1, sizeof *m);
    m->d = d;
    m->lev = evconnlistener_new_bind(d->base, on_accept, m,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                         LEV_OPT_CLOSE_ON_EXEC,
                                     16, (struct sockaddr *)&ss, sslen);
    if (m->lev == NULL) {
        snprintf(err, errlen, "[metrics] listen %s: %s", d->cfg->metrics_listen,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        free(m);
        return -1;
    }
    d->metrics = m;
    log_info("metrics on http://%s/metrics", d->cfg->metrics_listen);
    return 0;
}

void pecd_metrics_free(struct pecd *d)
{
    if (d->metrics == NULL)
        return;
    evconnlistener_free(d->metrics->lev);
    free(d->metrics);
    d->metrics = NULL;
}
