/*
 * store.h - where mail and users live: Maildir delivery (maildir.c) and the
 * users file in Dovecot's passwd-file format (users.c).
 */
#ifndef PEC_STORE_H
#define PEC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

/* ---- Maildir (maildir.c) -------------------------------------------------- */
/* Writes header + data into tmp/ of the Maildir at dir (created if
 * missing) and names, in tmp_out and dst_out, the link that publishes it as
 * new/<name> once the data is durable (fdatasync here when sync is true).
 * Returns 1 when this copy exists already ('recovered' also searches cur/,
 * where an IMAP server moves seen mail): nothing to publish.  0 ready,
 * -1 error (reason in err). */
int maildir_prepare(const char *dir, const char *name, const char *header, size_t hlen,
                    const char *data, size_t len, bool recovered, bool sync, char *tmp_out,
                    char *dst_out, size_t pathlen, char *err, size_t errlen);
/* The Dovecot-compatible unique name of recipient n of queue id qid:
 * "<arrival>.Q<qid>R<n>.<host>,S=<size>". */
void maildir_name(char *out, size_t outlen, time_t arrival, const char *qid, size_t n,
                  size_t size);

/* ---- users (users.c) -------------------------------------------------------- */
struct users;
/* Loads a passwd-file: "user@domain:{SCHEME}hash:uid:gid:gecos:home:shell:extra",
 * '#' comments.  NULL with "FILE:LINE: reason" on error; a missing file is an
 * empty user list. */
struct users *users_load(const char *path, char *err, size_t errlen);
void users_free(struct users *u);
size_t users_count(const struct users *u);
bool users_exists(const struct users *u, const char *addr);
/* 0 when the password matches (crypt(3): yescrypt, SHA-512-crypt, bcrypt…) */
int users_verify(const struct users *u, const char *addr, const char *password);
/* Lower-cases the domain: the key users are stored and looked up by. */
void users_normalise(const char *addr, char *out, size_t outlen);
/* A new yescrypt hash of password (with a random salt). */
int users_hash_password(const char *password, char *out, size_t outlen);
/* Edits the file atomically (for pecctl). */
int users_file_add(const char *path, const char *addr, const char *hash, char *err,
                   size_t errlen);
int users_file_del(const char *path, const char *addr, char *err, size_t errlen);
/* Calls fn for each user in file order. */
void users_each(const struct users *u, void (*fn)(const char *addr, void *arg), void *arg);

/* A users file that reloads itself when it changes (checked at most once a
 * second); keeps the previous copy when the new one is broken. */
struct users_db;
struct users_db *users_db_open(const char *path, char *err, size_t errlen);
const struct users *users_db_get(struct users_db *db);   /* event loop only */
/* Thread-safe lookups (delivery threads). */
bool users_db_exists(struct users_db *db, const char *addr);
void users_db_reload(struct users_db *db);
void users_db_free(struct users_db *db);

#endif
