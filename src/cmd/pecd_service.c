/*
 * pecd_service.c - pecd as a systemd service (Type=notify, sd_notify(3)):
 * READY=1 once the listeners are open and the queue is recovered (and again
 * after a reload), RELOADING=1 while pecd.conf is read again, STOPPING=1
 * when draining starts, STATUS= lines, and WATCHDOG=1 from the event loop
 * every half of WatchdogSec= when the unit sets one: a loop that stops
 * turning is killed and restarted by systemd.
 *
 * Without systemd (NOTIFY_SOCKET unset) every call does nothing.
 */
#include "pecd_int.h"
#include "lib/lib.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    sd_notify(0, "WATCHDOG=1");
}

void pecd_service_ready(struct pecd *d)
{
    sd_notify(0, "READY=1\nSTATUS=accepting mail");
    uint64_t usec = 0;
    if (d->watchdog_ev == NULL && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        struct timeval tv = {.tv_sec = (time_t)(usec / 2 / 1000000),
                             .tv_usec = (suseconds_t)(usec / 2 % 1000000)};
        d->watchdog_ev = event_new(d->base, -1, EV_PERSIST, on_watchdog, d);
        event_add(d->watchdog_ev, &tv);
        sd_notify(0, "WATCHDOG=1");
        log_info("systemd watchdog: a ping every %llu ms",
                 (unsigned long long)(usec / 2 / 1000));
    }
}

void pecd_service_reloading(void)
{
    sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
}

void pecd_service_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=draining: open sessions finish");
}

void pecd_service_status(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", buf);
}

void pecd_service_free(struct pecd *d)
{
    if (d->watchdog_ev != NULL)
        event_free(d->watchdog_ev);
    d->watchdog_ev = NULL;
}
