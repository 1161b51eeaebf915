/*
 * keys_int.h - private to src/keys: the hardware module (keys_pkcs11.c),
 * the wire format between pecd and its signer process (keys_proto.c), the
 * keeper and signer processes (keys_keeper.c, keys_signer.c).
 *
 * Purpose: what the files of src/keys share and nothing outside uses.
 * Threads: keys_hsm_* in the process that uses the key, after any fork (a
 * PKCS#11 session does not survive fork); the signer runs one thread per
 * socket; keys_client_tls_op from any thread (the event loop, the
 * directory's refresh thread), one at a time on the TLS socket (a mutex).
 * Ownership: keys_hsm_key's key is valid while its keys_hsm is open;
 * keys_recv reads into the caller's buffer; answers (pec_buf) are the
 * caller's.
 * Errors: -1 (or NULL) with the reason in err, or errno for keys_send and
 * keys_recv (-1 also on time out, 0 at end of file); the signer answers a
 * bad request with status 1 and a reason, never a crash.
 */
#ifndef PEC_KEYS_INT_H
#define PEC_KEYS_INT_H

#include "keys.h"

#include <stdint.h>
#include <sys/types.h>

/* ---- keys_pkcs11.c ------------------------------------------------------------ */
struct keys_hsm *keys_hsm_open(const char *module, char *err, size_t errlen);
/* The private key the URI names (setting: "[pec] signing_key", for the
 * messages), after a login with the PIN of pin_file (may be NULL when the
 * token needs no login).  Valid while h is open. */
EVP_PKEY *keys_hsm_key(struct keys_hsm *h, const char *uri, const char *setting,
                       const char *pin_file, char *err, size_t errlen);

/* ---- keys_proto.c: one request, one answer, each one SOCK_SEQPACKET message ---- */
enum keys_op {
    KOP_HELLO = 1,        /* -> struct keys_hello + TLS chain (PEM) */
    KOP_PEC_SIGN = 2,     /* SHA-256[32] -> DER CMS SignedData, detached */
    KOP_TLS_RSA = 3,      /* id[32] u32 padding + octets -> octets (RSA private op) */
    KOP_TLS_ECDSA = 4,    /* id[32] + digest -> DER ECDSA-Sig-Value */
    KOP_RELOAD = 5,       /* -> as HELLO, after reading pecd.conf and its keys again */
};
#define KEYS_MSG_MAX 65536          /* one request or answer, at most */
#define KEYS_RSA_MAX 1024           /* an RSA-8192 block */
#define KEYS_DIGEST_MAX 64

struct keys_req {
    uint32_t op;
    uint32_t padding;               /* KOP_TLS_RSA: RSA_PKCS1_PADDING or RSA_NO_PADDING */
    unsigned char id[32];           /* KOP_TLS_*: keys_public_id() of the key meant */
    uint32_t len;                   /* octets of data[] used */
    unsigned char data[KEYS_RSA_MAX];
};

struct keys_hello {
    uint32_t has_pec, has_tls, has_dir;
    char pec_email[256];            /* the signing certificate's address (§2.1) */
    unsigned char tls_id[32];
    unsigned char dir_id[32];       /* [pec] directory_client_key */
};

/* An answer: status 0 and data, or status 1 and a reason (text). */
struct keys_ans_hdr {
    uint32_t status;
    uint32_t len;
};

/* Sends one message; -1 on error (errno). */
int keys_send(int fd, const void *a, size_t alen, const void *b, size_t blen);
/* Receives one message into buf (size KEYS_MSG_MAX) before deadline
 * (clock_ms(); -1 = none): its length, 0 at EOF, -1 on error or time out. */
ssize_t keys_recv(int fd, void *buf, size_t size, int64_t deadline);

/* keys_client.c: one TLS private-key operation on the current signer's TLS
 * socket (no waiting for a signer: the event loop is the caller). */
int keys_client_tls_op(struct keys_client *c, const struct keys_req *rq, pec_buf *ans, char *err,
                       size_t errlen);

/* ---- the keeper and the signer ------------------------------------------------ */
/* The control messages between the keeper and pecd: KCTL_SIGNER and
 * KCTL_FAILED from the keeper; KCTL_RESTART (kill that stuck signer) and
 * KCTL_RELOADED (a reload applied: the next signer reads pecd.conf again)
 * from pecd. */
enum keys_ctl { KCTL_SIGNER = 1, KCTL_FAILED = 2, KCTL_RESTART = 3, KCTL_RELOADED = 4 };
struct keys_ctl_msg {
    uint32_t type;
    uint32_t generation;
    int32_t pid;                    /* KCTL_SIGNER: the signer's */
    uint32_t nfds;                  /* KCTL_SIGNER: descriptors passed (TLS first) */
    uint32_t ran;                   /* KCTL_FAILED: it had answered (a death, not a failure
                                       to load the keys) */
    char reason[1024];              /* KCTL_FAILED */
};

/* Runs the keeper in this (just forked) process; never returns. */
void keys_keeper_main(const struct config *cfg, int ctl, size_t nbulk) __attribute__((noreturn));
/* Runs the signer on fds[0] (TLS, full priority) and fds[1..n) (the
 * messages' signatures, at [queue] worker_nice), after loading the keys;
 * status: where "OK" or the reason of a failure is written.  Returns the
 * process's exit status. */
int keys_signer_main(const struct config *cfg, const int *fds, size_t n, int status);
/* keys_set_config_check's check on cfg (keys_signer.c): 0, or -1 with err. */
int keys_config_checked(const struct config *cfg, char *err, size_t errlen);

#endif
