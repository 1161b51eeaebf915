/*
 * pec_pki.h - a test PKI for PEC providers, in memory (PEM in, PEM out):
 * a CA, provider signing certificates with the profile of RFC 6109 §5.5 as
 * real providers use it (RSA-2048+, KeyUsage digitalSignature critical,
 * EKU emailProtection, SAN email:posta-certificata@<domain>, SKI/AKI, no
 * basicConstraints), TLS server certificates, and CRLs.  Used by
 * `pecctl pki`, `pecctl init` and the tests; files are written by callers.
 */
#ifndef PEC_PKI_H
#define PEC_PKI_H

#include "pec/pec.h"

typedef struct pec_pki_pair {
    pec_buf key_pem;               /* PKCS#8 private key */
    pec_buf cert_pem;
} pec_pki_pair;

typedef enum pec_pki_kind {
    PEC_PKI_SIGNING = 0,           /* S/MIME signing of PEC messages (§5.5) */
    PEC_PKI_TLS,                   /* TLS server/client for SMTP between providers */
} pec_pki_kind;

typedef struct pec_pki_req {
    pec_pki_kind kind;
    const char *domain;            /* signing: posta-certificata@<domain>; TLS: DNS name */
    const char *org;               /* providerName, in O and CN (§5.5) */
    const char *const *dns_names;  /* TLS: more subjectAltName DNS names */
    size_t n_dns;
    int bits;                      /* 0 = 2048 */
    time_t not_before;             /* 0 = now - 1 h */
    long days;                     /* 0 = 825 */
    unsigned long serial;          /* 0 = random */
    void *public_key;              /* an EVP_PKEY whose private half lives elsewhere (a
                                      hardware module): the certificate is for it and the
                                      pair gets no key_pem; NULL = a new RSA key */
} pec_pki_req;

/* A self-signed CA (basicConstraints CA:TRUE critical, keyCertSign+cRLSign). */
int pec_pki_make_ca(const char *name, long days, int bits, pec_pki_pair *out, char *err,
                    size_t errsz);
/* A certificate for req issued by ca. */
int pec_pki_issue(const pec_pki_pair *ca, const pec_pki_req *req, pec_pki_pair *out, char *err,
                  size_t errsz);
/* One entry of a CRL (RFC 5280 §5.3.1 for the reason code). */
typedef struct pec_pki_revoked {
    unsigned long serial;
    time_t when;                   /* revocationDate; 0 = now - 60 s */
    int reason;                    /* CRL_REASON_*: 0..10 but 7; -1 = no reasonCode */
} pec_pki_revoked;

/* A CRL signed by ca listing the given entries, valid for days. */
int pec_pki_make_crl(const pec_pki_pair *ca, const pec_pki_revoked *revoked, size_t n, long days,
                     pec_buf *crl_pem, char *err, size_t errsz);
/* Serial number and SHA-1 (providerCertificateHash, §4.5.1) of a PEM certificate. */
int pec_pki_cert_info(const void *cert_pem, size_t len, unsigned long *serial, char sha1hex[41],
                      char *err, size_t errsz);
void pec_pki_pair_free(pec_pki_pair *p);

#endif
