"""A real clamd (Debian clamav-daemon) for the antivirus tests, with an offline
test signature database of our own (no freshclam, no network):

- Eicar-Signature: the EICAR test file's 68 octets (a body-based .ndb signature);
- Pecmail-Test-Virus: a made-up string, PECMAIL_VIRUS below.

clamd listens on a unix socket in its temporary directory and on a free loopback TCP
port (Foreground yes).  Clamd.start() waits for both; stop() ends the process it started.
"""
import os
import socket
import subprocess
import time

import pytest

from pecd_harness import free_port, stop_process

CLAMD = "/usr/sbin/clamd"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
PECMAIL_VIRUS = b"PECMAIL-MADE-UP-TEST-VIRUS-6d1c0f7e"


class Clamd:
    def __init__(self, root, stream_max="10M"):
        self.dir = str(root)
        self.db = os.path.join(self.dir, "db")
        os.makedirs(self.db, exist_ok=True)
        self.socket = os.path.join(self.dir, "clamd.sock")
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "clamd.log")
        self.proc = None
        with open(os.path.join(self.db, "pecmail-test.ndb"), "w") as f:
            f.write(f"Eicar-Signature:0:*:{EICAR.hex()}\n")
            f.write(f"Pecmail-Test-Virus:0:*:{PECMAIL_VIRUS.hex()}\n")
        self.conf = os.path.join(self.dir, "clamd.conf")
        with open(self.conf, "w") as f:
            f.write(f"""Foreground yes
DatabaseDirectory {self.db}
LocalSocket {self.socket}
TCPSocket {self.port}
TCPAddr 127.0.0.1
LogFile {self.log_path}
LogTime yes
PidFile {self.dir}/clamd.pid
StreamMaxLength {stream_max}
MaxThreads 4
IdleTimeout 30
Bytecode no
ScanMail yes
""")

    @property
    def unix(self):
        return f"unix:{self.socket}"

    @property
    def tcp(self):
        return f"tcp:127.0.0.1:{self.port}"

    def start(self, timeout=60):
        assert self.proc is None
        out = open(os.path.join(self.dir, "clamd.out"), "ab")
        self.proc = subprocess.Popen([CLAMD, "--foreground", f"--config-file={self.conf}"],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited {self.proc.returncode}: {self.log()}")
            if self.ping():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"clamd not ready in {timeout}s: {self.log()}")

    def ping(self):
        for fam, addr in ((socket.AF_UNIX, self.socket), (socket.AF_INET, ("127.0.0.1", self.port))):
            try:
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.settimeout(2)
                s.connect(addr)
                s.sendall(b"zPING\0")
                ok = s.recv(16).startswith(b"PONG")
                s.close()
                if not ok:
                    return False
            except OSError:
                return False
        return True

    def stop(self):
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None

    def log(self):
        parts = []
        for name in ("clamd.log", "clamd.out"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    parts.append(f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(parts)


def require_clamd():
    if not os.access(CLAMD, os.X_OK):
        pytest.skip("clamd not installed (scripts/install-deps)")


@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    require_clamd()
    c = Clamd(tmp_path_factory.mktemp("clamd"))
    c.start()
    yield c
    c.stop()
