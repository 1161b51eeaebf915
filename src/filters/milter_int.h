/*
 * milter_int.h - inside the milter client: the protocol's command and reply
 * letters and flag bits (as the milter protocol defines them), the packet
 * reader/writer and the connection set-up (milter_proto.c).
 *
 * A packet is a 4-octet big-endian length, then one command octet, then
 * length-1 octets of data.
 *
 * Purpose: shared by milter.c, milter_proto.c and milter_apply.c only.
 * Threads: any thread (one conversation, its socket and its mbufs belong
 * to the calling thread).
 * Ownership: an mbuf owns its bytes (mbuf_free); milter_recv's *data is
 * malloc'ed for the caller.
 * Errors: mbuf records an allocation failure in oom (milter_send refuses
 * it); the I/O functions return -1 with the reason in err, also on a time
 * out or a packet above max.
 */
#ifndef PEC_MILTER_INT_H
#define PEC_MILTER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "filters/milter.h"

/* commands, MTA -> filter */
#define MC_ABORT 'A'
#define MC_BODY 'B'
#define MC_CONNECT 'C'
#define MC_MACRO 'D'
#define MC_BODYEOB 'E'
#define MC_HELO 'H'
#define MC_HEADER 'L'
#define MC_MAIL 'M'
#define MC_EOH 'N'
#define MC_OPTNEG 'O'
#define MC_QUIT 'Q'
#define MC_RCPT 'R'
#define MC_DATA 'T'

/* replies, filter -> MTA */
#define MR_ADDRCPT '+'
#define MR_DELRCPT '-'
#define MR_ADDRCPT_PAR '2'
#define MR_SHUTDOWN '4'
#define MR_ACCEPT 'a'
#define MR_REPLBODY 'b'
#define MR_CONTINUE 'c'
#define MR_DISCARD 'd'
#define MR_CHGFROM 'e'
#define MR_CONN_FAIL 'f'
#define MR_ADDHEADER 'h'
#define MR_INSHEADER 'i'
#define MR_CHGHEADER 'm'
#define MR_PROGRESS 'p'
#define MR_QUARANTINE 'q'
#define MR_REJECT 'r'
#define MR_SKIP 's'
#define MR_TEMPFAIL 't'
#define MR_REPLYCODE 'y'

/* actions the filter may take (SMFIF_*) */
#define MF_ADDHDRS 0x01u
#define MF_CHGBODY 0x02u
#define MF_ADDRCPT 0x04u
#define MF_DELRCPT 0x08u
#define MF_CHGHDRS 0x10u
#define MF_QUARANTINE 0x20u
#define MF_CHGFROM 0x40u
#define MF_ADDRCPT_PAR 0x80u
#define MF_SETSYMLIST 0x100u
#define MF_OFFERED (MF_ADDHDRS | MF_CHGBODY | MF_ADDRCPT | MF_DELRCPT | MF_CHGHDRS | \
                    MF_QUARANTINE | MF_CHGFROM | MF_ADDRCPT_PAR)

/* protocol steps the filter may leave out (SMFIP_*) */
#define MP_NOCONNECT 0x01u
#define MP_NOHELO 0x02u
#define MP_NOMAIL 0x04u
#define MP_NORCPT 0x08u
#define MP_NOBODY 0x10u
#define MP_NOHDRS 0x20u
#define MP_NOEOH 0x40u
#define MP_NR_HDR 0x80u
#define MP_NOUNKNOWN 0x100u
#define MP_NODATA 0x200u
#define MP_SKIP 0x400u
#define MP_RCPT_REJ 0x800u
#define MP_NR_CONN 0x1000u
#define MP_NR_HELO 0x2000u
#define MP_NR_MAIL 0x4000u
#define MP_NR_RCPT 0x8000u
#define MP_NR_DATA 0x10000u
#define MP_NR_UNKN 0x20000u
#define MP_NR_EOH 0x40000u
#define MP_NR_BODY 0x80000u
/* everything but RCPT_REJ (we never pass refused recipients on) and the
 * header leading-space and larger-chunk options */
#define MP_OFFERED (MP_NOCONNECT | MP_NOHELO | MP_NOMAIL | MP_NORCPT | MP_NOBODY | MP_NOHDRS | \
                    MP_NOEOH | MP_NR_HDR | MP_NOUNKNOWN | MP_NODATA | MP_SKIP | MP_NR_CONN | \
                    MP_NR_HELO | MP_NR_MAIL | MP_NR_RCPT | MP_NR_DATA | MP_NR_UNKN |        \
                    MP_NR_EOH | MP_NR_BODY)

#define MILTER_VERSION 6u
#define MILTER_MIN_VERSION 2u
#define MILTER_CHUNK 65535u            /* body chunk we send */
#define MILTER_MAX_PACKET (1u << 20)   /* any packet but REPLBODY */
#define MILTER_MAX_MODS 1000u

#define MILTER_DEF_CONNECT_MS 5000u
#define MILTER_DEF_IO_MS 10000u
#define MILTER_DEF_EOM_MS 60000u

/* A growing packet being built: four octets for the length (filled in when
 * it is sent), the command octet, the data. */
struct mbuf {
    char *p;
    size_t len, cap;
    int oom;
};
void mbuf_init(struct mbuf *b, char cmd);
void mbuf_add(struct mbuf *b, const void *data, size_t n);
void mbuf_str(struct mbuf *b, const char *s);   /* with its NUL */
void mbuf_u32(struct mbuf *b, uint32_t v);
void mbuf_u16(struct mbuf *b, uint16_t v);
void mbuf_free(struct mbuf *b);

/* Connects to spec->socket within the connect timeout; fd or -1 with err. */
int milter_connect(const struct milter_spec *spec, char *err, size_t errlen);
/* Sends the packet of b (length prefix added) within timeout_ms. */
int milter_send(int fd, const struct mbuf *b, unsigned timeout_ms, char *err, size_t errlen);
/* Reads one packet within timeout_ms; data is malloc'd (NUL-terminated for
 * convenience, *len excludes the command octet).  Packets above max (data
 * length) fail. */
int milter_recv(int fd, unsigned timeout_ms, size_t max, char *cmd, char **data, size_t *len,
                char *err, size_t errlen);
uint32_t milter_get_u32(const char *p);

/* Checks a header field name / value from a filter (no injection of lines
 * that would start a new field, no NUL, no bare CR). */
int milter_check_header(const char *name, const char *value, char *err, size_t errlen);

#endif
