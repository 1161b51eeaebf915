/*
 * pecctl_init_pki.c - the PKI material of `pecctl init`: the test CA
 * (loaded from CADIR or made there, under CADIR/ca.lock), the IP address
 * SAN added to the TLS certificate, and the signing certificate's DER in
 * base64 for the providers' directory.  The certificates themselves come
 * from src/pec/pec_pki.c.
 *
 * Interface: pecctl_init_int.h.  Errors are printed on stderr (PROG: ...).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/lib.h"
#include "pec/pec_pki.h"
#include "pecctl_init_int.h"

/* ---- the CA ---------------------------------------------------------------- */

static int read_pem(const char *path, pec_buf *b)
{
    char *data = NULL;
    size_t len = 0;
    if (fs_read_file(path, &data, &len, 1 << 20) < 0)
        return -1;
    b->data = (unsigned char *)data;
    b->len = len;
    return 0;
}

/* Loads CADIR/ca.key and CADIR/ca.crt (or ca.pem, as `pecctl pki ca` names
 * it), or makes a new CA there.  Under CADIR/ca.lock, so that concurrent
 * inits sharing a CADIR end up with one CA. */
int init_ca_load_or_make(const char *cadir, pec_pki_pair *ca, bool *created)
{
    char keyp[PATH_MAX], crtp[PATH_MAX], pemp[PATH_MAX], lockp[PATH_MAX];
    memset(ca, 0, sizeof *ca);
    *created = false;
    if (init_make_dir(cadir, 0700) < 0 || init_path_join(keyp, sizeof keyp, cadir, "ca.key") < 0 ||
        init_path_join(crtp, sizeof crtp, cadir, "ca.crt") < 0 ||
        init_path_join(pemp, sizeof pemp, cadir, "ca.pem") < 0 ||
        init_path_join(lockp, sizeof lockp, cadir, "ca.lock") < 0)
        return -1;
    int lock = init_lock_file(lockp);
    if (lock < 0)
        return -1;
    int rc = -1;
    bool have_key = access(keyp, F_OK) == 0;
    bool have_crt = access(crtp, F_OK) == 0, have_pem = access(pemp, F_OK) == 0;
    if (have_key || have_crt || have_pem) {
        const char *cert = have_crt ? crtp : pemp;
        if (!have_key || !(have_crt || have_pem)) {
            fprintf(stderr, PROG ": %s holds an incomplete CA: need ca.key and ca.crt\n", cadir);
            goto out;
        }
        if (read_pem(keyp, &ca->key_pem) < 0) {
            init_io_fail("read", keyp);
            goto out;
        }
        if (read_pem(cert, &ca->cert_pem) < 0) {
            init_io_fail("read", cert);
            goto out;
        }
        rc = 0;
        goto out;
    }
    char err[256];
    if (pec_pki_make_ca("pecmail test CA", 3650, 2048, ca, err, sizeof err) < 0) {
        init_crypto_fail("cannot make a CA", err);
        goto out;
    }
    /* key first: a crash between the two leaves "incomplete", never a cert without key */
    if (init_write_file(keyp, ca->key_pem.data, ca->key_pem.len, 0600) < 0 ||
        init_write_file(crtp, ca->cert_pem.data, ca->cert_pem.len, 0644) < 0)
        goto out;
    /* `pecctl pki revoke|crl --ca CADIR` reads ca.pem */
    if (symlink("ca.crt", pemp) < 0 && errno != EEXIST) {
        init_io_fail("create the link", pemp);
        goto out;
    }
    *created = true;
    rc = 0;
out:
    close(lock);
    if (rc < 0)
        pec_pki_pair_free(ca);
    return rc;
}

/* pec_pki_req names DNS names only; an IP address SAN lets a client that was
 * routed to 127.0.0.1 (--route D=127.0.0.1:PORT) verify the name it dialled.
 * Adds ip to the subjectAltName of leaf and signs it again with the CA. */
int init_add_ip_san(pec_pki_pair *leaf, const pec_pki_pair *ca, const char *ip)
{
    BIO *cb = BIO_new_mem_buf(leaf->cert_pem.data, (int)leaf->cert_pem.len);
    BIO *kb = BIO_new_mem_buf(ca->key_pem.data, (int)ca->key_pem.len);
    BIO *out = BIO_new(BIO_s_mem());
    X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *cakey = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    GENERAL_NAMES *gens = NULL;
    GENERAL_NAME *gn = NULL;
    ASN1_OCTET_STRING *addr = NULL;
    int rc = -1, crit = 0;
    if (!x || !cakey || !out)
        goto out;
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    if (gens == NULL && (gens = GENERAL_NAMES_new()) == NULL)
        goto out;
    if ((addr = a2i_IPADDRESS(ip)) == NULL || (gn = GENERAL_NAME_new()) == NULL)
        goto out;
    GENERAL_NAME_set0_value(gn, GEN_IPADD, addr);
    addr = NULL;
    if (!sk_GENERAL_NAME_push(gens, gn))
        goto out;
    gn = NULL;
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, crit, X509V3_ADD_REPLACE) != 1 ||
        !X509_sign(x, cakey, EVP_sha256()) || !PEM_write_bio_X509(out, x))
        goto out;
    char *p = NULL;
    long n = BIO_get_mem_data(out, &p);
    unsigned char *copy = malloc((size_t)n + 1);
    if (copy == NULL)
        goto out;
    memcpy(copy, p, (size_t)n);
    copy[n] = '\0';
    pec_buf_free(&leaf->cert_pem);
    leaf->cert_pem.data = copy;
    leaf->cert_pem.len = (size_t)n;
    rc = 0;
out:
    if (rc < 0) {
        char e[160] = "unknown error";
        unsigned long code = ERR_get_error();
        if (code)
            ERR_error_string_n(code, e, sizeof e);
        init_crypto_fail("cannot add the IP address to the TLS certificate", e);
    }
    ERR_clear_error();
    ASN1_OCTET_STRING_free(addr);
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(gens);
    EVP_PKEY_free(cakey);
    X509_free(x);
    BIO_free(cb);
    BIO_free(kb);
    BIO_free(out);
    return rc;
}

/* The DER of a PEM certificate in *der (malloc'ed, for pec_buf_free). */
int init_cert_der(const pec_buf *pem, pec_buf *der)
{
    BIO *b = BIO_new_mem_buf(pem->data, (int)pem->len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    int n = x ? i2d_X509(x, NULL) : -1;
    unsigned char *p = n > 0 ? malloc((size_t)n) : NULL;
    der->data = p;
    der->len = p != NULL && i2d_X509(x, &p) == n ? (size_t)n : 0;
    if (der->data != NULL && der->len == 0)
        pec_buf_free(der);
    X509_free(x);
    BIO_free(b);
    ERR_clear_error();
    return der->data != NULL ? 0 : -1;
}
