/*
 * test_cms.c - pec_cms_read: the certificates of a SignedData come from the
 * cache, the rest reads and verifies as OpenSSL's own reading does; the
 * signature from a digest; several messages signed at once (pec_smime_sign_n).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "pec/pec_internal.h"
#include "testutil.h"

static const char content[] = "Content-Type: text/plain\r\n\r\nsigned text\r\n";

/* A detached signature by the test signer with its CA certificate embedded. */
static void sign_with_chain(pec_buf *der)
{
    const struct tpki *p = tpki_get();
    size_t n = p->signer.cert_pem.len + p->ca.cert_pem.len;
    char *chain = malloc(n);
    memcpy(chain, p->signer.cert_pem.data, p->signer.cert_pem.len);
    memcpy(chain + p->signer.cert_pem.len, p->ca.cert_pem.data, p->ca.cert_pem.len);
    char err[256];
    pec_signer *s = pec_signer_new_pem((const char *)p->signer.key_pem.data,
                                       p->signer.key_pem.len, chain, n, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(s->sign(s->ctx, content, strlen(content), der, err, sizeof err), 0);
    pec_signer_free(s);
    free(chain);
}

static int verify(CMS_ContentInfo *cms, STACK_OF(X509) *certs, const char *data)
{
    BIO *dc = BIO_new_mem_buf(data, (int)strlen(data));
    int ok = CMS_verify(cms, certs, NULL, dc, NULL, CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY);
    BIO_free(dc);
    return ok;
}

static void test_certificates_from_the_cache(void **state)
{
    (void)state;
    pec_buf der = {0};
    sign_with_chain(&der);

    STACK_OF(X509) *c1 = NULL, *c2 = NULL;
    CMS_ContentInfo *a = pec_cms_read(der.data, der.len, &c1);
    CMS_ContentInfo *b = pec_cms_read(der.data, der.len, &c2);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(OBJ_obj2nid(CMS_get0_type(a)), NID_pkcs7_signed);
    /* the same two certificates as OpenSSL reads, parsed once */
    const unsigned char *p = der.data;
    CMS_ContentInfo *whole = d2i_CMS_ContentInfo(NULL, &p, (long)der.len);
    STACK_OF(X509) *ref = CMS_get1_certs(whole);
    assert_int_equal(sk_X509_num(ref), 2);
    assert_int_equal(sk_X509_num(c1), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(X509_cmp(sk_X509_value(c1, i), sk_X509_value(ref, i)), 0);
        assert_ptr_equal(sk_X509_value(c1, i), sk_X509_value(c2, i));
    }
    /* the CMS itself no longer carries them */
    STACK_OF(X509) *inside = CMS_get1_certs(a);
    assert_int_equal(inside ? sk_X509_num(inside) : 0, 0);
    sk_X509_pop_free(inside, X509_free);

    /* it verifies with them, finds its signer among them, and not without them */
    assert_int_equal(verify(a, c1, content), 1);
    STACK_OF(X509) *signers = CMS_get0_signers(a);
    unsigned char *want, *got = NULL;
    int wlen = tcert_der(&tpki_get()->signer, &want);
    int glen = i2d_X509(sk_X509_value(signers, 0), &got);
    assert_int_equal(glen, wlen);
    assert_memory_equal(got, want, (size_t)wlen);
    OPENSSL_free(want);
    OPENSSL_free(got);
    sk_X509_free(signers);
    assert_int_equal(verify(b, c2, "Content-Type: text/plain\r\n\r\nchanged text\r\n"), 0);
    STACK_OF(X509) *none = sk_X509_new_null(), *c3 = NULL;
    CMS_ContentInfo *c = pec_cms_read(der.data, der.len, &c3);
    assert_int_equal(verify(c, none, content), 0);
    ERR_clear_error();

    sk_X509_free(none);
    sk_X509_pop_free(ref, X509_free);
    sk_X509_pop_free(c1, X509_free);
    sk_X509_pop_free(c2, X509_free);
    sk_X509_pop_free(c3, X509_free);
    CMS_ContentInfo_free(a);
    CMS_ContentInfo_free(b);
    CMS_ContentInfo_free(c);
    CMS_ContentInfo_free(whole);
    free(der.data);
}

static void test_unreadable_and_other_types(void **state)
{
    (void)state;
    STACK_OF(X509) *certs = NULL;
    assert_null(pec_cms_read((const unsigned char *)"garbage", 7, &certs));
    sk_X509_pop_free(certs, X509_free);

    /* a broken certificate: as unreadable as OpenSSL finds it */
    pec_buf der = {0};
    sign_with_chain(&der);
    unsigned char *cader;
    int calen = tcert_der(&tpki_get()->ca, &cader);
    assert_true(calen > 300);
    unsigned char *at = memmem(der.data, der.len, cader, (size_t)calen);
    assert_non_null(at);
    at[4] = 0x05;   /* the tag of its TBSCertificate: no longer a certificate */
    certs = NULL;
    const unsigned char *q = der.data;
    CMS_ContentInfo *whole = d2i_CMS_ContentInfo(NULL, &q, (long)der.len);
    CMS_ContentInfo *cms = pec_cms_read(der.data, der.len, &certs);
    assert_true((whole == NULL) == (cms == NULL));
    assert_null(cms);
    CMS_ContentInfo_free(whole);
    sk_X509_pop_free(certs, X509_free);
    OPENSSL_free(cader);
    free(der.data);

    /* not a SignedData: read whole, no certificates */
    BIO *in = BIO_new_mem_buf(content, (int)strlen(content));
    CMS_ContentInfo *data = CMS_data_create(in, CMS_BINARY);
    BIO_free(in);
    unsigned char *dd = NULL;
    int dl = i2d_CMS_ContentInfo(data, &dd);
    CMS_ContentInfo_free(data);
    certs = NULL;
    cms = pec_cms_read(dd, (size_t)dl, &certs);
    assert_non_null(cms);
    assert_int_equal(OBJ_obj2nid(CMS_get0_type(cms)), NID_pkcs7_data);
    assert_int_equal(sk_X509_num(certs), 0);
    sk_X509_pop_free(certs, X509_free);
    CMS_ContentInfo_free(cms);
    OPENSSL_free(dd);
    ERR_clear_error();
}

/* The signature from a digest (what pecd's signer process is asked) is the
 * one sign() makes over the content: the same signed attributes (contentType
 * id-data, messageDigest, signingTime, SMIMECapabilities), detached, and it
 * verifies over the content with OpenSSL's own reading; a digest of the
 * wrong length is refused. */
static void test_signature_from_the_digest(void **state)
{
    (void)state;
    const struct tpki *p = tpki_get();
    char err[256];
    pec_signer *s = pec_signer_new_pem((const char *)p->signer.key_pem.data,
                                       p->signer.key_pem.len,
                                       (const char *)p->signer.cert_pem.data,
                                       p->signer.cert_pem.len, err, sizeof err);
    assert_non_null(s);
    unsigned char md[32];
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(content, strlen(content), md, &mdlen, EVP_sha256(), NULL), 1);
    pec_buf der = {0}, whole = {0};
    assert_int_equal(pec_signer_sign_digest(s, md, mdlen, &der, err, sizeof err), 0);
    assert_int_equal(s->sign(s->ctx, content, strlen(content), &whole, err, sizeof err), 0);
    pec_buf_free(&der);
    assert_int_equal(pec_signer_sign_digest(s, md, 20, &der, err, sizeof err), -1);
    assert_non_null(strstr(err, "32 octets"));
    assert_null(der.data);
    assert_int_equal(pec_signer_sign_digest(s, md, mdlen, &der, err, sizeof err), 0);

    STACK_OF(X509) *none = sk_X509_new_null();
    const pec_buf *both[] = {&der, &whole};
    for (int i = 0; i < 2; i++) {
        const unsigned char *q = both[i]->data;
        CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &q, (long)both[i]->len);
        assert_non_null(cms);
        assert_non_null(CMS_get0_content(cms));
        assert_null(*CMS_get0_content(cms));          /* detached */
        CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
        assert_int_equal(CMS_signed_get_attr_count(si), 4);
        static const int nids[] = {NID_pkcs9_contentType, NID_pkcs9_messageDigest,
                                   NID_pkcs9_signingTime, NID_SMIMECapabilities};
        for (size_t k = 0; k < sizeof nids / sizeof nids[0]; k++)
            assert_true(CMS_signed_get_attr_by_NID(si, nids[k], -1) >= 0);
        assert_int_equal(verify(cms, none, content), 1);
        assert_int_equal(verify(cms, none, "Content-Type: text/plain\r\n\r\nother\r\n"), 0);
        ERR_clear_error();
        CMS_ContentInfo_free(cms);
    }
    sk_X509_free(none);
    pec_buf_free(&der);
    pec_buf_free(&whole);
    /* a signer without a key of its own cannot be asked */
    pec_signer other = {0};
    assert_int_equal(pec_signer_sign_digest(&other, md, mdlen, &der, err, sizeof err), -1);
    pec_signer_free(s);
}

/* A signer whose sign_n counts its calls and signs through the PEM signer. */
struct counting {
    pec_signer *pem;
    int calls_n, calls_one;
    int fail;
};

static int count_sign(void *ctx, const void *d, size_t n, pec_buf *der, char *err, size_t errsz)
{
    struct counting *c = ctx;
    c->calls_one++;
    return c->pem->sign(c->pem->ctx, d, n, der, err, errsz);
}

static int count_sign_n(void *ctx, size_t n, const void *const *d, const size_t *len,
                        pec_buf *der, char *err, size_t errsz)
{
    struct counting *c = ctx;
    c->calls_n++;
    if (c->fail) {
        snprintf(err, errsz, "refused");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(c->pem->sign(c->pem->ctx, d[i], len[i], &der[i], err, errsz), 0);
    return 0;
}

static void test_several_signed_at_once(void **state)
{
    (void)state;
    const struct tpki *p = tpki_get();
    char err[256];
    struct counting c = {0};
    c.pem = pec_signer_new_pem((const char *)p->signer.key_pem.data, p->signer.key_pem.len,
                               (const char *)p->signer.cert_pem.data, p->signer.cert_pem.len,
                               err, sizeof err);
    assert_non_null(c.pem);
    pec_signer s = {.sign = count_sign, .sign_n = count_sign_n, .ctx = &c};
    const char *heads[2] = {"Subject: ricevuta\r\n", "Subject: busta\r\n"};
    const void *bodies[2] = {"Content-Type: text/plain\r\n\r\nuno\r\n",
                             "Content-Type: text/plain\r\n\r\ndue\r\n"};
    size_t lens[2] = {strlen(bodies[0]), strlen(bodies[1])};
    pec_buf out[PEC_SIGN_N_MAX + 1];
    /* two at once: one sign_n call, each message its own headers, content, signature */
    assert_int_equal(pec_smime_sign_n(&s, 2, heads, bodies, lens, out, err, sizeof err), 0);
    assert_int_equal(c.calls_n, 1);
    assert_int_equal(c.calls_one, 0);
    for (int i = 0; i < 2; i++) {
        assert_non_null(memmem(out[i].data, out[i].len, heads[i], strlen(heads[i])));
        assert_non_null(memmem(out[i].data, out[i].len, bodies[i], lens[i]));
        assert_null(memmem(out[i].data, out[i].len, bodies[1 - i], lens[1 - i]));
        assert_non_null(memmem(out[i].data, out[i].len, "smime.p7s", 9));
        pec_buf_free(&out[i]);
    }
    /* one: sign(), not sign_n */
    assert_int_equal(pec_smime_sign(&s, heads[0], bodies[0], lens[0], &out[0], err, sizeof err),
                     0);
    assert_int_equal(c.calls_one, 1);
    pec_buf_free(&out[0]);
    /* none, or more than PEC_SIGN_N_MAX, refused; a refusal of sign_n leaves nothing */
    assert_int_equal(pec_smime_sign_n(&s, 0, heads, bodies, lens, out, err, sizeof err), -1);
    const char *h5[PEC_SIGN_N_MAX + 1];
    const void *b5[PEC_SIGN_N_MAX + 1];
    size_t l5[PEC_SIGN_N_MAX + 1];
    for (int i = 0; i <= PEC_SIGN_N_MAX; i++) {
        h5[i] = heads[0];
        b5[i] = bodies[0];
        l5[i] = lens[0];
    }
    assert_int_equal(pec_smime_sign_n(&s, PEC_SIGN_N_MAX + 1, h5, b5, l5, out, err, sizeof err),
                     -1);
    c.fail = 1;
    assert_int_equal(pec_smime_sign_n(&s, 2, heads, bodies, lens, out, err, sizeof err), -1);
    assert_string_equal(err, "refused");
    assert_null(out[0].data);
    assert_null(out[1].data);
    /* the PEM signer has no sign_n: n signatures one by one */
    assert_int_equal(pec_smime_sign_n(c.pem, 2, heads, bodies, lens, out, err, sizeof err), 0);
    pec_buf_free(&out[0]);
    pec_buf_free(&out[1]);
    pec_signer_free(c.pem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_certificates_from_the_cache),
        cmocka_unit_test(test_unreadable_and_other_types),
        cmocka_unit_test(test_signature_from_the_digest),
        cmocka_unit_test(test_several_signed_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
