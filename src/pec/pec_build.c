/*
 * pec_build.c - builds every PEC message of RFC 6109 §3 with the layout of
 * §4.3 (digest §1.2):
 *
 *   multipart/signed                                  (pec_sign.c)
 *   └ multipart/mixed
 *     ├ multipart/alternative { text/plain, text/html }   (text/plain only
 *     │                                                    for the anomaly)
 *     ├ application/xml  daticert.xml   (not in the anomaly envelope, §3.2.2)
 *     └ message/rfc822   postacert.eml  (envelopes, the anomaly, completa, breve)
 *
 * Leaf parts are built and encoded by GMime; the multipart/mixed around
 * them is assembled here so that the original message is embedded byte for
 * byte (§3.1.5: "unmodified"), which a parse/re-serialise cycle cannot
 * promise.  Header fields copied from the original (Received, To, Cc,
 * Return-Path, Reply-To; Message-ID for the anomaly) are copied as raw
 * bytes for the same reason (pec_header.c).
 *
 * Interface: pec_build, pec_build_n, pec_build_unsigned (pec.h).
 */
#include "pec/pec_internal.h"
#include "lib/lib.h"
#include "pec/pec_header.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/rand.h>

/* Facts of the original message, taken from its header block. */
struct orig_facts {
    char *subject;           /* decoded */
    char *reply_to;          /* first address */
    char *msgid;             /* its Message-ID, with < > */
    char *xref;              /* its X-Riferimento-Message-ID (postacert.eml of an envelope) */
    char *clean_subject;     /* the subject used, without control characters */
};

static void orig_facts_free(struct orig_facts *o)
{
    free(o->subject);
    free(o->reply_to);
    free(o->msgid);
    free(o->xref);
    free(o->clean_subject);
    memset(o, 0, sizeof *o);
}

/* The facts of the last header block each thread read: a stage builds
 * several messages from one original (the acceptance receipt and the
 * envelope; the takeover and the delivery receipt), and reading the block
 * with GMime costs more than keeping a copy to compare with. */
#define FACTS_MEMO_MAX (64 * 1024)
struct facts_memo {
    char *hdr;
    size_t hlen;
    struct orig_facts f;
};

static void facts_memo_free(gpointer p)
{
    struct facts_memo *m = p;
    free(m->hdr);
    orig_facts_free(&m->f);
    free(m);
}

static GPrivate facts_memo_key = G_PRIVATE_INIT(facts_memo_free);

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static void orig_facts_copy(struct orig_facts *to, const struct orig_facts *from)
{
    to->subject = dup_or_null(from->subject);
    to->reply_to = dup_or_null(from->reply_to);
    to->msgid = dup_or_null(from->msgid);
    to->xref = dup_or_null(from->xref);
    to->clean_subject = NULL;
}

static int orig_facts_parse(const char *hdr, size_t hlen, struct orig_facts *o, char *err,
                            size_t errsz)
{
    GMimeMessage *msg = mime_parse_message(hdr, hlen, err, errsz);
    if (!msg)
        return -1;
    GMimeObject *m = GMIME_OBJECT(msg);
    o->subject = dup_or_null(mime_header(m, "Subject"));
    o->reply_to = mime_first_address(mime_header(m, "Reply-To"));
    const char *xref = mime_header(m, "X-Riferimento-Message-ID");
    if (xref && *xref)
        o->xref = pec_strdup_trim(xref);
    const char *mid = g_mime_message_get_message_id(msg);
    if (mid && *mid) {
        size_t n = strlen(mid) + 3;
        o->msgid = malloc(n);
        if (o->msgid)
            snprintf(o->msgid, n, "<%s>", mid);
    }
    g_object_unref(msg);
    return 0;
}

static int orig_facts_load(const pec_build_args *a, struct orig_facts *o, char *err, size_t errsz)
{
    memset(o, 0, sizeof *o);
    if (!a->original || !a->original_len)
        return 0;
    /* only the header block is needed here: do not parse the body */
    long hend = mime_header_end(a->original, a->original_len);
    size_t hlen = hend > 0 ? (size_t)hend : a->original_len;
    struct facts_memo *memo = g_private_get(&facts_memo_key);
    if (memo && memo->hdr && memo->hlen == hlen && memcmp(memo->hdr, a->original, hlen) == 0) {
        orig_facts_copy(o, &memo->f);
        return 0;
    }
    if (orig_facts_parse(a->original, hlen, o, err, errsz) < 0)
        return -1;
    if (hlen > FACTS_MEMO_MAX)
        return 0;
    if (memo == NULL) {
        memo = xcalloc(1, sizeof *memo);
        if (memo == NULL)
            return 0;
        g_private_set(&facts_memo_key, memo);
    }
    free(memo->hdr);
    orig_facts_free(&memo->f);
    memo->hdr = malloc(hlen);
    memo->hlen = memo->hdr ? hlen : 0;
    if (memo->hdr) {
        memcpy(memo->hdr, a->original, hlen);
        orig_facts_copy(&memo->f, o);
    }
    return 0;
}

static bool has_original(const pec_build_args *a)
{
    switch (a->type) {
    case PEC_TYPE_POSTA_CERTIFICATA:
    case PEC_TYPE_ANOMALIA:
        return true;
    case PEC_TYPE_AVVENUTA_CONSEGNA:
        return a->variant == PEC_VARIANT_COMPLETA || a->variant == PEC_VARIANT_BREVE;
    default:
        return false;
    }
}

static const char *subject_prefix(const pec_build_args *a)
{
    /* Exact prefixes of §3 (digest §1; D11 for the timeout notice) */
    bool virus = a->errore == PEC_ERRORE_VIRUS;
    switch (a->type) {
    case PEC_TYPE_POSTA_CERTIFICATA: return "POSTA CERTIFICATA: ";
    case PEC_TYPE_ANOMALIA: return "ANOMALIA MESSAGGIO: ";
    case PEC_TYPE_ACCETTAZIONE: return "ACCETTAZIONE: ";
    case PEC_TYPE_NON_ACCETTAZIONE:
        return virus ? "AVVISO DI NON ACCETTAZIONE PER VIRUS: " : "AVVISO DI NON ACCETTAZIONE: ";
    case PEC_TYPE_PRESA_IN_CARICO: return "PRESA IN CARICO: ";
    case PEC_TYPE_AVVENUTA_CONSEGNA: return "CONSEGNA: ";
    case PEC_TYPE_ERRORE_CONSEGNA:
        return virus ? "AVVISO DI MANCATA CONSEGNA PER VIRUS: " : "AVVISO DI MANCATA CONSEGNA: ";
    case PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA:
        return "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ";
    case PEC_TYPE_RILEVAZIONE_VIRUS: return "PROBLEMA DI SICUREZZA: ";
    default: return "";
    }
}

static pec_errore default_errore(const pec_build_args *a)
{
    /* DESIGN.md: formal non-acceptance and timeout notices "altro",
     * virus detection "virus" */
    switch (a->type) {
    case PEC_TYPE_NON_ACCETTAZIONE:
    case PEC_TYPE_ERRORE_CONSEGNA:
    case PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA:
        return a->errore == PEC_ERRORE_NESSUNO ? PEC_ERRORE_ALTRO : a->errore;
    case PEC_TYPE_RILEVAZIONE_VIRUS:
        return PEC_ERRORE_VIRUS;
    default:
        return PEC_ERRORE_NESSUNO;
    }
}

/* Fills d (borrowing strings from a and o). */
static int fill_daticert(const pec_identity *id, const pec_build_args *a,
                         struct orig_facts *o, pec_daticert *d, char *err, size_t errsz)
{
    memset(d, 0, sizeof *d);
    d->tipo = a->type;
    d->errore = default_errore(a);
    d->mittente = (char *)a->sender;
    d->destinatari = (pec_recipient *)a->recipients;
    d->n_destinatari = a->n_recipients;
    d->risposte = (char *)(a->reply_to ? a->reply_to : o->reply_to ? o->reply_to : a->sender);
    const char *subj = a->subject ? a->subject : o->subject;
    if (subj) {
        /* a decoded subject must not smuggle line breaks into headers or text */
        o->clean_subject = xstrdup(subj);
        if (!o->clean_subject)
            return pec_err(err, errsz, "out of memory");
        for (char *q = o->clean_subject; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f)
                *q = ' ';
    }
    d->oggetto = o->clean_subject;
    d->gestore_emittente = (char *)id->name;
    pec_daticert_set_time(d, a->when);
    d->identificativo = (char *)a->pec_id;
    /* §2.2.1: the client's msgid.  In the user's own message (what the
     * access point and the anomaly envelope are built from) that is its
     * Message-ID: an X-Riferimento-Message-ID the sender wrote there is not
     * ours and is ignored.  The original of a delivery receipt is the
     * postacert.eml of an envelope, whose Message-ID is the PEC msgid and
     * whose X-Riferimento-Message-ID the sending access point wrote. */
    bool from_envelope = a->type == PEC_TYPE_AVVENUTA_CONSEGNA ||
                         a->type == PEC_TYPE_ERRORE_CONSEGNA;
    d->msgid = (char *)(a->orig_msgid                   ? a->orig_msgid
                        : from_envelope && o->xref      ? o->xref
                                                        : o->msgid);
    if (a->type == PEC_TYPE_POSTA_CERTIFICATA || a->type == PEC_TYPE_AVVENUTA_CONSEGNA)
        d->ricevuta = a->variant == PEC_VARIANT_NONE ? PEC_VARIANT_COMPLETA : a->variant;
    switch (a->type) {
    case PEC_TYPE_AVVENUTA_CONSEGNA:
    case PEC_TYPE_ERRORE_CONSEGNA:
    case PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA:
    case PEC_TYPE_RILEVAZIONE_VIRUS:
        if (!a->consegna)
            return pec_err(err, errsz, "%s needs the recipient (consegna)",
                           pec_type_name(a->type));
        d->consegna = (char *)a->consegna;
        break;
    case PEC_TYPE_PRESA_IN_CARICO:
        if (!a->n_ricezione)
            return pec_err(err, errsz, "presa-in-carico needs the recipients covered (§3.2.1)");
        d->ricezione = (char **)a->ricezione;
        d->n_ricezione = a->n_ricezione;
        break;
    default:
        break;
    }
    if (d->errore != PEC_ERRORE_NESSUNO)
        d->errore_esteso = (char *)a->errore_esteso;
    if (!a->sender || !a->n_recipients || !a->pec_id)
        return pec_err(err, errsz, "sender, recipients and the PEC msgid are required");
    return 0;
}

/* ---- the multipart/mixed entity ------------------------------------------- */

static void make_boundary(char *buf, size_t size, const char *tag)
{
    unsigned char rnd[12];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 0x5a, sizeof rnd);
    char hex[2 * sizeof rnd + 1];
    pec_hex(rnd, sizeof rnd, hex);
    /* "=_" cannot occur in base64 or quoted-printable text (RFC 2046 §5.1.1) */
    snprintf(buf, size, "----------=_%s-%ld-%s", tag, (long)getpid(), hex);
}

static int add_leaf(mime_buf *out, GMimeObject *part)
{
    int rc = mime_write(part, out);
    g_object_unref(part);
    return rc;
}

static GMimeObject *text_leaf(const char *subtype, const mime_buf *text)
{
    GMimeTextPart *t = g_mime_text_part_new_with_subtype(subtype);
    /* GMime picks the smallest charset (us-ascii, iso-8859-1 or utf-8);
     * §4.3: non-ASCII parts are sent 7-bit, here quoted-printable */
    g_mime_text_part_set_text(t, (const char *)text->data);
    g_mime_part_set_content_encoding(GMIME_PART(t), GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
    g_mime_object_set_content_disposition(GMIME_OBJECT(t),
                                          g_mime_content_disposition_parse(NULL, "inline"));
    return GMIME_OBJECT(t);
}

int pec_text_leaf_write(mime_buf *out, const char *subtype, const char *text)
{
    size_t len = strlen(text);
    if (!g_utf8_validate(text, (gssize)len, NULL)) {
        /* GMime's charset filter decides what invalid bytes become */
        mime_buf t = {.data = (unsigned char *)text, .len = len};
        return add_leaf(out, text_leaf(subtype, &t));
    }
    /* the charset GMime's text part would pick: level 0 all ASCII, 1 all
     * below U+0100, 2 anything else */
    GMimeCharset cs;
    g_mime_charset_init(&cs);
    g_mime_charset_step(&cs, text, len);
    const char *charset = cs.level == 0 ? "us-ascii" : cs.level == 1 ? "iso-8859-1" : "utf-8";
    char *latin1 = NULL;
    const char *s = text;
    if (cs.level == 1) {
        /* every character is below U+0100: one or two UTF-8 bytes each */
        latin1 = malloc(len ? len : 1);
        if (latin1 == NULL)
            return -1;
        size_t n = 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)text[i];
            if (c < 0x80) {
                latin1[n++] = (char)c;
            } else {
                latin1[n++] = (char)(((c & 0x03) << 6) | ((unsigned char)text[i + 1] & 0x3f));
                i++;
            }
        }
        s = latin1;
        len = n;
    }
    GMimeEncoding enc;
    g_mime_encoding_init_encode(&enc, GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
    char *qp = malloc(g_mime_encoding_outlen(&enc, len) + 16);
    int rc = -1;
    if (qp != NULL) {
        size_t qn = g_mime_encoding_flush(&enc, s, len, qp);
        rc = mime_buf_addf(out,
                           "Content-Type: text/%s; charset=%s\r\n"
                           "Content-Transfer-Encoding: quoted-printable\r\n"
                           "Content-Disposition: inline\r\n\r\n",
                           subtype, charset) < 0 ||
                     mime_to_crlf(qp, qn, out) < 0
                 ? -1
                 : 0;
    }
    free(qp);
    free(latin1);
    return rc;
}

/* The text of a receipt or envelope: text/plain and text/html in a
 * multipart/alternative, written directly (the bytes GMime's objects would
 * give, tests/unit/pec/test_build.c compares them; building and writing the
 * objects took a third of pec_build's time without the signature). */
static int add_text_parts(mime_buf *out, const pec_identity *id, const pec_build_args *a,
                          const pec_daticert *d)
{
    mime_buf plain = {0}, html = {0};
    if (pec_text_render(id, a, d, &plain, &html) < 0)
        return -1;
    const char *pt = plain.data ? (const char *)plain.data : "";
    const char *ht = html.data ? (const char *)html.data : "";
    int rc;
    if (a->type == PEC_TYPE_ANOMALIA) {
        /* §3.2.2: the anomaly envelope holds only the text and the message */
        rc = pec_text_leaf_write(out, "plain", pt);
    } else {
        char b[96];
        make_boundary(b, sizeof b, "alt");
        /* the boundary is long enough that GMime always folds this header */
        rc = mime_buf_addf(out, "Content-Type: multipart/alternative;\r\n\tboundary=\"%s\"\r\n"
                                "\r\n--%s\r\n", b, b) < 0 ||
                     pec_text_leaf_write(out, "plain", pt) < 0 ||
                     mime_buf_addf(out, "\r\n--%s\r\n", b) < 0 ||
                     pec_text_leaf_write(out, "html", ht) < 0 ||
                     mime_buf_addf(out, "\r\n--%s--\r\n", b) < 0
                 ? -1
                 : 0;
    }
    mime_buf_free(&plain);
    mime_buf_free(&html);
    return rc;
}

static int add_daticert_part(mime_buf *out, const pec_daticert *d, char *err, size_t errsz)
{
    pec_buf xml;
    if (pec_daticert_build(d, &xml, err, errsz) < 0)
        return -1;
    /* [obs] application/xml, base64, inline; UTF-8 (§4.3.3, D1) */
    int rc = mime_buf_adds(out, "Content-Type: application/xml; name=\"daticert.xml\"\r\n"
                                "Content-Disposition: inline; filename=\"daticert.xml\"\r\n"
                                "Content-Transfer-Encoding: base64\r\n\r\n");
    rc |= mime_buf_add_base64(out, xml.data, xml.len);
    pec_buf_free(&xml);
    return rc ? -1 : 0;
}

static bool has_8bit(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] & 0x80)
            return true;
    return false;
}

static int add_message_part(mime_buf *out, const pec_build_args *a, char *err, size_t errsz)
{
    mime_buf raw = {0};
    int rc = -1;
    if (a->type == PEC_TYPE_POSTA_CERTIFICATA) {
        pec_buf rw;
        if (pec_original_rewrite(a->original, a->original_len, a->pec_id, &rw, err, errsz) < 0)
            return -1;
        rc = mime_to_crlf(rw.data, rw.len, &raw);
        pec_buf_free(&rw);
    } else if (a->type == PEC_TYPE_AVVENUTA_CONSEGNA && a->variant == PEC_VARIANT_BREVE) {
        pec_buf br;
        if (pec_breve_transform(a->original, a->original_len, &br, err, errsz) < 0)
            return -1;
        rc = mime_to_crlf(br.data, br.len, &raw);
        pec_buf_free(&br);
    } else {
        rc = mime_to_crlf(a->original, a->original_len, &raw);
    }
    if (rc < 0)
        goto out;
    /* RFC 2046 §5.2.1: message/rfc822 is 7bit or 8bit, never re-encoded.
     * RFC 6109 §4.3.2: the original is postacert.eml in every message that
     * carries it, the anomaly envelope (§3.2.2) included; PEC clients look
     * for that name. */
    rc = mime_buf_addf(out, "Content-Type: message/rfc822; name=\"postacert.eml\"\r\n"
                            "Content-Disposition: inline; filename=\"postacert.eml\"\r\n%s\r\n",
                       has_8bit(raw.data, raw.len) ? "Content-Transfer-Encoding: 8bit\r\n" : "");
    rc |= mime_buf_add(out, raw.data, raw.len);
    if (raw.len < 2 || memcmp(raw.data + raw.len - 2, "\r\n", 2) != 0)
        rc |= mime_buf_add(out, "\r\n", 2);
    if (rc)
        pec_err(err, errsz, "out of memory");
out:
    mime_buf_free(&raw);
    return rc ? -1 : 0;
}

static int build_body(const pec_identity *id, const pec_build_args *a, const pec_daticert *d,
                      mime_buf *body, char *err, size_t errsz)
{
    char b[96];
    make_boundary(b, sizeof b, "pec");
    mime_buf parts[3] = {{0}, {0}, {0}};
    size_t n = 0;
    int rc = -1;
    if (add_text_parts(&parts[n++], id, a, d) < 0) {
        pec_err(err, errsz, "cannot render the text part");
        goto out;
    }
    /* [obs] daticert.xml before postacert.eml (§4.3 allows either order) */
    if (a->type != PEC_TYPE_ANOMALIA && add_daticert_part(&parts[n++], d, err, errsz) < 0)
        goto out;
    if (has_original(a)) {
        if (!a->original || !a->original_len) {
            pec_err(err, errsz, "%s needs the original message", pec_type_name(a->type));
            goto out;
        }
        if (add_message_part(&parts[n++], a, err, errsz) < 0)
            goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (memmem(parts[i].data, parts[i].len, b, strlen(b))) {
            pec_err(err, errsz, "boundary collision");
            goto out;
        }
    }
    rc = mime_buf_addf(body, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n"
                             "This is a multi-part message in MIME format.\r\n",
                       b);
    for (size_t i = 0; i < n; i++) {
        rc |= mime_buf_addf(body, "\r\n--%s\r\n", b);
        rc |= mime_buf_add(body, parts[i].data, parts[i].len);
    }
    rc |= mime_buf_addf(body, "\r\n--%s--\r\n", b);
    if (rc)
        pec_err(err, errsz, "out of memory");
out:
    for (size_t i = 0; i < n; i++)
        mime_buf_free(&parts[i]);
    return rc ? -1 : 0;
}

/* ---- the header block ------------------------------------------------------ */

static int add_date(mime_buf *h, time_t t)
{
    struct tm tm;
    pec_legal_time(t, &tm);
    static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    long off = tm.tm_gmtoff;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    /* RFC 5322 §3.3, fixed English names whatever the locale */
    return mime_buf_addf(h, "Date: %s, %d %s %d %02d:%02d:%02d %c%02ld%02ld\r\n", wd[tm.tm_wday],
                         tm.tm_mday, mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, sign, off / 3600, (off / 60) % 60);
}

/* An addr-spec safe to put between < > or in a quoted string. */
static bool addr_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 320)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == '"' || *p == '\\' ||
            *p == 0x7f)
            return false;
    return strchr(s, '@') != NULL;
}

static int build_headers(const pec_identity *id, const pec_build_args *a, const pec_daticert *d,
                         mime_buf *h, char *err, size_t errsz)
{
    char service[300];
    snprintf(service, sizeof service, "posta-certificata@%s", id->domain);
    if (!addr_ok(a->sender) || !addr_ok(service))
        return pec_err(err, errsz, "unusable sender or provider domain");
    bool envelope = a->type == PEC_TYPE_POSTA_CERTIFICATA || a->type == PEC_TYPE_ANOMALIA;
    int rc = 0;
    const unsigned char *o = a->original;
    size_t olen = a->original_len;

    if (envelope && o) {
        /* §3.1.5, §3.2.2: copied unmodified */
        rc |= pec_header_copy(o, olen, "Return-Path", h);
        rc |= pec_header_copy(o, olen, "Received", h);
    }
    if (a->type == PEC_TYPE_ANOMALIA)
        rc |= mime_buf_adds(h, "X-Trasporto: errore\r\n");
    else if (a->type == PEC_TYPE_POSTA_CERTIFICATA)
        rc |= mime_buf_adds(h, "X-Trasporto: posta-certificata\r\n");
    else
        rc |= mime_buf_addf(h, "X-Ricevuta: %s\r\n", pec_type_name(a->type));
    if ((a->type == PEC_TYPE_NON_ACCETTAZIONE || a->type == PEC_TYPE_ERRORE_CONSEGNA) &&
        a->errore == PEC_ERRORE_VIRUS)
        rc |= mime_buf_adds(h, "X-VerificaSicurezza: errore\r\n"); /* §3.1.3, §3.2.4 */
    if (a->type == PEC_TYPE_RILEVAZIONE_VIRUS)
        rc |= mime_buf_addf(h, "X-Mittente: %s\r\n", a->sender); /* §3.2.3 */
    rc |= add_date(h, a->when);
    char *subject = g_strdup_printf("%s%s", subject_prefix(a), d->oggetto ? d->oggetto : "");
    rc |= mime_add_text_header(h, "Subject", subject);
    g_free(subject);
    if (envelope) {
        /* D2: real providers' From of envelopes */
        rc |= mime_buf_addf(h, "From: \"Per conto di: %s\" <%s>\r\n", a->sender, service);
        if (o && pec_header_has(o, olen, "Reply-To"))
            rc |= pec_header_copy(o, olen, "Reply-To", h);
        else
            rc |= mime_buf_addf(h, "Reply-To: %s\r\n", a->sender);
        if (o) {
            rc |= pec_header_copy(o, olen, "To", h);
            rc |= pec_header_copy(o, olen, "Cc", h);
        }
    } else {
        rc |= mime_buf_addf(h, "From: %s\r\n", service);
        const char *to = a->sender;
        if (a->type == PEC_TYPE_PRESA_IN_CARICO || a->type == PEC_TYPE_RILEVAZIONE_VIRUS) {
            if (!a->notify_to)
                return pec_err(err, errsz, "%s goes to the sender provider's mailReceipt: "
                                           "notify_to is required (§3.2.1, §3.2.3)",
                               pec_type_name(a->type));
            to = a->notify_to;
        } else if (a->notify_to) {
            to = a->notify_to;
        }
        if (!addr_ok(to))
            return pec_err(err, errsz, "unusable notification address");
        rc |= mime_buf_addf(h, "To: %s\r\n", to);
    }
    if (a->type == PEC_TYPE_ANOMALIA) {
        if (a->message_id)
            rc |= mime_buf_addf(h, "Message-ID: <%s>\r\n", a->message_id);
        else if (o)
            rc |= pec_header_copy(o, olen, "Message-ID", h); /* §3.2.2: unmodified */
    } else {
        const char *mid = a->message_id ? a->message_id : a->pec_id;
        if (!mid || strpbrk(mid, "<> \r\n"))
            return pec_err(err, errsz, "a Message-ID is required");
        rc |= mime_buf_addf(h, "Message-ID: <%s>\r\n", mid);
    }
    if (d->msgid && !strpbrk(d->msgid, "\r\n"))
        rc |= mime_buf_addf(h, "X-Riferimento-Message-ID: %s\r\n", d->msgid); /* §2.2.1 */
    if (a->type == PEC_TYPE_POSTA_CERTIFICATA)
        rc |= mime_buf_addf(h, "X-TipoRicevuta: %s\r\n", pec_variant_name(d->ricevuta));
    return rc ? pec_err(err, errsz, "out of memory") : 0;
}

int pec_build_unsigned(const pec_identity *id, const pec_build_args *a, pec_buf *headers,
                       pec_buf *body, char *err, size_t errsz)
{
    headers->data = body->data = NULL;
    headers->len = body->len = 0;
    if (!id || !id->domain || !id->name)
        return pec_err(err, errsz, "the provider identity needs a domain and a name");
    if (a->type == PEC_TYPE_NONE)
        return pec_err(err, errsz, "no message type");
    struct orig_facts o;
    if (orig_facts_load(a, &o, err, errsz) < 0)
        return -1;
    pec_daticert d;
    mime_buf h = {0}, b = {0};
    int rc = -1;
    if (fill_daticert(id, a, &o, &d, err, errsz) < 0)
        goto out;
    if (build_headers(id, a, &d, &h, err, errsz) < 0 || build_body(id, a, &d, &b, err, errsz) < 0)
        goto out;
    pec_buf_take(headers, &h);
    pec_buf_take(body, &b);
    rc = 0;
out:
    mime_buf_free(&h);
    mime_buf_free(&b);
    orig_facts_free(&o);
    return rc;
}

int pec_build_n(const pec_identity *id, const pec_build_args *a, size_t n, pec_buf *out,
                char *err, size_t errsz)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (pec_buf){0};
    if (!id || !id->signer)
        return pec_err(err, errsz, "every PEC message is signed (§2.1): no signer");
    if (n == 0 || n > PEC_SIGN_N_MAX)
        return pec_err(err, errsz, "%zu messages at once (1 to %d)", n, PEC_SIGN_N_MAX);
    char service[300];
    snprintf(service, sizeof service, "posta-certificata@%s", id->domain ? id->domain : "");
    /* §2.1: the From address equals the certificate's e-mail address: one
     * without an address would make messages no verifier accepts */
    if (id->signer->email[0] == '\0')
        return pec_err(err, errsz, "the signing certificate has no e-mail address "
                                   "(subjectAltName rfc822Name %s, §2.1)", service);
    if (strcasecmp(id->signer->email, service) != 0)
        return pec_err(err, errsz, "the signing certificate is for %s, not %s (§2.1)",
                       id->signer->email, service);
    pec_buf h[PEC_SIGN_N_MAX] = {{0}}, b[PEC_SIGN_N_MAX] = {{0}};
    const char *hs[PEC_SIGN_N_MAX];
    const void *bs[PEC_SIGN_N_MAX];
    size_t bl[PEC_SIGN_N_MAX];
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = pec_build_unsigned(id, &a[i], &h[i], &b[i], err, errsz);
        hs[i] = (const char *)h[i].data;
        bs[i] = b[i].data;
        bl[i] = b[i].len;
    }
    if (rc == 0)
        rc = pec_smime_sign_n(id->signer, n, hs, bs, bl, out, err, errsz);
    for (size_t i = 0; i < n; i++) {
        pec_buf_free(&h[i]);
        pec_buf_free(&b[i]);
    }
    return rc;
}

int pec_build(const pec_identity *id, const pec_build_args *a, pec_buf *out, char *err,
              size_t errsz)
{
    return pec_build_n(id, a, 1, out, err, errsz);
}
