"""What a provider's staff ask of the evidence log (issue 23): `pecctl report` (mailboxes per
domain, PEC per day), `pecctl log search` (a user's transactions by address, date and
subject), `pecctl log extract` (those records, signed: openssl verifies the CMS and every
record's hash is recomputed here from docs/evidence.md's formula) and `pecctl log hold`."""
import csv
import datetime
import hashlib
import io
import json
import os
import subprocess

import pytest

from pec_providers import make_providers, pecctl, ricevuta


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    a, b, ca, directory = make_providers(tmp)
    a.write_config({"pec.b.test": b.ports["mx"]})
    b.write_config({"pec.a.test": a.ports["mx"]})
    for u in ("mario", "luigi"):
        a.add_user(u)
    for u in ("anna", "bob"):
        b.add_user(u)
    a.start()
    b.start()
    for i, (frm, to, subj) in enumerate([("mario", "anna", "Contratto 2026"),
                                         ("mario", "bob", "Fattura"),
                                         ("luigi", "anna", "Contratto luigi")]):
        a.submit(frm, [f"{to}@pec.b.test"],
                 (f"From: <{frm}@pec.a.test>\r\nTo: <{to}@pec.b.test>\r\nSubject: {subj}\r\n"
                  f"Message-ID: <rep{i}@client.test>\r\n\r\nciao\r\n").encode())
    a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=2)
    a.wait_mail("luigi", ricevuta("avvenuta-consegna"))
    yield a, b, ca
    for p in (a, b):
        p.stop()


def today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def test_report(world):
    a, b, ca = world
    r = pecctl("-c", a.conf, "report", "--from", today(), "--to", today(), "--json")
    rep = json.loads(r.stdout)
    assert rep["mailboxes"] == {"pec.a.test": 2}, rep
    assert rep["totals"]["accepted"] == 3 and rep["totals"]["envelopes_sent"] == 3, rep
    rb = json.loads(pecctl("-c", b.conf, "report", "--from", today(), "--to", today(),
                           "--json").stdout)
    assert rb["totals"]["envelopes_taken_in"] == 3 and rb["totals"]["delivered"] == 3, rb
    rows = list(csv.reader(io.StringIO(pecctl("-c", b.conf, "report", "--from", today(),
                                              "--to", today(), "--csv").stdout)))
    assert rows[0][0] == "day" and rows[-1][0] == "total" and rows[1][0] == today(), rows
    assert "Mailboxes in service" in pecctl("-c", a.conf, "report", "--from", today(), "--to",
                                            today()).stdout
    r = pecctl("-c", a.conf, "report", "--from", "07/12/2026", "--to", today(), check=False)
    assert r.returncode == 2 and "YYYY-MM-DD" in r.stderr, r.stderr


def test_search(world):
    a, b, ca = world
    found = json.loads(pecctl("-c", a.conf, "log", "search", "--address", "MARIO@pec.a.test",
                              "--json").stdout)
    assert sorted(t["subject"] for t in found) == ["Contratto 2026", "Fattura"], found
    found = json.loads(pecctl("-c", a.conf, "log", "search", "--address", "mario@pec.a.test",
                              "--subject", "contratto", "--json").stdout)
    assert [t["subject"] for t in found] == ["Contratto 2026"], found
    # at B, the recipient's view
    found = json.loads(pecctl("-c", b.conf, "log", "search", "--address", "anna@pec.b.test",
                              "--from", today(), "--to", today(), "--json").stdout)
    assert len(found) == 2 and all(any(e["type"] == "avvenuta-consegna" for e in t["events"])
                                   for t in found), found
    r = pecctl("-c", a.conf, "log", "search", "--address", "nessuno@pec.a.test", check=False)
    assert r.returncode == 1 and "0 transactions" in r.stdout


def record_hash(rec):
    """docs/evidence.md: SHA-256(prev || "pecmail-evidence-1" || F(...)...)."""
    def f(v):
        if v is None:
            return b"\xff\xff\xff\xff"
        b = str(v).encode()
        return len(b).to_bytes(4, "big") + b
    h = hashlib.sha256(bytes.fromhex(rec["prev_hash"]) + b"pecmail-evidence-1")
    for v in (rec["seq"], rec["day"], rec["logged_at"], rec["event_time"]):
        h.update(f(v))
    for k in ("type", "pec_id", "orig_msgid", "message_id", "sender", "recipients", "subject",
              "outcome", "queue_id", "dedupe_key"):
        h.update(f(rec[k]))
    return h.hexdigest()


def test_extract_is_signed_and_holds_only_the_requesters_records(world, tmp_path):
    a, b, ca = world
    out = str(tmp_path / "estratto.p7m")
    r = pecctl("-c", a.conf, "log", "extract", "--address", "mario@pec.a.test", "--out", out)
    assert "signed" in r.stdout
    assert os.stat(out).st_mode & 0o077 == 0
    v = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", out, "-CAfile",
                        os.path.join(ca, "ca.pem"), "-purpose", "any"], capture_output=True)
    assert v.returncode == 0, v.stderr
    doc = json.loads(v.stdout)
    assert doc["requester"] == "mario@pec.a.test" and doc["format"] == "pecmail-evidence-extract-1"
    assert doc["records"], doc
    for rec in doc["records"]:
        rcpts = [x.strip().lower() for x in (rec["recipients"] or "").split(",")]
        assert rec["sender"].lower() == "mario@pec.a.test" or "mario@pec.a.test" in rcpts, rec
        assert "luigi" not in json.dumps(rec)
        assert record_hash(rec) == rec["hash"], rec
    # the day is not over: its seal is announced, not there yet
    assert doc["seals"] and doc["seals"][0]["day"] == today()
    assert doc["seals"][0]["signature"] is None and "not sealed yet" in doc["seals"][0]["note"]


def test_holds(world):
    a, b, ca = world
    r = pecctl("-c", a.conf, "log", "hold", "add", "--address", "mario@pec.a.test", "--reason",
               "causa civile 12/2026")
    hid = r.stdout.split()[1].rstrip(":")
    holds = json.loads(pecctl("-c", a.conf, "log", "hold", "list", "--json").stdout)
    assert holds and holds[0]["value"] == "mario@pec.a.test" and \
        holds[0]["reason"] == "causa civile 12/2026", holds
    r = pecctl("-c", a.conf, "log", "hold", "add", "--address", "non valido", check=False)
    assert r.returncode == 1 and "not a mailbox address" in r.stderr
    pecctl("-c", a.conf, "log", "hold", "del", hid)
    assert "no legal hold" in pecctl("-c", a.conf, "log", "hold", "list").stdout
