/*
 * server_cmd.c - the SMTP server's command side: the line reader of a
 * session (session_process), the command table and its dispatcher, and the
 * commands that are not elsewhere (EHLO/HELO, MAIL and RCPT with their
 * parameters, RSET, NOOP, VRFY, EXPN, HELP, QUIT).  DATA/BDAT are in
 * server_data.c, STARTTLS and AUTH in server_auth.c.
 *
 * One row per command (commands[] below): its preconditions (enum need, each
 * with the exact reply that refuses it), a check (syntax and limits) and a
 * proceed function.  The dispatcher refuses a command whose precondition
 * does not hold, in the order of enum need, then runs check, then proceed.
 * What a session may do is therefore read in one place: the EHLO keywords
 * (extensions[]) and HELP come from the same rows, so a command is
 * advertised exactly when its capability preconditions hold.
 *
 * Assumes: one thread (the event loop); every reply is queued with
 * sess_reply(), which may close the session (max_errors).
 */
#include "server_int.h"
#include "lib/lib.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- preconditions --------------------------------------------------------- */

/* What a command needs before it is looked at, in the order they are checked
 * (the order fixes which refusal a client sees when several apply). */
enum need {
    NEED_NO_ARGS,       /* the command takes no argument (DATA, STARTTLS) */
    NEED_TLS,           /* a TLS session (AUTH: RFC 4954 §4 and our policy) */
    NEED_NO_TLS,        /* not yet TLS (STARTTLS: RFC 3207 §4) */
    NEED_OFFERED,       /* the row's offered(): the listener provides it */
    NEED_GREETED,       /* EHLO or HELO was accepted (RFC 5321 §4.1.4) */
    NEED_NOT_AUTHED,    /* AUTH once per session (RFC 4954 §4) */
    NEED_NO_MAIL,       /* outside a mail transaction */
    NEED_TLS_FIRST,     /* the listener's require_tls: STARTTLS done */
    NEED_AUTH_FIRST,    /* the listener's auth = required: AUTH done */
    NEED_NO_BDAT,       /* DATA is not mixed with BDAT (RFC 3030 §2) */
    NEED_MAIL,          /* MAIL accepted (RFC 5321 §3.3) */
    NEED_RCPT,          /* at least one RCPT accepted (RFC 5321 §3.3) */
    NEED_COUNT
};
#define N(x) (1u << NEED_##x)
/* The preconditions that say whether a capability exists on this session:
 * the same decide its EHLO keyword and refuse the command. */
#define NEEDS_CAPABILITY (N(TLS) | N(NO_TLS) | N(OFFERED))

/* The refusal of each precondition unless the row has its own; "{cmd}"
 * stands for the command's name. */
static const char *const need_reply[NEED_COUNT] = {
    [NEED_NO_ARGS] = "501 5.5.4 Syntax: {cmd}",
    [NEED_TLS] = "530 5.7.0 Must issue a STARTTLS command first",
    [NEED_NO_TLS] = "503 5.5.1 TLS already active",
    [NEED_OFFERED] = "502 5.5.1 {cmd} not available",
    [NEED_GREETED] = "503 5.5.1 Send EHLO or HELO first",
    [NEED_NOT_AUTHED] = "503 5.5.1 Already authenticated",
    [NEED_NO_MAIL] = "503 5.5.1 {cmd} not permitted during a mail transaction",
    [NEED_TLS_FIRST] = "530 5.7.0 Must issue a STARTTLS command first",
    [NEED_AUTH_FIRST] = "530 5.7.0 Authentication required",
    [NEED_NO_BDAT] = "503 5.5.1 {cmd} not permitted after BDAT",
    [NEED_MAIL] = "503 5.5.1 Need MAIL command first",
    [NEED_RCPT] = "503 5.5.1 Need RCPT command first",
};

/* ---- the command table's types ----------------------------------------------- */

/* One command line being handled: what check leaves for proceed. */
struct cmd {
    const struct command *row;
    const char *args;          /* after the verb and its spaces; "" if none */
    struct smtp_path *path;    /* MAIL, RCPT: the parsed path (freed by dispatch) */
    unsigned notify;           /* RCPT: NOTIFY= (SMTP_NOTIFY_*) */
    char *orcpt;               /* RCPT: ORCPT= (freed by dispatch) */
    uint64_t bdat_size;        /* BDAT: the chunk's size */
    bool bdat_last;
};

enum {
    CMD_WHILE_DRAINING = 1 << 0,   /* answered while the server drains (QUIT) */
    CMD_PATH_LINE = 1 << 1,        /* SMTP_PATH_LINE_MAX, not SMTP_CMD_LINE_MAX */
    CMD_UNLISTED = 1 << 2,         /* not in HELP */
};

struct command {
    const char *name;
    enum smtp_verb verb;
    unsigned flags;                /* CMD_* */
    unsigned needs;                /* N(...) */
    const char *refuse[NEED_COUNT];    /* a row's own refusal of a precondition */
    bool (*offered)(const struct session *s);     /* NEED_OFFERED */
    /* syntax and limits: false after a refusal was answered */
    bool (*check)(struct session *s, struct cmd *c);
    void (*proceed)(struct session *s, struct cmd *c);
};

static const struct command *command_row(enum smtp_verb verb);
static void ehlo_keywords(struct session *s);
static void proceed_help(struct session *s, struct cmd *c);

static bool need_holds(const struct session *s, const struct command *row, enum need n,
                       const char *args)
{
    switch (n) {
    case NEED_NO_ARGS:
        return *args == '\0';
    case NEED_TLS:
        return s->tls;
    case NEED_NO_TLS:
        return !s->tls;
    case NEED_OFFERED:
        return row->offered == NULL || row->offered(s);
    case NEED_GREETED:
        return s->greeted;
    case NEED_NOT_AUTHED:
        return !s->authed;
    case NEED_NO_MAIL:
        return !s->in_mail;
    case NEED_TLS_FIRST:
        return !s->lst->require_tls || s->tls;
    case NEED_AUTH_FIRST:
        return s->lst->auth != LAUTH_REQUIRED || s->authed;
    case NEED_NO_BDAT:
        return !s->bdat_used;
    case NEED_MAIL:
        return s->in_mail;
    case NEED_RCPT:
        return s->in_mail && s->txn.nrcpts > 0;
    case NEED_COUNT:
        break;
    }
    abort();   /* broken invariant: every need is handled above */
}

/* The first of the row's preconditions in mask that does not hold, or NEED_COUNT. */
static enum need need_failed(const struct session *s, const struct command *row, unsigned mask,
                             const char *args)
{
    for (unsigned n = 0; n < NEED_COUNT; n++)
        if ((row->needs & mask & (1u << n)) && !need_holds(s, row, (enum need)n, args))
            return (enum need)n;
    return NEED_COUNT;
}

static void refuse(struct session *s, const struct command *row, enum need n)
{
    const char *tmpl = row->refuse[n] != NULL ? row->refuse[n] : need_reply[n];
    const char *at = strstr(tmpl, "{cmd}");
    if (at == NULL)
        sess_reply(s, "%s", tmpl);
    else
        sess_reply(s, "%.*s%s%s", (int)(at - tmpl), tmpl, row->name, at + 5);
}


/* ---- EHLO, HELO ---------------------------------------------------------------- */

static bool check_hello(struct session *s, struct cmd *c)
{
    if (*c->args == '\0' || strlen(c->args) >= sizeof s->helo || strchr(c->args, ' ') != NULL) {
        sess_reply(s, "501 5.5.4 Syntax: %s hostname", c->row->name);
        return false;
    }
    return true;
}

static void proceed_hello(struct session *s, struct cmd *c)
{
    bool ehlo = c->row->verb == SMTP_V_EHLO;
    sess_txn_reset(s);
    str_copy(s->helo, c->args, sizeof s->helo);
    s->greeted = true;
    s->esmtp = ehlo;
    if (ehlo)
        ehlo_keywords(s);
    else
        sess_reply(s, "250 %s", s->srv->cfg->hostname);
}

/* ---- MAIL ------------------------------------------------------------------------ */

static bool param_seen(const struct smtp_path *p, size_t upto, const char *key)
{
    for (size_t i = 0; i < upto; i++)
        if (strcmp(p->params[i].key, key) == 0)
            return true;
    return false;
}

/* The path and the parameters (RFC 1870, 3461, 6152, 6531, 8689, 4954 §5)
 * into s->txn; on a refusal s->txn is left empty. */
static bool check_mail(struct session *s, struct cmd *c)
{
    const struct config *cfg = s->srv->cfg;
    struct smtp_txn *t = &s->txn;
    struct smtp_path *p = c->path = g_malloc(sizeof *p);
    if (smtp_path_parse(c->args, "FROM:", true, p) != SMTP_PATH_OK) {
        sess_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]");
        goto refused;
    }
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < p->nparams; i++) {
        const char *k = p->params[i].key;
        char *v = p->params[i].value;
        if (!s->esmtp || param_seen(p, i, k))
            goto unsupported;
        if (strcmp(k, "SIZE") == 0) {
            char *end;
            if (v == NULL || !g_ascii_isdigit(*v))
                goto badvalue;
            errno = 0;
            unsigned long long n = strtoull(v, &end, 10);
            if (*end != '\0' || errno != 0)
                goto badvalue;
            if (n > cfg->max_message_size) {
                sess_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
                goto refused;
            }
            t->size_hint = n;
        } else if (strcmp(k, "BODY") == 0) {
            if (v != NULL && strcasecmp(v, "7BIT") == 0)
                t->body = SMTP_BODY_7BIT;
            else if (v != NULL && strcasecmp(v, "8BITMIME") == 0)
                t->body = SMTP_BODY_8BITMIME;
            else
                goto badvalue;
        } else if (strcmp(k, "SMTPUTF8") == 0) {
            if (v != NULL)
                goto badvalue;
            t->smtputf8 = true;
        } else if (strcmp(k, "REQUIRETLS") == 0) {
            if (v != NULL)
                goto badvalue;
            if (!s->tls) {
                sess_reply(s, "530 5.7.10 REQUIRETLS needs a TLS session");
                goto refused;
            }
            t->requiretls = true;
        } else if (strcmp(k, "RET") == 0) {
            if (v != NULL && strcasecmp(v, "FULL") == 0)
                t->ret = SMTP_RET_FULL;
            else if (v != NULL && strcasecmp(v, "HDRS") == 0)
                t->ret = SMTP_RET_HDRS;
            else
                goto badvalue;
        } else if (strcmp(k, "ENVID") == 0) {
            if (v == NULL || smtp_xtext_decode(v) == -1 || strlen(v) > 100)
                goto badvalue;
            str_copy(t->envid, v, sizeof t->envid);
        } else if (strcmp(k, "AUTH") == 0) {
            /* RFC 4954 §5: accepted; we do not relay the claim further. */
            if (v == NULL || smtp_xtext_decode(v) == -1)
                goto badvalue;
        } else {
            goto unsupported;
        }
        continue;
    unsupported:
        sess_reply(s, "555 5.5.4 Unsupported parameter %s", k);
        goto refused;
    badvalue:
        sess_reply(s, "501 5.5.4 Bad value for parameter %s", k);
        goto refused;
    }
    if (p->utf8 && !t->smtputf8) {
        sess_reply(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8");
        goto refused;
    }
    str_copy(t->sender, p->addr, sizeof t->sender);
    return true;
refused:
    memset(t, 0, sizeof *t);   /* no recipients yet: nothing to free */
    return false;
}

static void proceed_mail(struct session *s, struct cmd *c)
{
    (void)c;
    session_facts(s);
    if (s->srv->hooks.mail != NULL) {
        char r[512];
        if (s->srv->hooks.mail(s->srv->hooks.arg, &s->txn, r, sizeof r) != 0) {
            sess_reply(s, "%s", r);
            memset(&s->txn, 0, sizeof s->txn);
            return;
        }
    }
    s->in_mail = true;
    sess_reply(s, "250 2.1.0 Sender OK");
}

/* ---- RCPT ------------------------------------------------------------------------ */

/* The path and its DSN parameters (RFC 3461 §4.1, §4.2) into c; the limit of
 * recipients (RFC 5321 §4.5.3.1.10). */
static bool check_rcpt(struct session *s, struct cmd *c)
{
    const struct smtp_txn *t = &s->txn;
    struct smtp_path *p = c->path = g_malloc(sizeof *p);
    if (smtp_path_parse(c->args, "TO:", false, p) != SMTP_PATH_OK) {
        sess_reply(s, "501 5.5.4 Syntax: RCPT TO:<address> [parameters]");
        return false;
    }
    for (size_t i = 0; i < p->nparams; i++) {
        const char *k = p->params[i].key;
        char *v = p->params[i].value;
        if (param_seen(p, i, k) || !s->esmtp) {
            sess_reply(s, "555 5.5.4 Unsupported parameter %s", k);
            return false;
        }
        bool dsn = strcmp(k, "NOTIFY") == 0 || strcmp(k, "ORCPT") == 0;
        if (dsn && v == NULL) {
            sess_reply(s, "501 5.5.4 Bad value for parameter %s", k);
            return false;
        }
        if (!dsn) {
            sess_reply(s, "555 5.5.4 Unsupported parameter %s", k);
            return false;
        }
        if (strcmp(k, "NOTIFY") == 0) {
            unsigned notify = 0;
            char *save = NULL;
            for (char *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (strcasecmp(tok, "NEVER") == 0)
                    notify |= SMTP_NOTIFY_NEVER;
                else if (strcasecmp(tok, "SUCCESS") == 0)
                    notify |= SMTP_NOTIFY_SUCCESS;
                else if (strcasecmp(tok, "FAILURE") == 0)
                    notify |= SMTP_NOTIFY_FAILURE;
                else if (strcasecmp(tok, "DELAY") == 0)
                    notify |= SMTP_NOTIFY_DELAY;
                else
                    notify = 0xff;
            }
            /* RFC 3461 §4.1: NEVER stands alone */
            if (notify == 0 || notify == 0xff ||
                ((notify & SMTP_NOTIFY_NEVER) && notify != SMTP_NOTIFY_NEVER)) {
                sess_reply(s, "501 5.5.4 Bad value for parameter %s", k);
                return false;
            }
            c->notify = notify;
        } else {
            char *semi = strchr(v, ';');
            if (semi == NULL || semi == v || smtp_xtext_decode(semi + 1) == -1 ||
                semi[1] == '\0' || strlen(v) > 500) {
                sess_reply(s, "501 5.5.4 Bad value for parameter %s", k);
                return false;
            }
            c->orcpt = g_strdup(v);
        }
    }
    if (p->utf8 && !t->smtputf8) {
        sess_reply(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8");
        return false;
    }
    if (t->nrcpts >= s->srv->cfg->max_recipients) {
        /* RFC 5321 §4.5.3.1.10 */
        sess_reply(s, "452 4.5.3 Too many recipients");
        return false;
    }
    return true;
}

static void proceed_rcpt(struct session *s, struct cmd *c)
{
    struct smtp_txn *t = &s->txn;
    char addr[SMTP_PATH_MAX + 1];
    char r[512];
    str_copy(addr, c->path->addr, sizeof addr);
    if (s->srv->hooks.rcpt(s->srv->hooks.arg, t, c->path, addr, sizeof addr, r, sizeof r) != 0) {
        sess_reply(s, "%s", r);
        return;
    }
    /* the same mailbox twice gets one copy */
    for (size_t i = 0; i < t->nrcpts; i++) {
        if (strcmp(t->rcpts[i].addr, addr) == 0) {
            sess_reply(s, "250 2.1.5 Recipient OK");
            return;
        }
    }
    if (t->nrcpts == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 4;
        t->rcpts = g_realloc(t->rcpts, t->cap * sizeof *t->rcpts);
    }
    t->rcpts[t->nrcpts].addr = xstrdup(addr);
    t->rcpts[t->nrcpts].orig = xstrdup(c->path->addr);
    t->rcpts[t->nrcpts].notify = c->notify;
    t->rcpts[t->nrcpts].orcpt = c->orcpt ? xstrdup(c->orcpt) : NULL;
    t->nrcpts++;
    sess_reply(s, "250 2.1.5 Recipient OK");
}

/* ---- DATA, BDAT, STARTTLS, AUTH (their own files) ------------------------- */

static void proceed_data(struct session *s, struct cmd *c)
{
    (void)c;
    sess_cmd_data(s);
}

/* BDAT size [LAST] (RFC 3030 §2) */
static bool check_bdat(struct session *s, struct cmd *c)
{
    const char *args = c->args;
    char *end;
    if (!g_ascii_isdigit(*args))
        goto syntax;
    errno = 0;
    c->bdat_size = strtoull(args, &end, 10);
    if (errno != 0)
        goto syntax;
    if (*end == ' ') {
        while (*end == ' ')
            end++;
        if (strcasecmp(end, "LAST") != 0)
            goto syntax;
        c->bdat_last = true;
    } else if (*end != '\0') {
        goto syntax;
    }
    return true;
syntax:
    sess_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
    return false;
}

/* Needs RCPT too, but a refused chunk must still be read to stay in step with
 * the client: sess_cmd_bdat answers that one itself. */
static void proceed_bdat(struct session *s, struct cmd *c)
{
    sess_cmd_bdat(s, c->bdat_size, c->bdat_last);
}

static bool starttls_offered(const struct session *s)
{
    return s->lst->tls == LTLS_STARTTLS && s->srv->tls != NULL;
}

static bool auth_offered(const struct session *s) { return s->lst->auth != LAUTH_NO; }

static void proceed_starttls(struct session *s, struct cmd *c)
{
    (void)c;
    sess_cmd_starttls(s);
}

static void proceed_auth(struct session *s, struct cmd *c) { sess_cmd_auth(s, c->args); }

/* ---- RSET, NOOP, VRFY, EXPN, QUIT, HTTP, unknown ------------------------------ */

static void proceed_rset(struct session *s, struct cmd *c)
{
    (void)c;
    sess_txn_reset(s);
    sess_reply(s, "250 2.0.0 Reset state");
}

static void proceed_noop(struct session *s, struct cmd *c)
{
    (void)c;
    sess_reply(s, "250 2.0.0 OK");
}

static void proceed_vrfy(struct session *s, struct cmd *c)
{
    (void)c;
    /* rfc5321bis §3.5.3: answer conservatively */
    sess_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void proceed_expn(struct session *s, struct cmd *c)
{
    (void)c;
    /* rfc5321bis App. F: obsolete, not offered */
    sess_reply(s, "502 5.5.1 EXPN not supported");
}

static void proceed_quit(struct session *s, struct cmd *c)
{
    (void)c;
    sess_reply(s, "221 2.0.0 %s Bye", s->srv->cfg->hostname);
    session_close(s);
}

static void proceed_http(struct session *s, struct cmd *c)
{
    (void)c;
    log_info("session %s: HTTP request on the SMTP port, closing", s->ip);
    sess_reply(s, "554 5.7.0 %s This is an SMTP server, not HTTP", s->srv->cfg->hostname);
    session_close(s);
}

static void proceed_unknown(struct session *s, struct cmd *c)
{
    (void)c;
    sess_reply(s, "500 5.5.1 Command unrecognized");
}

/* ---- the table --------------------------------------------------------------- */

/* HELP lists the rows in this order; SMTP_V_UNKNOWN must be the last row. */
static const struct command commands[] = {
    {.name = "EHLO", .verb = SMTP_V_EHLO, .check = check_hello, .proceed = proceed_hello},
    {.name = "HELO", .verb = SMTP_V_HELO, .check = check_hello, .proceed = proceed_hello},
    {.name = "MAIL", .verb = SMTP_V_MAIL, .flags = CMD_PATH_LINE,
     .needs = N(GREETED) | N(NO_MAIL) | N(TLS_FIRST) | N(AUTH_FIRST),
     .refuse = {[NEED_NO_MAIL] = "503 5.5.1 Nested MAIL command"},
     .check = check_mail, .proceed = proceed_mail},
    {.name = "RCPT", .verb = SMTP_V_RCPT, .flags = CMD_PATH_LINE, .needs = N(MAIL),
     .check = check_rcpt, .proceed = proceed_rcpt},
    {.name = "DATA", .verb = SMTP_V_DATA, .needs = N(NO_ARGS) | N(NO_BDAT) | N(RCPT),
     .proceed = proceed_data},
    {.name = "BDAT", .verb = SMTP_V_BDAT, .check = check_bdat, .proceed = proceed_bdat},
    {.name = "RSET", .verb = SMTP_V_RSET, .proceed = proceed_rset},
    {.name = "NOOP", .verb = SMTP_V_NOOP, .proceed = proceed_noop},
    {.name = "QUIT", .verb = SMTP_V_QUIT, .flags = CMD_WHILE_DRAINING, .proceed = proceed_quit},
    {.name = "VRFY", .verb = SMTP_V_VRFY, .proceed = proceed_vrfy},
    {.name = "HELP", .verb = SMTP_V_HELP, .proceed = proceed_help},
    {.name = "STARTTLS", .verb = SMTP_V_STARTTLS, .needs = N(NO_ARGS) | N(NO_TLS) | N(OFFERED),
     .offered = starttls_offered, .proceed = proceed_starttls},
    {.name = "AUTH", .verb = SMTP_V_AUTH,
     .needs = N(TLS) | N(OFFERED) | N(GREETED) | N(NOT_AUTHED) | N(NO_MAIL),
     .refuse = {[NEED_TLS] = "538 5.7.11 Encryption required for requested authentication "
                             "mechanism",
                [NEED_OFFERED] = "502 5.5.1 AUTH not available on this service",
                [NEED_GREETED] = "503 5.5.1 Send EHLO first"},
     .offered = auth_offered, .proceed = proceed_auth},
    {.name = "EXPN", .verb = SMTP_V_EXPN, .flags = CMD_UNLISTED, .proceed = proceed_expn},
    {.name = "HTTP", .verb = SMTP_V_HTTP, .flags = CMD_UNLISTED, .proceed = proceed_http},
    {.name = "", .verb = SMTP_V_UNKNOWN, .flags = CMD_UNLISTED, .proceed = proceed_unknown},
};
#define ncommands (sizeof commands / sizeof commands[0])

static const struct command *command_row(enum smtp_verb verb)
{
    for (size_t i = 0; i < ncommands; i++)
        if (commands[i].verb == verb)
            return &commands[i];
    return &commands[ncommands - 1];   /* SMTP_V_UNKNOWN, the last row */
}

/* ---- EHLO and HELP ---------------------------------------------------------- */

/* The EHLO keywords in the order advertised.  A keyword of a command is
 * advertised when the command's capability preconditions hold; one of a MAIL
 * or RCPT parameter has its own. */
static const struct extension {
    const char *keyword;
    enum smtp_verb verb;       /* the command it offers, or SMTP_V_UNKNOWN */
    unsigned needs;            /* without a command: N(...) of NEEDS_CAPABILITY */
    bool with_size;            /* "SIZE <max_message_size>" */
} extensions[] = {
    {.keyword = "PIPELINING"},                             /* RFC 2920 */
    {.keyword = "SIZE", .with_size = true},                /* RFC 1870 */
    {.keyword = "8BITMIME"},                               /* RFC 6152 */
    {.keyword = "SMTPUTF8"},                               /* RFC 6531 */
    {.keyword = "ENHANCEDSTATUSCODES"},                    /* RFC 2034 */
    {.keyword = "DSN"},                                    /* RFC 3461 */
    {.keyword = "CHUNKING", .verb = SMTP_V_BDAT},          /* RFC 3030 */
    {.keyword = "STARTTLS", .verb = SMTP_V_STARTTLS},      /* RFC 3207 */
    {.keyword = "AUTH PLAIN LOGIN", .verb = SMTP_V_AUTH},  /* RFC 4954 */
    {.keyword = "REQUIRETLS", .needs = N(TLS)},            /* RFC 8689 §2: TLS sessions only */
    {.keyword = "HELP", .verb = SMTP_V_HELP},
};

static bool extension_offered(const struct session *s, const struct extension *e)
{
    if (e->verb == SMTP_V_UNKNOWN) {
        const struct command own = {.name = e->keyword, .needs = e->needs};
        return need_failed(s, &own, NEEDS_CAPABILITY, "") == NEED_COUNT;
    }
    return need_failed(s, command_row(e->verb), NEEDS_CAPABILITY, "") == NEED_COUNT;
}

static void ehlo_keywords(struct session *s)
{
    const struct config *cfg = s->srv->cfg;
    const struct extension *offered[sizeof extensions / sizeof extensions[0]];
    size_t n = 0;
    for (size_t i = 0; i < sizeof extensions / sizeof extensions[0]; i++)
        if (extension_offered(s, &extensions[i]))
            offered[n++] = &extensions[i];
    sess_reply(s, "250-%s", cfg->hostname);
    for (size_t i = 0; i < n; i++) {
        char sep = i + 1 == n ? ' ' : '-';
        if (offered[i]->with_size)
            sess_reply(s, "250%c%s %llu", sep, offered[i]->keyword,
                       (unsigned long long)cfg->max_message_size);
        else
            sess_reply(s, "250%c%s", sep, offered[i]->keyword);
    }
}

static void proceed_help(struct session *s, struct cmd *c)
{
    (void)c;
    char list[256] = "";
    size_t len = 0;
    for (size_t i = 0; i < ncommands; i++) {
        if (commands[i].flags & CMD_UNLISTED)
            continue;
        int w = snprintf(list + len, sizeof list - len, "%s%s", len ? " " : "",
                         commands[i].name);
        if (w < 0 || (size_t)w >= sizeof list - len)
            abort();   /* broken invariant: the table's names fit */
        len += (size_t)w;
    }
    sess_reply(s, "214 2.0.0 Commands: %s", list);
}


/* ---- dispatch ------------------------------------------------------------------ */

static void dispatch(struct session *s, const struct command *row, const char *args)
{
    if (s->srv->draining && !(row->flags & CMD_WHILE_DRAINING)) {
        sess_reply_nocount(s, "421 4.3.2 %s Service shutting down", s->srv->cfg->hostname);
        session_close(s);
        return;
    }
    enum need n = need_failed(s, row, ~0u, args);
    if (n != NEED_COUNT) {
        refuse(s, row, n);
        return;
    }
    struct cmd c = {.row = row, .args = args};
    if (row->check == NULL || row->check(s, &c))
        row->proceed(s, &c);
    g_free(c.path);
    g_free(c.orcpt);
}

void session_process(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    for (int guard = 0; guard < 10000; guard++) {
        if (s->state == ST_DATA || s->state == ST_BDAT) {
            if (!sess_feed_data(s, in))
                return;
            continue;
        }
        if (s->state != ST_CMD && s->state != ST_AUTH)
            return;
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return;
        /* a client that sends commands and reads no reply: its commands wait
         * until the replies drain (sess_on_write), so the output stays bounded */
        if (evbuffer_get_length(bufferevent_get_output(s->bev)) > SMTP_OUTPUT_MAX) {
            s->out_blocked = true;
            return;
        }
        /* MAIL and RCPT may carry parameters beyond 512 octets: 2048 with
         * the CRLF (checked per command below) */
        size_t max = SMTP_PATH_LINE_MAX;
        size_t look = len < max ? len : max;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        size_t linelen, consumed;
        enum smtp_line_result r = smtp_line_next(&s->lr, p, look, max, &linelen, &consumed);
        if (r == SMTP_LINE_NEED_MORE) {
            evbuffer_drain(in, consumed);
            if (consumed > 0)
                continue;   /* skipping an over-long line: look at the rest */
            return;
        }
        /* a whole line is here: the next one has timeout_command from now */
        sess_deadline(s, DL_COMMAND);
        if (r == SMTP_LINE_TOO_LONG) {
            evbuffer_drain(in, consumed);
            s->state = ST_CMD;
            sess_reply(s, "500 5.5.2 Line too long");
            continue;
        }
        if (r == SMTP_LINE_BARE_LF) {
            evbuffer_drain(in, consumed);
            s->state = ST_CMD;
            s->auth_step = AUTH_NONE;
            sess_reply(s, "500 5.5.2 Bare LF in command; only CRLF ends a line");
            continue;
        }
        char line[SMTP_PATH_LINE_MAX + 1];
        memcpy(line, p, linelen);
        line[linelen] = '\0';
        evbuffer_drain(in, consumed);
        if (memchr(line, '\0', linelen) != NULL) {
            sess_reply(s, "500 5.5.2 NUL in command");
            continue;
        }
        if (s->state == ST_AUTH) {
            sess_auth_response(s, line);
            explicit_bzero(line, sizeof line);
            continue;
        }
        struct smtp_command c;
        smtp_command_parse(line, &c);
        const struct command *row = command_row(c.verb);
        /* RFC 5321 §4.5.3.1.4: only MAIL and RCPT get the longer limit */
        if (!(row->flags & CMD_PATH_LINE) && linelen + 2 > SMTP_CMD_LINE_MAX) {
            sess_reply(s, "500 5.5.2 Line too long");
            continue;
        }
        dispatch(s, row, c.args);
    }
}
