/*
 * pec_daticert.c - the certification data of RFC 6109 §4.4 ("daticert.xml",
 * digest D1): build with libxml2 exactly in the DTD's element order, parse
 * leniently (real providers' files are sometimes not DTD-valid: interop d08
 * has a stray text node), validate against the DTD held in memory.
 *
 * Interface: pec_daticert_build/parse/validate/free, pec_daticert_set_time
 * (pec.h).  Assumes: no external entity or DTD is ever loaded (NONET, no
 * DTDLOAD, no NOENT), so hostile XML cannot reach the disk or the network.
 */
#include "pec/pec_internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#define MAX_XML (1u << 20) /* a daticert is a few hundred bytes */

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

static xmlDocPtr parse_doc(const void *xml, size_t len)
{
    if (len == 0 || len > MAX_XML)
        return NULL;
    xml_quiet();
    /* no DTDLOAD, no NOENT: entities stay unexpanded; NONET: no fetching */
    return xmlReadMemory(xml, (int)len, "daticert.xml", NULL,
                         XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
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
        return pec_err(err, errsz, "out of memory");
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
    xmlDocPtr doc = parse_doc(xml, len);
    if (!doc)
        return pec_err(err, errsz, "daticert: not well-formed XML");
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
    d->warning = strdup(buf);
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
            pec_recipient *nr = realloc(d->destinatari, (d->n_destinatari + 1) * sizeof *nr);
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
            char **nr = realloc(d->ricezione, (d->n_ricezione + 1) * sizeof *nr);
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
    xmlDocPtr doc = parse_doc(xml, len);
    if (!doc)
        return pec_err(err, errsz, "daticert: not well-formed XML");
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
    if (parse_intestazione(d, h) < 0 || parse_dati(d, dt) < 0) {
        pec_err(err, errsz, "out of memory");
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
