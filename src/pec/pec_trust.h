/*
 * pec_trust.h - the trust configuration behind the opaque pec_trust of
 * pec.h (src/pec only).
 *
 * Purpose: the layout pec_trust.c fills and pec_verify.c reads.
 * Threads: filled by one thread (pec_trust_add_*), then read-only and shared
 * by concurrent verifications; the chain cache, the one part that changes
 * later, is guarded by chain_lock.
 * Ownership: the struct owns the store, the CRLs and the hashes
 * (pec_trust_free).
 * Errors: n/a (a layout and a lookup: pec_trust_has_hash answers yes or no).
 */
#ifndef PEC_TRUST_H
#define PEC_TRUST_H

#include "pec/pec_internal.h"

#include <openssl/x509.h>
#include <pthread.h>

#define PEC_TRUST_CHAIN_CACHE 32

struct pec_trust {
    X509_STORE *store;            /* trust anchors */
    int n_anchors;
    STACK_OF(X509_CRL) *crls;
    char (*hashes)[41];           /* providerCertificateHash values, lowercase */
    size_t n_hashes;
    time_t at;                    /* fixed verification time, 0 = signing time */
    unsigned long version;        /* bumped by every change of the anchors or CRLs */
    /* Path validations that succeeded, by signer, certificates given with it
     * and validation time (pec_verify.c): a cache inside an otherwise
     * read-only object, hence the lock. */
    pthread_mutex_t chain_lock;
    struct {
        unsigned char key[32];
        unsigned long version;
        bool used;
    } chain_ok[PEC_TRUST_CHAIN_CACHE];
    unsigned chain_next;
};

bool pec_trust_has_hash(const pec_trust *t, const char *sha1hex);

#endif
