/*
 * pecctl_state.c - several nodes of one provider (docs/scaling.md):
 *
 *   pecctl -c CONF state init | migrate   the schema of [state] database
 *   pecctl -c CONF nodes [--json]         the nodes the database knows
 *   pecctl node add NEWDIR --from DIR --node NAME --smtp HOST:PORT
 *                  --submission HOST:PORT [--submissions HOST:PORT] [--force]
 *
 * node add writes NEWDIR/pecd.conf from DIR/pecd.conf: the same provider
 * (identity, keys and certificates, directory, users, mailboxes, [state]),
 * referenced by absolute paths so both nodes use the very same files, with
 * the node's own name, listeners and data directory (its queue and
 * quarantine live there).  The copy keeps DIR's comments and order; the
 * result is read back with config_load before it is kept.
 *
 * Interface: pecctl_state_main, pecctl_nodes_main (argv[0] the command),
 * pecctl_node_main (argv[0] == "node").  Exit: 0 ok, 1 failed, 2 usage.
 */
#include "lib/config.h"
#include "lib/lib.h"
#include "store/state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int pecctl_help(FILE *f, const char *cmd);
int pecctl_state_main(struct config *cfg, int argc, char **argv);
int pecctl_nodes_main(struct config *cfg, int argc, char **argv);
int pecctl_node_main(int argc, char **argv);

static int need_shared(const struct config *cfg)
{
    if (state_shared(cfg))
        return 0;
    fprintf(stderr, "pecctl: %s has no [state] database = postgresql://...: its state is the "
                    "embedded SQLite, with nothing to create or migrate\n", cfg->path);
    return -1;
}

int pecctl_state_main(struct config *cfg, int argc, char **argv)
{
    char err[1024];
    if (argc != 2 || (strcmp(argv[1], "init") != 0 && strcmp(argv[1], "migrate") != 0)) {
        pecctl_help(stderr, "state");
        return 2;
    }
    if (need_shared(cfg) == -1)
        return 1;
    if (strcmp(argv[1], "init") == 0) {
        if (state_init(err, sizeof err) == -1) {
            fprintf(stderr, "pecctl state init: %s\n", err);
            return 1;
        }
        printf("%s: pecmail schema version %d created\n", state_shown(cfg),
               STATE_SCHEMA_VERSION);
        return 0;
    }
    int from = 0;
    if (state_migrate(&from, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl state migrate: %s\n", err);
        return 1;
    }
    if (from == STATE_SCHEMA_VERSION)
        printf("%s: schema version %d already, nothing to migrate\n", state_shown(cfg), from);
    else
        printf("%s: schema migrated from version %d to %d\n", state_shown(cfg), from,
               STATE_SCHEMA_VERSION);
    return 0;
}

/* ---- nodes ------------------------------------------------------------------------- */

/* Files in DIR/SUB (-1: cannot read). */
static long count_files(const char *dir, const char *sub)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, sub);
    DIR *d = opendir(p);
    if (d == NULL)
        return errno == ENOENT ? 0 : -1;
    long n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void age_text(double s, char *out, size_t outlen)
{
    if (s < 0)
        snprintf(out, outlen, "never");
    else if (s < 120)
        snprintf(out, outlen, "%.0fs ago", s);
    else if (s < 7200)
        snprintf(out, outlen, "%.0fm ago", s / 60);
    else
        snprintf(out, outlen, "%.1fh ago", s / 3600);
}

int pecctl_nodes_main(struct config *cfg, int argc, char **argv)
{
    bool json = argc == 2 && strcmp(argv[1], "--json") == 0;
    if (argc > 2 || (argc == 2 && !json)) {
        pecctl_help(stderr, "nodes");
        return 2;
    }
    if (need_shared(cfg) == -1)
        return 1;
    char err[1024];
    if (state_check(cfg->path, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl nodes: %s\n", err);
        return 1;
    }
    struct state_node *v = NULL;
    size_t n = 0;
    if (state_nodes_list(&v, &n, err, sizeof err) == -1) {
        fprintf(stderr, "pecctl nodes: %s\n", err);
        return 1;
    }
    if (json)
        fputc('[', stdout);
    else if (n == 0)
        printf("no node has joined yet (a node registers at its first start)\n");
    else
        printf("%-16s %3s %-6s %-10s %-16s %-7s %5s %8s %6s %5s\n", "NODE", "NUM", "STATE",
               "HEARTBEAT", "SPOOL HELD BY", "EPOCH", "LEASE", "PID", "QUEUED", "HELD");
    for (size_t i = 0; i < n; i++) {
        const struct state_node *x = &v[i];
        long queued = count_files(x->queue_dir, "queue"), held = count_files(x->queue_dir, "hold");
        const char *state = x->alive ? (x->want_back ? "waiting" : "alive") : "dead";
        if (json) {
            fputs(i ? ",{\"node\":" : "{\"node\":", stdout);
            json_fput(stdout, x->name);
            printf(",\"number\":%d,\"state\":\"%s\",\"alive\":%s,\"heartbeat\":%lld,"
                   "\"heartbeat_age\":%.1f,\"host\":",
                   x->num, state, x->alive ? "true" : "false", (long long)x->heartbeat,
                   x->heartbeat_age);
            json_fput(stdout, x->host);
            printf(",\"pid\":%ld,\"queue_dir\":", x->pid);
            json_fput(stdout, x->queue_dir);
            fputs(",\"spool_owner\":", stdout);
            json_fput(stdout, x->owner[0] ? x->owner : NULL);
            printf(",\"epoch\":%lld,\"lease_left\":%.1f,\"queued\":%ld,\"held\":%ld}",
                   x->epoch, x->lease_left < -1e8 ? -1.0 : x->lease_left, queued, held);
            continue;
        }
        char age[32], lease[16], q[16], h[16];
        age_text(x->heartbeat_age, age, sizeof age);
        if (x->owner[0] == '\0' || x->lease_left < -1e8)
            snprintf(lease, sizeof lease, "-");
        else
            snprintf(lease, sizeof lease, "%.0fs", x->lease_left > 0 ? x->lease_left : 0);
        snprintf(q, sizeof q, queued < 0 ? "?" : "%ld", queued);
        snprintf(h, sizeof h, held < 0 ? "?" : "%ld", held);
        printf("%-16s %3d %-6s %-10s %-16s %-7lld %5s %8ld %6s %5s\n", x->name, x->num, state,
               age, x->owner[0] ? x->owner : "-", x->epoch, lease, x->pid, q, h);
    }
    if (json)
        fputs("]\n", stdout);
    g_free(v);
    return 0;
}

/* ---- node add ------------------------------------------------------------------------ */

struct node_opts {
    const char *newdir, *from, *node, *smtp, *submission, *submissions;
    bool force;
};

static bool hostport_ok(const char *v)
{
    const char *colon = v ? strrchr(v, ':') : NULL;
    return colon != NULL && colon != v && colon[1] != '\0' &&
           strspn(colon + 1, "0123456789") == strlen(colon + 1) && strlen(colon + 1) <= 5 &&
           atoi(colon + 1) > 0 && atoi(colon + 1) < 65536 && strpbrk(v, " \t,;#") == NULL;
}

/* A relative value naming a file or directory next to DIR/pecd.conf, made
 * absolute (so the new node uses the very same file); NULL otherwise. */
static char *absolute_of(const char *dir, const char *value)
{
    const char *v = value, *prefix = "";
    if (strncmp(v, "maildir:", 8) == 0) {
        prefix = "maildir:";
        v += 8;
    } else if (strncmp(v, "dovecot:", 8) == 0) {
        prefix = "dovecot:";
        v += 8;
    } else if (strncmp(v, "file:", 5) == 0) {
        prefix = "file:";
        v += 5;
    }
    if (v[0] == '\0' || v[0] == '/' || strstr(v, "://") != NULL)
        return NULL;
    /* a template (%d/%n) names its fixed part */
    char *fixed = g_strdup(v);
    char *pct = strchr(fixed, '%');
    if (pct != NULL)
        *pct = '\0';
    char *probe = g_build_filename(dir, fixed[0] ? fixed : ".", NULL);
    bool exists = access(probe, F_OK) == 0 || pct != NULL;
    g_free(probe);
    g_free(fixed);
    if (!exists)
        return NULL;
    char *abs = g_build_filename(dir, v, NULL);
    char *out = g_strconcat(prefix, abs, NULL);
    g_free(abs);
    return out;
}

/* Is line a section header?  Its name into sec. */
static bool header_of(const char *line, char *sec, size_t seclen)
{
    const char *p = line + strspn(line, " \t");
    if (*p != '[')
        return false;
    size_t n = strcspn(p + 1, "]");
    if (p[1 + n] != ']' || n >= seclen)
        return false;
    memcpy(sec, p + 1, n);
    sec[n] = '\0';
    return true;
}

/* "key = value" into key and value (trimmed). */
static bool key_value(const char *line, char *key, size_t keylen, char *value, size_t valuelen)
{
    const char *p = line + strspn(line, " \t");
    if (*p == ';' || *p == '#' || *p == '\0' || *p == '[')
        return false;
    size_t n = strcspn(p, "=:");
    if (p[n] == '\0' || n == 0 || n >= keylen)
        return false;
    memcpy(key, p, n);
    key[n] = '\0';
    {
        char *t_ = str_trim(key);
        memmove(key, t_, strlen(t_) + 1);
    }
    str_copy(value, p + n + 1, valuelen);
    {
        char *t_ = str_trim(value);
        memmove(value, t_, strlen(t_) + 1);
    }
    return true;
}

/* What the new node's pecd.conf sets itself: [section] key = value (NULL:
 * the line is dropped). */
struct override {
    const char *section, *key;
    const char *value;
    bool done;
};

static GString *node_conf(const char *text, const char *dir, struct override *ov, size_t nov,
                          const struct config *src)
{
    GString *out = g_string_new(NULL);
    gchar **lines = g_strsplit(text, "\n", -1);
    size_t n = g_strv_length(lines);
    if (n > 0 && lines[n - 1][0] == '\0')
        n--;
    char sec[64] = "";
    for (size_t i = 0; i <= n; i++) {
        char next[64];
        bool end_of_section = i == n || header_of(lines[i], next, sizeof next);
        if (end_of_section) {
            /* keys of this section the source did not have (before the blank
             * line that ends it) */
            size_t blanks = 0;
            while (blanks < out->len && out->str[out->len - 1 - blanks] == '\n')
                blanks++;
            bool cut = false;
            for (size_t k = 0; k < nov; k++)
                if (!ov[k].done && ov[k].value && strcmp(ov[k].section, sec) == 0) {
                    if (!cut && blanks > 1) {
                        g_string_truncate(out, out->len - (blanks - 1));
                        cut = true;
                    }
                    g_string_append_printf(out, "%s = %s\n", ov[k].key, ov[k].value);
                    ov[k].done = true;
                }
            if (cut)
                g_string_append_c(out, '\n');
            if (i == n)
                break;
            str_copy(sec, next, sizeof sec);
            g_string_append_printf(out, "%s\n", lines[i]);
            continue;
        }
        char key[128], value[4096];
        if (!key_value(lines[i], key, sizeof key, value, sizeof value)) {
            g_string_append_printf(out, "%s\n", lines[i]);
            continue;
        }
        bool replaced = false;
        for (size_t k = 0; k < nov && !replaced; k++) {
            if (strcmp(ov[k].section, sec) != 0 || strcmp(ov[k].key, key) != 0)
                continue;
            replaced = true;
            if (ov[k].value != NULL && !ov[k].done)
                g_string_append_printf(out, "%s = %s\n", key, ov[k].value);
            ov[k].done = true;
        }
        if (replaced)
            continue;
        char *abs = absolute_of(dir, value);
        if (abs != NULL) {
            g_string_append_printf(out, "%s = %s\n", key, abs);
            g_free(abs);
        } else {
            g_string_append_printf(out, "%s\n", lines[i]);
        }
    }
    /* sections the source did not have */
    for (size_t k = 0; k < nov; k++) {
        if (ov[k].done || ov[k].value == NULL)
            continue;
        g_string_append_printf(out, "\n[%s]\n", ov[k].section);
        for (size_t j = k; j < nov; j++)
            if (!ov[j].done && ov[j].value && strcmp(ov[j].section, ov[k].section) == 0) {
                g_string_append_printf(out, "%s = %s\n", ov[j].key, ov[j].value);
                ov[j].done = true;
            }
    }
    g_strfreev(lines);
    (void)src;
    return out;
}

int pecctl_node_main(int argc, char **argv)
{
    struct node_opts o = {0};
    if (argc < 3 || strcmp(argv[1], "add") != 0) {
        pecctl_help(stderr, "node");
        return 2;
    }
    o.newdir = argv[2];
    for (int i = 3; i < argc; i++) {
        const char **dst = strcmp(argv[i], "--from") == 0         ? &o.from
                           : strcmp(argv[i], "--node") == 0        ? &o.node
                           : strcmp(argv[i], "--smtp") == 0        ? &o.smtp
                           : strcmp(argv[i], "--submission") == 0  ? &o.submission
                           : strcmp(argv[i], "--submissions") == 0 ? &o.submissions
                                                                   : NULL;
        if (strcmp(argv[i], "--force") == 0) {
            o.force = true;
        } else if (dst != NULL && i + 1 < argc) {
            *dst = argv[++i];
        } else {
            fprintf(stderr, "pecctl node add: unknown or incomplete option '%s'\n", argv[i]);
            pecctl_help(stderr, "node");
            return 2;
        }
    }
    if (o.from == NULL || o.node == NULL || o.smtp == NULL || o.submission == NULL) {
        fprintf(stderr, "pecctl node add: --from, --node, --smtp and --submission are needed\n");
        pecctl_help(stderr, "node");
        return 2;
    }
    if (!config_node_name_ok(o.node)) {
        fprintf(stderr, "pecctl node add: '%s' is not a node name (1 to 64 of a-z 0-9 . - _)\n",
                o.node);
        return 2;
    }
    const char *bad = !hostport_ok(o.smtp)           ? o.smtp
                      : !hostport_ok(o.submission)   ? o.submission
                      : o.submissions && !hostport_ok(o.submissions) ? o.submissions
                                                                      : NULL;
    if (bad != NULL) {
        fprintf(stderr, "pecctl node add: '%s' is not HOST:PORT\n", bad);
        return 2;
    }
    char from[PATH_MAX], srcconf[PATH_MAX + 16], err[1024];
    if (realpath(o.from, from) == NULL) {
        fprintf(stderr, "pecctl node add: %s: %s\n", o.from, strerror(errno));
        return 1;
    }
    snprintf(srcconf, sizeof srcconf, "%s/pecd.conf", from);
    struct config *src = config_load(srcconf, err, sizeof err);
    if (src == NULL) {
        fprintf(stderr, "pecctl node add: %s\n", err);
        return 1;
    }
    int rc = 1;
    char *text = NULL;
    size_t len = 0;
    GString *conf = NULL;
    char newdir[PATH_MAX] = "", newconf[PATH_MAX + 16];
    char *newdata = NULL;
    if (!state_shared(src)) {
        fprintf(stderr, "pecctl node add: %s has no [state] database = postgresql://...: the "
                        "nodes of a provider share their state there (docs/scaling.md)\n",
                srcconf);
        goto out;
    }
    if (strcmp(src->state_node, o.node) == 0) {
        fprintf(stderr, "pecctl node add: %s is node %s already: give the new node another "
                        "name\n", srcconf, o.node);
        goto out;
    }
    if (fs_mkdirs(o.newdir, 0750) == -1 || realpath(o.newdir, newdir) == NULL) {
        fprintf(stderr, "pecctl node add: cannot create %s: %s\n", o.newdir, strerror(errno));
        goto out;
    }
    if (strcmp(newdir, from) == 0) {
        fprintf(stderr, "pecctl node add: %s is the source's directory\n", newdir);
        goto out;
    }
    snprintf(newconf, sizeof newconf, "%s/pecd.conf", newdir);
    if (!o.force && access(newconf, F_OK) == 0) {
        fprintf(stderr, "pecctl node add: %s exists (--force replaces it)\n", newconf);
        goto out;
    }
    if (fs_read_file(srcconf, &text, &len, 16u << 20) == -1) {
        fprintf(stderr, "pecctl node add: cannot read %s: %s\n", srcconf, strerror(errno));
        goto out;
    }
    /* the same mailboxes and users as the source (their defaults are under
     * the source's data directory), the node's own data and queue */
    char *mailbox = src->lmtp_host ? NULL : g_strconcat("maildir:", src->mailbox, NULL);
    struct override ov[12];
    size_t nov = 0;
#define OV(s, k, v) (ov[nov++] = (struct override){s, k, v, false})
    /* the source's layout: its data beside pecd.conf, or in a directory of
     * its own (pecctl init's DIR/data), which pecd started as root needs to
     * give it to [pecd] user without handing over the configuration */
    char *srcdata = realpath(src->data_dir, NULL);   /* NULL: not made yet (first start) */
    bool apart = srcdata != NULL ? strcmp(srcdata, from) != 0
                                 : strcmp(src->data_dir, src->dir) != 0;
    free(srcdata);
    newdata = apart ? g_strconcat(newdir, "/data", NULL) : g_strdup(newdir);
    /* as pecctl init: [pecd] user's group may enter NEWDIR (to reach NEWDIR/data,
     * which pecd gives it at start) but change nothing there */
    struct passwd *pw = apart && geteuid() == 0 && strcmp(src->pecd_user, "root") != 0
                            ? getpwnam(src->pecd_user)
                            : NULL;
    if (pw != NULL && (chown(newdir, 0, pw->pw_gid) == -1 || chmod(newdir, 0750) == -1)) {
        fprintf(stderr, "pecctl node add: %s: cannot give it to the group of %s: %s\n", newdir,
                src->pecd_user, strerror(errno));
        goto out;
    }
    OV("provider", "data_dir", newdata);
    OV("queue", "directory", NULL);          /* its own: DATA_DIR/queue */
    OV("state", "node", o.node);
    OV("mx", "listen", o.smtp);
    OV("submission", "listen", o.submission);
    if (o.submissions != NULL)
        OV("submissions", "listen", o.submissions);
    if (mailbox != NULL)
        OV("delivery", "mailbox", mailbox);
    if (src->dovecot_auth == NULL)
        OV("users", "passwd_file", src->passwd_file);
    OV("antivirus", "quarantine", NULL);     /* its own: DATA_DIR/quarantine, indexed */
    OV("metrics", "listen", NULL);           /* a port of its own, if wanted */
#undef OV
    conf = node_conf(text, from, ov, nov, src);
    char *head = g_strdup_printf("# node %s of %s, made by `pecctl node add` from %s: the "
                                 "same provider,\n# its own name, listeners and data directory "
                                 "(docs/scaling.md)\n",
                                 o.node, src->domain, srcconf);
    g_string_prepend(conf, head);
    g_free(head);
    g_free(mailbox);
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.pecctl-new", newconf);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd == -1 || fs_write_all(fd, conf->str, conf->len) == -1 || fsync(fd) == -1) {
        fprintf(stderr, "pecctl node add: cannot write %s: %s\n", tmp, strerror(errno));
        if (fd != -1)
            close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    struct config *check = config_load(tmp, err, sizeof err);
    if (check == NULL) {
        fprintf(stderr, "pecctl node add: the new configuration would not load: %s\n", err);
        unlink(tmp);
        goto out;
    }
    config_free(check);
    if (rename(tmp, newconf) == -1) {
        fprintf(stderr, "pecctl node add: %s: %s\n", newconf, strerror(errno));
        unlink(tmp);
        goto out;
    }
    fs_fsync_dir(newdir);
    printf("node %s of %s: %s\n", o.node, src->domain, newconf);
    printf("  listeners        mx %s, submission %s%s%s\n", o.smtp, o.submission,
           o.submissions ? ", submissions " : "", o.submissions ? o.submissions : "");
    printf("  data and queue   %s (on storage every node reaches: another node takes the "
           "queue over if this one dies)\n", newdata);
    printf("  shared with %-5s identity, keys and certificates, directory, users, mailboxes, "
           "[state] (paths of %s)\n", src->state_node, from);
    if (src->metrics_listen != NULL)
        printf("  [metrics] listen not copied (a port per node): add one to %s\n", newconf);
    printf("  start it with    pecd -c %s; list the nodes with pecctl -c %s nodes\n", newconf,
           newconf);
    rc = 0;
out:
    g_free(newdata);
    if (conf != NULL)
        g_string_free(conf, TRUE);
    free(text);
    config_free(src);
    return rc;
}
