/*
 * roles.h - the PEC provider roles (roles.c, roles_access.c, roles_incoming.c)
 * as the queue's stage processor.
 *
 * Purpose: pecd creates the roles and hands roles_process and the pass
 * hooks to the queue (queue_set_processor, queue_set_pass_hooks); the
 * transport asks roles_is_pec_domain_cb; the notices thread asks
 * roles_check_certificates.
 * Threads: roles_new, roles_free, roles_set_config, roles_set_evidence and
 * roles_reload_directory on the event loop (or at start); roles_process and
 * the pass hooks on the queue's delivery threads, several at once (the
 * directory is a refcounted snapshot, cfg an atomic pointer, the identifier
 * sequence atomic); the lookups and stats from any thread.
 * Ownership: the roles borrow transport, users, tracking, the signer and the
 * evidence log (not owned: they must outlive roles_free) and cfg until the
 * next roles_set_config; they own the directory manager.
 * Errors: roles_new NULL and roles_config_read -1 with a reason naming the
 * file; roles_process and roles_pass_end -1 with the reason in err (the
 * queue runs the stage again later); a message's own faults become PEC
 * receipts (non-acceptance, anomaly, errore-consegna), not errors.
 */
#ifndef PEC_PROVIDER_ROLES_H
#define PEC_PROVIDER_ROLES_H

#include "queue/queue.h"

struct config;
struct transport;
struct users_db;
struct roles;

/* Loads the trust anchors, CRL and providers' directory named in [pec];
 * signs with signer (pecd's: the signer process, src/keys; not owned).  NULL
 * with a reason naming the file on error. */
struct tracking;
typedef struct pec_signer pec_signer;
struct roles *roles_new(const struct config *cfg, struct transport *t, struct users_db *users,
                        struct tracking *tracking, pec_signer *signer, char *err,
                        size_t errlen);
void roles_free(struct roles *r);
/* Asks for a refresh of the providers' directory and its CRLs (SIGHUP);
 * done by a thread, the copy in use stays until a good one replaces it. */
void roles_reload_directory(struct roles *r);
/* Reload, in two steps so that a file that cannot be read changes nothing
 * (pecd_reload.c reads every file before the signer loads new keys):
 * roles_config_read reads cfg's directory_password_file (*password NULL
 * when none is set; -1 with err naming it); roles_set_config then puts cfg
 * in force (the directory's source, bind, TLS client certificate, CRLs...
 * taken by its thread, which refreshes at once when directory_changed) and
 * takes password. */
int roles_config_read(const struct config *cfg, char **password, char *err, size_t errlen);
void roles_set_config(struct roles *r, const struct config *cfg, bool directory_changed,
                      char *password);
/* Events go to this evidence log (its day seals signed with our key).
 * stage_synced: the queue's delivery threads syncfs the log's file system
 * before they commit a stage ([queue] sync = syncfs, the log on the queue's
 * file system), so the events of a stage are appended without a sync of
 * their own (evidence_append_deferred). */
struct evidence;
/* For the metrics: when the directory in use was fetched from its source,
 * how many providers it lists, and the thisUpdate of its oldest CRL (0: none). */
void roles_directory_stats(struct roles *r, time_t *fetched, size_t *providers,
                           time_t *crl_oldest);
void roles_set_evidence(struct roles *r, struct evidence *ev, bool stage_synced);
bool roles_is_pec_domain(const struct roles *r, const char *domain);
/* The same, with the signature transport_set_pec_domains() wants. */
bool roles_is_pec_domain_cb(void *arg, const char *domain);
/* process_fn (queue.h); arg is the struct roles.  Stages: "submission"
 * (access point), "incoming" (incoming + delivery point), "delivery" (the
 * recipients of an envelope retried on their own), "notices" (a batch of
 * timeout notices, §3.1.6: notices.c). */
int roles_process(void *arg, const struct queue_env *env, const char *data, size_t len,
                  bool recovered, struct queue_outputs *out, char *err, size_t errlen);
/* pass_begin_fn / pass_end_fn (queue.h): the events of a delivery thread's
 * pass of stages go to the evidence log as one batch (evidence_batch_begin)
 * and its tracking writes into one transaction (tracking_pass_begin), both
 * stored at the end of the pass before the stages are committed. */
void roles_pass_begin(void *arg);
int roles_pass_end(void *arg, char *err, size_t errlen);

/* Warns (log) when the signing or TLS certificate expires within 30 days or
 * the signing certificate is not in the providers' directory (certwatch.c);
 * the number of problems found.  At start, hourly and after a reload. */
int roles_check_certificates(struct roles *r);

#endif
