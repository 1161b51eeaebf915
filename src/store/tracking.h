/*
 * tracking.h - receipts expected by the sending provider and the timeout
 * notices of RFC 6109 §3.1.6, and the messages the incoming point took in
 * (duplicate suppression).  One interface, two backends (tracking.c):
 * SQLite under the data directory (tracking_sqlite.c, the default) or the
 * PostgreSQL database the provider's nodes share (tracking_pg.c, [state]
 * database): a copy retried to another node is still a duplicate, and each
 * timeout notice is claimed by exactly one node's batch.
 *
 * Purpose: the access point records what it expects, the incoming point
 * matches receipts and duplicates, the timers' thread (src/provider/notices.c)
 * asks what is due; pecctl backup snapshots it.
 * Threads: any thread: one connection (SQLite or PostgreSQL) behind a mutex.
 * Between
 * tracking_pass_begin and _end a delivery thread's writes share the pass's
 * transaction; a write outside a pass (the event loop) commits at once.
 * Ownership: the expect and seen arguments are borrowed for the call;
 * tracking_due's array and strings are the caller's (tracking_due_free).
 * Errors: -1 (NULL from tracking_open, with err) on a database error;
 * tracking_receipt and tracking_seen answer 1 for "not expected" and
 * "duplicate"; pass_end's -1 means the pass's stages must run again.
 */
#ifndef PEC_STORE_TRACKING_H
#define PEC_STORE_TRACKING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct tracking;
struct tracking_due {
    char *pec_id, *rcpt, *sender, *subject, *recipients;
    char *orig_msgid;   /* the original's Message-ID with < > (§3.1.6), or NULL */
    char *reply_to;     /* daticert <risposte> (§4.4), or NULL (older rows: the sender) */
    unsigned slot;      /* the recipient's place among the envelope's certificato
                           recipients, from 0: numbers the notices' Message-IDs */
    time_t sent;
    int which;          /* 1: the 12 h notice, 2: the 24 h notice */
};

/* Opens (creating) the database at path; one made by an older pecd is
 * migrated in place, its rows kept (schema version in PRAGMA user_version).
 * A postgresql:// URI (state.h: state_setup() first) opens the shared
 * database instead, whose schema `pecctl state init|migrate` makes. */
struct tracking *tracking_open(const char *path, char *err, size_t errlen);
/* The database commits with synchronous=NORMAL: durable by the queue's syncfs
 * at the end of each delivery-thread pass and by the committer's.  When it is
 * on another file system than the queue, or the queue syncs file by file
 * ([queue] sync = fsync), call this with true: every commit is synced
 * (synchronous=FULL).  0 ok, -1 error. */
int tracking_sync_each(struct tracking *t, bool on);
/* The connection's PRAGMA synchronous: 1 NORMAL, 2 FULL (-1 on error). */
int tracking_synchronous(struct tracking *t);
void tracking_close(struct tracking *t);
/* Expect receipts for each certificato recipient of envelope pec_id;
 * orig_msgid: the Message-ID of the original as the acceptance quotes it
 * (X-Riferimento-Message-ID, with < >), or NULL.  rcpts[i] gets slot i. */
struct tracking_expect_args {
    const char *pec_id;          /* the envelope's PEC msgid */
    const char *orig_msgid;      /* the original's Message-ID with < >, or NULL */
    const char *reply_to;        /* daticert <risposte> of the acceptance, or NULL */
    const char *sender, *subject;
    const char *recipients;      /* every recipient of the original, comma-separated */
    const char *const *rcpts;    /* the certificato ones: one row each */
    size_t n;
    time_t sent;
};
int tracking_expect(struct tracking *t, const struct tracking_expect_args *a);
/* A receipt came back: kind 'P' presa in carico, 'C' delivery or non-delivery.
 * 0 matched, 1 not expected (late or duplicate), -1 error. */
int tracking_receipt(struct tracking *t, const char *pec_id, const char *rcpt, char kind);
/* Notices due at now (t12, t24 in seconds), at most 1000; free with
 * tracking_due_free.  With PostgreSQL the rows stay locked for this thread
 * (FOR UPDATE SKIP LOCKED: another node's timer passes them by) until
 * tracking_claim() or tracking_due_abort(). */
size_t tracking_due(struct tracking *t, time_t now, uint64_t t12, uint64_t t24,
                    struct tracking_due **out);
/* The notices d[0..n) are stored in the queue as batch qid: marked sent and
 * claimed by that batch, in one durable transaction (which ends what
 * tracking_due locked).  0 or -1. */
int tracking_claim(struct tracking *t, const struct tracking_due *d, size_t n, const char *qid);
/* The batch could not be stored: what tracking_due locked is let go. */
void tracking_due_abort(struct tracking *t);
/* Which batch claimed recipient rcpt's notice which (1 or 2) of pec_id: 1
 * claimed (its queue id in qid; "" when an older pecd marked it without
 * one), 0 not claimed (or no longer tracked), -1 error.  The notices stage
 * makes a notice only in the batch that claimed it. */
int tracking_notice_claim(struct tracking *t, const char *pec_id, const char *rcpt, int which,
                          char *qid, size_t qidlen);
/* tracking_claim without a batch (tests, older callers). */
int tracking_mark(struct tracking *t, const char *pec_id, const char *rcpt, int which);
int tracking_mark_all(struct tracking *t, const struct tracking_due *d, size_t n);
void tracking_due_free(struct tracking_due *d, size_t n);
/* What identifies a message taken in for one recipient (duplicate
 * suppression).  Only a message whose signature verified is recorded: signer
 * is the SHA-1 of its signer certificate (the provider), msgid its
 * Message-ID, content a digest of its signed certification data (so that a
 * message signed by the same provider for another transaction cannot match),
 * rcpt the recipient (compared in lower case). */
struct tracking_seen_key {
    const char *signer, *msgid, *content, *rcpt;
};
/* Records that the message of k arrived as queue file qid: 0 first time (or
 * the same qid again), 1 a duplicate from another transfer, -1 error (also
 * without a signer). */
int tracking_seen(struct tracking *t, const struct tracking_seen_key *k, const char *qid);
/* Forgets the oldest messages taken in before 'before', at most max of them
 * (oldest first, so that a call stays short); the number forgotten, -1 on
 * error.  Called regularly, it keeps the record of the last [timers]
 * duplicate_window instead of every message ever received.  Recipients
 * whose second notice was sent before 'before' go too. */
long tracking_purge_seen(struct tracking *t, time_t before, size_t max);
/* A consistent copy of the database into a new file (VACUUM INTO), for
 * backups: the SQLite database is held exclusively by pecd, so only pecd can
 * make it.  0, or -1 with err; always -1 for the shared PostgreSQL state
 * (backed up with pg_dump, docs/backup.md): see tracking_is_shared(). */
int tracking_snapshot(struct tracking *t, const char *path, char *err, size_t errlen);
/* Whether the state lives in the shared [state] database (PostgreSQL). */
bool tracking_is_shared(const struct tracking *t);
/* A delivery thread's pass of stages: between begin and end, this thread's
 * writes (and other threads' in their passes) go into one transaction,
 * committed at the end of each pass, so a pass costs one commit instead of
 * one per write.  A write from a thread outside a pass (the event loop) is
 * committed at once, with what the open passes wrote so far.  end returns -1
 * if a commit failed while the pass was open (its writes may be lost: its
 * stages must run again). */
void tracking_pass_begin(struct tracking *t);
int tracking_pass_end(struct tracking *t);

#endif
