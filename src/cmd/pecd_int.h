/*
 * pecd_int.h - the daemon's state, shared by the files of pecd:
 *
 *   pecd.c          argument parsing, start-up wiring, SMTP hooks, signals
 *   pecd_service.c  systemd: sd_notify (READY, RELOADING, STOPPING, STATUS)
 *                   and the watchdog
 *   pecd_metrics.c  [metrics] listen: the Prometheus endpoint and the
 *                   gauges it computes at scrape time
 *   pecd_reload.c   SIGHUP: read pecd.conf again, apply what can change
 *                   without dropping a session, name what needs a restart
 *   pecd_control.c  the control socket for pecctl backup
 *
 * Purpose: struct pecd, the one object that holds every module of a
 * running daemon, and the entry points of the files above.
 * Threads: everything here runs on the event loop's thread, but the control
 * socket, which serves on a thread of its own (pecd_control_start) and
 * touches only the queue (queue_pause) and the tracking database.
 * Ownership: struct pecd owns every module it points to and frees them at
 * exit, the threads stopped first; cfg is swapped by a reload and the old
 * one retired (config_retire), not freed at once.
 * Errors: start functions return -1 with the reason in err (pecd then
 * stops with it); a reload that fails logs the reason and keeps the
 * configuration in force; sd_notify failures are ignored.
 */
#ifndef PEC_PECD_INT_H
#define PEC_PECD_INT_H

#include "pecd_privsep.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <time.h>

struct config;
struct event;
struct event_base;

struct pecd {
    struct config *cfg;          /* the configuration in force (swapped by a reload) */
    const char *conf_path;       /* -c FILE, read again on SIGHUP */
    struct event_base *base;
    struct smtp_server *smtp;
    struct queue *queue;
    struct users_db *users;
    struct auth_worker *auth;
    struct transport *transport;
    struct roles *roles;
    struct tracking *tracking;
    struct evidence *evidence;
    struct callout_stage *callouts;
    struct notices *notices;     /* the timers of §3.1.6 and the evidence seals (a thread) */
    struct cluster *cluster;     /* several nodes ([state] database): NULL on one */
    struct housekeeping *housekeeping;  /* duplicate window, quarantine, clock (provider/) */
    struct admission *admission;    /* relay, senders, sending limits (provider/admission.c) */
    struct sender_map *senders;     /* [users] senders: other addresses a login owns */
    SSL_CTX *tls;
    struct pecd_privsep ps;         /* the signer process, the listeners, the user */
    struct event *drain_timer;
    time_t drain_started;

    /* pecd_control.c */
    struct pecd_control *control;
    /* pecd_service.c */
    struct event *watchdog_ev;
    /* pecd_metrics.c */
    struct pecd_metrics *metrics;
    time_t started;
    time_t tls_not_after;        /* the TLS and signing certificates' notAfter (0: none) */
    time_t sign_not_after;
    long long ev_records;        /* the evidence log's last known figures */
    time_t ev_last_seal;
};

/* pecd_service.c: sd_notify(3) messages; nothing when not run by systemd
 * (NOTIFY_SOCKET unset).  The watchdog pings from the event loop every half
 * of WatchdogSec, so a stuck loop is restarted by systemd. */
void pecd_service_ready(struct pecd *d);
void pecd_service_reloading(void);
void pecd_service_stopping(void);
void pecd_service_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pecd_service_free(struct pecd *d);

/* pecd_metrics.c: opens [metrics] listen when set (-1 with err when the
 * address cannot be bound); reads the certificates' expiry (again on reload). */
int pecd_metrics_start(struct pecd *d, char *err, size_t errlen);
void pecd_metrics_certificates(struct pecd *d);
void pecd_metrics_free(struct pecd *d);

/* pecd_control.c: <data_dir>/control.sock for pecctl backup (a thread of
 * its own); -1 with err when the socket cannot be made.  stop: before the
 * queue and the tracking database are freed. */
int pecd_control_start(struct pecd *d, char *err, size_t errlen);
void pecd_control_stop(struct pecd *d);

/* pecd_reload.c: the SIGHUP handler's work. */
void pecd_reload(struct pecd *d);
/* pecd_reload.c: worker threads' configuration holds are released (a
 * configuration retired by a reload is freed when no hold older than its
 * retirement remains); at exit, frees every retired configuration. */
void pecd_reload_free(struct pecd *d);

#endif
