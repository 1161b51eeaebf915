"""Helpers for the tests of several nodes of one provider on PostgreSQL (issue 24): provider
A on the embedded SQLite, provider B on a shared database with one node made as any provider
is and the others by `pecctl node add`; a route from A to every node of B."""
import os
import re
import signal
import smtplib
import ssl
import subprocess
import threading
import time

from pec_providers import make_providers, pecctl, ricevuta, trasporto
from pecd_harness import LIVE, PECD, free_port, stop_process, wait_port


class Node:
    """A pecd node of provider B made by `pecctl node add` (the first node is the Provider)."""

    def __init__(self, provider, name, directory):
        self.provider, self.name, self.dir = provider, name, directory
        self.ports = {"mx": free_port(), "submission": free_port()}
        pecctl("node", "add", directory, "--from", provider.dir, "--node", name,
               "--smtp", f"127.0.0.1:{self.ports['mx']}",
               "--submission", f"127.0.0.1:{self.ports['submission']}")
        self.conf = os.path.join(directory, "pecd.conf")
        # node add follows the source's layout: its data in NEWDIR/data when the source's
        # is in a directory of its own (privsep: pecd started as root gives it to pecmail)
        self.data = os.path.join(directory, "data") if provider.privsep else directory
        self.log_path = os.path.join(directory, "pecd.log")
        self.proc = None

    @property
    def queue_dir(self):
        return os.path.join(self.data, "queue")

    def start(self, wait=True):
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([PECD, "-c", self.conf], stderr=self.logf, stdout=self.logf)
        LIVE.append(self)
        if wait:
            for p in self.ports.values():
                assert wait_port(p, self.proc, timeout=60), f"{self.name}: {self.log(30)}"

    def stop(self):
        stop_process(self.proc)
        if self in LIVE:
            LIVE.remove(self)
        self.proc = None

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self in LIVE:
            LIVE.remove(self)

    def log(self, tail=200):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-tail:])
        except OSError:
            return ""


def start_nowait(p):
    """Starts a node (the Provider b1 or a Node) without waiting for its listeners: a node
    whose spool another node runs waits for it before it listens."""
    if isinstance(p, Node):
        p.start(wait=False)
        return
    p.logf = open(p.log_path, "a")
    p.proc = subprocess.Popen([PECD, "-c", p.conf], stderr=p.logf, stdout=p.logf)
    LIVE.append(p)


def state_section(pg, db, node, directory, lease="3s"):
    return {"database": pg.uri(db), "node": node, "password_file": pg.password_file(directory),
            "lease": lease}


def make_cluster(tmp_path, pg, nodes=3, lease="3s", timers=None, b_extra=None, a_routes=None,
                 privsep=False):
    """Providers A (SQLite) and B (nodes b1..bN on one new database, schema made by
    `pecctl state init`); nothing started.  Returns (a, b, [b1 (the Provider b), b2, ...], ca,
    directory, db).  A's route to B lists every node's mx listener.  privsep: pecd started as
    root runs as [pecd] user (pecmail) with its data in DIR/data (tmp_path must be a
    directory that user can traverse: pecd_harness.reachable_dir); the [state] password file
    is made readable by that user's group, as an operator does (docs/operator-guide.md)."""
    a, b, ca, directory = make_providers(tmp_path, privsep=privsep)
    db = pg.new_database()
    state = state_section(pg, db, "b1", b.dir, lease)
    if privsep:
        import grp
        os.chown(state["password_file"], 0, grp.getgrnam("pecmail").gr_gid)
        os.chmod(state["password_file"], 0o640)
    extra = {"state": state,
             "queue": {"retry_min": "1s", "retry_max": "2s"}}
    if timers:
        extra["timers"] = timers
    for sec, kv in (b_extra or {}).items():
        extra.setdefault(sec, {}).update(kv)
    b.write_config({"pec.a.test": a.ports["mx"]}, extra=extra)
    pecctl("-c", b.conf, "state", "init")
    b.name_node = "b1"
    members = [b]
    for i in range(2, nodes + 1):
        members.append(Node(b, f"b{i}", str(tmp_path / f"b{i}")))
    mx = ",".join(f"localhost:{m.ports['mx']}" for m in members)
    a_extra = {"queue": {"retry_min": "1s", "retry_max": "2s"}}
    if timers:
        a_extra["timers"] = timers
    a.write_config(a_routes or {"pec.b.test": 0}, extra=a_extra)
    if a_routes is None:
        # A's [routes] line for B: every node, tried in turn
        with open(a.conf) as f:
            text = f.read()
        text = re.sub(r"^pec\.b\.test = localhost:0$", f"pec.b.test = {mx}", text, flags=re.M)
        with open(a.conf, "w") as f:
            f.write(text)
    return a, b, members, ca, directory, db


def submit_many(provider, senders, rcpt_of, count, subject, threads=4, mail_from=None):
    """count PEC messages from provider's users senders[i % n] to rcpt_of(k); returns the
    list of (k, sender, rcpt, message-id) accepted (250)."""
    ctx = ssl.create_default_context(cafile=os.path.join(provider.ca, "ca.pem"))
    ctx.check_hostname = False
    done, lock, errors = [], threading.Lock(), []

    def worker(t):
        user = senders[t % len(senders)]
        addr = f"{user}@{provider.domain}"
        try:
            with smtplib.SMTP("127.0.0.1", provider.ports["submission"], timeout=60) as s:
                s.starttls(context=ctx)
                s.login(addr, f"{user}-password")
                for k in range(t, count, threads):
                    rcpt = rcpt_of(k)
                    mid = f"<{subject}.{k}@client.test>"
                    msg = (f"From: <{addr}>\r\nTo: <{rcpt}>\r\nSubject: {subject} {k}\r\n"
                           f"Message-ID: {mid}\r\n\r\nmessaggio {k}\r\n").encode()
                    s.sendmail(addr, [rcpt], msg)
                    with lock:
                        done.append((k, addr, rcpt, mid))
        except Exception as e:          # reported by the caller
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)
    assert not errors, errors
    return sorted(done)


def ref(msg):
    """The original's Message-ID a receipt or envelope refers to (X-Riferimento-Message-ID),
    or the envelope's postacert Message-ID."""
    return (msg.get("X-Riferimento-Message-ID") or "").strip()


def count_by_ref(mails, pred):
    counts = {}
    for _, _, m in mails:
        if pred(m):
            r = ref(m)
            counts[r] = counts.get(r, 0) + 1
    return counts


__all__ = ["Node", "start_nowait", "make_cluster", "submit_many", "count_by_ref", "ricevuta", "trasporto",
           "state_section", "signal", "time"]
