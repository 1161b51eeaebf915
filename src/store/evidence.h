/*
 * evidence.h - the evidence log of RFC 6109 §2.3: every PEC event (message
 * identifiers, dates, sender, recipients, subject, event type, outcome) in an
 * append-only SQLite table kept 30 months.  Tamper-evident: each record
 * carries SHA-256(previous hash || canonical record), and the last hash of
 * every finished (UTC) day is signed with the provider key (CMS).  Format,
 * verification and retention: docs/evidence.md.
 *
 * Two backends, one interface: the SQLite file above (evidence.c,
 * evidence_seal.c, evidence_verify.c, evidence_extract.c: one node), or the
 * PostgreSQL database the provider's nodes share ([state] database;
 * evidence_pg.c, evidence_pg_read.c), where each node appends to a chain of
 * its own (named after the node), each chain's days are sealed once, and
 * retention drops whole monthly partitions (docs/evidence.md, "Several
 * nodes").  Every function that takes a path takes the database's URI
 * instead (state.h: state_evidence_at()).
 *
 * Purpose: the roles append (src/provider), pecd's daily timer seals and
 * purges, pecctl log verify|search|extract|hold|export and trace read.
 * Threads: one struct evidence may be used from several threads at once;
 * concurrent appends are committed together (group commit; db_lock and
 * q_lock inside).  A batch belongs to the thread that began it.
 * evidence_verify(), evidence_trace() and the other path-based readers open
 * the file read-only and may run while pecd writes.
 * Ownership: an event's strings are borrowed for the call (a batch copies
 * them); a signer's *der is malloc'ed and freed by the log; evidence_row's
 * pointers are valid during the callback; evidence_seal_of's outputs are
 * g_free'd by the caller; evidence_close frees the log.
 * Errors: -1 with the reason in err ("evidence log: what: the database's message"),
 * NULL from evidence_open; a failed batch stores none of its events; verify
 * returns -1 tampered (first broken record or day in err and on out), -2
 * unreadable.
 */
#ifndef PEC_EVIDENCE_H
#define PEC_EVIDENCE_H

#include <stddef.h>
#include <stdio.h>
#include <time.h>

struct evidence;

struct evidence_event {
    const char *type;        /* stable event name, e.g. "accettazione", "non-accettazione",
                                "busta-trasporto", "presa-in-carico", "ricezione-busta",
                                "anomalia", "avvenuta-consegna", "errore-consegna",
                                "preavviso-errore-consegna", "rilevazione-virus",
                                "ricevuta-ricevuta"; free text, indexed; required */
    const char *pec_id;      /* the PEC msgid (identificativo, without <>) or NULL */
    const char *orig_msgid;  /* the client's Message-ID (without <>) or NULL */
    const char *message_id;  /* Message-ID of the message produced or handled, or NULL */
    const char *sender;
    const char *recipients;  /* comma-separated */
    const char *subject;
    const char *outcome;     /* "ok" or a reason */
    const char *queue_id;    /* pecd queue id or NULL */
    const char *dedupe_key;  /* not NULL: an event with the same key is stored only once */
    time_t when;             /* the transaction's instant (§4.1); 0 = now */
};

/*
 * Signer: a detached CMS SignedData (DER) over data, made with the provider
 * key.  *der is malloc'ed (evidence frees it with free()).  src/pec's
 * pec_signer returns a pec_buf instead; the provider adapts it in 5 lines:
 *
 *   static int ev_sign(void *ctx, const void *d, size_t n, unsigned char **der,
 *                      size_t *len, char *err, size_t errlen) {
 *       pec_signer *s = ctx; pec_buf b = {0};
 *       if (s->sign(s->ctx, d, n, &b, err, errlen) != 0) return -1;
 *       *der = b.data; *len = b.len; return 0;
 *   }
 */
typedef int (*evidence_sign_fn)(void *ctx, const void *data, size_t len, unsigned char **der,
                                size_t *derlen, char *err, size_t errlen);

/* Opens (creating the file, its directory and the schema if needed). */
struct evidence *evidence_open(const char *path, char *err, size_t errlen);
void evidence_set_signer(struct evidence *ev, evidence_sign_fn fn, void *ctx);
/* The clock used for the record's logging time and day (default time(NULL));
 * for tests and simulations. */
void evidence_set_clock(struct evidence *ev, time_t (*now)(void *ctx), void *ctx);

/* Appends one event; durable (committed with synchronous=FULL) before it
 * returns.  Callable from several threads at once: concurrent calls share one
 * transaction.  A replay with a dedupe_key already stored is a no-op that
 * returns 0.  -1 on error (reason in err). */
int evidence_append(struct evidence *ev, const struct evidence_event *e, char *err,
                    size_t errlen);
/* The same, committed without a sync of its own (synchronous=NORMAL: the WAL
 * frames are written, not fdatasync'ed): durable once the caller has made a
 * syncfs(2) of the log's file system that started after this returned.  The
 * queue's delivery threads make one before a stage's outputs are committed,
 * so an event of a stage is durable before anything it records can happen;
 * a crash before that loses the event and the stage together, and the stage
 * runs again.  Concurrent calls of both kinds share a transaction; it is
 * synced if any of them asked for it. */
int evidence_append_deferred(struct evidence *ev, const struct evidence_event *e, char *err,
                             size_t errlen);
/* Batches.  Between evidence_batch_begin() and evidence_batch_commit() on one
 * thread, evidence_append() and evidence_append_deferred() on that thread
 * keep a copy of the event and return 0 at once; evidence_batch_commit()
 * writes them all in one transaction (group-committed with other threads'
 * appends), synced unless every one of them was deferred, and returns -1 if
 * they could not be stored (none of them then is).  Durability, duplicates
 * and order are those of the single appends, counted from the commit.  A
 * queue delivery thread opens one around the stages of a pass: one
 * transaction for dozens of events instead of one each.  A batch begun
 * while one is open drops the events of the open one. */
void evidence_batch_begin(struct evidence *ev);
int evidence_batch_commit(struct evidence *ev, char *err, size_t errlen);
/* A mark in this thread's open batch (the number of events it holds), and
 * the events added after it dropped: a stage that fails leaves no event in
 * the pass's batch (RFC 6109 §4.1: the log records only what was done). */
size_t evidence_batch_mark(struct evidence *ev);
void evidence_batch_rollback(struct evidence *ev, size_t mark);
/* The instant recorded by the events of queue file queue_id's stage (the
 * earliest event_time of the events whose dedupe key starts "QID:"): a stage
 * run again after its events were stored reuses it, so the log and the
 * messages it describes keep one time.  1 found, 0 none, -1 error. */
int evidence_stage_time(struct evidence *ev, const char *queue_id, time_t *out);
/* The stored event with this dedupe key: its queue id (queue_id, "" if none)
 * and instant.  1 found, 0 none, -1 error. */
int evidence_lookup(struct evidence *ev, const char *dedupe_key, char *queue_id,
                    size_t queue_id_len, time_t *when);

/* Signs the head of every finished UTC day (day < the day of now) that has
 * records and no seal yet.  Needs a signer.  Returns the number of days
 * sealed, -1 on error. */
int evidence_seal(struct evidence *ev, time_t now, char *err, size_t errlen);

/* Retention: removes the records of whole sealed days that ended at or
 * before older_than (oldest first).  Seals are kept (they hold no personal
 * data) and the anchor row names the last removed record, so verification
 * still starts from a signed point.  Returns the number of days removed, -1
 * on error. */
int evidence_purge(struct evidence *ev, time_t older_than, char *err, size_t errlen);

/* For the metrics: records written in the log's life (the last sequence
 * number) and when the last day seal was made (0: none).  -1 when the log
 * is busy (a commit or a seal holds it): the caller keeps its last values. */
int evidence_stats(struct evidence *ev, long long *records, time_t *last_seal);
void evidence_close(struct evidence *ev);

/*
 * Verification (pecctl log verify).  cert_pem_file: the provider signing
 * certificate(s) (PEM; the signer must be one of the certificates in the
 * file, so a renewed key is accepted by listing the old certificate too).
 * NULL: the seals' signatures are checked against the certificate they
 * embed and the signer is only printed.  Writes a report to out (may be
 * NULL).  Returns 0 intact, -1 tampered (the first broken record or day
 * described in err and on out), -2 when the log cannot be read.
 */
int evidence_verify(const char *path, const char *cert_pem_file, FILE *out, char *err,
                    size_t errlen);

struct evidence_verify_opts {
    const char *cert_pem_file;
    /* > 0: records of days ending after this instant must still be present
     * (a purge beyond the retention period is reported as tampering) */
    time_t keep_after;
    time_t now;              /* 0 = time(NULL); days before its day should be sealed */
};
int evidence_verify_ex(const char *path, const struct evidence_verify_opts *o, FILE *out,
                       char *err, size_t errlen);

/* The life of a PEC message: every event whose pec_id, orig_msgid or
 * message_id is id (with or without <>), then every event of the same PEC
 * transactions, grouped per transaction in log order.  0 found, 1 none,
 * -1 error (reason on out). */
int evidence_trace(const char *path, const char *id, FILE *out);
/* The same events as one JSON object (evidence_json.c): the number of
 * events (0: none), or -1 with err. */
int evidence_trace_json(const char *path, const char *id, FILE *out, char *err, size_t errlen);

/* SHA-256 chain step over one record, exposed for tests and tools:
 * hash = SHA-256(prev || "pecmail-evidence-1" || F(seq) F(day) F(logged_at)
 * F(event_time) F(type) F(pec_id) F(orig_msgid) F(message_id) F(sender)
 * F(recipients) F(subject) F(outcome) F(queue_id) F(dedupe_key)),
 * F(NULL) = FF FF FF FF, F(s) = 4-byte big-endian length || bytes; numbers as
 * decimal ASCII.  fields[] is in that order from type on (10 entries). */
void evidence_record_hash(const unsigned char prev[32], long long seq, const char *day,
                          long long logged_at, long long event_time,
                          const char *const fields[10], unsigned char out[32]);

/* ---- what staff ask of the log (evidence_extract.c; docs/evidence.md) ---------------- */

/* Events that concern address (its sender or one of its recipients, whole
 * and without case), in UTC days from..to ("YYYY-MM-DD", NULL = open), whose
 * subject contains subject (NULL = any).  Every field may be NULL. */
struct evidence_query {
    const char *address, *from, *to, *subject;
};
/* One record as stored (pointers valid during the callback). */
struct evidence_row {
    const char *chain;        /* the node's chain in the shared log; NULL with SQLite */
    long long seq;
    const char *day;
    long long logged_at, event_time;
    const char *fields[10];   /* type, pec_id, orig_msgid, message_id, sender, recipients,
                                 subject, outcome, queue_id, dedupe_key */
    unsigned char prev_hash[32], hash[32];
};
/* Calls fn for each matching record in order (fn != 0 stops); the number of
 * records, -1 on error (bad query or unreadable log). */
int evidence_search(const char *path, const struct evidence_query *q,
                    int (*fn)(void *ctx, const struct evidence_row *r), void *ctx, char *err,
                    size_t errlen);
/* Counts per UTC day and event type in from..to (NULL = open). */
int evidence_report(const char *path, const char *from, const char *to,
                    int (*fn)(void *ctx, const char *day, const char *type, long long n),
                    void *ctx, char *err, size_t errlen);
/* The seal of day: the signed text and the DER signature (g_free both);
 * 1 found, 0 not sealed yet, -1 error. */
int evidence_seal_of(const char *path, const char *day, char **signed_text,
                     unsigned char **sig, size_t *siglen, char *err, size_t errlen);
/* The same for one chain of the shared log (chain NULL: evidence_seal_of). */
int evidence_seal_of_chain(const char *path, const char *chain, const char *day,
                           char **signed_text, unsigned char **sig, size_t *siglen, char *err,
                           size_t errlen);
/* Writes the sealed day ("YYYY-MM-DD") of the log at path into out_path, a
 * new file (0600; an existing one is refused): an evidence log of its own
 * with the day's records, its seal and the previous day's seal, which
 * evidence_verify_ex() checks without the rest of the log (evidence_export.c).
 * The number of records, or -1 with err (not sealed yet, purged...). */
long long evidence_export_day(const char *path, const char *day, const char *out_path,
                              char *err, size_t errlen);

/* Legal holds: retention (evidence_purge) keeps every day that holds a
 * record of a held transaction (kind "pec_id") or address ("address"), and
 * the days after it.  add returns the hold's id (-1 on error). */
long long evidence_hold_add(const char *path, const char *kind, const char *value,
                            const char *reason, char *err, size_t errlen);
int evidence_hold_del(const char *path, long long id, char *err, size_t errlen);
int evidence_hold_list(const char *path,
                       int (*fn)(void *ctx, long long id, const char *kind, const char *value,
                                 const char *reason, long long created),
                       void *ctx, char *err, size_t errlen);

#endif
