/*
 * pecctl_report.c - what a provider's staff ask of the evidence log and the
 * users (issue 23; docs/evidence.md "Reports, searches, extracts, holds"):
 *
 *   pecctl -c CONF report --from YYYY-MM-DD --to YYYY-MM-DD [--json|--csv]
 *   pecctl -c CONF log search --address ADDR [--from D] [--to D] [--subject S] [--json]
 *   pecctl -c CONF log extract --address ADDR [--from D] [--to D] [--subject S] --out FILE
 *   pecctl -c CONF log hold add --address ADDR | --pec-id ID [--reason TEXT]
 *   pecctl -c CONF log hold list [--json]
 *   pecctl -c CONF log hold del ID
 *
 * The extract ("estratto del log") holds only the records that concern the
 * requester, each with its hash and the previous one, and the signed seals
 * of their days, as one JSON document signed with the provider key (CMS,
 * content attached, DER: `openssl cms -verify -inform DER` checks it and
 * prints the document).
 *
 * Interface: pecctl_report_main, pecctl_log_search, pecctl_log_extract,
 * pecctl_log_hold (called from pecctl.c and pecctl_log.c).  Exit: 0 done,
 * 1 nothing found / refused, 2 usage or unreadable.
 */
#include "keys/keys.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "pec/pec.h"
#include "pec/pec_dirp7m.h"
#include "store/evidence.h"
#include "store/store.h"

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int pecctl_report_main(struct config *cfg, int argc, char **argv);
int pecctl_log_search(struct config *cfg, int argc, char **argv);
int pecctl_log_extract(struct config *cfg, int argc, char **argv);
int pecctl_log_hold(struct config *cfg, int argc, char **argv);

/* ---- JSON -------------------------------------------------------------------------------- */

static void json_str(GString *s, const char *v)
{
    if (v == NULL) {
        g_string_append(s, "null");
        return;
    }
    g_string_append_c(s, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        switch (*p) {
        case '"': g_string_append(s, "\\\""); break;
        case '\\': g_string_append(s, "\\\\"); break;
        case '\n': g_string_append(s, "\\n"); break;
        case '\r': g_string_append(s, "\\r"); break;
        case '\t': g_string_append(s, "\\t"); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                g_string_append_printf(s, "\\u%04x", *p);
            else
                g_string_append_c(s, (char)*p);
        }
    }
    g_string_append_c(s, '"');
}

static void hex32(const unsigned char h[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* ---- options ------------------------------------------------------------------------------ */

struct opts {
    struct evidence_query q;
    const char *out, *reason, *pec_id;
    bool json, csv;
};

/* --from/--to/--address/--subject/--out/--reason/--pec-id/--json/--csv from argv[first..];
 * -1 on an unknown option (named on stderr). */
static int parse_opts(int argc, char **argv, int first, struct opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = strcmp(a, "--from") == 0      ? &o->q.from
                           : strcmp(a, "--to") == 0      ? &o->q.to
                           : strcmp(a, "--address") == 0 ? &o->q.address
                           : strcmp(a, "--subject") == 0 ? &o->q.subject
                           : strcmp(a, "--out") == 0     ? &o->out
                           : strcmp(a, "--reason") == 0  ? &o->reason
                           : strcmp(a, "--pec-id") == 0  ? &o->pec_id
                                                         : NULL;
        if (dst != NULL && i + 1 < argc) {
            *dst = argv[++i];
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "--csv") == 0) {
            o->csv = true;
        } else {
            fprintf(stderr, "pecctl: unknown option or missing value: %s\n", a);
            return -1;
        }
    }
    return 0;
}

/* ---- report --------------------------------------------------------------------------------- */

/* The event types a report counts, and their column names. */
static const char *const report_types[][2] = {
    {"accettazione", "accepted"},
    {"non-accettazione", "not_accepted"},
    {"busta-trasporto", "envelopes_sent"},
    {"presa-in-carico", "envelopes_taken_in"},
    {"avvenuta-consegna", "delivered"},
    {"errore-consegna", "not_delivered"},
    {"anomalia", "anomalies"},
    {"rilevazione-virus", "viruses"},
    {"preavviso-errore-consegna", "timeout_notices"},
};
#define NTYPES (sizeof report_types / sizeof report_types[0])

struct day_row {
    char day[16];
    long long n[NTYPES];
};

static int add_count(void *ctx, const char *day, const char *type, long long n)
{
    GArray *days = ctx;
    size_t t = NTYPES;
    for (size_t i = 0; i < NTYPES; i++)
        if (type != NULL && strcmp(type, report_types[i][0]) == 0)
            t = i;
    if (t == NTYPES || day == NULL)
        return 0;
    struct day_row *last = days->len ? &g_array_index(days, struct day_row, days->len - 1) : NULL;
    if (last == NULL || strcmp(last->day, day) != 0) {
        struct day_row r = {{0}, {0}};
        str_copy(r.day, day, sizeof r.day);
        g_array_append_val(days, r);
        last = &g_array_index(days, struct day_row, days->len - 1);
    }
    last->n[t] += n;
    return 0;
}

static void count_domain(const char *addr, void *arg)
{
    GHashTable *per = arg;
    const char *at = strrchr(addr, '@');
    const char *dom = at ? at + 1 : "";
    gpointer v = g_hash_table_lookup(per, dom);
    g_hash_table_replace(per, g_strdup(dom), GSIZE_TO_POINTER(GPOINTER_TO_SIZE(v) + 1));
}

static gint cmp_str(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int pecctl_report_main(struct config *cfg, int argc, char **argv)
{
    struct opts o;
    if (parse_opts(argc, argv, 1, &o) == -1 || o.q.from == NULL || o.q.to == NULL) {
        fprintf(stderr, "usage: pecctl -c CONF report --from YYYY-MM-DD --to YYYY-MM-DD "
                        "[--json|--csv]\n");
        return 2;
    }
    char err[512];
    GArray *days = g_array_new(FALSE, TRUE, sizeof(struct day_row));
    if (evidence_report(cfg->evidence_path, o.q.from, o.q.to, add_count, days, err,
                        sizeof err) == -1) {
        fprintf(stderr, "pecctl: %s\n", err);
        g_array_free(days, TRUE);
        return 2;
    }
    /* mailboxes in service: the users file, per domain (not known with Dovecot) */
    GHashTable *per = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    bool known = cfg->dovecot_auth == NULL;
    if (known) {
        struct users *u = users_load(cfg->passwd_file, err, sizeof err);
        if (u == NULL) {
            fprintf(stderr, "pecctl: %s\n", err);
            known = false;
        } else {
            users_each(u, count_domain, per);
            users_free(u);
        }
    }
    GPtrArray *doms = g_ptr_array_new();
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, per);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(doms, k);
    g_ptr_array_sort(doms, cmp_str);
    long long tot[NTYPES] = {0};
    for (guint i = 0; i < days->len; i++)
        for (size_t t = 0; t < NTYPES; t++)
            tot[t] += g_array_index(days, struct day_row, i).n[t];
    GString *s = g_string_new(NULL);
    if (o.json) {
        g_string_append(s, "{\"from\": ");
        json_str(s, o.q.from);
        g_string_append(s, ", \"to\": ");
        json_str(s, o.q.to);
        g_string_append(s, ", \"mailboxes\": ");
        if (!known) {
            g_string_append(s, "null");
        } else {
            g_string_append_c(s, '{');
            for (guint i = 0; i < doms->len; i++) {
                if (i)
                    g_string_append(s, ", ");
                json_str(s, g_ptr_array_index(doms, i));
                g_string_append_printf(s, ": %zu", GPOINTER_TO_SIZE(g_hash_table_lookup(
                                                       per, g_ptr_array_index(doms, i))));
            }
            g_string_append_c(s, '}');
        }
        g_string_append(s, ", \"days\": [");
        for (guint i = 0; i < days->len; i++) {
            struct day_row *r = &g_array_index(days, struct day_row, i);
            g_string_append_printf(s, "%s{\"day\": \"%s\"", i ? ", " : "", r->day);
            for (size_t t = 0; t < NTYPES; t++)
                g_string_append_printf(s, ", \"%s\": %lld", report_types[t][1], r->n[t]);
            g_string_append_c(s, '}');
        }
        g_string_append(s, "], \"totals\": {");
        for (size_t t = 0; t < NTYPES; t++)
            g_string_append_printf(s, "%s\"%s\": %lld", t ? ", " : "", report_types[t][1],
                                   tot[t]);
        g_string_append(s, "}}\n");
    } else if (o.csv) {
        g_string_append(s, "day");
        for (size_t t = 0; t < NTYPES; t++)
            g_string_append_printf(s, ",%s", report_types[t][1]);
        g_string_append(s, "\r\n");
        for (guint i = 0; i < days->len; i++) {
            struct day_row *r = &g_array_index(days, struct day_row, i);
            g_string_append(s, r->day);
            for (size_t t = 0; t < NTYPES; t++)
                g_string_append_printf(s, ",%lld", r->n[t]);
            g_string_append(s, "\r\n");
        }
        g_string_append(s, "total");
        for (size_t t = 0; t < NTYPES; t++)
            g_string_append_printf(s, ",%lld", tot[t]);
        g_string_append(s, "\r\n");
    } else {
        g_string_append_printf(s, "PEC report %s to %s (UTC days, evidence log %s)\n\n",
                               o.q.from, o.q.to, cfg->evidence_path);
        g_string_append(s, "Mailboxes in service:\n");
        if (!known)
            g_string_append(s, "  (users from Dovecot: not counted here)\n");
        for (guint i = 0; known && i < doms->len; i++)
            g_string_append_printf(s, "  %-30s %zu\n", (char *)g_ptr_array_index(doms, i),
                                   GPOINTER_TO_SIZE(g_hash_table_lookup(
                                       per, g_ptr_array_index(doms, i))));
        g_string_append(s, "\nday         accepted  refused  sent  taken-in  delivered  "
                           "not-del  anomalies  viruses  notices\n");
        for (guint i = 0; i <= days->len; i++) {
            const long long *n = i < days->len ? g_array_index(days, struct day_row, i).n : tot;
            g_string_append_printf(s, "%-10s %9lld %8lld %5lld %9lld %10lld %8lld %10lld %8lld "
                                      "%8lld\n",
                                   i < days->len ? g_array_index(days, struct day_row, i).day
                                                 : "total",
                                   n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8]);
        }
    }
    fputs(s->str, stdout);
    g_string_free(s, TRUE);
    g_ptr_array_free(doms, TRUE);
    g_hash_table_destroy(per);
    g_array_free(days, TRUE);
    return 0;
}

/* ---- search --------------------------------------------------------------------------------- */

struct txn {
    char *key;                 /* the PEC identifier, else the message's Message-ID */
    long long first_time;
    char *sender, *subject, *orig;
    GString *events;           /* "type outcome" lines */
    GString *json_events;
};

static void txn_free(gpointer p)
{
    struct txn *t = p;
    g_free(t->key);
    g_free(t->sender);
    g_free(t->subject);
    g_free(t->orig);
    g_string_free(t->events, TRUE);
    g_string_free(t->json_events, TRUE);
    g_free(t);
}

struct search_ctx {
    GHashTable *by_key;
    GPtrArray *order;
};

static void when_text(long long t, char *out, size_t len)
{
    struct tm tm;
    pec_legal_time((time_t)t, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S %z", &tm);
}

static int collect(void *ctx, const struct evidence_row *r)
{
    struct search_ctx *c = ctx;
    const char *key = r->fields[1] ? r->fields[1] : r->fields[3] ? r->fields[3] : "(none)";
    struct txn *t = g_hash_table_lookup(c->by_key, key);
    if (t == NULL) {
        t = g_new0(struct txn, 1);
        t->key = g_strdup(key);
        t->first_time = r->event_time;
        t->events = g_string_new(NULL);
        t->json_events = g_string_new(NULL);
        g_hash_table_insert(c->by_key, t->key, t);
        g_ptr_array_add(c->order, t);
    }
    if (t->sender == NULL && r->fields[4])
        t->sender = g_strdup(r->fields[4]);
    if (t->subject == NULL && r->fields[6])
        t->subject = g_strdup(r->fields[6]);
    if (t->orig == NULL && r->fields[2])
        t->orig = g_strdup(r->fields[2]);
    char when[64];
    when_text(r->event_time, when, sizeof when);
    g_string_append_printf(t->events, "    %s  %-28s %s%s%s\n", when,
                           r->fields[0] ? r->fields[0] : "?", r->fields[7] ? r->fields[7] : "",
                           r->fields[5] ? "  to " : "", r->fields[5] ? r->fields[5] : "");
    if (t->json_events->len)
        g_string_append(t->json_events, ", ");
    g_string_append_printf(t->json_events, "{\"seq\": %lld, \"time\": %lld, \"type\": ", r->seq,
                           r->event_time);
    json_str(t->json_events, r->fields[0]);
    g_string_append(t->json_events, ", \"recipients\": ");
    json_str(t->json_events, r->fields[5]);
    g_string_append(t->json_events, ", \"outcome\": ");
    json_str(t->json_events, r->fields[7]);
    g_string_append_c(t->json_events, '}');
    return 0;
}

int pecctl_log_search(struct config *cfg, int argc, char **argv)
{
    struct opts o;
    if (parse_opts(argc, argv, 2, &o) == -1 || o.q.address == NULL) {
        fprintf(stderr, "usage: pecctl -c CONF log search --address ADDR [--from YYYY-MM-DD] "
                        "[--to YYYY-MM-DD] [--subject TEXT] [--json]\n");
        return 2;
    }
    char err[512];
    struct search_ctx c = {g_hash_table_new_full(g_str_hash, g_str_equal, NULL, txn_free),
                           g_ptr_array_new()};
    int n = evidence_search(cfg->evidence_path, &o.q, collect, &c, err, sizeof err);
    if (n == -1) {
        fprintf(stderr, "pecctl: %s\n", err);
    } else if (o.json) {
        GString *s = g_string_new("[");
        for (guint i = 0; i < c.order->len; i++) {
            struct txn *t = g_ptr_array_index(c.order, i);
            g_string_append(s, i ? ", {\"pec_id\": " : "{\"pec_id\": ");
            json_str(s, t->key);
            g_string_append_printf(s, ", \"first_time\": %lld, \"sender\": ", t->first_time);
            json_str(s, t->sender);
            g_string_append(s, ", \"subject\": ");
            json_str(s, t->subject);
            g_string_append(s, ", \"orig_msgid\": ");
            json_str(s, t->orig);
            g_string_append_printf(s, ", \"events\": [%s]}", t->json_events->str);
        }
        g_string_append(s, "]\n");
        fputs(s->str, stdout);
        g_string_free(s, TRUE);
    } else {
        for (guint i = 0; i < c.order->len; i++) {
            struct txn *t = g_ptr_array_index(c.order, i);
            char when[64];
            when_text(t->first_time, when, sizeof when);
            printf("%s  %s\n  from %s  subject \"%s\"%s%s%s\n%s\n", when, t->key,
                   t->sender ? t->sender : "?", t->subject ? t->subject : "",
                   t->orig ? "  (<" : "", t->orig ? t->orig : "", t->orig ? ">)" : "",
                   t->events->str);
        }
        printf("-- %u transaction%s, %d record%s\n", c.order->len, c.order->len == 1 ? "" : "s",
               n, n == 1 ? "" : "s");
    }
    guint found = c.order->len;
    g_ptr_array_free(c.order, TRUE);
    g_hash_table_destroy(c.by_key);
    return n == -1 ? 2 : found == 0 ? 1 : 0;
}

/* ---- extract ------------------------------------------------------------------------------ */

struct extract_ctx {
    GString *records;
    GPtrArray *days;           /* distinct days, in order */
    int n;
};

static int extract_row(void *ctx, const struct evidence_row *r)
{
    struct extract_ctx *x = ctx;
    static const char *const names[10] = {"type",    "pec_id",     "orig_msgid", "message_id",
                                          "sender",  "recipients", "subject",    "outcome",
                                          "queue_id", "dedupe_key"};
    char ph[65], h[65];
    hex32(r->prev_hash, ph);
    hex32(r->hash, h);
    g_string_append_printf(x->records, "%s\n    {\"seq\": %lld, \"day\": \"%s\", \"logged_at\": %lld,"
                                       " \"event_time\": %lld",
                           x->n ? "," : "", r->seq, r->day ? r->day : "", r->logged_at,
                           r->event_time);
    for (int i = 0; i < 10; i++) {
        g_string_append_printf(x->records, ", \"%s\": ", names[i]);
        json_str(x->records, r->fields[i]);
    }
    g_string_append_printf(x->records, ", \"prev_hash\": \"%s\", \"hash\": \"%s\"}", ph, h);
    x->n++;
    if (r->day && (x->days->len == 0 ||
                   strcmp(g_ptr_array_index(x->days, x->days->len - 1), r->day) != 0))
        g_ptr_array_add(x->days, g_strdup(r->day));
    return 0;
}

/* The extract is signed like the PEC messages: through the one loader of
 * src/keys (a PEM file or a hardware module's key). */
static struct keys_hsm *extract_hsm;

static pec_signer *load_signer(const struct config *cfg, char *err, size_t errsz)
{
    return keys_load_pec_signer(cfg, &extract_hsm, err, errsz);
}

int pecctl_log_extract(struct config *cfg, int argc, char **argv)
{
    struct opts o;
    if (parse_opts(argc, argv, 2, &o) == -1 || o.q.address == NULL || o.out == NULL) {
        fprintf(stderr, "usage: pecctl -c CONF log extract --address ADDR [--from YYYY-MM-DD] "
                        "[--to YYYY-MM-DD] [--subject TEXT] --out FILE\n");
        return 2;
    }
    char err[512];
    struct extract_ctx x = {g_string_new(NULL), g_ptr_array_new_with_free_func(g_free), 0};
    int n = evidence_search(cfg->evidence_path, &o.q, extract_row, &x, err, sizeof err);
    int rc = 0;
    if (n == -1) {
        fprintf(stderr, "pecctl: %s\n", err);
        rc = 2;
    } else if (n == 0) {
        fprintf(stderr, "pecctl: no record concerns %s in that period\n", o.q.address);
        rc = 1;
    }
    GString *doc = NULL;
    if (rc == 0) {
        char made[64];
        when_text((long long)time(NULL), made, sizeof made);
        doc = g_string_new("{\"format\": \"pecmail-evidence-extract-1\",\n \"provider\": ");
        json_str(doc, cfg->name);
        g_string_append(doc, ", \"domain\": ");
        json_str(doc, cfg->domain);
        g_string_append(doc, ",\n \"requester\": ");
        json_str(doc, o.q.address);
        g_string_append(doc, ", \"from\": ");
        json_str(doc, o.q.from);
        g_string_append(doc, ", \"to\": ");
        json_str(doc, o.q.to);
        g_string_append(doc, ", \"subject\": ");
        json_str(doc, o.q.subject);
        g_string_append(doc, ", \"made\": ");
        json_str(doc, made);
        g_string_append(doc, ",\n \"hash\": \"SHA-256(prev_hash || 'pecmail-evidence-1' || "
                             "fields), docs/evidence.md\",\n \"records\": [");
        g_string_append(doc, x.records->str);
        g_string_append(doc, "\n ],\n \"seals\": [");
        for (guint i = 0; i < x.days->len; i++) {
            const char *day = g_ptr_array_index(x.days, i);
            char *text = NULL;
            unsigned char *sig = NULL;
            size_t siglen = 0;
            int s = evidence_seal_of(cfg->evidence_path, day, &text, &sig, &siglen, err,
                                     sizeof err);
            g_string_append_printf(doc, "%s\n    {\"day\": \"%s\", \"signed\": ", i ? "," : "",
                                   day);
            json_str(doc, s == 1 ? text : NULL);
            g_string_append(doc, ", \"signature\": ");
            gchar *b64 = s == 1 ? g_base64_encode(sig, siglen) : NULL;
            json_str(doc, b64);
            g_string_append(doc, s == 1 ? "}" : ", \"note\": \"not sealed yet\"}");
            g_free(b64);
            g_free(text);
            g_free(sig);
        }
        g_string_append(doc, "\n ]\n}\n");
    }
    pec_signer *signer = rc == 0 ? load_signer(cfg, err, sizeof err) : NULL;
    if (rc == 0 && signer == NULL) {
        fprintf(stderr, "pecctl: %s\n", err);
        rc = 2;
    }
    if (rc == 0) {
        pec_buf der = {0};
        if (pec_dir_p7m_sign(signer, doc->str, doc->len, &der, err, sizeof err) == -1) {
            fprintf(stderr, "pecctl: cannot sign the extract: %s\n", err);
            rc = 2;
        } else if (fs_write_atomic(o.out, (const char *)der.data, der.len, 0600) == -1) {
            fprintf(stderr, "pecctl: %s: %s\n", o.out, strerror(errno));
            rc = 2;
        } else {
            printf("%s: %d record%s of %s in %u day%s, signed (openssl cms -verify -inform DER "
                   "-in %s -CAfile CA)\n",
                   o.out, n, n == 1 ? "" : "s", o.q.address, x.days->len,
                   x.days->len == 1 ? "" : "s", o.out);
        }
        pec_buf_free(&der);
    }
    pec_signer_free(signer);
    keys_hsm_close(extract_hsm);
    if (doc)
        g_string_free(doc, TRUE);
    g_string_free(x.records, TRUE);
    g_ptr_array_free(x.days, TRUE);
    return rc;
}

/* ---- holds -------------------------------------------------------------------------------- */

struct hold_ctx {
    bool json;
    GString *s;
};

static int print_hold(void *ctx, long long id, const char *kind, const char *value,
                      const char *reason, long long created)
{
    struct hold_ctx *h = ctx;
    char when[64];
    when_text(created, when, sizeof when);
    if (h->json) {
        g_string_append_printf(h->s, "%s{\"id\": %lld, \"kind\": ", h->s->len > 1 ? ", " : "",
                               id);
        json_str(h->s, kind);
        g_string_append(h->s, ", \"value\": ");
        json_str(h->s, value);
        g_string_append(h->s, ", \"reason\": ");
        json_str(h->s, reason);
        g_string_append_printf(h->s, ", \"created\": %lld}", created);
    } else {
        g_string_append_printf(h->s, "%lld  %-8s %-40s %s  %s\n", id, kind ? kind : "",
                               value ? value : "", when, reason ? reason : "");
    }
    return 0;
}

int pecctl_log_hold(struct config *cfg, int argc, char **argv)
{
    char err[512];
    const char *sub = argc >= 3 ? argv[2] : "";
    struct opts o;
    if (strcmp(sub, "add") == 0 && parse_opts(argc, argv, 3, &o) == 0 &&
        (o.q.address != NULL) != (o.pec_id != NULL)) {
        const char *value = o.q.address ? o.q.address : o.pec_id;
        while (o.pec_id && *value == '<')
            value++;
        char v[320];
        str_copy(v, value, sizeof v);
        v[strcspn(v, ">")] = '\0';
        long long id = evidence_hold_add(cfg->evidence_path, o.q.address ? "address" : "pec_id",
                                         v, o.reason, err, sizeof err);
        if (id == -1) {
            fprintf(stderr, "pecctl: %s\n", err);
            return 1;
        }
        printf("hold %lld: the records of %s are kept past the retention period\n", id, v);
        return 0;
    }
    if (strcmp(sub, "list") == 0 && parse_opts(argc, argv, 3, &o) == 0) {
        struct hold_ctx h = {o.json, g_string_new(o.json ? "[" : "")};
        int n = evidence_hold_list(cfg->evidence_path, print_hold, &h, err, sizeof err);
        if (n == -1) {
            fprintf(stderr, "pecctl: %s\n", err);
            g_string_free(h.s, TRUE);
            return 2;
        }
        if (o.json)
            g_string_append(h.s, "]\n");
        else if (n == 0)
            g_string_append(h.s, "no legal hold\n");
        fputs(h.s->str, stdout);
        g_string_free(h.s, TRUE);
        return 0;
    }
    if (strcmp(sub, "del") == 0 && argc == 4) {
        char *end = NULL;
        long long id = strtoll(argv[3], &end, 10);
        if (end == argv[3] || *end != '\0' || id <= 0) {
            fprintf(stderr, "pecctl: '%s' is not a hold id\n", argv[3]);
            return 2;
        }
        if (evidence_hold_del(cfg->evidence_path, id, err, sizeof err) == -1) {
            fprintf(stderr, "pecctl: %s\n", err);
            return 1;
        }
        printf("hold %lld removed\n", id);
        return 0;
    }
    fprintf(stderr, "usage: pecctl -c CONF log hold add --address ADDR | --pec-id ID "
                    "[--reason TEXT]\n"
                    "       pecctl -c CONF log hold list [--json]\n"
                    "       pecctl -c CONF log hold del ID\n");
    return 2;
}
