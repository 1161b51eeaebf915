/*
 * lib.h - small shared facilities: logging, checked string helpers, parsing of
 * sizes and durations, durable file-system operations.
 *
 * Purpose: the bottom layer every module and both programs use (log.c,
 * util.c, xalloc.c, clock.c, fs.c, fs_copy.c, fs_sync.c, pkcs11_uri.c).
 * Threads: any thread.  Global state is only the logger's level, format and
 * program name (set at start and by a reload on the event loop), the cache of
 * fs_dir_stat (a mutex) and the shared syncfs state of fs_sync.c (a mutex per
 * file system); a log record is written with one write(2).
 * Ownership: strings are copied into caller-supplied buffers; fs_read_file's
 * *out is malloc'ed for the caller to free; log_init keeps progname (a
 * string that must live as long as the process).
 * Errors: functions return 0 on success and -1 on failure, with errno (fs_*)
 * or, where a message is useful, a reason in a caller-supplied buffer;
 * str_copy and str_fmt report truncation; logging itself cannot fail; the
 * x-allocators abort with a log line (the allocation policy, below).
 */
#ifndef PEC_LIB_H
#define PEC_LIB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PEC_VERSION "0.1.0"

/* ---- logging (log.c) ---------------------------------------------------- */
enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERR };

void log_init(const char *progname, enum log_level level);
void log_set_level(enum log_level level);
int log_level_parse(const char *s, enum log_level *out);
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Writes s as a JSON string (RFC 8259 §7: quoted, escaped, bytes that are
 * not UTF-8 as U+FFFD), or null when s is NULL (log.c; pecctl's --json). */
#include <stdio.h>
void json_fput(FILE *f, const char *s);
/* [log] format = json: JSON lines instead of text (log.c). */
void log_set_json(bool json);
/* What a record is about, for the JSON format (any field may be NULL); the
 * text format prints the message alone, which names them already. */
struct log_fields {
    const char *qid;       /* queue id */
    const char *pec_id;    /* the PEC message's identifier (msgid of §4.3) */
    const char *event;     /* accepted, refused, delivery, pec-accepted... */
    const char *result;    /* sent, deferred, bounced, ok... */
};
void log_tagged(enum log_level level, const struct log_fields *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)

/* ---- allocation (xalloc.c) ----------------------------------------------------- */
/* The allocation policy: small allocations (structures, strings, arrays of
 * recipients or fields, growing by one) use these, which log "out of memory"
 * with the size and abort when the memory cannot be had, as glib's g_malloc
 * does.  pecd is then restarted (systemd), and nothing acknowledged is lost:
 * the spool and the state are durable.  An allocation whose size follows a
 * message's data (a body, a decoded attachment, a DER blob) keeps malloc and
 * its NULL check, so that one large message is refused or deferred rather
 * than crashing the process on every retry.  A size of 0 is allocated as 1. */
void *xmalloc(size_t n) __attribute__((malloc, alloc_size(1), returns_nonnull));
void *xcalloc(size_t n, size_t size) __attribute__((malloc, alloc_size(1, 2), returns_nonnull));
void *xrealloc(void *p, size_t n) __attribute__((alloc_size(2), returns_nonnull));
char *xstrdup(const char *s) __attribute__((malloc, returns_nonnull));
char *xstrndup(const char *s, size_t n) __attribute__((malloc, returns_nonnull));

/* ---- strings (util.c) --------------------------------------------------- */
/* Copies like strlcpy: returns strlen(src); truncation when >= size. */
size_t str_copy(char *dst, const char *src, size_t size);
/* snprintf that returns -1 on truncation or error, else the length. */
int str_fmt(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool str_ieq(const char *a, const char *b);
bool str_iprefix(const char *s, const char *prefix);
char *str_trim(char *s);
void str_lower(char *s);
/* A host or domain name of LDH labels (RFC 1034 §3.5, RFC 1123 §2.1): 1-63
 * letters, digits or '-' (not first or last), at most 253 octets; any case. */
bool str_domain_ok(const char *s);
/* Parses "10", "10k", "10K", "30M", "1G" (binary multiples) into bytes. */
/* Milliseconds of CLOCK_MONOTONIC, for deadlines. */
int64_t clock_ms(void);
/* Microseconds of CLOCK_MONOTONIC, for durations. */
int64_t clock_us(void);
/* Waits until fd has one of the poll(2) events or the deadline (clock_ms())
 * passes: 1 ready, 0 timed out (errno ETIMEDOUT), -1 error; EINTR retried. */
int fd_wait(int fd, short events, int64_t deadline);
int parse_size(const char *s, uint64_t *out);
/* Parses "30", "30s", "5m", "12h", "2d" into seconds. */
int parse_duration(const char *s, uint64_t *out);
int parse_bool(const char *s, bool *out);
/* The value of header field name in the header section of msg (the first
 * occurrence, case-insensitive, unfolded, trimmed); false when absent. */
bool mail_header_value(const char *msg, size_t len, const char *name, char *out, size_t outlen);
/* Formats now (or t) as an RFC 5322 date-time in local time. */
void rfc5322_date(char *buf, size_t size, time_t t);

/* ---- PKCS#11 URIs, RFC 7512 (pkcs11_uri.c) ------------------------------ */
/* A private key in a hardware module: which token (any of the four may be
 * absent: a wildcard) and which object (label and/or CKA_ID). */
struct pkcs11_uri {
    char token[128];               /* CK_TOKEN_INFO label (32 octets, UTF-8, escaped) */
    char manufacturer[128];
    char serial[64];
    char model[64];
    char object[256];              /* CKA_LABEL */
    unsigned char id[128];         /* CKA_ID */
    size_t id_len;
    char type[16];                 /* "" or "private" */
};
/* Whether s begins with the scheme "pkcs11:" (case-insensitive). */
bool pkcs11_uri_is(const char *s);
/* 0, or -1 with the reason in err (a URI names no key, carries a query, an
 * attribute twice, a bad escape, ...). */
int pkcs11_uri_parse(const char *s, struct pkcs11_uri *u, char *err, size_t errlen);

/* ---- file system (fs.c) ------------------------------------------------- */
int fs_mkdirs(const char *path, mode_t mode);
int fs_fsync_dir(const char *path);
/* Writes data to path durably: temp file with O_EXCL, fsync, rename, fsync dir. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* Reads a whole (small) file; *out is malloc'ed and NUL-terminated. */
int fs_read_file(const char *path, char **out, size_t *len, size_t max);
int fs_write_all(int fd, const void *buf, size_t len);
/* Publishes a finished file: renames tmp to dst, never over an existing dst
 * (the same content published before: tmp is removed; link + unlink where
 * the file system has no RENAME_NOREPLACE).  The caller fsyncs dst's
 * directory.  0 ok, -1 error (errno). */
int fs_publish(const char *tmp, const char *dst);
/* Is path a directory?  stat(2), with a positive answer remembered for
 * FS_DIR_TTL_SECONDS (mailbox directories are looked at for every delivery;
 * one removed meanwhile makes the delivery fail and retry).  0 and *dev
 * (may be NULL) set, or -1 with errno (ENOTDIR: not a directory). */
#define FS_DIR_TTL_SECONDS 2
int fs_dir_stat(const char *path, dev_t *dev);
/* Do paths a and b (both existing) lie on the same file system?  false when
 * either cannot be stat'ed. */
bool fs_same_fs(const char *a, const char *b);

/* ---- copies for backups (fs_copy.c) --------------------------------------- */
struct fs_copy_stats {
    uint64_t files, bytes, skipped;   /* skipped: links and special files */
};
/* from (a regular file, not a link) into to, a new file (an entry already
 * there is an error: O_EXCL) with mode, fsync'ed; adds to *bytes. */
int fs_copy_file(const char *from, const char *to, mode_t mode, uint64_t *bytes, char *err,
                 size_t errlen);
/* The same from in, a regular file already open (from names it). */
int fs_copy_file_fd(int in, const char *from, const char *to, mode_t mode, uint64_t *bytes,
                    char *err, size_t errlen);
/* The tree from into to (created 0700 if absent): directories 0700, files
 * 0600 (new: O_EXCL), each fsync'ed; names in skip (NULL-terminated, top
 * level only) left out; a file that disappears meanwhile is not an error.
 * Below from, nothing is followed: links and special files are skipped
 * (counted), also when swapped in during the walk. */
int fs_copy_tree(const char *from, const char *to, const char *const *skip,
                 struct fs_copy_stats *st, char *err, size_t errlen);
/* The same from a directory already open (from names it in messages). */
int fs_copy_tree_fd(int from_dfd, const char *from, const char *to,
                    struct fs_copy_stats *st, char *err, size_t errlen);
/* Gives (uid, gid) every entry below dir that from_uid owns (dir itself
 * excepted), through directory descriptors: fstatat and fchownat with
 * AT_SYMLINK_NOFOLLOW relative to the directory's descriptor, directories
 * entered with openat(O_NOFOLLOW), other file systems not entered, at most
 * 32 levels.  A directory swapped for a link during the walk (by a user who
 * owns part of the tree) is never followed.  The number of entries that
 * could not be changed (0: all). */
int fs_give_tree(const char *dir, uid_t from_uid, uid_t uid, gid_t gid);
/* The directory base/rel, opened (O_DIRECTORY) without following any
 * symbolic link below base (base itself, the configuration's, is taken as it
 * is); missing directories are made 0700 when create.  rel may be "".  An fd,
 * or -1 with err. */
int fs_open_dir_beneath(const char *base, const char *rel, bool create, char *err,
                        size_t errlen);
/* The regular file base/rel opened for reading the same way (never a link,
 * a FIFO or a device).  An fd, or -1 with err. */
int fs_open_file_beneath(const char *base, const char *rel, char *err, size_t errlen);
/* rm -r path through descriptors (a link is removed, never followed, also
 * when swapped in during the walk); 0 also when it does not exist. */
int fs_remove_tree(const char *path);

/* ---- shared syncfs (fs_sync.c; process-wide state, thread-safe) ---------- */
/* syncfs(2) of fd's file system, shared with the other threads that want one
 * at the same time: returns once a syncfs that started after the call has
 * finished; 0 ok, -1 with errno if that syncfs (or a later one) failed. */
int fs_syncfs_shared(int fd);
/* fs_syncfs_shared on the file system of the directory dir. */
int fs_sync_dir_fs(const char *dir);
/* Calls of fs_syncfs_shared and syncfs(2) calls made by it so far. */
void fs_syncfs_stats(uint64_t *calls, uint64_t *syncs);

/* clock.c: is the kernel clock synchronised (RFC 6109 §4.1)?  why gets a
 * sentence for the log. */
enum clock_state { CLOCK_SYNCED, CLOCK_UNSYNCED, CLOCK_UNKNOWN };
struct timex;
enum clock_state clock_check(char *why, size_t whylen);
/* The decision on adjtimex's result rc and tx (for tests). */
enum clock_state clock_judge(int rc, const struct timex *tx, char *why, size_t whylen);

#endif
