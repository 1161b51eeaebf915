/*
 * fuzz_pec_verify.c - libFuzzer target for classification and verification
 * of whole messages (src/pec/pec_classify.c, pec_verify.c): hostile MIME,
 * CMS and XML must give a verdict, never a crash.  No signer is in the
 * directory, so the incoming point's mode never reads a daticert (it does
 * only once the signature holds); pecctl's mode (report, bare entities)
 * reads it through the bounded parser.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "pec/pec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pec_trust *t;
    if (!t) {
        t = pec_trust_new();
        pec_trust_add_cert_hash(t, "0123456789abcdef0123456789abcdef01234567");
    }
    pec_class c;
    pec_classify(data, size, &c, NULL, 0);
    pec_verdict v;
    char err[128];
    if (pec_verify(t, data, size, &v, err, sizeof err) == 0) {
        if (v.valid)
            abort(); /* nothing here is in the directory */
        if (v.daticert || v.daticert_error[0])
            abort(); /* read before the signature held */
        pec_verdict_free(&v);
    }
    if (pec_verify_flags(t, data, size, PEC_VERIFY_REPORT | PEC_VERIFY_BARE, &v, err,
                         sizeof err) == 0) {
        if (v.valid)
            abort();
        pec_verdict_free(&v);
    }
    pec_check_result r;
    const char *rcpt = "b@pec.b.example";
    pec_check_input in = {.msg = data, .len = size, .reverse_path = "a@pec.a.example",
                          .forward_paths = &rcpt, .n_forward = 1};
    pec_check_submission(&in, &r);
    return 0;
}
