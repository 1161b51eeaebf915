/*
 * milter_apply.c - applies a filter's header and body modifications to a
 * CRLF message, as Sendmail and Postfix do: ADDHEADER appends a field,
 * INSHEADER inserts before the index-th field (0 = top), CHGHEADER replaces
 * (or, with an empty value, deletes) the index-th occurrence of a name
 * (1-based; 0 counts as 1; past the last one it adds the field), REPLBODY
 * replaces the body.  Fields not named by a change keep their bytes, folds
 * included.  Values from the filter use LF between folded lines; they are
 * written with CRLF.
 *
 * A signed PEC (signed_pec) only takes added fields whose names carry no
 * PEC or MIME meaning (a DKIM-Signature, a Received, an X-Spam-Status...):
 * anything else would change what the provider signed or what the
 * recipient's provider checks.
 */
#include "filters/milter_int.h"
#include "lib/lib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct field {
    const char *p;      /* the field's bytes, CRLF included */
    size_t n;
    char *own;          /* p when we built it */
};

struct fields {
    struct field *v;
    size_t n, cap;
};

static int fields_insert(struct fields *f, size_t at, struct field x)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 32;
        struct field *v = xrealloc(f->v, cap * sizeof *v);
        if (!v)
            return -1;
        f->v = v;
        f->cap = cap;
    }
    if (at > f->n)
        at = f->n;
    memmove(f->v + at + 1, f->v + at, (f->n - at) * sizeof *f->v);
    f->v[at] = x;
    f->n++;
    return 0;
}

static void fields_free(struct fields *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i].own);
    free(f->v);
}

/* Splits the header section (hdrlen octets) into fields; lines that start
 * with white space continue the field before them. */
static int fields_parse(struct fields *f, const char *msg, size_t hdrlen)
{
    size_t start = 0, pos = 0;
    while (pos < hdrlen) {
        const char *nl = memchr(msg + pos, '\n', hdrlen - pos);
        size_t next = nl ? (size_t)(nl - msg) + 1 : hdrlen;
        if (next >= hdrlen || (msg[next] != ' ' && msg[next] != '\t')) {
            if (fields_insert(f, f->n, (struct field){msg + start, next - start, NULL}) < 0)
                return -1;
            start = next;
        }
        pos = next;
    }
    return 0;
}

static bool field_is(const struct field *x, const char *name)
{
    size_t l = strlen(name);
    if (x->n <= l || strncasecmp(x->p, name, l) != 0)
        return false;
    for (size_t i = l; i < x->n; i++)      /* "Name:" or "Name  :" */
        if (x->p[i] == ':')
            return true;
        else if (x->p[i] != ' ' && x->p[i] != '\t')
            return false;
    return false;
}

/* "Name: value\r\n" with LF folds written as CRLF. */
static int field_build(struct field *x, const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) * 2 + 5;
    char *p = malloc(n), *o = p;
    if (!p)
        return -1;
    o += sprintf(o, "%s:%s", name, value[0] == ' ' || value[0] == '\t' ? "" : " ");
    for (const char *v = value; *v; v++) {
        if (*v == '\n' && (v == value || v[-1] != '\r'))
            *o++ = '\r';
        *o++ = *v;
    }
    memcpy(o, "\r\n", 3);
    *x = (struct field){p, strlen(p), p};
    return 0;
}

/* Fields whose meaning a signed PEC fixes: RFC 5322 originator, destination,
 * identification and informational fields, MIME structure, and the PEC
 * header fields (RFC 6109 §3.1). */
static bool protected_name(const char *name)
{
    static const char *const names[] = {
        "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID",
        "In-Reply-To", "References", "MIME-Version", "Return-Path", "X-Trasporto",
        "X-Ricevuta", "X-Riferimento-Message-ID", "X-TipoRicevuta", "X-VerificaSicurezza",
        "X-Mittente", "X-Destinatari"};
    if (str_iprefix(name, "Content-"))
        return true;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (str_ieq(name, names[i]))
            return true;
    return false;
}

static const char *const kind_names[] = {"ADDHEADER", "INSHEADER", "CHGHEADER", "REPLBODY",
                                         "ADDRCPT", "DELRCPT", "CHGFROM"};

static int check_mod(const struct milter_mod *m, bool signed_pec, char *err, size_t errlen)
{
    const char *kind = (unsigned)m->kind <= MILTER_MOD_CHANGE_FROM ? kind_names[m->kind] : "?";
    bool hdr = m->kind == MILTER_MOD_ADD_HEADER || m->kind == MILTER_MOD_INSERT_HEADER ||
               m->kind == MILTER_MOD_CHANGE_HEADER;
    char why[160];
    if (hdr && (!m->name || !m->value || milter_check_header(m->name, m->value, why, sizeof why) < 0))
        return str_fmt(err, errlen, "milter %s: %s", kind, m->name && m->value ? why : "empty"), -1;
    if (m->kind == MILTER_MOD_REPLACE_BODY && !m->data && m->len)
        return str_fmt(err, errlen, "milter REPLBODY without data"), -1;
    if (!signed_pec)
        return 0;
    if (m->kind != MILTER_MOD_ADD_HEADER && m->kind != MILTER_MOD_INSERT_HEADER)
        return str_fmt(err, errlen, "signed PEC: refused milter change %s%s%s", kind,
                       m->name ? " " : "", m->name ? m->name : ""), -1;
    if (protected_name(m->name))
        return str_fmt(err, errlen, "signed PEC: refused milter change %s %s (a field the "
                                    "PEC signature or its checks depend on)", kind, m->name), -1;
    return 0;
}

static int change_header(struct fields *f, const struct milter_mod *m)
{
    unsigned want = m->index ? m->index : 1, seen = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (!field_is(&f->v[i], m->name) || ++seen < want)
            continue;
        free(f->v[i].own);
        if (!m->value[0]) {
            memmove(f->v + i, f->v + i + 1, (f->n - i - 1) * sizeof *f->v);
            f->n--;
            return 0;
        }
        return field_build(&f->v[i], m->name, m->value);
    }
    struct field x;
    if (!m->value[0])
        return 0;      /* deleting what is not there */
    if (field_build(&x, m->name, m->value) < 0)
        return -1;
    if (fields_insert(f, f->n, x) < 0)
        return free(x.own), -1;
    return 0;
}

static int apply_one(struct fields *f, const struct milter_mod *m)
{
    struct field x;
    switch (m->kind) {
    case MILTER_MOD_ADD_HEADER:
    case MILTER_MOD_INSERT_HEADER:
        if (field_build(&x, m->name, m->value) < 0)
            return -1;
        if (fields_insert(f, m->kind == MILTER_MOD_ADD_HEADER ? f->n : m->index, x) < 0)
            return free(x.own), -1;
        return 0;
    case MILTER_MOD_CHANGE_HEADER: return change_header(f, m);
    default: return 0;     /* body: at the end; envelope: the caller's */
    }
}

/* Appends src to *o, turning bare LF into CRLF when crlf. */
static char *put(char *o, const char *src, size_t n, bool crlf)
{
    for (size_t i = 0; i < n; i++) {
        if (crlf && src[i] == '\n' && (i == 0 || src[i - 1] != '\r'))
            *o++ = '\r';
        *o++ = src[i];
    }
    return o;
}

static int assemble(const struct fields *f, bool sep, const char *body, size_t blen,
                    bool newbody, char **out, size_t *outlen)
{
    size_t n = 2 + (newbody ? blen * 2 : blen);
    for (size_t i = 0; i < f->n; i++)
        n += f->v[i].n + 2;
    char *p = malloc(n + 1), *o = p;
    if (!p)
        return -1;
    for (size_t i = 0; i < f->n; i++) {
        o = put(o, f->v[i].p, f->v[i].n, false);
        if (f->v[i].n == 0 || f->v[i].p[f->v[i].n - 1] != '\n')
            o = put(o, "\r\n", 2, false);   /* the last line had no end */
    }
    if (sep || blen)
        o = put(o, "\r\n", 2, false);
    o = put(o, body, blen, newbody);
    *o = '\0';
    *out = p;
    *outlen = (size_t)(o - p);
    return 0;
}

int milter_apply(const struct milter_result *res, const char *msg, size_t len, bool signed_pec,
                 char **out, size_t *outlen, char *err, size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    if (!res || (!msg && len) || (res->nmods && !res->mods))
        return str_fmt(err, errlen, "milter_apply: bad arguments"), -1;
    const char *body = NULL;
    size_t blen = 0;
    for (size_t i = 0; i < res->nmods; i++) {
        if (check_mod(&res->mods[i], signed_pec, err, errlen) < 0)
            return -1;
        if (res->mods[i].kind == MILTER_MOD_REPLACE_BODY) {
            body = res->mods[i].data ? res->mods[i].data : "";
            blen = res->mods[i].len;
        }
    }
    msg = msg ? msg : "";
    bool change = false;
    for (size_t i = 0; i < res->nmods; i++)
        change |= res->mods[i].kind <= MILTER_MOD_REPLACE_BODY;
    if (!change) {          /* nothing for us: the same bytes */
        if (!(*out = malloc(len + 1)))
            return str_fmt(err, errlen, "milter_apply: out of memory"), -1;
        memcpy(*out, msg, len);
        (*out)[len] = '\0';
        *outlen = len;
        return 0;
    }
    /* the header section and the body (after the blank line) */
    size_t hdrlen, boff;
    bool sep = true;
    if (len >= 2 && msg[0] == '\r' && msg[1] == '\n') {
        hdrlen = 0, boff = 2;
    } else {
        const char *e = memmem(msg, len, "\r\n\r\n", 4);
        hdrlen = e ? (size_t)(e - msg) + 2 : len;
        boff = e ? hdrlen + 2 : len;
        sep = e != NULL;
    }
    struct fields f = {0};
    int rc = fields_parse(&f, msg, hdrlen);
    for (size_t i = 0; rc == 0 && i < res->nmods; i++)
        rc = apply_one(&f, &res->mods[i]);
    if (rc == 0)
        rc = assemble(&f, sep, body ? body : msg + boff, body ? blen : len - boff, body != NULL,
                      out, outlen);
    fields_free(&f);
    if (rc < 0)
        str_fmt(err, errlen, "milter_apply: out of memory");
    return rc;
}
