/*
 * admission.h - what the provider takes in over SMTP, and for which role.
 *
 * Purpose: the rules an SMTP session's hooks apply before a message is
 * acknowledged: who may relay (authenticated users, [listener]
 * relay_networks), who may send as which address (a PEC user as their own
 * address or the ones [users] senders gives them, RFC 6109 §3.1.1), the
 * sending limits per user and per client address, which local recipients
 * exist, what a PEC provider accepts from outside after the data (§2.2.2,
 * §5.3), and which PEC stage the accepted message goes to.  pecd.c wires
 * these to the SMTP server's hooks and does nothing else with them.
 * Threads: the event loop only (the limits' counters are not locked); the
 * configuration is passed in by the caller at each call (it changes on
 * reload).
 * Ownership: struct admission holds the limits' counters; addresses and
 * replies are copied into the caller's buffers.
 * Errors: each check returns 0 (admitted) or -1 with the whole SMTP reply
 * ("550 5.7.1 …") in reply; nothing is logged but the limits reached.
 */
#ifndef PEC_PROVIDER_ADMISSION_H
#define PEC_PROVIDER_ADMISSION_H

#include "lib/config.h"
#include "lib/pec_stage.h"
#include "smtp/smtp.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>

struct admission;

struct admission *admission_new(void);
void admission_free(struct admission *a);

/* MAIL FROM: the sending limits (one more message) and, on a PEC provider,
 * the authenticated user's right to the sender address. */
int admission_mail(struct admission *a, const struct config *cfg,
                   struct sender_map *senders, const struct smtp_txn *txn, char *reply,
                   size_t replylen);
/* RCPT TO: the limits (one more recipient), relaying, postmaster (RFC 5321
 * §4.5.1), and, without PEC, whether a local user exists.  addr_out: the
 * mailbox to deliver to. */
int admission_rcpt(struct admission *a, const struct config *cfg, struct users_db *users,
                   const struct smtp_txn *txn, const struct smtp_path *path, char *addr_out,
                   size_t addrlen, char *reply, size_t replylen);
/* After the data's header (head, len): whether a PEC provider takes it
 * (signer_up: a signer answers; nothing is acknowledged that could not be
 * signed for). */
int admission_content(const struct config *cfg, struct users_db *users, bool signer_up,
                      const struct smtp_txn *txn, const char *head, size_t len, char *reply,
                      size_t replylen);
/* The message is taken: it counts against the sender's limits. */
void admission_count(struct admission *a, const struct smtp_txn *txn);
/* The PEC role the accepted message goes to: SUBMISSION for an
 * authenticated user's message on a submission listener, INCOMING for one
 * from outside whose recipients are all local, NONE otherwise (relayed or
 * delivered as ordinary mail). */
enum pec_stage admission_stage(const struct config *cfg, const struct smtp_txn *txn);

#endif
