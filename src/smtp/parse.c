/*
 * parse.c - SMTP command-line parsing: the line reader (CRLF only), verbs,
 * paths (RFC 5321 §4.1.2 with the SMTPUTF8 extension of RFC 6531 §3.3) and
 * ESMTP parameters, xtext (RFC 3461 §4).  Pure functions over caller memory;
 * tested as tables (tests/unit/test_smtp_parse.c) and fuzzed.
 */
#include "smtp.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

enum smtp_line_result smtp_line_next(struct smtp_line_reader *r, const char *buf, size_t len,
                                     size_t max, size_t *linelen, size_t *consumed)
{
    *linelen = 0;
    if (r->discarding) {
        /* inside an over-long line: skip to its end */
        const char *lf = memchr(buf, '\n', len);
        if (lf == NULL) {
            *consumed = len;
            return SMTP_LINE_NEED_MORE;
        }
        *consumed = (size_t)(lf - buf) + 1;
        r->discarding = false;
        return SMTP_LINE_TOO_LONG;
    }
    size_t window = len < max ? len : max;
    const char *lf = memchr(buf, '\n', window);
    if (lf == NULL) {
        if (len >= max) {
            /* no line end within the limit: drop what we looked at */
            r->discarding = true;
            *consumed = window;
        } else {
            *consumed = 0;
        }
        return SMTP_LINE_NEED_MORE;
    }
    size_t i = (size_t)(lf - buf);
    *consumed = i + 1;
    if (i == 0 || buf[i - 1] != '\r')
        return SMTP_LINE_BARE_LF;
    *linelen = i - 1;
    return SMTP_LINE_OK;
}

static const struct {
    const char *name;
    enum smtp_verb verb;
} verbs[] = {
    {"HELO", SMTP_V_HELO}, {"EHLO", SMTP_V_EHLO}, {"MAIL", SMTP_V_MAIL},
    {"RCPT", SMTP_V_RCPT}, {"DATA", SMTP_V_DATA}, {"BDAT", SMTP_V_BDAT},
    {"RSET", SMTP_V_RSET}, {"NOOP", SMTP_V_NOOP}, {"QUIT", SMTP_V_QUIT},
    {"VRFY", SMTP_V_VRFY}, {"EXPN", SMTP_V_EXPN}, {"HELP", SMTP_V_HELP},
    {"STARTTLS", SMTP_V_STARTTLS}, {"AUTH", SMTP_V_AUTH},
};

/* Request lines of HTTP sent to the SMTP port (a browser, or a cross-protocol
 * attack through an HTTP proxy); Postfix drops these too. */
static const char *const http_methods[] = {"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS"};

void smtp_command_parse(const char *line, struct smtp_command *out)
{
    size_t n = strcspn(line, " ");
    const char *args = line + n;
    while (*args == ' ')
        args++;
    out->verb = SMTP_V_UNKNOWN;
    out->args = args;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strlen(verbs[i].name) == n && strncasecmp(line, verbs[i].name, n) == 0) {
            out->verb = verbs[i].verb;
            return;
        }
    }
    for (size_t i = 0; i < sizeof http_methods / sizeof http_methods[0]; i++) {
        if (strlen(http_methods[i]) == n && strncmp(line, http_methods[i], n) == 0 &&
            *args != '\0') {
            out->verb = SMTP_V_HTTP;
            return;
        }
    }
}

/* RFC 5322 atext */
static bool is_atext(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool is_utf8(unsigned char c) { return c >= 0x80; }

/* A UTF-8 sequence check, so a "utf8" address is at least well-formed. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF)
            k = 1;
        else if (c >= 0xE0 && c <= 0xEF)
            k = 2;
        else if (c >= 0xF0 && c <= 0xF4)
            k = 3;
        else
            return false;
        for (size_t j = 1; j <= k; j++)
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

bool smtp_domain_valid(const char *s, bool utf8)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255)
        return false;
    if (s[0] == '[') {
        /* address literal: IPv4, IPv6:…, or General; checked loosely as
         * dcontent (RFC 5321 §4.1.3) */
        if (s[n - 1] != ']' || n < 3)
            return false;
        for (size_t i = 1; i < n - 1; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c < 33 || c > 126 || c == '[' || c == ']' || c == '\\')
                return false;
        }
        return true;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (isalnum(c) || (utf8 && is_utf8(c)))
            ;
        else if (c == '-' && label > 0)
            ;
        else
            return false;
        if (++label > 63)
            return false;
    }
    if (label == 0 || s[n - 1] == '-')
        return false;
    return !utf8 || utf8_valid((const unsigned char *)s, n);
}

static bool local_valid(const char *s, bool *utf8)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    if (s[0] == '"') {
        if (n < 2 || s[n - 1] != '"')
            return false;
        for (size_t i = 1; i < n - 1; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '\\') {
                i++;
                if (i >= n - 1 || s[i] < 32 || s[i] > 126)
                    return false;
            } else if (is_utf8(c))
                *utf8 = true;
            else if (c < 32 || c > 126 || c == '"')
                return false;
        }
    } else {
        if (s[0] == '.' || s[n - 1] == '.')
            return false;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '.') {
                if (s[i + 1] == '.')
                    return false;
            } else if (is_utf8(c))
                *utf8 = true;
            else if (!is_atext(c))
                return false;
        }
    }
    return !*utf8 || utf8_valid((const unsigned char *)s, n);
}

enum smtp_path_error smtp_path_parse(const char *args, const char *prefix, bool allow_null,
                                     struct smtp_path *out)
{
    memset(out, 0, offsetof(struct smtp_path, buf));
    size_t plen = strlen(prefix);
    if (strncasecmp(args, prefix, plen) != 0)
        return SMTP_PATH_SYNTAX;
    const char *p = args + plen;
    /* RFC 5321 allows no space here; widespread clients send one.  Like
     * Postfix's default we tolerate it: it carries no ambiguity. */
    while (*p == ' ')
        p++;
    if (*p != '<')
        return SMTP_PATH_SYNTAX;
    p++;
    /* find the closing '>' outside a quoted string */
    const char *q = p;
    bool quoted = false;
    for (; *q; q++) {
        if (quoted && *q == '\\' && q[1] != '\0') {
            q++;
            continue;
        }
        if (*q == '"')
            quoted = !quoted;
        else if (*q == '>' && !quoted)
            break;
    }
    if (*q != '>')
        return SMTP_PATH_SYNTAX;
    size_t alen = (size_t)(q - p);
    /* drop a source route "@a,@b:" (RFC 5321 App. C: MUST accept, SHOULD ignore) */
    if (alen > 0 && *p == '@') {
        const char *colon = memchr(p, ':', alen);
        if (colon == NULL)
            return SMTP_PATH_SYNTAX;
        alen -= (size_t)(colon + 1 - p);
        p = colon + 1;
    }
    if (alen > SMTP_PATH_MAX)
        return SMTP_PATH_TOO_LONG;
    memcpy(out->addr, p, alen);
    out->addr[alen] = '\0';
    if (memchr(out->addr, '\0', alen) != NULL)
        return SMTP_PATH_SYNTAX;

    /* storage: "local\0domain\0params..." */
    size_t used = 0;
    if (alen == 0) {
        if (!allow_null)
            return SMTP_PATH_SYNTAX;
    } else {
        const char *at = NULL;
        if (out->addr[0] == '"') {
            /* the '@' after the closing quote */
            const char *e = out->addr + 1;
            for (; *e && *e != '"'; e++)
                if (*e == '\\' && e[1])
                    e++;
            if (*e == '"')
                at = strchr(e, '@');
        } else {
            at = strrchr(out->addr, '@');
        }
        memcpy(out->buf, out->addr, alen + 1);
        out->local = out->buf;
        used = alen + 1;
        if (at != NULL) {
            size_t llen = (size_t)(at - out->addr);
            out->buf[llen] = '\0';
            out->domain = out->buf + llen + 1;
        } else if (strcasecmp(out->addr, "postmaster") != 0) {
            return SMTP_PATH_SYNTAX;    /* only <Postmaster> may lack a domain */
        }
        if (!local_valid(out->local, &out->utf8))
            return SMTP_PATH_SYNTAX;
        if (out->domain != NULL) {
            for (const char *d = out->domain; *d; d++)
                if (is_utf8((unsigned char)*d))
                    out->utf8 = true;
            if (!smtp_domain_valid(out->domain, out->utf8))
                return SMTP_PATH_SYNTAX;
        }
    }

    /* parameters: SP-separated keyword[=value] (RFC 5321 §4.1.2 esmtp-param) */
    const char *r = q + 1;
    if (*r != '\0' && *r != ' ')
        return SMTP_PATH_SYNTAX;
    size_t rlen = strlen(r);
    if (used + rlen + 1 > sizeof out->buf)
        return SMTP_PATH_TOO_LONG;
    char *s = out->buf + used;
    memcpy(s, r, rlen + 1);
    char *save = NULL;
    for (char *tok = strtok_r(s, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (out->nparams >= SMTP_MAX_PARAMS)
            return SMTP_PATH_TOO_MANY_PARAMS;
        char *eq = strchr(tok, '=');
        if (eq != NULL)
            *eq = '\0';
        if (!isalnum((unsigned char)tok[0]))
            return SMTP_PATH_SYNTAX;
        for (char *k = tok; *k; k++) {
            if (!isalnum((unsigned char)*k) && *k != '-')
                return SMTP_PATH_SYNTAX;
            *k = (char)toupper((unsigned char)*k);
        }
        if (eq != NULL) {
            if (eq[1] == '\0')
                return SMTP_PATH_SYNTAX;
            for (char *v = eq + 1; *v; v++)
                if ((unsigned char)*v < 33 || *v == '=' || *v == 127)
                    return SMTP_PATH_SYNTAX;
        }
        out->params[out->nparams].key = tok;
        out->params[out->nparams].value = eq ? eq + 1 : NULL;
        out->nparams++;
    }
    return SMTP_PATH_OK;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;   /* RFC 3461: hexchar is upper case */
}

int smtp_xtext_decode(char *s)
{
    char *w = s;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '+') {
            int h = hexval(p[1]), l = h < 0 ? -1 : hexval(p[2]);
            if (h < 0 || l < 0)
                return -1;
            int v = h * 16 + l;
            if (v == 0)
                return -1;
            *w++ = (char)v;
            p += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return -1;
        } else {
            *w++ = (char)c;
        }
    }
    *w = '\0';
    return 0;
}
