/*
 * pecctl_init_files.c - the files `pecctl init` writes: durable writes,
 * directories, locks and absolute paths; the providers' directory (this
 * provider's entry added to or replaced in a shared LDIF file, under
 * FILE.ldif.lock); pecd.conf (built, then checked against inih's line
 * limit before any key is made).
 *
 * Interface: pecctl_init_int.h.  Errors are printed on stderr (PROG: ...).
 */
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "lib/lib.h"
#include "pec/pec_pki.h"
#include "pecctl_init_int.h"

#define CONF_MAX_LINE 196       /* inih: INI_MAX_LINE 200 minus CR, LF and NUL */
#define LDIF_MAX (64u << 20)

/* ---- files ---------------------------------------------------------------- */

int init_path_join(char *buf, size_t size, const char *dir, const char *name)
{
    if (str_fmt(buf, size, "%s/%s", dir, name) < 0) {
        fprintf(stderr, PROG ": path too long: %s/%s\n", dir, name);
        return -1;
    }
    return 0;
}

int init_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    if (fs_write_atomic(path, data, len, mode) < 0)
        return init_io_fail("write", path);
    /* fs_write_atomic creates with mode & ~umask; key files must be exactly 0600 */
    if (chmod(path, mode) < 0)
        return init_io_fail("set the mode of", path);
    return 0;
}

int init_write_chain(const char *path, const pec_buf *leaf, const pec_buf *ca)
{
    char *buf = malloc(leaf->len + ca->len);
    if (buf == NULL)
        return init_io_fail("allocate memory for", path);
    memcpy(buf, leaf->data, leaf->len);
    memcpy(buf + leaf->len, ca->data, ca->len);
    int rc = init_write_file(path, buf, leaf->len + ca->len, 0644);
    free(buf);
    return rc;
}

int init_make_dir(const char *path, mode_t mode)
{
    if (fs_mkdirs(path, mode) < 0)
        return init_io_fail("create the directory", path);
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return init_io_fail("use", path);
    }
    return 0;
}

/* An exclusive flock(2) on path (created if needed); returns the fd. */
int init_lock_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return init_io_fail("open the lock file", path), -1;
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            init_io_fail("lock", path);
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* Absolute form of path, whose parent directory exists; the last component
 * may not exist yet. */
int init_absolute_path(const char *path, char *out, size_t size)
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
        return init_io_fail("resolve", parent);
    if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || base[0] == '\0') {
        char full[PATH_MAX];
        if (realpath(path, full) == NULL)
            return init_io_fail("resolve", path);
        return str_copy(out, full, size) >= size ? (errno = ENAMETOOLONG, init_io_fail("use", path))
                                                 : 0;
    }
    if (str_fmt(out, size, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", base) < 0) {
        errno = ENAMETOOLONG;
        return init_io_fail("use", path);
    }
    return 0;
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

/* This provider's entry (RFC 6109 §4.5.9: the MUST attributes of "provider").
 * Written by pec_ldif_put, the writer of `pecctl directory export`. */
static int ldif_entry(FILE *f, const char *dn, const struct init_opts *o, const char *sha1,
                      const pec_buf *der)
{
    char mail[300];
    str_fmt(mail, sizeof mail, "posta-certificata@%s", o->domain);
    const char *text[][2] = {{"dn", dn},
                             {"objectclass", "top"},
                             {"objectclass", "provider"},
                             {"providerName", o->name},
                             {"providerCertificateHash", sha1}};
    pec_buf b = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof text / sizeof text[0]; i++)
        rc = pec_ldif_put(&b, text[i][0], text[i][1], strlen(text[i][1]));
    /* §4.5.2: DER, hence ";binary"; not SAFE-STRING, so base64 */
    if (rc == 0)
        rc = pec_ldif_put(&b, "providerCertificate;binary", der->data, der->len);
    if (rc == 0)
        rc = pec_ldif_put(&b, "mailReceipt", mail, strlen(mail));
    if (rc == 0)
        rc = pec_ldif_put(&b, "managedDomains", o->domain, strlen(o->domain));
    if (rc == 0)
        rc = pec_ldif_put(&b, "description", "pecmail provider", strlen("pecmail provider"));
    if (rc == 0)
        fwrite(b.data, 1, b.len, f); /* write errors show at fclose() */
    pec_buf_free(&b);
    return rc;
}

static const char ROOT_ENTRY[] = "dn: o=postacert\n"
                                 "objectclass: top\n"
                                 "objectclass: organization\n"
                                 "objectClass: LDIFLocationURLObject\n"
                                 "o: postacert\n"
                                 "description: Base root for the PEC providers directory\n";

/* Adds or replaces this provider's entry in the LDIF file at path.
 * *replaced counts the entries dropped. */
int init_directory_update(const char *path, const struct init_opts *o, const char *sha1,
                          const pec_buf *der, int *replaced)
{
    char lockp[PATH_MAX];
    if (str_fmt(lockp, sizeof lockp, "%s.lock", path) < 0) {
        errno = ENAMETOOLONG;
        return init_io_fail("use", path);
    }
    int lock = init_lock_file(lockp);
    if (lock < 0)
        return -1;
    int rc = -1;
    char *text = NULL, *out = NULL;
    size_t outlen = 0, nrecs = 0;
    struct ldif_rec *recs = NULL;
    FILE *f = NULL;
    if (fs_read_file(path, &text, NULL, LDIF_MAX) < 0) {
        if (errno != ENOENT) {
            init_io_fail("read", path);
            goto out;
        }
        text = strdup("");
    }
    errno = ENOMEM;
    if (text == NULL || ldif_split(text, &recs, &nrecs) < 0) {
        init_io_fail("parse", path);
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
        init_io_fail("parse", path);
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
            bad |= ldif_entry(f, dn, o, sha1, der) < 0;
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
        bad |= ldif_entry(f, dn, o, sha1, der) < 0;
    }
    if (fclose(f) != 0 || bad) {
        f = NULL;
        errno = bad ? ENOMEM : errno;
        init_io_fail("build", path);
        goto out;
    }
    f = NULL;
    rc = init_write_file(path, out, outlen, 0644);
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

/* ---- the network-facing user --------------------------------------------- */

#define PECD_USER "pecmail"   /* the [pecd] user init_conf_build writes */

/* Creates the system user with useradd(8), as scripts/install-deps does. */
static int make_system_user(const char *name)
{
    pid_t pid = fork();
    if (pid == 0) {
        execlp("useradd", "useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
               "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment",
               "pecmail network-facing processes", name, (char *)NULL);
        _exit(127);
    }
    int status;
    if (pid == -1 || waitpid(pid, &status, 0) == -1 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, PROG ": cannot create the system user %s with useradd; create it, "
                        "or set [pecd] user to an existing one\n", name);
        return -1;
    }
    printf("  system user      %s created (pecd's network-facing processes)\n", name);
    return 0;
}

int init_for_pecd_user(const char *dir, char *scratch)
{
    if (geteuid() != 0)
        return 0;   /* pecd started by this user keeps it: nothing to give */
    struct passwd *pw = getpwnam(PECD_USER);
    if (pw == NULL && (make_system_user(PECD_USER) < 0 || (pw = getpwnam(PECD_USER)) == NULL))
        return -1;
    /* DIR: the user may enter (to reach DIR/data, which pecd gives it) but
     * change nothing; the users file: read by the sessions (AUTH) */
    if (chown(dir, 0, pw->pw_gid) == -1 || chmod(dir, 0750) == -1)
        return init_io_fail("give to the group of " PECD_USER, dir);
    struct stat st;
    if (init_path_join(scratch, PATH_MAX, dir, "users") < 0)
        return -1;
    if (stat(scratch, &st) == 0 && st.st_uid == 0 && (st.st_mode & 077) == 0 &&
        (chown(scratch, 0, pw->pw_gid) == -1 || chmod(scratch, 0640) == -1))
        return init_io_fail("give read access to " PECD_USER " on", scratch);
    return 0;
}

/* ---- pecd.conf ------------------------------------------------------------- */

int init_conf_build(const struct init_opts *o, const char *directory, char **out, size_t *len)
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
            "[pecd]\n"
            "# started as root, pecd runs its network-facing processes as this user; the\n"
            "# keys stay with the signer process (docs/operator-guide.md, Process model)\n"
            "user = pecmail\n"
            "\n"
            "[provider]\n"
            "domain = %s\n"
            "hostname = mx.%s\n"
            "# providerName in the providers' directory (RFC 6109 4.5.3)\n"
            "name = %s\n"
            "# what pecd writes (queue, mail, databases): a directory of its own, given\n"
            "# to [pecd] user; keys and this file stay root's\n"
            "data_dir = data\n"
            "\n"
            "[users]\n"
            "passwd_file = users\n"
            "\n"
            "[tls]\n"
            "# server certificate (then the test CA) and its key, for every listener\n"
            "certificate = tls/cert.pem\n"
            "key = %s\n"
            "\n"
            "[mx]\n"
            "# incoming point: mail from other providers.  STARTTLS is offered and\n"
            "# cleartext accepted too, for ordinary mail (RFC 6109 5.3); PEC over\n"
            "# cleartext: [pec] cleartext_pec (accept, the default, or refuse)\n"
            "listen = 127.0.0.1:%u\n"
            "\n"
            "[submission]\n"
            "# access point: users submit with STARTTLS and AUTH\n"
            "listen = 127.0.0.1:%u\n",
            o->domain, date, o->domain, o->domain, o->name,
            o->tls_key_uri ? o->tls_key_uri : "tls/key.pem", o->smtp, o->submission);
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
            "signing_key = %s\n"
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
            "path = data/evidence.db\n"
            "\n"
            "[outbound]\n"
            "# trust anchors for the TLS certificates of the other providers\n"
            "ca_file = ca.crt\n"
            "\n",
            o->signing_key_uri ? o->signing_key_uri : "pec/sign.key", directory);
    if (o->signing_key_uri || o->tls_key_uri)
        fprintf(f,
                "[pec]\n"
                "# the hardware module holding the keys above, and its user PIN\n"
                "pkcs11_module = %s\n"
                "%s%s\n"
                "\n",
                o->pkcs11_module, o->pkcs11_pin_file[0] ? "pkcs11_pin_file = " : "",
                o->pkcs11_pin_file);
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

int init_conf_check_lines(const char *conf, const char *path)
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
