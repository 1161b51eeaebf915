"""The timeout notices of RFC 6109 §3.1.6 during another provider's outage (issue 18 item 6):

- a backlog of 20,000 due notices (a long outage) is worked off by the delivery threads, all
  of them, each exactly once, while submissions keep their latency (the event loop builds and
  signs nothing);
- after the 24 h notice has ended the transaction negatively, the envelope is not retried
  any longer and the sender gets no unsigned report days later.
"""
import os
import smtplib
import sqlite3
import ssl
import statistics
import time

import pytest

from pec_providers import make_providers, ricevuta

BACKLOG = 20000


@pytest.fixture
def providers(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    yield a, b, ca, directory
    for p in (a, b):
        p.stop()


def submit_timed(a, n):
    """n submissions by mario to anna at A itself; the time of each, connect to QUIT."""
    ctx = ssl.create_default_context(cafile=os.path.join(a.ca, "ca.pem"))
    ctx.check_hostname = False
    times = []
    for i in range(n):
        msg = (f"From: <mario@pec.a.test>\r\nTo: <anna@pec.a.test>\r\nSubject: durante {i}\r\n"
               f"Message-ID: <durante{i}@client.test>\r\n\r\nciao\r\n").encode()
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=30) as s:
            s.starttls(context=ctx)
            s.login("mario@pec.a.test", "mario-password")
            s.sendmail("mario@pec.a.test", ["anna@pec.a.test"], msg)
        times.append(time.monotonic() - t0)
    return times


def count_new(maildir):
    return sum(len(os.listdir(os.path.join(maildir, sub))) for sub in ("new", "cur")
               if os.path.isdir(os.path.join(maildir, sub)))


def test_a_backlog_of_notices_goes_out_while_submissions_flow(providers):
    a, b, ca, directory = providers
    a.write_config({"pec.b.test": b.ports["mx"]})
    a.add_user("mario")
    a.add_user("anna")
    # tracking.db as an outage of provider B leaves it: 20,000 recipients whose 24 h passed
    a.start()
    a.stop()
    db = sqlite3.connect(os.path.join(a.dir, "tracking.db"))
    sent = int(time.time()) - 2 * 86400
    db.executemany(
        "INSERT INTO expect (pec_id, rcpt, sender, subject, recipients, sent, orig_msgid, slot)"
        " VALUES (?, 'anna@pec.b.test', 'mario@pec.a.test', ?, 'anna@pec.b.test', ?, ?, 0)",
        ((f"opec1.20261205000000.{i:016X}@pec.a.test", f"arretrato {i}", sent,
          f"<arretrato{i}@client.test>") for i in range(BACKLOG)))
    db.commit()
    db.close()
    t0 = time.monotonic()
    a.start()
    times = submit_timed(a, 20)
    # submissions are not held up by the notices: the slowest well under a second
    assert max(times) < 1.5, times
    assert statistics.median(times) < 0.5, times
    deadline = time.monotonic() + 300
    box = a.maildir("mario")
    while count_new(box) < BACKLOG + 40 and time.monotonic() < deadline:   # + 20 acceptances, 20 delivery receipts
        time.sleep(1)
    elapsed = time.monotonic() - t0
    n = count_new(box)
    assert n == BACKLOG + 40, f"{n} messages in mario's mailbox after {elapsed:.0f} s"
    time.sleep(2)
    assert count_new(box) == BACKLOG + 40      # none twice
    ev = sqlite3.connect(f"file:{os.path.join(a.dir, 'evidence.db')}?mode=ro", uri=True)
    logged = ev.execute("SELECT count(*) FROM events WHERE type = 'preavviso-errore-consegna'"
                        ).fetchone()[0]
    ev.close()
    assert logged == BACKLOG
    a.stop()   # pecd holds tracking.db exclusively while it runs
    db = sqlite3.connect(f"file:{os.path.join(a.dir, 'tracking.db')}?mode=ro", uri=True)
    # every tracking ended (notice 2), each row naming the batch that carried its notice;
    # the rows themselves go with [timers] duplicate_window
    assert db.execute("SELECT count(*) FROM expect WHERE sent = ? AND (notice < 2 OR "
                      "notice2_qid IS NULL)", (sent,)).fetchone()[0] == 0
    db.close()
    print(f"{BACKLOG} notices in {elapsed:.1f} s; submissions: median "
          f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")


def test_envelope_not_retried_after_the_24h_notice(providers):
    """RFC 6109 §3.1.6: "The transaction is deemed to be considered terminated with a
    negative outcome."  The sender has both signed notices; the envelope to the unreachable
    provider then leaves the queue without an unsigned report."""
    a, b, ca, directory = providers
    # B is never started
    a.write_config({"pec.b.test": b.ports["mx"]},
                   extra={"timers": {"preavviso": "3s", "mancata_consegna": "6s"}})
    a.add_user("mario")
    a.start()
    a.submit("mario", ["anna@pec.b.test"],
             b"From: <mario@pec.a.test>\r\nTo: <anna@pec.b.test>\r\nSubject: mai\r\n"
             b"Message-ID: <mai@client.test>\r\n\r\nciao\r\n")
    a.wait_mail("mario", ricevuta("preavviso-errore-consegna"), count=2, timeout=40)
    end = time.time() + 30
    while "PEC transaction ended without a delivery receipt" not in a.log(2000):
        assert time.time() < end, a.log(60)
        time.sleep(0.5)
    time.sleep(2)
    from pec_providers import pecctl
    assert "Queue is empty" in pecctl("-c", a.conf, "queue").stdout
    kinds = [(m[2].get("X-Ricevuta") or m[2].get_content_type()) for m in a.mails("mario")]
    assert "multipart/report" not in kinds, kinds
    assert sorted(k.strip() for k in kinds) == ["accettazione", "preavviso-errore-consegna",
                                                "preavviso-errore-consegna"], kinds
