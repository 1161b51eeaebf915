/*
 * pec_internal.h - helpers shared by the files of src/pec; not a public
 * interface.
 *
 * Purpose: error formatting, small string helpers, the texts of receipts,
 * daticert and CMS internals used across src/pec (and its unit tests).
 * Threads: any thread; pec_cms_read's certificate cache has its own mutex.
 * Ownership: the char * results (pec_strdup_trim, pec_strip_brackets) are
 * malloc'ed for the caller; pec_buf_take moves the buffer; pec_cms_read
 * returns a CMS_ContentInfo and a stack of certificates the caller frees.
 * Errors: the pec.h convention: -1 with a reason in err via pec_err and
 * pec_ossl_err (which clears OpenSSL's error queue), NULL on ENOMEM or
 * unreadable input; pec_find_daticert -1 none, -2 too large.
 */
#ifndef PEC_INTERNAL_H
#define PEC_INTERNAL_H

#include "mime/mime.h"
#include "pec/pec.h"

#include <openssl/cms.h>

/* Writes a formatted message into err (when given) and returns -1. */
int pec_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* pec_err with "what: <OpenSSL's first queued error>"; clears OpenSSL's queue. */
int pec_ossl_err(char *err, size_t errsz, const char *what);
/* strdup of s without leading and trailing white space; NULL on ENOMEM. */
char *pec_strdup_trim(const char *s);
/* Moves a mime_buf into a pec_buf (the mime_buf is left empty). */
void pec_buf_take(pec_buf *dst, mime_buf *src);
/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void pec_hex(const unsigned char *in, size_t len, char *out);

/* The Message-ID value without its angle brackets, newly allocated. */
char *pec_strip_brackets(const char *s);

/* Human-readable texts (pec_text.c): plain (ISO-8859-1 representable
 * UTF-8) and HTML of the same facts (§4.3.1). */
int pec_text_render(const pec_identity *id, const pec_build_args *a, const pec_daticert *d,
                    mime_buf *plain, mime_buf *html);
/* Appends a text/SUBTYPE leaf (headers and body, CRLF) holding the UTF-8 C
 * string text: the smallest charset of us-ascii, iso-8859-1 and utf-8,
 * quoted-printable, inline; byte for byte what a GMimeTextPart with those
 * settings writes (pec_build.c). */
int pec_text_leaf_write(mime_buf *out, const char *subtype, const char *text);

/* The first rfc822Name of an X509's subjectAltName (pec_sign.c). */
void pec_cert_email(const void *x509, char *out, size_t size);

/* The message/rfc822 part (postacert.eml) of a parsed envelope, written as
 * parsed; -1 when there is none (pec_classify.c). */
int pec_original_of(GMimeMessage *top, pec_buf *out);

/* Finds the daticert.xml part below obj (decoded content appended to out).
 * -1 when there is none, -2 when its encoded form is above four times
 * PEC_DATICERT_MAX_BYTES (not decoded). */
int pec_find_daticert(GMimeObject *obj, mime_buf *out);

/* The check pec_daticert_parse makes on the tree libxml2 built: no DOCTYPE
 * (internal or external subset), no entity reference node, at most
 * PEC_DATICERT_MAX_NODES nodes.  0 = fine (pec_daticert.c; exposed for the
 * unit tests: the byte pass before parsing keeps such trees from being
 * built at all). */
struct _xmlDoc;
int pec_daticert_check_tree(struct _xmlDoc *doc, char *err, size_t errsz);

/* Reads a DER CMS ContentInfo (pec_cms.c).  For a SignedData the embedded
 * certificates come from a cache of parsed certificates and are returned in
 * *certs (a new stack, also for no certificates) instead of inside the CMS;
 * pass them to CMS_verify.  NULL if unreadable. */
CMS_ContentInfo *pec_cms_read(const unsigned char *der, size_t len, STACK_OF(X509) **certs);

#endif
