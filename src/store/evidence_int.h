/*
 * evidence_int.h - what the files of the evidence log share; not for other
 * modules (their interface is evidence.h).
 *
 *   evidence.c         schema, open/close, chain step, append (group commit),
 *                      the helpers below
 *   evidence_seal.c    day seals (CMS) and retention (purge)
 *   evidence_verify.c  verification and trace, read-only
 *
 * Purpose: struct evidence and the helpers those files (and
 * evidence_export.c, evidence_extract.c, evidence_json.c) use.
 * Threads: db is used under db_lock (one committer, seal or purge at a
 * time); the pending appends under q_lock and q_cond; ev_open_ro's handle
 * belongs to its caller's thread.
 * Ownership: struct evidence owns the connection and its prepared
 * statements; col_text's string is SQLite's, valid until the next step of
 * the statement; the sqlite3 * of ev_open_ro is closed by the caller.
 * Errors: -1 with the reason in err (ev_fail, ev_sql_fail, ev_exec), NULL
 * from ev_open_ro; ev_day_start -1 for a malformed day.
 */
#ifndef PEC_EVIDENCE_INT_H
#define PEC_EVIDENCE_INT_H

#include "store/evidence.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <sqlite3.h>

#define EVIDENCE_FORMAT "1"
#define NFIELDS 10

struct pending;     /* an append waiting for the group commit (evidence.c) */
struct evpg;        /* the PostgreSQL backend's side (evidence_pg.c) */

struct evidence {
    struct evpg *pg;             /* not NULL: the shared database, not the SQLite file */
    sqlite3 *db;
    pthread_mutex_t db_lock;     /* use of db: one committer, seal or purge at a time */
    pthread_mutex_t q_lock;      /* the queue and 'committing' */
    pthread_cond_t q_cond;
    struct pending *head, **tail;
    bool committing;
    bool sync_full;              /* the connection's PRAGMA synchronous is FULL */
    evidence_sign_fn sign;
    void *sign_ctx;
    time_t (*now)(void *);
    void *now_ctx;
    sqlite3_stmt *st_insert, *st_dedupe, *st_head, *st_anchor, *st_lastseal;
};

static inline const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* A line of a verification's report to out, when there is one (NULL: quiet). */
void ev_say(FILE *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes the message into err (when given); returns -1. */
int ev_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* ev_fail with "evidence log: what: <SQLite's message>". */
int ev_sql_fail(sqlite3 *db, char *err, size_t errlen, const char *what);
/* sqlite3_exec without callback; -1 with the reason in err. */
int ev_exec(sqlite3 *db, const char *sql, char *err, size_t errlen);
/* Sets PRAGMA synchronous to FULL or NORMAL for the next transactions (the
 * caller holds db_lock); -1 only if FULL was asked and cannot be set. */
int ev_sync_mode(struct evidence *ev, bool full, char *err, size_t errlen);
/* "YYYY-MM-DD" of t in UTC */
void ev_utc_day(time_t t, char out[16]);
/* 00:00 UTC of day, or -1 */
time_t ev_day_start(const char *day);
/* The evidence_set_clock() clock, or time(NULL). */
time_t ev_clock_now(struct evidence *ev);

/* The log opened read-only (beside a running pecd), its format checked; NULL
 * with the reason in err. */
sqlite3 *ev_open_ro(const char *path, char *err, size_t errlen);
/* Whether the records seq first..last hold one under a legal hold (the
 * holds table); 1 yes (*hold_id set), 0 no, -1 error. */
int ev_day_held(sqlite3 *db, long long first, long long last, long long *hold_id);

/* The statements that create the log's tables (evidence_export.c makes a
 * day's file with them). */
const char *ev_schema_sql(void);
/* evidence_export.c, for both exports: the new file (O_EXCL, 0600, rollback
 * journal) opened, NULL with err; and its end: closed, fsync'ed, removed
 * when n < 0 (a failed export leaves no file).  Returns n, or -1. */
sqlite3 *ev_export_create(const char *out_path, char *err, size_t errlen);
long long ev_export_finish(sqlite3 *db, const char *out_path, long long n, char *err,
                           size_t errlen);

/* The text a day seal signs (docs/evidence.md); -1 if it does not fit. */
int ev_seal_text(char *out, size_t outlen, const char *day, long long count, long long first,
                 long long last, const unsigned char hash[32]);
/* The same for one chain of the shared log (format 2, with the chain's name). */
int ev_seal_text_chain(char *out, size_t outlen, const char *chain, const char *day,
                       long long count, long long first, long long last,
                       const unsigned char hash[32]);
/* A field value as stored: s, or a copy cut at EVIDENCE_FIELD_MAX with a
 * marker in *tmp (free it); NULL only when s is NULL or out of memory. */
const char *ev_capped(const char *s, char **tmp);

/* evidence_verify.c, for both backends: the provider certificates in a PEM
 * file (the first, and later end-entity ones), and the check of a seal's
 * detached CMS signature over text by one of them (allowed NULL: any; the
 * signer's subject into signer).  0 ok, -1 with why. */
struct stack_st_X509;
struct stack_st_X509 *ev_load_certs(const char *file, char *err, size_t errlen);
int ev_cms_check(struct stack_st_X509 *allowed, const unsigned char *sig, size_t siglen,
                 const char *text, char *signer, size_t signerlen, char *why, size_t whylen);

/* ---- the PostgreSQL backend (evidence_pg.c, evidence_pg_read.c) ----------------- */
/* where is a postgresql:// URI registered with state_setup() */
struct evpg *evpg_open(char *err, size_t errlen);
void evpg_close(struct evpg *pg);
/* Appends events[0..n) to this node's chain in one transaction (the group
 * commit's batch); 0 or -1 with err.  Caller holds db_lock. */
int evpg_commit(struct evidence *ev, const struct evidence_event *const *events, size_t n,
                char *err, size_t errlen);
int evpg_lookup(struct evidence *ev, const char *dedupe_key, char *queue_id,
                size_t queue_id_len, time_t *when);
int evpg_stage_time(struct evidence *ev, const char *queue_id, time_t *out);
int evpg_stats(struct evidence *ev, long long *records, time_t *last_seal);
int evpg_seal(struct evidence *ev, time_t now, char *err, size_t errlen);
int evpg_purge(struct evidence *ev, time_t older_than, char *err, size_t errlen);
int evpg_verify(const struct evidence_verify_opts *o, FILE *out, char *err, size_t errlen);
int evpg_trace(const char *id, FILE *out);
int evpg_trace_json(const char *id, FILE *out, char *err, size_t errlen);
int evpg_search(const struct evidence_query *q,
                int (*fn)(void *ctx, const struct evidence_row *r), void *ctx, char *err,
                size_t errlen);
int evpg_report(const char *from, const char *to,
                int (*fn)(void *ctx, const char *day, const char *type, long long n), void *ctx,
                char *err, size_t errlen);
int evpg_seal_of(const char *chain, const char *day, char **signed_text, unsigned char **sig,
                 size_t *siglen, char *err, size_t errlen);
long long evpg_hold_add(const char *kind, const char *value, const char *reason, char *err,
                        size_t errlen);
int evpg_hold_del(long long id, char *err, size_t errlen);
/* evidence_export_chains.c: the sealed day of every chain of the shared log
 * into a new file (the number of records, -1 with err); whether an opened
 * file is such an export (its meta names its chains); and its check, as
 * evidence_verify_ex's (0 intact, -1 tampered; the report on out). */
long long evpg_export_day(const char *day, const char *out_path, char *err, size_t errlen);
int ev_export_is_chains(sqlite3 *db);
int ev_verify_chains_export(sqlite3 *db, const char *path, struct stack_st_X509 *allowed,
                            FILE *out, char *err, size_t errlen);
int evpg_hold_list(int (*fn)(void *ctx, long long id, const char *kind, const char *value,
                             const char *reason, long long created),
                   void *ctx, char *err, size_t errlen);
/* evidence_extract.c: the checks of a query and of a hold, for both backends */
int ev_check_query(const struct evidence_query *q, char *err, size_t errlen);
bool ev_valid_day(const char *d);
int ev_check_hold(const char *kind, const char *value, char *err, size_t errlen);

#endif
