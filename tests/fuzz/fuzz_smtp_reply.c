/*
 * fuzz_smtp_reply.c - the SMTP client's reply reader (src/smtp/reply.c):
 * arbitrary server output cut into lines as client.c's read_line does (LF
 * ends a line, a CR before it is dropped, a line is cut at 1023 octets).
 * The first input byte says whether the replies answer EHLO.  Beyond the
 * sanitizers: a finished reply has a code from 200 to 599 and its text fits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool ehlo = data[0] & 1;
    struct smtp_reply r;
    struct smtp_reply_reader rr;
    smtp_reply_start(&rr, &r, ehlo);
    size_t off = 1;
    while (off < size) {
        const uint8_t *lf = memchr(data + off, '\n', size - off);
        size_t end = lf ? (size_t)(lf - data) : size;
        size_t n = end - off;
        if (n > 0 && data[off + n - 1] == '\r')
            n--;
        if (n > 1023)
            n = 1023;
        /* exactly the line's octets: the sanitizer sees any read past its end */
        char *line = malloc(n + 1);
        memcpy(line, data + off, n);
        line[n] = '\0';
        enum smtp_reply_step step = smtp_reply_line(&rr, line);
        free(line);
        if (step == SMTP_REPLY_DONE &&
            (r.code < 200 || r.code > 599 || memchr(r.text, '\0', sizeof r.text) == NULL))
            abort();
        if (step != SMTP_REPLY_MORE)
            smtp_reply_start(&rr, &r, ehlo);
        off = end + 1;
    }
    return 0;
}
