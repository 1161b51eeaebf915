/*
 * pecctl_backup.h - what `pecctl backup` (pecctl_backup.c) and `pecctl
 * restore` (pecctl_restore.c) share: the items of an instance a backup
 * holds, the MANIFEST's format and checks, the queue's lock.
 *
 * Purpose: private to those two files (docs/backup.md is the runbook).
 * Threads: pecctl is one thread.
 * Ownership: backup_items returns a GArray of struct item the caller frees
 * (g_array_free(a, TRUE)); backup_find_role points into it; the rest fill
 * the caller's buffers.
 * Errors: backup_sha256_fd -1 with errno; backup_lock_queue -1 with err
 * (and *running when a pecd holds the lock); the predicates say false.
 */
#ifndef PEC_PECCTL_BACKUP_H
#define PEC_PECCTL_BACKUP_H

#include "lib/config.h"

#include <glib.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MANIFEST_MAGIC "pecmail-backup 1"

int pecctl_backup_main(struct config *cfg, int argc, char **argv);
int pecctl_restore_main(const char *conf, int argc, char **argv);

/* One file or tree of the instance, by role: where it is in the backup and
 * where the configuration puts it. */
struct item {
    char role[64];      /* users, tls_certificate, sni_certificate:DOMAIN, mail... */
    char rel[PATH_MAX]; /* in the backup */
    char path[PATH_MAX];/* in the instance */
    bool tree;
    bool key;           /* a private key: only with --include-keys */
};

/* An item into items; path NULL (not set) or a pkcs11: URI (a key in a
 * hardware module) adds nothing. */
void backup_item_add(GArray *items, const char *role, const char *rel, const char *path,
                     bool tree, bool key);
/* The Maildirs' root when the mailbox template keeps them in the data
 * directory ("DATA_DIR/mail/%d/%n" -> "DATA_DIR/mail"); "" otherwise. */
void backup_mail_root(const struct config *cfg, char *out, size_t outlen);
/* Every item of the instance cfg describes (the state is added apart). */
GArray *backup_items(const struct config *cfg);
const struct item *backup_find_role(GArray *items, const char *role);
/* SHA-256 (hex) of what fd holds from its start, reading at most limit + 1
 * bytes; *size what was read. */
int backup_sha256_fd(int fd, uint64_t limit, char hex[65], uint64_t *size);
/* A name from MANIFEST that stays inside the backup: relative, no "..",
 * printable, no blank. */
bool backup_safe_rel(const char *rel);
/* The queue's lock (QUEUE/pecd.lock): the fd holding it (pecd cannot start
 * meanwhile), or -1 with err and *running set when a pecd holds it. */
int backup_lock_queue(const struct config *cfg, bool *running, char *err, size_t errlen);
/* path relative to cfg's data_dir when it is inside it, else NULL. */
const char *backup_in_data_dir(const struct config *cfg, const char *path);

#endif
