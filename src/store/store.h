/*
 * store.h - where mail and users live: Maildir delivery (maildir.c) and the
 * users file in Dovecot's passwd-file format (users.c), or Dovecot's own
 * authentication server (dovecot_auth.c).
 *
 * Purpose: the transport (src/provider/transport.c) delivers into Maildirs;
 * pecd's hooks and the admission look users and senders up and check
 * passwords; pecctl user edits the file.
 * Threads: maildir_*, dovecot_* and a loaded struct users (read-only): any
 * thread; users_db: every call thread-safe, but users_db_verify and
 * users_db_lookup may block (Dovecot, a slow hash) and belong on a worker
 * thread, the event loop uses users_db_exists_nb; sender_map: one thread (the
 * event loop); auth_worker: new, submit and free on the event loop, done()
 * called back on it.  users_file_* hold FILE.lock (pecctl).
 * Ownership: every *_open/_load/_new has its *_free; strings passed in are
 * borrowed for the call (auth_worker_submit copies user and password);
 * canonical names and paths are copied into caller buffers; users_info's
 * scheme is a static string.
 * Errors: -1 (or NULL) with the reason in err, "FILE:LINE: reason" for a
 * file; the checks use 0 ok / -1 wrong / -2 temporary (DOVECOT_*), lookups
 * 1 / 0 / -1 cannot tell now / -2 nobody can tell.
 */
#ifndef PEC_STORE_H
#define PEC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
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
/* The whole address in lower case: the key users are stored and looked up
 * by, and the form of our users' addresses in mailbox paths and tracking. */
void users_normalise(const char *addr, char *out, size_t outlen);
/* A new yescrypt hash of password (with a random salt). */
int users_hash_password(const char *password, char *out, size_t outlen);
/* Edits the file atomically (for pecctl). */
int users_file_add(const char *path, const char *addr, const char *hash, char *err,
                   size_t errlen);
int users_file_del(const char *path, const char *addr, char *err, size_t errlen);
/* A new password hash for an existing user. */
int users_file_passwd(const char *path, const char *addr, const char *hash, char *err,
                      size_t errlen);
/* Suspends (Dovecot's "nologin" extra field: no login, mail still delivered)
 * or resumes an account.  Every edit holds FILE.lock and replaces the file
 * atomically. */
int users_file_suspend(const char *path, const char *addr, bool suspend, char *err,
                       size_t errlen);
/* What the file says of a user (pecctl user show); -1 when unknown. */
struct users_info {
    bool suspended;
    bool has_quota;
    uint64_t quota;        /* octets, when has_quota */
    const char *scheme;    /* "yescrypt", "SHA512-CRYPT", ... */
};
int users_info(const struct users *u, const char *addr, struct users_info *out);
/* Calls fn for each user in file order. */
void users_each(const struct users *u, void (*fn)(const char *addr, void *arg), void *arg);

/* A users file that reloads itself when it changes (looked at at most once a
 * second, and again before an address is found unknown); keeps the previous
 * copy when the new one is broken.  Every call is thread-safe. */
struct users_db;
struct users_db *users_db_open(const char *path, char *err, size_t errlen);
size_t users_db_count(struct users_db *db);
/* A user's own quota, from userdb_quota_rule=*:storage=SIZE in the users
 * file's extra fields (Dovecot's syntax): true and *octets (0 = none) when
 * the user has one. */
bool users_db_quota(struct users_db *db, const char *addr, uint64_t *octets);
/* Octets in a Maildir's new/ and cur/ (the S= of each file name, else its
 * size); -1 when the directory cannot be read. */
int64_t maildir_usage(const char *dir);
bool users_db_exists(struct users_db *db, const char *addr);
/* The same for the event loop: never reads the file; when it changed, a
 * reload starts in a thread and *stale says the answer may be outdated. */
bool users_db_exists_nb(struct users_db *db, const char *addr, bool *stale);
void users_db_reload(struct users_db *db);
void users_db_free(struct users_db *db);
/* [users] users = dovecot:AUTH_CLIENT: passwords are checked by Dovecot's
 * auth server, existence by its userdb socket when userdb is set. */
void users_db_use_dovecot(struct users_db *db, const char *auth_client, const char *userdb,
                          unsigned timeout_ms);
bool users_db_is_dovecot(const struct users_db *db);
/* 0 ok, -1 wrong credentials, -2 temporary failure.  May block (Dovecot, or
 * a slow crypt hash): call it from a worker thread, not the event loop. */
/* client_ip (or NULL) lets Dovecot keep its failure penalty per client. */
int users_db_verify(struct users_db *db, const char *user, const char *pass,
                    const char *client_ip, char *canonical, size_t canonlen);
/* Whether a mailbox exists, as users_db_lookup answers. */
enum users_found {
    USERS_NO = 0,             /* it does not */
    USERS_YES = 1,            /* it does */
    USERS_UNAVAILABLE = -1,   /* cannot tell now (Dovecot unreachable): try later */
    USERS_AT_DELIVERY = -2,   /* no source can tell (users = dovecot without userdb):
                               * the final delivery (e.g. Dovecot LMTP) decides */
};
/* May block (Dovecot): call it from a worker thread. */
enum users_found users_db_lookup(struct users_db *db, const char *addr);

/* ---- who may send as which address (sender_map.c; [users] senders) ---------- */
struct sender_map;
/* NULL with "FILE:LINE: reason" in err. */
struct sender_map *sender_map_open(const char *path, char *err, size_t errlen);
/* Whether login may send as sender besides its own address (the file is read
 * again when it changed). */
bool sender_map_allows(struct sender_map *m, const char *sender, const char *login);
void sender_map_free(struct sender_map *m);

/* ---- Dovecot auth client (dovecot_auth.c) ------------------------------------ */
enum { DOVECOT_OK = 0, DOVECOT_FAIL = -1, DOVECOT_TEMP = -2 };
#define DOVECOT_LINE_MAX 8192        /* one reply line */
#define DOVECOT_LINES_MAX 256        /* lines in one conversation */
#define DOVECOT_REPLY_MAX (256u * 1024)
enum dovecot_mode { DOVECOT_MODE_AUTH, DOVECOT_MODE_USERDB };
enum dovecot_state { DOVECOT_ST_HANDSHAKE, DOVECOT_ST_REPLY, DOVECOT_ST_DONE, DOVECOT_ST_ERROR };
/* The reply parser: fed the server's octets, it says when the handshake is
 * complete (state REPLY: send the request now) and what the answer was. */
struct dovecot_parse {
    enum dovecot_mode mode;
    enum dovecot_state state;
    bool got_version, has_plain;
    unsigned lines;
    int result;                      /* DOVECOT_* once DONE */
    char user[256];                  /* OK's user= (the canonical name), or "" */
    char err[160];
    char buf[DOVECOT_LINE_MAX];
    size_t buflen;
};
void dovecot_parse_init(struct dovecot_parse *p, enum dovecot_mode mode);
/* One line without its LF.  0 more wanted, 1 done (p->result), -1 protocol error (p->err). */
int dovecot_parse_line(struct dovecot_parse *p, const char *line, size_t len);
/* Octets as they arrive; same results. */
int dovecot_parse_feed(struct dovecot_parse *p, const char *data, size_t len);
/* AUTH PLAIN through the auth-client socket: DOVECOT_OK, _FAIL (wrong
 * credentials) or _TEMP (err says why).  Blocking, bounded by timeout_ms. */
int dovecot_auth_plain(const char *socket_path, const char *user, const char *pass,
                       const char *client_ip, unsigned timeout_ms, char *canonical,
                       size_t canonlen, char *err, size_t errlen);
/* canonical (may be NULL) gets the user= Dovecot returned with OK, else "". */
int dovecot_auth_plain_fd(int fd, const char *user, const char *pass, const char *client_ip,
                          unsigned timeout_ms, char *canonical, size_t canonlen, char *err,
                          size_t errlen);
/* USER lookup through the auth-userdb socket: DOVECOT_OK found, _FAIL not
 * found, _TEMP error. */
int dovecot_userdb_lookup(const char *socket_path, const char *user, unsigned timeout_ms,
                          char *err, size_t errlen);
int dovecot_userdb_lookup_fd(int fd, const char *user, unsigned timeout_ms, char *err,
                             size_t errlen);

/* ---- authentication off the event loop (auth_worker.c) ----------------------- */
struct event_base;
struct auth_worker;
/* nthreads threads call users_db_verify(); results come back on base. */
struct auth_worker *auth_worker_new(struct event_base *base, struct users_db *db,
                                    unsigned nthreads);
void auth_worker_submit(struct auth_worker *w, const char *user, const char *pass,
                        const char *client_ip,
                        void (*done)(void *cbarg, int result, const char *canonical),
                        void *cbarg);
void auth_worker_free(struct auth_worker *w);

#endif
