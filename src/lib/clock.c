/*
 * clock.c - is the kernel's clock synchronised?  RFC 6109 §4.1: every
 * operation of a provider "necessary to have an accurate temporal reference
 * available"; receipts and the evidence log carry its times as legal
 * evidence.  The kernel knows whether a time daemon (chrony, ntpd,
 * systemd-timesyncd) keeps it disciplined: adjtimex(2) with no change asked
 * returns TIME_ERROR, and sets STA_UNSYNC, when nobody does, and reports the
 * maximum and estimated error in microseconds.
 *
 * Interface: clock_check, clock_judge (lib.h).  Assumes: Linux.
 */
#include "lib.h"

#include <stdio.h>
#include <string.h>
#include <sys/timex.h>

enum clock_state clock_judge(int rc, const struct timex *tx, char *why, size_t whylen)
{
    if (rc == -1) {
        snprintf(why, whylen, "adjtimex: cannot read the kernel's clock state");
        return CLOCK_UNKNOWN;
    }
    if (rc == TIME_ERROR || (tx->status & STA_UNSYNC) != 0) {
        snprintf(why, whylen, "the system clock is NOT synchronised (no time daemon disciplines "
                              "it; maximum error %ld ms): RFC 6109 §4.1 needs an accurate "
                              "time for receipts and the evidence log; run chrony "
                              "(docs/operator-guide.md)",
                 tx->maxerror / 1000);
        return CLOCK_UNSYNCED;
    }
    snprintf(why, whylen, "the system clock is synchronised (estimated error %ld µs, maximum "
                          "%ld µs)",
             tx->esterror, tx->maxerror);
    return CLOCK_SYNCED;
}

enum clock_state clock_check(char *why, size_t whylen)
{
    struct timex tx;
    memset(&tx, 0, sizeof tx);   /* modes 0: read only */
    int rc = adjtimex(&tx);
    return clock_judge(rc, &tx, why, whylen);
}
