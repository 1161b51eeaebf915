/*
 * log.c - one-line log records on stderr, systemd style (the journal adds the
 * time when run as a service; we add an ISO time for plain terminals and files).
 * Thread-safe: each record is formatted into one buffer and written with one
 * write(2).
 *
 * Two formats ([log] format): text, and JSON lines (one object a line, for
 * the journal and log shippers) with "time", "level", "prog", "pid", "msg"
 * and, where the caller knows them (log_tagged), "qid", "pec_id", "event" and
 * "result"; a plain record that starts with a queue id ("0123456789ABCDEF: ")
 * gets its "qid" too.  Every string is escaped (RFC 8259 §7): quotes,
 * backslashes and control characters, and bytes that are not UTF-8 become
 * U+FFFD, so no client's bytes can break a record or forge another.
 */
#include "lib.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>
#include <stdatomic.h>

static const char *log_prog = "pecmail";
static atomic_bool log_json;
/* written by a reload (SIGHUP) while other threads log: atomic, as log_json */
static atomic_int log_min = LOG_LVL_INFO;
static const char *const level_names[] = {"debug", "info", "warning", "error"};

void log_init(const char *progname, enum log_level level)
{
    log_prog = progname;
    atomic_store(&log_min, (int)level);
}

void log_set_level(enum log_level level) { atomic_store(&log_min, (int)level); }

void log_set_json(bool json) { atomic_store(&log_json, json); }

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

/* Appends s to out, escaped as a JSON string's content (no quotes). */
static void json_escape(GString *out, const char *s)
{
    const char *p = s, *end = s + strlen(s);
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x80) {
            if (c == '"' || c == '\\')
                g_string_append_c(out, '\\'), g_string_append_c(out, (char)c);
            else if (c == '\n')
                g_string_append(out, "\\n");
            else if (c == '\t')
                g_string_append(out, "\\t");
            else if (c < 0x20 || c == 0x7f)
                g_string_append_printf(out, "\\u%04x", c);
            else
                g_string_append_c(out, (char)c);
            p++;
            continue;
        }
        gunichar u = g_utf8_get_char_validated(p, end - p);
        if (u == (gunichar)-1 || u == (gunichar)-2) {
            g_string_append(out, "\\ufffd");
            p++;
            continue;
        }
        const char *next = g_utf8_next_char(p);
        g_string_append_len(out, p, next - p);
        p = next;
    }
}

void json_fput(FILE *f, const char *s)
{
    if (s == NULL) {
        fputs("null", f);
        return;
    }
    GString *g = g_string_new("\"");
    json_escape(g, s);
    g_string_append_c(g, '"');
    fwrite(g->str, 1, g->len, f);
    g_string_free(g, TRUE);
}

static void json_field(GString *out, const char *key, const char *value)
{
    if (value == NULL || value[0] == '\0')
        return;
    g_string_append_printf(out, ",\"%s\":\"", key);
    json_escape(out, value);
    g_string_append_c(out, '"');
}

/* "0123456789ABCDEF: " at the start of a message: a queue id (spool.c). */
static bool leading_qid(const char *msg, char qid[17])
{
    for (int i = 0; i < 16; i++)
        if (!g_ascii_isxdigit(msg[i]) || g_ascii_islower(msg[i]))
            return false;
    if (msg[16] != ':' || msg[17] != ' ')
        return false;
    memcpy(qid, msg, 16);
    qid[16] = '\0';
    return true;
}

static void log_write(enum log_level level, const struct log_fields *f, const char *fmt,
                      va_list ap) __attribute__((format(printf, 3, 0)));
static void log_write(enum log_level level, const struct log_fields *f, const char *fmt,
                      va_list ap)
{
    if ((int)level < atomic_load_explicit(&log_min, memory_order_relaxed))
        return;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[40];
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             ts.tv_nsec / 1000000);
    char msg[2048];
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    if (m < 0)
        return;
    if (atomic_load(&log_json)) {
        GString *out = g_string_sized_new(256 + (size_t)m);
        g_string_append_printf(out, "{\"time\":\"%s\",\"level\":\"%s\",\"prog\":\"%s\","
                                    "\"pid\":%d",
                               stamp, level_names[level], log_prog, (int)getpid());
        json_field(out, "msg", msg);
        char qid[17];
        const char *q = f ? f->qid : NULL;
        if (q == NULL && leading_qid(msg, qid))
            q = qid;
        json_field(out, "qid", q);
        if (f != NULL) {
            json_field(out, "pec_id", f->pec_id);
            json_field(out, "event", f->event);
            json_field(out, "result", f->result);
        }
        g_string_append(out, "}\n");
        ssize_t w = write(STDERR_FILENO, out->str, out->len);
        (void)w;
        g_string_free(out, TRUE);
        return;
    }
    char buf[2200];
    int n = snprintf(buf, sizeof buf, "%s %s[%d] %s: ", stamp, log_prog, (int)getpid(),
                     level_names[level]);
    if (n < 0)
        return;
    size_t len = (size_t)n + str_copy(buf + n, msg, sizeof buf - (size_t)n - 1);
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

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_write(level, NULL, fmt, ap);
    va_end(ap);
}

void log_tagged(enum log_level level, const struct log_fields *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_write(level, f, fmt, ap);
    va_end(ap);
}
