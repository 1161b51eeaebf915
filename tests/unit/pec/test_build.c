/*
 * test_build.c - the header fields and layout of each message (RFC 6109 §3,
 * digest §1 and §0): From, To, Reply-To, Message-ID, X-Riferimento-Message-ID,
 * the copied fields of the envelopes, the original rewritten at the access
 * point, the breve hashes, and the arguments each type requires.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "testutil.h"
#include "pec/pec_internal.h"   /* pec_text_leaf_write */

#include <gmime/gmime.h>

static bool has(const pec_buf *m, const char *s)
{
    return memmem(m->data, m->len, s, strlen(s)) != NULL;
}

/* The header block (up to the first empty line). */
static char *headers_of(const pec_buf *m)
{
    const unsigned char *e = memmem(m->data, m->len, "\r\n\r\n", 4);
    assert_non_null(e);
    return strndup((const char *)m->data, (size_t)(e - m->data) + 2);
}

/* The text parts are written without GMime objects; the bytes must be those
 * GMime's text part gives with the settings pec_build used before (smallest
 * charset, quoted-printable, inline): the reference here is that code. */
static void gmime_text_leaf(mime_buf *out, const char *subtype, const char *text)
{
    GMimeTextPart *t = g_mime_text_part_new_with_subtype(subtype);
    g_mime_text_part_set_text(t, text);
    g_mime_part_set_content_encoding(GMIME_PART(t), GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
    g_mime_object_set_content_disposition(GMIME_OBJECT(t),
                                          g_mime_content_disposition_parse(NULL, "inline"));
    assert_int_equal(mime_write(GMIME_OBJECT(t), out), 0);
    g_object_unref(t);
}

static void test_text_leaf_as_gmime(void **state)
{
    (void)state;
    mime_init();
    static const char *const texts[] = {
        "Ricevuta di accettazione\n\nIl giorno 05/12/2026 alle ore 03:01:50 (+0000) il "
        "messaggio con Oggetto \"prova\" inviato da \"u0@pec.a.test\"\n\xc3\xa8 stato "
        "accettato dal sistema ed inoltrato.\nIdentificativo del messaggio: "
        "opec1.20261205030150.661DA36C795D1E55@pec.a.test\n",
        "ascii only\nsecond line\n",
        "euro \xe2\x82\xac and \xc3\xa8: utf-8\n",
        "\xc3\xa0\xc3\xa8\xc3\xac\xc3\xb2\xc3\xb9 \xe4\xb8\xad\xe6\x96\x87\n\n\n",
        "no final newline \xc3\xa8",
        "",
        "trailing space \nand tab\t\nFrom here\n.dot\n=equals=3D\n",
        "a line longer than seventy-six characters, which quoted-printable must break "
        "with a soft line break, and then some more, \xc3\xa8 \xc3\xa8 \xc3\xa8 \xc3\xa8\n",
        "CRLF\r\nline\r\n",
        "<html><body>&quot;Oggetto&quot;<br/>\n</body></html>\n",
        "invalid \xc3 utf-8 \xff\xfe\n",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        for (int h = 0; h < 2; h++) {
            const char *sub = h ? "html" : "plain";
            mime_buf want = {0}, got = {0};
            gmime_text_leaf(&want, sub, texts[i]);
            assert_int_equal(pec_text_leaf_write(&got, sub, texts[i]), 0);
            if (want.len != got.len || memcmp(want.data, got.data, want.len) != 0)
                fail_msg("text %zu (%s) differs:\n--- GMime\n%s\n--- ours\n%s", i, sub,
                         (const char *)want.data, (const char *)got.data);
            mime_buf_free(&want);
            mime_buf_free(&got);
        }
    }
}

static void test_envelope_headers(void **state)
{
    (void)state;
    pec_buf m;
    assert_int_equal(tbuild(PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_BREVE, 0, &m), 0);
    char *h = headers_of(&m);
    assert_non_null(strstr(h, "From: \"Per conto di: mario.rossi@pec.a.example\" "
                              "<posta-certificata@pec.a.example>\r\n"));
    assert_non_null(strstr(h, "Reply-To: mario.rossi@pec.a.example\r\n"));
    assert_non_null(strstr(h, "To: Anna Bianchi <anna.bianchi@pec.b.example>, "
                              "luca@ordinaria.example\r\n"));
    assert_non_null(strstr(h, "Cc: carla@pec.b.example\r\n"));
    assert_non_null(strstr(h, "Received: from client.example ([192.0.2.1]) by "
                              "mx.pec.a.example with ESMTPSA;\r\n\tMon, 16 Jun 2025"));
    assert_non_null(strstr(h, "Return-Path: <mario.rossi@pec.a.example>\r\n"));
    assert_non_null(strstr(h, "Date: Mon, 16 Jun 2025 10:15:00 +0200\r\n"));
    assert_non_null(strstr(h, "X-Riferimento-Message-ID: <abc123@client.example>\r\n"));
    assert_non_null(strstr(h, "X-TipoRicevuta: breve\r\n"));
    assert_non_null(strstr(h, "Subject: POSTA CERTIFICATA: Contratto n. 42 =?UTF-8?"));
    assert_null(strstr(h, "Sender:")); /* D13 */
    /* the envelope's Message-ID is the PEC msgid, also inside postacert.eml */
    char *mid = strstr(h, "Message-ID: <opec1.20250616101500.");
    assert_non_null(mid);
    char id[128];
    assert_int_equal(sscanf(mid, "Message-ID: <%127[^>]>", id), 1);
    free(h);
    const unsigned char *pc = memmem(m.data, m.len, "name=\"postacert.eml\"", 20);
    assert_non_null(pc);
    char want[400];
    snprintf(want, sizeof want, "\r\n\r\nMessage-ID: <%s>\r\nX-Riferimento-Message-ID: "
                                "<abc123@client.example>\r\nReturn-Path:", id);
    assert_true(has(&m, want));
    /* the original body is untouched, trailing spaces included */
    assert_true(has(&m, "Buongiorno, in allegato il contratto.   \r\n"));
    assert_true(has(&m, "Content-Transfer-Encoding: 8bit\r\n")); /* 8-bit original */
    pec_buf_free(&m);
}

static void test_receipt_headers(void **state)
{
    (void)state;
    pec_buf m;
    assert_int_equal(tbuild(PEC_TYPE_ACCETTAZIONE, 0, 0, &m), 0);
    char *h = headers_of(&m);
    assert_non_null(strstr(h, "From: posta-certificata@pec.a.example\r\n"));
    assert_non_null(strstr(h, "To: mario.rossi@pec.a.example\r\n"));
    assert_non_null(strstr(h, "Message-ID: <opec1.20250616101500.99.8.1.8@pec.a.example>\r\n"));
    assert_non_null(strstr(h, "X-Ricevuta: accettazione\r\n"));
    assert_null(strstr(h, "X-Trasporto"));
    assert_null(strstr(h, "X-TipoRicevuta"));
    free(h);
    assert_true(has(&m, "posta certificata"));
    assert_true(has(&m, "posta ordinaria"));
    /* the HTML part: in Italian for a screen reader, a heading, the recipients a list
     * (quoted-printable: '=' is =3D) */
    assert_true(has(&m, "<html lang=3D\"it\">"));
    assert_true(has(&m, "<h1>Ricevuta di accettazione</h1>"));
    assert_true(has(&m, "<ul>") && has(&m, "<li>anna.bianchi@pec.b.example"));
    pec_buf_free(&m);
    /* presa in carico goes to the sender provider's mailReceipt */
    assert_int_equal(tbuild(PEC_TYPE_PRESA_IN_CARICO, 0, 0, &m), 0);
    h = headers_of(&m);
    assert_non_null(strstr(h, "To: ricevute@pec.a.example\r\n"));
    free(h);
    pec_buf_free(&m);
    /* rilevazione virus: X-Mittente and the mailReceipt */
    assert_int_equal(tbuild(PEC_TYPE_RILEVAZIONE_VIRUS, 0, PEC_ERRORE_VIRUS, &m), 0);
    h = headers_of(&m);
    assert_non_null(strstr(h, "X-Mittente: mario.rossi@pec.a.example\r\n"));
    assert_non_null(strstr(h, "To: ricevute@pec.a.example\r\n"));
    assert_null(strstr(h, "X-VerificaSicurezza")); /* not listed for §3.2.3 */
    free(h);
    pec_buf_free(&m);
}

static void test_anomaly(void **state)
{
    (void)state;
    pec_buf m;
    assert_int_equal(tbuild(PEC_TYPE_ANOMALIA, 0, 0, &m), 0);
    char *h = headers_of(&m);
    /* §3.2.2: the received Message-ID is kept */
    assert_non_null(strstr(h, "Message-ID: <abc123@client.example>\r\n"));
    assert_non_null(strstr(h, "X-Trasporto: errore\r\n"));
    assert_non_null(strstr(h, "Subject: ANOMALIA MESSAGGIO: "));
    free(h);
    assert_false(has(&m, "daticert.xml"));
    assert_false(has(&m, "text/html"));
    assert_true(has(&m, "firma non valida"));
    /* RFC 6109 §4.3.2: the received message is attached as postacert.eml */
    assert_true(has(&m, "Content-Type: message/rfc822; name=\"postacert.eml\"\r\n"));
    assert_true(has(&m, "filename=\"postacert.eml\""));
    assert_false(has(&m, "anomalia.eml"));
    pec_buf_free(&m);
}

static void test_breve_hashes(void **state)
{
    (void)state;
    size_t olen;
    const char *o = torig(&olen);
    pec_buf b;
    assert_int_equal(pec_breve_transform(o, olen, &b, NULL, 0), 0);
    /* SHA-1 of the base64 body as transmitted, without the delimiter's CRLF */
    static const char body[] = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K";
    unsigned char md[20];
    SHA1((const unsigned char *)body, sizeof body - 1, md);
    char hex[41];
    for (int i = 0; i < 20; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    pec_buf tmp = b;
    assert_true(has(&tmp, hex));
    assert_true(has(&tmp, "filename=contratto.pdf.hash"));
    assert_false(has(&tmp, body));
    assert_true(has(&tmp, "Buongiorno, in allegato il contratto."));
    assert_true(has(&tmp, "Message-ID: <abc123@client.example>"));
    pec_buf_free(&b);
    /* an S/MIME-encrypted original is left as is */
    static const char enc[] = "From: a@b.example\r\nTo: c@d.example\r\nMIME-Version: 1.0\r\n"
                              "Content-Type: application/pkcs7-mime; smime-type=enveloped-data;"
                              " name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                              "MIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n";
    assert_int_equal(pec_breve_transform(enc, sizeof enc - 1, &b, NULL, 0), 0);
    tmp = b;
    assert_true(has(&tmp, "MIAGCSqGSIb3DQEHA6CAMIACAQAx"));
    pec_buf_free(&b);
}

/* RFC 6109 §3.3.2.2 with hostile names (issue 16 item 4): a decoded file name
 * is never written raw.  Each row: the name's parameters as the sender wrote
 * them, and the name the hash part must carry. */
static void test_breve_hostile_names(void **state)
{
    (void)state;
    static const struct {
        const char *params; /* Content-Disposition parameters */
        const char *want;   /* the hash part's decoded filename */
    } rows[] = {
        /* RFC 2231: CR LF and a new header block in the decoded name */
        {.params = "filename*=UTF-8''%0D%0AContent-Type%3A%20text%2Fhtml%0D%0A%0D%0A%3Cscript%3E",
         .want = "__Content-Type: text/html____<script>.hash"},
        /* RFC 2047 inside a quoted name (GMime decodes it) */
        {.params = "filename=\"=?UTF-8?Q?a=0D=0AX-Evil:_1?=\"", .want = "a__X-Evil: 1.hash"},
        /* quotes and backslashes stay characters of the value */
        {.params = "filename=\"a\\\"b\\\\c.pdf\"", .want = "a\"b\\c.pdf.hash"},
        /* tab, DEL, a C1 control (U+0085, NEL) */
        {.params = "filename*=UTF-8''x%09y%7Fz%C2%85.pdf", .want = "x_y_z_.pdf.hash"},
        /* non-ASCII is kept (GMime writes it RFC 2231-encoded) */
        {.params = "filename*=UTF-8''fattura%20%C3%A8.pdf", .want = "fattura \xc3\xa8.pdf.hash"},
        /* a name of nothing but a NUL */
        {.params = "filename*=UTF-8''%00", .want = "allegato.hash"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *o = g_strdup_printf(
            "From: a@b.example\r\nTo: c@d.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            "--b1\r\nContent-Type: text/plain\r\n\r\ntesto\r\n"
            "--b1\r\nContent-Type: application/pdf\r\n"
            "Content-Disposition: attachment; %s\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nUERGREFUQQ==\r\n--b1--\r\n",
            rows[i].params);
        pec_buf b;
        assert_int_equal(pec_breve_transform(o, strlen(o), &b, NULL, 0), 0);
        g_free(o);
        /* no injected header block: the output parses to the same two leaves */
        assert_null(memmem(b.data, b.len, "\nContent-Type: text/html", 24));
        GMimeMessage *m = mime_parse_message(b.data, b.len, NULL, 0);
        assert_non_null(m);
        GMimeObject *body = g_mime_message_get_mime_part(m);
        assert_true(GMIME_IS_MULTIPART(body));
        assert_int_equal(g_mime_multipart_get_count(GMIME_MULTIPART(body)), 2);
        GMimeObject *h = g_mime_multipart_get_part(GMIME_MULTIPART(body), 1);
        assert_true(GMIME_IS_PART(h));
        const char *fn = g_mime_part_get_filename(GMIME_PART(h));
        if (fn == NULL || strcmp(fn, rows[i].want) != 0)
            fail_msg("row %zu: filename \"%s\", want \"%s\"", i, fn ? fn : "(null)", rows[i].want);
        /* every header line of the output is printable (no raw control octet) */
        for (size_t k = 0; k < b.len; k++) {
            unsigned char c = b.data[k];
            if (c == '\r')
                assert_true(k + 1 < b.len && b.data[k + 1] == '\n');
            else if (c != '\n' && c != '\t' && (c < 0x20 || c == 0x7f))
                fail_msg("row %zu: control octet 0x%02x at %zu", i, c, k);
        }
        g_object_unref(m);
        pec_buf_free(&b);
    }
    /* a name longer than the bound is cut at a character boundary */
    GString *lng = g_string_new(NULL);
    for (int k = 0; k < 300; k++)
        g_string_append(lng, "\xc3\xa8");   /* 2 octets each */
    char *o = g_strdup_printf("From: a@b.example\r\nMIME-Version: 1.0\r\n"
                              "Content-Type: application/pdf; name=\"%s\"\r\n"
                              "Content-Transfer-Encoding: base64\r\n\r\nUERGREFUQQ==\r\n",
                              lng->str);
    g_string_free(lng, TRUE);
    pec_buf b;
    assert_int_equal(pec_breve_transform(o, strlen(o), &b, NULL, 0), 0);
    g_free(o);
    GMimeMessage *m = mime_parse_message(b.data, b.len, NULL, 0);
    const char *fn = g_mime_part_get_filename(GMIME_PART(g_mime_message_get_mime_part(m)));
    assert_non_null(fn);
    assert_int_equal(strlen(fn), 200 + 5);
    assert_true(g_utf8_validate(fn, -1, NULL));
    assert_string_equal(fn + 200, ".hash");
    g_object_unref(m);
    pec_buf_free(&b);
}

/* The client's msgid (§2.2.1) of the user's own message is its Message-ID:
 * an X-Riferimento-Message-ID the sender wrote into it is not ours.  In the
 * postacert.eml of an envelope (the original of a delivery receipt) that
 * field is the sending access point's, and it is the one. */
static void test_client_msgid_not_spoofed(void **state)
{
    (void)state;
    static const char user[] = "From: mario.rossi@pec.a.example\r\nTo: anna@pec.b.example\r\n"
                               "Subject: s\r\nMessage-ID: <real@client.example>\r\n"
                               "X-Riferimento-Message-ID: <spoof@client.example>\r\n\r\nb\r\n";
    static const char copy[] = "Message-ID: <opec1.1.2.3@pec.a.example>\r\n"
                               "X-Riferimento-Message-ID: <real@client.example>\r\n"
                               "From: mario.rossi@pec.a.example\r\nTo: anna@pec.b.example\r\n"
                               "Subject: s\r\n\r\nb\r\n";
    static pec_recipient rc[] = {{"anna@pec.b.example", PEC_RCPT_CERTIFICATO}};
    static const struct {
        pec_type type;
        const char *orig;
    } rows[] = {{PEC_TYPE_ACCETTAZIONE, user}, {PEC_TYPE_POSTA_CERTIFICATA, user},
                {PEC_TYPE_AVVENUTA_CONSEGNA, copy}};
    pec_signer *sg = tsigner(&tpki_get()->signer);
    pec_identity id = {.domain = "pec.a.example", .name = "Gestore A", .signer = sg};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        pec_build_args a = {.type = rows[i].type, .variant = PEC_VARIANT_COMPLETA,
                            .original = rows[i].orig, .original_len = strlen(rows[i].orig),
                            .sender = "mario.rossi@pec.a.example", .recipients = rc,
                            .n_recipients = 1, .when = 1750061700,
                            .pec_id = "opec1.1.2.3@pec.a.example",
                            .message_id = rows[i].type == PEC_TYPE_POSTA_CERTIFICATA
                                              ? NULL
                                              : "opec1.1.2.3.1@pec.a.example",
                            .consegna = "anna@pec.b.example"};
        pec_buf m;
        char err[256];
        if (pec_build(&id, &a, &m, err, sizeof err) != 0)
            fail_msg("row %zu: %s", i, err);
        char *h = headers_of(&m);
        if (strstr(h, "X-Riferimento-Message-ID: <real@client.example>\r\n") == NULL)
            fail_msg("row %zu (%s): %s", i, pec_type_name(rows[i].type), h);
        free(h);
        /* nor in the certification data */
        assert_true(has(&m, "real@client.example") && !has(&m, "<msgid>&lt;spoof"));
        pec_buf_free(&m);
    }
    pec_signer_free(sg);
}

static void test_rewrite(void **state)
{
    (void)state;
    static const char o[] = "From: a@b.example\nMessage-ID:\n <x@y>\nX-Riferimento-Message-ID: <forged@z>\n"
                            "Subject: s\n\nbody\n";
    pec_buf r;
    assert_int_equal(pec_original_rewrite(o, sizeof o - 1, "opec1.1@pec.a.example", &r, NULL, 0), 0);
    static const char want[] = "Message-ID: <opec1.1@pec.a.example>\r\nX-Riferimento-Message-ID: "
                               "<x@y>\r\nFrom: a@b.example\nSubject: s\n\nbody\n";
    assert_int_equal(r.len, sizeof want - 1);
    assert_memory_equal(r.data, want, r.len);
    pec_buf_free(&r);
    assert_int_equal(pec_original_rewrite("no header end", 13, "a@b", &r, NULL, 0), -1);
}

static void test_required_arguments(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    pec_signer *s = tsigner(&k->signer);
    pec_recipient r = {"x@pec.b.example", PEC_RCPT_CERTIFICATO};
    pec_build_args a = {.type = PEC_TYPE_AVVENUTA_CONSEGNA, .variant = PEC_VARIANT_SINTETICA,
                        .sender = "m@pec.a.example", .recipients = &r, .n_recipients = 1,
                        .when = 1750061700, .pec_id = "opec1.x@pec.a.example",
                        .message_id = "opec1.y@pec.b.example"};
    pec_buf m;
    char err[256];
    /* the signer's address must be the From of the domain (§2.1) */
    pec_identity wrong = {.domain = "pec.b.example", .name = "B", .signer = s};
    assert_int_equal(pec_build(&wrong, &a, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "§2.1"));
    pec_identity id = {.domain = "pec.a.example", .name = "A", .signer = s};
    assert_int_equal(pec_build(&id, &a, &m, err, sizeof err), -1); /* no consegna */
    a.consegna = "x@pec.b.example";
    assert_int_equal(pec_build(&id, &a, &m, err, sizeof err), 0);
    pec_buf_free(&m);
    a.type = PEC_TYPE_PRESA_IN_CARICO; /* needs ricezione and notify_to */
    assert_int_equal(pec_build(&id, &a, &m, err, sizeof err), -1);
    a.type = PEC_TYPE_POSTA_CERTIFICATA; /* needs the original */
    assert_int_equal(pec_build(&id, &a, &m, err, sizeof err), -1);
    a.type = PEC_TYPE_ACCETTAZIONE;
    a.subject = "evil\r\nBcc: x@y.example";
    assert_int_equal(pec_build(&id, &a, &m, err, sizeof err), 0);
    {
        /* no header injection (the text body may wrap anywhere) */
        char *h = headers_of(&m);
        assert_null(strstr(h, "\r\nBcc:"));
        assert_non_null(strstr(h, "Subject: ACCETTAZIONE: evil  Bcc: x@y.example\r\n"));
        free(h);
    }
    pec_buf_free(&m);
    a.sender = "bad address\r\nBcc: x@y";
    assert_int_equal(pec_build(&id, &a, &m, err, sizeof err), -1);
    pec_signer_free(s);
    char buf[128];
    assert_int_equal(pec_make_msgid(buf, sizeof buf, "pec.a.example", 1750061700, 12), 0);
    assert_non_null(strstr(buf, "opec1.20250616101500."));
    assert_non_null(strstr(buf, ".12.1.12@pec.a.example"));
}

/* The delivery point takes postacert.eml out of the envelope and makes a
 * completa receipt from it: the client msgid survives the round trip. */
static void test_envelope_original_to_receipt(void **state)
{
    (void)state;
    pec_buf env, orig;
    assert_int_equal(tbuild(PEC_TYPE_POSTA_CERTIFICATA, PEC_VARIANT_COMPLETA, 0, &env), 0);
    assert_int_equal(pec_envelope_original(env.data, env.len, &orig, NULL, 0), 0);
    assert_true(has(&orig, "X-Riferimento-Message-ID: <abc123@client.example>"));
    assert_true(has(&orig, "Buongiorno, in allegato il contratto.   \r\n"));
    const struct tpki *k = tpki_get();
    pec_signer *s = tsigner(&k->signer);
    pec_identity id = {.domain = "pec.a.example", .name = "A", .signer = s};
    pec_recipient r = {"anna.bianchi@pec.b.example", PEC_RCPT_CERTIFICATO};
    pec_build_args a = {.type = PEC_TYPE_AVVENUTA_CONSEGNA, .variant = PEC_VARIANT_BREVE,
                        .original = orig.data, .original_len = orig.len,
                        .sender = "mario.rossi@pec.a.example", .recipients = &r,
                        .n_recipients = 1, .when = 1750061800, .pec_id = "opec1.x@pec.a.example",
                        .message_id = "opec1.z@pec.a.example",
                        .consegna = "anna.bianchi@pec.b.example"};
    pec_buf m;
    assert_int_equal(pec_build(&id, &a, &m, NULL, 0), 0);
    assert_true(has(&m, "X-Riferimento-Message-ID: <abc123@client.example>\r\n"));
    assert_true(has(&m, "contratto.pdf.hash"));
    pec_buf_free(&m);
    pec_signer_free(s);
    pec_buf_free(&orig);
    assert_int_equal(pec_envelope_original("a: b\r\n\r\nx", 10, &orig, NULL, 0), -1);
    pec_buf_free(&env);
}

/* The facts of an original (subject, Reply-To, Message-ID) are remembered
 * per thread for the next build from the same header block: a different
 * block of the same length, or the same buffer changed in place, must give
 * its own facts. */
static void test_original_facts_memo(void **state)
{
    (void)state;
    const struct tpki *k = tpki_get();
    pec_signer *s = tsigner(&k->signer);
    pec_identity id = {.domain = "pec.a.example", .name = "A", .signer = s};
    pec_recipient r = {"anna.bianchi@pec.b.example", PEC_RCPT_CERTIFICATO};
    char orig[] = "From: mario.rossi@pec.a.example\r\nTo: anna.bianchi@pec.b.example\r\n"
                  "Subject: Alfa\r\nReply-To: r1@x.example\r\nMessage-ID: <m1@client>\r\n"
                  "\r\nbody\r\n";
    struct {
        const char *subj, *reply, *mid;
    } steps[] = {
        {"Alfa", "r1", "m1"}, {"Alfa", "r1", "m1"}, {"Beta", "r2", "m2"},
        {"Beta", "r2", "m2"}, {"Alfa", "r1", "m1"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        /* the same buffer, rewritten in place (same address, same length) */
        char *p = strstr(orig, "Subject: ");
        memcpy(p + 9, steps[i].subj, 4);
        p = strstr(orig, "Reply-To: ");
        memcpy(p + 10, steps[i].reply, 2);
        p = strstr(orig, "Message-ID: <");
        memcpy(p + 13, steps[i].mid, 2);
        pec_build_args a = {.type = PEC_TYPE_POSTA_CERTIFICATA, .original = orig,
                            .original_len = strlen(orig),
                            .sender = "mario.rossi@pec.a.example", .recipients = &r,
                            .n_recipients = 1, .when = 1750061800,
                            .pec_id = "opec1.x@pec.a.example"};
        pec_buf m;
        char err[256] = "";
        if (pec_build(&id, &a, &m, err, sizeof err) != 0)
            fail_msg("step %zu: %s", i, err);
        char want[200];
        snprintf(want, sizeof want, "Subject: POSTA CERTIFICATA: %s\r\n", steps[i].subj);
        if (!has(&m, want))
            fail_msg("step %zu: no '%s'", i, want);
        snprintf(want, sizeof want, "Reply-To: %s@x.example\r\n", steps[i].reply);
        if (!has(&m, want))
            fail_msg("step %zu: no '%s'", i, want);
        snprintf(want, sizeof want, "X-Riferimento-Message-ID: <%s@client>\r\n", steps[i].mid);
        if (!has(&m, want))
            fail_msg("step %zu: no '%s'", i, want);
        pec_buf_free(&m);
    }
    pec_signer_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_leaf_as_gmime),
        cmocka_unit_test(test_envelope_headers),
        cmocka_unit_test(test_receipt_headers),
        cmocka_unit_test(test_anomaly),
        cmocka_unit_test(test_breve_hashes),
        cmocka_unit_test(test_breve_hostile_names),
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_client_msgid_not_spoofed),
        cmocka_unit_test(test_required_arguments),
        cmocka_unit_test(test_envelope_original_to_receipt),
        cmocka_unit_test(test_original_facts_memo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
