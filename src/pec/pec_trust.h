/*
 * pec_trust.h - the trust configuration behind the opaque pec_trust of
 * pec.h (src/pec only).
 */
#ifndef PEC_TRUST_H
#define PEC_TRUST_H

#include "pec/pec_internal.h"

#include <openssl/x509.h>

struct pec_trust {
    X509_STORE *store;            /* trust anchors */
    int n_anchors;
    STACK_OF(X509_CRL) *crls;
    char (*hashes)[41];           /* providerCertificateHash values, lowercase */
    size_t n_hashes;
    time_t at;                    /* fixed verification time, 0 = signing time */
};

bool pec_trust_has_hash(const pec_trust *t, const char *sha1hex);

#endif
