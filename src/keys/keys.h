/*
 * keys.h - key custody (issue 20; RFC 6109 §5.1): the provider's signing key
 * and the TLS key, loaded from PEM files or from a hardware module (PKCS#11,
 * RFC 7512 URIs, through libp11), and, in pecd, held by a separate signer
 * process that the network-facing process asks to sign over a socket.
 *
 *  loading (keys_load.c, keys_pkcs11.c): what the signer process, `pecd -t`
 *      and pecctl use; every error names the setting ([pec] signing_key,
 *      [pec] pkcs11_pin_file, …).
 *  the processes (keys_keeper.c, keys_signer.c): keys_start() forks a
 *      keeper, which stays with the privileges pecd started with, holds no
 *      key and no network socket, and forks the signer; the signer loads the
 *      keys and answers requests on socketpairs (keys_proto.h).  When the
 *      signer dies the keeper starts another and hands its sockets to pecd.
 *  the client (keys_client.c, keys_tlsproxy.c): in pecd's network-facing
 *      process, a pec_signer whose sign() sends the content's SHA-256 and
 *      receives the CMS SignedData, and an EVP_PKEY for the TLS key whose
 *      private operations go to the signer.
 * docs/operator-guide.md ("Process model") has the picture.
 *
 * Purpose: pecd (src/cmd/pecd.c, pecd_privsep.c) starts and asks the signer;
 * pecctl and `pecd -t` load keys directly.
 * Threads: keys_start before any thread and before opening anything else;
 * keys_client_run starts the thread that takes later signers.  The client's
 * pec_signer is shared by the delivery and timers' threads (a pool of
 * sockets, one request each); TLS key operations (the event loop's
 * handshakes, the directory download's client key in its refresh thread)
 * share one socket under a mutex and never wait for a new signer; reload
 * and stop from the event loop.
 * Ownership: the caller frees what the loaders return (pec_signer_free,
 * EVP_PKEY_free, free(*chain)) and closes *hsm after the key it opened;
 * keys_client_pec_signer's signer is owned by the client.
 * Errors: 0 / -1, or NULL, with the reason in err naming the setting and
 * the file (a wrong PIN, a key that does not match its certificate, …);
 * a dead signer fails a signature after SIGN_WAIT_MS and keys_client_up
 * is false meanwhile.
 */
#ifndef PEC_KEYS_H
#define PEC_KEYS_H

#include "lib/config.h"
#include "pec/pec.h"

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

/* ---- loading (keys_load.c, keys_pkcs11.c) ----------------------------------- */

/* An open hardware module (a PKCS#11 context, its slots, the login). */
struct keys_hsm;
void keys_hsm_close(struct keys_hsm *h);

/* The PEC signer of cfg: [pec] signing_key (PEM file, mode 0600 or 0640, or a
 * pkcs11: URI) and signing_certificate, checked against each other and
 * against the service address (RFC 6109 §2.1).  *hsm (may stay NULL) is
 * the module a URI opened: close it after the signer. */
pec_signer *keys_load_pec_signer(const struct config *cfg, struct keys_hsm **hsm, char *err,
                                 size_t errlen);

/* The TLS key and certificate chain of cfg ([tls] key and certificate):
 * *key a private key (from a PEM file that group and others cannot read, or
 * a pkcs11: URI in the module of *hsm, opened if NULL), *chain the PEM of
 * the certificate file (malloc'ed), the key checked against it. */
int keys_load_tls(const struct config *cfg, struct keys_hsm **hsm, EVP_PKEY **key, char **chain,
                  size_t *chain_len, char *err, size_t errlen);

/* The TLS key of a local domain's own certificate (local_domains_file
 * tls_key= and tls_certificate=, chosen by SNI), checked against it; the
 * errors name the domains file and line. */
struct domain;
int keys_load_tls_domain(const struct config *cfg, const struct domain *d,
                         struct keys_hsm **hsm, EVP_PKEY **key, char *err, size_t errlen);

/* The TLS client key of the signed directory's download ([pec]
 * directory_client_key, a PEM file or a pkcs11: URI), checked against
 * directory_client_cert. */
int keys_load_dir_client(const struct config *cfg, struct keys_hsm **hsm, EVP_PKEY **key,
                         char *err, size_t errlen);

/* For pecctl: a new RSA key of bits generated inside the token of uri (an
 * object labelled as the URI's object, with its id if given), or the key
 * already there when exists_ok; *pub its public key (for the certificate).
 * 0, or -1 with the reason. */
int keys_token_make_key(const char *uri, const char *module, const char *pin_file, int bits,
                        bool exists_ok, EVP_PKEY **pub, char *err, size_t errlen);

/* The SHA-256 of a key's public part (SubjectPublicKeyInfo DER): how the
 * network-facing process and the signer name the TLS key they mean. */
int keys_public_id(EVP_PKEY *key, unsigned char id[32]);

/* ---- the processes (keys_keeper.c, keys_signer.c, keys_client.c) ----------- */

struct keys_client;

/* Forks the keeper (which forks the signer) and waits for the signer's
 * first answer: NULL with the signer's reason (a wrong PIN, a key that does
 * not match, …) when it could not start.  Call before opening anything
 * else (the keeper inherits the process as it is) and before any thread. */
/* A check of a configuration read again (SIGHUP) that the signer and the
 * keeper run before they load any key it names: pecd_privsep.c refuses files
 * the network-facing user could change, as it does at start (that user can
 * ask for a reload at will).  Set before keys_start; NULL: none. */
typedef int (*keys_config_check_fn)(const struct config *cfg, char *err, size_t errlen);
void keys_set_config_check(keys_config_check_fn fn);
struct keys_client *keys_start(const struct config *cfg, char *err, size_t errlen);
/* Starts the thread that takes the later signers from the keeper (after the
 * privileges are dropped). */
int keys_client_run(struct keys_client *c);
/* The signer's pid (logs, tests) and whether it answers now. */
int keys_client_signer_pid(struct keys_client *c);
bool keys_client_up(struct keys_client *c);
/* The PEC signer backed by the signer process (NULL without [pec]); owned by c. */
pec_signer *keys_client_pec_signer(struct keys_client *c);
/* SIGHUP: the signer reads pecd.conf again and loads its keys from it (the
 * signing key and certificate, the TLS keys): all of them, or -1 with the
 * reason and the keys in force kept.  A signer the keeper starts later
 * reads the same file. */
int keys_client_reload(struct keys_client *c, char *err, size_t errlen);
/* The TLS certificate chain (PEM) and a key whose private operations go to
 * the signer.  The caller frees *chain and *key. */
int keys_client_tls(struct keys_client *c, char **chain, size_t *chain_len, EVP_PKEY **key,
                    char *err, size_t errlen);
/* A key whose private operations go to the signer's directory client key
 * (NULL with the reason when the signer holds none); cert_path: the
 * certificate (public) it belongs to. */
EVP_PKEY *keys_client_dir_key(struct keys_client *c, const char *cert_path, char *err,
                              size_t errlen);
/* Closes the sockets (the signer and the keeper then exit) and waits for
 * the keeper. */
void keys_client_stop(struct keys_client *c);

/* keys_tlsproxy.c: an EVP_PKEY with the public key of cert whose private
 * operations (RSA, ECDSA) ask the signer for the key named id. */
EVP_PKEY *keys_tls_proxy_new(struct keys_client *c, EVP_PKEY *pub, const unsigned char id[32],
                             char *err, size_t errlen);

#endif
