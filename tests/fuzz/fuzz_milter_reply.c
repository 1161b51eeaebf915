/*
 * fuzz_milter_reply.c - the milter client's reply reader and conversation
 * against a hostile filter: the input is everything the filter says, fed
 * through a socketpair (closed after it, so every run ends at EOF), then
 * the modifications are applied.  The first octet chooses options; with
 * its low bit set a valid option-negotiation reply (version, actions and
 * steps from the next octets) comes first, so the fuzzer starts deep.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "filters/milter.h"

static const char MSG[] = "Received: from a\r\n\tby b\r\nFrom: <s@x.example>\r\nSubject: s\r\n"
                          "\r\nbody\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once++)
        signal(SIGPIPE, SIG_IGN);
    if (size < 8 || size > 60000)
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 0;
    int big = 1 << 18;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    uint8_t opt = data[0];
    if (opt & 1) {
        uint8_t o[17] = {0, 0, 0, 13, 'O', 0, 0, 0, (uint8_t)(2 + data[1] % 5), 0, 0, 0, 0xff,
                         data[2] & 0x0f, data[3], data[4], data[5]};
        if (write(sv[1], o, sizeof o) != (ssize_t)sizeof o)
            abort();
    }
    if (write(sv[1], data + 6, size - 6) != (ssize_t)(size - 6))
        abort();
    shutdown(sv[1], SHUT_WR);

    static const char *const rcpts[] = {"a@y.example", "b@y.example", "c@y.example"};
    struct milter_facts f = {.hostname = "mx", .queue_id = "Q1", .client_ip = (opt & 2) ? NULL : "::1",
                             .client_port = 25, .client_name = "[::1]", .helo = "h",
                             .sender = "s@x.example", .rcpts = rcpts, .nrcpts = 1 + (opt >> 2) % 3};
    struct milter_spec spec;
    char err[256];
    if (milter_spec_parse(&spec, "fuzz", "unix:/nonexistent", err, sizeof err) < 0)
        abort();
    spec.io_timeout_ms = spec.eom_timeout_ms = 200;
    struct milter_result r;
    if (milter_run_fd(&spec, sv[0], &f, MSG, sizeof MSG - 1, &r) != 0)
        abort();
    if (r.action > MILTER_FAILED || r.nmods > 1000 || r.nrefused > f.nrcpts)
        abort();
    if (r.action == MILTER_FAILED && !r.err[0])
        abort();
    if ((r.action == MILTER_REJECT || r.action == MILTER_TEMPFAIL) &&
        (r.smtp_code < 400 || r.smtp_code > 599 || !r.reply[0]))
        abort();
    for (int pec = 0; pec < 2; pec++) {
        char *out;
        size_t outlen;
        if (milter_apply(&r, MSG, sizeof MSG - 1, pec, &out, &outlen, err, sizeof err) == 0) {
            if (!out || out[outlen] != '\0')
                abort();
            free(out);
        }
    }
    milter_result_free(&r);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
