/*
 * test_daticert_hostile.c - daticert.xml from an attacker (issue 16): every
 * DOCTYPE and markup declaration refused (internal and external entities,
 * parameter entities, billion laughs), encodings the byte pass cannot read
 * refused, and the bounds of pec.h (bytes, nodes, attributes per element,
 * depth) accepted exactly at the bound and refused one above, fed whole.
 * The tree check after parsing is tested on trees built directly with
 * libxml2 (the byte pass keeps the parser from ever building them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <libxml/tree.h>

#include "pec/pec_internal.h"
#include "testutil.h"

/* A usable daticert around a fragment: PROLOG, then FILL inside <mittente>
 * (MFILL) and at the end of <dati> (FILL).  13 nodes of its own:
 * 11 elements and the attributes tipo and zona. */
#define BASE_NODES 13u
static char *doc(const char *prolog, const char *mfill, const char *fill)
{
    static const char a[] = "<postacert tipo=\"accettazione\"><intestazione><mittente>a@b";
    static const char b[] = "</mittente><destinatari>c@d</destinatari><risposte>a@b</risposte>"
                            "</intestazione><dati><gestore-emittente>G</gestore-emittente>"
                            "<data zona=\"+0100\"><giorno>01/01/2020</giorno><ora>00:00:00</ora>"
                            "</data><identificativo>i@d</identificativo>";
    static const char c[] = "</dati></postacert>";
    size_t n = strlen(prolog) + strlen(a) + strlen(mfill) + strlen(b) + strlen(fill) + strlen(c);
    char *x = malloc(n + 1);
    assert_non_null(x);
    snprintf(x, n + 1, "%s%s%s%s%s%s", prolog, a, mfill, b, fill, c);
    return x;
}

/* count copies of unit */
static char *rep(const char *unit, size_t count)
{
    size_t u = strlen(unit);
    char *x = malloc(u * count + 1);
    assert_non_null(x);
    for (size_t i = 0; i < count; i++)
        memcpy(x + i * u, unit, u);
    x[u * count] = '\0';
    return x;
}

/* an element <x .../> with n attributes */
static char *attrs(size_t n)
{
    char *x = malloc(16 + n * 16);
    assert_non_null(x);
    size_t k = (size_t)sprintf(x, "<x");
    for (size_t i = 0; i < n; i++)
        k += (size_t)sprintf(x + k, " a%zu=\"\"", i);
    sprintf(x + k, "/>");
    return x;
}

struct hcase {
    const char *name;
    char *xml;                     /* owned */
    size_t len;                    /* 0: strlen */
    int rc;
    const char *err;               /* a part of the reason (rc -1) */
};

static void run_case(const struct hcase *c)
{
    size_t len = c->len ? c->len : strlen(c->xml);
    pec_daticert d;
    char err[256] = "";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = pec_daticert_parse(c->xml, len, &d, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (rc != c->rc || (rc < 0 && c->err && !strstr(err, c->err)) || secs > 2.0)
        fprintf(stderr, "case %s: rc %d, \"%s\", %.2f s\n", c->name, rc, err, secs);
    assert_int_equal(rc, c->rc);
    assert_true(secs < 2.0); /* every bound keeps libxml2 linear */
    if (rc == 0) {
        /* nothing from outside the document ever appears in a field */
        assert_null(strstr(d.mittente, "root:"));
        assert_null(strstr(d.mittente, "lol"));
        pec_daticert_free(&d);
    } else {
        assert_true(strncmp(err, "daticert: ", 10) == 0);
        if (c->err)
            assert_non_null(strstr(err, c->err));
        /* validation refuses what parsing refuses, for the same reason */
        char verr[256] = "";
        assert_int_equal(pec_daticert_validate(c->xml, len, verr, sizeof verr), -1);
        /* (a field holding an element is refused when the fields are read;
         * validation gives the DTD's reason for it) */
        if (c->err && !strstr(c->err, "holds an element"))
            assert_non_null(strstr(verr, c->err));
    }
}

#define NOT_ALLOWED "DOCTYPE/entity declarations are not allowed"

static void test_declarations_refused(void **state)
{
    (void)state;
    struct hcase cases[] = {
        {"internal entity", doc("<!DOCTYPE postacert [<!ENTITY x \"lol\">]>", "&x;", ""), 0,
         -1, NOT_ALLOWED},
        {"entity bomb", NULL, 0, -1, NOT_ALLOWED},
        {"billion laughs",
         doc("<?xml version=\"1.0\"?><!DOCTYPE postacert [<!ENTITY lol \"lol\">"
             "<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">"
             "<!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">"
             "<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>",
             "&lol3;", ""),
         0, -1, NOT_ALLOWED},
        {"XXE file", doc("<!DOCTYPE p [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>", "&x;", ""),
         0, -1, NOT_ALLOWED},
        {"XXE url",
         doc("<!DOCTYPE p [<!ENTITY x SYSTEM \"http://127.0.0.1:9/x\">]>", "&x;", ""), 0, -1,
         NOT_ALLOWED},
        {"parameter entity",
         doc("<!DOCTYPE p [<!ENTITY % pe SYSTEM \"file:///etc/passwd\"> %pe;]>", "", ""), 0, -1,
         NOT_ALLOWED},
        {"external DTD", doc("<!DOCTYPE postacert SYSTEM \"file:///etc/passwd\">", "", ""), 0,
         -1, NOT_ALLOWED},
        {"lower-case doctype", doc("<!doctype postacert>", "", ""), 0, -1, NOT_ALLOWED},
        {"ENTITY without DOCTYPE", doc("<!ENTITY x \"y\">", "", ""), 0, -1, NOT_ALLOWED},
        {"ELEMENT declaration", doc("", "", "<!ELEMENT x ANY>"), 0, -1, NOT_ALLOWED},
        {"DOCTYPE inside a comment", doc("<!-- <!DOCTYPE x> -->", "", ""), 0, -1,
         NOT_ALLOWED},
        {"undefined entity", doc("", "&x;", ""), 0, -1, "not well-formed"},
        /* what holds without any declaration */
        /* XInclude is never processed, and an element in a text field is refused */
        {"XInclude",
         doc("", "<xi:include xmlns:xi=\"http://www.w3.org/2001/XInclude\" "
                 "href=\"file:///etc/passwd\" parse=\"text\"/>", ""),
         0, -1, "<mittente> holds an element <include>"},
        {"XInclude elsewhere",
         doc("", "", "<xi:include xmlns:xi=\"http://www.w3.org/2001/XInclude\" "
                     "href=\"file:///etc/passwd\" parse=\"text\"/>"),
         0, 0, NULL},
        {"predefined and character references", doc("", "&lt;&amp;&#60;&#x3e;", ""), 0, 0,
         NULL},
        {"comment, PI, CDATA", doc("<?xml version=\"1.0\"?><!-- c --><?pi x?>", "<![CDATA[<]]>", ""),
         0, 0, NULL},
    };
    /* the attack of issue 16, small: a 1 KB entity used 20,000 times */
    char *ent = rep("A", 1024), *refs = rep("&x;", 20000);
    char *prolog = malloc(strlen(ent) + 64);
    assert_non_null(prolog);
    sprintf(prolog, "<!DOCTYPE postacert [<!ENTITY x \"%s\">]>", ent);
    cases[1].xml = doc(prolog, refs, "");
    free(ent);
    free(refs);
    free(prolog);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i]);
        free(cases[i].xml);
    }
}

static void test_encodings(void **state)
{
    (void)state;
    /* UTF-16LE with its byte order mark: "<p/>" */
    static const char utf16[] = "\xff\xfe<\0p\0/\0>\0";
    struct hcase cases[] = {
        {"UTF-16", malloc(sizeof utf16), sizeof utf16 - 1, -1, "NUL byte"},
        {"UTF-7 declared",
         doc("<?xml version=\"1.0\" encoding=\"UTF-7\"?>", "+ADw-!DOCTYPE", ""), 0, -1,
         "encoding \"UTF-7\" is not accepted"},
        {"EBCDIC", strdup("Lo\xa7\x94\x93"), 0, -1, "does not start with '<'"},
        {"empty", strdup(""), 0, -1, "empty"},
        {"UTF-8 with BOM", NULL, 0, 0, NULL},
        {"ISO-8859-1", doc("<?xml version='1.0' encoding = 'iso-8859-1'?>", "\xe9", ""), 0, 0,
         NULL},
        {"declaration without encoding", doc("<?xml version=\"1.0\"?>", "", ""), 0, 0, NULL},
    };
    memcpy(cases[0].xml, utf16, sizeof utf16);
    char *plain = doc("", "", "");
    cases[4].xml = malloc(strlen(plain) + 4);
    sprintf(cases[4].xml, "\xef\xbb\xbf%s", plain);
    free(plain);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i]);
        free(cases[i].xml);
    }
    /* the ISO-8859-1 byte became UTF-8 */
    char *x = doc("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>", "\xe9", "");
    pec_daticert d;
    assert_int_equal(pec_daticert_parse(x, strlen(x), &d, NULL, 0), 0);
    assert_string_equal(d.mittente, "a@b\xc3\xa9");
    pec_daticert_free(&d);
    free(x);
}

static void test_bounds_exactly(void **state)
{
    (void)state;
    char *fill;
    struct hcase cases[12];
    size_t n = 0;

    /* bytes: padding white space after the root element (XML 1.0 Misc) */
    char *base = doc("", "", "");
    size_t blen = strlen(base);
    for (int over = 0; over <= 1; over++) {
        size_t len = PEC_DATICERT_MAX_BYTES + (size_t)over;
        char *x = malloc(len + 1);
        memcpy(x, base, blen);
        memset(x + blen, ' ', len - blen);
        x[len] = '\0';
        cases[n++] = (struct hcase){over ? "bytes +1" : "bytes at bound", x, 0, over ? -1 : 0,
                                    over ? "more than the 1048576 allowed" : NULL};
    }
    free(base);

    /* nodes: <x/> elements in <dati> (unknown: a warning, not a refusal) */
    for (int over = 0; over <= 1; over++) {
        fill = rep("<x/>", PEC_DATICERT_MAX_NODES - BASE_NODES + (size_t)over);
        cases[n++] = (struct hcase){over ? "nodes +1" : "nodes at bound", doc("", "", fill), 0,
                                    over ? -1 : 0, "elements, attributes and other markup"};
        free(fill);
    }
    /* comments and processing instructions count as nodes */
    fill = rep("<!---->", PEC_DATICERT_MAX_NODES - BASE_NODES + 1);
    cases[n++] = (struct hcase){"comments +1", doc("", "", fill), 0, -1,
                                "elements, attributes and other markup"};
    free(fill);

    /* attributes on one element */
    for (int over = 0; over <= 1; over++) {
        fill = attrs(PEC_DATICERT_MAX_ATTRS + (size_t)over);
        cases[n++] = (struct hcase){over ? "attributes +1" : "attributes at bound",
                                    doc("", "", fill), 0, over ? -1 : 0,
                                    "attributes on one element"};
        free(fill);
    }
    /* 60,000 attributes (libxml2's duplicate check is quadratic): refused at once */
    fill = attrs(60000);
    cases[n++] = (struct hcase){"60000 attributes", doc("", "", fill), 0, -1,
                                "60000 attributes on one element"};
    free(fill);

    /* depth: <postacert><dati> is 2; add <x> levels */
    for (int over = 0; over <= 1; over++) {
        size_t k = PEC_DATICERT_MAX_DEPTH - 2 + (size_t)over;
        char *open = rep("<x>", k), *close = rep("</x>", k);
        fill = malloc(strlen(open) + strlen(close) + 1);
        sprintf(fill, "%s%s", open, close);
        cases[n++] = (struct hcase){over ? "depth +1" : "depth at bound", doc("", "", fill), 0,
                                    over ? -1 : 0, "nested deeper than 32"};
        free(open);
        free(close);
        free(fill);
    }
    /* deep nesting far beyond libxml2's own limit */
    fill = rep("<x>", 200000);
    cases[n++] = (struct hcase){"deep nesting", doc("", "", fill), 0, -1, "nested deeper"};
    free(fill);
    assert_true(n <= sizeof cases / sizeof cases[0]);
    for (size_t i = 0; i < n; i++) {
        run_case(&cases[i]);
        free(cases[i].xml);
    }
}

/* Inputs crafted so that libxml2, resuming after an error, would read
 * markup a careless byte pass skipped: every '<' is still looked at. */
static void test_no_desync(void **state)
{
    (void)state;
    char *nine = attrs(PEC_DATICERT_MAX_ATTRS + 1);
    char fill[512];
    struct hcase cases[4];
    snprintf(fill, sizeof fill, "<? %s ?>", nine);             /* a bad PI target */
    cases[0] = (struct hcase){"inside a PI", doc("", "", fill), 0, -1, "attributes"};
    snprintf(fill, sizeof fill, "<y z=w\" %s \"/>", nine);     /* unquoted value, stray quote */
    cases[1] = (struct hcase){"after a stray quote", doc("", "", fill), 0, -1, "attributes"};
    snprintf(fill, sizeof fill, "<!-- %s -->", nine);          /* inside a comment */
    cases[2] = (struct hcase){"inside a comment", doc("", "", fill), 0, -1, "attributes"};
    cases[3] = (struct hcase){"'>' in a value",
                              doc("", "", "<x a=\">\" b=\"\" c=\"\" d=\"\" e=\"\" f=\"\" g=\"\" "
                                          "h=\"\" i=\"\"/>"),
                              0, -1, "9 attributes"};
    free(nine);
    for (size_t i = 0; i < 4; i++) {
        run_case(&cases[i]);
        free(cases[i].xml);
    }
}

/* The check after parsing, on trees the parser is never allowed to build. */
static void test_tree_check(void **state)
{
    (void)state;
    char err[256];
    xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
    xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "postacert");
    xmlDocSetRootElement(doc, root);
    xmlNodePtr m = xmlNewChild(root, NULL, BAD_CAST "mittente", BAD_CAST "a@b");
    assert_int_equal(pec_daticert_check_tree(doc, err, sizeof err), 0);
    /* an entity reference in text, and in an attribute value */
    xmlNodePtr ref = xmlNewReference(doc, BAD_CAST "&x;");
    xmlAddChild(m, ref);
    assert_int_equal(pec_daticert_check_tree(doc, err, sizeof err), -1);
    assert_non_null(strstr(err, "entity references are not allowed"));
    xmlUnlinkNode(ref);
    xmlFreeNode(ref);
    assert_int_equal(pec_daticert_check_tree(doc, err, sizeof err), 0);
    xmlAttrPtr a = xmlNewProp(root, BAD_CAST "tipo", NULL);
    xmlAddChild((xmlNodePtr)a, xmlNewReference(doc, BAD_CAST "&x;"));
    assert_int_equal(pec_daticert_check_tree(doc, err, sizeof err), -1);
    assert_non_null(strstr(err, "entity references are not allowed"));
    xmlRemoveProp(a);
    /* the node bound: 2 nodes so far (postacert, mittente) */
    for (size_t i = 2; i < PEC_DATICERT_MAX_NODES; i++)
        xmlNewChild(root, NULL, BAD_CAST "x", NULL);
    assert_int_equal(pec_daticert_check_tree(doc, err, sizeof err), 0);
    xmlNewChild(root, NULL, BAD_CAST "x", NULL);
    assert_int_equal(pec_daticert_check_tree(doc, err, sizeof err), -1);
    assert_non_null(strstr(err, "elements, attributes and other markup"));
    xmlFreeDoc(doc);

    /* an internal subset, an external subset */
    doc = xmlNewDoc(BAD_CAST "1.0");
    xmlDocSetRootElement(doc, xmlNewNode(NULL, BAD_CAST "postacert"));
    xmlCreateIntSubset(doc, BAD_CAST "postacert", NULL, NULL);
    assert_int_equal(pec_daticert_check_tree(doc, err, sizeof err), -1);
    assert_non_null(strstr(err, NOT_ALLOWED));
    xmlFreeDoc(doc);
    doc = xmlNewDoc(BAD_CAST "1.0");
    xmlDocSetRootElement(doc, xmlNewNode(NULL, BAD_CAST "postacert"));
    xmlNewDtd(doc, BAD_CAST "postacert", NULL, BAD_CAST "daticert.dtd");
    assert_non_null(doc->extSubset);
    assert_int_equal(pec_daticert_check_tree(doc, err, sizeof err), -1);
    assert_non_null(strstr(err, NOT_ALLOWED));
    xmlFreeDoc(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_declarations_refused),
        cmocka_unit_test(test_encodings),
        cmocka_unit_test(test_bounds_exactly),
        cmocka_unit_test(test_no_desync),
        cmocka_unit_test(test_tree_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
