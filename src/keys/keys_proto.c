/*
 * keys_proto.c - one message each way between pecd and its signer process:
 * AF_UNIX SOCK_SEQPACKET socketpairs, so a request or an answer is read
 * whole or not at all (no framing to get wrong), and the end of the peer is
 * an end of file.  The formats are in keys_int.h; each side checks what it
 * reads (lengths, operation) before using it: the signer trusts nothing the
 * network-facing process sends.
 *
 * Interface: keys_send, keys_recv (keys_int.h).
 */
#include "keys_int.h"
#include "lib/lib.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

int keys_send(int fd, const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen + blen > KEYS_MSG_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = blen ? 2 : 1};
    for (;;) {
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n >= 0)
            return (size_t)n == alen + blen ? 0 : -1;
        if (errno != EINTR)
            return -1;
    }
}

ssize_t keys_recv(int fd, void *buf, size_t size, int64_t deadline)
{
    for (;;) {
        if (deadline >= 0) {
            int w = fd_wait(fd, POLLIN, deadline);
            if (w <= 0)
                return -1;
        }
        struct iovec iov = {buf, size};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0 && (mh.msg_flags & MSG_TRUNC)) {
            errno = EMSGSIZE;
            return -1;
        }
        return n;
    }
}
