/*
 * config_int.h - private to config.c and config_sections.c: the inih parse
 * context and the one helper both use.
 *
 * Purpose: config_sections.c holds the handler of every key = value line;
 * config.c loads, fills defaults, checks the whole file and answers lookups.
 * Threads: the thread running config_load (one parse_ctx per load).
 * Ownership: parse_ctx borrows the config being filled; set_str frees the old
 * value and stores a strdup'ed copy of v (the config owns it).
 * Errors: config_handler returns 0 (inih: error on this line) after the first
 * reason is kept in ctx->err and failed set; config_load reports it.
 */
#ifndef PEC_CONFIG_INT_H
#define PEC_CONFIG_INT_H

#include "config.h"
#include "lib.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct parse_ctx {
    struct config *cfg;
    char err[256];          /* reason of the first error */
    bool failed;
};

static inline void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = xstrdup(v);
}

/* inih handler for one key = value line of any section (config_sections.c). */
int config_handler(void *user, const char *section, const char *name, const char *value);
/* The handlers' refusal: the reason into err, and 0 (inih's "stop here"). */
int config_bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
