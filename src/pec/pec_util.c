/*
 * pec_util.c - vocabulary of RFC 6109 (names of types, variants, errors),
 * PEC msgid generation, address comparison and small shared helpers.
 *
 * Interface: pec.h (names, pec_make_msgid, pec_addr_equal, pec_buf_free)
 * and pec_internal.h.
 */
#include <openssl/err.h>
#include "pec/pec_internal.h"
#include "lib/lib.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Header values of X-Ricevuta / X-Trasporto and daticert tipo (App. A). */
static const char *const type_names[] = {
    [PEC_TYPE_NONE] = "none",
    [PEC_TYPE_POSTA_CERTIFICATA] = "posta-certificata",
    [PEC_TYPE_ANOMALIA] = "errore",
    [PEC_TYPE_ACCETTAZIONE] = "accettazione",
    [PEC_TYPE_NON_ACCETTAZIONE] = "non-accettazione",
    [PEC_TYPE_PRESA_IN_CARICO] = "presa-in-carico",
    [PEC_TYPE_AVVENUTA_CONSEGNA] = "avvenuta-consegna",
    [PEC_TYPE_ERRORE_CONSEGNA] = "errore-consegna",
    [PEC_TYPE_PREAVVISO_ERRORE_CONSEGNA] = "preavviso-errore-consegna",
    [PEC_TYPE_RILEVAZIONE_VIRUS] = "rilevazione-virus",
};

const char *pec_type_name(pec_type t)
{
    if ((unsigned)t >= sizeof type_names / sizeof type_names[0])
        return "none";
    return type_names[t];
}

pec_type pec_type_parse(const char *s)
{
    if (!s)
        return PEC_TYPE_NONE;
    for (size_t i = 1; i < sizeof type_names / sizeof type_names[0]; i++)
        if (strcasecmp(s, type_names[i]) == 0)
            return (pec_type)i;
    return PEC_TYPE_NONE;
}

const char *pec_variant_name(pec_variant v)
{
    switch (v) {
    case PEC_VARIANT_COMPLETA: return "completa";
    case PEC_VARIANT_BREVE: return "breve";
    case PEC_VARIANT_SINTETICA: return "sintetica";
    default: return NULL;
    }
}

pec_variant pec_variant_parse(const char *s)
{
    if (!s)
        return PEC_VARIANT_NONE;
    if (strcasecmp(s, "completa") == 0)
        return PEC_VARIANT_COMPLETA;
    if (strcasecmp(s, "breve") == 0)
        return PEC_VARIANT_BREVE;
    if (strcasecmp(s, "sintetica") == 0)
        return PEC_VARIANT_SINTETICA;
    return PEC_VARIANT_NONE;
}

static const char *const errore_names[] = {"nessuno", "no-dest", "no-dominio", "virus", "altro"};

const char *pec_errore_name(pec_errore e)
{
    if ((unsigned)e >= sizeof errore_names / sizeof errore_names[0])
        return "altro";
    return errore_names[e];
}

int pec_errore_parse(const char *s, pec_errore *out)
{
    for (size_t i = 0; s && i < sizeof errore_names / sizeof errore_names[0]; i++) {
        if (strcmp(s, errore_names[i]) == 0) {
            *out = (pec_errore)i;
            return 0;
        }
    }
    return -1;
}

static const char *const reason_names[] = {
    [PEC_OK] = "ok",
    [PEC_R_UNREADABLE] = "unreadable",
    [PEC_R_NOT_PEC] = "not-pec",
    [PEC_R_NO_SIGNATURE] = "no-signature",
    [PEC_R_BAD_SIGNATURE_FORMAT] = "unreadable-signature",
    [PEC_R_CONTENT_CHANGED] = "content-changed",
    [PEC_R_BAD_SIGNATURE] = "bad-signature",
    [PEC_R_CERT_EXPIRED] = "certificate-expired",
    [PEC_R_CERT_NOT_YET_VALID] = "certificate-not-yet-valid",
    [PEC_R_UNTRUSTED] = "untrusted",
    [PEC_R_REVOKED] = "revoked",
    [PEC_R_BAD_KEY_USAGE] = "bad-key-usage",
    [PEC_R_NOT_IN_DIRECTORY] = "not-in-directory",
    [PEC_R_SIGNER_MISMATCH] = "signer-mismatch",
    [PEC_R_DATICERT_MISSING] = "daticert-missing",
    [PEC_R_DATICERT_INVALID] = "daticert-invalid",
    [PEC_R_INCONSISTENT] = "inconsistent",
    [PEC_R_FORMAT] = "bad-format",
};

const char *pec_reason_name(pec_reason r)
{
    if ((unsigned)r >= sizeof reason_names / sizeof reason_names[0])
        return "unknown";
    return reason_names[r];
}

void pec_buf_free(pec_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

void pec_buf_take(pec_buf *dst, mime_buf *src)
{
    dst->data = src->data;
    dst->len = src->len;
    src->data = NULL;
    src->len = src->cap = 0;
}

int pec_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (err && errsz) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return -1;
}

char *pec_strdup_trim(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return xstrndup(s, n);
}

char *pec_strip_brackets(const char *s)
{
    if (!s)
        return NULL;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    if (n >= 2 && s[0] == '<' && s[n - 1] == '>')
        return xstrndup(s + 1, n - 2);
    return xstrndup(s, n);
}

void pec_hex(const unsigned char *in, size_t len, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int pec_make_msgid(char *buf, size_t size, const char *domain, time_t when, unsigned long seq)
{
    /* [obs] OpenPEC shape: opec<N>.<YYYYMMDDhhmmss>.<pid>.<n>.1.<n>@<domain>;
     * RFC 6109 §2.2.1 only asks for [alphanumeric]@[provider domain]. */
    struct tm tm;
    pec_legal_time(when, &tm);
    char stamp[16];
    strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
    int n = snprintf(buf, size, "opec1.%s.%ld.%lu.1.%lu@%s", stamp,
                     (long)getpid(), seq, seq % 100, domain);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

bool pec_addr_equal(const char *a, const char *b)
{
    /* DESIGN.md: addresses are compared without case, the local part too.
     * RFC 5321 §2.4 lets a host treat its local parts as case-sensitive, but
     * no PEC provider does (a mailbox is one address whatever its case), and
     * a comparison that is stricter than the mailboxes would refuse the
     * user's own message (§3.1.1) for a capital letter. */
    if (!a || !b)
        return false;
    return strcasecmp(a, b) == 0;
}

int pec_ossl_err(char *err, size_t errsz, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[160] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return pec_err(err, errsz, "%s%s%s", what, e ? ": " : "", buf);
}
