/*
 * milter.c - one milter conversation for one message: option negotiation
 * (version 6 offered, 2..6 accepted), then connect, helo, mail, each rcpt,
 * data, each header, eoh, body chunks and end of message, each preceded by
 * its macros and left out or not answered as the filter asked (SMFIP_NO*,
 * SMFIP_NR_*).  Replies become a verdict; modifications (only legal at the
 * end of message) are collected into the result, bounded in number and size.
 *
 * Interface: milter.h.  Transport and packet framing: milter_proto.c.
 */
#include "filters/milter_int.h"
#include "lib/lib.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* the verdict of one step */
enum step { ST_CONTINUE, ST_ACCEPT, ST_REJECT, ST_TEMPFAIL, ST_DISCARD, ST_SKIP, ST_FAIL };

struct conv {
    int fd;
    const struct milter_spec *spec;
    const struct milter_facts *f;
    struct milter_result *res;
    unsigned io_ms, eom_ms;
    size_t msglen;
    size_t replbody;          /* octets of body replacement so far */
    size_t modcap;
    int code;                 /* the last REPLYCODE of this step */
    bool in_message;          /* MAIL reached: a cut-short message is aborted */
    char reply[512];
};

static const char *const action_names[] = {"accept", "reject", "tempfail", "discard",
                                           "quarantine", "failed"};

const char *milter_action_name(enum milter_action a)
{
    return (unsigned)a <= MILTER_FAILED ? action_names[a] : "unknown";
}

static enum step fail(struct conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static enum step fail(struct conv *c, const char *fmt, ...)
{
    if (!c->res->err[0]) {
        char why[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof why, fmt, ap);
        va_end(ap);
        str_fmt(c->res->err, sizeof c->res->err, "milter %s: %s", c->spec->name, why);
    }
    return ST_FAIL;
}

/* ---- sending ------------------------------------------------------------ */

static int send_pkt(struct conv *c, struct mbuf *b)
{
    char why[160];
    int r = milter_send(c->fd, b, c->io_ms, why, sizeof why);
    mbuf_free(b);
    if (r < 0)
        fail(c, "%s", why);
    return r;
}

static void macro(struct mbuf *b, const char *name, const char *value)
{
    if (value) {
        mbuf_str(b, name);
        mbuf_str(b, value);
    }
}

static const char *domain_of(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;
    return at ? at + 1 : NULL;
}

static void macros_connect(struct conv *c, struct mbuf *b)
{
    const struct milter_facts *f = c->f;
    char port[12], under[600];
    macro(b, "j", f->hostname);
    macro(b, "{daemon_name}", f->daemon_name);
    macro(b, "{if_addr}", f->if_addr);
    if (f->client_ip) {
        snprintf(port, sizeof port, "%u", f->client_port);
        snprintf(under, sizeof under, "%.300s [%.200s]",
                 f->client_name ? f->client_name : "", f->client_ip);
        macro(b, "_", under);
        macro(b, "{client_addr}", f->client_ip);
        macro(b, "{client_port}", port);
        macro(b, "{client_name}", f->client_name);
    } else {
        macro(b, "_", "localhost");
    }
}

static void macros_helo(struct conv *c, struct mbuf *b)
{
    char bits[12];
    if (c->f->tls_version) {
        snprintf(bits, sizeof bits, "%u", c->f->tls_cipher_bits);
        macro(b, "{tls_version}", c->f->tls_version);
        macro(b, "{cipher}", c->f->tls_cipher);
        if (c->f->tls_cipher_bits)
            macro(b, "{cipher_bits}", bits);
    }
}

static void macros_mail(struct conv *c, struct mbuf *b)
{
    const struct milter_facts *f = c->f;
    macro(b, "i", f->queue_id);
    if (f->auth_user) {
        macro(b, "{auth_authen}", f->auth_user);
        macro(b, "{auth_type}", f->auth_type);
    }
    macro(b, "{mail_mailer}", f->client_ip ? "esmtp" : "local");
    macro(b, "{mail_addr}", f->sender ? f->sender : "");
    macro(b, "{mail_host}", domain_of(f->sender));
}

/* Sends the macros for the command cmd (stages 'C','H','M','R','T','N','E'). */
static int send_macros(struct conv *c, char cmd, size_t rcpt)
{
    struct mbuf b;
    mbuf_init(&b, MC_MACRO);
    mbuf_add(&b, &cmd, 1);
    switch (cmd) {
    case MC_CONNECT: macros_connect(c, &b); break;
    case MC_HELO: macros_helo(c, &b); break;
    case MC_MAIL: macros_mail(c, &b); break;
    case MC_RCPT:
        macro(&b, "{rcpt_mailer}", "esmtp");
        macro(&b, "{rcpt_addr}", c->f->rcpts[rcpt]);
        macro(&b, "{rcpt_host}", domain_of(c->f->rcpts[rcpt]));
        break;
    case MC_BODYEOB:
        /* everything once more, for filters that skipped the early steps */
        macros_connect(c, &b);
        macros_helo(c, &b);
        macros_mail(c, &b);
        break;
    default: macro(&b, "i", c->f->queue_id); break;
    }
    return send_pkt(c, &b);
}

/* ---- replies ----------------------------------------------------------- */

static int set_reply(struct conv *c, const char *text, size_t len)
{
    /* "4xx" or "5xx", then a space, '-' or the end; printable text, lines
     * separated by CRLF (a multi-line reply) */
    if (len < 3 || (text[0] != '4' && text[0] != '5') || !isdigit((unsigned char)text[1]) ||
        !isdigit((unsigned char)text[2]) || (len > 3 && text[3] != ' ' && text[3] != '-'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        if ((ch < 32 && ch != '\r' && ch != '\n' && ch != '\t') || ch == 127)
            return -1;
    }
    c->code = (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
    snprintf(c->reply, sizeof c->reply, "%.*s", (int)len, text);
    return 0;
}

static struct milter_mod *new_mod(struct conv *c, enum milter_mod_kind kind)
{
    struct milter_result *r = c->res;
    if (r->nmods >= MILTER_MAX_MODS)
        return fail(c, "more than %u modifications", MILTER_MAX_MODS), NULL;
    if (r->nmods == c->modcap) {
        size_t cap = c->modcap ? c->modcap * 2 : 8;
        struct milter_mod *m = xrealloc(r->mods, cap * sizeof *m);
        if (!m)
            return fail(c, "%s", "out of memory"), NULL;
        r->mods = m;
        c->modcap = cap;
    }
    struct milter_mod *m = &r->mods[r->nmods++];
    memset(m, 0, sizeof *m);
    m->kind = kind;
    return m;
}

/* The NUL-terminated strings of data: *s[0..n) pointing into it; -1 if
 * fewer than want are there. */
static int strings(const char *data, size_t len, const char **s, int want)
{
    size_t off = 0;
    for (int i = 0; i < want; i++) {
        const char *nul = off < len ? memchr(data + off, '\0', len - off) : NULL;
        if (!nul)
            return -1;
        s[i] = data + off;
        off = (size_t)(nul - data) + 1;
    }
    return 0;
}

static enum step header_mod(struct conv *c, char cmd, const char *data, size_t len)
{
    const char *s[2];
    unsigned need = cmd == MR_CHGHEADER ? MF_CHGHDRS : MF_ADDHDRS;
    size_t skip = cmd == MR_ADDHEADER ? 0 : 4;
    char why[160];
    if (!(c->res->actions & need))
        return fail(c, "header change '%s' not negotiated", cmd == MR_CHGHEADER ? "m" : "h/i");
    if (len < skip || strings(data + skip, len - skip, s, 2) < 0)
        return fail(c, "%s", "malformed header modification");
    if (milter_check_header(s[0], s[1], why, sizeof why) < 0)
        return fail(c, "%s", why);
    struct milter_mod *m = new_mod(c, cmd == MR_ADDHEADER   ? MILTER_MOD_ADD_HEADER
                                      : cmd == MR_INSHEADER ? MILTER_MOD_INSERT_HEADER
                                                            : MILTER_MOD_CHANGE_HEADER);
    if (!m)
        return ST_FAIL;
    m->index = skip ? milter_get_u32(data) : 0;
    m->name = xstrdup(s[0]);
    m->value = xstrdup(s[1]);
    return m->name && m->value ? ST_CONTINUE : fail(c, "%s", "out of memory");
}

static enum step body_mod(struct conv *c, const char *data, size_t len)
{
    if (!(c->res->actions & MF_CHGBODY))
        return fail(c, "%s", "body replacement not negotiated");
    struct milter_result *r = c->res;
    struct milter_mod *m = NULL;
    for (size_t i = 0; i < r->nmods; i++)
        if (r->mods[i].kind == MILTER_MOD_REPLACE_BODY)
            m = &r->mods[i];
    if (!m && !(m = new_mod(c, MILTER_MOD_REPLACE_BODY)))
        return ST_FAIL;
    char *p = realloc(m->data, m->len + len + 1);
    if (!p)
        return fail(c, "%s", "out of memory");
    memcpy(p + m->len, data, len);
    m->data = p;
    m->len += len;
    p[m->len] = '\0';
    c->replbody += len;
    return ST_CONTINUE;
}

static enum step addr_mod(struct conv *c, char cmd, const char *data, size_t len)
{
    const char *s[1];
    unsigned need = cmd == MR_ADDRCPT ? MF_ADDRCPT | MF_ADDRCPT_PAR
                    : cmd == MR_ADDRCPT_PAR ? MF_ADDRCPT_PAR
                    : cmd == MR_DELRCPT ? MF_DELRCPT : MF_CHGFROM;
    if (!(c->res->actions & need))
        return fail(c, "envelope change '%s' not negotiated", cmd == MR_CHGFROM ? "e" : "+/-/2");
    if (strings(data, len, s, 1) < 0 || strlen(s[0]) > 998)
        return fail(c, "%s", "malformed envelope modification");
    for (const char *p = s[0]; *p; p++)
        if ((unsigned char)*p < 32 || *p == 127)
            return fail(c, "%s", "control character in an envelope address");
    struct milter_mod *m = new_mod(c, cmd == MR_DELRCPT ? MILTER_MOD_DEL_RCPT
                                      : cmd == MR_CHGFROM ? MILTER_MOD_CHANGE_FROM
                                                          : MILTER_MOD_ADD_RCPT);
    if (!m)
        return ST_FAIL;
    /* addresses come as <a@b> or a@b; keep them bare as in the facts */
    size_t n = strlen(s[0]);
    const char *a = s[0];
    if (n >= 2 && a[0] == '<' && a[n - 1] == '>')
        a++, n -= 2;
    m->value = xstrndup(a, n);
    return m->value ? ST_CONTINUE : fail(c, "%s", "out of memory");
}

static enum step modification(struct conv *c, char cmd, const char *data, size_t len)
{
    switch (cmd) {
    case MR_ADDHEADER:
    case MR_INSHEADER:
    case MR_CHGHEADER: return header_mod(c, cmd, data, len);
    case MR_REPLBODY: return body_mod(c, data, len);
    case MR_QUARANTINE:
        if (!(c->res->actions & MF_QUARANTINE))
            return fail(c, "%s", "quarantine not negotiated");
        snprintf(c->res->quarantine_reason, sizeof c->res->quarantine_reason, "%.*s",
                 (int)strnlen(data, len), data);
        for (char *p = c->res->quarantine_reason; *p; p++)
            if ((unsigned char)*p < 32 || *p == 127)
                *p = ' ';
        if (!c->res->quarantine_reason[0])
            str_copy(c->res->quarantine_reason, "quarantined by milter",
                     sizeof c->res->quarantine_reason);
        return ST_CONTINUE;
    default: return addr_mod(c, cmd, data, len);
    }
}

static bool is_mod(char cmd) { return cmd && strchr("hmibq+-2e", cmd) != NULL; }

/* One reply packet: a verdict, or ST_CONTINUE with *more for progress and
 * modifications. */
static enum step one_reply(struct conv *c, char stage, char cmd, const char *data, size_t len,
                           bool *more)
{
    *more = false;
    if (cmd == MR_PROGRESS) {
        *more = true;
        return ST_CONTINUE;
    }
    if (is_mod(cmd)) {
        if (stage != MC_BODYEOB)
            return fail(c, "modification '%c' before the end of the message", cmd);
        *more = true;
        return modification(c, cmd, data, len);
    }
    switch (cmd) {
    case MR_CONTINUE: return ST_CONTINUE;
    case MR_ACCEPT: return ST_ACCEPT;
    case MR_REJECT: c->code = 0; return ST_REJECT;
    case MR_TEMPFAIL: c->code = 0; return ST_TEMPFAIL;
    case MR_DISCARD: return ST_DISCARD;
    case MR_CONN_FAIL:
    case MR_SHUTDOWN:
        set_reply(c, "421 4.7.0 Filter shut down, try again later", 43);
        return ST_TEMPFAIL;
    case MR_SKIP:
        if (stage != MC_BODY || !(c->res->protocol & MP_SKIP))
            return fail(c, "%s", "SKIP outside the body or not negotiated");
        return ST_SKIP;
    case MR_REPLYCODE:
        if (set_reply(c, data, strnlen(data, len)) < 0)
            return fail(c, "%s", "malformed reply code");
        return c->code >= 500 ? ST_REJECT : ST_TEMPFAIL;
    default: {
        return fail(c, "unknown reply 0x%02x", (unsigned char)cmd);
    }
    }
}

/* Waits for the answer to stage: progress and modifications are taken in,
 * the first verdict ends the wait. */
static enum step await(struct conv *c, char stage)
{
    unsigned ms = stage == MC_BODYEOB ? c->eom_ms : c->io_ms;
    for (;;) {
        char cmd, *data, why[160];
        size_t len, max = MILTER_MAX_PACKET;
        if (stage == MC_BODYEOB) {
            /* a replaced body may reach twice the original plus 1 MiB in all */
            size_t limit = c->msglen * 2 + MILTER_MAX_PACKET;
            max = limit - c->replbody > max ? limit - c->replbody : max;
        }
        if (milter_recv(c->fd, ms, max, &cmd, &data, &len, why, sizeof why) < 0)
            return fail(c, "%s", why);
        if (cmd == MR_REPLBODY && c->replbody + len > c->msglen * 2 + MILTER_MAX_PACKET) {
            free(data);
            return fail(c, "%s", "body replacement over the limit (twice the message + 1 MiB)");
        }
        if (cmd != MR_REPLBODY && len > MILTER_MAX_PACKET) {
            free(data);
            return fail(c, "%s", "packet over 1 MiB");
        }
        bool more;
        enum step s = one_reply(c, stage, cmd, data, len, &more);
        free(data);
        if (s == ST_FAIL || !more)
            return s;
    }
}

/* Sends a command and, unless the filter said it will not answer, waits. */
static enum step step(struct conv *c, struct mbuf *b, char stage, unsigned nr_flag)
{
    c->code = 0;
    c->reply[0] = '\0';
    if (send_pkt(c, b) < 0)
        return ST_FAIL;
    if (nr_flag && (c->res->protocol & nr_flag))
        return ST_CONTINUE;
    return await(c, stage);
}

/* ---- the steps ------------------------------------------------------------ */

static enum step negotiate(struct conv *c)
{
    struct mbuf b;
    char cmd, *data, why[160];
    size_t len;
    mbuf_init(&b, MC_OPTNEG);
    mbuf_u32(&b, MILTER_VERSION);
    mbuf_u32(&b, MF_OFFERED);
    mbuf_u32(&b, MP_OFFERED);
    if (send_pkt(c, &b) < 0)
        return ST_FAIL;
    if (milter_recv(c->fd, c->io_ms, MILTER_MAX_PACKET, &cmd, &data, &len, why, sizeof why) < 0)
        return fail(c, "negotiation: %s", why);
    if (cmd != MC_OPTNEG || len < 12) {
        free(data);
        return fail(c, "%s", "negotiation: not an option reply");
    }
    /* anything after the three words (a macro list) is not asked for: ignored */
    uint32_t v = milter_get_u32(data), act = milter_get_u32(data + 4),
             proto = milter_get_u32(data + 8);
    free(data);
    snprintf(why, sizeof why, "version %u, actions 0x%x, steps 0x%x", v, act, proto);
    if (v < MILTER_MIN_VERSION || v > MILTER_VERSION)
        return fail(c, "negotiation: unsupported %s", why);
    if ((act & ~MF_OFFERED) || (proto & ~MP_OFFERED))
        return fail(c, "negotiation: filter asks for more than offered (%s)", why);
    c->res->version = v;
    c->res->actions = act;
    c->res->protocol = proto;
    return ST_CONTINUE;
}

static enum step do_connect(struct conv *c)
{
    const struct milter_facts *f = c->f;
    struct mbuf b;
    if (send_macros(c, MC_CONNECT, 0) < 0)
        return ST_FAIL;
    mbuf_init(&b, MC_CONNECT);
    mbuf_str(&b, f->client_name ? f->client_name : f->client_ip ? f->client_ip : "localhost");
    if (f->client_ip) {
        mbuf_add(&b, strchr(f->client_ip, ':') ? "6" : "4", 1);
        mbuf_u16(&b, (uint16_t)f->client_port);
        mbuf_str(&b, f->client_ip);
    } else {
        mbuf_add(&b, "U", 1);    /* locally produced: no address */
    }
    return step(c, &b, MC_CONNECT, MP_NR_CONN);
}

static enum step do_string(struct conv *c, char cmd, const char *s, bool angle, size_t rcpt,
                           unsigned nr)
{
    struct mbuf b;
    if (send_macros(c, cmd, rcpt) < 0)
        return ST_FAIL;
    mbuf_init(&b, cmd);
    if (angle) {
        mbuf_add(&b, "<", 1);
        mbuf_add(&b, s, strlen(s));
        mbuf_str(&b, ">");
    } else {
        mbuf_str(&b, s);
    }
    return step(c, &b, cmd, nr);
}

static void record_refusal(struct conv *c, size_t i, enum step s)
{
    struct milter_result *r = c->res;
    struct milter_refusal *n = xrealloc(r->refused, (r->nrefused + 1) * sizeof *n);
    if (!n)
        return;
    r->refused = n;
    n += r->nrefused++;
    n->rcpt = i;
    n->smtp_code = c->code ? c->code : s == ST_REJECT ? 550 : 451;
    str_copy(n->reply, c->reply[0] ? c->reply
                       : s == ST_REJECT ? "550 5.7.1 Command rejected"
                                        : "451 4.7.1 Service unavailable - try again later",
             sizeof n->reply);
}

static enum step do_rcpts(struct conv *c)
{
    const struct milter_facts *f = c->f;
    for (size_t i = 0; i < f->nrcpts; i++) {
        enum step s = do_string(c, MC_RCPT, f->rcpts[i] ? f->rcpts[i] : "", true, i, MP_NR_RCPT);
        if (s == ST_REJECT || s == ST_TEMPFAIL)
            record_refusal(c, i, s);
        else if (s != ST_CONTINUE)
            return s;
    }
    struct milter_result *r = c->res;
    if (f->nrcpts == 0 || r->nrefused < f->nrcpts)
        return ST_CONTINUE;
    /* every recipient refused: the message is, with the first refusal of
     * the class that wins (any temporary one lets the sender retry) */
    const struct milter_refusal *pick = NULL;
    for (size_t i = 0; i < r->nrefused && !pick; i++)
        if (r->refused[i].smtp_code < 500)
            pick = &r->refused[i];
    if (!pick)
        pick = &r->refused[0];
    c->code = pick->smtp_code;
    str_copy(c->reply, pick->reply, sizeof c->reply);
    return pick->smtp_code < 500 ? ST_TEMPFAIL : ST_REJECT;
}

/* The end of the header section: offset of the body (after the blank line). */
static size_t header_end(const char *msg, size_t len, size_t *hdrlen)
{
    if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
        return *hdrlen = 0, 2;
    const char *e = memmem(msg, len, "\r\n\r\n", 4);
    if (!e)
        return *hdrlen = len, len;
    *hdrlen = (size_t)(e - msg) + 2;
    return *hdrlen + 2;
}

/* Sends one header field: name, then the value after the colon without its
 * leading white space, folds kept with LF line ends (as libmilter expects). */
static enum step send_field(struct conv *c, const char *p, size_t n)
{
    const char *colon = memchr(p, ':', n);
    if (!colon || colon == p)
        return ST_CONTINUE;    /* not a field (no name): nothing to show */
    struct mbuf b;
    mbuf_init(&b, MC_HEADER);
    size_t nl = (size_t)(colon - p);
    while (nl > 0 && (p[nl - 1] == ' ' || p[nl - 1] == '\t'))
        nl--;
    mbuf_add(&b, p, nl);
    mbuf_add(&b, "", 1);
    const char *v = colon + 1, *end = p + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n'))
        end--;
    for (const char *q = v; q < end; q++)
        if (!(*q == '\r' && q + 1 < end && q[1] == '\n'))
            mbuf_add(&b, q, 1);
    mbuf_add(&b, "", 1);
    return step(c, &b, MC_HEADER, MP_NR_HDR);
}

static enum step do_headers(struct conv *c, const char *msg, size_t hdrlen)
{
    size_t start = 0, pos = 0;
    while (pos < hdrlen) {
        const char *nl = memchr(msg + pos, '\n', hdrlen - pos);
        size_t next = nl ? (size_t)(nl - msg) + 1 : hdrlen;
        /* a field ends where the next line does not start with white space */
        if (next >= hdrlen || (msg[next] != ' ' && msg[next] != '\t')) {
            enum step s = send_field(c, msg + start, next - start);
            if (s != ST_CONTINUE)
                return s;
            start = next;
        }
        pos = next;
    }
    return ST_CONTINUE;
}

static enum step do_body(struct conv *c, const char *body, size_t n)
{
    for (size_t off = 0; off < n; off += MILTER_CHUNK) {
        struct mbuf b;
        mbuf_init(&b, MC_BODY);
        mbuf_add(&b, body + off, n - off < MILTER_CHUNK ? n - off : MILTER_CHUNK);
        enum step s = step(c, &b, MC_BODY, MP_NR_BODY);
        if (s == ST_SKIP)
            return ST_CONTINUE;
        if (s != ST_CONTINUE)
            return s;
    }
    return ST_CONTINUE;
}

static enum step do_message(struct conv *c, const char *msg, size_t len)
{
    unsigned p = c->res->protocol;
    size_t hdrlen, body = header_end(msg, len, &hdrlen);
    enum step s;
    if (c->f->nrcpts && (!c->f->rcpts))
        return fail(c, "%s", "recipients missing");
    if (!(p & MP_NOCONNECT) && (s = do_connect(c)) != ST_CONTINUE)
        return s;
    if (!(p & MP_NOHELO) && c->f->helo &&
        (s = do_string(c, MC_HELO, c->f->helo, false, 0, MP_NR_HELO)) != ST_CONTINUE)
        return s;
    c->in_message = true;
    if (!(p & MP_NOMAIL) && (s = do_string(c, MC_MAIL, c->f->sender ? c->f->sender : "", true,
                                           0, MP_NR_MAIL)) != ST_CONTINUE)
        return s;
    if (!(p & MP_NORCPT) && (s = do_rcpts(c)) != ST_CONTINUE)
        return s;
    struct mbuf b;
    if (c->res->version >= 4 && !(p & MP_NODATA)) {   /* DATA came with version 4 */
        if (send_macros(c, MC_DATA, 0) < 0)
            return ST_FAIL;
        mbuf_init(&b, MC_DATA);
        if ((s = step(c, &b, MC_DATA, MP_NR_DATA)) != ST_CONTINUE)
            return s;
    }
    if (!(p & MP_NOHDRS) && (s = do_headers(c, msg, hdrlen)) != ST_CONTINUE)
        return s;
    if (!(p & MP_NOEOH)) {
        if (send_macros(c, MC_EOH, 0) < 0)
            return ST_FAIL;
        mbuf_init(&b, MC_EOH);
        if ((s = step(c, &b, MC_EOH, MP_NR_EOH)) != ST_CONTINUE)
            return s;
    }
    if (!(p & MP_NOBODY) && (s = do_body(c, msg + body, len - body)) != ST_CONTINUE)
        return s;
    if (send_macros(c, MC_BODYEOB, 0) < 0)
        return ST_FAIL;
    mbuf_init(&b, MC_BODYEOB);
    s = step(c, &b, MC_BODYEOB, 0);
    return s == ST_SKIP ? ST_CONTINUE : s;
}

static void free_mods(struct milter_result *r)
{
    for (size_t i = 0; i < r->nmods; i++) {
        free(r->mods[i].name);
        free(r->mods[i].value);
        free(r->mods[i].data);
    }
    free(r->mods);
    r->mods = NULL;
    r->nmods = 0;
}

static void finish(struct conv *c, enum step s)
{
    struct milter_result *r = c->res;
    const char *def = NULL;
    switch (s) {
    case ST_CONTINUE:
    case ST_ACCEPT:
    case ST_SKIP:
        r->action = r->quarantine_reason[0] ? MILTER_QUARANTINE : MILTER_ACCEPT;
        return;
    case ST_REJECT:
        r->action = MILTER_REJECT;
        def = "550 5.7.1 Command rejected";
        break;
    case ST_TEMPFAIL:
        r->action = MILTER_TEMPFAIL;
        def = "451 4.7.1 Service unavailable - try again later";
        break;
    case ST_DISCARD: r->action = MILTER_DISCARD; break;
    case ST_FAIL: r->action = MILTER_FAILED; break;
    }
    if (def) {
        r->smtp_code = c->code ? c->code : atoi(def);
        str_copy(r->reply, c->reply[0] ? c->reply : def, sizeof r->reply);
    }
    /* the message is not passed on: its modifications do not matter */
    free_mods(r);
    r->quarantine_reason[0] = '\0';
}

int milter_run_fd(const struct milter_spec *spec, int fd, const struct milter_facts *facts,
                  const char *msg, size_t len, struct milter_result *res)
{
    if (!spec || !facts || !res || (!msg && len))
        return -1;
    memset(res, 0, sizeof *res);
    struct conv c = {
        .fd = fd, .spec = spec, .f = facts, .res = res, .msglen = len,
        .io_ms = spec->io_timeout_ms ? spec->io_timeout_ms : MILTER_DEF_IO_MS,
        .eom_ms = spec->eom_timeout_ms ? spec->eom_timeout_ms : MILTER_DEF_EOM_MS,
    };
    enum step s = negotiate(&c);
    if (s == ST_CONTINUE)
        s = do_message(&c, msg ? msg : "", len);
    finish(&c, s);
    if (s != ST_FAIL) {
        /* close politely; a message cut short is aborted first.  Errors here
         * change nothing: the verdict is in. */
        char why[160];
        struct mbuf b;
        if (c.in_message && (s == ST_REJECT || s == ST_TEMPFAIL || s == ST_DISCARD)) {
            mbuf_init(&b, MC_ABORT);
            milter_send(fd, &b, c.io_ms, why, sizeof why);
            mbuf_free(&b);
        }
        mbuf_init(&b, MC_QUIT);
        milter_send(fd, &b, c.io_ms, why, sizeof why);
        mbuf_free(&b);
    }
    return 0;
}

int milter_run(const struct milter_spec *spec, const struct milter_facts *facts, const char *msg,
               size_t len, struct milter_result *res)
{
    if (!spec || !res)
        return -1;
    char err[sizeof res->err];
    int fd = milter_connect(spec, err, sizeof err);
    if (fd < 0) {
        memset(res, 0, sizeof *res);
        res->action = MILTER_FAILED;
        str_copy(res->err, err, sizeof res->err);
        return 0;
    }
    int r = milter_run_fd(spec, fd, facts, msg, len, res);
    close(fd);
    return r;
}

void milter_result_free(struct milter_result *res)
{
    if (!res)
        return;
    free_mods(res);
    free(res->refused);
    res->refused = NULL;
    res->nrefused = 0;
}
