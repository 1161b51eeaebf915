/*
 * pecctl_init.c - `pecctl init`: a ready-to-run PEC provider instance.
 *
 *   pecctl init DIR --domain DOMAIN [--name NAME] [--smtp PORT]
 *                   [--submission PORT] [--submissions PORT] [--ca CADIR]
 *                   [--directory FILE.ldif] [--route DOMAIN=HOST:PORT]...
 *                   [--force]
 *
 * Writes, in this order (pecd.conf last, so that its presence means a
 * complete instance):
 *   CADIR/ca.key (0600), CADIR/ca.crt   test CA, created if absent, else reused
 *                                       (default CADIR: DIR/ca; ca.pem -> ca.crt
 *                                       for `pecctl pki`)
 *   DIR/pec/sign.key (0600), sign.crt   signing certificate (RFC 6109 §5.5), then the CA
 *   DIR/tls/key.pem (0600), cert.pem    TLS server certificate, then the CA
 *   DIR/ca.crt                          the CA: trust anchors (signatures, outbound TLS)
 *   DIR/users (0600)                    empty users file, kept if present
 *   FILE.ldif                           the providers' directory (RFC 6109 §4.5), shared
 *                                       by local providers: this provider's entry is
 *                                       added or replaced under an flock(2) lock
 *                                       (default: DIR/directory.ldif)
 *   DIR/pecd.conf                       refused if present unless --force
 *
 * The certificates come from src/pec/pec_pki.c (the TLS one gains an IP
 * address SAN here).  Every file is written with fs_write_atomic (temp
 * file, fsync, rename); the CA and the directory file are updated under
 * flock(2) on CADIR/ca.lock and FILE.ldif.lock.  Exit status: 0 done, 1 an
 * I/O or crypto failure (the message names the file), 2 bad arguments.
 * Interface: pecctl_init_main(argc, argv), argv[0] == "init".
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/config.h"
#include "lib/lib.h"
#include "pec/pec_pki.h"

int pecctl_init_main(int argc, char **argv);

#define PROG "pecctl init"
#define DEFAULT_SMTP 2525       /* unprivileged stand-ins for 25, 587 and 465 */
#define DEFAULT_SUBMISSION 2587
#define CONF_MAX_LINE 196       /* inih: INI_MAX_LINE 200 minus CR, LF and NUL */
#define LDIF_COLUMNS 76         /* RFC 2849: fold longer lines */
#define LDIF_MAX (64u << 20)

struct route {
    char domain[256];
    char hostport[300];
};

struct init_opts {
    const char *dir;
    char domain[256];
    const char *name;           /* default: the domain */
    unsigned smtp, submission, submissions; /* submissions 0 = no listener */
    const char *cadir;
    const char *directory;
    struct route routes[CONFIG_MAX_ROUTES];
    size_t nroutes;
    bool force;
};

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

static int io_fail(const char *what, const char *path)
{
    fprintf(stderr, PROG ": cannot %s %s: %s\n", what, path, strerror(errno));
    return -1;
}

static int crypto_fail(const char *what, const char *detail)
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

/* A domain in dot-atom form with LDH labels (RFC 6109 §4.5.5, RFC 1034); lower-cased. */
static bool domain_ok(char *d)
{
    size_t n = strlen(d), label = 0;
    if (n == 0 || n > 200 || d[0] == '.' || d[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = d[i];
        if (c >= 'A' && c <= 'Z')
            d[i] = (char)(c - 'A' + 'a');
        else if (c == '.') {
            if (label == 0 || d[i - 1] == '-')
                return false;
            label = 0;
            continue;
        } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
        if (c == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return d[n - 1] != '-';
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
           OPT_ROUTE, OPT_FORCE, OPT_HELP };
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
    if (o->name == NULL)
        o->name = o->domain;
    return -1;      /* go on */
}

/* ---- files ---------------------------------------------------------------- */

static int path_join(char *buf, size_t size, const char *dir, const char *name)
{
    if (str_fmt(buf, size, "%s/%s", dir, name) < 0) {
        fprintf(stderr, PROG ": path too long: %s/%s\n", dir, name);
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    if (fs_write_atomic(path, data, len, mode) < 0)
        return io_fail("write", path);
    /* fs_write_atomic creates with mode & ~umask; key files must be exactly 0600 */
    if (chmod(path, mode) < 0)
        return io_fail("set the mode of", path);
    return 0;
}

static int write_chain(const char *path, const pec_buf *leaf, const pec_buf *ca)
{
    char *buf = malloc(leaf->len + ca->len);
    if (buf == NULL)
        return io_fail("allocate memory for", path);
    memcpy(buf, leaf->data, leaf->len);
    memcpy(buf + leaf->len, ca->data, ca->len);
    int rc = write_file(path, buf, leaf->len + ca->len, 0644);
    free(buf);
    return rc;
}

static int make_dir(const char *path, mode_t mode)
{
    if (fs_mkdirs(path, mode) < 0)
        return io_fail("create the directory", path);
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return io_fail("use", path);
    }
    return 0;
}

/* An exclusive flock(2) on path (created if needed); returns the fd. */
static int lock_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return io_fail("open the lock file", path), -1;
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            io_fail("lock", path);
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* Absolute form of path, whose parent directory exists; the last component
 * may not exist yet. */
static int absolute_path(const char *path, char *out, size_t size)
{
    char parent[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash == path)
        str_copy(parent, "/", sizeof parent);
    else if (slash)
        str_fmt(parent, sizeof parent, "%.*s", (int)(slash - path), path);
    else
        str_copy(parent, ".", sizeof parent);
    if (realpath(parent, real) == NULL)
        return io_fail("resolve", parent);
    if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || base[0] == '\0') {
        char full[PATH_MAX];
        if (realpath(path, full) == NULL)
            return io_fail("resolve", path);
        return str_copy(out, full, size) >= size ? (errno = ENAMETOOLONG, io_fail("use", path))
                                                 : 0;
    }
    if (str_fmt(out, size, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", base) < 0) {
        errno = ENAMETOOLONG;
        return io_fail("use", path);
    }
    return 0;
}

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
static int ca_load_or_make(const char *cadir, pec_pki_pair *ca, bool *created)
{
    char keyp[PATH_MAX], crtp[PATH_MAX], pemp[PATH_MAX], lockp[PATH_MAX];
    memset(ca, 0, sizeof *ca);
    *created = false;
    if (make_dir(cadir, 0700) < 0 || path_join(keyp, sizeof keyp, cadir, "ca.key") < 0 ||
        path_join(crtp, sizeof crtp, cadir, "ca.crt") < 0 ||
        path_join(pemp, sizeof pemp, cadir, "ca.pem") < 0 ||
        path_join(lockp, sizeof lockp, cadir, "ca.lock") < 0)
        return -1;
    int lock = lock_file(lockp);
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
            io_fail("read", keyp);
            goto out;
        }
        if (read_pem(cert, &ca->cert_pem) < 0) {
            io_fail("read", cert);
            goto out;
        }
        rc = 0;
        goto out;
    }
    char err[256];
    if (pec_pki_make_ca("pecmail test CA", 3650, 2048, ca, err, sizeof err) < 0) {
        crypto_fail("cannot make a CA", err);
        goto out;
    }
    /* key first: a crash between the two leaves "incomplete", never a cert without key */
    if (write_file(keyp, ca->key_pem.data, ca->key_pem.len, 0600) < 0 ||
        write_file(crtp, ca->cert_pem.data, ca->cert_pem.len, 0644) < 0)
        goto out;
    /* `pecctl pki revoke|crl --ca CADIR` reads ca.pem */
    if (symlink("ca.crt", pemp) < 0 && errno != EEXIST) {
        io_fail("create the link", pemp);
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
static int add_ip_san(pec_pki_pair *leaf, const pec_pki_pair *ca, const char *ip)
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
        crypto_fail("cannot add the IP address to the TLS certificate", e);
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

/* The DER of a PEM certificate, base64 without line breaks (malloc'ed). */
static char *cert_der_base64(const pec_buf *pem)
{
    BIO *b = BIO_new_mem_buf(pem->data, (int)pem->len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    unsigned char *der = NULL;
    int n = x ? i2d_X509(x, &der) : -1;
    char *out = NULL;
    if (n > 0 && (out = malloc((size_t)(n + 2) / 3 * 4 + 1)) != NULL)
        EVP_EncodeBlock((unsigned char *)out, der, n);
    OPENSSL_free(der);
    X509_free(x);
    BIO_free(b);
    ERR_clear_error();
    return out;
}

/* ---- the providers' directory (RFC 6109 §4.5, LDIF per RFC 2849) ----------- */

/* One record of an existing LDIF file: its text as found, and the values
 * that decide whether it is ours. */
struct ldif_rec {
    char *text;                 /* lines without the blank separator, '\n' ends */
    bool root;                  /* dn: o=postacert */
    bool version;               /* a lone "version: 1" */
    bool ours;                  /* same DN, providerName or a managedDomains value */
    char *dn, *provider;        /* for the message when replacing */
};

/* RFC 2849 SAFE-STRING: may be written after "attr: ". */
static bool ldif_safe(const char *v)
{
    if (v[0] == ' ' || v[0] == ':' || v[0] == '<')
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p == '\n' || *p == '\r' || *p >= 0x80)
            return false;
    size_t n = strlen(v);
    return n == 0 || v[n - 1] != ' ';   /* a trailing space would be lost by readers */
}

/* Writes one logical line, folded at 76 columns (RFC 2849: continuation
 * lines begin with one space).  Write errors show at fclose(). */
static void ldif_fold(FILE *f, const char *line)
{
    size_t len = strlen(line), col = LDIF_COLUMNS;
    fwrite(line, 1, len < col ? len : col, f);
    for (size_t i = col; i < len; i += col - 1) {
        fputs("\n ", f);
        fwrite(line + i, 1, len - i < col - 1 ? len - i : col - 1, f);
    }
    fputc('\n', f);
}

/* Writes "attr: value", or "attr:: base64" when value is not SAFE-STRING;
 * -1 if out of memory. */
static int ldif_puts(FILE *f, const char *attr, const char *value)
{
    char *enc = NULL, *line = NULL;
    bool b64 = !ldif_safe(value);
    if (b64) {
        size_t n = strlen(value);
        if ((enc = malloc((n + 2) / 3 * 4 + 1)) == NULL)
            return -1;
        EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)value, (int)n);
    }
    int rc = asprintf(&line, "%s:%s %s", attr, b64 ? ":" : "", b64 ? enc : value);
    if (rc >= 0)
        ldif_fold(f, line);
    free(line);
    free(enc);
    return rc < 0 ? -1 : 0;
}

/* RFC 4514 §2.4 escaping of an attribute value inside a DN. */
static void dn_escape(const char *v, char *out, size_t size)
{
    size_t o = 0, n = strlen(v);
    for (size_t i = 0; i < n && o + 3 < size; i++) {
        char c = v[i];
        if (strchr("\"+,;<>\\=", c) || (i == 0 && (c == '#' || c == ' ')) ||
            (i == n - 1 && c == ' '))
            out[o++] = '\\';
        out[o++] = c;
    }
    out[o] = '\0';
}

/* Decodes an LDIF value: "value" after ':' (leading spaces skipped) or ':: base64'. */
static char *ldif_value(const char *after_colon)
{
    bool b64 = after_colon[0] == ':';
    const char *v = after_colon + (b64 ? 1 : 0);
    while (*v == ' ')
        v++;
    if (!b64)
        return strdup(v);
    size_t n = strlen(v);
    unsigned char *raw = malloc(n / 4 * 3 + 4);
    if (raw == NULL)
        return NULL;
    int got = n % 4 == 0 ? EVP_DecodeBlock(raw, (const unsigned char *)v, (int)n) : -1;
    if (got < 0) {
        free(raw);
        return strdup("");
    }
    if (n >= 1 && v[n - 1] == '=')
        got--;
    if (n >= 2 && v[n - 2] == '=')
        got--;
    raw[got] = '\0';
    return (char *)raw;
}

static bool dn_is(const char *dn, const char *want)
{
    /* DNs compare case-insensitively for these attributes; ignore blanks after ',' */
    while (*dn && *want) {
        if (*dn == ',' && *want == ',') {
            dn++, want++;
            while (*dn == ' ')
                dn++;
            continue;
        }
        if (tolower((unsigned char)*dn) != tolower((unsigned char)*want))
            return false;
        dn++, want++;
    }
    return *dn == '\0' && *want == '\0';
}

/* Fills r's flags from its text (the lines joined, unfolded here); -1 if
 * out of memory. */
static int ldif_classify(struct ldif_rec *r, const char *dn_ours, const char *name,
                         const char *domain)
{
    char *copy = strdup(r->text);
    if (copy == NULL)
        return -1;
    /* unfold: "\n " joins lines (RFC 2849) */
    char *w = copy;
    for (const char *p = copy; *p; p++) {
        if (p[0] == '\n' && p[1] == ' ') {
            p++;
            continue;
        }
        *w++ = *p;
    }
    *w = '\0';
    bool only_version = true, any = false;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        *colon = '\0';
        char *semi = strchr(line, ';');
        if (semi)
            *semi = '\0';
        any = true;
        if (strcasecmp(line, "version") != 0)
            only_version = false;
        bool is_dn = strcasecmp(line, "dn") == 0;
        bool is_name = strcasecmp(line, "providerName") == 0;
        bool is_domain = strcasecmp(line, "managedDomains") == 0;
        if (!is_dn && !is_name && !is_domain)
            continue;
        char *v = ldif_value(colon + 1);
        if (v == NULL) {
            free(copy);
            return -1;
        }
        if (is_dn) {
            if (dn_is(v, "o=postacert"))
                r->root = true;
            if (dn_is(v, dn_ours))
                r->ours = true;
            if (r->dn == NULL)
                r->dn = strdup(v);
        } else if (is_name) {
            if (strcasecmp(v, name) == 0)
                r->ours = true;
            if (r->provider == NULL)
                r->provider = strdup(v);
        } else if (strcasecmp(v, domain) == 0) {
            r->ours = true;
        }
        free(v);
    }
    r->version = any && only_version;
    free(copy);
    return 0;
}

/* Splits LDIF text into records at blank lines; a leading "version: 1" line
 * becomes a record of its own.  -1 if out of memory (*recs is still freed
 * by the caller, *nrecs of them). */
static int ldif_split(const char *text, struct ldif_rec **recs_out, size_t *nrecs)
{
    struct ldif_rec *recs = NULL;
    size_t n = 0, cap = 0;
    const char *p = text;
    char *cur = NULL;
    size_t curlen = 0;
    for (;;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        size_t clean = len;
        if (clean && p[clean - 1] == '\r')
            clean--;
        bool blank = clean == 0;
        bool end = nl == NULL;
        if (!blank) {
            bool version_line = n == 0 && curlen == 0 && strncasecmp(p, "version:", 8) == 0;
            char *grown = realloc(cur, curlen + clean + 2);
            if (grown == NULL)
                goto fail;
            cur = grown;
            memcpy(cur + curlen, p, clean);
            curlen += clean;
            cur[curlen++] = '\n';
            cur[curlen] = '\0';
            if (version_line)
                blank = true;   /* close it as its own record */
        }
        if ((blank || end) && curlen > 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                struct ldif_rec *g = realloc(recs, cap * sizeof *recs);
                if (g == NULL)
                    goto fail;
                recs = g;
            }
            memset(&recs[n], 0, sizeof recs[n]);
            recs[n++].text = cur;
            cur = NULL;
            curlen = 0;
        }
        if (end)
            break;
        p = nl + 1;
    }
    *recs_out = recs;
    *nrecs = n;
    return 0;
fail:
    free(cur);
    *recs_out = recs;
    *nrecs = n;
    return -1;
}

/* This provider's entry (RFC 6109 §4.5.9: the MUST attributes of "provider"). */
static int ldif_entry(FILE *f, const char *dn, const struct init_opts *o, const char *sha1,
                      const char *der_b64)
{
    char mail[300];
    str_fmt(mail, sizeof mail, "posta-certificata@%s", o->domain);
    if (ldif_puts(f, "dn", dn) || ldif_puts(f, "objectclass", "top") ||
        ldif_puts(f, "objectclass", "provider") || ldif_puts(f, "providerName", o->name) ||
        ldif_puts(f, "providerCertificateHash", sha1))
        return -1;
    char *line = NULL;         /* §4.5.2: DER, hence ";binary" and base64 */
    if (asprintf(&line, "providerCertificate;binary:: %s", der_b64) < 0)
        return -1;
    ldif_fold(f, line);
    free(line);
    return ldif_puts(f, "mailReceipt", mail) || ldif_puts(f, "managedDomains", o->domain) ||
                   ldif_puts(f, "description", "pecmail provider")
               ? -1
               : 0;
}

static const char ROOT_ENTRY[] = "dn: o=postacert\n"
                                 "objectclass: top\n"
                                 "objectclass: organization\n"
                                 "objectClass: LDIFLocationURLObject\n"
                                 "o: postacert\n"
                                 "description: Base root for the PEC providers directory\n";

/* Adds or replaces this provider's entry in the LDIF file at path.
 * *replaced counts the entries dropped. */
static int directory_update(const char *path, const struct init_opts *o, const char *sha1,
                            const char *der_b64, int *replaced)
{
    char lockp[PATH_MAX];
    if (str_fmt(lockp, sizeof lockp, "%s.lock", path) < 0) {
        errno = ENAMETOOLONG;
        return io_fail("use", path);
    }
    int lock = lock_file(lockp);
    if (lock < 0)
        return -1;
    int rc = -1;
    char *text = NULL, *out = NULL;
    size_t outlen = 0, nrecs = 0;
    struct ldif_rec *recs = NULL;
    FILE *f = NULL;
    if (fs_read_file(path, &text, NULL, LDIF_MAX) < 0) {
        if (errno != ENOENT) {
            io_fail("read", path);
            goto out;
        }
        text = strdup("");
    }
    errno = ENOMEM;
    if (text == NULL || ldif_split(text, &recs, &nrecs) < 0) {
        io_fail("parse", path);
        goto out;
    }
    char esc[256], dn[300];
    dn_escape(o->name, esc, sizeof esc);
    str_fmt(dn, sizeof dn, "providerName=%s,o=postacert", esc);
    bool have_root = false, bad = false;
    for (size_t i = 0; i < nrecs; i++) {
        bad |= ldif_classify(&recs[i], dn, o->name, o->domain) < 0;
        have_root |= recs[i].root;
    }
    if (bad || (f = open_memstream(&out, &outlen)) == NULL) {
        errno = ENOMEM;
        io_fail("parse", path);
        goto out;
    }
    /* version line, then the root, then the entries in their order with ours
     * where the first replaced one was (or last) */
    bool first = true, placed = false;
    for (size_t i = 0; i < nrecs; i++)
        if (recs[i].version) {
            fputs(recs[i].text, f);
            first = false;
        }
    if (!have_root) {
        fputs(first ? "" : "\n", f);
        fputs(ROOT_ENTRY, f);
        first = false;
    }
    *replaced = 0;
    for (size_t i = 0; i < nrecs; i++) {
        if (recs[i].version)
            continue;
        if (recs[i].ours && !recs[i].root) {
            (*replaced)++;
            if (recs[i].provider && strcasecmp(recs[i].provider, o->name) != 0)
                fprintf(stderr, PROG ": warning: replacing the entry of '%s' in %s: it "
                        "managed %s\n", recs[i].provider, path, o->domain);
            if (placed)
                continue;
            fputs(first ? "" : "\n", f);
            bad |= ldif_entry(f, dn, o, sha1, der_b64) < 0;
            first = false;
            placed = true;
            continue;
        }
        fputs(first ? "" : "\n", f);
        fputs(recs[i].text, f);
        first = false;
    }
    if (!placed) {
        fputs(first ? "" : "\n", f);
        bad |= ldif_entry(f, dn, o, sha1, der_b64) < 0;
    }
    if (fclose(f) != 0 || bad) {
        f = NULL;
        errno = bad ? ENOMEM : errno;
        io_fail("build", path);
        goto out;
    }
    f = NULL;
    rc = write_file(path, out, outlen, 0644);
out:
    if (f)
        fclose(f);
    for (size_t i = 0; i < nrecs; i++) {
        free(recs[i].text);
        free(recs[i].dn);
        free(recs[i].provider);
    }
    free(recs);
    free(text);
    free(out);
    close(lock);
    return rc;
}

/* ---- pecd.conf ------------------------------------------------------------- */

static int conf_build(const struct init_opts *o, const char *directory, char **out, size_t *len)
{
    FILE *f = open_memstream(out, len);
    if (f == NULL)
        return -1;
    char date[64];
    rfc5322_date(date, sizeof date, time(NULL));
    fprintf(f,
            "# pecd.conf - the PEC provider %s, made by `pecctl init` on %s.\n"
            "# Every key: docs/configuration.md.  Relative paths are relative to this\n"
            "# file's directory.  Check with `pecd -t -c pecd.conf`.\n"
            "\n"
            "[provider]\n"
            "domain = %s\n"
            "hostname = mx.%s\n"
            "# providerName in the providers' directory (RFC 6109 4.5.3)\n"
            "name = %s\n"
            "\n"
            "[tls]\n"
            "# server certificate (then the test CA) and its key, for every listener\n"
            "certificate = tls/cert.pem\n"
            "key = tls/key.pem\n"
            "\n"
            "[mx]\n"
            "# incoming point: mail from other providers; STARTTLS required (RFC 6109 5.3)\n"
            "listen = 127.0.0.1:%u\n"
            "\n"
            "[submission]\n"
            "# access point: users submit with STARTTLS and AUTH\n"
            "listen = 127.0.0.1:%u\n",
            o->domain, date, o->domain, o->domain, o->name, o->smtp, o->submission);
    if (o->submissions)
        fprintf(f,
                "\n"
                "[submissions]\n"
                "# access point with implicit TLS (RFC 8314)\n"
                "listen = 127.0.0.1:%u\n",
                o->submissions);
    fprintf(f,
            "\n"
            "[pec]\n"
            "enabled = yes\n"
            "# signs receipts and transport envelopes (RFC 6109 5.5); the certificate\n"
            "# file holds the signer certificate then the CA\n"
            "signing_key = pec/sign.key\n"
            "signing_certificate = pec/sign.crt\n"
            "# trust anchors for the signatures of incoming PEC messages\n"
            "trust = ca.crt\n"
            "# the providers' directory (RFC 6109 4.5), shared with the other local providers\n"
            "directory = %s\n"
            "\n"
            "[timers]\n"
            "# RFC 6109 3.1.6 notices; shorten (e.g. 30s) for tests\n"
            "# preavviso = 12h\n"
            "# mancata_consegna = 24h\n"
            "\n"
            "[evidence]\n"
            "# the evidence log (SQLite), kept 30 months\n"
            "path = evidence.db\n"
            "\n"
            "[outbound]\n"
            "# trust anchors for the TLS certificates of the other providers\n"
            "ca_file = ca.crt\n"
            "\n",
            directory);
    if (o->nroutes == 0) {
        fputs("# [routes]\n"
              "# static next hops (tests on loopback); other domains use DNS MX\n"
              "# other.example = 127.0.0.1:2525\n",
              f);
    } else {
        fputs("[routes]\n"
              "# static next hops (tests on loopback); other domains use DNS MX\n",
              f);
        for (size_t i = 0; i < o->nroutes; i++)
            fprintf(f, "%s = %s\n", o->routes[i].domain, o->routes[i].hostport);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int conf_check_lines(const char *conf, const char *path)
{
    for (const char *p = conf; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > CONF_MAX_LINE) {
            fprintf(stderr,
                    PROG ": %s: this line would be longer than pecd.conf allows (%d "
                    "characters); use shorter paths:\n  %.*s\n",
                    path, CONF_MAX_LINE, (int)n, p);
            return -1;
        }
        p += n + (nl ? 1 : 0);
    }
    return 0;
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
    if (path_join(confp, sizeof confp, o.dir, "pecd.conf") < 0)
        return 1;
    if (!o.force && access(confp, F_OK) == 0) {
        fprintf(stderr, PROG ": %s exists; use --force to replace the instance "
                        "(keys and certificates are made anew; users and mail are kept)\n",
                confp);
        return 1;
    }
    if (make_dir(o.dir, 0755) < 0 || absolute_path(o.dir, dir, sizeof dir) < 0)
        return 1;
    if (path_join(confp, sizeof confp, dir, "pecd.conf") < 0)
        return 1;
    if (o.cadir) {
        if (make_dir(o.cadir, 0700) < 0 || absolute_path(o.cadir, cadir, sizeof cadir) < 0)
            return 1;
    } else if (path_join(cadir, sizeof cadir, dir, "ca") < 0) {
        return 1;
    }
    if (o.directory) {
        str_copy(p, o.directory, sizeof p);
        char *slash = strrchr(p, '/');
        if (slash && slash != p) {
            *slash = '\0';
            if (make_dir(p, 0755) < 0)
                return 1;
        }
        if (absolute_path(o.directory, directory, sizeof directory) < 0)
            return 1;
    } else if (path_join(directory, sizeof directory, dir, "directory.ldif") < 0) {
        return 1;
    }

    pec_pki_pair ca, sig = {{0}, {0}}, tls = {{0}, {0}};
    char *der_b64 = NULL, *conf = NULL;
    size_t conflen = 0;
    int rc = 1;
    bool ca_created;
    /* pecd.conf is checked before any key is made */
    if (conf_build(&o, directory, &conf, &conflen) < 0) {
        io_fail("build", confp);
        return 1;
    }
    if (conf_check_lines(conf, confp) < 0 || ca_load_or_make(cadir, &ca, &ca_created) < 0) {
        free(conf);
        return 1;
    }

    char err[256];
    const char *tls_names[] = {"localhost"};
    char mx[300];
    str_fmt(mx, sizeof mx, "mx.%s", o.domain);
    pec_pki_req rs = {.kind = PEC_PKI_SIGNING, .domain = o.domain, .org = o.name};
    pec_pki_req rt = {.kind = PEC_PKI_TLS, .domain = mx, .org = o.name,
                      .dns_names = tls_names, .n_dns = 1};
    if (pec_pki_issue(&ca, &rs, &sig, err, sizeof err) < 0) {
        crypto_fail("cannot issue the signing certificate (is the CA in place?)", err);
        goto out;
    }
    if (pec_pki_issue(&ca, &rt, &tls, err, sizeof err) < 0) {
        crypto_fail("cannot issue the TLS certificate", err);
        goto out;
    }
    if (add_ip_san(&tls, &ca, "127.0.0.1") < 0)
        goto out;
    char sha1[41];
    if (pec_pki_cert_info(sig.cert_pem.data, sig.cert_pem.len, NULL, sha1, err, sizeof err) < 0) {
        crypto_fail("cannot hash the signing certificate", err);
        goto out;
    }
    for (char *h = sha1; *h; h++)       /* as RFC 6109 §4.5.10 prints it */
        if (*h >= 'a' && *h <= 'f')
            *h = (char)(*h - 'a' + 'A');
    if ((der_b64 = cert_der_base64(&sig.cert_pem)) == NULL) {
        crypto_fail("cannot encode the signing certificate", "out of memory");
        goto out;
    }

    if (path_join(p, sizeof p, dir, "pec") < 0 || make_dir(p, 0700) < 0)
        goto out;
    if (path_join(p, sizeof p, dir, "tls") < 0 || make_dir(p, 0700) < 0)
        goto out;
    if (path_join(p, sizeof p, dir, "pec/sign.key") < 0 ||
        write_file(p, sig.key_pem.data, sig.key_pem.len, 0600) < 0 ||
        path_join(p, sizeof p, dir, "pec/sign.crt") < 0 ||
        write_chain(p, &sig.cert_pem, &ca.cert_pem) < 0 ||
        path_join(p, sizeof p, dir, "tls/key.pem") < 0 ||
        write_file(p, tls.key_pem.data, tls.key_pem.len, 0600) < 0 ||
        path_join(p, sizeof p, dir, "tls/cert.pem") < 0 ||
        write_chain(p, &tls.cert_pem, &ca.cert_pem) < 0 ||
        path_join(p, sizeof p, dir, "ca.crt") < 0 ||
        write_file(p, ca.cert_pem.data, ca.cert_pem.len, 0644) < 0)
        goto out;
    bool users_created = false;
    if (path_join(p, sizeof p, dir, "users") < 0)
        goto out;
    if (access(p, F_OK) != 0) {
        if (write_file(p, "", 0, 0600) < 0)
            goto out;
        users_created = true;
    }
    int replaced = 0;
    if (directory_update(directory, &o, sha1, der_b64, &replaced) < 0)
        goto out;
    if (write_file(confp, conf, conflen, 0644) < 0)
        goto out;

    printf("provider %s (%s) initialised in %s\n", o.domain, o.name, dir);
    printf("  test CA          %s/ca.crt (%s)\n", cadir, ca_created ? "created" : "reused");
    printf("  signing cert     %s/pec/sign.crt  posta-certificata@%s\n", dir, o.domain);
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
    pec_pki_pair_free(&ca);
    pec_pki_pair_free(&sig);
    pec_pki_pair_free(&tls);
    free(der_b64);
    free(conf);
    return rc;
}
