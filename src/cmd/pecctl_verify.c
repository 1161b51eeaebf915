/*
 * pecctl_verify.c - `pecctl verify [--json] [--trust CAFILE]... [--crl FILE]...
 * [--directory FILE.ldif|ldap://...] [--directory-ca CAFILE]
 * [--directory-bind-dn DN --directory-password-file FILE] [--at UNIXTIME]
 * FILE.eml...`: classifies each
 * message, checks its signature (src/pec pec_verify_flags), prints the
 * signer and the daticert fields (also of an invalid message, read with the
 * bounded parser after the signature check).  A bare multipart/signed
 * entity (a provider's message without its outer header fields) is
 * verified and typed by its daticert ("outer_headers": false).  An LDAP directory (ldap://HOST:PORT/BASE, ldaps://,
 * StartTLS as "ldap://HOST/BASE????starttls") is read with pecd's reader
 * (anonymously, or with a simple bind), its server checked against
 * --directory-ca.  Exit 0 = every file valid, 1 = some invalid, 2 = some
 * file could not be read.  --json prints one JSON object per file per line
 * (schema in docs/pec.md).
 *
 * Interface: pecctl_verify_main(argc, argv) with argv[0] == "verify".
 * Assumes: files are read whole (a PEC message is at most tens of MB).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include <glib.h>

#include "lib/lib.h"
#include "pec/pec.h"
#include "pec/pec_dir.h"

/* The providers' directory from an LDAP server: its certificate hashes.
 * bind_dn: a simple bind with the first line of password_file (as pecd's
 * [pec] directory_bind_dn and directory_password_file); NULL: anonymous. */
static int load_ldap(pec_trust *t, const char *url, const char *ca_file, const char *bind_dn,
                     const char *password_file)
{
    char *password = NULL;
    size_t n;
    if (password_file != NULL) {
        if (fs_read_file(password_file, &password, &n, 4096) == -1) {
            fprintf(stderr, "pecctl verify: --directory-password-file %s: %s\n", password_file,
                    strerror(errno));
            return -1;
        }
        password[strcspn(password, "\r\n")] = '\0';
    }
    struct pec_dir_conf c = {.source = url, .ca_file = ca_file, .timeout = 30,
                             .bind_dn = bind_dn, .password = password};
    pec_buf ldif;
    char err[512] = "";
    int rc = pec_dir_fetch(&c, &ldif, err, sizeof err);
    free(password);
    if (rc == 0) {
        rc = pec_trust_load_ldif(t, ldif.data, ldif.len, err, sizeof err) < 0 ? -1 : 0;
        pec_buf_free(&ldif);
    }
    if (rc < 0)
        fprintf(stderr, "pecctl verify: %s\n", err);
    return rc;
}

int pecctl_verify_main(int argc, char **argv);

#define MAX_FILE (256u * 1024 * 1024)

static void usage(FILE *f)
{
    fprintf(f, "usage: pecctl verify [--json] [--trust CAFILE]... [--crl CRLFILE]...\n"
               "                     [--directory FILE.ldif|ldap://HOST:PORT/BASE]\n"
               "                     [--directory-ca CAFILE] [--directory-bind-dn DN\n"
               "                      --directory-password-file FILE] [--at UNIXTIME] FILE.eml...\n"
               "  without --trust the chain embedded in each message is the anchor\n"
               "  exit: 0 valid, 1 invalid, 2 unreadable\n");
}

/* ---- JSON output ------------------------------------------------------------ */

#define BARE_NOTE                                                                          \
    "the outer header fields (From, X-Trasporto/X-Ricevuta) are missing (a bare signed "   \
    "entity): the type is read from daticert.xml once the signature holds, and From "      \
    "cannot be compared with the certificate"

static void json_str(const char *s)
{
    if (!s) {
        fputs("null", stdout);
        return;
    }
    char *v = g_utf8_make_valid(s, -1); /* hostile bytes never break the output */
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", stdout);
        else if (*p == '\r')
            fputs("\\r", stdout);
        else if (*p == '\t')
            fputs("\\t", stdout);
        else if (*p < 0x20 || *p == 0x7f)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
    g_free(v);
}

static void json_key(const char *k, bool *first)
{
    if (!*first)
        putchar(',');
    *first = false;
    json_str(k);
    putchar(':');
}

static void json_kv(const char *k, const char *v, bool *first)
{
    json_key(k, first);
    json_str(v);
}

static void iso_time(time_t t, char *buf, size_t size)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void json_daticert(const pec_daticert *d)
{
    bool f = true;
    putchar('{');
    json_kv("tipo", pec_type_name(d->tipo), &f);
    json_kv("errore", pec_errore_name(d->errore), &f);
    json_kv("mittente", d->mittente, &f);
    json_key("destinatari", &f);
    putchar('[');
    for (size_t i = 0; i < d->n_destinatari; i++) {
        bool g = true;
        printf("%s{", i ? "," : "");
        json_kv("indirizzo", d->destinatari[i].addr, &g);
        json_kv("tipo", d->destinatari[i].kind == PEC_RCPT_ESTERNO ? "esterno" : "certificato",
                &g);
        putchar('}');
    }
    putchar(']');
    json_kv("risposte", d->risposte, &f);
    json_kv("oggetto", d->oggetto, &f);
    json_kv("gestore_emittente", d->gestore_emittente, &f);
    json_key("data", &f);
    bool g = true;
    putchar('{');
    json_kv("zona", d->zona, &g);
    json_kv("giorno", d->giorno, &g);
    json_kv("ora", d->ora, &g);
    putchar('}');
    json_kv("identificativo", d->identificativo, &f);
    json_kv("msgid", d->msgid, &f);
    json_kv("ricevuta", pec_variant_name(d->ricevuta), &f);
    json_kv("consegna", d->consegna, &f);
    json_key("ricezione", &f);
    putchar('[');
    for (size_t i = 0; i < d->n_ricezione; i++) {
        if (i)
            putchar(',');
        json_str(d->ricezione[i]);
    }
    putchar(']');
    json_kv("errore_esteso", d->errore_esteso, &f);
    json_kv("warning", d->warning, &f);
    putchar('}');
}

static void print_json(const char *file, const pec_verdict *v, bool readable)
{
    bool f = true;
    char t[32];
    putchar('{');
    json_kv("file", file, &f);
    json_kv("type", pec_type_name(v->cls.type), &f);
    json_kv("variant", pec_variant_name(v->cls.variant), &f);
    json_key("valid", &f);
    fputs(v->valid ? "true" : "false", stdout);
    json_key("readable", &f);
    fputs(readable ? "true" : "false", stdout);
    json_kv("reason", v->valid ? NULL : pec_reason_name(v->reason), &f);
    json_kv("detail", v->valid ? NULL : v->detail, &f);
    json_key("signer", &f);
    if (v->signer_sha1[0]) {
        bool g = true;
        putchar('{');
        json_kv("subject", v->signer_subject, &g);
        json_kv("email", v->signer_email[0] ? v->signer_email : NULL, &g);
        json_kv("sha1", v->signer_sha1, &g);
        putchar('}');
    } else {
        fputs("null", stdout);
    }
    json_kv("digest", v->digest[0] ? v->digest : NULL, &f);
    json_key("signing_time", &f);
    if (v->signing_time) {
        iso_time(v->signing_time, t, sizeof t);
        json_str(t);
    } else {
        fputs("null", stdout);
    }
    json_kv("trust", v->signer_sha1[0] ? (v->trust_embedded ? "embedded" : "anchors") : NULL,
            &f);
    json_key("directory_checked", &f);
    fputs(v->directory_checked ? "true" : "false", stdout);
    json_key("virus", &f);
    fputs(v->cls.virus ? "true" : "false", stdout);
    json_key("rewrapped", &f);
    fputs(v->cls.rewrapped ? "true" : "false", stdout);
    json_key("outer_headers", &f);
    fputs(v->bare ? "false" : "true", stdout);
    json_kv("note", v->bare ? BARE_NOTE : NULL, &f);
    json_kv("daticert_error", v->daticert_error[0] ? v->daticert_error : NULL, &f);
    json_key("daticert", &f);
    if (v->daticert)
        json_daticert(v->daticert);
    else
        fputs("null", stdout);
    puts("}");
}

/* ---- text output ------------------------------------------------------------ */

static void print_text(const char *file, const pec_verdict *v)
{
    const char *variant = pec_variant_name(v->cls.variant);
    printf("%s: %s%s%s%s\n", file, pec_type_name(v->cls.type), variant ? " (" : "",
           variant ? variant : "", variant ? ")" : "");
    if (v->valid)
        printf("  signature: valid%s\n", v->trust_embedded ? " (anchored on the embedded chain)"
                                                           : "");
    else
        printf("  signature: INVALID [%s] %s\n", pec_reason_name(v->reason), v->detail);
    if (v->signer_sha1[0]) {
        printf("  signer:    %s <%s>\n", v->signer_subject, v->signer_email);
        printf("  cert sha1: %s%s\n", v->signer_sha1,
               v->directory_checked ? " (checked in the directory)" : "");
    }
    if (v->digest[0] || v->signing_time) {
        char t[32] = "-";
        if (v->signing_time)
            iso_time(v->signing_time, t, sizeof t);
        printf("  signed:    %s, digest %s\n", t, v->digest[0] ? v->digest : "-");
    }
    if (v->cls.virus)
        printf("  X-VerificaSicurezza: errore\n");
    if (v->cls.rewrapped)
        printf("  found inside a message/rfc822 (re-wrapped)\n");
    if (v->bare)
        printf("  note:      %s\n", BARE_NOTE);
    if (v->daticert_error[0])
        printf("  daticert:  not usable: %s\n", v->daticert_error);
    const pec_daticert *d = v->daticert;
    if (!d)
        return;
    printf("  daticert:  tipo=%s errore=%s\n", pec_type_name(d->tipo), pec_errore_name(d->errore));
    printf("    mittente:       %s\n", d->mittente);
    for (size_t i = 0; i < d->n_destinatari; i++)
        printf("    destinatario:   %s (%s)\n", d->destinatari[i].addr,
               d->destinatari[i].kind == PEC_RCPT_ESTERNO ? "esterno" : "certificato");
    printf("    risposte:       %s\n", d->risposte ? d->risposte : "-");
    printf("    oggetto:        %s\n", d->oggetto ? d->oggetto : "-");
    printf("    gestore:        %s\n", d->gestore_emittente);
    printf("    data:           %s %s (%s)\n", d->giorno, d->ora, d->zona);
    printf("    identificativo: %s\n", d->identificativo);
    if (d->msgid)
        printf("    msgid:          %s\n", d->msgid);
    if (d->ricevuta)
        printf("    ricevuta:       %s\n", pec_variant_name(d->ricevuta));
    if (d->consegna)
        printf("    consegna:       %s\n", d->consegna);
    for (size_t i = 0; i < d->n_ricezione; i++)
        printf("    ricezione:      %s\n", d->ricezione[i]);
    if (d->errore_esteso)
        printf("    errore-esteso:  %s\n", d->errore_esteso);
    if (d->warning)
        printf("    warning:        %s\n", d->warning);
}

/* ---- main ------------------------------------------------------------------- */

static int load_into(pec_trust *t, const char *path, int what)
{
    char *data = NULL;
    size_t len = 0;
    char err[256] = "";
    if (fs_read_file(path, &data, &len, 64u * 1024 * 1024) < 0) {
        fprintf(stderr, "pecctl verify: cannot read %s\n", path);
        return -1;
    }
    int rc;
    if (what == 't')
        rc = pec_trust_add_ca_pem(t, data, len, err, sizeof err);
    else if (what == 'c')
        rc = pec_trust_add_crl_pem(t, data, len, err, sizeof err);
    else
        rc = pec_trust_load_ldif(t, data, len, err, sizeof err) < 0 ? -1 : 0;
    free(data);
    if (rc < 0)
        fprintf(stderr, "pecctl verify: %s: %s\n", path, err);
    return rc;
}

int pecctl_verify_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},     {"trust", required_argument, NULL, 't'},
        {"crl", required_argument, NULL, 'c'}, {"directory", required_argument, NULL, 'd'},
        {"at", required_argument, NULL, 'a'}, {"help", no_argument, NULL, 'h'},
        {"directory-ca", required_argument, NULL, 'C'},
        {"directory-bind-dn", required_argument, NULL, 'B'},
        {"directory-password-file", required_argument, NULL, 'P'},
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    pec_trust *t = pec_trust_new();
    if (!t)
        return 2;
    optind = 1;
    int c, status = 0;
    const char *ldap_url = NULL, *ldap_ca = NULL, *bind_dn = NULL, *pwfile = NULL;
    while ((c = getopt_long(argc, argv, "jt:c:d:a:hC:B:P:", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = true;
            break;
        case 't':
        case 'c':
            if (load_into(t, optarg, c) < 0)
                status = 2;
            break;
        case 'd':
            if (pec_dir_is_ldap(optarg))
                ldap_url = optarg; /* read once every option is known */
            else if (load_into(t, optarg, 'd') < 0)
                status = 2;
            break;
        case 'C':
            ldap_ca = optarg;
            break;
        case 'B':
            bind_dn = optarg;
            break;
        case 'P':
            pwfile = optarg;
            break;
        case 'a':
            pec_trust_set_time(t, (time_t)strtoll(optarg, NULL, 10));
            break;
        case 'h':
            usage(stdout);
            pec_trust_free(t);
            return 0;
        default:
            usage(stderr);
            pec_trust_free(t);
            return 2;
        }
    }
    if (!status && (bind_dn == NULL) != (pwfile == NULL)) {
        fprintf(stderr, "pecctl verify: --directory-bind-dn and --directory-password-file go "
                        "together\n");
        status = 2;
    }
    if (!status && ldap_url && optind < argc &&
        load_ldap(t, ldap_url, ldap_ca, bind_dn, pwfile) < 0)
        status = 2;
    if (status || optind >= argc) {
        if (!status)
            usage(stderr);
        pec_trust_free(t);
        return 2;
    }
    for (int i = optind; i < argc; i++) {
        char *data = NULL;
        size_t len = 0;
        pec_verdict v;
        memset(&v, 0, sizeof v);
        bool readable = fs_read_file(argv[i], &data, &len, MAX_FILE) == 0;
        char err[256] = "";
        /* the daticert of an invalid message is shown too (bounded parser,
         * docs/pec.md "Hostile daticert"); a bare signed entity is verified */
        if (readable && pec_verify_flags(t, data, len, PEC_VERIFY_REPORT | PEC_VERIFY_BARE, &v,
                                         err, sizeof err) < 0)
            readable = false;
        if (!readable) {
            v.reason = PEC_R_UNREADABLE;
            snprintf(v.detail, sizeof v.detail, "%s", err[0] ? err : "cannot read the file");
            status = 2;
        } else if (!v.valid && status < 1) {
            status = 1;
        }
        if (json)
            print_json(argv[i], &v, readable);
        else if (!readable)
            printf("%s: unreadable: %s\n", argv[i], v.detail);
        else
            print_text(argv[i], &v);
        pec_verdict_free(&v);
        free(data);
    }
    fflush(stdout);
    pec_trust_free(t);
    return status;
}
