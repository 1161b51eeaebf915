/*
 * queue.h - the durable queue: spool files (spool.c), group commit
 * (commit.c), and the scheduler with its delivery workers (queue.c).
 *
 * Purpose: a message is acknowledged only after its spool file - typed,
 * length-prefixed records closed by an END record - is fsync'ed and renamed
 * into queue/.  Every later step (delivery, retry, removal) is idempotent and
 * replayed from queue/ after a crash.  pecd wires the SMTP server's spool
 * hooks to the committer and the roles and transport to process/deliver;
 * pecctl lists and releases.
 * Threads: the scheduler (queue_new, enqueue, set_config, stats, stop, free)
 * and the committer's submit and take_file run on the event loop; the
 * committer syncs in a thread of its own and calls cb back on the event
 * loop.  deliver_fn, process_fn and the pass hooks run on the delivery
 * threads, one message per thread at a time.  queue_inject,
 * queue_enqueue_async, queue_pause/resume, spool_* and recycle_*: any thread.
 * Ownership: queue_env_free frees every string of an env: one from
 * spool_read/spool_parse or queue_outputs_add owns them (the data is
 * malloc'ed for the caller); one filled with borrowed strings only to be
 * written (spool_writer_open, spool_write_file, queue_inject read it during
 * the call) is not freed with it.  committer_submit takes the writer;
 * dsn_build's result is g_free'd; the queue borrows cfg until the next
 * queue_set_config.
 * Errors: -1 with the reason in err (spool_read, queue_new: NULL, the
 * stages) or errno (writers, appends; a failed spool file creation is
 * logged); a commit's cb gets -1 and the SMTP session answers 451; a
 * stage's or pass's -1 retries it later; a file without END is never
 * delivered.
 */
#ifndef PEC_QUEUE_H
#define PEC_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

struct config;
struct event_base;

#define QUEUE_ID_LEN 16

/* ---- the envelope of a queued message ----------------------------------- */
struct queue_rcpt {
    char *addr;           /* mailbox to deliver to */
    char *orig;           /* as given at RCPT */
    unsigned notify;      /* RFC 3461 NOTIFY bits (smtp.h SMTP_NOTIFY_*) */
    char *orcpt;          /* "type;address" or NULL */
    int status;           /* QR_PENDING, QR_DONE, QR_FAILED */
    char *status_text;    /* the reply or reason that settled it */
};
enum { QR_PENDING, QR_DONE, QR_FAILED };

struct queue_env {
    char qid[QUEUE_ID_LEN + 1];
    time_t arrival;
    char *sender;         /* "" for the null path */
    struct queue_rcpt *rcpts;
    size_t nrcpts;
    /* options (kept for DSN and REQUIRETLS handling downstream) */
    int body;             /* 0 none, 1 7BIT, 2 8BITMIME */
    int ret;              /* 0 none, 1 FULL, 2 HDRS */
    bool smtputf8;
    bool requiretls;
    char *envid;
    char *client_ip, *helo, *auth_user, *tls, *proto, *listener;
    char *auth_mech;      /* SASL mechanism of the session ("PLAIN", "LOGIN"), or NULL */
    uint64_t size;        /* octets of message data */
    bool delay_warned;    /* a DELAY notification went out */
    char *stage;          /* processing role (e.g. PEC "submission", "incoming"), or NULL */
    uint64_t deadline;    /* seconds after arrival when what is pending fails without a
                             report ("deadline" option; a PEC envelope: the sender has the
                             signed 24 h notice), 0 = [queue] lifetime with reports */
    bool processed;       /* the role ran and its outputs are committed (REC_PROCESSED) */
    unsigned attempts;    /* delivery attempts so far (REC_RETRY) */
    time_t next_try;      /* when the next one is due, 0 = now (REC_RETRY) */
    unsigned name_base;   /* not stored: added to the recipient index in mailbox file
                             names (copies a stage stores for one source message) */
    /* the callout stage's results (REC_CALLOUT; src/filters) */
    char *virus;          /* the virus found in a PEC message that was accepted, or NULL */
    char *callouts;       /* the callouts that acted ("antivirus=clean, dkim=accept"), or NULL */
};
#define QR_WARNED 3       /* status record with index nrcpts: delay warning sent */
#define QR_REFUSED 4      /* refused by a filter at reception (text: its reply): fails,
                           * with a notification, at the first delivery */
void queue_env_free(struct queue_env *env);

/* ---- spool files (spool.c) ---------------------------------------------- */
enum spool_rec {
    REC_VERSION = 'V', REC_ID = 'I', REC_TIME = 'T', REC_SENDER = 'S', REC_OPT = 'O',
    REC_RCPT = 'R', REC_DATA = 'D', REC_END = 'E',
    REC_CALLOUT = 'C',    /* before DATA: "virus=NAME" or "trace=TEXT" (callout stage) */
    REC_STATUS = 'X',     /* after END: a recipient's final status (appended) */
    REC_PROCESSED = 'P',  /* after END: the stage's outputs are committed (appended) */
    REC_RETRY = 'Y',      /* after END: attempts and next retry time (appended, not synced) */
    REC_PAD = 'Z',        /* after END: what a reused file held before, skipped (no payload
                           * written: the length covers the old bytes up to its end) */
};
/* A reused spool file at most this much longer than what was written keeps
 * its length, the rest covered by a PAD record; a longer one is cut. */
#define SPOOL_PAD_MAX (64 * 1024)
struct spool_writer;
/* Starts the spool file of env in incoming/: on fd (an empty file named
 * incoming/<name>, taken from the committer's pool), or, when fd is -1, on a
 * file it creates as incoming/<qid>.  Writes the envelope records. */
struct spool_writer *spool_writer_open(const char *queue_dir, int fd, const char *name,
                                       const struct queue_env *env);
int spool_writer_data(struct spool_writer *w, const void *buf, size_t len);
/* Writes END and flushes (no fsync: the committer does that). */
int spool_writer_finish(struct spool_writer *w);
int spool_writer_fd(const struct spool_writer *w);
const char *spool_writer_qid(const struct spool_writer *w);
const char *spool_writer_name(const struct spool_writer *w);  /* in incoming/ */
void spool_writer_abort(struct spool_writer *w);
void spool_writer_free(struct spool_writer *w);

/* Reads a spool file; the envelope into *env and, when data is not NULL, the
 * message (malloc'ed) into *data.  Fails (-1, reason in err) on a file
 * without END, a bad record, or one over the limits. */
int spool_read(const char *path, struct queue_env *env, char **data, size_t *datalen,
               char *err, size_t errlen);
/* The same from the file's bytes (len of them; buf need not end in NUL). */
int spool_parse(const char *buf, size_t len, struct queue_env *env, char **data,
                size_t *datalen, char *err, size_t errlen);
/* Appends recipient rcpt's final status to a committed spool file and syncs
 * it, so a partial failure retries only the recipients still pending. */
int spool_append_status(const char *path, size_t rcpt, int status, const char *text);
/* Writes a complete spool file (env, data, END) as <queue_dir>/<sub>/<name>,
 * synced when sync (never the directory). */
int spool_write_file(const char *queue_dir, const char *sub, const char *name,
                     const struct queue_env *env, const char *data, size_t len, bool sync);
/* Appends the PROCESSED record (with the number of outputs), synced when sync. */
int spool_append_processed(const char *path, size_t noutputs, bool sync);
/* Appends the retry schedule (not synced: losing it only retries sooner). */
/* Spool files are reused rather than deleted and created (recycle.c). */
int recycle_open(const char *queue_dir);            /* QUEUE/free/, its list */
int recycle_take(const char *queue_dir, const char *path);   /* fd at path, or -1 */
int recycle_put(const char *queue_dir, const char *path);    /* instead of unlink */
size_t recycle_count(const char *queue_dir);
int spool_append_retry(const char *path, unsigned attempts, time_t next);
/* A new queue id: 16 upper-case hex digits, time-ordered, unique. */
void queue_new_id(char out[QUEUE_ID_LEN + 1]);

/* ---- delivery status notifications (dsn.c) ------------------------------ */
enum dsn_action { DSN_FAILED, DSN_DELAYED, DSN_DELIVERED, DSN_RELAYED };
struct dsn_rcpt {
    const char *addr;        /* final recipient */
    const char *orcpt;       /* ORCPT as given ("rfc822;a@b") or NULL */
    int smtp_code;           /* the remote reply's code, 0 if none */
    const char *text;        /* "5.1.1 <a@b>: no such user" or our reason */
    const char *remote_mta;  /* next hop, or NULL */
};
/* A complete RFC 3464 report for env, to be sent from <> to env->sender.
 * g_free() the result. */
char *dsn_build(const struct queue_env *env, const char *data, size_t len,
                const struct dsn_rcpt *rcpts, size_t n, enum dsn_action action,
                const char *reporting_mta, size_t *outlen);

/* ---- group commit (commit.c) -------------------------------------------- */
struct committer;
typedef void (*commit_cb)(void *arg, int result);
/* delay_us: under load (the last batch had more than one file) the committer
 * waits up to this long after a batch's first file for more to join it. */
struct committer *committer_new(struct event_base *base, const char *queue_dir, bool use_syncfs,
                                uint64_t delay_us);
/* Takes ownership of w; makes it durable (fsync + rename into queue/ + fsync
 * of the directory) together with whatever else is pending, then calls cb on
 * the event loop. */
void committer_submit(struct committer *c, struct spool_writer *w, commit_cb cb, void *arg);
/* An empty file in incoming/, created ahead of time by the commit thread so
 * that the event loop never waits on a file-system journal to create one.
 * Returns the fd and its name, or -1 when the pool is empty. */
int committer_take_file(struct committer *c, char *name, size_t namelen);
void committer_free(struct committer *c);
uint64_t committer_batches(const struct committer *c);

/* ---- the queue and its scheduler (queue.c) ------------------------------- */
/* Result of delivering one recipient. */
enum deliver_result { DELIVER_OK, DELIVER_TEMPFAIL, DELIVER_PERMFAIL };
/* A delivery written but not yet visible: the worker links tmp to dst once
 * the data of the whole batch is durable (group commit), then syncs dst's
 * directory.  tmp[0] == '\0' means nothing is left to do. */
struct deliver_pending {
    char tmp[4096];
    char dst[4096];
};
/* One recipient of a delivery attempt: 'pending' in, the rest out. */
struct deliver_rcpt {
    bool pending;                 /* deliver this recipient now */
    enum deliver_result result;
    int smtp_code;                /* the next hop's reply code, 0 if none */
    char text[512];               /* its reply ("5.1.1 …") or our reason */
    char remote_mta[256];         /* next hop that answered, "" if local */
    bool relayed;                 /* accepted by a next hop without DSN support */
    struct deliver_pending pub;
};
/* Delivers the pending recipients of one message; runs on a worker thread
 * and may group recipients by destination.  'recovered' says the message may
 * already have been delivered by an earlier process (duplicates must be
 * suppressed).  'sync_each' asks the function to make its own writes durable
 * (fsync mode); otherwise the worker syncs once per batch (syncfs mode). */
typedef void (*deliver_fn)(void *arg, const struct queue_env *env, const char *data, size_t len,
                           bool recovered, bool sync_each, struct deliver_rcpt *rcpts);
/* Messages with a stage are not delivered but processed: the function turns
 * one message into new ones (receipts, envelopes...), which the queue commits
 * exactly once: outputs are written to staged/ and copies for our own
 * mailboxes to their tmp/ (out->pubs), all made durable, the copies linked
 * into new/, then a PROCESSED record is appended to the source (the commit
 * point), then the outputs move into queue/ and the source goes.  A crash
 * before the commit point discards the outputs and the stage runs again
 * ('recovered': copies already linked are found by name); after it, recovery
 * finishes the move.  Returns 0, or -1 to retry later (reason in err). */
struct queue_output {
    struct queue_env env;   /* owned: strings malloc'ed; qid assigned by the queue */
    char *data;             /* owned */
    size_t len;
};
struct queue_outputs {
    struct queue_output *v;
    size_t n, cap;
    /* copies the stage wrote into mailboxes (tmp/): published by the queue
     * with the outputs, at the same commit point; an entry with tmp[0] ==
     * '\0' was stored before (found again after a crash) */
    struct deliver_pending *pubs;
    size_t npubs, pubcap;
    /* for the processor: how many identifiers it has made for this source, so
     * that a stage run again makes the same ones (see roles' role_stage_id) */
    unsigned ids;
    /* the stage's one instant (RFC 6109 §4.1: "a sole temporal value obtained
     * from within the transaction itself"): every message it builds and every
     * event it logs carries it; set by the processor */
    time_t when;
};
/* Adds a copy of env's envelope fields (sender, recipients, options) and data. */
void queue_outputs_add(struct queue_outputs *o, const struct queue_env *env, const void *data,
                       size_t len);
void queue_outputs_add_pub(struct queue_outputs *o, const struct deliver_pending *p);
void queue_outputs_free(struct queue_outputs *o);
typedef int (*process_fn)(void *arg, const struct queue_env *env, const char *data, size_t len,
                          bool recovered, struct queue_outputs *out, char *err, size_t errlen);

struct queue;
void queue_set_processor(struct queue *q, process_fn fn, void *arg);
/* Called by each delivery thread around one pass (a batch of messages):
 * begin before the first is loaded, end after the last stage of the pass has
 * run and before any stage's outputs are committed.  end's -1 (reason in err)
 * means what the stages recorded on the side (the evidence log's batch, the
 * tracking database's transaction) is not stored: every stage of the pass
 * runs again later.  With no processor
 * set, or NULL hooks, nothing is called. */
typedef void (*pass_begin_fn)(void *arg);
typedef int (*pass_end_fn)(void *arg, char *err, size_t errlen);
void queue_set_pass_hooks(struct queue *q, pass_begin_fn begin, pass_end_fn end, void *arg);
struct queue *queue_new(struct event_base *base, const struct config *cfg, deliver_fn deliver,
                        void *deliver_arg, char *err, size_t errlen);
/* The same for the queue in directory dir (cfg gives the rest: workers,
 * retries...), whose lock (queue_lock_dir) lock_fd the queue takes over;
 * lock_fd -1: taken here.  A node of several processes the spool of a dead
 * node with it (src/provider/cluster.c). */
struct queue *queue_new_at(struct event_base *base, const struct config *cfg, const char *dir,
                           int lock_fd, deliver_fn deliver, void *deliver_arg, char *err,
                           size_t errlen);
/* The lock of one process per queue directory (an flock on DIR/pecd.lock,
 * which the kernel drops when the process dies): its fd, or -1 with the
 * holder's pid in err. */
int queue_lock_dir(const char *dir, char *err, size_t errlen);
/* Several nodes: whether this process may still work on the spool (it holds
 * the lease on it).  Asked by each delivery thread before a pass, and again
 * before the pass's stages are committed; false: nothing of the pass is
 * done or committed, the messages wait for a later attempt. */
typedef bool (*fence_fn)(void *arg);
void queue_set_fence(struct queue *q, fence_fn fn, void *arg);
/* The queue's directory. */
const char *queue_dir(const struct queue *q);
/* Several nodes: queue ids made from now on carry the node's number (1..63)
 * in their last 12 bits, so that ids made at the same microsecond on two
 * nodes differ (they name files, PEC identifiers and log keys that the
 * nodes share).  0: the process-local form. */
void queue_set_node_tag(unsigned num);
/* Scans queue/ and schedules every unfinished message; purges incoming/. */
int queue_recover(struct queue *q);
/* For the metrics (event loop): messages in the queue waiting for their
 * turn or being handled (active), waiting for a retry (deferred), on hold
 * (files in hold/), and the arrival of the oldest queued one (0: none). */
struct queue_stats {
    size_t active, deferred, hold;
    time_t oldest;
};
void queue_stats(struct queue *q, struct queue_stats *st);
/* Reload: retry times, lifetimes... from cfg (the directory and the number
 * of workers stay: they need a restart). */
void queue_set_config(struct queue *q, const struct config *cfg);
/* Schedules the files of queue/ it does not know yet (released from hold/;
 * pecd calls it on SIGHUP). */
void queue_rescan(struct queue *q);
/* pecctl: moves message qid from hold/ back to queue/ for one more attempt
 * and tells the pecd that holds the queue (SIGHUP).  1 released and pecd
 * told, 0 released (no pecd runs), -1 with the reason in err. */
int queue_release(const char *queue_dir, const char *qid, char *err, size_t errlen);
struct committer *queue_committer(struct queue *q);
/* Called after a commit: the message is now durable, schedule it. */
void queue_enqueue(struct queue *q, const char *qid);
/* The same from any thread (a message stored with queue_inject): the event
 * loop schedules it at once. */
void queue_enqueue_async(struct queue *q, const char *qid);
/* Backups (pecd_control.c): waits until no worker is inside a batch (at
 * most timeout_ms) and keeps them out until queue_resume(), so that the
 * spool, the tracking database and the evidence log are at rest between
 * two batches, as after a clean stop.  Messages keep being accepted (the
 * committer is not paused).  0 paused, -1 a batch did not end in time (not
 * paused).  Any thread. */
int queue_pause(struct queue *q, unsigned timeout_ms);
void queue_resume(struct queue *q);
/* Stops the workers after their current batch. */
void queue_stop(struct queue *q);
bool queue_idle(const struct queue *q);
void queue_free(struct queue *q);

/* Stores a new message (a notification) durably from any thread; the
 * caller hands the returned id to queue_enqueue() on the event loop. */
int queue_inject(const char *queue_dir, const struct queue_env *env, const char *data,
                 size_t len, char qid[QUEUE_ID_LEN + 1]);

/* For pecctl: lists queue/ on stdout. */
/* queue_list, or as a JSON array of {qid, hold, size, arrival, sender,
 * recipients} when json (pecctl queue --json).  A queue directory that does
 * not exist yet (pecd never ran) is an empty queue. */
int queue_list_ex(const char *queue_dir, FILE *out, bool json);
int queue_list(const char *queue_dir, FILE *out);
#endif
