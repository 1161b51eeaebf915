/*
 * clamd.h - a ClamAV daemon client: zINSTREAM over a unix or TCP socket,
 * from a pool of persistent connections (IDSESSION), with connect and I/O
 * timeouts.
 *
 * Purpose: the antivirus callout (callout.c) scans each message with it.
 * Threads: any thread: the callout workers share one pool (a mutex and a
 * condition); clamd_scan blocks up to the timeout for a free connection and
 * for each connect, read and write.
 * Ownership: clamd_new copies addr; data is borrowed for the call; the
 * verdict is written into the caller's struct.
 * Errors: always a verdict: anything unexpected (unreachable, timeout, a
 * bad reply) is CLAMD_ERROR with the reason in detail (config_callout.c
 * checks the address at load: a malformed one would fail every scan).
 */
#ifndef PEC_FILTERS_CLAMD_H
#define PEC_FILTERS_CLAMD_H

#include <stdbool.h>
#include <stddef.h>

enum clamd_status {
    CLAMD_CLEAN,       /* "stream: OK" */
    CLAMD_INFECTED,    /* "stream: NAME FOUND": name holds NAME */
    CLAMD_TOO_BIG,     /* "INSTREAM size limit exceeded" (StreamMaxLength) */
    CLAMD_ERROR,       /* "... ERROR", unreachable, timeout, bad reply: detail says why */
};
struct clamd_verdict {
    enum clamd_status status;
    char name[128];        /* signature name when infected */
    char detail[256];      /* reason when not clean */
};

/* Parses one clamd reply (without its NUL or newline terminator; an
 * IDSESSION "N: " prefix is allowed).  Any input gives a verdict; anything
 * unexpected is CLAMD_ERROR. */
void clamd_parse_reply(const char *buf, size_t len, struct clamd_verdict *v);

struct clamd;
/* addr: "unix:/path" or "tcp:HOST:PORT"; timeout_ms bounds each connect,
 * read and write; pool_size persistent connections at most. */
struct clamd *clamd_new(const char *addr, unsigned timeout_ms, unsigned pool_size);
/* Scans data (any thread; waits for a free connection up to the timeout). */
void clamd_scan(struct clamd *c, const char *data, size_t len, struct clamd_verdict *v);
void clamd_free(struct clamd *c);

#endif
