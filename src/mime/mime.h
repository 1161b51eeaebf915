/*
 * mime.h - a thin layer over GMime 3: one-time initialisation, parsing from
 * memory, serialisation in the canonical CRLF form (RFC 5751 §3.1.1), a
 * growable byte buffer, and small helpers for line endings.
 *
 * Purpose: the only door to GMime for src/pec, src/provider, src/filters
 * and pecctl, so that every serialisation uses the same CRLF options.
 * Threads: any thread; mime_init() may be called any number of times from
 * any thread (every entry point calls it).  A GMime object is not shared
 * between threads while another uses it.
 * Ownership: GMime objects are reference counted: release what a function
 * returns with g_object_unref(); mime_parse_message copies the bytes.
 * mime_buf owns its data (mime_buf_free); mime_header's value is valid while
 * obj lives; mime_first_address returns a string the caller frees (free).
 * Errors: every function returns 0 / -1 (or NULL on failure) and, where a
 * message helps, writes it into the caller's err buffer; a mime_buf's -1 is
 * an allocation failure.
 */
#ifndef PEC_MIME_H
#define PEC_MIME_H

#include <stdbool.h>
#include <stddef.h>

#include <gmime/gmime.h>

/* A growable byte buffer, always NUL-terminated (the NUL is not counted). */
typedef struct mime_buf {
    unsigned char *data;
    size_t len;
    size_t cap;
} mime_buf;

int mime_buf_reserve(mime_buf *b, size_t extra);
int mime_buf_add(mime_buf *b, const void *data, size_t len);
int mime_buf_adds(mime_buf *b, const char *s);
int mime_buf_addf(mime_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends base64 of data in lines of 76 characters, each ended by CRLF. */
int mime_buf_add_base64(mime_buf *b, const void *data, size_t len);
void mime_buf_free(mime_buf *b);

/* Initialises GMime once per process (thread safe). */
void mime_init(void);

/* Parses a whole message held in memory (the bytes are copied). */
GMimeMessage *mime_parse_message(const void *data, size_t len, char *err, size_t errsz);

/* Serialises an object with CRLF line ends into out (appended). */
int mime_write(GMimeObject *obj, mime_buf *out);
/* Serialises only the header block of obj (CRLF, no blank line). */
int mime_write_headers(GMimeObject *obj, mime_buf *out);
/* Serialises the body of a leaf part exactly as it would be transmitted
 * (its encoded form), with CRLF line ends. */
int mime_part_raw_body(GMimeObject *part, mime_buf *out);

/* The format options used for every serialisation (CRLF). */
GMimeFormatOptions *mime_crlf_options(void);

/* Appends "Name: value" + CRLF; a non-ASCII value is RFC 2047 encoded and
 * the line folded (RFC 5322 §2.2.3) by GMime. */
int mime_add_text_header(mime_buf *out, const char *name, const char *value);

/* Copies data converting bare LF to CRLF (RFC 5751 §3.1.1 canonical form);
 * existing CRLF pairs and every other byte are left alone. */
int mime_to_crlf(const void *data, size_t len, mime_buf *out);

/* Offset of the blank line ending the header block of a raw message (the
 * index of the first body byte), or -1 when there is no header/body break. */
long mime_header_end(const unsigned char *data, size_t len);

/* The decoded (RFC 2047) value of the first header called name, matched
 * case-insensitively (RFC 5322 §1.2.2), or NULL.  Valid while obj lives. */
const char *mime_header(GMimeObject *obj, const char *name);

/* The bare address (local@domain) of the first mailbox in a header value,
 * newly allocated, or NULL when there is none. */
char *mime_first_address(const char *value);

/* Iterates the mailboxes of an address-list header value: calls fn for each
 * bare address (groups are flattened).  Returns the number seen. */
int mime_each_address(const char *value, void (*fn)(void *ctx, const char *addr), void *ctx);

#endif
