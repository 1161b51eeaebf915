/*
 * milter_fake.h - an in-process fake milter filter for the unit tests of the
 * milter client (test_milter_proto.c, test_milter_apply.c): a thread on the
 * other end of a socketpair answers each command ("continue", "accept" at end
 * of message, its options to negotiation) unless a per-test hook answers it,
 * and records what it received (command letters, macros, headers, body).
 */
#ifndef PEC_TEST_MILTER_FAKE_H
#define PEC_TEST_MILTER_FAKE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filters/milter.h"

struct fake;
/* Returns 1 when it answered cmd itself, 0 for the default answer. */
typedef int (*fake_hook)(struct fake *f, char cmd, const char *data, size_t len);

struct fake {
    int fd;
    uint32_t version, actions, proto;
    fake_hook hook;
    int n;                    /* free counter for hooks */
    char seq[256];            /* command letters received (no macros) */
    char macros[4096];        /* "name=value\n" */
    char headers[2048];       /* "name=value\n" as received */
    char connect_family;
    size_t max_body_chunk, body_octets;
    pthread_t thread;
};

/* One packet (command and data) to the client. */
void fk_send(struct fake *f, char cmd, const void *data, size_t len);
/* A packet of an optional 4-octet index and one or two NUL-terminated strings. */
void fk_str2(struct fake *f, char cmd, uint32_t *idx, const char *a, const char *b);

/* The filter's loop (a thread's start routine); returns when the client closes or quits. */
void *fk_main(void *arg);

extern const char *const RCPTS[3];
extern const char MSG[];
extern const size_t MSG_LEN;

struct milter_facts facts(size_t nrcpts);
struct milter_spec spec_ms(unsigned io, unsigned eom);
/* Runs one conversation against a fake with the given options. */
void run_fake(struct fake *f, const struct milter_facts *fa, const char *msg, size_t len,
              unsigned io_ms, struct milter_result *res);
void run_simple(struct fake *f, size_t nrcpts, struct milter_result *res);

#define ALL_ACTIONS 0xffu

#endif
