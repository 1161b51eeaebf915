/*
 * quarantine.h - the quarantine store: infected messages (RFC 6109 §3.2.3:
 * kept 30 months) and messages a filter asked to hold.  One directory per
 * day (DIR/YYYY-MM-DD/), each message QID.eml beside QID.info (when, why,
 * sender, recipients); written durably before the SMTP reply.  Purged by
 * whole days once older than the retention (pecd's daily timer).
 *
 * Purpose: the callout stage (src/filters/stage.c) stores, pecd purges.
 * Threads: any thread (no state; files written with fs_write_atomic, names
 * unique by queue id).
 * Ownership: quarantine_info and data are borrowed for the call; the path
 * written is copied into path_out.
 * Errors: -1 with the reason in err (the caller answers 4xx: nothing is
 * accepted that could not be kept).
 */
#ifndef PEC_STORE_QUARANTINE_H
#define PEC_STORE_QUARANTINE_H

#include <stddef.h>
#include <time.h>

struct quarantine_info {
    const char *qid;
    const char *reason;          /* "virus Eicar-Signature", "milter spam: held" */
    const char *sender;
    const char *const *rcpts;
    size_t nrcpts;
    const char *client_ip;       /* or NULL */
};
/* Stores data durably; the path written goes to path_out (may be NULL). */
int quarantine_store(const char *dir, const struct quarantine_info *qi, const char *data,
                     size_t len, char *path_out, size_t pathlen, char *err, size_t errlen);
/* Removes the day directories that ended before older_than; their number,
 * or -1 (err). */
int quarantine_purge(const char *dir, time_t older_than, char *err, size_t errlen);

#endif
