/*
 * notices.c - the sending provider's timers (RFC 6109 §3.1.6) and the
 * evidence log's housekeeping, on a thread of their own: the event loop only
 * serves sessions.
 *
 * Every few seconds (an eighth of [timers] preavviso, at most 30 s) the
 * thread asks the tracking database for the recipients whose 12 h or 24 h
 * notice is due, a thousand at a time, as many times as it takes (no
 * ceiling: after a long outage of another provider every due notice goes
 * out in this turn).  Each batch becomes one queued message for the stage
 * "notices" (roles_notices: built, signed, logged and delivered by the
 * delivery threads, committed exactly once like any stage), stored before
 * the batch claims its notices (tracking_claim, with the batch's queue id):
 * a crash in between makes the batch again, and the stage makes only the
 * notices its own batch claimed.  With the shared database the due rows
 * stay locked from the query to the claim (FOR UPDATE SKIP LOCKED), so the
 * timers of all the nodes share the work and each notice is claimed once.
 * Then the day seals (every 5 minutes) and the 30-month retention (daily).
 *
 * Interface: notices.h.  The batch's body is one line per notice:
 *   which slot sent pec_id rcpt sender subject orig_msgid recipients reply_to
 * each text field base64 (or "-" when absent), so no header or body syntax
 * is involved.
 */
#include "notices.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "lib/pec_stage.h"
#include "store/evidence.h"
#include "store/tracking.h"
#include "roles.h"

#include <stdatomic.h>
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct notices {
    const struct config *_Atomic cfg;   /* swapped by a reload */
    struct roles *roles;
    struct tracking *tracking;
    struct queue *queue;
    struct evidence *ev;
    GThread *thread;
    GMutex lock;
    GCond cond;
    bool stop;
    time_t last_seal, last_purge, last_certs;
};

static void put_field(GString *s, const char *v)
{
    g_string_append_c(s, ' ');
    if (v == NULL) {
        g_string_append_c(s, '-');
        return;
    }
    gchar *b = g_base64_encode((const guchar *)v, strlen(v));
    g_string_append(s, b[0] ? b : "=");   /* "" is "=": not absent */
    g_free(b);
}

char *notices_encode(const struct tracking_due *d, size_t n, size_t *len)
{
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n; i++) {
        g_string_append_printf(s, "%d %u %lld", d[i].which, d[i].slot, (long long)d[i].sent);
        put_field(s, d[i].pec_id);
        put_field(s, d[i].rcpt);
        put_field(s, d[i].sender);
        put_field(s, d[i].subject);
        put_field(s, d[i].orig_msgid);
        put_field(s, d[i].recipients);
        put_field(s, d[i].reply_to);
        g_string_append(s, "\r\n");
    }
    *len = s->len;
    return g_string_free(s, FALSE);
}

static char *get_field(const char *tok)
{
    if (strcmp(tok, "-") == 0)
        return NULL;
    if (strcmp(tok, "=") == 0)
        return g_strdup("");
    gsize n = 0;
    guchar *b = g_base64_decode(tok, &n);
    char *s = g_strndup((const char *)b, n);   /* a NUL inside ends the field */
    g_free(b);
    return s;
}

size_t notices_decode(const char *data, size_t len, struct tracking_due **out)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(struct tracking_due));
    gchar *text = g_strndup(data, len);
    gchar **lines = g_strsplit(text, "\n", -1);
    for (gchar **l = lines; *l != NULL; l++) {
        g_strstrip(*l);
        if (**l == '\0')
            continue;
        gchar **f = g_strsplit(*l, " ", -1);
        if (g_strv_length(f) == 10) {
            struct tracking_due d = {0};
            d.which = atoi(f[0]) == 2 ? 2 : 1;
            d.slot = (unsigned)strtoul(f[1], NULL, 10);
            d.sent = (time_t)strtoll(f[2], NULL, 10);
            d.pec_id = get_field(f[3]);
            d.rcpt = get_field(f[4]);
            d.sender = get_field(f[5]);
            d.subject = get_field(f[6]);
            d.orig_msgid = get_field(f[7]);
            d.recipients = get_field(f[8]);
            d.reply_to = get_field(f[9]);
            if (d.pec_id != NULL && d.rcpt != NULL && d.sender != NULL)
                g_array_append_val(a, d);
            else
                tracking_due_free(g_memdup2(&d, sizeof d), 1);
        }
        g_strfreev(f);
    }
    g_strfreev(lines);
    g_free(text);
    size_t n = a->len;
    *out = (struct tracking_due *)(void *)g_array_free(a, FALSE);
    return n;
}

/* Every due notice, in batches: stored, marked, handed to the queue. */
static void send_due(struct notices *nt)
{
    for (;;) {
        struct tracking_due *due = NULL;
        size_t n = tracking_due(nt->tracking, time(NULL), nt->cfg->timer_preavviso,
                                nt->cfg->timer_mancata_consegna, &due);
        if (n == 0) {
            tracking_due_free(due, 0);
            return;
        }
        size_t len;
        char *body = notices_encode(due, n, &len);
        struct queue_rcpt rcpt = {.addr = (char *)nt->cfg->pec_service_address,
                                  .orig = (char *)nt->cfg->pec_service_address};
        struct queue_env env = {.sender = (char *)nt->cfg->pec_service_address,
                                .rcpts = &rcpt, .nrcpts = 1,
                                .stage = (char *)pec_stage_name(PEC_STAGE_NOTICES),
                                .listener = "pec", .proto = "local"};
        char qid[QUEUE_ID_LEN + 1];
        bool ok = queue_inject(nt->cfg->queue_dir, &env, body, len, qid) == 0;
        if (!ok) {
            log_err("timeout notices: cannot store a batch of %zu: %s (retried)", n,
                    strerror(errno));
            tracking_due_abort(nt->tracking);
        } else if (tracking_claim(nt->tracking, due, n, qid) == -1) {
            log_err("%s: timeout notices stored but not claimed: the next turn makes them "
                    "again in another batch (this one gives way)", qid);
        }
        if (ok) {
            queue_enqueue_async(nt->queue, qid);
            log_info("%s: %zu timeout notice%s due (RFC 6109 §3.1.6)", qid, n,
                     n == 1 ? "" : "s");
        }
        g_free(body);
        tracking_due_free(due, n);
        g_mutex_lock(&nt->lock);
        bool stop = nt->stop;
        g_mutex_unlock(&nt->lock);
        if (!ok || stop)
            return;
    }
}

/* The evidence log: seal finished days, and keep 30 months (§2.3). */
static void housekeeping(struct notices *nt)
{
    time_t now = time(NULL);
    if (nt->roles != NULL && now - nt->last_certs >= 3600) {
        nt->last_certs = now;
        roles_check_certificates(nt->roles);
    }
    if (nt->ev == NULL)
        return;
    char err[256];
    if (now - nt->last_seal >= 300) {
        nt->last_seal = now;
        if (evidence_seal(nt->ev, now, err, sizeof err) == -1)
            log_err("evidence log: cannot seal: %s", err);
    }
    if (now - nt->last_purge >= 86400) {
        nt->last_purge = now;
        if (evidence_purge(nt->ev, now - (time_t)nt->cfg->evidence_retention, err,
                           sizeof err) == -1)
            log_err("evidence log: cannot purge: %s", err);
    }
}

static gpointer notices_main(gpointer arg)
{
    struct notices *nt = arg;
    uint64_t every = 1;
    for (;;) {
        g_mutex_lock(&nt->lock);
        gint64 until = g_get_monotonic_time() + (gint64)every * G_TIME_SPAN_SECOND;
        while (!nt->stop && g_cond_wait_until(&nt->cond, &nt->lock, until))
            ;
        bool stop = nt->stop;
        g_mutex_unlock(&nt->lock);
        if (stop)
            break;
        config_hold_begin();    /* [timers] may change on reload */
        send_due(nt);
        housekeeping(nt);
        /* a few times per shortest timer, at most every 30 s */
        every = nt->cfg->timer_preavviso / 8;
        every = every < 1 ? 1 : every > 30 ? 30 : every;
        config_hold_end();
    }
    return NULL;
}

void notices_set_config(struct notices *nt, const struct config *cfg)
{
    if (nt != NULL)
        atomic_store(&nt->cfg, cfg);
}

struct notices *notices_start(const struct config *cfg, struct roles *r, struct tracking *t,
                              struct queue *q, struct evidence *ev)
{
    struct notices *nt = xcalloc(1, sizeof *nt);
    if (nt == NULL)
        return NULL;
    nt->cfg = cfg;
    nt->roles = r;
    nt->last_certs = time(NULL);   /* checked at start by pecd itself */
    nt->tracking = t;
    nt->queue = q;
    nt->ev = ev;
    g_mutex_init(&nt->lock);
    g_cond_init(&nt->cond);
    nt->thread = g_thread_new("notices", notices_main, nt);
    return nt;
}

void notices_stop(struct notices *nt)
{
    if (nt == NULL)
        return;
    g_mutex_lock(&nt->lock);
    nt->stop = true;
    g_cond_signal(&nt->cond);
    g_mutex_unlock(&nt->lock);
    g_thread_join(nt->thread);
    g_cond_clear(&nt->cond);
    g_mutex_clear(&nt->lock);
    free(nt);
}
