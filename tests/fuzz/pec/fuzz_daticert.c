/*
 * fuzz_daticert.c - libFuzzer target for the daticert.xml parser and DTD
 * validation (src/pec/pec_daticert.c); a parsed document must build again.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "pec/pec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pec_daticert d;
    if (pec_daticert_parse(data, size, &d, NULL, 0) == 0) {
        pec_buf out;
        if (d.tipo != PEC_TYPE_ANOMALIA && pec_daticert_build(&d, &out, NULL, 0) == 0) {
            /* what we build from any parsed input is valid */
            if (pec_daticert_validate(out.data, out.len, NULL, 0) != 0 && !d.warning)
                abort();
            pec_buf_free(&out);
        }
        pec_daticert_free(&d);
    }
    pec_daticert_validate(data, size, NULL, 0);
    return 0;
}
