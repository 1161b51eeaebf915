/*
 * fuzz_pkcs11_uri.c - the RFC 7512 URI parser of [pec] signing_key and [tls]
 * key (src/lib/pkcs11_uri.c): any input is accepted or refused with a
 * reason, never read past; an accepted URI names a key, its labels are
 * NUL-terminated within their buffers and hold no control character.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/lib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 8);
    if (s == NULL)
        return 0;
    memcpy(s, "pkcs11:", 7);
    memcpy(s + 7, data, size);
    s[size + 7] = '\0';
    struct pkcs11_uri u;
    char err[256];
    for (int k = 0; k < 2; k++) {
        const char *in = k == 0 ? s : s + 7;     /* with and without the scheme */
        err[0] = '\0';
        if (pkcs11_uri_parse(in, &u, err, sizeof err) == 0) {
            if (u.object[0] == '\0' && u.id_len == 0)
                abort();
            const char *texts[] = {u.token, u.manufacturer, u.serial, u.model, u.object, u.type};
            const size_t sizes[] = {sizeof u.token, sizeof u.manufacturer, sizeof u.serial,
                                    sizeof u.model, sizeof u.object, sizeof u.type};
            for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
                size_t n = strnlen(texts[i], sizes[i]);
                if (n == sizes[i])
                    abort();
                for (size_t j = 0; j < n; j++)
                    if ((unsigned char)texts[i][j] < 0x20 || texts[i][j] == 0x7f)
                        abort();
            }
            if (u.id_len > sizeof u.id)
                abort();
        } else if (err[0] == '\0') {
            abort();
        }
    }
    free(s);
    return 0;
}
