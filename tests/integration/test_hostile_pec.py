"""Attacks on the PEC roles between two providers (issue 16): what an outsider or a
co-recipient can do with the messages it sees.

- A poisoned duplicate: while provider B is unreachable for A, an attacker who saw the
  envelope's Message-ID sends B an unsigned ordinary message with it; A's genuine envelope,
  retried later, must still be delivered (only verified messages are recorded as taken in).
- A genuine copy replayed by a co-recipient: delivered once, the sender gets its receipts.
- Hostile file names in a breve delivery receipt (RFC 2231 / RFC 2047 with CR LF): never
  written raw into the receipt's header fields.
"""
import hashlib
import os
import socket
import smtplib
import ssl
import threading
import time

import pytest

from pec_providers import make_providers, openssl_verify, ricevuta, trasporto, verify
from pecd_harness import free_port


class Forwarder:
    """A TCP forwarder from a loopback port to another: A's route to B goes through it, so
    the test decides when B is reachable for A (nothing listens before start())."""

    def __init__(self, port, to_port):
        self.port, self.to_port = port, to_port
        self.sock = None
        self.threads = []
        self.stopping = False

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.to_port), timeout=10)
            except OSError:
                c.close()
                continue
            for a, b in ((c, u), (u, c)):
                t = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                t.start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.stopping = True
        if self.sock:
            self.sock.close()


def pec_message(frm, to, subject, extra="", body="Buongiorno,\r\nprova.\r\n"):
    head = (f"From: <{frm}>\r\nTo: {', '.join('<%s>' % t for t in to)}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{hashlib.sha1(subject.encode()).hexdigest()}@client.test>\r\n{extra}")
    return (head + "\r\n" + body).encode() if "Content-Type" not in extra else (head + body).encode()


@pytest.fixture
def world(tmp_path):
    """A and B; A reaches B only through a forwarder that is down at first; A retries every
    second."""
    a, b, ca, directory = make_providers(tmp_path)
    fwd = Forwarder(free_port(), b.ports["mx"])
    a.write_config({"pec.b.test": fwd.port})
    b.write_config({"pec.a.test": a.ports["mx"]})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
        p.add_user("bob")
    a.start()
    b.start()
    yield a, b, fwd, ca, directory
    for p in (a, b):
        p.stop()
    fwd.stop()


def wait_log(p, text, timeout=30):
    end = time.time() + timeout
    while text not in p.log(2000):
        assert time.time() < end, f"{text!r} not in the log of {p.domain}:\n{p.log(40)}"
        time.sleep(0.1)


def send_mx(p, ca, mail_from, rcpts, raw):
    """An outsider's transfer to p's MX over STARTTLS, no login."""
    ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", p.ports["mx"], timeout=30) as s:
        s.starttls(context=ctx)
        s.sendmail(mail_from, rcpts, raw)


def envelope_for_anna(a):
    """The envelope A delivered to its own user anna (the co-recipient, our attacker)."""
    (env,) = a.wait_mail("anna", trasporto("posta-certificata"))
    return env


def test_unsigned_message_cannot_poison_duplicate_suppression(world):
    a, b, fwd, ca, directory = world
    a.submit("mario", ["bob@pec.b.test", "anna@pec.a.test"],
             pec_message("mario@pec.a.test", ["bob@pec.b.test", "anna@pec.a.test"], "veleno"))
    env = envelope_for_anna(a)
    mid = env[2]["Message-ID"].strip()
    wait_log(a, "status=deferred")          # B is unreachable for A
    # the attacker: an ordinary, unsigned message to bob carrying the envelope's Message-ID
    poison = (f"From: <anna@pec.a.test>\r\nTo: <bob@pec.b.test>\r\nSubject: finto\r\n"
              f"Message-ID: {mid}\r\n\r\nnon sono una PEC\r\n").encode()
    send_mx(b, ca, "anna@pec.a.test", ["bob@pec.b.test"], poison)
    (anom,) = b.wait_mail("bob", trasporto("errore"))       # an anomaly, as before
    fwd.start()                                              # A's retry now reaches B
    (got,) = b.wait_mail("bob", trasporto("posta-certificata"), timeout=40)
    v, rc = verify(got[0], ca, directory)
    assert rc == 0 and v["valid"], v
    assert got[2]["Message-ID"].strip() == mid
    # the sender holds the evidence of bob's delivery
    recs = a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=2)   # anna's and bob's
    assert "bob@pec.b.test" in [verify(r[0], ca, directory)[0]["daticert"]["consegna"]
                                for r in recs]
    assert "duplicate dropped" not in b.log(2000)


def test_replayed_genuine_copy_is_taken_in_once(world):
    """A co-recipient replays the genuine envelope (signed by A) to B before A's retry: B
    takes it in for bob (it is A's signed message), and A's own transfer is the duplicate.
    bob has one envelope; the sender has the presa in carico and the delivery receipt."""
    a, b, fwd, ca, directory = world
    a.submit("mario", ["bob@pec.b.test", "anna@pec.a.test"],
             pec_message("mario@pec.a.test", ["bob@pec.b.test", "anna@pec.a.test"], "replica"))
    env = envelope_for_anna(a)
    wait_log(a, "status=deferred")
    raw = env[1].split(b"\r\n", 2)[2]       # without Return-Path and Delivered-To
    send_mx(b, ca, "mario@pec.a.test", ["bob@pec.b.test"], raw)
    b.wait_mail("bob", trasporto("posta-certificata"))
    fwd.start()
    wait_log(b, "duplicate dropped", timeout=40)
    time.sleep(1)
    assert len(b.mails("bob")) == 1
    a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=2)   # bob's and anna's


HOSTILE_NAMES = [
    # RFC 2231: CR LF and a whole new header block with an HTML part
    "filename*=UTF-8''%0D%0AContent-Type%3A%20text%2Fhtml%0D%0A%0D%0A%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    # RFC 2047 in a quoted name
    'filename="=?UTF-8?Q?doc=0D=0AX-Injected:_yes?="',
]


@pytest.mark.parametrize("params", HOSTILE_NAMES)
def test_breve_receipt_never_writes_a_decoded_name_raw(world, params):
    a, b, fwd, ca, directory = world
    fwd.start()
    msg = pec_message("mario@pec.a.test", ["bob@pec.b.test"], f"breve {params[:12]}",
                      extra="X-TipoRicevuta: breve\r\nMIME-Version: 1.0\r\n"
                            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n",
                      body="\r\n--b1\r\nContent-Type: text/plain\r\n\r\nIn allegato.\r\n"
                           f"--b1\r\nContent-Type: application/pdf\r\n"
                           f"Content-Disposition: attachment; {params}\r\n"
                           "Content-Transfer-Encoding: base64\r\n\r\nUERGREFUQQ==\r\n--b1--\r\n")
    a.submit("mario", ["bob@pec.b.test"], msg)
    (r,) = a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    v, rc = verify(r[0], ca, directory)
    assert rc == 0 and v["valid"] and v["variant"] == "breve", v
    code, err = openssl_verify(r[1], ca)
    assert code == 0, err
    # the copy inside keeps the original's structure: two leaves, the second the hash
    orig = None
    for p in r[2].walk():
        if p.get_content_type() == "message/rfc822" and p.get_filename() == "postacert.eml":
            orig = p.get_payload(0)
    assert orig is not None
    leaves = [p for p in orig.walk() if not p.is_multipart()]
    assert len(leaves) == 2, [p.get_content_type() for p in leaves]
    assert [p.get_content_type() for p in leaves] == ["text/plain", "text/plain"]
    name = leaves[1].get_filename()
    assert name.endswith(".hash") and not name.endswith(".hash.hash"), name
    assert "\r" not in name and "\n" not in name, repr(name)
    assert leaves[1].get_payload(decode=True).decode().strip() == \
        hashlib.sha1(b"UERGREFUQQ==").hexdigest()
    # no header line of the copy was made from the name (the receipt's own HTML text
    # part comes before the copy)
    copy = r[1][r[1].index(b'filename="postacert.eml"'):]
    for line in copy.split(b"\r\n"):
        assert not line.lower().startswith(b"x-injected"), line
        assert not line.lower().startswith(b"content-type: text/html"), line
