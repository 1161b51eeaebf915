"""PEC virus flows with a real clamd (RFC 6109 §3.1.3, §3.2.3, §3.2.4): at the access point
a virus gets 250 then a signed non-acceptance for virus and nothing is sent; at the incoming
point (provider A does not scan, B does) the envelope is not delivered, B sends one signed
rilevazione-virus per recipient to A's service mailbox, A sends its user the errore-consegna
for virus; the infected message is in B's quarantine; the evidence log and pecctl trace name
the callouts."""
import glob
import os

import pytest

from clamd_fixture import EICAR, clamd  # noqa: F401
from pec_providers import make_providers, pecctl, ricevuta
from test_pec_providers import assert_signed


def virus_message(frm, to, subject):
    return (f"From: <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@client.test>\r\n\r\n").encode() + \
        b"Allegato:\r\n" + EICAR + b"\r\n"


@pytest.fixture
def pair(tmp_path, clamd):
    a, b, ca, directory = make_providers(tmp_path)
    av = {"antivirus": {"clamd": clamd.unix, "timeout": "10s"}}
    yield a, b, ca, directory, av
    for p in (a, b):
        p.stop()


def start(a, b, a_extra, b_extra):
    a.write_config({"pec.b.test": b.ports["mx"]}, extra=a_extra)
    b.write_config({"pec.a.test": a.ports["mx"]}, extra=b_extra)
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    a.start()
    b.start()


def test_access_point_virus_non_acceptance(pair):
    a, b, ca, directory, av = pair
    start(a, b, av, av)
    r = a.submit("mario", ["anna@pec.b.test"],
                 virus_message("mario@pec.a.test", "anna@pec.b.test", "virus ap"))
    assert r == {}   # 250: PEC answers a virus with a receipt, not an SMTP refusal
    (n,) = a.wait_mail("mario", ricevuta("non-accettazione"))
    v = assert_signed(a, *n[:2], ca, directory, "non-accettazione")
    assert n[2]["Subject"].startswith("AVVISO DI NON ACCETTAZIONE PER VIRUS: ")
    assert (n[2]["X-VerificaSicurezza"] or "").strip() == "errore"
    assert v["daticert"]["errore"] == "virus"
    assert "Eicar-Signature" in (v["daticert"].get("errore_esteso") or v["daticert"].get("errore-esteso") or "")
    assert b"postacert.eml" not in n[1]
    assert not a.mails("posta-certificata") or all(
        (m[2].get("X-Ricevuta") or "") != "presa-in-carico" for m in a.mails("posta-certificata"))
    assert b.mails("anna") == []
    q = glob.glob(os.path.join(a.dir, "quarantine", "*", "*.eml"))
    assert len(q) == 1 and EICAR in open(q[0], "rb").read()
    info = open(q[0][:-4] + ".info").read()
    assert "virus Eicar-Signature" in info
    # evidence log and pecctl trace name the callout
    t = pecctl("-c", a.conf, "trace", "virus-ap@client.test", check=False)
    assert "callout" in t.stdout and "antivirus=infected" in t.stdout, t.stdout + t.stderr
    assert "non-accettazione" in t.stdout


def test_incoming_point_virus_detection(pair):
    a, b, ca, directory, av = pair
    start(a, b, {}, av)          # A does not scan: the virus reaches B
    a.submit("mario", ["anna@pec.b.test"],
             virus_message("mario@pec.a.test", "anna@pec.b.test", "virus ip"))
    a.wait_mail("mario", ricevuta("accettazione"))
    # B: one rilevazione-virus to A's service mailbox (mailReceipt)
    (rv,) = a.wait_mail("posta-certificata", ricevuta("rilevazione-virus"))
    v = assert_signed(a, *rv[:2], ca, directory, "rilevazione-virus")
    assert rv[2]["Subject"].startswith("PROBLEMA DI SICUREZZA: ")
    assert (rv[2]["X-Mittente"] or "").strip() == "mario@pec.a.test"
    assert v["daticert"]["consegna"] == "anna@pec.b.test"
    # A: errore-consegna for virus to its user
    (e,) = a.wait_mail("mario", ricevuta("errore-consegna"))
    v = assert_signed(a, *e[:2], ca, directory, "errore-consegna")
    assert e[2]["Subject"].startswith("AVVISO DI MANCATA CONSEGNA PER VIRUS: ")
    assert v["daticert"]["errore"] == "virus"
    # nothing delivered at B, the envelope is in B's quarantine, no avvenuta-consegna
    assert b.mails("anna") == []
    q = glob.glob(os.path.join(b.dir, "quarantine", "*", "*.eml"))
    assert len(q) == 1 and b"X-Trasporto: posta-certificata" in open(q[0], "rb").read()
    assert all((m[2].get("X-Ricevuta") or "") != "avvenuta-consegna" for m in a.mails("mario"))
    t = pecctl("-c", b.conf, "trace", v["daticert"]["identificativo"], check=False)
    assert "rilevazione-virus" in t.stdout and "antivirus=infected" in t.stdout, t.stdout


def test_clean_pec_carries_trace_outside_signed_content(pair):
    a, b, ca, directory, av = pair
    start(a, b, av, av)
    msg = (b"From: <mario@pec.a.test>\r\nTo: <anna@pec.b.test>\r\nSubject: pulito\r\n"
           b"Message-ID: <pulito@client.test>\r\n\r\nNiente virus.\r\n")
    a.submit("mario", ["anna@pec.b.test"], msg)
    (env,) = b.wait_mail("anna", lambda m: (m.get("X-Trasporto") or "").strip() == "posta-certificata")
    assert "antivirus=clean" in (env[2]["OPES-Trace"] or "")
    assert_signed(b, *env[:2], ca, directory, "posta-certificata")
    a.wait_mail("mario", ricevuta("avvenuta-consegna"))
