/*
 * pecd.c - the provider daemon: reads pecd.conf, wires the SMTP server to the
 * queue and the mailboxes, and runs the event loop.  Argument parsing and
 * wiring only; the logic lives in src/smtp, src/queue, src/store and
 * src/provider (what is taken in: admission.c; the PEC roles: roles.c).
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
#include "provider/admission.h"
#include "provider/housekeeping.h"
#include "provider/transport.h"
#include "provider/roles.h"
#include "provider/notices.h"
#include "provider/cluster.h"
#include "store/tracking.h"
#include "store/evidence.h"
#include "store/quarantine.h"
#include "store/state.h"
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
static enum users_found users_lookup_cb(void *arg, const char *addr)
{
    return users_db_lookup(arg, addr);
}

/* The admission rules (src/provider/admission.c): the hooks pass them the
 * configuration in force. */
static int hook_mail(void *arg, const struct smtp_txn *txn, char *reply, size_t replylen)
{
    struct pecd *d = arg;
    if (!cluster_ready(d->cluster)) {
        /* several nodes: what this node takes in must be recorded in the
         * shared database, which does not answer (or the node's lease is
         * not held): the client tries again later, here or on another node */
        snprintf(reply, replylen, "451 4.3.0 Service temporarily unavailable (state database "
                                  "unreachable), try again later");
        return -1;
    }
    return admission_mail(d->admission, d->cfg, d->senders, txn, reply, replylen);
}

static int hook_msg_check(void *arg, const struct smtp_txn *txn, const char *head, size_t len,
                          char *reply, size_t replylen)
{
    struct pecd *d = arg;
    return admission_content(d->cfg, d->users, keys_client_up(d->ps.keys), txn, head, len,
                             reply, replylen);
}

static int hook_rcpt(void *arg, const struct smtp_txn *txn, const struct smtp_path *path,
                     char *addr_out, size_t addrlen, char *reply, size_t replylen)
{
    struct pecd *d = arg;
    return admission_rcpt(d->admission, d->cfg, d->users, txn, path, addr_out, addrlen, reply,
                          replylen);
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
    admission_count(d->admission, txn);
    struct queue_env env = {0};
    queue_new_id(env.qid);
    env.arrival = time(NULL);
    env.sender = (char *)txn->sender;
    env.nrcpts = txn->nrcpts;
    env.rcpts = xcalloc(txn->nrcpts, sizeof *env.rcpts);
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
    env.stage = (char *)pec_stage_name(admission_stage(d->cfg, txn));   /* the role (roles.c) */
    char name[64];
    int fd = committer_take_file(queue_committer(d->queue), name, sizeof name);
    struct spool_writer *w = spool_writer_open(d->cfg->queue_dir, fd, name, &env);
    free(env.rcpts);
    if (w == NULL)
        return NULL;
    struct msg *m = xcalloc(1, sizeof *m);
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
    state_setup(d.cfg, "pecd");
    if (state_shared(d.cfg) && state_check(conf, err, sizeof err) == -1) {
        log_err("%s", err);
        return 1;
    }
    if (check) {
        if (state_shared(d.cfg))
            printf("%s: state database reachable, schema version %d\n", conf,
                   STATE_SCHEMA_VERSION);
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
    if (state_shared(d.cfg)) {
        /* several nodes: this node's lease on its spool before its queue
         * (provider/cluster.c) */
        d.cluster = cluster_join(d.cfg, err, sizeof err);
        if (d.cluster == NULL) {
            log_err("%s", err);
            return 1;
        }
    }
    d.queue = queue_new_at(d.base, d.cfg, d.cfg->queue_dir,
                           d.cluster ? cluster_take_queue_lock(d.cluster) : -1,
                           transport_deliver, d.transport, err, sizeof err);
    if (d.queue == NULL) {
        log_err("queue: %s", err);
        return 1;
    }
    if (d.cfg->pec) {
        char tbuf[PATH_MAX];
        const char *tpath = state_tracking_at(d.cfg, tbuf, sizeof tbuf);
        d.tracking = tracking_open(tpath, err, sizeof err);
        if (d.tracking == NULL) {
            log_err("%s", err);
            return 1;
        }
        if (!state_shared(d.cfg) && !queue_syncs(d.cfg, "tracking database", tpath) &&
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
        d.evidence = evidence_open(state_evidence_at(d.cfg), err, sizeof err);
        if (d.evidence == NULL) {
            log_err("evidence log: %s", err);
            return 1;
        }
        /* a stage's events need no sync of their own when the delivery
         * threads' syncfs covers the log (the shared database: each commit) */
        bool stage_synced = state_shared(d.cfg) ||
                            queue_syncs(d.cfg, "evidence log", d.cfg->evidence_path);
        roles_set_evidence(d.roles, d.evidence, stage_synced);
        transport_set_pec_domains(d.transport, roles_is_pec_domain_cb, d.roles);
        queue_set_processor(d.queue, roles_process, d.roles);
        queue_set_pass_hooks(d.queue, roles_pass_begin, roles_pass_end, d.roles);
    }
    if (d.cluster != NULL &&
        cluster_start(d.cluster, d.base, d.queue, d.roles, d.transport, d.tracking, err,
                      sizeof err) == -1) {
        log_err("%s", err);
        return 1;
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
    d.admission = admission_new();
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
    /* the duplicate record's window: here with one node; with the state
     * shared, the cluster's thread (no database I/O on the event loop) */
    d.housekeeping = housekeeping_start(d.base, d.cfg,
                                        d.tracking != NULL && !state_shared(d.cfg) ? d.tracking
                                                                                   : NULL);
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
    cluster_stop(d.cluster);
    housekeeping_stop(d.housekeeping);
    queue_free(d.queue);
    if (d.evidence != NULL) {
        housekeeping_final_seal(d.evidence);   /* no stage runs any more */
        evidence_close(d.evidence);
    }
    callout_stage_free(d.callouts);
    roles_free(d.roles);
    tracking_close(d.tracking);
    transport_free(d.transport);
    smtp_server_free(d.smtp);
    admission_free(d.admission);
    sender_map_free(d.senders);
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
