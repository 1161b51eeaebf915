/*
 * pec_text.c - the human-readable part of every PEC message (RFC 6109
 * §4.3.1): the facts of the receipt in Italian, as plain text and as HTML
 * without references or active content.  Readers and programs must not
 * parse it (§3: "Parsing MUST be done on the XML part only"); the phrasing
 * follows what real providers write ([obs], PEC-SPEC-DIGEST.md).
 *
 * Interface: pec_text_render() (pec_internal.h).  Assumes the daticert d
 * already holds the date, subject, sender and recipients.
 */
#include "pec/pec_internal.h"

#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

/* The text as plain lines and as HTML a screen reader can walk: the title
 * a heading, each statement a paragraph, each list of addresses a list. */
struct lines {
    mime_buf plain;
    mime_buf html;
    bool in_list;        /* an HTML <ul> is open */
    bool titled;         /* the first line (the title) was written */
};

static int vline(struct lines *l, bool item, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static int vline(struct lines *l, bool item, const char *fmt, va_list ap)
{
    char *s = g_strdup_vprintf(fmt, ap);
    if (!s)
        return -1;
    char *esc = g_markup_escape_text(s, -1);
    int rc = mime_buf_addf(&l->plain, "%s\n", s);
    if (l->in_list && !item) {
        rc |= mime_buf_adds(&l->html, "</ul>\n");
        l->in_list = false;
    }
    if (!l->titled) {
        rc |= mime_buf_addf(&l->html, "<h1>%s</h1>\n", esc);
        l->titled = true;
    } else if (item) {
        if (!l->in_list)
            rc |= mime_buf_adds(&l->html, "<ul>\n");
        l->in_list = true;
        rc |= mime_buf_addf(&l->html, "<li>%s</li>\n", esc);
    } else if (*s) {
        rc |= mime_buf_addf(&l->html, "<p>%s</p>\n", esc);
    }
    g_free(esc);
    g_free(s);
    return rc ? -1 : 0;
}

static int line(struct lines *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int line(struct lines *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vline(l, false, fmt, ap);
    va_end(ap);
    return rc;
}

/* One element of a list (a recipient). */
static int item(struct lines *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int item(struct lines *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vline(l, true, fmt, ap);
    va_end(ap);
    return rc;
}

static const char *kind_text(pec_rcpt_kind k)
{
    return k == PEC_RCPT_ESTERNO ? "\"posta ordinaria\"" : "\"posta certificata\"";
}

static const char *title_of(const pec_build_args *a)
{
    switch (a->type) {
    case PEC_TYPE_POSTA_CERTIFICATA: return "Messaggio di posta certificata";
    case PEC_TYPE_ANOMALIA: return "Anomalia nel messaggio";
    case PEC_TYPE_ACCETTAZIONE: return "Ricevuta di accettazione";
    case PEC_TYPE_NON_ACCETTAZIONE:
        return a->errore == PEC_ERRORE_VIRUS ? "Avviso di non accettazione per virus"
                                             : "Avviso di non accettazione";
    case PEC_TYPE_PRESA_IN_CARICO: return "Ricevuta di presa in carico";
    case PEC_TYPE_AVVENUTA_CONSEGNA: return "Ricevuta di avvenuta consegna";
    case PEC_TYPE_ERRORE_CONSEGNA:
        return a->errore == PEC_ERRORE_VIRUS ? "Avviso di mancata consegna per virus"
                                             : "Avviso di mancata consegna";
    case PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA:
        return "Avviso di mancata consegna per superamento dei tempi massimi";
    case PEC_TYPE_RILEVAZIONE_VIRUS: return "Problema di sicurezza";
    default: return "Messaggio";
    }
}

int pec_text_render(const pec_identity *id, const pec_build_args *a, const pec_daticert *d,
                    mime_buf *plain, mime_buf *html)
{
    struct lines l = {{0}, {0}, false, false};
    const char *subj = d->oggetto ? d->oggetto : "";
    const char *from = d->mittente ? d->mittente : "";
    const char *reason = a->errore_esteso ? a->errore_esteso : "errore non specificato";
    const char *who = a->consegna ? a->consegna : "";
    int rc = 0;
    char when[96];
    snprintf(when, sizeof when, "Il giorno %s alle ore %s (%s)", d->giorno, d->ora, d->zona);

    rc |= line(&l, "%s", title_of(a));
    rc |= line(&l, "%s", "");
    switch (a->type) {
    case PEC_TYPE_POSTA_CERTIFICATA:
        rc |= line(&l, "%s il messaggio \"%s\" è stato inviato da \"%s\"", when, subj, from);
        rc |= line(&l, "indirizzato a:");
        for (size_t i = 0; i < d->n_destinatari; i++)
            rc |= item(&l, "%s", d->destinatari[i].addr);
        rc |= line(&l, "Il messaggio originale è incluso in allegato.");
        break;
    case PEC_TYPE_ANOMALIA:
        rc |= line(&l, "%s è stato ricevuto il messaggio \"%s\" inviato da \"%s\"", when, subj,
                   from);
        rc |= line(&l, "indirizzato a:");
        for (size_t i = 0; i < d->n_destinatari; i++)
            rc |= item(&l, "%s", d->destinatari[i].addr);
        rc |= line(&l, "I dati non sono stati certificati per il seguente errore:");
        rc |= line(&l, "%s", reason);
        rc |= line(&l, "Il messaggio originale è incluso in allegato.");
        break;
    case PEC_TYPE_ACCETTAZIONE:
        rc |= line(&l, "%s il messaggio con Oggetto \"%s\" inviato da \"%s\"", when, subj, from);
        rc |= line(&l, "ed indirizzato a:");
        for (size_t i = 0; i < d->n_destinatari; i++)
            rc |= item(&l, "%s (%s)", d->destinatari[i].addr, kind_text(d->destinatari[i].kind));
        rc |= line(&l, "è stato accettato dal sistema ed inoltrato.");
        break;
    case PEC_TYPE_NON_ACCETTAZIONE:
        rc |= line(&l, "%s il messaggio con Oggetto \"%s\" inviato da \"%s\"", when, subj, from);
        if (a->errore == PEC_ERRORE_VIRUS)
            rc |= line(&l, "non è stato accettato perché contiene un virus: %s", reason);
        else
            rc |= line(&l, "non è stato accettato per il seguente errore: %s", reason);
        rc |= line(&l, "Il messaggio non è stato inoltrato.");
        break;
    case PEC_TYPE_PRESA_IN_CARICO:
        rc |= line(&l, "%s il messaggio con Oggetto \"%s\" proveniente da \"%s\"", when, subj,
                   from);
        rc |= line(&l, "ed indirizzato a:");
        for (size_t i = 0; i < d->n_ricezione; i++)
            rc |= item(&l, "%s", d->ricezione[i]);
        rc |= line(&l, "è stato preso in carico dal gestore %s.", id->name);
        break;
    case PEC_TYPE_AVVENUTA_CONSEGNA:
        rc |= line(&l, "%s il messaggio con Oggetto \"%s\" inviato da \"%s\"", when, subj, from);
        rc |= line(&l, "ed indirizzato a \"%s\"", who);
        rc |= line(&l, "è stato correttamente consegnato al destinatario.");
        break;
    case PEC_TYPE_ERRORE_CONSEGNA:
        rc |= line(&l, "%s nel messaggio con Oggetto \"%s\" inviato da \"%s\"", when, subj, from);
        rc |= line(&l, "e destinato all'utente \"%s\" è stato rilevato %s:", who,
                   a->errore == PEC_ERRORE_VIRUS ? "un virus" : "il seguente errore");
        rc |= line(&l, "%s", reason);
        rc |= line(&l, "Il messaggio non è stato consegnato.");
        break;
    case PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA:
        rc |= line(&l, "%s il messaggio con Oggetto \"%s\" inviato da \"%s\"", when, subj, from);
        rc |= line(&l, "e destinato all'utente \"%s\"", who);
        rc |= line(&l, "%s", reason);
        break;
    case PEC_TYPE_RILEVAZIONE_VIRUS:
        rc |= line(&l, "%s nel messaggio con Oggetto \"%s\" inviato da \"%s\"", when, subj, from);
        rc |= line(&l, "e destinato all'utente \"%s\" è stato rilevato un problema di "
                       "sicurezza:", who);
        rc |= line(&l, "%s", reason);
        rc |= line(&l, "Il messaggio non è stato consegnato.");
        break;
    default:
        break;
    }
    if (d->identificativo)
        rc |= line(&l, "Identificativo del messaggio: %s", d->identificativo);
    if (a->type != PEC_TYPE_ANOMALIA)
        rc |= line(&l, "L'allegato daticert.xml contiene informazioni di servizio sulla "
                       "trasmissione");
    if (rc) {
        mime_buf_free(&l.plain);
        mime_buf_free(&l.html);
        return -1;
    }
    /* §4.3.1: HTML with the same information, no references, no scripts */
    char *title = g_markup_escape_text(title_of(a), -1);
    if (l.in_list)
        rc |= mime_buf_adds(&l.html, "</ul>\n");
    /* lang="it": a screen reader reads it in Italian; one heading, then
     * paragraphs and lists, in a main landmark */
    rc |= mime_buf_addf(html, "<!DOCTYPE html>\n<html lang=\"it\"><head><title>%s</title></head>"
                              "<body><main>\n",
                        title);
    g_free(title);
    rc |= mime_buf_add(html, l.html.data, l.html.len);
    rc |= mime_buf_adds(html, "</main></body></html>\n");
    rc |= mime_buf_add(plain, l.plain.data, l.plain.len);
    mime_buf_free(&l.plain);
    mime_buf_free(&l.html);
    return rc ? -1 : 0;
}
