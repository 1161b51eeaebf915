/*
 * test_negative.c - every way a PEC message must fail verification, each
 * with its own reason: a changed byte anywhere in the signed bytes, a
 * removed part, a wrong signer, an expired or revoked certificate, a
 * certificate missing from the directory, From not the certificate's
 * address, daticert inconsistent with the headers, unsigned mail.
 */
#include <setjmp.h>
#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "testutil.h"

static pec_reason verdict(const pec_trust *t, const void *m, size_t len, bool *valid)
{
    pec_verdict v;
    assert_int_equal(pec_verify(t, m, len, &v, NULL, 0), 0);
    *valid = v.valid;
    pec_reason r = v.reason;
    if (!v.valid)
        assert_true(v.detail[0] != '\0'); /* every failure is explained */
    pec_verdict_free(&v);
    return r;
}

static size_t find(const pec_buf *m, const char *s, size_t from)
{
    const unsigned char *p = memmem(m->data + from, m->len - from, s, strlen(s));
    assert_non_null(p);
    return (size_t)(p - m->data);
}

static void test_changed_byte_anywhere(void **state)
{
    (void)state;
    pec_trust *t = ttrust(true, true);
    pec_buf m;
    assert_int_equal(tbuild(PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_COMPLETA, 0, &m), 0);
    bool valid;
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_OK);
    assert_true(valid);
    /* the signed bytes (after the first delimiter) and the signature value
     * (after the signature part's header); every 37th byte of each */
    size_t start = find(&m, "Content-Type: multipart/mixed", 0);
    size_t sigp = find(&m, "Content-Type: application/pkcs7-signature", start);
    size_t sigv = find(&m, "\r\n\r\n", sigp) + 4;
    size_t end = m.len;
    while (end > 0 && m.data[end - 1] != '\n')
        end--;
    end = find(&m, "\r\n--", sigv); /* the close delimiter */
    int n = 0;
    for (size_t i = start; i < end; i += 37, n++) {
        if (i > sigp - 4 && i < sigv) /* the delimiter and the part header */
            i = sigv;
        unsigned char saved = m.data[i];
        m.data[i] = saved == 'A' ? 'B' : (saved == '\r' || saved == '\n' ? 'x' : 'A');
        if (m.data[i] == saved)
            m.data[i] = 'C';
        pec_reason r = verdict(t, m.data, m.len, &valid);
        if (valid)
            fprintf(stderr, "byte %zu ('%c') changed but still valid\n", i, saved);
        assert_false(valid);
        assert_int_not_equal(r, PEC_OK);
        m.data[i] = saved;
    }
    assert_true(n > 90);
    (void)end;
    /* one byte of the text body: the digest no longer matches */
    size_t body = find(&m, "Messaggio di posta certificata", start);
    m.data[body] = 'm';
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_R_CONTENT_CHANGED);
    pec_buf_free(&m);
    pec_trust_free(t);
}

static void test_trailing_whitespace_is_content(void **state)
{
    (void)state;
    pec_trust *t = ttrust(false, false);
    pec_buf m;
    assert_int_equal(tbuild(PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_COMPLETA, 0, &m), 0);
    /* the original's "contratto.   \r\n": strip the spaces (interop file 12) */
    size_t at = find(&m, "contratto.   \r\n", 0);
    memmove(m.data + at + 10, m.data + at + 13, m.len - at - 13);
    m.len -= 3;
    bool valid;
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_R_CONTENT_CHANGED);
    pec_buf_free(&m);
    pec_trust_free(t);
}

static void test_lf_only_still_valid(void **state)
{
    (void)state;
    /* a mail store that drops every CR keeps the canonical form recoverable */
    pec_trust *t = ttrust(false, false);
    pec_buf m;
    assert_int_equal(tbuild(PEC_TYPE_ACCETTAZIONE, 0, 0, &m), 0);
    size_t w = 0;
    for (size_t i = 0; i < m.len; i++)
        if (!(m.data[i] == '\r' && i + 1 < m.len && m.data[i + 1] == '\n'))
            m.data[w++] = m.data[i];
    bool valid;
    assert_int_equal(verdict(t, m.data, w, &valid), PEC_OK);
    assert_true(valid);
    pec_buf_free(&m);
    pec_trust_free(t);
}

static void test_removed_signature_part(void **state)
{
    (void)state;
    pec_trust *t = ttrust(false, false);
    pec_buf m;
    assert_int_equal(tbuild(PEC_TYPE_ACCETTAZIONE, 0, 0, &m), 0);
    /* cut from the signature's delimiter to the end, then close */
    size_t sig = find(&m, "Content-Type: application/pkcs7-signature", 0);
    size_t dl = sig;
    while (dl > 0 && !(m.data[dl - 1] == '\n' && m.data[dl] == '-'))
        dl--;
    m.len = dl;
    bool valid;
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_R_NO_SIGNATURE);
    pec_buf_free(&m);
    pec_trust_free(t);
}

static void test_removed_daticert(void **state)
{
    (void)state;
    /* an unsigned multipart: the daticert part is gone and nothing is signed */
    static const char msg[] = "X-Ricevuta: accettazione\r\nFrom: posta-certificata@pec.a.example\r\n"
                              "To: a@b.example\r\nSubject: ACCETTAZIONE: x\r\n"
                              "Content-Type: text/plain\r\n\r\nhello\r\n";
    pec_trust *t = ttrust(false, false);
    bool valid;
    assert_int_equal(verdict(t, msg, sizeof msg - 1, &valid), PEC_R_NO_SIGNATURE);
    static const char plain[] = "From: a@b.example\r\nTo: c@d.example\r\nSubject: hi\r\n\r\nhi\r\n";
    assert_int_equal(verdict(t, plain, sizeof plain - 1, &valid), PEC_R_NOT_PEC);
    pec_trust_free(t);
}

static void test_wrong_signer_expired_revoked(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    pec_trust *t = ttrust(true, false);
    pec_buf m;
    bool valid;
    /* a signer from another CA */
    assert_int_equal(tbuild_with(&k->other_signer, "pec.a.example", PEC_TYPE_ACCETTAZIONE, 0, 0, &m), 0);
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_R_UNTRUSTED);
    pec_buf_free(&m);
    /* expired 370 days ago (the signing time is now) */
    assert_int_equal(tbuild_with(&k->expired, "pec.a.example", PEC_TYPE_ACCETTAZIONE, 0, 0, &m), 0);
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_R_CERT_EXPIRED);
    pec_buf_free(&m);
    /* revoked in the CRL */
    assert_int_equal(tbuild_with(&k->revoked, "pec.a.example", PEC_TYPE_ACCETTAZIONE, 0, 0, &m), 0);
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_R_REVOKED);
    pec_verdict rv;
    assert_int_equal(pec_verify(t, m.data, m.len, &rv, NULL, 0), 0);
    if (strstr(rv.detail, "the signer certificate was revoked on 2024-03-01T10:00:00Z "
                          "(keyCompromise)") == NULL)
        fail_msg("revocation detail: %s", rv.detail);
    pec_verdict_free(&rv);
    assert_int_equal(pec_crl_reason_code("KEYCOMPROMISE"), 1);
    assert_int_equal(pec_crl_reason_code("7"), -1);
    assert_null(pec_crl_reason_name(7));
    assert_string_equal(pec_crl_reason_name(10), "aACompromise");
    pec_trust *nocrl = ttrust(false, false);
    assert_int_equal(verdict(nocrl, m.data, m.len, &valid), PEC_OK); /* without the CRL */
    /* the success is remembered (same signer, certificates and signing
     * second), but not across a change of the CRLs: a CRL that arrives
     * later is applied to the next verification */
    assert_int_equal(verdict(nocrl, m.data, m.len, &valid), PEC_OK);
    assert_int_equal(pec_trust_add_crl(nocrl, k->crl.data, k->crl.len, NULL, 0), 0);
    assert_int_equal(verdict(nocrl, m.data, m.len, &valid), PEC_R_REVOKED);
    pec_trust_free(nocrl);
    pec_buf_free(&m);
    /* a TLS certificate is not for e-mail signing */
    pec_signer *s = tsigner(&k->tls);
    pec_identity id = {.domain = "pec.a.example", .name = "A", .signer = s};
    pec_recipient r = {"x@pec.b.example", PEC_RCPT_CERTIFICATO};
    pec_build_args a = {.type = PEC_TYPE_ACCETTAZIONE, .sender = "m@pec.a.example",
                        .recipients = &r, .n_recipients = 1, .when = time(NULL),
                        .pec_id = "opec1.x@pec.a.example", .message_id = "opec1.y@pec.a.example"};
    /* §2.1: a certificate without an e-mail address signs nothing */
    s->email[0] = '\0';
    char e2[256];
    assert_int_equal(pec_build(&id, &a, &m, e2, sizeof e2), -1);
    assert_non_null(strstr(e2, "has no e-mail address"));
    /* pretend it names the service address, to reach the verifier's key usage check */
    snprintf(s->email, sizeof s->email, "posta-certificata@pec.a.example");
    assert_int_equal(pec_build(&id, &a, &m, NULL, 0), 0);
    pec_reason why = verdict(t, m.data, m.len, &valid);
    assert_true(why == PEC_R_BAD_KEY_USAGE);
    pec_buf_free(&m);
    pec_signer_free(s);
    pec_trust_free(t);
}

static void test_directory_and_from(void **state)
{
    (void)state;
    pec_trust *t = ttrust(false, false);
    pec_trust_add_cert_hash(t, "00112233445566778899aabbccddeeff00112233");
    pec_buf m;
    bool valid;
    assert_int_equal(tbuild(PEC_TYPE_ACCETTAZIONE, 0, 0, &m), 0);
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_R_NOT_IN_DIRECTORY);
    /* the hash in upper case, as some directories store it (§4.5.1) */
    char up[41];
    for (int i = 0; i < 41; i++)
        up[i] = (char)toupper((unsigned char)tpki_get()->signer_sha1[i]);
    assert_int_equal(pec_trust_add_cert_hash(t, up), 0);
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_OK);
    /* From is outside the signed content: changing it is caught by §2.1 */
    size_t at = find(&m, "From: posta-certificata@pec.a.example", 0);
    memcpy(m.data + at + 6, "POSTA-CERTIFICATX", 17);
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_R_SIGNER_MISMATCH);
    pec_buf_free(&m);
    /* X-Ricevuta rewritten: the daticert tipo disagrees */
    assert_int_equal(tbuild(PEC_TYPE_ERRORE_CONSEGNA, 0, PEC_ERRORE_NO_DEST, &m), 0);
    at = find(&m, "X-Ricevuta: errore-consegna", 0);
    memcpy(m.data + at + 12, "accettazione   ", 15);
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_R_INCONSISTENT);
    pec_buf_free(&m);
    pec_trust_free(t);
}

static void test_ldif_directory(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    char ldif[1024];
    snprintf(ldif, sizeof ldif,
             "# providers\n"
             "dn: providerName=Gestore A,o=postacert\n"
             "objectClass: provider\n"
             "providerName: Gestore A\n"
             "providerCertificateHash: %.20s\n %s\n"
             "mailReceipt: ricevute@pec.a.example\n"
             "managedDomains: pec.a.example\n\n",
             k->signer_sha1, k->signer_sha1 + 20);
    pec_trust *t = ttrust(false, false);
    assert_int_equal(pec_trust_load_ldif(t, ldif, strlen(ldif), NULL, 0), 1);
    pec_buf m;
    bool valid;
    assert_int_equal(tbuild(PEC_TYPE_PRESA_IN_CARICO, 0, 0, &m), 0);
    assert_int_equal(verdict(t, m.data, m.len, &valid), PEC_OK);
    pec_buf_free(&m);
    pec_trust_free(t);
    static const char bad[] = "providerCertificateHash: nothex\n";
    t = pec_trust_new();
    assert_int_equal(pec_trust_load_ldif(t, bad, sizeof bad - 1, NULL, 0), -1);
    pec_trust_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_changed_byte_anywhere),
        cmocka_unit_test(test_trailing_whitespace_is_content),
        cmocka_unit_test(test_lf_only_still_valid),
        cmocka_unit_test(test_removed_signature_part),
        cmocka_unit_test(test_removed_daticert),
        cmocka_unit_test(test_wrong_signer_expired_revoked),
        cmocka_unit_test(test_directory_and_from),
        cmocka_unit_test(test_ldif_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
