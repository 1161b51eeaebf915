/*
 * test_verify_hostile.c - the order of pec_verify (issue 16): the daticert
 * of a message is read only once its signature holds, so a hostile one in
 * an unsigned or badly signed message is never parsed by the incoming
 * point; a signed hostile daticert gets daticert-invalid with the parser's
 * reason; PEC_VERIFY_REPORT shows it for reporting only.  And the bare
 * signed entity (issue 17 item 7): verified, typed by its daticert, only
 * with PEC_VERIFY_BARE.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <glib.h>

#include "testutil.h"

static unsigned char *find(const pec_buf *m, const char *s, size_t from)
{
    unsigned char *p = memmem(m->data + from, m->len - from, s, strlen(s));
    assert_non_null(p);
    return p;
}

/* m with the base64 body of its daticert.xml part replaced by xml's. */
static void replace_daticert(pec_buf *m, const char *xml, size_t len)
{
    unsigned char *part = find(m, "filename=\"daticert.xml\"", 0);
    unsigned char *start = find(m, "\r\n\r\n", (size_t)(part - m->data)) + 4;
    unsigned char *end = find(m, "\r\n--", (size_t)(start - m->data));
    gchar *b64 = g_base64_encode((const guchar *)xml, len);
    size_t blen = strlen(b64), head = (size_t)(start - m->data), tail = m->len - (size_t)(end - m->data);
    unsigned char *n = malloc(head + blen + tail);
    assert_non_null(n);
    memcpy(n, m->data, head);
    memcpy(n + head, b64, blen);
    memcpy(n + head + blen, end, tail);
    g_free(b64);
    free(m->data);
    m->data = n;
    m->len = head + blen + tail;
}

/* An acceptance receipt signed by the test provider whose daticert is xml
 * (a provider that signs what an attacker wrote, or a hostile provider). */
static void signed_with_daticert(const char *xml, size_t len, pec_buf *out)
{
    static pec_recipient r[] = {{"anna@pec.b.example", PEC_RCPT_CERTIFICATO}};
    size_t olen;
    const char *o = torig(&olen);
    pec_signer *s = tsigner(&tpki_get()->signer);
    pec_identity id = {.domain = "pec.a.example", .name = "Gestore A", .signer = s};
    pec_build_args a = {.type = PEC_TYPE_ACCETTAZIONE, .original = o, .original_len = olen,
                        .sender = "mario.rossi@pec.a.example", .recipients = r,
                        .n_recipients = 1, .when = 1750061700,
                        .pec_id = "opec1.20250616101500.1.1.1.1@pec.a.example",
                        .orig_msgid = "<abc123@client.example>",
                        .message_id = "opec1.20250616101500.1.2.1.2@pec.a.example"};
    pec_buf h, b;
    char err[256] = "";
    assert_int_equal(pec_build_unsigned(&id, &a, &h, &b, err, sizeof err), 0);
    replace_daticert(&b, xml, len);
    assert_int_equal(pec_smime_sign(s, (const char *)h.data, b.data, b.len, out, err, sizeof err),
                     0);
    pec_buf_free(&h);
    pec_buf_free(&b);
    pec_signer_free(s);
}

/* The attack of issue 16 at unit-test scale: a 1 KB entity used 20,000
 * times (20 MB once expanded; the real one was 100 KB, 2 GB). */
static char *bomb(size_t *len)
{
    GString *x = g_string_new("<?xml version=\"1.0\"?>\n<!DOCTYPE postacert [<!ENTITY x \"");
    for (int i = 0; i < 1024; i++)
        g_string_append_c(x, 'A');
    g_string_append(x, "\">]>\n<postacert tipo=\"accettazione\" errore=\"nessuno\"><intestazione>"
                       "<mittente>");
    for (int i = 0; i < 20000; i++)
        g_string_append(x, "&x;");
    g_string_append(x, "</mittente><destinatari tipo=\"certificato\">anna@pec.b.example"
                       "</destinatari><risposte>a@b</risposte></intestazione><dati>"
                       "<gestore-emittente>G</gestore-emittente><data zona=\"+0100\">"
                       "<giorno>01/01/2020</giorno><ora>00:00:00</ora></data><identificativo>"
                       "opec1.20250616101500.1.1.1.1@pec.a.example</identificativo><msgid>"
                       "&lt;abc123@client.example&gt;</msgid></dati></postacert>\n");
    *len = x->len;
    return g_string_free(x, FALSE);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void test_not_parsed_before_the_signature(void **state)
{
    (void)state;
    pec_trust *t = ttrust(false, false);
    pec_buf m;
    assert_int_equal(tbuild(PEC_TYPE_ACCETTAZIONE, 0, 0, &m), 0);
    size_t blen;
    char *x = bomb(&blen);
    replace_daticert(&m, x, blen); /* the signature no longer matches */
    pec_verdict v;
    double t0 = now();
    assert_int_equal(pec_verify(t, m.data, m.len, &v, NULL, 0), 0);
    assert_true(now() - t0 < 2.0);
    assert_false(v.valid);
    assert_int_equal(v.reason, PEC_R_CONTENT_CHANGED);
    assert_int_equal(v.cls.type, PEC_TYPE_ACCETTAZIONE);
    assert_null(v.daticert);
    assert_string_equal(v.daticert_error, ""); /* never read */
    pec_verdict_free(&v);
    /* pecctl's mode reads it for the report, through the bounded parser */
    assert_int_equal(pec_verify_flags(t, m.data, m.len, PEC_VERIFY_REPORT, &v, NULL, 0), 0);
    assert_false(v.valid);
    assert_int_equal(v.reason, PEC_R_CONTENT_CHANGED); /* the verdict is the same */
    assert_null(v.daticert);
    assert_string_equal(v.daticert_error,
                        "daticert: DOCTYPE/entity declarations are not allowed");
    pec_verdict_free(&v);
    free(x);
    pec_buf_free(&m);
    pec_trust_free(t);
}

static void test_signed_hostile_daticert(void **state)
{
    (void)state;
    pec_trust *t = ttrust(false, false);
    size_t blen;
    char *x = bomb(&blen);
    GString *attrs = g_string_new("<postacert tipo=\"accettazione\"");
    for (int i = 0; i < 60000; i++)
        g_string_append_printf(attrs, " a%d=\"\"", i);
    g_string_append(attrs, "/>");
    GString *big = g_string_new("<postacert>");
    while (big->len < 4 * PEC_DATICERT_MAX_BYTES)
        g_string_append(big, "<x>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA</x>");
    static const char xxe[] =
        "<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
        "<postacert tipo=\"accettazione\"><intestazione><mittente>&x;</mittente>"
        "</intestazione></postacert>";
    const struct {
        const char *xml;
        size_t len;
        const char *detail;
    } cases[] = {
        {x, blen, "daticert: DOCTYPE/entity declarations are not allowed"},
        {xxe, sizeof xxe - 1, "daticert: DOCTYPE/entity declarations are not allowed"},
        {attrs->str, attrs->len, "daticert: 60001 attributes on one element, more than the 8 "
                                 "allowed"},
        {big->str, big->len, "daticert: its part is larger than 4194304 bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pec_buf m;
        signed_with_daticert(cases[i].xml, cases[i].len, &m);
        pec_verdict v;
        double t0 = now();
        assert_int_equal(pec_verify(t, m.data, m.len, &v, NULL, 0), 0);
        assert_true(now() - t0 < 2.0);
        assert_false(v.valid);
        assert_int_equal(v.reason, PEC_R_DATICERT_INVALID);
        assert_string_equal(v.detail, cases[i].detail);
        assert_string_equal(v.daticert_error, cases[i].detail);
        assert_null(v.daticert);
        assert_non_null(v.signer_sha1[0] ? v.signer_sha1 : NULL); /* the signature held */
        pec_verdict_free(&v);
        pec_buf_free(&m);
    }
    g_string_free(attrs, TRUE);
    g_string_free(big, TRUE);
    free(x);
    pec_trust_free(t);
}

/* The multipart/signed entity of m without the outer header fields: its
 * Content-Type field (folded lines too) and its body. */
static void cut_bare(const pec_buf *m, pec_buf *out)
{
    unsigned char *ct = find(m, "Content-Type: multipart/signed", 0);
    unsigned char *body = find(m, "\r\n\r\n", 0);
    assert_true(ct < body);
    unsigned char *e = ct;
    do
        e = find(m, "\r\n", (size_t)(e - m->data)) + 2;
    while (*e == ' ' || *e == '\t');
    size_t flen = (size_t)(e - ct), blen = m->len - (size_t)(body + 2 - m->data);
    out->data = malloc(flen + blen);
    assert_non_null(out->data);
    memcpy(out->data, ct, flen);
    memcpy(out->data + flen, body + 2, blen);
    out->len = flen + blen;
}

static void test_bare_signed_entity(void **state)
{
    (void)state;
    pec_trust *t = ttrust(true, true);
    static const struct {
        pec_type type;
        pec_variant variant, want;
        pec_errore errore;
    } cases[] = {
        {PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_COMPLETA, PEC_VARIANT_COMPLETA, 0},
        {PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_BREVE, PEC_VARIANT_BREVE, 0},
        {PEC_TYPE_ACCETTAZIONE, 0, 0, 0},
        {PEC_TYPE_PRESA_IN_CARICO, 0, 0, 0},
        {PEC_TYPE_AVVENUTA_CONSEGNA, PEC_VARIANT_SINTETICA, PEC_VARIANT_SINTETICA, 0},
        {PEC_TYPE_ERRORE_CONSEGNA, 0, 0, PEC_ERRORE_NO_DEST},
        {PEC_TYPE_ANOMALIA, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pec_buf m, bare;
        assert_int_equal(tbuild(cases[i].type, cases[i].variant, cases[i].errore, &m), 0);
        cut_bare(&m, &bare);
        assert_true(bare.len < m.len);
        assert_null(memmem(bare.data, 200, "X-Trasporto", 11));
        pec_verdict v;
        /* without the option (pecd): not PEC, as before */
        assert_int_equal(pec_verify(t, bare.data, bare.len, &v, NULL, 0), 0);
        assert_false(v.valid);
        assert_int_equal(v.reason, PEC_R_NOT_PEC);
        assert_false(v.bare);
        pec_verdict_free(&v);
        /* with it: verified, the type from the signed daticert */
        assert_int_equal(pec_verify_flags(t, bare.data, bare.len,
                                          PEC_VERIFY_BARE | PEC_VERIFY_REPORT, &v, NULL, 0),
                         0);
        assert_true(v.bare);
        if (cases[i].type == PEC_TYPE_ANOMALIA) { /* §3.2.2: no daticert to type it */
            assert_false(v.valid);
            assert_int_equal(v.reason, PEC_R_NOT_PEC);
            assert_non_null(strstr(v.detail, "without X-Ricevuta, X-Trasporto and daticert"));
            assert_int_equal(v.cls.type, PEC_TYPE_NONE);
        } else {
            if (!v.valid)
                fprintf(stderr, "%s: %s\n", pec_type_name(cases[i].type), v.detail);
            assert_true(v.valid);
            assert_int_equal(v.cls.type, cases[i].type);
            assert_int_equal(v.cls.variant, cases[i].want);
            assert_int_equal(v.cls.errore, cases[i].errore);
            assert_true(v.directory_checked);
            assert_non_null(v.daticert);
            assert_int_equal(v.daticert->tipo, cases[i].type);
        }
        pec_verdict_free(&v);
        /* a changed byte in the signed content: invalid, untyped, the
         * daticert shown for the report */
        unsigned char *p = memmem(bare.data, bare.len, "multi-part message", 18);
        assert_non_null(p);
        *p = 'M';
        assert_int_equal(pec_verify_flags(t, bare.data, bare.len,
                                          PEC_VERIFY_BARE | PEC_VERIFY_REPORT, &v, NULL, 0),
                         0);
        assert_false(v.valid);
        assert_int_equal(v.reason, PEC_R_CONTENT_CHANGED);
        assert_true(v.bare);
        assert_int_equal(v.cls.type, PEC_TYPE_NONE);
        assert_true((v.daticert != NULL) == (cases[i].type != PEC_TYPE_ANOMALIA));
        pec_verdict_free(&v);
        pec_buf_free(&bare);
        pec_buf_free(&m);
    }
    /* a signed entity that kept its From is no bare entity: not PEC */
    pec_buf m, bare;
    assert_int_equal(tbuild(PEC_TYPE_ACCETTAZIONE, 0, 0, &m), 0);
    cut_bare(&m, &bare);
    const char from[] = "From: <posta-certificata@pec.a.example>\r\n";
    unsigned char *w = malloc(bare.len + sizeof from);
    memcpy(w, from, sizeof from - 1);
    memcpy(w + sizeof from - 1, bare.data, bare.len);
    pec_verdict v;
    assert_int_equal(pec_verify_flags(t, w, bare.len + sizeof from - 1, PEC_VERIFY_BARE, &v,
                                      NULL, 0),
                     0);
    assert_int_equal(v.reason, PEC_R_NOT_PEC);
    assert_false(v.bare);
    pec_verdict_free(&v);
    free(w);
    pec_buf_free(&bare);
    pec_buf_free(&m);
    pec_trust_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_parsed_before_the_signature),
        cmocka_unit_test(test_signed_hostile_daticert),
        cmocka_unit_test(test_bare_signed_entity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
