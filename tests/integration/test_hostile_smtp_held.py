"""Hostile SMTP input that pecd already withstood (issue 16), kept so it never regresses:

- SMTP smuggling inside BDAT (every bare-LF/CR end-of-data variant, whole and one octet
  at a time) and CR/LF split across BDAT chunks (test_smuggling.py covers DATA);
- STARTTLS command injection (CVE-2011-0411 class) on the server side beyond
  test_starttls.py: AUTH pipelined after STARTTLS, EHLO+STARTTLS+commands in one packet;
- on the client side: a next hop that sends "220 ready" and an injected reply in one
  packet must not have the injected reply taken for the first reply inside TLS;
- relay attempts on an unauthenticated MX in every address form (percent hack, source
  routes, address literals, quoted local parts, trailing dot, bang paths): each is refused
  or delivered locally, and a catch-all next hop never sees a connection."""
import base64
import os
import socket
import ssl
import threading
import time

import pytest

from pecd_harness import (HOST, client_tls_context, free_port, message, password, queued_qid,
                          split_delivered, unique_id)
from test_smuggling import BARE, VARIANTS, check_nothing_delivered, smuggled_payload

ALICE = "alice@example.test"


def bdat_start(c):
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
    assert c.cmd(f"RCPT TO:<{ALICE}>") == "250 2.1.5 Recipient OK"


# ----------------------------------------------------------------------------- BDAT smuggling

@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_bdat_smuggling_variant(server, variant, trickle):
    """In BDAT the end-of-data marker means nothing, and a bare LF or CR still refuses
    the message: the 'smuggled' transaction is data of a refused message."""
    tid, smug = unique_id("bdat-smuggle"), unique_id("bdat-smuggled")
    data = smuggled_payload(tid, smug, VARIANTS[variant])
    with server.connect("mx") as c:
        bdat_start(c)
        c.send(f"BDAT {len(data)} LAST\r\n".encode())
        if trickle:
            for i in range(len(data)):
                c.send(data[i:i + 1])
        else:
            c.send(data)
        assert c.reply() == BARE
        check_nothing_delivered(server, c, [tid, smug])


def test_bdat_crlf_split_across_chunks_is_a_line_end(server):
    tid = unique_id("bdat-split")
    msg = message(tid, body=b"first line\r\nsecond line\r\n")
    cut = msg.index(b"first line\r\n") + len(b"first line\r")      # chunk 1 ends with CR
    with server.connect("mx") as c:
        bdat_start(c)
        c.send(f"BDAT {cut}\r\n".encode() + msg[:cut])
        assert c.reply() == f"250 2.0.0 {cut} octets received"
        c.send(f"BDAT {len(msg) - cut} LAST\r\n".encode() + msg[cut:])
        qid = queued_qid(c.reply())
    [m] = server.wait_messages(ALICE, marker=tid)
    assert m.qid == qid and split_delivered(m.data)[3] == msg


@pytest.mark.parametrize("second", [b"X rest\r\n", b""], ids=["then-text", "then-last-empty"])
def test_bdat_bare_cr_at_chunk_end(server, second):
    """A CR at the end of a chunk not followed by LF at the start of the next (or at the
    very end of the message) is a bare CR."""
    tid = unique_id("bdat-cr")
    first = message(tid, body=b"line\r\nends with CR\r")
    with server.connect("mx") as c:
        bdat_start(c)
        c.send(f"BDAT {len(first)}\r\n".encode() + first)
        assert c.reply() == f"250 2.0.0 {len(first)} octets received"
        c.send(f"BDAT {len(second)} LAST\r\n".encode() + second)
        assert c.reply() == BARE
        check_nothing_delivered(server, c, [tid])


# ----------------------------------------------------------------------------- STARTTLS, server

def test_starttls_injected_auth_is_discarded(server):
    """Credentials pipelined after STARTTLS in clear text never authenticate the TLS
    session."""
    token = base64.b64encode(f"\0{ALICE}\0{password(ALICE)}".encode()).decode()
    with server.connect("submission") as c:
        c.ehlo()
        c.send(f"STARTTLS\r\nAUTH PLAIN {token}\r\nMAIL FROM:<{ALICE}>\r\n".encode())
        assert c.reply() == "220 2.0.0 Ready to start TLS"
        assert c.buf == b""
        c.sock = client_tls_context().wrap_socket(c.sock, server_hostname=HOST)
        c.ehlo()
        assert c.cmd(f"MAIL FROM:<{ALICE}>") == "530 5.7.0 Authentication required"
        assert c.auth_plain(ALICE, password(ALICE)) == "235 2.7.0 Authentication successful"


def test_ehlo_starttls_and_injection_in_one_packet(server):
    with server.connect("mx") as c:
        c.send(b"EHLO client.test\r\nSTARTTLS\r\nMAIL FROM:<x@y.test>\r\nRCPT TO:<alice@"
               b"example.test>\r\n")
        lines = c.reply_lines()
        assert lines[0] == f"250-{HOST}" and "250-STARTTLS" in lines, lines
        assert c.reply() == "220 2.0.0 Ready to start TLS"
        assert c.buf == b""
        c.sock = client_tls_context().wrap_socket(c.sock, server_hostname=HOST)
        # nothing injected ran: no reply is waiting, and the session restarted
        assert c.try_reply(0.5) is None
        assert c.cmd("MAIL FROM:<a@client.test>") == "503 5.5.1 Send EHLO or HELO first"


# ----------------------------------------------------------------------------- STARTTLS, client

class InjectingNextHop:
    """A next hop on 127.0.0.1:port that answers STARTTLS with "220 ..." and an injected
    "250 injected" in the same packet, then speaks TLS with cert/key.  After TLS it
    advertises SIZE: a client that took the injected line for the EHLO reply would send
    MAIL without SIZE= and fall out of step (DATA would get a 250, not 354)."""

    def __init__(self, port, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.mail_lines, self.accepted, self.errors = [], [], []
        self.injected = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            try:
                self._session(conn)
            except (OSError, ssl.SSLError, ValueError) as e:
                self.errors.append(repr(e))
            finally:
                conn.close()

    def _session(self, conn):
        conn.settimeout(10)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"220 mx.evil.test ESMTP\r\n")
        f = conn.makefile("rb")
        line = f.readline()
        assert line.upper().startswith(b"EHLO"), line
        conn.sendall(b"250-mx.evil.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
        line = f.readline()
        assert line.strip().upper() == b"STARTTLS", line
        conn.sendall(b"220 2.0.0 Ready to start TLS\r\n250 injected\r\n")   # one packet
        self.injected += 1
        tls = self.ctx.wrap_socket(conn, server_side=True)
        f = tls.makefile("rb")

        def send(s):
            tls.sendall(s.encode() + b"\r\n")

        while True:
            line = f.readline()
            if not line:
                return
            verb = line.strip().split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                send("250-mx.evil.test\r\n250-SIZE 10000000\r\n250 8BITMIME")
            elif verb == b"MAIL":
                self.mail_lines.append(line.strip().decode())
                send("250 2.1.0 mail ok")
            elif verb == b"RCPT":
                send("250 2.1.5 rcpt ok")
            elif verb == b"DATA":
                send("354 go on")
                data = b""
                while True:
                    l = f.readline()
                    if not l or l == b".\r\n":
                        break
                    data += l
                self.accepted.append(data)
                send("250 2.0.0 accepted")
            elif verb in (b"RSET", b"NOOP"):
                send("250 2.0.0 OK")
            elif verb == b"QUIT":
                send("221 2.0.0 Bye")
                return
            else:
                send("502 5.5.1 unknown")


def test_client_discards_reply_injected_after_starttls_220(make_instance):
    port = free_port()
    inst = make_instance(conf={"routes": {"remote.test": f"127.0.0.1:{port}"},
                               "outbound": {"tls": "encrypt", "timeout": "10s"},
                               "queue": {"retry_min": "1s", "retry_max": "2s"}}, start=False)
    hop = InjectingNextHop(port, os.path.join(inst.dir, "tls.crt"),
                           os.path.join(inst.dir, "tls.key"))
    try:
        inst.start()
        tid = unique_id("inject-client")
        with inst.connect("submission") as c:
            c.ehlo()
            c.starttls()
            c.ehlo()
            assert c.auth_plain(ALICE, password(ALICE)).startswith("235")
            c.send_mail(ALICE, ["someone@remote.test"],
                        message(tid, sender=ALICE, to="someone@remote.test"))
        end = time.monotonic() + 20
        while not hop.accepted and time.monotonic() < end:
            time.sleep(0.1)
        assert hop.injected >= 1
        assert len(hop.accepted) == 1, (hop.accepted, hop.mail_lines, hop.errors,
                                        inst.log(tail=30))
        assert tid.encode() in hop.accepted[0]
        # the EHLO reply pecd used was the real one, read inside TLS
        assert all(" SIZE=" in m for m in hop.mail_lines), hop.mail_lines
        inst.wait_queue_empty()
    finally:
        hop.stop()


# ----------------------------------------------------------------------------- relay attempts

class CatchAll:
    """A TCP listener that only counts the connections it gets (a relay would connect)."""

    def __init__(self, port):
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


RELAY_DENIED = "550 5.7.1 <{}>: Relay access denied"
NO_SUCH_USER = "550 5.1.1 <{}>: Recipient address rejected: no such user"
SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address> [parameters]"

# (address as sent, the expected reply); every form of "relay through us"
RELAY_ATTEMPTS = [
    ("user%elsewhere.test@example.test", NO_SUCH_USER.format("user%elsewhere.test@example.test")),
    ("alice%elsewhere.test@example.test",
     NO_SUCH_USER.format("alice%elsewhere.test@example.test")),
    ("@example.test:user@elsewhere.test", RELAY_DENIED.format("user@elsewhere.test")),
    ("@elsewhere.test,@example.test:user@elsewhere.test", RELAY_DENIED.format("user@elsewhere.test")),
    ("user@[127.0.0.1]", RELAY_DENIED.format("user@[127.0.0.1]")),
    ("alice@[127.0.0.1]", RELAY_DENIED.format("alice@[127.0.0.1]")),
    ("user@[IPv6:::1]", RELAY_DENIED.format("user@[IPv6:::1]")),
    ("user@127.0.0.1", RELAY_DENIED.format("user@127.0.0.1")),
    ('"user@elsewhere.test"@example.test', NO_SUCH_USER.format('"user@elsewhere.test"@example.test')),
    ('"user%elsewhere.test"@example.test', NO_SUCH_USER.format('"user%elsewhere.test"@example.test')),
    ('"user\\"@elsewhere.test"@example.test',
     NO_SUCH_USER.format('"user\\"@elsewhere.test"@example.test')),
    ('"user@elsewhere.test"', SYNTAX),
    ("alice@example.test.", SYNTAX),
    ("user@elsewhere.test.", SYNTAX),
    ("elsewhere.test!user@example.test", NO_SUCH_USER.format("elsewhere.test!user@example.test")),
    ("elsewhere.test!user", SYNTAX),
    ("user%elsewhere.test", SYNTAX),
    ("user@elsewhere.test@example.test", SYNTAX),
    ("user@example.test@elsewhere.test", SYNTAX),
    ("user@[127.0.0.1]@example.test", SYNTAX),
    ("USER@ELSEWHERE.TEST", RELAY_DENIED.format("USER@ELSEWHERE.TEST")),
    ("postmaster@elsewhere.test", RELAY_DENIED.format("postmaster@elsewhere.test")),
    ("alice@sub.example.test", RELAY_DENIED.format("alice@sub.example.test")),
]


def test_relay_attempts_on_unauthenticated_mx(make_instance):
    port = free_port()
    hop = CatchAll(port)
    inst = make_instance(conf={"routes": {"*": f"127.0.0.1:{port}"},
                               "outbound": {"tls": "none", "timeout": "5s"}})
    try:
        for addr, want in RELAY_ATTEMPTS:
            with inst.connect("mx") as c:      # one session each: max_errors stays away
                c.ehlo()
                assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
                assert c.cmd(f"RCPT TO:<{addr}>") == want, addr
        # Source routes toward our own users are ignored (rfc5321bis): local delivery.
        tid = unique_id("relay-local")
        msg = message(tid)
        with inst.connect("mx") as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
            for addr, _ in RELAY_ATTEMPTS[:6]:        # refused ones inside the transaction
                assert not c.cmd(f"RCPT TO:<{addr}>").startswith("250")
            assert c.cmd("RCPT TO:<@elsewhere.test,@other.test:alice@example.test>") == \
                "250 2.1.5 Recipient OK"
            assert c.cmd("RCPT TO:<@elsewhere.test:postmaster>") == "250 2.1.5 Recipient OK"
            qid = queued_qid(c.data(msg))
        [m] = inst.wait_messages(ALICE, marker=tid)
        assert m.qid == qid
        [p] = inst.wait_messages("postmaster@example.test", marker=tid)
        assert p.qid == qid
        inst.wait_queue_empty()
        assert hop.connections == 0, "pecd connected to the catch-all next hop: it relayed"
        assert inst.queue_lines() == [] or inst.queue_is_empty()
    finally:
        hop.stop()
