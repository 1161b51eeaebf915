/*
 * fuzz_smtp_data.c - the DATA/BDAT scanner, differentially: the input fed
 * whole and fed in chunks of a size taken from the first octet must give
 * the same output, the same end and the same verdict.  Output never grows.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

static void run(const uint8_t *in, size_t n, size_t step, bool raw, char *out, size_t *outlen,
                size_t *consumed, struct smtp_data *d)
{
    smtp_data_init(d, raw, 4096, 200);
    *outlen = 0;
    *consumed = 0;
    while (*consumed < n && !smtp_data_done(d)) {
        size_t take = n - *consumed < step ? n - *consumed : step;
        size_t produced;
        size_t used = smtp_data_feed(d, (const char *)in + *consumed, take, out + *outlen, &produced);
        *outlen += produced;
        *consumed += used;
        /* a held-back CR may come out one call later, never more */
        if (*outlen > *consumed)
            abort();
        if (used < take)
            break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (data[0] & 0x3f) + 1;
    bool raw = data[0] & 0x80;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    char *a = malloc(n + 1), *b = malloc(n + 1);
    size_t alen, blen, ac, bc;
    struct smtp_data da, db;
    run(in, n, n ? n : 1, raw, a, &alen, &ac, &da);
    run(in, n, step, raw, b, &blen, &bc, &db);
    if (alen != blen || ac != bc || memcmp(a, b, alen) != 0 ||
        smtp_data_done(&da) != smtp_data_done(&db))
        abort();
    const char *va = smtp_data_verdict(&da), *vb = smtp_data_verdict(&db);
    if ((va == NULL) != (vb == NULL) || (va && strcmp(va, vb) != 0))
        abort();
    /* the end marker is only ever CRLF.CRLF */
    if (!raw && smtp_data_done(&da)) {
        if (ac < 3 || memcmp(in + ac - 3, ".\r\n", 3) != 0)
            abort();
        if (ac > 3 && (ac < 5 || in[ac - 4] != '\n' || in[ac - 5] != '\r'))
            abort();
    }
    free(a);
    free(b);
    return 0;
}
