/*
 * pec_classify.h - internal interface between classification and
 * verification (src/pec only).
 *
 * Purpose: pec_classify.c finds the PEC message and its signed entity in a
 * parsed tree; pec_verify.c and pec_classify() use it.
 * Threads: any thread, on a message tree no other thread uses.
 * Ownership: the messages and entities returned are borrowed from top (no
 * reference taken): valid while top lives.
 * Errors: not found is NULL or PEC_TYPE_NONE; nothing is logged.
 */
#ifndef PEC_CLASSIFY_H
#define PEC_CLASSIFY_H

#include "pec/pec_internal.h"

/* The message carrying the PEC headers: top itself, or one found inside a
 * message/rfc822 part (rewrapped).  NONE type when there is none. */
GMimeMessage *pec_locate(GMimeMessage *top, pec_type *type, bool *virus, bool *rewrapped);
/* The multipart/signed entity of m: its body, or the first one below it. */
GMimeObject *pec_signed_entity(GMimeMessage *m, bool *nested);
/* Classification of an already parsed message; d (when have_d) gives the
 * variant of delivery receipts and the errore. */
void pec_classify_msg(GMimeMessage *top, pec_class *c, pec_daticert *d, bool have_d,
                      GMimeMessage **pecmsg);

#endif
