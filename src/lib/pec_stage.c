/*
 * pec_stage.c - the names of the PEC stages in the spool file (pec_stage.h).
 * The names are part of the spool format: a queue written by an older pecd
 * is read by a newer one, so a name is never changed, only added.
 */
#include "pec_stage.h"

#include <stddef.h>
#include <string.h>

static const char *const names[] = {
    [PEC_STAGE_SUBMISSION] = "submission",
    [PEC_STAGE_INCOMING] = "incoming",
    [PEC_STAGE_DELIVERY] = "delivery",
    [PEC_STAGE_NOTICES] = "notices",
};

const char *pec_stage_name(enum pec_stage s)
{
    return (size_t)s < sizeof names / sizeof names[0] ? names[s] : NULL;
}

enum pec_stage pec_stage_parse(const char *name)
{
    if (name == NULL)
        return PEC_STAGE_NONE;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i] != NULL && strcmp(names[i], name) == 0)
            return (enum pec_stage)i;
    return PEC_STAGE_UNKNOWN;
}
