/*
 * pec_time.c - the legal time of RFC 6109 §4.2: every date and time a
 * provider writes in a receipt, an envelope or its daticert is "with
 * reference to the legal time at the moment of the operation", Italian time
 * (Europe/Rome: +0100, and +0200 in summer), whatever the time zone of the
 * host or container pecd runs in.  The zone is read once from the system's
 * tz database through GLib (GTimeZone), never through the TZ variable, so no
 * thread's localtime() is involved.
 *
 * Interface: pec_set_timezone, pec_legal_time (pec.h).  Assumes: called
 * before the threads that build messages start (set once at start-up); the
 * default, Europe/Rome, is loaded on first use.
 */
#include "pec/pec_internal.h"

#include <glib.h>
#include <stdio.h>
#include <string.h>

#define PEC_DEFAULT_TIMEZONE "Europe/Rome"

static GTimeZone *zone;      /* set once: pec_set_timezone or the default */
static GOnce zone_once = G_ONCE_INIT;

static gpointer default_zone(gpointer arg)
{
    (void)arg;
    if (zone == NULL)
        zone = g_time_zone_new_identifier(PEC_DEFAULT_TIMEZONE);
    if (zone == NULL) /* no tz database: the legal time's standard offset, at least */
        zone = g_time_zone_new_offset(3600);
    return zone;
}

int pec_set_timezone(const char *id, char *err, size_t errsz)
{
    GTimeZone *z = g_time_zone_new_identifier(id && *id ? id : PEC_DEFAULT_TIMEZONE);
    if (z == NULL)
        return pec_err(err, errsz, "unknown time zone '%s' (a name of the tz database, "
                                   "e.g. Europe/Rome; is the tzdata package installed?)",
                       id && *id ? id : PEC_DEFAULT_TIMEZONE);
    /* the previous zone is kept (not unreferenced): a thread may be using it */
    g_once(&zone_once, default_zone, NULL);
    zone = z;
    return 0;
}

void pec_legal_time(time_t t, struct tm *out)
{
    g_once(&zone_once, default_zone, NULL);
    GTimeZone *z = zone;
    GDateTime *utc = g_date_time_new_from_unix_utc((gint64)t);
    GDateTime *l = utc ? g_date_time_to_timezone(utc, z) : NULL;
    memset(out, 0, sizeof *out);
    if (l == NULL) { /* outside GDateTime's years 1..9999: UTC as gmtime gives it */
        gmtime_r(&t, out);
    } else {
        out->tm_year = g_date_time_get_year(l) - 1900;
        out->tm_mon = g_date_time_get_month(l) - 1;
        out->tm_mday = g_date_time_get_day_of_month(l);
        out->tm_hour = g_date_time_get_hour(l);
        out->tm_min = g_date_time_get_minute(l);
        out->tm_sec = g_date_time_get_second(l);
        out->tm_wday = g_date_time_get_day_of_week(l) % 7;   /* GLib: 7 is Sunday */
        out->tm_yday = g_date_time_get_day_of_year(l) - 1;
        out->tm_isdst = g_date_time_is_daylight_savings(l) ? 1 : 0;
        out->tm_gmtoff = (long)(g_date_time_get_utc_offset(l) / G_TIME_SPAN_SECOND);
    }
    if (l)
        g_date_time_unref(l);
    if (utc)
        g_date_time_unref(utc);
}
