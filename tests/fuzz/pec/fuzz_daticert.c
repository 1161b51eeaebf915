/*
 * fuzz_daticert.c - libFuzzer target for the daticert.xml parser and DTD
 * validation (src/pec/pec_daticert.c); a parsed document must build again,
 * and nothing with a DOCTYPE or entity declaration, or above the byte bound,
 * is ever accepted.  Seeds: tests/fuzz/pec/corpus/fuzz_daticert (the
 * attacks of issue 16, small).  Run it with a memory limit (run-smoke:
 * -rss_limit_mb=1024, which is also the default -malloc_limit_mb): an
 * expansion that escapes the bounds is then a crash, not a slow run.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pec/pec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pec_daticert d;
    if (pec_daticert_parse(data, size, &d, NULL, 0) == 0) {
        if (size > PEC_DATICERT_MAX_BYTES || memmem(data, size, "<!DOCTYPE", 9) ||
            memmem(data, size, "<!ENTITY", 8))
            abort();
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
