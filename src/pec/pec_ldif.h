/*
 * pec_ldif.h - the RFC 2849 reader and writer behind the providers'
 * directory (src/pec only).
 *
 * Purpose: the reader keeps every record as found (DN, attribute
 * descriptions with their options, raw values, line numbers), so the
 * directory (pec_directory.c) can be written back unchanged (pecctl
 * directory export).
 * Threads: any thread (no state).
 * Ownership: the entries array and everything in it are the caller's
 * (pec_ldif_entries_free); the input text is only borrowed for the call.
 * Errors: pec_ldif_read returns -1 with "LDIF line N: reason" in err;
 * pec_ldif_write_entry -1 on allocation failure.
 */
#ifndef PEC_LDIF_H
#define PEC_LDIF_H

#include "mime/mime.h"
#include "pec/pec.h"

typedef struct pec_ldif_attr {
    char *desc;                    /* as written, options kept: "providerCertificate;binary" */
    char *name;                    /* the type alone: "providerCertificate" */
    unsigned char *val;            /* decoded value, NUL-terminated for text use */
    size_t len;
    int line;                      /* line where the value starts */
} pec_ldif_attr;

typedef struct pec_ldif_entry {
    char *dn;
    int line;                      /* line of "dn:" */
    pec_ldif_attr *attrs;
    size_t n_attrs;
} pec_ldif_entry;

/* Reads content records.  On error returns -1 with "LDIF line N: reason". */
int pec_ldif_read(const char *p, size_t len, pec_ldif_entry **entries, size_t *n, char *err,
                  size_t errsz);
void pec_ldif_entries_free(pec_ldif_entry *e, size_t n);
/* Appends one record (dn + attributes) to out. */
int pec_ldif_write_entry(mime_buf *out, const pec_ldif_entry *e);

#endif
