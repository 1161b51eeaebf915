"""kill -9 either provider at random moments during a run of 200 PEC messages (issue 6):
after the restarts every acknowledged message has exactly its receipts, none twice."""
import collections
import random
import os
import re
import sqlite3
import smtplib
import ssl
import threading
import time

import pytest

from pec_providers import make_providers, start_pair, pecctl
from test_pec_providers import message

N = 200


@pytest.fixture
def pair(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    start_pair(a, b)
    yield a, b
    for p in (a, b):
        p.stop()


def subjects(p, local, kind_header, kind):
    c = collections.Counter()
    for _, raw, m in p.mails(local):
        if (m.get(kind_header) or "").strip() == kind:
            s = re.search(r"crash-(\d+)", m.get("Subject", ""))
            if s:
                c[int(s.group(1))] += 1
    return c


def test_kill_9_during_200_pec_messages(pair):
    a, b = pair
    acked = set()
    stop = threading.Event()
    lock = threading.Lock()

    def sender():
        ctx = ssl.create_default_context(cafile=a.ca + "/ca.pem")
        ctx.check_hostname = False
        i = 0
        deadline = time.time() + 120
        while i < N and time.time() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=10) as s:
                    s.starttls(context=ctx)
                    s.login("mario@pec.a.test", "mario-password")
                    while i < N:
                        s.sendmail("mario@pec.a.test", ["anna@pec.b.test"],
                                   message("mario@pec.a.test", ["anna@pec.b.test"],
                                           subject=f"crash-{i}"))
                        with lock:
                            acked.add(i)
                        i += 1
                        time.sleep(0.02)   # spread the run over the kills
            except (OSError, smtplib.SMTPException):
                time.sleep(0.1)   # the provider is restarting; the next message gets a new number
                i += 1
        stop.set()

    t = threading.Thread(target=sender)
    t.start()
    kills = 0
    rnd = random.Random(1234)
    while not stop.is_set() and kills < 40:
        time.sleep(rnd.uniform(0.1, 0.4))
        victim = rnd.choice([a, b])
        victim.kill()
        kills += 1
        victim.start()
    t.join(150)
    assert not t.is_alive()
    assert kills >= 10, kills
    assert len(acked) >= N // 2, f"only {len(acked)} of {N} acknowledged"

    # every acknowledged message: exactly one of each, never two of anything
    def complete():
        acc = subjects(a, "mario", "X-Ricevuta", "accettazione")
        cons = subjects(a, "mario", "X-Ricevuta", "avvenuta-consegna")
        env = subjects(b, "anna", "X-Trasporto", "posta-certificata")
        pic = subjects(a, "posta-certificata", "X-Ricevuta", "presa-in-carico")
        return acc, cons, env, pic
    end = time.time() + 90
    while time.time() < end:
        acc, cons, env, pic = complete()
        if all(all(c[i] >= 1 for i in acked) for c in (acc, cons, env, pic)):
            break
        time.sleep(0.5)
    acc, cons, env, pic = complete()
    for name, c in (("accettazione", acc), ("avvenuta-consegna", cons), ("busta", env),
                    ("presa-in-carico", pic)):
        missing = sorted(i for i in acked if c[i] == 0)
        twice = sorted(i for i, n in c.items() if n > 1)
        assert not missing, f"{name}: missing for {missing[:20]} ({len(missing)})\n{a.log(40)}\n{b.log(40)}"
        assert not twice, f"{name}: more than once for {twice[:20]}"
    # a message that was never acknowledged may have gone through, but once at most
    nothing_twice = [c for c in (acc, cons, env, pic) if any(n > 1 for n in c.values())]
    assert not nothing_twice
    # the evidence log of both providers is intact after all the kills
    for p in (a, b):
        r = pecctl("-c", p.conf, "log", "verify", check=False)
        assert r.returncode == 0, f"{p.domain}: log verify: {r.stdout}{r.stderr}"
    # each receipt A holds is the one B's evidence log recorded (a stage run again
    # after a kill gives its receipts the Message-IDs of the first run)
    db = sqlite3.connect(f"file:{os.path.join(b.dir, 'evidence.db')}?mode=ro", uri=True)
    logged = {t: {m for (m,) in db.execute("SELECT message_id FROM events WHERE type = ?", (t,))}
              for t in ("avvenuta-consegna", "presa-in-carico")}
    db.close()
    for local, kind in (("mario", "avvenuta-consegna"), ("posta-certificata", "presa-in-carico")):
        for _, raw, m in a.mails(local):
            if (m.get("X-Ricevuta") or "").strip() == kind:
                mid = m.get("Message-ID", "").strip().strip("<>")
                assert mid in logged[kind], f"{kind} {mid} is not in B's evidence log"
    # no timeout notice: every delivery receipt came back
    assert subjects(a, "mario", "X-Ricevuta", "preavviso-errore-consegna") == collections.Counter()
