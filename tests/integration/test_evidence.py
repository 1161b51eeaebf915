"""The evidence log from the command line: `pecctl log verify|seal|purge` and `pecctl trace`.

A provider made with `pecctl init`; its evidence log is written here by an independent
implementation of the record format of docs/evidence.md (Python sqlite3 + hashlib), so
this test also proves the format is documented well enough to check without our code.
The day seals are made by `pecctl log seal` with the provider key and checked both by
`pecctl log verify` and by `openssl cms -verify`.
"""
import datetime
import hashlib
import os
import shutil
import sqlite3
import subprocess
import time

import pytest

from pecd_harness import BUILD   # $PEC_BUILD, else build/ in this repository

PECCTL = os.path.join(BUILD, "src", "cmd", "pecctl")
MAGIC = b"pecmail-evidence-1"
FIELDS = ["type", "pec_id", "orig_msgid", "message_id", "sender", "recipients", "subject",
          "outcome", "queue_id", "dedupe_key"]


def field(v):
    if v is None:
        return b"\xff\xff\xff\xff"
    b = v if isinstance(v, bytes) else str(v).encode()
    return len(b).to_bytes(4, "big") + b


def record_hash(prev, seq, day, logged_at, event_time, values):
    h = hashlib.sha256(prev + MAGIC + field(seq) + field(day) + field(logged_at)
                       + field(event_time))
    for name in FIELDS:
        h.update(field(values.get(name)))
    return h.digest()


def pecctl(conf, *args):
    return subprocess.run([PECCTL, "-c", conf, *args], capture_output=True, text=True,
                          timeout=60)


def utc_day(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")


def append(db, values, when):
    """Appends one record the way docs/evidence.md describes."""
    row = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, bytes(32))
    day = utc_day(when)
    h = record_hash(prev, seq, day, when, when, values)
    db.execute("INSERT INTO events(seq, day, logged_at, event_time, " + ", ".join(FIELDS)
               + ", prev_hash, hash) VALUES(" + ", ".join("?" * (len(FIELDS) + 6)) + ")",
               [seq, day, when, when] + [values.get(n) for n in FIELDS] + [prev, h])
    return seq


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    if not os.path.exists(PECCTL):
        pytest.fail(f"{PECCTL} not built (set PEC_BUILD)", pytrace=False)
    base = tmp_path_factory.mktemp("evidence")
    inst, ca = base / "inst", base / "ca"
    r = subprocess.run([PECCTL, "init", str(inst), "--domain", "pec.a.example", "--ca", str(ca)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    conf = str(inst / "pecd.conf")
    with open(conf, "a") as f:
        f.write("\n[evidence]\npath = sqlite:evidence.db\nretention = 1d\n")
    # `log seal` on a new log creates the schema (and seals nothing)
    r = pecctl(conf, "log", "seal")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 day(s) sealed" in r.stdout
    now = int(time.time())
    db = sqlite3.connect(str(inst / "evidence.db"), isolation_level=None)
    tx = [  # (days ago, type, pec_id, orig, message_id, recipients, outcome)
        (2, "accettazione", "opec1@pec.a.example", "m1@mua", "acc1@pec.a.example",
         "bob@pec.b.example,carol@ext.example", "ok"),
        (2, "busta-trasporto", "opec1@pec.a.example", "m1@mua", "opec1@pec.a.example",
         "bob@pec.b.example", "ok"),
        (2, "busta-trasporto", "opec1@pec.a.example", "m1@mua", "opec1@pec.a.example",
         "carol@ext.example", "ok"),
        (1, "presa-in-carico", "opec1@pec.a.example", "m1@mua", "pic1@pec.b.example",
         "bob@pec.b.example", "ok"),
        (1, "avvenuta-consegna", "opec1@pec.a.example", "m1@mua", "cons1@pec.b.example",
         "bob@pec.b.example", "ok"),
        (1, "accettazione", "opec2@pec.a.example", "m2@mua", "acc2@pec.a.example",
         "dan@pec.b.example", "ok"),
        (0, "preavviso-errore-consegna", "opec2@pec.a.example", "m2@mua", "pre2@pec.a.example",
         "dan@pec.b.example", "no receipt within 12h"),
    ]
    db.execute("BEGIN")
    for ago, typ, pec, orig, mid, rcpt, outcome in tx:
        append(db, dict(type=typ, pec_id=pec, orig_msgid=orig, message_id=mid,
                        sender="alice@pec.a.example", recipients=rcpt, subject="Fattura 42",
                        outcome=outcome, queue_id="Q1"), now - ago * 86400)
    db.execute("COMMIT")
    db.close()
    r = pecctl(conf, "log", "seal")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 day(s) sealed" in r.stdout
    return {"conf": conf, "inst": inst, "ca": ca, "now": now}


def copy_instance(provider, tmp_path):
    """A copy of the instance whose log a test may damage."""
    inst = tmp_path / "inst"
    shutil.copytree(provider["inst"], inst)
    return str(inst / "pecd.conf"), str(inst / "evidence.db")


def tamper(path, sql):
    db = sqlite3.connect(path, isolation_level=None)
    for t in ("events_no_update", "events_no_delete", "seals_no_update", "seals_no_delete"):
        db.execute(f"DROP TRIGGER IF EXISTS {t}")
    db.executescript(sql)
    db.close()


def test_verify_intact(provider):
    r = pecctl(provider["conf"], "log", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "intact" in r.stdout
    assert "7 records in 3 days" in r.stdout
    assert "2 day seals verified" in r.stdout


def test_seal_checked_with_openssl(provider, tmp_path):
    """What an auditor does without pecctl: the seal is a detached CMS over its text."""
    db = sqlite3.connect(str(provider["inst"] / "evidence.db"))
    day, signed, sig, count, last_hash = db.execute(
        "SELECT day, signed, signature, count, last_hash FROM seals ORDER BY day LIMIT 1"
    ).fetchone()
    rows = db.execute("SELECT hash FROM events WHERE day = ? ORDER BY seq", (day,)).fetchall()
    db.close()
    assert count == len(rows) == 3
    assert rows[-1][0] == last_hash
    assert f"day: {day}\nrecords: 3\n" in signed
    assert f"last-hash: {last_hash.hex()}\n" in signed
    (tmp_path / "seal.txt").write_bytes(signed.encode())
    (tmp_path / "seal.der").write_bytes(sig)
    r = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER",
                        "-in", str(tmp_path / "seal.der"), "-content", str(tmp_path / "seal.txt"),
                        "-CAfile", str(provider["ca"] / "ca.crt"), "-purpose", "any",
                        "-out", os.devnull], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Verification successful" in r.stderr


def test_trace(provider):
    for ident in ("m1@mua", "<opec1@pec.a.example>", "cons1@pec.b.example"):
        r = pecctl(provider["conf"], "trace", ident)
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert "PEC message <opec1@pec.a.example>" in out
        for typ in ("accettazione", "busta-trasporto", "presa-in-carico", "avvenuta-consegna"):
            assert typ in out
        assert "to carol@ext.example" in out
        assert "opec2" not in out
    r = pecctl(provider["conf"], "trace", "pre2@pec.a.example")
    assert r.returncode == 0 and "no receipt within 12h" in r.stdout
    r = pecctl(provider["conf"], "trace", "unknown@nowhere")
    assert r.returncode == 1


def test_one_byte_edit_fails_and_says_where(provider, tmp_path):
    conf, path = copy_instance(provider, tmp_path)
    tamper(path, "UPDATE events SET recipients = 'dan@pec.b.examplf' WHERE seq = 6")
    r = pecctl(conf, "log", "verify")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "TAMPERED" in r.stdout
    assert "record 6 (" in r.stdout and "altered" in r.stdout


def test_deleted_record_fails_and_says_where(provider, tmp_path):
    conf, path = copy_instance(provider, tmp_path)
    tamper(path, "DELETE FROM events WHERE seq = 2")
    r = pecctl(conf, "log", "verify")
    assert r.returncode == 1
    assert "record 2 is missing" in r.stdout


def test_wrong_seal_signature_fails(provider, tmp_path):
    conf, path = copy_instance(provider, tmp_path)
    db = sqlite3.connect(path)
    day, sig = db.execute("SELECT day, signature FROM seals ORDER BY day DESC LIMIT 1").fetchone()
    db.close()
    bad = bytearray(sig)
    bad[-10] ^= 1
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER seals_no_update")
    db.execute("UPDATE seals SET signature = ? WHERE day = ?", (bytes(bad), day))
    db.close()
    r = pecctl(conf, "log", "verify")
    assert r.returncode == 1
    assert f"day {day}: seal invalid" in r.stdout


def test_purge_keeps_verify_passing(provider, tmp_path):
    conf, path = copy_instance(provider, tmp_path)
    r = pecctl(conf, "log", "purge")  # retention = 1d: the day before yesterday goes
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 day(s) purged" in r.stdout
    db = sqlite3.connect(path)
    assert db.execute("SELECT min(seq), count(*) FROM events").fetchone() == (4, 4)
    db.close()
    r = pecctl(conf, "log", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "starting after record 3" in r.stdout


def test_unreadable_log(provider, tmp_path):
    conf, path = copy_instance(provider, tmp_path)
    os.unlink(path)
    r = pecctl(conf, "log", "verify")
    assert r.returncode == 2


def test_export_a_sealed_day_and_verify_it_alone(provider, tmp_path):
    """`pecctl log export --day D` (issue 23): a file per sealed day for write-once storage,
    checked on its own - on a host without pecd.conf - by `pecctl log verify FILE` and, as
    the docs say, by sqlite3 and openssl alone."""
    conf, now = provider["conf"], provider["now"]
    day = utc_day(now - 86400)
    out = str(tmp_path / f"evidence-{day}.db")
    r = pecctl(conf, "log", "export", "--day", day, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"day {day}, 3 records" in r.stdout
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert not os.path.exists(out + "-wal")
    # an auditor's host: no pecd.conf, the provider's certificate given
    cert = os.path.join(os.path.dirname(conf), "pec", "sign.crt")
    r = subprocess.run([PECCTL, "log", "verify", out, "--cert", cert], capture_output=True,
                       text=True, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"evidence export of day {day}" in r.stdout and "intact" in r.stdout
    assert "3 records in 1 days" in r.stdout and "2 day seals verified" in r.stdout
    # the file opens read-only and its seal verifies with openssl, as docs/evidence.md says
    os.chmod(out, 0o400)
    db = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
    signed, sig, last_hash = db.execute(
        "SELECT signed, signature, last_hash FROM seals WHERE day = ?", (day,)).fetchone()
    rows = db.execute("SELECT seq, day, logged_at, event_time, " + ", ".join(FIELDS)
                      + ", prev_hash, hash FROM events ORDER BY seq").fetchall()
    db.close()
    prev = rows[0][-2]
    for row in rows:
        assert record_hash(prev, *row[:4], dict(zip(FIELDS, row[4:14]))) == row[-1]
        prev = row[-1]
    assert prev == last_hash and f"last-hash: {last_hash.hex()}" in signed
    (tmp_path / "seal.txt").write_bytes(signed.encode())
    (tmp_path / "seal.der").write_bytes(sig)
    o = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER",
                        "-in", str(tmp_path / "seal.der"), "-content", str(tmp_path / "seal.txt"),
                        "-CAfile", str(provider["ca"] / "ca.crt"), "-purpose", "any",
                        "-out", "/dev/null"], capture_output=True, text=True)
    assert o.returncode == 0, o.stderr
    # an altered copy is caught
    bad = str(tmp_path / "bad.db")
    shutil.copy(out, bad)
    os.chmod(bad, 0o600)
    tamper(bad, "UPDATE events SET subject = 'Fattura 43' WHERE seq = 5")
    r = subprocess.run([PECCTL, "log", "verify", bad, "--cert", cert], capture_output=True,
                       text=True, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 1 and "TAMPERED" in r.stdout, r.stdout
    # the same file is never written twice; today is not sealed; not a day
    r = pecctl(conf, "log", "export", "--day", day, "--out", out)
    assert r.returncode == 1 and "File exists" in r.stderr
    r = pecctl(conf, "log", "export", "--day", utc_day(now), "--out", str(tmp_path / "t.db"))
    assert r.returncode == 1 and "not sealed yet" in r.stderr, r.stderr
    r = pecctl(conf, "log", "export", "--day", "../etc", "--out", str(tmp_path / "x.db"))
    assert r.returncode == 1 and "is not a day" in r.stderr, r.stderr
