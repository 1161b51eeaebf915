/*
 * pec_header.h - byte-exact access to the header block of a raw message
 * (RFC 5322 §2.2: a field is a line starting with its name and a colon,
 * continued by lines starting with white space).
 *
 * Purpose: used only where RFC 6109 wants fields copied "unmodified" and
 * GMime's re-serialisation could alter them (pec_build.c); everything else
 * reads headers through GMime.
 * Threads: any thread (no state).
 * Ownership: msg is borrowed for the call; fields are appended to the
 * caller's mime_buf.
 * Errors: pec_header_copy returns -1 on allocation failure (a missing field
 * is not an error: nothing is appended).
 */
#ifndef PEC_HEADER_H
#define PEC_HEADER_H

#include <stdbool.h>
#include <stddef.h>

#include "mime/mime.h"

/* Appends every field called name (any case), CRLF-terminated. */
int pec_header_copy(const void *msg, size_t len, const char *name, mime_buf *out);
bool pec_header_has(const void *msg, size_t len, const char *name);

#endif
