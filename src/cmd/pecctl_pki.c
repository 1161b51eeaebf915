/*
 * pecctl_pki.c - `pecctl pki`: the test PKI of pecmail on disk.
 *
 *   pecctl pki ca DIR [--name NAME] [--days N]
 *       DIR/ca.key (0600) and DIR/ca.pem; an existing CA is kept, so two
 *       providers can share one.
 *   pecctl pki issue --ca DIR --domain D --out DIR [--name ORG] [--days N]
 *                    [--tls-host HOST]... [--signing-key pkcs11:URI]
 *                    [--tls-key pkcs11:URI] [--pkcs11-module PATH]
 *                    [--pkcs11-pin-file PATH]
 *       OUT/signing.key (0600), OUT/signing.pem (certificate then CA),
 *       OUT/tls.key (0600), OUT/tls.pem; prints the providerCertificateHash.
 *       With a pkcs11: URI (RFC 7512) the key is made inside the token (or
 *       the one there is used) and no .key file is written.
 *   pecctl pki revoke --ca DIR [--reason NAME] CERT.pem
 *       adds its serial, the time and the reason (RFC 5280 §5.3.1 name, e.g.
 *       keyCompromise) to DIR/revoked, remakes DIR/crl.pem
 *   pecctl pki crl --ca DIR                 remakes DIR/crl.pem
 *   pecctl pki hash CERT.pem                prints the SHA-1 hex (RFC 6109 §4.5.1)
 *
 * The certificates themselves come from src/pec/pec_pki.c (RFC 6109 §5.5
 * profile).  Interface: pecctl_pki_main(argc, argv), argv[0] == "pki".
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "keys/keys.h"
#include "lib/lib.h"
#include "pec/pec_pki.h"

int pecctl_pki_main(int argc, char **argv);

static void usage(FILE *f)
{
    fprintf(f, "usage: pecctl pki ca DIR [--name NAME] [--days N]\n"
               "       pecctl pki issue --ca DIR --domain DOMAIN --out DIR [--name ORG]\n"
               "                        [--days N] [--tls-host HOST]...\n"
               "                        [--signing-key pkcs11:URI] [--tls-key pkcs11:URI]\n"
               "                        [--pkcs11-module PATH] [--pkcs11-pin-file PATH]\n"
               "       pecctl pki revoke --ca DIR [--reason keyCompromise|...] CERT.pem\n"
               "       pecctl pki crl --ca DIR\n"
               "       pecctl pki hash CERT.pem\n");
}

static int path_in(char *buf, size_t size, const char *dir, const char *name)
{
    if (str_fmt(buf, size, "%s/%s", dir, name) < 0) {
        fprintf(stderr, "pecctl pki: path too long\n");
        return -1;
    }
    return 0;
}

static int write_file(const char *dir, const char *name, const void *data, size_t len,
                      mode_t mode)
{
    char p[4096];
    if (path_in(p, sizeof p, dir, name) < 0)
        return -1;
    if (fs_write_atomic(p, data, len, mode) < 0) {
        fprintf(stderr, "pecctl pki: cannot write %s: %s\n", p, strerror(errno));
        return -1;
    }
    return 0;
}

static int read_pair(const char *dir, const char *key, const char *cert, pec_pki_pair *p)
{
    char kp[4096], cp[4096];
    char *k = NULL, *c = NULL;
    size_t kl = 0, cl = 0;
    memset(p, 0, sizeof *p);
    if (path_in(kp, sizeof kp, dir, key) < 0 || path_in(cp, sizeof cp, dir, cert) < 0)
        return -1;
    if (fs_read_file(kp, &k, &kl, 1 << 20) < 0 || fs_read_file(cp, &c, &cl, 1 << 20) < 0) {
        fprintf(stderr, "pecctl pki: cannot read %s and %s\n", kp, cp);
        free(k);
        return -1;
    }
    p->key_pem.data = (unsigned char *)k;
    p->key_pem.len = kl;
    p->cert_pem.data = (unsigned char *)c;
    p->cert_pem.len = cl;
    return 0;
}

static int cmd_ca(int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"days", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    const char *name = "pecmail test CA";
    long days = 3650;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:d:", opts, NULL)) != -1) {
        if (c == 'n')
            name = optarg;
        else if (c == 'd')
            days = strtol(optarg, NULL, 10);
        else
            return usage(stderr), 2;
    }
    if (optind + 1 != argc)
        return usage(stderr), 2;
    const char *dir = argv[optind];
    char p[4096];
    struct stat st;
    if (path_in(p, sizeof p, dir, "ca.pem") < 0)
        return 1;
    if (stat(p, &st) == 0) {
        printf("CA exists: %s (kept)\n", p);
        return 0;
    }
    if (fs_mkdirs(dir, 0700) < 0) {
        fprintf(stderr, "pecctl pki: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    pec_pki_pair ca;
    char err[256];
    if (pec_pki_make_ca(name, days, 2048, &ca, err, sizeof err) < 0) {
        fprintf(stderr, "pecctl pki: %s\n", err);
        return 1;
    }
    int rc = write_file(dir, "ca.key", ca.key_pem.data, ca.key_pem.len, 0600) ||
             write_file(dir, "ca.pem", ca.cert_pem.data, ca.cert_pem.len, 0644);
    pec_pki_pair_free(&ca);
    if (rc)
        return 1;
    printf("CA created: %s\n", p);
    return 0;
}

static int write_chain(const char *out, const char *name, const pec_pki_pair *leaf,
                       const pec_pki_pair *ca)
{
    size_t n = leaf->cert_pem.len + ca->cert_pem.len;
    char *buf = malloc(n);
    if (!buf)
        return -1;
    memcpy(buf, leaf->cert_pem.data, leaf->cert_pem.len);
    memcpy(buf + leaf->cert_pem.len, ca->cert_pem.data, ca->cert_pem.len);
    int rc = write_file(out, name, buf, n, 0644);
    free(buf);
    return rc;
}

static int cmd_issue(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ca", required_argument, NULL, 'c'},   {"domain", required_argument, NULL, 'D'},
        {"out", required_argument, NULL, 'o'},  {"name", required_argument, NULL, 'n'},
        {"days", required_argument, NULL, 'd'}, {"tls-host", required_argument, NULL, 'H'},
        {"signing-key", required_argument, NULL, 'S'}, {"tls-key", required_argument, NULL, 'T'},
        {"pkcs11-module", required_argument, NULL, 'M'},
        {"pkcs11-pin-file", required_argument, NULL, 'P'},
        {NULL, 0, NULL, 0}};
    const char *cadir = NULL, *domain = NULL, *out = NULL, *name = NULL;
    const char *sig_uri = NULL, *tls_uri = NULL, *module = NULL, *pin = NULL;
    const char *hosts[16];
    size_t nhosts = 0;
    long days = 825;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:D:o:n:d:H:S:T:M:P:", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cadir = optarg; break;
        case 'D': domain = optarg; break;
        case 'o': out = optarg; break;
        case 'n': name = optarg; break;
        case 'd': days = strtol(optarg, NULL, 10); break;
        case 'H':
            if (nhosts < sizeof hosts / sizeof hosts[0])
                hosts[nhosts++] = optarg;
            break;
        case 'S': sig_uri = optarg; break;
        case 'T': tls_uri = optarg; break;
        case 'M': module = optarg; break;
        case 'P': pin = optarg; break;
        default: return usage(stderr), 2;
        }
    }
    if (!cadir || !domain || !out || optind != argc)
        return usage(stderr), 2;
    if ((sig_uri || tls_uri) && module == NULL) {
        fprintf(stderr, "pecctl pki: a pkcs11: key needs --pkcs11-module\n");
        return 2;
    }
    pec_pki_pair ca, sig = {{0}, {0}}, tls = {{0}, {0}};
    if (read_pair(cadir, "ca.key", "ca.pem", &ca) < 0)
        return 1;
    if (fs_mkdirs(out, 0700) < 0) {
        fprintf(stderr, "pecctl pki: cannot create %s: %s\n", out, strerror(errno));
        pec_pki_pair_free(&ca);
        return 1;
    }
    char err[1024];
    pec_pki_req rs = {.kind = PEC_PKI_SIGNING, .domain = domain, .org = name, .days = days};
    pec_pki_req rt = {.kind = PEC_PKI_TLS, .domain = domain, .org = name, .days = days,
                      .dns_names = hosts, .n_dns = nhosts};
    int rc = 1;
    EVP_PKEY *sig_pub = NULL, *tls_pub = NULL;
    if ((sig_uri && keys_token_make_key(sig_uri, module, pin, 2048, true, &sig_pub, err,
                                        sizeof err) < 0) ||
        (tls_uri && keys_token_make_key(tls_uri, module, pin, 2048, true, &tls_pub, err,
                                        sizeof err) < 0)) {
        fprintf(stderr, "pecctl pki: %s\n", err);
        goto out;
    }
    rs.public_key = sig_pub;
    rt.public_key = tls_pub;
    if (pec_pki_issue(&ca, &rs, &sig, err, sizeof err) < 0 ||
        pec_pki_issue(&ca, &rt, &tls, err, sizeof err) < 0) {
        fprintf(stderr, "pecctl pki: %s\n", err);
        goto out;
    }
    if ((!sig_pub && write_file(out, "signing.key", sig.key_pem.data, sig.key_pem.len, 0600)) ||
        write_chain(out, "signing.pem", &sig, &ca) ||
        (!tls_pub && write_file(out, "tls.key", tls.key_pem.data, tls.key_pem.len, 0600)) ||
        write_chain(out, "tls.pem", &tls, &ca))
        goto out;
    char sha1[41];
    unsigned long serial = 0;
    if (pec_pki_cert_info(sig.cert_pem.data, sig.cert_pem.len, &serial, sha1, err, sizeof err) < 0)
        goto out;
    printf("signing certificate: %s/signing.pem (posta-certificata@%s, serial %lu)\n", out,
           domain, serial);
    printf("providerCertificateHash: %s\n", sha1);
    if (sig_uri)
        printf("signing key: %s (in the module %s)\n", sig_uri, module);
    printf("tls certificate: %s/tls.pem\n", out);
    if (tls_uri)
        printf("tls key: %s (in the module %s)\n", tls_uri, module);
    rc = 0;
out:
    EVP_PKEY_free(sig_pub);
    EVP_PKEY_free(tls_pub);
    pec_pki_pair_free(&ca);
    pec_pki_pair_free(&sig);
    pec_pki_pair_free(&tls);
    return rc;
}

/* CADIR/revoked: one line per revoked certificate, "SERIAL UNIXTIME REASON"
 * (older files have the serial alone: revoked "now", no reason). */
#define MAX_REVOKED 4096

static size_t read_revoked(const char *cadir, pec_pki_revoked *out)
{
    char p[4096];
    char *list = NULL;
    size_t len = 0, n = 0;
    if (path_in(p, sizeof p, cadir, "revoked") < 0 || fs_read_file(p, &list, &len, 1 << 20) < 0)
        return 0;
    char *save = NULL;
    for (char *line = strtok_r(list, "\r\n", &save); line && n < MAX_REVOKED;
         line = strtok_r(NULL, "\r\n", &save)) {
        char why[32] = "";
        unsigned long serial;
        long long when = 0;
        if (sscanf(line, "%lu %lld %31s", &serial, &when, why) < 1)
            continue;
        out[n++] = (pec_pki_revoked){.serial = serial, .when = (time_t)when,
                                     .reason = why[0] ? pec_crl_reason_code(why) : -1};
    }
    free(list);
    return n;
}

static int remake_crl(const char *cadir)
{
    pec_pki_pair ca;
    if (read_pair(cadir, "ca.key", "ca.pem", &ca) < 0)
        return 1;
    pec_pki_revoked *revoked = calloc(MAX_REVOKED, sizeof *revoked);
    size_t n = revoked ? read_revoked(cadir, revoked) : 0;
    pec_buf crl;
    char err[256];
    int rc = 1;
    if (revoked == NULL) {
        fprintf(stderr, "pecctl pki: out of memory\n");
    } else if (pec_pki_make_crl(&ca, revoked, n, 30, &crl, err, sizeof err) < 0) {
        fprintf(stderr, "pecctl pki: %s\n", err);
    } else {
        rc = write_file(cadir, "crl.pem", crl.data, crl.len, 0644) ? 1 : 0;
        if (!rc)
            printf("CRL: %s/crl.pem (%zu revoked)\n", cadir, n);
        pec_buf_free(&crl);
    }
    free(revoked);
    pec_pki_pair_free(&ca);
    return rc;
}

/* Appends CERT's serial, the time and the reason to CADIR/revoked. */
static int add_revoked(const char *cadir, const char *cert, int reason)
{
    char *pem = NULL, err[256], p[4096], line[96];
    size_t len = 0;
    unsigned long serial;
    char sha1[41];
    if (fs_read_file(cert, &pem, &len, 1 << 20) < 0 ||
        pec_pki_cert_info(pem, len, &serial, sha1, err, sizeof err) < 0) {
        fprintf(stderr, "pecctl pki: cannot read a certificate from %s\n", cert);
        free(pem);
        return 1;
    }
    free(pem);
    if (path_in(p, sizeof p, cadir, "revoked") < 0)
        return 1;
    FILE *f = fopen(p, "a");
    str_fmt(line, sizeof line, "%lu %lld%s%s\n", serial, (long long)time(NULL),
            reason >= 0 ? " " : "", reason >= 0 ? pec_crl_reason_name(reason) : "");
    if (!f || fputs(line, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "pecctl pki: cannot update %s\n", p);
        return 1;
    }
    printf("revoked serial %lu (%s)%s%s\n", serial, sha1, reason >= 0 ? ": " : "",
           reason >= 0 ? pec_crl_reason_name(reason) : "");
    return 0;
}

static int cmd_crl(int argc, char **argv, bool revoke)
{
    static const struct option opts[] = {{"ca", required_argument, NULL, 'c'},
                                         {"reason", required_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    const char *cadir = NULL;
    int c, reason = -1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:r:", opts, NULL)) != -1) {
        if (c == 'c') {
            cadir = optarg;
        } else if (c == 'r' && revoke) {
            reason = pec_crl_reason_code(optarg);
            if (reason < 0) {
                fprintf(stderr, "pecctl pki: --reason %s: not an RFC 5280 reason (keyCompromise, "
                                "cACompromise, affiliationChanged, superseded, "
                                "cessationOfOperation, certificateHold, privilegeWithdrawn, "
                                "aACompromise, unspecified)\n", optarg);
                return 2;
            }
        } else {
            return usage(stderr), 2;
        }
    }
    if (!cadir || optind != argc - (revoke ? 1 : 0))
        return usage(stderr), 2;
    if (revoke && add_revoked(cadir, argv[optind], reason) != 0)
        return 1;
    return remake_crl(cadir);
}

static int cmd_hash(int argc, char **argv)
{
    if (argc != 2)
        return usage(stderr), 2;
    char *pem = NULL, err[256], sha1[41];
    size_t len = 0;
    if (fs_read_file(argv[1], &pem, &len, 1 << 20) < 0 ||
        pec_pki_cert_info(pem, len, NULL, sha1, err, sizeof err) < 0) {
        fprintf(stderr, "pecctl pki: cannot read a certificate from %s\n", argv[1]);
        free(pem);
        return 1;
    }
    free(pem);
    printf("%s\n", sha1);
    return 0;
}

int pecctl_pki_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "ca") == 0)
        return cmd_ca(argc - 1, argv + 1);
    if (strcmp(sub, "issue") == 0)
        return cmd_issue(argc - 1, argv + 1);
    if (strcmp(sub, "revoke") == 0)
        return cmd_crl(argc - 1, argv + 1, true);
    if (strcmp(sub, "crl") == 0)
        return cmd_crl(argc - 1, argv + 1, false);
    if (strcmp(sub, "hash") == 0)
        return cmd_hash(argc - 1, argv + 1);
    fprintf(stderr, "pecctl pki: unknown subcommand %s\n", sub);
    usage(stderr);
    return 2;
}
