/*
 * pec.h - the PEC domain (RFC 6109), in memory: certification data
 * (daticert.xml), transport and anomaly envelopes, every receipt, S/MIME
 * signing and verification, classification, and the formal checks of the
 * access point.  No sockets and no disk: callers pass bytes in and get
 * bytes out, so every rule is unit-testable.
 *
 * Purpose: libpec, called by the provider's roles (src/provider), the
 * directory library (pec_dir.h), pecctl (verify, init, directory) and the
 * tests.  Strings are UTF-8; message bytes produced here use CRLF line ends.
 * Threads: any thread.  pec_set_timezone once at start-up, before the
 * threads that build messages.  A pec_trust or pec_directory is read-only
 * once prepared and shared by concurrent verifications (the chain cache
 * inside pec_trust has its own lock); a pec_signer is shared by threads
 * (the PEM signer through OpenSSL, the signer process's one through src/keys).
 * Ownership: output buffers (pec_buf) are malloc'ed; release them with
 * pec_buf_free().  Parsed daticerts own their strings (pec_daticert_free);
 * ones filled for building and pec_build_args only borrow.  Every *_new /
 * *_parse has its *_free; lookups return pointers into their object.
 * Errors: functions return 0 on success and -1 on failure (NULL for the
 * constructors), with a reason written into a caller-supplied err buffer
 * (err may be NULL); a verification that reached a verdict returns 0 and
 * says why it failed in pec_verdict (reason, detail).
 *
 * Where the English text of RFC 6109 and real providers disagree, real
 * providers win (see DESIGN.md and PEC-SPEC-DIGEST.md §0).
 */
#ifndef PEC_PEC_H
#define PEC_PEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- vocabulary (RFC 6109 §8.1, App. A; daticert DTD) -------------------- */

typedef enum pec_type {
    PEC_TYPE_NONE = 0,                /* not a PEC message */
    PEC_TYPE_POSTA_CERTIFICATA,       /* transport envelope, X-Trasporto: posta-certificata */
    PEC_TYPE_ANOMALIA,                /* anomaly envelope,   X-Trasporto: errore */
    PEC_TYPE_ACCETTAZIONE,            /* X-Ricevuta: ... (§3.1.4) */
    PEC_TYPE_NON_ACCETTAZIONE,        /* §3.1.2, §3.1.3 (errore virus) */
    PEC_TYPE_PRESA_IN_CARICO,         /* §3.2.1 */
    PEC_TYPE_AVVENUTA_CONSEGNA,       /* §3.3.2 */
    PEC_TYPE_ERRORE_CONSEGNA,         /* §3.3.3, §3.2.4 (errore virus) */
    PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA, /* §3.1.6, both timeout notices */
    PEC_TYPE_RILEVAZIONE_VIRUS,       /* §3.2.3 */
} pec_type;

typedef enum pec_variant {
    PEC_VARIANT_NONE = 0,
    PEC_VARIANT_COMPLETA,
    PEC_VARIANT_BREVE,
    PEC_VARIANT_SINTETICA,
} pec_variant;

typedef enum pec_errore {
    PEC_ERRORE_NESSUNO = 0,
    PEC_ERRORE_NO_DEST,
    PEC_ERRORE_NO_DOMINIO,
    PEC_ERRORE_VIRUS,
    PEC_ERRORE_ALTRO,
} pec_errore;

typedef enum pec_rcpt_kind {
    PEC_RCPT_CERTIFICATO = 0,         /* domain in managedDomains (§2.2.1) */
    PEC_RCPT_ESTERNO,
} pec_rcpt_kind;

/* Header value / daticert value; "errore" for the anomaly, "none" for NONE. */
const char *pec_type_name(pec_type t);
pec_type pec_type_parse(const char *s); /* NONE when unknown */
const char *pec_variant_name(pec_variant v); /* NULL for NONE */
pec_variant pec_variant_parse(const char *s);
const char *pec_errore_name(pec_errore e);
int pec_errore_parse(const char *s, pec_errore *out);

typedef struct pec_buf {
    unsigned char *data;
    size_t len;
} pec_buf;
void pec_buf_free(pec_buf *b);

/* ---- certification data: daticert.xml (§4.4) ------------------------------- */

typedef struct pec_recipient {
    char *addr;
    pec_rcpt_kind kind;
} pec_recipient;

/*
 * The fields of daticert.xml.  Parsed instances own their strings (free
 * with pec_daticert_free); instances filled by a caller for building only
 * borrow them.  Dates are kept as the text the DTD fixes.
 */
typedef struct pec_daticert {
    pec_type tipo;
    pec_errore errore;
    /* intestazione: the original message's header data */
    char *mittente;
    pec_recipient *destinatari;
    size_t n_destinatari;
    char *risposte;
    char *oggetto;                 /* NULL when absent */
    /* dati */
    char *gestore_emittente;
    char zona[8];                  /* "+0100" */
    char giorno[16];               /* "dd/mm/yyyy" */
    char ora[16];                  /* "hh:mm:ss" */
    char *identificativo;          /* PEC msgid, without < > */
    char *msgid;                   /* client msgid, with < >, or NULL */
    pec_variant ricevuta;          /* NONE when absent */
    char *consegna;
    char **ricezione;
    size_t n_ricezione;
    char *errore_esteso;
    /* parse only: DTD deviations found while parsing leniently, or NULL */
    char *warning;
} pec_daticert;

/*
 * Bounds on a daticert.xml from outside, checked on its bytes in one linear
 * pass before libxml2 parses it (docs/pec.md "Hostile daticert"): a
 * DOCTYPE or any other markup declaration (<!ENTITY ...) is refused; so is
 * an encoding other than UTF-8, US-ASCII, ISO-8859-1/-15 or windows-1252.
 * MAX_BYTES is about five times the daticert of the largest recipient list
 * a message can have within the legal size x recipients limit (30 MB,
 * §3.1.1).  NODES counts elements, attributes (xmlns too), comments,
 * processing instructions and CDATA sections.
 */
#define PEC_DATICERT_MAX_BYTES (1u << 20)
#define PEC_DATICERT_MAX_NODES 50000u
#define PEC_DATICERT_MAX_ATTRS 8u           /* on one element; the DTD has at most 2 */
#define PEC_DATICERT_MAX_DEPTH 32u          /* element nesting; a daticert has 4 */

/* Fills zona/giorno/ora with the legal time of t (§4.2, §4.4): pec_legal_time. */
void pec_daticert_set_time(pec_daticert *d, time_t t);
/* §4.2: the zone of the legal time, a tz database name ([pec] timezone,
 * default Europe/Rome, whatever the host's TZ).  Call once at start-up,
 * before the threads that build messages; -1 when the zone is unknown. */
int pec_set_timezone(const char *id, char *err, size_t errsz);
/* t broken down in the legal time (tm_gmtoff set): every time written in a
 * receipt, an envelope, a daticert or a PEC msgid. */
void pec_legal_time(time_t t, struct tm *out);
/* Serialises d as UTF-8 XML valid against the DTD. */
int pec_daticert_build(const pec_daticert *d, pec_buf *out, char *err, size_t errsz);
/* Parses leniently: well-formed XML with the fields present is accepted;
 * DTD violations go to d->warning (interop d08).  -1 when not usable, also
 * when a bound above is exceeded or the document has a DOCTYPE or an
 * entity reference (the reason says which). */
int pec_daticert_parse(const void *xml, size_t len, pec_daticert *d, char *err, size_t errsz);
/* Validates against the RFC 6109 §4.4 DTD (held in memory). 0 = valid. */
int pec_daticert_validate(const void *xml, size_t len, char *err, size_t errsz);
void pec_daticert_free(pec_daticert *d);

/* ---- signing: the narrow "sign these bytes" interface (§2.1, §5.1) -------- */

/*
 * A signer produces a detached CMS SignedData (DER) over exactly the bytes
 * given, with SHA-256 and the signer's chain embedded.  The implementation
 * below holds the key (PEM, or a hardware module's key) in this process;
 * pecd's network-facing process uses another one with the same callbacks,
 * which asks the signer process over a socket (src/keys).
 */
typedef struct pec_signer {
    int (*sign)(void *ctx, const void *data, size_t len, pec_buf *der, char *err, size_t errsz);
    /* optional: n signatures at once (der[n]; all made or none), for a signer
     * whose every request costs a round trip; NULL: sign() n times */
    int (*sign_n)(void *ctx, size_t n, const void *const *data, const size_t *len, pec_buf *der,
                  char *err, size_t errsz);
    void (*destroy)(void *ctx);
    void *ctx;
    char email[256];               /* SAN rfc822Name of the signing certificate */
} pec_signer;

/* key_pem: the private key; chain_pem: the signer certificate first, then
 * intermediates.  The key is checked against the certificate. */
pec_signer *pec_signer_new_pem(const char *key_pem, size_t key_len, const char *chain_pem,
                               size_t chain_len, char *err, size_t errsz);
/* The same for a key already loaded (an OpenSSL EVP_PKEY *, e.g. a hardware
 * module's key through libp11); the signer takes its own reference. */
pec_signer *pec_signer_new_key(void *evp_pkey, const char *chain_pem, size_t chain_len,
                               char *err, size_t errsz);
/* The detached CMS SignedData sign() makes, from the content's SHA-256 (md,
 * 32 octets) instead of the content: what a signer process is asked.  Only
 * for a signer made by pec_signer_new_pem or pec_signer_new_key. */
int pec_signer_sign_digest(pec_signer *s, const unsigned char *md, size_t mdlen, pec_buf *der,
                           char *err, size_t errsz);
void pec_signer_free(pec_signer *s);

/* Wraps content (a MIME entity, canonical CRLF) into multipart/signed
 * (RFC 5751 §3.4.3): headers + the signed entity + smime.p7s.  headers is a
 * CRLF header block without MIME-Version/Content-Type, may be NULL. */
int pec_smime_sign(pec_signer *s, const char *headers, const void *content, size_t len,
                   pec_buf *out, char *err, size_t errsz);
/* The same for n contents at once (out[n], all or none; n at most
 * PEC_SIGN_N_MAX): the signatures in one sign_n call when the signer has one. */
#define PEC_SIGN_N_MAX 4
int pec_smime_sign_n(pec_signer *s, size_t n, const char *const *headers,
                     const void *const *content, const size_t *len, pec_buf *out, char *err,
                     size_t errsz);

/* ---- building envelopes and receipts (§3, §4.3) ---------------------------- */

typedef struct pec_identity {
    const char *domain;            /* mail domain: From posta-certificata@<domain> */
    const char *name;              /* gestore-emittente, the providerName */
    pec_signer *signer;
} pec_identity;

/*
 * Everything one message needs.  Which fields matter depends on type:
 *  - original: the original message bytes.  For POSTA_CERTIFICATA, the message
 *    as submitted (its Message-ID is replaced by pec_id and
 *    X-Riferimento-Message-ID added, §2.2.1); for ANOMALIA, the whole received
 *    message; for AVVENUTA_CONSEGNA completa/breve, postacert.eml of the
 *    envelope.  Also the source of Subject/To/Cc/Reply-To when the explicit
 *    fields are NULL.
 *  - sender: the original reverse-path (mittente); recipients: To+Cc with
 *    their kind (destinatari).  notify_to: To of presa-in-carico and
 *    rilevazione-virus (the sender provider's mailReceipt); other receipts go
 *    to sender (§2.1, digest D5).
 *  - pec_id: the PEC msgid (identificativo); orig_msgid: the client's
 *    Message-ID with < >, or NULL; message_id: this message's own Message-ID
 *    without < > (envelopes: NULL means pec_id; anomaly: NULL keeps the
 *    received one).
 */
typedef struct pec_build_args {
    pec_type type;
    pec_errore errore;             /* non-accettazione/errore-consegna: VIRUS selects §3.1.3/§3.2.4 */
    pec_variant variant;           /* envelope: requested (X-TipoRicevuta); consegna: produced */
    const void *original;
    size_t original_len;
    const char *sender;
    const pec_recipient *recipients;
    size_t n_recipients;
    const char *reply_to;          /* NULL: from original, else sender */
    const char *subject;           /* NULL: from original */
    time_t when;                   /* the event time, one per transaction (§4.1) */
    const char *pec_id;
    const char *orig_msgid;
    const char *message_id;
    const char *notify_to;
    const char *consegna;          /* the recipient delivered to / attempted */
    const char *const *ricezione;  /* presa-in-carico: recipients covered */
    size_t n_ricezione;
    const char *errore_esteso;     /* reason (non-acceptance, errors, anomaly, virus id) */
} pec_build_args;

/* Builds and signs a complete message (headers + multipart/signed), ready
 * for SMTP (CRLF, no dot-stuffing). */
int pec_build(const pec_identity *id, const pec_build_args *a, pec_buf *out, char *err,
              size_t errsz);
/* n messages built and signed together (out[n]; all or none): one request
 * to a signer process for the messages a stage makes at once (§3.1.4 and
 * §3.1.5: the acceptance receipt and the transport envelope). */
int pec_build_n(const pec_identity *id, const pec_build_args *a, size_t n, pec_buf *out,
                char *err, size_t errsz);
/* Builds the unsigned multipart/mixed body and the header block separately
 * (used by pec_build; exposed for tests and for signing elsewhere). */
int pec_build_unsigned(const pec_identity *id, const pec_build_args *a, pec_buf *headers,
                       pec_buf *body, char *err, size_t errsz);

/* Copy of an original with Message-ID replaced by <pec_id> and
 * X-Riferimento-Message-ID added (§2.2.1); the body is kept byte for byte. */
int pec_original_rewrite(const void *orig, size_t len, const char *pec_id, pec_buf *out,
                         char *err, size_t errsz);
/* The breve form of an original (§3.3.2.2): every named attachment replaced
 * by a text/plain part "<name>.hash" holding 40 lowercase hex digits of the
 * SHA-1 of its body as transmitted (encoded form, CRLF; DESIGN.md). */
int pec_breve_transform(const void *orig, size_t len, pec_buf *out, char *err, size_t errsz);

/* The original carried by an envelope (postacert.eml, §3.1.5), for the
 * delivery point's completa/breve receipts. -1 when there is none. */
int pec_envelope_original(const void *env, size_t len, pec_buf *out, char *err, size_t errsz);

/* A PEC msgid in OpenPEC shape: opec<N>.<YYYYMMDDhhmmss>.<pid>.<n>.1.<n>@<domain>.
 * seq distinguishes ids made in one second by one process. */
int pec_make_msgid(char *buf, size_t size, const char *domain, time_t when, unsigned long seq);

/* ---- classification and verification (§2.2.2, §3) ------------------------- */

typedef struct pec_class {
    pec_type type;
    pec_variant variant;           /* envelope: X-TipoRicevuta (absent = completa);
                                      avvenuta-consegna: daticert <ricevuta> */
    pec_errore errore;             /* from daticert when readable */
    bool virus;                    /* X-VerificaSicurezza: errore */
    bool signed_entity;            /* a multipart/signed was found */
    bool rewrapped;                /* found inside a message/rfc822 (e.g. a list) */
} pec_class;

/* Classifies by the headers RFC 6109 defines (X-Ricevuta first, then
 * X-Trasporto), case-insensitively; never by Subject.  -1 = unreadable. */
int pec_classify(const void *msg, size_t len, pec_class *out, char *err, size_t errsz);

/* A reason for every distinct failure; the stable name is in pec_reason_name. */
typedef enum pec_reason {
    PEC_OK = 0,
    PEC_R_UNREADABLE,              /* not a parsable message */
    PEC_R_NOT_PEC,                 /* no X-Ricevuta / X-Trasporto */
    PEC_R_NO_SIGNATURE,            /* no multipart/signed or no signature part */
    PEC_R_BAD_SIGNATURE_FORMAT,    /* signature part unreadable (not CMS) */
    PEC_R_CONTENT_CHANGED,         /* digest mismatch: bytes changed after signing */
    PEC_R_BAD_SIGNATURE,           /* signature value wrong for the signer key */
    PEC_R_CERT_EXPIRED,
    PEC_R_CERT_NOT_YET_VALID,
    PEC_R_UNTRUSTED,               /* no chain to the trust anchors */
    PEC_R_REVOKED,                 /* listed in the CRL */
    PEC_R_BAD_KEY_USAGE,           /* no digitalSignature / no emailProtection */
    PEC_R_NOT_IN_DIRECTORY,        /* certificate hash not in providerCertificateHash */
    PEC_R_SIGNER_MISMATCH,         /* From address differs from the certificate's */
    PEC_R_DATICERT_MISSING,
    PEC_R_DATICERT_INVALID,
    PEC_R_INCONSISTENT,            /* daticert disagrees with the headers */
    PEC_R_FORMAT,                  /* MIME layout not as §4.3 says */
} pec_reason;
const char *pec_reason_name(pec_reason r);

/* Trust configuration, prepared once and shared by many verifications. */
typedef struct pec_trust pec_trust;
pec_trust *pec_trust_new(void);
/* Adds trust anchors (PEM, one or more certificates).  With none, the
 * topmost certificate embedded in each message serves as anchor (reported
 * in pec_verdict.trust_embedded). */
int pec_trust_add_ca_pem(pec_trust *t, const void *pem, size_t len, char *err, size_t errsz);
/* Adds CRLs (PEM); revocation is then checked for the signer certificate. */
int pec_trust_add_crl_pem(pec_trust *t, const void *pem, size_t len, char *err, size_t errsz);
/* Adds one or more CRLs given as PEM or one DER CRL (as served at a CRL
 * distribution point, RFC 5280 §4.2.1.13).  -1 when none is readable. */
int pec_trust_add_crl(pec_trust *t, const void *data, size_t len, char *err, size_t errsz);
/* How many CRLs t holds. */
size_t pec_trust_crl_count(const pec_trust *t);
/* The thisUpdate (RFC 5280 §5.1.2.4) of the oldest CRL t holds; 0 when none. */
time_t pec_trust_crl_oldest(const pec_trust *t);
/* RFC 5280 §5.3.1 CRLReason: the name of a code ("keyCompromise"), NULL when
 * unknown; and the code of a name (case-insensitive), -1 when unknown. */
const char *pec_crl_reason_name(int code);
int pec_crl_reason_code(const char *name);
/* Providers' directory: the SHA-1 hex of known signing certificates
 * (providerCertificateHash, §4.5.1; compared case-insensitively). */
int pec_trust_add_cert_hash(pec_trust *t, const char *sha1hex);
/* Reads every providerCertificateHash (and providerCertificate;binary) of an
 * LDIF text (RFC 2849).  Returns the number of hashes added, or -1. */
int pec_trust_load_ldif(pec_trust *t, const void *ldif, size_t len, char *err, size_t errsz);
/* Verifies at this time instead of the signing time (tests; 0 = signing time). */
void pec_trust_set_time(pec_trust *t, time_t at);
void pec_trust_free(pec_trust *t);

typedef struct pec_verdict {
    pec_class cls;
    bool valid;
    pec_reason reason;
    char detail[256];              /* human explanation of reason */
    char signer_subject[256];
    char signer_email[256];
    char signer_sha1[41];          /* lowercase hex of the DER certificate */
    char digest[16];               /* "sha256", "sha1", ... */
    time_t signing_time;           /* 0 when absent */
    bool trust_embedded;           /* anchored on the message's own chain */
    bool directory_checked;
    bool bare;                     /* a bare signed entity: the provider's outer header
                                      fields (From, X-Trasporto/X-Ricevuta) are missing
                                      (PEC_VERIFY_BARE) */
    pec_daticert *daticert;        /* NULL when absent; in pec_verify's default mode
                                      also when the signature does not hold */
    char daticert_error[200];      /* why a daticert.xml present could not be used
                                      (bounds, DOCTYPE, not well-formed), else "" */
    pec_buf original;              /* a valid transport envelope's postacert.eml (as
                                      pec_envelope_original gives it), else empty */
} pec_verdict;

/* Classifies and verifies msg over its exact bytes (only bare LF is taken
 * to CRLF, the RFC 5751 §3.1.1 canonical form).  Returns 0 when a verdict
 * was reached (valid or not), -1 when the bytes are not a message.
 * daticert.xml is read only once the signature over the content holds (it
 * is input from anyone until then; docs/pec.md "Hostile daticert"). */
int pec_verify(const pec_trust *t, const void *msg, size_t len, pec_verdict *v, char *err,
               size_t errsz);
/* pec_verify with options, for reporting tools (pecctl verify):
 * PEC_VERIFY_REPORT reads the daticert of a message whose signature failed
 * too, to show it (same bounded parser; the verdict does not change);
 * PEC_VERIFY_BARE verifies a bare multipart/signed entity (no From,
 * X-Trasporto or X-Ricevuta: a "saved attachment") and takes its type from
 * the daticert, setting v->bare. */
#define PEC_VERIFY_REPORT 0x1u
#define PEC_VERIFY_BARE 0x2u
int pec_verify_flags(const pec_trust *t, const void *msg, size_t len, unsigned flags,
                     pec_verdict *v, char *err, size_t errsz);
void pec_verdict_free(pec_verdict *v);

/* ---- the providers' directory (§4.5): model, LDIF (pec_directory.c, pec_ldif.c) -- */

/*
 * One record of the directory whose objectClass is "provider" (or that has a
 * providerName): the attributes of RFC 6109 §4.5.1-§4.5.9.  A secondary
 * environment (providerUnit, §4.5.7) is a record of its own.  Domains and
 * hashes are lower case (searches are case-insensitive, digest D6).
 */
typedef struct pec_provider {
    char *name;                    /* providerName (MUST, single) */
    char *receipt;                 /* mailReceipt: where presa-in-carico and virus notices go */
    char **domains;                /* managedDomains, lower case */
    size_t n_domains;
    char **hashes;                 /* providerCertificateHash and the SHA-1 of each
                                      providerCertificate, lower case, no duplicates */
    size_t n_hashes;
    /* issue 7: the rest of the schema */
    char *dn;                      /* the record's DN */
    char *unit;                    /* providerUnit; NULL on the main record */
    char *ldif_url;                /* LDIFLocationURL, NULL when absent */
    char **descriptions;           /* description (multi-valued) */
    size_t n_descriptions;
    pec_buf *certs;                /* providerCertificate;binary values (DER) */
    size_t n_certs;
    char **crl_urls;               /* CRL distribution points of certs (http:, https:, file:) */
    size_t n_crl_urls;
    int line;                      /* first line of the record in the LDIF read */
} pec_provider;
typedef struct pec_directory pec_directory;

/*
 * Reads an LDIF text (RFC 2849: "version: 1", comments, folded lines, "::"
 * base64 values; no change records, no ":<" URL values) and checks every
 * provider record against the schema: one providerName and one mailReceipt
 * (an addr-spec of dot-atoms), managedDomains in dot-atom form, hashes of 40
 * hex digits, certificates that parse as DER X.509, and no domain claimed by
 * two providers.  Any failure gives NULL and "LDIF line N: reason" in err
 * (line of the offending value): a broken copy never replaces a good one.
 * Limits: PEC_LDIF_MAX bytes, PEC_LDIF_MAX_ENTRIES records.
 */
#define PEC_LDIF_MAX (64u << 20)
#define PEC_LDIF_MAX_ENTRIES 100000u
pec_directory *pec_directory_parse(const void *ldif, size_t len, char *err, size_t errsz);
size_t pec_directory_count(const pec_directory *d);
const pec_provider *pec_directory_provider(const pec_directory *d, size_t i);
/* NULL: the domain is not PEC ("esterno", §2.2.1) */
const pec_provider *pec_directory_by_domain(const pec_directory *d, const char *domain);
const pec_provider *pec_directory_by_hash(const pec_directory *d, const char *sha1hex);
/* mailReceipt of the provider of a signer certificate (by its SHA-1), or NULL. */
const char *pec_directory_receipt_for_hash(const pec_directory *d, const char *sha1hex);
/* LDIFLocationURL of the root record (o=postacert), NULL when absent. */
const char *pec_directory_root_url(const pec_directory *d);
/* Number of records of every kind (root, providers, units, others). */
size_t pec_directory_entries(const pec_directory *d);
/* Adds every provider's certificate hash to t; returns how many. */
int pec_directory_add_to_trust(const pec_directory *d, pec_trust *t);
/* Every CRL distribution point named by the providers' certificates, once
 * each, into a NULL-terminated array (free with pec_strv_free). */
char **pec_directory_crl_urls(const pec_directory *d);
void pec_strv_free(char **v);
/* Writes every record back as LDIF (RFC 2849, "version: 1", values that
 * are not SAFE-STRING in base64, lines folded at 76 columns): a text that
 * pec_directory_parse reads into the same directory. */
int pec_directory_to_ldif(const pec_directory *d, pec_buf *out, char *err, size_t errsz);
void pec_directory_free(pec_directory *d);

/* LDIF writer for other producers of a directory (the LDAP reader):
 * appends "attr: value" or "attr:: base64" (folded) to out; attr NULL
 * appends the blank line that ends a record.  -1 on ENOMEM. */
int pec_ldif_put(pec_buf *out, const char *attr, const void *val, size_t len);

/* ---- formal checks of the access point (§3.1.1) ---------------------------- */

typedef enum pec_check_rule {
    PEC_CHECK_OK = 0,
    PEC_CHECK_SYNTAX,              /* not an RFC 5322 message / no header-body break */
    PEC_CHECK_FROM,                /* From: missing or not exactly one mailbox */
    PEC_CHECK_TO,                  /* To: missing or without a valid address */
    PEC_CHECK_REVERSE_PATH,        /* MAIL FROM differs from From: */
    PEC_CHECK_FORWARD_PATH,        /* a RCPT TO not in To:/Cc: (a Bcc) */
    PEC_CHECK_BCC,                 /* Bcc: with a value */
    PEC_CHECK_SIZE,                /* size x recipients above the limit */
} pec_check_rule;

typedef struct pec_check_input {
    const void *msg;
    size_t len;
    const char *reverse_path;
    const char *const *forward_paths;
    size_t n_forward;
    uint64_t max_total;            /* size x recipients limit; 0 = 30 MB (§3.1.1) */
} pec_check_input;

typedef struct pec_check_result {
    pec_check_rule rule;
    char detail[256];              /* for the non-acceptance text */
} pec_check_result;

/* Returns 0 when every check passed, -1 with r->rule naming the first failure. */
int pec_check_submission(const pec_check_input *in, pec_check_result *r);
const char *pec_check_rule_name(pec_check_rule r);
/* Address comparison of DESIGN.md: the whole address without case. */
bool pec_addr_equal(const char *a, const char *b);
/* The variant of the delivery receipt for rcpt (§3.3.2): asked (completa
 * when none) for a primary recipient, sintetica for one only in Cc.  orig is
 * the original message (its To and Cc header fields, every instance, parsed
 * as address lists). */
pec_variant pec_receipt_variant(const void *orig, size_t len, const char *rcpt, pec_variant asked);

#endif
