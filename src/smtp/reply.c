/*
 * reply.c - the SMTP client's reader of a server's reply (RFC 5321 §4.2),
 * one line at a time, and of the EHLO keywords (RFC 5321 §4.1.1.1) in a
 * table.  Pure: no I/O, no allocation; client.c feeds it the lines it reads,
 * tests/fuzz/fuzz_smtp_reply.c arbitrary ones.
 *
 * Interface: client.h (struct smtp_reply_reader).  Assumes lines without
 * their line end, NUL-terminated.
 */
#include "client.h"

#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* SIZE's parameter (RFC 1870 §4): the server's limit, 0 = none stated. */
static void size_value(struct smtp_reply_reader *rr, const char *v)
{
    rr->max_size = strtoull(v, NULL, 10);
}

/* AUTH's parameters: the SASL mechanisms (RFC 4954 §3) we can use. */
static void auth_value(struct smtp_reply_reader *rr, const char *v)
{
    char buf[256];
    g_strlcpy(buf, v, sizeof buf);
    char *save = NULL;
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (strcasecmp(t, "PLAIN") == 0)
            rr->ext |= EXT_AUTH_PLAIN;
        if (strcasecmp(t, "LOGIN") == 0)
            rr->ext |= EXT_AUTH_LOGIN;
    }
}

/* The keywords we use.  A row without value() matches the keyword alone;
 * one with value() takes what follows a space (or "=": the "AUTH=" some old
 * servers send). */
static const struct ehlo_keyword {
    const char *name;
    unsigned ext;
    void (*value)(struct smtp_reply_reader *rr, const char *v);
} keywords[] = {
    {.name = "PIPELINING", .ext = EXT_PIPELINING},            /* RFC 2920 */
    {.name = "SIZE", .ext = EXT_SIZE, .value = size_value},   /* RFC 1870 */
    {.name = "8BITMIME", .ext = EXT_8BITMIME},                /* RFC 6152 */
    {.name = "SMTPUTF8", .ext = EXT_SMTPUTF8},                /* RFC 6531 */
    {.name = "DSN", .ext = EXT_DSN},                          /* RFC 3461 */
    {.name = "STARTTLS", .ext = EXT_STARTTLS},                /* RFC 3207 */
    {.name = "REQUIRETLS", .ext = EXT_REQUIRETLS},            /* RFC 8689 */
    {.name = "CHUNKING", .ext = EXT_CHUNKING},                /* RFC 3030 */
    {.name = "ENHANCEDSTATUSCODES", .ext = EXT_ENHANCED},     /* RFC 2034 */
    {.name = "AUTH", .value = auth_value},                    /* RFC 4954 */
};

static void ehlo_keyword(struct smtp_reply_reader *rr, const char *kw)
{
    size_t n = strcspn(kw, " =");
    for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++) {
        const struct ehlo_keyword *k = &keywords[i];
        if (strlen(k->name) != n || strncasecmp(kw, k->name, n) != 0)
            continue;
        if (k->value == NULL && kw[n] != '\0')
            continue;
        if (k->value != NULL && kw[n] == '=' && strcmp(k->name, "AUTH") != 0)
            continue;
        rr->ext |= k->ext;
        if (k->value != NULL)
            k->value(rr, kw[n] != '\0' ? kw + n + 1 : "");
    }
}

void smtp_reply_start(struct smtp_reply_reader *rr, struct smtp_reply *r, bool ehlo)
{
    memset(rr, 0, sizeof *rr);
    rr->r = r;
    rr->ehlo = ehlo;
}

enum smtp_reply_step smtp_reply_line(struct smtp_reply_reader *rr, const char *line)
{
    /* Reply-code SP/"-" text (RFC 5321 §4.2); a bare code ends a reply */
    if (strlen(line) < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
        line[2] < '0' || line[2] > '9' ||
        (line[3] != '\0' && line[3] != ' ' && line[3] != '-'))
        return SMTP_REPLY_MALFORMED;
    if (rr->lines++ == 0) {
        rr->r->code = atoi(line);
        g_strlcpy(rr->r->text, line[3] ? line + 4 : "", sizeof rr->r->text);
    } else if (rr->ehlo) {
        /* a bare "250" ends the reply and offers nothing */
        ehlo_keyword(rr, line[3] ? line + 4 : "");
    }
    if (line[3] != '-')
        return SMTP_REPLY_DONE;
    return rr->lines >= SMTP_REPLY_MAX_LINES ? SMTP_REPLY_TOO_LONG : SMTP_REPLY_MORE;
}
