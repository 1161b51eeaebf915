/*
 * fuzz_pec_directory.c - libFuzzer target for the providers' directory
 * reader (src/pec/pec_ldif.c, pec_directory.c): any input either fails
 * with a reason or gives a directory whose LDIF export reads back into the
 * same directory, byte for byte on a second export.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pec/pec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    pec_directory *d = pec_directory_parse(data, size, err, sizeof err);
    if (d == NULL) {
        if (err[0] == '\0')
            abort();                    /* every refusal has a reason */
        return 0;
    }
    for (size_t i = 0; i < pec_directory_count(d); i++) {
        const pec_provider *p = pec_directory_provider(d, i);
        for (size_t k = 0; k < p->n_domains; k++)
            if (pec_directory_by_domain(d, p->domains[k]) == NULL)
                abort();
    }
    pec_buf a = {0}, b = {0};
    if (pec_directory_to_ldif(d, &a, NULL, 0) != 0)
        abort();
    pec_directory *d2 = pec_directory_parse(a.data, a.len, err, sizeof err);
    if (d2 == NULL || pec_directory_count(d2) != pec_directory_count(d) ||
        pec_directory_to_ldif(d2, &b, NULL, 0) != 0 || a.len != b.len ||
        memcmp(a.data, b.data, a.len) != 0)
        abort();
    pec_buf_free(&a);
    pec_buf_free(&b);
    pec_directory_free(d2);
    pec_directory_free(d);
    return 0;
}
