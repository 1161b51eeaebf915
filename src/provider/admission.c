/*
 * admission.c - what the provider takes in over SMTP (admission.h): relay,
 * sender ownership, sending limits, local recipients, the PEC content rules
 * after the data, and the stage an accepted message goes to.
 *
 * Sending limits (abuse control): messages and recipients per hour on the
 * submission listeners, not [mx] (other providers' servers send everything
 * they have there), per authenticated user (their domain's line in
 * local_domains_file, else [limits]) and per client address.  Counted when
 * a message's data begins; refused with 451 4.7.1, so a legitimate burst is
 * only delayed.
 */
#include "admission.h"
#include "lib/domains.h"
#include "lib/lib.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LIMIT_KEYS_MAX 100000          /* users and client addresses tracked */
#define LIMIT_WINDOW_MS (3600 * 1000)   /* the limits are per hour */

struct admission {
    struct smtp_throttle *msgs, *rcpts;
};

struct admission *admission_new(void)
{
    struct admission *a = xcalloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->msgs = smtp_throttle_new(LIMIT_KEYS_MAX, LIMIT_WINDOW_MS);
    a->rcpts = smtp_throttle_new(LIMIT_KEYS_MAX, LIMIT_WINDOW_MS);
    if (a->msgs == NULL || a->rcpts == NULL) {
        admission_free(a);
        return NULL;
    }
    return a;
}

void admission_free(struct admission *a)
{
    if (a == NULL)
        return;
    smtp_throttle_free(a->msgs);
    smtp_throttle_free(a->rcpts);
    free(a);
}

/* ---- sending limits ----------------------------------------------------------- */

static bool limited(const struct smtp_txn *txn)
{
    return txn->listener != NULL && strcmp(txn->listener, "mx") != 0;
}

static void limit_keys(const struct smtp_txn *txn, char *user, size_t ulen, char *client,
                       size_t clen)
{
    char k[SMTP_CLIENT_KEY_MAX];
    smtp_client_key(txn->client_ip ? txn->client_ip : "", k, sizeof k);
    snprintf(client, clen, "c:%s", k);
    user[0] = '\0';
    if (txn->auth_user != NULL) {
        char canon[SMTP_PATH_MAX + 1];
        users_normalise(txn->auth_user, canon, sizeof canon);
        snprintf(user, ulen, "u:%s", canon);
    }
}

static int64_t now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

/* 0, or -1 with the refusal: the next message (more_msgs 1) or more_rcpts
 * recipients would pass a limit. */
static int check_limits(struct admission *a, const struct config *cfg,
                        const struct smtp_txn *txn, unsigned more_msgs, unsigned more_rcpts,
                        char *reply, size_t replylen)
{
    if (!limited(txn))
        return 0;
    char user[SMTP_PATH_MAX + 8], client[SMTP_CLIENT_KEY_MAX + 8];
    limit_keys(txn, user, sizeof user, client, sizeof client);
    int64_t t = now_ms();
    uint64_t user_msgs = cfg->messages_per_hour, user_rcpts = cfg->recipients_per_hour;
    const char *at = txn->auth_user ? strrchr(txn->auth_user, '@') : NULL;
    const struct domain *dom = at ? domains_get(cfg->domains, at + 1) : NULL;
    if (dom != NULL && dom->messages_per_hour != DOMAIN_INHERIT)
        user_msgs = dom->messages_per_hour;
    if (dom != NULL && dom->recipients_per_hour != DOMAIN_INHERIT)
        user_rcpts = dom->recipients_per_hour;
    const struct {
        struct smtp_throttle *tab;
        const char *key;
        uint64_t max;
        unsigned more;
        const char *what, *who;
    } c[] = {
        {a->msgs, user, user_msgs, more_msgs, "messages", "user"},
        {a->rcpts, user, user_rcpts, more_rcpts, "recipients", "user"},
        {a->msgs, client, cfg->client_messages_per_hour, more_msgs, "messages", "address"},
        {a->rcpts, client, cfg->client_recipients_per_hour, more_rcpts, "recipients",
         "address"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        if (c[i].max == 0 || c[i].more == 0 || c[i].key[0] == '\0')
            continue;
        if ((uint64_t)smtp_throttle_count(c[i].tab, c[i].key, t) + c[i].more > c[i].max) {
            snprintf(reply, replylen, "451 4.7.1 Sending limit of this %s reached (%llu %s an "
                                      "hour), try again later",
                     c[i].who, (unsigned long long)c[i].max, c[i].what);
            log_warn("sending limit: %s %s: %llu %s an hour reached", c[i].who, c[i].key + 2,
                     (unsigned long long)c[i].max, c[i].what);
            return -1;
        }
    }
    return 0;
}

void admission_count(struct admission *a, const struct smtp_txn *txn)
{
    if (!limited(txn))
        return;
    char user[SMTP_PATH_MAX + 8], client[SMTP_CLIENT_KEY_MAX + 8];
    limit_keys(txn, user, sizeof user, client, sizeof client);
    int64_t t = now_ms();
    const char *keys[2] = {user, client};
    for (size_t i = 0; i < 2; i++) {
        if (keys[i][0] == '\0')
            continue;
        smtp_throttle_add(a->msgs, keys[i], 1, t);
        smtp_throttle_add(a->rcpts, keys[i], (unsigned)txn->nrcpts, t);
    }
}

/* ---- MAIL and RCPT -------------------------------------------------------------- */

/* A PEC user may send only as their own address, or as one [users] senders
 * gives their login (issue 6; §3.1.1 then checks From against it). */
int admission_mail(struct admission *a, const struct config *cfg, struct sender_map *senders,
                   const struct smtp_txn *txn, char *reply, size_t replylen)
{
    if (check_limits(a, cfg, txn, 1, 0, reply, replylen) == -1)
        return -1;
    if (cfg->pec && txn->auth_user != NULL && strcasecmp(txn->sender, txn->auth_user) != 0 &&
        !sender_map_allows(senders, txn->sender, txn->auth_user)) {
        snprintf(reply, replylen, "553 5.7.1 <%s>: Sender address not owned by user %s",
                 txn->sender, txn->auth_user);
        return -1;
    }
    return 0;
}

int admission_rcpt(struct admission *a, const struct config *cfg, struct users_db *users,
                   const struct smtp_txn *txn, const struct smtp_path *path, char *addr_out,
                   size_t addrlen, char *reply, size_t replylen)
{
    if (check_limits(a, cfg, txn, 0, (unsigned)txn->nrcpts + 1, reply, replylen) == -1)
        return -1;
    /* RFC 5321 §4.5.1: <postmaster> (any case, no domain) and postmaster at
     * each of our domains always reach the postmaster. */
    if (path->domain == NULL ||
        (strcasecmp(path->local, "postmaster") == 0 &&
         config_is_local_domain(cfg, path->domain))) {
        str_copy(addr_out, cfg->postmaster, addrlen);
        return 0;
    }
    if (!config_is_local_domain(cfg, path->domain)) {
        /* only authenticated users and relay_networks may relay */
        const struct config_listener *l = config_listener(cfg, txn->listener);
        if (txn->auth_user == NULL && (l == NULL || !config_relay_allowed(l, txn->client_ip))) {
            snprintf(reply, replylen, "550 5.7.1 <%s>: Relay access denied", path->addr);
            return -1;
        }
        str_copy(addr_out, path->addr, addrlen);
        return 0;
    }
    /* a PEC provider takes every address of its domains: an unknown one
     * gets a non-delivery receipt from the delivery point (§3.3.3).  Users
     * from Dovecot are not asked here (that would block the event loop):
     * delivery asks the userdb, or the LMTP server refuses. */
    bool stale = false;
    if (!cfg->pec && !users_db_is_dovecot(users) &&
        !users_db_exists_nb(users, path->addr, &stale)) {
        if (stale)   /* the users file changed and is being read again */
            snprintf(reply, replylen, "451 4.3.0 <%s>: users table being reloaded, try again "
                                      "in a moment", path->addr);
        else
            snprintf(reply, replylen, "550 5.1.1 <%s>: Recipient address rejected: no such "
                                      "user", path->addr);
        return -1;
    }
    users_normalise(path->addr, addr_out, addrlen);
    return 0;
}

/* ---- after the data -------------------------------------------------------------- */

/* Whether a local address has a mailbox (the postmaster and the PEC service
 * address always have one); with Dovecot's users the delivery decides. */
static bool has_mailbox(const struct config *cfg, struct users_db *users, const char *addr)
{
    if (strcasecmp(addr, cfg->postmaster) == 0 ||
        strcasecmp(addr, cfg->pec_service_address) == 0 || users_db_is_dovecot(users))
        return true;
    /* on the event loop: a users file being reloaded counts as yes (the
     * delivery thread decides with the new copy) */
    bool stale;
    return users_db_exists_nb(users, addr, &stale) || stale;
}

/* What the content decides, after the data, for mail from outside (not
 * authenticated) to a PEC provider (RFC 6109 §2.2.2):
 *  - a PEC message (X-Trasporto or X-Ricevuta) is taken: an unknown recipient
 *    of an envelope gets the signed errore-consegna no-dest of §3.3.3 from
 *    the delivery point.  With [pec] cleartext_pec = refuse, one that another
 *    provider sent without TLS, against §5.3, is refused with 5.7.10 (RFC
 *    5248 "Encryption needed"); by default it is taken in: its signature
 *    still protects it, the incoming point checks it as any other, and the
 *    evidence log records the missing TLS (roles.c);
 *  - ordinary mail is refused when [pec] accept_ordinary_mail = no (case 4),
 *    and when none of its recipients has a mailbox here (550 5.1.1: the
 *    sending server tells its user); when some have one, they get it in an
 *    anomaly envelope and the sender a non-delivery report for the others.
 *    Ordinary mail over cleartext is what §5.3 asks the incoming point to
 *    accept. */
int admission_content(const struct config *cfg, struct users_db *users, bool signer_up,
                      const struct smtp_txn *txn, const char *head, size_t len, char *reply,
                      size_t replylen)
{
    /* every message a PEC provider takes in is signed for (a receipt, an
     * envelope): while no signer answers, nothing is acknowledged */
    if (cfg->pec && !signer_up) {
        snprintf(reply, replylen, "451 4.3.0 Signing service unavailable, try again later");
        return -1;
    }
    if (!cfg->pec || txn->auth_user != NULL)
        return 0;
    char v[64];
    bool pec = mail_header_value(head, len, "X-Trasporto", v, sizeof v) ||
               mail_header_value(head, len, "X-Ricevuta", v, sizeof v);
    if (pec && txn->tls_version == NULL && cfg->pec_cleartext_refuse) {
        snprintf(reply, replylen, "550 5.7.10 Certified mail (PEC) between providers needs "
                                  "TLS (RFC 6109 section 5.3): use STARTTLS");
        return -1;
    }
    if (pec)
        return 0;
    if (!cfg->pec_accept_ordinary) {
        snprintf(reply, replylen, "550 5.7.1 Only certified mail (PEC) is accepted for these "
                                  "mailboxes");
        return -1;
    }
    const char *unknown = NULL;
    for (size_t i = 0; i < txn->nrcpts; i++) {
        const char *a = txn->rcpts[i].addr, *at = strrchr(a, '@');
        if (at == NULL || !config_is_local_domain(cfg, at + 1) || has_mailbox(cfg, users, a))
            return 0;
        unknown = a;
    }
    if (unknown == NULL)
        return 0;
    snprintf(reply, replylen, "550 5.1.1 <%s>: Recipient address rejected: no such mailbox here",
             unknown);
    return -1;
}

/* ---- the stage ----------------------------------------------------------------- */

enum pec_stage admission_stage(const struct config *cfg, const struct smtp_txn *txn)
{
    if (!cfg->pec)
        return PEC_STAGE_NONE;
    bool all_local = true;
    for (size_t i = 0; i < txn->nrcpts; i++) {
        const char *at = strrchr(txn->rcpts[i].addr, '@');
        all_local = all_local && at && config_is_local_domain(cfg, at + 1);
    }
    if (txn->auth_user != NULL && strcmp(txn->listener, "mx") != 0)
        return PEC_STAGE_SUBMISSION;
    if (txn->auth_user == NULL && all_local)
        return PEC_STAGE_INCOMING;
    return PEC_STAGE_NONE;
}
