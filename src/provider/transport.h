/*
 * transport.h - the queue's delivery function: local Maildir delivery or SMTP
 * relay to the next hop, per recipient domain (transport.c, transport_route.c).
 *
 * Purpose: pecd hands transport_deliver to the queue (queue_new); the roles
 * store copies for our own mailboxes with transport_store_local*.
 * Threads: transport_new, the transport_set_* setters and transport_free on
 * the event loop (the setters before the delivery threads start, but
 * set_config on reload); transport_deliver and the store functions on the
 * delivery threads, several at once (the connection cache and the
 * per-destination counts under one mutex; cfg and the outgoing callouts
 * read under a configuration hold).  Each call blocks on the network.
 * Ownership: the transport owns its TLS context, resolver, idle connections
 * and outgoing callouts; it borrows cfg until the next set_config, and the
 * callbacks' args.  env and data are borrowed for the call.
 * Errors: per recipient, in struct deliver_rcpt: the result
 * (OK/TEMPFAIL/PERMFAIL), the next hop's reply or our reason with an
 * enhanced status code (5.7.10 and 5.7.30 for REQUIRETLS); the store
 * functions return -1 with err; transport_new NULL with err.
 */
#ifndef PEC_PROVIDER_TRANSPORT_H
#define PEC_PROVIDER_TRANSPORT_H

#include "queue/queue.h"
#include "store/store.h"

struct config;
struct transport;

struct transport *transport_new(const struct config *cfg, char *err, size_t errlen);
/* Reload: routes, TLS policies, milters... from cfg (the outgoing callouts
 * are made again; the old ones retired, lib/config.h). */
void transport_set_config(struct transport *t, const struct config *cfg);
void transport_free(struct transport *t);
/* Domains of PEC providers get at least [pec] tls_policy (verify): the
 * callback answers whether a domain is one (the providers' directory). */
/* A user's own Maildir quota (users_db_quota): true and *octets when the user
 * has one; else [delivery] quota applies. */
void transport_set_quota(struct transport *t,
                         bool (*quota)(void *arg, const char *addr, uint64_t *octets), void *arg);
void transport_set_pec_domains(struct transport *t, bool (*is_pec)(void *arg, const char *domain),
                               void *arg);
/* Writes data for the Maildir of recipient i of env (named after env's queue
 * id and name_base + i) and adds the copy to out: the queue publishes it with
 * the stage's other outputs, at the same commit point, so a receipt that
 * follows a stored envelope is sent exactly when the envelope is stored.  A
 * copy stored before a crash counts ('recovered').  0 ok, -1 error (err). */
int transport_store_local(struct transport *t, const struct queue_env *env, size_t i,
                          const char *data, size_t len, bool recovered, struct queue_outputs *out,
                          char *err, size_t errlen);
/* Stores data for every recipient i of env with r[i].pending, in one LMTP
 * transaction ([delivery] mailbox = lmtp:, durable when this returns) or into
 * each Maildir (copies added to out, as transport_store_local); r[i].result
 * says what happened (PERMFAIL: the LMTP server refused the mailbox).  For the
 * PEC delivery point. */
void transport_store_local_all(struct transport *t, const struct queue_env *env,
                               const char *data, size_t len, bool recovered,
                               struct deliver_rcpt *r, struct queue_outputs *out);
/* Mailbox existence for plain (non-PEC) local delivery with users from
 * Dovecot's userdb (users_db_lookup's answers). */
void transport_set_users(struct transport *t,
                         enum users_found (*lookup)(void *arg, const char *addr),
                         void *arg);
/* local_lmtp.c: recipients idx[0..n) of env through LMTP, one transaction. */
void local_lmtp_deliver(const struct config *cfg, const struct queue_env *env, const char *data,
                        size_t len, const size_t *idx, size_t n, struct deliver_rcpt *r);
/* RFC 8689 §3: the message's header has "TLS-Required: No" (the sender
 * waives the recipient domain's TLS policy). */
bool transport_tls_required_no(const char *data, size_t len);
/* deliver_fn (queue.h); arg is the struct transport. */
void transport_deliver(void *arg, const struct queue_env *env, const char *data, size_t len,
                       bool recovered, bool sync_each, struct deliver_rcpt *rcpts);

#endif
