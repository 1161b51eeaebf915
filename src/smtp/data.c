/*
 * data.c - the DATA/BDAT octet scanner: removes dot-stuffing (RFC 5321
 * §4.5.2), finds the end "<CRLF>.<CRLF>", and flags everything that makes
 * SMTP smuggling possible: a bare LF or bare CR never ends a line or the data
 * (rfc5321bis: only CRLF ends a line), NUL octets, over-long lines.
 * Resumable at any octet boundary: the state lives in struct smtp_data.
 *
 * The first line starts right after the DATA command's CRLF, so the scanner
 * starts at "beginning of line".
 */
#include "smtp.h"

#include <string.h>

void smtp_data_init(struct smtp_data *d, bool raw, uint64_t max_size, size_t max_line)
{
    memset(d, 0, sizeof *d);
    d->raw = raw;
    d->state = raw ? SD_TEXT : SD_BOL;
    d->max_size = max_size;
    d->max_line = max_line;
}

bool smtp_data_done(const struct smtp_data *d) { return d->state == SD_DONE; }

/* Appends one octet of message content. */
static inline void emit(struct smtp_data *d, char c, char *out, size_t *o)
{
    if (d->max_size != 0 && d->size >= d->max_size) {
        d->too_big = true;
        return;
    }
    d->size++;
    out[(*o)++] = c;
}

/* An octet inside a line (neither CR nor LF handling pending). */
static inline void text_octet(struct smtp_data *d, char c, char *out, size_t *o)
{
    if (c == '\n') {
        d->bare_lf = true;     /* not a line end: stays in the line */
    } else if (c == '\0') {
        d->nul = true;
    }
    d->line_len++;
    if (d->max_line != 0 && d->line_len + 2 > d->max_line)
        d->line_too_long = true;
    emit(d, c, out, o);
    d->state = SD_TEXT;
}

/* The length of the run at p (at most n octets) with no CR, LF or NUL: the
 * octets that need no look at their neighbours.  memchr is vectorised, so
 * three passes over a line cost less than one octet-by-octet pass. */
static size_t plain_run(const char *p, size_t n)
{
    const char *cr = memchr(p, '\r', n);
    if (cr != NULL)
        n = (size_t)(cr - p);
    const char *lf = memchr(p, '\n', n);
    if (lf != NULL)
        n = (size_t)(lf - p);
    const char *nul = memchr(p, '\0', n);
    return nul != NULL ? (size_t)(nul - p) : n;
}

/* Appends a run of plain octets inside a line: what text_octet does for each. */
static void text_run(struct smtp_data *d, const char *p, size_t n, char *out, size_t *o)
{
    d->line_len += n;
    if (d->max_line != 0 && d->line_len + 2 > d->max_line)
        d->line_too_long = true;
    size_t room = n;
    if (d->max_size != 0) {
        uint64_t left = d->size < d->max_size ? d->max_size - d->size : 0;
        if (left < n) {
            room = (size_t)left;
            d->too_big = true;
        }
    }
    memcpy(out + *o, p, room);
    *o += room;
    d->size += room;
}

size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len, char *out,
                      size_t *outlen)
{
    size_t i = 0, o = 0;
    while (i < len && d->state != SD_DONE) {
        if (d->state == SD_TEXT) {
            size_t n = plain_run(in + i, len - i);
            if (n > 0) {
                text_run(d, in + i, n, out, &o);
                i += n;
                continue;
            }
        }
        char c = in[i++];
        switch (d->state) {
        case SD_BOL:
            if (c == '.') {
                d->state = SD_DOT;
                break;
            }
            /* fall through */
        case SD_TEXT:
            if (c == '\r')
                d->state = SD_CR;
            else
                text_octet(d, c, out, &o);
            break;
        case SD_CR:
            if (c == '\n') {
                emit(d, '\r', out, &o);
                emit(d, '\n', out, &o);
                d->line_len = 0;
                d->state = d->raw ? SD_TEXT : SD_BOL;
            } else {
                /* bare CR: data, flagged; c is looked at again as text */
                d->bare_cr = true;
                text_octet(d, '\r', out, &o);
                i--;
            }
            break;
        case SD_DOT:
            if (c == '\r') {
                d->state = SD_DOT_CR;
            } else {
                /* a stuffed dot: drop it, c is the line's first octet */
                d->state = SD_TEXT;
                i--;
            }
            break;
        case SD_DOT_CR:
            if (c == '\n') {
                d->state = SD_DONE;
            } else {
                /* ".<CR>x": the dot was stuffing, the CR is bare */
                d->bare_cr = true;
                text_octet(d, '\r', out, &o);
                i--;
            }
            break;
        case SD_DONE:
            break;
        }
    }
    *outlen = o;
    return i;
}

const char *smtp_data_verdict(const struct smtp_data *d)
{
    if (d->raw && (d->state == SD_CR))
        return "550 5.6.0 Bare LF or CR in message data; only CRLF ends a line; message refused";
    if (d->too_big)
        return "552 5.3.4 Message size exceeds fixed maximum message size";
    if (d->bare_lf || d->bare_cr)
        return "550 5.6.0 Bare LF or CR in message data; only CRLF ends a line; message refused";
    if (d->nul)
        return "550 5.6.0 NUL octet in message data; message refused";
    if (d->line_too_long)
        return "550 5.6.0 Line too long in message data; message refused";
    return NULL;
}
