/*
 * users_file.c - edits of the users file for pecctl: add, delete, change a
 * password, suspend and resume an account.
 *
 * Each edit holds an exclusive flock(2) on FILE.lock for its whole
 * read-modify-write, so two pecctl at once never lose a user, and replaces
 * the file atomically (a new file renamed over it: pecd and Dovecot read
 * either the old or the new one, never half of one), keeping the owner,
 * group and mode an operator gave it.  Lines are edited, never rebuilt:
 * other fields, comments and unknown extra fields stay as written.
 *
 * Suspension is Dovecot's: the extra field "nologin" (with reason=suspended),
 * which Dovecot's passdb honours too; a suspended account cannot log in, its
 * mail is still delivered.
 *
 * Interface: users_file_add, users_file_del, users_file_passwd,
 * users_file_suspend (store.h).
 */
#include "users_int.h"
#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

enum edit_op { EDIT_ADD, EDIT_DEL, EDIT_PASSWD, EDIT_SUSPEND, EDIT_RESUME };

/* The line's address, normalised; false for comments and blank lines. */
static bool line_key(const char *line, char *key, size_t keylen)
{
    const char *t = line + strspn(line, " \t");
    if (*t == '#' || *t == '\0' || *t == '\r')
        return false;
    size_t n = strcspn(t, ":");
    if (t[n] != ':' || n == 0 || n >= keylen)
        return false;
    char addr[512];
    memcpy(addr, t, n);
    addr[n] = '\0';
    users_normalise(str_trim(addr), key, keylen);
    return true;
}

/* The line with its fields rebuilt: f[0] address, f[1] password, f[2..6] the
 * five fields Dovecot defines, f[7] the extra fields. */
static char *line_with(gchar **f, size_t nf, const char *pass, const char *extra)
{
    GString *s = g_string_new(nf > 0 ? f[0] : "");
    g_string_append_c(s, ':');
    g_string_append(s, pass != NULL ? pass : nf > 1 ? f[1] : "");
    for (size_t i = 2; i < 7; i++) {
        g_string_append_c(s, ':');
        if (i < nf)
            g_string_append(s, f[i]);
    }
    const char *x = extra != NULL ? extra : nf > 7 ? f[7] : "";
    if (*x) {
        g_string_append_c(s, ':');
        g_string_append(s, x);
    }
    return g_string_free(s, FALSE);
}

/* The extra fields without "nologin" and "reason=…", then with them when
 * suspend. */
static char *extra_with(const char *extra, bool suspend)
{
    GString *s = g_string_new(NULL);
    gchar **tok = g_strsplit_set(extra ? extra : "", " \t", -1);
    for (gchar **t = tok; *t != NULL; t++) {
        if (**t == '\0' || strcmp(*t, "nologin") == 0 || g_str_has_prefix(*t, "nologin=") ||
            g_str_has_prefix(*t, "reason="))
            continue;
        if (s->len)
            g_string_append_c(s, ' ');
        g_string_append(s, *t);
    }
    g_strfreev(tok);
    if (suspend) {
        if (s->len)
            g_string_append_c(s, ' ');
        g_string_append(s, "nologin reason=suspended");
    }
    return g_string_free(s, FALSE);
}

/* One line edited as op asks ("\n" ended, g_free). */
static char *edit_line(const char *line, enum edit_op op, const char *hash)
{
    gchar **f = g_strsplit(line, ":", 8);
    size_t nf = g_strv_length(f);
    char *out = NULL;
    if (op == EDIT_PASSWD) {
        char *pass = g_strdup_printf("{CRYPT}%s", hash);
        out = line_with(f, nf, pass, NULL);
        g_free(pass);
    } else {
        char *x = extra_with(nf > 7 ? f[7] : "", op == EDIT_SUSPEND);
        out = line_with(f, nf, NULL, x);
        g_free(x);
    }
    g_strfreev(f);
    char *r = g_strconcat(out, "\n", NULL);
    g_free(out);
    return r;
}

static int edit(const char *path, const char *addr, enum edit_op op, const char *hash,
                char *err, size_t errlen)
{
    char key[512];
    users_normalise(addr, key, sizeof key);
    char lockp[PATH_MAX];
    snprintf(lockp, sizeof lockp, "%s.lock", path);
    int lfd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd == -1 || flock(lfd, LOCK_EX) == -1) {
        snprintf(err, errlen, "%s: cannot lock: %s", lockp, strerror(errno));
        if (lfd != -1)
            close(lfd);
        return -1;
    }
    char *buf = NULL;
    size_t len = 0;
    if (fs_read_file(path, &buf, &len, USERS_MAX_FILE) == -1) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            close(lfd);
            return -1;
        }
        buf = xstrdup("");
        len = 0;
    }
    GString *out = g_string_sized_new(len + 256);
    bool found = false;
    for (char *p = buf; p != NULL && *p != '\0';) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char *line = g_strndup(p, n);
        if (n > 0 && line[n - 1] == '\r')
            line[n - 1] = '\0';
        char k[512];
        bool mine = line_key(line, k, sizeof k) && strcmp(k, key) == 0;
        if (mine)
            found = true;
        if (!mine || op == EDIT_ADD) {
            g_string_append(out, line);
            g_string_append_c(out, '\n');
        } else if (op != EDIT_DEL) {
            char *e = edit_line(line, op, hash);
            g_string_append(out, e);
            g_free(e);
        }
        g_free(line);
        p = nl ? nl + 1 : NULL;
    }
    explicit_bzero(buf, len);
    free(buf);
    int r = -1;
    if (op == EDIT_ADD && found) {
        snprintf(err, errlen, "user %s exists already (addresses are compared without case)",
                 key);
    } else if (op != EDIT_ADD && !found) {
        snprintf(err, errlen, "no such user: %s", key);
    } else {
        if (op == EDIT_ADD)
            g_string_append_printf(out, "%s:{CRYPT}%s:::::\n", key, hash);
        /* keep the owner, group and mode an operator gave the file (Dovecot's
         * auth process may read it through its group, docs/dovecot.md) */
        struct stat st;
        bool had = stat(path, &st) == 0;
        r = fs_write_atomic(path, out->str, out->len, had ? (st.st_mode & 0660) : 0600);
        if (r == -1)
            snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        else if (had && ((st.st_uid != geteuid() || st.st_gid != getegid()) &&
                         chown(path, st.st_uid, st.st_gid) == -1))
            log_warn("%s: cannot restore its owner: %s", path, strerror(errno));
    }
    explicit_bzero(out->str, out->len);
    g_string_free(out, TRUE);
    close(lfd);   /* releases the lock */
    return r;
}

int users_file_add(const char *path, const char *addr, const char *hash, char *err,
                   size_t errlen)
{
    if (strlen(addr) > 254) {
        snprintf(err, errlen, "address too long");
        return -1;
    }
    return edit(path, addr, EDIT_ADD, hash, err, errlen);
}

int users_file_del(const char *path, const char *addr, char *err, size_t errlen)
{
    return edit(path, addr, EDIT_DEL, NULL, err, errlen);
}

int users_file_passwd(const char *path, const char *addr, const char *hash, char *err,
                      size_t errlen)
{
    return edit(path, addr, EDIT_PASSWD, hash, err, errlen);
}

int users_file_suspend(const char *path, const char *addr, bool suspend, char *err,
                       size_t errlen)
{
    return edit(path, addr, suspend ? EDIT_SUSPEND : EDIT_RESUME, NULL, err, errlen);
}
