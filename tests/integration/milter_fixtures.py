"""Real milter filters for the tests, on loopback:

- TestFilter(tmpdir, noreply=False): tests/integration/milters/testfilter.py
  (python3-milter, i.e. libmilter) on inet:PORT@127.0.0.1; behaviour per
  message from the header X-Test-Milter (see that file); .records() returns
  what it saw for each message (macros, connect, helo, sender, recipients).
- OpenDKIM(tmpdir, domain, selector, canon="relaxed/relaxed"): /usr/sbin/opendkim
  -f -x CONF in signing mode with a key made by opendkim-genkey; .verify(msg)
  checks the DKIM-Signature with dkimpy, the public key taken from the
  generated .txt file (no DNS).
- Rspamd(tmpdir): /usr/bin/rspamd -f with only the proxy worker, in milter mode
  and scanning itself (no normal worker, no redis), its config, database,
  run and log dirs in tmpdir; no Lua plugin is loaded (options.filters
  empty, no modules section), so nothing contacts the network (no RBL,
  SURBL, DKIM/DMARC/SPF, fuzzy or neural); the DNS resolver points at a
  closed loopback port.  The core still checks the GTUBE pattern and
  applies the actions (reject at 15).

Both: .socket ("inet:PORT@127.0.0.1"), .start() (waits until the port
accepts, at most 10 s), .stop(), and use as context managers.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pecd_harness import free_port, stop_process  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"


def _wait_port(port, proc, logpath, secs=10.0):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    log = open(logpath, errors="replace").read()[-2000:] if os.path.exists(logpath) else ""
    raise RuntimeError(f"filter did not listen on {port} (exit {proc.poll()}):\n{log}")


class _Daemon:
    __test__ = False          # not a pytest test class

    def __init__(self, tmpdir):
        self.dir = str(tmpdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.socket = f"inet:{self.port}@127.0.0.1"
        self.proc = None
        self.log = os.path.join(self.dir, type(self).__name__.lower() + ".log")

    def _spawn(self, argv, secs=10.0):
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            _wait_port(self.port, self.proc, self.log, secs)
        except Exception:
            self.stop()
            raise

    def stop(self):
        stop_process(self.proc, 5)
        self.proc = None
        if getattr(self, "_logf", None):
            self._logf.close()
            self._logf = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class TestFilter(_Daemon):
    """testfilter.py on loopback; records() lists one dict per message."""

    def __init__(self, tmpdir, noreply=False):
        super().__init__(tmpdir)
        self.noreply = noreply
        self.record = os.path.join(self.dir, f"testfilter-{self.port}.json")

    def start(self):
        argv = [PYTHON, os.path.join(HERE, "milters", "testfilter.py"), self.socket, self.record]
        if self.noreply:
            argv.append("--noreply")
        self._spawn(argv)
        return self

    def records(self):
        if not os.path.exists(self.record):
            return []
        with open(self.record) as f:
            return json.load(f)


class OpenDKIM(_Daemon):
    """opendkim signing for DOMAIN with SELECTOR; verify(msg) -> bool."""

    def __init__(self, tmpdir, domain="example.test", selector="pec", canon="relaxed/relaxed"):
        super().__init__(tmpdir)
        self.domain, self.selector, self.canon = domain, selector, canon
        self.keydir = os.path.join(self.dir, "keys")

    def start(self):
        for tool in ("/usr/sbin/opendkim", "/usr/sbin/opendkim-genkey"):
            if not os.path.exists(tool):
                raise RuntimeError(f"{tool} missing (scripts/install-deps)")
        os.makedirs(self.keydir, exist_ok=True)
        r = subprocess.run(["/usr/sbin/opendkim-genkey", "-b", "2048", "-D", self.keydir,
                            "-d", self.domain, "-s", self.selector],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("opendkim-genkey: " + r.stderr)
        key = os.path.join(self.keydir, self.selector + ".private")
        os.chmod(key, 0o600)
        conf = os.path.join(self.dir, "opendkim.conf")
        with open(conf, "w") as f:
            f.write(f"""Syslog no
Mode s
Domain {self.domain}
Selector {self.selector}
KeyFile {key}
Socket {self.socket}
PidFile {os.path.join(self.dir, "opendkim.pid")}
Canonicalization {self.canon}
SignatureAlgorithm rsa-sha256
InternalHosts 127.0.0.1
RequireSafeKeys no
UMask 007
""")
        self._spawn(["/usr/sbin/opendkim", "-f", "-x", conf])
        return self

    def txt_record(self):
        """The public key record from the generated SELECTOR.txt (as in DNS)."""
        with open(os.path.join(self.keydir, self.selector + ".txt")) as f:
            text = f.read()
        return "".join(re.findall(r'"([^"]*)"', text)).encode()

    def verify(self, msg):
        import dkim
        want = f"{self.selector}._domainkey.{self.domain}".lower()
        record = self.txt_record()

        def dnsfunc(name, timeout=5):
            if isinstance(name, bytes):
                name = name.decode()
            return record if name.rstrip(".").lower() == want else None

        return bool(dkim.verify(msg, dnsfunc=dnsfunc))


RSPAMD = "/usr/bin/rspamd"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class Rspamd(_Daemon):
    """rspamd's proxy worker as a milter, offline; .log_text() for its log."""

    def start(self):
        if not os.path.exists(RSPAMD):
            raise RuntimeError(f"{RSPAMD} missing (scripts/install-deps)")
        d = self.dir
        conf = os.path.join(d, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(f"""# written by tests/integration/milter_fixtures.py
.include "$CONFDIR/metrics.conf"
.include "$CONFDIR/actions.conf"
.include "$CONFDIR/groups.conf"
options {{
    pidfile = "{d}/rspamd.pid";
    filters = "";
    dynamic_conf = "{d}/rspamd_dynamic";
    history_file = "{d}/rspamd.history";
    cache_file = "{d}/symbols.cache";
    control_socket = "{d}/rspamd.sock mode=0600";
    tempdir = "{d}";
    allow_raw_input = true;
    local_addrs = [];
    dns {{ nameserver = ["127.0.0.1:9"]; timeout = 1s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{d}/rspamd.log"; level = "info"; }}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{self.port}";
    milter = yes;
    timeout = 60s;
    count = 1;
    upstream "local" {{ default = yes; self_scan = yes; }}
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}
""")
        argv = [RSPAMD, "-f", "-u", "root", "-g", "root", "-i", "-c", conf]
        for var in ("LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR"):
            argv.append(f"--var={var}={d}")
        # the first start compiles the public suffix list (~15 s on a busy machine)
        self._spawn(argv, secs=90.0)
        return self

    def log_text(self):
        p = os.path.join(self.dir, "rspamd.log")
        return open(p, errors="replace").read() if os.path.exists(p) else ""


def have_rspamd():
    return os.path.exists(RSPAMD)


def have_opendkim():
    return os.path.exists("/usr/sbin/opendkim") and shutil.which("opendkim-genkey",
                                                                 path="/usr/sbin:/usr/bin")
