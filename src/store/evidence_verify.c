/*
 * evidence_verify.c - reading the evidence log: evidence_verify() (the hash
 * chain record by record, each day against its signed seal, the purge
 * anchor) and evidence_trace() (the life of one PEC message).  Both open
 * the file read-only, in one read transaction, so they run while pecd
 * appends.
 *
 * An exported day of the shared log (a chain per node) is checked by
 * evidence_export_chains.c.
 *
 * Interface: evidence.h.  What is checked and why: docs/evidence.md.
 */
#include "store/evidence_int.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>

static const char SQL_COLUMNS[] =
    "seq, day, logged_at, event_time, type, pec_id, orig_msgid, message_id, sender,"
    " recipients, subject, outcome, queue_id, dedupe_key, prev_hash, hash";

/* ---- verification -------------------------------------------------------------------- */

sqlite3 *ev_open_ro(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    /* read-only: SQLite still maps the WAL index (-shm) of a live log, so
     * pecctl can read while pecd writes */
    struct stat sb;
    if (access(path, R_OK) != 0 || stat(path, &sb) != 0) {
        ev_fail(err, errlen, "evidence log %s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {   /* a FIFO would hold the open for ever */
        ev_fail(err, errlen, "evidence log %s: not a regular file", path);
        return NULL;
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        ev_fail(err, errlen, "evidence log %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return NULL;
    }
    /* `log verify FILE` reads files from elsewhere: data only (SQLite's advice
     * for a database from an untrusted source), and the log's tables must be
     * tables - a view in their place (a recursive one never ends) or a
     * virtual table is not an evidence log */
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st = NULL;
    bool ok = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE type = 'view' "
                                     "OR (type = 'table' AND sql NOT LIKE 'CREATE TABLE %')",
                                 -1, &st, NULL) == SQLITE_OK &&
              sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) == 0;
    sqlite3_finalize(st);
    st = NULL;
    ok = ok &&
         sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key='format'", -1, &st, NULL) ==
             SQLITE_OK &&
         sqlite3_step(st) == SQLITE_ROW && col_text(st, 0) != NULL &&
         strcmp(col_text(st, 0), EVIDENCE_FORMAT) == 0;
    sqlite3_finalize(st);
    if (!ok) {
        ev_fail(err, errlen, "evidence log %s: not an evidence log of format %s", path,
                EVIDENCE_FORMAT);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

struct seal_row {
    char day[16];
    long long first, last, count;
    unsigned char hash[32];
    bool hash_ok;
    char *signed_text;
    unsigned char *sig;
    size_t siglen;
};

struct day_seen {
    char day[16];
    long long first, last, count;
    unsigned char hash[32];
};

struct verify {
    sqlite3 *db;
    FILE *out;
    STACK_OF(X509) *allowed;     /* NULL: any signer */
    struct seal_row *seals;
    size_t nseals;
    struct day_seen *days;
    size_t ndays, capdays;
    char signer[256];            /* last signer seen */
};

static void vprint(struct verify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vprint(struct verify *v, const char *fmt, ...)
{
    if (v->out == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(v->out, fmt, ap);
    va_end(ap);
}

STACK_OF(X509) *ev_load_certs(const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        ev_fail(err, errlen, "cannot read certificate %s: %s", file, strerror(errno));
        return NULL;
    }
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    /* The first certificate is the signer's; later ones count only when they
     * are end-entity certificates too (a renewed key's old certificate), not
     * the CA of the chain that follows the signer in [pec] signing_cert. */
    while (sk != NULL && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        if ((sk_X509_num(sk) > 0 && X509_check_ca(x) != 0) || !sk_X509_push(sk, x))
            X509_free(x);
    fclose(f);
    ERR_clear_error(); /* the read that ended the loop */
    if (sk == NULL || sk_X509_num(sk) == 0) {
        sk_X509_pop_free(sk, X509_free);
        ev_fail(err, errlen, "no certificate in %s", file);
        return NULL;
    }
    return sk;
}

/* Checks a seal signature over text.  0 ok, -1 with why. */
static int check_signature(struct verify *v, const struct seal_row *s, const char *text,
                           char *why, size_t whylen)
{
    return ev_cms_check(v->allowed, s->sig, s->siglen, text, v->signer, sizeof v->signer, why,
                        whylen);
}

int ev_cms_check(STACK_OF(X509) *allowed, const unsigned char *sig, size_t siglen,
                 const char *text, char *signer_name, size_t signerlen, char *why, size_t whylen)
{
    const unsigned char *p = sig;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)siglen);
    if (cms == NULL) {
        ERR_clear_error();
        return ev_fail(why, whylen, "the signature is not a CMS structure");
    }
    int rc = -1;
    BIO *content = BIO_new_mem_buf(text, (int)strlen(text));
    /* The signer's identity is checked below against the provider's
     * certificate, not by path validation: old seals must stay verifiable
     * after the certificate expires. */
    unsigned flags = CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY;
    int ok = content != NULL && CMS_verify(cms, NULL, NULL, content, NULL, flags) == 1;
    if (!ok && content != NULL && allowed != NULL &&
        ERR_GET_REASON(ERR_peek_last_error()) == CMS_R_SIGNER_CERTIFICATE_NOT_FOUND) {
        /* a seal made without embedding the certificate */
        ERR_clear_error();
        ok = BIO_reset(content) == 1 &&
             CMS_verify(cms, allowed, NULL, content, NULL, flags) == 1;
    }
    if (!ok) {
        unsigned long e = ERR_peek_last_error();
        ev_fail(why, whylen, "bad signature (%s)", e ? ERR_reason_error_string(e) : "CMS");
        ERR_clear_error();
        goto out;
    }
    STACK_OF(X509) *signers = CMS_get0_signers(cms);
    X509 *signer = signers != NULL && sk_X509_num(signers) > 0 ? sk_X509_value(signers, 0) : NULL;
    if (signer != NULL)
        X509_NAME_oneline(X509_get_subject_name(signer), signer_name, (int)signerlen);
    bool ok_signer = allowed == NULL;
    for (int i = 0; signer != NULL && !ok_signer && i < sk_X509_num(allowed); i++)
        ok_signer = X509_cmp(signer, sk_X509_value(allowed, i)) == 0;
    sk_X509_free(signers);
    if (!ok_signer) {
        ev_fail(why, whylen, "signed by %s, which is not the provider's signing certificate",
                signer_name);
        goto out;
    }
    rc = 0;
out:
    BIO_free(content);
    CMS_ContentInfo_free(cms);
    return rc;
}

static int load_seals(struct verify *v, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(v->db,
                           "SELECT day, first_seq, last_seq, count, last_hash, signed, signature"
                           " FROM seals ORDER BY day",
                           -1, &st, NULL) != SQLITE_OK)
        return ev_sql_fail(v->db, err, errlen, "read seals");
    size_t cap = 0;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (v->nseals == cap) {
            cap = cap ? cap * 2 : 64;
            struct seal_row *n = xrealloc(v->seals, cap * sizeof *n);
            if (n == NULL)
                break;
            v->seals = n;
        }
        struct seal_row *s = &v->seals[v->nseals++];
        memset(s, 0, sizeof *s);
        str_copy(s->day, col_text(st, 0) ? col_text(st, 0) : "", sizeof s->day);
        s->first = sqlite3_column_int64(st, 1);
        s->last = sqlite3_column_int64(st, 2);
        s->count = sqlite3_column_int64(st, 3);
        s->hash_ok = sqlite3_column_bytes(st, 4) == 32;
        if (s->hash_ok)
            memcpy(s->hash, sqlite3_column_blob(st, 4), 32);
        s->signed_text = xstrdup(col_text(st, 5) ? col_text(st, 5) : "");
        s->siglen = (size_t)sqlite3_column_bytes(st, 6);
        s->sig = malloc(s->siglen + 1);
        if (s->sig != NULL && s->siglen > 0)
            memcpy(s->sig, sqlite3_column_blob(st, 6), s->siglen);
        if (s->signed_text == NULL || s->sig == NULL) {
            r = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(st);
    if (r != SQLITE_DONE)
        return ev_fail(err, errlen, "evidence log: cannot read the seals");
    return 0;
}

/* Checks one seal: its text against its columns, its signature. */
static int check_seal(struct verify *v, const struct seal_row *s, char *why, size_t whylen)
{
    char text[512];
    if (!s->hash_ok || ev_seal_text(text, sizeof text, s->day, s->count, s->first, s->last,
                                    s->hash) < 0)
        return ev_fail(why, whylen, "malformed seal row");
    if (strcmp(text, s->signed_text) != 0)
        return ev_fail(why, whylen, "the seal's columns differ from the text it signs");
    return check_signature(v, s, text, why, whylen);
}

static struct day_seen *day_add(struct verify *v, const char *day, long long seq)
{
    if (v->ndays == v->capdays) {
        size_t cap = v->capdays ? v->capdays * 2 : 64;
        struct day_seen *n = xrealloc(v->days, cap * sizeof *n);
        if (n == NULL)
            return NULL;
        v->days = n;
        v->capdays = cap;
    }
    struct day_seen *d = &v->days[v->ndays++];
    memset(d, 0, sizeof *d);
    str_copy(d->day, day, sizeof d->day);
    d->first = seq;
    return d;
}

static void describe(sqlite3_stmt *st, char *out, size_t outlen)
{
    const char *pec = col_text(st, 5), *orig = col_text(st, 6), *mid = col_text(st, 7);
    snprintf(out, outlen, "day %s, type %s%s%s%s%s%s%s", col_text(st, 1) ? col_text(st, 1) : "?",
             col_text(st, 4) ? col_text(st, 4) : "?", pec ? ", pec_id <" : "", pec ? pec : "",
             pec ? ">" : "", !pec && (orig || mid) ? ", message-id <" : "",
             !pec && (orig || mid) ? (orig ? orig : mid) : "", !pec && (orig || mid) ? ">" : "");
}

/* Walks the chain.  0 intact, -1 with the first broken record in err. */
static int verify_chain(struct verify *v, const unsigned char start_hash[32], long long start_seq,
                        const char *start_day, long long *nrecords, char *err, size_t errlen)
{
    char q[512];
    snprintf(q, sizeof q, "SELECT %s FROM events ORDER BY seq", SQL_COLUMNS);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(v->db, q, -1, &st, NULL) != SQLITE_OK)
        return ev_sql_fail(v->db, err, errlen, "read records");
    unsigned char prev[32];
    memcpy(prev, start_hash, 32);
    long long expect = start_seq;
    char prev_day[16];
    str_copy(prev_day, start_day, sizeof prev_day);
    struct day_seen *cur = NULL;
    int r, rc = 0;
    char what[1024];
    while (rc == 0 && (r = sqlite3_step(st)) == SQLITE_ROW) {
        long long seq = sqlite3_column_int64(st, 0);
        const char *day = col_text(st, 1) ? col_text(st, 1) : "";
        describe(st, what, sizeof what);
        if (seq != expect) {
            if (expect == start_seq && start_seq > 1)
                rc = ev_fail(err, errlen,
                             "records %lld..%lld are missing: the log continues at record %lld "
                             "(%s) but the purge anchor ends at record %lld",
                             expect, seq - 1, seq, what, expect - 1);
            else if (seq - 1 > expect)
                rc = ev_fail(err, errlen,
                             "records %lld..%lld are missing (deleted): record %lld (%s) follows "
                             "record %lld",
                             expect, seq - 1, seq, what, expect - 1);
            else
                rc = ev_fail(err, errlen,
                             "record %lld is missing (deleted): record %lld (%s) follows record "
                             "%lld",
                             expect, seq, what, expect - 1);
            break;
        }
        if (strcmp(day, prev_day) < 0) {
            rc = ev_fail(err, errlen, "record %lld (%s): its day goes back before %s", seq, what,
                         prev_day);
            break;
        }
        if (sqlite3_column_bytes(st, 14) != 32 || memcmp(sqlite3_column_blob(st, 14), prev, 32)) {
            rc = ev_fail(err, errlen,
                         "record %lld (%s): chain broken: its previous-hash is not the hash of "
                         "record %lld",
                         seq, what, seq - 1);
            break;
        }
        const char *f[NFIELDS];
        for (int i = 0; i < NFIELDS; i++)
            f[i] = col_text(st, 4 + i);
        unsigned char h[32];
        evidence_record_hash(prev, seq, day, sqlite3_column_int64(st, 2),
                             sqlite3_column_int64(st, 3), f, h);
        if (sqlite3_column_bytes(st, 15) != 32 || memcmp(sqlite3_column_blob(st, 15), h, 32)) {
            rc = ev_fail(err, errlen,
                         "record %lld (%s) was altered: its content does not match its hash", seq,
                         what);
            break;
        }
        if (cur == NULL || strcmp(cur->day, day) != 0) {
            cur = day_add(v, day, seq);
            if (cur == NULL) {
                rc = ev_fail(err, errlen, "out of memory");
                break;
            }
        }
        cur->last = seq;
        cur->count++;
        memcpy(cur->hash, h, 32);
        memcpy(prev, h, 32);
        str_copy(prev_day, day, sizeof prev_day);
        expect = seq + 1;
        (*nrecords)++;
    }
    if (rc == 0 && r != SQLITE_DONE)
        rc = ev_sql_fail(v->db, err, errlen, "read records");
    sqlite3_finalize(st);
    return rc;
}

static const struct seal_row *find_seal(const struct verify *v, const char *day)
{
    for (size_t i = 0; i < v->nseals; i++)
        if (strcmp(v->seals[i].day, day) == 0)
            return &v->seals[i];
    return NULL;
}

int evidence_verify_ex(const char *path, const struct evidence_verify_opts *o, FILE *out,
                       char *err, size_t errlen)
{
    if (config_is_postgresql(path))
        return evpg_verify(o, out, err, errlen);
    struct verify v = {.out = out};
    sqlite3_stmt *st0 = NULL;
    char why[512];
    int rc = -2;
    time_t now = o != NULL && o->now != 0 ? o->now : time(NULL);
    char today[16];
    ev_utc_day(now, today);
    if (o != NULL && o->cert_pem_file != NULL &&
        (v.allowed = ev_load_certs(o->cert_pem_file, err, errlen)) == NULL)
        goto out;   /* said as "cannot verify" */
    v.db = ev_open_ro(path, err, errlen);
    if (v.db == NULL)
        goto out;
    /* one read transaction: a consistent snapshot while pecd appends */
    if (ev_exec(v.db, "BEGIN", err, errlen) != 0)
        goto out;
    if (ev_export_is_chains(v.db)) {
        /* a day of the shared log of several nodes: a chain per node */
        rc = ev_verify_chains_export(v.db, path, v.allowed, out, err, errlen);
        goto out;
    }
    if (load_seals(&v, err, errlen) != 0)
        goto out;
    rc = -1;

    /* an exported day (evidence_export.c) starts at its first seal, not at
     * record 1: the previous day's seal, which signs the anchor */
    char export_day[16] = "";
    if (sqlite3_prepare_v2(v.db, "SELECT value FROM meta WHERE key = 'export'", -1, &st0, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st0) == SQLITE_ROW && col_text(st0, 0) != NULL)
        str_copy(export_day, col_text(st0, 0), sizeof export_day);
    sqlite3_finalize(st0);

    /* 1. seals: contiguous from record 1 (an export: from its first seal),
     * each signed by the provider */
    long long next = export_day[0] && v.nseals > 0 ? v.seals[0].first : 1;
    for (size_t i = 0; i < v.nseals; i++) {
        const struct seal_row *s = &v.seals[i];
        if (s->first != next) {
            ev_fail(err, errlen, "day %s: its seal starts at record %lld, expected %lld (%s)",
                    s->day, s->first, next,
                    s->first > next ? "the seal of an earlier day was removed"
                                    : "overlapping seals");
            goto report;
        }
        if (s->last < s->first || s->count != s->last - s->first + 1) {
            ev_fail(err, errlen, "day %s: malformed seal", s->day);
            goto report;
        }
        if (check_seal(&v, s, why, sizeof why) != 0) {
            ev_fail(err, errlen, "day %s: seal invalid: %s", s->day, why);
            goto report;
        }
        next = s->last + 1;
    }

    /* 2. the start: genesis, or the anchor left by a purge (a signed day end) */
    unsigned char start[32] = {0};
    long long start_seq = 1;
    char start_day[16] = "";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(v.db, "SELECT seq, hash, day FROM anchor WHERE id = 1", -1, &st,
                           NULL) != SQLITE_OK) {
        rc = ev_sql_fail(v.db, err, errlen, "read anchor") - 1;
        goto out;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        long long aseq = sqlite3_column_int64(st, 0);
        const char *aday = col_text(st, 2) ? col_text(st, 2) : "";
        const struct seal_row *s = find_seal(&v, aday);
        if (s == NULL || s->last != aseq || sqlite3_column_bytes(st, 1) != 32 ||
            memcmp(sqlite3_column_blob(st, 1), s->hash, 32) != 0) {
            ev_fail(err, errlen,
                    "purge anchor (record %lld, day %s) does not match the signed seal of that day",
                    aseq, aday);
            sqlite3_finalize(st);
            goto report;
        }
        memcpy(start, s->hash, 32);
        start_seq = aseq + 1;
        str_copy(start_day, aday, sizeof start_day);
        if (o != NULL && o->keep_after > 0 && ev_day_start(aday) + 86400 > o->keep_after) {
            ev_fail(err, errlen,
                    "records up to day %s were purged, inside the retention period (records of "
                    "days ending after %lld must be kept)",
                    aday, (long long)o->keep_after);
            sqlite3_finalize(st);
            goto report;
        }
    }
    sqlite3_finalize(st);

    /* 3. the chain, record by record */
    long long nrecords = 0;
    if (verify_chain(&v, start, start_seq, start_day, &nrecords, err, errlen) != 0)
        goto report;

    /* 4. each day against its seal */
    size_t unsealed_days = 0;
    long long unsealed = 0;
    for (size_t i = 0; i < v.ndays; i++) {
        const struct day_seen *d = &v.days[i];
        const struct seal_row *s = find_seal(&v, d->day);
        if (s == NULL) {
            if (next > d->first) {
                ev_fail(err, errlen, "day %s: no seal, but later records are sealed", d->day);
                goto report;
            }
            unsealed_days++;
            unsealed += d->count;
            if (strcmp(d->day, today) < 0)
                vprint(&v, "warning: day %s (%lld records) is finished but not sealed yet\n",
                       d->day, d->count);
            continue;
        }
        if (s->first != d->first || s->count != d->count || s->last != d->last) {
            ev_fail(err, errlen,
                    "day %s: the seal covers records %lld..%lld (%lld), the log has %lld..%lld "
                    "(%lld): records %s",
                    d->day, s->first, s->last, s->count, d->first, d->last, d->count,
                    d->count < s->count ? "deleted" : "added or moved");
            goto report;
        }
        if (memcmp(s->hash, d->hash, 32) != 0) {
            ev_fail(err, errlen,
                    "day %s: records %lld..%lld were changed after sealing (the last hash "
                    "differs from the signed one)",
                    d->day, d->first, d->last);
            goto report;
        }
    }
    /* a sealed day after the anchor with no record left: deleted whole */
    for (size_t i = 0; i < v.nseals; i++) {
        const struct seal_row *s = &v.seals[i];
        if (s->last < start_seq)
            continue;
        bool present = false;
        for (size_t j = 0; j < v.ndays && !present; j++)
            present = strcmp(v.days[j].day, s->day) == 0;
        if (!present) {
            ev_fail(err, errlen, "day %s: sealed with %lld records (%lld..%lld), none present: "
                                 "deleted",
                    s->day, s->count, s->first, s->last);
            goto report;
        }
    }
    if (export_day[0] && (find_seal(&v, export_day) == NULL || v.ndays != 1 ||
                          strcmp(v.days[0].day, export_day) != 0)) {
        ev_fail(err, errlen, "an export of day %s must hold that day's records and seal, and "
                             "only those", export_day);
        goto report;
    }
    rc = 0;
    if (export_day[0])
        vprint(&v, "evidence export of day %s (%s): intact\n", export_day, path);
    else
        vprint(&v, "evidence log %s: intact\n", path);
    vprint(&v, "  %lld records in %zu days", nrecords, v.ndays);
    if (start_seq > 1 && export_day[0])
        vprint(&v, ", following record %lld, the last of day %s (its seal checked)",
               start_seq - 1, start_day);
    else if (start_seq > 1)
        vprint(&v, ", starting after record %lld (days up to %s purged)", start_seq - 1,
               start_day);
    vprint(&v, "\n  %zu day seals verified%s%s%s\n", v.nseals,
           v.nseals && v.signer[0] ? ", signer " : "", v.nseals ? v.signer : "",
           v.allowed ? "" : " (signer identity not checked: no certificate given)");
    if (unsealed > 0)
        vprint(&v, "  %lld records in %zu day(s) not sealed yet: protected by the hash chain "
                   "only until the next seal\n",
               unsealed, unsealed_days);
    goto out;
report:
    vprint(&v, "evidence log %s: TAMPERED\n  %s\n", path, err);
out:
    if (v.db != NULL) {
        sqlite3_exec(v.db, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(v.db);
    }
    if (rc == -2)
        vprint(&v, "evidence log: cannot verify: %s\n", err);
    for (size_t i = 0; i < v.nseals; i++) {
        free(v.seals[i].signed_text);
        free(v.seals[i].sig);
    }
    free(v.seals);
    free(v.days);
    sk_X509_pop_free(v.allowed, X509_free);
    return rc;
}

int evidence_verify(const char *path, const char *cert_pem_file, FILE *out, char *err,
                    size_t errlen)
{
    struct evidence_verify_opts o = {.cert_pem_file = cert_pem_file};
    return evidence_verify_ex(path, &o, out, err, errlen);
}

/* ---- trace ------------------------------------------------------------------------ */

static void print_event(FILE *out, sqlite3_stmt *st)
{
    time_t t = (time_t)sqlite3_column_int64(st, 3);
    struct tm tm;
    char when[64] = "?";
    if (localtime_r(&t, &tm) != NULL)
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %z", &tm);
    const char *type = col_text(st, 4), *mid = col_text(st, 7), *rcpt = col_text(st, 9);
    const char *outcome = col_text(st, 11), *qid = col_text(st, 12);
    fprintf(out, "  %s  %-26s %s", when, type ? type : "?", outcome ? outcome : "-");
    if (rcpt != NULL)
        fprintf(out, "  to %s", rcpt);
    if (mid != NULL)
        fprintf(out, "  <%s>", mid);
    if (qid != NULL)
        fprintf(out, "  queue %s", qid);
    fprintf(out, "  #%lld\n", (long long)sqlite3_column_int64(st, 0));
}

static int trace_group(sqlite3 *db, FILE *out, const char *pec_id, const char *id)
{
    char q[512];
    sqlite3_stmt *st = NULL;
    if (pec_id != NULL)
        snprintf(q, sizeof q, "SELECT %s FROM events WHERE pec_id = ?1 ORDER BY seq",
                 SQL_COLUMNS);
    else
        snprintf(q, sizeof q,
                 "SELECT %s FROM events WHERE pec_id IS NULL AND (orig_msgid = ?1 OR"
                 " message_id = ?1) ORDER BY seq",
                 SQL_COLUMNS);
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK) {
        fprintf(out, "trace: %s\n", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_text(st, 1, pec_id != NULL ? pec_id : id, -1, SQLITE_STATIC);
    int n = 0, r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (n++ == 0) {
            const char *orig = col_text(st, 6), *from = col_text(st, 8), *subj = col_text(st, 10);
            if (pec_id != NULL)
                fprintf(out, "PEC message <%s>\n", pec_id);
            else
                fprintf(out, "Events without a PEC identifier for <%s>\n", id);
            if (orig != NULL)
                fprintf(out, "  original Message-ID: <%s>\n", orig);
            if (from != NULL)
                fprintf(out, "  sender: %s\n", from);
            if (subj != NULL)
                fprintf(out, "  subject: %s\n", subj);
        }
        print_event(out, st);
    }
    sqlite3_finalize(st);
    if (n > 0)
        fputc('\n', out);
    return r == SQLITE_DONE ? n : -1;
}

int evidence_trace(const char *path, const char *id, FILE *out)
{
    if (config_is_postgresql(path))
        return evpg_trace(id, out);
    char err[512];
    char key[1024];
    /* accept "<id>", "id" and surrounding blanks */
    while (*id == ' ' || *id == '\t' || *id == '<')
        id++;
    if (str_copy(key, id, sizeof key) >= sizeof key) {
        fprintf(out, "trace: identifier too long\n");
        return -1;
    }
    size_t n = strlen(key);
    while (n > 0 && (key[n - 1] == ' ' || key[n - 1] == '\t' || key[n - 1] == '>'))
        key[--n] = '\0';
    if (n == 0) {
        fprintf(out, "trace: empty identifier\n");
        return -1;
    }
    sqlite3 *db = ev_open_ro(path, err, sizeof err);
    if (db == NULL) {
        fprintf(out, "trace: %s\n", err);
        return -1;
    }
    int rc = 1;
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    /* the transactions the id belongs to, in order of first appearance */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT pec_id, min(seq) AS first FROM events WHERE pec_id IS NOT NULL"
                           " AND (pec_id = ?1 OR orig_msgid = ?1 OR message_id = ?1)"
                           " GROUP BY pec_id ORDER BY first",
                           -1, &st, NULL) != SQLITE_OK) {
        fprintf(out, "trace: %s\n", sqlite3_errmsg(db));
        rc = -1;
        goto out;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        char *pec_id = xstrdup(col_text(st, 0));
        int got = pec_id ? trace_group(db, out, pec_id, key) : -1;
        free(pec_id);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got > 0)
            rc = 0;
    }
    sqlite3_finalize(st);
    if (rc >= 0) {
        int got = trace_group(db, out, NULL, key);
        if (got < 0)
            rc = -1;
        else if (got > 0)
            rc = 0;
    }
    if (rc == 1)
        fprintf(out, "no event in the evidence log for <%s>\n", key);
out:
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}
