/*
 * roles_int.h - private to roles.c, roles_access.c, roles_incoming.c and
 * roles_common.c: the struct roles and the helpers the roles share
 * (roles_common.c, which calls none of the others).
 *
 * Purpose: one stage's work split by role; each role file calls only
 * roles_common.c and src/pec, src/store, src/queue.
 * Threads: a delivery thread per stage (several stages at once); struct
 * roles is shared read-only but for cfg (atomic), seq (atomic) and the
 * stage's instant (thread-local, role_set_instant/role_clear_instant).
 * Ownership: role_ev and the build arguments are borrowed for the call;
 * outputs added to out are copied (the queue owns them); pec_buf results
 * are the caller's (pec_buf_free).
 * Errors: -1 with the reason in err (err may be NULL for role_event): the
 * stage fails and runs again; role_mailbox answers 1/0/-1/-2 as
 * users_db_lookup.
 */
#ifndef PEC_PROVIDER_ROLES_INT_H
#define PEC_PROVIDER_ROLES_INT_H

#include "roles.h"
#include "pec/pec.h"
#include "pec/pec_dir.h"
#include "lib/pec_stage.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

struct roles {
    const struct config *_Atomic cfg;   /* swapped by a reload (roles_set_config) */
    struct transport *transport;
    struct users_db *users;
    struct tracking *tracking;
    struct evidence *ev;
    bool ev_deferred;              /* stage events: evidence_append_deferred */
    pec_signer *signer;
    pec_identity id;
    struct pec_dirmgr *dirs;       /* directory + trust: a snapshot per use */
    char *dir_password;            /* [pec] directory_password(_file) */
    atomic_ulong seq;
};

static inline const char *domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : "";
}

/* One event of the evidence log (RFC 6109 §2.3, docs/evidence.md), written
 * with designated initialisers; NULL fields are absent. */
struct role_ev {
    const char *type;          /* "accettazione", "busta-trasporto", … */
    const char *qid;           /* the queue id of the stage's message */
    const char *pec_id;        /* the PEC message's identifier (X-Riferimento-Message-ID) */
    const char *orig_msgid;    /* the user's original Message-ID ("<…>" or bare) */
    const char *message_id;    /* the Message-ID of the receipt or envelope made */
    const char *sender, *rcpts, *subject;
    const char *outcome;       /* the result: "ok", "inviata", a reason, a variant */
    const char *key;           /* with qid and type, what makes it unique: a recipient */
};

/* roles_common.c: the helpers the roles share (their comments are at the
 * definitions) */
/* Logs e; -1 with the reason in err (err may be NULL) when the evidence log
 * cannot take it: the stage then fails and runs again. */
int role_event(struct roles *r, const struct role_ev *e, char *err, size_t errlen);
void role_make_id(struct roles *r, char *buf, size_t size, time_t when);
void role_source_id(struct roles *r, const struct queue_env *env, unsigned n, char *buf,
                    size_t size);
void role_stage_id(struct roles *r, const struct queue_env *env, struct queue_outputs *out,
                   char *buf, size_t size);
void role_add_output(struct queue_outputs *out, const char *from, const char *const *to,
                     size_t nto, const char *stage, const pec_buf *msg);
void role_add_output_for(struct queue_outputs *out, const struct queue_env *src,
                         const char *from, const char *const *to, size_t nto, const char *stage,
                         const void *data, size_t len);
int role_build(struct roles *r, pec_build_args *a, pec_buf *m, char *err, size_t errlen);
/* n messages a stage makes at once, signed in one request (pec_build_n). */
int role_build_n(struct roles *r, pec_build_args *a, size_t n, pec_buf *m, char *err,
                 size_t errlen);
int role_store_copies(struct roles *r, const struct queue_env *src, bool recovered,
                      const char *sender, const char *const *to, size_t nto, const void *data,
                      size_t len, struct queue_outputs *out, char *err, size_t errlen);
int role_send_to(struct roles *r, const struct queue_env *src, bool recovered,
                 struct queue_outputs *out, const char *to, const pec_buf *m, char *err,
                 size_t errlen);
int role_callout_event(struct roles *r, const struct queue_env *env, const char *pec_id,
                       const char *omid, char *err, size_t errlen);
/* Whether addr (at one of our domains) has a mailbox: USERS_YES for a user,
 * postmaster and the PEC service address, else users_db_lookup's answer. */
enum users_found role_mailbox(struct roles *r, const char *addr);
/* The running stage's instant becomes t (its messages and events): the
 * stage's start (roles_process), or the arrival for the anomaly envelope
 * (§3.2.2); cleared when the stage ends. */
void role_set_instant(struct queue_outputs *out, time_t t);
void role_clear_instant(void);
/* The recipients src->rcpts[idx[0..n)] have no mailbox: an output that fails
 * them ("550 5.1.1"), so the queue sends the sender a non-delivery report
 * (RFC 3464) instead of the message being dropped without notice. */
void role_refuse_unknown(const struct queue_env *src, const size_t *idx, size_t n,
                         const char *data, size_t len, struct queue_outputs *out);

/* roles_access.c: stage "submission" */
int role_access_point(struct roles *r, const struct queue_env *env, const char *data,
                      size_t len, bool recovered, struct queue_outputs *out, char *err,
                      size_t errlen);
/* roles_incoming.c: stage "incoming" */
int role_incoming_point(struct roles *r, const struct queue_env *env_in, const char *data,
                        size_t len, bool recovered, struct queue_outputs *out, char *err,
                        size_t errlen);
/* roles_incoming.c: stage "delivery" (recipients retried on their own) */
int role_delivery_retry(struct roles *r, const struct queue_env *env, const char *data,
                        size_t len, bool recovered, struct queue_outputs *out, char *err,
                        size_t errlen);

#endif
