/*
 * pecd_privsep.h - pecd's process model (pecd_privsep.c): the keeper and
 * signer processes, the listeners bound as root, the drop to [pecd] user.
 */
#ifndef PECD_PRIVSEP_H
#define PECD_PRIVSEP_H

#include "lib/config.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct ssl_ctx_st SSL_CTX;
struct keys_client;

struct pecd_privsep {
    struct keys_client *keys;      /* NULL when nothing is signed (no TLS, no PEC) */
    int listen_fds[CONFIG_MAX_LISTENERS][CONFIG_MAX_ADDRS];
    size_t nfds[CONFIG_MAX_LISTENERS];
    bool dropped;                  /* runs as [pecd] user */
};

/* pecd -t: the keys loaded here (PEM, the module's login), checked against
 * their certificates, and, for a start as root, the files [pecd] user must
 * not read or change.  0, or -1 with the reason naming the setting. */
int pecd_check_keys(const struct config *cfg, char *err, size_t errlen);
/* Forks the keeper and the signer, binds the listeners, gives [pecd] user
 * the data and becomes that user (a start as root).  -1 with the reason. */
int pecd_privsep_start(const struct config *cfg, struct pecd_privsep *ps, char *err,
                       size_t errlen);
/* The TLS context with the signer's certificate chain and key, and the
 * local domains' own (SNI), from the keys the signer holds now. */
SSL_CTX *pecd_privsep_tls(struct pecd_privsep *ps, const struct config *cfg, char *err,
                          size_t errlen);
/* The signed directory's TLS client key ([pec] directory_client_key): a
 * stand-in whose operations the signer does, for the download (pec_dir.h). */
int pecd_privsep_dir_client_key(struct pecd_privsep *ps, const struct config *cfg, char *err,
                                size_t errlen);
/* At the end: the signer and the keeper exit. */
void pecd_privsep_stop(struct pecd_privsep *ps);

#endif
