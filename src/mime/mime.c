/*
 * mime.c - thin GMime 3 layer: initialisation, parsing from memory, CRLF
 * serialisation and a growable buffer (see mime.h).
 *
 * Assumes GMime 3.2.  Nothing here touches the disk or the network.
 */
#include "mime/mime.h"
#include "lib/lib.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_err(char *err, size_t errsz, const char *msg)
{
    if (err && errsz)
        snprintf(err, errsz, "%s", msg);
}

/* ---- buffer ------------------------------------------------------------- */

int mime_buf_reserve(mime_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    unsigned char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int mime_buf_add(mime_buf *b, const void *data, size_t len)
{
    if (mime_buf_reserve(b, len) < 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int mime_buf_adds(mime_buf *b, const char *s)
{
    return mime_buf_add(b, s, strlen(s));
}

int mime_buf_addf(mime_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || mime_buf_reserve(b, (size_t)n) < 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int mime_buf_add_base64(mime_buf *b, const void *data, size_t len)
{
    /* RFC 2045 §6.8: lines of at most 76 characters. */
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    size_t out = (len + 2) / 3 * 4;
    if (mime_buf_reserve(b, out + (out / 76 + 1) * 2) < 0)
        return -1;
    unsigned char *o = b->data + b->len;
    size_t col = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        *o++ = (unsigned char)tab[(v >> 18) & 63];
        *o++ = (unsigned char)tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? (unsigned char)tab[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? (unsigned char)tab[v & 63] : '=';
        col += 4;
        if (col == 76) {
            *o++ = '\r';
            *o++ = '\n';
            col = 0;
        }
    }
    if (col) {
        *o++ = '\r';
        *o++ = '\n';
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return 0;
}

void mime_buf_free(mime_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- GMime -------------------------------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static GMimeFormatOptions *crlf_opts;

static void do_init(void)
{
    g_mime_init();
    crlf_opts = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(crlf_opts, GMIME_NEWLINE_FORMAT_DOS);
}

void mime_init(void)
{
    pthread_once(&init_once, do_init);
}

GMimeMessage *mime_parse_message(const void *data, size_t len, char *err, size_t errsz)
{
    mime_init();
    GMimeStream *st = g_mime_stream_mem_new_with_buffer(data, len);
    GMimeParser *parser = g_mime_parser_new_with_stream(st);
    g_object_unref(st);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    if (!msg)
        set_err(err, errsz, "not a parsable RFC 5322 message");
    return msg;
}

static int write_with(GMimeObject *obj, mime_buf *out,
                      ssize_t (*fn)(GMimeObject *, GMimeFormatOptions *, GMimeStream *))
{
    mime_init();
    GMimeStream *st = g_mime_stream_mem_new();
    int rc = -1;
    if (fn(obj, crlf_opts, st) >= 0) {
        GByteArray *arr = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(st));
        rc = mime_buf_add(out, arr->data, arr->len);
    }
    g_object_unref(st);
    return rc;
}

int mime_write(GMimeObject *obj, mime_buf *out)
{
    return write_with(obj, out, g_mime_object_write_to_stream);
}

int mime_part_raw_body(GMimeObject *part, mime_buf *out)
{
    return write_with(part, out, g_mime_object_write_content_to_stream);
}

int mime_write_headers(GMimeObject *obj, mime_buf *out)
{
    mime_init();
    char *s = g_mime_object_get_headers(obj, crlf_opts);
    if (!s)
        return -1;
    int rc = mime_buf_adds(out, s);
    g_free(s);
    return rc;
}

GMimeFormatOptions *mime_crlf_options(void)
{
    mime_init();
    return crlf_opts;
}

int mime_add_text_header(mime_buf *out, const char *name, const char *value)
{
    mime_init();
    char *enc = g_mime_utils_header_encode_text(crlf_opts, value ? value : "", "utf-8");
    if (!enc)
        return -1;
    char *line = g_strdup_printf("%s: %s", name, enc);
    g_free(enc);
    char *folded = g_mime_utils_unstructured_header_fold(NULL, crlf_opts, line);
    g_free(line);
    if (!folded)
        return -1;
    mime_buf tmp = {0};
    /* the folder ends the field with a newline in the options' format */
    int rc = mime_to_crlf(folded, strlen(folded), &tmp);
    g_free(folded);
    if (rc == 0 && (tmp.len < 2 || memcmp(tmp.data + tmp.len - 2, "\r\n", 2) != 0))
        rc = mime_buf_add(&tmp, "\r\n", 2);
    if (rc == 0)
        rc = mime_buf_add(out, tmp.data, tmp.len);
    mime_buf_free(&tmp);
    return rc;
}

int mime_to_crlf(const void *data, size_t len, mime_buf *out)
{
    const unsigned char *p = data, *end = p + len, *start = p;
    if (mime_buf_reserve(out, len + len / 32) < 0)
        return -1;
    const unsigned char *nl;
    while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (nl == start || nl[-1] != '\r') {
            if (mime_buf_add(out, start, (size_t)(nl - start)) < 0 ||
                mime_buf_add(out, "\r\n", 2) < 0)
                return -1;
            start = nl + 1;
        }
        p = nl + 1;
    }
    return mime_buf_add(out, start, (size_t)(end - start));
}

long mime_header_end(const unsigned char *data, size_t len)
{
    /* The header block ends at the first empty line (RFC 5322 §2.1). */
    size_t i = 0;
    while (i < len) {
        if (data[i] == '\n')
            return (long)i + 1;
        if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
            return (long)i + 2;
        const unsigned char *nl = memchr(data + i, '\n', len - i);
        if (!nl)
            return -1;
        i = (size_t)(nl - data) + 1;
    }
    return -1;
}

const char *mime_header(GMimeObject *obj, const char *name)
{
    /* GMime matches header names without regard to case. */
    return obj ? g_mime_object_get_header(obj, name) : NULL;
}

static int each_in_list(InternetAddressList *list, void (*fn)(void *, const char *), void *ctx,
                        int depth)
{
    int n = 0;
    for (int i = 0; list && i < internet_address_list_length(list); i++) {
        InternetAddress *ia = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
            const char *a = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
            if (a && *a) {
                if (fn)
                    fn(ctx, a);
                n++;
            }
        } else if (INTERNET_ADDRESS_IS_GROUP(ia) && depth < 4) {
            n += each_in_list(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)),
                              fn, ctx, depth + 1);
        }
    }
    return n;
}

int mime_each_address(const char *value, void (*fn)(void *ctx, const char *addr), void *ctx)
{
    if (!value)
        return 0;
    mime_init();
    InternetAddressList *list = internet_address_list_parse(NULL, value);
    if (!list)
        return 0;
    int n = each_in_list(list, fn, ctx, 0);
    g_object_unref(list);
    return n;
}

static void keep_first(void *ctx, const char *addr)
{
    char **out = ctx;
    if (!*out)
        *out = xstrdup(addr);
}

char *mime_first_address(const char *value)
{
    char *out = NULL;
    mime_each_address(value, keep_first, &out);
    return out;
}
