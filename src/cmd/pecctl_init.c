/*
 * pecctl_init.c - `pecctl init`: a ready-to-run PEC provider instance.
 *
 *   pecctl init DIR --domain DOMAIN [--name NAME] [--smtp PORT]
 *                   [--submission PORT] [--submissions PORT] [--ca CADIR]
 *                   [--directory FILE.ldif] [--route DOMAIN=HOST:PORT]...
 *                   [--signing-key pkcs11:URI] [--tls-key pkcs11:URI]
 *                   [--pkcs11-module PATH] [--pkcs11-pin-file PATH] [--force]
 *
 * Writes, in this order (pecd.conf last, so that its presence means a
 * complete instance):
 *   CADIR/ca.key (0600), CADIR/ca.crt   test CA, created if absent, else reused
 *                                       (default CADIR: DIR/ca; ca.pem -> ca.crt
 *                                       for `pecctl pki`)
 *   DIR/pec/sign.key (0600), sign.crt   signing certificate (RFC 6109 §5.5), then the CA
 *                                       (with --signing-key pkcs11:…, no sign.key: the key
 *                                       is made inside the token, or the one there used)
 *   DIR/tls/key.pem (0600), cert.pem    TLS server certificate, then the CA
 *   DIR/ca.crt                          the CA: trust anchors (signatures, outbound TLS)
 *   DIR/users (0600)                    empty users file, kept if present
 *   FILE.ldif                           the providers' directory (RFC 6109 §4.5), shared
 *                                       by local providers: this provider's entry is
 *                                       added or replaced under an flock(2) lock
 *                                       (default: DIR/directory.ldif)
 *   DIR/pecd.conf                       refused if present unless --force
 * Run as root, it also creates the system user pecmail when missing (pecd's
 * network-facing processes run as it, [pecd] user) and gives DIR to its
 * group (0750: it may enter, not change); pecd gives it DIR/data at start.
 *
 * The certificates come from src/pec/pec_pki.c (the TLS one gains an IP
 * address SAN in pecctl_init_pki.c).  Every file is written with
 * fs_write_atomic (temp file, fsync, rename); the CA and the directory file
 * are updated under flock(2) on CADIR/ca.lock and FILE.ldif.lock.  Exit
 * status: 0 done, 1 an I/O or crypto failure (the message names the file),
 * 2 bad arguments.
 * Interface: pecctl_init_main(argc, argv), argv[0] == "init".
 *
 * Files: pecctl_init.c (this one) the arguments and the order of the
 * steps; pecctl_init_pki.c the CA and the certificates; pecctl_init_files.c
 * the files written (helpers, the LDIF directory, pecd.conf); what they
 * share: pecctl_init_int.h.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keys/keys.h"
#include "lib/config.h"
#include "lib/lib.h"
#include "pec/pec_pki.h"
#include "pecctl_init_int.h"

int pecctl_init_main(int argc, char **argv);

#define DEFAULT_SMTP 2525       /* unprivileged stand-ins for 25, 587 and 465 */
#define DEFAULT_SUBMISSION 2587

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pecctl init DIR --domain DOMAIN [--name NAME] [--smtp PORT]\n"
            "                   [--submission PORT] [--submissions PORT] [--ca CADIR]\n"
            "                   [--directory FILE.ldif] [--route DOMAIN=HOST:PORT]... [--force]\n"
            "  --name NAME           provider name (providerName, certificate O); default DOMAIN\n"
            "  --smtp PORT           [mx] listener on 127.0.0.1 (default %d)\n"
            "  --submission PORT     [submission] listener on 127.0.0.1 (default %d)\n"
            "  --submissions PORT    also an implicit-TLS [submissions] listener\n"
            "  --ca CADIR            test CA, created if absent, else reused (default DIR/ca)\n"
            "  --directory FILE      providers' directory shared with other local providers\n"
            "                        (default DIR/directory.ldif); the entry is added or replaced\n"
            "  --route D=HOST:PORT   static next hop for domain D (repeatable)\n"
            "  --signing-key URI     the signing key in a hardware module (pkcs11:token=…;\n"
            "                        object=…, RFC 7512): made there if absent; no PEM key\n"
            "  --tls-key URI         the TLS key in the module, the same way\n"
            "  --pkcs11-module PATH  the PKCS#11 module (.so) of those URIs\n"
            "  --pkcs11-pin-file F   a file with the token's user PIN (mode 0600)\n"
            "  --force               replace an existing DIR/pecd.conf\n",
            DEFAULT_SMTP, DEFAULT_SUBMISSION);
}

static int bad_arg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_arg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

int init_io_fail(const char *what, const char *path)
{
    fprintf(stderr, PROG ": cannot %s %s: %s\n", what, path, strerror(errno));
    return -1;
}

int init_crypto_fail(const char *what, const char *detail)
{
    fprintf(stderr, PROG ": %s: %s\n", what, detail);
    return -1;
}

/* ---- arguments ----------------------------------------------------------- */

static int parse_port(const char *opt, const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno || v == 0 || v > 65535)
        return bad_arg("%s: '%s' is not a port number (1-65535)", opt, s);
    *out = (unsigned)v;
    return 0;
}

/* A domain of LDH labels (RFC 6109 §4.5.5, RFC 1034), at most 200 octets
 * (it goes into certificate names); lower-cased. */
static bool domain_ok(char *d)
{
    if (strlen(d) > 200 || !str_domain_ok(d))
        return false;
    str_lower(d);
    return true;
}

/* NAME goes into pecd.conf (inih: ';' starts a comment, a leading blank
 * continues the previous line), a DN and a certificate subject. */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == ' ' || s[n - 1] == ' ') /* ub-organization-name = 64 */
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == ';')
            return false;
    return true;
}

/* DOMAIN=HOST:PORT, HOST a name, an IPv4 address or [IPv6]; DOMAIN may be "*". */
static int parse_route(const char *arg, struct route *r)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL || (size_t)(eq - arg) >= sizeof r->domain)
        return bad_arg("--route: '%s' is not DOMAIN=HOST:PORT", arg);
    memcpy(r->domain, arg, (size_t)(eq - arg));
    r->domain[eq - arg] = '\0';
    if (strcmp(r->domain, "*") != 0 && !domain_ok(r->domain))
        return bad_arg("--route: '%s' is not a domain name", r->domain);
    const char *hp = eq + 1, *colon = strrchr(hp, ':');
    if (colon == NULL || colon == hp || str_copy(r->hostport, hp, sizeof r->hostport) >= 200)
        return bad_arg("--route: '%s' is not DOMAIN=HOST:PORT", arg);
    unsigned port;
    if (parse_port("--route", colon + 1, &port) != 0)
        return 2;
    size_t hl = (size_t)(colon - hp);
    bool v6 = hp[0] == '[';
    if (v6 && (hl < 3 || hp[hl - 1] != ']'))
        return bad_arg("--route: '%s': an IPv6 address goes in brackets, [::1]:PORT", arg);
    for (size_t i = v6 ? 1 : 0; i < (v6 ? hl - 1 : hl); i++) {
        char c = hp[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || (v6 && c == ':');
        if (!ok)
            return bad_arg("--route: '%.*s' is not a host name or address", (int)hl, hp);
    }
    return 0;
}

static int parse_args(int argc, char **argv, struct init_opts *o)
{
    enum { OPT_DOMAIN = 256, OPT_NAME, OPT_SMTP, OPT_SUB, OPT_SUBS, OPT_CA, OPT_DIRECTORY,
           OPT_ROUTE, OPT_FORCE, OPT_HELP, OPT_SIGNING_KEY, OPT_TLS_KEY, OPT_MODULE, OPT_PIN };
    static const struct option opts[] = {
        {"domain", required_argument, NULL, OPT_DOMAIN},
        {"name", required_argument, NULL, OPT_NAME},
        {"smtp", required_argument, NULL, OPT_SMTP},
        {"submission", required_argument, NULL, OPT_SUB},
        {"submissions", required_argument, NULL, OPT_SUBS},
        {"ca", required_argument, NULL, OPT_CA},
        {"directory", required_argument, NULL, OPT_DIRECTORY},
        {"route", required_argument, NULL, OPT_ROUTE},
        {"force", no_argument, NULL, OPT_FORCE},
        {"signing-key", required_argument, NULL, OPT_SIGNING_KEY},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"pkcs11-module", required_argument, NULL, OPT_MODULE},
        {"pkcs11-pin-file", required_argument, NULL, OPT_PIN},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof *o);
    o->smtp = DEFAULT_SMTP;
    o->submission = DEFAULT_SUBMISSION;
    bool have_domain = false;
    int c;
    optind = 0;     /* glibc: full re-initialisation */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case OPT_DOMAIN:
            if (str_copy(o->domain, optarg, sizeof o->domain) >= sizeof o->domain ||
                !domain_ok(o->domain))
                return bad_arg("--domain: '%s' is not a domain name", optarg);
            have_domain = true;
            break;
        case OPT_NAME:
            if (!name_ok(optarg))
                return bad_arg("--name: '%s' is not a usable provider name (1-64 characters, "
                               "no control characters, no ';', no leading or trailing space)",
                               optarg);
            o->name = optarg;
            break;
        case OPT_SMTP:
            if (parse_port("--smtp", optarg, &o->smtp))
                return 2;
            break;
        case OPT_SUB:
            if (parse_port("--submission", optarg, &o->submission))
                return 2;
            break;
        case OPT_SUBS:
            if (parse_port("--submissions", optarg, &o->submissions))
                return 2;
            break;
        case OPT_CA:
            if (optarg[0] == '\0')
                return bad_arg("--ca: empty directory name");
            o->cadir = optarg;
            break;
        case OPT_DIRECTORY:
            if (optarg[0] == '\0' || optarg[strlen(optarg) - 1] == '/')
                return bad_arg("--directory: '%s' is not a file name", optarg);
            o->directory = optarg;
            break;
        case OPT_ROUTE:
            if (o->nroutes >= CONFIG_MAX_ROUTES)
                return bad_arg("--route: at most %d routes", CONFIG_MAX_ROUTES);
            if (parse_route(optarg, &o->routes[o->nroutes]))
                return 2;
            o->nroutes++;
            break;
        case OPT_FORCE: o->force = true; break;
        case OPT_SIGNING_KEY:
        case OPT_TLS_KEY: {
            struct pkcs11_uri u;
            char why[256];
            if (pkcs11_uri_parse(optarg, &u, why, sizeof why) == -1)
                return bad_arg("%s: '%s': %s", c == OPT_TLS_KEY ? "--tls-key" : "--signing-key",
                               optarg, why);
            if (u.object[0] == '\0')
                return bad_arg("%s: '%s': name the key with object=LABEL",
                               c == OPT_TLS_KEY ? "--tls-key" : "--signing-key", optarg);
            if (c == OPT_TLS_KEY)
                o->tls_key_uri = optarg;
            else
                o->signing_key_uri = optarg;
            break;
        }
        case OPT_MODULE:
        case OPT_PIN: {
            char *dst = c == OPT_MODULE ? o->pkcs11_module : o->pkcs11_pin_file;
            if (realpath(optarg, dst) == NULL)
                return bad_arg("%s: %s: %s", c == OPT_MODULE ? "--pkcs11-module"
                                                             : "--pkcs11-pin-file",
                               optarg, strerror(errno));
            break;
        }
        case OPT_HELP: usage(stdout); return 0;
        case ':': return bad_arg("%s needs a value", argv[optind - 1]);
        default: return bad_arg("unknown option '%s' (pecctl init --help)", argv[optind - 1]);
        }
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return optind == argc ? bad_arg("the instance directory DIR is missing")
                              : bad_arg("one instance directory only ('%s' is extra)",
                                        argv[optind + 1]);
    }
    o->dir = argv[optind];
    if (o->dir[0] == '\0')
        return bad_arg("DIR is empty");
    if (!have_domain) {
        usage(stderr);
        return bad_arg("--domain DOMAIN is required");
    }
    if (o->smtp == o->submission || o->smtp == o->submissions ||
        o->submission == o->submissions)
        return bad_arg("--smtp, --submission and --submissions need distinct ports");
    for (size_t i = 0; i < o->nroutes; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->routes[i].domain, o->routes[j].domain) == 0)
                return bad_arg("--route: two routes for %s", o->routes[i].domain);
    if ((o->signing_key_uri || o->tls_key_uri) && o->pkcs11_module[0] == '\0')
        return bad_arg("--signing-key and --tls-key pkcs11: URIs need --pkcs11-module");
    if (o->name == NULL)
        o->name = o->domain;
    return -1;      /* go on */
}

/* ---- main ----------------------------------------------------------------- */

int pecctl_init_main(int argc, char **argv)
{
    struct init_opts o;
    int prc = parse_args(argc, argv, &o);
    if (prc >= 0)
        return prc;

    char confp[PATH_MAX], dir[PATH_MAX], cadir[PATH_MAX], directory[PATH_MAX];
    char p[PATH_MAX];
    if (init_path_join(confp, sizeof confp, o.dir, "pecd.conf") < 0)
        return 1;
    if (!o.force && access(confp, F_OK) == 0) {
        fprintf(stderr, PROG ": %s exists; use --force to replace the instance "
                        "(keys and certificates are made anew; users and mail are kept)\n",
                confp);
        return 1;
    }
    if (init_make_dir(o.dir, 0750) < 0 || init_absolute_path(o.dir, dir, sizeof dir) < 0)
        return 1;
    if (init_path_join(confp, sizeof confp, dir, "pecd.conf") < 0)
        return 1;
    if (o.cadir) {
        if (init_make_dir(o.cadir, 0700) < 0 ||
            init_absolute_path(o.cadir, cadir, sizeof cadir) < 0)
            return 1;
    } else if (init_path_join(cadir, sizeof cadir, dir, "ca") < 0) {
        return 1;
    }
    if (o.directory) {
        str_copy(p, o.directory, sizeof p);
        char *slash = strrchr(p, '/');
        if (slash && slash != p) {
            *slash = '\0';
            if (init_make_dir(p, 0755) < 0)
                return 1;
        }
        if (init_absolute_path(o.directory, directory, sizeof directory) < 0)
            return 1;
    } else if (init_path_join(directory, sizeof directory, dir, "directory.ldif") < 0) {
        return 1;
    }

    pec_pki_pair ca, sig = {{0}, {0}}, tls = {{0}, {0}};
    pec_buf der = {0};
    char *conf = NULL;
    size_t conflen = 0;
    int rc = 1;
    bool ca_created;
    /* pecd.conf is checked before any key is made */
    if (init_conf_build(&o, directory, &conf, &conflen) < 0) {
        init_io_fail("build", confp);
        return 1;
    }
    if (init_conf_check_lines(conf, confp) < 0 ||
        init_ca_load_or_make(cadir, &ca, &ca_created) < 0) {
        free(conf);
        return 1;
    }

    char err[1024];
    const char *tls_names[] = {"localhost"};
    char mx[300];
    str_fmt(mx, sizeof mx, "mx.%s", o.domain);
    pec_pki_req rs = {.kind = PEC_PKI_SIGNING, .domain = o.domain, .org = o.name};
    pec_pki_req rt = {.kind = PEC_PKI_TLS, .domain = mx, .org = o.name,
                      .dns_names = tls_names, .n_dns = 1};
    /* keys in a hardware module: made inside the token (or the one there);
     * the certificates are issued for their public halves */
    EVP_PKEY *sig_pub = NULL, *tls_pub = NULL;
    const char *pin = o.pkcs11_pin_file[0] ? o.pkcs11_pin_file : NULL;
    if (o.signing_key_uri &&
        keys_token_make_key(o.signing_key_uri, o.pkcs11_module, pin, 2048, true, &sig_pub, err,
                            sizeof err) < 0) {
        init_crypto_fail("the signing key in the token", err);
        goto out;
    }
    if (o.tls_key_uri &&
        keys_token_make_key(o.tls_key_uri, o.pkcs11_module, pin, 2048, true, &tls_pub, err,
                            sizeof err) < 0) {
        init_crypto_fail("the TLS key in the token", err);
        goto out;
    }
    rs.public_key = sig_pub;
    rt.public_key = tls_pub;
    if (pec_pki_issue(&ca, &rs, &sig, err, sizeof err) < 0) {
        init_crypto_fail("cannot issue the signing certificate (is the CA in place?)", err);
        goto out;
    }
    if (pec_pki_issue(&ca, &rt, &tls, err, sizeof err) < 0) {
        init_crypto_fail("cannot issue the TLS certificate", err);
        goto out;
    }
    if (init_add_ip_san(&tls, &ca, "127.0.0.1") < 0)
        goto out;
    char sha1[41];
    if (pec_pki_cert_info(sig.cert_pem.data, sig.cert_pem.len, NULL, sha1, err, sizeof err) < 0) {
        init_crypto_fail("cannot hash the signing certificate", err);
        goto out;
    }
    for (char *h = sha1; *h; h++)       /* as RFC 6109 §4.5.10 prints it */
        if (*h >= 'a' && *h <= 'f')
            *h = (char)(*h - 'a' + 'A');
    if (init_cert_der(&sig.cert_pem, &der) < 0) {
        init_crypto_fail("cannot encode the signing certificate", "out of memory");
        goto out;
    }

    if (init_path_join(p, sizeof p, dir, "pec") < 0 || init_make_dir(p, 0700) < 0)
        goto out;
    if (init_path_join(p, sizeof p, dir, "tls") < 0 || init_make_dir(p, 0700) < 0)
        goto out;
    if ((sig_pub == NULL && (init_path_join(p, sizeof p, dir, "pec/sign.key") < 0 ||
                             init_write_file(p, sig.key_pem.data, sig.key_pem.len, 0600) < 0)) ||
        init_path_join(p, sizeof p, dir, "pec/sign.crt") < 0 ||
        init_write_chain(p, &sig.cert_pem, &ca.cert_pem) < 0 ||
        (tls_pub == NULL && (init_path_join(p, sizeof p, dir, "tls/key.pem") < 0 ||
                             init_write_file(p, tls.key_pem.data, tls.key_pem.len, 0600) < 0)) ||
        init_path_join(p, sizeof p, dir, "tls/cert.pem") < 0 ||
        init_write_chain(p, &tls.cert_pem, &ca.cert_pem) < 0 ||
        init_path_join(p, sizeof p, dir, "ca.crt") < 0 ||
        init_write_file(p, ca.cert_pem.data, ca.cert_pem.len, 0644) < 0)
        goto out;
    bool users_created = false;
    if (init_path_join(p, sizeof p, dir, "users") < 0)
        goto out;
    if (access(p, F_OK) != 0) {
        if (init_write_file(p, "", 0, 0600) < 0)
            goto out;
        users_created = true;
    }
    int replaced = 0;
    if (init_directory_update(directory, &o, sha1, &der, &replaced) < 0)
        goto out;
    if (init_write_file(confp, conf, conflen, 0644) < 0)
        goto out;
    if (init_for_pecd_user(dir, p) < 0)
        goto out;

    printf("provider %s (%s) initialised in %s\n", o.domain, o.name, dir);
    printf("  test CA          %s/ca.crt (%s)\n", cadir, ca_created ? "created" : "reused");
    printf("  signing cert     %s/pec/sign.crt  posta-certificata@%s\n", dir, o.domain);
    if (o.signing_key_uri)
        printf("  signing key      %s (in the module %s)\n", o.signing_key_uri,
               o.pkcs11_module);
    if (o.tls_key_uri)
        printf("  TLS key          %s (in the module %s)\n", o.tls_key_uri, o.pkcs11_module);
    printf("                   providerCertificateHash %s\n", sha1);
    printf("  TLS cert         %s/tls/cert.pem  %s, localhost, 127.0.0.1\n", dir, mx);
    printf("  trust anchors    %s/ca.crt\n", dir);
    printf("  users            %s/users (%s)\n", dir, users_created ? "empty" : "kept");
    printf("  directory        %s (entry %s)\n", directory, replaced ? "replaced" : "added");
    printf("  configuration    %s\n", confp);
    printf("  listeners        mx 127.0.0.1:%u, submission 127.0.0.1:%u", o.smtp, o.submission);
    if (o.submissions)
        printf(", submissions 127.0.0.1:%u", o.submissions);
    printf("\n");
    for (size_t i = 0; i < o.nroutes; i++)
        printf("  route            %s -> %s\n", o.routes[i].domain, o.routes[i].hostport);
    printf("next:\n"
           "  pecctl -c %s user add alice@%s\n"
           "  pecd -c %s\n",
           confp, o.domain, confp);
    rc = 0;
out:
    EVP_PKEY_free(sig_pub);
    EVP_PKEY_free(tls_pub);
    pec_pki_pair_free(&ca);
    pec_pki_pair_free(&sig);
    pec_pki_pair_free(&tls);
    pec_buf_free(&der);
    free(conf);
    return rc;
}
