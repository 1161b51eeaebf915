/*
 * fuzz_pec_breve.c - libFuzzer target for the breve transformation and the
 * access-point rewrite of an original message (src/pec/pec_breve.c,
 * pec_header.c).
 */
#include <stddef.h>
#include <stdint.h>

#include "pec/pec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pec_buf out;
    if (pec_breve_transform(data, size, &out, NULL, 0) == 0)
        pec_buf_free(&out);
    if (pec_original_rewrite(data, size, "opec1.1@pec.a.example", &out, NULL, 0) == 0)
        pec_buf_free(&out);
    return 0;
}
