/*
 * config.h - pecd.conf, the one INI file of a provider instance.
 *
 * Purpose: config_load() reads it with inih, fills every default, resolves
 * relative paths against the file's directory and checks every value; pecd
 * (at start and on SIGHUP, src/cmd/pecd_reload.c) and pecctl load it, and
 * every module reads its settings from the struct.  docs/configuration.md
 * documents every key; keep the two in step.
 * Threads: config_load/config_free on the main thread (start) or the event
 * loop (reload); a loaded struct config is read-only, so any thread may read
 * it and call the lookups.  A worker thread brackets each unit of work that
 * reads a module's configuration pointer with config_hold_begin/end; those
 * and config_retire take one mutex (config_gen.c), callable from any thread.
 * Ownership: config_load returns a struct the caller frees with config_free,
 * or after a reload hands to config_retire(config_free_cb, old); it owns
 * every string in it.  Lookups return pointers into it, valid as long as it.
 * Errors: config_load gives NULL with "FILE:LINE: reason" in err (nothing
 * starts); config_mailbox_path -1 for an unsafe or too long path; lookups
 * NULL or false when absent; config_callout_key 1/0 (err)/-1 (not its own).
 */
#ifndef PEC_CONFIG_H
#define PEC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_LISTENERS 8
#define CONFIG_MAX_ADDRS 8
#define CONFIG_MAX_ROUTES 64
#define CONFIG_MAX_CRL_URLS 16
#define CONFIG_MAX_MILTERS 16
#define CONFIG_MAX_CALLOUT_POLICIES 256

enum listener_tls { LTLS_NONE, LTLS_STARTTLS, LTLS_IMPLICIT };
enum listener_auth { LAUTH_NO, LAUTH_OPTIONAL, LAUTH_REQUIRED };

struct config_listener {
    char name[32];                  /* mx, submission, submissions */
    char *addrs[CONFIG_MAX_ADDRS];  /* "host:port" */
    size_t naddrs;
    enum listener_tls tls;
    bool require_tls;               /* refuse MAIL until STARTTLS ([mx]: no, RFC 6109 §5.3) */
    enum listener_auth auth;
    /* relay_networks: clients that may relay without AUTH (like Postfix's
     * mynetworks); empty by default */
    struct config_net { unsigned char addr[16]; int family; unsigned bits; } nets[16];
    size_t nnets;
    /* concurrent sessions on this listener, and from one client address (an
     * IPv6 /64) on it; 0 in the file = not set: config_load() fills its share
     * of [limits] max_connections and [limits] max_connections_per_ip */
    uint64_t max_connections;
    uint64_t max_connections_per_ip;
};

struct config {
    char *path;                     /* the file read */
    char *dir;                      /* its directory: base of relative paths */

    /* [provider] */
    char *domain;
    char *hostname;
    char *name;
    char *postmaster;
    struct domains *domains;        /* the local domains: domain, local_domains and
                                     * local_domains_file (domains.h) */
    char *local_domains_file;
    char *data_dir;
    char *log_level;

    /* [pecd]: the process model (src/cmd/pecd_privsep.c) */
    char *pecd_user;                /* the network-facing processes' user when started as root */

    /* [tls] */
    char *tls_cert;
    char *tls_key;
    char *tls_ciphers;              /* TLS 1.2 cipher list; NULL = OpenSSL's */
    int tls_min_version;            /* 12 or 13 */

    /* [mx] [submission] [submissions] */
    struct config_listener listeners[CONFIG_MAX_LISTENERS];
    size_t nlisteners;

    /* [limits] */
    uint64_t max_message_size;
    uint64_t max_recipients;
    uint64_t max_line_length;       /* DATA text line, octets incl. CRLF */
    uint64_t max_errors;
    uint64_t max_connections;       /* the total of the listeners' shares */
    uint64_t max_connections_per_ip;/* default of each listener's */
    uint64_t timeout_command;       /* seconds: a whole command line (absolute) */
    uint64_t timeout_data;          /* seconds without data in DATA/BDAT */
    uint64_t timeout_tls;           /* seconds: a whole TLS handshake (absolute) */
    uint64_t min_data_rate;         /* octets/s a DATA/BDAT must average after timeout_data; 0 = none */
    uint64_t auth_failure_delay;    /* seconds before a failed AUTH is answered */
    uint64_t auth_max_failures;     /* failed AUTH in one session before 421 */
    uint64_t auth_failures_per_ip;  /* in auth_failure_window, then 454; 0 = no limit */
    uint64_t auth_failures_per_account;
    uint64_t auth_failure_window;   /* seconds */
    uint64_t auth_track_max;        /* addresses (and accounts) remembered */
    /* sending limits of the submission listeners (abuse control), per hour
     * from the first message counted; 0 = none */
    uint64_t messages_per_hour;     /* per authenticated user */
    uint64_t recipients_per_hour;
    uint64_t client_messages_per_hour;   /* per client address (IPv6: its /64) */
    uint64_t client_recipients_per_hour;

    /* [queue] */
    char *queue_dir;
    uint64_t delivery_workers;
    uint64_t worker_nice;           /* nice value of the delivery threads */
    uint64_t retry_min;
    uint64_t retry_max;
    uint64_t queue_lifetime;
    uint64_t delay_warning;         /* DELAY notification after this (0 = never) */
    bool sync_fs;                   /* sync = syncfs (one flush per batch) or fsync */
    uint64_t commit_delay_us;       /* the committer gathers this long under load (0 = never) */

    /* [delivery] */
    char *mailbox;                  /* template after "maildir:" */
    char *lmtp_host;                /* mailbox = lmtp:HOST:PORT or lmtp:unix:PATH; NULL = Maildir */
    char *lmtp_port;                /* "24"...; "" for a unix socket (lmtp_host is its path) */
    uint64_t delivery_quota;        /* octets per Maildir unless the user has a rule; 0 = none */

    /* [users] */
    char *passwd_file;
    char *sender_map;               /* [users] senders: logins that may send as other addresses */
    char *dovecot_auth;             /* users = dovecot:PATH (auth-client socket); NULL = passwd-file */
    char *dovecot_userdb;           /* userdb = PATH (auth-userdb socket), optional */
    uint64_t users_timeout;         /* seconds per Dovecot request */

    /* [outbound] */
    char *out_helo;                 /* default: hostname */
    char *out_tls;                  /* default policy name: none|may|encrypt|verify|dane */
    char *out_ca_file;              /* trust anchors for verify */
    uint64_t out_timeout;
    uint64_t out_max_per_destination;
    char *dns_trust_anchor;         /* DNSSEC trust anchor file; unset = no validation */
    char *dns_server;               /* forward DNS queries here ("IP[@PORT]"); unset = resolv.conf */
    uint64_t mx_port;               /* port of MX hosts (25; other values are for tests) */

    /* [pec]: the provider roles (RFC 6109) */
    bool pec;                       /* enabled */
    char *pec_signing_key;          /* PEM file, or a pkcs11: URI (RFC 7512) */
    char *pec_signing_cert;         /* the signer certificate, then its chain */
    char *pec_pkcs11_module;        /* the PKCS#11 module of pkcs11: keys */
    char *pec_pkcs11_pin_file;      /* its user PIN (first line) */
    char *pec_trust;                /* CA bundle for incoming signatures */
    char *pec_crl;                  /* optional CRL file (PEM) */
    char *pec_directory;            /* providers' directory: LDIF path, ldap[s]://host:port/base,
                                       https://host/path.p7m or a *.p7m file (signed, issue 19) */
    char *pec_dir_bind_dn;          /* LDAP simple bind DN; NULL = anonymous */
    char *pec_dir_password;         /* its password (or read from pec_dir_password_file) */
    char *pec_dir_password_file;
    bool pec_dir_starttls;          /* StartTLS on ldap:// */
    char *pec_dir_ca_file;          /* CA of the LDAP server; NULL = the system's */
    uint64_t pec_dir_refresh;       /* seconds between refreshes (1h); 0 = SIGHUP only */
    uint64_t pec_dir_timeout;       /* LDAP and CRL download timeout, seconds (30) */
    bool pec_dir_refresh_set;       /* directory_refresh given (else https: 1d, others 1h) */
    char *pec_dir_client_cert;      /* directory_client_cert: TLS client certificate (PEM) */
    char *pec_dir_client_key;       /* directory_client_key (PEM) */
    char *pec_dir_signer;           /* directory_signer: PEM certificates that may sign a .p7m */
    char *pec_dir_location_url;     /* directory_location_url: our LDIFLocationURL (publish) */
    char *pec_dir_description;      /* directory_description: our record's description */
    char *pec_signing_cert_next;    /* signing_certificate_next: published beside the current */
    char *pec_crl_urls[CONFIG_MAX_CRL_URLS]; /* extra CRLs: file:, http:, https: */
    size_t pec_n_crl_urls;
    char *pec_service_address;      /* posta-certificata@<domain> */
    uint64_t pec_max_total;         /* size x recipients limit (30 MB, §3.1.1) */
    bool pec_accept_ordinary;       /* ordinary mail for a PEC mailbox: anomaly (yes) or 550 */
    bool pec_cleartext_refuse;      /* PEC over cleartext on [mx]: 550 5.7.10 (refuse) or taken
                                       in and logged (accept, the default) */
    char *pec_tls_policy;           /* TLS policy towards other providers (verify) */
    char *pec_timezone;             /* the legal time of §4.2 (Europe/Rome) */

    /* [timers] (§3.1.6) */
    uint64_t timer_preavviso;       /* 12h */
    uint64_t timer_mancata_consegna;/* 24h; the second notice, not before 22h */
    uint64_t duplicate_window;      /* 7d: how long a message taken in is remembered */

    /* [evidence] */
    char *evidence_path;            /* SQLite file of the evidence log */
    uint64_t evidence_retention;    /* seconds; 30 months */

    /* [routes] and [tls_policy]: domain -> value */
    struct config_kv { char *key; char *value; } routes[CONFIG_MAX_ROUTES], tls_policies[CONFIG_MAX_ROUTES];
    size_t nroutes, ntls_policies;

    /* [antivirus] (config_callout.c; docs/antivirus.md) */
    bool av_enabled;                /* yes when clamd is set, unless enabled = no */
    char *av_clamd;                 /* "unix:/path" or "tcp:HOST:PORT"; NULL = no scanner */
    uint64_t av_timeout;            /* seconds, per scan */
    uint64_t av_pool_size;          /* persistent clamd connections */
    bool av_fail_open;              /* scanner down: accept unscanned (warned) */
    char *av_quarantine;            /* infected messages, kept av_quarantine_retention */
    uint64_t av_quarantine_retention;   /* seconds; 30 months */

    /* [milter.NAME] (docs/milter.md) */
    struct config_milter {
        char *name;                 /* NAME: in logs, trace headers and [callouts] lists */
        char *socket;               /* unix:/path, inet:PORT@HOST, inet:HOST:PORT */
        unsigned phase;             /* CONFIG_PHASE_* bits */
        int dflt;                   /* CONFIG_FAIL_*: when the filter cannot be reached */
        uint64_t timeout;           /* seconds, each read/write and the end of message */
    } milters[CONFIG_MAX_MILTERS];
    size_t nmilters;

    /* [callouts] (docs/opes.md): consent per domain and per user (RFC 3238 §2.1) */
    char *callouts_default;         /* list of callout names; "antivirus" */
    struct config_kv callout_policies[CONFIG_MAX_CALLOUT_POLICIES];   /* address|domain -> list */
    size_t ncallout_policies;
    uint64_t callout_workers;       /* threads running callouts */

    /* [metrics] and [log] (docs/operator-guide.md, "Metrics" and "Logs") */
    char *metrics_listen;           /* HOST:PORT of the Prometheus endpoint; NULL = off */
    bool log_json;                  /* [log] format = json: JSON lines on stderr */

    /* [state] (config_state.c; docs/configuration.md, docs/scaling.md): where the
     * tracking records, the evidence log and the quarantine index live */
    char *state_database;           /* postgresql://...; NULL = SQLite under data_dir */
    char *state_node;               /* this node's name (required with PostgreSQL) */
    char *state_password_file;      /* the database password (else the URI or ~/.pgpass) */
    uint64_t state_lease;           /* seconds a spool lease lasts without renewal (30) */
    uint64_t state_connect_timeout; /* seconds to connect to the database (5) */
};
enum { CONFIG_PHASE_INCOMING = 1, CONFIG_PHASE_OUTGOING = 2 };
enum { CONFIG_FAIL_TEMPFAIL, CONFIG_FAIL_ACCEPT, CONFIG_FAIL_REJECT };

/* Returns a config or NULL with the reason ("FILE:LINE: reason") in err. */
struct config *config_load(const char *path, char *err, size_t errlen);
void config_free(struct config *cfg);
bool config_is_local_domain(const struct config *cfg, const char *domain);
/* A [state] node name: 1 to 64 of a-z 0-9 . - _, not starting with . or - (it names
 * files and directories: spools/NODE in a backup). */
bool config_node_name_ok(const char *name);
/* Path of the Maildir of address user@domain per the template (%u %n %d),
 * in lower case (one mailbox whatever the case of the address). */
int config_mailbox_path(const struct config *cfg, const char *local, const char *domain,
                        char *out, size_t outlen);
const struct config_listener *config_listener(const struct config *cfg, const char *name);
/* [routes]/[tls_policy] value for domain (exact, case-insensitive), then "*"; NULL if none */
const char *config_route(const struct config *cfg, const char *domain);
/* Is the textual client address ip inside one of l's relay_networks? */
bool config_relay_allowed(const struct config_listener *l, const char *ip);
const char *config_tls_policy(const struct config *cfg, const char *domain);

/* config_gen.c: lifetime of what a reload replaces (see the file's comment).
 * A worker thread brackets each unit of work that reads a module's
 * configuration pointer; the event loop retires the old objects after the
 * swap, and fn(arg) runs once no hold that began before is open. */
void config_hold_begin(void);
void config_hold_end(void);
void config_retire(void (*fn)(void *), void *arg);
size_t config_retired_pending(void);
/* At exit, after the threads are stopped: frees everything retired. */
void config_retired_flush(void);
/* config_free for config_retire */
void config_free_cb(void *cfg);
/* config_callout.c: [antivirus], [milter.NAME], [callouts].  key() returns 1
 * (taken), 0 (error, reason in err) or -1 (not one of its sections). */
void config_callout_defaults(struct config *cfg);
int config_callout_key(struct config *cfg, const char *section, const char *name,
                       const char *value, char *err, size_t errlen);
int config_callout_finish(struct config *cfg, char *err, size_t errlen);
void config_callout_free(struct config *cfg);
/* The callout list ("antivirus, dkim") that applies to address: its own
 * line, else its domain's, else the default. */
const char *config_callouts_for(const struct config *cfg, const char *address);
const struct config_milter *config_milter(const struct config *cfg, const char *name);
/* config_state.c: [state].  key() as config_callout_key(). */
void config_state_defaults(struct config *cfg);
int config_state_key(struct config *cfg, const char *section, const char *name,
                     const char *value, char *err, size_t errlen);
int config_state_finish(struct config *cfg, char *err, size_t errlen);
void config_state_free(struct config *cfg);
/* Whether where names a PostgreSQL database (postgresql:// or postgres://). */
bool config_is_postgresql(const char *where);

#endif
