/*
 * fuzz_dovecot_auth.c - the reply parser of the Dovecot auth client
 * (src/store/dovecot_auth.c), both protocols: the input fed whole and fed in
 * chunks of a size taken from the first octet must give the same answer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

static int run(const uint8_t *in, size_t n, size_t step, enum dovecot_mode mode, int *result)
{
    static struct dovecot_parse p;
    dovecot_parse_init(&p, mode);
    int r = 0;
    for (size_t off = 0; off < n && r == 0; off += step) {
        size_t take = n - off < step ? n - off : step;
        r = dovecot_parse_feed(&p, (const char *)in + off, take);
    }
    *result = p.result;
    if (p.buflen > sizeof p.buf)
        abort();
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] % 16) + 1;
    for (int m = 0; m < 2; m++) {
        int ra, rb, resa, resb;
        ra = run(data + 1, size - 1, size, (enum dovecot_mode)m, &resa);
        rb = run(data + 1, size - 1, step, (enum dovecot_mode)m, &resb);
        if (ra != rb || (ra == 1 && resa != resb))
            abort();
    }
    return 0;
}
