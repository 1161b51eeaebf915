"""Every PEC message type pecd makes, read by independent parsers (issue 17, conformance
matrix): two real providers on loopback (pec_providers.py) make each situation, and each
message a mailbox received is parsed with Python's email package (policy.default), its
daticert.xml with xml.etree.ElementTree (which does not expand external entities), and its
signature checked with the openssl command line. docs/conformance.md names these tests.

The layout checked (RFC 6109 §4.3, §2.1, RFC 5751 §3.4.3; PEC-SPEC-DIGEST.md §1.2):
multipart/signed with protocol application/pkcs7-signature around a multipart/mixed and
smime.p7s; in the mixed part the text first (multipart/alternative text/plain + text/html,
text/plain alone in the anomaly envelope), daticert.xml (application/xml) except in the
anomaly envelope, postacert.eml (message/rfc822) in envelopes, completa and breve receipts
and nothing else; the header fields of each type (X-Ricevuta / X-Trasporto, Subject prefix,
From, To, X-Riferimento-Message-ID) and daticert against them (tipo, msgid, identificativo,
the certified sender, recipients, subject, Reply-To, consegna, ricezione).

Situations: acceptance, transport envelope, presa in carico and completa receipts (one
submission to a user of the other provider and one of our own, §3.4); breve for a To
recipient and sintetica for a Cc one; non-acceptance (a Bcc); errore-consegna (no such
mailbox); anomaly envelopes for ordinary mail and for a signed message that is not a correct
envelope; both timeout notices (a third provider in the directory that never answers,
[timers] shortened); with clamd: non-acceptance for virus, virus detection and non-delivery
for virus. Provider A scans only luigi's mail ([callouts]), so mario's virus reaches B.

Findings that are deviations today are strict xfail tests: they fail while the deviation
lasts and turn into an error (XPASS strict) once it is fixed, so the marker and the matrix
row are updated together."""
import hashlib
import html
import os
import re
import smtplib
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime

import pytest

from clamd_fixture import CLAMD, EICAR, Clamd
from pec_providers import make_providers
from pecd_harness import free_port

A_DOM, B_DOM, C_DOM = "pec.a.test", "pec.b.test", "pec.c.test"
SUBJECT_PREFIX = {
    ("posta-certificata", False): "POSTA CERTIFICATA: ",
    ("errore", False): "ANOMALIA MESSAGGIO: ",
    ("accettazione", False): "ACCETTAZIONE: ",
    ("non-accettazione", False): "AVVISO DI NON ACCETTAZIONE: ",
    ("non-accettazione", True): "AVVISO DI NON ACCETTAZIONE PER VIRUS: ",
    ("presa-in-carico", False): "PRESA IN CARICO: ",
    ("avvenuta-consegna", False): "CONSEGNA: ",
    ("errore-consegna", False): "AVVISO DI MANCATA CONSEGNA: ",
    ("errore-consegna", True): "AVVISO DI MANCATA CONSEGNA PER VIRUS: ",
    ("preavviso-errore-consegna", False): "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ",
    ("rilevazione-virus", False): "PROBLEMA DI SICUREZZA: ",
}
# §4.3.1: no references to other elements, no active content
HTML_FORBIDDEN = re.compile(r"<\s*(script|img|link|iframe|frame|object|embed|applet|style|meta|"
                            r"form|input|base)\b|\b(src|href|action|background|style)\s*=|"
                            r"url\s*\(|@import|javascript:|\son[a-z]+\s*=", re.I)


# ---- messages ------------------------------------------------------------------------

def original(frm, to, subject, msgid, cc=(), reply_to=None, extra="", body=None,
             parts=None):
    """An RFC 5322 message as a user's client writes it (bytes, CRLF)."""
    head = f"From: <{frm}>\r\nTo: {to}\r\n"
    if cc:
        head += f"Cc: {', '.join('<%s>' % c for c in cc)}\r\n"
    if reply_to:
        head += f"Reply-To: <{reply_to}>\r\n"
    head += f"Subject: {subject}\r\nMessage-ID: {msgid}\r\nDate: Mon, 16 Jun 2025 10:00:00 +0200\r\n"
    head += extra
    if parts is None:
        return (head + "\r\n" + (body or f"Buongiorno,\r\ncorpo di {msgid}.\r\n")).encode()
    head += 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    return (head + "".join(f"--b1\r\n{p}\r\n" for p in parts) + "--b1--\r\n").encode()


BREVE_PARTS = [
    "Content-Type: text/plain\r\n\r\nIn allegato i documenti.",
    # a file by Content-Disposition filename (base64 lines as transmitted)
    'Content-Type: application/pdf; name="doc.pdf"\r\nContent-Disposition: attachment; '
    'filename="doc.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nUERGREFUQQ==\r\nMDEyMw==',
    # a file by Content-Type name only
    'Content-Type: text/plain; name="nota.txt"\r\n\r\nTesto della nota.',
    # an attached message (§3.3.2.2: replaced as a whole)
    "Content-Type: message/rfc822\r\n\r\nFrom: <x@y.test>\r\nSubject: inner\r\n\r\ninner body",
]
# the hash part each named part becomes, and the SHA-1 of the part body as transmitted
# (every octet between its header block and the CRLF before the next delimiter)
BREVE_HASHES = {
    "doc.pdf.hash": hashlib.sha1(b"UERGREFUQQ==\r\nMDEyMw==").hexdigest(),
    "nota.txt.hash": hashlib.sha1(b"Testo della nota.").hexdigest(),
    "messaggio.eml.hash": hashlib.sha1(b"From: <x@y.test>\r\nSubject: inner\r\n\r\n"
                                       b"inner body").hexdigest(),
}


def header_block(raw):
    return raw[:raw.index(b"\r\n\r\n") + 2]


def parse(raw):
    return message_from_bytes(raw, policy=policy.default)


def kind_of(m):
    return (m.get("X-Ricevuta") or m.get("X-Trasporto") or "").strip()


def about(kind, subject, frm=None):
    """A mailbox predicate: a message of this kind about the original with this subject."""
    def pred(m):
        return (kind_of(m) == kind and subject in (m.get("Subject") or "") and
                (frm is None or frm in (m.get("From") or "")))
    return pred


def addr_of(h):
    return h.addresses[0].addr_spec if h is not None and h.addresses else None


def daticert_time(d):
    data = d.find("dati/data")
    zona = data.get("zona")
    assert re.fullmatch(r"[+-]\d{4}", zona), zona
    off = timedelta(hours=int(zona[1:3]), minutes=int(zona[3:5])) * (1 if zona[0] == "+" else -1)
    day = datetime.strptime(data.findtext("giorno") + " " + data.findtext("ora"),
                            "%d/%m/%Y %H:%M:%S")
    return day.replace(tzinfo=timezone(off))


def daticert_fields(d):
    i = d.find("intestazione")
    return {
        "mittente": i.findtext("mittente"),
        "destinatari": [(x.text, x.get("tipo")) for x in i.findall("destinatari")],
        "risposte": i.findtext("risposte"),
        "oggetto": i.findtext("oggetto"),
    }


def check_signature(raw, ca, tmp):
    """openssl cms -verify with only the CA: the signer certificate must be in the CMS
    structure (§2.1); returns the signer certificate's e-mail addresses."""
    signer = os.path.join(tmp, f"signer-{hashlib.sha1(raw).hexdigest()[:12]}.pem")
    r = subprocess.run(["openssl", "cms", "-verify", "-CAfile", os.path.join(ca, "ca.pem"),
                        "-purpose", "smimesign", "-signer", signer, "-out", "/dev/null"],
                       input=raw, capture_output=True)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    r = subprocess.run(["openssl", "x509", "-in", signer, "-noout", "-email"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def layout(raw, w):
    """The structure every PEC message shares; returns a dict of its pieces. w: the world
    (for the CA and a scratch directory)."""
    msg = parse(raw)
    for part in msg.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
    kind = kind_of(msg)
    virus = (msg.get("X-VerificaSicurezza") or "").strip() == "errore"
    envelope = msg.get("X-Trasporto") is not None
    assert (msg.get("X-Ricevuta") is None) == envelope, "exactly one of X-Ricevuta, X-Trasporto"
    # RFC 5751 §3.4.3: multipart/signed, two parts, detached signature smime.p7s
    assert msg.get_content_type() == "multipart/signed"
    assert msg.get_param("protocol") == "application/pkcs7-signature"
    assert msg.get_param("micalg") == "sha-256"
    top = msg.get_payload()
    assert len(top) == 2, [p.get_content_type() for p in top]
    mixed, sig = top
    assert sig.get_content_type() == "application/pkcs7-signature"
    assert sig.get_filename() == "smime.p7s"
    assert mixed.get_content_type() == "multipart/mixed"   # §4.3
    children = mixed.get_payload()
    # §4.3, §4.3.1: the readable text first
    text = children[0]
    if kind == "errore":
        assert text.get_content_type() == "text/plain"
        plain, htm = text.get_content(), None
    else:
        assert text.get_content_type() == "multipart/alternative"
        alt = text.get_payload()
        assert [p.get_content_type() for p in alt] == ["text/plain", "text/html"]
        plain, htm = alt[0].get_content(), alt[1].get_content()
        assert not HTML_FORBIDDEN.search(htm), HTML_FORBIDDEN.search(htm)
        # the HTML relates the same information as the text part
        shown = html.unescape(re.sub(r"<[^>]+>", "\n", htm))
        for line in plain.splitlines():
            assert line.strip() in shown, line
    rest = children[1:]
    names = [p.get_filename() for p in rest]
    # §4.3.3 (daticert.xml, DESIGN.md D1): in every message but the anomaly envelope
    xml = [p for p in rest if p.get_filename() == "daticert.xml"]
    d = None
    if kind == "errore":
        assert xml == [], names
    else:
        assert len(xml) == 1, names
        assert xml[0].get_content_type() == "application/xml"
        assert xml[0].get_param("name") == "daticert.xml"
        data = xml[0].get_payload(decode=True)
        assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'), data[:60]
        d = ET.fromstring(data)
        assert d.tag == "postacert"
        assert d.get("tipo") == kind                                  # tipo = the header
        # §4.1: the Date field and the certified time are one instant
        assert parsedate_to_datetime(msg["Date"]) == daticert_time(d)
    # §4.3.2: the original as postacert.eml (message/rfc822)
    origs = [p for p in rest if p.get_content_type() == "message/rfc822"]
    inner = None
    if origs:
        assert len(origs) == 1, names
        assert origs[0].get_filename() == "postacert.eml"
        assert origs[0].get_param("name") == "postacert.eml"
        inner = origs[0].get_payload()[0]
    # nothing else in the signed part
    assert len(rest) == len(xml) + len(origs), names
    # header fields: the type's Subject prefix, its own Message-ID and Date; no Sender
    # unless equal to From (§2.1)
    assert msg["Subject"].startswith(SUBJECT_PREFIX[(kind, virus)]), msg["Subject"]
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", msg["Message-ID"].strip()), msg["Message-ID"]
    assert msg["Sender"] is None or msg["Sender"] == msg["From"]
    dom = addr_of(msg["From"]).split("@")[1]
    assert addr_of(msg["From"]) == f"posta-certificata@{dom}"
    # §2.1: the From address is the one in the signing certificate
    assert check_signature(raw, w["ca"], w["tmp"]) == [f"posta-certificata@{dom}"]
    return {"msg": msg, "kind": kind, "virus": virus, "daticert": d, "inner": inner,
            "plain": plain, "html": htm, "raw": raw, "domain": dom}


def receipt_headers(x, to, msgid):
    """From, To and X-Riferimento-Message-ID of a notification (§2.1, §2.2.1, §3)."""
    m = x["msg"]
    assert m["From"] == f"posta-certificata@{x['domain']}"
    assert [a.addr_spec for a in m["To"].addresses] == [to]
    assert m["X-Riferimento-Message-ID"] == msgid
    assert x["daticert"].findtext("dati/msgid") == msgid
    assert m["X-Trasporto"] is None and m["X-TipoRicevuta"] is None


def certified(x, sender, rcpts, subject, pec_id, provider):
    """daticert fields that repeat the certified facts of the transaction."""
    d = x["daticert"]
    f = daticert_fields(d)
    assert f["mittente"] == sender
    assert f["destinatari"] == rcpts, f["destinatari"]
    assert f["oggetto"] == subject
    assert d.findtext("dati/gestore-emittente") == provider
    assert d.findtext("dati/identificativo") == pec_id


# ---- the providers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layout")
    a, b, ca, directory = make_providers(tmp)
    # provider C: in the directory (so its users are certificato), never reachable
    with open(directory, "a") as f:
        f.write("dn: providerName=Provider C,o=postacert\nobjectclass: top\n"
                "objectclass: provider\nproviderName: Provider C\n"
                "providerCertificateHash: 0123456789abcdef0123456789abcdef01234567\n"
                f"mailReceipt: posta-certificata@{C_DOM}\nmanagedDomains: {C_DOM}\n\n")
    clamd = None
    if os.access(CLAMD, os.X_OK):
        clamd = Clamd(tmp / "clamd")
        clamd.start()
    a_extra = {"timers": {"preavviso": "3s", "mancata_consegna": "6s"}}
    b_extra = {}
    if clamd is not None:
        # A scans luigi's mail only; B scans everything
        a_extra.update({"antivirus": {"clamd": clamd.unix, "timeout": "10s"},
                        "callouts": {"default": "none", f"luigi@{A_DOM}": "antivirus"}})
        b_extra["antivirus"] = {"clamd": clamd.unix, "timeout": "10s"}
    a.write_config({B_DOM: b.ports["mx"], C_DOM: free_port()}, extra=a_extra)
    b.write_config({A_DOM: a.ports["mx"]}, extra=b_extra)
    for user in ("mario", "anna", "luigi", "segreteria"):
        a.add_user(user)
    for user in ("anna", "bob"):
        b.add_user(user)
    a.start()
    b.start()
    yield {"a": a, "b": b, "ca": ca, "tmp": str(tmp), "clamd": clamd}
    for p in (a, b):
        p.stop()
    if clamd is not None:
        clamd.stop()


def raws(found):
    return [x[1] for x in found]


@pytest.fixture(scope="module")
def completa(world):
    """S1: mario (A) to anna at B and anna at A, with a Reply-To; completa receipts."""
    a, b = world["a"], world["b"]
    subj, mid = "layout completa", "<s1.layout@client.test>"
    rcpts = [f"anna@{B_DOM}", f"anna@{A_DOM}"]
    raw = original(f"mario@{A_DOM}", f'"Anna B" <anna@{B_DOM}>, <anna@{A_DOM}>', subj, mid,
                   reply_to=f"segreteria@{A_DOM}")
    a.submit("mario", rcpts, raw)
    got = {
        "sent": raw, "subject": subj, "msgid": mid, "rcpts": rcpts,
        "acc": a.wait_mail("mario", about("accettazione", subj)),
        "env_b": b.wait_mail("anna", about("posta-certificata", subj)),
        "env_a": a.wait_mail("anna", about("posta-certificata", subj)),
        "recs": a.wait_mail("mario", about("avvenuta-consegna", subj), count=2),
        "pic": a.wait_mail("posta-certificata", about("presa-in-carico", subj), count=2),
    }
    return got


@pytest.fixture(scope="module")
def breve(world):
    """S2: To anna at B (breve asked), Cc bob at B (sintetica), three named parts."""
    a, b = world["a"], world["b"]
    subj, mid = "layout breve", "<s2.layout@client.test>"
    raw = original(f"mario@{A_DOM}", f"<anna@{B_DOM}>", subj, mid, cc=[f"bob@{B_DOM}"],
                   reply_to=f"segreteria@{A_DOM}", extra="X-TipoRicevuta: breve\r\n",
                   parts=BREVE_PARTS)
    a.submit("mario", [f"anna@{B_DOM}", f"bob@{B_DOM}"], raw)
    return {
        "sent": raw, "subject": subj, "msgid": mid,
        "acc": a.wait_mail("mario", about("accettazione", subj)),
        "env": b.wait_mail("anna", about("posta-certificata", subj)),
        "env_bob": b.wait_mail("bob", about("posta-certificata", subj)),
        "recs": a.wait_mail("mario", about("avvenuta-consegna", subj), count=2),
        "pic": a.wait_mail("posta-certificata", about("presa-in-carico", subj)),
    }


@pytest.fixture(scope="module")
def anomaly(world):
    """S5: ordinary mail over cleartext to anna and bob at B (§3.2.2, §5.3)."""
    b = world["b"]
    subj, mid = "layout ordinaria", "<s5.layout@plain.test>"
    raw = original("someone@plain.test", f"<anna@{B_DOM}>", subj, mid, cc=[f"bob@{B_DOM}"])
    with smtplib.SMTP("127.0.0.1", b.ports["mx"], timeout=30) as s:
        s.sendmail("someone@plain.test", [f"anna@{B_DOM}", f"bob@{B_DOM}"], raw)
    return {"sent": raw, "subject": subj, "msgid": mid,
            "anna": b.wait_mail("anna", about("errore", subj)),
            "bob": b.wait_mail("bob", about("errore", subj))}


@pytest.fixture(scope="module")
def timeouts(world):
    """S7: to a user of provider C, which never answers, and one of B: both notices for
    C's (§3.1.6), none for B's."""
    a = world["a"]
    subj, mid = "layout scadenza", "<s7.layout@client.test>"
    raw = original(f"mario@{A_DOM}", f"<anna@{C_DOM}>, <bob@{B_DOM}>", subj, mid,
                   reply_to=f"segreteria@{A_DOM}")
    a.submit("mario", [f"anna@{C_DOM}", f"bob@{B_DOM}"], raw)
    return {"subject": subj, "msgid": mid,
            "acc": a.wait_mail("mario", about("accettazione", subj)),
            "notices": a.wait_mail("mario", about("preavviso-errore-consegna", subj), count=2,
                                   timeout=40)}


# ---- acceptance, envelope, presa in carico, completa (§3.1.4, §3.1.5, §3.2.1, §3.3.2.1) --

def test_acceptance(world, completa):
    (acc,) = completa["acc"]
    x = layout(acc[1], world)
    assert x["kind"] == "accettazione" and x["inner"] is None
    receipt_headers(x, f"mario@{A_DOM}", completa["msgid"])
    pec_id = x["daticert"].findtext("dati/identificativo")
    assert re.fullmatch(r"[^<>@\s]+@pec\.a\.test", pec_id), pec_id
    # §2.2.1: the PEC msgid is not the client's; the receipt has its own Message-ID
    assert x["msg"]["Message-ID"] != f"<{pec_id}>"
    # §2.2.1: every recipient with the kind of its domain, certified mail here
    certified(x, f"mario@{A_DOM}", [(r, "certificato") for r in completa["rcpts"]],
              completa["subject"], pec_id, "Provider A")
    assert daticert_fields(x["daticert"])["risposte"] == f"segreteria@{A_DOM}"
    assert x["daticert"].get("errore") == "nessuno"
    assert x["daticert"].find("dati/ricevuta") is None
    # the text relates the certified facts
    assert completa["subject"] in x["plain"] and pec_id in x["plain"]


def test_transport_envelope(world, completa):
    (env_b,), (env_a,) = completa["env_b"], completa["env_a"]
    (acc,) = completa["acc"]
    pec_id = layout(acc[1], world)["daticert"].findtext("dati/identificativo")
    sent = completa["sent"]
    for env in (env_b, env_a):
        x = layout(env[1], world)
        m = x["msg"]
        assert x["kind"] == "posta-certificata"
        # §2.1, §3.1.5 (D2): From "Per conto di: <sender>" <posta-certificata@domain>
        assert m["From"].addresses[0].display_name == f"Per conto di: mario@{A_DOM}"
        assert addr_of(m["From"]) == f"posta-certificata@{A_DOM}"
        # §2.2.1: Message-ID is the PEC msgid, X-Riferimento-Message-ID the client's
        assert m["Message-ID"] == f"<{pec_id}>"
        assert m["X-Riferimento-Message-ID"] == completa["msgid"]
        assert m["X-TipoRicevuta"] == "completa"
        # §2.1.1.2, §3.1.5: To and Reply-To copied unmodified (the bytes of the original)
        head = header_block(env[1])
        for name in (b"To:", b"Reply-To:"):
            line = next(l for l in sent.split(b"\r\n") if l.startswith(name))
            assert b"\r\n" + line + b"\r\n" in head, line
        d = x["daticert"]
        certified(x, f"mario@{A_DOM}", [(r, "certificato") for r in completa["rcpts"]],
                  completa["subject"], pec_id, "Provider A")
        assert d.findtext("dati/msgid") == completa["msgid"]
        assert d.find("dati/ricevuta").get("tipo") == "completa"
        assert daticert_fields(d)["risposte"] == f"segreteria@{A_DOM}"
        # postacert.eml: the original with the PEC msgid as Message-ID (§2.2.1), the rest
        # as submitted, byte for byte (§3.1.5)
        inner = x["inner"]
        assert inner["Message-ID"] == f"<{pec_id}>" and len(inner.get_all("Message-ID")) == 1
        assert inner["X-Riferimento-Message-ID"] == completa["msgid"]
        for line in header_block(sent).split(b"\r\n"):
            if line and not line.startswith(b"Message-ID:"):
                assert line in env[1], line
        assert sent[sent.index(b"\r\n\r\n"):] in env[1]
    # Received copied from the original (our own user's copy: no other hop added one)
    xa = layout(env_a[1], world)
    assert xa["inner"].get_all("Received") and \
        xa["msg"].get_all("Received") == xa["inner"].get_all("Received")
    # §3.3.2, §2.2.3: delivered unchanged; the Maildir copy at A has Return-Path and
    # Delivered-To in front (RFC 5321 §4.4), the one at B also B's Received line
    a_body = env_a[1].split(b"\r\n", 2)[2]
    assert env_b[1].endswith(a_body)
    # the acceptance and the envelope carry one instant (§4.1)
    assert daticert_time(layout(acc[1], world)["daticert"]) == daticert_time(xa["daticert"])


def test_presa_in_carico(world, completa):
    a = world["a"]
    (acc,) = completa["acc"]
    pec_id = layout(acc[1], world)["daticert"].findtext("dati/identificativo")
    by_provider = {}
    for p in completa["pic"]:
        x = layout(p[1], world)
        assert x["kind"] == "presa-in-carico" and x["inner"] is None
        # §3.2.1: to the sending provider's service mailbox (mailReceipt), never the user
        receipt_headers(x, f"posta-certificata@{A_DOM}", completa["msgid"])
        d = x["daticert"]
        f = daticert_fields(d)
        assert f["mittente"] == f"mario@{A_DOM}" and f["oggetto"] == completa["subject"]
        assert d.findtext("dati/identificativo") == pec_id
        by_provider[x["domain"]] = [r.text for r in d.findall("dati/ricezione")]
    # one from B for its recipient, one from A itself for ours (§3.4)
    assert by_provider == {B_DOM: [f"anna@{B_DOM}"], A_DOM: [f"anna@{A_DOM}"]}
    # §2.1.1.1.1: never sent to the users
    assert not [m for m in a.mails("mario") if kind_of(m[2]) == "presa-in-carico"]


def test_delivery_receipt_completa(world, completa):
    a = world["a"]
    (acc,) = completa["acc"]
    pec_id = layout(acc[1], world)["daticert"].findtext("dati/identificativo")
    env = layout(completa["env_b"][0][1], world)
    consegna = []
    for r in completa["recs"]:
        x = layout(r[1], world)
        assert x["kind"] == "avvenuta-consegna"
        # §2.1: to the reverse path, whatever the original's Reply-To says
        receipt_headers(x, f"mario@{A_DOM}", completa["msgid"])
        d = x["daticert"]
        certified(x, f"mario@{A_DOM}", [(r, "certificato") for r in completa["rcpts"]],
                  completa["subject"], pec_id, "Provider B" if x["domain"] == B_DOM
                  else "Provider A")
        assert d.find("dati/ricevuta").get("tipo") == "completa"
        consegna.append(d.findtext("dati/consegna"))
        # §3.3.2.1: the complete original as the recipient received it
        inner = x["inner"]
        assert inner is not None
        assert inner["Message-ID"] == env["inner"]["Message-ID"] == f"<{pec_id}>"
        assert inner.get_content() == env["inner"].get_content()
    # one receipt on behalf of every recipient (§3.3.2.1)
    assert sorted(consegna) == sorted(completa["rcpts"])
    # nothing went to the Reply-To address
    assert a.mails("segreteria") == []


# ---- breve and sintetica (§3.3.2.2, §3.3.2.3) ---------------------------------------------

def test_delivery_receipts_breve_and_sintetica(world, breve):
    (acc,) = breve["acc"]
    pec_id = layout(acc[1], world)["daticert"].findtext("dati/identificativo")
    # the envelope keeps the variant asked for and the Cc field
    (env,) = breve["env"]
    x = layout(env[1], world)
    assert x["msg"]["X-TipoRicevuta"] == "breve"
    assert x["daticert"].find("dati/ricevuta").get("tipo") == "breve"
    assert f"\r\nCc: <bob@{B_DOM}>\r\n".encode() in header_block(env[1])
    assert env[1].split(b"\r\n", 2)[2] in breve["env_bob"][0][1]   # the same envelope
    rcpts = [(f"anna@{B_DOM}", "certificato"), (f"bob@{B_DOM}", "certificato")]
    got = {}
    for r in breve["recs"]:
        x = layout(r[1], world)
        receipt_headers(x, f"mario@{A_DOM}", breve["msgid"])
        certified(x, f"mario@{A_DOM}", rcpts, breve["subject"], pec_id, "Provider B")
        got[x["daticert"].findtext("dati/consegna")] = x
    assert set(got) == {f"anna@{B_DOM}", f"bob@{B_DOM}"}
    # To recipient: breve, the original with each named part replaced by "<name>.hash"
    br = got[f"anna@{B_DOM}"]
    assert br["daticert"].find("dati/ricevuta").get("tipo") == "breve"
    inner = br["inner"]
    assert inner is not None and inner["Message-ID"] == f"<{pec_id}>"
    leaves = [p for p in inner.walk() if not p.is_multipart()]
    assert leaves[0].get_content().strip() == "In allegato i documenti."
    hashes = {p.get_filename(): p for p in leaves[1:]}
    assert set(hashes) == set(BREVE_HASHES), list(hashes)
    for name, part in hashes.items():
        assert part.get_content_type() == "text/plain"
        value = part.get_content().strip()
        assert re.fullmatch(r"[0-9a-f]{40}", value), value
        assert value == BREVE_HASHES[name], name
    assert len(leaves) == 1 + len(BREVE_HASHES)     # the MIME structure is kept
    assert b"UERGREFUQQ==" not in br["raw"]
    # Cc recipient: sintetica, without the original
    si = got[f"bob@{B_DOM}"]
    assert si["daticert"].find("dati/ricevuta").get("tipo") == "sintetica"
    assert si["inner"] is None
    # §3.2.1: one presa in carico for both recipients of B
    (p,) = breve["pic"]
    assert [r.text for r in layout(p[1], world)["daticert"].findall("dati/ricezione")] == \
        [f"anna@{B_DOM}", f"bob@{B_DOM}"]
    time.sleep(1)
    assert len(world["a"].wait_mail("posta-certificata",
                                    about("presa-in-carico", breve["subject"]))) == 1


# ---- non-acceptance and non-delivery (§3.1.1, §3.1.2, §3.3.3) ------------------------------

def test_non_acceptance(world):
    a, b = world["a"], world["b"]
    subj, mid = "layout bcc", "<s3.layout@client.test>"
    raw = original(f"mario@{A_DOM}", f"<anna@{B_DOM}>", subj, mid,
                   extra=f"Bcc: <bob@{B_DOM}>\r\n", body="CORPO-NON-ACCETTATO\r\n")
    a.submit("mario", [f"anna@{B_DOM}"], raw)
    (n,) = a.wait_mail("mario", about("non-accettazione", subj))
    x = layout(n[1], world)
    assert not x["virus"] and x["msg"]["X-VerificaSicurezza"] is None
    receipt_headers(x, f"mario@{A_DOM}", mid)
    d = x["daticert"]
    assert d.get("errore") == "altro"
    assert "Bcc" in d.findtext("dati/errore-esteso")
    assert "Bcc" in x["plain"]
    # §3.1.2: the original is not included
    assert x["inner"] is None and b"CORPO-NON-ACCETTATO" not in n[1]
    # §3.1.1: not accepted into PEC: nothing left the provider
    time.sleep(1)
    assert not [m for m in b.mails("anna") if subj in (m[2]["Subject"] or "")]
    assert not [m for m in a.mails("mario") if about("accettazione", subj)(m[2])]


def test_non_delivery_no_dest(world):
    a = world["a"]
    subj, mid = "layout nessuno", "<s4.layout@client.test>"
    a.submit("mario", [f"nessuno@{B_DOM}"],
             original(f"mario@{A_DOM}", f"<nessuno@{B_DOM}>", subj, mid))
    (acc,) = a.wait_mail("mario", about("accettazione", subj))
    pec_id = layout(acc[1], world)["daticert"].findtext("dati/identificativo")
    (e,) = a.wait_mail("mario", about("errore-consegna", subj))
    x = layout(e[1], world)
    assert not x["virus"] and x["inner"] is None
    receipt_headers(x, f"mario@{A_DOM}", mid)
    certified(x, f"mario@{A_DOM}", [(f"nessuno@{B_DOM}", "certificato")], subj, pec_id,
              "Provider B")
    d = x["daticert"]
    assert d.get("errore") == "no-dest"
    assert d.findtext("dati/consegna") == f"nessuno@{B_DOM}"
    assert d.findtext("dati/errore-esteso")


# ---- anomaly envelopes (§3.2.2, §2.2.2) -----------------------------------------------------

def check_anomaly(world, raw, sent_from, sent):
    x = layout(raw, world)
    m = x["msg"]
    assert x["kind"] == "errore" and x["daticert"] is None
    assert m["From"].addresses[0].display_name == f"Per conto di: {sent_from}"
    assert addr_of(m["From"]) == f"posta-certificata@{B_DOM}"
    assert m["X-Ricevuta"] is None and m["X-TipoRicevuta"] is None
    inner = x["inner"]
    assert inner is not None
    # §3.2.2: Message-ID, To, Cc, Received inherited unmodified
    sent_msg = parse(sent)
    assert m["Message-ID"] == inner["Message-ID"] == sent_msg["Message-ID"]
    head = header_block(raw)
    for name in (b"To:", b"Cc:"):
        for line in sent.split(b"\r\n"):
            if line.startswith(name):
                assert b"\r\n" + line + b"\r\n" in head, line
    assert m.get_all("Received") == inner.get_all("Received")
    # the entire received message, and no other part (checked by layout)
    assert sent[sent.index(b"\r\n\r\n"):] in raw
    return x


def test_anomaly_for_ordinary_mail(world, anomaly):
    for who in ("anna", "bob"):
        (x,) = anomaly[who]
        a = check_anomaly(world, x[1], "someone@plain.test", anomaly["sent"])
        # Reply-To inserted (the original had none): the original sender
        assert a["msg"]["Reply-To"] == "someone@plain.test"
        assert a["msg"]["Subject"] == "ANOMALIA MESSAGGIO: " + anomaly["subject"]


def test_anomaly_for_a_signed_message_that_is_not_correct(world, completa):
    """§2.2.2: a message from a PEC provider (its signature verifies) that is not a correct
    envelope is still propagated to the recipient, inside an anomaly envelope; no presa in
    carico, no delivery receipt. Here a genuine envelope whose X-TipoRicevuta (outside the
    signed part) no longer matches its daticert."""
    a, b = world["a"], world["b"]
    (env_a,) = completa["env_a"]
    raw = env_a[1].split(b"\r\n", 2)[2]          # without Return-Path and Delivered-To
    assert b"\r\nX-TipoRicevuta: completa\r\n" in raw
    raw = raw.replace(b"\r\nX-TipoRicevuta: completa\r\n", b"\r\nX-TipoRicevuta: breve\r\n", 1)
    ctx = ssl.create_default_context(cafile=os.path.join(world["ca"], "ca.pem"))
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", b.ports["mx"], timeout=30) as s:
        s.starttls(context=ctx)
        s.sendmail(f"mario@{A_DOM}", [f"bob@{B_DOM}"], raw)
    (x,) = b.wait_mail("bob", about("errore", completa["subject"]))
    an = check_anomaly(world, x[1], f"mario@{A_DOM}", raw)
    assert "inconsistent" in an["plain"], an["plain"]
    # the signed message inside is the one received, its signature intact
    assert an["inner"]["X-Trasporto"] == "posta-certificata"
    time.sleep(1)
    pics = [m for m in a.mails("posta-certificata")
            if about("presa-in-carico", completa["subject"], frm=B_DOM)(m[2])]
    assert len(pics) == 1, "a presa in carico for the anomaly"
    assert not [m for m in a.mails("mario") if about("avvenuta-consegna", completa["subject"])(m[2])
                and f"bob@{B_DOM}" in m[1].decode(errors="replace")]


# ---- timeout notices (§3.1.6) ----------------------------------------------------------------

def test_timeout_notices(world, timeouts):
    (acc,) = timeouts["acc"]
    ax = layout(acc[1], world)
    pec_id = ax["daticert"].findtext("dati/identificativo")
    assert daticert_fields(ax["daticert"])["destinatari"] == \
        [(f"anna@{C_DOM}", "certificato"), (f"bob@{B_DOM}", "certificato")]
    texts = []
    for n in timeouts["notices"]:
        x = layout(n[1], world)
        assert x["kind"] == "preavviso-errore-consegna" and x["inner"] is None
        # D5: to the original sender
        receipt_headers(x, f"mario@{A_DOM}", timeouts["msgid"])
        d = x["daticert"]
        assert d.get("errore") == "altro"
        assert d.findtext("dati/identificativo") == pec_id
        assert d.findtext("dati/consegna") == f"anna@{C_DOM}"
        f = daticert_fields(d)
        assert f["mittente"] == f"mario@{A_DOM}" and f["oggetto"] == timeouts["subject"]
        texts.append(x["plain"])
    assert "12 ore" in texts[0] and "24 ore" in texts[1]
    # bob at B answered: no notice for him (timers for the recipients still waiting only)
    assert all(layout(n[1], world)["daticert"].findtext("dati/consegna") == f"anna@{C_DOM}"
               for n in world["a"].mails("mario")
               if about("preavviso-errore-consegna", timeouts["subject"])(n[2]))


def test_timeout_notices_certify_every_recipient_of_the_original(world, timeouts):
    (acc,) = timeouts["acc"]
    want = daticert_fields(layout(acc[1], world)["daticert"])["destinatari"]
    for n in timeouts["notices"]:
        assert daticert_fields(layout(n[1], world)["daticert"])["destinatari"] == want


def test_receipts_certify_the_reply_to_of_the_original(world, completa, breve, timeouts):
    cases = [(completa["acc"], completa["recs"] + completa["pic"]),
             (breve["acc"], breve["recs"] + breve["pic"]),
             (timeouts["acc"], timeouts["notices"])]
    for (acc,), receipts in cases:
        want = daticert_fields(layout(acc[1], world)["daticert"])["risposte"]
        for r in receipts:
            x = layout(r[1], world)
            assert daticert_fields(x["daticert"])["risposte"] == want, \
                (x["kind"], x["daticert"].findtext("dati/consegna"))


# ---- viruses (§3.1.3, §3.2.3, §3.2.4) --------------------------------------------------------

def need_clamd(world):
    if world["clamd"] is None:
        pytest.skip("clamd not installed (scripts/install-deps)")


def virus_original(frm, to, subject, msgid):
    return original(frm, to, subject, msgid, body="Allegato:\r\n" + EICAR.decode() + "\r\n")


def test_non_acceptance_for_virus(world):
    need_clamd(world)
    a, b = world["a"], world["b"]
    subj, mid = "layout virus ap", "<s8.layout@client.test>"
    a.submit("luigi", [f"anna@{B_DOM}"], virus_original(f"luigi@{A_DOM}", f"<anna@{B_DOM}>",
                                                          subj, mid))
    (n,) = a.wait_mail("luigi", about("non-accettazione", subj))
    x = layout(n[1], world)
    assert x["virus"] and x["inner"] is None
    assert x["msg"]["Subject"] == "AVVISO DI NON ACCETTAZIONE PER VIRUS: " + subj
    receipt_headers(x, f"luigi@{A_DOM}", mid)
    d = x["daticert"]
    assert d.get("errore") == "virus"
    # §3.1.3: the user learns why
    assert "Eicar-Signature" in d.findtext("dati/errore-esteso")
    assert "Eicar-Signature" in x["plain"]
    assert EICAR not in n[1]
    time.sleep(1)
    assert not [m for m in b.mails("anna") if subj in (m[2]["Subject"] or "")]


def test_virus_detection_and_non_delivery_for_virus(world):
    need_clamd(world)
    a, b = world["a"], world["b"]
    subj, mid = "layout virus ip", "<s9.layout@client.test>"
    rcpts = [f"anna@{B_DOM}", f"bob@{B_DOM}"]
    a.submit("mario", rcpts, virus_original(f"mario@{A_DOM}", f"<anna@{B_DOM}>, <bob@{B_DOM}>",
                                            subj, mid))
    (acc,) = a.wait_mail("mario", about("accettazione", subj))
    pec_id = layout(acc[1], world)["daticert"].findtext("dati/identificativo")
    # B: one rilevazione-virus per recipient, to A's service mailbox (§3.2.3)
    notices = a.wait_mail("posta-certificata", about("rilevazione-virus", subj), count=2)
    consegna = []
    for rv in notices:
        x = layout(rv[1], world)
        assert x["domain"] == B_DOM and x["inner"] is None
        assert x["msg"]["X-Mittente"] == f"mario@{A_DOM}"
        receipt_headers(x, f"posta-certificata@{A_DOM}", mid)
        d = x["daticert"]
        assert d.get("errore") == "virus"
        assert d.findtext("dati/identificativo") == pec_id
        consegna.append(d.findtext("dati/consegna"))
        assert "Eicar-Signature" in x["plain"]      # §3.2.3: the reason in the body
        assert EICAR not in rv[1]
    assert sorted(consegna) == rcpts
    # A: errore-consegna for virus to its user (§3.2.4), one per recipient
    errors = a.wait_mail("mario", about("errore-consegna", subj), count=2)
    consegna = []
    for e in errors:
        x = layout(e[1], world)
        assert x["virus"] and x["domain"] == A_DOM and x["inner"] is None
        assert x["msg"]["Subject"] == "AVVISO DI MANCATA CONSEGNA PER VIRUS: " + subj
        receipt_headers(x, f"mario@{A_DOM}", mid)
        d = x["daticert"]
        assert d.get("errore") == "virus"
        assert d.findtext("dati/identificativo") == pec_id
        consegna.append(d.findtext("dati/consegna"))
        assert "Eicar-Signature" in x["plain"]      # §3.2.4: the reason in the message
    assert sorted(consegna) == rcpts
    # not delivered at B, no delivery receipt (§3.2.3)
    for who in ("anna", "bob"):
        assert not [m for m in b.mails(who) if subj in (m[2]["Subject"] or "")]
    assert not [m for m in a.mails("mario") if about("avvenuta-consegna", subj)(m[2])]


# ---- the signing certificate (§5.5) ------------------------------------------------------------

def test_signing_certificate_profile(world, completa):
    """The certificate in a receipt's CMS structure (made by `pecctl pki issue`), read by
    openssl: RFC 6109 §5.5.1 and §5.5.2."""
    (acc,) = completa["acc"]
    signer = os.path.join(world["tmp"], "profile-signer.pem")
    r = subprocess.run(["openssl", "cms", "-verify", "-CAfile",
                        os.path.join(world["ca"], "ca.pem"), "-signer", signer,
                        "-out", "/dev/null"], input=acc[1], capture_output=True)
    assert r.returncode == 0, r.stderr
    text = subprocess.run(["openssl", "x509", "-in", signer, "-noout", "-text",
                           "-nameopt", "RFC2253"], capture_output=True, text=True,
                          check=True).stdout
    subject = re.search(r"Subject: (.*)", text).group(1)
    # §5.5.1: providerName in O or CN; the e-mail address in subjectAltName, not the DN
    assert "O=Provider A" in subject or "CN=Provider A" in subject, subject
    assert "emailAddress" not in subject and "@" not in subject, subject
    exts = dict(re.findall(r"(?m)^\s+X509v3 ([A-Za-z ]+?): ?(critical)?$", text))
    assert "Basic Constraints" not in exts                       # §5.5.2 MUST NOT
    assert exts.get("Key Usage") == "critical"
    assert re.search(r"X509v3 Key Usage: critical\n\s+Digital Signature", text)
    for name in ("Authority Key Identifier", "Subject Key Identifier",
                 "Subject Alternative Name"):
        assert name in exts and exts[name] == "", (name, exts)     # present, not critical
    assert re.search(r"X509v3 Subject Alternative Name: \n\s+email:posta-certificata@pec\.a\.test",
                     text)
    # both key identifiers hold a keyIdentifier (OpenSSL prints it as hex octets)
    for name in ("Subject Key Identifier", "Authority Key Identifier"):
        assert re.search(name + r": \n\s+(keyid:)?([0-9A-F]{2}:)+[0-9A-F]{2}\n", text), name
    # any other extension is not critical
    assert all(v == "" for k, v in exts.items() if k != "Key Usage"), exts
