/*
 * test_interop.c - real provider messages (../shared/interop, see its
 * README): each file gets the verdict the README gives it, byte for byte.
 * Skips with a message when the folder is absent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "testutil.h"

struct vector {
    const char *file;
    pec_type type;
    pec_variant variant;
    bool valid;
    pec_reason reason;
};

static const struct vector vectors[] = {
    {"03-aruba-2014-accettazione.eml", PEC_TYPE_ACCETTAZIONE, 0, true, PEC_OK},
    {"05-aruba-2018-accettazione.eml", PEC_TYPE_ACCETTAZIONE, 0, true, PEC_OK},
    {"08-sogei-2018-posta-certificata-breve-sdi-ricevuta-consegna.eml",
     PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_BREVE, true, PEC_OK},
    {"12-NEG-sogei-2018-trailing-whitespace-stripped.eml", PEC_TYPE_POSTA_CERTIFICATA,
     PEC_VARIANT_BREVE, false, PEC_R_CONTENT_CHANGED},
    {"15-ANON-aruba-2024-accettazione-sig-removed.eml", PEC_TYPE_ACCETTAZIONE, 0, false,
     PEC_R_NO_SIGNATURE},
    {"16-ANON-aruba-2024-errore-consegna-no-dest-sig-removed.eml", PEC_TYPE_ERRORE_CONSEGNA, 0,
     false, PEC_R_NO_SIGNATURE},
    {"17-ANON-2021-avvenuta-consegna-completa-sha256-sig-redacted.eml",
     PEC_TYPE_AVVENUTA_CONSEGNA, PEC_VARIANT_COMPLETA, false, PEC_R_BAD_SIGNATURE_FORMAT},
    {"18-ANON-2021-posta-certificata-completa-sha256-sig-redacted-CRLF.eml",
     PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_COMPLETA, false, PEC_R_BAD_SIGNATURE_FORMAT},
};

static bool have_interop(void)
{
    struct stat st;
    if (stat(PEC_INTEROP_DIR "/eml", &st) == 0)
        return true;
    fprintf(stderr, "SKIP: %s absent, interoperability vectors not run\n", PEC_INTEROP_DIR);
    return false;
}

static void test_eml_verdicts(void **state)
{
    (void)state;
    if (!have_interop())
        skip();
    pec_trust *t = pec_trust_new(); /* no anchors: the embedded chains */
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        const struct vector *x = &vectors[i];
        char path[512];
        snprintf(path, sizeof path, "%s/eml/%s", PEC_INTEROP_DIR, x->file);
        size_t len;
        char *data = tread(path, &len);
        assert_non_null(data);
        pec_class c;
        assert_int_equal(pec_classify(data, len, &c, NULL, 0), 0);
        assert_int_equal(c.type, x->type);
        if (x->variant)
            assert_int_equal(c.variant, x->variant);
        pec_verdict v;
        /* the incoming point's mode: the daticert only once the signature holds */
        assert_int_equal(pec_verify(t, data, len, &v, NULL, 0), 0);
        assert_int_equal(v.valid, x->valid);
        assert_int_equal(v.reason, x->reason);
        assert_int_equal(v.cls.type, x->type);
        assert_true((v.daticert != NULL) == x->valid);
        pec_verdict_free(&v);
        /* pecctl's mode: the daticert of an invalid message is shown too */
        assert_int_equal(pec_verify_flags(t, data, len, PEC_VERIFY_REPORT, &v, NULL, 0), 0);
        if (v.valid != x->valid || v.reason != x->reason)
            fprintf(stderr, "%s: %s (%s)\n", x->file, pec_reason_name(v.reason), v.detail);
        assert_int_equal(v.valid, x->valid);
        assert_int_equal(v.reason, x->reason);
        assert_int_equal(v.cls.type, x->type);
        if (x->variant)
            assert_int_equal(v.cls.variant, x->variant);
        assert_non_null(v.daticert); /* every one of these carries daticert.xml */
        assert_false(v.bare);
        assert_string_equal(v.daticert_error, "");
        if (x->valid) {
            assert_true(v.trust_embedded);
            assert_string_equal(v.digest, "sha1");
            assert_non_null(strstr(v.signer_email, "posta-certificata@"));
        }
        if (x->type == PEC_TYPE_ERRORE_CONSEGNA) {
            assert_int_equal(v.daticert->errore, PEC_ERRORE_NO_DEST);
            assert_string_equal(v.daticert->consegna, "rec@fakepec.it");
        }
        pec_verdict_free(&v);
        free(data);
    }
    pec_trust_free(t);
}

/* With our test CA as the only anchor, the real chains are untrusted. */
static void test_eml_foreign_anchor(void **state)
{
    (void)state;
    if (!have_interop())
        skip();
    pec_trust *t = ttrust(false, false);
    size_t len;
    char *data = tread(PEC_INTEROP_DIR "/eml/05-aruba-2018-accettazione.eml", &len);
    assert_non_null(data);
    pec_verdict v;
    assert_int_equal(pec_verify(t, data, len, &v, NULL, 0), 0);
    assert_false(v.valid);
    assert_int_equal(v.reason, PEC_R_UNTRUSTED);
    pec_verdict_free(&v);
    /* and a directory without its hash refuses it */
    pec_trust *d = pec_trust_new();
    pec_trust_add_cert_hash(d, "0000000000000000000000000000000000000000");
    assert_int_equal(pec_verify(d, data, len, &v, NULL, 0), 0);
    assert_int_equal(v.reason, PEC_R_NOT_IN_DIRECTORY);
    pec_trust_add_cert_hash(d, v.signer_sha1);
    pec_verdict_free(&v);
    assert_int_equal(pec_verify(d, data, len, &v, NULL, 0), 0);
    assert_true(v.valid);
    pec_verdict_free(&v);
    pec_trust_free(d);
    pec_trust_free(t);
    free(data);
}

static void test_daticert_files(void **state)
{
    (void)state;
    if (!have_interop())
        skip();
    static const char *const files[] = {
        "d02-aruba-2014-accettazione.xml", "d04-aruba-2018-accettazione.xml",
        "d06-sogei-2018-posta-certificata-breve.xml",
        "d08-ANON-aruba-2024-errore-consegna-no-dest.xml"};
    for (size_t i = 0; i < 4; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/daticert/%s", PEC_INTEROP_DIR, files[i]);
        size_t len;
        char *x = tread(path, &len);
        assert_non_null(x);
        pec_daticert d;
        char err[256];
        assert_int_equal(pec_daticert_parse(x, len, &d, err, sizeof err), 0);
        assert_non_null(d.identificativo);
        if (i == 3) {
            /* the stray text node is reported, the file still parses */
            assert_non_null(d.warning);
            assert_non_null(strstr(d.warning, "stray text"));
            assert_non_null(strstr(d.warning, "risposte"));
            assert_int_equal(d.tipo, PEC_TYPE_ERRORE_CONSEGNA);
            assert_int_equal(d.errore, PEC_ERRORE_NO_DEST);
            assert_string_equal(d.errore_esteso, "5.1.1 - FAKE Pec S.p.A. - indirizzo non valido");
            assert_int_equal(pec_daticert_validate(x, len, NULL, 0), -1);
        } else {
            assert_null(d.warning);
            assert_int_equal(pec_daticert_validate(x, len, NULL, 0), 0);
        }
        if (i == 2) {
            assert_int_equal(d.ricevuta, PEC_VARIANT_BREVE);
            assert_string_equal(d.msgid, "<5168561142842364.1542124052746@pec.fatturapa.it>");
            assert_string_equal(d.zona, "+0100");
            assert_string_equal(d.giorno, "13/11/2018");
        }
        pec_daticert_free(&d);
        free(x);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eml_verdicts),
        cmocka_unit_test(test_eml_foreign_anchor),
        cmocka_unit_test(test_daticert_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
