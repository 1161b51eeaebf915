/*
 * pecd.c - the provider daemon: reads pecd.conf, wires the SMTP server to the
 * queue and the mailboxes, and runs the event loop.  Argument parsing and
 * wiring only; the logic lives in src/smtp, src/queue and src/store.
 *
 *   pecd -c pecd.conf        run in the foreground, log to stderr
 *   pecd -t -c pecd.conf     check the configuration and exit
 * SIGTERM/SIGINT drain and exit; SIGHUP reads pecd.conf again and applies
 * what can change without a restart (pecd_reload.c), the users file, the
 * TLS certificate and (in a thread) the providers' directory and its CRLs.
 * systemd (Type=notify) and the watchdog: pecd_service.c; [metrics]
 * listen: pecd_metrics.c.  The process model (the signer that holds the
 * keys, the drop to [pecd] user) is in pecd_privsep.c.
 */
#include "pecd_int.h"
#include "lib/config.h"
#include "lib/domains.h"
#include "lib/lib.h"
#include "queue/queue.h"
#include "smtp/smtp.h"
#include "store/store.h"
#include "provider/transport.h"
#include "provider/roles.h"
#include "provider/notices.h"
#include "store/tracking.h"
#include "store/evidence.h"
#include "store/quarantine.h"
#include "filters/callout.h"
#include "keys/keys.h"
#include "pecd_privsep.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <glib.h>
#include <limits.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- SMTP hooks ----------------------------------------------------------- */

static int hook_auth(void *arg, const char *user, const char *pass)
{
    struct pecd *d = arg;
    return users_db_verify(d->users, user, pass, NULL, NULL, 0);
}

/* AUTH runs on the auth worker's threads: a crypt hash or a slow Dovecot
 * never stalls the other sessions (the session waits alone). */
static void hook_auth_start(void *arg, const char *user, const char *pass, const char *ip,
                            void (*done)(void *cbarg, int result, const char *canonical),
                            void *cbarg)
{
    struct pecd *d = arg;
    auth_worker_submit(d->auth, user, pass, ip, done, cbarg);
}

static bool users_quota_cb(void *arg, const char *addr, uint64_t *octets)
{
    return users_db_quota(arg, addr, octets);
}

/* Plain delivery asks Dovecot's userdb from its threads (transport.c). */
static int users_lookup_cb(void *arg, const char *addr)
{
    return users_db_lookup(arg, addr);
}

/* ---- sending limits (abuse control, issue 23) -------------------------------- */

/* Messages and recipients per hour on the submission listeners (not [mx],
 * where other providers' servers send everything they have): per
 * authenticated user, and per client address.  Counted when a message's data
 * begins; refused with a 4xx, so a legitimate burst is only delayed. */
static bool limited(const struct smtp_txn *txn)
{
    return txn->listener != NULL && strcmp(txn->listener, "mx") != 0;
}

static void limit_keys(const struct smtp_txn *txn, char *user, size_t ulen, char *client,
                       size_t clen)
{
    char k[SMTP_CLIENT_KEY_MAX];
    smtp_client_key(txn->client_ip ? txn->client_ip : "", k, sizeof k);
    snprintf(client, clen, "c:%s", k);
    user[0] = '\0';
    if (txn->auth_user != NULL) {
        char canon[SMTP_PATH_MAX + 1];
        users_normalise(txn->auth_user, canon, sizeof canon);
        snprintf(user, ulen, "u:%s", canon);
    }
}

static int64_t now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

/* 0, or -1 with the refusal: the next message (more_msgs 1) or more_rcpts
 * recipients would pass a limit. */
static int check_limits(struct pecd *d, const struct smtp_txn *txn, unsigned more_msgs,
                        unsigned more_rcpts, char *reply, size_t replylen)
{
    if (!limited(txn))
        return 0;
    char user[SMTP_PATH_MAX + 8], client[SMTP_CLIENT_KEY_MAX + 8];
    limit_keys(txn, user, sizeof user, client, sizeof client);
    int64_t t = now_ms();
    /* a user's limits: their domain's line in local_domains_file, else [limits] */
    uint64_t user_msgs = d->cfg->messages_per_hour, user_rcpts = d->cfg->recipients_per_hour;
    const char *at = txn->auth_user ? strrchr(txn->auth_user, '@') : NULL;
    const struct domain *dom = at ? domains_get(d->cfg->domains, at + 1) : NULL;
    if (dom != NULL && dom->messages_per_hour != DOMAIN_INHERIT)
        user_msgs = dom->messages_per_hour;
    if (dom != NULL && dom->recipients_per_hour != DOMAIN_INHERIT)
        user_rcpts = dom->recipients_per_hour;
    const struct {
        struct smtp_throttle *tab;
        const char *key;
        uint64_t max;
        unsigned more;
        const char *what, *who;
    } c[] = {
        {d->sent_msgs, user, user_msgs, more_msgs, "messages", "user"},
        {d->sent_rcpts, user, user_rcpts, more_rcpts, "recipients", "user"},
        {d->sent_msgs, client, d->cfg->client_messages_per_hour, more_msgs, "messages",
         "address"},
        {d->sent_rcpts, client, d->cfg->client_recipients_per_hour, more_rcpts, "recipients",
         "address"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        if (c[i].max == 0 || c[i].more == 0 || c[i].key[0] == '\0')
            continue;
        if ((uint64_t)smtp_throttle_count(c[i].tab, c[i].key, t) + c[i].more > c[i].max) {
            snprintf(reply, replylen, "451 4.7.1 Sending limit of this %s reached (%llu %s an "
                                      "hour), try again later",
                     c[i].who, (unsigned long long)c[i].max, c[i].what);
            log_warn("sending limit: %s %s: %llu %s an hour reached", c[i].who, c[i].key + 2,
                     (unsigned long long)c[i].max, c[i].what);
            return -1;
        }
    }
    return 0;
}

static void count_sent(struct pecd *d, const struct smtp_txn *txn)
{
    if (!limited(txn))
        return;
    char user[SMTP_PATH_MAX + 8], client[SMTP_CLIENT_KEY_MAX + 8];
    limit_keys(txn, user, sizeof user, client, sizeof client);
    int64_t t = now_ms();
    const char *keys[2] = {user, client};
    for (size_t i = 0; i < 2; i++) {
        if (keys[i][0] == '\0')
            continue;
        smtp_throttle_add(d->sent_msgs, keys[i], 1, t);
        smtp_throttle_add(d->sent_rcpts, keys[i], (unsigned)txn->nrcpts, t);
    }
}

/* A PEC user may send only as their own address (issue 6; §3.1.1 then
 * checks From against it). */
static int hook_mail(void *arg, const struct smtp_txn *txn, char *reply, size_t replylen)
{
    struct pecd *d = arg;
    if (check_limits(d, txn, 1, 0, reply, replylen) == -1)
        return -1;
    if (d->cfg->pec && txn->auth_user != NULL && strcasecmp(txn->sender, txn->auth_user) != 0 &&
        !sender_map_allows(d->senders, txn->sender, txn->auth_user)) {
        snprintf(reply, replylen, "553 5.7.1 <%s>: Sender address not owned by user %s",
                 txn->sender, txn->auth_user);
        return -1;
    }
    return 0;
}

/* Whether a local address has a mailbox (the postmaster and the PEC service
 * address always have one); with Dovecot's users the delivery decides. */
static bool has_mailbox(struct pecd *d, const char *addr)
{
    if (strcasecmp(addr, d->cfg->postmaster) == 0 ||
        strcasecmp(addr, d->cfg->pec_service_address) == 0 || users_db_is_dovecot(d->users))
        return true;
    /* on the event loop: a users file being reloaded counts as yes (the
     * delivery thread decides with the new copy) */
    bool stale;
    return users_db_exists_nb(d->users, addr, &stale) || stale;
}

/* What the content decides, after the data, for mail from outside (not
 * authenticated) to a PEC provider (RFC 6109 §2.2.2):
 *  - a PEC message (X-Trasporto or X-Ricevuta) is taken: an unknown recipient
 *    of an envelope gets the signed errore-consegna no-dest of §3.3.3 from
 *    the delivery point.  With [pec] cleartext_pec = refuse, one that another
 *    provider sent without TLS, against §5.3, is refused with 5.7.10 (RFC
 *    5248 "Encryption needed"); by default it is taken in: its signature
 *    still protects it, the incoming point checks it as any other, and the
 *    evidence log records the missing TLS (roles.c);
 *  - ordinary mail is refused when [pec] accept_ordinary_mail = no (case 4),
 *    and when none of its recipients has a mailbox here (550 5.1.1: the
 *    sending server tells its user); when some have one, they get it in an
 *    anomaly envelope and the sender a non-delivery report for the others.
 *    Ordinary mail over cleartext is what §5.3 asks the incoming point to
 *    accept. */
static int hook_msg_check(void *arg, const struct smtp_txn *txn, const char *head, size_t len,
                          char *reply, size_t replylen)
{
    struct pecd *d = arg;
    /* every message a PEC provider takes in is signed for (a receipt, an
     * envelope): while no signer answers, nothing is acknowledged */
    if (d->cfg->pec && !keys_client_up(d->ps.keys)) {
        snprintf(reply, replylen, "451 4.3.0 Signing service unavailable, try again later");
        return -1;
    }
    if (!d->cfg->pec || txn->auth_user != NULL)
        return 0;
    char v[64];
    bool pec = mail_header_value(head, len, "X-Trasporto", v, sizeof v) ||
               mail_header_value(head, len, "X-Ricevuta", v, sizeof v);
    if (pec && txn->tls_version == NULL && d->cfg->pec_cleartext_refuse) {
        snprintf(reply, replylen, "550 5.7.10 Certified mail (PEC) between providers needs "
                                  "TLS (RFC 6109 section 5.3): use STARTTLS");
        return -1;
    }
    if (pec)
        return 0;
    if (!d->cfg->pec_accept_ordinary) {
        snprintf(reply, replylen, "550 5.7.1 Only certified mail (PEC) is accepted for these "
                                  "mailboxes");
        return -1;
    }
    const char *unknown = NULL;
    for (size_t i = 0; i < txn->nrcpts; i++) {
        const char *a = txn->rcpts[i].addr, *at = strrchr(a, '@');
        if (at == NULL || !config_is_local_domain(d->cfg, at + 1) || has_mailbox(d, a))
            return 0;
        unknown = a;
    }
    if (unknown == NULL)
        return 0;
    snprintf(reply, replylen, "550 5.1.1 <%s>: Recipient address rejected: no such mailbox here",
             unknown);
    return -1;
}

static int hook_rcpt(void *arg, const struct smtp_txn *txn, const struct smtp_path *path,
                     char *addr_out, size_t addrlen, char *reply, size_t replylen)
{
    struct pecd *d = arg;
    if (check_limits(d, txn, 0, (unsigned)txn->nrcpts + 1, reply, replylen) == -1)
        return -1;
    /* RFC 5321 §4.5.1: <postmaster> (any case, no domain) and postmaster at
     * each of our domains always reach the postmaster. */
    if (path->domain == NULL ||
        (strcasecmp(path->local, "postmaster") == 0 &&
         config_is_local_domain(d->cfg, path->domain))) {
        str_copy(addr_out, d->cfg->postmaster, addrlen);
        return 0;
    }
    if (!config_is_local_domain(d->cfg, path->domain)) {
        /* only authenticated users and relay_networks may relay */
        const struct config_listener *l = config_listener(d->cfg, txn->listener);
        if (txn->auth_user == NULL && (l == NULL || !config_relay_allowed(l, txn->client_ip))) {
            snprintf(reply, replylen, "550 5.7.1 <%s>: Relay access denied", path->addr);
            return -1;
        }
        str_copy(addr_out, path->addr, addrlen);
        return 0;
    }
    /* a PEC provider takes every address of its domains: an unknown one
     * gets a non-delivery receipt from the delivery point (§3.3.3).  Users
     * from Dovecot are not asked here (that would block the event loop):
     * delivery asks the userdb, or the LMTP server refuses. */
    bool stale = false;
    if (!d->cfg->pec && !users_db_is_dovecot(d->users) &&
        !users_db_exists_nb(d->users, path->addr, &stale)) {
        if (stale)   /* the users file changed and is being read again */
            snprintf(reply, replylen, "451 4.3.0 <%s>: users table being reloaded, try again "
                                      "in a moment", path->addr);
        else
            snprintf(reply, replylen, "550 5.1.1 <%s>: Recipient address rejected: no such "
                                      "user", path->addr);
        return -1;
    }
    users_normalise(path->addr, addr_out, addrlen);
    return 0;
}

struct msg {
    struct pecd *d;
    struct spool_writer *w;
    char qid[QUEUE_ID_LEN + 1];
    void (*done)(void *, int);
    void *cbarg;
    bool finished;              /* END written (before the callouts) */
    smtp_filter_done fdone;
    void *fcbarg;
};

static void *hook_msg_open(void *arg, const struct smtp_txn *txn, char *qid, size_t qidlen)
{
    struct pecd *d = arg;
    count_sent(d, txn);
    struct queue_env env = {0};
    queue_new_id(env.qid);
    env.arrival = time(NULL);
    env.sender = (char *)txn->sender;
    env.nrcpts = txn->nrcpts;
    env.rcpts = calloc(txn->nrcpts, sizeof *env.rcpts);
    for (size_t i = 0; i < txn->nrcpts; i++) {
        env.rcpts[i].addr = txn->rcpts[i].addr;
        env.rcpts[i].orig = txn->rcpts[i].orig;
        env.rcpts[i].notify = txn->rcpts[i].notify;
        env.rcpts[i].orcpt = txn->rcpts[i].orcpt;
    }
    env.body = (int)txn->body;
    env.ret = (int)txn->ret;
    env.smtputf8 = txn->smtputf8;
    env.requiretls = txn->requiretls;
    env.envid = (char *)txn->envid;
    env.client_ip = (char *)txn->client_ip;
    env.helo = (char *)txn->helo;
    env.auth_user = (char *)txn->auth_user;
    env.auth_mech = (char *)txn->auth_mech;
    char tls[128];
    if (txn->tls_version) {
        snprintf(tls, sizeof tls, "%s %s", txn->tls_version, txn->tls_cipher);
        env.tls = tls;
    }
    env.proto = (char *)txn->proto;
    env.listener = (char *)txn->listener;
    if (d->cfg->pec) {
        /* which PEC role takes the message (roles.c) */
        bool all_local = true;
        for (size_t i = 0; i < txn->nrcpts; i++) {
            const char *at = strrchr(txn->rcpts[i].addr, '@');
            all_local = all_local && at && config_is_local_domain(d->cfg, at + 1);
        }
        if (txn->auth_user != NULL && strcmp(txn->listener, "mx") != 0)
            env.stage = "submission";
        else if (txn->auth_user == NULL && all_local)
            env.stage = "incoming";
    }
    char name[64];
    int fd = committer_take_file(queue_committer(d->queue), name, sizeof name);
    struct spool_writer *w = spool_writer_open(d->cfg->queue_dir, fd, name, &env);
    free(env.rcpts);
    if (w == NULL)
        return NULL;
    struct msg *m = calloc(1, sizeof *m);
    m->d = d;
    m->w = w;
    str_copy(m->qid, env.qid, sizeof m->qid);
    str_copy(qid, env.qid, qidlen);
    return m;
}

static int hook_msg_write(void *msg, const void *buf, size_t len)
{
    struct msg *m = msg;
    return spool_writer_data(m->w, buf, len);
}

static void hook_msg_abort(void *msg)
{
    struct msg *m = msg;
    spool_writer_abort(m->w);
    free(m);
}

static void committed(void *arg, int result)
{
    struct msg *m = arg;
    /* answer (and log) first, then hand the message to delivery */
    m->done(m->cbarg, result);
    if (result == 0)
        queue_enqueue(m->d->queue, m->qid);
    free(m);
}

static void hook_msg_commit(void *msg, void (*done)(void *, int), void *cbarg)
{
    struct msg *m = msg;
    m->done = done;
    m->cbarg = cbarg;
    if (!m->finished && spool_writer_finish(m->w) == -1) {
        log_err("%s: spool write failed: %s", m->qid, strerror(errno));
        spool_writer_abort(m->w);
        done(cbarg, -1);
        free(m);
        return;
    }
    committer_submit(queue_committer(m->d->queue), m->w, committed, m);
}

/* The callout stage (src/filters/stage.c): antivirus and milters run on the
 * finished spool file before it is committed. */
static void filtered(void *arg, enum callout_verdict v, const char *reply)
{
    struct msg *m = arg;
    m->fdone(m->fcbarg,
             v == CALLOUT_ACCEPT   ? SMTP_FILTER_ACCEPT
             : v == CALLOUT_REFUSE ? SMTP_FILTER_REFUSE
                                   : SMTP_FILTER_DISCARD,
             reply);
}

void pecd_msg_filter(void *msg, const struct smtp_txn *txn, smtp_filter_done done,
                     void *cbarg)
{
    struct msg *m = msg;
    (void)txn;
    if (spool_writer_finish(m->w) == -1) {
        log_err("%s: spool write failed: %s", m->qid, strerror(errno));
        done(cbarg, SMTP_FILTER_REFUSE, "451 4.3.0 Queue file write error, try again later");
        return;
    }
    m->finished = true;
    m->fdone = done;
    m->fcbarg = cbarg;
    callout_stage_submit(m->d->callouts, spool_writer_name(m->w), filtered, m);
}

/* ---- PEC timeout notices (§3.1.6) ------------------------------------------ */

/* Every second, the oldest of the messages taken in longer ago than
 * [timers] duplicate_window are forgotten, a few thousand at a time (each
 * call a few milliseconds): the record of them would otherwise grow with
 * every message received. */
#define SEEN_PURGE_MAX 2000

static void on_seen_purge(evutil_socket_t fd, short what, void *arg)
{
    struct pecd *d = arg;
    (void)fd;
    (void)what;
    long n = tracking_purge_seen(d->tracking, time(NULL) - (time_t)d->cfg->duplicate_window,
                                 SEEN_PURGE_MAX);
    if (n > 0)
        log_debug("tracking: %ld messages taken in before the duplicate window forgotten", n);
}

/* ---- housekeeping, on every instance ------------------------------------------ */

/* The quarantine store is kept for its retention (infected messages: 30
 * months, RFC 6109 §3.2.3) and purged by whole days, PEC or not: ordinary
 * mail is quarantined too (filters, viruses). */
static void purge_quarantine(const struct config *cfg)
{
    char err[256];
    int days = quarantine_purge(cfg->av_quarantine,
                                time(NULL) - (time_t)cfg->av_quarantine_retention, err,
                                sizeof err);
    if (days == -1)
        log_err("quarantine: cannot purge: %s", err);
    else if (days > 0)
        log_info("quarantine: %d days past retention removed", days);
}

/* RFC 6109 §4.1: an accurate temporal reference.  Checked at start and every
 * ten minutes; an unsynchronised clock is an error in the log each time (the
 * provider keeps working: refusing mail would not make the clock right). */
static void check_clock(struct pecd *d)
{
    char why[300];
    enum clock_state s = clock_check(why, sizeof why);
    if (s == CLOCK_UNSYNCED)
        log_err("%s", why);
    else if (s == CLOCK_UNKNOWN)
        log_warn("%s", why);
    else if (d->clock_state != CLOCK_SYNCED)
        log_info("%s", why);
    d->clock_state = (int)s;
}

static void on_clock(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    check_clock(arg);
}

static void on_housekeeping(evutil_socket_t fd, short what, void *arg)
{
    struct pecd *d = arg;
    (void)fd;
    (void)what;
    purge_quarantine(d->cfg);
}

/* ---- signals and shutdown ------------------------------------------------- */

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    struct pecd *d = arg;
    (void)fd;
    (void)what;
    size_t n = smtp_server_sessions(d->smtp);
    if (n == 0 || time(NULL) - d->drain_started >= 10) {
        if (n > 0)
            log_warn("%zu sessions still open after 10 s; closing them", n);
        event_base_loopexit(d->base, NULL);
    }
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
    struct pecd *d = arg;
    (void)what;
    if (d->drain_timer != NULL)
        return;
    log_info("signal %d: draining (no new connections; open sessions finish)", (int)sig);
    pecd_service_stopping();
    smtp_server_drain(d->smtp);
    d->drain_started = time(NULL);
    d->drain_timer = event_new(d->base, -1, EV_PERSIST, drain_check, d);
    struct timeval tv = {0, 100000};
    event_add(d->drain_timer, &tv);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    pecd_reload(arg);
}

/* Does the queue's syncfs make path's writes durable (it shares the queue's
 * file system, [queue] sync = syncfs)?  If not, says that what (a database)
 * syncs each commit itself. */
static bool queue_syncs(const struct config *cfg, const char *what, const char *path)
{
    if (cfg->sync_fs && fs_same_fs(cfg->queue_dir, path))
        return true;
    log_info("%s %s: %s, every commit synced", what, path,
             cfg->sync_fs ? "on another file system than the queue" : "[queue] sync = fsync");
    return false;
}

/* Files with mail data, evidence or keys must not be open to other users
 * (issue 16): pecd creates them so (umask 027, 0600/0640 modes), but files
 * from an earlier version, a restore or an operator's copy may be looser. */
static void warn_loose(const char *path, const char *what, mode_t allowed)
{
    struct stat st;
    if (path == NULL || stat(path, &st) == -1)
        return;
    mode_t extra = st.st_mode & 0777 & ~allowed;
    if (extra != 0)
        log_warn("%s %s is mode %04o: open to %s; run chmod %s %s", what, path,
                 (unsigned)(st.st_mode & 07777),
                 extra & 0007 ? "every user of this host" : "its group",
                 extra & 0070 ? "go-rwx" : "o-rwx", path);
}

static void check_modes(const struct config *cfg)
{
    char p[PATH_MAX];
    warn_loose(cfg->data_dir, "data directory", 0750);
    warn_loose(cfg->queue_dir, "queue directory", 0750);
    warn_loose(cfg->passwd_file, "users file", 0640);
    warn_loose(cfg->tls_key, "TLS key", 0640);
    warn_loose(cfg->pec_signing_key, "signing key", 0640);
    static const char *const dbs[] = {"tracking.db", "tracking.db-wal", "tracking.db-shm"};
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", cfg->data_dir, dbs[i]);
        warn_loose(p, "tracking database", 0640);
    }
    static const char *const ev[] = {"", "-wal", "-shm"};
    for (size_t i = 0; cfg->evidence_path != NULL && i < sizeof ev / sizeof ev[0]; i++) {
        snprintf(p, sizeof p, "%s%s", cfg->evidence_path, ev[i]);
        warn_loose(p, "evidence log", 0640);
    }
    /* the mail tree: the part of the mailbox template before its first field */
    const char *pct = cfg->mailbox ? strchr(cfg->mailbox, '%') : NULL;
    size_t n = pct ? (size_t)(pct - cfg->mailbox) : 0;
    while (n > 0 && cfg->mailbox[n - 1] == '/')
        n--;
    if (n > 0 && n < sizeof p) {
        memcpy(p, cfg->mailbox, n);
        p[n] = '\0';
        warn_loose(p, "mail directory", 0750);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: pecd [-t] [-d] -c pecd.conf\n"
               "  -c FILE  configuration file (default /etc/pecmail/pecd.conf)\n"
               "  -t       check the configuration and exit\n"
               "  -d       debug logging\n"
               "  -V       print the version\n");
}

int main(int argc, char **argv)
{
    const char *conf = "/etc/pecmail/pecd.conf";
    bool check = false, debug = false;
    int c;
    while ((c = getopt(argc, argv, "c:tdVh")) != -1) {
        switch (c) {
        case 'c':
            conf = optarg;
            break;
        case 't':
            check = true;
            break;
        case 'd':
            debug = true;
            break;
        case 'V':
            printf("pecd %s\n", PEC_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    log_init("pecd", LOG_LVL_INFO);
    /* every file pecd creates (databases and their -wal/-shm, spool files,
     * mailboxes) is closed to other users from the start */
    umask(027);
    char err[1024];
    /* static: what an early exit leaves allocated stays reachable (not a leak) */
    static struct pecd d;
    d.conf_path = conf;
    d.cfg = config_load(conf, err, sizeof err);
    if (d.cfg == NULL) {
        log_err("configuration error: %s", err);
        return 1;
    }
    log_set_json(d.cfg->log_json);
    enum log_level lvl = LOG_LVL_INFO;
    if (d.cfg->log_level)
        log_level_parse(d.cfg->log_level, &lvl);
    log_set_level(debug ? LOG_LVL_DEBUG : lvl);

    if (check) {
        if (pecd_check_keys(d.cfg, err, sizeof err) == -1) {
            log_err("configuration error: %s: %s", conf, err);
            return 1;
        }
    } else {
        /* the keeper and the signer, the listeners, then [pecd] user */
        if (pecd_privsep_start(d.cfg, &d.ps, err, sizeof err) == -1) {
            log_err("configuration error: %s: %s", conf, err);
            return 1;
        }
        if (d.cfg->tls_cert != NULL &&
            (d.tls = pecd_privsep_tls(&d.ps, d.cfg, err, sizeof err)) == NULL) {
            log_err("configuration error: %s: %s", conf, err);
            return 1;
        }
    }
    d.users = users_db_open(d.cfg->passwd_file, err, sizeof err);
    if (d.users == NULL) {
        log_err("configuration error: %s", err);
        return 1;
    }
    if (d.cfg->dovecot_auth != NULL)
        users_db_use_dovecot(d.users, d.cfg->dovecot_auth, d.cfg->dovecot_userdb,
                             (unsigned)d.cfg->users_timeout * 1000);
    if (d.cfg->sender_map != NULL) {
        d.senders = sender_map_open(d.cfg->sender_map, err, sizeof err);
        if (d.senders == NULL) {
            log_err("configuration error: [users] senders: %s", err);
            return 1;
        }
    }
    if (check) {
        if (d.cfg->dovecot_auth != NULL)
            printf("%s: configuration OK (users from Dovecot at %s)\n", conf,
                   d.cfg->dovecot_auth);
        else
            printf("%s: configuration OK (%zu users)\n", conf,
                   users_db_count(d.users));
        return 0;
    }

    /* room for max_connections sockets plus files */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < d.cfg->max_connections + 256) {
        rl.rlim_cur = rl.rlim_max < d.cfg->max_connections + 256 ? rl.rlim_max
                                                                  : d.cfg->max_connections + 256;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    d.base = event_base_new();
    d.transport = transport_new(d.cfg, err, sizeof err);
    if (d.transport == NULL) {
        log_err("configuration error: %s", err);
        return 1;
    }
    if (d.cfg->dovecot_userdb != NULL)
        transport_set_users(d.transport, users_lookup_cb, d.users);
    transport_set_quota(d.transport, users_quota_cb, d.users);
    d.auth = auth_worker_new(d.base, d.users, 4);
    if (d.auth == NULL) {
        log_err("cannot start the authentication threads");
        return 1;
    }
    d.queue = queue_new(d.base, d.cfg, transport_deliver, d.transport, err, sizeof err);
    if (d.queue == NULL) {
        log_err("queue: %s", err);
        return 1;
    }
    if (d.cfg->pec) {
        char tpath[PATH_MAX];
        snprintf(tpath, sizeof tpath, "%s/tracking.db", d.cfg->data_dir);
        d.tracking = tracking_open(tpath, err, sizeof err);
        if (d.tracking == NULL) {
            log_err("%s", err);
            return 1;
        }
        if (!queue_syncs(d.cfg, "tracking database", tpath) &&
            tracking_sync_each(d.tracking, true) == -1) {
            log_err("tracking database %s: cannot set synchronous=FULL", tpath);
            return 1;
        }
        if (pecd_privsep_dir_client_key(&d.ps, d.cfg, err, sizeof err) == -1) {
            log_err("configuration error: %s", err);
            return 1;
        }
        d.roles = roles_new(d.cfg, d.transport, d.users, d.tracking,
                            keys_client_pec_signer(d.ps.keys), err, sizeof err);
        if (d.roles == NULL) {
            log_err("configuration error: %s", err);
            return 1;
        }
        d.evidence = evidence_open(d.cfg->evidence_path, err, sizeof err);
        if (d.evidence == NULL) {
            log_err("evidence log: %s", err);
            return 1;
        }
        /* a stage's events need no sync of their own when the delivery
         * threads' syncfs covers the log */
        bool stage_synced = queue_syncs(d.cfg, "evidence log", d.cfg->evidence_path);
        roles_set_evidence(d.roles, d.evidence, stage_synced);
        transport_set_pec_domains(d.transport, roles_is_pec_domain_cb, d.roles);
        queue_set_processor(d.queue, roles_process, d.roles);
        queue_set_pass_hooks(d.queue, roles_pass_begin, roles_pass_end, d.roles);
        d.seen_ev = event_new(d.base, -1, EV_PERSIST, on_seen_purge, &d);
        event_add(d.seen_ev, &(struct timeval){.tv_sec = 1});
    }
    struct smtp_hooks hooks = {
        .arg = &d,
        .auth = hook_auth,
        .auth_start = hook_auth_start,
        .mail = hook_mail,
        .rcpt = hook_rcpt,
        .msg_open = hook_msg_open,
        .msg_write = hook_msg_write,
        .msg_abort = hook_msg_abort,
        .msg_commit = hook_msg_commit,
        .msg_check = hook_msg_check,
    };
    d.callouts = callout_stage_new(d.base, d.cfg, d.evidence);
    if (callout_stage_active(d.callouts))
        hooks.msg_filter = pecd_msg_filter;
    if (d.cfg->pec && !d.cfg->av_enabled)
        log_warn("no antivirus: RFC 6109 §3.2.3 requires PEC providers to scan every message "
                 "([antivirus] clamd)");
    d.sent_msgs = smtp_throttle_new(100000, 3600 * 1000);
    d.sent_rcpts = smtp_throttle_new(100000, 3600 * 1000);
    d.smtp = smtp_server_new(d.base, d.cfg, &hooks, d.tls);
    for (size_t i = 0; i < d.cfg->nlisteners; i++) {
        if (smtp_server_listen_fds(d.smtp, &d.cfg->listeners[i], d.ps.listen_fds[i],
                                   d.ps.nfds[i], err, sizeof err) == -1) {
            log_err("%s", err);
            return 1;
        }
    }
    check_modes(d.cfg);
    if (queue_recover(d.queue) == -1)
        return 1;
    if (d.cfg->pec) {
        roles_check_certificates(d.roles);
        d.notices = notices_start(d.cfg, d.roles, d.tracking, d.queue, d.evidence);
        if (d.notices == NULL) {
            log_err("cannot start the timers' thread");
            return 1;
        }
    }
    if (pecd_metrics_start(&d, err, sizeof err) == -1) {
        log_err("configuration error: %s", err);
        return 1;
    }
    if (pecd_control_start(&d, err, sizeof err) == -1) {
        log_err("%s", err);
        return 1;
    }
    purge_quarantine(d.cfg);
    d.housekeeping_ev = event_new(d.base, -1, EV_PERSIST, on_housekeeping, &d);
    event_add(d.housekeeping_ev, &(struct timeval){.tv_sec = 3600});
    d.clock_state = -1;
    check_clock(&d);
    d.clock_ev = event_new(d.base, -1, EV_PERSIST, on_clock, &d);
    event_add(d.clock_ev, &(struct timeval){.tv_sec = 600});
    struct event *sigs[4];
    sigs[0] = evsignal_new(d.base, SIGTERM, on_term, &d);
    sigs[1] = evsignal_new(d.base, SIGINT, on_term, &d);
    sigs[2] = evsignal_new(d.base, SIGHUP, on_hup, &d);
    for (int i = 0; i < 3; i++)
        event_add(sigs[i], NULL);
    if (d.cfg->dovecot_auth != NULL)
        log_info("pecd %s ready: domain %s, users from Dovecot (%s)", PEC_VERSION,
                 d.cfg->domain, d.cfg->dovecot_auth);
    else
        log_info("pecd %s ready: domain %s, %zu users", PEC_VERSION, d.cfg->domain,
                 users_db_count(d.users));
    if (d.cfg->lmtp_host != NULL)
        log_info("local delivery through LMTP at %s%s%s", d.cfg->lmtp_host,
                 d.cfg->lmtp_port[0] ? ":" : "", d.cfg->lmtp_port);
    pecd_service_ready(&d);   /* listeners open, queue recovered */

    event_base_dispatch(d.base);

    pecd_metrics_free(&d);
    pecd_service_free(&d);

    pecd_control_stop(&d);
    notices_stop(d.notices);
    if (d.seen_ev)
        event_free(d.seen_ev);
    if (d.housekeeping_ev)
        event_free(d.housekeeping_ev);
    if (d.clock_ev)
        event_free(d.clock_ev);
    queue_free(d.queue);
    if (d.evidence != NULL) {
        char e2[256];
        if (evidence_seal(d.evidence, time(NULL), e2, sizeof e2) == -1)
            log_err("evidence log: cannot seal: %s", e2);
        evidence_close(d.evidence);
    }
    callout_stage_free(d.callouts);
    roles_free(d.roles);
    tracking_close(d.tracking);
    transport_free(d.transport);
    smtp_server_free(d.smtp);
    smtp_throttle_free(d.sent_msgs);
    sender_map_free(d.senders);
    smtp_throttle_free(d.sent_rcpts);
    auth_worker_free(d.auth);
    for (int i = 0; i < 3; i++)
        event_free(sigs[i]);
    if (d.drain_timer)
        event_free(d.drain_timer);
    event_base_free(d.base);
    users_db_free(d.users);
    SSL_CTX_free(d.tls);
    pecd_reload_free(&d);     /* configurations replaced by reloads */
    pecd_privsep_stop(&d.ps);
    config_free(d.cfg);
    log_info("stopped");
    return 0;
}
