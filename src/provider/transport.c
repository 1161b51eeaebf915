/*
 * transport.c - the delivery function of the queue: for each pending
 * recipient, local delivery into its Maildir, or relay by SMTP to the next
 * hop of its domain, recipients grouped by domain into one transaction.
 *
 * Next hops: a static route ([routes] domain = host:port, used by tests and
 * operators), else DNS MX via libunbound (implicit MX of RFC 5321 §5.1, null
 * MX of RFC 7505).  TLS policy per destination ([tls_policy], default
 * [outbound] tls).  REQUIRETLS (RFC 8689 §4.2) raises the policy to verify,
 * needs a secure next-hop lookup (DNSSEC; a static route is configuration,
 * and counts as secure) and a next hop that offers REQUIRETLS; otherwise the
 * message bounces with 5.7.10 / 5.7.30.  "TLS-Required: No" (§3) relaxes the
 * policy of a message that is not tagged REQUIRETLS, but never below the TLS
 * that RFC 6109 §5.3 requires between PEC providers ([pec] tls_policy): that
 * is this provider's own duty, not a policy the recipient domain asserts,
 * which is all the header field waives.  Connections are reused
 * for the next message to the same hop, and at most
 * [outbound] max_per_destination deliveries run at once per domain.
 *
 * This file: setting up, relay of one domain's group, local delivery and
 * the delivery function.  Next hops, DANE's TLSA lookups, the connection
 * cache and the per-destination slots are in transport_route.c
 * (transport_int.h).
 */
#include "transport_int.h"
#include "transport.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "smtp/client.h"
#include "smtp/smtp.h"
#include "store/store.h"

#include <stdatomic.h>
#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <limits.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>

#include "filters/callout.h"

void transport_set_users(struct transport *t,
                         enum users_found (*lookup)(void *arg, const char *addr),
                         void *arg)
{
    t->user_lookup = lookup;
    t->user_lookup_arg = arg;
}

void transport_set_quota(struct transport *t,
                         bool (*quota)(void *arg, const char *addr, uint64_t *octets), void *arg)
{
    t->user_quota = quota;
    t->user_quota_arg = arg;
}

/* The Maildir quota of addr ([delivery] quota, or the user's own rule), and
 * whether a message of size octets still fits in dir; false with a
 * "5.2.2" reason when it does not (RFC 3463 X.2.2 "mailbox full"). */
static bool quota_allows(struct transport *t, const char *addr, const char *dir, size_t size,
                         char *why, size_t whylen)
{
    uint64_t q = t->cfg->delivery_quota;
    uint64_t own;
    if (t->user_quota != NULL && t->user_quota(t->user_quota_arg, addr, &own))
        q = own;
    if (q == 0)
        return true;
    int64_t used = maildir_usage(dir);
    if (used < 0)
        return true;   /* cannot be read: the write itself will say */
    if ((uint64_t)used + size <= q)
        return true;
    snprintf(why, whylen, "5.2.2 <%s>: mailbox full (quota %llu octets, %lld in use, message "
                          "%zu)", addr, (unsigned long long)q, (long long)used, size);
    return false;
}

void transport_set_pec_domains(struct transport *t, bool (*is_pec)(void *arg, const char *domain),
                               void *arg)
{
    t->is_pec = is_pec;
    t->is_pec_arg = arg;
}

struct transport *transport_new(const struct config *cfg, char *err, size_t errlen)
{
    struct transport *t = xcalloc(1, sizeof *t);
    t->cfg = cfg;
    t->client_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(t->client_ctx, TLS1_2_VERSION);
    SSL_CTX_dane_enable(t->client_ctx);
    if (cfg->out_ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(t->client_ctx, cfg->out_ca_file, NULL) != 1) {
            snprintf(err, errlen, "[outbound] ca_file %s: cannot load", cfg->out_ca_file);
            transport_free(t);
            return NULL;
        }
    } else {
        SSL_CTX_set_default_verify_paths(t->client_ctx);
    }
    t->ub = ub_ctx_create();
    if (t->ub == NULL) {
        snprintf(err, errlen, "cannot create the DNS resolver");
        transport_free(t);
        return NULL;
    }
    if (cfg->dns_server != NULL) {
        int r = ub_ctx_set_fwd(t->ub, cfg->dns_server);
        if (r != 0) {
            snprintf(err, errlen, "[outbound] dns_server %s: %s", cfg->dns_server, ub_strerror(r));
            transport_free(t);
            return NULL;
        }
    } else {
        ub_ctx_resolvconf(t->ub, NULL);
    }
    ub_ctx_hosts(t->ub, NULL);
    if (cfg->dns_trust_anchor != NULL) {
        int r = ub_ctx_add_ta_file(t->ub, cfg->dns_trust_anchor);
        if (r != 0) {
            snprintf(err, errlen, "[outbound] dns_trust_anchor %s: %s", cfg->dns_trust_anchor,
                     ub_strerror(r));
            transport_free(t);
            return NULL;
        }
        t->dnssec = true;
    }
    t->callouts = callouts_new(cfg);
    if (!callouts_any(t->callouts, CONFIG_PHASE_OUTGOING)) {
        callouts_free(t->callouts);
        t->callouts = NULL;
    }
    g_mutex_init(&t->lock);
    g_cond_init(&t->cond);
    t->idle = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    t->active = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    t->route_addrs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return t;
}

static void callouts_free_cb(void *c) { callouts_free(c); }

void transport_set_config(struct transport *t, const struct config *cfg)
{
    struct callouts *c = callouts_new(cfg);
    if (!callouts_any(c, CONFIG_PHASE_OUTGOING)) {
        callouts_free(c);
        c = NULL;
    }
    atomic_store(&t->cfg, cfg);
    struct callouts *old = atomic_exchange(&t->callouts, c);
    if (old != NULL)
        config_retire(callouts_free_cb, old);
}

void transport_free(struct transport *t)
{
    if (t == NULL)
        return;
    callouts_free(t->callouts);
    if (t->idle != NULL) {
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, t->idle);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            GQueue *q = v;
            struct idle_conn *ic;
            while ((ic = g_queue_pop_head(q)) != NULL) {
                smtp_client_close(ic->c, true);
                free(ic);
            }
            g_queue_free(q);
        }
        g_hash_table_destroy(t->idle);
        g_hash_table_destroy(t->active);
        g_hash_table_destroy(t->route_addrs);
        g_mutex_clear(&t->lock);
        g_cond_clear(&t->cond);
    }
    if (t->ub)
        ub_ctx_delete(t->ub);
    SSL_CTX_free(t->client_ctx);
    free(t);
}

/* ---- relay ----------------------------------------------------------------------- */

bool transport_tls_required_no(const char *data, size_t len)
{
    char v[64];
    return mail_header_value(data, len, "TLS-Required", v, sizeof v) &&
           strncasecmp(v, "No", 2) == 0 && (v[2] == '\0' || v[2] == ' ');
}

static void set_all(struct deliver_rcpt *r, const size_t *idx, size_t n, int code,
                    const char *text, const char *mta)
{
    for (size_t k = 0; k < n; k++) {
        struct deliver_rcpt *x = &r[idx[k]];
        x->result = code >= 500 ? DELIVER_PERMFAIL : DELIVER_TEMPFAIL;
        x->smtp_code = code;
        str_copy(x->text, text, sizeof x->text);
        str_copy(x->remote_mta, mta ? mta : "", sizeof x->remote_mta);
    }
}

static void relay_group(struct transport *t, const struct queue_env *env, const char *data,
                        size_t len, const char *domain, const size_t *idx, size_t n,
                        struct deliver_rcpt *r)
{
    const char *pname = config_tls_policy(t->cfg, domain);
    enum tls_policy policy = TLSP_MAY;
    tls_policy_parse(pname ? pname : t->cfg->out_tls, &policy);
    bool bounce = env->sender[0] == '\0';
    bool strict = env->requiretls && !bounce;
    if (!env->requiretls && transport_tls_required_no(data, len) && policy > TLSP_MAY)
        policy = TLSP_MAY;      /* RFC 8689 §3: the sender waives the recipient's policy */
    /* provider-to-provider PEC traffic: at least [pec] tls_policy (RFC 6109
     * §5.3), whatever TLS-Required says */
    if (t->is_pec != NULL && t->is_pec(t->is_pec_arg, domain)) {
        enum tls_policy floor = TLSP_VERIFY;
        tls_policy_parse(t->cfg->pec_tls_policy, &floor);
        if (policy < floor)
            policy = floor;
    }
    if (strict && policy < TLSP_VERIFY)
        policy = TLSP_VERIFY;   /* RFC 8689 §4.2.1 step 4 */

    struct hops hs;
    tr_resolve(t, domain, &hs);
    if (hs.fail_code != 0) {
        set_all(r, idx, n, hs.fail_code, hs.fail, NULL);
        return;
    }
    if (strict && !hs.secure) {
        set_all(r, idx, n, 550, "5.7.10 REQUIRETLS: the mail servers of the domain were not "
                                "found securely (no DNSSEC)", NULL);
        return;
    }

    struct smtp_client_rcpt *cr = xcalloc(n, sizeof *cr);
    for (size_t k = 0; k < n; k++) {
        const struct queue_rcpt *qr = &env->rcpts[idx[k]];
        cr[k].addr = qr->addr;
        cr[k].notify = qr->notify;
        cr[k].orcpt = qr->orcpt;
    }
    struct smtp_client_msg m = {
        .sender = env->sender, .size = len, .eightbit = env->body == 2,
        .smtputf8 = env->smtputf8, .requiretls = env->requiretls, .ret = env->ret,
        .envid = env->envid, .data = data, .len = len, .rcpts = cr, .nrcpts = n,
    };
    struct smtp_reply last = {.code = 451};
    snprintf(last.text, sizeof last.text, "4.4.1 no next hop reachable for %s", domain);
    char mta[300] = "";
    bool done = false;
    tr_slot_take(t, domain);
    for (size_t hi = 0; hi < hs.n && !done; hi++) {
        struct hop *h = &hs.h[hi];
        for (size_t ai = 0; ai < h->naddrs && !done; ai++) {
            /* DANE (RFC 7672 §2.2): TLSA records of a securely found host
             * authenticate it; without them the policy falls back to what
             * the message needs (verify for REQUIRETLS) or to "may" */
            enum tls_policy hp = policy;
            struct tlsa_rec tlsa[8];
            size_t ntlsa = 0;
            if (policy == TLSP_DANE) {
                enum tlsa_state ts = hs.secure ? tr_tlsa_lookup(t, h, tlsa, 8, &ntlsa)
                                               : TLSA_INSECURE;
                if (ts == TLSA_FAILED) {
                    last.code = 451;
                    snprintf(last.text, sizeof last.text,
                             "4.7.5 TLSA lookup for %s failed or is bogus", h->host);
                    continue;
                }
                if (ts != TLSA_FOUND)
                    hp = strict ? TLSP_VERIFY : TLSP_MAY;
            }
            char key[600];
            tr_conn_key(key, sizeof key, h, h->addrs[ai], hp, hs.lmtp);
            struct smtp_client_opts o = {
                .helo = t->cfg->out_helo, .tls = hp, .tls_ctx = t->client_ctx,
                .tls_name = h->host, .tlsa = tlsa, .ntlsa = ntlsa, .lmtp = hs.lmtp,
                .timeout = (unsigned)t->cfg->out_timeout,
            };
            struct smtp_reply fail;
            struct smtp_client *c = tr_cache_take(t, key);
            bool reused = c != NULL;
            if (c == NULL)
                c = smtp_client_open(h->host, h->addrs[ai], h->port, &o, &fail);
            if (c == NULL && hp == TLSP_MAY && strstr(fail.text, "4.7.5") == fail.text) {
                /* opportunistic TLS failed: plaintext is what "may" allows */
                o.tls = TLSP_NONE;
                c = smtp_client_open(h->host, h->addrs[ai], h->port, &o, &fail);
            }
            snprintf(mta, sizeof mta, "%s [%s]", h->host, h->addrs[ai]);
            if (c == NULL) {
                last = fail;
                if (strict && strncmp(fail.text, "4.7.", 4) == 0) {
                    /* RFC 8689 §4.2.1: no verified TLS session - final for
                     * this message once every host has failed the same way */
                    last.code = 550;
                    snprintf(last.text, sizeof last.text, "5.7.10 REQUIRETLS: %s", fail.text + 6);
                }
                continue;
            }
            for (size_t k = 0; k < n; k++)
                memset(&cr[k].reply, 0, sizeof cr[k].reply);
            int sent = smtp_client_send(c, &m, &fail);
            if (sent == -1 && reused && !smtp_client_data_sent(c)) {
                /* a cached connection that died before the message went: nothing
                 * reached the server, send again at once on a new one */
                log_info("%s: cached connection lost (%s), reconnecting", mta, fail.text);
                smtp_client_close(c, false);
                c = smtp_client_open(h->host, h->addrs[ai], h->port, &o, &fail);
                if (c == NULL) {
                    last = fail;
                    continue;
                }
                for (size_t k = 0; k < n; k++)
                    memset(&cr[k].reply, 0, sizeof cr[k].reply);
                sent = smtp_client_send(c, &m, &fail);
            }
            if (sent == -1) {
                last = fail;
                smtp_client_close(c, true);
                /* RFC 8689 §4.2.1: try the next MX for REQUIRETLS failures;
                 * other permanent failures are the message's */
                if (fail.code >= 500 && strstr(fail.text, "5.7.30") != fail.text &&
                    strstr(fail.text, "5.7.10") != fail.text) {
                    done = true;
                    set_all(r, idx, n, fail.code, fail.text, mta);
                }
                continue;
            }
            bool dsn = (smtp_client_extensions(c) & EXT_DSN) != 0;
            for (size_t k = 0; k < n; k++) {
                struct deliver_rcpt *x = &r[idx[k]];
                int code = cr[k].reply.code;
                x->smtp_code = code;
                str_copy(x->remote_mta, mta, sizeof x->remote_mta);
                snprintf(x->text, sizeof x->text, "%s", cr[k].reply.text);
                if (code / 100 == 2) {
                    x->result = DELIVER_OK;
                    x->relayed = !dsn;
                    snprintf(x->text, sizeof x->text, "relayed to %s: %d %s", mta, code,
                             cr[k].reply.text);
                } else {
                    x->result = code >= 500 ? DELIVER_PERMFAIL : DELIVER_TEMPFAIL;
                }
            }
            done = true;
            if (smtp_client_reset(c))
                tr_cache_put(t, key, c);
            else
                smtp_client_close(c, false);
        }
    }
    tr_slot_give(t, domain);
    if (!done) {
        /* every hop failed: REQUIRETLS conditions are final, the rest is retried */
        set_all(r, idx, n, last.code >= 500 ? 550 : 451, last.text, mta[0] ? mta : NULL);
    }
    free(cr);
}

/* ---- local ------------------------------------------------------------------------ */

/* quota: mail from outside (an envelope, ordinary mail) counts against the
 * mailbox's quota; what the provider itself stores for its user (receipts,
 * notices, anomaly envelopes of the user's own mail) does not: it is the
 * evidence of the user's own transactions. */
static void deliver_local(struct transport *t, const struct queue_env *env, size_t i,
                          const char *data, size_t len, bool recovered, bool sync_each,
                          bool quota, struct deliver_rcpt *r)
{
    const char *addr = env->rcpts[i].addr;
    char local[256], dir[PATH_MAX];
    const char *at = strrchr(addr, '@');
    if (at == NULL || (size_t)(at - addr) >= sizeof local) {
        r->result = DELIVER_PERMFAIL;
        snprintf(r->text, sizeof r->text, "5.1.3 not a mailbox address");
        return;
    }
    memcpy(local, addr, (size_t)(at - addr));
    local[at - addr] = '\0';
    if (config_mailbox_path(t->cfg, local, at + 1, dir, sizeof dir) == -1) {
        r->result = DELIVER_PERMFAIL;
        snprintf(r->text, sizeof r->text, "5.1.3 no safe mailbox path for this address");
        return;
    }
    char header[1024], name[512], err[256];
    int hl = snprintf(header, sizeof header, "Return-Path: <%s>\r\nDelivered-To: %s\r\n",
                      env->sender, addr);
    if (hl < 0 || (size_t)hl >= sizeof header) {
        r->result = DELIVER_PERMFAIL;
        snprintf(r->text, sizeof r->text, "5.1.3 address too long");
        return;
    }
    maildir_name(name, sizeof name, env->arrival, env->qid, env->name_base + i, (size_t)hl + len);
    if (quota && !recovered &&
        !quota_allows(t, addr, dir, (size_t)hl + len, r->text, sizeof r->text)) {
        r->result = DELIVER_PERMFAIL;
        r->smtp_code = 552;
        return;
    }
    int rc = maildir_prepare(dir, name, header, (size_t)hl, data, len, recovered, sync_each,
                             r->pub.tmp, r->pub.dst, sizeof r->pub.tmp, err, sizeof err);
    if (rc == -1) {
        r->result = DELIVER_TEMPFAIL;
        snprintf(r->text, sizeof r->text, "4.2.0 %s", err);
        return;
    }
    if (rc == 1)
        r->pub.tmp[0] = '\0';   /* a copy is there already */
    r->result = DELIVER_OK;
}

/* Plain delivery with users from Dovecot's userdb: RCPT could not ask it
 * (the event loop does not block), so delivery does.  False when r is set. */
static bool local_user_known(struct transport *t, const char *addr, struct deliver_rcpt *r)
{
    if (t->user_lookup == NULL)
        return true;
    enum users_found ex = t->user_lookup(t->user_lookup_arg, addr);
    if (ex == USERS_NO) {
        r->result = DELIVER_PERMFAIL;
        r->smtp_code = 550;
        snprintf(r->text, sizeof r->text, "5.1.1 <%s>: no such user", addr);
        return false;
    }
    if (ex == USERS_UNAVAILABLE) {
        r->result = DELIVER_TEMPFAIL;
        snprintf(r->text, sizeof r->text, "4.3.0 <%s>: the users source is unavailable", addr);
        return false;
    }
    return true;   /* exists, or the LMTP server decides */
}

/* The outgoing milters on what we relay (our envelopes and receipts, our
 * users' mail): header additions only, e.g. DKIM-Signature (callout.h).
 * 0 with *out (NULL: unchanged), or the reply code of a refusal (reply). */
static int outgoing_callouts(struct transport *t, const struct queue_env *env, const char *data,
                             size_t len, const struct deliver_rcpt *r, char **out,
                             size_t *outlen, char *reply, size_t replylen)
{
    struct callouts *co = t->callouts;   /* one load: a reload may swap it */
    if (co == NULL)
        return 0;
    const char **rc = xcalloc(env->nrcpts + 1, sizeof *rc);
    size_t n = 0;
    for (size_t i = 0; i < env->nrcpts; i++)
        if (r[i].pending)
            rc[n++] = env->rcpts[i].addr;
    struct callout_msg m = {.qid = env->qid, .listener = env->listener,
                            .client_ip = env->client_ip, .helo = env->helo, .tls = env->tls,
                            .auth_user = env->auth_user, .auth_type = env->auth_mech,
                            .sender = env->sender, .rcpts = rc,
                            .nrcpts = n, .pec = true};
    int res = callouts_outgoing(co, &m, data, len, out, outlen, reply, replylen);
    free(rc);
    if (res == 0)
        return 0;
    int code = atoi(reply);
    return code >= 400 && code < 600 && strlen(reply) > 4 ? code
           : (snprintf(reply, replylen, "451 4.7.1 outgoing content filter failed"), 451);
}

void transport_deliver(void *arg, const struct queue_env *env, const char *data, size_t len,
                       bool recovered, bool sync_each, struct deliver_rcpt *r)
{
    struct transport *t = arg;
    GHashTable *groups = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                               (GDestroyNotify)g_array_unref);
    GArray *lmtp = g_array_new(FALSE, FALSE, sizeof(size_t));
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (!r[i].pending)
            continue;
        const char *at = strrchr(env->rcpts[i].addr, '@');
        if (at != NULL && config_is_local_domain(t->cfg, at + 1)) {
            if (!local_user_known(t, env->rcpts[i].addr, &r[i]))
                continue;
            if (t->cfg->lmtp_host != NULL)
                g_array_append_val(lmtp, i);
            else
                deliver_local(t, env, i, data, len, recovered, sync_each, true, &r[i]);
            continue;
        }
        if (at == NULL) {
            r[i].result = DELIVER_PERMFAIL;
            snprintf(r[i].text, sizeof r[i].text, "5.1.3 no domain in the address");
            continue;
        }
        char *dom = g_ascii_strdown(at + 1, -1);
        GArray *a = g_hash_table_lookup(groups, dom);
        if (a == NULL) {
            a = g_array_new(FALSE, FALSE, sizeof(size_t));
            g_hash_table_insert(groups, dom, a);
        } else {
            g_free(dom);
        }
        g_array_append_val(a, i);
    }
    GHashTableIter it;
    gpointer k, v;
    char *out = NULL, reply[512];
    size_t outlen = len;
    int code = g_hash_table_size(groups) > 0 ? outgoing_callouts(t, env, data, len, r, &out,
                                                                 &outlen, reply, sizeof reply)
                                             : 0;
    g_hash_table_iter_init(&it, groups);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        GArray *a = v;
        if (code != 0)
            set_all(r, (const size_t *)(void *)a->data, a->len, code, reply + 4, NULL);
        else
            relay_group(t, env, out ? out : data, outlen, k, (const size_t *)(void *)a->data,
                        a->len, r);
    }
    free(out);
    g_hash_table_destroy(groups);
    if (lmtp->len > 0)
        local_lmtp_deliver(t->cfg, env, data, len, (const size_t *)(void *)lmtp->data,
                           lmtp->len, r);
    g_array_unref(lmtp);
}

void transport_store_local_all(struct transport *t, const struct queue_env *env,
                               const char *data, size_t len, bool recovered,
                               struct deliver_rcpt *r, struct queue_outputs *out)
{
    if (t->cfg->lmtp_host != NULL) {
        size_t *idx = xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof *idx);
        size_t n = 0;
        for (size_t i = 0; i < env->nrcpts; i++)
            if (r[i].pending)
                idx[n++] = i;
        if (n > 0)
            local_lmtp_deliver(t->cfg, env, data, len, idx, n, r);
        free(idx);
        return;
    }
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (!r[i].pending)
            continue;
        /* an envelope's copy: the mailbox's quota applies */
        struct deliver_rcpt x = {.pending = true};
        deliver_local(t, env, i, data, len, recovered, !t->cfg->sync_fs, true, &x);
        r[i].result = x.result;
        r[i].smtp_code = x.smtp_code;
        str_copy(r[i].text, x.text, sizeof r[i].text);
        if (x.result == DELIVER_OK)
            queue_outputs_add_pub(out, &x.pub);   /* tmp[0] == '\0': stored before */
    }
}

int transport_store_local(struct transport *t, const struct queue_env *env, size_t i,
                          const char *data, size_t len, bool recovered, struct queue_outputs *out,
                          char *err, size_t errlen)
{
    struct deliver_rcpt r = {.pending = true};
    if (t->cfg->lmtp_host != NULL) {
        /* through LMTP: stored (and marked done) when the server says 250 */
        struct deliver_rcpt *rs = xcalloc(env->nrcpts, sizeof *rs);
        rs[i].pending = true;
        local_lmtp_deliver(t->cfg, env, data, len, &i, 1, rs);
        int res = rs[i].result == DELIVER_OK ? 0 : -1;
        if (res == -1)
            snprintf(err, errlen, "%s", rs[i].text);
        free(rs);
        /* an empty entry all the same: the names (and LMTP markers) of the
         * stage's next copies depend on how many came before */
        static const struct deliver_pending none;
        if (res == 0)
            queue_outputs_add_pub(out, &none);
        return res;
    }
    deliver_local(t, env, i, data, len, recovered, !t->cfg->sync_fs, false, &r);
    if (r.result != DELIVER_OK) {
        snprintf(err, errlen, "%s", r.text);
        return -1;
    }
    queue_outputs_add_pub(out, &r.pub);   /* tmp[0] == '\0': stored before */
    return 0;
}
