/*
 * keys_signer.c - the signer process: the only process of pecd that holds
 * the provider's signing key and the TLS key (or the hardware module's
 * session).  It has no network socket and reads no mail: it loads the keys,
 * then answers on the socketpairs the keeper gave it, one thread per
 * socket, until pecd closes them.
 *
 * Requests (keys_int.h): the signer's facts (HELLO), a CMS signature over a
 * SHA-256 digest (the PEC messages, the evidence log's day seals, the
 * published directory), an RSA or ECDSA private-key operation for a TLS
 * handshake (the server's key, or the directory download's client key),
 * and reading the keys again (SIGHUP: pecd.conf, the signing key and
 * certificate, the TLS keys).  Every request is
 * checked (operation, lengths, padding, which key) before use; a bad one
 * gets an error answer, never a crash.  The TLS key being reloaded, the
 * previous one keeps answering for handshakes already under way.
 *
 * A hardware module that fails an operation may have lost its session
 * (module restarted, token removed): the signer then exits, and the keeper
 * starts another, which logs in again (docs/operator-guide.md).
 *
 * Interface: keys_signer_main (keys_int.h).
 */
#include "keys_int.h"
#include "lib/domains.h"
#include "lib/lib.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <glib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

struct signer {
    const struct config *cfg;
    struct keys_hsm *hsm;
    pthread_rwlock_t pec_lock;     /* s->pec, swapped by a reload while signatures wait */
    pec_signer *pec;
    bool pec_hardware, tls_hardware;
    pthread_mutex_t lock;          /* the TLS keys, swapped by a reload */
    EVP_PKEY *tls_key, *tls_prev, *dir_key;
    unsigned char tls_id[32], prev_id[32], dir_id[32];
    GHashTable *sni;               /* id (32 octets, GBytes) -> EVP_PKEY: the local domains'
                                    * own TLS keys (SNI), read again with pecd.conf on reload */
    char *tls_chain;
    size_t tls_chain_len;
};

struct server {
    struct signer *s;
    int fd;
    int nice;                      /* added to the thread's priority */
    pthread_t thread;
};

static int answer(int fd, uint32_t status, const void *data, size_t len)
{
    struct keys_ans_hdr h = {.status = status, .len = (uint32_t)len};
    return keys_send(fd, &h, sizeof h, data, len);
}

static int answer_err(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int answer_err(int fd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return answer(fd, 1, msg, strlen(msg));
}

static void module_failed(const char *what)
{
    /* a fresh process logs in again; pecd waits for it (keys_client.c) */
    log_err("signer: the hardware module failed %s: restarting the signer", what);
    _exit(4);
}

/* HELLO and RELOAD: the facts, then the TLS chain (PEM). */
static int answer_hello(int fd, struct signer *s)
{
    pthread_rwlock_rdlock(&s->pec_lock);
    struct keys_hello h = {.has_pec = s->pec != NULL};
    if (s->pec != NULL)
        str_copy(h.pec_email, s->pec->email, sizeof h.pec_email);
    pthread_rwlock_unlock(&s->pec_lock);
    pthread_mutex_lock(&s->lock);
    h.has_tls = s->tls_key != NULL;
    memcpy(h.tls_id, s->tls_id, sizeof h.tls_id);
    h.has_dir = s->dir_key != NULL;
    memcpy(h.dir_id, s->dir_id, sizeof h.dir_id);
    size_t n = s->tls_chain_len;
    unsigned char *buf = xmalloc(sizeof h + n);
    if (buf != NULL) {
        memcpy(buf, &h, sizeof h);
        if (n)
            memcpy(buf + sizeof h, s->tls_chain, n);
    }
    pthread_mutex_unlock(&s->lock);
    if (buf == NULL)
        return answer_err(fd, "out of memory");
    if (sizeof h + n + sizeof(struct keys_ans_hdr) > KEYS_MSG_MAX) {
        free(buf);
        return answer_err(fd, "the TLS certificate file is too large (over %d octets)",
                          KEYS_MSG_MAX / 2);
    }
    int r = answer(fd, 0, buf, sizeof h + n);
    free(buf);
    return r;
}

/* The keys of the local domains that have a certificate of their own, from
 * cfg's domains table; NULL with err when one does not load. */
static GHashTable *load_sni(const struct config *cfg, struct keys_hsm **hsm, char *err,
                            size_t errlen)
{
    GHashTable *t = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                          (GDestroyNotify)g_bytes_unref,
                                          (GDestroyNotify)EVP_PKEY_free);
    size_t n;
    const struct domain **all = domains_sorted(cfg->domains, &n);
    for (size_t i = 0; i < n; i++) {
        if (all[i]->tls_key == NULL)
            continue;
        EVP_PKEY *key = NULL;
        unsigned char id[32];
        if (keys_load_tls_domain(cfg, all[i], hsm, &key, err, errlen) == -1 ||
            keys_public_id(key, id) == -1) {
            if (key != NULL)
                snprintf(err, errlen, "cannot name the TLS key of %s", all[i]->name);
            EVP_PKEY_free(key);
            g_hash_table_destroy(t);
            g_free(all);
            return NULL;
        }
        g_hash_table_replace(t, g_bytes_new(id, sizeof id), key);
    }
    g_free(all);
    return t;
}

/* What a reload loads before anything is swapped. */
struct loaded {
    pec_signer *pec;
    EVP_PKEY *tls_key;
    unsigned char tls_id[32];
    char *chain;
    size_t chain_len;
    GHashTable *sni;
};

static void loaded_free(struct loaded *l)
{
    pec_signer_free(l->pec);
    EVP_PKEY_free(l->tls_key);
    free(l->chain);
    if (l->sni != NULL)
        g_hash_table_destroy(l->sni);
}

/* Every key of n, or -1 with err: a reload changes all of them or none. */
static int load_all(struct signer *s, const struct config *n, struct loaded *l, char *err,
                    size_t errlen)
{
    if (s->pec != NULL) {
        if (!n->pec) {
            snprintf(err, errlen, "[pec] enabled changed: that needs a restart");
            return -1;
        }
        if ((l->pec = keys_load_pec_signer(n, &s->hsm, err, errlen)) == NULL)
            return -1;
        /* the network process signs as this address; another one is another
         * provider identity, taken at a restart */
        if (strcmp(l->pec->email, s->pec->email) != 0) {
            snprintf(err, errlen, "[pec] signing_certificate %s is for %s, the one in force for "
                     "%s: a new address needs a restart", n->pec_signing_cert,
                     l->pec->email[0] ? l->pec->email : "no address", s->pec->email);
            return -1;
        }
    }
    if (s->tls_key != NULL) {
        if (n->tls_cert == NULL || n->tls_key == NULL) {
            snprintf(err, errlen, "no [tls] certificate and key are configured");
            return -1;
        }
        if (keys_load_tls(n, &s->hsm, &l->tls_key, &l->chain, &l->chain_len, err, errlen) == -1)
            return -1;
        if (keys_public_id(l->tls_key, l->tls_id) == -1) {
            snprintf(err, errlen, "cannot name the TLS key");
            return -1;
        }
        if ((l->sni = load_sni(n, &s->hsm, err, errlen)) == NULL)
            return -1;
    }
    return 0;
}

/* SIGHUP: pecd.conf read again, and with it the signing key and
 * certificate, the TLS key and certificate and the local domains' own (a
 * renewal, a domain added).  All of them load, or the ones in force stay and
 * the reload says why.  The previous TLS key keeps answering for handshakes
 * under way; a signature under way finishes with the key it began with. */
static keys_config_check_fn config_check;

void keys_set_config_check(keys_config_check_fn fn)
{
    config_check = fn;
}

int keys_config_checked(const struct config *cfg, char *err, size_t errlen)
{
    return config_check != NULL ? config_check(cfg, err, errlen) : 0;
}

static int reload_keys(int fd, struct signer *s)
{
    char err[1024];
    struct loaded l = {0};
    struct config *n = config_load(s->cfg->path, err, sizeof err);
    if (n == NULL || keys_config_checked(n, err, sizeof err) == -1 ||
        load_all(s, n, &l, err, sizeof err) == -1) {
        log_err("signer: keys not reloaded: %s", err);
        loaded_free(&l);
        config_free(n);
        return answer_err(fd, "%s", err);
    }
    if (l.pec != NULL) {
        pthread_rwlock_wrlock(&s->pec_lock);
        pec_signer *old = s->pec;
        s->pec = l.pec;
        s->pec_hardware = pkcs11_uri_is(n->pec_signing_key);
        pthread_rwlock_unlock(&s->pec_lock);
        pec_signer_free(old);
        l.pec = NULL;
        log_info("signer: signing key and certificate read again from %s", n->pec_signing_cert);
    }
    if (l.tls_key != NULL) {
        pthread_mutex_lock(&s->lock);
        if (memcmp(l.tls_id, s->tls_id, sizeof l.tls_id) != 0) {
            EVP_PKEY_free(s->tls_prev);
            s->tls_prev = s->tls_key;
            memcpy(s->prev_id, s->tls_id, sizeof s->prev_id);
            memcpy(s->tls_id, l.tls_id, sizeof s->tls_id);
            s->tls_key = l.tls_key;
            l.tls_key = NULL;
        }                          /* the same key: keep the loaded one */
        s->tls_hardware = pkcs11_uri_is(n->tls_key);
        free(s->tls_chain);
        s->tls_chain = l.chain;
        s->tls_chain_len = l.chain_len;
        l.chain = NULL;
        GHashTable *old = s->sni;
        s->sni = l.sni;
        l.sni = NULL;
        pthread_mutex_unlock(&s->lock);
        if (old != NULL)
            g_hash_table_destroy(old);   /* keys in use by an operation keep a reference */
        log_info("signer: TLS certificate and key read again from %s", n->tls_cert);
    }
    loaded_free(&l);
    config_free(n);
    return answer_hello(fd, s);
}

/* The TLS key the request names, a reference of the caller's own. */
static EVP_PKEY *tls_key_for(struct signer *s, const unsigned char id[32])
{
    EVP_PKEY *k = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->tls_key != NULL && memcmp(id, s->tls_id, 32) == 0)
        k = s->tls_key;
    else if (s->tls_prev != NULL && memcmp(id, s->prev_id, 32) == 0)
        k = s->tls_prev;
    else if (s->dir_key != NULL && memcmp(id, s->dir_id, 32) == 0)
        k = s->dir_key;
    else if (s->sni != NULL) {
        GBytes *b = g_bytes_new_static(id, 32);
        k = g_hash_table_lookup(s->sni, b);
        g_bytes_unref(b);
    }
    if (k != NULL)
        EVP_PKEY_up_ref(k);
    pthread_mutex_unlock(&s->lock);
    return k;
}

static int tls_op(int fd, struct signer *s, const struct keys_req *rq)
{
    EVP_PKEY *key = tls_key_for(s, rq->id);
    if (key == NULL)
        return answer_err(fd, "not the TLS key this signer holds (the key file changed: send "
                              "pecd SIGHUP)");
    bool rsa = rq->op == KOP_TLS_RSA;
    if ((rsa && EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) ||
        (!rsa && EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) ||
        (rsa && rq->padding != RSA_PKCS1_PADDING && rq->padding != RSA_NO_PADDING) ||
        (rsa && rq->len != (uint32_t)EVP_PKEY_get_size(key) && rq->padding == RSA_NO_PADDING) ||
        (!rsa && (rq->len == 0 || rq->len > KEYS_DIGEST_MAX))) {
        EVP_PKEY_free(key);
        return answer_err(fd, "a TLS key operation the key does not allow");
    }
    unsigned char out[KEYS_RSA_MAX];
    size_t outlen = sizeof out;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
    int ok = ctx != NULL && EVP_PKEY_sign_init(ctx) == 1 &&
             (!rsa || EVP_PKEY_CTX_set_rsa_padding(ctx, (int)rq->padding) == 1) &&
             EVP_PKEY_sign(ctx, out, &outlen, rq->data, rq->len) == 1;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(key);
    if (!ok) {
        char why[256];
        ERR_error_string_n(ERR_get_error(), why, sizeof why);
        ERR_clear_error();
        if (s->tls_hardware)
            module_failed("a TLS signature");
        return answer_err(fd, "TLS key operation failed: %s", why);
    }
    return answer(fd, 0, out, outlen);
}

/* One signature (a digest of 32 octets: the answer is its DER) or several
 * (the digests one after the other, up to PEC_SIGN_N_MAX: the answer is
 * each DER after its length, u32), all with the key in force when the
 * request came. */
static int pec_sign(int fd, struct signer *s, const struct keys_req *rq)
{
    size_t n = rq->len / 32;
    if (rq->len % 32 != 0 || n == 0 || n > PEC_SIGN_N_MAX)
        return answer_err(fd, "a SHA-256 digest is 32 octets (at most %d at once)",
                          PEC_SIGN_N_MAX);
    pec_buf der[PEC_SIGN_N_MAX];
    char err[256];
    size_t done = 0;
    int r = 0;
    pthread_rwlock_rdlock(&s->pec_lock);
    if (s->pec == NULL) {
        pthread_rwlock_unlock(&s->pec_lock);
        return answer_err(fd, "no [pec] signing key in this signer");
    }
    for (; done < n && r == 0; done++)
        r = pec_signer_sign_digest(s->pec, rq->data + 32 * done, 32, &der[done], err,
                                   sizeof err);
    bool hardware = s->pec_hardware;
    pthread_rwlock_unlock(&s->pec_lock);
    if (r == -1) {
        done--;                      /* the failed one holds nothing */
        for (size_t i = 0; i < done; i++)
            pec_buf_free(&der[i]);
        if (hardware)
            module_failed("a PEC signature");
        return answer_err(fd, "%s", err);
    }
    if (n == 1) {
        r = answer(fd, 0, der[0].data, der[0].len);
        pec_buf_free(&der[0]);
        return r;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += sizeof(uint32_t) + der[i].len;
    unsigned char *buf = NULL;
    if (total + sizeof(struct keys_ans_hdr) <= KEYS_MSG_MAX && (buf = malloc(total)) != NULL) {
        size_t off = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t l = (uint32_t)der[i].len;
            memcpy(buf + off, &l, sizeof l);
            memcpy(buf + off + sizeof l, der[i].data, der[i].len);
            off += sizeof l + der[i].len;
        }
    }
    for (size_t i = 0; i < n; i++)
        pec_buf_free(&der[i]);
    if (buf == NULL)           /* the client asks again, one at a time */
        return answer_err(fd, "%zu signatures do not fit one answer", n);
    r = answer(fd, 0, buf, total);
    free(buf);
    return r;
}

static void *serve(void *arg)
{
    struct server *sv = arg;
    if (sv->nice > 0) {
        id_t tid = (id_t)syscall(SYS_gettid);
        errno = 0;
        int now = getpriority(PRIO_PROCESS, tid);
        int nice = (errno == 0 ? now : 0) + sv->nice;
        setpriority(PRIO_PROCESS, tid, nice > 19 ? 19 : nice);
    }
    struct keys_req *rq = malloc(KEYS_MSG_MAX);
    const size_t head = offsetof(struct keys_req, data);
    while (rq != NULL) {
        ssize_t n = keys_recv(sv->fd, rq, KEYS_MSG_MAX, -1);
        if (n <= 0)
            break;              /* pecd closed it (or went away) */
        int r;
        if ((size_t)n < head || rq->len > KEYS_RSA_MAX || (size_t)n != head + rq->len)
            r = answer_err(sv->fd, "malformed request");
        else if (rq->op == KOP_HELLO)
            r = answer_hello(sv->fd, sv->s);
        else if (rq->op == KOP_PEC_SIGN)
            r = pec_sign(sv->fd, sv->s, rq);
        else if (rq->op == KOP_TLS_RSA || rq->op == KOP_TLS_ECDSA)
            r = tls_op(sv->fd, sv->s, rq);
        else if (rq->op == KOP_RELOAD)
            r = reload_keys(sv->fd, sv->s);
        else
            r = answer_err(sv->fd, "unknown operation %u", (unsigned)rq->op);
        if (r == -1)
            break;
    }
    free(rq);
    close(sv->fd);
    return NULL;
}

static void status_write(int fd, const char *text)
{
    ssize_t w = write(fd, text, strlen(text));
    (void)w;
    close(fd);
}

int keys_signer_main(const struct config *cfg, const int *fds, size_t n, int status)
{
    struct signer s = {.cfg = cfg};
    pthread_mutex_init(&s.lock, NULL);
    pthread_rwlock_init(&s.pec_lock, NULL);
    char err[1024];
    if (cfg->pec) {
        s.pec = keys_load_pec_signer(cfg, &s.hsm, err, sizeof err);
        if (s.pec == NULL) {
            status_write(status, err);
            return 3;
        }
        s.pec_hardware = pkcs11_uri_is(cfg->pec_signing_key);
    }
    if (cfg->tls_cert != NULL && cfg->tls_key != NULL) {
        if (keys_load_tls(cfg, &s.hsm, &s.tls_key, &s.tls_chain, &s.tls_chain_len, err,
                          sizeof err) == -1 ||
            keys_public_id(s.tls_key, s.tls_id) == -1) {
            status_write(status, s.tls_key ? "cannot name the TLS key" : err);
            return 3;
        }
        s.tls_hardware = pkcs11_uri_is(cfg->tls_key);
        if ((s.sni = load_sni(cfg, &s.hsm, err, sizeof err)) == NULL) {
            status_write(status, err);
            return 3;
        }
    }
    if (cfg->pec && cfg->pec_dir_client_cert != NULL && cfg->pec_dir_client_key != NULL) {
        if (keys_load_dir_client(cfg, &s.hsm, &s.dir_key, err, sizeof err) == -1 ||
            keys_public_id(s.dir_key, s.dir_id) == -1) {
            status_write(status, s.dir_key ? "cannot name the directory client key" : err);
            return 3;
        }
    }
    status_write(status, "OK");
    struct server *sv = xcalloc(n, sizeof *sv);
    if (sv == NULL)
        return 1;
    for (size_t i = 0; i < n; i++) {
        sv[i] = (struct server){.s = &s, .fd = fds[i], .nice = i == 0 ? 0 : (int)cfg->worker_nice};
        if (i > 0 && pthread_create(&sv[i].thread, NULL, serve, &sv[i]) != 0) {
            log_err("signer: cannot start a thread");
            return 1;
        }
    }
    serve(&sv[0]);              /* the TLS socket, on this thread */
    for (size_t i = 1; i < n; i++)
        pthread_join(sv[i].thread, NULL);
    free(sv);
    pec_signer_free(s.pec);
    EVP_PKEY_free(s.tls_key);
    EVP_PKEY_free(s.tls_prev);
    EVP_PKEY_free(s.dir_key);
    if (s.sni != NULL)
        g_hash_table_destroy(s.sni);
    free(s.tls_chain);
    keys_hsm_close(s.hsm);
    return 0;
}
