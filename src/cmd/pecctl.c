/*
 * pecctl.c - administration: users, queue, and (from src/pec) verification
 * and the test PKI.  Argument parsing and dispatch only.
 *
 *   pecctl -c CONF user add ADDRESS [--password-stdin]
 *   pecctl -c CONF user del ADDRESS
 *   pecctl -c CONF user list [--json]
 *   pecctl -c CONF queue [--json] | queue release QID
 *   pecctl -c CONF route list [--json] | add DOMAIN HOPS | del DOMAIN
 *   pecctl help [COMMAND], pecctl COMMAND --help (pecctl_help.c)
 *   pecctl verify [--json] [--trust CAFILE] [--directory FILE.ldif|ldap://...] FILE.eml...
 *   pecctl pki ...
 */
#include "lib/config.h"
#include "lib/lib.h"
#include "queue/queue.h"
#include "smtp/smtp.h"
#include "store/store.h"

#include <errno.h>
#include <limits.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Provided by src/cmd/pecctl_verify.c and pecctl_pki.c when built. */
int pecctl_verify_main(int argc, char **argv) __attribute__((weak));
int pecctl_pki_main(int argc, char **argv) __attribute__((weak));
int pecctl_init_main(int argc, char **argv) __attribute__((weak));
int pecctl_log_main(struct config *cfg, int argc, char **argv) __attribute__((weak));
int pecctl_trace_main(struct config *cfg, int argc, char **argv) __attribute__((weak));
int pecctl_directory_main(struct config *cfg, int argc, char **argv) __attribute__((weak));
int pecctl_report_main(struct config *cfg, int argc, char **argv) __attribute__((weak));

int pecctl_help(FILE *f, const char *cmd);
int pecctl_route_main(struct config *cfg, int argc, char **argv);
int pecctl_domain_main(struct config *cfg, int argc, char **argv);
int pecctl_backup_main(struct config *cfg, int argc, char **argv);
int pecctl_restore_main(const char *conf, int argc, char **argv);

static void usage(FILE *f) { pecctl_help(f, NULL); }

static struct config *load(const char *conf)
{
    char err[1024];
    struct config *cfg = config_load(conf, err, sizeof err);
    if (cfg == NULL)
        fprintf(stderr, "pecctl: configuration error: %s\n", err);
    return cfg;
}

struct user_list {
    bool json;
    size_t n;
};

static void print_user(const char *addr, void *arg)
{
    struct user_list *ul = arg;
    if (ul->json) {
        fputs(ul->n++ ? ",{\"address\":" : "{\"address\":", stdout);
        json_fput(stdout, addr);
        fputc('}', stdout);
    } else {
        printf("%s\n", addr);
    }
}

/* A user's address must be one RCPT TO accepts (RFC 5321 §4.1.2, local part
 * at most 64 octets, §4.5.3.1.1) at one of this provider's domains: else the
 * account could log in but never receive mail. */
static bool address_ok(const struct config *cfg, const char *a, char *why, size_t whylen)
{
    char args[SMTP_PATH_MAX + 8];
    struct smtp_path *p = calloc(1, sizeof *p);
    bool ok = false;
    if (p == NULL || strlen(a) > SMTP_PATH_MAX) {
        snprintf(why, whylen, "longer than %d octets (RFC 5321 §4.5.3.1.3)", SMTP_PATH_MAX);
    } else if (snprintf(args, sizeof args, "TO:<%s>", a),
               smtp_path_parse(args, "TO:", false, p) != SMTP_PATH_OK || p->domain == NULL) {
        size_t l = strcspn(a, "@");
        if (a[l] == '@' && l > 64)
            snprintf(why, whylen, "its local part has %zu octets, more than the 64 of RFC 5321 "
                                  "§4.5.3.1.1", l);
        else
            snprintf(why, whylen, "not a mailbox address (local@domain, RFC 5321 §4.1.2)");
    } else if (strcmp(p->addr, a) != 0 || strpbrk(a, ":/\\\"") != NULL || a[0] == '.') {
        /* ':' separates the fields of the passwd-file, '/' would be a path */
        snprintf(why, whylen, "not a plain mailbox address (no quoted local part, ':', '/' or "
                              "'\\')");
    } else if (!config_is_local_domain(cfg, p->domain)) {
        snprintf(why, whylen, "%s is not one of this provider's domains ([provider] domain, "
                              "local_domains)", p->domain);
    } else {
        ok = true;
    }
    free(p);
    return ok;
}

static int cmd_queue(struct config *cfg, int argc, char **argv)
{
    if (argc == 1 || (argc == 2 && strcmp(argv[1], "--json") == 0))
        return queue_list_ex(cfg->queue_dir, stdout, argc == 2) == 0 ? 0 : 1;
    if (argc == 3 && strcmp(argv[1], "release") == 0) {
        char err[512];
        int r = queue_release(cfg->queue_dir, argv[2], err, sizeof err);
        if (r == -1) {
            fprintf(stderr, "pecctl: %s\n", err);
            return 1;
        }
        printf("%s released from hold: %s\n", argv[2],
               r == 1 ? "pecd tries it now" : "pecd is not running, it tries it at its start");
        return 0;
    }
    pecctl_help(stderr, "queue");
    return 2;
}

/* The password: one line on standard input (at least 8 characters), or a
 * generated one (printed by the caller). */
static int read_password(bool from_stdin, char *pw, size_t pwlen)
{
    if (from_stdin) {
        if (fgets(pw, (int)pwlen, stdin) == NULL) {
            fprintf(stderr, "pecctl: no password on standard input\n");
            return -1;
        }
        pw[strcspn(pw, "\r\n")] = '\0';
        if (strlen(pw) < 8) {
            fprintf(stderr, "pecctl: the password must have at least 8 characters\n");
            return -1;
        }
        return 0;
    }
    unsigned char rnd[12];
    static const char alphabet[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return -1;
    for (size_t i = 0; i < sizeof rnd; i++)
        pw[i] = alphabet[rnd[i] % (sizeof alphabet - 1)];
    pw[sizeof rnd] = '\0';
    return 0;
}

static int user_show(struct config *cfg, const char *addr)
{
    char err[512], key[512];
    struct users *u = users_load(cfg->passwd_file, err, sizeof err);
    if (u == NULL) {
        fprintf(stderr, "pecctl: %s\n", err);
        return 1;
    }
    users_normalise(addr, key, sizeof key);
    struct users_info in;
    int rc = users_info(u, key, &in);
    users_free(u);
    if (rc == -1) {
        fprintf(stderr, "pecctl: no such user: %s\n", key);
        return 1;
    }
    printf("user:      %s\n", key);
    printf("state:     %s\n", in.suspended ? "suspended (no login; mail is delivered)"
                                             : "active");
    printf("password:  %s hash\n", in.scheme);
    uint64_t q = in.has_quota ? in.quota : cfg->delivery_quota;
    if (q == 0)
        printf("quota:     none\n");
    else
        printf("quota:     %llu octets (%s)\n", (unsigned long long)q,
               in.has_quota ? "userdb_quota_rule" : "[delivery] quota");
    const char *at = strrchr(key, '@');
    char dir[PATH_MAX];
    if (cfg->lmtp_host == NULL && at != NULL) {
        char local[256];
        snprintf(local, sizeof local, "%.*s", (int)(at - key), key);
        if (config_mailbox_path(cfg, local, at + 1, dir, sizeof dir) == 0) {
            int64_t used = maildir_usage(dir);
            printf("mailbox:   %s\n", dir);
            if (used >= 0)
                printf("in use:    %lld octets\n", (long long)used);
        }
    } else if (cfg->lmtp_host != NULL) {
        printf("mailbox:   through LMTP (%s)\n", cfg->lmtp_host);
    }
    return 0;
}

/* A users file root has just created is read by pecd's network-facing
 * processes, which run as [pecd] user when pecd starts as root: its group
 * gets read access (the file stays root's). */
static void users_file_for_pecd(const struct config *cfg)
{
    struct stat st;
    struct passwd *pw;
    if (geteuid() != 0 || strcmp(cfg->pecd_user, "root") == 0 ||
        (pw = getpwnam(cfg->pecd_user)) == NULL || stat(cfg->passwd_file, &st) == -1 ||
        st.st_uid != 0 || st.st_gid != 0 || (st.st_mode & 077) != 0)
        return;
    if (chown(cfg->passwd_file, (uid_t)-1, pw->pw_gid) == -1 ||
        chmod(cfg->passwd_file, 0640) == -1)
        fprintf(stderr, "pecctl: %s: cannot make it readable by %s: %s\n", cfg->passwd_file,
                cfg->pecd_user, strerror(errno));
}

static int cmd_user(struct config *cfg, int argc, char **argv)
{
    char err[512];
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        struct user_list ul = {.json = argc == 3 && strcmp(argv[2], "--json") == 0};
        if (argc > 3 || (argc == 3 && !ul.json)) {
            pecctl_help(stderr, "user");
            return 2;
        }
        struct users *u = users_load(cfg->passwd_file, err, sizeof err);
        if (u == NULL) {
            fprintf(stderr, "pecctl: %s\n", err);
            return 1;
        }
        if (ul.json)
            fputc('[', stdout);
        users_each(u, print_user, &ul);
        if (ul.json)
            fputs("]\n", stdout);
        users_free(u);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "add") == 0) {
        const char *addr = argv[2];
        bool from_stdin = argc >= 4 && strcmp(argv[3], "--password-stdin") == 0;
        char why[200];
        if (!address_ok(cfg, addr, why, sizeof why)) {
            fprintf(stderr, "pecctl: '%s' cannot be a user: %s\n", addr, why);
            return 1;
        }
        char canon[SMTP_PATH_MAX + 1];
        users_normalise(addr, canon, sizeof canon);
        addr = canon;
        char pw[512];
        if (read_password(from_stdin, pw, sizeof pw) == -1)
            return 1;
        char hash[256];
        if (users_hash_password(pw, hash, sizeof hash) == -1) {
            fprintf(stderr, "pecctl: cannot hash the password\n");
            return 1;
        }
        if (users_file_add(cfg->passwd_file, addr, hash, err, sizeof err) == -1) {
            fprintf(stderr, "pecctl: %s\n", err);
            return 1;
        }
        users_file_for_pecd(cfg);
        if (from_stdin)
            printf("user %s added\n", addr);
        else
            printf("user %s added; password: %s\n", addr, pw);
        explicit_bzero(pw, sizeof pw);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "passwd") == 0) {
        bool from_stdin = argc >= 4 && strcmp(argv[3], "--password-stdin") == 0;
        char pw[512], hash[256];
        if (read_password(from_stdin, pw, sizeof pw) == -1)
            return 1;
        if (users_hash_password(pw, hash, sizeof hash) == -1) {
            fprintf(stderr, "pecctl: cannot hash the password\n");
            return 1;
        }
        if (users_file_passwd(cfg->passwd_file, argv[2], hash, err, sizeof err) == -1) {
            explicit_bzero(pw, sizeof pw);
            fprintf(stderr, "pecctl: %s\n", err);
            return 1;
        }
        if (from_stdin)
            printf("password of %s changed\n", argv[2]);
        else
            printf("password of %s changed: %s\n", argv[2], pw);
        explicit_bzero(pw, sizeof pw);
        return 0;
    }
    if (argc >= 3 && (strcmp(argv[1], "suspend") == 0 || strcmp(argv[1], "resume") == 0)) {
        bool suspend = strcmp(argv[1], "suspend") == 0;
        if (users_file_suspend(cfg->passwd_file, argv[2], suspend, err, sizeof err) == -1) {
            fprintf(stderr, "pecctl: %s\n", err);
            return 1;
        }
        printf("user %s %s\n", argv[2],
               suspend ? "suspended (cannot log in; mail is still delivered)" : "resumed");
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "show") == 0)
        return user_show(cfg, argv[2]);
    if (argc >= 3 && strcmp(argv[1], "del") == 0) {
        if (users_file_del(cfg->passwd_file, argv[2], err, sizeof err) == -1) {
            fprintf(stderr, "pecctl: %s\n", err);
            return 1;
        }
        printf("user %s removed (the mailbox is kept)\n", argv[2]);
        return 0;
    }
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    const char *conf = "/etc/pecmail/pecd.conf";
    bool conf_given = false;
    int i = 1;
    log_init("pecctl", LOG_LVL_WARN);
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            conf = argv[i + 1];
            conf_given = true;
            i += 2;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("pecctl %s\n", PEC_VERSION);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[i];
    if (strcmp(cmd, "help") == 0) {
        if (i + 1 < argc && pecctl_help(stdout, argv[i + 1]) == -1) {
            fprintf(stderr, "pecctl: unknown command '%s'\n", argv[i + 1]);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc)
            usage(stdout);
        return 0;
    }
    /* COMMAND --help / -h anywhere after the command: that command's help */
    for (int k = i + 1; k < argc; k++) {
        if (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0) {
            if (pecctl_help(stdout, cmd) == -1)
                break;
            return 0;
        }
    }
    if (strcmp(cmd, "restore") == 0)   /* may restore pecd.conf itself */
        return pecctl_restore_main(conf, argc - i, argv + i);
    if (strcmp(cmd, "verify") == 0 || strcmp(cmd, "pki") == 0 || strcmp(cmd, "init") == 0) {
        int (*fn)(int, char **) = strcmp(cmd, "verify") == 0 ? pecctl_verify_main
                                  : strcmp(cmd, "pki") == 0  ? pecctl_pki_main
                                                             : pecctl_init_main;
        if (fn == NULL) {
            fprintf(stderr, "pecctl: '%s' is not built in this binary\n", cmd);
            return 2;
        }
        return fn(argc - i, argv + i);
    }
    if (strcmp(cmd, "user") == 0 || strcmp(cmd, "queue") == 0 || strcmp(cmd, "log") == 0 ||
        strcmp(cmd, "trace") == 0 || strcmp(cmd, "directory") == 0 ||
        strcmp(cmd, "report") == 0 || strcmp(cmd, "route") == 0 || strcmp(cmd, "domain") == 0 ||
        strcmp(cmd, "backup") == 0) {
        int (*fn)(struct config *, int, char **) = strcmp(cmd, "log") == 0     ? pecctl_log_main
                                                   : strcmp(cmd, "trace") == 0 ? pecctl_trace_main
                                                   : strcmp(cmd, "report") == 0
                                                       ? pecctl_report_main
                                                   : strcmp(cmd, "directory") == 0
                                                       ? pecctl_directory_main
                                                   : strcmp(cmd, "route") == 0
                                                       ? pecctl_route_main
                                                   : strcmp(cmd, "domain") == 0
                                                       ? pecctl_domain_main
                                                   : strcmp(cmd, "backup") == 0
                                                       ? pecctl_backup_main
                                                       : NULL;
        if (strcmp(cmd, "user") != 0 && strcmp(cmd, "queue") != 0 && fn == NULL) {
            fprintf(stderr, "pecctl: '%s' is not built in this binary\n", cmd);
            return 2;
        }
        /* pecctl log verify FILE needs no pecd.conf (an auditor's host) */
        if (fn == pecctl_log_main && !conf_given && access(conf, R_OK) != 0 && argc - i >= 3 &&
            strcmp(argv[i + 1], "verify") == 0)
            return fn(NULL, argc - i, argv + i);
        struct config *cfg = load(conf);
        if (cfg == NULL)
            return 1;
        int r;
        if (fn != NULL)
            r = fn(cfg, argc - i, argv + i);
        else if (strcmp(cmd, "user") == 0)
            r = cmd_user(cfg, argc - i, argv + i);
        else
            r = cmd_queue(cfg, argc - i, argv + i);
        config_free(cfg);
        return r;
    }
    fprintf(stderr, "pecctl: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
