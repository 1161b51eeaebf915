"""Helpers for the pecd integration tests (the fixtures are in conftest.py).

Every test talks to a real `pecd` started on loopback high ports with a temporary
configuration (docs/smtp-replies.md is the contract the tests assert).  What is here:

- Instance: one pecd data directory (pecd.conf, self-signed TLS certificate, users
  file made with `pecctl user add --password-stdin`), start/stop/kill -9, pecctl,
  the queue listing, and the delivered Maildir files.
- Client: a raw-socket SMTP dialog (send bytes, read a whole multi-line reply,
  STARTTLS on the raw socket, implicit TLS, "the server closed the connection").
- message()/dot_stuff()/split_delivered()/received_re(): test messages and
  delivered files.

The binaries come from $PEC_BUILD (default: build/ in this repository): src/cmd/pecd and
src/cmd/pecctl.  pecd's stderr goes to DIR/pecd.log and is attached to the report of
any failing test.  (A module name of our own, not "conftest", so that test files in
sub-directories with their own conftest.py cannot shadow these helpers.)
"""
import base64
import ctypes
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

# the repository this file is in (tests/integration/..), so that any clone finds its own build
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PEC_BUILD") or os.path.join(REPO, "build")
PECD = os.path.join(BUILD, "src", "cmd", "pecd")
PECCTL = os.path.join(BUILD, "src", "cmd", "pecctl")

HOST = "mx.example.test"          # [provider] hostname
DOMAIN = "example.test"           # [provider] domain
OTHER_DOMAIN = "other.test"       # [provider] local_domains
POSTMASTER = "postmaster@example.test"
BANNER = f"220 {HOST} ESMTP pecmail"
QID_RE = r"[0-9A-Fa-f]{16}"
QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as (" + QID_RE + r")$")

# Users created in every instance (password = local part + "-secret").
USERS = ["alice@example.test", "bob@example.test", "dave@example.test",
         "erin@example.test", "frank@example.test", "carol@other.test"]


def password(addr):
    return addr.split("@")[0] + "-secret"


START_TIMEOUT = 10.0   # readiness: poll-connect the listeners
IO_TIMEOUT = 5.0       # one SMTP reply
DELIVERY_TIMEOUT = 15.0


# ----------------------------------------------------------------------------- ports

_handed_out = set()


def stop_process(proc, timeout=15):
    """SIGTERM, then SIGKILL after timeout seconds: a daemon a test started is gone after this."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def free_port():
    """A free loopback TCP port below the ephemeral range (so that our own client
    sockets never take it), not handed out before in this run."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        if port in _handed_out:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def wait_port(port, proc=None, timeout=START_TIMEOUT):
    """Poll-connects 127.0.0.1:port until it accepts; fails early if proc died."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- binaries

def tcp_nodelay_of(pid, local_port=None, remote_port=None):
    """TCP_NODELAY of pid's established TCP sockets with that local or remote port: each is
    found in /proc/PID/net/tcp, its descriptor copied with pidfd_getfd(2) and asked."""
    inodes = set()
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            lport = int(fields[1].split(":")[1], 16)
            rport = int(fields[2].split(":")[1], 16)
            if fields[3] == "01" and (lport == local_port or rport == remote_port):
                inodes.add(fields[9])
    found = []
    pidfd = os.pidfd_open(pid)
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                copy = ctypes.CDLL(None, use_errno=True).syscall(438, pidfd, int(fd), 0)
                assert copy >= 0, os.strerror(ctypes.get_errno())
                with socket.socket(fileno=copy) as s:
                    found.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    finally:
        os.close(pidfd)
    return found


def under_asan(pid):
    """Whether process pid runs the AddressSanitizer build: its RSS then says nothing about
    leaks or growth (the quarantine keeps freed memory)."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def sighup(p, expect="applied", timeout=20):
    """SIGHUP to p (an Instance or a Provider: .proc and .log) and the log lines written
    since, once a `reload:` line containing expect is among them."""
    mark = len(p.log(100000))
    p.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        tail = p.log(100000)[mark:]
        if "reload:" in tail and expect in tail:
            return tail
        time.sleep(0.1)
    raise AssertionError(f"no '{expect}' after SIGHUP:\n{p.log(40)}")


def reachable_dir(prefix):
    """A new directory under /tmp that pecd's unprivileged user ([pecd] user, pecmail) can
    traverse: pytest's own temporary directories are private to root (0700), and pecd
    started as root refuses data its user cannot reach.  The caller removes it."""
    import tempfile
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def require_binaries():
    for b in (PECD, PECCTL):
        if not os.access(b, os.X_OK):
            pytest.fail(f"{b} not built (set PEC_BUILD to the build directory)", pytrace=False)


def run_pecctl(conf, *args, input=None, timeout=30):
    return subprocess.run([PECCTL, "-c", conf, *args], input=input, capture_output=True,
                          text=True, timeout=timeout)


# ----------------------------------------------------------------------------- config

def default_config(ports):
    """The configuration every instance starts from (section -> {key: value}).
    [pecd] user = root: these instances keep their data beside pecd.conf, which pecd refuses
    to give to an unprivileged user (tests/integration/test_keys_*.py run the default)."""
    return {
        "pecd": {"user": "root"},
        "provider": {
            "domain": DOMAIN,
            "hostname": HOST,
            "local_domains": OTHER_DOMAIN,
            "postmaster": POSTMASTER,
            "log_level": "debug",
        },
        "tls": {"certificate": "tls.crt", "key": "tls.key"},
        "mx": {"listen": f"127.0.0.1:{ports['mx']}", "require_tls": "no"},
        "submission": {"listen": f"127.0.0.1:{ports['submission']}"},
        "submissions": {"listen": f"127.0.0.1:{ports['submissions']}"},
        "limits": {
            "max_message_size": "100000",
            "max_recipients": "5",
            "max_line_length": "1000",
            "max_errors": "10",
            "timeout_command": "30s",
            "timeout_data": "30s",
            "timeout_tls": "10s",
        },
        "queue": {"delivery_workers": "2", "retry_min": "1s", "retry_max": "2s"},
    }


def merge_config(base, overrides):
    """overrides: {section: {key: value}}; a value None deletes the key, a section
    None deletes the section."""
    conf = {s: dict(kv) for s, kv in base.items()}
    for section, kv in (overrides or {}).items():
        if kv is None:
            conf.pop(section, None)
            continue
        sec = conf.setdefault(section, {})
        for k, v in kv.items():
            if v is None:
                sec.pop(k, None)
            else:
                sec[k] = str(v)
    return conf


def render_config(conf):
    out = []
    for section, kv in conf.items():
        out.append(f"[{section}]")
        out.extend(f"{k} = {v}" for k, v in kv.items())
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- instance

LIVE = []   # running instances, for the failure report


class Mail:
    """A delivered Maildir file."""
    NAME_RE = re.compile(r"^(?P<arrival>[0-9][^/]*?)\.Q(?P<qid>" + QID_RE +
                         r")R(?P<n>[0-9]+)\.(?P<host>[^,/]+),S=(?P<size>[0-9]+)$")

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        with open(path, "rb") as f:
            self.data = f.read()
        m = self.NAME_RE.match(self.name)
        self.name_match = m
        self.qid = m.group("qid") if m else None
        self.rcpt_index = int(m.group("n")) if m else None
        self.size = int(m.group("size")) if m else None

    def header(self, name):
        """First value of a header (unfolded), or None."""
        hdrs = self.data.split(b"\r\n\r\n", 1)[0]
        unfolded = re.sub(rb"\r\n[ \t]+", b" ", hdrs)
        for line in unfolded.split(b"\r\n"):
            k, _, v = line.partition(b":")
            if k.strip().lower() == name.lower().encode():
                return v.strip().decode("utf-8", "replace")
        return None

    def __repr__(self):
        return f"Mail({self.name!r})"


class Instance:
    def __init__(self, root, template, conf=None, create_users=True):
        self.dir = str(root)
        os.makedirs(self.dir, exist_ok=True)
        self.ports = {"mx": free_port(), "submission": free_port(), "submissions": free_port()}
        self.conf_path = os.path.join(self.dir, "pecd.conf")
        self.log_path = os.path.join(self.dir, "pecd.log")
        self.proc = None
        self.exit_codes = []
        for f in ("tls.crt", "tls.key"):
            shutil.copy(os.path.join(template, f), os.path.join(self.dir, f))
        os.chmod(os.path.join(self.dir, "tls.key"), 0o600)
        if create_users:
            shutil.copy(os.path.join(template, "users"), os.path.join(self.dir, "users"))
        self.configure(conf)

    # -- configuration
    def configure(self, overrides=None):
        self.conf = merge_config(default_config(self.ports), overrides)
        with open(self.conf_path, "w") as f:
            f.write(render_config(self.conf))

    def listener_ports(self):
        return [self.ports[s] for s in ("mx", "submission", "submissions") if s in self.conf]

    # -- process
    def start(self, expect_ready=True):
        assert self.proc is None, "already running"
        log = open(self.log_path, "ab")
        log.write(f"==== pecd -c {self.conf_path} ({time.strftime('%T')})\n".encode())
        log.flush()
        self.proc = subprocess.Popen([PECD, "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, cwd=self.dir)
        log.close()
        if self not in LIVE:
            LIVE.append(self)
        if not expect_ready:
            return
        for port in self.listener_ports():
            if not wait_port(port, self.proc):
                rc = self.proc.poll()
                if rc is None:
                    self.kill()
                else:
                    self.proc = None
                pytest.fail(f"pecd did not listen on 127.0.0.1:{port} within {START_TIMEOUT}s "
                            f"(exit code {rc})\n--- pecd.log ---\n{self.log()}", pytrace=False)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM, wait, SIGKILL if needed. Returns the exit code (None if it had
        to be killed)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.exit_codes.append("hung after SIGTERM")
                return None
        self.exit_codes.append(proc.returncode)
        return proc.returncode

    def kill(self):
        """kill -9."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def log(self, tail=200):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-tail:])

    # -- pecctl
    def pecctl(self, *args, input=None):
        return run_pecctl(self.conf_path, *args, input=input)

    def queue_lines(self):
        r = self.pecctl("queue")
        assert r.returncode == 0, f"pecctl queue failed: {r.returncode}\n{r.stdout}{r.stderr}"
        return [l for l in r.stdout.splitlines() if l.strip()]

    def queue_is_empty(self):
        lines = self.queue_lines()
        return any("Queue is empty" in l for l in lines)

    def wait_queue_empty(self, timeout=DELIVERY_TIMEOUT, stall=None, cap=180):
        """Until the queue is empty: within timeout seconds or, with stall, for as long as
        it keeps shrinking (no stall seconds without progress; cap seconds at most), as a
        queue of thousands drains slower on a machine busy with other jobs."""
        start = last = time.monotonic()
        least = None
        while True:
            lines = self.queue_lines()
            if any("Queue is empty" in l for l in lines):
                return
            now = time.monotonic()
            if least is None or len(lines) < least:
                least, last = len(lines), now
            if stall is None and now - start > timeout:
                pytest.fail(f"queue not empty after {timeout}s:\n" + "\n".join(lines[:50]))
            if stall is not None and (now - last > stall or now - start > cap):
                pytest.fail(f"queue not drained: {len(lines)} lines, no progress for "
                            f"{now - last:.0f}s ({now - start:.0f}s in all):\n"
                            + "\n".join(lines[:50]))
            time.sleep(0.1)

    # -- mailboxes
    def maildir(self, addr):
        local, domain = addr.rsplit("@", 1)
        return os.path.join(self.dir, "mail", domain.lower(), local)

    def messages(self, addr, marker=None):
        """Delivered files in the Maildir's new/ (and cur/), optionally only those
        containing marker (bytes or str)."""
        out = []
        if isinstance(marker, str):
            marker = marker.encode()
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir(addr), sub)
            try:
                names = sorted(os.listdir(d))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for n in names:
                m = Mail(os.path.join(d, n))
                if marker is None or marker in m.data:
                    out.append(m)
        return out

    def wait_messages(self, addr, count=1, marker=None, timeout=DELIVERY_TIMEOUT):
        """Polls until at least count messages (with marker) are in addr's Maildir."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages(addr, marker)
            if len(msgs) >= count:
                return msgs
            if time.monotonic() > deadline:
                pytest.fail(f"{addr}: {len(msgs)} message(s) with {marker!r} after {timeout}s, "
                            f"expected {count}; queue: {self.queue_lines()}")
            time.sleep(0.05)

    # -- clients
    def connect(self, listener="mx", **kw):
        if listener == "submissions":
            kw.setdefault("tls", True)
        return Client(self.ports[listener], **kw)


class InstanceFactory:
    def __init__(self, tmp_path_factory, template):
        self.tmp = tmp_path_factory
        self.template = template
        self.instances = []

    def __call__(self, conf=None, start=True, create_users=True):
        inst = Instance(self.tmp.mktemp("pecd"), self.template, conf, create_users)
        self.instances.append(inst)
        if start:
            inst.start()
        return inst

    def close(self):
        problems = []
        for inst in self.instances:
            inst.stop()
            if inst in LIVE:
                LIVE.remove(inst)
            bad = [c for c in inst.exit_codes if c != 0]
            if bad:
                problems.append(f"{inst.dir}: pecd exit after SIGTERM: {bad}\n{inst.log(60)}")
        return problems


# ----------------------------------------------------------------------------- client

def client_tls_context(min_version=None, max_version=None, legacy=False):
    """A client context that accepts the self-signed certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if legacy:   # let the client offer TLS 1.0/1.1 (OpenSSL 3 disables them at SECLEVEL>0)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


class Closed(Exception):
    pass


class Client:
    """A raw SMTP dialog.  cmd() sends one line and returns the whole reply as text
    (lines joined by "\\n"), so tests read as dialogs:

        assert c.cmd("NOOP") == "250 2.0.0 OK"
    """

    def __init__(self, port, tls=False, banner=True, timeout=IO_TIMEOUT, context=None,
                 source=None):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # real trickling
        self.buf = b""
        if tls:
            self.sock = (context or client_tls_context()).wrap_socket(self.sock,
                                                                      server_hostname=HOST)
        if banner:
            got = self.reply()
            assert got == BANNER, f"banner {got!r}"

    # -- raw
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed(f"connection closed by server (pending {self.buf!r})")
        self.buf += chunk

    def read_line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply_lines(self):
        """One whole reply (multi-line replies: every line), as a list of lines."""
        lines = []
        while True:
            line = self.read_line()
            lines.append(line)
            assert re.match(r"^[2-5][0-9][0-9]([ -]|$)", line), f"not a reply line: {line!r}"
            if len(line) == 3 or line[3] == " ":
                return lines

    def reply(self):
        return "\n".join(self.reply_lines())

    def try_reply(self, timeout=0.3):
        """A reply the server sends on its own within timeout, or None."""
        if b"\r\n" in self.buf:
            return self.reply()
        self.sock.settimeout(timeout)
        try:
            self._fill()
        except (socket.timeout, TimeoutError):
            return None
        finally:
            self.sock.settimeout(self.timeout)
        return self.reply()

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def expect_closed(self, timeout=IO_TIMEOUT):
        """The server closes the connection (without sending anything more)."""
        assert self.buf == b"", f"unexpected data before close: {self.buf!r}"
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        except socket.timeout:
            raise AssertionError(f"server did not close the connection within {timeout}s")
        assert data == b"", f"expected close, got {data!r}"

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- SMTP steps
    def ehlo(self, name="client.test"):
        """EHLO; returns the keyword lines (without the first line) after asserting
        that the first line is 250-HOST."""
        lines = self.reply_lines_for(f"EHLO {name}")
        assert lines[0] in (f"250-{HOST}", f"250 {HOST}"), lines
        for l in lines[1:]:
            assert l.startswith("250-") or l.startswith("250 "), lines
        return [l[4:] for l in lines[1:]]

    def reply_lines_for(self, line):
        self.send(line + "\r\n")
        return self.reply_lines()

    def starttls(self, context=None):
        assert self.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        assert self.buf == b"", f"data after the 220 to STARTTLS: {self.buf!r}"
        self.sock = (context or client_tls_context()).wrap_socket(self.sock, server_hostname=HOST)
        return self.sock

    def auth_plain(self, user, pw):
        token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {token}")

    def mail_from(self, sender, params=""):
        return self.cmd(f"MAIL FROM:<{sender}>" + (" " + params if params else ""))

    def data(self, msg):
        """DATA with dot-stuffing; returns the final reply."""
        r = self.cmd("DATA")
        assert r == "354 End data with <CR><LF>.<CR><LF>", r
        self.send(dot_stuff(msg) + b".\r\n")
        return self.reply()

    def send_mail(self, sender, rcpts, msg, mail_params=""):
        """A whole transaction that must succeed; returns the QID."""
        assert self.mail_from(sender, mail_params) == "250 2.1.0 Sender OK"
        for r in rcpts:
            assert self.cmd(f"RCPT TO:<{r}>") == "250 2.1.5 Recipient OK", r
        return queued_qid(self.data(msg))


def queued_qid(reply):
    m = QUEUED_RE.match(reply)
    assert m, f"expected '250 2.0.0 Ok: queued as QID', got {reply!r}"
    return m.group(1)


# ----------------------------------------------------------------------------- messages

_counter = [0]


def unique_id(prefix="t"):
    _counter[0] += 1
    return f"{prefix}-{os.getpid()}-{_counter[0]}-{random.randrange(1 << 30):08x}"


def message(test_id, sender="sender@client.test", to="alice@example.test", subject=None,
            body=None):
    """A small RFC 5322 message (bytes, CRLF) carrying an X-Test-Id header."""
    if body is None:
        body = f"Hello from {test_id}.\r\nSecond line.\r\n"
    if isinstance(body, str):
        body = body.encode("utf-8")
    head = (f"From: <{sender}>\r\n"
            f"To: <{to}>\r\n"
            f"Subject: {subject or 'test ' + test_id}\r\n"
            f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
            f"Message-ID: <{test_id}@client.test>\r\n"
            f"X-Test-Id: {test_id}\r\n"
            f"\r\n").encode("utf-8")
    return head + body


def dot_stuff(msg):
    """RFC 5321 §4.5.2 transparency for a CRLF message (adds the final CRLF if needed)."""
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    lines = msg.split(b"\r\n")[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


def split_delivered(data):
    """Splits a delivered file into (return_path, delivered_to, received, rest):
    the first two lines, the following Received header (unfolded), and the rest."""
    rp, rest = data.split(b"\r\n", 1)
    dt, rest = rest.split(b"\r\n", 1)
    m = re.match(rb"(Received:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)", rest)
    assert m, f"no Received header after Delivered-To: {rest[:200]!r}"
    received = re.sub(rb"\r\n[ \t]+", b" ", m.group(1)).rstrip(b"\r\n")
    return (rp.decode("utf-8"), dt.decode("utf-8"), received.decode("utf-8"),
            rest[m.end():])


def received_re(helo, proto, qid, rcpt=None, tls=None):
    """Regex for the unfolded Received header of docs/smtp-replies.md."""
    r = (r"^Received: from " + re.escape(helo) + r" \(\[127\.0\.0\.1\]\)\s+by " + re.escape(HOST)
         + r" \(pecmail\) with " + re.escape(proto) + r" id " + re.escape(qid))
    if tls:
        r += r"\s+\(using " + re.escape(tls[0]) + r" with cipher " + re.escape(tls[1]) + r"\)"
    if rcpt:
        r += r"\s+for <" + re.escape(rcpt) + r">"
    r += r"\s*;\s*(?P<date>.+)$"
    return re.compile(r)
