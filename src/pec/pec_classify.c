/*
 * pec_classify.c - what kind of PEC message a message is (RFC 6109 §3,
 * App. A): X-Ricevuta first, then X-Trasporto; header names match without
 * regard to case (X-Tiporicevuta exists in the wild, digest D14); Subject is
 * never looked at.  When the top-level message carries no PEC header, the
 * PEC message is searched inside message/rfc822 parts (a mailing list or a
 * forward that re-wrapped it).
 *
 * Interface: pec_classify (pec.h); pec_locate and pec_find_daticert for
 * pec_verify.c (pec_classify.h).
 *
 * pec_classify reads the daticert of receipts (the delivery variant and the
 * errore) without any signature check: it is a reporting helper that pecd
 * never uses on what it receives (the incoming point calls pec_verify,
 * which reads the daticert only after the signature holds), and it reads
 * it through the bounded parser of pec_daticert.c.
 */
#include "pec/pec_classify.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_DEPTH 16

static pec_type header_type(GMimeObject *m, bool *virus)
{
    const char *r = mime_header(m, "X-Ricevuta");
    const char *t = mime_header(m, "X-Trasporto");
    const char *v = mime_header(m, "X-VerificaSicurezza");
    *virus = false;
    if (v) {
        char *s = pec_strdup_trim(v);
        *virus = s && strcasecmp(s, "errore") == 0;
        free(s);
    }
    if (r) {
        char *s = pec_strdup_trim(r);
        pec_type ty = pec_type_parse(s);
        free(s);
        /* only the receipt values of App. A count under X-Ricevuta */
        if (ty != PEC_TYPE_NONE && ty != PEC_TYPE_POSTA_CERTIFICATA)
            return ty;
    }
    if (t) {
        char *s = pec_strdup_trim(t);
        pec_type ty = PEC_TYPE_NONE;
        if (s && strcasecmp(s, "posta-certificata") == 0)
            ty = PEC_TYPE_POSTA_CERTIFICATA;
        else if (s && strcasecmp(s, "errore") == 0)
            ty = PEC_TYPE_ANOMALIA;
        free(s);
        return ty;
    }
    return PEC_TYPE_NONE;
}

static GMimeMessage *search(GMimeObject *o, int depth, pec_type *type, bool *virus)
{
    if (!o || depth > MAX_DEPTH)
        return NULL;
    if (GMIME_IS_MESSAGE_PART(o)) {
        GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(o));
        if (!m)
            return NULL;
        *type = header_type(GMIME_OBJECT(m), virus);
        if (*type != PEC_TYPE_NONE)
            return m;
        return search(g_mime_message_get_mime_part(m), depth + 1, type, virus);
    }
    if (GMIME_IS_MULTIPART(o)) {
        GMimeMultipart *mp = GMIME_MULTIPART(o);
        for (int i = 0; i < g_mime_multipart_get_count(mp); i++) {
            GMimeMessage *m = search(g_mime_multipart_get_part(mp, i), depth + 1, type, virus);
            if (m)
                return m;
        }
    }
    return NULL;
}

GMimeMessage *pec_locate(GMimeMessage *top, pec_type *type, bool *virus, bool *rewrapped)
{
    *rewrapped = false;
    *type = header_type(GMIME_OBJECT(top), virus);
    if (*type != PEC_TYPE_NONE)
        return top;
    GMimeMessage *m = search(g_mime_message_get_mime_part(top), 0, type, virus);
    if (m) {
        *rewrapped = true;
        return m;
    }
    *type = PEC_TYPE_NONE;
    return top;
}

static GMimeObject *find_signed(GMimeObject *o, int depth)
{
    if (!o || depth > MAX_DEPTH)
        return NULL;
    if (GMIME_IS_MULTIPART_SIGNED(o))
        return o;
    if (GMIME_IS_MULTIPART(o)) {
        /* a list footer may follow; the signed entity comes first */
        GMimeMultipart *mp = GMIME_MULTIPART(o);
        for (int i = 0; i < g_mime_multipart_get_count(mp); i++) {
            GMimeObject *s = find_signed(g_mime_multipart_get_part(mp, i), depth + 1);
            if (s)
                return s;
        }
    }
    return NULL;
}

GMimeObject *pec_signed_entity(GMimeMessage *m, bool *nested)
{
    GMimeObject *body = g_mime_message_get_mime_part(m);
    *nested = false;
    if (!body)
        return NULL;
    if (GMIME_IS_MULTIPART_SIGNED(body))
        return body;
    GMimeObject *s = find_signed(body, 0);
    if (s)
        *nested = true;
    return s;
}

static bool is_daticert(GMimeObject *o)
{
    if (!GMIME_IS_PART(o))
        return false;
    const char *fn = g_mime_part_get_filename(GMIME_PART(o));
    if (fn)
        return strcasecmp(fn, "daticert.xml") == 0;
    return false;
}

static GMimeObject *find_daticert_part(GMimeObject *o, int depth)
{
    if (!o || depth > MAX_DEPTH)
        return NULL;
    if (is_daticert(o))
        return o;
    if (GMIME_IS_MULTIPART(o)) {
        GMimeMultipart *mp = GMIME_MULTIPART(o);
        int n = g_mime_multipart_get_count(mp);
        if (GMIME_IS_MULTIPART_SIGNED(o))
            n = n > 0 ? 1 : 0;
        /* not inside message/rfc822: postacert.eml may itself be PEC */
        for (int i = 0; i < n; i++) {
            GMimeObject *r = find_daticert_part(g_mime_multipart_get_part(mp, i), depth + 1);
            if (r)
                return r;
        }
    }
    return NULL;
}

int pec_find_daticert(GMimeObject *obj, mime_buf *out)
{
    GMimeObject *p = find_daticert_part(obj, 0);
    if (!p)
        return -1;
    GMimeDataWrapper *w = g_mime_part_get_content(GMIME_PART(p));
    if (!w)
        return -1;
    /* decoding never makes a part longer (base64, QP, 7bit, 8bit, binary):
     * one far above the parser's bound is not decoded at all */
    GMimeStream *enc = g_mime_data_wrapper_get_stream(w);
    if (enc && g_mime_stream_length(enc) > 4 * (gint64)PEC_DATICERT_MAX_BYTES)
        return -2;
    GMimeStream *st = g_mime_stream_mem_new();
    int rc = -1;
    if (g_mime_data_wrapper_write_to_stream(w, st) >= 0) { /* decodes base64/QP */
        GByteArray *arr = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(st));
        rc = mime_buf_add(out, arr->data, arr->len);
    }
    g_object_unref(st);
    return rc;
}

void pec_classify_msg(GMimeMessage *top, pec_class *c, pec_daticert *d, bool have_d,
                      GMimeMessage **pecmsg)
{
    memset(c, 0, sizeof *c);
    GMimeMessage *m = pec_locate(top, &c->type, &c->virus, &c->rewrapped);
    *pecmsg = m;
    bool nested;
    c->signed_entity = pec_signed_entity(m, &nested) != NULL;
    if (c->type == PEC_TYPE_POSTA_CERTIFICATA) {
        /* §3.3.2: absent X-TipoRicevuta means completa */
        const char *v = mime_header(GMIME_OBJECT(m), "X-TipoRicevuta");
        char *s = v ? pec_strdup_trim(v) : NULL;
        c->variant = s ? pec_variant_parse(s) : PEC_VARIANT_COMPLETA;
        if (c->variant == PEC_VARIANT_NONE)
            c->variant = PEC_VARIANT_COMPLETA;
        free(s);
    }
    if (have_d) {
        c->errore = d->errore;
        if (c->type == PEC_TYPE_AVVENUTA_CONSEGNA)
            c->variant = d->ricevuta; /* [obs] receipts carry it in daticert only */
    }
}

int pec_classify(const void *msg, size_t len, pec_class *out, char *err, size_t errsz)
{
    memset(out, 0, sizeof *out);
    GMimeMessage *top = mime_parse_message(msg, len, err, errsz);
    if (!top)
        return -1;
    GMimeMessage *m = NULL;
    pec_class c;
    pec_classify_msg(top, &c, NULL, false, &m);
    if (c.type == PEC_TYPE_AVVENUTA_CONSEGNA || c.type == PEC_TYPE_ERRORE_CONSEGNA ||
        c.type == PEC_TYPE_NON_ACCETTAZIONE) {
        mime_buf x = {0};
        pec_daticert d;
        if (pec_find_daticert(g_mime_message_get_mime_part(m), &x) == 0 &&
            pec_daticert_parse(x.data, x.len, &d, NULL, 0) == 0) {
            pec_classify_msg(top, &c, &d, true, &m);
            pec_daticert_free(&d);
        }
        mime_buf_free(&x);
    }
    *out = c;
    g_object_unref(top);
    return 0;
}

int pec_original_of(GMimeMessage *top, pec_buf *out)
{
    out->data = NULL;
    out->len = 0;
    pec_type type;
    bool virus, rewrapped, nested;
    GMimeMessage *m = pec_locate(top, &type, &virus, &rewrapped);
    GMimeObject *s = pec_signed_entity(m, &nested);
    GMimeObject *content = s && g_mime_multipart_get_count(GMIME_MULTIPART(s)) > 0
                               ? g_mime_multipart_get_part(GMIME_MULTIPART(s), 0)
                               : g_mime_message_get_mime_part(m);
    if (!content || !GMIME_IS_MULTIPART(content))
        return -1;
    GMimeMultipart *mp = GMIME_MULTIPART(content);
    for (int i = 0; i < g_mime_multipart_get_count(mp); i++) {
        GMimeObject *p = g_mime_multipart_get_part(mp, i);
        if (!GMIME_IS_MESSAGE_PART(p))
            continue;
        GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(p));
        mime_buf b = {0};
        int rc = -1;
        /* GMime keeps the raw header fields and encoded bodies it parsed */
        if (inner && mime_write(GMIME_OBJECT(inner), &b) == 0) {
            pec_buf_take(out, &b);
            rc = 0;
        }
        mime_buf_free(&b);
        return rc;
    }
    return -1;
}

int pec_envelope_original(const void *env, size_t len, pec_buf *out, char *err, size_t errsz)
{
    out->data = NULL;
    out->len = 0;
    GMimeMessage *top = mime_parse_message(env, len, err, errsz);
    if (!top)
        return -1;
    int rc = pec_original_of(top, out);
    if (rc < 0)
        pec_err(err, errsz, "no message/rfc822 part (postacert.eml) in the envelope");
    g_object_unref(top);
    return rc;
}
