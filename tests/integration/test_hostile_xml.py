"""Hostile XML in daticert.xml (issue 16 item 1): what a stranger can send to the MX over
STARTTLS without logging in, and what `pecctl verify` is given to read.

- The entity bomb of the incident (a 100 KB internal entity used 20,000 times, garbage
  signature): pecd's peak RSS (VmHWM) stays within 200 MB of what it was, the message
  becomes an anomaly, and pecd serves the next session; also eight at once.
- `pecctl verify` on the bomb: quick, bounded RSS, a clear reason.
- 60,000 attributes on one element: bounded CPU (pecd and pecctl).
- The attacks that held before keep holding (XXE to a local file and to a URL, XInclude,
  billion laughs, parameter entities, deep nesting): signed by a provider of the
  directory, so that they reach the daticert parser, each becomes an anomaly with the
  parser's reason and the local file's content appears nowhere pecd writes.

A watchdog kills a measured process above 1.5 GB, so a regression fails the test instead
of exhausting the host.
"""
import base64
import http.server
import json
import os
import secrets
import smtplib
import ssl
import subprocess
import threading
import time
from email import message_from_bytes, policy

import pytest

from pec_providers import make_providers, trasporto
from pecd_harness import PECCTL, free_port

KILL_KB = 1536 * 1024            # the watchdog's limit
GROWTH_KB = 200 * 1024           # pecd's allowed peak growth per test
TOO_MANY = "attributes on one element"
NOT_ALLOWED = "daticert: DOCTYPE/entity declarations are not allowed"


# ----------------------------------------------------------------------------- messages

def daticert(mittente="mario@pec.a.test", prolog="", extra=""):
    """A daticert of an envelope from pec.a.test, with PROLOG before the root, MITTENTE as
    the sender's text and EXTRA at the end of <dati>."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + prolog +
            '<postacert tipo="posta-certificata" errore="nessuno"><intestazione>'
            f'<mittente>{mittente}</mittente>'
            '<destinatari tipo="certificato">anna@pec.b.test</destinatari>'
            '<risposte>mario@pec.a.test</risposte><oggetto>prova</oggetto></intestazione>'
            '<dati><gestore-emittente>Provider A</gestore-emittente><data zona="+0100">'
            '<giorno>01/01/2025</giorno><ora>10:00:00</ora></data>'
            '<identificativo>opec1.1@pec.a.test</identificativo>' + extra +
            '</dati></postacert>\n').encode()


def entity_bomb(kb=100, refs=20000):
    """The incident's daticert: one internal entity of KB kilobytes used REFS times."""
    return daticert(prolog=f'<!DOCTYPE postacert [<!ENTITY x "{"A" * (kb * 1024)}">]>\n',
                    mittente="&x;" * refs)


def many_attributes(n=60000):
    x = daticert()
    return x.replace(b'errore="nessuno"',
                     b'errore="nessuno"' + b"".join(b' a%d=""' % i for i in range(n)), 1)


def envelope(xml, subject, signer=None):
    """A transport envelope from pec.a.test carrying XML as daticert.xml, with a Message-ID
    of its own (the incoming point drops one it has taken in before).  SIGNER =
    (certificate, key, chain) signs the content with openssl (a provider of the
    directory); without it the signature part is garbage."""
    b64 = base64.encodebytes(xml).replace(b"\n", b"\r\n")
    content = (b'Content-Type: multipart/mixed; boundary="M"\r\n\r\n'
               b"--M\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
               b"Messaggio di posta certificata\r\n"
               b'--M\r\nContent-Type: application/xml; name="daticert.xml"\r\n'
               b'Content-Disposition: inline; filename="daticert.xml"\r\n'
               b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--M--\r\n")
    if signer:
        cert, key, chain = signer
        r = subprocess.run(["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-signer",
                            cert, "-inkey", key, "-certfile", chain, "-outform", "DER"],
                           input=content, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        sig = base64.encodebytes(r.stdout).replace(b"\n", b"\r\n")
    else:
        sig = b"TUlJR2FyYmFnZQ==\r\n"
    return (b'From: "Per conto di: mario@pec.a.test" <posta-certificata@pec.a.test>\r\n'
            b"To: anna@pec.b.test\r\nSubject: POSTA CERTIFICATA: " + subject.encode() + b"\r\n"
            b"Message-ID: <opec1." + secrets.token_hex(8).encode() + b"@pec.a.test>\r\n"
            b"X-Trasporto: posta-certificata\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; "
            b'protocol="application/pkcs7-signature"; micalg=sha-256; boundary="S"\r\n\r\n'
            b"--S\r\n" + content + b"\r\n--S\r\n"
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + sig + b"--S--\r\n")


# ----------------------------------------------------------------------------- measuring

def proc_status(pid, key):
    """A kB value of /proc/PID/status (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def proc_cpu(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Watchdog:
    """Samples PID's VmRSS every 5 ms; kills it above KILL_KB (or after DEADLINE
    seconds) so that a regression fails a test rather than exhausting the host."""

    def __init__(self, pid, deadline=120):
        self.pid, self.deadline, self.peak, self.killed = pid, deadline, 0, None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        end = time.time() + self.deadline
        while not self.done.is_set():
            try:
                rss = proc_status(self.pid, "VmRSS")
            except (OSError, AssertionError):
                return
            self.peak = max(self.peak, rss)
            if rss > KILL_KB or time.time() > end:
                self.killed = f"RSS {rss} kB" if rss > KILL_KB else "deadline"
                os.kill(self.pid, 9)
                return
            self.done.wait(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(5)


def rss_bound_kb():
    """200 MiB, or more when pytest itself is larger: a child's ru_maxrss counts the
    parent's memory it was forked (vforked) from until it execs, so after a few hundred
    tests the bound would measure pytest, not pecctl.  The bomb took gigabytes."""
    import resource
    return max(200 * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + 16 * 1024)


def pecctl_measured(*args, timeout=60):
    """Runs pecctl under the watchdog; returns (exit status, stdout, peak RSS in kB from
    wait4, CPU seconds, wall seconds)."""
    t0 = time.time()
    p = subprocess.Popen([PECCTL, *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    out = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
    reader.start()
    with Watchdog(p.pid, deadline=timeout) as w:
        _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    assert w.killed is None, f"pecctl {args}: killed by the watchdog ({w.killed})"
    return (p.returncode, out[0].decode(errors="replace"), ru.ru_maxrss,
            ru.ru_utime + ru.ru_stime, time.time() - t0)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def mx(tmp_path_factory):
    """Provider B (pec.b.test, [pec] enabled, 8 delivery workers) with a mailbox anna;
    provider A (pec.a.test) exists in the directory only: its key signs test messages."""
    tmp = tmp_path_factory.mktemp("hostile")
    a, b, ca, directory = make_providers(tmp)
    b.write_config({})
    b.add_user("anna")
    b.start()
    signer = (os.path.join(a.dir, "signing.pem"), os.path.join(a.dir, "signing.key"),
              os.path.join(ca, "ca.pem"))
    yield b, signer, ca, directory, tmp
    b.stop()


def send(b, msg):
    """One SMTP session to the MX: STARTTLS, no login."""
    with smtplib.SMTP("127.0.0.1", b.ports["mx"], timeout=60) as s:
        s.starttls(context=ssl._create_unverified_context())
        assert s.sendmail("posta-certificata@pec.a.test", ["anna@pec.b.test"], msg) == {}


def anomaly_text(raw):
    """Every decoded text part of a stored anomaly envelope, as one string."""
    out = []
    for part in message_from_bytes(raw, policy=policy.compat32).walk():
        if part.get_content_maintype() == "text":
            out.append((part.get_payload(decode=True) or b"").decode("latin-1"))
    return "\n".join(out)


def wait_anomalies(b, subject, count=1, timeout=60, watch=None):
    """The COUNT anomaly envelopes in anna's mailbox whose Subject holds SUBJECT; fails at
    once if pecd exits meanwhile (killed by the watchdog, or crashed)."""
    end = time.time() + timeout
    while True:
        got = [x for x in b.mails("anna")
               if trasporto("errore")(x[2]) and subject in (x[2]["Subject"] or "")]
        if len(got) >= count:
            return got
        assert b.proc.poll() is None, \
            f"pecd exited ({watch.killed if watch and watch.killed else b.proc.returncode})"
        assert time.time() < end, f"{len(got)} of {count} anomalies for {subject!r}\n{b.log(40)}"
        time.sleep(0.05)


def wait_anomaly(b, subject, watch=None):
    (x,) = wait_anomalies(b, subject, watch=watch)
    return anomaly_text(x[1])


def serves_next_session(b, subject):
    """pecd is alive and a new session delivers: ordinary mail becomes an anomaly too."""
    assert b.proc.poll() is None, b.log(50)
    with smtplib.SMTP("127.0.0.1", b.ports["mx"], timeout=30) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.sendmail("someone@plain.test", ["anna@pec.b.test"],
                   f"From: <someone@plain.test>\r\nTo: <anna@pec.b.test>\r\n"
                   f"Subject: {subject}\r\n\r\nhello\r\n".encode())
    wait_anomaly(b, subject)


# ----------------------------------------------------------------------------- tests

def test_entity_bomb_to_the_mx(mx):
    b, signer, ca, directory, tmp = mx
    msg = envelope(entity_bomb(), "bomba")
    assert 200_000 < len(msg) < 250_000                    # the incident's 222 KB
    pid = b.proc.pid
    before = proc_status(pid, "VmRSS")
    t0 = time.time()
    with Watchdog(pid) as w:
        send(b, msg)
        text = wait_anomaly(b, "bomba", w)
    assert w.killed is None, f"pecd killed by the watchdog: {w.killed}"
    growth = proc_status(pid, "VmHWM") - before
    assert growth < GROWTH_KB, f"pecd's peak grew by {growth} kB"
    assert time.time() - t0 < 30
    # an anomaly for the signature, found before any XML was read
    assert "unreadable-signature" in text and "DOCTYPE" not in text, text
    serves_next_session(b, "dopo la bomba")


def test_several_bombs_at_once(mx):
    b, signer, ca, directory, tmp = mx
    n = 8                                                  # as many as delivery workers
    msgs = [envelope(entity_bomb(), f"bomba parallela {i}") for i in range(n)]
    pid = b.proc.pid
    before = proc_status(pid, "VmRSS")
    errors = []

    def one(m):
        try:
            send(b, m)
        except Exception as e:                             # reported below
            errors.append(repr(e))

    with Watchdog(pid) as w:
        threads = [threading.Thread(target=one, args=(m,)) for m in msgs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert w.killed is None and not errors, (w.killed, errors)
        wait_anomalies(b, "bomba parallela", count=n, timeout=90, watch=w)
    assert w.killed is None, f"pecd killed by the watchdog: {w.killed}"
    growth = proc_status(pid, "VmHWM") - before
    assert growth < GROWTH_KB, f"pecd's peak grew by {growth} kB for {n} bombs"
    serves_next_session(b, "dopo le bombe")


def test_pecctl_verify_on_the_bomb(mx):
    b, signer, ca, directory, tmp = mx
    f = tmp / "bomb.eml"
    f.write_bytes(envelope(entity_bomb(), "bomba"))
    rc, out, maxrss, cpu, wall = pecctl_measured("verify", "--json", f)
    assert rc == 1 and wall < 10 and maxrss < rss_bound_kb(), (rc, wall, maxrss)
    v = json.loads(out)
    assert v["reason"] == "unreadable-signature" and v["valid"] is False
    assert v["daticert"] is None and v["daticert_error"] == NOT_ALLOWED, v
    # the same bomb signed by a provider of the directory: the signature holds, the
    # daticert is refused with the reason
    f2 = tmp / "bomb-signed.eml"
    f2.write_bytes(envelope(entity_bomb(), "bomba firmata", signer))
    rc, out, maxrss, cpu, wall = pecctl_measured("verify", "--json", "--trust",
                                                 os.path.join(ca, "ca.pem"), "--directory",
                                                 directory, f2)
    assert rc == 1 and wall < 10 and maxrss < rss_bound_kb(), (rc, wall, maxrss)
    v = json.loads(out)
    assert (v["reason"], v["detail"]) == ("daticert-invalid", NOT_ALLOWED), v
    assert v["signer"]["email"] == "posta-certificata@pec.a.test"
    # the text form says it too
    r = subprocess.run([PECCTL, "verify", str(f)], capture_output=True, text=True, timeout=30)
    assert "not usable: " + NOT_ALLOWED in r.stdout, r.stdout


def test_many_attributes_bounded_cpu(mx):
    b, signer, ca, directory, tmp = mx
    # signed, so that it reaches the daticert parser of the incoming point
    msg = envelope(many_attributes(), "attributi", signer)
    pid = b.proc.pid
    cpu0 = proc_cpu(pid)
    with Watchdog(pid) as w:
        send(b, msg)
        text = wait_anomaly(b, "attributi", w)
    assert w.killed is None
    cpu = proc_cpu(pid) - cpu0
    assert cpu < 2.0, f"pecd used {cpu:.2f} s of CPU for one message"
    assert "daticert-invalid" in text and TOO_MANY in text, text
    # pecctl, unsigned: never more than a moment either
    f = tmp / "attributes.eml"
    f.write_bytes(envelope(many_attributes(), "attributi"))
    rc, out, maxrss, cpu, wall = pecctl_measured("verify", "--json", f)
    v = json.loads(out)
    assert rc == 1 and cpu < 2.0 and TOO_MANY in v["daticert_error"], (cpu, v)
    serves_next_session(b, "dopo gli attributi")


class Exfil(http.server.BaseHTTPRequestHandler):
    hits = []
    secret = b""

    def do_GET(self):
        Exfil.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(Exfil.secret)

    def log_message(self, *a):
        pass


def test_xml_attacks_keep_holding(mx):
    b, signer, ca, directory, tmp = mx
    marker = "SEGRETO-" + secrets.token_hex(12)
    secret = tmp / "secret.txt"
    secret.write_text(marker + "\n")
    Exfil.secret, Exfil.hits = marker.encode(), []
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Exfil)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/x"
    laughs = ('<!DOCTYPE postacert [<!ENTITY l0 "lol">' +
              "".join(f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, 10)) +
              "]>")
    cases = {
        "xxe-file": (daticert(prolog=f'<!DOCTYPE p [<!ENTITY x SYSTEM "file://{secret}">]>',
                              mittente="&x;"), NOT_ALLOWED),
        "xxe-url": (daticert(prolog=f'<!DOCTYPE p [<!ENTITY x SYSTEM "{url}">]>',
                             mittente="&x;"), NOT_ALLOWED),
        "parameter-entity": (daticert(prolog=f'<!DOCTYPE p [<!ENTITY % p SYSTEM "file://{secret}">'
                                             f'<!ENTITY % q SYSTEM "{url}"> %p; %q;]>'),
                             NOT_ALLOWED),
        "external-dtd": (daticert(prolog=f'<!DOCTYPE postacert SYSTEM "{url}">'), NOT_ALLOWED),
        "billion-laughs": (daticert(prolog=laughs, mittente="&l9;"), NOT_ALLOWED),
        "xinclude": (daticert(mittente='<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
                                       f'href="file://{secret}" parse="text"/>'),
                     "daticert: <mittente> holds an element <include>"),
        "deep-nesting": (daticert(extra="<x>" * 100000 + "</x>" * 100000),
                         "daticert: elements nested deeper than 32"),
    }
    try:
        for name, (xml, reason) in cases.items():
            msg = envelope(xml, f"attacco {name}", signer)
            f = tmp / f"{name}.eml"
            f.write_bytes(msg)
            send(b, msg)
            text = wait_anomaly(b, f"attacco {name}")
            # refused after the signature held, with the parser's reason
            assert "daticert-invalid" in text and reason in text, (name, text)
            # pecctl gives the same reason and shows nothing of the file
            rc, out, maxrss, cpu, wall = pecctl_measured(
                "verify", "--json", "--trust", os.path.join(ca, "ca.pem"), "--directory",
                directory, f)
            v = json.loads(out)
            assert (rc, v["reason"]) == (1, "daticert-invalid") and \
                v["detail"].startswith(reason), (name, v)
            assert marker not in out
            assert wall < 10 and maxrss < rss_bound_kb(), (name, wall, maxrss)
    finally:
        httpd.shutdown()
    assert Exfil.hits == [], f"pecd or pecctl fetched {Exfil.hits}"
    # the secret's content appears in nothing pecd wrote (mailboxes, queue, logs, databases)
    found = []
    for root, _, files in os.walk(b.dir):
        for n in files:
            p = os.path.join(root, n)
            try:
                with open(p, "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(p)
            except OSError:
                pass
    assert found == [], found
    serves_next_session(b, "dopo gli attacchi")
