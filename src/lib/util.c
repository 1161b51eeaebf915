/*
 * util.c - checked string helpers and the parsers of configuration scalars
 * (sizes, durations, booleans).
 */
#include "lib.h"

#include <ctype.h>
#include <glib.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <time.h>

size_t str_copy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (size > 0) {
        size_t c = n < size - 1 ? n : size - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

int str_fmt(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        return -1;
    return n;
}

bool str_ieq(const char *a, const char *b) { return strcasecmp(a, b) == 0; }

bool str_iprefix(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

char *str_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

bool str_domain_ok(const char *s)
{
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > 253 || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && label > 0))
            return false;
        if (++label > 63)
            return false;
    }
    return s[n - 1] != '-';
}

void str_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static int parse_scaled(const char *s, uint64_t *out, const char *units,
                        const uint64_t *mult)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    uint64_t m = 1;
    if (*end != '\0') {
        const char *u = strchr(units, *end);
        if (u == NULL)
            return -1;
        m = mult[u - units];
        end++;
        /* accept "MB", "KB", "GB" as well as "M", "K", "G" */
        if (*end == 'B' || *end == 'b')
            end++;
        if (*end != '\0')
            return -1;
    }
    if (m != 0 && v > UINT64_MAX / m)
        return -1;
    *out = (uint64_t)v * m;
    return 0;
}

int parse_size(const char *s, uint64_t *out)
{
    static const uint64_t mult[] = {1024, 1024, 1024 * 1024, 1024 * 1024,
                                    1024ULL * 1024 * 1024, 1024ULL * 1024 * 1024};
    return parse_scaled(s, out, "kKmMgG", mult);
}

int parse_duration(const char *s, uint64_t *out)
{
    static const uint64_t mult[] = {1, 60, 3600, 86400, 7 * 86400};
    return parse_scaled(s, out, "smhdw", mult);
}

int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (str_ieq(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (str_ieq(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

void rfc5322_date(char *buf, size_t size, time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    /* C locale names are required by RFC 5322 §3.3; strftime's %a/%b follow
     * LC_TIME, which we never set, so they are the C ones. */
    strftime(buf, size, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* The value of header name in msg (first occurrence, unfolded, trimmed). */
bool mail_header_value(const char *msg, size_t len, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (i < len) {
        const char *eol = memchr(msg + i, '\n', len - i);
        size_t ll = eol ? (size_t)(eol - (msg + i)) : len - i;
        if (ll == 0 || (ll == 1 && msg[i] == '\r'))
            return false;
        if (ll > nl && strncasecmp(msg + i, name, nl) == 0 && msg[i + nl] == ':') {
            GString *v = g_string_new_len(msg + i + nl + 1, (gssize)(ll - nl - 1));
            /* folded continuation lines */
            size_t j = i + ll + 1;
            while (j < len && (msg[j] == ' ' || msg[j] == '\t')) {
                const char *e2 = memchr(msg + j, '\n', len - j);
                size_t l2 = e2 ? (size_t)(e2 - (msg + j)) : len - j;
                g_string_append_len(v, msg + j, (gssize)l2);
                j += l2 + 1;
            }
            for (gsize k = 0; k < v->len; k++)
                if (v->str[k] == '\r' || v->str[k] == '\n' || v->str[k] == '\t')
                    v->str[k] = ' ';
            str_copy(out, g_strstrip(v->str), outlen);
            g_string_free(v, TRUE);
            return true;
        }
        i += ll + 1;
    }
    return false;
}

int64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int fd_wait(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - clock_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return 0;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
        if (r > 0)
            return 1;
        if (r == 0) {
            errno = ETIMEDOUT;
            return 0;
        }
        if (errno != EINTR)
            return -1;
    }
}
