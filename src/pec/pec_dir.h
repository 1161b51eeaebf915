/*
 * pec_dir.h - the providers' directory as pecd and pecctl use it (issue 7):
 * where it comes from (an LDIF file or an LDAP server, pec_dirsource.c),
 * the CRLs its certificates and the configuration name (pec_crlfetch.c),
 * and a refcounted snapshot - the directory with the pec_trust built from
 * it - that a refresh thread replaces atomically (pec_dirsnap.c).
 *
 * This is the I/O side of the directory and lives in its own library
 * (pecdir): libpec itself stays free of sockets and files (DESIGN.md).
 *
 * Sources: PATH / file:PATH (LDIF), ldap:// and ldaps:// (pec_dirsource.c),
 * and the signed directory of RFC 6109 §4.5 and §5.6 (issue 19): a ".p7m"
 * (CMS SignedData in DER, content attached) from https://HOST/PATH
 * (pec_dirhttps.c, client certificate) or from a file whose name ends in
 * .p7m, verified against [pec] directory_signer before its LDIF is read
 * (pec_dircopy.c, libpec's pec_dirp7m.c).
 *
 * Purpose: the roles (src/provider/roles.c) own a pec_dirmgr and verify
 * with its snapshots; pecctl directory and `pecd -t` fetch, parse and cache.
 * Rules: a source that fails, or returns a broken directory or one without
 * providers, never replaces the copy in use; the last good copy is kept on
 * disk (CACHE_DIR/directory.ldif; for a signed source also the .p7m as
 * received, CACHE_DIR/directory.p7m, checked again when it is read;
 * CACHE_DIR/crl/) and serves at start when the source is down.
 * Threads: fetches and CRL downloads block (libcurl, libldap; timeout
 * seconds): they run in the refresh thread of pec_dirmgr_start, or in
 * pecctl.  pec_dirmgr_acquire/pec_dirsnap_release from any thread (a mutex,
 * an atomic reference count); request, reconfigure and free from the event
 * loop (pecd's reload and exit); pec_dirmgr_new before the threads start.
 * Ownership: struct pec_dir_conf borrows its strings (but cache_dir,
 * copied): they must outlive what is built from them.  A held snapshot never
 * changes and stays valid until released, even after pec_dirmgr_free.
 * Fetched buffers and pec_dir_copy are the caller's (pec_buf_free,
 * pec_dir_copy_free).
 * Errors: -1 (or NULL) with the reason in err; a p7m failure's reason starts
 * with its status name.  The refresh thread logs every failure with its
 * reason and keeps the snapshot in use.
 */
#ifndef PEC_DIR_H
#define PEC_DIR_H

#include "pec/pec.h"
#include "pec/pec_dirp7m.h"

#include <stdatomic.h>
#include <sys/types.h>

/* Borrowed strings (but cache_dir, copied): they must outlive what is
 * built from them. */
struct pec_dir_conf {
    const char *source;            /* PATH, file:PATH, ldap://HOST:PORT/BASE, ldaps://... */
    const char *bind_dn;           /* LDAP simple bind; NULL = anonymous */
    const char *password;
    bool starttls;                 /* LDAP StartTLS (also "?...?...?...?starttls" in the URL) */
    const char *ca_file;           /* CA of the LDAP server's certificate; NULL = system */
    unsigned timeout;              /* seconds: connect, search, CRL download */
    const char *trust_file;        /* CA bundle (PEM) for signatures */
    const char *crl_file;          /* [pec] crl: a CRL file that must be readable at start */
    const char *const *crl_urls;   /* [pec] crl_urls: file:, http:, https: */
    size_t n_crl_urls;
    const char *cache_dir;         /* where the last good copy is kept */
    unsigned refresh;              /* seconds between refreshes; 0 = on request only */
    /* issue 19: the signed directory (.p7m), from https:// or a file */
    const char *client_cert;       /* directory_client_cert (PEM): TLS client certificate */
    const char *client_key;        /* directory_client_key (PEM) */
    void *client_pkey;             /* or the key as an EVP_PKEY (pecd: a stand-in whose
                                      operations its signer process does, src/keys) */
    const char *signer_file;       /* directory_signer (PEM): who may sign the directory */
};

#define PEC_CRL_MAX (16u << 20)

/* Fills c from the [pec] keys of cfg (lib/config.h).  cache (at least
 * 4096 bytes) receives DATA_DIR/directory; *password the content of
 * directory_password_file when set (free it).  -1 with err when that file
 * cannot be read. */
struct config;
int pec_dir_conf_init(struct pec_dir_conf *c, const struct config *cfg, char *cache,
                      char **password, char *err, size_t errsz);
/* The two halves of pec_dir_conf_init, for a reload that must read every
 * file before it changes anything: *password as above (NULL when the key is
 * not set), then c filled from cfg with that password (borrowed). */
int pec_dir_password_read(const struct config *cfg, char **password, char *err, size_t errsz);
void pec_dir_conf_fill(struct pec_dir_conf *c, const struct config *cfg, char *cache,
                       const char *password);
/* The EVP_PKEY that pec_dir_conf_init puts in client_pkey from now on (pecd:
 * the TLS client key of the directory held by the signer process; a
 * reference is kept); NULL: the directory_client_key file is read. */
void pec_dir_use_client_key(void *evp_pkey);

/* The directory's text (LDIF) from c->source (a signed source verified). */
int pec_dir_fetch(const struct pec_dir_conf *c, pec_buf *ldif, char *err, size_t errsz);
/* True when source names an LDAP server. */
bool pec_dir_is_ldap(const char *source);
/* True for https://... */
bool pec_dir_is_https(const char *source);
/* True for a signed source: https://, or a file whose name ends in .p7m
 * (the name decides: an LDIF file is never taken for a .p7m nor back). */
bool pec_dir_is_p7m(const char *source);

/* One copy of the directory as the source gave it. */
typedef struct pec_dir_copy {
    pec_buf ldif;                  /* the LDIF (for a signed source, its verified content) */
    pec_buf p7m;                   /* the .p7m as received; empty for other sources */
    pec_p7m_info info;             /* signed sources: signer, signing time */
} pec_dir_copy;
void pec_dir_copy_free(pec_dir_copy *cp);
/* Fetches c->source; a signed one is verified (pec_dir_p7m_verify). */
int pec_dir_fetch_copy(const struct pec_dir_conf *c, pec_dir_copy *out, char *err,
                       size_t errsz);
/* The .p7m download (pec_dirhttps.c). */
int pec_dir_https_fetch(const struct pec_dir_conf *c, pec_buf *out, char *err, size_t errsz);
/* Checks a .p7m now: signature, then the signer against c->signer_file,
 * then, once it chains, its revocation in the CRLs of [pec] crl, crl_urls
 * and its own CRL distribution points (fetched or cached, pec_crlfetch.c).
 * The LDIF into ldif; -1 with "<status>: reason" (pec_p7m_status_name). */
int pec_dir_p7m_verify(const struct pec_dir_conf *c, const void *der, size_t len, pec_buf *ldif,
                       pec_p7m_info *info, char *err, size_t errsz);
/* pec_directory_parse, and a directory without providers refused; an LDIF
 * source that holds DER gets a hint about .p7m. */
pec_directory *pec_dir_parse(const struct pec_dir_conf *c, const pec_buf *ldif, char *err,
                             size_t errsz);

/* The cached copy (c->cache_dir): CACHE/directory.p7m for a signed source
 * (verified again, now), else CACHE/directory.ldif; *fetched receives the
 * file's modification time: when the copy was taken from the source. */
#define PEC_DIR_CACHE_LDIF "directory.ldif"
#define PEC_DIR_CACHE_P7M "directory.p7m"
int pec_dir_cache_read(const struct pec_dir_conf *c, pec_dir_copy *out, time_t *fetched,
                       char *err, size_t errsz);
/* Writes cp into the cache (each file atomically: the .p7m first). */
int pec_dir_cache_write(const struct pec_dir_conf *c, const pec_dir_copy *cp, mode_t mode,
                        char *err, size_t errsz);
/* The path of the cache file that pec_dir_cache_read reads first. */
void pec_dir_cache_path(const struct pec_dir_conf *c, char *buf, size_t size);
/* RFC 6109 §4.5 asks for a daily update: a copy older than this is warned about. */
#define PEC_DIR_STALE (48 * 3600)
/* Downloads a CRL from a file: or http(s): URL (libcurl; timeout seconds,
 * PEC_CRL_MAX bytes, no redirects). */
int pec_crl_fetch(const char *url, unsigned timeout, pec_buf *out, char *err, size_t errsz);
/* Adds the CRLs of c and of d's certificates to t, each fetched or, when
 * that fails, taken from the cache (with a warning).  Returns how many CRLs
 * were loaded, or -1 when c->crl_file cannot be read and must_crl_file. */
int pec_dir_load_crls(const struct pec_dir_conf *c, const pec_directory *d, pec_trust *t,
                      bool must_crl_file, char *err, size_t errsz);
/* Adds the CRLs at urls (NULL-terminated) to t as pec_dir_load_crls does
 * (fetched, else cached); returns how many were loaded. */
int pec_dir_load_crl_urls(const struct pec_dir_conf *c, char **urls, pec_trust *t);

/* One consistent view: never changes while held. */
typedef struct pec_dirsnap {
    pec_directory *dir;
    pec_trust *trust;
    time_t loaded;
    time_t fetched;                /* when this copy came from the source */
    bool from_cache;               /* the source was down when this copy was taken */
    atomic_int refs;
} pec_dirsnap;

struct pec_dirmgr;
/* Loads the first copy now (the source, else the cache with a warning);
 * NULL with the reason when neither gives a directory. */
struct pec_dirmgr *pec_dirmgr_new(const struct pec_dir_conf *c, char *err, size_t errsz);
/* Starts the refresh thread (period c->refresh, and on request). */
int pec_dirmgr_start(struct pec_dirmgr *m);
/* Asks the refresh thread for a refresh now (SIGHUP); returns at once. */
void pec_dirmgr_request(struct pec_dirmgr *m);
/* Loads from the source now, in the calling thread; 0 when replaced. */
int pec_dirmgr_refresh(struct pec_dirmgr *m, char *err, size_t errsz);
const pec_dirsnap *pec_dirmgr_acquire(struct pec_dirmgr *m);
void pec_dirsnap_release(const pec_dirsnap *s);
/* Reload: the refresh thread takes c (its strings borrowed from the new
 * configuration; cache_dir is kept) at its next turn, at once when refresh.
 * The strings of the conf it replaces must stay valid until that thread's
 * configuration hold ends (lib/config.h, config_retire). */
void pec_dirmgr_reconfigure(struct pec_dirmgr *m, const struct pec_dir_conf *c, bool refresh);
/* Stops the thread and frees everything (held snapshots stay valid). */
void pec_dirmgr_free(struct pec_dirmgr *m);

#endif
