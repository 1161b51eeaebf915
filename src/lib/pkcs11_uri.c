/*
 * pkcs11_uri.c - the PKCS#11 URIs of RFC 7512 that name a private key in a
 * hardware module: `pkcs11:token=…;object=…` ([pec] signing_key, [tls] key).
 *
 * Interface: pkcs11_uri_is, pkcs11_uri_parse (lib.h).  Only the path part
 * is read (RFC 7512 §2.3): token, manufacturer, serial, model (which token),
 * object, id (which key), type (must be private).  The query part
 * (pin-source, pin-value, module-path, …) is refused with a reason: the PIN
 * and the module come from pkcs11_pin_file and pkcs11_module, so a PIN is
 * never written into pecd.conf.  Other path attributes (library-*, slot-*)
 * are refused too rather than ignored, and vendor attributes ("x-…", §2.3)
 * are ignored as the RFC asks.  An attribute may appear once; values are
 * percent-decoded (§2.3: "pct-encoded"); a text value may not decode to NUL
 * or a control character.  Parsing is pure (no module is loaded).
 */
#include "lib.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

bool pkcs11_uri_is(const char *s)
{
    return s != NULL && strncasecmp(s, "pkcs11:", 7) == 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes v[0..n) (percent-encoding) into out (size octets); -1 with a
 * reason on a bad escape, a raw character that must be escaped, or no room. */
static int decode(const char *v, size_t n, unsigned char *out, size_t size, size_t *outlen,
                  bool text, const char *name, char *err, size_t errlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)v[i];
        if (c == '%') {
            int h = i + 1 < n ? hexval((unsigned char)v[i + 1]) : -1;
            int l = i + 2 < n ? hexval((unsigned char)v[i + 2]) : -1;
            if (h < 0 || l < 0) {
                snprintf(err, errlen, "%s: a %% must start two hex digits", name);
                return -1;
            }
            c = h << 4 | l;
            i += 2;
            if (text && (c < 0x20 || c == 0x7f)) {
                snprintf(err, errlen, "%s: a control character (%%%02X) is not a label", name,
                         c);
                return -1;
            }
        } else if (c <= 0x20 || c >= 0x7f || c == '"' || c == '<' || c == '>' || c == '\\' ||
                   c == '^' || c == '`' || c == '{' || c == '|' || c == '}' || c == '#') {
            /* RFC 7512 §2.3: outside pk11-pchar, only pct-encoded */
            snprintf(err, errlen, "%s: the character 0x%02X must be percent-encoded", name, c);
            return -1;
        }
        if (o + (text ? 1 : 0) >= size) {
            snprintf(err, errlen, "%s: value too long", name);
            return -1;
        }
        out[o++] = (unsigned char)c;
    }
    if (text)
        out[o] = '\0';
    *outlen = o;
    return 0;
}

int pkcs11_uri_parse(const char *s, struct pkcs11_uri *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    if (!pkcs11_uri_is(s)) {
        snprintf(err, errlen, "not a pkcs11: URI");
        return -1;
    }
    const char *p = s + 7;
    if (strchr(p, '?') != NULL) {
        snprintf(err, errlen, "the query part of a pkcs11: URI (pin-value, pin-source, "
                              "module-path…) is not read: set pkcs11_pin_file and "
                              "pkcs11_module instead");
        return -1;
    }
    while (*p != '\0') {
        size_t n = strcspn(p, ";");
        const char *eq = memchr(p, '=', n);
        if (eq == NULL || eq == p) {
            snprintf(err, errlen, "'%.*s' is not attribute=value", (int)(n > 60 ? 60 : n), p);
            return -1;
        }
        char name[32];
        size_t nl = (size_t)(eq - p);
        if (nl >= sizeof name) {
            snprintf(err, errlen, "unknown attribute '%.*s'", 31, p);
            return -1;
        }
        memcpy(name, p, nl);
        name[nl] = '\0';
        const char *v = eq + 1;
        size_t vn = n - nl - 1;
        struct {
            const char *name;
            char *text;
            size_t size;
        } texts[] = {
            {"token", u->token, sizeof u->token},
            {"manufacturer", u->manufacturer, sizeof u->manufacturer},
            {"serial", u->serial, sizeof u->serial},
            {"model", u->model, sizeof u->model},
            {"object", u->object, sizeof u->object},
            {"type", u->type, sizeof u->type},
        };
        bool known = false;
        size_t len;
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            if (strcmp(name, texts[i].name) != 0)
                continue;
            known = true;
            if (texts[i].text[0] != '\0') {
                snprintf(err, errlen, "%s appears twice", name);
                return -1;
            }
            if (decode(v, vn, (unsigned char *)texts[i].text, texts[i].size, &len, true, name,
                       err, errlen) == -1)
                return -1;
            if (len == 0) {
                snprintf(err, errlen, "%s is empty", name);
                return -1;
            }
        }
        if (!known && strcmp(name, "id") == 0) {
            known = true;
            if (u->id_len > 0) {
                snprintf(err, errlen, "id appears twice");
                return -1;
            }
            if (decode(v, vn, u->id, sizeof u->id, &u->id_len, false, name, err, errlen) == -1)
                return -1;
            if (u->id_len == 0) {
                snprintf(err, errlen, "id is empty");
                return -1;
            }
        }
        if (!known && strncmp(name, "x-", 2) != 0) {
            snprintf(err, errlen, "attribute '%s' is not supported (token, manufacturer, "
                                  "serial, model, object, id, type)", name);
            return -1;
        }
        p += n;
        if (*p == ';') {
            p++;
            if (*p == '\0') {
                snprintf(err, errlen, "ends with ';'");
                return -1;
            }
        }
    }
    if (u->type[0] != '\0' && strcmp(u->type, "private") != 0) {
        snprintf(err, errlen, "type=%s: a signing key is type=private", u->type);
        return -1;
    }
    if (u->object[0] == '\0' && u->id_len == 0) {
        snprintf(err, errlen, "names no key: object=LABEL or id=… is required");
        return -1;
    }
    return 0;
}
