/*
 * xalloc.c - the allocators of the allocation policy (lib.h): small
 * allocations either succeed or end the process with a log line naming the
 * size, instead of a NULL that a caller forgets to check and dereferences
 * later, somewhere else.  Postfix's mymalloc and glib's g_malloc do the
 * same.  abort() rather than exit(): a core (where enabled) shows who asked.
 */
#include "lib.h"

#include <stdlib.h>
#include <string.h>

static void out_of_memory(size_t n)
{
    log_err("out of memory (%zu octets asked): stopping", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        out_of_memory(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        out_of_memory(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        out_of_memory(n);
    return q;
}

char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (p == NULL)
        out_of_memory(strlen(s) + 1);
    return p;
}

char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (p == NULL)
        out_of_memory(n + 1);
    return p;
}
