"""Conformance to RFC 6109 that an auditor can check (issue 17), between two real providers
on loopback; every message is parsed with Python's email package, independently of pecd:

- §4.3.2: the anomaly envelope attaches the received message as postacert.eml
  (message/rfc822), as every other PEC message that carries one;
- §3.1.6: both timeout notices quote the original's Message-ID (X-Riferimento-Message-ID
  and daticert <msgid>), like its acceptance, and have Message-IDs of the form docs/pec.md
  gives (the acceptance too: its own, not the envelope's); a tracking.db of an older pecd is migrated without losing its rows;
- §5.3: the incoming point offers STARTTLS and accepts cleartext: ordinary mail becomes an
  anomaly; a PEC message another provider sends in cleartext is taken in and the evidence
  log says so ([pec] cleartext_pec = accept, the default), or refused with 550 5.7.10
  (cleartext_pec = refuse)."""
import os
import re
import smtplib
import sqlite3
import ssl
import time
import xml.etree.ElementTree as ET
from email import message_from_bytes, policy

import pytest

from pec_providers import make_providers, pecctl, ricevuta, trasporto

ORIG_MSGID = "<conformance.1@client.test>"


def message(frm, to, subject, msgid=ORIG_MSGID):
    return (f"From: <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: {msgid}\r\n"
            f"\r\nBuongiorno,\r\nprova.\r\n").encode()


def parsed(raw):
    return message_from_bytes(raw, policy=policy.default)


def signed_parts(msg):
    """The parts of the signed multipart/mixed of a PEC message."""
    assert msg.get_content_type() == "multipart/signed", msg.get_content_type()
    mixed = msg.get_payload()[0]
    assert mixed.get_content_type() == "multipart/mixed", mixed.get_content_type()
    return mixed.get_payload()


def daticert(msg):
    for part in signed_parts(msg):
        if part.get_filename() == "daticert.xml":
            return ET.fromstring(part.get_payload(decode=True))
    raise AssertionError("no daticert.xml")


@pytest.fixture
def providers(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    a.write_config({"pec.b.test": b.ports["mx"]})
    b.write_config({"pec.a.test": a.ports["mx"]})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    yield a, b, ca, directory
    for p in (a, b):
        p.stop()


def start(a, b, a_extra=None, b_extra=None):
    a.write_config({"pec.b.test": b.ports["mx"]}, extra=a_extra)
    b.write_config({"pec.a.test": a.ports["mx"]}, extra=b_extra)
    a.start()
    b.start()


def cleartext_send(p, sender, rcpt, data):
    """SMTP to p's incoming point without STARTTLS (which it must still offer)."""
    with smtplib.SMTP("127.0.0.1", p.ports["mx"], timeout=30) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls"), "the incoming point must announce STARTTLS (§5.3)"
        return s.sendmail(sender, [rcpt], data)


# ---- §4.3.2 and §5.3: ordinary mail over cleartext becomes an anomaly ----------------

def test_cleartext_ordinary_mail_becomes_an_anomaly_with_postacert_eml(providers):
    a, b, ca, directory = providers
    start(a, b)
    body = message("someone@plain.test", "anna@pec.b.test", "ordinaria in chiaro",
                   msgid="<ordinary.1@plain.test>")
    cleartext_send(b, "someone@plain.test", "anna@pec.b.test", body)
    (x,) = b.wait_mail("anna", trasporto("errore"))
    msg = parsed(x[1])
    assert msg["Subject"].startswith("ANOMALIA MESSAGGIO: ")
    originals = [p for p in signed_parts(msg) if p.get_content_type() == "message/rfc822"]
    assert len(originals) == 1, [p.get_content_type() for p in signed_parts(msg)]
    orig = originals[0]
    # RFC 6109 §4.3.2: MIME type message/rfc822, attachment name postacert.eml
    assert orig.get_filename() == "postacert.eml"
    assert orig.get_param("name") == "postacert.eml"
    inner = orig.get_payload()[0]
    assert inner["Subject"] == "ordinaria in chiaro"
    assert inner["Message-ID"] == "<ordinary.1@plain.test>"
    # no daticert in the anomaly envelope (§3.2.2)
    assert not any(p.get_filename() == "daticert.xml" for p in signed_parts(msg))


# ---- §3.1.6: the timeout notices --------------------------------------------------------

def test_timeout_notices_quote_the_original_message_id(providers):
    a, b, ca, directory = providers
    # B is never started: its incoming point is unreachable
    a.write_config({"pec.b.test": b.ports["mx"]},
                   extra={"timers": {"preavviso": "3s", "mancata_consegna": "6s"}})
    a.start()
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", "anna@pec.b.test", "scadenza"))
    (acc,) = a.wait_mail("mario", ricevuta("accettazione"))
    acc_msg = parsed(acc[1])
    assert acc_msg["X-Riferimento-Message-ID"] == ORIG_MSGID
    pec_id = daticert(acc_msg).findtext("dati/identificativo")
    m = re.fullmatch(r"(opec1\.\d{14}\.[0-9A-F]{16})@pec\.a\.test", pec_id)
    assert m, pec_id
    # the acceptance has an identifier of its own (RFC 5322 §3.6.4), the first the access
    # point makes for the message: not the envelope's, which is the PEC msgid
    assert acc_msg["Message-ID"] == f"<{m.group(1)}.1@pec.a.test>", acc_msg["Message-ID"]
    notices = a.wait_mail("mario", ricevuta("preavviso-errore-consegna"), count=2, timeout=40)
    ids = []
    for raw in (n[1] for n in notices):
        msg = parsed(raw)
        assert msg["X-Riferimento-Message-ID"] == ORIG_MSGID, msg["X-Riferimento-Message-ID"]
        d = daticert(msg)
        assert d.get("tipo") == "preavviso-errore-consegna"
        assert d.findtext("dati/msgid") == ORIG_MSGID
        assert d.findtext("dati/identificativo") == pec_id
        ids.append(msg["Message-ID"])
    # docs/pec.md: opec1.<arrival>.<queue id>.<n>@<domain>, n = 2k (12 h), 2k + 1 (24 h) for
    # the k-th certificato recipient
    assert ids == [f"<{m.group(1)}.2@pec.a.test>", f"<{m.group(1)}.3@pec.a.test>"], ids
    assert b"12 ore" in notices[0][1] and b"24 ore" in notices[1][1]
    # the evidence log finds both notices by the client's Message-ID
    trace = pecctl("-c", a.conf, "trace", ORIG_MSGID).stdout
    assert trace.count("preavviso-errore-consegna") >= 2, trace


def test_tracking_database_of_an_older_pecd_is_migrated(providers):
    """A tracking.db of schema 0 (before the original's Message-ID was kept) with a recipient
    still waiting: pecd migrates it in place, the row is kept and its notice still goes."""
    a, b, ca, directory = providers
    pec_id = "opec1.20250101120000.0123456789ABCDEF@pec.a.test"
    db = sqlite3.connect(os.path.join(a.dir, "tracking.db"))
    db.executescript(
        "CREATE TABLE expect (pec_id TEXT NOT NULL, rcpt TEXT NOT NULL, sender TEXT NOT NULL,"
        " subject TEXT, recipients TEXT, sent INTEGER NOT NULL,"
        " presa INTEGER NOT NULL DEFAULT 0, notice INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (pec_id, rcpt));"
        "CREATE INDEX expect_sent ON expect (sent);"
        "CREATE TABLE seen (msgid TEXT NOT NULL, rcpt TEXT NOT NULL, qid TEXT NOT NULL,"
        " at INTEGER NOT NULL, PRIMARY KEY (msgid, rcpt));")
    db.execute("INSERT INTO expect (pec_id, rcpt, sender, subject, recipients, sent, notice) "
               "VALUES (?, 'anna@pec.b.test', 'mario@pec.a.test', 'vecchio', "
               "'anna@pec.b.test', ?, 1)", (pec_id, int(time.time()) - 60))
    db.commit()
    db.close()
    a.write_config({"pec.b.test": b.ports["mx"]},
                   extra={"timers": {"preavviso": "3s", "mancata_consegna": "6s"}})
    a.start()
    (n,) = a.wait_mail("mario", ricevuta("preavviso-errore-consegna"), timeout=30)
    msg = parsed(n[1])
    assert msg["Message-ID"] == "<opec1.20250101120000.0123456789ABCDEF.3@pec.a.test>"
    assert daticert(msg).findtext("dati/identificativo") == pec_id
    assert msg["X-Riferimento-Message-ID"] is None    # never stored by the older pecd
    assert "migrated from schema 0 to 3, 1 waiting recipient kept" in a.log(400)
    a.stop()   # pecd holds tracking.db exclusively while it runs
    db = sqlite3.connect(os.path.join(a.dir, "tracking.db"))
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        cols = [r[1] for r in db.execute("PRAGMA table_info(expect)")]
        assert "orig_msgid" in cols and "slot" in cols, cols
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "taken_in" in tables, tables
    finally:
        db.close()


# ---- §5.3: PEC from another provider over cleartext ------------------------------------

def test_cleartext_pec_is_taken_in_and_logged_by_default(providers):
    a, b, ca, directory = providers
    # provider A sends to B without TLS (against §5.3, on the sending side)
    start(a, b, a_extra={"pec": {"tls_policy": "none"}, "tls_policy": {"pec.b.test": "none"}})
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", "anna@pec.b.test", "busta in chiaro"))
    (env,) = b.wait_mail("anna", trasporto("posta-certificata"))
    a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    pec_id = parsed(env[1])["Message-ID"].strip("<>")
    trace = pecctl("-c", b.conf, "trace", pec_id).stdout
    assert "ricezione-senza-tls" in trace and "tls=none" in trace, trace
    assert "received without TLS" in b.log(400)
    # mail between them over TLS is not marked
    a.stop()
    a.write_config({"pec.b.test": b.ports["mx"]})
    a.start()
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", "anna@pec.b.test", "busta cifrata",
                     msgid="<conformance.2@client.test>"))
    envs = b.wait_mail("anna", trasporto("posta-certificata"), count=2)
    pec_id2 = [parsed(e[1])["Message-ID"].strip("<>") for e in envs if e[0] != env[0]][0]
    trace = pecctl("-c", b.conf, "trace", pec_id2).stdout
    assert "presa-in-carico" in trace and "ricezione-senza-tls" not in trace, trace


def test_cleartext_pec_refused_when_configured(providers):
    a, b, ca, directory = providers
    start(a, b, b_extra={"pec": {"cleartext_pec": "refuse"}})
    # a genuine envelope of A's (to A's own user), then sent to B as A would
    a.submit("mario", ["anna@pec.a.test"],
             message("mario@pec.a.test", "anna@pec.a.test", "da rifiutare"))
    (env,) = a.wait_mail("anna", trasporto("posta-certificata"))
    raw = env[1].split(b"\r\n", 2)[2]     # without Return-Path and Delivered-To
    with pytest.raises(smtplib.SMTPDataError) as e:
        cleartext_send(b, "mario@pec.a.test", "anna@pec.b.test", raw)
    assert e.value.smtp_code == 550 and e.value.smtp_error.startswith(b"5.7.10 "), e.value
    assert b.mails("anna") == []
    # the same over STARTTLS is taken in
    with smtplib.SMTP("127.0.0.1", b.ports["mx"], timeout=30) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.sendmail("mario@pec.a.test", ["anna@pec.b.test"], raw)
    b.wait_mail("anna", trasporto("posta-certificata"))
    # ordinary mail over cleartext is still taken in (as an anomaly): §5.3
    cleartext_send(b, "someone@plain.test", "anna@pec.b.test",
                   message("someone@plain.test", "anna@pec.b.test", "ordinaria",
                           msgid="<ordinary.2@plain.test>"))
    b.wait_mail("anna", trasporto("errore"))


# ---- §3.2.2: the anomaly's Date is the arrival ------------------------------------------------

def test_anomaly_date_is_the_arrival_even_when_processed_late(providers):
    """RFC 6109 §3.2.2: "Date: [message arrival date]".  B's incoming stage is held up (its
    evidence log is locked past SQLite's 10 s wait), so the anomaly is made well after the
    arrival: its Date, its text and its evidence event still say the arrival."""
    import email.utils
    a, b, ca, directory = providers
    b.start()
    db = sqlite3.connect(os.path.join(b.dir, "evidence.db"), isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", b.ports["mx"], timeout=30) as s:
            s.starttls(context=ctx)
            arrival = time.time()
            s.sendmail("someone@plain.test", ["anna@pec.b.test"],
                       b"From: <someone@plain.test>\r\nTo: <anna@pec.b.test>\r\n"
                       b"Subject: in ritardo\r\nMessage-ID: <tardi@plain.test>\r\n\r\nciao\r\n")
        end = time.time() + 40
        while "events of a pass of stages were not stored" not in b.log(400):
            assert time.time() < end, b.log(60)
            time.sleep(0.2)
    finally:
        db.execute("ROLLBACK")
        db.close()
    (x,) = b.wait_mail("anna", trasporto("errore"), timeout=40)
    date = email.utils.parsedate_to_datetime(x[2]["Date"]).timestamp()
    assert abs(date - arrival) <= 1, (x[2]["Date"], arrival)
    ev = sqlite3.connect(f"file:{os.path.join(b.dir, 'evidence.db')}?mode=ro", uri=True)
    (t,) = ev.execute("SELECT event_time FROM events WHERE type = 'anomalia'").fetchone()
    ev.close()
    assert t == int(date), (t, date)
