"""Every recipient on its own at the delivery point (issue 18 items 1-3):

- through LMTP, one recipient refused for now (451 the first time), one with a full mailbox
  (552 5.2.2), one whose mailbox stays full for now (452 4.2.2) and one delivered: the presa in
  carico goes at once, once, for all of them; the delivered one gets its receipt at once; the
  451 one is retried alone and then delivered; the full one gets errore-consegna "altro"
  (casella piena), not "no-dest"; the 452 one gets the same once [timers] mancata_consegna has
  passed since the envelope was taken in;
- the Maildir quota ([delivery] quota, and a user's own userdb_quota_rule): the same
  errore-consegna "altro", while the others of the transaction get their receipts;
- the evidence log of the receiving provider records each receipt at the instant written in
  the receipt itself (RFC 6109 §4.1), also for the recipient whose delivery was retried.
"""
import datetime
import os
import socket
import sqlite3
import threading
import time
import xml.etree.ElementTree as ET
from zoneinfo import ZoneInfo

import pytest

from pec_providers import make_providers, ricevuta, trasporto, verify
from pecd_harness import free_port


class LMTPServer:
    """An LMTP server (RFC 2033) whose reply for each recipient after DATA is scripted:
    replies[addr] is a list, one reply per attempt (the last one repeats)."""

    def __init__(self, replies):
        self.replies = {k.lower(): list(v) for k, v in replies.items()}
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.attempts = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def reply_for(self, addr):
        with self.lock:
            lst = self.replies.get(addr.lower(), ["250 2.0.0 stored"])
            self.attempts[addr.lower()] = self.attempts.get(addr.lower(), 0) + 1
            return lst.pop(0) if len(lst) > 1 else lst[0]

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        f = c.makefile("rb")
        send = lambda s: c.sendall(s.encode() + b"\r\n")
        try:
            send("220 lmtp.test LMTP ready")
            rcpts = []
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").strip()
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "LHLO":
                    send("250-lmtp.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES")
                elif verb == "MAIL":
                    rcpts = []
                    send("250 2.1.0 OK")
                elif verb == "RCPT":
                    rcpts.append(cmd[cmd.index("<") + 1:cmd.index(">")])
                    send("250 2.1.5 OK")
                elif verb == "DATA":
                    send("354 go ahead")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    for r in rcpts:
                        send(self.reply_for(r))
                elif verb == "RSET":
                    rcpts = []
                    send("250 2.0.0 OK")
                elif verb == "QUIT":
                    send("221 2.0.0 bye")
                    return
                else:
                    send("500 5.5.1 what")
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


def daticert(msg):
    for p in msg.walk():
        if p.get_filename() == "daticert.xml":
            return ET.fromstring(p.get_payload(decode=True))
    raise AssertionError("no daticert.xml")


def instant(d):
    """The instant a daticert certifies (§4.4: giorno, ora, zona)."""
    data = d.find("dati/data")
    z = data.get("zona")
    off = datetime.timezone(datetime.timedelta(hours=int(z[:3]), minutes=int(z[0] + z[3:])))
    t = datetime.datetime.strptime(f"{data.findtext('giorno')} {data.findtext('ora')}",
                                   "%d/%m/%Y %H:%M:%S").replace(tzinfo=off)
    return int(t.timestamp())


def receipts_by_consegna(a, kind, n, timeout=40):
    got = {}
    for r in a.wait_mail("mario", ricevuta(kind), count=n, timeout=timeout):
        d = daticert(r[2])
        got[d.findtext("dati/consegna")] = (r, d)
    return got


def message(to, subject, body="Buongiorno.\r\n"):
    return (f"From: <mario@pec.a.test>\r\nTo: {', '.join('<%s>' % t for t in to)}\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{abs(hash(subject))}@client.test>\r\n\r\n"
            + body).encode()


def events(p):
    db = sqlite3.connect(f"file:{os.path.join(p.dir, 'evidence.db')}?mode=ro", uri=True)
    try:
        return db.execute("SELECT type, message_id, event_time, recipients FROM events").fetchall()
    finally:
        db.close()


def assert_log_matches_receipts(b, msgs):
    """Every receipt B made is in B's evidence log at the instant its daticert certifies."""
    by_mid = {}
    for mtype, mid, t, rc in events(b):
        if mid:
            by_mid.setdefault(mid.strip("<>"), []).append((mtype, t))
    for r in msgs:
        mid = r[2]["Message-ID"].strip().strip("<>")
        want = instant(daticert(r[2]))
        assert mid in by_mid, (mid, sorted(by_mid))
        for mtype, t in by_mid[mid]:
            assert t == want, f"{mtype} {mid}: logged at {t}, the receipt says {want}"


@pytest.fixture
def lmtp_world(tmp_path):
    lmtp = LMTPServer({
        "bob@pec.b.test": ["451 4.2.1 <bob@pec.b.test> mailbox busy, try later",
                           "250 2.0.0 <bob@pec.b.test> stored"],
        "carlo@pec.b.test": ["552 5.2.2 <carlo@pec.b.test> Quota exceeded (mailbox for user is full)"],
        "dora@pec.b.test": ["452 4.2.2 <dora@pec.b.test> Quota exceeded (mailbox for user is full)"],
    })
    a, b, ca, directory = make_providers(tmp_path)
    a.write_config({"pec.b.test": b.ports["mx"]})
    b.write_config({"pec.a.test": a.ports["mx"]},
                   extra={"delivery": {"mailbox": f"lmtp:127.0.0.1:{lmtp.port}"},
                          "timers": {"mancata_consegna": "8s", "preavviso": "4s"}})
    a.add_user("mario")
    for u in ("anna", "bob", "carlo", "dora"):
        b.add_user(u)
    a.start()
    b.start()
    yield a, b, lmtp, ca, directory
    for p in (a, b):
        p.stop()
    lmtp.stop()


def test_each_recipient_has_its_own_outcome(lmtp_world):
    a, b, lmtp, ca, directory = lmtp_world
    rcpts = ["anna@pec.b.test", "bob@pec.b.test", "carlo@pec.b.test", "dora@pec.b.test"]
    t0 = time.time()
    a.submit("mario", rcpts, message(rcpts, "quattro destinatari"))
    # the presa in carico does not wait for any mailbox: one, for all four
    (pic,) = a.wait_mail("posta-certificata", ricevuta("presa-in-carico"), timeout=20)
    assert sorted(e.text for e in daticert(pic[2]).findall("dati/ricezione")) == rcpts
    dlv = receipts_by_consegna(a, "avvenuta-consegna", 2)
    assert set(dlv) == {"anna@pec.b.test", "bob@pec.b.test"}, sorted(dlv)
    assert lmtp.attempts["bob@pec.b.test"] == 2          # retried on its own
    assert lmtp.attempts["anna@pec.b.test"] == 1         # never stored twice
    err = receipts_by_consegna(a, "errore-consegna", 2, timeout=40)
    assert set(err) == {"carlo@pec.b.test", "dora@pec.b.test"}, sorted(err)
    for who in ("carlo@pec.b.test", "dora@pec.b.test"):
        r, d = err[who]
        assert d.get("errore") == "altro", ET.tostring(d)   # a full mailbox is not no-dest
        assert "casella piena" in d.findtext("dati/errore-esteso"), ET.tostring(d)
        v, rc = verify(r[0], ca, directory)
        assert rc == 0 and v["valid"], v
    # dora's mailbox stayed full for now: the errore came once the deadline had passed
    assert instant(err["dora@pec.b.test"][1]) - t0 >= 7
    assert instant(err["carlo@pec.b.test"][1]) - t0 < 7
    time.sleep(1)
    kinds = sorted((m[2].get("X-Ricevuta") or "").strip() for m in a.mails("mario"))
    assert kinds == ["accettazione", "avvenuta-consegna", "avvenuta-consegna",
                     "errore-consegna", "errore-consegna"], kinds
    assert len(a.mails("posta-certificata")) == 1
    # §4.1: B logged each receipt at the instant the receipt itself certifies
    assert_log_matches_receipts(b, [pic] + [x[0] for x in dlv.values()] +
                                [x[0] for x in err.values()])


@pytest.fixture
def maildir_world(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    a.write_config({"pec.b.test": b.ports["mx"]})
    b.write_config({"pec.a.test": a.ports["mx"]}, extra={"delivery": {"quota": "12K"}})
    a.add_user("mario")
    for u in ("anna", "carlo"):
        b.add_user(u)
    # carlo's own rule (Dovecot's passwd-file extra field) is smaller than any envelope
    users = os.path.join(b.dir, "users")
    with open(users) as f:
        lines = f.read().splitlines()
    with open(users, "w") as f:
        for l in lines:
            if l.startswith("carlo@"):
                l = ":".join(l.split(":")[:2] + ["", "", "", "", ""]) + \
                    ":userdb_quota_rule=*:storage=1K"
            f.write(l + "\n")
    a.start()
    b.start()
    yield a, b, ca, directory
    for p in (a, b):
        p.stop()


def test_maildir_quota(maildir_world):
    a, b, ca, directory = maildir_world
    a.submit("mario", ["anna@pec.b.test", "carlo@pec.b.test"],
             message(["anna@pec.b.test", "carlo@pec.b.test"], "quota 1"))
    dlv = receipts_by_consegna(a, "avvenuta-consegna", 1)
    assert set(dlv) == {"anna@pec.b.test"}
    err = receipts_by_consegna(a, "errore-consegna", 1)
    r, d = err["carlo@pec.b.test"]
    assert d.get("errore") == "altro" and "casella piena" in d.findtext("dati/errore-esteso")
    assert "quota 1024 octets" in d.findtext("dati/errore-esteso")
    assert b.mails("carlo") == []
    # anna's mailbox holds one envelope (about 8 KB): the next does not fit in 12 KB
    a.submit("mario", ["anna@pec.b.test"], message(["anna@pec.b.test"], "quota 2", body="x" * 70 + "\r\n" * 1 + ("y" * 70 + "\r\n") * 60))
    err = receipts_by_consegna(a, "errore-consegna", 2)
    assert "casella piena" in err["anna@pec.b.test"][1].findtext("dati/errore-esteso")
    assert len(b.mails("anna")) == 1
    assert_log_matches_receipts(b, [x[0] for x in err.values()] + [x[0] for x in dlv.values()])
