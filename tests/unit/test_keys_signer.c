/*
 * test_keys_signer.c - the signer process's side of the socket (src/keys/
 * keys_signer.c) treats what pecd's network-facing process sends as
 * untrusted: a table of malformed and refused requests gets an error
 * answer and the signer goes on answering; good requests get signatures
 * that verify (a CMS SignedData over the digest, or several at once, an
 * RSA PKCS#1 and a raw
 * block, an ECDSA signature), each with the right key only.  The signer
 * runs in a forked child on socketpairs, with test keys made here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/cms.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "keys/keys_int.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "pec/pec_pki.h"

static struct config *cfg;
static int fds[3];          /* ours: TLS, two for signatures */
static pid_t child;
static EVP_PKEY *tls_pub;
static unsigned char tls_id[32];
static X509 *sign_cert;

static void write_file(const char *name, const void *data, size_t len, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", TEST_TMPDIR, name);
    assert_int_equal(fs_write_atomic(path, data, len, 0600), 0);
}

static int setup(void **state)
{
    (void)state;
    fs_mkdirs(TEST_TMPDIR, 0700);
    char err[256], p[512];
    pec_pki_pair ca, sig, tls;
    assert_int_equal(pec_pki_make_ca("Test CA", 10, 2048, &ca, err, sizeof err), 0);
    pec_pki_req rs = {.kind = PEC_PKI_SIGNING, .domain = "example.it", .org = "Example"};
    assert_int_equal(pec_pki_issue(&ca, &rs, &sig, err, sizeof err), 0);
    /* the TLS key: EC P-256 with a self-signed certificate made here */
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"mx.example.it", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, ec);
    assert_true(X509_sign(x, ec, EVP_sha256()) > 0);
    BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(kb, ec, NULL, NULL, 0, NULL, NULL);
    PEM_write_bio_X509(cb, x);
    char *kd, *cd;
    long kl = BIO_get_mem_data(kb, &kd), cl = BIO_get_mem_data(cb, &cd);
    tls.key_pem.data = (unsigned char *)kd;
    tls.key_pem.len = (size_t)kl;
    tls.cert_pem.data = (unsigned char *)cd;
    tls.cert_pem.len = (size_t)cl;
    tls_pub = ec;
    assert_int_equal(keys_public_id(ec, tls_id), 0);
    X509_free(x);

    char conf[4096], sk[512], sc[512], tk[512], tc[512];
    write_file("sign.key", sig.key_pem.data, sig.key_pem.len, sk, sizeof sk);
    write_file("sign.crt", sig.cert_pem.data, sig.cert_pem.len, sc, sizeof sc);
    write_file("tls.key", tls.key_pem.data, tls.key_pem.len, tk, sizeof tk);
    write_file("tls.crt", tls.cert_pem.data, tls.cert_pem.len, tc, sizeof tc);
    BIO *sb = BIO_new_mem_buf(sig.cert_pem.data, (int)sig.cert_pem.len);
    sign_cert = PEM_read_bio_X509(sb, NULL, NULL, NULL);
    BIO_free(sb);
    BIO_free(kb);
    BIO_free(cb);
    snprintf(conf, sizeof conf,
             "[provider]\ndomain = example.it\n[tls]\ncertificate = %s\nkey = %s\n"
             "[mx]\nlisten = 127.0.0.1:2525\n[pec]\nenabled = yes\nsigning_key = %s\n"
             "signing_certificate = %s\ntrust = %s\ndirectory = %s\n",
             tc, tk, sk, sc, sc, sc);
    write_file("pecd.conf", conf, strlen(conf), p, sizeof p);
    cfg = config_load(p, err, sizeof err);
    assert_non_null(cfg);
    pec_pki_pair_free(&ca);
    pec_pki_pair_free(&sig);

    int theirs[3], st[2];
    for (int i = 0; i < 3; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        fds[i] = sv[0];
        theirs[i] = sv[1];
    }
    assert_int_equal(pipe(st), 0);
    child = fork();
    if (child == 0) {
        for (int i = 0; i < 3; i++)
            close(fds[i]);
        close(st[0]);
        _exit(keys_signer_main(cfg, theirs, 3, st[1]));
    }
    for (int i = 0; i < 3; i++)
        close(theirs[i]);
    close(st[1]);
    char status[256] = "";
    ssize_t n = read(st[0], status, sizeof status - 1);
    close(st[0]);
    assert_true(n > 0);
    status[n] = '\0';
    assert_string_equal(status, "OK");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);   /* it ended by itself */
    EVP_PKEY_free(tls_pub);
    X509_free(sign_cert);
    config_free(cfg);
    return 0;
}

/* One raw message to fd and the answer: status, data in buf. */
static int ask(int fd, const void *msg, size_t len, unsigned char *buf, size_t *outlen)
{
    assert_int_equal(send(fd, msg, len, 0), (ssize_t)len);
    static unsigned char in[KEYS_MSG_MAX];
    ssize_t n = keys_recv(fd, in, sizeof in, clock_ms() + 10000);
    assert_true(n >= (ssize_t)sizeof(struct keys_ans_hdr));
    struct keys_ans_hdr h;
    memcpy(&h, in, sizeof h);
    assert_int_equal(h.len, (size_t)n - sizeof h);
    memcpy(buf, in + sizeof h, h.len);
    *outlen = h.len;
    return (int)h.status;
}

static int ask_req(int fd, const struct keys_req *rq, unsigned char *buf, size_t *outlen)
{
    return ask(fd, rq, offsetof(struct keys_req, data) + rq->len, buf, outlen);
}

static void test_bad_requests(void **state)
{
    (void)state;
    static unsigned char buf[KEYS_MSG_MAX];
    size_t n;
    struct keys_req rq;
    /* too short for a header; a length that disagrees with the message; too long */
    assert_int_equal(ask(fds[1], "xy", 2, buf, &n), 1);
    memset(&rq, 0, sizeof rq);
    rq.op = KOP_PEC_SIGN;
    rq.len = 32;
    assert_int_equal(ask(fds[1], &rq, offsetof(struct keys_req, data) + 10, buf, &n), 1);
    rq.len = KEYS_RSA_MAX + 1;
    assert_int_equal(ask(fds[1], &rq, sizeof rq, buf, &n), 1);
    /* a digest that is not 32 octets; an unknown operation */
    rq.len = 20;
    assert_int_equal(ask_req(fds[1], &rq, buf, &n), 1);
    assert_non_null(memmem(buf, n, "32 octets", 9));
    /* several digests: a length not a multiple of 32, more than PEC_SIGN_N_MAX */
    rq.len = 32 * 2 + 1;
    assert_int_equal(ask_req(fds[1], &rq, buf, &n), 1);
    rq.len = 32 * (PEC_SIGN_N_MAX + 1);
    assert_int_equal(ask_req(fds[1], &rq, buf, &n), 1);
    assert_non_null(memmem(buf, n, "at most", 7));
    rq.op = 99;
    rq.len = 0;
    assert_int_equal(ask_req(fds[1], &rq, buf, &n), 1);
    /* TLS: another key's id, the wrong algorithm for the key, an RSA padding */
    rq = (struct keys_req){.op = KOP_TLS_ECDSA, .len = 32};
    assert_int_equal(ask_req(fds[0], &rq, buf, &n), 1);
    assert_non_null(memmem(buf, n, "not the TLS key", 15));
    memcpy(rq.id, tls_id, 32);
    rq.op = KOP_TLS_RSA;
    rq.padding = RSA_PKCS1_PADDING;
    assert_int_equal(ask_req(fds[0], &rq, buf, &n), 1);
    rq.op = KOP_TLS_ECDSA;
    rq.len = 0;
    assert_int_equal(ask_req(fds[0], &rq, buf, &n), 1);
    rq.len = KEYS_DIGEST_MAX + 1;
    assert_int_equal(ask_req(fds[0], &rq, buf, &n), 1);
    /* and it still answers */
    rq = (struct keys_req){.op = KOP_HELLO};
    assert_int_equal(ask_req(fds[0], &rq, buf, &n), 0);
    struct keys_hello h;
    assert_true(n > sizeof h);
    memcpy(&h, buf, sizeof h);
    assert_int_equal(h.has_pec, 1);
    assert_int_equal(h.has_tls, 1);
    assert_string_equal(h.pec_email, "posta-certificata@example.it");
    assert_memory_equal(h.tls_id, tls_id, 32);
    assert_non_null(memmem(buf + sizeof h, n - sizeof h, "BEGIN CERTIFICATE", 17));
    /* no private key in what it tells */
    assert_null(memmem(buf, n, "PRIVATE", 7));
}

/* der (n octets) is a CMS signature of content by the signing certificate:
 * 1 when it verifies. */
static int cms_verifies(const unsigned char *der, size_t n, const char *content)
{
    const unsigned char *p = der;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)n);
    assert_non_null(cms);
    BIO *dc = BIO_new_mem_buf(content, (int)strlen(content));
    STACK_OF(X509) *certs = sk_X509_new_null();
    sk_X509_push(certs, sign_cert);
    int ok = CMS_verify(cms, certs, NULL, dc, NULL, CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY);
    sk_X509_free(certs);
    BIO_free(dc);
    CMS_ContentInfo_free(cms);
    ERR_clear_error();
    return ok;
}

static void test_good_requests(void **state)
{
    (void)state;
    static unsigned char buf[KEYS_MSG_MAX];
    size_t n;
    /* a CMS signature over a digest, on both signature sockets */
    const char content[] = "Content-Type: text/plain\r\n\r\nfirmato\r\n";
    struct keys_req rq = {.op = KOP_PEC_SIGN, .len = 32};
    unsigned int mdlen;
    EVP_Digest(content, strlen(content), rq.data, &mdlen, EVP_sha256(), NULL);
    for (int i = 1; i <= 2; i++) {
        assert_int_equal(ask_req(fds[i], &rq, buf, &n), 0);
        assert_int_equal(cms_verifies(buf, n, content), 1);
    }
    /* two digests in one request (a stage's acceptance and envelope): each
     * signature after its length, in the order asked, each over its own */
    const char *two[2] = {"Content-Type: text/plain\r\n\r\nricevuta\r\n",
                          "Content-Type: text/plain\r\n\r\nbusta\r\n"};
    rq = (struct keys_req){.op = KOP_PEC_SIGN, .len = 64};
    for (int i = 0; i < 2; i++)
        EVP_Digest(two[i], strlen(two[i]), rq.data + 32 * i, &mdlen, EVP_sha256(), NULL);
    assert_int_equal(ask_req(fds[1], &rq, buf, &n), 0);
    size_t off = 0;
    for (int i = 0; i < 2; i++) {
        uint32_t l;
        assert_true(n - off >= sizeof l);
        memcpy(&l, buf + off, sizeof l);
        off += sizeof l;
        assert_true(l > 0 && l <= n - off);
        assert_int_equal(cms_verifies(buf + off, l, two[i]), 1);
        assert_int_not_equal(cms_verifies(buf + off, l, two[1 - i]), 1);
        off += l;
    }
    assert_int_equal(off, n);
    /* an ECDSA signature over a digest, with the TLS key */
    rq = (struct keys_req){.op = KOP_TLS_ECDSA, .len = 32};
    memcpy(rq.id, tls_id, 32);
    memset(rq.data, 0x5a, 32);
    assert_int_equal(ask_req(fds[0], &rq, buf, &n), 0);
    EVP_PKEY_CTX *vc = EVP_PKEY_CTX_new(tls_pub, NULL);
    assert_int_equal(EVP_PKEY_verify_init(vc), 1);
    assert_int_equal(EVP_PKEY_verify(vc, buf, n, rq.data, 32), 1);
    rq.data[0] ^= 1;
    assert_int_not_equal(EVP_PKEY_verify(vc, buf, n, rq.data, 32), 1);
    EVP_PKEY_CTX_free(vc);
    ERR_clear_error();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_good_requests),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
