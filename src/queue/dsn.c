/*
 * dsn.c - delivery status notifications (RFC 3464, requested per RFC 3461):
 * multipart/report with a human-readable part, message/delivery-status, and
 * the original message (RET=FULL, the default) or its header
 * (text/rfc822-headers, RET=HDRS).  A bounce of a REQUIRETLS message returns
 * the header only, whatever RET says (RFC 8689 §5).  Pure text building.
 */
#include "queue.h"
#include "lib/lib.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *action_name(enum dsn_action a)
{
    switch (a) {
    case DSN_FAILED:
        return "failed";
    case DSN_DELAYED:
        return "delayed";
    case DSN_DELIVERED:
        return "delivered";
    case DSN_RELAYED:
        return "relayed";
    }
    return "failed";
}

/* The enhanced status code at the start of a reply text, or a default. */
static void status_of(const char *text, enum dsn_action a, char *out, size_t outlen)
{
    int x, y, z;
    if (text != NULL && sscanf(text, "%1d.%3d.%3d", &x, &y, &z) == 3 && (x == 2 || x == 4 || x == 5)) {
        snprintf(out, outlen, "%d.%d.%d", x, y, z);
        return;
    }
    snprintf(out, outlen, "%s", a == DSN_FAILED ? "5.0.0" : a == DSN_DELAYED ? "4.0.0" : "2.0.0");
}

/* Length of the header section of msg (up to and including the blank line). */
static size_t header_length(const char *msg, size_t len)
{
    const char *p = g_strstr_len(msg, (gssize)len, "\r\n\r\n");
    return p ? (size_t)(p - msg) + 4 : len;
}

char *dsn_build(const struct queue_env *env, const char *data, size_t len,
                const struct dsn_rcpt *rcpts, size_t n, enum dsn_action action,
                const char *reporting_mta, size_t *outlen)
{
    GString *s = g_string_new(NULL);
    char date[64], boundary[64], msgid[128];
    time_t now = time(NULL);
    rfc5322_date(date, sizeof date, now);
    char qid[QUEUE_ID_LEN + 1];
    queue_new_id(qid);
    snprintf(boundary, sizeof boundary, "%s/%s", qid, reporting_mta);
    snprintf(msgid, sizeof msgid, "<%s.dsn@%s>", qid, reporting_mta);
    const char *subject = action == DSN_FAILED    ? "Undelivered Mail Returned to Sender"
                          : action == DSN_DELAYED ? "Delayed Mail (still being retried)"
                                                  : "Successful Mail Delivery Report";
    bool headers_only = env->requiretls || env->ret == 2;

    g_string_append_printf(s, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", reporting_mta);
    g_string_append_printf(s, "To: <%s>\r\n", env->sender);
    g_string_append_printf(s, "Subject: %s\r\n", subject);
    g_string_append_printf(s, "Date: %s\r\n", date);
    g_string_append_printf(s, "Message-ID: %s\r\n", msgid);
    g_string_append(s, "Auto-Submitted: auto-replied\r\n");   /* RFC 3834 */
    g_string_append(s, "MIME-Version: 1.0\r\n");
    g_string_append_printf(s, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                              "\tboundary=\"%s\"\r\n\r\n", boundary);
    g_string_append(s, "This is a MIME-encapsulated message.\r\n\r\n");

    g_string_append_printf(s, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n"
                              "Content-Description: Notification\r\n\r\n", boundary);
    g_string_append_printf(s, "This is the mail system at host %s.\r\n\r\n", reporting_mta);
    if (action == DSN_FAILED)
        g_string_append(s, "Your message could not be delivered to one or more recipients.\r\n"
                           "It is attached below.\r\n\r\n");
    else if (action == DSN_DELAYED)
        g_string_append(s, "Your message could not be delivered yet; delivery is still being\r\n"
                           "attempted.  You do not need to resend it.\r\n\r\n");
    else
        g_string_append(s, "Your message was successfully delivered to the destination(s)\r\n"
                           "listed below.\r\n\r\n");
    for (size_t i = 0; i < n; i++) {
        /* keep client text on one line, ASCII only */
        char why[600];
        snprintf(why, sizeof why, "%s", rcpts[i].text ? rcpts[i].text : "");
        for (char *p = why; *p; p++)
            if ((unsigned char)*p < 32 || (unsigned char)*p > 126)
                *p = ' ';
        g_string_append_printf(s, "<%s>: %s\r\n", rcpts[i].addr, why);
    }
    g_string_append(s, "\r\n");

    g_string_append_printf(s, "--%s\r\nContent-Type: message/delivery-status\r\n"
                              "Content-Description: Delivery report\r\n\r\n", boundary);
    g_string_append_printf(s, "Reporting-MTA: dns; %s\r\n", reporting_mta);
    if (env->envid && *env->envid)
        g_string_append_printf(s, "Original-Envelope-Id: %s\r\n", env->envid);
    char arrival[64];
    rfc5322_date(arrival, sizeof arrival, env->arrival);
    g_string_append_printf(s, "Arrival-Date: %s\r\n", arrival);
    for (size_t i = 0; i < n; i++) {
        char status[32];
        status_of(rcpts[i].text, action, status, sizeof status);
        g_string_append(s, "\r\n");
        if (rcpts[i].orcpt)
            g_string_append_printf(s, "Original-Recipient: %s\r\n", rcpts[i].orcpt);
        g_string_append_printf(s, "Final-Recipient: rfc822; %s\r\n", rcpts[i].addr);
        g_string_append_printf(s, "Action: %s\r\n", action_name(action));
        g_string_append_printf(s, "Status: %s\r\n", status);
        if (rcpts[i].remote_mta)
            g_string_append_printf(s, "Remote-MTA: dns; %s\r\n", rcpts[i].remote_mta);
        if (rcpts[i].text && rcpts[i].smtp_code)
            g_string_append_printf(s, "Diagnostic-Code: smtp; %d %s\r\n", rcpts[i].smtp_code,
                                   rcpts[i].text);
        else if (rcpts[i].text)
            g_string_append_printf(s, "Diagnostic-Code: X-pecmail; %s\r\n", rcpts[i].text);
        g_string_append_printf(s, "Last-Attempt-Date: %s\r\n", date);
    }
    g_string_append(s, "\r\n");
    if (headers_only) {
        g_string_append_printf(s, "--%s\r\nContent-Type: text/rfc822-headers\r\n"
                                  "Content-Description: Undelivered message headers\r\n\r\n",
                               boundary);
        g_string_append_len(s, data, (gssize)header_length(data, len));
    } else {
        g_string_append_printf(s, "--%s\r\nContent-Type: message/rfc822\r\n"
                                  "Content-Description: Undelivered message\r\n\r\n", boundary);
        g_string_append_len(s, data, (gssize)len);
        if (len < 2 || data[len - 2] != '\r' || data[len - 1] != '\n')
            g_string_append(s, "\r\n");
    }
    g_string_append_printf(s, "\r\n--%s--\r\n", boundary);
    *outlen = s->len;
    return g_string_free(s, FALSE);
}
