"""Backups and disaster recovery (issue 23): `pecctl backup DIR` while pecd works,
`pecctl restore DIR` on a wiped host.

- Under load: provider A sends PEC to provider B while B is backed up; B is then killed
  (-9) and its whole directory removed; the backup is restored and B started again.  Every
  message the backup holds (in B's queue or already in a mailbox) is in its recipient's
  mailbox exactly once; no message is there twice; B's evidence log verifies and records
  each receipt of B once.
- The refusals a restore owes its operator: a damaged backup, a manifest that names a path
  outside the backup, a running pecd, an instance with state of its own.
"""
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest

from pec_providers import make_providers, pecctl, trasporto
from pecd_harness import PECCTL

N = 60
SUBJ = re.compile(rb"carico-(\d{3})-x")


def message(i):
    return (f"From: <mario@pec.a.test>\r\nTo: <anna@pec.b.test>\r\nSubject: carico-{i:03d}-x\r\n"
            f"Message-ID: <carico-{i:03d}@client.test>\r\n\r\nMessaggio {i}.\r\n").encode()


def subjects_in(paths):
    """The message numbers named in the files under paths (a backup's queue and Maildirs)."""
    found = set()
    for top in paths:
        for root, _, files in os.walk(top):
            if os.path.basename(root) == "tmp":
                continue    # a Maildir delivery under way when copied: not delivered
            for n in files:
                with open(os.path.join(root, n), "rb") as f:
                    found.update(int(m) for m in SUBJ.findall(f.read()))
    return found


def delivered(b):
    """Message number -> copies in anna's mailbox (the envelopes of §3.1.5)."""
    counts = {}
    for _, raw, msg in b.mails("anna"):
        if (msg.get("X-Trasporto") or "").strip() != "posta-certificata":
            continue
        m = SUBJ.search(raw)
        assert m, msg["Subject"]
        counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
    return counts


def run(*args, input=None):
    return subprocess.run([PECCTL, *args], capture_output=True, text=True, timeout=300,
                          input=input)


def test_backup_under_load_wipe_restore(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    a.write_config({"pec.b.test": b.ports["mx"]})
    # one delivery thread at B: its queue holds a backlog while the backup runs
    b.write_config({"pec.a.test": a.ports["mx"]}, extra={"queue": {"delivery_workers": "1"}})
    a.add_user("mario")
    b.add_user("anna")
    a.start()
    b.start()
    try:
        sent, errors = [], []

        def load():
            for i in range(N):
                try:
                    a.submit("mario", ["anna@pec.b.test"], message(i))
                    sent.append(i)
                except Exception as e:   # noqa: BLE001 - reported below
                    errors.append((i, repr(e)))

        t = threading.Thread(target=load)
        t.start()
        deadline = time.time() + 60
        while len(sent) < N // 3 and time.time() < deadline:
            time.sleep(0.05)
        backup = str(tmp_path / "backup-b")
        r = run("-c", b.conf, "backup", backup, "--include-keys")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "pecd's snapshot: messages=" in r.stdout, r.stdout
        assert t.is_alive() or len(sent) == N      # the load went on meanwhile
        b.kill()                                   # the disaster: right after the backup
        in_backup = subjects_in([os.path.join(backup, "queue"), os.path.join(backup, "mail")])
        assert in_backup, "the backup holds no message of the load"
        shutil.rmtree(b.dir)

        r = run("-c", b.conf, "restore", backup)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"restored {b.conf} from the backup" in r.stdout
        b.start()
        t.join(timeout=180)
        assert not errors, errors

        # B delivers what it held; A's retries of what B never acknowledged arrive too
        deadline = time.time() + 120
        while time.time() < deadline:
            got = delivered(b)
            if all(got.get(i) for i in in_backup) and \
                    not os.listdir(os.path.join(b.dir, "queue", "queue")):
                break
            time.sleep(0.5)
        time.sleep(2)                              # room for a late duplicate to show
        got = delivered(b)
        missing = sorted(i for i in in_backup if i not in got)
        twice = sorted(i for i, n in got.items() if n > 1)
        assert not missing, f"in the backup but not delivered: {missing}\n{b.log(80)}"
        assert not twice, f"delivered more than once: {twice}"

        # B's evidence log: intact, each receipt of B recorded once per message
        r = run("-c", b.conf, "log", "verify")
        assert r.returncode == 0, r.stdout + r.stderr
        db = sqlite3.connect(f"file:{os.path.join(b.dir, 'evidence.db')}?mode=ro", uri=True)
        dup = db.execute("SELECT type, pec_id, recipients, count(*) FROM events WHERE type IN "
                         "('presa-in-carico', 'avvenuta-consegna') GROUP BY type, pec_id, "
                         "recipients HAVING count(*) > 1").fetchall()
        db.close()
        assert not dup, dup
    finally:
        a.stop()
        if b.proc:
            b.stop()


@pytest.fixture
def stopped_instance(tmp_path):
    inst = tmp_path / "inst"
    r = run("init", str(inst), "--domain", "pec.r.test", "--ca", str(tmp_path / "ca"))
    assert r.returncode == 0, r.stdout + r.stderr
    return str(inst / "pecd.conf"), inst


def test_backup_of_a_stopped_instance_and_the_refusals(stopped_instance, tmp_path):
    conf, inst = stopped_instance
    r = run("-c", conf, "user", "add", "anna@pec.r.test", "--password-stdin",
            input="una-password-lunga\n")
    assert r.returncode == 0, r.stderr
    assert run("-c", conf, "log", "seal").returncode == 0     # an evidence log
    backup = str(tmp_path / "b")
    r = run("-c", conf, "backup", backup)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pecd is not running" in r.stdout
    assert "not copied (private key; --include-keys): signing_key" in r.stdout
    manifest = open(os.path.join(backup, "MANIFEST")).read()
    assert manifest.startswith("pecmail-backup 1\n") and manifest.endswith("end\n")
    assert " users files/users " in manifest and " evidence evidence.db " in manifest
    assert os.stat(backup).st_mode & 0o777 == 0o700
    # a second backup into the same directory is refused
    r = run("-c", conf, "backup", backup)
    assert r.returncode == 1 and "exists" in r.stderr

    # restore onto a new host: pecd.conf comes from the backup; the keys are missing
    new = tmp_path / "new"
    r = run("-c", str(new / "pecd.conf"), "restore", backup)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "missing: signing_key" in r.stdout
    with open(new / "users") as f:
        assert "anna@pec.r.test" in f.read()

    # over an instance that has state: refused, then --force moves it aside
    r = run("-c", str(new / "pecd.conf"), "restore", backup)
    assert r.returncode == 1 and "--force" in r.stderr
    r = run("-c", str(new / "pecd.conf"), "restore", backup, "--force")
    assert r.returncode == 0 and "moved aside" in r.stdout, r.stdout + r.stderr

    # a damaged backup: the file is named, nothing is written
    bad = str(tmp_path / "bad")
    shutil.copytree(backup, bad)
    with open(os.path.join(bad, "files", "users"), "ab") as f:
        f.write(b"mallory@pec.r.test:{PLAIN}x::::::\n")
    r = run("-c", str(tmp_path / "other" / "pecd.conf"), "restore", bad)
    assert r.returncode == 1 and "files/users: differs from the backup's manifest" in r.stderr
    assert not os.path.exists(tmp_path / "other")
    # a manifest naming a path outside the backup
    evil = str(tmp_path / "evil")
    shutil.copytree(backup, evil)
    with open(os.path.join(evil, "MANIFEST"), "r+") as f:
        text = f.read().replace(" files/users ", " ../../etc/x ")
        f.seek(0), f.truncate(), f.write(text)
    r = run("-c", str(tmp_path / "other" / "pecd.conf"), "restore", evil)
    assert r.returncode == 1 and "not understood" in r.stderr, r.stderr
    # no MANIFEST: not a backup
    os.remove(os.path.join(evil, "MANIFEST"))
    r = run("-c", str(tmp_path / "other" / "pecd.conf"), "restore", evil)
    assert r.returncode == 1 and "not a complete backup" in r.stderr


def test_restore_refuses_beside_a_running_pecd(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    b.write_config({"pec.a.test": a.ports["mx"]})
    b.start()
    try:
        backup = str(tmp_path / "b")
        r = run("-c", b.conf, "backup", backup)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run("-c", b.conf, "restore", backup, "--force")
        assert r.returncode == 1 and "pecd is running: stop it first" in r.stderr, r.stderr
        # the control socket is pecd's and its user's only
        st = os.stat(os.path.join(b.dir, "control.sock"))
        assert st.st_mode & 0o777 == 0o600
    finally:
        b.stop()
    assert not os.path.exists(os.path.join(b.dir, "control.sock"))
