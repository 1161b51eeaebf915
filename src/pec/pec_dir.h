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
 * Rules: a source that fails, or returns a broken directory or one without
 * providers, never replaces the copy in use; the last good copy is kept on
 * disk (CACHE_DIR/directory.ldif, CACHE_DIR/crl/) and serves at start when
 * the source is down.  Every failure is logged with its reason.
 */
#ifndef PEC_DIR_H
#define PEC_DIR_H

#include "pec/pec.h"

#include <stdatomic.h>

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
};

#define PEC_CRL_MAX (16u << 20)

/* Fills c from the [pec] keys of cfg (lib/config.h).  cache (at least
 * 4096 bytes) receives DATA_DIR/directory; *password the content of
 * directory_password_file when set (free it).  -1 with err when that file
 * cannot be read. */
struct config;
int pec_dir_conf_init(struct pec_dir_conf *c, const struct config *cfg, char *cache,
                      char **password, char *err, size_t errsz);

/* The directory's text (LDIF) from c->source. */
int pec_dir_fetch(const struct pec_dir_conf *c, pec_buf *ldif, char *err, size_t errsz);
/* True when source names an LDAP server. */
bool pec_dir_is_ldap(const char *source);
/* Downloads a CRL from a file: or http(s): URL (libcurl; timeout seconds,
 * PEC_CRL_MAX bytes, no redirects). */
int pec_crl_fetch(const char *url, unsigned timeout, pec_buf *out, char *err, size_t errsz);
/* Adds the CRLs of c and of d's certificates to t, each fetched or, when
 * that fails, taken from the cache (with a warning).  Returns how many CRLs
 * were loaded, or -1 when c->crl_file cannot be read and must_crl_file. */
int pec_dir_load_crls(const struct pec_dir_conf *c, const pec_directory *d, pec_trust *t,
                      bool must_crl_file, char *err, size_t errsz);

/* One consistent view: never changes while held. */
typedef struct pec_dirsnap {
    pec_directory *dir;
    pec_trust *trust;
    time_t loaded;
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
/* Stops the thread and frees everything (held snapshots stay valid). */
void pec_dirmgr_free(struct pec_dirmgr *m);

#endif
