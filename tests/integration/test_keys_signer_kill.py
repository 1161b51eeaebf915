"""The signer process killed under load (issue 20): two providers started as root (network
processes as pecmail) exchange 150 PEC messages while the signer of one or the other is
killed with SIGKILL at random moments, at least ten times.  The keeper starts a new signer
each time; signatures under way are asked again of it.  While no signer answers, a
submission is answered 451 4.3.0 and not acknowledged (shown deterministically: the keeper
is stopped, the signer killed, a submission refused, the keeper let go on).  Afterwards
every acknowledged message has exactly one acceptance, one transport envelope at B, one
presa in carico and one delivery receipt, every message verifies with `openssl cms`, and
both evidence logs are intact."""
import collections
import os
import pathlib
import random
import re
import shutil
import signal
import smtplib
import ssl
import threading
import time

import pytest

from pec_providers import make_providers, start_pair, openssl_verify, pecctl
from pecd_harness import reachable_dir
from test_keys_privsep import roles
from test_pec_providers import message

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a start as root")

N = 150
KILLS = 12


@pytest.fixture
def pair():
    root = reachable_dir("pec-keys-kill-")
    a, b, ca, directory = make_providers(pathlib.Path(root), privsep=True)
    start_pair(a, b)
    yield a, b, ca
    for p in (a, b):
        p.stop()
    if not os.environ.get("PEC_KEEP_TMP"):
        shutil.rmtree(root, ignore_errors=True)


def counts(p, local, header, kind):
    c = collections.Counter()
    for _, raw, m in p.mails(local):
        if (m.get(header) or "").strip() == kind:
            s = re.search(r"firma-(\d+)", m.get("Subject", ""))
            if s:
                c[int(s.group(1))] += 1
    return c


def session(a):
    ctx = ssl.create_default_context(cafile=a.ca + "/ca.pem")
    ctx.check_hostname = False
    s = smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=30)
    s.starttls(context=ctx)
    s.login("mario@pec.a.test", "mario-password")
    return s


def test_signer_killed_under_load(pair):
    a, b, ca = pair
    # first, deterministically: no signer -> 451 4.3.0, nothing acknowledged
    _, keeper, signer = roles(a)
    s = session(a)
    os.kill(keeper, signal.SIGSTOP)
    try:
        os.kill(signer, signal.SIGKILL)
        end = time.time() + 10
        while "is gone" not in a.log(200):
            assert time.time() < end, a.log(50)
            time.sleep(0.05)
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("mario@pec.a.test", ["anna@pec.b.test"],
                       message("mario@pec.a.test", ["anna@pec.b.test"], subject="firma-rifiutata"))
        assert e.value.smtp_code == 451 and e.value.smtp_error.startswith(b"4.3.0"), e.value
    finally:
        os.kill(keeper, signal.SIGCONT)
    end = time.time() + 10
    while "answers: signatures go on" not in a.log(200).split("is gone")[-1]:
        assert time.time() < end, a.log(50)
        time.sleep(0.05)
    s.sendmail("mario@pec.a.test", ["anna@pec.b.test"],
               message("mario@pec.a.test", ["anna@pec.b.test"], subject="firma-dopo"))
    s.quit()

    acked, refused = set(), collections.Counter()
    stop = threading.Event()

    def sender():
        i = 0
        deadline = time.time() + 120
        while i < N and time.time() < deadline:
            try:
                with session(a) as s:
                    while i < N and time.time() < deadline:
                        try:
                            s.sendmail("mario@pec.a.test", ["anna@pec.b.test"],
                                       message("mario@pec.a.test", ["anna@pec.b.test"],
                                               subject=f"firma-{i}"))
                            acked.add(i)
                            i += 1
                        except smtplib.SMTPDataError as e:
                            # not acknowledged: the client tries the same message later
                            refused[e.smtp_code] += 1
                            assert e.smtp_code == 451, e
                            time.sleep(0.05)
                        time.sleep(0.01)
            except (OSError, smtplib.SMTPException):
                # a TLS handshake while no signer answered, or the session broke: whether
                # that message went through is unknown, the next one gets a new number
                i += 1
                time.sleep(0.05)
        stop.set()

    t = threading.Thread(target=sender)
    t.start()
    rnd = random.Random(20)
    kills = 0
    while not stop.is_set() or kills < KILLS:
        time.sleep(rnd.uniform(0.05, 0.3))
        victim = rnd.choice([a, b])
        _, _, signer = roles(victim)
        os.kill(signer, signal.SIGKILL)
        kills += 1
        if kills >= 40:
            break
    t.join(150)
    assert not t.is_alive()
    assert kills >= 10, kills
    assert len(acked) >= N * 3 // 4, f"only {len(acked)} of {N} acknowledged; refused {refused}"

    def complete():
        return (counts(a, "mario", "X-Ricevuta", "accettazione"),
                counts(a, "mario", "X-Ricevuta", "avvenuta-consegna"),
                counts(b, "anna", "X-Trasporto", "posta-certificata"),
                counts(a, "posta-certificata", "X-Ricevuta", "presa-in-carico"))
    end = time.time() + 90
    while time.time() < end:
        if all(all(c[i] >= 1 for i in acked) for c in complete()):
            break
        time.sleep(0.5)
    for name, c in zip(("accettazione", "avvenuta-consegna", "busta", "presa-in-carico"),
                       complete()):
        missing = sorted(i for i in acked if c[i] == 0)
        twice = sorted(i for i, n in c.items() if n > 1)
        assert not missing, f"{name}: missing for {missing[:20]}\n{a.log(40)}\n{b.log(40)}"
        assert not twice, f"{name}: more than once for {twice[:20]}"
    # every signed message verifies, whichever signer made it
    for p, local in ((a, "mario"), (b, "anna"), (a, "posta-certificata")):
        for path, raw, _ in p.mails(local):
            rc, err = openssl_verify(raw, ca)
            assert rc == 0, f"{path}: {err}"
    for p in (a, b):
        r = pecctl("-c", p.conf, "log", "verify", check=False)
        assert r.returncode == 0, f"{p.domain}: {r.stdout}{r.stderr}"
        assert p.log(100000).count("killed by signal 9") >= 1
