/*
 * log.c - one-line log records on stderr, systemd style (the journal adds the
 * time when run as a service; we add an ISO time for plain terminals and files).
 * Thread-safe: each record is formatted into one buffer and written with one
 * write(2).
 */
#include "lib.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "pecmail";
static enum log_level log_min = LOG_LVL_INFO;
static const char *const level_names[] = {"debug", "info", "warning", "error"};

void log_init(const char *progname, enum log_level level)
{
    log_prog = progname;
    log_min = level;
}

void log_set_level(enum log_level level) { log_min = level; }

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (str_ieq(s, level_names[i])) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (str_ieq(s, "warn")) {
        *out = LOG_LVL_WARN;
        return 0;
    }
    return -1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < log_min)
        return;
    char buf[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, log_prog, (int)getpid(),
                     level_names[level]);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    /* Never let a client's bytes forge a second log line. */
    for (size_t i = (size_t)n; i < len; i++)
        if (buf[i] == '\n' || buf[i] == '\r' || (unsigned char)buf[i] < 0x20)
            buf[i] = '?';
    buf[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
}
