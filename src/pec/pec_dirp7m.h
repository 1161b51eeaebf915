/*
 * pec_dirp7m.h - the providers' directory as the PEC network exchanges it
 * (RFC 6109 §4.5, §5.6): LDIF inside a CMS SignedData, content attached,
 * signer certificate included, binary DER (a ".p7m").  In libpec, no I/O:
 *
 *  - pec_p7m_*: read a .p7m, check its signature, then its signer against
 *    the anchors of [pec] directory_signer (validity now, CRLs when given),
 *    and take the LDIF out (pec_dirp7m.c);
 *  - pec_dir_p7m_sign: sign a text through the "sign these bytes" seam
 *    (pec_signer), content attached (pec_dirp7m.c);
 *  - pec_dir_record_ldif: our own provider record as LDIF (pec_dirpub.c);
 *  - pec_directory_diff: what changed between two copies (pec_dirpub.c).
 *
 * Purpose: the pecdir library (pec_dir.h) verifies downloads with it;
 * pecctl directory publish and refresh sign and compare.
 * Threads: any thread; a pec_p7m is used by one thread at a time.
 * Ownership: pec_p7m_content's buffer is owned by p (valid until
 * pec_p7m_free); ldif, der and diff outputs are the caller's (pec_buf_free);
 * URL lists are freed with pec_strv_free; pec_dir_record borrows its strings.
 * Errors: -1 or NULL with err and, for reading and checking, info->status
 * (pec_p7m_status_name gives the word the logs use); -1 on ENOMEM for diff.
 */
#ifndef PEC_DIRP7M_H
#define PEC_DIRP7M_H

#include "pec/pec.h"

/* The largest .p7m read: the LDIF limit and room for certificates. */
#define PEC_P7M_MAX (PEC_LDIF_MAX + (1u << 20))

/* Why a .p7m is refused; pec_p7m_status_name gives the word the logs use. */
typedef enum pec_p7m_status {
    PEC_P7M_OK = 0,
    PEC_P7M_NOT_DER,               /* "not-der": not a DER ContentInfo */
    PEC_P7M_TRUNCATED,             /* "truncated": fewer bytes than the DER announces */
    PEC_P7M_TOO_LARGE,             /* "too-large": above PEC_P7M_MAX */
    PEC_P7M_FORMAT,                /* "format": not SignedData, detached, not id-data, signers */
    PEC_P7M_NO_SIGNER_CERT,        /* "no-signer-certificate": not included (§4.5) */
    PEC_P7M_CONTENT_CHANGED,       /* "content-changed": message digest mismatch */
    PEC_P7M_BAD_SIGNATURE,         /* "bad-signature": the signature value is wrong */
    PEC_P7M_UNTRUSTED_SIGNER,      /* "unexpected-signer": no path to directory_signer */
    PEC_P7M_SIGNER_EXPIRED,        /* "signer-expired" */
    PEC_P7M_SIGNER_NOT_YET_VALID,  /* "signer-not-yet-valid" */
    PEC_P7M_SIGNER_REVOKED,        /* "signer-revoked": listed in a loaded CRL */
    PEC_P7M_SIGNER_USAGE,          /* "signer-usage": keyUsage/extendedKeyUsage */
} pec_p7m_status;
const char *pec_p7m_status_name(pec_p7m_status s);

typedef struct pec_p7m_info {
    pec_p7m_status status;
    char signer_subject[256];      /* one-line DN of the signer certificate */
    char signer_sha1[41];          /* lowercase hex of its DER */
    time_t signing_time;           /* signingTime attribute; 0 when absent */
    time_t signer_not_after;
} pec_p7m_info;

typedef struct pec_p7m pec_p7m;

/* Reads der (structure, one signer, content attached and of type id-data)
 * and checks the signature over the content with the included signer
 * certificate, nothing about who the signer is.  NULL with info->status and
 * err when refused.  info may not be NULL. */
pec_p7m *pec_p7m_read(const void *der, size_t len, pec_p7m_info *info, char *err, size_t errsz);
/* Checks the signer certificate of p at time now: a path to an anchor of
 * signers (an anchor may be the signer's own certificate or any CA above
 * it), validity, key usage for signing (S/MIME), and revocation when
 * signers holds CRLs (an issuer without a CRL is not checked).  0, or -1
 * with info->status and err. */
int pec_p7m_check_signer(const pec_p7m *p, const pec_trust *signers, time_t now,
                         pec_p7m_info *info, char *err, size_t errsz);
/* The signed content (the LDIF), owned by p. */
const pec_buf *pec_p7m_content(const pec_p7m *p);
/* The CRL distribution points (file:, http:, https:) of the signer
 * certificate, NULL-terminated (pec_strv_free).  Call after
 * pec_p7m_check_signer succeeded: the URLs come from the certificate. */
char **pec_p7m_crl_urls(const pec_p7m *p);
void pec_p7m_free(pec_p7m *p);

/* read + check_signer + a copy of the content into ldif: the whole check
 * of a .p7m whose CRLs are already in signers. */
int pec_dir_p7m_open(const pec_trust *signers, const void *der, size_t len, time_t now,
                     pec_buf *ldif, pec_p7m_info *info, char *err, size_t errsz);

/* Signs content with s (its detached signature, then the content put
 * inside: the signed attributes carry the content's digest, so the
 * signature is the same) and checks the result; der is the .p7m. */
int pec_dir_p7m_sign(pec_signer *s, const void *content, size_t len, pec_buf *der, char *err,
                     size_t errsz);

/* ---- our own record (pec_dirpub.c) ------------------------------------------ */

typedef struct pec_dir_record {
    const char *name;              /* providerName ([provider] name) */
    const char *receipt;           /* mailReceipt ([pec] service_address) */
    const char *const *domains;    /* managedDomains */
    size_t n_domains;
    const pec_buf *certs;          /* DER signing certificates: current, then the next */
    size_t n_certs;
    const char *location_url;      /* LDIFLocationURL (https://), NULL = none */
    const char *description;       /* NULL = none */
} pec_dir_record;

/* "version: 1" and one provider record (RFC 6109 §4.5.10): DN
 * providerName=<name>,o=postacert (RFC 4514 escapes), objectclass top and
 * provider, providerName, a providerCertificateHash and a
 * providerCertificate;binary for each certificate, mailReceipt,
 * managedDomains, LDIFLocationURL, description.  The text is read back
 * with pec_directory_parse: -1 with its reason when our own record would
 * not pass the checks a reader makes. */
int pec_dir_record_ldif(const pec_dir_record *r, pec_buf *ldif, char *err, size_t errsz);

/* What changed from old (NULL: nothing before) to cur, one line each:
 *   + provider NAME | - provider NAME
 *   + certificate SHA1 (NAME) | - certificate SHA1 (NAME)
 *   + domain D (NAME) | - domain D (NAME) | ~ domain D: OLD -> NEW
 *   ~ mailReceipt NAME: OLD -> NEW
 * A provider is NAME, or "NAME (unit U)" for a secondary environment.
 * *changes receives the number of lines.  -1 on ENOMEM. */
int pec_directory_diff(const pec_directory *old, const pec_directory *cur, pec_buf *out,
                       size_t *changes);

/* The CRL distribution points (http:, https:, file:) of a certificate
 * (an X509 *), NULL-terminated (pec_strv_free) (pec_directory.c). */
char **pec_x509_crl_urls(const void *x509);

#endif
