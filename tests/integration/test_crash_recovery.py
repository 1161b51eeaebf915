"""Crash safety: kill -9 pecd at random moments under load from several clients.

Every message that got a 250 must end up in each of its recipients' Maildirs exactly
once; no message may be delivered twice to a recipient, or to someone not among its
recipients, or altered.
"""
import random
import re
import smtplib
import threading
import time

from pecd_harness import message, split_delivered, unique_id

RECIPIENTS = ["alice@example.test", "bob@example.test", "dave@example.test",
              "erin@example.test", "frank@example.test"]
CLIENTS = 6
MIN_KILLS = 20
LOAD_SECONDS = 30      # the kill loop; then drain (the whole test stays around a minute)


class Load:
    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.attempted = {}    # test id -> (recipients, message bytes)
        self.acked = {}        # test id -> recipients, for those that got a 250
        self.errors = 0
        self.problems = []     # things that must not happen even under kill -9

    def client(self, n):
        rng = random.Random(n * 7919 + int(time.time()))
        while not self.stop.is_set():
            try:
                s = smtplib.SMTP("127.0.0.1", self.port, local_hostname=f"load{n}.test",
                                 timeout=5)
            except OSError:
                time.sleep(0.02)          # pecd is down: retry
                continue
            try:
                s.ehlo()
                for _ in range(rng.randint(1, 4)):
                    if self.stop.is_set():
                        break
                    tid = unique_id(f"crash{n}")
                    rcpts = rng.sample(RECIPIENTS, rng.randint(1, 3))
                    msg = message(tid, sender=f"load{n}@client.test", to=", ".join(rcpts),
                                  body=f"load {tid}\r\n".encode() * rng.randint(1, 40))
                    with self.lock:
                        self.attempted[tid] = (rcpts, msg)
                    refused = s.sendmail(f"load{n}@client.test", rcpts, msg)
                    with self.lock:           # sendmail returned: the 250 arrived
                        self.acked[tid] = rcpts
                        if refused:
                            self.problems.append(f"{tid}: recipients refused {refused}")
                s.quit()
            except (smtplib.SMTPException, OSError):
                with self.lock:
                    self.errors += 1
            finally:
                try:
                    s.close()
                except OSError:
                    pass


def delivered(inst):
    """{(test id, recipient): [Mail, ...]} over every recipient's Maildir."""
    out = {}
    for rcpt in RECIPIENTS:
        for m in inst.messages(rcpt):
            found = re.search(rb"\r\nX-Test-Id: (\S+)\r\n", m.data)
            assert found, f"{m.path} has no X-Test-Id"
            out.setdefault((found.group(1).decode(), rcpt), []).append(m)
    return out


def test_kill9_under_load(make_instance):
    inst = make_instance(conf={"queue": {"retry_min": "1s", "retry_max": "2s"}})
    load = Load(inst.ports["mx"])
    threads = [threading.Thread(target=load.client, args=(n,), daemon=True)
               for n in range(CLIENTS)]
    for t in threads:
        t.start()
    rng = random.Random()
    kills = 0
    deadline = time.monotonic() + LOAD_SECONDS
    try:
        while kills < MIN_KILLS or time.monotonic() < deadline:
            time.sleep(rng.uniform(0.1, 0.9))
            inst.kill()                   # kill -9 at a random moment
            kills += 1
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.3))
            inst.start()
            if kills >= 3 * MIN_KILLS:
                break
    finally:
        load.stop.set()
        for t in threads:
            t.join(10)
    assert kills >= MIN_KILLS
    assert not load.problems, load.problems[:10]
    assert len(load.acked) >= 50, f"too little load got through: {len(load.acked)} acked"

    # A final clean start; the queue drains (bounded: no 30 s without progress, 180 s in
    # all; thousands of messages take longer than 30 s on a machine busy with other jobs)
    assert inst.stop() == 0
    inst.start()
    inst.wait_queue_empty(stall=30)

    got = delivered(inst)
    missing, dups, stray, altered = [], [], [], []
    for tid, rcpts in load.acked.items():
        for r in rcpts:
            n = len(got.get((tid, r), []))
            if n == 0:
                missing.append((tid, r))
    for (tid, r), mails in got.items():
        if len(mails) > 1:
            dups.append((tid, r, [m.name for m in mails]))
        if tid not in load.attempted or r not in load.attempted[tid][0]:
            stray.append((tid, r))
            continue
        for m in mails:
            if split_delivered(m.data)[3] != load.attempted[tid][1]:
                altered.append(m.path)
    summary = (f"{kills} kills, {len(load.attempted)} attempted, {len(load.acked)} acked, "
               f"{len(got)} delivered copies, {load.errors} client errors")
    assert not missing, f"acknowledged but not delivered ({summary}): {missing[:10]}"
    assert not dups, f"delivered more than once ({summary}): {dups[:10]}"
    assert not stray, f"delivered to a non-recipient ({summary}): {stray[:10]}"
    assert not altered, f"delivered altered ({summary}): {altered[:10]}"
    print(summary)


def test_second_pecd_on_the_same_queue_is_refused(make_instance, tmp_path):
    """Another pecd pointed at a running one's queue (other ports) stops at start-up with
    an error naming the queue and the owner's pid, and touches nothing: the first one's
    queue, in-flight files included, keeps working."""
    import os
    import subprocess
    from pecd_harness import PECD, Instance, message as mk
    inst = make_instance()
    # its own ports and data directory (certificates and users copied from the first)
    other = Instance(tmp_path / "other", inst.dir,
                     conf={"queue": {"directory": os.path.join(inst.dir, "queue")}})
    r = subprocess.run([PECD, "-c", other.conf_path], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    err = r.stdout + r.stderr
    assert "in use by another pecd" in err and f"pid {inst.proc.pid}" in err, err
    assert inst.running()
    tid = unique_id()
    with smtplib.SMTP("127.0.0.1", inst.ports["mx"], timeout=30) as s:
        s.sendmail("sender@client.test", ["alice@example.test"], mk(tid))
    assert len(inst.wait_messages("alice@example.test", 1, marker=tid)) == 1
