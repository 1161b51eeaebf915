/*
 * test_classify.c - classification by the RFC 6109 headers only, case
 * insensitive names, and PEC messages re-wrapped by a mailing list (as a
 * message/rfc822 attachment, or with a footer part added).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

static void test_headers_only(void **state)
{
    (void)state;
    static const struct {
        const char *msg;
        pec_type type;
        pec_variant variant;
        bool virus;
    } cases[] = {
        {"x-ricevuta: ACCETTAZIONE\r\nSubject: POSTA CERTIFICATA: x\r\n\r\n.", PEC_TYPE_ACCETTAZIONE, 0, false},
        {"X-Trasporto: posta-certificata\r\nX-Tiporicevuta: breve\r\n\r\n.", PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_BREVE, false},
        {"X-Trasporto: posta-certificata\r\n\r\n.", PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_COMPLETA, false},
        {"X-Trasporto: errore\r\n\r\n.", PEC_TYPE_ANOMALIA, 0, false},
        {"X-Ricevuta: errore-consegna\r\nX-VerificaSicurezza: errore\r\n\r\n.", PEC_TYPE_ERRORE_CONSEGNA, 0, true},
        {"X-Ricevuta: mancata-consegna\r\n\r\n.", PEC_TYPE_NONE, 0, false}, /* D15 */
        {"Subject: ACCETTAZIONE: not by subject\r\n\r\n.", PEC_TYPE_NONE, 0, false},
        {"X-Ricevuta: preavviso-errore-consegna\r\nX-Trasporto: posta-certificata\r\n\r\n.",
         PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA, 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pec_class c;
        assert_int_equal(pec_classify(cases[i].msg, strlen(cases[i].msg), &c, NULL, 0), 0);
        assert_int_equal(c.type, cases[i].type);
        if (cases[i].variant)
            assert_int_equal(c.variant, cases[i].variant);
        assert_int_equal(c.virus, cases[i].virus);
        assert_false(c.rewrapped);
    }
    assert_string_equal(pec_type_name(PEC_TYPE_ANOMALIA), "errore");
    assert_string_equal(pec_type_name(PEC_TYPE_NONE), "none");
}

static void test_rewrapped_by_list(void **state)
{
    (void)state;
    pec_buf m;
    assert_int_equal(tbuild(PEC_TYPE_AVVENUTA_CONSEGNA, PEC_VARIANT_COMPLETA, 0, &m), 0);
    pec_trust *t = ttrust(false, true);
    /* forwarded as an attachment */
    char *wrap = NULL;
    int n = asprintf(&wrap,
                     "From: list@lists.example\r\nTo: members@lists.example\r\nSubject: [list] fwd\r\n"
                     "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"LIST\"\r\n\r\n"
                     "--LIST\r\nContent-Type: text/plain\r\n\r\nForwarded.\r\n"
                     "--LIST\r\nContent-Type: message/rfc822\r\n\r\n%.*s\r\n--LIST--\r\n",
                     (int)m.len, m.data);
    assert_true(n > 0);
    pec_class c;
    assert_int_equal(pec_classify(wrap, (size_t)n, &c, NULL, 0), 0);
    assert_int_equal(c.type, PEC_TYPE_AVVENUTA_CONSEGNA);
    assert_int_equal(c.variant, PEC_VARIANT_COMPLETA);
    assert_true(c.rewrapped);
    pec_verdict v;
    assert_int_equal(pec_verify(t, wrap, (size_t)n, &v, NULL, 0), 0);
    if (!v.valid)
        fprintf(stderr, "rewrapped: %s: %s\n", pec_reason_name(v.reason), v.detail);
    assert_true(v.valid);
    assert_true(v.cls.rewrapped);
    pec_verdict_free(&v);
    free(wrap);

    /* headers kept, a footer added after the signed entity */
    const unsigned char *body = memmem(m.data, m.len, "\r\n\r\n", 4);
    const unsigned char *ct = memmem(m.data, m.len, "Content-Type: multipart/signed", 30);
    assert_non_null(body);
    assert_non_null(ct);
    n = asprintf(&wrap, "%.*sContent-Type: multipart/mixed; boundary=\"FOOT\"\r\n\r\n"
                        "--FOOT\r\n%.*s\r\n--FOOT\r\nContent-Type: text/plain\r\n\r\n"
                        "-- list footer\r\n--FOOT--\r\n",
                 (int)(ct - m.data), m.data, (int)(m.len - (size_t)(ct - m.data)), ct);
    assert_int_equal(pec_classify(wrap, (size_t)n, &c, NULL, 0), 0);
    assert_int_equal(c.type, PEC_TYPE_AVVENUTA_CONSEGNA);
    assert_true(c.signed_entity);
    assert_int_equal(pec_verify(t, wrap, (size_t)n, &v, NULL, 0), 0);
    if (!v.valid)
        fprintf(stderr, "footer: %s: %s\n", pec_reason_name(v.reason), v.detail);
    assert_true(v.valid);
    pec_verdict_free(&v);
    free(wrap);
    pec_trust_free(t);
    pec_buf_free(&m);
}

static void test_unreadable(void **state)
{
    (void)state;
    pec_verdict v;
    char err[128];
    pec_trust *t = ttrust(false, false);
    assert_int_equal(pec_verify(t, "", 0, &v, err, sizeof err), -1);
    assert_int_equal(v.reason, PEC_R_UNREADABLE);
    pec_trust_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_only),
        cmocka_unit_test(test_rewrapped_by_list),
        cmocka_unit_test(test_unreadable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
