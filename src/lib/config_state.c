/*
 * config_state.c - [state] of pecd.conf: where the provider's state lives
 * (the receipts it waits for, the messages taken in, the evidence log and
 * the quarantine index).  Absent: SQLite files under data_dir (tracking.db,
 * [evidence] path), one node.  database = postgresql://...: a PostgreSQL
 * database shared by several nodes of the provider, each with its own name
 * (node), queue and data directory (docs/scaling.md).
 *
 * The URI is checked here with libpq's own parser, so a malformed one stops
 * start-up with the file and the reason; whether the server answers and the
 * password is right is checked at start (pecd, pecd -t, pecctl state).
 */
#include "config.h"
#include "config_int.h"
#include "lib.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

bool config_is_postgresql(const char *where)
{
    return where != NULL && (strncasecmp(where, "postgresql://", 13) == 0 ||
                             strncasecmp(where, "postgres://", 11) == 0);
}

void config_state_defaults(struct config *cfg)
{
    cfg->state_lease = 30;
    cfg->state_connect_timeout = 5;
}

/* A node's name: it names the node's row, its evidence chain and its logs. */
bool config_node_name_ok(const char *v)
{
    size_t n = strlen(v);
    return n > 0 && n <= 64 && strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789.-_") == n &&
           v[0] != '.' && v[0] != '-';
}

int config_state_key(struct config *cfg, const char *section, const char *name,
                     const char *value, char *err, size_t errlen)
{
    if (strcmp(section, "state") != 0)
        return -1;
    if (strcmp(name, "database") == 0) {
        if (strncmp(value, "sqlite:", 7) == 0 && value[7] == '\0') {
            free(cfg->state_database);   /* the embedded default, said explicitly */
            cfg->state_database = NULL;
            return 1;
        }
        if (!config_is_postgresql(value))
            return config_bad(err, errlen, "database: '%.100s' is not postgresql://[USER@]HOST"
                       "[:PORT]/DBNAME (or sqlite: for the embedded default)", value);
        char *perr = NULL;
        PQconninfoOption *o = PQconninfoParse(value, &perr);
        if (o == NULL) {
            char why[200];
            str_copy(why, perr ? perr : "out of memory", sizeof why);
            {
                char *t_ = str_trim(why);
                memmove(why, t_, strlen(t_) + 1);
            }
            PQfreemem(perr);
            /* not the value: it may hold a password */
            return config_bad(err, errlen, "database: not a valid PostgreSQL URI: %s", why);
        }
        PQconninfoFree(o);
        set_str(&cfg->state_database, value);
        return 1;
    }
    if (strcmp(name, "node") == 0) {
        if (!config_node_name_ok(value))
            return config_bad(err, errlen, "node: '%.100s' is not a node name (1 to 64 of a-z 0-9 . - _)",
                       value);
        set_str(&cfg->state_node, value);
        return 1;
    }
    if (strcmp(name, "password_file") == 0) {
        set_str(&cfg->state_password_file, value);
        return 1;
    }
    if (strcmp(name, "lease") == 0 || strcmp(name, "connect_timeout") == 0) {
        uint64_t v;
        bool lease = strcmp(name, "lease") == 0;
        if (parse_duration(value, &v) == -1)
            return config_bad(err, errlen, "%s: '%s' is not a duration (e.g. 30s, 1m)", name, value);
        if (v < (lease ? 3 : 1) || v > 3600)
            return config_bad(err, errlen, "%s: %s is outside %ds..1h", name, value, lease ? 3 : 1);
        *(lease ? &cfg->state_lease : &cfg->state_connect_timeout) = v;
        return 1;
    }
    return config_bad(err, errlen, "unknown key '%s' in [state]", name);
}

int config_state_finish(struct config *cfg, char *err, size_t errlen)
{
    if (cfg->state_password_file != NULL && cfg->state_password_file[0] != '/') {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s/%s", cfg->dir, cfg->state_password_file);
        set_str(&cfg->state_password_file, buf);
    }
    if (cfg->state_database == NULL) {
        if (cfg->state_password_file != NULL) {
            snprintf(err, errlen, "[state] password_file needs database = postgresql://...");
            return -1;
        }
        return 0;
    }
    if (cfg->state_node == NULL) {
        snprintf(err, errlen, "[state] database = postgresql://... needs node = NAME (unique "
                 "among the provider's nodes)");
        return -1;
    }
    return 0;
}

void config_state_free(struct config *cfg)
{
    free(cfg->state_database);
    free(cfg->state_node);
    free(cfg->state_password_file);
}
