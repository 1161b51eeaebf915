"""STARTTLS (RFC 3207), implicit TLS (RFC 8314) and broken TLS clients."""
import socket
import ssl

import pytest

from pecd_harness import (HOST, Client, client_tls_context, message, password, received_re,
                          split_delivered, unique_id)


def assert_alive(inst, listener="mx"):
    """The server still runs and a normal session works."""
    assert inst.running(), "pecd died\n" + inst.log()
    with inst.connect(listener) as c:
        c.ehlo()
        assert c.cmd("NOOP") == "250 2.0.0 OK"
        assert c.cmd("QUIT") == f"221 2.0.0 {HOST} Bye"


def test_starttls_then_ehlo(server):
    with server.connect("mx") as c:
        assert "STARTTLS" in c.ehlo()
        tls = c.starttls()
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        kw = c.ehlo()
        assert "STARTTLS" not in kw
        assert "REQUIRETLS" in kw
    with server.connect("submission") as c:
        c.ehlo()
        c.starttls()
        kw = c.ehlo()
        assert "STARTTLS" not in kw
        assert "AUTH PLAIN LOGIN" in kw and "REQUIRETLS" in kw


def test_starttls_with_arguments(server):
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"
        c.starttls()


def test_starttls_twice(server):
    with server.connect("mx") as c:
        c.ehlo()
        c.starttls()
        assert c.cmd("STARTTLS") == "503 5.5.1 TLS already active"
        c.ehlo()
        assert c.cmd("STARTTLS") == "503 5.5.1 TLS already active"
        assert c.cmd("NOOP") == "250 2.0.0 OK"


def test_session_restarts_after_starttls(server):
    with server.connect("mx") as c:
        c.ehlo()
        c.starttls()
        assert c.cmd("MAIL FROM:<a@client.test>") == "503 5.5.1 Send EHLO or HELO first"
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"


def test_starttls_command_injection(server):
    """Commands pipelined after STARTTLS are discarded before the handshake."""
    with server.connect("mx") as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nMAIL FROM:<x@y.test>\r\n")
        assert c.reply() == "220 2.0.0 Ready to start TLS"
        assert c.buf == b""
        c.sock = client_tls_context().wrap_socket(c.sock, server_hostname=HOST)
        # Were the injected MAIL executed, this would be 250 (or the 250 for MAIL would
        # come first); the session restarted, so EHLO is needed again.
        assert c.cmd("RCPT TO:<alice@example.test>").startswith("503 5.5.1 ")
        assert c.cmd("MAIL FROM:<a@client.test>") == "503 5.5.1 Send EHLO or HELO first"
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"


def test_starttls_injection_of_a_whole_transaction(server):
    """A whole injected transaction never becomes a message."""
    tid = unique_id("inject")
    inj = (b"EHLO evil.test\r\nMAIL FROM:<x@y.test>\r\nRCPT TO:<alice@example.test>\r\n"
           b"DATA\r\n" + message(tid) + b".\r\n")
    with server.connect("mx") as c:
        c.ehlo()
        c.send(b"STARTTLS\r\n" + inj)
        assert c.reply() == "220 2.0.0 Ready to start TLS"
        assert c.buf == b""
        c.sock = client_tls_context().wrap_socket(c.sock, server_hostname=HOST)
        assert c.cmd("MAIL FROM:<a@client.test>") == "503 5.5.1 Send EHLO or HELO first"
        c.ehlo()
        # A marker message after it: once it is delivered, the injected one would be too.
        marker = unique_id("after-inject")
        c.send_mail("a@client.test", ["alice@example.test"], message(marker))
    server.wait_messages("alice@example.test", marker=marker)
    server.wait_queue_empty()
    assert server.messages("alice@example.test", marker=tid) == []


def test_mail_before_starttls_where_required(server):
    # [submission] has require_tls = yes by default.
    with server.connect("submission") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>") == \
            "530 5.7.0 Must issue a STARTTLS command first"


def test_mx_offers_starttls_and_accepts_cleartext_by_default(make_instance):
    """RFC 6109 §5.3: the incoming point announces STARTTLS and accepts unencrypted
    connections as well ([mx] require_tls defaults to no)."""
    inst = make_instance(conf={"mx": {"require_tls": None}})   # the default
    with inst.connect("mx") as c:
        assert "STARTTLS" in c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
        c.cmd("RSET")
        c.starttls()
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"


def test_mx_require_tls_yes(make_instance):
    inst = make_instance(conf={"mx": {"require_tls": "yes"}})
    with inst.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "530 5.7.0 Must issue a STARTTLS command first"
        c.starttls()
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_versions_accepted(server, version):
    v = getattr(ssl.TLSVersion, version)
    ctx = client_tls_context(min_version=v, max_version=v)
    with server.connect("mx") as c:
        c.ehlo()
        tls = c.starttls(ctx)
        assert tls.version() == version.replace("_", ".")
        c.ehlo()
    with server.connect("submissions", context=ctx) as c:
        assert c.sock.version() == version.replace("_", ".")
        c.ehlo()


# --------------------------------------------------------------------------- wrong TLS

@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_refused_starttls(server, version):
    v = getattr(ssl.TLSVersion, version)
    ctx = client_tls_context(min_version=v, max_version=v, legacy=True)
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as e:
            ctx.wrap_socket(c.sock, server_hostname=HOST)
        assert "NO_PROTOCOLS_AVAILABLE" not in str(e.value), "the client could not offer it"
    assert_alive(server)


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_refused_implicit(server, version):
    v = getattr(ssl.TLSVersion, version)
    ctx = client_tls_context(min_version=v, max_version=v, legacy=True)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as e:
        Client(server.ports["submissions"], tls=True, context=ctx)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(e.value), "the client could not offer it"
    assert_alive(server, "submissions")


def test_plaintext_to_implicit_tls_port(server):
    s = socket.create_connection(("127.0.0.1", server.ports["submissions"]), timeout=5)
    s.sendall(b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\n")
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail("server did not close the connection after plaintext on the TLS port")
    s.close()
    assert b"250" not in data and b"220 " not in data, data   # at most a TLS alert
    assert_alive(server, "submissions")
    assert_alive(server, "mx")


def test_garbage_after_starttls(server):
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        c.send(b"this is not a TLS ClientHello\r\nQUIT\r\n")
        c.sock.settimeout(5)
        data = b""
        try:
            while True:
                chunk = c.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        assert b"221" not in data and b"250" not in data, data
    assert_alive(server)


def test_truncated_handshake_then_close(server):
    # Start a real handshake in memory and send only half of the ClientHello.
    ctx = client_tls_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        c.send(hello[: len(hello) // 2])
    s = socket.create_connection(("127.0.0.1", server.ports["submissions"]), timeout=5)
    s.sendall(hello[:5])
    s.close()
    assert_alive(server)
    assert_alive(server, "submissions")


# --------------------------------------------------------------------------- implicit TLS

def test_implicit_tls_submissions(server):
    tid = unique_id("smtps")
    msg = message(tid, sender="alice@example.test", to="bob@example.test")
    with server.connect("submissions") as c:      # the banner arrives over TLS
        version, cipher = c.sock.version(), c.sock.cipher()[0]
        kw = c.ehlo("laptop.client.test")
        assert "STARTTLS" not in kw and "AUTH PLAIN LOGIN" in kw and "REQUIRETLS" in kw
        assert c.cmd("STARTTLS") == "503 5.5.1 TLS already active"
        assert c.cmd("MAIL FROM:<alice@example.test>") == "530 5.7.0 Authentication required"
        assert c.auth_plain("alice@example.test", password("alice@example.test")) == \
            "235 2.7.0 Authentication successful"
        qid = c.send_mail("alice@example.test", ["bob@example.test"], msg)
    [m] = server.wait_messages("bob@example.test", marker=tid)
    rp, dt, rcv, rest = split_delivered(m.data)
    assert rp == "Return-Path: <alice@example.test>"
    assert dt == "Delivered-To: bob@example.test"
    assert received_re("laptop.client.test", "ESMTPSA", qid, rcpt="bob@example.test",
                       tls=(version, cipher)).match(rcv), rcv
    assert rest == msg


def test_received_says_esmtps_and_utf8smtps(server):
    t1, t2 = unique_id("esmtps"), unique_id("utf8smtps")
    with server.connect("mx") as c:
        c.ehlo()
        tls = c.starttls()
        c.ehlo("relay.client.test")
        q1 = c.send_mail("a@client.test", ["erin@example.test"], message(t1))
        q2 = c.send_mail("jörg@client.test", ["erin@example.test"], message(t2),
                         mail_params="SMTPUTF8")
        version, cipher = tls.version(), tls.cipher()[0]
    [m1] = server.wait_messages("erin@example.test", marker=t1)
    [m2] = server.wait_messages("erin@example.test", marker=t2)
    r1, r2 = split_delivered(m1.data)[2], split_delivered(m2.data)[2]
    assert received_re("relay.client.test", "ESMTPS", q1, rcpt="erin@example.test",
                       tls=(version, cipher)).match(r1), r1
    assert received_re("relay.client.test", "UTF8SMTPS", q2, rcpt="erin@example.test",
                       tls=(version, cipher)).match(r2), r2
