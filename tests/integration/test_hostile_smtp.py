"""Hostile SMTP clients (issue 16, items 5 and 6): connection floods and slowloris, AUTH
guessing and user enumeration by timing.

- Each listener has its own connection slots: a flood of the MX leaves submission and
  submissions to the users (they still greet and authenticate); over the limit an
  implicit-TLS listener answers 421 after the handshake.
- timeout_command bounds a whole command line and timeout_tls a whole handshake, however
  slowly the octets trickle in; DATA must average min_data_rate after timeout_data, yet a
  slow but steady message goes through; a client that reads no reply cannot make pecd
  buffer replies without bound.
- A failed AUTH is answered after auth_failure_delay without holding up other sessions;
  failures per client address and per account lock further attempts (454) for a window;
  too many in one session close it (421); an unknown user's check costs what an existing
  user's costs.

Every loop is bounded in count and time; the limits are configured small so the tests are
fast."""
import base64
import socket
import ssl
import statistics
import time

import pytest

from pecd_harness import (HOST, Client, client_tls_context, message, password, queued_qid,
                          under_asan, unique_id)

ALICE = "alice@example.test"
BOB = "bob@example.test"
TOO_MANY = f"421 4.7.0 {HOST} Too many connections, try again later"
TIMEOUT = f"421 4.4.2 {HOST} Timeout, closing connection"
BAD = "535 5.7.8 Authentication credentials invalid"
LOCKED = "454 4.7.0 Too many authentication failures, try again later"
OK = "235 2.7.0 Authentication successful"


def plain(user, pw):
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def submission(inst, source=None):
    """A [submission] session after STARTTLS and EHLO."""
    c = inst.connect("submission", source=source)
    c.ehlo()
    c.starttls()
    c.ehlo()
    return c


def closed_within(sock, seconds):
    """Reads until the peer closes (True) or `seconds` pass (False); data is ignored."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.settimeout(max(0.05, end - time.monotonic()))
        try:
            if sock.recv(4096) == b"":
                return True
        except (ConnectionResetError, ssl.SSLError):
            return True
        except (socket.timeout, TimeoutError):
            return False
    return False


# ----------------------------------------------------------------------------- connections

@pytest.fixture
def small(make_instance):
    """[limits] max_connections = 10: submission and submissions get one slot each, the
    MX the other 8 (the default shares)."""
    return make_instance(conf={"limits": {"max_connections": "10"}})


def flood_mx(inst, max_tries=40):
    """Opens MX sessions from loopback until one is refused; returns the held ones."""
    held = []
    for _ in range(max_tries):
        c = Client(inst.ports["mx"], banner=False)
        r = c.reply()
        if r != f"220 {HOST} ESMTP pecmail":
            assert r == TOO_MANY, r
            c.expect_closed()
            c.close()
            return held
        held.append(c)
    raise AssertionError(f"{max_tries} MX sessions and no refusal")


def test_mx_flood_leaves_submission_slots(small):
    with small.connect("mx") as c:          # let pecd see the readiness probes go away
        assert c.cmd("QUIT") == f"221 2.0.0 {HOST} Bye"
        c.expect_closed()
    held = flood_mx(small)
    try:
        # The MX got its share, not the whole of max_connections.
        assert len(held) == 8, len(held)
        assert "connection from 127.0.0.1 on mx refused: too many connections " \
            "(max_connections) (8)" in small.log(tail=200), small.log(tail=40)
        # Submission (STARTTLS) and submissions (implicit TLS) still serve their users.
        tid = unique_id("flood-sub")
        with connect_when_free(small, "submission") as c:
            c.ehlo()
            c.starttls()
            c.ehlo()
            assert c.cmd(plain(ALICE, password(ALICE))) == OK
            qid = c.send_mail(ALICE, [BOB], message(tid, sender=ALICE, to=BOB))
        with connect_when_free(small, "submissions") as c:
            c.ehlo()
            assert c.cmd(plain(BOB, password(BOB))) == OK
        [m] = small.wait_messages(BOB, marker=tid)
        assert m.qid == qid
        for h in held:                      # and the MX sessions are alive
            assert h.cmd("NOOP") == "250 2.0.0 OK"
    finally:
        for h in held:
            h.close()


def connect_when_free(inst, listener, timeout=5):
    """A session on listener once pecd has seen earlier connections (the readiness
    probes) go: bounded poll while the reply is the 421 of a full listener."""
    end = time.monotonic() + timeout
    while True:
        c = inst.connect(listener, banner=False)
        r = c.reply()
        if r != TOO_MANY or time.monotonic() > end:
            assert r == f"220 {HOST} ESMTP pecmail", r
            return c
        c.close()
        time.sleep(0.05)


def test_submissions_over_limit_answers_421_after_handshake(small):
    """Implicit TLS: the refusal comes over TLS, then the connection closes."""
    with connect_when_free(small, "submissions") as first:
        first.ehlo()
        t0 = time.monotonic()
        over = Client(small.ports["submissions"], tls=True, banner=False)
        try:
            assert over.reply() == TOO_MANY
            over.expect_closed()
        finally:
            over.close()
        assert time.monotonic() - t0 < 3
        assert "connection from 127.0.0.1 on submissions refused: too many connections " \
            "(max_connections) (1)" in small.log(tail=200)
        assert first.cmd("NOOP") == "250 2.0.0 OK"
    # the slot is free again (the close reaches pecd asynchronously)
    connect_when_free(small, "submissions").close()


def test_per_ip_limit_is_per_listener(make_instance):
    """Two MX sessions from one address fill its MX limit but not its submission one."""
    inst = make_instance(conf={"limits": {"max_connections_per_ip": "2"}})
    held = [inst.connect("mx") for _ in range(2)]
    try:
        c = Client(inst.ports["mx"], banner=False)
        assert c.reply() == \
            f"421 4.7.0 {HOST} Too many connections from your address, try again later"
        c.close()
        with submission(inst) as s:
            assert s.cmd(plain(ALICE, password(ALICE))) == OK
    finally:
        for h in held:
            h.close()


# ----------------------------------------------------------------------------- slowloris

@pytest.fixture(scope="module")
def slow(make_module_instance):
    return make_module_instance(conf={
        "limits": {"timeout_command": "3s", "timeout_tls": "3s", "timeout_data": "3s",
                   "max_message_size": "1M"}})


def trickle_until_reply(c, data, interval, max_seconds):
    """Sends data one octet per interval until the server says something (returned with
    the time since the start) or max_seconds pass (None)."""
    t0 = time.monotonic()
    for i in range(len(data)):
        if time.monotonic() - t0 > max_seconds:
            break
        try:
            c.send(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        r = c.try_reply(interval)
        if r is not None:
            return r, time.monotonic() - t0
    return None, time.monotonic() - t0


def test_slowloris_command_line_cut_at_timeout_command(slow):
    """One octet a second never completes a line: cut ~3 s after the banner."""
    with slow.connect("mx") as c:
        r, t = trickle_until_reply(c, b"MAIL FROM:<slow@client.test>\r\n", 1.0, 9)
        assert r == TIMEOUT, (r, t)
        assert 2.5 <= t < 4.5, t
        c.expect_closed()
    assert "on mx: timeout waiting for a command line (timeout_command)" in slow.log(tail=100)


def test_slowloris_after_a_command(slow):
    """The period of a line starts when the previous one is complete."""
    with slow.connect("mx") as c:
        c.ehlo()
        time.sleep(2)                       # idle, under the limit
        assert c.cmd("NOOP") == "250 2.0.0 OK"
        r, t = trickle_until_reply(c, b"NOOP and more text than three seconds\r\n", 0.5, 9)
        assert r == TIMEOUT, (r, t)
        assert 2.5 <= t < 4.5, t


def test_prompt_commands_are_not_cut(slow):
    """Commands that each come within the limit go on past it (5 s of 1 s gaps)."""
    with slow.connect("mx") as c:
        c.ehlo()
        for _ in range(5):
            time.sleep(1)
            assert c.cmd("NOOP") == "250 2.0.0 OK"


def client_hello():
    """The first flight of a TLS client, as octets."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_tls_context().wrap_bio(incoming, outgoing, server_hostname=HOST)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_slowloris_tls_handshake_cut_at_timeout_tls(slow):
    hello = client_hello()
    assert len(hello) > 20
    s = socket.create_connection(("127.0.0.1", slow.ports["submissions"]), timeout=5)
    try:
        t0 = time.monotonic()
        closed = False
        for i in range(min(len(hello), 20)):        # one octet per 0.5 s: 10 s at most
            try:
                s.sendall(hello[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_within(s, 0.5):
                closed = True
                break
        t = time.monotonic() - t0
        assert closed, "a handshake trickled one octet per 0.5 s was not cut"
        assert 2.5 <= t < 4.5, t
    finally:
        s.close()
    assert slow.running()


def start_data(c):
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
    assert c.cmd(f"RCPT TO:<{ALICE}>") == "250 2.1.5 Recipient OK"
    assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"


def test_slowloris_data_cut_by_min_data_rate(slow):
    """Two octets a second in DATA (gaps well under timeout_data): cut after ~3 s."""
    with slow.connect("mx") as c:
        start_data(c)
        r, t = trickle_until_reply(c, message(unique_id("slow-data")), 0.5, 10)
        assert r == TIMEOUT, (r, t)
        assert 2.5 <= t < 5, t
        c.expect_closed()
    assert "timeout in the message data (timeout_data, min_data_rate)" in slow.log(tail=100)


def test_slow_but_steady_data_goes_through(slow):
    """~4 KB/s (over min_data_rate = 500 octets/s) for ~5 s, longer than timeout_data."""
    tid = unique_id("steady")
    line = b"steady " * 27 + b"\r\n"                # 191 octets
    msg = message(tid, body=line * 100)
    with slow.connect("mx") as c:
        start_data(c)
        t0 = time.monotonic()
        for i in range(0, len(msg), 200):
            c.send(msg[i:i + 200])
            time.sleep(0.05)
        c.send(b".\r\n")
        qid = queued_qid(c.reply())
        assert time.monotonic() - t0 > 4
    [m] = slow.wait_messages(ALICE, marker=tid)
    assert m.qid == qid


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("mode", ["cleartext", "starttls", "implicit-tls"])
def test_client_that_reads_no_reply_cannot_grow_buffers(slow, mode):
    """NOOPs sent for up to 4 s without reading a reply: pecd stops reading them once
    SMTP_OUTPUT_MAX of replies wait, so its memory stays put (before: ~2.3 octets of
    reply buffered per octet sent, without bound)."""
    if under_asan(slow.proc.pid):
        pytest.skip("RSS tells nothing under AddressSanitizer (its quarantine keeps "
                    "freed memory)")
    before = rss_kib(slow.proc.pid)
    c = slow.connect("submissions" if mode == "implicit-tls" else "mx")
    if mode == "starttls":
        c.ehlo()
        c.starttls()
    s = c.sock
    chunk = b"NOOP\r\n" * 10000                      # 60 KB
    sent = 0
    try:
        s.setblocking(False)
        end = time.monotonic() + 4
        while time.monotonic() < end and sent < 200 * 1024 * 1024:
            try:
                sent += s.send(chunk)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break       # timeout_command (3 s) passed: pecd closed the session
        grown = rss_kib(slow.proc.pid) - before
    finally:
        c.close()
    assert grown < 20 * 1024, f"pecd grew by {grown} KiB after {sent} octets of NOOPs unread"
    with slow.connect("mx") as c:
        assert c.cmd("NOOP") == "250 2.0.0 OK"


# ----------------------------------------------------------------------------- AUTH

def test_failed_auth_is_delayed_without_blocking_others(make_instance):
    inst = make_instance(conf={"limits": {"auth_failure_delay": "2s"}})
    with submission(inst) as a, submission(inst) as b:
        t0 = time.monotonic()
        a.send(plain(ALICE, "wrong") + "\r\n")
        # meanwhile another session is served at once, and can authenticate
        for _ in range(3):
            t1 = time.monotonic()
            assert b.cmd("NOOP") == "250 2.0.0 OK"
            assert time.monotonic() - t1 < 0.5
        assert b.cmd(plain(BOB, password(BOB))) == OK
        assert time.monotonic() - t0 < 1.5, "the other session waited for the delay"
        assert a.reply() == BAD
        elapsed = time.monotonic() - t0
        assert 1.95 <= elapsed < 4, elapsed
        # a success is not delayed
        t0 = time.monotonic()
        assert a.cmd(plain(ALICE, password(ALICE))) == OK
        assert time.monotonic() - t0 < 1.5
    # an unknown user is delayed alike
    with submission(inst) as c:
        t0 = time.monotonic()
        assert c.cmd(plain("nobody@example.test", "x")) == BAD
        assert time.monotonic() - t0 >= 1.95


@pytest.fixture
def throttled(make_instance):
    return make_instance(conf={"limits": {
        "auth_failure_delay": "0", "auth_max_failures": "20", "auth_failures_per_ip": "3",
        "auth_failures_per_account": "4", "auth_failure_window": "3s"}})


def test_per_address_backoff(throttled):
    with submission(throttled) as c:
        for i in range(3):
            assert c.cmd(plain(f"guess{i}@example.test", "x")) == BAD
        # locked: even the right password is not checked now
        assert c.cmd(plain(ALICE, password(ALICE))) == LOCKED
    assert "AUTH as alice@example.test refused unchecked: too many failures from this " \
        "address (auth_failures_per_ip)" in throttled.log(tail=100)
    # another address is not locked
    with submission(throttled, source="127.0.0.2") as c:
        assert c.cmd(plain(ALICE, password(ALICE))) == OK
    # after the window (3 s from the first failure) 127.0.0.1 may try again
    end = time.monotonic() + 8
    while True:
        with submission(throttled) as c:
            r = c.cmd(plain(ALICE, password(ALICE)))
        if r != LOCKED or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert r == OK


def test_per_account_backoff(throttled):
    """Failures for one account from several addresses lock that account (any case),
    not the others."""
    for i, src in enumerate(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]):
        with submission(throttled, source=src) as c:
            user = ALICE if i % 2 == 0 else ALICE.upper()
            assert c.cmd(plain(user, "wrong")) == BAD
    with submission(throttled, source="127.0.0.6") as c:
        assert c.cmd(plain(ALICE, password(ALICE))) == LOCKED
        assert c.cmd(plain(BOB, password(BOB))) == OK
    assert "too many failures for this account (auth_failures_per_account)" in \
        throttled.log(tail=100)


def test_too_many_failures_in_one_session(make_instance):
    inst = make_instance(conf={"limits": {"auth_failure_delay": "0", "auth_max_failures": "3"}})
    with submission(inst) as c:
        assert c.cmd(plain(ALICE, "a")) == BAD
        assert c.cmd("AUTH LOGIN").startswith("334 ")
        assert c.cmd(base64.b64encode(ALICE.encode()).decode()).startswith("334 ")
        assert c.cmd(base64.b64encode(b"b").decode()) == BAD
        assert c.cmd(plain(ALICE, "c")) == BAD          # the third: then the 421
        assert c.reply() == f"421 4.7.0 {HOST} Too many authentication failures, closing connection"
        c.expect_closed()


def auth_time(c, user, pw):
    t0 = time.perf_counter()
    assert c.cmd(plain(user, pw)) == BAD
    return time.perf_counter() - t0


def test_unknown_user_costs_like_existing_user(make_instance):
    """Without the failure delay (it would hide the difference), the check of an unknown
    user takes what an existing user's takes (before: ~2 ms against ~19 ms)."""
    inst = make_instance(conf={"limits": {
        "auth_failure_delay": "0", "auth_max_failures": "100", "auth_failures_per_ip": "0",
        "max_errors": "100",
        "auth_failures_per_account": "0"}})
    existing, unknown = [], []
    with submission(inst) as c:
        auth_time(c, ALICE, "warm-up")
        for i in range(9):
            existing.append(auth_time(c, ALICE, f"wrong{i}"))
            unknown.append(auth_time(c, f"nobody{i}@example.test", "wrong"))
    me, mu = statistics.median(existing), statistics.median(unknown)
    assert me > 0.004, f"an existing user's check takes {me * 1000:.1f} ms: too cheap a hash?"
    assert abs(me - mu) < max(0.006, 0.3 * me), \
        f"existing {me * 1000:.1f} ms, unknown {mu * 1000:.1f} ms"
