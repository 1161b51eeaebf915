/*
 * pec_check.c - the formal checks of the access point (RFC 6109 §3.1.1) as
 * a pure function: valid RFC 5322 message, exactly one From mailbox, To
 * with at least one address, From = reverse-path, every forward-path in
 * To or Cc (so no blind copies), Bcc empty, size x recipients within the
 * limit (30 MB by law).  The result names the failed rule for the
 * non-acceptance receipt (§3.1.2).
 *
 * Also the receipt variant a delivery point gives each recipient (§3.3.2),
 * from the same parsed To and Cc.
 *
 * Interface: pec_check_submission, pec_check_rule_name, pec_receipt_variant,
 * pec_addr_equal (pec.h; pec_addr_equal lives in pec_util.c).  Addresses are
 * parsed with GMime's address-list parser (groups flattened, encoded display
 * names decoded) and compared without case (DESIGN.md).
 */
#include "pec/pec_internal.h"
#include "lib/lib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEGAL_LIMIT (30ull * 1024 * 1024)

const char *pec_check_rule_name(pec_check_rule r)
{
    switch (r) {
    case PEC_CHECK_OK: return "ok";
    case PEC_CHECK_SYNTAX: return "syntax";
    case PEC_CHECK_FROM: return "from";
    case PEC_CHECK_TO: return "to";
    case PEC_CHECK_REVERSE_PATH: return "reverse-path";
    case PEC_CHECK_FORWARD_PATH: return "forward-path";
    case PEC_CHECK_BCC: return "bcc";
    case PEC_CHECK_SIZE: return "size";
    }
    return "unknown";
}

static int failed(pec_check_result *r, pec_check_rule rule, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int failed(pec_check_result *r, pec_check_rule rule, const char *fmt, ...)
{
    r->rule = rule;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
    return -1;
}

struct addr_list {
    char **v;
    size_t n;
};

static void collect(void *ctx, const char *addr)
{
    struct addr_list *l = ctx;
    char **nv = xrealloc(l->v, (l->n + 1) * sizeof *nv);
    if (!nv)
        return;
    l->v = nv;
    if ((l->v[l->n] = xstrdup(addr)) != NULL)
        l->n++;
}

static void free_list(struct addr_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* Every header instance of name, comma-joined (To may appear twice). */
static char *all_values(GMimeObject *o, const char *name)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(o);
    GString *s = g_string_new(NULL);
    for (int i = 0; i < g_mime_header_list_get_count(hl); i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        if (g_ascii_strcasecmp(g_mime_header_get_name(h), name) == 0) {
            if (s->len)
                g_string_append(s, ", ");
            g_string_append(s, g_mime_header_get_value(h));
        }
    }
    return g_string_free(s, FALSE);
}

static bool in_list(const struct addr_list *l, const char *a)
{
    for (size_t i = 0; i < l->n; i++)
        if (pec_addr_equal(l->v[i], a))
            return true;
    return false;
}

int pec_check_submission(const pec_check_input *in, pec_check_result *r)
{
    memset(r, 0, sizeof *r);
    if (!in->msg || mime_header_end(in->msg, in->len) < 0)
        return failed(r, PEC_CHECK_SYNTAX, "the message has no header section (RFC 5322 §2.1)");
    uint64_t limit = in->max_total ? in->max_total : LEGAL_LIMIT;
    uint64_t nrcpt = in->n_forward ? in->n_forward : 1;
    if ((uint64_t)in->len > limit / nrcpt)
        return failed(r, PEC_CHECK_SIZE,
                      "size %zu bytes x %zu recipients exceeds the limit of %llu bytes",
                      in->len, in->n_forward, (unsigned long long)limit);
    GMimeMessage *m = mime_parse_message(in->msg, in->len, NULL, 0);
    if (!m)
        return failed(r, PEC_CHECK_SYNTAX, "not a valid RFC 5322 message");
    GMimeObject *o = GMIME_OBJECT(m);
    struct addr_list from = {0}, rcpt = {0};
    int rc = -1;
    char *fromv = all_values(o, "From");
    mime_each_address(fromv, collect, &from);
    g_free(fromv);
    if (from.n != 1) {
        failed(r, PEC_CHECK_FROM, "From must hold exactly one address (it has %zu)", from.n);
        goto out;
    }
    char *tov = all_values(o, "To");
    int nto = mime_each_address(tov, collect, &rcpt);
    g_free(tov);
    if (nto < 1) {
        failed(r, PEC_CHECK_TO, "To must hold at least one valid address");
        goto out;
    }
    char *ccv = all_values(o, "Cc");
    mime_each_address(ccv, collect, &rcpt);
    g_free(ccv);
    const char *bcc = mime_header(o, "Bcc");
    if (bcc && strspn(bcc, " \t\r\n") != strlen(bcc)) {
        failed(r, PEC_CHECK_BCC, "Bcc must be empty (§3.1.1)");
        goto out;
    }
    if (!in->reverse_path || !pec_addr_equal(in->reverse_path, from.v[0])) {
        failed(r, PEC_CHECK_REVERSE_PATH, "the reverse-path <%s> differs from From <%s>",
               in->reverse_path ? in->reverse_path : "", from.v[0]);
        goto out;
    }
    if (in->n_forward == 0) {
        failed(r, PEC_CHECK_FORWARD_PATH, "no forward-path");
        goto out;
    }
    for (size_t i = 0; i < in->n_forward; i++) {
        if (!in_list(&rcpt, in->forward_paths[i])) {
            failed(r, PEC_CHECK_FORWARD_PATH, "recipient <%s> is not in To or Cc (blind "
                                              "copies are not allowed)",
                   in->forward_paths[i]);
            goto out;
        }
    }
    rc = 0;
out:
    free_list(&from);
    free_list(&rcpt);
    g_object_unref(m);
    return rc;
}

/* ---- the receipt variant (§3.3.2) ------------------------------------------ */

struct find_addr {
    const char *addr;
    bool found;
};

static void find_one(void *ctx, const char *addr)
{
    struct find_addr *f = ctx;
    if (!f->found && pec_addr_equal(addr, f->addr))
        f->found = true;
}

static bool header_has(GMimeObject *o, const char *name, const char *addr)
{
    char *v = all_values(o, name);
    struct find_addr f = {.addr = addr};
    mime_each_address(v, find_one, &f);
    g_free(v);
    return f.found;
}

pec_variant pec_receipt_variant(const void *orig, size_t len, const char *rcpt, pec_variant asked)
{
    pec_variant want = asked == PEC_VARIANT_NONE ? PEC_VARIANT_COMPLETA : asked;
    /* the header section only: the body may be large and is not needed */
    long hend = orig ? mime_header_end(orig, len) : -1;
    GMimeMessage *m = hend > 0 ? mime_parse_message(orig, (size_t)hend, NULL, 0) : NULL;
    if (m == NULL)
        return want;
    /* §3.3.2.2: the requested variant for primary recipients, sintetica for
     * carbon copies; one in both (or in neither: a list re-wrapped it) is
     * treated as primary */
    bool in_cc = header_has(GMIME_OBJECT(m), "Cc", rcpt);
    bool in_to = in_cc && header_has(GMIME_OBJECT(m), "To", rcpt);
    g_object_unref(m);
    return in_cc && !in_to ? PEC_VARIANT_SINTETICA : want;
}
