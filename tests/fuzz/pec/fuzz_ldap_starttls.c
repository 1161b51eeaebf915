/*
 * fuzz_ldap_starttls.c - libFuzzer target for pec_dirtls_starttls_answer(),
 * the LDAP server's answer to StartTLS read by the TLS probe (pec_dirtls.c):
 * any octets give success, "more" or an error with a reason, never a crash
 * nor a read past n.
 */
#include "pec/pec_dirtls.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy so that ASan catches a read past the end */
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    char why[256] = "";
    int rc = pec_dirtls_starttls_answer(buf, size, why, sizeof why);
    if (rc < -1 || rc > 1 || (rc == -1 && why[0] == '\0'))
        abort();
    free(buf);
    return 0;
}
