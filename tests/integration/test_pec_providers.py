"""Two PEC providers exchanging certified mail on loopback (issue 6): every receipt and
envelope appears in the right mailbox, signed (openssl cms -verify) and verifiable with
pecctl verify; non-acceptance; unknown recipient; variants; anomaly; timeout notices."""
import hashlib
import os
import sqlite3
import time

import pytest

from downstream import Downstream
from pec_providers import make_providers, openssl_verify, pecctl, ricevuta, trasporto, verify
from pecd_harness import free_port


def message(frm, to, subject="Prova PEC", cc=None, extra="", attach=False, bcc=None):
    head = f"From: <{frm}>\r\nTo: {', '.join('<%s>' % t for t in to)}\r\n"
    if cc:
        head += f"Cc: {', '.join('<%s>' % c for c in cc)}\r\n"
    if bcc:
        head += f"Bcc: <{bcc}>\r\n"
    head += f"Subject: {subject}\r\nMessage-ID: <{abs(hash((frm, subject, extra)))}@client.test>\r\n{extra}"
    if not attach:
        return (head + "\r\nBuongiorno,\r\nprova.\r\n").encode()
    return (head + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            "--b1\r\nContent-Type: text/plain\r\n\r\nIn allegato.\r\n"
            "--b1\r\nContent-Type: application/pdf; name=\"doc.pdf\"\r\n"
            "Content-Disposition: attachment; filename=\"doc.pdf\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nUERGREFUQQ==\r\n--b1--\r\n").encode()


@pytest.fixture
def world(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    ext = Downstream(free_port())      # an ordinary (non-PEC) mail server
    ext.start()
    a.write_config({"pec.b.test": b.ports["mx"], "plain.test": ext.port},
                   extra={"tls_policy": {"plain.test": "may"}})
    b.write_config({"pec.a.test": a.ports["mx"]})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    a.start()
    b.start()
    yield a, b, ext, ca, directory
    for p in (a, b):
        p.stop()
    ext.stop()


def postacert(msg):
    """The message/rfc822 part named postacert.eml of a parsed PEC message."""
    for p in msg.walk():
        if p.get_content_type() == "message/rfc822" and p.get_filename() == "postacert.eml":
            return p.get_payload(0)
    raise AssertionError("no postacert.eml part")


def assert_signed(p, path, raw, ca, directory, kind):
    v, rc = verify(path, ca, directory)
    assert rc == 0 and v["valid"], (kind, v)
    assert v["type"] == kind, v
    code, err = openssl_verify(raw, ca)
    assert code == 0, f"openssl cms -verify failed for {kind}: {err}"
    return v


def test_pec_between_two_providers_and_an_external_address(world):
    a, b, ext, ca, directory = world
    msg = message("mario@pec.a.test", ["anna@pec.b.test", "anna@pec.a.test", "x@plain.test"],
                  attach=True)
    a.submit("mario", ["anna@pec.b.test", "anna@pec.a.test", "x@plain.test"], msg)
    # acceptance to the sender, listing every recipient with its kind
    (acc,) = a.wait_mail("mario", ricevuta("accettazione"))
    v = assert_signed(a, *acc[:2], ca, directory, "accettazione")
    kinds = {d["indirizzo"]: d["tipo"] for d in v["daticert"]["destinatari"]}
    assert kinds == {"anna@pec.b.test": "certificato", "anna@pec.a.test": "certificato",
                     "x@plain.test": "esterno"}, kinds
    # the envelope in both recipients' mailboxes
    (env_b,) = b.wait_mail("anna", trasporto("posta-certificata"))
    assert_signed(b, *env_b[:2], ca, directory, "posta-certificata")
    assert env_b[2]["Subject"].startswith("POSTA CERTIFICATA: ")
    (env_a,) = a.wait_mail("anna", trasporto("posta-certificata"))
    assert_signed(a, *env_a[:2], ca, directory, "posta-certificata")
    # the external address gets the envelope as ordinary mail
    got = ext.wait_messages(1)
    assert got[0]["rcpts"] == ["x@plain.test"] and b"X-Trasporto: posta-certificata" in got[0]["data"]
    # presa in carico from B to A's service mailbox (and A's own, §3.4)
    pics = a.wait_mail("posta-certificata", ricevuta("presa-in-carico"), count=2)
    for p in pics:
        assert_signed(a, *p[:2], ca, directory, "presa-in-carico")
    # one delivery receipt per certificato recipient, completa with the original
    recs = a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=2)
    for r in recs:
        v = assert_signed(a, *r[:2], ca, directory, "avvenuta-consegna")
        assert v["variant"] == "completa"
        assert b"postacert.eml" in r[1]
    a_log = a.log(400)
    assert "status=sent (relayed to localhost" in a_log


def test_non_acceptance(world):
    a, b, ext, ca, directory = world
    # a Bcc: a forward path not in To/Cc (§3.1.1)
    a.submit("mario", ["anna@pec.b.test", "anna@pec.a.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], subject="bcc"))
    (n,) = a.wait_mail("mario", ricevuta("non-accettazione"))
    assert_signed(a, *n[:2], ca, directory, "non-accettazione")
    assert n[2]["Subject"].startswith("AVVISO DI NON ACCETTAZIONE: ")
    assert b"postacert.eml" not in n[1]
    # From: differs from MAIL FROM
    a.submit("mario", ["anna@pec.b.test"], message("anna@pec.a.test", ["anna@pec.b.test"], subject="from"))
    a.wait_mail("mario", ricevuta("non-accettazione"), count=2)
    # nothing left the provider
    assert b.mails("anna") == []


def test_unknown_recipient_gets_errore_consegna(world):
    a, b, ext, ca, directory = world
    a.submit("mario", ["nessuno@pec.b.test"], message("mario@pec.a.test", ["nessuno@pec.b.test"]))
    (e,) = a.wait_mail("mario", ricevuta("errore-consegna"))
    v = assert_signed(a, *e[:2], ca, directory, "errore-consegna")
    assert v["daticert"]["errore"] == "no-dest", v


@pytest.mark.parametrize("tipo", ["breve", "sintetica"])
def test_receipt_variants(world, tipo):
    a, b, ext, ca, directory = world
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], extra=f"X-TipoRicevuta: {tipo}\r\n",
                     attach=True))
    (r,) = a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    v = assert_signed(a, *r[:2], ca, directory, "avvenuta-consegna")
    assert v["variant"] == tipo
    if tipo == "breve":
        # §3.3.2.2: the named part becomes one text/plain "<filename>.hash" holding the
        # SHA-1 of the part as transmitted (its base64 lines), 40 hex digits; the rest of
        # the MIME structure is kept
        orig = postacert(r[2])
        parts = [p for p in orig.walk() if not p.is_multipart()]
        assert [p.get_filename() for p in parts] == [None, "doc.pdf.hash"], parts
        h = parts[1]
        assert h.get_content_type() == "text/plain"
        assert h.get_payload(decode=True).decode().strip() == \
            hashlib.sha1(b"UERGREFUQQ==").hexdigest()
        assert parts[0].get_payload(decode=True).strip() == b"In allegato."
    else:
        assert b"postacert.eml" not in r[1]


def test_domain_default_receipt_type(world):
    """A domain's default receipt type (local_domains_file receipt=, issue 23): a user of the
    domain who does not ask for one with X-TipoRicevuta gets it; one who asks gets what they
    asked for."""
    a, b, ext, ca, directory = world
    a.stop()
    with open(os.path.join(a.dir, "domains"), "w") as f:
        f.write("pec.a.test receipt=sintetica\n")
    a.write_config({"pec.b.test": b.ports["mx"]},
                   extra={"provider": {"local_domains_file": "domains"}})
    a.start()
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], subject="predefinita"))
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], subject="chiesta",
                     extra="X-TipoRicevuta: completa\r\n"))
    recs = a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=2)
    got = {}
    for r in recs:
        v = verify(r[0], ca, directory)[0]
        got[v["daticert"]["oggetto"]] = v["variant"]
    assert got == {"predefinita": "sintetica", "chiesta": "completa"}, got


def test_cc_recipient_gets_sintetica(world):
    a, b, ext, ca, directory = world
    a.submit("mario", ["anna@pec.b.test", "mario@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], cc=["mario@pec.b.test"]))
    recs = a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=2)
    variants = sorted(verify(r[0], ca, directory)[0]["variant"] for r in recs)
    assert variants == ["completa", "sintetica"]


def test_receipt_variant_by_parsed_address(world):
    """§3.3.2.2 (issue 17 item 5): bob only in Cc gets sintetica although "jimbob@…" in To
    contains his address as a substring; jimbob, in To, gets the breve he asked for."""
    a, b, ext, ca, directory = world
    b.add_user("bob")
    b.add_user("jimbob")
    a.submit("mario", ["jimbob@pec.b.test", "bob@pec.b.test"],
             message("mario@pec.a.test", ["jimbob@pec.b.test"], cc=["bob@pec.b.test"],
                     extra="X-TipoRicevuta: breve\r\n", subject="sosia"))
    recs = a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=2)
    got = {}
    for r in recs:
        v = verify(r[0], ca, directory)[0]
        got[v["daticert"]["consegna"]] = v["variant"]
    assert got == {"jimbob@pec.b.test": "breve", "bob@pec.b.test": "sintetica"}, got


def test_ordinary_mail_becomes_an_anomaly(world):
    a, b, ext, ca, directory = world
    import smtplib
    ctx = __import__("ssl")._create_unverified_context()
    with smtplib.SMTP("127.0.0.1", b.ports["mx"]) as s:
        s.starttls(context=ctx)
        s.sendmail("someone@plain.test", ["anna@pec.b.test"],
                   b"From: <someone@plain.test>\r\nTo: <anna@pec.b.test>\r\nSubject: ciao\r\n\r\nhello\r\n")
    (x,) = b.wait_mail("anna", trasporto("errore"))
    assert x[2]["Subject"].startswith("ANOMALIA MESSAGGIO: ")
    code, err = openssl_verify(x[1], ca)
    assert code == 0, err


def test_tampered_envelope_becomes_an_anomaly(world):
    a, b, ext, ca, directory = world
    a.submit("mario", ["anna@pec.a.test"], message("mario@pec.a.test", ["anna@pec.a.test"]))
    (env,) = a.wait_mail("anna", trasporto("posta-certificata"))
    raw = env[1].split(b"\r\n", 2)[2]     # without Return-Path and Delivered-To
    raw = raw.replace(b"Buongiorno", b"Buonasera", 1)
    import smtplib, ssl
    with smtplib.SMTP("127.0.0.1", b.ports["mx"]) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.sendmail("mario@pec.a.test", ["anna@pec.b.test"], raw)
    (x,) = b.wait_mail("anna", trasporto("errore"))
    assert b"content-changed" in x[1] or b"content changed" in x[1].lower(), x[1][:2000]


def test_timeout_notices_when_the_peer_is_down(world):
    a, b, ext, ca, directory = world
    b.stop()
    a.stop()
    a.write_config({"pec.b.test": b.ports["mx"], "plain.test": ext.port},
                   extra={"timers": {"preavviso": "3s", "mancata_consegna": "6s"},
                          "tls_policy": {"plain.test": "may"}})
    a.start()
    a.submit("mario", ["anna@pec.b.test"], message("mario@pec.a.test", ["anna@pec.b.test"]))
    notices = a.wait_mail("mario", ricevuta("preavviso-errore-consegna"), count=2, timeout=30)
    for n in notices:
        assert_signed(a, *n[:2], ca, directory, "preavviso-errore-consegna")
        assert n[2]["Subject"].startswith("AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ")
    assert b"12 ore" in notices[0][1] and b"24 ore" in notices[1][1]


def test_evidence_log_and_trace(world):
    a, b, ext, ca, directory = world
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], subject="traccia"))
    (r,) = a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    # the client's Message-ID finds the whole life of the message at each provider
    orig = "<%s@client.test>" % abs(hash(("mario@pec.a.test", "traccia", "")))
    ta = pecctl("-c", a.conf, "trace", orig).stdout
    for ev in ("accettazione", "busta-trasporto", "ricevuta:presa-in-carico",
               "ricevuta:avvenuta-consegna"):
        assert ev in ta, ta
    tb = pecctl("-c", b.conf, "trace", orig).stdout
    assert "presa-in-carico" in tb and "avvenuta-consegna" in tb, tb
    # and the PEC msgid too
    pec_id = r[2]["X-Riferimento-Message-ID"] and verify(r[0], ca, directory)[0]["daticert"]["identificativo"]
    assert "accettazione" in pecctl("-c", a.conf, "trace", pec_id).stdout
    for p in (a, b):
        res = pecctl("-c", p.conf, "log", "verify", check=False)
        assert res.returncode == 0, res.stdout + res.stderr


def test_stage_waits_for_the_evidence_log(world):
    """A pass of stages whose events cannot be stored (another process holds the evidence
    log's write lock past SQLite's 10 s wait) commits nothing: no receipt, no envelope. Once
    the log is free the stage runs again, and every receipt arrives exactly once with each
    event logged once."""
    a, b, ext, ca, directory = world
    msg = message("mario@pec.a.test", ["anna@pec.b.test"], subject="registro occupato")
    db = sqlite3.connect(os.path.join(a.dir, "evidence.db"), isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    try:
        a.submit("mario", ["anna@pec.b.test"], msg)
        end = time.time() + 40
        while "events of a pass of stages were not stored" not in a.log(400):
            assert time.time() < end, a.log(60)
            time.sleep(0.2)
        assert a.mails("mario") == [] and b.mails("anna") == []
    finally:
        db.execute("ROLLBACK")
        db.close()
    a.wait_mail("mario", ricevuta("avvenuta-consegna"), timeout=40)
    time.sleep(2)   # anything produced twice would be here by now
    kinds = sorted((m[2].get("X-Ricevuta") or "").strip() for m in a.mails("mario"))
    assert kinds == ["accettazione", "avvenuta-consegna"], kinds
    assert len(b.wait_mail("anna", trasporto("posta-certificata"))) == 1
    assert len(b.mails("anna")) == 1
    with sqlite3.connect(os.path.join(a.dir, "evidence.db")) as ro:
        n = dict(ro.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    assert n.get("accettazione") == 1 and n.get("busta-trasporto") == 1, n
    res = pecctl("-c", a.conf, "log", "verify", check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_stage_failing_past_the_queue_lifetime_is_held(world):
    """A PEC stage still failing when the queue lifetime is over is not run again in a tight
    loop nor dropped (issue 18 item 7): the message is held, the log says so, `pecctl queue`
    marks it; once the cause is gone, `pecctl queue release` runs it and every receipt
    arrives once."""
    a, b, ext, ca, directory = world
    a.stop()
    a.write_config({"pec.b.test": b.ports["mx"], "plain.test": ext.port},
                   extra={"tls_policy": {"plain.test": "may"}, "queue": {"lifetime": "3s"}})
    a.start()
    db = sqlite3.connect(os.path.join(a.dir, "evidence.db"), isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    try:
        a.submit("mario", ["anna@pec.b.test"],
                 message("mario@pec.a.test", ["anna@pec.b.test"], subject="trattenuto"))
        end = time.time() + 60
        while "message held in hold/" not in a.log(400):
            assert time.time() < end, a.log(60)
            time.sleep(0.2)
        time.sleep(2)
        log = a.log(2000)
        assert log.count("stage deferred") <= 3, log     # no loop after the lifetime
        held = pecctl("-c", a.conf, "queue").stdout
        qid = next(l.split("!")[0] for l in held.splitlines() if "!" in l)
        assert len(qid) == 16, held
        assert a.mails("mario") == [] and b.mails("anna") == []
    finally:
        db.execute("ROLLBACK")
        db.close()
    r = pecctl("-c", a.conf, "queue", "release", qid)
    assert "pecd tries it now" in r.stdout, r.stdout
    a.wait_mail("mario", ricevuta("avvenuta-consegna"), timeout=40)
    assert len(b.wait_mail("anna", trasporto("posta-certificata"))) == 1
    time.sleep(1)
    kinds = sorted((m[2].get("X-Ricevuta") or "").strip() for m in a.mails("mario"))
    assert kinds == ["accettazione", "avvenuta-consegna"], kinds
    assert "Queue is empty" in pecctl("-c", a.conf, "queue").stdout
    r = pecctl("-c", a.conf, "queue", "release", qid, check=False)
    assert r.returncode == 1 and "no such message on hold" in r.stderr, r.stderr


def test_peer_restart_does_not_defer_the_next_envelope(world):
    """The connection A keeps open to B for the next envelope dies when B restarts. A probes
    a connection that sat idle before using it (RSET), so the next envelope goes at once on
    a new connection instead of failing on the dead one and waiting for a retry."""
    a, b, ext, ca, directory = world
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], subject="prima"))
    a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    b.stop()
    b.start()
    start = len(a.log(100000).splitlines())
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], subject="seconda"))
    a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=2)
    after = "\n".join(a.log(100000).splitlines()[start:])
    assert "status=deferred" not in after, after
    assert len(b.mails("anna")) == 2


def test_duplicate_window_forgets_old_entries(world):
    """The incoming point remembers each message it took in for [timers] duplicate_window
    (to drop a copy the sender retries), then forgets it: tracking.db does not grow with
    every message ever received."""
    a, b, ext, ca, directory = world
    b.stop()
    b.write_config({"pec.a.test": a.ports["mx"]}, extra={"timers": {"duplicate_window": "2s"}})
    b.start()
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], subject="finestra"))
    a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    def remembered():
        db = sqlite3.connect(os.path.join(b.dir, "tracking.db"))
        try:
            return db.execute("SELECT count(*) FROM taken_in").fetchone()[0]
        finally:
            db.close()

    b.stop()   # pecd holds tracking.db exclusively while it runs
    assert remembered() == 1
    b.start()
    time.sleep(4)   # > the window + the purge's 1 s period
    b.stop()
    assert remembered() == 0
    b.start()


def test_too_big_is_not_accepted(world):
    a, b, ext, ca, directory = world
    a.stop()
    a.write_config({"pec.b.test": b.ports["mx"], "plain.test": ext.port},
                   extra={"pec": {"max_total_size": "4K"}, "tls_policy": {"plain.test": "may"}})
    a.start()
    big = message("mario@pec.a.test", ["anna@pec.b.test", "mario@pec.b.test"], subject="grande",
                  extra="".join(f"X-Pad{i}: {'x' * 70}\r\n" for i in range(35)))
    a.submit("mario", ["anna@pec.b.test", "mario@pec.b.test"], big)   # 2 x ~2.7 KB > 4 KB
    (n,) = a.wait_mail("mario", ricevuta("non-accettazione"))
    assert_signed(a, *n[:2], ca, directory, "non-accettazione")
    assert b.mails("anna") == []


def test_signer_not_in_the_directory_gives_an_anomaly(world, tmp_path):
    a, b, ext, ca, directory = world
    # provider C has a certificate from the same CA but no entry in the directory
    cdir = str(tmp_path / "c")
    pecctl("pki", "issue", "--ca", ca, "--domain", "pec.c.test", "--out", cdir, "--name", "C")
    out = str(tmp_path / "env.eml")
    import subprocess
    from pecd_harness import BUILD
    sample = os.path.join(BUILD, "src", "pec", "pec_sample")
    if not os.path.exists(sample):
        pytest.skip("pec_sample is not built")
    subprocess.run([sample, "--key", os.path.join(cdir, "signing.key"), "--chain",
                    os.path.join(cdir, "signing.pem"), "--domain", "pec.c.test", "--type",
                    "posta-certificata", "--out", out], check=True)
    import smtplib, ssl
    with smtplib.SMTP("127.0.0.1", b.ports["mx"]) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.sendmail("x@pec.c.test", ["anna@pec.b.test"], open(out, "rb").read())
    (x,) = b.wait_mail("anna", trasporto("errore"))
    assert b"not-in-directory" in x[1] or b"directory" in x[1], x[1][:3000]
    # no presa in carico for a provider we do not know
    assert "presa-in-carico" not in b.log(100).split("anomaly envelope")[-1]


def test_ordinary_mail_refused_when_not_accepted(world):
    a, b, ext, ca, directory = world
    b.stop()
    b.write_config({"pec.a.test": a.ports["mx"]}, extra={"pec": {"accept_ordinary_mail": "no"}})
    b.start()
    import smtplib, ssl
    with smtplib.SMTP("127.0.0.1", b.ports["mx"]) as s:
        s.starttls(context=ssl._create_unverified_context())
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("someone@plain.test", ["anna@pec.b.test"],
                       b"From: <someone@plain.test>\r\nTo: <anna@pec.b.test>\r\nSubject: ciao\r\n\r\nhi\r\n")
        assert e.value.smtp_code == 550 and b"5.7.1" in e.value.smtp_error
    # certified mail still arrives
    a.submit("mario", ["anna@pec.b.test"], message("mario@pec.a.test", ["anna@pec.b.test"]))
    b.wait_mail("anna", trasporto("posta-certificata"))
    a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    assert b.mails("anna") and all(trasporto("posta-certificata")(m) for _, _, m in b.mails("anna"))


def test_fsync_mode_syncs_the_tracking_database(world):
    """tracking.db commits without a sync of its own (synchronous=NORMAL) because the queue's
    syncfs covers it. With [queue] sync = fsync nothing does: pecd says so and syncs each
    commit; the whole exchange works in that mode."""
    a, b, ext, ca, directory = world
    a.stop()
    a.write_config({"pec.b.test": b.ports["mx"], "plain.test": ext.port},
                   extra={"tls_policy": {"plain.test": "may"}, "queue": {"sync": "fsync"}})
    a.start()
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], subject="fsync"))
    (r,) = a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    assert_signed(a, *r[:2], ca, directory, "avvenuta-consegna")
    log = a.log(100000)
    assert "tracking.db: [queue] sync = fsync, every commit synced" in log
    assert "evidence.db: [queue] sync = fsync, every commit synced" in log
    assert "every commit synced" not in b.log(100000)   # syncfs, one file system


def test_certificate_watch(tmp_path):
    """Issue 23: at start pecd warns when its signing or TLS certificate expires within 30
    days, and when the signing certificate in use is not in the providers' directory (a
    renewal not published yet: other providers would refuse our mail)."""
    from pec_providers import make_providers
    a, b, ca, directory = make_providers(tmp_path)
    renewed = str(tmp_path / "renewed")
    pecctl("pki", "issue", "--ca", ca, "--domain", "pec.a.test", "--out", renewed, "--name",
           "Provider A", "--days", "10", "--tls-host", "localhost")
    a.write_config({"pec.b.test": b.ports["mx"]},
                   extra={"pec": {"signing_key": os.path.join(renewed, "signing.key"),
                                  "signing_certificate": os.path.join(renewed, "signing.pem")},
                          "tls": {"certificate": os.path.join(renewed, "tls.pem"),
                                  "key": os.path.join(renewed, "tls.key")}})
    a.add_user("mario")
    a.start()
    try:
        log = a.log(200)
        assert "is not in the providers' directory" in log, log
        assert "signing certificate" in log and "expires in 9 days" in log or \
            "expires in 10 days" in log, log
        assert "the TLS certificate" in log
    finally:
        a.stop()
