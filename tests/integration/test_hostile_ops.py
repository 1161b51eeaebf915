"""Attacks on the operator's commands (issue 23 follow-up): what a local user who writes
inside the data directory ([pecd] user, a Maildir's owner) or who hands the operator a
file can make `pecctl` (often run as root) do.

- backup: a directory of the spool or of the mail tree swapped for a symbolic link to
  somewhere else is not followed (the link is skipped and counted); an answer on the
  control socket naming another staging directory is refused, so root neither copies
  nor removes what the socket's holder chose.
(The walks themselves, with links swapped in while they run: tests/unit/test_fs_copy.c.)
"""
import os
import re
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from pecd_harness import DOMAIN, PECCTL, PECD, password, sighup, under_asan


def wait_ready(p, timeout=30):
    """Until pecd logs 'ready' (its signal handlers are in place: a SIGHUP before that
    would be lost), p an Instance or a Provider."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if " ready: domain " in p.log(100000):
            return
        time.sleep(0.05)
    raise AssertionError(f"pecd not ready:\n{p.log(40)}")


def run(*args, input=None, timeout=120):
    return subprocess.run([PECCTL, *args], capture_output=True, text=True, timeout=timeout,
                          input=input)


@pytest.fixture
def stopped(tmp_path):
    inst = tmp_path / "inst"
    r = run("init", str(inst), "--domain", "pec.r.test", "--ca", str(tmp_path / "ca"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("-c", str(inst / "pecd.conf"), "user", "add", "anna@pec.r.test",
            "--password-stdin", input="una-password-lunga\n")
    assert r.returncode == 0, r.stderr
    assert run("-c", str(inst / "pecd.conf"), "log", "seal").returncode == 0  # makes data_dir
    data = inst / "data"          # pecctl init: data_dir = data
    assert data.is_dir()
    return str(inst / "pecd.conf"), data


def outside_secret(tmp_path):
    """A directory outside the instance with a file the backup must never hold."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret").write_bytes(b"ROOT-ONLY-SECRET\n")
    return out


def all_files(top):
    for root, _, files in os.walk(top):
        for n in files:
            yield os.path.join(root, n)


def holds_secret(top):
    for p in all_files(top):
        with open(p, "rb") as f:
            if b"ROOT-ONLY-SECRET" in f.read():
                return p
    return None


def test_backup_does_not_follow_a_spool_directory_swapped_for_a_link(stopped, tmp_path):
    conf, inst = stopped
    out = outside_secret(tmp_path)
    hold = inst / "queue" / "hold"
    if hold.exists():
        os.rmdir(hold)
    hold.parent.mkdir(exist_ok=True)
    os.symlink(out, hold)              # what pecd's user can do in its own spool
    backup = tmp_path / "b"
    r = run("-c", conf, "backup", str(backup))
    assert r.returncode == 0, r.stdout + r.stderr
    assert holds_secret(backup) is None, "the backup followed queue/hold into another directory"
    assert "hold: a symbolic link" in r.stdout and "not copied: 1 symbolic link" in r.stdout, \
        r.stdout
    assert (out / "secret").exists()


def test_backup_does_not_follow_the_mail_tree_swapped_for_a_link(stopped, tmp_path):
    conf, inst = stopped
    out = outside_secret(tmp_path)
    mail = inst / "mail"
    if mail.exists():
        os.rename(mail, inst / "mail.old")
    os.symlink(out, mail)
    backup = tmp_path / "b"
    r = run("-c", conf, "backup", str(backup))
    assert r.returncode == 0, r.stdout + r.stderr
    assert holds_secret(backup) is None, "the backup followed mail/ into another directory"
    assert "mail: a symbolic link" in r.stdout and "not copied: 1 symbolic link" in r.stdout, \
        r.stdout


def test_backup_refuses_a_staging_directory_named_by_the_socket(stopped, tmp_path):
    """A fake pecd on control.sock (its user can bind there) answers with a staging path
    of its choice: pecctl must neither copy it into the backup nor remove it."""
    conf, inst = stopped
    out = outside_secret(tmp_path)
    (out / "queue").mkdir()
    (out / "queue" / "q").write_bytes(b"ROOT-ONLY-SECRET queued\n")
    path = str(inst / "control.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(60)

    def answer():
        try:
            c, _ = srv.accept()
        except OSError:
            return
        with c:
            c.settimeout(10)
            c.recv(128)
            c.sendall(f"ok messages=1 bytes=1 paused_ms=0 staging={out}\n".encode())

    t = threading.Thread(target=answer)
    t.start()
    try:
        backup = tmp_path / "b"
        r = run("-c", conf, "backup", str(backup))
    finally:
        t.join(timeout=70)
        srv.close()
    assert (out / "secret").exists() and (out / "queue" / "q").exists(), \
        "pecctl removed the directory the socket named"
    assert holds_secret(backup) is None
    assert r.returncode == 1 and "staging directory" in r.stderr, r.stdout + r.stderr


# ---- restore of a hostile backup, or into a data directory someone prepared -------------

def a_backup_with_mail(conf, inst, tmp_path):
    """A backup holding one message in anna's Maildir."""
    new = inst / "mail" / "pec.r.test" / "anna" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / "1700000000.M1P1.host").write_bytes(b"Subject: restored\r\n\r\nciao\r\n")
    backup = tmp_path / "b"
    r = run("-c", conf, "backup", str(backup))
    assert r.returncode == 0, r.stdout + r.stderr
    return backup


def test_restore_does_not_write_through_a_link_in_the_data_directory(stopped, tmp_path):
    """Before the operator restores, pecd's user (or a previous tenant) left
    data_dir/mail/DOMAIN as a link elsewhere: restore must not write the mailboxes, nor
    give them to [pecd] user, there."""
    conf, inst = stopped
    backup = a_backup_with_mail(conf, inst, tmp_path)
    out = tmp_path / "outside"
    out.mkdir()
    new = tmp_path / "new"
    (new / "data" / "mail").mkdir(parents=True)
    os.symlink(out, new / "data" / "mail" / "pec.r.test")
    r = run("-c", str(new / "pecd.conf"), "restore", str(backup))
    assert os.listdir(out) == [], "restore wrote through data_dir/mail/pec.r.test"
    assert r.returncode == 1 and "not followed" in r.stderr, r.stdout + r.stderr


def test_restore_refuses_links_and_fifos_inside_the_backup(stopped, tmp_path):
    conf, inst = stopped
    backup = a_backup_with_mail(conf, inst, tmp_path)
    # a directory of the backup replaced by a link to an identical copy elsewhere: the
    # hashes match, but restore (root) must read nothing through a link
    elsewhere = tmp_path / "elsewhere"
    os.rename(backup / "files", elsewhere)
    os.symlink(elsewhere, backup / "files")
    r = run("-c", str(tmp_path / "n1" / "pecd.conf"), "restore", str(backup))
    assert r.returncode == 1 and "not followed" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "n1" / "pecd.conf").exists()
    os.remove(backup / "files")
    os.rename(elsewhere, backup / "files")
    # a FIFO where a file belongs: refused at once (reading it would wait for a writer)
    os.remove(backup / "files" / "users")
    os.mkfifo(backup / "files" / "users")
    r = run("-c", str(tmp_path / "n2" / "pecd.conf"), "restore", str(backup), timeout=20)
    assert r.returncode == 1 and "not a regular file" in r.stderr, r.stdout + r.stderr


def test_restore_checks_sizes_without_reading_a_huge_file_to_its_end(stopped, tmp_path):
    conf, inst = stopped
    backup = a_backup_with_mail(conf, inst, tmp_path)
    users = backup / "files" / "users"
    size = users.stat().st_size
    with open(users, "ab") as f:     # sparse: 64 GiB past what MANIFEST says
        f.truncate(size + (64 << 30))
    t0 = time.monotonic()
    r = run("-c", str(tmp_path / "n" / "pecd.conf"), "restore", str(backup), timeout=60)
    assert r.returncode == 1 and "files/users: differs from" in r.stderr, r.stdout + r.stderr
    assert time.monotonic() - t0 < 20


# ---- the local domains file at a reload ---------------------------------------------------

def rcpt_code(inst, rcpt, timeout=10):
    with smtplib.SMTP("127.0.0.1", inst.ports["mx"], timeout=timeout) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        return s.rcpt(rcpt)[0]


def test_reload_with_a_domains_file_that_is_a_fifo_or_a_device(make_instance):
    """local_domains_file replaced by a FIFO (nobody writes it) or a link to /dev/zero (a
    line without end): the reload is refused naming the file, and pecd keeps serving (the
    reload runs on the event loop: before, the FIFO's open() stopped it for good and
    /dev/zero grew one line until memory ran out)."""
    inst = make_instance(start=False)
    path = os.path.join(inst.dir, "domains")
    with open(path, "w") as f:
        f.write("cliente.example\n")
    inst.configure({"provider": {"local_domains_file": "domains"}})
    r = inst.pecctl("user", "add", "anna@cliente.example", "--password-stdin",
                    input=password("anna@cliente.example") + "\n")
    assert r.returncode == 0, r.stderr
    inst.start()
    wait_ready(inst)
    assert rcpt_code(inst, "anna@cliente.example") == 250
    for kind in ("fifo", "zero"):
        os.remove(path)
        if kind == "fifo":
            os.mkfifo(path)
        else:
            os.symlink("/dev/zero", path)
        tail = sighup(inst, "nothing changed", timeout=15)
        assert "not a regular file" in tail, tail
        assert rcpt_code(inst, "anna@cliente.example") == 250


# ---- the control socket ---------------------------------------------------------------------

def control(inst):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(inst.dir, "control.sock"))   # blocking: waits while the backlog is full
    s.settimeout(30)
    return s


def test_control_socket_slow_silent_and_oversized_clients(make_instance, tmp_path):
    """One thread serves control.sock: a client that dribbles its request (a byte a
    second) or never speaks must not hold it, and so the next backup, for long (before:
    10 s a byte, over two minutes for a request line); oversized and unknown requests get
    an error; fifty clients that connect and leave change nothing."""
    inst = make_instance()
    sock = os.path.join(inst.dir, "control.sock")
    for _ in range(100):            # made just after the listeners
        if os.path.exists(sock):
            break
        time.sleep(0.1)
    st = os.stat(sock)
    assert st.st_mode & 0o777 == 0o600
    stop = threading.Event()

    def dribble():
        with control(inst) as s:
            for _ in range(60):
                if stop.is_set():
                    return
                try:
                    s.sendall(b"s")
                except OSError:
                    return         # pecd hung up: what the fix does
                time.sleep(1)

    t = threading.Thread(target=dribble)
    t.start()
    silent = control(inst)          # connects and never speaks
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        r = run("-c", inst.conf_path, "backup", str(tmp_path / "b"), timeout=60)
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join(timeout=70)
        silent.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pecd's snapshot: messages=" in r.stdout, r.stdout
    assert took < 20, f"the backup waited {took:.0f} s behind slow clients"

    with control(inst) as s:
        s.sendall(b"x" * 100000 + b"\n")
        assert s.recv(200).startswith(b"error request too long")
    with control(inst) as s:
        s.sendall(b"status\n")
        assert s.recv(200) == b"error unknown request\n"
    for _ in range(50):
        control(inst).close()
    r = run("-c", inst.conf_path, "backup", str(tmp_path / "b2"), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # the queue goes on: a message is delivered after all of this
    with smtplib.SMTP("127.0.0.1", inst.ports["mx"], timeout=30) as s:
        s.sendmail("sender@client.test", [f"alice@{DOMAIN}"],
                   b"From: <sender@client.test>\r\nSubject: after\r\n\r\nx\r\n")
    assert inst.wait_messages(f"alice@{DOMAIN}", 1)


# ---- `pecctl log verify FILE` on a file from elsewhere ---------------------------------------

from test_evidence import provider, utc_day   # noqa: E402,F401 - the module's fixture


def exported_day(provider, tmp_path):
    conf, now = provider["conf"], provider["now"]
    day = utc_day(now - 86400)
    out = str(tmp_path / f"evidence-{day}.db")
    r = run("-c", conf, "log", "export", "--day", day, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, os.path.join(os.path.dirname(conf), "pec", "sign.crt")


def verify_file(path, cert, timeout=30):
    return run("log", "verify", path, "--cert", cert, timeout=timeout)


def test_log_verify_of_hostile_files(provider, tmp_path):
    import shutil
    import sqlite3
    good, cert = exported_day(provider, tmp_path)
    r = verify_file(good, cert)
    assert r.returncode == 0, r.stdout + r.stderr
    size = os.path.getsize(good)
    # truncated
    for cut in (0, 100, size // 2):   # (a last byte lost in free space: still intact)
        bad = str(tmp_path / f"cut-{cut}.db")
        with open(good, "rb") as f, open(bad, "wb") as g:
            g.write(f.read(cut))
        r = verify_file(bad, cert)
        assert r.returncode in (1, 2), (cut, r.stdout + r.stderr)
        assert "intact" not in r.stdout, (cut, r.stdout)
    # a table replaced by a view that never ends: verify must not run forever
    bad = str(tmp_path / "view.db")
    shutil.copy(good, bad)
    db = sqlite3.connect(bad)
    db.executescript("ALTER TABLE events RENAME TO ev0;"
                     "CREATE VIEW events AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                     "SELECT x + 1 FROM c) SELECT ev0.* FROM c, ev0;")
    db.commit()
    db.close()
    t0 = time.monotonic()
    r = verify_file(bad, cert, timeout=60)
    assert r.returncode in (1, 2) and time.monotonic() - t0 < 20, r.stdout + r.stderr
    assert "not an evidence log" in r.stdout + r.stderr, r.stdout + r.stderr
    # a FIFO given as the file: refused, not waited on
    fifo = str(tmp_path / "fifo.db")
    os.mkfifo(fifo)
    r = verify_file(fifo, cert, timeout=20)
    assert r.returncode == 2, r.stdout + r.stderr


# ---- keys named by a file someone else can change --------------------------------------------

def test_a_domains_file_naming_keys_must_be_roots_alone(make_instance):
    """The signer (root) loads the tls_key a local_domains_file line names, at start and at
    every SIGHUP, and then signs handshakes with it for the network-facing process.  If
    another user can change that file, they can name any key root can read (another
    service's) with its public certificate and have it used for them: refused."""
    import pwd
    from test_domains import make_cert, write_domains
    inst = make_instance(start=False)
    make_cert(inst.dir, "cliente", "smtp.cliente.example")
    path = write_domains(inst, ["cliente.example tls_certificate=cliente.crt "
                                "tls_key=cliente.key"])
    inst.configure({"provider": {"local_domains_file": "domains"}})
    r = subprocess.run([PECD, "-t", "-c", inst.conf_path], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    inst.start()
    wait_ready(inst)
    other = pwd.getpwnam("nobody")
    # the file given to another user, or made writable by everyone: the reload is refused
    for change in ("chown", "chmod"):
        if change == "chown":
            os.chown(path, other.pw_uid, other.pw_gid)
        else:
            os.chown(path, 0, 0)
            os.chmod(path, 0o666)
        tail = sighup(inst, "nothing changed")
        assert "can be changed by" in tail, tail
        r = subprocess.run([PECD, "-t", "-c", inst.conf_path], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and "domains:2: tls_key of cliente.example" in r.stderr, \
            r.stderr
    # a domains file naming no key may be anyone's (it only lists names)
    write_domains(inst, ["cliente.example"])
    os.chmod(path, 0o666)
    sighup(inst, "applied")


# ---- a reload storm while PEC mail flows ------------------------------------------------------

def tree_fds(pid):
    """Open descriptors of pid and its descendants (pecd, its keeper and signer)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


def test_reload_storm_while_mail_flows(tmp_path):
    """100 SIGHUPs in a row (keys read again by the signer each time) at both providers
    while PEC messages go from A to B: every message is delivered once with its receipts,
    no process dies or is restarted, and no descriptor is left behind."""
    import signal
    from pec_providers import make_providers
    a, b, _, _ = make_providers(tmp_path)
    a.write_config({"pec.b.test": b.ports["mx"]})
    b.write_config({"pec.a.test": a.ports["mx"]})
    a.add_user("mario")
    b.add_user("anna")
    a.start()
    b.start()
    try:
        wait_ready(a)
        wait_ready(b)
        time.sleep(1)
        fds0 = {p: tree_fds(p.proc.pid) for p in (a, b)}
        n, sent, errors = 30, [], []

        def load():
            for i in range(n):
                msg = (f"From: <mario@pec.a.test>\r\nTo: <anna@pec.b.test>\r\n"
                       f"Subject: tempesta-{i:03d}\r\nMessage-ID: <t{i}@client.test>\r\n\r\n"
                       f"Messaggio {i}.\r\n").encode()
                try:
                    a.submit("mario", ["anna@pec.b.test"], msg)
                    sent.append(i)
                except Exception as e:   # noqa: BLE001 - reported below
                    errors.append((i, repr(e)))

        t = threading.Thread(target=load)
        t.start()
        for k in range(100):
            for p in (a, b):
                p.proc.send_signal(signal.SIGHUP)
            time.sleep(0.03)
        t.join(timeout=300)
        assert not t.is_alive(), "the submissions did not end in 300 s"
        assert not errors, errors
        assert a.proc.poll() is None and b.proc.poll() is None
        b.wait_mail("anna", lambda m: (m.get("X-Trasporto") or "").strip() == "posta-certificata",
                    count=n, timeout=120)
        a.wait_mail("mario", lambda m: (m.get("X-Ricevuta") or "").strip() == "avvenuta-consegna",
                    count=n, timeout=120)
        subjects = [m["Subject"] for _, _, m in b.mails("anna")]
        for i in range(n):
            assert sum(f"tempesta-{i:03d}" in (s or "") for s in subjects) == 1, (i, subjects)
        # descriptors: mail leaves connections and files open (cached, preallocated), a
        # reload must not; 100 more reloads with the mail done must not add any
        time.sleep(2)
        fds1 = {p: tree_fds(p.proc.pid) for p in (a, b)}
        for k in range(100):
            for p in (a, b):
                p.proc.send_signal(signal.SIGHUP)
            time.sleep(0.03)
        time.sleep(3)
        for p in (a, b):
            log = p.log(100000)
            assert log.count("signer started") == 1, log[-3000:]
            # SIGHUPs that arrive while a reload runs count as one (a signal is pending
            # or not): every reload begun ends, and there were many
            begun = log.count("SIGHUP: reading")
            applied = len(re.findall(r"reload: \S+ applied", log))
            assert begun >= 20 and applied == begun, (begun, applied, log[-3000:])
            assert "nothing changed" not in log, log[-3000:]
            assert tree_fds(p.proc.pid) <= fds1[p] + 2, (fds0[p], fds1[p], tree_fds(p.proc.pid))
            assert fds1[p] <= fds0[p] + 20, (fds0[p], fds1[p])
    finally:
        a.stop()
        b.stop()


def test_reload_between_mail_and_rcpt(make_instance):
    """A reload between MAIL and RCPT: the session's transaction named its listener by a
    pointer into the configuration the reload retires and frees; RCPT then read freed
    memory (AddressSanitizer in the reload storm above).  Under the sanitizer build this
    fails at once without the fix; here, the transaction goes on and the message arrives."""
    inst = make_instance()
    wait_ready(inst)
    tid = f"reload-mid-{os.getpid()}"
    with inst.connect("mx") as c:
        c.ehlo()
        assert c.mail_from("s@client.test") == "250 2.1.0 Sender OK"
        for _ in range(3):           # the first retired configuration is freed at once
            sighup(inst)
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
        c.data(f"Subject: {tid}\r\n\r\n{tid}\r\n".encode())
    inst.wait_messages("alice@example.test", marker=tid)


# ---- SNI: names a client chooses -------------------------------------------------------------

def rss_kb(pid):
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            pass
    return total


def test_hostile_sni_names(make_instance):
    """Names a client puts in SNI: long, upper-case, with a trailing dot, punycode, a
    label of 63 octets, 255 octets, and 600 handshakes with names nobody serves: the right
    certificate or the [tls] one, never a failure, no growth."""
    import ssl
    from test_domains import make_cert, peer_cert, write_domains
    inst = make_instance(start=False)
    cust = make_cert(inst.dir, "cliente", "smtp.cliente.example")
    write_domains(inst, ["cliente.example tls_certificate=cliente.crt tls_key=cliente.key",
                         "xn--caff-dsa.example tls_certificate=cliente.crt tls_key=cliente.key"])
    inst.configure({"provider": {"local_domains_file": "domains"}})
    with open(os.path.join(inst.dir, "tls.crt")) as f:
        main = ssl.PEM_cert_to_DER_cert(f.read())
    inst.start()
    cases = {
        "SMTP.CLIENTE.EXAMPLE": cust,
        "a.b.c.d.smtp.cliente.example": cust,
        "mail.xn--caff-dsa.example": cust,
        "smtp.cliente.example.": cust,       # the absolute form: the same name
        "x" * 63 + ".cliente.example": cust,
        ".".join(["a" * 61] * 4): main,       # 247 octets, unknown
        "cliente.example.evil.test": main,
        "example": main,
    }
    for name, want in cases.items():
        assert peer_cert(inst, "submissions", name) == want, name
    rss0 = None
    for i in range(600):
        assert peer_cert(inst, "submissions", f"n{i}.unknown{i % 7}.test") == main
        if i == 99:
            rss0 = rss_kb(inst.proc.pid)
    if not under_asan(inst.proc.pid):   # ASan's quarantine keeps freed memory
        assert rss_kb(inst.proc.pid) < rss0 + 8 * 1024, (rss0, rss_kb(inst.proc.pid))


def test_reload_refuses_keys_the_network_user_can_change(tmp_path):
    """At start pecd refuses key files (and pecd.conf) that [pecd] user could change or
    read; a SIGHUP used to load whatever the file named then.  The network-facing process
    can have the signer reload at will, so the signer checks the same way: a TLS key moved
    into the data directory (pecmail's) is refused and the key in force kept."""
    import pathlib
    import pwd
    import shutil
    from pec_providers import make_providers
    from pecd_harness import reachable_dir
    root = reachable_dir("pec-hostile-reload-")
    try:
        a, b, _, _ = make_providers(pathlib.Path(root), privsep=True)
        routes = {"pec.b.test": b.ports["mx"]}
        a.write_config(routes)
        a.add_user("mario")
        a.start()
        try:
            wait_ready(a)
            pm = pwd.getpwnam("pecmail")
            for name in ("tls.key", "tls.pem"):
                dst = os.path.join(a.data, "x-" + name)
                shutil.copy(os.path.join(a.dir, name), dst)
                os.chown(dst, pm.pw_uid, pm.pw_gid)
            a.write_config(routes, extra={"tls": {"certificate": "data/x-tls.pem",
                                                  "key": "data/x-tls.key"}})
            tail = sighup(a, "nothing changed")
            assert "can be" in tail and "x-tls" in tail, tail
            # the key in force still answers: a submission over STARTTLS works
            a.submit("mario", ["mario@pec.a.test"],
                     b"From: <mario@pec.a.test>\r\nTo: <mario@pec.a.test>\r\n"
                     b"Subject: dopo\r\n\r\nx\r\n")
            a.write_config(routes)
            sighup(a, "applied")
        finally:
            a.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
