/*
 * server_data.c - the message of an SMTP session: DATA (RFC 5321 §4.1.1.4)
 * and BDAT (RFC 3030), the spool file and our Received: header, the
 * streaming of the text into it, then at its end the msg_check hook, the
 * msg_filter callouts and the commit, each answered on the session.
 */
#include "server_int.h"
#include "lib/lib.h"
#include "lib/metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DATA_CHUNK 65536

/* Writes our Received: header (RFC 5321 §4.4; RFC 3848 protocol names). */
static int write_received(struct session *s)
{
    char date[64], buf[1024];
    rfc5322_date(date, sizeof date, time(NULL));
    session_facts(s);
    int n = snprintf(buf, sizeof buf, "Received: from %s ([%s])\r\n\tby %s (pecmail) with %s id %s",
                     s->helo, s->ip, s->srv->cfg->hostname, s->proto, s->qid);
    if (s->tls)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n\t(using %s with cipher %s)",
                      s->tls_version, s->tls_cipher);
    if (s->txn.nrcpts == 1)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n\tfor <%s>", s->txn.rcpts[0].orig);
    n += snprintf(buf + n, sizeof buf - (size_t)n, ";\r\n\t%s\r\n", date);
    if (n <= 0 || (size_t)n >= sizeof buf)
        return -1;
    return s->srv->hooks.msg_write(s->msg, buf, (size_t)n);
}

/* Opens the spool file for DATA or the first BDAT chunk. */
static bool msg_begin(struct session *s, bool raw)
{
    session_facts(s);
    s->msg = s->srv->hooks.msg_open(s->srv->hooks.arg, &s->txn, s->qid, sizeof s->qid);
    if (s->msg == NULL || write_received(s) == -1) {
        if (s->msg) {
            s->srv->hooks.msg_abort(s->msg);
            s->msg = NULL;
        }
        return false;
    }
    smtp_data_init(&s->data, raw, s->srv->cfg->max_message_size, s->srv->cfg->max_line_length);
    if (s->outbuf == NULL)
        s->outbuf = xmalloc(DATA_CHUNK + 1);   /* + a held-back CR */
    return true;
}

/* DATA and BDAT chunks: timeout_data without a read (and for a reply not
 * read), and the deadline that asks for min_data_rate on average. */
static void data_timeouts(struct session *s)
{
    struct timeval tv = {.tv_sec = (time_t)s->srv->cfg->timeout_data};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    sess_deadline(s, DL_DATA);
}

void sess_cmd_data(struct session *s)
{
    if (!msg_begin(s, false)) {
        sess_reply_nocount(s, "%s", "451 4.3.0 Queue file write error, try again later");
        sess_txn_reset(s);
        return;
    }
    s->data_failed = false;
    s->state = ST_DATA;
    data_timeouts(s);
    sess_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

void sess_cmd_bdat(struct session *s, uint64_t n, bool last)
{
    s->bdat_left = n;
    s->bdat_last = last;
    if (!s->in_mail || s->txn.nrcpts == 0) {
        /* the chunk must still be read to stay in step with the client */
        s->data_failed = true;
        sess_reply(s, "503 5.5.1 Need RCPT command first");
        if (s->state == ST_CLOSING)
            return;
        s->state = ST_BDAT;
        data_timeouts(s);
        return;
    }
    if (!s->bdat_used) {
        s->bdat_used = true;
        s->data_failed = false;
        if (!msg_begin(s, true)) {
            s->data_failed = true;
            sess_reply_nocount(s, "%s", "451 4.3.0 Queue file write error, try again later");
        }
    }
    if (s->state == ST_CLOSING)
        return;
    s->state = ST_BDAT;
    data_timeouts(s);
}

/* Counts a refused message by the enhanced status code of its reply
 * ("550 5.7.1 ..." -> 5.7.1; RFC 3463), a bounded set of our own replies. */
static void count_refused(struct session *s, const char *reply)
{
    char code[16] = "none";
    const char *p = strchr(reply, ' ');
    if (p != NULL) {
        size_t n = strspn(p + 1, "0123456789.");
        if (n > 0 && n < sizeof code) {
            memcpy(code, p + 1, n);
            code[n] = '\0';
        }
    }
    metric_inc(&metric_messages_refused, s->lst->name, code);
}

static void commit_done(void *arg, int result)
{
    struct session *s = arg;
    s->msg = NULL;
    if (s->dead) {
        session_free(s);
        return;
    }
    if (result == 0) {
        log_tagged(LOG_LVL_INFO, &(struct log_fields){.qid = s->qid, .event = "received", .result = "accepted"},
                   "%s: accepted from=<%s> nrcpt=%zu size=%llu client=%s proto=%s%s%s", s->qid,
                 s->txn.sender, s->txn.nrcpts, (unsigned long long)s->data.size, s->ip,
                 s->proto, s->authed ? " user=" : "", s->authed ? s->auth_user : "");
        metric_inc(&metric_messages_accepted, s->lst->name, NULL);
        sess_reply(s, "250 2.0.0 Ok: queued as %s", s->qid);
    } else {
        sess_reply_nocount(s, "%s", "451 4.3.0 Queue file write error, try again later");
    }
    sess_txn_reset(s);
    sess_resume(s);
}

/* The callouts' verdict: commit, or answer and drop the message. */
static void filter_done(void *arg, enum smtp_filter_verdict verdict, const char *text)
{
    struct session *s = arg;
    if (s->dead) {
        session_free(s);    /* aborts the message: the client never got a 250 */
        return;
    }
    if (verdict == SMTP_FILTER_ACCEPT) {
        s->srv->hooks.msg_commit(s->msg, commit_done, s);
        return;
    }
    log_tagged(LOG_LVL_INFO, &(struct log_fields){.qid = s->qid, .event = "received",
               .result = verdict == SMTP_FILTER_DISCARD ? "discarded" : "refused"},
               "%s: %s from=<%s> client=%s: %s", s->qid,
             verdict == SMTP_FILTER_DISCARD ? "discarded" : "refused", s->txn.sender, s->ip,
             text);
    if (verdict != SMTP_FILTER_DISCARD)
        count_refused(s, text);
    if (verdict == SMTP_FILTER_DISCARD)
        sess_reply(s, "%s", text);
    else
        sess_reply_nocount(s, "%s", text);
    sess_txn_reset(s);
    sess_resume(s);
}

/* Keeps the start of the message for the msg_check hook; always true. */
static bool keep_head(struct session *s, const char *p, size_t n)
{
    if (s->head == NULL)
        s->head = xmalloc(SMTP_HEAD_MAX);
    size_t room = SMTP_HEAD_MAX - s->headlen;
    size_t take = n < room ? n : room;
    memcpy(s->head + s->headlen, p, take);
    s->headlen += take;
    return true;
}

/* The end of DATA or of the last BDAT chunk: refuse or make durable. */
static void msg_finish(struct session *s)
{
    const char *verdict = smtp_data_verdict(&s->data);
    char check[512];
    size_t headlen = s->headlen;
    s->headlen = 0;
    if (verdict == NULL && !s->data_failed && s->srv->hooks.msg_check != NULL &&
        s->srv->hooks.msg_check(s->srv->hooks.arg, &s->txn, s->head ? s->head : "", headlen,
                                check, sizeof check) != 0)
        verdict = check;
    if (s->data_failed) {
        sess_txn_reset(s);
        s->state = ST_CMD;
        sess_command_timeouts(s);
        return;
    }
    if (verdict != NULL) {
        log_tagged(LOG_LVL_INFO, &(struct log_fields){.qid = s->qid, .event = "received", .result = "refused"},
                   "%s: refused from=<%s> client=%s: %s", s->qid, s->txn.sender, s->ip,
                 strlen(verdict) > 10 ? verdict + 10 : verdict);
        count_refused(s, verdict);
        sess_reply(s, "%s", verdict);
        sess_txn_reset(s);
        if (s->state != ST_CLOSING) {
            s->state = ST_CMD;
            sess_command_timeouts(s);
        }
        return;
    }
    s->state = ST_COMMIT;
    sess_deadline(s, DL_NONE);
    bufferevent_disable(s->bev, EV_READ);
    if (s->srv->hooks.msg_filter != NULL) {
        session_facts(s);
        s->srv->hooks.msg_filter(s->msg, &s->txn, filter_done, s);
        return;
    }
    s->srv->hooks.msg_commit(s->msg, commit_done, s);
}

/* Feeds DATA or BDAT octets from the input buffer; true when more may follow. */
bool sess_feed_data(struct session *s, struct evbuffer *in)
{
    while (evbuffer_get_length(in) > 0) {
        size_t avail = evbuffer_get_length(in);
        size_t take = avail < DATA_CHUNK ? avail : DATA_CHUNK;
        if (s->state == ST_BDAT && take > s->bdat_left)
            take = (size_t)s->bdat_left;
        if (take == 0)
            break;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)take);
        size_t used = take, outlen = 0;
        if (!s->data_failed)
            used = smtp_data_feed(&s->data, p, take, s->outbuf, &outlen);
        else if (s->state == ST_DATA) {
            /* keep scanning for the end marker, output discarded */
            used = smtp_data_feed(&s->data, p, take, s->outbuf, &outlen);
            outlen = 0;
        }
        if (outlen > 0 && s->msg != NULL && !s->data_failed &&
            (s->srv->hooks.msg_check == NULL || keep_head(s, s->outbuf, outlen)) &&
            s->srv->hooks.msg_write(s->msg, s->outbuf, outlen) == -1) {
            log_err("%s: spool write failed: %s", s->qid, strerror(errno));
            s->data_failed = true;
        }
        evbuffer_drain(in, used);
        s->dl_octets += used;
        if (s->state == ST_BDAT)
            s->bdat_left -= used;
        if (s->state == ST_DATA && smtp_data_done(&s->data)) {
            if (s->data_failed && s->msg != NULL)
                sess_reply_nocount(s, "%s", "451 4.3.0 Queue file write error, try again later");
            msg_finish(s);
            return true;
        }
    }
    if (s->state == ST_BDAT && s->bdat_left == 0) {
        if (s->data_failed) {
            /* chunk discarded (an error was already replied at BDAT) */
            if (s->msg != NULL) {
                sess_txn_reset(s);
            }
            s->state = ST_CMD;
            sess_command_timeouts(s);
            return true;
        }
        if (s->bdat_last) {
            s->state = ST_CMD;
            msg_finish(s);
        } else {
            /* a CR at the chunk's end is held back (it may start a CRLF) but
             * was received all the same */
            sess_reply(s, "250 2.0.0 %llu octets received",
                       (unsigned long long)(s->data.size + (s->data.state == SD_CR)));
            s->state = ST_CMD;
            sess_command_timeouts(s);
        }
        return true;
    }
    return false;
}
