/*
 * auth.c - the encodings of SMTP AUTH (RFC 4954): base64 and the SASL PLAIN
 * message (RFC 4616).  Base64 is OpenSSL's; we only check what it leaves.
 */
#include "smtp.h"

#include <openssl/evp.h>
#include <string.h>

int smtp_base64_decode(const char *in, char *out, size_t outlen)
{
    size_t n = strlen(in);
    if (n == 0) {
        if (outlen > 0)
            out[0] = '\0';
        return 0;
    }
    if (n % 4 != 0 || n / 4 * 3 + 1 > outlen)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/' || (c == '=' && i >= n - 2);
        if (!ok)
            return -1;
    }
    if (in[n - 2] == '=' && in[n - 1] != '=')
        return -1;
    int r = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
    if (r < 0)
        return -1;
    /* EVP_DecodeBlock counts the padding as zero octets */
    if (in[n - 1] == '=')
        r--;
    if (in[n - 2] == '=')
        r--;
    out[r] = '\0';
    return r;
}

int smtp_base64_encode(const void *in, size_t len, char *out, size_t outlen)
{
    if ((len + 2) / 3 * 4 + 1 > outlen)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

int smtp_sasl_plain_split(const char *msg, size_t len, const char **authzid,
                          const char **authcid, const char **passwd)
{
    const char *z1 = memchr(msg, '\0', len);
    if (z1 == NULL)
        return -1;
    const char *z2 = memchr(z1 + 1, '\0', len - (size_t)(z1 + 1 - msg));
    if (z2 == NULL)
        return -1;
    /* no third NUL inside the password */
    if (memchr(z2 + 1, '\0', len - (size_t)(z2 + 1 - msg)) != NULL)
        return -1;
    *authzid = msg;
    *authcid = z1 + 1;
    *passwd = z2 + 1;
    if (**authcid == '\0' || **passwd == '\0')
        return -1;
    return 0;
}
