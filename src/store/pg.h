/*
 * pg.h - the PostgreSQL connections of the state backend (pg.c), shared by
 * tracking_pg.c, evidence_pg*.c, quarantine.c and state*.c.  Not for other
 * modules: theirs is state.h (and tracking.h, evidence.h, quarantine.h).
 *
 * One pool per process: connections are made on demand with the [state]
 * parameters registered by state_setup(), taken for one unit of work and
 * given back.  A connection whose server went away is dropped when given
 * back, and the next pg_get() connects again: pecd reconnects by itself
 * after a restart of PostgreSQL, without a restart of its own.
 *
 * Values go as text parameters (never spliced into SQL); bytea as "\x" hex.
 *
 * Purpose: the shared-state modules' only way to PostgreSQL.
 * Threads: any thread; the pool is behind a mutex, a connection is used by
 * one thread at a time (pg_get .. pg_put); pg_last_sqlstate is per thread.
 * Ownership: pg_configure copies its arguments; a PGconn from pg_get is the
 * caller's until pg_put; a PGresult from pg_query is the caller's
 * (PQclear); pg_uri_shown and pg_node return the module's static strings.
 * Errors: NULL or -1 with "what: the server's message" in err; a lost
 * connection marks the pool unreachable (pg_reachable) until a success.
 */
#ifndef PEC_STORE_PG_H
#define PEC_STORE_PG_H

#include <glib.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* The parameters of every later connection (copied). */
void pg_configure(const char *uri, const char *password_file, const char *node,
                  const char *app, unsigned connect_timeout);
bool pg_configured(void);
/* The URI without its password, for messages. */
const char *pg_uri_shown(void);
/* This process's node name ([state] node), "" when unset. */
const char *pg_node(void);

/* A connection from the pool (or a new one): NULL with the reason in err
 * ("[state] database URI: cannot connect: ..."). */
PGconn *pg_get(char *err, size_t errlen);
/* Gives c back: kept when healthy and outside a transaction, else closed. */
void pg_put(PGconn *c);
/* Whether the last connection attempt or statement found the server
 * reachable (false from a failure until the next success). */
bool pg_reachable(void);

/* Runs sql with n text parameters (NULL = SQL NULL).  Returns the result
 * (PQclear it) when it succeeded, else NULL with "what: server's message"
 * in err.  A lost connection marks the pool unreachable. */
PGresult *pg_query(PGconn *c, char *err, size_t errlen, const char *what, const char *sql,
                   int n, const char *const *params);
/* The same for a command: the number of rows it touched, or -1. */
long pg_command(PGconn *c, char *err, size_t errlen, const char *what, const char *sql, int n,
                const char *const *params);
/* BEGIN, COMMIT, ROLLBACK...: 0 or -1. */
int pg_exec(PGconn *c, char *err, size_t errlen, const char *sql);
/* The SQLSTATE of the last failed statement on this thread ("" if none). */
const char *pg_last_sqlstate(void);

/* state_nodes.c: in c's transaction, whether this thread's fence (the lease
 * on the spool it works on, state_fence_set) still holds; the row stays
 * locked FOR SHARE until the transaction ends, so the lease cannot move
 * before the commit.  0 holds (or no fence), -1 lost or error (err). */
int state_fence_check(PGconn *c, char *err, size_t errlen);

/* bytea: "\x" and lower-case hex of b (out holds 2 * n + 3); and back (0, or
 * -1 when text is not n bytes of hex). */
void pg_hex(const unsigned char *b, size_t n, char *out);
int pg_unhex(const char *text, unsigned char *b, size_t n);
/* A bytea column of any length, decoded (g_free it); NULL when null. */
unsigned char *pg_bytea(const PGresult *r, int row, int col, size_t *len);
/* A PostgreSQL array literal built element by element (NULL = SQL NULL),
 * for one statement over many rows (unnest($1::text[], ...)). */
struct pg_array {
    GString *s;
    size_t n;
};
void pg_array_init(struct pg_array *a);
void pg_array_add(struct pg_array *a, const char *v);
void pg_array_addf(struct pg_array *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The literal ("{...}"), valid until pg_array_free. */
const char *pg_array_text(struct pg_array *a);
void pg_array_free(struct pg_array *a);
/* A column as a number (0 when null). */
long long pg_ll(const PGresult *r, int row, int col);
/* A text column, NULL when null. */
const char *pg_text(const PGresult *r, int row, int col);

#endif
