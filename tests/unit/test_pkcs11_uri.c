/*
 * test_pkcs11_uri.c - the RFC 7512 URIs of [pec] signing_key and [tls] key
 * (src/lib/pkcs11_uri.c): a table of accepted and refused URIs, and the
 * configuration keys around them ([pecd] user, [pec] pkcs11_module, a URI
 * kept as written instead of made a path).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/lib.h"

struct uri_case {
    const char *uri;
    const char *error;             /* a fragment of the error, NULL = accepted */
    const char *token, *object, *serial;
    const char *id;                /* expected CKA_ID octets (may hold NUL: id_len) */
    size_t id_len;
};

static const struct uri_case cases[] = {
    {"pkcs11:token=pec;object=signing", NULL, "pec", "signing", "", "", 0},
    {"PKCS11:object=k", NULL, "", "k", "", "", 0},
    /* percent-decoding (RFC 7512 §2.3), a space and a semicolon in a label */
    {"pkcs11:token=My%20Token;object=a%3bb", NULL, "My Token", "a;b", "", "", 0},
    {"pkcs11:token=t;id=%01%02%00%ff;type=private", NULL, "t", "", "", "\x01\x02\x00\xff", 4},
    {"pkcs11:serial=0123;object=k;x-vendor=ignored", NULL, "", "k", "0123", "", 0},
    {"pkcs11:token=a:b@c(d)!$'*+,=;object=k", NULL, "a:b@c(d)!$'*+,=", "k", "", "", 0},
    /* refused, each with its reason */
    {"pkcs11:token=pec", "names no key", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:", "names no key", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=k?pin-value=1234", "query", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=k;object=l", "twice", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:id=%01;id=%02", "twice", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=k;type=cert", "type=private", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=a%2", "hex digits", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=a%zz", "hex digits", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=a%0a", "control character", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=a%00", "control character", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=a b", "percent-encoded", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=k;slot-id=3", "not supported", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object", "attribute=value", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:=k", "attribute=value", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=k;", "ends with", NULL, NULL, NULL, NULL, 0},
    {"pkcs11:object=", "empty", NULL, NULL, NULL, NULL, 0},
    {"file:/etc/key.pem", "not a pkcs11", NULL, NULL, NULL, NULL, 0},
};

static void test_uri_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct uri_case *c = &cases[i];
        struct pkcs11_uri u;
        char err[256] = "";
        int r = pkcs11_uri_parse(c->uri, &u, err, sizeof err);
        if (c->error == NULL) {
            if (r != 0)
                fail_msg("%s: refused: %s", c->uri, err);
            assert_string_equal(u.token, c->token);
            assert_string_equal(u.object, c->object);
            assert_string_equal(u.serial, c->serial);
            assert_int_equal(u.id_len, c->id_len);
            assert_memory_equal(u.id, c->id, c->id_len);
        } else {
            if (r != -1)
                fail_msg("%s: accepted", c->uri);
            if (strstr(err, c->error) == NULL)
                fail_msg("%s: '%s' does not say '%s'", c->uri, err, c->error);
        }
    }
    /* a label longer than the buffer is refused, not cut */
    char longuri[600] = "pkcs11:object=";
    memset(longuri + strlen(longuri), 'a', 400);
    struct pkcs11_uri u;
    char err[256];
    assert_int_equal(pkcs11_uri_parse(longuri, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "too long"));
}

static char path[512];

static struct config *load_text(const char *text, char *err, size_t errlen)
{
    fs_mkdirs(TEST_TMPDIR, 0700);
    snprintf(path, sizeof path, "%s/pecd.conf", TEST_TMPDIR);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return config_load(path, err, errlen);
}

#define BASE "[provider]\ndomain = example.it\n[mx]\nlisten = 127.0.0.1:2525\ntls = none\n"

static void test_config_keys(void **state)
{
    (void)state;
    char err[512];
    struct config *cfg = load_text(BASE, err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(cfg->pecd_user, "pecmail");     /* the default */
    assert_null(cfg->pec_pkcs11_module);
    config_free(cfg);

    cfg = load_text(BASE "[pecd]\nuser = mail\n[pec]\nsigning_key = pkcs11:token=pec;object=s\n"
                         "pkcs11_module = lib/softhsm.so\npkcs11_pin_file = pin\n",
                    err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(cfg->pecd_user, "mail");
    /* the URI stays as written; the files become paths */
    assert_string_equal(cfg->pec_signing_key, "pkcs11:token=pec;object=s");
    char expect[600];
    snprintf(expect, sizeof expect, "%s/lib/softhsm.so", TEST_TMPDIR);
    assert_string_equal(cfg->pec_pkcs11_module, expect);
    snprintf(expect, sizeof expect, "%s/pin", TEST_TMPDIR);
    assert_string_equal(cfg->pec_pkcs11_pin_file, expect);
    config_free(cfg);

    /* a URI without a module; a bad URI names its line; a bad user name */
    assert_null(load_text(BASE "[pec]\nsigning_key = pkcs11:object=s\n", err, sizeof err));
    assert_non_null(strstr(err, "pkcs11_module"));
    assert_null(load_text(BASE "[tls]\nkey = pkcs11:object=s\n", err, sizeof err));
    assert_non_null(strstr(err, "[tls] key is a pkcs11: URI"));
    assert_null(load_text(BASE "[pec]\nsigning_key = pkcs11:object=s?pin-value=1\n", err,
                          sizeof err));
    assert_non_null(strstr(err, "pecd.conf:7: signing_key: "));
    assert_non_null(strstr(err, "pkcs11_pin_file"));
    assert_null(load_text(BASE "[pecd]\nuser = a b\n", err, sizeof err));
    assert_non_null(strstr(err, "pecd.conf:7: user: 'a b' is not a user name"));
    assert_null(load_text(BASE "[pecd]\ngroup = x\n", err, sizeof err));
    assert_non_null(strstr(err, "unknown key 'group' in [pecd]"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_table),
        cmocka_unit_test(test_config_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
