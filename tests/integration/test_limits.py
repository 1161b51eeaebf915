"""Limits (RFC 5321 §4.5.3): line and message sizes, recipients, errors, timeouts,
connections, and HTTP sent to the SMTP port."""
import socket
import time

import pytest

from pecd_harness import HOST, Client, message, queued_qid, split_delivered, unique_id

LINE_TOO_LONG = "500 5.5.2 Line too long"
DATA_LINE_TOO_LONG = "550 5.6.0 Line too long in message data; message refused"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"


def start_data(c, rcpt="alice@example.test", params=""):
    assert c.mail_from("a@client.test", params) == "250 2.1.0 Sender OK"
    assert c.cmd(f"RCPT TO:<{rcpt}>") == "250 2.1.5 Recipient OK"
    assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"


# --------------------------------------------------------------------------- command lines

def test_command_line_limit_512(server):
    with server.connect("mx") as c:
        c.ehlo()
        # 512 octets including CRLF is allowed, 513 is not.
        line = "VRFY " + "x" * (512 - 2 - 5)
        assert len(line) + 2 == 512
        assert c.cmd(line).startswith("252 2.5.0 ")
        assert c.cmd(line + "x") == LINE_TOO_LONG
        assert c.cmd("NOOP") == "250 2.0.0 OK"


def test_command_line_huge(server):
    with server.connect("mx") as c:
        c.ehlo()
        c.send(b"NOOP " + b"x" * 200_000 + b"\r\nNOOP\r\n")
        assert c.reply() == LINE_TOO_LONG
        assert c.reply() == "250 2.0.0 OK"
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"


def test_command_line_huge_alone(server):
    """The refusal comes without waiting for more input after the over-long line."""
    with server.connect("mx") as c:
        c.ehlo()
        c.send(b"VRFY " + b"y" * 10_000 + b"\r\n")
        assert c.reply() == LINE_TOO_LONG
        assert c.cmd("NOOP") == "250 2.0.0 OK"


def test_mail_line_limit_boundary(server):
    with server.connect("mx") as c:
        c.ehlo()
        head = "MAIL FROM:<a@client.test> ENVID="
        exact = head + "E" * (2048 - 2 - len(head))
        assert len(exact) + 2 == 2048
        assert c.cmd(exact) != LINE_TOO_LONG        # (a 501 for so long an ENVID is fine)
        assert c.cmd("RSET") == "250 2.0.0 Reset state"
        assert c.cmd(exact + "E") == LINE_TOO_LONG
        assert c.cmd("NOOP") == "250 2.0.0 OK"


def test_mail_rcpt_line_limit_2048(server):
    with server.connect("mx") as c:
        c.ehlo()
        # Over 512 but under 2048: not a line-length error (DSN parameters need room).
        mail = "MAIL FROM:<a@client.test> ENVID=" + "E" * 90 + " RET=HDRS"
        rcpt = "RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;" + \
            "o" * 480 + "@example.test"
        assert 512 < len(rcpt) + 2 < 2048
        assert c.cmd(mail) == "250 2.1.0 Sender OK"
        assert c.cmd(rcpt) != LINE_TOO_LONG
        assert c.cmd("RSET") == "250 2.0.0 Reset state"
        long_mail = "MAIL FROM:<a@client.test> ENVID=" + "E" * 2100
        assert c.cmd(long_mail) == LINE_TOO_LONG
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<alice@example.test> ORCPT=rfc822;" + "o" * 2100 + "@example.test") \
            == LINE_TOO_LONG
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"


# --------------------------------------------------------------------------- data lines

def test_data_line_limit(server):
    ok_id, bad_id = unique_id("line-ok"), unique_id("line-bad")
    ok_msg = message(ok_id, body=b"y" * 998 + b"\r\nshort\r\n")       # 1000 octets with CRLF
    bad_msg = message(bad_id, body=b"z" * 999 + b"\r\nshort\r\n")     # 1001
    with server.connect("mx") as c:
        c.ehlo()
        start_data(c)
        c.send(bad_msg + b".\r\n")
        assert c.reply() == DATA_LINE_TOO_LONG
        assert c.cmd("RCPT TO:<alice@example.test>") == "503 5.5.1 Need MAIL command first"
        qid = c.send_mail("a@client.test", ["alice@example.test"], ok_msg)
    [m] = server.wait_messages("alice@example.test", marker=ok_id)
    assert m.qid == qid
    assert split_delivered(m.data)[3] == ok_msg
    server.wait_queue_empty()
    assert server.messages("alice@example.test", marker=bad_id) == []


def test_data_line_huge(server):
    with server.connect("mx") as c:
        c.ehlo()
        start_data(c)
        c.send(message(unique_id("huge-line"), body=b"w" * 90_000 + b"\r\n") + b".\r\n")
        assert c.reply() == DATA_LINE_TOO_LONG
        assert c.cmd("NOOP") == "250 2.0.0 OK"


# --------------------------------------------------------------------------- message size

def big_body(n):
    line = b"0123456789" * 7 + b"\r\n"            # 72 octets
    return line * (n // len(line))


def test_message_too_big_declared(server):
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test> SIZE=100001") == TOO_BIG
        assert c.cmd("MAIL FROM:<a@client.test> SIZE=5000000000000") == TOO_BIG
        assert c.cmd("NOOP") == "250 2.0.0 OK"


def test_message_too_big_actual_data(server):
    tid = unique_id("big")
    with server.connect("mx") as c:
        c.ehlo()
        start_data(c)
        c.send(message(tid, body=big_body(150_000)) + b".\r\n")
        assert c.reply() == TOO_BIG
        assert c.cmd("NOOP") == "250 2.0.0 OK"
        # declared small, actually big
        start_data(c, params="SIZE=1000")
        c.send(message(tid, body=big_body(150_000)) + b".\r\n")
        assert c.reply() == TOO_BIG
        assert c.cmd("RCPT TO:<alice@example.test>") == "503 5.5.1 Need MAIL command first"
        after = unique_id("after-big")
        c.send_mail("a@client.test", ["alice@example.test"], message(after))
    server.wait_messages("alice@example.test", marker=after)
    server.wait_queue_empty()
    assert server.messages("alice@example.test", marker=tid) == []


def test_message_too_big_bdat(server):
    tid = unique_id("bigbdat")
    msg = message(tid, body=big_body(150_000))
    half = len(msg) // 2
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
        c.send(f"BDAT {half}\r\n".encode() + msg[:half])
        first = c.reply()
        c.send(f"BDAT {len(msg) - half} LAST\r\n".encode() + msg[half:])
        last = c.reply()
        # The size is over the limit after the second chunk; the refusal may come then or
        # already on the first chunk (75 KB is under the limit, so it should be "received").
        assert first == f"250 2.0.0 {half} octets received"
        assert last == TOO_BIG
        assert c.cmd("NOOP") == "250 2.0.0 OK"
    server.wait_queue_empty()
    assert server.messages("alice@example.test", marker=tid) == []


def test_message_under_limit_accepted(server):
    tid = unique_id("almost-big")
    msg = message(tid, body=big_body(90_000))
    with server.connect("mx") as c:
        c.ehlo()
        qid = c.send_mail("a@client.test", ["bob@example.test"], msg, mail_params="SIZE=90000")
    [m] = server.wait_messages("bob@example.test", marker=tid)
    assert m.qid == qid and split_delivered(m.data)[3] == msg


# --------------------------------------------------------------------------- recipients

def test_too_many_recipients(server):
    tid = unique_id("rcpts")
    five = ["alice@example.test", "bob@example.test", "dave@example.test", "erin@example.test",
            "frank@example.test"]
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        for r in five:
            assert c.cmd(f"RCPT TO:<{r}>") == "250 2.1.5 Recipient OK"
        assert c.cmd("RCPT TO:<postmaster>") == "452 4.5.3 Too many recipients"
        qid = queued_qid(c.data(message(tid)))
    for r in five:
        [m] = server.wait_messages(r, marker=tid)
        assert m.qid == qid
    server.wait_queue_empty()
    assert server.messages("postmaster@example.test", marker=tid) == []


# --------------------------------------------------------------------------- errors, timeouts

@pytest.fixture(scope="module")
def strict(make_module_instance):
    return make_module_instance(conf={"limits": {
        "max_errors": "3", "timeout_command": "2s", "timeout_data": "2s", "timeout_tls": "2s"}})


def read_error_close(c, next_command="NOOP"):
    """After the error that reaches max_errors: the 421 comes at once, or as the reply
    to the next command; then the connection is closed."""
    r = c.try_reply(0.5)
    if r is None:
        r = c.cmd(next_command)
    assert r == f"421 4.7.0 {HOST} Too many errors, closing connection"
    c.expect_closed()


def test_max_errors(strict):
    with strict.connect("mx") as c:
        c.ehlo()
        assert c.cmd("BOGUS") == "500 5.5.1 Command unrecognized"
        assert c.cmd("BOGUS") == "500 5.5.1 Command unrecognized"
        assert c.cmd("BOGUS") == "500 5.5.1 Command unrecognized"
        read_error_close(c, "BOGUS")


def test_max_errors_counts_mixed_errors(strict):
    with strict.connect("mx") as c:
        c.ehlo()
        assert c.cmd("RCPT TO:<alice@example.test>") == "503 5.5.1 Need MAIL command first"
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<nobody@example.test>").startswith("550 5.1.1 ")
        assert c.cmd("RCPT TO:<x@elsewhere.test>") == \
            "550 5.7.1 <x@elsewhere.test>: Relay access denied"
        read_error_close(c)


def test_successes_do_not_count_as_errors(strict):
    with strict.connect("mx") as c:
        c.ehlo()
        for _ in range(2):
            assert c.cmd("BOGUS") == "500 5.5.1 Command unrecognized"
        for _ in range(5):
            assert c.cmd("NOOP") == "250 2.0.0 OK"
        assert c.try_reply(0.2) is None


def test_timeout_command(strict):
    with strict.connect("mx") as c:
        t0 = time.monotonic()
        assert c.reply() == f"421 4.4.2 {HOST} Timeout, closing connection"
        elapsed = time.monotonic() - t0
        c.expect_closed()
    assert 1.5 <= elapsed < 5, elapsed
    with strict.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        c.send("RCPT TO:<alice@exa")        # half a command, then silence
        t0 = time.monotonic()
        assert c.reply() == f"421 4.4.2 {HOST} Timeout, closing connection"
        assert 1.5 <= time.monotonic() - t0 < 5
        c.expect_closed()


def test_activity_resets_timeout(strict):
    with strict.connect("mx") as c:
        for _ in range(4):                 # 4 x 0.8 s > timeout_command
            time.sleep(0.8)
            assert c.cmd("NOOP") == "250 2.0.0 OK"


def test_timeout_data(strict):
    with strict.connect("mx") as c:
        c.ehlo()
        start_data(c)
        c.send(message(unique_id("timeout"))[:50])
        t0 = time.monotonic()
        assert c.reply() == f"421 4.4.2 {HOST} Timeout, closing connection"
        assert 1.5 <= time.monotonic() - t0 < 5
        c.expect_closed()


def test_timeout_bdat_chunk(strict):
    with strict.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
        c.send(b"BDAT 100\r\nonly ten..")      # 10 of the 100 octets, then silence
        t0 = time.monotonic()
        assert c.reply() == f"421 4.4.2 {HOST} Timeout, closing connection"
        assert 1.5 <= time.monotonic() - t0 < 5
        c.expect_closed()


def test_timeout_tls_handshake(strict):
    s = socket.create_connection(("127.0.0.1", strict.ports["submissions"]), timeout=6)
    t0 = time.monotonic()
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail("implicit-TLS connection without a handshake not closed after timeout_tls")
    finally:
        s.close()
    assert 1.5 <= time.monotonic() - t0 < 5.5
    assert strict.running()


# --------------------------------------------------------------------------- connections

def test_max_connections(make_instance):
    """[mx] max_connections and max_connections_per_ip (per client address, on this
    listener); the refusal says which."""
    inst = make_instance(conf={"limits": {"max_connections": "7", "max_connections_per_ip": "3"},
                               "mx": {"max_connections": "5"}})
    with inst.connect("mx") as c:        # let pecd see the readiness probes go away
        assert c.cmd("QUIT") == f"221 2.0.0 {HOST} Bye"
        c.expect_closed()
    too_many = f"421 4.7.0 {HOST} Too many connections, try again later"
    too_many_ip = f"421 4.7.0 {HOST} Too many connections from your address, try again later"
    port = inst.ports["mx"]
    held = [Client(port) for _ in range(3)]                 # 3 from 127.0.0.1: the per-IP cap
    c = Client(port, banner=False)
    assert c.reply() == too_many_ip
    c.expect_closed()
    c.close()
    held += [Client(port, source="127.0.0.2") for _ in range(2)]   # 5 in all: [mx]'s cap
    c = Client(port, banner=False, source="127.0.0.3")
    assert c.reply() == too_many
    c.expect_closed()
    c.close()
    for h in held:                                          # the held sessions still work
        assert h.cmd("NOOP") == "250 2.0.0 OK"
    # the refusals are logged with the listener and the client
    log = inst.log(tail=400)
    assert "connection from 127.0.0.1 on mx refused: too many connections from this address " \
        "(max_connections_per_ip) (3)" in log, log
    held.pop(0).close()                                     # a slot frees up (bounded poll)
    deadline = time.monotonic() + 5
    while True:
        c = Client(port, banner=False)
        r = c.reply()
        if r not in (too_many, too_many_ip) or time.monotonic() > deadline:
            break
        c.close()
        time.sleep(0.05)
    assert r == f"220 {HOST} ESMTP pecmail"
    c.ehlo()
    c.close()
    for h in held:
        h.close()


def test_listener_limits_add_up_to_the_total(make_instance):
    inst = make_instance(conf={"limits": {"max_connections": "10"},
                               "mx": {"max_connections": "8"},
                               "submission": {"max_connections": "3"}}, start=False)
    inst.start(expect_ready=False)
    assert inst.proc.wait(10) != 0
    inst.proc = None
    assert "the listeners' max_connections add up to 11, more than [limits] " \
        "max_connections = 10" in inst.log(), inst.log()


@pytest.mark.parametrize("request_line", [
    "GET / HTTP/1.1", "POST /submit HTTP/1.1", "HEAD / HTTP/1.0", "PUT /x HTTP/1.1",
    "CONNECT mx.example.test:443 HTTP/1.1", "OPTIONS * HTTP/1.1"])
def test_http_request(server, request_line):
    with server.connect("mx") as c:
        c.send(f"{request_line}\r\nHost: mx.example.test\r\nUser-Agent: curl/8\r\n"
               "Accept: */*\r\n\r\n")
        assert c.reply() == f"554 5.7.0 {HOST} This is an SMTP server, not HTTP"
        c.expect_closed()
    assert server.running()
