/*
 * pecctl_route.c - `pecctl -c CONF route list|add|del`: the static next hops
 * of [routes] without an editor.
 *
 * add and del change pecd.conf as text, line by line: comments, blank lines
 * and every other section stay as they are; an existing line for the
 * domain is replaced in place, a new one goes after the last key of
 * [routes] (the section is appended when absent).  The result is written
 * to a temporary file beside pecd.conf with the same mode, read back with
 * config_load (so a change pecd would refuse never replaces the file), then
 * synced and renamed over it.  pecd applies it on reload (SIGHUP).
 */
#include "lib/config.h"
#include "lib/lib.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int pecctl_help(FILE *f, const char *cmd);

/* Is line "[routes]" (blanks and a comment allowed), another section
 * header (0), or no header (-1)? */
static int section_of(const char *line)
{
    const char *p = line + strspn(line, " \t");
    if (*p != '[')
        return -1;
    return strncmp(p, "[routes]", 8) == 0 ? 1 : 0;
}

/* The key of a "key = value" line (lower case) into key; false otherwise. */
static bool key_of(const char *line, char *key, size_t keylen)
{
    const char *p = line + strspn(line, " \t");
    if (*p == ';' || *p == '#' || *p == '\0' || *p == '[')
        return false;
    size_t n = strcspn(p, "=:");
    if (p[n] == '\0')
        return false;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= keylen)
        return false;
    memcpy(key, p, n);
    key[n] = '\0';
    str_lower(key);
    return true;
}

static int write_checked(const char *path, const GString *text)
{
    struct stat st;
    mode_t mode = stat(path, &st) == 0 ? st.st_mode & 07777 : 0640;
    char tmp[4096];
    if (str_fmt(tmp, sizeof tmp, "%s.pecctl-new", path) < 0) {
        fprintf(stderr, "pecctl route: path too long\n");
        return 1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd == -1) {
        fprintf(stderr, "pecctl route: cannot create %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    if (fs_write_all(fd, text->str, text->len) == -1 || fchmod(fd, mode) == -1 ||
        fsync(fd) == -1) {
        fprintf(stderr, "pecctl route: cannot write %s: %s\n", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return 1;
    }
    close(fd);
    /* read back as pecd will, relative paths against the same directory */
    char err[1024];
    struct config *c = config_load(tmp, err, sizeof err);
    if (c == NULL) {
        fprintf(stderr, "pecctl route: the change would make the file invalid: %s; %s is "
                        "unchanged\n", err, path);
        unlink(tmp);
        return 1;
    }
    config_free(c);
    if (rename(tmp, path) == -1) {
        fprintf(stderr, "pecctl route: cannot replace %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    char *slash = strrchr(tmp, '/');
    if (slash != NULL) {
        *slash = '\0';
        fs_fsync_dir(tmp[0] ? tmp : "/");
    } else {
        fs_fsync_dir(".");
    }
    return 0;
}

/* Rewrites [routes]: domain's line replaced by value, or removed (value
 * NULL).  Returns how many lines named the domain, or -1. */
static int edit(const char *path, const char *domain, const char *value, GString *out)
{
    char *text;
    size_t len;
    if (fs_read_file(path, &text, &len, 16u << 20) == -1) {
        fprintf(stderr, "pecctl route: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    gchar **lines = g_strsplit(text, "\n", -1);
    free(text);
    size_t n = g_strv_length(lines);
    if (n > 0 && lines[n - 1][0] == '\0')
        n--;                        /* the text ended with a newline */
    int found = 0, in = 0;
    ssize_t last_key = -1, header = -1;
    for (size_t i = 0; i < n; i++) {
        int s = section_of(lines[i]);
        if (s >= 0) {
            in = s;
            if (s == 1) {
                header = (ssize_t)i;
                last_key = (ssize_t)i;
            }
            continue;
        }
        char key[256];
        if (in && key_of(lines[i], key, sizeof key)) {
            last_key = (ssize_t)i;
            if (strcmp(key, domain) == 0) {
                found++;
                g_free(lines[i]);
                lines[i] = value && found == 1 ? g_strdup_printf("%s = %s", domain, value)
                                               : NULL;
                if (lines[i] == NULL)
                    lines[i] = g_strdup("\x01");   /* removed below */
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(lines[i], "\x01") != 0)
            g_string_append_printf(out, "%s\n", lines[i]);
        if (value && !found && (ssize_t)i == last_key)
            g_string_append_printf(out, "%s = %s\n", domain, value);
    }
    if (value && !found && header < 0)
        g_string_append_printf(out, "%s[routes]\n%s = %s\n",
                               out->len && !g_str_has_suffix(out->str, "\n\n") ? "\n" : "",
                               domain, value);
    g_strfreev(lines);
    return found;
}

static bool valid_domain(const char *d)
{
    return strcmp(d, "*") == 0 || str_domain_ok(d);
}

/* [lmtp:]HOST:PORT[, HOST:PORT]... as [routes] takes it (no blanks inside). */
static bool valid_hops(const char *v)
{
    if (*v == '\0' || strlen(v) > 1024 || strpbrk(v, " \t\r\n;#=") != NULL)
        return false;
    const char *hp = strncmp(v, "lmtp:", 5) == 0 ? v + 5 : v;
    gchar **hops = g_strsplit(hp, ",", -1);
    bool ok = hops[0] != NULL;
    for (size_t i = 0; ok && hops[i]; i++) {
        const char *colon = strrchr(hops[i], ':');
        ok = colon && colon != hops[i] && colon[1] &&
             strspn(colon + 1, "0123456789") == strlen(colon + 1) && atoi(colon + 1) > 0 &&
             atoi(colon + 1) < 65536;
    }
    g_strfreev(hops);
    return ok;
}

int pecctl_route_main(struct config *cfg, int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "list") == 0 && (argc == 2 || (argc == 3 && strcmp(argv[2], "--json") == 0))) {
        bool json = argc == 3;
        if (json)
            fputc('[', stdout);
        for (size_t i = 0; i < cfg->nroutes; i++) {
            if (json) {
                fputs(i ? ",{\"domain\":" : "{\"domain\":", stdout);
                json_fput(stdout, cfg->routes[i].key);
                fputs(",\"next_hop\":", stdout);
                json_fput(stdout, cfg->routes[i].value);
                fputc('}', stdout);
            } else {
                printf("%-30s %s\n", cfg->routes[i].key, cfg->routes[i].value);
            }
        }
        if (json)
            fputs("]\n", stdout);
        else if (cfg->nroutes == 0)
            printf("no static routes (next hops from DNS MX)\n");
        return 0;
    }
    if ((strcmp(sub, "add") == 0 && argc == 4) || (strcmp(sub, "del") == 0 && argc == 3)) {
        char domain[256];
        str_copy(domain, argv[2], sizeof domain);
        str_lower(domain);
        if (strlen(argv[2]) >= sizeof domain || !valid_domain(domain)) {
            fprintf(stderr, "pecctl route: '%s' is not a domain name (or *)\n", argv[2]);
            return 2;
        }
        const char *value = argc == 4 ? argv[3] : NULL;
        if (value && !valid_hops(value)) {
            fprintf(stderr, "pecctl route: '%s' is not [lmtp:]HOST:PORT[,HOST:PORT...]\n",
                    value);
            return 2;
        }
        GString *out = g_string_new(NULL);
        int found = edit(cfg->path, domain, value, out);
        int rc = found < 0 ? 1 : 0;
        if (rc == 0 && !value && found == 0) {
            fprintf(stderr, "pecctl route: no route for %s in %s\n", domain, cfg->path);
            rc = 1;
        }
        if (rc == 0)
            rc = write_checked(cfg->path, out);
        if (rc == 0)
            printf("route %s %s%s%s; it takes effect on reload (systemctl reload pecmail, or "
                   "kill -HUP the pecd)\n", domain,
                   value ? (found ? "changed to" : "added:") : "removed", value ? " " : "",
                   value ? value : "");
        g_string_free(out, TRUE);
        return rc;
    }
    pecctl_help(stderr, "route");
    return 2;
}
