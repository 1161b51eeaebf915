"""A route with several next hops (issue 24: the nodes of a provider): `[routes] DOMAIN =
HOST:PORT, HOST:PORT` is tried in turn when a hop refuses or is down, and `pecctl init --route
D=H:P,H:P` writes such a line (and refuses a malformed hop)."""
import os
import socket
import subprocess
import threading

from pec_providers import make_providers, pecctl, ricevuta, trasporto
from pecd_harness import PECCTL, free_port


class Refuser:
    """A next hop that refuses: accepts, answers 421 and closes; counts the connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.count, self.stop = 0, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            try:
                c.sendall(b"421 4.3.2 not today\r\n")
            finally:
                c.close()

    def close(self):
        self.stop = True
        self.t.join(5)
        self.sock.close()


def test_a_hop_down_the_next_one_takes_the_message(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    hold = Refuser()
    dead = hold.port
    try:
        # the first hop refuses every connection: A must go on to the second
        a.write_config({"pec.b.test": 0})
        with open(a.conf) as f:
            text = f.read()
        text = text.replace("pec.b.test = localhost:0",
                            f"pec.b.test = localhost:{dead}, localhost:{b.ports['mx']}")
        with open(a.conf, "w") as f:
            f.write(text)
        b.write_config({"pec.a.test": a.ports["mx"]})
        a.add_user("mario")
        b.add_user("anna")
        a.start()
        b.start()
        for k in range(3):
            r = a.submit("mario", ["anna@pec.b.test"],
                         f"From: <mario@pec.a.test>\r\nTo: <anna@pec.b.test>\r\nSubject: hop {k}"
                         f"\r\nMessage-ID: <hop{k}@client.test>\r\n\r\nciao\r\n".encode())
        b.wait_mail("anna", trasporto("posta-certificata"), count=3, timeout=60)
        a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=3, timeout=60)
        # the hops rotate between messages: at least one of the three began at the refuser
        assert hold.count >= 1, "the refusing hop was never tried"
    finally:
        hold.close()
        for p in (a, b):
            if p.proc is not None:
                p.stop()


def test_init_writes_a_route_with_several_hops(tmp_path):
    d = str(tmp_path / "p")
    p1, p2 = free_port(), free_port()
    r = subprocess.run([PECCTL, "init", d, "--domain", "pec.x.test", "--ca", str(tmp_path / "ca"),
                        "--route", f"pec.y.test=127.0.0.1:{p1},[::1]:{p2}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(d, "pecd.conf")) as f:
        conf = f.read()
    assert f"pec.y.test = 127.0.0.1:{p1}, [::1]:{p2}" in conf or \
        f"pec.y.test = 127.0.0.1:{p1},[::1]:{p2}" in conf, conf
    r = pecctl("-c", os.path.join(d, "pecd.conf"), "route", "list", "--json")
    assert "pec.y.test" in r.stdout and str(p2) in r.stdout, r.stdout
    bad = subprocess.run([PECCTL, "init", str(tmp_path / "q"), "--domain", "pec.x.test",
                          "--ca", str(tmp_path / "ca"), "--route", "pec.y.test=127.0.0.1:25,"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--route" in bad.stderr, bad.stderr
