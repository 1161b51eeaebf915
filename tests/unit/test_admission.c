/*
 * test_admission.c - the provider's admission rules (src/provider/admission.c)
 * row by row, each with the rule it checks: the PEC stage a message goes
 * to, sender ownership (RFC 6109 §3.1.1), relaying and postmaster (RFC 5321
 * §4.5.1), the sending limits, and what a PEC provider refuses after the
 * data (§5.3, §2.2.2).  The SMTP replies are compared whole: they are what a
 * client sees.  The stage names of the spool file (lib/pec_stage.c) too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/lib.h"
#include "lib/pec_stage.h"
#include "provider/admission.h"

#define PEC_CONF                                                                            \
    "[provider]\ndomain = pec.example.it\n[tls]\ncertificate = c.pem\nkey = k.pem\n"      \
    "[mx]\nlisten = 127.0.0.1:25\n[submission]\nlisten = 127.0.0.1:587\n"                  \
    "[pec]\nenabled = yes\nsigning_key = s.key\nsigning_certificate = s.pem\n"              \
    "trust = ca.pem\ndirectory = dir.ldif\n"

static struct config *load_text(const char *text)
{
    char path[512], err[512] = "";
    fs_mkdirs(TEST_TMPDIR, 0700);
    snprintf(path, sizeof path, "%s/pecd.conf", TEST_TMPDIR);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    struct config *cfg = config_load(path, err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

static void txn_init(struct smtp_txn *t, const char *listener, const char *auth_user,
                     const char *sender, const char *const *rcpts, size_t n)
{
    static struct smtp_rcpt r[8];
    memset(t, 0, sizeof *t);
    memset(r, 0, sizeof r);
    str_copy(t->sender, sender, sizeof t->sender);
    for (size_t i = 0; i < n; i++)
        r[i].addr = r[i].orig = (char *)rcpts[i];
    t->rcpts = r;
    t->nrcpts = n;
    t->listener = listener;
    t->auth_user = auth_user;
    t->client_ip = "192.0.2.7";
    t->tls_version = "TLSv1.3";
}

static void test_stage_names_round_trip(void **state)
{
    (void)state;
    for (int s = PEC_STAGE_SUBMISSION; s < PEC_STAGE_UNKNOWN; s++)
        assert_int_equal(pec_stage_parse(pec_stage_name((enum pec_stage)s)), s);
    /* the spool format: these names are never changed */
    assert_string_equal(pec_stage_name(PEC_STAGE_SUBMISSION), "submission");
    assert_string_equal(pec_stage_name(PEC_STAGE_INCOMING), "incoming");
    assert_string_equal(pec_stage_name(PEC_STAGE_DELIVERY), "delivery");
    assert_string_equal(pec_stage_name(PEC_STAGE_NOTICES), "notices");
    assert_null(pec_stage_name(PEC_STAGE_NONE));
    assert_null(pec_stage_name(PEC_STAGE_UNKNOWN));
    assert_int_equal(pec_stage_parse(NULL), PEC_STAGE_NONE);
    assert_int_equal(pec_stage_parse("Submission"), PEC_STAGE_UNKNOWN);
    assert_int_equal(pec_stage_parse(""), PEC_STAGE_UNKNOWN);
}

static void test_stage_of_a_message(void **state)
{
    (void)state;
    struct config *cfg = load_text(PEC_CONF);
    const char *local[] = {"anna@pec.example.it"}, *mixed[] = {"anna@pec.example.it",
                                                                "bob@pec.altro.it"};
    const struct {
        const char *why, *listener, *auth;
        const char *const *rcpts;
        size_t n;
        enum pec_stage want;
    } rows[] = {
        {"§3.1: a user's message on submission", "submission", "anna@pec.example.it", mixed, 2,
         PEC_STAGE_SUBMISSION},
        {"§3.2: from outside, every recipient ours", "mx", NULL, local, 1, PEC_STAGE_INCOMING},
        {"relayed by relay_networks: not PEC here", "mx", NULL, mixed, 2, PEC_STAGE_NONE},
        {"authenticated on mx: not the access point", "mx", "anna@pec.example.it", local, 1,
         PEC_STAGE_NONE},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct smtp_txn t;
        txn_init(&t, rows[i].listener, rows[i].auth, "x@pec.altro.it", rows[i].rcpts,
                 rows[i].n);
        if (admission_stage(cfg, &t) != rows[i].want)
            fail_msg("%s: stage %d", rows[i].why, admission_stage(cfg, &t));
    }
    config_free(cfg);
    /* without [pec], nothing is a PEC stage */
    cfg = load_text("[provider]\ndomain = example.it\n[tls]\ncertificate = c.pem\nkey = k.pem\n"
                    "[mx]\nlisten = 127.0.0.1:25\n");
    struct smtp_txn t;
    const char *r1[] = {"a@example.it"};
    txn_init(&t, "mx", NULL, "x@y.it", r1, 1);
    assert_int_equal(admission_stage(cfg, &t), PEC_STAGE_NONE);
    config_free(cfg);
}

static void test_sender_ownership(void **state)
{
    (void)state;
    struct config *cfg = load_text(PEC_CONF);
    struct admission *a = admission_new();
    char reply[512];
    const char *r1[] = {"bob@pec.altro.it"};
    struct smtp_txn t;
    /* §3.1.1 then checks From against the envelope: the envelope is the user's */
    txn_init(&t, "submission", "anna@pec.example.it", "ANNA@pec.example.it", r1, 1);
    assert_int_equal(admission_mail(a, cfg, NULL, &t, reply, sizeof reply), 0);
    txn_init(&t, "submission", "anna@pec.example.it", "carlo@pec.example.it", r1, 1);
    assert_int_equal(admission_mail(a, cfg, NULL, &t, reply, sizeof reply), -1);
    assert_string_equal(reply, "553 5.7.1 <carlo@pec.example.it>: Sender address not owned by "
                               "user anna@pec.example.it");
    admission_free(a);
    config_free(cfg);
}

static void test_relay_and_postmaster(void **state)
{
    (void)state;
    struct config *cfg = load_text("[provider]\npostmaster = pm@pec.example.it\n" PEC_CONF);
    struct admission *a = admission_new();
    char reply[512], addr[SMTP_PATH_MAX + 1];
    struct smtp_txn t;
    txn_init(&t, "mx", NULL, "x@altro.it", NULL, 0);
    const struct {
        const char *why, *to;
        int rc;
        const char *addr_or_reply;
    } rows[] = {
        {"RFC 5321 §4.5.1: <postmaster> without a domain", "TO:<Postmaster>", 0,
         "pm@pec.example.it"},
        {"RFC 5321 §4.5.1: postmaster at our domain", "TO:<POSTMASTER@pec.example.it>", 0,
         "pm@pec.example.it"},
        {"postmaster elsewhere is someone else's", "TO:<postmaster@altro.it>", -1,
         "550 5.7.1 <postmaster@altro.it>: Relay access denied"},
        {"no relay without login", "TO:<bob@altro.it>", -1,
         "550 5.7.1 <bob@altro.it>: Relay access denied"},
        {"a PEC provider takes every address of its domains (§3.3.3 answers later)",
         "TO:<nessuno@pec.example.it>", 0, "nessuno@pec.example.it"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct smtp_path p;
        assert_int_equal(smtp_path_parse(rows[i].to, "TO:", false, &p), SMTP_PATH_OK);
        reply[0] = addr[0] = '\0';
        int rc = admission_rcpt(a, cfg, NULL, &t, &p, addr, sizeof addr, reply, sizeof reply);
        const char *got = rc == 0 ? addr : reply;
        if (rc != rows[i].rc || strcmp(got, rows[i].addr_or_reply) != 0)
            fail_msg("%s: %d %s", rows[i].why, rc, got);
    }
    admission_free(a);
    config_free(cfg);
}

static void test_sending_limits(void **state)
{
    (void)state;
    struct config *cfg = load_text(PEC_CONF "[limits]\nmessages_per_hour = 2\n");
    struct admission *a = admission_new();
    char reply[512];
    const char *r1[] = {"bob@pec.altro.it"};
    struct smtp_txn t;
    txn_init(&t, "submission", "anna@pec.example.it", "anna@pec.example.it", r1, 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(admission_mail(a, cfg, NULL, &t, reply, sizeof reply), 0);
        admission_count(a, &t);
    }
    assert_int_equal(admission_mail(a, cfg, NULL, &t, reply, sizeof reply), -1);
    assert_string_equal(reply, "451 4.7.1 Sending limit of this user reached (2 messages an "
                               "hour), try again later");
    /* the login is the key, in any case */
    txn_init(&t, "submission", "Anna@PEC.example.it", "anna@pec.example.it", r1, 1);
    assert_int_equal(admission_mail(a, cfg, NULL, &t, reply, sizeof reply), -1);
    /* another user is not limited by anna's messages */
    txn_init(&t, "submission", "bea@pec.example.it", "bea@pec.example.it", r1, 1);
    assert_int_equal(admission_mail(a, cfg, NULL, &t, reply, sizeof reply), 0);
    /* [mx]: other providers' servers are never limited */
    txn_init(&t, "mx", NULL, "x@pec.altro.it", r1, 1);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(admission_mail(a, cfg, NULL, &t, reply, sizeof reply), 0);
        admission_count(a, &t);
    }
    admission_free(a);
    config_free(cfg);
}

static void test_content_after_the_data(void **state)
{
    (void)state;
    struct config *cfg = load_text(PEC_CONF "cleartext_pec = refuse\naccept_ordinary_mail = no\n");
    char reply[512];
    const char *r1[] = {"anna@pec.example.it"};
    const char pec[] = "X-Trasporto: posta-certificata\r\nSubject: x\r\n\r\n";
    const char plain[] = "Subject: x\r\n\r\n";
    const struct {
        const char *why, *head;
        bool tls, signer_up;
        const char *want;      /* NULL: taken */
    } rows[] = {
        {"no signer answers: nothing acknowledged", pec, true, false,
         "451 4.3.0 Signing service unavailable, try again later"},
        {"§5.3: PEC between providers over TLS", pec, true, true, NULL},
        {"§5.3 with cleartext_pec = refuse", pec, false, true,
         "550 5.7.10 Certified mail (PEC) between providers needs TLS (RFC 6109 section 5.3): "
         "use STARTTLS"},
        {"§2.2.2 case 4: ordinary mail refused", plain, true, true,
         "550 5.7.1 Only certified mail (PEC) is accepted for these mailboxes"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct smtp_txn t;
        txn_init(&t, "mx", NULL, "x@pec.altro.it", r1, 1);
        if (!rows[i].tls)
            t.tls_version = NULL;
        reply[0] = '\0';
        int rc = admission_content(cfg, NULL, rows[i].signer_up, &t, rows[i].head,
                                   strlen(rows[i].head), reply, sizeof reply);
        if (rows[i].want == NULL ? rc != 0 : rc != -1 || strcmp(reply, rows[i].want) != 0)
            fail_msg("%s: %d %s", rows[i].why, rc, reply);
    }
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage_names_round_trip),
        cmocka_unit_test(test_stage_of_a_message),
        cmocka_unit_test(test_sender_ownership),
        cmocka_unit_test(test_relay_and_postmaster),
        cmocka_unit_test(test_sending_limits),
        cmocka_unit_test(test_content_after_the_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
