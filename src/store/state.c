/*
 * state.c - where the provider's state lives (state.h): the locators the
 * modules open, and the schema of the shared PostgreSQL database, created
 * by `pecctl state init` and upgraded by `pecctl state migrate`.  pecd never
 * changes the schema itself: it checks the version at start and names the
 * command to run when it is not the one it writes (an operator upgrades a
 * shared database once, not each node on its own).
 *
 * Schema versions (pecmail_schema.version):
 *   1  nodes and leases, expect and taken_in (tracking), the evidence log
 *      (events partitioned by month, keys, chains, seals, holds, held days)
 *   2  the quarantine index (quarantine)
 * Each step is one transaction; migrate applies those after the version
 * found.  Tables and their columns: docs/scaling.md.
 */
#include "state.h"
#include "pg.h"
#include "lib/config.h"
#include "lib/lib.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- locators -------------------------------------------------------------- */

void state_setup(const struct config *cfg, const char *app)
{
    if (cfg->state_database != NULL)
        pg_configure(cfg->state_database, cfg->state_password_file, cfg->state_node, app,
                     (unsigned)cfg->state_connect_timeout);
}

bool state_shared(const struct config *cfg) { return cfg->state_database != NULL; }

const char *state_tracking_at(const struct config *cfg, char *buf, size_t len)
{
    if (cfg->state_database != NULL)
        return cfg->state_database;
    snprintf(buf, len, "%s/tracking.db", cfg->data_dir);
    return buf;
}

const char *state_evidence_at(const struct config *cfg)
{
    return cfg->state_database != NULL ? cfg->state_database : cfg->evidence_path;
}

bool state_reachable(void) { return pg_reachable(); }

const char *state_shown(const struct config *cfg)
{
    return cfg->state_database != NULL ? pg_uri_shown() : cfg->evidence_path;
}

/* ---- schema ------------------------------------------------------------------ */

/* Version 1.  The evidence log: docs/evidence.md ("Several nodes"). */
static const char STEP1[] =
    "CREATE TABLE pecmail_schema (id int PRIMARY KEY CHECK (id = 1), version int NOT NULL,"
    " updated timestamptz NOT NULL DEFAULT now());"
    "INSERT INTO pecmail_schema (id, version) VALUES (1, 1);"
    /* the nodes: heartbeat of each process, lease on each spool */
    "CREATE TABLE nodes ("
    " name text PRIMARY KEY, num smallint NOT NULL UNIQUE CHECK (num BETWEEN 1 AND 63),"
    " queue_dir text NOT NULL, data_dir text NOT NULL, host text, pid int,"
    " started timestamptz, heartbeat timestamptz,"
    " owner text, epoch bigint NOT NULL DEFAULT 0, lease_until timestamptz,"
    " lease int NOT NULL DEFAULT 30, want_back boolean NOT NULL DEFAULT false);"
    /* tracking (tracking_pg.c) */
    "CREATE TABLE expect ("
    " pec_id text NOT NULL, rcpt text NOT NULL, sender text NOT NULL, subject text,"
    " recipients text, sent bigint NOT NULL, presa smallint NOT NULL DEFAULT 0,"
    " notice smallint NOT NULL DEFAULT 0, orig_msgid text, slot int NOT NULL DEFAULT 0,"
    " reply_to text, notice1_qid text, notice2_qid text, node text,"
    " PRIMARY KEY (pec_id, rcpt));"
    "CREATE INDEX expect_due ON expect (sent) WHERE notice < 2;"
    "CREATE INDEX expect_ended ON expect (sent) WHERE notice = 2;"
    "CREATE TABLE taken_in ("
    " signer text NOT NULL, msgid text NOT NULL, content text NOT NULL, rcpt text NOT NULL,"
    " qid text NOT NULL, at bigint NOT NULL, PRIMARY KEY (signer, msgid, content, rcpt));"
    "CREATE INDEX taken_in_at ON taken_in (at);"
    /* the evidence log (evidence_pg.c) */
    "CREATE TABLE evidence_meta (key text PRIMARY KEY, value text NOT NULL);"
    "INSERT INTO evidence_meta VALUES ('format', '1');"
    "CREATE TABLE evidence_chains ("
    " name text PRIMARY KEY, head_seq bigint NOT NULL DEFAULT 0, head_hash bytea NOT NULL,"
    " head_day date, sealed_day date,"
    " anchor_seq bigint NOT NULL DEFAULT 0, anchor_hash bytea, anchor_day date,"
    " purged_at bigint);"
    "CREATE TABLE evidence_events ("
    " chain text NOT NULL, seq bigint NOT NULL, day date NOT NULL, logged_at bigint NOT NULL,"
    " event_time bigint NOT NULL, type text NOT NULL, pec_id text, orig_msgid text,"
    " message_id text, sender text, recipients text, subject text, outcome text,"
    " queue_id text, dedupe_key text, prev_hash bytea NOT NULL, hash bytea NOT NULL,"
    " PRIMARY KEY (chain, day, seq)) PARTITION BY RANGE (day);"
    "CREATE INDEX evidence_events_pec_id ON evidence_events (pec_id);"
    "CREATE INDEX evidence_events_orig_msgid ON evidence_events (orig_msgid);"
    "CREATE INDEX evidence_events_message_id ON evidence_events (message_id);"
    "CREATE INDEX evidence_events_day ON evidence_events (day);"
    /* dedupe keys: unique across chains and partitions (a unique index of a
     * partitioned table would have to include the day) */
    "CREATE TABLE evidence_keys ("
    " dedupe_key text COLLATE \"C\" PRIMARY KEY, chain text NOT NULL,"
    " queue_id text, event_time bigint NOT NULL, day date NOT NULL);"
    "CREATE INDEX evidence_keys_day ON evidence_keys (day);"
    "CREATE TABLE evidence_seals ("
    " chain text NOT NULL, day date NOT NULL, first_seq bigint NOT NULL,"
    " last_seq bigint NOT NULL, count bigint NOT NULL, last_hash bytea NOT NULL,"
    " signed text NOT NULL, signature bytea NOT NULL, sealed_at bigint NOT NULL,"
    " PRIMARY KEY (chain, day));"
    "CREATE TABLE evidence_holds ("
    " id bigserial PRIMARY KEY, kind text NOT NULL CHECK (kind IN ('address', 'pec_id')),"
    " value text NOT NULL, reason text, created bigint NOT NULL);"
    /* whole days kept past retention because they hold a record under a
     * legal hold: copied here before their month's partition is dropped */
    "CREATE TABLE evidence_held ("
    " chain text NOT NULL, seq bigint NOT NULL, day date NOT NULL, logged_at bigint NOT NULL,"
    " event_time bigint NOT NULL, type text NOT NULL, pec_id text, orig_msgid text,"
    " message_id text, sender text, recipients text, subject text, outcome text,"
    " queue_id text, dedupe_key text, prev_hash bytea NOT NULL, hash bytea NOT NULL,"
    " held_at bigint NOT NULL, PRIMARY KEY (chain, seq));"
    "CREATE INDEX evidence_held_day ON evidence_held (day);"
    /* append-only against mistakes (the chain and the seals detect an
     * attacker); retention drops whole partitions, which no row trigger sees */
    "CREATE FUNCTION pecmail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$;"
    "CREATE TRIGGER evidence_events_append_only BEFORE UPDATE OR DELETE ON evidence_events"
    " FOR EACH ROW EXECUTE FUNCTION pecmail_append_only();"
    "CREATE TRIGGER evidence_seals_append_only BEFORE UPDATE OR DELETE ON evidence_seals"
    " FOR EACH ROW EXECUTE FUNCTION pecmail_append_only();"
    "CREATE TRIGGER evidence_held_append_only BEFORE UPDATE OR DELETE ON evidence_held"
    " FOR EACH ROW EXECUTE FUNCTION pecmail_append_only();";

/* Version 2: the quarantine index (quarantine.c): where each node stored
 * what it quarantined, so that any node or the operator finds it. */
static const char STEP2[] =
    "CREATE TABLE quarantine ("
    " node text NOT NULL, qid text NOT NULL, day date NOT NULL, path text NOT NULL,"
    " reason text, sender text, recipients text, client text, stored_at bigint NOT NULL,"
    " PRIMARY KEY (node, qid));"
    "CREATE INDEX quarantine_day ON quarantine (day);"
    "UPDATE pecmail_schema SET version = 2, updated = now();";

static const char *const steps[STATE_SCHEMA_VERSION] = {STEP1, STEP2};

int state_version(int *version, char *server, size_t serverlen, char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    if (server != NULL)
        snprintf(server, serverlen, "%d.%d", PQserverVersion(c) / 10000,
                 PQserverVersion(c) % 10000);
    PGresult *r = pg_query(c, err, errlen, "schema",
                           "SELECT to_regclass('pecmail_schema') IS NOT NULL", 0, NULL);
    int rc = -1;
    if (r != NULL) {
        bool has = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
        *version = 0;
        rc = 0;
        if (has) {
            r = pg_query(c, err, errlen, "schema", "SELECT version FROM pecmail_schema", 0,
                         NULL);
            if (r == NULL || PQntuples(r) != 1) {
                if (r != NULL)
                    snprintf(err, errlen, "pecmail_schema holds no version");
                rc = -1;
            } else {
                *version = (int)pg_ll(r, 0, 0);
            }
            PQclear(r);
        }
    }
    pg_put(c);
    return rc;
}

int state_check(const char *conf_path, char *err, size_t errlen)
{
    int v = 0;
    char e2[768];
    if (state_version(&v, NULL, 0, e2, sizeof e2) == -1) {
        snprintf(err, errlen, "%s", e2);
        return -1;
    }
    if (v == STATE_SCHEMA_VERSION)
        return 0;
    if (v == 0)
        snprintf(err, errlen, "[state] database %s has no pecmail schema: run `pecctl -c %s "
                 "state init`", pg_uri_shown(), conf_path);
    else if (v < STATE_SCHEMA_VERSION)
        snprintf(err, errlen, "[state] database %s has schema version %d, this pecmail needs "
                 "%d: run `pecctl -c %s state migrate` (once, for every node)",
                 pg_uri_shown(), v, STATE_SCHEMA_VERSION, conf_path);
    else
        snprintf(err, errlen, "[state] database %s has schema version %d, made by a newer "
                 "pecmail (this one writes %d): upgrade this node", pg_uri_shown(), v,
                 STATE_SCHEMA_VERSION);
    return -1;
}

/* Runs steps from..STATE_SCHEMA_VERSION-1, each in a transaction holding a
 * lock against a concurrent init or migrate. */
static int run_steps(int from, char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    int rc = 0;
    for (int i = from; i < STATE_SCHEMA_VERSION && rc == 0; i++) {
        char what[32];
        snprintf(what, sizeof what, "schema step %d", i + 1);
        rc = pg_exec(c, err, errlen, "BEGIN");
        if (rc == 0)
            rc = pg_exec(c, err, errlen, "SELECT pg_advisory_xact_lock(7242001)");
        if (rc == 0 && i > 0) {
            /* another migrate may have gone first */
            PGresult *r = pg_query(c, err, errlen, what, "SELECT version FROM pecmail_schema",
                                   0, NULL);
            if (r == NULL)
                rc = -1;
            else if (pg_ll(r, 0, 0) > i) {
                PQclear(r);
                PQclear(PQexec(c, "ROLLBACK"));
                continue;
            }
            PQclear(r);
        }
        if (rc == 0)
            rc = pg_command(c, err, errlen, what, steps[i], 0, NULL) < 0 ? -1 : 0;
        if (rc == 0)
            rc = pg_exec(c, err, errlen, "COMMIT");
        if (rc == -1)
            PQclear(PQexec(c, "ROLLBACK"));
    }
    pg_put(c);
    return rc;
}

int state_init(char *err, size_t errlen)
{
    int v;
    if (state_version(&v, NULL, 0, err, errlen) == -1)
        return -1;
    if (v != 0) {
        snprintf(err, errlen, "[state] database %s has a pecmail schema already (version %d)%s",
                 pg_uri_shown(), v,
                 v < STATE_SCHEMA_VERSION ? ": use state migrate" : "");
        return -1;
    }
    if (run_steps(0, err, errlen) == -1)
        return -1;
    time_t now = time(NULL);
    return state_partitions(now - 31 * 86400, now + 62 * 86400, err, errlen);
}

int state_migrate(int *from, char *err, size_t errlen)
{
    if (state_version(from, NULL, 0, err, errlen) == -1)
        return -1;
    if (*from == 0) {
        snprintf(err, errlen, "[state] database %s has no pecmail schema: use state init",
                 pg_uri_shown());
        return -1;
    }
    if (*from > STATE_SCHEMA_VERSION) {
        snprintf(err, errlen, "schema version %d is newer than this pecmail's (%d)", *from,
                 STATE_SCHEMA_VERSION);
        return -1;
    }
    if (*from == STATE_SCHEMA_VERSION)
        return 0;
    if (run_steps(*from, err, errlen) == -1)
        return -1;
    time_t now = time(NULL);
    return state_partitions(now - 31 * 86400, now + 62 * 86400, err, errlen);
}

/* ---- evidence partitions ---------------------------------------------------------- */

int state_partitions(time_t from, time_t to, char *err, size_t errlen)
{
    PGconn *c = pg_get(err, errlen);
    if (c == NULL)
        return -1;
    struct tm tm;
    gmtime_r(&from, &tm);
    int y = tm.tm_year + 1900, m = tm.tm_mon + 1;
    gmtime_r(&to, &tm);
    int ylast = tm.tm_year + 1900, mlast = tm.tm_mon + 1;
    int rc = pg_exec(c, err, errlen, "BEGIN");
    /* one creator at a time (every node makes them ahead of need) */
    if (rc == 0)
        rc = pg_exec(c, err, errlen, "SELECT pg_advisory_xact_lock(7242002)");
    for (int k = 0; rc == 0 && (y < ylast || (y == ylast && m <= mlast)) && k < 1200; k++) {
        int ny = m == 12 ? y + 1 : y, nm = m == 12 ? 1 : m + 1;
        char sql[512];
        /* a month dropped by retention is not made again: its records are
         * gone and the chains continue from their anchors */
        snprintf(sql, sizeof sql,
                 "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM evidence_meta WHERE key = "
                 "'purged_through' AND value >= '%04d-%02d') THEN "
                 "CREATE TABLE IF NOT EXISTS evidence_events_%04d%02d PARTITION OF "
                 "evidence_events FOR VALUES FROM ('%04d-%02d-01') TO ('%04d-%02d-01'); "
                 "END IF; END $$",
                 y, m, y, m, y, m, ny, nm);
        rc = pg_exec(c, err, errlen, sql);
        y = ny;
        m = nm;
    }
    if (rc == 0)
        rc = pg_exec(c, err, errlen, "COMMIT");
    if (rc == -1)
        PQclear(PQexec(c, "ROLLBACK"));
    pg_put(c);
    return rc;
}
