/*
 * test_dirp7m.c - the signed providers' directory (RFC 6109 §4.5, issue 19):
 * the unwrap-and-verify of a .p7m as a table of cases (good, its own
 * certificate as the anchor, content changed, signature changed, another
 * authority, expired, revoked with and without its CRL, not DER, truncated,
 * empty, detached, trailing bytes, no signer certificate, no anchor, too
 * large), each naming its status; our own record as LDIF (two certificates,
 * an escaped DN, refusals); and the differences between two copies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "pec/pec_dirp7m.h"
#include "testutil.h"

static const char LDIF[] =
    "version: 1\n\n"
    "dn: o=postacert\nobjectclass: top\nobjectclass: organization\no: postacert\n"
    "LDIFLocationURL: https://igpec.example/igpec.ldif.p7m\n\n"
    "dn: providerName=Gestore A,o=postacert\nobjectclass: provider\nproviderName: Gestore A\n"
    "mailReceipt: posta-certificata@pec.a.example\nmanagedDomains: pec.a.example\n"
    "providerCertificateHash: 0123456789abcdef0123456789abcdef01234567\n\n";

static pec_buf sign_with(const pec_pki_pair *pair, const char *text)
{
    pec_signer *s = tsigner(pair);
    pec_buf der = {0};
    char err[256] = "";
    int rc = pec_dir_p7m_sign(s, text, strlen(text), &der, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "sign: %s\n", err);
    assert_int_equal(rc, 0);
    pec_signer_free(s);
    return der;
}

static pec_trust *anchors(const pec_buf *pem, const pec_buf *crl)
{
    pec_trust *t = pec_trust_new();
    if (pem)
        assert_int_equal(pec_trust_add_ca_pem(t, pem->data, pem->len, NULL, 0), 0);
    if (crl)
        assert_int_equal(pec_trust_add_crl(t, crl->data, crl->len, NULL, 0), 0);
    return t;
}

/* A SignedData without the signer certificate (CMS_NOCERTS), content attached. */
static pec_buf sign_nocerts(const pec_pki_pair *pair, const char *text)
{
    BIO *kb = BIO_new_mem_buf(pair->key_pem.data, (int)pair->key_pem.len);
    BIO *cb = BIO_new_mem_buf(pair->cert_pem.data, (int)pair->cert_pem.len);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    X509 *x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    BIO *in = BIO_new_mem_buf(text, (int)strlen(text));
    CMS_ContentInfo *cms = CMS_sign(x, k, NULL, in, CMS_BINARY | CMS_NOCERTS);
    assert_non_null(cms);
    unsigned char *der = NULL;
    int n = i2d_CMS_ContentInfo(cms, &der);
    pec_buf out = {.data = malloc((size_t)n), .len = (size_t)n};
    memcpy(out.data, der, (size_t)n);
    OPENSSL_free(der);
    CMS_ContentInfo_free(cms);
    BIO_free(in);
    BIO_free(kb);
    BIO_free(cb);
    EVP_PKEY_free(k);
    X509_free(x);
    return out;
}

enum mangle { AS_IS, CONTENT_BYTE, LAST_BYTE, HALF, APPEND, DETACHED };

struct p7m_case {
    const char *name;
    int signer;                    /* 0 signer, 1 other_signer, 2 expired, 3 revoked */
    enum mangle how;
    int anchor;                    /* 0 CA, 1 the signer's own certificate, 2 none */
    bool crl;
    pec_p7m_status want;
    const char *reason;            /* a piece of the message */
};

static const struct p7m_case CASES[] = {
    {"good", 0, AS_IS, 0, true, PEC_P7M_OK, NULL},
    {"own certificate as anchor", 0, AS_IS, 1, false, PEC_P7M_OK, NULL},
    {"one byte of content changed", 0, CONTENT_BYTE, 0, false, PEC_P7M_CONTENT_CHANGED,
     "content-changed: the content was changed after signing"},
    {"signature value changed", 0, LAST_BYTE, 0, false, PEC_P7M_BAD_SIGNATURE,
     "bad-signature"},
    {"another authority", 1, AS_IS, 0, false, PEC_P7M_UNTRUSTED_SIGNER,
     "unexpected-signer: the signer"},
    {"expired signer", 2, AS_IS, 0, false, PEC_P7M_SIGNER_EXPIRED, "signer-expired: the signer "
                                                                  "certificate"},
    {"revoked signer", 3, AS_IS, 0, true, PEC_P7M_SIGNER_REVOKED,
     "was revoked on 2024-03-01T10:00:00Z (keyCompromise)"},
    {"revoked signer, no CRL loaded", 3, AS_IS, 0, false, PEC_P7M_OK, NULL},
    {"cut in half", 0, HALF, 0, false, PEC_P7M_TRUNCATED, "truncated: the DER structure "
                                                          "announces"},
    {"bytes after the structure", 0, APPEND, 0, false, PEC_P7M_FORMAT, "after the end"},
    {"detached signature", 0, DETACHED, 0, false, PEC_P7M_FORMAT, "detached"},
    {"no anchor", 0, AS_IS, 2, false, PEC_P7M_UNTRUSTED_SIGNER, "no certificate in [pec] "
                                                                "directory_signer"},
};

static void test_unwrap_table(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    const pec_pki_pair *signers[] = {&k->signer, &k->other_signer, &k->expired, &k->revoked};
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const struct p7m_case *c = &CASES[i];
        pec_buf der;
        if (c->how == DETACHED) {
            pec_signer *s = tsigner(signers[c->signer]);
            assert_int_equal(s->sign(s->ctx, LDIF, strlen(LDIF), &der, NULL, 0), 0);
            pec_signer_free(s);
        } else {
            der = sign_with(signers[c->signer], LDIF);
        }
        size_t len = der.len;
        unsigned char *at;
        switch (c->how) {
        case CONTENT_BYTE:
            at = memmem(der.data, der.len, "Gestore A", 9);
            assert_non_null(at);
            at[0] ^= 0x20;
            break;
        case LAST_BYTE:
            der.data[der.len - 1] ^= 0x01;
            break;
        case HALF:
            len = der.len / 2;
            break;
        case APPEND:
            der.data = realloc(der.data, der.len + 3);
            memcpy(der.data + der.len, "xyz", 3);
            len = der.len + 3;
            break;
        default:
            break;
        }
        pec_trust *t = anchors(c->anchor == 0   ? &k->ca.cert_pem
                               : c->anchor == 1 ? &signers[c->signer]->cert_pem
                                                : NULL,
                               c->crl ? &k->crl : NULL);
        pec_buf out = {0};
        pec_p7m_info info;
        char err[512] = "";
        int rc = pec_dir_p7m_open(t, der.data, len, time(NULL), &out, &info, err, sizeof err);
        printf("  %-32s %s\n", c->name, pec_p7m_status_name(info.status));
        if (c->want == PEC_P7M_OK) {
            if (rc != 0)
                fail_msg("%s: %s", c->name, err);
            assert_int_equal(out.len, strlen(LDIF));
            assert_memory_equal(out.data, LDIF, out.len);
            assert_true(info.signing_time > 0 && info.signing_time <= time(NULL) + 1);
            assert_int_equal(strlen(info.signer_sha1), 40);
        } else {
            assert_int_equal(rc, -1);
            if (info.status != c->want)
                fail_msg("%s: status %s, want %s (%s)", c->name,
                         pec_p7m_status_name(info.status), pec_p7m_status_name(c->want), err);
            if (strstr(err, c->reason) == NULL)
                fail_msg("%s: '%s' lacks '%s'", c->name, err, c->reason);
            assert_null(out.data);
        }
        pec_buf_free(&out);
        pec_buf_free(&der);
        pec_trust_free(t);
    }
}

static void test_not_der_empty_nocerts_too_large(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    pec_trust *t = anchors(&k->ca.cert_pem, NULL);
    pec_p7m_info info;
    char err[512];
    pec_buf out;
    assert_int_equal(pec_dir_p7m_open(t, LDIF, strlen(LDIF), time(NULL), &out, &info, err,
                                      sizeof err), -1);
    assert_int_equal(info.status, PEC_P7M_NOT_DER);
    assert_non_null(strstr(err, "not-der"));
    assert_int_equal(pec_dir_p7m_open(t, "", 0, time(NULL), &out, &info, err, sizeof err), -1);
    assert_int_equal(info.status, PEC_P7M_NOT_DER);
    /* a SEQUENCE that is no ContentInfo */
    static const unsigned char seq[] = {0x30, 0x03, 0x02, 0x01, 0x05};
    assert_int_equal(pec_dir_p7m_open(t, seq, sizeof seq, time(NULL), &out, &info, err,
                                      sizeof err), -1);
    assert_int_equal(info.status, PEC_P7M_NOT_DER);
    pec_buf nc = sign_nocerts(&k->signer, LDIF);
    assert_int_equal(pec_dir_p7m_open(t, nc.data, nc.len, time(NULL), &out, &info, err,
                                      sizeof err), -1);
    assert_int_equal(info.status, PEC_P7M_NO_SIGNER_CERT);
    pec_buf_free(&nc);
    /* the size is looked at before any byte */
    static const unsigned char one[1] = {0x30};
    assert_int_equal(pec_dir_p7m_open(t, one, (size_t)PEC_P7M_MAX + 1, time(NULL), &out, &info,
                                      err, sizeof err), -1);
    assert_int_equal(info.status, PEC_P7M_TOO_LARGE);
    pec_trust_free(t);
}

/* Signed now, checked at a later time when the signer has expired: the
 * check is made at the time given, not at the signing time. */
static void test_checked_at_the_time_given(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    pec_buf der = sign_with(&k->signer, LDIF);
    pec_trust *t = anchors(&k->ca.cert_pem, NULL);
    pec_p7m_info info;
    char err[512];
    pec_buf out;
    assert_int_equal(pec_dir_p7m_open(t, der.data, der.len, time(NULL) + 900L * 86400, &out,
                                      &info, err, sizeof err), -1);
    assert_int_equal(info.status, PEC_P7M_SIGNER_EXPIRED);
    /* two phases: the signature first, then the signer */
    pec_p7m *p = pec_p7m_read(der.data, der.len, &info, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(pec_p7m_content(p)->len, strlen(LDIF));
    char **urls = pec_p7m_crl_urls(p);
    assert_null(urls[0]);          /* the test certificates name no CDP */
    pec_strv_free(urls);
    assert_int_equal(pec_p7m_check_signer(p, t, time(NULL), &info, err, sizeof err), 0);
    pec_p7m_free(p);
    pec_buf_free(&der);
    pec_trust_free(t);
}

/* ---- our record ------------------------------------------------------------------ */

static pec_buf cert_der(const pec_pki_pair *p)
{
    unsigned char *der;
    int n = tcert_der(p, &der);
    assert_true(n > 0);
    pec_buf b = {.data = malloc((size_t)n), .len = (size_t)n};
    memcpy(b.data, der, (size_t)n);
    OPENSSL_free(der);
    return b;
}

static void test_record_two_certificates_and_escaped_dn(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    pec_buf certs[2] = {cert_der(&k->signer), cert_der(&k->other_signer)};
    const char *domains[] = {"pec.a.example", "pec2.a.example"};
    pec_dir_record r = {.name = "Gestore, \"A\" S.p.A.", .receipt = "posta-certificata@pec.a.example",
                        .domains = domains, .n_domains = 2, .certs = certs, .n_certs = 2,
                        .location_url = "https://pec.a.example/a.p7m",
                        .description = "Posta certificata \xc3\xa8 qui"};
    pec_buf l = {0};
    char err[512] = "";
    assert_int_equal(pec_dir_record_ldif(&r, &l, err, sizeof err), 0);
    assert_non_null(memmem(l.data, l.len, "dn: providerName=Gestore\\, \\\"A\\\" S.p.A.,o=postacert\n",
                           strlen("dn: providerName=Gestore\\, \\\"A\\\" S.p.A.,o=postacert\n")));
    pec_directory *d = pec_directory_parse(l.data, l.len, err, sizeof err);
    assert_non_null(d);
    const pec_provider *p = pec_directory_by_hash(d, k->signer_sha1);
    assert_non_null(p);
    assert_string_equal(p->name, "Gestore, \"A\" S.p.A.");
    assert_int_equal(p->n_certs, 2);
    assert_int_equal(p->n_hashes, 2);
    assert_int_equal(p->n_domains, 2);
    assert_string_equal(p->ldif_url, "https://pec.a.example/a.p7m");
    assert_string_equal(p->descriptions[0], "Posta certificata \xc3\xa8 qui");
    assert_ptr_equal(pec_directory_by_domain(d, "PEC2.a.example"), p);
    /* signed, it opens again into the same text */
    pec_buf der = sign_with(&k->signer, (const char *)l.data);
    pec_trust *t = anchors(&k->ca.cert_pem, NULL);
    pec_buf out;
    pec_p7m_info info;
    assert_int_equal(pec_dir_p7m_open(t, der.data, der.len, time(NULL), &out, &info, err,
                                      sizeof err), 0);
    assert_int_equal(out.len, l.len);
    assert_memory_equal(out.data, l.data, l.len);
    pec_buf_free(&out);
    pec_buf_free(&der);
    pec_trust_free(t);
    pec_directory_free(d);
    pec_buf_free(&l);
    /* refusals: what a reader would refuse is not published */
    pec_dir_record bad = r;
    bad.location_url = "http://pec.a.example/a.p7m";
    assert_int_equal(pec_dir_record_ldif(&bad, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "not an https:// URL"));
    bad = r;
    const char *baddom[] = {"bad domain"};
    bad.domains = baddom;
    bad.n_domains = 1;
    assert_int_equal(pec_dir_record_ldif(&bad, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "managedDomains is not a domain"));
    bad = r;
    bad.n_certs = 0;
    assert_int_equal(pec_dir_record_ldif(&bad, &l, err, sizeof err), -1);
    pec_buf junk = {.data = (unsigned char *)"not a certificate", .len = 17};
    bad = r;
    bad.certs = &junk;
    bad.n_certs = 1;
    assert_int_equal(pec_dir_record_ldif(&bad, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a DER X.509"));
    pec_buf_free(&certs[0]);
    pec_buf_free(&certs[1]);
}

/* ---- differences -------------------------------------------------------------------- */

#define REC(name, dom, hash, rcpt)                                                        \
    "dn: providerName=" name ",o=postacert\nobjectclass: provider\nproviderName: " name   \
    "\nmailReceipt: " rcpt "\nmanagedDomains: " dom "\nproviderCertificateHash: " hash "\n\n"
#define H1 "1111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222"
#define H3 "3333333333333333333333333333333333333333"

static void test_diff(void **state)
{
    (void)state;
    static const char OLD[] = REC("A", "a.test\nmanagedDomains: moved.test", H1, "r@a.test")
        REC("B", "b.test", H2, "r@b.test") REC("Gone", "gone.test", H3, "r@gone.test");
    static const char NEW[] = REC("A", "a.test", H1 "\nproviderCertificateHash: " H3, "x@a.test")
        REC("B", "b.test\nmanagedDomains: moved.test", H2, "r@b.test")
        REC("New", "new.test", "4444444444444444444444444444444444444444", "r@new.test");
    char err[256];
    pec_directory *o = pec_directory_parse(OLD, strlen(OLD), err, sizeof err);
    pec_directory *n = pec_directory_parse(NEW, strlen(NEW), err, sizeof err);
    assert_non_null(o);
    assert_non_null(n);
    pec_buf out = {0};
    size_t changes = 0;
    assert_int_equal(pec_directory_diff(o, n, &out, &changes), 0);
    char *text = strndup((char *)out.data, out.len);
    printf("%s", text);
    static const char *const want[] = {
        "~ mailReceipt A: r@a.test -> x@a.test\n",
        "+ provider New\n",
        "- provider Gone\n",
        "~ certificate " H3 ": Gone -> A\n",
        "+ certificate 4444444444444444444444444444444444444444 (New)\n",
        "~ domain moved.test: A -> B\n",
        "+ domain new.test (New)\n",
        "- domain gone.test (Gone)\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (strstr(text, want[i]) == NULL)
            fail_msg("missing '%s' in:\n%s", want[i], text);
    assert_int_equal(changes, sizeof want / sizeof want[0]);
    free(text);
    pec_buf_free(&out);
    /* nothing changed; and no copy before */
    assert_int_equal(pec_directory_diff(n, n, &out, &changes), 0);
    assert_int_equal(changes, 0);
    pec_buf_free(&out);
    assert_int_equal(pec_directory_diff(NULL, o, &out, &changes), 0);
    assert_int_equal(changes, 3 + 3 + 4);   /* providers, certificates, domains */
    pec_buf_free(&out);
    pec_directory_free(o);
    pec_directory_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unwrap_table),
        cmocka_unit_test(test_not_der_empty_nocerts_too_large),
        cmocka_unit_test(test_checked_at_the_time_given),
        cmocka_unit_test(test_record_two_certificates_and_escaped_dn),
        cmocka_unit_test(test_diff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
