/*
 * pec_stage.h - which PEC role a queued message is for.
 *
 * Purpose: the admission (src/provider/admission.c) decides it when a
 * message is taken in; the queue carries it as an opaque tag in the spool
 * file ("stage=submission"), the roles (src/provider/roles.c) and the callout
 * stage (src/filters/stage.c) read it back.  One enum and one table of names,
 * so that no module compares the strings itself.
 * Threads: any (constant data).
 * Ownership: the names are static.
 * Errors: pec_stage_parse gives PEC_STAGE_UNKNOWN for a name not in the table
 * (a spool file from a newer version, or damaged).
 */
#ifndef PEC_LIB_PEC_STAGE_H
#define PEC_LIB_PEC_STAGE_H

enum pec_stage {
    PEC_STAGE_NONE = 0,    /* not PEC: ordinary mail, delivered or relayed as it is */
    PEC_STAGE_SUBMISSION,  /* the access point (RFC 6109 §3.1): a user's message */
    PEC_STAGE_INCOMING,    /* the incoming point (§3.2): from another provider or outside */
    PEC_STAGE_DELIVERY,    /* the delivery point's retry of some recipients (§3.3) */
    PEC_STAGE_NOTICES,     /* the timeout notices (§3.1.6) */
    PEC_STAGE_UNKNOWN,     /* a name no table row has */
};

/* The spool file's name of s; NULL for PEC_STAGE_NONE and PEC_STAGE_UNKNOWN. */
const char *pec_stage_name(enum pec_stage s);
/* NULL -> PEC_STAGE_NONE; a name of the table -> its stage; else UNKNOWN. */
enum pec_stage pec_stage_parse(const char *name);

#endif
