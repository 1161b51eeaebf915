/*
 * pecd_privsep.c - pecd's process model (issue 20): what pecd does between
 * reading its configuration and its first network byte.
 *
 *   pecd (root) ──fork──▶ keeper (root; no key, no socket; restarts the signer)
 *        │                   └──fork──▶ signer (root; the keys or the module
 *        │                              session; no network socket)
 *        ├─ binds the listeners (ports below 1024 need root)
 *        ├─ gives [pecd] user the data it writes, checks it can reach no key
 *        └─ drops to [pecd] user (setgroups, setgid, setuid): from here on
 *           it reads the network (SMTP sessions, MIME/PEC checks, milter,
 *           clamd, LDAP, Dovecot, the outbound SMTP client) and asks the
 *           signer for every signature and TLS private-key operation.
 *
 * A start as another user than root keeps that user for everything (tests,
 * development; logged).  `[pecd] user = root` keeps root, with a warning.
 * Started as root, pecd refuses to run when the unprivileged user could
 * read a key or the PIN, or change the configuration, a key, the module or
 * a directory above them: that user is what an attacker gets from a memory
 * bug in a parser.  docs/operator-guide.md ("Process model").
 *
 * Interface: pecd_privsep.h.  Kept apart from pecd.c so that the process
 * model and the daemon's wiring change independently.
 */
#include "pecd_privsep.h"
#include "keys/keys.h"
#include "pec/pec_dir.h"
#include "lib/domains.h"
#include "lib/lib.h"
#include "smtp/smtp.h"
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <glib.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- who may touch what ------------------------------------------------------------ */

struct who {
    uid_t uid;
    gid_t gid;
    const char *name;
};

static bool may_write(const struct stat *st, const struct who *w)
{
    return st->st_uid == w->uid || ((st->st_mode & S_IWGRP) && st->st_gid == w->gid) ||
           ((st->st_mode & S_IWOTH) && !(S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX)));
}

static bool may_read(const struct stat *st, const struct who *w)
{
    return st->st_uid == w->uid || ((st->st_mode & S_IRGRP) && st->st_gid == w->gid) ||
           (st->st_mode & S_IROTH);
}

/* A file the network-facing user must not change (nor any directory above
 * it), nor read when secret. */
static int check_protected(const char *setting, const char *path, bool secret,
                           const struct who *w, char *err, size_t errlen)
{
    char real[PATH_MAX];
    struct stat st;
    if (path == NULL || pkcs11_uri_is(path))
        return 0;
    if (realpath(path, real) == NULL || stat(real, &st) == -1) {
        snprintf(err, errlen, "%s %s: %s", setting, path, strerror(errno));
        return -1;
    }
    if (may_write(&st, w) || (secret && may_read(&st, w))) {
        snprintf(err, errlen, "%s %s (owner uid %u, group gid %u, mode %04o) can be %s by %s, "
                 "the user of the network-facing processes ([pecd] user): chown root:root %s "
                 "&& chmod %s %s", setting, path, (unsigned)st.st_uid, (unsigned)st.st_gid,
                 (unsigned)(st.st_mode & 07777), secret && may_read(&st, w) ? "read" : "changed",
                 w->name, path, secret ? "600" : "644", path);
        return -1;
    }
    /* every directory above it: renaming or replacing counts as changing */
    char dir[PATH_MAX];
    str_copy(dir, real, sizeof dir);
    for (char *slash = strrchr(dir, '/'); slash != NULL; slash = strrchr(dir, '/')) {
        *slash = '\0';
        const char *d = dir[0] ? dir : "/";
        if (stat(d, &st) == -1)
            break;
        if (may_write(&st, w)) {
            snprintf(err, errlen, "%s %s: the directory %s can be changed by %s, the user of "
                     "the network-facing processes ([pecd] user), who could replace the file: "
                     "keep keys and configuration in directories of root's (and give [provider] "
                     "data_dir a directory of its own)", setting, path, d, w->name);
            return -1;
        }
        if (d[1] == '\0')
            break;
    }
    return 0;
}

static int check_all_protected(const struct config *cfg, const struct who *w, char *err,
                               size_t errlen)
{
    const struct {
        const char *setting, *path;
        bool secret;
    } files[] = {
        {"the configuration", cfg->path, false},
        {"[tls] key", cfg->tls_key, true},
        {"[tls] certificate", cfg->tls_cert, false},
        {"[pec] signing_key", cfg->pec ? cfg->pec_signing_key : NULL, true},
        {"[pec] signing_certificate", cfg->pec ? cfg->pec_signing_cert : NULL, false},
        {"[pec] pkcs11_pin_file", cfg->pec_pkcs11_pin_file, true},
        {"[pec] pkcs11_module", cfg->pec_pkcs11_module, false},
        {"[pec] directory_client_key", cfg->pec ? cfg->pec_dir_client_key : NULL, true},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (check_protected(files[i].setting, files[i].path, files[i].secret, w, err, errlen))
            return -1;
    /* the local domains' own TLS keys (local_domains_file tls_key=) */
    size_t n;
    const struct domain **all = domains_sorted(cfg->domains, &n);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char setting[300];
        snprintf(setting, sizeof setting, "tls_key of %s", all[i]->name);
        if (all[i]->tls_key != NULL &&
            check_protected(setting, all[i]->tls_key, true, w, err, errlen))
            rc = -1;
    }
    g_free(all);
    return rc;
}

/* ---- the data the network-facing user writes ---------------------------------------- */

/* A directory of pecd's data, made if missing (root's for now; parents
 * 0755: nothing secret in them).  A missing one whose parent w owns
 * already is left for pecd to make once it runs as w (root without
 * CAP_DAC_OVERRIDE, as the systemd unit has it, may not write there). */
static int make_dir(const char *setting, const char *dir, const struct who *w, char *err,
                    size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "%s %s is not a directory", setting, dir);
            return -1;
        }
        return 0;
    }
    char parent[PATH_MAX];
    str_copy(parent, dir, sizeof parent);
    char *slash = strrchr(parent, '/');
    if (slash != NULL && slash != parent) {
        *slash = '\0';
        if (stat(parent, &st) == 0 && st.st_uid == w->uid)
            return 0;
        fs_mkdirs(parent, 0755);
    }
    if (mkdir(dir, 0750) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "%s %s: %s", setting, dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Gives w a directory root has (an instance run as root before, or just
 * made), with what is in it when deep.  Called deepest first: once a parent
 * is w's, root without CAP_DAC_OVERRIDE cannot reach below it. */
static int own_dir(const char *setting, const char *dir, bool deep, const struct who *w,
                   char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) == -1)
        return 0;               /* left for pecd to make as w */
    /* below it, through descriptors: w may own directories there already,
     * and w is what an attacker of a parser gets (fs_give_tree) */
    if (deep && fs_give_tree(dir, 0, w->uid, w->gid) > 0)
        log_warn("%s %s: some entries below it could not be given to %s", setting, dir,
                 w->name);
    if (st.st_uid == 0 && w->uid != 0) {
        if (chown(dir, w->uid, w->gid) == -1) {
            snprintf(err, errlen, "%s %s: cannot give it to %s: %s", setting, dir, w->name,
                     strerror(errno));
            return -1;
        }
        log_info("%s %s given to %s ([pecd] user)", setting, dir, w->name);
    }
    return 0;
}

static void own_file(const char *path, const struct who *w)
{
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0 &&
        lchown(path, w->uid, w->gid) == -1)
        log_warn("cannot give %s to %s: %s", path, w->name, strerror(errno));
}

/* Whether dir is path or a directory above it. */
static bool holds(const char *dir, const char *path)
{
    char d[PATH_MAX], p[PATH_MAX];
    if (path == NULL || pkcs11_uri_is(path) || realpath(dir, d) == NULL ||
        realpath(path, p) == NULL)
        return false;
    size_t n = strlen(d);
    return strcmp(d, p) == 0 || (strncmp(d, p, n) == 0 && (p[n] == '/' || n == 1));
}

/* The mail tree: the part of the Maildir template before its first field. */
static bool mail_root(const struct config *cfg, char *out, size_t size)
{
    if (cfg->lmtp_host != NULL || cfg->mailbox == NULL)
        return false;
    const char *pct = strchr(cfg->mailbox, '%');
    size_t n = pct ? (size_t)(pct - cfg->mailbox) : strlen(cfg->mailbox);
    while (n > 1 && cfg->mailbox[n - 1] == '/')
        n--;
    if (n == 0 || n >= size)
        return false;
    memcpy(out, cfg->mailbox, n);
    out[n] = '\0';
    return true;
}

static int prepare_data(const struct config *cfg, const struct who *w, char *err, size_t errlen)
{
    char mail[PATH_MAX], cache[PATH_MAX], lmtp[PATH_MAX], evdir[PATH_MAX];
    snprintf(cache, sizeof cache, "%s/directory", cfg->data_dir);
    snprintf(lmtp, sizeof lmtp, "%s/lmtp-done", cfg->data_dir);
    str_copy(evdir, cfg->evidence_path ? cfg->evidence_path : cfg->data_dir, sizeof evdir);
    char *slash = strrchr(evdir, '/');
    if (slash != NULL && slash != evdir)
        *slash = '\0';
    bool has_mail = mail_root(cfg, mail, sizeof mail);
    const struct {
        const char *setting, *dir;
        bool deep;
    } dirs[] = {
        {"[provider] data_dir", cfg->data_dir, false},
        {"[queue] directory", cfg->queue_dir, true},
        {"[evidence] path: the directory", evdir, false},
        {"[delivery] mailbox: the mail directory", has_mail ? mail : NULL, false},
        {"[antivirus] quarantine", cfg->av_quarantine, true},
        {"the directory cache", cfg->pec ? cache : NULL, true},
        {"the LMTP record", cfg->lmtp_host ? lmtp : NULL, true},
    };
    const char *protect[] = {cfg->path, cfg->tls_key, cfg->tls_cert,
                             cfg->pec ? cfg->pec_signing_key : NULL,
                             cfg->pec ? cfg->pec_signing_cert : NULL, cfg->pec_pkcs11_pin_file,
                             cfg->pec_pkcs11_module};
    size_t ndirs = sizeof dirs / sizeof dirs[0];
    for (size_t i = 0; i < ndirs; i++) {
        if (dirs[i].dir == NULL)
            continue;
        for (size_t k = 0; k < sizeof protect / sizeof protect[0]; k++) {
            if (protect[k] != NULL && access(dirs[i].dir, F_OK) == 0 &&
                holds(dirs[i].dir, protect[k])) {
                snprintf(err, errlen, "%s %s holds %s: pecd would give it to %s ([pecd] user), "
                         "who could then replace that file; give the data a directory of its "
                         "own ([provider] data_dir = data, as pecctl init writes)",
                         dirs[i].setting, dirs[i].dir, protect[k], w->name);
                return -1;
            }
        }
    }
    for (size_t i = 0; i < ndirs; i++)
        if (dirs[i].dir != NULL && make_dir(dirs[i].setting, dirs[i].dir, w, err, errlen) == -1)
            return -1;
    /* the databases, before their directory becomes w's */
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/tracking.db%s", cfg->data_dir, sfx[i]);
        own_file(p, w);
        if (cfg->evidence_path != NULL) {
            snprintf(p, sizeof p, "%s%s", cfg->evidence_path, sfx[i]);
            own_file(p, w);
        }
    }
    /* deepest first */
    bool done[sizeof dirs / sizeof dirs[0]] = {false};
    for (size_t round = 0; round < ndirs; round++) {
        size_t best = ndirs;
        for (size_t i = 0; i < ndirs; i++)
            if (dirs[i].dir != NULL && !done[i] &&
                (best == ndirs || strlen(dirs[i].dir) > strlen(dirs[best].dir)))
                best = i;
        if (best == ndirs)
            break;
        done[best] = true;
        if (own_dir(dirs[best].setting, dirs[best].dir, dirs[best].deep, w, err, errlen) == -1)
            return -1;
    }
    /* the users file: read by the sessions (AUTH), written by pecctl only */
    struct stat st;
    if (cfg->dovecot_auth == NULL && cfg->passwd_file != NULL &&
        stat(cfg->passwd_file, &st) == 0 && !may_read(&st, w)) {
        if (chown(cfg->passwd_file, (uid_t)-1, w->gid) == -1 ||
            chmod(cfg->passwd_file, (st.st_mode & 07777) | S_IRGRP) == -1) {
            snprintf(err, errlen, "[users] passwd_file %s: cannot make it readable by %s: %s",
                     cfg->passwd_file, w->name, strerror(errno));
            return -1;
        }
        log_info("[users] passwd_file %s made readable by the group of %s", cfg->passwd_file,
                 w->name);
    }
    return 0;
}

/* After the drop: what the network-facing user must reach, with a reason
 * that names the path when it cannot. */
static int check_reach(const struct config *cfg, const struct who *w, char *err, size_t errlen)
{
    char mail[PATH_MAX];
    const struct {
        const char *what, *path;
        int mode;
    } need[] = {
        {"[provider] data_dir", cfg->data_dir, W_OK | X_OK},
        {"[queue] directory", cfg->queue_dir, W_OK | X_OK},
        {"[delivery] mailbox", mail_root(cfg, mail, sizeof mail) ? mail : NULL, W_OK | X_OK},
        {"[users] passwd_file", cfg->dovecot_auth == NULL ? cfg->passwd_file : NULL, R_OK},
        /* read by the network-facing process itself: the LDAP bind, the download's
         * certificate (public), the trust anchors, the directory file */
        {"[pec] directory_password_file", cfg->pec ? cfg->pec_dir_password_file : NULL, R_OK},
        {"[pec] directory_client_cert", cfg->pec ? cfg->pec_dir_client_cert : NULL, R_OK},
        {"[pec] trust", cfg->pec ? cfg->pec_trust : NULL, R_OK},
        /* every (re)connection to the shared state reads it (pg.c) */
        {"[state] password_file", cfg->state_database ? cfg->state_password_file : NULL, R_OK},
    };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        if (need[i].path != NULL && access(need[i].path, need[i].mode) == -1 &&
            (errno != ENOENT || need[i].mode == (W_OK | X_OK) ||
             strcmp(need[i].what, "[users] passwd_file") != 0)) {
            snprintf(err, errlen, "%s %s: %s, as %s ([pecd] user): is a directory above it "
                     "closed to that user?", need[i].what, need[i].path, strerror(errno),
                     w->name);
            return -1;
        }
    }
    return 0;
}

/* ---- the user ------------------------------------------------------------------------ */

/* The unprivileged user of a start as root: 1 with *w filled, 0 when the
 * process keeps its user (not root, or [pecd] user = root), -1 on error. */
static int resolve_user(const struct config *cfg, struct who *w, char *err, size_t errlen)
{
    if (geteuid() != 0 || strcmp(cfg->pecd_user, "root") == 0)
        return 0;
    errno = 0;
    struct passwd *pw = getpwnam(cfg->pecd_user);
    if (pw == NULL) {
        snprintf(err, errlen, "[pecd] user %s: no such user on this host: create it "
                 "(useradd --system --user-group --home-dir /nonexistent --shell "
                 "/usr/sbin/nologin %s; scripts/install-deps and pecctl init do), or name "
                 "another in %s", cfg->pecd_user, cfg->pecd_user, cfg->path);
        return -1;
    }
    if (pw->pw_uid == 0) {
        snprintf(err, errlen, "[pecd] user %s has uid 0: name an unprivileged user",
                 cfg->pecd_user);
        return -1;
    }
    static char name[64];
    str_copy(name, pw->pw_name, sizeof name);
    *w = (struct who){.uid = pw->pw_uid, .gid = pw->pw_gid, .name = name};
    return 1;
}

static int drop(const struct who *w, char *err, size_t errlen)
{
    if (setgroups(1, &w->gid) == -1 || setgid(w->gid) == -1 || setuid(w->uid) == -1) {
        snprintf(err, errlen, "[pecd] user %s: cannot change to uid %u gid %u: %s", w->name,
                 (unsigned)w->uid, (unsigned)w->gid, strerror(errno));
        return -1;
    }
    if (setuid(0) != -1 || geteuid() == 0) {
        snprintf(err, errlen, "[pecd] user %s: root could be regained after the change",
                 w->name);
        return -1;
    }
    /* nothing pecd runs from here may gain privileges (set-uid programs) */
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    return 0;
}

/* ---- the interface ------------------------------------------------------------------ */

static bool has_keys(const struct config *cfg)
{
    return cfg->pec || (cfg->tls_cert != NULL && cfg->tls_key != NULL);
}

int pecd_check_keys(const struct config *cfg, char *err, size_t errlen)
{
    struct who w;
    int r = resolve_user(cfg, &w, err, errlen);
    if (r == -1 || (r == 1 && check_all_protected(cfg, &w, err, errlen) == -1))
        return -1;
    struct keys_hsm *hsm = NULL;
    int rc = 0;
    if (cfg->pec) {
        pec_signer *s = keys_load_pec_signer(cfg, &hsm, err, errlen);
        rc = s ? 0 : -1;
        pec_signer_free(s);
    }
    if (rc == 0 && cfg->pec && cfg->pec_dir_client_cert != NULL &&
        cfg->pec_dir_client_key != NULL) {
        EVP_PKEY *key;
        rc = keys_load_dir_client(cfg, &hsm, &key, err, errlen);
        EVP_PKEY_free(key);
    }
    if (rc == 0 && cfg->tls_cert != NULL && cfg->tls_key != NULL) {
        EVP_PKEY *key;
        char *chain;
        size_t len;
        rc = keys_load_tls(cfg, &hsm, &key, &chain, &len, err, errlen);
        if (rc == 0) {
            EVP_PKEY_free(key);
            free(chain);
        }
    }
    size_t n;
    const struct domain **all = domains_sorted(cfg->domains, &n);
    for (size_t i = 0; i < n && rc == 0; i++) {
        EVP_PKEY *key = NULL;
        if (all[i]->tls_key != NULL &&
            (rc = keys_load_tls_domain(cfg, all[i], &hsm, &key, err, errlen)) == 0)
            EVP_PKEY_free(key);
    }
    g_free(all);
    keys_hsm_close(hsm);
    return rc;
}

/* The same check on every configuration the signer reads again: the user
 * resolved at start (the signer does not look users up). */
static struct who reload_who;

static int reload_check(const struct config *cfg, char *err, size_t errlen)
{
    return check_all_protected(cfg, &reload_who, err, errlen);
}

int pecd_privsep_start(const struct config *cfg, struct pecd_privsep *ps, char *err,
                       size_t errlen)
{
    memset(ps, 0, sizeof *ps);
    struct who w;
    int r = resolve_user(cfg, &w, err, errlen);
    if (r == -1 || (r == 1 && check_all_protected(cfg, &w, err, errlen) == -1))
        return -1;
    if (r == 1) {
        reload_who = w;
        keys_set_config_check(reload_check);
    }
    /* first: the keeper must inherit nothing but the configuration */
    if (has_keys(cfg) && (ps->keys = keys_start(cfg, err, errlen)) == NULL)
        return -1;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        if (smtp_listen_bind(&cfg->listeners[i], ps->listen_fds[i], &ps->nfds[i], err,
                             errlen) == -1)
            return -1;
    }
    if (r == 1) {
        if (prepare_data(cfg, &w, err, errlen) == -1 || drop(&w, err, errlen) == -1 ||
            check_reach(cfg, &w, err, errlen) == -1)
            return -1;
        ps->dropped = true;
        log_info("privilege separation: the network-facing process runs as %s (uid %u); the "
                 "keys are in the signer process (pid %d)", w.name, (unsigned)w.uid,
                 ps->keys ? keys_client_signer_pid(ps->keys) : 0);
    } else if (geteuid() == 0) {
        log_warn("[pecd] user = root: the network-facing processes run as root and could "
                 "read every key file; only the signer process (pid %d) holds the keys",
                 ps->keys ? keys_client_signer_pid(ps->keys) : 0);
    } else {
        log_info("started as uid %u, not root: no change of user ([pecd] user applies to a "
                 "start as root); the keys are in the signer process (pid %d)",
                 (unsigned)geteuid(), ps->keys ? keys_client_signer_pid(ps->keys) : 0);
    }
    if (ps->keys != NULL && keys_client_run(ps->keys) == -1) {
        snprintf(err, errlen, "cannot start the signer's thread");
        return -1;
    }
    return 0;
}

/* ---- the local domains' certificates (SNI) ----------------------------------------- */

struct sni_make {
    struct pecd_privsep *ps;
    const struct config *cfg;
};

/* The signer holds the key of pub: a signature it makes verifies with pub
 * (a domain's key file that changed since the signer read it fails here,
 * at start or reload, not in a client's handshake). */
static int probe(EVP_PKEY *proxy, EVP_PKEY *pub, char *err, size_t errlen)
{
    unsigned char md[32] = "pecd: does the signer hold it?", sig[1024];
    size_t siglen = sizeof sig;
    EVP_PKEY_CTX *s = EVP_PKEY_CTX_new(proxy, NULL), *v = EVP_PKEY_CTX_new(pub, NULL);
    bool rsa = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA;
    int ok = s != NULL && v != NULL && EVP_PKEY_sign_init(s) == 1 &&
             (!rsa || EVP_PKEY_CTX_set_rsa_padding(s, RSA_PKCS1_PADDING) == 1) &&
             EVP_PKEY_CTX_set_signature_md(s, EVP_sha256()) == 1 &&
             EVP_PKEY_sign(s, sig, &siglen, md, sizeof md) == 1 && EVP_PKEY_verify_init(v) == 1 &&
             (!rsa || EVP_PKEY_CTX_set_rsa_padding(v, RSA_PKCS1_PADDING) == 1) &&
             EVP_PKEY_CTX_set_signature_md(v, EVP_sha256()) == 1 &&
             EVP_PKEY_verify(v, sig, siglen, md, sizeof md) == 1;
    EVP_PKEY_CTX_free(s);
    EVP_PKEY_CTX_free(v);
    ERR_clear_error();
    if (!ok)
        snprintf(err, errlen, "the signer does not hold the key of this certificate (is the "
                              "key file the one the signer read? reload)");
    return ok ? 0 : -1;
}

/* smtp_tls_sni's maker: the certificate file (public: pecd reads it), the
 * key in the signer, named by its public key. */
static SSL_CTX *sni_ctx(void *arg, const char *cert, const char *key, char *err, size_t errlen)
{
    (void)key;
    struct sni_make *m = arg;
    char *chain = NULL;
    size_t len = 0;
    if (fs_read_file(cert, &chain, &len, 1 << 20) == -1) {
        snprintf(err, errlen, "tls_certificate %s: %s", cert, strerror(errno));
        return NULL;
    }
    BIO *b = BIO_new_mem_buf(chain, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    EVP_PKEY *pub = x ? X509_get_pubkey(x) : NULL, *proxy = NULL;
    X509_free(x);
    SSL_CTX *ctx = NULL;
    unsigned char id[32];
    if (pub == NULL || keys_public_id(pub, id) == -1)
        snprintf(err, errlen, "tls_certificate %s: no PEM certificate in it", cert);
    else if ((proxy = keys_tls_proxy_new(m->ps->keys, pub, id, err, errlen)) != NULL &&
             probe(proxy, pub, err, errlen) == 0)
        ctx = smtp_tls_server_ctx_key(chain, len, proxy, m->cfg->tls_min_version,
                                      m->cfg->tls_ciphers, err, errlen);
    ERR_clear_error();
    EVP_PKEY_free(proxy);
    EVP_PKEY_free(pub);
    free(chain);
    return ctx;
}

SSL_CTX *pecd_privsep_tls(struct pecd_privsep *ps, const struct config *cfg, char *err,
                          size_t errlen)
{
    char *chain;
    size_t len;
    EVP_PKEY *key;
    if (ps->keys == NULL) {
        snprintf(err, errlen, "no TLS key configured");
        return NULL;
    }
    if (keys_client_tls(ps->keys, &chain, &len, &key, err, errlen) == -1)
        return NULL;
    SSL_CTX *ctx = smtp_tls_server_ctx_key(chain, len, key, cfg->tls_min_version,
                                           cfg->tls_ciphers, err, errlen);
    EVP_PKEY_free(key);
    free(chain);
    struct sni_make m = {ps, cfg};
    if (ctx != NULL && smtp_tls_sni(ctx, cfg->domains, sni_ctx, &m, err, errlen) == -1) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

int pecd_privsep_dir_client_key(struct pecd_privsep *ps, const struct config *cfg, char *err,
                                size_t errlen)
{
    if (ps->keys == NULL || cfg->pec_dir_client_cert == NULL || cfg->pec_dir_client_key == NULL)
        return 0;
    EVP_PKEY *key = keys_client_dir_key(ps->keys, cfg->pec_dir_client_cert, err, errlen);
    if (key == NULL)
        return -1;
    pec_dir_use_client_key(key);
    EVP_PKEY_free(key);
    return 0;
}

void pecd_privsep_stop(struct pecd_privsep *ps)
{
    keys_client_stop(ps->keys);
}
