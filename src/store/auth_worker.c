/*
 * auth_worker.c - SMTP AUTH checks off the event loop.  A password check may
 * take long: a yescrypt hash costs tens of milliseconds, and Dovecot's auth
 * server delays every failure (auth_failure_delay, 2 s by default) or may not
 * answer at all.  The event loop hands each check to a few threads through a
 * GAsyncQueue; results come back through an eventfd and the callback runs on
 * the event loop, like the group commit of the queue (commit.c).
 *
 * Requests still pending when the worker is freed are dropped without a
 * callback (the event loop has stopped by then).
 */
#include "store.h"
#include "lib/lib.h"

#include <event2/event.h>
#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define AUTH_THREADS_MAX 16

struct auth_req {
    char *user, *pass;
    char ip[64];
    void (*done)(void *, int, const char *);
    void *cbarg;
    int result;
    char canonical[256];      /* the account's canonical name (users_db_verify) */
};

struct auth_worker {
    struct users_db *db;
    GAsyncQueue *in, *out;
    int efd;
    struct event *ev;
    GThread *threads[AUTH_THREADS_MAX];
    unsigned nthreads;
};

static struct auth_req stop_req;

static void req_free(struct auth_req *r)
{
    if (r->pass != NULL) {
        explicit_bzero(r->pass, strlen(r->pass));
        free(r->pass);
    }
    free(r->user);
    free(r);
}

static gpointer thread_main(gpointer arg)
{
    struct auth_worker *w = arg;
    for (;;) {
        struct auth_req *r = g_async_queue_pop(w->in);
        if (r == &stop_req)
            return NULL;
        r->result = users_db_verify(w->db, r->user, r->pass, r->ip[0] ? r->ip : NULL,
                                    r->canonical, sizeof r->canonical);
        explicit_bzero(r->pass, strlen(r->pass));
        g_async_queue_push(w->out, r);
        uint64_t one = 1;
        if (write(w->efd, &one, sizeof one) != sizeof one)
            log_err("auth worker: cannot wake the event loop");
    }
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct auth_worker *w = arg;
    (void)what;
    uint64_t n;
    if (read(fd, &n, sizeof n) != sizeof n)
        return;
    struct auth_req *r;
    while ((r = g_async_queue_try_pop(w->out)) != NULL) {
        r->done(r->cbarg, r->result, r->canonical[0] ? r->canonical : NULL);
        req_free(r);
    }
}

struct auth_worker *auth_worker_new(struct event_base *base, struct users_db *db,
                                    unsigned nthreads)
{
    struct auth_worker *w = xcalloc(1, sizeof *w);
    w->db = db;
    w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->efd == -1) {
        free(w);
        return NULL;
    }
    w->in = g_async_queue_new();
    w->out = g_async_queue_new();
    w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, on_done, w);
    event_add(w->ev, NULL);
    w->nthreads = nthreads < 1 ? 1 : nthreads > AUTH_THREADS_MAX ? AUTH_THREADS_MAX : nthreads;
    for (unsigned i = 0; i < w->nthreads; i++)
        w->threads[i] = g_thread_new("auth", thread_main, w);
    return w;
}

void auth_worker_submit(struct auth_worker *w, const char *user, const char *pass,
                        const char *client_ip,
                        void (*done)(void *cbarg, int result, const char *canonical),
                        void *cbarg)
{
    struct auth_req *r = xcalloc(1, sizeof *r);
    if (client_ip != NULL)
        str_copy(r->ip, client_ip, sizeof r->ip);
    r->user = xstrdup(user);
    r->pass = xstrdup(pass);
    r->done = done;
    r->cbarg = cbarg;
    g_async_queue_push(w->in, r);
}

void auth_worker_free(struct auth_worker *w)
{
    if (w == NULL)
        return;
    for (unsigned i = 0; i < w->nthreads; i++)
        g_async_queue_push(w->in, &stop_req);
    for (unsigned i = 0; i < w->nthreads; i++)
        g_thread_join(w->threads[i]);
    struct auth_req *r;
    while ((r = g_async_queue_try_pop(w->in)) != NULL)
        if (r != &stop_req)
            req_free(r);
    while ((r = g_async_queue_try_pop(w->out)) != NULL)
        req_free(r);
    g_async_queue_unref(w->in);
    g_async_queue_unref(w->out);
    event_free(w->ev);
    close(w->efd);
    free(w);
}
