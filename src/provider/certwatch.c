/*
 * certwatch.c - the provider's own certificates over time (issue 23): a
 * warning when the signing or the TLS certificate expires within 30 days,
 * and when the signing certificate in use is not among the
 * providerCertificateHash of the providers' directory (other providers would
 * refuse our mail as not-in-directory, RFC 6109 §4.5.1).  Checked at start,
 * then hourly (notices.c calls it) and after a reload (a renewal).
 *
 * Interface: roles_check_certificates (roles.h).
 */
#include "roles_int.h"
#include "roles.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "pec/pec.h"
#include "pec/pec_dir.h"

#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define WARN_DAYS 30

static X509 *first_cert(const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (f == NULL)
        return NULL;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return x;
}

/* Days until x expires (negative: expired; -100000 when unknown). */
static int days_left(X509 *x)
{
    int days = 0, secs = 0;
    if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) != 1)
        return -100000;
    return days;
}

static void expiry(const char *what, const char *path, X509 *x)
{
    int d = days_left(x);
    if (d < 0)
        log_err("%s %s has EXPIRED", what, path);
    else if (d < WARN_DAYS)
        log_warn("%s %s expires in %d day%s: renew it (docs/directory.md, \"Renewing the "
                 "signing certificate\")",
                 what, path, d, d == 1 ? "" : "s");
}

int roles_check_certificates(struct roles *r)
{
    const struct config *cfg = r->cfg;
    int problems = 0;
    X509 *sig = first_cert(cfg->pec_signing_cert);
    if (sig != NULL) {
        int d = days_left(sig);
        expiry("the signing certificate", cfg->pec_signing_cert, sig);
        problems += d < WARN_DAYS;
        unsigned char *der = NULL;
        int n = i2d_X509(sig, &der);
        if (n > 0) {
            unsigned char md[SHA_DIGEST_LENGTH];
            char hex[2 * SHA_DIGEST_LENGTH + 1];
            SHA1(der, (size_t)n, md);
            for (size_t i = 0; i < sizeof md; i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
            const pec_dirsnap *snap = pec_dirmgr_acquire(r->dirs);
            bool listed = snap != NULL && snap->dir != NULL &&
                          pec_directory_by_hash(snap->dir, hex) != NULL;
            bool empty = snap == NULL || snap->dir == NULL ||
                         pec_directory_count(snap->dir) == 0;
            if (snap != NULL)
                pec_dirsnap_release(snap);
            if (!listed && !empty) {
                log_warn("our signing certificate (SHA-1 %s) is not in the providers' "
                         "directory: other providers will refuse our mail as "
                         "not-in-directory (RFC 6109 §4.5.1); publish it (pecctl directory "
                         "publish) before using it", hex);
                problems++;
            }
        }
        OPENSSL_free(der);
        X509_free(sig);
    }
    X509 *tls = first_cert(cfg->tls_cert);
    if (tls != NULL) {
        problems += days_left(tls) < WARN_DAYS;
        expiry("the TLS certificate", cfg->tls_cert, tls);
        X509_free(tls);
    }
    return problems;
}
