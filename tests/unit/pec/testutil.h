/*
 * testutil.h - shared fixtures for the src/pec unit tests: a test PKI made
 * once per process (CA, provider signing certificate, a second provider, an
 * expired and a revoked certificate), a sample original message, file and
 * command helpers.
 */
#ifndef PEC_TESTUTIL_H
#define PEC_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "pec/pec.h"
#include "pec/pec_pki.h"

struct tpki {
    pec_pki_pair ca, signer, other_ca, other_signer, expired, revoked, tls;
    pec_buf crl;                    /* revokes `revoked` */
    char signer_sha1[41];
};

const struct tpki *tpki_get(void);
/* The DER of a pair's certificate (OPENSSL_free it); its length, or -1. */
int tcert_der(const pec_pki_pair *p, unsigned char **der);
/* A signer for one of the pairs issued for domain. */
pec_signer *tsigner(const pec_pki_pair *p);
/* A trust with the test CA (and its CRL when with_crl). */
pec_trust *ttrust(bool with_crl, bool with_directory);

/* The sample original message (CRLF) with a text body and a PDF attachment. */
const char *torig(size_t *len);

/* Builds a message of type with sensible defaults (identity pec.a.example). */
int tbuild(pec_type type, pec_variant variant, pec_errore errore, pec_buf *out);
int tbuild_with(const pec_pki_pair *pair, const char *domain, pec_type type,
                pec_variant variant, pec_errore errore, pec_buf *out);

char *tread(const char *path, size_t *len);       /* NULL when missing */
int twrite(const char *path, const void *data, size_t len);
/* Runs a shell command; returns its exit status, output into out (may be NULL). */
int trun(const char *cmd, char *out, size_t outsz);
const char *ttmpdir(void);                          /* per-process temp dir */

#endif
