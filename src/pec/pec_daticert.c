/*
 * pec_daticert.c - the certification data of RFC 6109 §4.4 ("daticert.xml",
 * digest D1): build with libxml2 exactly in the DTD's element order, parse
 * leniently (real providers' files are sometimes not DTD-valid: interop d08
 * has a stray text node), validate against the DTD held in memory.
 *
 * Interface: pec_daticert_build/parse/validate/free, pec_daticert_set_time
 * (pec.h).
 *
 * Hostile input (docs/pec.md "Hostile daticert"): a daticert arrives from
 * anyone who can send mail to the MX.  Before libxml2 sees it, one linear
 * pass over the bytes (prescan) refuses a DOCTYPE or any other markup
 * declaration (real daticerts have none: without them no entity can be
 * defined, so nothing can expand), an encoding the pass cannot read (NUL
 * bytes, UTF-16/32, EBCDIC, UTF-7: libxml2 is then told the encoding and
 * ignores the declaration), and more than PEC_DATICERT_MAX_BYTES bytes,
 * _NODES markup items, _ATTRS attributes on one element (libxml2's
 * duplicate-attribute check is quadratic) or _DEPTH levels.  After parsing,
 * the tree is checked again: no internal or external subset, no entity
 * reference node, the node bound.  Only then is any text read
 * (xmlNodeGetContent would expand entity references).  libxml2 itself runs
 * without DTDLOAD, NOENT or XInclude and with NONET, so nothing reaches the
 * disk or the network either.
 */
#include "pec/pec_internal.h"
#include "lib/lib.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/valid.h>

/* RFC 6109 §4.4, declarations only (comments dropped); see daticert.dtd. */
static const char daticert_dtd[] =
    "<!ELEMENT postacert (intestazione, dati)>\n"
    "<!ATTLIST postacert tipo (accettazione | non-accettazione | presa-in-carico |"
    " avvenuta-consegna | posta-certificata | errore-consegna |"
    " preavviso-errore-consegna | rilevazione-virus) #REQUIRED"
    " errore (nessuno | no-dest | no-dominio | virus | altro) \"nessuno\">\n"
    "<!ELEMENT intestazione (mittente, destinatari+, risposte, oggetto?)>\n"
    "<!ELEMENT mittente (#PCDATA)>\n"
    "<!ELEMENT destinatari (#PCDATA)>\n"
    "<!ATTLIST destinatari tipo (certificato | esterno) \"certificato\">\n"
    "<!ELEMENT risposte (#PCDATA)>\n"
    "<!ELEMENT oggetto (#PCDATA)>\n"
    "<!ELEMENT dati (gestore-emittente, data, identificativo, msgid?, ricevuta?,"
    " consegna?, ricezione*, errore-esteso?)>\n"
    "<!ELEMENT gestore-emittente (#PCDATA)>\n"
    "<!ELEMENT data (giorno, ora)>\n"
    "<!ATTLIST data zona CDATA #REQUIRED>\n"
    "<!ELEMENT giorno (#PCDATA)>\n"
    "<!ELEMENT ora (#PCDATA)>\n"
    "<!ELEMENT identificativo (#PCDATA)>\n"
    "<!ELEMENT msgid (#PCDATA)>\n"
    "<!ELEMENT ricevuta EMPTY>\n"
    "<!ATTLIST ricevuta tipo (completa | breve | sintetica) #REQUIRED>\n"
    "<!ELEMENT consegna (#PCDATA)>\n"
    "<!ELEMENT ricezione (#PCDATA)>\n"
    "<!ELEMENT errore-esteso (#PCDATA)>\n";

static void xml_silent(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

static void xml_silent_structured(void *ctx, xmlErrorPtr e)
{
    (void)ctx;
    (void)e;
}

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static void xml_init_once(void)
{
    xmlInitParser();
}

static void xml_quiet(void)
{
    pthread_once(&xml_once, xml_init_once);
    /* libxml2 keeps these per thread */
    xmlSetGenericErrorFunc(NULL, xml_silent);
    xmlSetStructuredErrorFunc(NULL, xml_silent_structured);
}

void pec_daticert_set_time(pec_daticert *d, time_t t)
{
    struct tm tm;
    pec_legal_time(t, &tm);
    long off = tm.tm_gmtoff;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    /* §4.4: zona "[+|-]hhmm"; giorno dd/mm/yyyy; ora hh:mm:ss local time */
    snprintf(d->zona, sizeof d->zona, "%c%02ld%02ld", sign, (off / 3600) % 100, (off / 60) % 60);
    snprintf(d->giorno, sizeof d->giorno, "%02u/%02u/%04u", (unsigned)tm.tm_mday % 100,
             (unsigned)(tm.tm_mon + 1) % 100, (unsigned)(tm.tm_year + 1900) % 10000);
    snprintf(d->ora, sizeof d->ora, "%02u:%02u:%02u", (unsigned)tm.tm_hour % 100,
             (unsigned)tm.tm_min % 100, (unsigned)tm.tm_sec % 100);
}

/* ---- build -------------------------------------------------------------- */

static xmlNodePtr add_text(xmlNodePtr parent, const char *name, const char *text)
{
    /* xmlNewTextChild escapes &, <, > (the msgid keeps its < > as &lt; &gt;) */
    return xmlNewTextChild(parent, NULL, BAD_CAST name, BAD_CAST(text ? text : ""));
}

int pec_daticert_build(const pec_daticert *d, pec_buf *out, char *err, size_t errsz)
{
    out->data = NULL;
    out->len = 0;
    if (d->tipo == PEC_TYPE_NONE || d->tipo == PEC_TYPE_ANOMALIA)
        return pec_err(err, errsz, "daticert: type %s has no certification data",
                       pec_type_name(d->tipo));
    if (!d->mittente || !d->n_destinatari || !d->identificativo || !d->gestore_emittente ||
        !d->zona[0] || !d->giorno[0] || !d->ora[0])
        return pec_err(err, errsz, "daticert: mittente, destinatari, identificativo, "
                                   "gestore-emittente and data are required (§4.4)");
    xml_quiet();
    xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
    xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "postacert");
    xmlDocSetRootElement(doc, root);
    xmlNewProp(root, BAD_CAST "tipo", BAD_CAST pec_type_name(d->tipo));
    xmlNewProp(root, BAD_CAST "errore", BAD_CAST pec_errore_name(d->errore));

    xmlNodePtr h = xmlNewChild(root, NULL, BAD_CAST "intestazione", NULL);
    add_text(h, "mittente", d->mittente);
    for (size_t i = 0; i < d->n_destinatari; i++) {
        xmlNodePtr n = add_text(h, "destinatari", d->destinatari[i].addr);
        xmlNewProp(n, BAD_CAST "tipo",
                   BAD_CAST(d->destinatari[i].kind == PEC_RCPT_ESTERNO ? "esterno"
                                                                        : "certificato"));
    }
    /* [obs] risposte is the sender when the original had no Reply-To */
    add_text(h, "risposte", d->risposte ? d->risposte : d->mittente);
    if (d->oggetto)
        add_text(h, "oggetto", d->oggetto);

    xmlNodePtr dt = xmlNewChild(root, NULL, BAD_CAST "dati", NULL);
    add_text(dt, "gestore-emittente", d->gestore_emittente);
    xmlNodePtr data = xmlNewChild(dt, NULL, BAD_CAST "data", NULL);
    xmlNewProp(data, BAD_CAST "zona", BAD_CAST d->zona);
    add_text(data, "giorno", d->giorno);
    add_text(data, "ora", d->ora);
    add_text(dt, "identificativo", d->identificativo);
    if (d->msgid)
        add_text(dt, "msgid", d->msgid);
    if (d->ricevuta != PEC_VARIANT_NONE) {
        xmlNodePtr r = xmlNewChild(dt, NULL, BAD_CAST "ricevuta", NULL);
        xmlNewProp(r, BAD_CAST "tipo", BAD_CAST pec_variant_name(d->ricevuta));
    }
    if (d->consegna)
        add_text(dt, "consegna", d->consegna);
    for (size_t i = 0; i < d->n_ricezione; i++)
        add_text(dt, "ricezione", d->ricezione[i]);
    if (d->errore_esteso)
        add_text(dt, "errore-esteso", d->errore_esteso);

    xmlChar *mem = NULL;
    int len = 0;
    xmlDocDumpFormatMemoryEnc(doc, &mem, &len, "UTF-8", 1);
    xmlFreeDoc(doc);
    if (!mem || len <= 0) {
        xmlFree(mem);
        return pec_err(err, errsz, "daticert: serialisation failed");
    }
    out->data = malloc((size_t)len + 1);
    if (!out->data) {
        xmlFree(mem);
        return pec_err(err, errsz, "out of memory");
    }
    memcpy(out->data, mem, (size_t)len);
    out->data[len] = '\0';
    out->len = (size_t)len;
    xmlFree(mem);
    return 0;
}

/* ---- validate ----------------------------------------------------------- */

static pthread_once_t dtd_once = PTHREAD_ONCE_INIT;
static xmlDtdPtr dtd_cached;

static void dtd_load(void)
{
    xml_quiet();
    xmlParserInputBufferPtr in = xmlParserInputBufferCreateMem(
        daticert_dtd, (int)sizeof daticert_dtd - 1, XML_CHAR_ENCODING_UTF8);
    if (in)
        dtd_cached = xmlIOParseDTD(NULL, in, XML_CHAR_ENCODING_UTF8); /* frees in */
    if (dtd_cached == NULL)
        return;
    /* xmlValidateDtd compiles an element's content model the first time it
     * meets the element and stores it in the declaration: done here, once,
     * so that the threads validating at the same time only read the DTD
     * (two of them compiling the same model raced, and one copy leaked) */
    xmlValidCtxtPtr vc = xmlNewValidCtxt();
    if (vc == NULL) {
        xmlFreeDtd(dtd_cached);
        dtd_cached = NULL;
        return;
    }
    for (xmlNodePtr n = dtd_cached->children; n != NULL; n = n->next) {
        if (n->type == XML_ELEMENT_DECL && ((xmlElementPtr)n)->contModel == NULL &&
            xmlValidBuildContentModel(vc, (xmlElementPtr)n) != 1) {
            xmlFreeDtd(dtd_cached);   /* validate_doc says the DTD did not load */
            dtd_cached = NULL;
            break;
        }
    }
    xmlFreeValidCtxt(vc);
}

struct valid_err {
    char *buf;
    size_t size;
};

static void valid_error(void *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void valid_error(void *ctx, const char *fmt, ...)
{
    struct valid_err *ve = ctx;
    if (!ve->buf || !ve->size || ve->buf[0])
        return; /* keep the first message */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ve->buf, ve->size, fmt, ap);
    va_end(ap);
    size_t n = strlen(ve->buf);
    while (n && (ve->buf[n - 1] == '\n' || ve->buf[n - 1] == ' '))
        ve->buf[--n] = '\0';
}

/* ---- bounds on the bytes, before libxml2 ------------------------------------ */

static const unsigned char *find(const unsigned char *p, const unsigned char *end,
                                 const char *what)
{
    return memmem(p, (size_t)(end - p), what, strlen(what));
}

static bool is_ws(unsigned char c) /* XML 1.0 S */
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The encoding libxml2 is to use: the one the XML declaration names when it
 * is one whose bytes below 0x80 are ASCII (so the pass below reads the
 * markup as libxml2 will), else NULL with the reason in err. */
static const char *declared_encoding(const unsigned char *p, const unsigned char *end, char *err,
                                     size_t errsz)
{
    static const char *const ok[] = {"UTF-8", "US-ASCII", "ASCII", "ISO-8859-1",
                                     "ISO-8859-15", "windows-1252"};
    if (end - p < 6 || memcmp(p, "<?xml", 5) != 0 || !is_ws(p[5]))
        return "UTF-8"; /* no declaration: UTF-8 (XML 1.0 §4.3.3) */
    const unsigned char *q = find(p, end, "?>");
    if (!q)
        return pec_err(err, errsz, "daticert: the XML declaration does not end"), NULL;
    const unsigned char *e = memmem(p, (size_t)(q - p), "encoding", 8);
    if (!e)
        return "UTF-8";
    e += 8;
    while (e < q && is_ws(*e))
        e++;
    if (e < q && *e == '=')
        e++;
    while (e < q && is_ws(*e))
        e++;
    if (e >= q || (*e != '"' && *e != '\''))
        return pec_err(err, errsz, "daticert: the XML declaration's encoding is unreadable"),
               NULL;
    const unsigned char *v = e + 1, *ve = memchr(v, *e, (size_t)(q - v));
    if (!ve)
        return pec_err(err, errsz, "daticert: the XML declaration's encoding is unreadable"),
               NULL;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if ((size_t)(ve - v) == strlen(ok[i]) && strncasecmp((const char *)v, ok[i], strlen(ok[i])) == 0)
            return ok[i];
    return pec_err(err, errsz, "daticert: encoding \"%.*s\" is not accepted (UTF-8 expected)",
                   (int)(ve - v > 40 ? 40 : ve - v), (const char *)v),
           NULL;
}

/* One pass over the bytes: the bounds of pec.h and no markup declaration.
 * It never counts less than libxml2 can build, whatever the input: every
 * node but text starts at a '<' byte, so each '<' is looked at, even inside
 * a comment or CDATA section (libxml2 resumes at the next '<' after an
 * error, and '<' may not occur in an attribute value, so all attributes of
 * one start tag lie before the next '<').  A start tag's attributes are the
 * '=' outside quoted values before its '>'.  What is not well-formed is left
 * to libxml2 to refuse; the bounds hold for it too. */
static int prescan(const unsigned char *p, size_t len, const char **enc, char *err, size_t errsz)
{
    if (len == 0)
        return pec_err(err, errsz, "daticert: empty");
    if (len > PEC_DATICERT_MAX_BYTES)
        return pec_err(err, errsz, "daticert: %zu bytes, more than the %u allowed", len,
                       PEC_DATICERT_MAX_BYTES);
    if (memchr(p, '\0', len))
        return pec_err(err, errsz, "daticert: a NUL byte (UTF-16 and UTF-32 are not accepted)");
    const unsigned char *end = p + len;
    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3; /* the UTF-8 byte order mark */
    const unsigned char *s = p;
    while (s < end && is_ws(*s))
        s++;
    if (s == end || *s != '<')
        return pec_err(err, errsz, "daticert: not XML (it does not start with '<')");
    if (!(*enc = declared_encoding(p, end, err, errsz)))
        return -1;
    size_t nodes = 0, depth = 0;
    for (; (s = memchr(s, '<', (size_t)(end - s))) != NULL; s++) {
        const unsigned char *t = s + 1;
        if (t < end && *t == '/') { /* an end tag makes no node */
            if (depth > 0)
                depth--;
            continue;
        }
        if (t < end && *t == '!' &&
            !(end - t >= 3 && memcmp(t, "!--", 3) == 0) &&
            !(end - t >= 8 && memcmp(t, "![CDATA[", 8) == 0)) /* <!DOCTYPE, <!ENTITY, ... */
            return pec_err(err, errsz, "daticert: DOCTYPE/entity declarations are not allowed");
        if (++nodes > PEC_DATICERT_MAX_NODES)
            goto too_many;
        if (t >= end || *t == '!' || *t == '?')
            continue;
        size_t attrs = 0;
        unsigned char quote = 0;
        for (; t < end && *t != '<'; t++) {
            if (quote) {
                if (*t == quote)
                    quote = 0;
            } else if (*t == '"' || *t == '\'') {
                quote = *t;
            } else if (*t == '=') {
                attrs++;
            } else if (*t == '>') {
                if (t[-1] != '/' && ++depth > PEC_DATICERT_MAX_DEPTH)
                    return pec_err(err, errsz, "daticert: elements nested deeper than %u",
                                   PEC_DATICERT_MAX_DEPTH);
                break;
            }
        }
        if (attrs > PEC_DATICERT_MAX_ATTRS)
            return pec_err(err, errsz, "daticert: %zu attributes on one element, more than the "
                                       "%u allowed", attrs, PEC_DATICERT_MAX_ATTRS);
        if ((nodes += attrs) > PEC_DATICERT_MAX_NODES)
            goto too_many;
    }
    return 0;
too_many:
    return pec_err(err, errsz, "daticert: more than %u elements, attributes and other markup",
                   PEC_DATICERT_MAX_NODES);
}

/* The tree libxml2 built holds only what the pass above allowed: no DTD,
 * no entity reference (xmlNodeGetContent would expand it), the node bound. */
int pec_daticert_check_tree(struct _xmlDoc *doc, char *err, size_t errsz)
{
    if (doc->intSubset || doc->extSubset)
        return pec_err(err, errsz, "daticert: DOCTYPE/entity declarations are not allowed");
    size_t nodes = 0;
    for (xmlNodePtr n = doc->children; n != NULL;) {
        switch (n->type) {
        case XML_ELEMENT_NODE:
            nodes++;
            for (xmlAttrPtr a = n->properties; a; a = a->next) {
                nodes++;
                for (xmlNodePtr c = a->children; c; c = c->next)
                    if (c->type != XML_TEXT_NODE)
                        return pec_err(err, errsz, "daticert: entity references are not "
                                                   "allowed");
            }
            break;
        case XML_COMMENT_NODE:
        case XML_PI_NODE:
        case XML_CDATA_SECTION_NODE:
            nodes++;
            break;
        case XML_TEXT_NODE:
            break;
        case XML_ENTITY_REF_NODE:
            return pec_err(err, errsz, "daticert: entity references are not allowed");
        default:
            return pec_err(err, errsz, "daticert: unexpected XML node type %d", (int)n->type);
        }
        if (nodes > PEC_DATICERT_MAX_NODES)
            return pec_err(err, errsz, "daticert: more than %u elements, attributes and other "
                                       "markup", PEC_DATICERT_MAX_NODES);
        if (n->type == XML_ELEMENT_NODE && n->children) {
            n = n->children;
            continue;
        }
        while (n && !n->next)
            n = n->parent == (xmlNodePtr)doc ? NULL : n->parent;
        if (n)
            n = n->next;
    }
    return 0;
}

/* Parses a daticert from outside: bounded before, checked after. */
static xmlDocPtr parse_doc(const void *xml, size_t len, char *err, size_t errsz)
{
    const char *enc = NULL;
    if (prescan(xml, len, &enc, err, errsz) < 0)
        return NULL;
    xml_quiet();
    /* no DTDLOAD, no NOENT: entities stay unexpanded; NONET: no fetching;
     * IGNORE_ENC: the encoding is the one prescan read, whatever follows */
    xmlDocPtr doc = xmlReadMemory(xml, (int)len, "daticert.xml", enc,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                      XML_PARSE_IGNORE_ENC);
    if (!doc) {
        pec_err(err, errsz, "daticert: not well-formed XML");
        return NULL;
    }
    if (pec_daticert_check_tree(doc, err, errsz) < 0) {
        xmlFreeDoc(doc);
        return NULL;
    }
    return doc;
}

static int validate_doc(xmlDocPtr doc, char *err, size_t errsz)
{
    pthread_once(&dtd_once, dtd_load);
    if (!dtd_cached)
        return pec_err(err, errsz, "daticert: the built-in DTD did not load");
    if (err && errsz)
        err[0] = '\0';
    struct valid_err ve = {err, errsz};
    xmlValidCtxtPtr vc = xmlNewValidCtxt();
    if (!vc)
        return pec_err(err, errsz, "daticert: out of memory");
    vc->userData = &ve;
    vc->error = valid_error;
    vc->warning = xml_silent;
    int ok = xmlValidateDtd(vc, doc, dtd_cached);
    xmlFreeValidCtxt(vc);
    if (!ok) {
        if (err && errsz && !err[0])
            pec_err(err, errsz, "not valid against the daticert DTD");
        return -1;
    }
    return 0;
}

int pec_daticert_validate(const void *xml, size_t len, char *err, size_t errsz)
{
    xmlDocPtr doc = parse_doc(xml, len, err, errsz);
    if (!doc)
        return -1;
    int rc = validate_doc(doc, err, errsz);
    xmlFreeDoc(doc);
    return rc;
}

/* ---- parse -------------------------------------------------------------- */

static bool is_el(xmlNodePtr n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST name) == 0;
}

static char *node_text(xmlNodePtr n)
{
    xmlChar *c = xmlNodeGetContent(n);
    char *s = pec_strdup_trim(c ? (const char *)c : "");
    xmlFree(c);
    return s;
}

static char *attr(xmlNodePtr n, const char *name)
{
    xmlChar *v = xmlGetProp(n, BAD_CAST name);
    if (!v)
        return NULL;
    char *s = pec_strdup_trim((const char *)v);
    xmlFree(v);
    return s;
}

static void add_warning(pec_daticert *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_warning(pec_daticert *d, const char *fmt, ...)
{
    if (d->warning)
        return; /* the first deviation is enough to report */
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    d->warning = xstrdup(buf);
}

/* Text directly inside element-only content (DTD: no mixed content). */
static void check_stray_text(pec_daticert *d, xmlNodePtr parent)
{
    xmlNodePtr prev = NULL;
    for (xmlNodePtr c = parent->children; c; c = c->next) {
        if (c->type == XML_TEXT_NODE && c->content) {
            const char *s = (const char *)c->content;
            s += strspn(s, " \t\r\n");
            if (*s) {
                char frag[32];
                snprintf(frag, sizeof frag, "%.20s", s);
                frag[strcspn(frag, "\r\n")] = '\0';
                add_warning(d, "stray text \"%s\" %s%s%s in <%s> (not DTD-valid)", frag,
                            prev ? "after </" : "at the start", prev ? (const char *)prev->name : "",
                            prev ? ">" : "", (const char *)parent->name);
            }
        } else if (c->type == XML_ELEMENT_NODE) {
            prev = c;
        }
    }
}

/* The fields the DTD declares #PCDATA hold text only: an element inside
 * one (an XInclude, say) is refused rather than read as an empty value. */
static int text_only(xmlNodePtr parent, char *err, size_t errsz)
{
    static const char *const fields[] = {"mittente", "destinatari", "risposte", "oggetto",
                                         "gestore-emittente", "giorno", "ora",
                                         "identificativo", "msgid", "consegna", "ricezione",
                                         "errore-esteso"};
    for (xmlNodePtr c = parent->children; c; c = c->next) {
        if (is_el(c, "data") && text_only(c, err, errsz) < 0)
            return -1;
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
            if (!is_el(c, fields[i]))
                continue;
            for (xmlNodePtr g = c->children; g; g = g->next)
                if (g->type == XML_ELEMENT_NODE)
                    return pec_err(err, errsz, "daticert: <%s> holds an element <%.40s>; it "
                                               "holds text only (§4.4)",
                                   fields[i], (const char *)g->name);
        }
    }
    return 0;
}

static void copy_field(char *dst, size_t size, xmlNodePtr n)
{
    char *s = node_text(n);
    snprintf(dst, size, "%s", s ? s : "");
    free(s);
}

static int parse_intestazione(pec_daticert *d, xmlNodePtr h)
{
    check_stray_text(d, h);
    for (xmlNodePtr c = h->children; c; c = c->next) {
        if (is_el(c, "mittente") && !d->mittente) {
            d->mittente = node_text(c);
        } else if (is_el(c, "destinatari")) {
            pec_recipient *nr = xrealloc(d->destinatari, (d->n_destinatari + 1) * sizeof *nr);
            if (!nr)
                return -1;
            d->destinatari = nr;
            char *kind = attr(c, "tipo");
            nr[d->n_destinatari].addr = node_text(c);
            nr[d->n_destinatari].kind =
                kind && strcmp(kind, "esterno") == 0 ? PEC_RCPT_ESTERNO : PEC_RCPT_CERTIFICATO;
            if (kind && strcmp(kind, "esterno") != 0 && strcmp(kind, "certificato") != 0)
                add_warning(d, "destinatari tipo=\"%s\" is not in the DTD", kind);
            free(kind);
            d->n_destinatari++;
        } else if (is_el(c, "risposte") && !d->risposte) {
            d->risposte = node_text(c);
        } else if (is_el(c, "oggetto") && !d->oggetto) {
            d->oggetto = node_text(c);
        } else if (c->type == XML_ELEMENT_NODE) {
            add_warning(d, "unknown element <%s> in <intestazione>", (const char *)c->name);
        }
    }
    return 0;
}

static int parse_dati(pec_daticert *d, xmlNodePtr dt)
{
    check_stray_text(d, dt);
    for (xmlNodePtr c = dt->children; c; c = c->next) {
        if (is_el(c, "gestore-emittente") && !d->gestore_emittente) {
            d->gestore_emittente = node_text(c);
        } else if (is_el(c, "data")) {
            char *z = attr(c, "zona");
            snprintf(d->zona, sizeof d->zona, "%s", z ? z : "");
            free(z);
            for (xmlNodePtr g = c->children; g; g = g->next) {
                if (is_el(g, "giorno"))
                    copy_field(d->giorno, sizeof d->giorno, g);
                else if (is_el(g, "ora"))
                    copy_field(d->ora, sizeof d->ora, g);
            }
        } else if (is_el(c, "identificativo") && !d->identificativo) {
            d->identificativo = node_text(c);
        } else if (is_el(c, "msgid") && !d->msgid) {
            d->msgid = node_text(c);
        } else if (is_el(c, "ricevuta")) {
            char *t = attr(c, "tipo");
            d->ricevuta = pec_variant_parse(t);
            if (d->ricevuta == PEC_VARIANT_NONE)
                add_warning(d, "ricevuta tipo=\"%s\" is not in the DTD", t ? t : "");
            free(t);
        } else if (is_el(c, "consegna") && !d->consegna) {
            d->consegna = node_text(c);
        } else if (is_el(c, "ricezione")) {
            char **nr = xrealloc(d->ricezione, (d->n_ricezione + 1) * sizeof *nr);
            if (!nr)
                return -1;
            d->ricezione = nr;
            nr[d->n_ricezione++] = node_text(c);
        } else if (is_el(c, "errore-esteso") && !d->errore_esteso) {
            d->errore_esteso = node_text(c);
        } else if (c->type == XML_ELEMENT_NODE) {
            add_warning(d, "unknown element <%s> in <dati>", (const char *)c->name);
        }
    }
    return 0;
}

int pec_daticert_parse(const void *xml, size_t len, pec_daticert *d, char *err, size_t errsz)
{
    memset(d, 0, sizeof *d);
    xmlDocPtr doc = parse_doc(xml, len, err, errsz);
    if (!doc)
        return -1;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    int rc = -1;
    if (!is_el(root, "postacert")) {
        pec_err(err, errsz, "daticert: the root element is not <postacert>");
        goto out;
    }
    char *tipo = attr(root, "tipo");
    d->tipo = pec_type_parse(tipo);
    if (d->tipo == PEC_TYPE_NONE || d->tipo == PEC_TYPE_ANOMALIA) {
        pec_err(err, errsz, "daticert: postacert tipo=\"%s\" is unknown", tipo ? tipo : "");
        free(tipo);
        goto out;
    }
    free(tipo);
    char *errore = attr(root, "errore");
    if (errore && pec_errore_parse(errore, &d->errore) < 0) {
        add_warning(d, "postacert errore=\"%s\" is not in the DTD", errore);
        d->errore = PEC_ERRORE_ALTRO;
    }
    free(errore);
    check_stray_text(d, root);
    xmlNodePtr h = NULL, dt = NULL;
    for (xmlNodePtr c = root->children; c; c = c->next) {
        if (is_el(c, "intestazione") && !h)
            h = c;
        else if (is_el(c, "dati") && !dt)
            dt = c;
    }
    if (!h || !dt) {
        pec_err(err, errsz, "daticert: <intestazione> or <dati> missing");
        goto out;
    }
    if (text_only(h, err, errsz) < 0 || text_only(dt, err, errsz) < 0)
        goto out;
    if (parse_intestazione(d, h) < 0 || parse_dati(d, dt) < 0) {
        pec_err(err, errsz, "daticert: out of memory");
        goto out;
    }
    if (!d->mittente || !d->n_destinatari || !d->identificativo || !d->gestore_emittente ||
        !d->giorno[0] || !d->ora[0]) {
        pec_err(err, errsz, "daticert: a required field is missing (mittente, destinatari, "
                            "gestore-emittente, data or identificativo)");
        goto out;
    }
    if (!d->warning) {
        char verr[200];
        if (validate_doc(doc, verr, sizeof verr) < 0)
            add_warning(d, "not DTD-valid: %s", verr);
    }
    rc = 0;
out:
    xmlFreeDoc(doc);
    if (rc < 0)
        pec_daticert_free(d);
    return rc;
}

void pec_daticert_free(pec_daticert *d)
{
    if (!d)
        return;
    free(d->mittente);
    for (size_t i = 0; i < d->n_destinatari; i++)
        free(d->destinatari[i].addr);
    free(d->destinatari);
    free(d->risposte);
    free(d->oggetto);
    free(d->gestore_emittente);
    free(d->identificativo);
    free(d->msgid);
    free(d->consegna);
    for (size_t i = 0; i < d->n_ricezione; i++)
        free(d->ricezione[i]);
    free(d->ricezione);
    free(d->errore_esteso);
    free(d->warning);
    memset(d, 0, sizeof *d);
}
