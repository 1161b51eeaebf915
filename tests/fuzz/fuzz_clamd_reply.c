/*
 * fuzz_clamd_reply.c - libFuzzer target for clamd_parse_reply(): any octets
 * give a verdict, never a crash; a found name is printable and bounded.
 */
#include "filters/clamd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct clamd_verdict v;
    clamd_parse_reply((const char *)data, size, &v);
    if (v.status > CLAMD_ERROR)
        abort();
    size_t n = strnlen(v.name, sizeof v.name);
    if (n == sizeof v.name || strnlen(v.detail, sizeof v.detail) == sizeof v.detail)
        abort();
    for (size_t i = 0; i < n; i++)
        if (v.name[i] < 0x21 || v.name[i] > 0x7e)
            abort();
    return 0;
}
