/*
 * roles.h - the PEC provider roles (roles.c) as the queue's stage processor.
 */
#ifndef PEC_PROVIDER_ROLES_H
#define PEC_PROVIDER_ROLES_H

#include "queue/queue.h"

struct config;
struct transport;
struct users_db;
struct roles;

/* Loads the signing key, trust anchors, CRL and providers' directory named
 * in [pec]; NULL with a reason naming the file on error. */
struct roles *roles_new(const struct config *cfg, struct transport *t, struct users_db *users,
                        char *err, size_t errlen);
void roles_free(struct roles *r);
bool roles_is_pec_domain(const struct roles *r, const char *domain);
/* process_fn (queue.h); arg is the struct roles.  Stages: "submission"
 * (access point), "incoming" (incoming + delivery point). */
int roles_process(void *arg, const struct queue_env *env, const char *data, size_t len,
                  bool recovered, struct queue_outputs *out, char *err, size_t errlen);

#endif
