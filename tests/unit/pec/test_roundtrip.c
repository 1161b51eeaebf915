/*
 * test_roundtrip.c - every message type: build -> sign -> classify ->
 * verify, the signature checked by the openssl command line (cms and
 * smime), daticert.xml validated by xmllint against the RFC's DTD.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

struct kind {
    pec_type type;
    pec_variant variant;
    pec_errore errore;
    const char *marker;   /* header line expected verbatim */
    const char *subject;  /* Subject prefix */
    bool has_daticert, has_original;
};

static const struct kind kinds[] = {
    {PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_COMPLETA, 0, "X-Trasporto: posta-certificata", "POSTA CERTIFICATA: ", true, true},
    {PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_BREVE, 0, "X-TipoRicevuta: breve", "POSTA CERTIFICATA: ", true, true},
    {PEC_TYPE_ANOMALIA, 0, 0, "X-Trasporto: errore", "ANOMALIA MESSAGGIO: ", false, true},
    {PEC_TYPE_ACCETTAZIONE, 0, 0, "X-Ricevuta: accettazione", "ACCETTAZIONE: ", true, false},
    {PEC_TYPE_NON_ACCETTAZIONE, 0, PEC_ERRORE_ALTRO, "X-Ricevuta: non-accettazione", "AVVISO DI NON ACCETTAZIONE: ", true, false},
    {PEC_TYPE_NON_ACCETTAZIONE, 0, PEC_ERRORE_VIRUS, "X-VerificaSicurezza: errore", "AVVISO DI NON ACCETTAZIONE PER VIRUS: ", true, false},
    {PEC_TYPE_PRESA_IN_CARICO, 0, 0, "X-Ricevuta: presa-in-carico", "PRESA IN CARICO: ", true, false},
    {PEC_TYPE_AVVENUTA_CONSEGNA, PEC_VARIANT_COMPLETA, 0, "X-Ricevuta: avvenuta-consegna", "CONSEGNA: ", true, true},
    {PEC_TYPE_AVVENUTA_CONSEGNA, PEC_VARIANT_BREVE, 0, "X-Ricevuta: avvenuta-consegna", "CONSEGNA: ", true, true},
    {PEC_TYPE_AVVENUTA_CONSEGNA, PEC_VARIANT_SINTETICA, 0, "X-Ricevuta: avvenuta-consegna", "CONSEGNA: ", true, false},
    {PEC_TYPE_ERRORE_CONSEGNA, 0, PEC_ERRORE_NO_DEST, "X-Ricevuta: errore-consegna", "AVVISO DI MANCATA CONSEGNA: ", true, false},
    {PEC_TYPE_ERRORE_CONSEGNA, 0, PEC_ERRORE_VIRUS, "X-VerificaSicurezza: errore", "AVVISO DI MANCATA CONSEGNA PER VIRUS: ", true, false},
    {PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA, 0, PEC_ERRORE_ALTRO, "X-Ricevuta: preavviso-errore-consegna", "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ", true, false},
    {PEC_TYPE_RILEVAZIONE_VIRUS, 0, PEC_ERRORE_VIRUS, "X-Mittente: mario.rossi@pec.a.example", "PROBLEMA DI SICUREZZA: ", true, false},
};

#define NKINDS (sizeof kinds / sizeof kinds[0])

static bool has_line(const pec_buf *m, const char *line)
{
    char *want = NULL;
    if (asprintf(&want, "\r\n%s", line) < 0)
        return false;
    bool ok = memmem(m->data, m->len, want, strlen(want)) != NULL ||
              (m->len >= strlen(line) && memcmp(m->data, line, strlen(line)) == 0);
    free(want);
    return ok;
}

static bool contains(const pec_buf *m, const char *s)
{
    return memmem(m->data, m->len, s, strlen(s)) != NULL;
}

static void test_build_classify_verify(void **state)
{
    (void)state;
    pec_trust *t = ttrust(true, true);
    for (size_t i = 0; i < NKINDS; i++) {
        const struct kind *k = &kinds[i];
        pec_buf m;
        assert_int_equal(tbuild(k->type, k->variant, k->errore, &m), 0);
        assert_true(has_line(&m, k->marker));
        char subj[128];
        snprintf(subj, sizeof subj, "Subject: %s", k->subject);
        /* the original subject is non-ASCII: prefix then an encoded word */
        assert_non_null(memmem(m.data, m.len, subj, strlen(subj)) ? m.data : NULL);
        assert_true(contains(&m, "protocol=\"application/pkcs7-signature\"; micalg=sha-256"));
        assert_true(contains(&m, "\r\nThis is an S/MIME signed message\r\n"));
        assert_true(contains(&m, "name=\"smime.p7s\""));
        assert_true(contains(&m, "daticert.xml") == k->has_daticert);
        assert_true(contains(&m, "message/rfc822") == k->has_original);
        /* only CRLF line ends */
        for (size_t j = 0; j < m.len; j++)
            if (m.data[j] == '\n')
                assert_true(j > 0 && m.data[j - 1] == '\r');

        pec_class c;
        assert_int_equal(pec_classify(m.data, m.len, &c, NULL, 0), 0);
        assert_int_equal(c.type, k->type);
        assert_true(c.signed_entity);
        if (k->type == PEC_TYPE_POSTA_CERTIFICATA || k->type == PEC_TYPE_AVVENUTA_CONSEGNA)
            assert_int_equal(c.variant, k->variant);
        pec_verdict v;
        char err[256];
        assert_int_equal(pec_verify(t, m.data, m.len, &v, err, sizeof err), 0);
        if (!v.valid)
            fprintf(stderr, "kind %zu: %s: %s\n", i, pec_reason_name(v.reason), v.detail);
        assert_true(v.valid);
        assert_int_equal(v.cls.type, k->type);
        assert_string_equal(v.signer_email, "posta-certificata@pec.a.example");
        assert_string_equal(v.digest, "sha256");
        assert_true(v.directory_checked);
        assert_false(v.trust_embedded);
        assert_true((v.daticert != NULL) == k->has_daticert);
        /* a transport envelope's postacert.eml comes with the verdict, as
         * pec_envelope_original reads it */
        if (k->type == PEC_TYPE_POSTA_CERTIFICATA) {
            pec_buf o = {0};
            assert_int_equal(pec_envelope_original(m.data, m.len, &o, NULL, 0), 0);
            assert_int_equal(v.original.len, o.len);
            assert_memory_equal(v.original.data, o.data, o.len);
            pec_buf_free(&o);
        } else {
            assert_null(v.original.data);
        }
        if (v.daticert) {
            assert_int_equal(v.daticert->tipo, k->type);
            assert_string_equal(v.daticert->mittente, "mario.rossi@pec.a.example");
            assert_int_equal(v.daticert->n_destinatari, 3);
            assert_int_equal(v.daticert->destinatari[1].kind, PEC_RCPT_ESTERNO);
            assert_string_equal(v.daticert->msgid, "<abc123@client.example>");
            assert_string_equal(v.daticert->giorno, "16/06/2025");
            assert_string_equal(v.daticert->ora, "10:15:00");
            assert_string_equal(v.daticert->zona, "+0200");
            assert_string_equal(v.daticert->oggetto, "Contratto n. 42 \xe2\x80\x93 perch\xc3\xa9");
            assert_null(v.daticert->warning);
        }
        pec_verdict_free(&v);
        pec_buf_free(&m);
    }
    pec_trust_free(t);
}

/* The openssl command line accepts our bytes unchanged. */
static void test_openssl_cli_verifies(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    char ca[256], cmd[1024], out[2048];
    snprintf(ca, sizeof ca, "%s/ca.pem", ttmpdir());
    assert_int_equal(twrite(ca, k->ca.cert_pem.data, k->ca.cert_pem.len), 0);
    for (size_t i = 0; i < NKINDS; i++) {
        pec_buf m;
        assert_int_equal(tbuild(kinds[i].type, kinds[i].variant, kinds[i].errore, &m), 0);
        char path[256];
        snprintf(path, sizeof path, "%s/msg%zu.eml", ttmpdir(), i);
        assert_int_equal(twrite(path, m.data, m.len), 0);
        snprintf(cmd, sizeof cmd,
                 "openssl cms -verify -CAfile %s -purpose smimesign -in %s -out /dev/null 2>&1",
                 ca, path);
        int rc = trun(cmd, out, sizeof out);
        if (rc != 0)
            fprintf(stderr, "%s\n", out);
        assert_int_equal(rc, 0);
        assert_non_null(strstr(out, "Verification successful"));
        snprintf(cmd, sizeof cmd, "openssl smime -verify -CAfile %s -in %s -out /dev/null 2>&1",
                 ca, path);
        assert_int_equal(trun(cmd, out, sizeof out), 0);
        pec_buf_free(&m);
    }
}

/* daticert.xml of every type is valid for xmllint against the RFC's DTD. */
static void test_daticert_xmllint(void **state)
{
    (void)state;
    char cmd[1024], out[2048];
    for (size_t i = 0; i < NKINDS; i++) {
        if (!kinds[i].has_daticert)
            continue;
        pec_buf m;
        assert_int_equal(tbuild(kinds[i].type, kinds[i].variant, kinds[i].errore, &m), 0);
        pec_trust *t = ttrust(false, false);
        pec_verdict v;
        assert_int_equal(pec_verify(t, m.data, m.len, &v, NULL, 0), 0);
        assert_non_null(v.daticert);
        pec_buf x;
        assert_int_equal(pec_daticert_build(v.daticert, &x, NULL, 0), 0);
        char path[256];
        snprintf(path, sizeof path, "%s/daticert%zu.xml", ttmpdir(), i);
        assert_int_equal(twrite(path, x.data, x.len), 0);
        snprintf(cmd, sizeof cmd, "xmllint --noout --dtdvalid %s %s 2>&1", PEC_DTD_FILE, path);
        int rc = trun(cmd, out, sizeof out);
        if (rc != 0)
            fprintf(stderr, "%s\n%s\n", out, x.data);
        assert_int_equal(rc, 0);
        assert_int_equal(pec_daticert_validate(x.data, x.len, NULL, 0), 0);
        pec_buf_free(&x);
        pec_verdict_free(&v);
        pec_trust_free(t);
        pec_buf_free(&m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_classify_verify),
        cmocka_unit_test(test_openssl_cli_verifies),
        cmocka_unit_test(test_daticert_xmllint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
