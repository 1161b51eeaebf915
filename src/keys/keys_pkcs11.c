/*
 * keys_pkcs11.c - private keys inside a hardware module (PKCS#11, RFC 6109
 * §5.1 "a dedicated hardware module"), through Debian's libp11: the module
 * (pkcs11_module) is loaded, the token the URI names (RFC 7512, parsed by
 * src/lib/pkcs11_uri.c) is found among its slots, the user logs in with the
 * PIN of pkcs11_pin_file, and the private key object comes back as an
 * EVP_PKEY whose operations libp11 sends to the module (the key never
 * leaves it).  For pecctl: a key pair generated inside the token.
 *
 * Interface: keys_hsm_open, keys_hsm_key (keys_int.h), keys_hsm_close,
 * keys_token_make_key (keys.h).
 * Assumptions: one keys_hsm per process, opened after any fork (a PKCS#11
 * session does not survive fork(): the signer process opens its own);
 * libp11 (0.4.12) keeps a pool of sessions per slot, so the signer's
 * threads may use one key at once.  Every error names the setting.
 */
#include "keys_int.h"
#include "lib/lib.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libp11.h>
#include <openssl/err.h>
#include <openssl/x509.h>

struct keys_hsm {
    char *module;
    PKCS11_CTX *ctx;
    PKCS11_SLOT *slots;
    unsigned int nslots;
};

/* OpenSSL's (and libp11's) first queued error, then the queue emptied. */
static const char *ossl_reason(char *buf, size_t size)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        str_copy(buf, "no reason given", size);
    else
        ERR_error_string_n(e, buf, size);
    ERR_clear_error();
    return buf;
}

void keys_hsm_close(struct keys_hsm *h)
{
    if (h == NULL)
        return;
    if (h->slots != NULL)
        PKCS11_release_all_slots(h->ctx, h->slots, h->nslots);
    if (h->ctx != NULL) {
        PKCS11_CTX_unload(h->ctx);
        PKCS11_CTX_free(h->ctx);
    }
    free(h->module);
    free(h);
}

struct keys_hsm *keys_hsm_open(const char *module, char *err, size_t errlen)
{
    struct keys_hsm *h = calloc(1, sizeof *h);
    char why[256];
    struct stat st;
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (stat(module, &st) == -1) {
        snprintf(err, errlen, "[pec] pkcs11_module %s: %s", module, strerror(errno));
        goto fail;
    }
    h->module = strdup(module);
    h->ctx = PKCS11_CTX_new();
    if (h->ctx == NULL || h->module == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (PKCS11_CTX_load(h->ctx, module) < 0) {
        snprintf(err, errlen, "[pec] pkcs11_module %s: cannot load the module: %s", module,
                 ossl_reason(why, sizeof why));
        PKCS11_CTX_free(h->ctx);
        h->ctx = NULL;
        goto fail;
    }
    if (PKCS11_enumerate_slots(h->ctx, &h->slots, &h->nslots) < 0) {
        snprintf(err, errlen, "[pec] pkcs11_module %s: cannot list its slots: %s", module,
                 ossl_reason(why, sizeof why));
        goto fail;
    }
    return h;
fail:
    keys_hsm_close(h);
    return NULL;
}

/* The user PIN: the first line of pin_file, which other users may not read
 * (the network-facing user least of all: docs/operator-guide.md). */
static int read_pin(const char *pin_file, char *pin, size_t size, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    struct stat st;
    if (stat(pin_file, &st) == -1 || fs_read_file(pin_file, &buf, &len, 4096) == -1) {
        snprintf(err, errlen, "[pec] pkcs11_pin_file %s: %s", pin_file, strerror(errno));
        return -1;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen, "[pec] pkcs11_pin_file %s is readable by group or others (mode "
                 "%04o): run chmod 600 on it", pin_file, (unsigned)(st.st_mode & 07777));
        explicit_bzero(buf, len);
        free(buf);
        return -1;
    }
    size_t n = strcspn(buf, "\r\n");
    if (n == 0 || n >= size) {
        snprintf(err, errlen, "[pec] pkcs11_pin_file %s: %s", pin_file,
                 n == 0 ? "no PIN on its first line" : "the PIN is too long");
        explicit_bzero(buf, len);
        free(buf);
        return -1;
    }
    memcpy(pin, buf, n);
    pin[n] = '\0';
    explicit_bzero(buf, len);
    free(buf);
    return 0;
}

static bool token_matches(const PKCS11_TOKEN *t, const struct pkcs11_uri *u)
{
    return t != NULL && t->initialized &&
           (u->token[0] == '\0' || strcmp(t->label, u->token) == 0) &&
           (u->manufacturer[0] == '\0' || strcmp(t->manufacturer, u->manufacturer) == 0) &&
           (u->serial[0] == '\0' || strcmp(t->serialnr, u->serial) == 0) &&
           (u->model[0] == '\0' || strcmp(t->model, u->model) == 0);
}

/* The one slot whose token the URI names; the reason (with the tokens the
 * module has) when none or several do. */
static PKCS11_SLOT *find_slot(struct keys_hsm *h, const struct pkcs11_uri *u,
                              const char *setting, const char *uri, char *err, size_t errlen)
{
    PKCS11_SLOT *found = NULL;
    unsigned matches = 0;
    char have[512] = "";
    size_t o = 0;
    for (unsigned i = 0; i < h->nslots; i++) {
        PKCS11_TOKEN *t = h->slots[i].token;
        if (t != NULL && t->initialized && o < sizeof have)
            o += (size_t)snprintf(have + o, sizeof have - o, "%s'%s'", o ? ", " : "", t->label);
        if (token_matches(t, u)) {
            found = &h->slots[i];
            matches++;
        }
    }
    if (matches == 1)
        return found;
    if (matches == 0)
        snprintf(err, errlen, "%s %s: no token of the module %s matches (its tokens: %s)",
                 setting, uri, h->module, have[0] ? have : "none");
    else
        snprintf(err, errlen, "%s %s: %u tokens of the module %s match (%s): name one with "
                 "token= or serial=", setting, uri, matches, h->module, have);
    return NULL;
}

static int login(PKCS11_SLOT *slot, const char *pin_file, char *err, size_t errlen)
{
    int in = 0;
    if (!slot->token->loginRequired || (PKCS11_is_logged_in(slot, 0, &in) == 0 && in))
        return 0;
    if (pin_file == NULL) {
        snprintf(err, errlen, "[pec] pkcs11_pin_file is required: the token '%s' needs the "
                 "user to log in", slot->token->label);
        return -1;
    }
    char pin[256], why[256];
    if (read_pin(pin_file, pin, sizeof pin, err, errlen) == -1)
        return -1;
    int r = PKCS11_login(slot, 0, pin);
    explicit_bzero(pin, sizeof pin);
    if (r != 0) {
        snprintf(err, errlen, "[pec] pkcs11_pin_file %s: the token '%s' refused the PIN: %s",
                 pin_file, slot->token->label, ossl_reason(why, sizeof why));
        return -1;
    }
    return 0;
}

/* The private key object of the URI in the slot's token, or NULL. */
static PKCS11_KEY *find_key(PKCS11_SLOT *slot, const struct pkcs11_uri *u, unsigned *nmatch)
{
    PKCS11_KEY *keys = NULL, *found = NULL;
    unsigned int n = 0;
    *nmatch = 0;
    if (PKCS11_enumerate_keys(slot->token, &keys, &n) < 0) {
        ERR_clear_error();
        return NULL;
    }
    for (unsigned i = 0; i < n; i++) {
        PKCS11_KEY *k = &keys[i];
        if (!k->isPrivate)
            continue;
        if (u->object[0] != '\0' && (k->label == NULL || strcmp(k->label, u->object) != 0))
            continue;
        if (u->id_len > 0 && (k->id_len != u->id_len || memcmp(k->id, u->id, u->id_len) != 0))
            continue;
        found = k;
        (*nmatch)++;
    }
    return found;
}

static void describe_key(const struct pkcs11_uri *u, char *out, size_t size)
{
    char hex[2 * sizeof u->id + 1];
    for (size_t i = 0; i < u->id_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", u->id[i]);
    hex[2 * u->id_len] = '\0';
    snprintf(out, size, "%s%s%s%s%s", u->object[0] ? "label '" : "", u->object,
             u->object[0] ? "'" : "", u->id_len ? (u->object[0] ? " and id " : "id ") : "",
             u->id_len ? hex : "");
}

EVP_PKEY *keys_hsm_key(struct keys_hsm *h, const char *uri, const char *setting,
                       const char *pin_file, char *err, size_t errlen)
{
    struct pkcs11_uri u;
    char why[256];
    if (pkcs11_uri_parse(uri, &u, why, sizeof why) == -1) {
        snprintf(err, errlen, "%s %s: %s", setting, uri, why);
        return NULL;
    }
    PKCS11_SLOT *slot = find_slot(h, &u, setting, uri, err, errlen);
    if (slot == NULL || login(slot, pin_file, err, errlen) == -1)
        return NULL;
    unsigned n;
    PKCS11_KEY *k = find_key(slot, &u, &n);
    char what[600];
    describe_key(&u, what, sizeof what);
    if (k == NULL || n != 1) {
        snprintf(err, errlen, "%s %s: %s private key with %s in the token '%s'", setting, uri,
                 n == 0 ? "no" : "more than one", what, slot->token->label);
        return NULL;
    }
    EVP_PKEY *pk = PKCS11_get_private_key(k);
    if (pk == NULL)
        snprintf(err, errlen, "%s %s: the module cannot use the key: %s", setting, uri,
                 ossl_reason(why, sizeof why));
    return pk;
}

/* The public half of a key, as a key of its own (for a certificate). */
static EVP_PKEY *public_of(EVP_PKEY *key)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    const unsigned char *p = der;
    EVP_PKEY *pub = n > 0 ? d2i_PUBKEY(NULL, &p, n) : NULL;
    OPENSSL_free(der);
    return pub;
}

int keys_token_make_key(const char *uri, const char *module, const char *pin_file, int bits,
                        bool exists_ok, EVP_PKEY **pub, char *err, size_t errlen)
{
    *pub = NULL;
    struct pkcs11_uri u;
    char why[256];
    if (pkcs11_uri_parse(uri, &u, why, sizeof why) == -1) {
        snprintf(err, errlen, "%s: %s", uri, why);
        return -1;
    }
    if (u.object[0] == '\0') {
        snprintf(err, errlen, "%s: a new key needs object=LABEL", uri);
        return -1;
    }
    struct keys_hsm *h = keys_hsm_open(module, err, errlen);
    if (h == NULL)
        return -1;
    int rc = -1;
    PKCS11_SLOT *slot = find_slot(h, &u, "key", uri, err, errlen);
    /* a read-write session: the new objects go into the token */
    if (slot != NULL && PKCS11_open_session(slot, 1) != 0) {
        snprintf(err, errlen, "%s: the token '%s' refuses a read-write session: %s", uri,
                 slot->token->label, ossl_reason(why, sizeof why));
        goto out;
    }
    if (slot == NULL || login(slot, pin_file, err, errlen) == -1)
        goto out;
    unsigned n;
    PKCS11_KEY *k = find_key(slot, &u, &n);
    if (k != NULL && !exists_ok) {
        snprintf(err, errlen, "%s: the token '%s' has that key already", uri,
                 slot->token->label);
        goto out;
    }
    if (k == NULL) {
        /* CKA_SENSITIVE and not extractable: libp11 makes the pair inside the
         * token (C_GenerateKeyPair); the private half never leaves it */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        int g = PKCS11_generate_key(slot->token, EVP_PKEY_RSA, (unsigned)(bits ? bits : 2048),
                                    u.object, u.id_len ? u.id : NULL, u.id_len);
#pragma GCC diagnostic pop
        if (g != 0) {
            snprintf(err, errlen, "%s: the token '%s' could not generate the key: %s", uri,
                     slot->token->label, ossl_reason(why, sizeof why));
            goto out;
        }
        k = find_key(slot, &u, &n);
    }
    EVP_PKEY *pk = k ? PKCS11_get_private_key(k) : NULL;
    *pub = pk ? public_of(pk) : NULL;
    EVP_PKEY_free(pk);
    if (*pub == NULL) {
        snprintf(err, errlen, "%s: cannot read the new key's public half: %s", uri,
                 ossl_reason(why, sizeof why));
        goto out;
    }
    rc = 0;
out:
    keys_hsm_close(h);
    return rc;
}
