/*
 * users_int.h - what users.c (the table), users_file.c (its edits) and
 * users_db.c (the self-reloading copy pecd uses) share.  Not for other
 * modules: their interface is store.h.
 *
 * Purpose: the entry lookups and the constant-cost password check behind
 * users_verify and users_db_verify.
 * Threads: any thread, on a struct users no one modifies (users_db swaps
 * whole copies).
 * Ownership: users_entry_hash and users_cost_alike return copies the caller
 * g_frees.
 * Errors: NULL or false when unknown; users_verify_hash -1 on a mismatch or
 * an unknown user (after the same work).
 */
#ifndef PEC_STORE_USERS_INT_H
#define PEC_STORE_USERS_INT_H

#include "store.h"

#include <stdbool.h>
#include <stdint.h>

/* The largest users file read: 500,000 users with yescrypt hashes take about
 * 55 MB; room for a few times that. */
#define USERS_MAX_FILE (512u * 1024 * 1024)

/* The entry of the normalised address key: a copy of its hash (g_free), or
 * NULL when unknown; *suspended is set when known. */
char *users_entry_hash(const struct users *u, const char *key, bool *suspended);
bool users_entry_quota(const struct users *u, const char *key, uint64_t *octets);
/* A real entry's hash picked by key, for an unknown user's check of equal
 * cost (g_free). */
char *users_cost_alike(const struct users *u, const char *key);
/* 0 when password matches hash; with hash NULL the work is done on like and
 * the answer is -1. */
int users_verify_hash(const char *hash, const char *like, const char *password);

#endif
