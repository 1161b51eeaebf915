/*
 * test_config.c - pecd.conf: defaults, relative paths, and errors that name
 * the file, the line and the reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/timex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/config.h"
#include "lib/domains.h"
#include "lib/lib.h"

static char path[512];

static struct config *load_text(const char *text, char *err, size_t errlen)
{
    fs_mkdirs(TEST_TMPDIR, 0700);
    snprintf(path, sizeof path, "%s/pecd.conf", TEST_TMPDIR);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return config_load(path, err, errlen);
}

static void test_defaults(void **state)
{
    (void)state;
    char err[512];
    struct config *cfg = load_text("[provider]\ndomain = Example.IT\n[mx]\nlisten = 127.0.0.1:2525\n"
                                   "tls = none\nrequire_tls = no\n", err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(cfg->domain, "example.it");
    assert_string_equal(cfg->postmaster, "postmaster@example.it");
    assert_int_equal(cfg->max_message_size, 60ull * 1024 * 1024);
    assert_int_equal(cfg->max_recipients, 100);
    assert_int_equal(cfg->timeout_command, 300);
    assert_int_equal(cfg->delivery_workers, 2);      /* 8 with [pec] enabled */
    assert_int_equal(cfg->worker_nice, 19);
    assert_int_equal(cfg->commit_delay_us, 1000);
    assert_int_equal(cfg->duplicate_window, 7 * 86400);
    char expect[600];
    snprintf(expect, sizeof expect, "%s/queue", TEST_TMPDIR);
    assert_string_equal(cfg->queue_dir, expect);
    assert_true(config_is_local_domain(cfg, "EXAMPLE.it"));
    assert_false(config_is_local_domain(cfg, "other.it"));
    const struct config_listener *l = config_listener(cfg, "mx");
    assert_non_null(l);
    assert_int_equal(l->tls, LTLS_NONE);
    char mb[600];
    assert_int_equal(config_mailbox_path(cfg, "alice", "EXAMPLE.it", mb, sizeof mb), 0);
    snprintf(expect, sizeof expect, "%s/mail/example.it/alice", TEST_TMPDIR);
    assert_string_equal(mb, expect);
    /* one mailbox whatever the case (issue 16 item 3) */
    assert_int_equal(config_mailbox_path(cfg, "ALICE", "example.it", mb, sizeof mb), 0);
    assert_string_equal(mb, expect);
    /* addresses never climb out of the mail tree */
    assert_int_equal(config_mailbox_path(cfg, "../root", "example.it", mb, sizeof mb), -1);
    assert_int_equal(config_mailbox_path(cfg, "a/b", "example.it", mb, sizeof mb), -1);
    assert_int_equal(config_mailbox_path(cfg, "a", "..", mb, sizeof mb), -1);
    config_free(cfg);
}

static void test_values(void **state)
{
    (void)state;
    char err[512];
    struct config *cfg = load_text(
        "[provider]\ndomain = example.it\nlocal_domains = a.it, B.it\n"
        "[tls]\ncertificate = c.pem\nkey = /abs/k.pem\n"
        "[submission]\nlisten = 127.0.0.1:1587, [::1]:1587\n"
        "[limits]\nmax_message_size = 30M\ntimeout_command = 2m\n"
        "[timers_are_not_here]\nx = 1\n", err, sizeof err);
    assert_null(cfg);
    if (strstr(err, ":13: unknown section [timers_are_not_here]") == NULL)
        fail_msg("%s", err);
    cfg = load_text("[provider]\ndomain = example.it\nlocal_domains = a.it, B.it\n"
                    "[tls]\ncertificate = c.pem\nkey = /abs/k.pem\n"
                    "[submission]\nlisten = 127.0.0.1:1587, [::1]:1587\n"
                    "[limits]\nmax_message_size = 30M\ntimeout_command = 2m\n", err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_true(config_is_local_domain(cfg, "b.it"));
    assert_int_equal(cfg->max_message_size, 30ull * 1024 * 1024);
    assert_int_equal(cfg->timeout_command, 120);
    assert_string_equal(cfg->tls_key, "/abs/k.pem");
    char expect[600];
    snprintf(expect, sizeof expect, "%s/c.pem", TEST_TMPDIR);
    assert_string_equal(cfg->tls_cert, expect);
    const struct config_listener *l = config_listener(cfg, "submission");
    assert_int_equal(l->naddrs, 2);
    assert_false(config_relay_allowed(l, "127.0.0.1"));
    assert_int_equal(l->auth, LAUTH_REQUIRED);
    assert_true(l->require_tls);
    config_free(cfg);
    /* [queue] commit_delay: milliseconds, microseconds, off */
    static const struct {
        const char *v;
        uint64_t us;
    } delays[] = {{"2ms", 2000}, {"3", 3000}, {"500us", 500}, {"0", 0}, {"100ms", 100000}};
    for (size_t i = 0; i < sizeof delays / sizeof delays[0]; i++) {
        char text[200];
        snprintf(text, sizeof text, "[provider]\ndomain = x.it\n[mx]\nlisten = 127.0.0.1:25\ntls = none\n"
                 "require_tls = no\n[queue]\ncommit_delay = %s\n",
                 delays[i].v);
        cfg = load_text(text, err, sizeof err);
        if (cfg == NULL)
            fail_msg("%s: %s", delays[i].v, err);
        assert_int_equal(cfg->commit_delay_us, delays[i].us);
        config_free(cfg);
    }
}

static void test_relay_networks(void **state)
{
    (void)state;
    char err[512];
    struct config *cfg = load_text("[provider]\ndomain = x.it\n[mx]\nlisten = 127.0.0.1:25\n"
                                   "tls = none\nrequire_tls = no\n"
                                   "relay_networks = 127.0.0.0/8, 10.1.2.0/23, ::1\n", err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    const struct config_listener *l = config_listener(cfg, "mx");
    assert_true(config_relay_allowed(l, "127.0.0.1"));
    assert_true(config_relay_allowed(l, "127.255.0.9"));
    assert_true(config_relay_allowed(l, "10.1.3.200"));
    assert_false(config_relay_allowed(l, "10.1.4.1"));
    assert_true(config_relay_allowed(l, "::1"));
    assert_false(config_relay_allowed(l, "::2"));
    assert_false(config_relay_allowed(l, "192.0.2.1"));
    config_free(cfg);
    assert_null(load_text("[provider]\ndomain = x.it\n[mx]\nlisten = 127.0.0.1:25\n"
                          "relay_networks = 10.0.0.0/33\n", err, sizeof err));
    assert_non_null(strstr(err, ":5: relay_networks: '10.0.0.0' is not"));
}

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *err;
    } cases[] = {
        {"[provider]\ndomain = x.it\n[limits]\nmax_recipients = lots\n",
         ":4: max_recipients: 'lots' is not a number or size"},
        {"[provider]\ndomain = x.it\nfoo = 1\n", ":3: unknown key 'foo' in [provider]"},
        {"[provider]\ndomain = x.it\n[limits]\ntimeout_data = 5 minutes\n",
         ":4: timeout_data: '5 minutes' is not a duration"},
        {"[provider]\ndomain = x.it\n[mx]\ntls = maybe\n", ":4: tls: 'maybe' is not starttls"},
        {"[provider]\ndomain = x.it\n[tls]\nmin_version = TLSv1.0\n", ":4: min_version"},
        {"[provider]\ndomain = x.it\nthis line is not ini\n", ":3: syntax error"},
        {"[mx]\nlisten = 127.0.0.1:25\n", "[provider] domain is required"},
        {"[provider]\ndomain = x.it\n", "no listener"},
        {"[provider]\ndomain = x.it\n[mx]\nlisten = 127.0.0.1:25\n",
         "[tls] certificate and key are required"},
        {"[provider]\ndomain = x.it\n[mx]\nlisten = 127.0.0.1\n", ":4: listen: '127.0.0.1' is not HOST:PORT"},
        {"[provider]\ndomain = x.it\n[mx]\nlisten = 127.0.0.1:25\ntls = none\nrequire_tls = yes\n",
         "require_tls = yes needs tls"},
        {"[provider]\ndomain = x.it\n[mx]\nlisten = 127.0.0.1:25\ntls = none\n[pec]\n"
         "cleartext_pec = maybe\n",
         ":7: cleartext_pec: 'maybe' is not accept or refuse"},
        {"[provider]\ndomain = x.it\n[submission]\nlisten = 127.0.0.1:25\ntls = none\nrequire_tls = no\n",
         "AUTH is only offered over TLS"},
        {"[provider]\ndomain = x.it\n[delivery]\nmailbox = mbox:/var/mail\n", ":4: mailbox:"},
        {"[provider]\ndomain = x.it\n[queue]\nworker_nice = 20\n", ":4: worker_nice: 0 to 19"},
        {"[provider]\ndomain = x.it\n[queue]\nworker_nice = -5\n", ":4: worker_nice:"},
        {"[provider]\ndomain = x.it\n[queue]\ncommit_delay = 1s\n", ":4: commit_delay: '1s' is not"},
        {"[provider]\ndomain = x.it\n[queue]\ncommit_delay = -1\n", ":4: commit_delay: '-1' is not"},
        {"[provider]\ndomain = x.it\n[queue]\ncommit_delay = 101ms\n", ":4: commit_delay: 101ms is above"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        struct config *cfg = load_text(cases[i].text, err, sizeof err);
        if (cfg != NULL || strstr(err, cases[i].err) == NULL || strstr(err, path) == NULL)
            fail_msg("case %zu: got '%s', expected '%s'", i, err, cases[i].err);
    }
    char err[512];
    assert_null(config_load(TEST_TMPDIR "/missing.conf", err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
}

static void test_scalars(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(parse_size("10", &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(parse_size("2K", &v), 0);
    assert_int_equal(v, 2048);
    assert_int_equal(parse_size("30MB", &v), 0);
    assert_int_equal(v, 30ull << 20);
    assert_int_equal(parse_size("-1", &v), -1);
    assert_int_equal(parse_size("1X", &v), -1);
    assert_int_equal(parse_size("99999999999999999999", &v), -1);
    assert_int_equal(parse_duration("12h", &v), 0);
    assert_int_equal(v, 43200);
    assert_int_equal(parse_duration("2d", &v), 0);
    assert_int_equal(v, 172800);
    assert_int_equal(parse_duration("1y", &v), -1);
    bool b;
    assert_int_equal(parse_bool("Yes", &b), 0);
    assert_true(b);
    assert_int_equal(parse_bool("off", &b), 0);
    assert_false(b);
    assert_int_equal(parse_bool("maybe", &b), -1);
}

/* RFC 6109 §5.3: the incoming point offers STARTTLS and accepts cleartext
 * (for ordinary mail); the submission listeners still require TLS.  A PEC
 * message over cleartext is taken in unless [pec] cleartext_pec = refuse. */
static void test_mx_accepts_cleartext(void **state)
{
    (void)state;
    char err[512];
    static const char base[] = "[provider]\ndomain = x.it\n[tls]\ncertificate = c.pem\n"
                               "key = k.pem\n[mx]\nlisten = 127.0.0.1:25\n"
                               "[submission]\nlisten = 127.0.0.1:587\n"
                               "[submissions]\nlisten = 127.0.0.1:465\n";
    struct config *cfg = load_text(base, err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    const struct config_listener *mx = config_listener(cfg, "mx");
    assert_int_equal(mx->tls, LTLS_STARTTLS);
    assert_false(mx->require_tls);
    assert_true(config_listener(cfg, "submission")->require_tls);
    assert_true(config_listener(cfg, "submissions")->require_tls);
    assert_false(cfg->pec_cleartext_refuse);
    config_free(cfg);
    char text[1024];
    snprintf(text, sizeof text, "%s[pec]\ncleartext_pec = refuse\n", base);
    cfg = load_text(text, err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_true(cfg->pec_cleartext_refuse);
    config_free(cfg);
    snprintf(text, sizeof text, "%s[pec]\ncleartext_pec = accept\n[mx]\nrequire_tls = yes\n",
             base);
    cfg = load_text(text, err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_false(cfg->pec_cleartext_refuse);
    assert_true(config_listener(cfg, "mx")->require_tls);
    config_free(cfg);
}

/* [pec] directory* and crl_urls (issue 7): the values each key takes. */
#define PEC_BASE "[provider]\ndomain = x.it\n[mx]\nlisten = 127.0.0.1:25\ntls = none\n" \
                 "require_tls = no\n[pec]\n"

static void test_pec_directory_keys(void **state)
{
    (void)state;
    char err[512];
    struct config *cfg = load_text(PEC_BASE "directory = dir.ldif\n", err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    char expect[600];
    snprintf(expect, sizeof expect, "%s/dir.ldif", TEST_TMPDIR);
    assert_string_equal(cfg->pec_directory, expect);   /* relative to the file */
    assert_int_equal(cfg->pec_dir_refresh, 3600);        /* defaults */
    assert_int_equal(cfg->pec_dir_timeout, 30);
    assert_false(cfg->pec_dir_starttls);
    assert_null(cfg->pec_dir_bind_dn);
    assert_null(cfg->pec_dir_ca_file);
    assert_int_equal(cfg->pec_n_crl_urls, 0);
    config_free(cfg);
    cfg = load_text(PEC_BASE "directory = file:/etc/pecmail/directory.ldif\n"
                             "directory_refresh = 0s\n", err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(cfg->pec_directory, "/etc/pecmail/directory.ldif");
    assert_int_equal(cfg->pec_dir_refresh, 0);
    config_free(cfg);
    cfg = load_text(PEC_BASE "directory = ldap://ldap.example:389/o=postacert\n"
                             "directory_starttls = yes\ndirectory_ca_file = ldap-ca.pem\n"
                             "directory_bind_dn = cn=pecd,o=postacert\n"
                             "directory_password_file = /etc/pecmail/ldap.secret\n"
                             "directory_refresh = 10m\ndirectory_timeout = 10m\n"
                             "crl_urls = http://crl.example/ca.crl, file:/x.crl https://c/d\n",
                    err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->pec_directory, "ldap://ldap.example:389/o=postacert");
    assert_true(cfg->pec_dir_starttls);
    snprintf(expect, sizeof expect, "%s/ldap-ca.pem", TEST_TMPDIR);
    assert_string_equal(cfg->pec_dir_ca_file, expect);
    assert_string_equal(cfg->pec_dir_bind_dn, "cn=pecd,o=postacert");
    assert_string_equal(cfg->pec_dir_password_file, "/etc/pecmail/ldap.secret");
    assert_int_equal(cfg->pec_dir_refresh, 600);
    assert_int_equal(cfg->pec_dir_timeout, 600);
    assert_int_equal(cfg->pec_n_crl_urls, 3);
    assert_string_equal(cfg->pec_crl_urls[1], "file:/x.crl");
    assert_string_equal(cfg->pec_crl_urls[2], "https://c/d");
    config_free(cfg);
    /* issue 19: the signed directory over HTTPS, refreshed daily by default */
    cfg = load_text(PEC_BASE "directory = https://dir.example:8443/igpec.ldif.p7m\n"
                             "directory_signer = signer.pem\ndirectory_client_cert = c.pem\n"
                             "directory_client_key = /k/c.key\n"
                             "directory_location_url = https://pec.example/a.p7m\n"
                             "directory_description = Servizi PEC\n"
                             "signing_certificate_next = next.pem\n", err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->pec_directory, "https://dir.example:8443/igpec.ldif.p7m");
    assert_int_equal(cfg->pec_dir_refresh, 86400);
    snprintf(expect, sizeof expect, "%s/signer.pem", TEST_TMPDIR);
    assert_string_equal(cfg->pec_dir_signer, expect);
    snprintf(expect, sizeof expect, "%s/c.pem", TEST_TMPDIR);
    assert_string_equal(cfg->pec_dir_client_cert, expect);
    assert_string_equal(cfg->pec_dir_client_key, "/k/c.key");
    snprintf(expect, sizeof expect, "%s/next.pem", TEST_TMPDIR);
    assert_string_equal(cfg->pec_signing_cert_next, expect);
    assert_string_equal(cfg->pec_dir_location_url, "https://pec.example/a.p7m");
    assert_string_equal(cfg->pec_dir_description, "Servizi PEC");
    config_free(cfg);
    cfg = load_text(PEC_BASE "directory = https://d/d.p7m\ndirectory_signer = s.pem\n"
                             "directory_refresh = 2h\n", err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cfg->pec_dir_refresh, 7200);      /* said explicitly: kept */
    config_free(cfg);
    cfg = load_text(PEC_BASE "directory = file:d.p7m\ndirectory_signer = s.pem\n", err,
                    sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cfg->pec_dir_refresh, 3600);      /* a file: the usual hour */
    config_free(cfg);
    cfg = load_text(PEC_BASE "directory = LDAPS://[::1]:636/o=postacert\n"
                             "directory_password = s3cret\n", err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->pec_dir_password, "s3cret");
    config_free(cfg);
}

static void test_pec_directory_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *err;
    } cases[] = {
        {PEC_BASE "directory = ldap:///o=postacert\n",
         ":8: directory: 'ldap:///o=postacert' names no LDAP host (ldap://HOST:PORT/BASE)"},
        {PEC_BASE "directory = ldaps://\n", ":8: directory: 'ldaps://' names no LDAP host"},
        {PEC_BASE "directory = http://dir.example/d.p7m\n",
         ":8: directory: 'http://dir.example/d.p7m': the directory is downloaded over HTTPS only"},
        {PEC_BASE "directory = ftp://dir.example/d.ldif\n",
         ":8: directory: 'ftp://dir.example/d.ldif' is not PATH, file:PATH, https://, ldap:// or "
         "ldaps://"},
        {PEC_BASE "directory = https:///d.p7m\n",
         ":8: directory: 'https:///d.p7m' is not an https://HOST[:PORT]/PATH URL"},
        {PEC_BASE "directory_location_url = http://pec.example/a.p7m\n",
         ":8: directory_location_url: 'http://pec.example/a.p7m' is not an https:// URL"},
        /* issue 19: a signed source needs its authority; the client pair goes together */
        {PEC_BASE "directory = https://dir.example/d.p7m\n",
         ": [pec] directory https://dir.example/d.p7m is a signed directory: it needs "
         "directory_signer"},
        {PEC_BASE "directory = file:/x/d.P7M\n", "is a signed directory: it needs directory_signer"},
        {PEC_BASE "directory = https://d/d.p7m\ndirectory_signer = s.pem\n"
                  "directory_client_cert = c.pem\n",
         ": [pec] directory_client_cert and directory_client_key go together"},
        {PEC_BASE "directory_starttls = sometimes\n",
         ":8: directory_starttls: 'sometimes' is not yes or no"},
        {PEC_BASE "directory_refresh = hourly\n",
         ":8: directory_refresh: 'hourly' is not a duration (e.g. 30s, 5m, 12h)"},
        {PEC_BASE "directory_timeout = 0\n", ":8: directory_timeout: 0 is below the minimum 1"},
        {PEC_BASE "directory_timeout = 11m\n", ":8: directory_timeout: at most 10m"},
        {PEC_BASE "directory_timeout = 5 s\n", ":8: directory_timeout: '5 s' is not a duration"},
        {PEC_BASE "crl_urls = ftp://crl.example/ca.crl\n",
         ":8: crl_urls: 'ftp://crl.example/ca.crl' is not a file:, http:// or https:// URL"},
        {PEC_BASE "crl_urls = file:/a http://b ldap://c\n", ":8: crl_urls: 'ldap://c' is not"},
        {PEC_BASE "crl_urls = f:1 f:2 f:3 f:4 f:5 f:6 f:7 f:8 f:9 f:10 f:11 f:12 f:13 f:14 f:15 "
                  "f:16 f:17\n",
         ":8: crl_urls: more than 16 URLs"},
        {PEC_BASE "directory_server = x\n", ":8: unknown key 'directory_server' in [pec]"},
        {PEC_BASE "crl_url = http://x/\n", ":8: unknown key 'crl_url' in [pec]"},
        /* checks on the whole file name it, not a line */
        {PEC_BASE "directory = ldap://h/o=p\ndirectory_password = a\n"
                  "directory_password_file = b\n",
         ": [pec] directory_password and directory_password_file exclude each other"},
        {PEC_BASE "directory = ldaps://h/o=p\ndirectory_starttls = yes\n",
         ": [pec] directory_starttls does not go with ldaps://"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        struct config *cfg = load_text(cases[i].text, err, sizeof err);
        if (cfg != NULL || strstr(err, cases[i].err) == NULL || strncmp(err, path, strlen(path)))
            fail_msg("case %zu: got '%s', expected '%s'", i, err, cases[i].err);
    }
}

/* RFC 6109 §4.1 (issue 18 item 5): the decision on the kernel's clock state. */
static void test_clock_judge(void **state)
{
    (void)state;
    char why[300];
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    tx.maxerror = 16000000;
    tx.status = STA_UNSYNC;
    assert_int_equal(clock_judge(TIME_ERROR, &tx, why, sizeof why), CLOCK_UNSYNCED);
    assert_non_null(strstr(why, "NOT synchronised"));
    assert_non_null(strstr(why, "16000 ms"));
    /* STA_UNSYNC alone says the same */
    assert_int_equal(clock_judge(TIME_OK, &tx, why, sizeof why), CLOCK_UNSYNCED);
    tx.status = STA_PLL;
    tx.esterror = 120;
    tx.maxerror = 45000;
    assert_int_equal(clock_judge(TIME_OK, &tx, why, sizeof why), CLOCK_SYNCED);
    assert_non_null(strstr(why, "estimated error 120 µs"));
    assert_int_equal(clock_judge(-1, &tx, why, sizeof why), CLOCK_UNKNOWN);
    /* the real one answers one of the three */
    enum clock_state s = clock_check(why, sizeof why);
    assert_true(s == CLOCK_SYNCED || s == CLOCK_UNSYNCED || s == CLOCK_UNKNOWN);
    assert_true(why[0] != '\0');
}

static void write_file(const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", TEST_TMPDIR, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

#define MX "[mx]\nlisten = 127.0.0.1:2525\ntls = none\nrequire_tls = no\n"

/* [provider] local_domains_file (issue 23): no cap, settings per domain, and
 * a bad line named by file and line. */
static void test_domains_file(void **state)
{
    (void)state;
    char err[512];
    fs_mkdirs(TEST_TMPDIR, 0700);
    /* 100,000 domains: more than any fixed table held */
    char p[600];
    snprintf(p, sizeof p, "%s/domains", TEST_TMPDIR);
    FILE *f = fopen(p, "w");
    fputs("# customer domains\n\n", f);
    for (int i = 0; i < 100000; i++)
        fprintf(f, "c%d.example\n", i);
    fputs("Big.Example messages_per_hour=5 recipients_per_hour=0 receipt=breve "
          "callouts=none   # a comment\n", f);
    fclose(f);
    write_file("sni.crt", "x");
    write_file("sni.key", "x");
    struct config *cfg = load_text(MX "[provider]\ndomain = example.it\nlocal_domains = a.it\n"
                                   "local_domains_file = domains\n", err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_int_equal(domains_count(cfg->domains), 100000 + 3);
    assert_true(config_is_local_domain(cfg, "C99999.example"));
    assert_true(config_is_local_domain(cfg, "a.it"));
    assert_false(config_is_local_domain(cfg, "c100000.example"));
    const struct domain *d = domains_get(cfg->domains, "big.example");
    assert_non_null(d);
    assert_int_equal(d->messages_per_hour, 5);
    assert_int_equal(d->recipients_per_hour, 0);
    assert_string_equal(d->receipt, "breve");
    assert_int_equal(d->line, 100003);
    assert_int_equal(domains_get(cfg->domains, "c1.example")->messages_per_hour, DOMAIN_INHERIT);
    /* callouts: the domain's line, else [callouts] default */
    assert_string_equal(config_callouts_for(cfg, "anna@big.example"), "none");
    assert_string_equal(config_callouts_for(cfg, "anna@c1.example"), "antivirus");
    config_free(cfg);

    /* SNI: the domain or its closest parent with a certificate */
    write_file("domains", "cust.example tls_certificate=sni.crt tls_key=sni.key\n"
                          "plain.example\n");
    cfg = load_text(MX "[provider]\ndomain = example.it\nlocal_domains_file = domains\n"
                    "[tls]\ncertificate = sni.crt\nkey = sni.key\n", err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(domains_tls_for(cfg->domains, "SMTP.Cust.Example")->name,
                        "cust.example");
    assert_string_equal(domains_tls_for(cfg->domains, "cust.example")->name, "cust.example");
    assert_null(domains_tls_for(cfg->domains, "plain.example"));
    assert_null(domains_tls_for(cfg->domains, "xcust.example"));
    config_free(cfg);

    static const struct {
        const char *file, *want;
    } bad[] = {
        {"ok.example\nbad_domain!\n", "domains:2: 'bad_domain!' is not a domain name"},
        {"a.example\nb.example\nA.example\n", "domains:3: a.example is already on line 1"},
        {"a.example receipt=lunga\n", "domains:1: receipt: 'lunga' is not completa, breve or sintetica"},
        {"a.example messages_per_hour=many\n", "domains:1: messages_per_hour: 'many' is not a number"},
        {"a.example colour=blue\n", "domains:1: unknown setting 'colour'"},
        {"a.example receipt\n", "domains:1: 'receipt' is not KEY=VALUE"},
        {"a.example tls_certificate=sni.crt\n", "domains:1: tls_certificate and tls_key go together"},
        {"a.example tls_certificate=nope.crt tls_key=sni.key\n", "nope.crt: No such file"},
        {"a.example callouts=antivirus,spamfilter\n", "domains:1: [callouts] a.example: 'spamfilter'"},
        {"-a.example\n", "domains:1: '-a.example' is not a domain name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file("domains", bad[i].file);
        cfg = load_text(MX "[provider]\ndomain = example.it\nlocal_domains_file = domains\n",
                        err, sizeof err);
        assert_null(cfg);
        if (strstr(err, bad[i].want) == NULL)
            fail_msg("case %zu: %s", i, err);
    }
    /* the same domain's callouts in two places */
    write_file("domains", "a.example callouts=none\n");
    cfg = load_text(MX "[provider]\ndomain = example.it\nlocal_domains_file = domains\n"
                    "[callouts]\na.example = antivirus\n", err, sizeof err);
    assert_null(cfg);
    assert_non_null(strstr(err, "callouts for a.example are set twice"));
    /* a certificate for some names needs [tls] for the others */
    write_file("domains", "cust.example tls_certificate=sni.crt tls_key=sni.key\n");
    cfg = load_text(MX "[provider]\ndomain = example.it\nlocal_domains_file = domains\n", err,
                    sizeof err);
    assert_null(cfg);
    assert_non_null(strstr(err, "no [tls] certificate"));
    /* a missing file, an overlong line, an inline name that is not a domain */
    cfg = load_text(MX "[provider]\ndomain = example.it\nlocal_domains_file = absent\n", err,
                    sizeof err);
    assert_null(cfg);
    assert_non_null(strstr(err, "absent: No such file"));
    char *longline = malloc(5000);
    memset(longline, 'a', 4998);
    longline[4998] = '\n';
    longline[4999] = '\0';
    write_file("domains", longline);
    free(longline);
    cfg = load_text(MX "[provider]\ndomain = example.it\nlocal_domains_file = domains\n", err,
                    sizeof err);
    assert_null(cfg);
    assert_non_null(strstr(err, "domains:1: line longer than 4096 octets"));
    cfg = load_text(MX "[provider]\ndomain = example.it\nlocal_domains = ok.it, b@d.it\n", err,
                    sizeof err);
    assert_null(cfg);
    assert_non_null(strstr(err, ":7: local_domains: 'b@d.it' is not a domain name"));
}

/* A node name names a directory (spools/NODE of a backup, a chain of the
 * shared log): nothing that could climb out of it or be taken for an option. */
static void test_node_names(void **state)
{
    (void)state;
    static const char *const good[] = {"a", "node-1", "b2.pec_x", "0"};
    static const char *const bad[] = {"", ".", "..", ".a", "-a", "a/b", "A", "a b", "a\n",
                                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(config_node_name_ok(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(config_node_name_ok(bad[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults), cmocka_unit_test(test_values), cmocka_unit_test(test_relay_networks),
        cmocka_unit_test(test_errors), cmocka_unit_test(test_scalars), cmocka_unit_test(test_mx_accepts_cleartext),
        cmocka_unit_test(test_pec_directory_keys), cmocka_unit_test(test_pec_directory_errors),
        cmocka_unit_test(test_clock_judge), cmocka_unit_test(test_domains_file),
        cmocka_unit_test(test_node_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
