/*
 * pec_header.c - raw header fields (see pec_header.h) and the rewrite of the
 * original message at the access point (RFC 6109 §2.2.1: Message-ID becomes
 * the PEC msgid and X-Riferimento-Message-ID keeps the client's one), done
 * on bytes so that the rest of the original stays exactly as submitted.
 *
 * Interface: pec_header_copy, pec_header_has (pec_header.h),
 * pec_original_rewrite (pec.h).
 */
#include "pec/pec_header.h"
#include "lib/lib.h"
#include "pec/pec_internal.h"

#include <string.h>
#include <strings.h>

struct field {
    size_t start, end;   /* [start, end) including the line ends */
    size_t name_len;
};

/* Next field of the header block from *pos; false at the blank line / end. */
static bool next_field(const unsigned char *p, size_t len, size_t *pos, struct field *f)
{
    size_t i = *pos;
    if (i >= len || p[i] == '\n' || (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n'))
        return false;
    f->start = i;
    const unsigned char *colon = memchr(p + i, ':', len - i);
    const unsigned char *nl = memchr(p + i, '\n', len - i);
    f->name_len = colon && (!nl || colon < nl) ? (size_t)(colon - (p + i)) : 0;
    for (;;) {
        nl = memchr(p + i, '\n', len - i);
        if (!nl) {
            i = len;
            break;
        }
        i = (size_t)(nl - p) + 1;
        if (i >= len || (p[i] != ' ' && p[i] != '\t'))
            break; /* not a continuation line */
    }
    f->end = i;
    *pos = i;
    return true;
}

static bool name_is(const unsigned char *p, const struct field *f, const char *name)
{
    size_t n = strlen(name);
    size_t l = f->name_len;
    while (l && (p[f->start + l - 1] == ' ' || p[f->start + l - 1] == '\t'))
        l--; /* obsolete syntax allows WSP before the colon (RFC 5322 §4.5) */
    return l == n && strncasecmp((const char *)p + f->start, name, n) == 0;
}

int pec_header_copy(const void *msg, size_t len, const char *name, mime_buf *out)
{
    const unsigned char *p = msg;
    size_t pos = 0;
    struct field f;
    while (next_field(p, len, &pos, &f)) {
        if (!name_is(p, &f, name))
            continue;
        if (mime_to_crlf(p + f.start, f.end - f.start, out) < 0)
            return -1;
        if (out->len < 2 || memcmp(out->data + out->len - 2, "\r\n", 2) != 0)
            if (mime_buf_add(out, "\r\n", 2) < 0)
                return -1;
    }
    return 0;
}

bool pec_header_has(const void *msg, size_t len, const char *name)
{
    const unsigned char *p = msg;
    size_t pos = 0;
    struct field f;
    while (next_field(p, len, &pos, &f))
        if (name_is(p, &f, name))
            return true;
    return false;
}

int pec_original_rewrite(const void *orig, size_t len, const char *pec_id, pec_buf *out,
                         char *err, size_t errsz)
{
    out->data = NULL;
    out->len = 0;
    const unsigned char *p = orig;
    if (!pec_id || strpbrk(pec_id, "<> \r\n"))
        return pec_err(err, errsz, "bad PEC msgid");
    if (mime_header_end(p, len) < 0)
        return pec_err(err, errsz, "the original has no header/body separation");
    mime_buf b = {0};
    int rc = mime_buf_addf(&b, "Message-ID: <%s>\r\n", pec_id);
    /* the client's Message-ID, as written (§2.2.1) */
    size_t pos = 0;
    struct field f;
    while (next_field(p, len, &pos, &f)) {
        if (!name_is(p, &f, "Message-ID"))
            continue;
        const unsigned char *v = p + f.start + f.name_len + 1;
        size_t vlen = f.end - (f.start + f.name_len + 1);
        char *val = xstrndup((const char *)v, vlen);
        char *t = val ? pec_strdup_trim(val) : NULL;
        if (t) {
            /* unfold: drop line ends inside the value */
            char *w = t;
            for (char *r = t; *r; r++)
                if (*r != '\r' && *r != '\n')
                    *w++ = *r;
            *w = '\0';
            if (*t)
                rc |= mime_buf_addf(&b, "X-Riferimento-Message-ID: %s\r\n", t);
        }
        free(t);
        free(val);
        break;
    }
    pos = 0;
    size_t body = 0;
    while (next_field(p, len, &pos, &f)) {
        /* a client-supplied X-Riferimento-Message-ID is not trusted */
        if (!name_is(p, &f, "Message-ID") && !name_is(p, &f, "X-Riferimento-Message-ID"))
            rc |= mime_buf_add(&b, p + f.start, f.end - f.start);
        body = f.end;
    }
    if (pos < len)
        body = pos;
    rc |= mime_buf_add(&b, p + body, len - body);
    if (rc) {
        mime_buf_free(&b);
        return pec_err(err, errsz, "out of memory");
    }
    pec_buf_take(out, &b);
    return 0;
}
