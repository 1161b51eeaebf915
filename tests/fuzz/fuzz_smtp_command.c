/*
 * fuzz_smtp_command.c - the command-line parsers: line reader, verbs,
 * paths with parameters, xtext, base64 and SASL PLAIN.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_line_reader r = {0};
    size_t off = 0;
    static struct smtp_path path;
    while (off < size) {
        size_t linelen, consumed;
        enum smtp_line_result res =
            smtp_line_next(&r, (const char *)data + off, size - off, 600, &linelen, &consumed);
        if (consumed == 0)
            break;
        if (res == SMTP_LINE_OK) {
            char line[601];
            memcpy(line, data + off, linelen);
            line[linelen] = '\0';
            struct smtp_command c;
            smtp_command_parse(line, &c);
            if (smtp_path_parse(c.args, "FROM:", true, &path) == SMTP_PATH_OK) {
                for (size_t i = 0; i < path.nparams; i++)
                    if (path.params[i].value)
                        smtp_xtext_decode(path.params[i].value);
            }
            smtp_path_parse(c.args, "TO:", false, &path);
            char dec[600];
            int n = smtp_base64_decode(line, dec, sizeof dec);
            if (n >= 0) {
                const char *a, *b, *p;
                smtp_sasl_plain_split(dec, (size_t)n, &a, &b, &p);
            }
        }
        off += consumed;
    }
    return 0;
}
