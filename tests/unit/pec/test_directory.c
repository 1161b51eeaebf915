/*
 * test_directory.c - the providers' directory model (RFC 6109 §4.5): every
 * attribute of the schema read from LDIF, lookups (domain, hash, receipt),
 * export and re-import unchanged, and a table of broken inputs, each with
 * the line it names.  Also CRLs given as DER or PEM to pec_trust.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "testutil.h"

static const char UNITS[] =
    "version: 1\n"
    "# a comment\n"
    "#  folded on the next line\n"
    "\n"
    "dn: o=postacert\n"
    "objectclass: top\n"
    "objectclass: organization\n"
    "objectClass: LDIFLocationURLObject\n"
    "o: postacert\n"
    "LDIFLocationURL: https://igpec.example/igpec.ldif.p7m\n"
    "\n"
    "dn: providerName=Posta P,o=postacert\r\n"
    "objectClass: top\r\n"
    "objectClass: provider\r\n"
    "providerName: Posta P\r\n"
    "mailReceipt: ricevute@p.test\r\n"
    "managedDomains: PEC.P.test\r\n"
    "managedDomains: b.p.test\r\n"
    "providerCertificateHash: AB:CD:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:\r\n"
    " 00:11\r\n"
    "LDIFLocationURL: https://p.test/p.ldif.p7m\r\n"
    "description:: w6ggdW4gZ2VzdG9yZQ==\r\n"
    "extraAttribute: kept\r\n"
    "\r\n"
    "dn: providerUnit=dr,providerName=Posta P,o=postacert\n"
    "objectClass: provider\n"
    "providerName: Posta P\n"
    "providerUnit: dr\n"
    "mailReceipt: dr@p.test\n"
    "managedDomains: pec.p.test\n"
    "managedDomains: dr.p.test\n"
    "providerCertificateHash: 0123456789ABCDEF0123456789abcdef01234567\n";

static void test_every_attribute_and_lookups(void **state)
{
    (void)state;
    char err[256];
    pec_directory *d = pec_directory_parse(UNITS, strlen(UNITS), err, sizeof err);
    assert_non_null(d);
    assert_int_equal(pec_directory_count(d), 2);
    assert_int_equal(pec_directory_entries(d), 3);
    assert_string_equal(pec_directory_root_url(d), "https://igpec.example/igpec.ldif.p7m");
    const pec_provider *p = pec_directory_by_domain(d, "pec.p.TEST");
    assert_non_null(p);
    assert_null(p->unit);                      /* the main record wins for its domains */
    assert_string_equal(p->name, "Posta P");
    assert_string_equal(p->receipt, "ricevute@p.test");
    assert_string_equal(p->dn, "providerName=Posta P,o=postacert");
    assert_string_equal(p->ldif_url, "https://p.test/p.ldif.p7m");
    assert_int_equal(p->n_descriptions, 1);
    assert_string_equal(p->descriptions[0], "\xc3\xa8 un gestore");
    assert_string_equal(p->hashes[0], "abcd00112233445566778899aabbccddeeff0011");
    const pec_provider *u = pec_directory_by_domain(d, "dr.p.test");
    assert_non_null(u);
    assert_string_equal(u->unit, "dr");
    assert_ptr_equal(pec_directory_by_hash(d, "0123456789abcdef0123456789ABCDEF01234567"), u);
    assert_string_equal(pec_directory_receipt_for_hash(d, "ABCD00112233445566778899AABBCCDDEEFF0011"),
                        "ricevute@p.test");
    assert_null(pec_directory_by_domain(d, "p.test"));          /* esterno */
    assert_null(pec_directory_receipt_for_hash(d, "00"));
    pec_directory_free(d);
}

static void test_certificate_attribute(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    unsigned char *der;
    int n = tcert_der(&k->signer, &der);
    assert_true(n > 0);
    pec_buf l = {0};
    const char *dn = "providerName=S,o=postacert";
    assert_int_equal(pec_ldif_put(&l, "dn", dn, strlen(dn)), 0);
    assert_int_equal(pec_ldif_put(&l, "providerName", "S", 1), 0);
    assert_int_equal(pec_ldif_put(&l, "mailReceipt", "r@s.test", 8), 0);
    assert_int_equal(pec_ldif_put(&l, "managedDomains", "s.test", 6), 0);
    assert_int_equal(pec_ldif_put(&l, "providerCertificate;binary", der, (size_t)n), 0);
    assert_int_equal(pec_ldif_put(&l, NULL, NULL, 0), 0);
    OPENSSL_free(der);
    char err[256];
    pec_directory *d = pec_directory_parse(l.data, l.len, err, sizeof err);
    assert_non_null(d);
    const pec_provider *p = pec_directory_by_hash(d, k->signer_sha1);
    assert_non_null(p);
    assert_int_equal(p->n_certs, 1);
    assert_int_equal(p->certs[0].len, (size_t)n);
    pec_trust *t = pec_trust_new();
    assert_int_equal(pec_directory_add_to_trust(d, t), 1);
    pec_trust_free(t);
    char **urls = pec_directory_crl_urls(d);
    assert_null(urls[0]);                      /* the test certificates name no CDP */
    pec_strv_free(urls);
    pec_directory_free(d);
    pec_buf_free(&l);
}

static void test_export_reads_back_the_same(void **state)
{
    (void)state;
    pec_directory *d = pec_directory_parse(UNITS, strlen(UNITS), NULL, 0);
    assert_non_null(d);
    pec_buf a = {0}, b = {0};
    assert_int_equal(pec_directory_to_ldif(d, &a, NULL, 0), 0);
    assert_non_null(memmem(a.data, a.len, "extraAttribute: kept\n", 21));
    assert_non_null(memmem(a.data, a.len, "description:: ", 14));   /* UTF-8 goes base64 */
    pec_directory *d2 = pec_directory_parse(a.data, a.len, NULL, 0);
    assert_non_null(d2);
    assert_int_equal(pec_directory_to_ldif(d2, &b, NULL, 0), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(pec_directory_count(d2), 2);
    pec_buf_free(&a);
    pec_buf_free(&b);
    pec_directory_free(d);
    pec_directory_free(d2);
}

#define PROV(extra)                                                                        \
    "dn: providerName=X,o=postacert\nproviderName: X\nmailReceipt: r@x.test\n"            \
    "managedDomains: x.test\nproviderCertificateHash: 0123456789abcdef0123456789abcdef01234567\n" extra

static const struct {
    const char *input;
    const char *error;                 /* a substring of the message */
} BAD[] = {
    {"dn: o=postacert\nno colon here\n", "LDIF line 2: not 'attribute: value'"},
    {"dn: o=postacert\ndescription:: !!!!\n", "LDIF line 2: bad base64"},
    {"dn: o=postacert\ndescription:< file:///etc/passwd\n", "LDIF line 2: URL values"},
    {"providerName: X\n", "LDIF line 1: a record must begin with 'dn:'"},
    {"dn: o=postacert\nchangetype: add\n", "LDIF line 2: change records"},
    {"dn: o=postacert\no: postacert\ndn: o=other\n", "LDIF line 3: 'dn:' inside a record"},
    {"version: 2\n\ndn: o=x\n", "LDIF line 1: only LDIF version 1"},
    {" folded\n", "LDIF line 1: continuation line"},
    {"dn: o=postacert\n\n\n" PROV("providerName: Y\n"), "LDIF line 9 (providerName=X,o=postacert): providerName is single-valued"},
    {PROV("mailReceipt: two@x.test\n"), "LDIF line 6 (providerName=X,o=postacert): mailReceipt is single-valued"},
    {"dn: providerName=X,o=postacert\nproviderName: X\nmailReceipt: not an address\n",
     "LDIF line 3 (providerName=X,o=postacert): mailReceipt is not an address"},
    {PROV("managedDomains: bad domain\n"), "LDIF line 6 (providerName=X,o=postacert): managedDomains is not a domain"},
    {PROV("providerCertificateHash: 1234\n"), "LDIF line 6 (providerName=X,o=postacert): providerCertificateHash is not a SHA-1"},
    {PROV("providerCertificate;binary:: AAAA\n"), "LDIF line 6 (providerName=X,o=postacert): providerCertificate is not a DER"},
    {"dn: providerName=X,o=postacert\nobjectClass: provider\nmailReceipt: r@x.test\n",
     "LDIF line 1 (providerName=X,o=postacert): provider record without providerName"},
    {"dn: providerName=X,o=postacert\nproviderName: X\nmailReceipt: r@x.test\n"
     "managedDomains: x.test\n", "provider record without providerCertificateHash"},
    {PROV("\ndn: providerName=Y,o=postacert\nproviderName: Y\nmailReceipt: r@y.test\n"
          "managedDomains: X.TEST\nproviderCertificateHash: 0123456789abcdef0123456789abcdef01234567\n"),
     "LDIF line 7 (providerName=Y,o=postacert): managedDomains x.test is already managed by X"},
    {"dn: o=x\ndescription: a\0b\n", "NUL byte"},
};

static void test_broken_inputs_name_the_line(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char err[256] = "";
        size_t len = strlen(BAD[i].input);
        if (strstr(BAD[i].error, "NUL"))
            len += 4;                          /* past the embedded NUL */
        pec_directory *d = pec_directory_parse(BAD[i].input, len, err, sizeof err);
        if (d != NULL || strstr(err, BAD[i].error) == NULL)
            fail_msg("case %zu: got '%s', want '%s'", i, d ? "a directory" : err, BAD[i].error);
    }
}

static void test_crl_der_and_pem(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    pec_trust *t = pec_trust_new();
    char err[256];
    assert_int_equal(pec_trust_add_crl(t, k->crl.data, k->crl.len, err, sizeof err), 0);
    BIO *b = BIO_new_mem_buf(k->crl.data, (int)k->crl.len);
    X509_CRL *c = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
    BIO_free(b);
    unsigned char *der = NULL;
    int n = i2d_X509_CRL(c, &der);
    X509_CRL_free(c);
    assert_int_equal(pec_trust_add_crl(t, der, (size_t)n, err, sizeof err), 0);
    assert_int_equal(pec_trust_crl_count(t), 2);
    assert_int_equal(pec_trust_add_crl(t, "garbage", 7, err, sizeof err), -1);
    assert_non_null(strstr(err, "neither a PEM nor a DER CRL"));
    OPENSSL_free(der);
    pec_trust_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_attribute_and_lookups),
        cmocka_unit_test(test_certificate_attribute),
        cmocka_unit_test(test_export_reads_back_the_same),
        cmocka_unit_test(test_broken_inputs_name_the_line),
        cmocka_unit_test(test_crl_der_and_pem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
