/*
 * pec_dirtls.h - the cause of a failed TLS connection to the directory's
 * LDAP server (pecdir only; see pec_dirtls.c).
 *
 * Purpose: libldap says only "Can't contact LDAP server"; pec_dirsource.c
 * calls pec_dirtls_probe after such a failure to name the cause.
 * Threads: any thread (it blocks for at most timeout seconds: the refresh
 * thread or pecctl).
 * Ownership: nothing kept; strings are borrowed for the call.
 * Errors: 0 all well, -1 with the cause in why; the StartTLS answer parser
 * also returns 1 for incomplete input (untrusted input: fuzzed).
 */
#ifndef PEC_DIRTLS_H
#define PEC_DIRTLS_H

#include <stdbool.h>
#include <stddef.h>

/* Connects to host:port (after StartTLS when use_starttls), makes a TLS
 * handshake and checks the server certificate against ca_file (NULL = the
 * system's CAs) and host.  0 when all is well; -1 with the cause in why. */
int pec_dirtls_probe(const char *host, int port, bool use_starttls, const char *ca_file,
                     unsigned timeout, char *why, size_t whysz);

/* The server's answer to StartTLS (an LDAPMessage with an ExtendedResponse,
 * RFC 4511 §4.12), of which n bytes have arrived: 0 = success, 1 = incomplete,
 * -1 = refused or malformed (why says which).  Untrusted input: fuzzed. */
#define PEC_DIRTLS_ANSWER_MAX 512
int pec_dirtls_starttls_answer(const unsigned char *buf, size_t n, char *why, size_t whysz);

#endif
