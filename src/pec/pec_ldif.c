/*
 * pec_ldif.c - LDIF (RFC 2849) content records, read and written, for the
 * providers' directory (RFC 6109 §4.5).
 *
 * Reader: "version: 1", '#' comments (folded ones too), folded lines (a
 * continuation begins with one space), "attr: value", "attr:: base64",
 * records separated by blank lines, CRLF or LF.  Refused with the line:
 * a record that does not begin with dn:, change records, ":<" URL values
 * (they would make the parser fetch files), bad base64, an attribute
 * description that is not a type and options.  Limits: PEC_LDIF_MAX bytes,
 * PEC_LDIF_MAX_ENTRIES records, LDIF_MAX_ATTRS values per record.
 *
 * Writer: values that are not SAFE-STRING go in base64; lines fold at 76.
 * No I/O: callers pass and get text.
 */
#include "pec_ldif.h"
#include "lib/lib.h"
#include "pec_internal.h"

#include <ctype.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LDIF_MAX_ATTRS 10000u
#define LDIF_COLUMNS 76

struct reader {
    pec_ldif_entry *entries;
    size_t n, cap;
    pec_ldif_entry *cur;           /* the record being read, or NULL between records */
    bool seen_any;                 /* a logical line was read (for "version:") */
    char *err;
    size_t errsz;
};

static int bad(struct reader *r, int line, const char *what)
{
    return pec_err(r->err, r->errsz, "LDIF line %d: %s", line, what);
}

static bool desc_ok(const char *d, size_t n)
{
    if (n == 0 || !isalnum((unsigned char)d[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)d[i]) && d[i] != '-' && d[i] != ';' && d[i] != '.')
            return false;
    return true;
}

static bool b64_ok(const char *v)
{
    size_t n = strlen(v), pad = 0;
    if (n % 4 != 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '=') {
            pad++;
        } else if (pad || !(isalnum(c) || c == '+' || c == '/')) {
            return false;
        }
    }
    return pad <= 2;
}

/* Splits "desc: value" / "desc:: b64"; the value decoded into *val. */
static int split_line(struct reader *r, char *l, int line, char **desc, unsigned char **val,
                      size_t *vlen)
{
    char *colon = strchr(l, ':');
    if (colon == NULL)
        return bad(r, line, "not 'attribute: value' (no colon)");
    *colon = '\0';
    if (!desc_ok(l, strlen(l)))
        return bad(r, line, "bad attribute description before ':'");
    char *v = colon + 1;
    if (*v == '<')
        return bad(r, line, "URL values (':<') are not supported");
    bool b64 = *v == ':';
    v += b64;
    while (*v == ' ')
        v++;
    if (b64) {
        if (!b64_ok(v))
            return bad(r, line, "bad base64 value after '::'");
        gsize n = 0;
        guchar *raw = *v ? g_base64_decode(v, &n) : NULL;
        *val = xmalloc(n + 1);
        if (n)
            memcpy(*val, raw, n);
        (*val)[n] = '\0';
        g_free(raw);
        *vlen = n;
    } else {
        *vlen = strlen(v);
        *val = (unsigned char *)xstrdup(v);
    }
    *desc = l;
    return 0;
}

static int start_entry(struct reader *r, const unsigned char *dn, size_t len, int line)
{
    if (r->n >= PEC_LDIF_MAX_ENTRIES)
        return bad(r, line, "too many records");
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->entries = xrealloc(r->entries, r->cap * sizeof *r->entries);
    }
    r->cur = &r->entries[r->n++];
    memset(r->cur, 0, sizeof *r->cur);
    r->cur->dn = g_strndup((const char *)dn, len);
    g_strstrip(r->cur->dn);
    r->cur->line = line;
    if (r->cur->dn[0] == '\0')
        return bad(r, line, "empty dn");
    return 0;
}

static int add_attr(struct reader *r, char *desc, unsigned char *val, size_t len, int line)
{
    pec_ldif_entry *e = r->cur;
    if (e->n_attrs >= LDIF_MAX_ATTRS) {
        free(val);
        return bad(r, line, "too many values in one record");
    }
    e->attrs = xrealloc(e->attrs, (e->n_attrs + 1) * sizeof *e->attrs);
    pec_ldif_attr *a = &e->attrs[e->n_attrs++];
    a->desc = xstrdup(desc);
    char *semi = strchr(desc, ';');
    a->name = semi ? g_strndup(desc, (gsize)(semi - desc)) : xstrdup(desc);
    a->val = val;
    a->len = len;
    a->line = line;
    return 0;
}

/* One logical (unfolded) line. */
static int logical_line(struct reader *r, char *l, int line)
{
    char *desc = NULL;
    unsigned char *val = NULL;
    size_t vlen = 0;
    bool first = !r->seen_any;
    r->seen_any = true;
    if (split_line(r, l, line, &desc, &val, &vlen) == -1)
        return -1;
    int rc = 0;
    if (r->cur == NULL) {
        if (first && strcasecmp(desc, "version") == 0) {
            if (strcmp((char *)val, "1") != 0)
                rc = bad(r, line, "only LDIF version 1 is known");
        } else if (strcasecmp(desc, "dn") != 0) {
            rc = bad(r, line, "a record must begin with 'dn:'");
        } else {
            rc = start_entry(r, val, vlen, line);
        }
        free(val);
        return rc;
    }
    if (strcasecmp(desc, "changetype") == 0 || strcasecmp(desc, "control") == 0) {
        free(val);
        return bad(r, line, "change records are not a directory (use content LDIF)");
    }
    if (strcasecmp(desc, "dn") == 0) {
        free(val);
        return bad(r, line, "'dn:' inside a record (a blank line must separate records)");
    }
    return add_attr(r, desc, val, vlen, line);
}

int pec_ldif_read(const char *p, size_t len, pec_ldif_entry **entries, size_t *n, char *err,
                  size_t errsz)
{
    struct reader r = {.err = err, .errsz = errsz};
    *entries = NULL;
    *n = 0;
    if (len > PEC_LDIF_MAX)
        return pec_err(err, errsz, "LDIF: larger than %u bytes", PEC_LDIF_MAX);
    if (memchr(p, '\0', len) != NULL)
        return pec_err(err, errsz, "LDIF: NUL byte in the text");
    const char *end = p + len;
    GString *l = g_string_new(NULL);
    bool comment = false;
    int lineno = 0, start = 0, rc = 0;
    while (p <= end && rc == 0) {
        const char *nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        size_t k = (size_t)((nl ? nl : end) - p);
        if (k && p[k - 1] == '\r')
            k--;
        lineno++;
        bool last = nl == NULL;
        if (k > 0 && p[0] == ' ' && (l->len > 0 || comment)) {
            if (!comment)
                g_string_append_len(l, p + 1, (gssize)k - 1);  /* a folded line */
        } else {
            if (l->len > 0)
                rc = logical_line(&r, l->str, start);
            g_string_truncate(l, 0);
            comment = k > 0 && p[0] == '#';
            if (rc == 0 && k > 0 && p[0] == ' ')
                rc = bad(&r, lineno, "continuation line without a line to continue");
            if (k == 0)
                r.cur = NULL;          /* a blank line ends the record */
            else if (!comment)
                g_string_append_len(l, p, (gssize)k);
            start = lineno;
        }
        if (last)
            break;
        p = nl + 1;
    }
    if (rc == 0 && l->len > 0)
        rc = logical_line(&r, l->str, start);
    g_string_free(l, TRUE);
    if (rc == -1) {
        pec_ldif_entries_free(r.entries, r.n);
        return -1;
    }
    *entries = r.entries;
    *n = r.n;
    return 0;
}

void pec_ldif_entries_free(pec_ldif_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        g_free(e[i].dn);
        for (size_t k = 0; k < e[i].n_attrs; k++) {
            free(e[i].attrs[k].desc);
            g_free(e[i].attrs[k].name);
            free(e[i].attrs[k].val);
        }
        free(e[i].attrs);
    }
    free(e);
}

/* ---- writer ----------------------------------------------------------------- */

/* RFC 2849 SAFE-STRING: anything else (UTF-8 too) is written in base64. */
static bool safe_string(const unsigned char *v, size_t n)
{
    if (n == 0)
        return true;
    if (v[0] == ' ' || v[0] == ':' || v[0] == '<' || v[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] == '\0' || v[i] == '\n' || v[i] == '\r' || v[i] >= 0x80)
            return false;
    return true;
}

static int put_folded(mime_buf *out, const char *line, size_t len)
{
    size_t col = LDIF_COLUMNS;
    int rc = mime_buf_add(out, line, len < col ? len : col);
    for (size_t i = col; rc == 0 && i < len; i += col - 1) {
        rc = mime_buf_add(out, "\n ", 2);
        if (rc == 0)
            rc = mime_buf_add(out, line + i, len - i < col - 1 ? len - i : col - 1);
    }
    return rc == 0 ? mime_buf_add(out, "\n", 1) : -1;
}

static int put_attr(mime_buf *out, const char *desc, const void *val, size_t len)
{
    mime_buf l = {0};
    int rc;
    if (safe_string(val, len)) {
        rc = mime_buf_addf(&l, "%s: ", desc);
        if (rc == 0)
            rc = mime_buf_add(&l, val, len);
    } else {
        rc = mime_buf_addf(&l, "%s:: ", desc);
        if (rc == 0 && len)
            rc = mime_buf_add_base64(&l, val, len);
    }
    if (rc == 0) {
        /* mime_buf_add_base64 may break lines: LDIF wants one logical line */
        size_t o = 0;
        for (size_t i = 0; i < l.len; i++)
            if (l.data[i] != '\r' && l.data[i] != '\n')
                l.data[o++] = l.data[i];
        rc = put_folded(out, (const char *)l.data, o);
    }
    mime_buf_free(&l);
    return rc;
}

int pec_ldif_write_entry(mime_buf *out, const pec_ldif_entry *e)
{
    int rc = put_attr(out, "dn", e->dn, strlen(e->dn));
    for (size_t i = 0; rc == 0 && i < e->n_attrs; i++)
        rc = put_attr(out, e->attrs[i].desc, e->attrs[i].val, e->attrs[i].len);
    return rc == 0 ? mime_buf_add(out, "\n", 1) : -1;
}

int pec_ldif_put(pec_buf *out, const char *attr, const void *val, size_t len)
{
    mime_buf b = {.data = out->data, .len = out->len, .cap = out->len};
    int rc = attr ? put_attr(&b, attr, val, len) : mime_buf_add(&b, "\n", 1);
    out->data = b.data;
    out->len = b.len;
    return rc;
}
