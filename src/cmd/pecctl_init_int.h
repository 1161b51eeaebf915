/*
 * pecctl_init_int.h - what the files of `pecctl init` share (pecctl_init.c,
 * pecctl_init_pki.c, pecctl_init_files.c); not for other commands.
 * Functions returning int give 0 or -1, and print the reason on stderr.
 */
#ifndef PEC_PECCTL_INIT_INT_H
#define PEC_PECCTL_INIT_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "lib/config.h"
#include "pec/pec_pki.h"


#define PROG "pecctl init"

struct route {
    char domain[256];
    char hostport[300];
};

struct init_opts {
    const char *dir;
    char domain[256];
    const char *name;           /* default: the domain */
    unsigned smtp, submission, submissions; /* submissions 0 = no listener */
    const char *cadir;
    const char *directory;
    struct route routes[CONFIG_MAX_ROUTES];
    size_t nroutes;
    bool force;
    /* keys in a hardware module (issue 20): pkcs11: URIs instead of PEM files */
    const char *signing_key_uri, *tls_key_uri;
    char pkcs11_module[PATH_MAX], pkcs11_pin_file[PATH_MAX];   /* absolute; "" = none */
};

/* pecctl_init.c: "PROG: cannot WHAT PATH: strerror(errno)", "PROG: WHAT: DETAIL" */
int init_io_fail(const char *what, const char *path);
int init_crypto_fail(const char *what, const char *detail);

/* pecctl_init_files.c: file helpers */
int init_path_join(char *buf, size_t size, const char *dir, const char *name);
/* fs_write_atomic, then exactly mode */
int init_write_file(const char *path, const void *data, size_t len, mode_t mode);
/* leaf then ca, 0644 */
int init_write_chain(const char *path, const pec_buf *leaf, const pec_buf *ca);
int init_make_dir(const char *path, mode_t mode);
/* An exclusive flock(2) on path (created if needed); returns the fd. */
int init_lock_file(const char *path);
/* Absolute form of path, whose parent directory exists. */
int init_absolute_path(const char *path, char *out, size_t size);

/* pecctl_init_files.c: run as root, the system user of [pecd] user made
 * when missing, DIR given to its group, the users file readable by it
 * (scratch: PATH_MAX octets) */
int init_for_pecd_user(const char *dir, char *scratch);

/* pecctl_init_files.c: the providers' directory and pecd.conf */
/* Adds or replaces this provider's entry in the LDIF file at path.
 * *replaced counts the entries dropped. */
int init_directory_update(const char *path, const struct init_opts *o, const char *sha1,
                          const pec_buf *der, int *replaced);
/* pecd.conf for o in *out (malloc'ed); directory: the LDIF file's path */
int init_conf_build(const struct init_opts *o, const char *directory, char **out, size_t *len);
/* -1 (and a message naming path) if a line is longer than inih reads */
int init_conf_check_lines(const char *conf, const char *path);

/* pecctl_init_pki.c */
/* Loads the CA in cadir, or makes one there (*created). */
int init_ca_load_or_make(const char *cadir, pec_pki_pair *ca, bool *created);
/* Adds IP address ip to the subjectAltName of leaf, signed again by ca. */
int init_add_ip_san(pec_pki_pair *leaf, const pec_pki_pair *ca, const char *ip);
/* The DER of a PEM certificate in *der (malloc'ed). */
int init_cert_der(const pec_buf *pem, pec_buf *der);

#endif
