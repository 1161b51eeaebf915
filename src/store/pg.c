/*
 * pg.c - PostgreSQL connections of the state backend (pg.h): a pool of
 * libpq connections made with the [state] parameters, statements with text
 * parameters, bytea as hex.
 *
 * Connections: PQconnectdbParams with the URI expanded (expand_dbname), the
 * password from [state] password_file when set (else the URI's or libpq's
 * ~/.pgpass), connect_timeout, TCP keepalives (a server that vanished
 * without closing the connection is noticed within half a minute), and an
 * application_name naming the node (pg_stat_activity shows who is who).
 * A statement that fails because the connection broke leaves it BAD: pg_put
 * closes it and the next pg_get connects again.
 *
 * Assumes: libpq is thread-safe (PQisthreadsafe); a connection is used by
 * one thread at a time (taken from the pool, given back).
 */
#include "pg.h"
#include "lib/lib.h"

#include <errno.h>
#include <glib.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_MAX 32   /* idle connections kept */

static struct {
    GMutex lock;
    char *uri, *password_file, *node, *app;
    char shown[512];
    unsigned connect_timeout;
    PGconn *idle[POOL_MAX];
    size_t nidle;
    atomic_bool unreachable;
} pool;

static __thread char tls_sqlstate[8];

/* "postgresql://USER@HOST:PORT/DB" from the URI's parts: no password. */
static void shown_uri(const char *uri, char *out, size_t outlen)
{
    char *perr = NULL;
    PQconninfoOption *o = PQconninfoParse(uri, &perr);
    PQfreemem(perr);
    const char *user = NULL, *host = NULL, *port = NULL, *db = NULL;
    for (PQconninfoOption *p = o; p != NULL && p->keyword != NULL; p++) {
        if (p->val == NULL)
            continue;
        if (strcmp(p->keyword, "user") == 0)
            user = p->val;
        else if (strcmp(p->keyword, "host") == 0)
            host = p->val;
        else if (strcmp(p->keyword, "port") == 0)
            port = p->val;
        else if (strcmp(p->keyword, "dbname") == 0)
            db = p->val;
    }
    snprintf(out, outlen, "postgresql://%s%s%s%s%s/%s", user ? user : "", user ? "@" : "",
             host ? host : "", port ? ":" : "", port ? port : "", db ? db : "");
    PQconninfoFree(o);
}

void pg_configure(const char *uri, const char *password_file, const char *node,
                  const char *app, unsigned connect_timeout)
{
    g_mutex_lock(&pool.lock);
    g_free(pool.uri);
    g_free(pool.password_file);
    g_free(pool.node);
    g_free(pool.app);
    pool.uri = g_strdup(uri);
    pool.password_file = g_strdup(password_file);
    pool.node = g_strdup(node ? node : "");
    pool.app = g_strdup(app ? app : "pecmail");
    pool.connect_timeout = connect_timeout ? connect_timeout : 5;
    shown_uri(uri, pool.shown, sizeof pool.shown);
    g_mutex_unlock(&pool.lock);
}

bool pg_configured(void) { return pool.uri != NULL; }
const char *pg_uri_shown(void) { return pool.shown; }
const char *pg_node(void) { return pool.node ? pool.node : ""; }
bool pg_reachable(void) { return !atomic_load(&pool.unreachable); }
const char *pg_last_sqlstate(void) { return tls_sqlstate; }

/* libpq's message on one line, without its trailing newline. */
static void one_line(const char *msg, char *out, size_t outlen)
{
    str_copy(out, msg ? msg : "", outlen);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    {
        char *t_ = str_trim(out);
        memmove(out, t_, strlen(t_) + 1);
    }
}

static PGconn *connect_new(char *err, size_t errlen)
{
    char timeout[16], password[1024] = "";
    g_mutex_lock(&pool.lock);
    char *uri = g_strdup(pool.uri), *pwfile = g_strdup(pool.password_file);
    /* before pg_configure every field is NULL: no name to build */
    char *app = pool.uri == NULL ? NULL
                                 : g_strdup_printf("%s%s%s", pool.app, pool.node[0] ? "/" : "",
                                                   pool.node);
    snprintf(timeout, sizeof timeout, "%u", pool.connect_timeout);
    char shown[512];
    str_copy(shown, pool.shown, sizeof shown);
    g_mutex_unlock(&pool.lock);
    PGconn *c = NULL;
    if (uri == NULL) {
        snprintf(err, errlen, "no [state] database configured");
        goto out;
    }
    if (pwfile != NULL) {
        char *text = NULL;
        size_t len = 0;
        if (fs_read_file(pwfile, &text, &len, sizeof password - 1) == -1) {
            snprintf(err, errlen, "[state] password_file %s: %s", pwfile,
                     errno == EFBIG ? "too long" : strerror(errno));
            goto out;
        }
        str_copy(password, text, sizeof password);
        explicit_bzero(text, len);
        free(text);
        password[strcspn(password, "\r\n")] = '\0';
    }
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "keepalives",
                          "keepalives_idle", "keepalives_interval", "keepalives_count",
                          pwfile ? "password" : NULL, NULL};
    const char *vals[] = {uri, timeout, app, "1", "10", "5", "3", password, NULL};
    c = PQconnectdbParams(keys, vals, 1);
    explicit_bzero(password, sizeof password);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        char why[600];
        one_line(c ? PQerrorMessage(c) : "out of memory", why, sizeof why);
        snprintf(err, errlen, "[state] database %s: cannot connect: %s", shown, why);
        PQfinish(c);
        c = NULL;
        atomic_store(&pool.unreachable, true);
        goto out;
    }
    /* UTC, dates as YYYY-MM-DD (the evidence chain hashes them as text) and
     * bytea as hex, whatever the server's defaults; a lock held by a stuck
     * session fails a statement instead of blocking it for ever */
    PGresult *r = PQexec(c, "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; "
                            "SET bytea_output = 'hex'; SET lock_timeout = '30s'; "
                            "SET client_min_messages = warning");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char why[300];
        one_line(PQresultErrorMessage(r), why, sizeof why);
        snprintf(err, errlen, "[state] database %s: %s", shown, why);
        PQclear(r);
        PQfinish(c);
        c = NULL;
        goto out;
    }
    PQclear(r);
    atomic_store(&pool.unreachable, false);
out:
    g_free(uri);
    g_free(pwfile);
    g_free(app);
    return c;
}

PGconn *pg_get(char *err, size_t errlen)
{
    g_mutex_lock(&pool.lock);
    PGconn *c = pool.nidle > 0 ? pool.idle[--pool.nidle] : NULL;
    g_mutex_unlock(&pool.lock);
    if (c != NULL && PQstatus(c) == CONNECTION_OK)
        return c;
    PQfinish(c);
    return connect_new(err, errlen);
}

void pg_put(PGconn *c)
{
    if (c == NULL)
        return;
    if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE) {
        PQfinish(c);
        return;
    }
    g_mutex_lock(&pool.lock);
    if (pool.nidle < POOL_MAX) {
        pool.idle[pool.nidle++] = c;
        c = NULL;
    }
    g_mutex_unlock(&pool.lock);
    PQfinish(c);
}

static PGresult *run(PGconn *c, char *err, size_t errlen, const char *what, const char *sql,
                     int n, const char *const *params, ExecStatusType want)
{
    tls_sqlstate[0] = '\0';
    PGresult *r = n > 0 ? PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0)
                        : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == want || (want == PGRES_COMMAND_OK && st == PGRES_TUPLES_OK))
        return r;
    char why[600];
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    str_copy(tls_sqlstate, state ? state : "", sizeof tls_sqlstate);
    one_line(r ? PQresultErrorMessage(r) : PQerrorMessage(c), why, sizeof why);
    if (why[0] == '\0')
        one_line(PQerrorMessage(c), why, sizeof why);
    if (PQstatus(c) != CONNECTION_OK) {
        atomic_store(&pool.unreachable, true);
        snprintf(err, errlen, "%s: connection to the state database lost: %s", what, why);
    } else {
        snprintf(err, errlen, "%s: %s", what, why);
    }
    PQclear(r);
    return NULL;
}

PGresult *pg_query(PGconn *c, char *err, size_t errlen, const char *what, const char *sql,
                   int n, const char *const *params)
{
    return run(c, err, errlen, what, sql, n, params, PGRES_TUPLES_OK);
}

long pg_command(PGconn *c, char *err, size_t errlen, const char *what, const char *sql, int n,
                const char *const *params)
{
    PGresult *r = run(c, err, errlen, what, sql, n, params, PGRES_COMMAND_OK);
    if (r == NULL)
        return -1;
    const char *t = PQcmdTuples(r);
    long v = t && *t ? strtol(t, NULL, 10) : PQntuples(r);
    PQclear(r);
    return v;
}

int pg_exec(PGconn *c, char *err, size_t errlen, const char *sql)
{
    return pg_command(c, err, errlen, sql, sql, 0, NULL) < 0 ? -1 : 0;
}

void pg_hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    out[0] = '\\';
    out[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        out[2 + 2 * i] = digits[b[i] >> 4];
        out[3 + 2 * i] = digits[b[i] & 15];
    }
    out[2 + 2 * n] = '\0';
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int pg_unhex(const char *text, unsigned char *b, size_t n)
{
    if (text == NULL || text[0] != '\\' || text[1] != 'x' || strlen(text + 2) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(text[2 + 2 * i]), lo = hexval(text[3 + 2 * i]);
        if (hi < 0 || lo < 0)
            return -1;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

unsigned char *pg_bytea(const PGresult *r, int row, int col, size_t *len)
{
    *len = 0;
    if (PQgetisnull(r, row, col))
        return NULL;
    const char *t = PQgetvalue(r, row, col);
    size_t hex = strlen(t);
    if (hex < 2 || t[0] != '\\' || t[1] != 'x' || hex % 2 != 0)
        return NULL;
    size_t n = (hex - 2) / 2;
    unsigned char *b = g_malloc(n ? n : 1);
    if (pg_unhex(t, b, n) == -1) {
        g_free(b);
        return NULL;
    }
    *len = n;
    return b;
}

long long pg_ll(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

const char *pg_text(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

void pg_array_init(struct pg_array *a)
{
    a->s = g_string_new("{");
    a->n = 0;
}

void pg_array_add(struct pg_array *a, const char *v)
{
    if (a->n++ > 0)
        g_string_append_c(a->s, ',');
    if (v == NULL) {
        g_string_append(a->s, "NULL");
        return;
    }
    g_string_append_c(a->s, '"');
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\')
            g_string_append_c(a->s, '\\');
        g_string_append_c(a->s, *p);
    }
    g_string_append_c(a->s, '"');
}

void pg_array_addf(struct pg_array *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *v = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    pg_array_add(a, v);
    g_free(v);
}

const char *pg_array_text(struct pg_array *a)
{
    if (a->s->len == 0 || a->s->str[a->s->len - 1] != '}')
        g_string_append_c(a->s, '}');
    return a->s->str;
}

void pg_array_free(struct pg_array *a)
{
    if (a->s != NULL)
        g_string_free(a->s, TRUE);
    a->s = NULL;
}
