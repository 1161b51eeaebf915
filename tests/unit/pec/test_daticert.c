/*
 * test_daticert.c - daticert.xml (RFC 6109 §4.4): build in DTD order with
 * escaping, parse back, lenient parsing with warnings, refusals, and the
 * time fields.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

static pec_daticert sample(void)
{
    static pec_recipient r[] = {{"anna@pec.b.example", PEC_RCPT_CERTIFICATO},
                                {"luca@ordinaria.example", PEC_RCPT_ESTERNO}};
    static char *ric[] = {"anna@pec.b.example"};
    pec_daticert d;
    memset(&d, 0, sizeof d);
    d.tipo = PEC_TYPE_PRESA_IN_CARICO;
    d.mittente = "mario@pec.a.example";
    d.destinatari = r;
    d.n_destinatari = 2;
    d.oggetto = "Fattura <n. 42> & \"saldo\" perch\xc3\xa9";
    d.gestore_emittente = "Gestore B S.p.A.";
    pec_daticert_set_time(&d, 1750061703);
    d.identificativo = "opec1.20250616101500.1.1.1.1@pec.a.example";
    d.msgid = "<abc@client.example>";
    d.ricezione = ric;
    d.n_ricezione = 1;
    return d;
}

static void test_build_exact(void **state)
{
    (void)state;
    pec_daticert d = sample();
    pec_buf x;
    assert_int_equal(pec_daticert_build(&d, &x, NULL, 0), 0);
    static const char want[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<postacert tipo=\"presa-in-carico\" errore=\"nessuno\">\n"
        "  <intestazione>\n"
        "    <mittente>mario@pec.a.example</mittente>\n"
        "    <destinatari tipo=\"certificato\">anna@pec.b.example</destinatari>\n"
        "    <destinatari tipo=\"esterno\">luca@ordinaria.example</destinatari>\n"
        "    <risposte>mario@pec.a.example</risposte>\n"
        "    <oggetto>Fattura &lt;n. 42&gt; &amp; \"saldo\" perch\xc3\xa9</oggetto>\n"
        "  </intestazione>\n"
        "  <dati>\n"
        "    <gestore-emittente>Gestore B S.p.A.</gestore-emittente>\n"
        "    <data zona=\"+0200\">\n"
        "      <giorno>16/06/2025</giorno>\n"
        "      <ora>10:15:03</ora>\n"
        "    </data>\n"
        "    <identificativo>opec1.20250616101500.1.1.1.1@pec.a.example</identificativo>\n"
        "    <msgid>&lt;abc@client.example&gt;</msgid>\n"
        "    <ricezione>anna@pec.b.example</ricezione>\n"
        "  </dati>\n"
        "</postacert>\n";
    assert_string_equal((char *)x.data, want);
    assert_int_equal(pec_daticert_validate(x.data, x.len, NULL, 0), 0);
    /* and back */
    pec_daticert p;
    assert_int_equal(pec_daticert_parse(x.data, x.len, &p, NULL, 0), 0);
    assert_int_equal(p.tipo, PEC_TYPE_PRESA_IN_CARICO);
    assert_string_equal(p.oggetto, d.oggetto);
    assert_string_equal(p.msgid, "<abc@client.example>");
    assert_int_equal(p.n_destinatari, 2);
    assert_int_equal(p.destinatari[1].kind, PEC_RCPT_ESTERNO);
    assert_int_equal(p.n_ricezione, 1);
    assert_string_equal(p.zona, "+0200");
    assert_null(p.warning);
    pec_daticert_free(&p);
    pec_buf_free(&x);
}

static void test_winter_time_and_refusals(void **state)
{
    (void)state;
    pec_daticert d = sample();
    pec_daticert_set_time(&d, 1736935200); /* 2025-01-15 10:00:00 UTC */
    assert_string_equal(d.zona, "+0100");
    assert_string_equal(d.giorno, "15/01/2025");
    assert_string_equal(d.ora, "11:00:00");
    pec_buf x;
    char err[256];
    d.tipo = PEC_TYPE_ANOMALIA; /* the anomaly envelope has no daticert (§3.2.2) */
    assert_int_equal(pec_daticert_build(&d, &x, err, sizeof err), -1);
    d.tipo = PEC_TYPE_ACCETTAZIONE;
    d.n_destinatari = 0;
    assert_int_equal(pec_daticert_build(&d, &x, err, sizeof err), -1);
}

static void test_parse_lenient_and_hostile(void **state)
{
    (void)state;
    static const struct {
        const char *xml;
        int rc;
        const char *warning;
    } cases[] = {
        {"<postacert tipo=\"accettazione\"><intestazione><mittente>a@b</mittente>"
         "<destinatari>c@d</destinatari><risposte>a@b</risposte></intestazione><dati>"
         "<gestore-emittente>G</gestore-emittente><data zona=\"+0100\"><giorno>01/01/2020</giorno>"
         "<ora>00:00:00</ora></data><identificativo>i@d</identificativo></dati></postacert>",
         0, NULL},
        /* a stray element is reported, not fatal */
        {"<postacert tipo=\"accettazione\"><intestazione><mittente>a@b</mittente>"
         "<destinatari>c@d</destinatari><risposte>a@b</risposte><extra/></intestazione><dati>"
         "<gestore-emittente>G</gestore-emittente><data zona=\"+0100\"><giorno>01/01/2020</giorno>"
         "<ora>00:00:00</ora></data><identificativo>i@d</identificativo></dati></postacert>",
         0, "unknown element <extra>"},
        /* risposte missing: usable, not DTD-valid */
        {"<postacert tipo=\"accettazione\"><intestazione><mittente>a@b</mittente>"
         "<destinatari>c@d</destinatari></intestazione><dati>"
         "<gestore-emittente>G</gestore-emittente><data zona=\"+0100\"><giorno>01/01/2020</giorno>"
         "<ora>00:00:00</ora></data><identificativo>i@d</identificativo></dati></postacert>",
         0, "not DTD-valid"},
        {"<postacert tipo=\"bogus\"><intestazione/><dati/></postacert>", -1, NULL},
        {"<other/>", -1, NULL},
        {"<postacert tipo=\"accettazione\">", -1, NULL},
        {"", -1, NULL},
        /* an external entity is never fetched nor expanded: a DOCTYPE is refused
         * (test_daticert_hostile.c has the other attacks) */
        {"<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
         "<postacert tipo=\"accettazione\"><intestazione><mittente>&x;</mittente>"
         "<destinatari>c@d</destinatari><risposte>a@b</risposte></intestazione><dati>"
         "<gestore-emittente>G</gestore-emittente><data zona=\"+0100\"><giorno>01/01/2020</giorno>"
         "<ora>00:00:00</ora></data><identificativo>i@d</identificativo></dati></postacert>",
         -1, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pec_daticert d;
        char err[256] = "";
        int rc = pec_daticert_parse(cases[i].xml, strlen(cases[i].xml), &d, err, sizeof err);
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0) {
            if (cases[i].warning) {
                assert_non_null(d.warning);
                assert_non_null(strstr(d.warning, cases[i].warning));
            }
            assert_null(strstr(d.mittente, "root:"));
            pec_daticert_free(&d);
        } else {
            assert_true(err[0] != '\0');
        }
    }
}

/* Threads parsing at once from the first parse on (the first one loads the
 * DTD): each gets the same result, and (under ASan) nothing leaks - the
 * DTD's content models are compiled once, not by whichever thread meets an
 * element first. */
struct parallel {
    pthread_barrier_t *start;
    const char *xml;
    size_t len;
    int ok;
};

static void *parse_many(void *arg)
{
    struct parallel *p = arg;
    pthread_barrier_wait(p->start);
    for (int i = 0; i < 50; i++) {
        pec_daticert d;
        char err[256];
        if (pec_daticert_parse(p->xml, p->len, &d, err, sizeof err) != 0)
            return NULL;
        bool valid = d.warning == NULL && strcmp(d.mittente, "mario@pec.a.example") == 0;
        pec_daticert_free(&d);
        if (!valid)
            return NULL;
    }
    p->ok = 1;
    return NULL;
}

static void test_parallel_first_parses(void **state)
{
    (void)state;
    pec_daticert d = sample();
    pec_buf x;
    assert_int_equal(pec_daticert_build(&d, &x, NULL, 0), 0);
    enum { N = 8 };
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N);
    pthread_t th[N];
    struct parallel p[N];
    for (int i = 0; i < N; i++) {
        p[i] = (struct parallel){&start, (const char *)x.data, x.len, 0};
        assert_int_equal(pthread_create(&th[i], NULL, parse_many, &p[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(p[i].ok, 1);
    }
    pthread_barrier_destroy(&start);
    pec_buf_free(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_first_parses),   /* first: the DTD is not loaded yet */
        cmocka_unit_test(test_build_exact),
        cmocka_unit_test(test_winter_time_and_refusals),
        cmocka_unit_test(test_parse_lenient_and_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
