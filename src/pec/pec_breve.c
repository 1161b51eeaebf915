/*
 * pec_breve.c - the "breve" form of the original message for delivery
 * receipts (RFC 6109 §3.3.2.2): the MIME structure is kept and every part
 * that carries a file name (Content-Type name= or Content-Disposition
 * filename=) or is an attached message/rfc822 is replaced by a text/plain
 * part "<name>.hash" holding the SHA-1 of the part body as transmitted
 * (its encoded form, CRLF line ends; DESIGN.md, digest D9), written as 40
 * lowercase hex digits.  Inside multipart/signed only the signed content is
 * touched (the user's signature then fails, as the RFC expects); an
 * application/pkcs7-mime original is left as it is (breve = completa).
 *
 * A file name comes from the sender: decoded (RFC 2047/2231) it may hold
 * CR, LF or other control characters.  It is never written as decoded: the
 * name of the hash part is rebuilt from printable characters only (each
 * control character becomes '_') and cut to MAX_NAME octets, and GMime
 * writes it as a parameter value (quoted, RFC 2231-encoded when not ASCII).
 *
 * Interface: pec_breve_transform (pec.h).
 */
#include "pec/pec_internal.h"

#include <string.h>

#include <openssl/sha.h>

#define MAX_DEPTH 32
#define MAX_NAME 200 /* octets of the original name kept in "<name>.hash" */

/* "<name>.hash" from a decoded (untrusted) name: control characters (C0,
 * DEL, and C1 as UTF-8) become '_', at most MAX_NAME octets are kept, cut
 * at a UTF-8 character boundary; invalid UTF-8 is replaced by GLib. */
static char *hash_name(const char *name)
{
    char *valid = g_utf8_make_valid(name, -1);
    GString *s = g_string_sized_new(strlen(valid) + 5);
    for (const char *p = valid; *p != '\0'; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        const char *next = g_utf8_next_char(p);
        if (s->len + (size_t)(next - p) > MAX_NAME)
            break;
        if (c < 0x20 || (c >= 0x7f && c < 0xa0))
            g_string_append_c(s, '_');
        else
            g_string_append_len(s, p, next - p);
    }
    g_free(valid);
    if (s->len == 0)
        g_string_append(s, "allegato");
    g_string_append(s, ".hash");
    return g_string_free(s, FALSE);
}

static GMimeObject *hash_part(GMimeObject *part, const char *name)
{
    mime_buf raw = {0};
    if (mime_part_raw_body(part, &raw) < 0)
        return NULL;
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1(raw.data ? raw.data : (const unsigned char *)"", raw.len, md);
    mime_buf_free(&raw);
    char hex[2 * SHA_DIGEST_LENGTH + 1];
    pec_hex(md, sizeof md, hex);

    char *fname = hash_name(name);
    GMimeTextPart *t = g_mime_text_part_new_with_subtype("plain");
    g_mime_text_part_set_text(t, hex);
    g_mime_part_set_content_encoding(GMIME_PART(t), GMIME_CONTENT_ENCODING_7BIT);
    /* the disposition is kept, as one of the two known values */
    GMimeContentDisposition *old = g_mime_object_get_content_disposition(part);
    const char *disp = old ? g_mime_content_disposition_get_disposition(old) : NULL;
    GMimeContentDisposition *cd = g_mime_content_disposition_new();
    g_mime_content_disposition_set_disposition(
        cd, disp && g_ascii_strcasecmp(disp, "inline") == 0 ? "inline" : "attachment");
    g_mime_object_set_content_disposition(GMIME_OBJECT(t), cd);
    g_object_unref(cd);
    g_mime_part_set_filename(GMIME_PART(t), fname); /* sets name= and filename= */
    g_free(fname);
    return GMIME_OBJECT(t);
}

static const char *part_name(GMimeObject *o)
{
    if (GMIME_IS_PART(o))
        return g_mime_part_get_filename(GMIME_PART(o));
    const char *n = NULL;
    GMimeContentDisposition *cd = g_mime_object_get_content_disposition(o);
    if (cd)
        n = g_mime_content_disposition_get_parameter(cd, "filename");
    if (!n)
        n = g_mime_content_type_get_parameter(g_mime_object_get_content_type(o), "name");
    return n;
}

/* Returns the replacement for o (a new reference) or NULL to keep it. */
static GMimeObject *transform(GMimeObject *o, int depth);

static void transform_children(GMimeMultipart *mp, int depth)
{
    int n = g_mime_multipart_get_count(mp);
    if (GMIME_IS_MULTIPART_SIGNED(mp))
        n = n > 0 ? 1 : 0; /* the signature part stays untouched */
    for (int i = 0; i < n; i++) {
        GMimeObject *child = g_mime_multipart_get_part(mp, i);
        GMimeObject *rep = transform(child, depth + 1);
        if (rep) {
            GMimeObject *old = g_mime_multipart_replace(mp, i, rep);
            if (old)
                g_object_unref(old);
            g_object_unref(rep);
        }
    }
}

static GMimeObject *transform(GMimeObject *o, int depth)
{
    if (depth > MAX_DEPTH)
        return NULL;
    if (GMIME_IS_MULTIPART(o)) {
        transform_children(GMIME_MULTIPART(o), depth);
        return NULL;
    }
    if (GMIME_IS_MESSAGE_PART(o)) {
        const char *n = part_name(o);
        return hash_part(o, n ? n : "messaggio.eml");
    }
    if (GMIME_IS_PART(o)) {
        /* a name parameter, even an empty one, makes the part a file */
        const char *n = part_name(o);
        return n ? hash_part(o, n) : NULL;
    }
    return NULL;
}

int pec_breve_transform(const void *orig, size_t len, pec_buf *out, char *err, size_t errsz)
{
    out->data = NULL;
    out->len = 0;
    GMimeMessage *msg = mime_parse_message(orig, len, err, errsz);
    if (!msg)
        return -1;
    GMimeObject *body = g_mime_message_get_mime_part(msg);
    if (body && !GMIME_IS_APPLICATION_PKCS7_MIME(body)) {
        GMimeObject *rep = transform(body, 0);
        if (rep) {
            g_mime_message_set_mime_part(msg, rep);
            g_object_unref(rep);
        }
    }
    mime_buf b = {0};
    int rc = mime_write(GMIME_OBJECT(msg), &b);
    g_object_unref(msg);
    if (rc < 0) {
        mime_buf_free(&b);
        return pec_err(err, errsz, "cannot serialise the breve original");
    }
    pec_buf_take(out, &b);
    return 0;
}
