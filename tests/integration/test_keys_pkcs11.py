"""Keys in a hardware module (issue 20; RFC 6109 §5.1): SoftHSM 2 tokens under a temporary
directory (SOFTHSM2_CONF), one per provider.  `pecctl init --signing-key pkcs11:… --tls-key
pkcs11:…` makes both keys inside the token and issues their certificates from the test CA;
the two providers, started as root, exchange PEC messages, every message verifies with
`openssl cms -verify`, and no private key file exists in either instance.  `pecd -t` and
pecd itself name the setting for a wrong PIN, a missing token or object and a certificate
that does not match the key.  The module out of reach while pecd runs: new submissions get
451 4.3.0, the keeper tries again, and mail flows once the token is back."""
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import time

import pytest

from pec_providers import openssl_verify
from pecd_harness import LIVE, PECCTL, PECD, free_port, reachable_dir, stop_process, wait_port
from test_keys_privsep import roles
from test_pec_providers import message

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs a start as root"),
    pytest.mark.skipif(not os.path.exists(MODULE) or shutil.which("softhsm2-util") is None,
                       reason="softhsm2 is not installed (scripts/install-deps)"),
]
PIN = "2468"


class Instance:
    """A provider made by `pecctl init` with its keys in the token labelled `label`."""

    def __init__(self, root, domain, label, ca, directory, pin_file):
        self.root, self.domain, self.label = root, domain, label
        self.dir = os.path.join(root, domain)
        self.smtp, self.submission = free_port(), free_port()
        self.ca, self.directory, self.pin_file = ca, directory, pin_file
        self.proc = None
        self.conf = os.path.join(self.dir, "pecd.conf")
        self.log_path = os.path.join(self.dir, "pecd.log")

    def uri(self, obj):
        return f"pkcs11:token={self.label};object={obj}"

    def init(self, peer):
        r = subprocess.run([PECCTL, "init", self.dir, "--domain", self.domain, "--name",
                            self.domain, "--smtp", str(self.smtp), "--submission",
                            str(self.submission), "--ca", self.ca, "--directory",
                            self.directory, "--route", f"{peer.domain}=127.0.0.1:{peer.smtp}",
                            "--signing-key", self.uri("signing"), "--tls-key", self.uri("tls"),
                            "--pkcs11-module", MODULE, "--pkcs11-pin-file", self.pin_file],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        with open(self.conf, "a") as f:
            f.write("\n[queue]\nretry_min = 1s\nretry_max = 2s\n")
        r = subprocess.run([PECCTL, "-c", self.conf, "user", "add", f"u@{self.domain}",
                            "--password-stdin"], input="u-password\n", capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        return r

    def start(self):
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([PECD, "-c", self.conf], stderr=self.logf,
                                     stdout=self.logf)
        LIVE.append(self)
        for p in (self.smtp, self.submission):
            assert wait_port(p, self.proc, timeout=60), self.log()

    def stop(self):
        stop_process(self.proc)
        if self in LIVE:
            LIVE.remove(self)

    def log(self, tail=100):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-tail:])

    def mails(self, local):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.dir, "data", "mail", self.domain, local, sub)
            for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                with open(os.path.join(d, n), "rb") as f:
                    out.append(f.read())
        return out

    def submit(self, to, subject):
        ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "ca.crt"))
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", self.submission, timeout=30) as s:
            s.starttls(context=ctx)
            s.login(f"u@{self.domain}", "u-password")
            s.sendmail(f"u@{self.domain}", [to], message(f"u@{self.domain}", [to],
                                                         subject=subject))


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while not pred():
        assert time.time() < end, what()
        time.sleep(0.2)


@pytest.fixture(scope="module")
def hsm():
    root = reachable_dir("pec-hsm-")
    tokens = os.path.join(root, "tokens")
    os.makedirs(tokens, mode=0o700)
    conf = os.path.join(root, "softhsm2.conf")
    with open(conf, "w") as f:
        f.write(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = conf
    for label in ("pec-a", "pec-b"):
        r = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                            "--so-pin", "13579", "--pin", PIN], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    pin_file = os.path.join(root, "pin")
    with open(pin_file, "w") as f:
        f.write(PIN + "\n")
    os.chmod(pin_file, 0o600)
    yield root, tokens, pin_file
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old
    if not os.environ.get("PEC_KEEP_TMP"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pair(hsm):
    root, tokens, pin_file = hsm
    ca = os.path.join(root, "ca")
    directory = os.path.join(root, "providers.ldif")
    a = Instance(root, "pec.a.test", "pec-a", ca, directory, pin_file)
    b = Instance(root, "pec.b.test", "pec-b", ca, directory, pin_file)
    a.init(b)
    b.init(a)
    a.start()
    b.start()
    yield a, b
    for p in (a, b):
        p.stop()


def test_exchange_with_keys_in_tokens(pair):
    a, b = pair
    a.submit("u@pec.b.test", "nel token")
    wait_for(lambda: any(b"X-Ricevuta: avvenuta-consegna" in m for m in a.mails("u")), 60,
             lambda: a.log() + b.log())
    got = {"a": a.mails("u") + a.mails("posta-certificata"), "b": b.mails("u")}
    assert len(got["b"]) == 1 and b"X-Trasporto: posta-certificata" in got["b"][0]
    assert len(got["a"]) == 3      # accettazione, avvenuta-consegna, presa in carico
    for raw in got["a"] + got["b"]:
        rc, err = openssl_verify(raw, a.ca)     # the test CA's directory (ca.pem)
        assert rc == 0, err
    # the keys live in the tokens only: no private key in any file of either instance
    for p in (a, b):
        for base, _, files in os.walk(p.dir):
            for n in files:
                path = os.path.join(base, n)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue                # links, pecd's control socket
                with open(path, "rb") as f:
                    assert b"PRIVATE KEY-----" not in f.read(), path
        conf = open(p.conf).read()
        assert f"signing_key = {p.uri('signing')}" in conf
        assert f"key = {p.uri('tls')}" in conf
        assert "privilege separation: the network-facing process runs as pecmail" in p.log(400)


def test_pecctl_signs_with_the_token(pair):
    """pecctl, run beside the running pecd, signs with the key in the token too: the
    published directory record (a DER CMS SignedData) verifies against the test CA."""
    a, _ = pair
    out = os.path.join(a.root, "a-record.p7m")
    r = subprocess.run([PECCTL, "-c", a.conf, "directory", "publish", out], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", out, "-CAfile",
                        os.path.join(a.ca, "ca.pem"), "-purpose", "any", "-out", "/dev/null"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_module_out_of_reach(pair, hsm):
    a, b = pair
    root, tokens, pin_file = hsm
    away = tokens + ".away"
    os.rename(tokens, away)
    try:
        _, _, signer = roles(a)
        os.kill(signer, signal.SIGKILL)       # the next signer finds no token
        wait_for(lambda: "cannot start" in a.log(50), 30, a.log)
        # SoftHSM without its token directory fails to initialise: the module is out of reach
        assert ("cannot start: [pec] pkcs11_module" in a.log(50) or
                "no token of the module" in a.log(50)), a.log(50)
        # its TLS key is in the token too: the handshake fails, or DATA gets 451 4.3.0
        with pytest.raises((smtplib.SMTPException, OSError)) as e:
            a.submit("u@pec.b.test", "senza modulo")
        if isinstance(e.value, smtplib.SMTPDataError):
            assert e.value.smtp_code == 451, e.value
    finally:
        os.rename(away, tokens)
    # the keeper tries again (0.5 s, 1 s, 2 s …): mail flows once the module is back
    wait_for(lambda: "answers: signatures go on" in a.log(5).split("cannot start")[-1] or
             "answers: signatures go on" in a.log(3), 60, a.log)
    a.submit("u@pec.b.test", "modulo tornato")
    wait_for(lambda: sum(b"modulo tornato" in m and b"avvenuta-consegna" in m
                         for m in a.mails("u")) == 1, 60, lambda: a.log() + b.log())
    assert not any(b"senza modulo" in m for m in a.mails("u") + b.mails("u"))


def pecd_t(conf):
    return subprocess.run([PECD, "-t", "-c", conf], capture_output=True, text=True, timeout=60)


def test_start_errors_name_the_setting(pair, hsm):
    a, _ = pair
    root, tokens, pin_file = hsm
    good = open(a.conf).read()
    bad = os.path.join(a.dir, "bad.conf")
    wrong_pin = os.path.join(root, "wrong-pin")
    with open(wrong_pin, "w") as f:
        f.write("0000\n")
    os.chmod(wrong_pin, 0o600)
    cases = [
        (good.replace(pin_file, wrong_pin), "[pec] pkcs11_pin_file " + wrong_pin,
         "refused the PIN"),
        (good.replace("token=pec-a;object=signing", "token=nosuch;object=signing"),
         "[pec] signing_key pkcs11:token=nosuch;object=signing", "no token of the module"),
        (good.replace("token=pec-a;object=signing", "token=pec-a;object=nosuch"),
         "[pec] signing_key pkcs11:token=pec-a;object=nosuch", "no private key with label"),
        (good.replace("token=pec-a;object=signing", "token=pec-a;object=tls"),
         "[pec] signing_key pkcs11:token=pec-a;object=tls and signing_certificate",
         "does not match"),
        (good.replace("key = pkcs11:token=pec-a;object=tls", "key = pkcs11:token=pec-a;object=signing"),
         "[tls] key pkcs11:token=pec-a;object=signing", "does not match"),
    ]
    for text, setting, why in cases:
        with open(bad, "w") as f:
            f.write(text)
        r = pecd_t(bad)
        assert r.returncode == 1 and setting in r.stderr and why in r.stderr, r.stderr
        # pecd itself stops with the same reason (from the signer process)
        r = subprocess.run([PECD, "-c", bad], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and setting in r.stderr and why in r.stderr, r.stderr
    os.unlink(bad)


def test_pki_issue_into_a_token(hsm, tmp_path):
    """`pecctl pki issue` makes the key in the token and writes the certificate only."""
    root, tokens, pin_file = hsm
    ca = str(tmp_path / "ca")
    out = str(tmp_path / "out")
    subprocess.run([PECCTL, "pki", "ca", ca], check=True, capture_output=True)
    r = subprocess.run([PECCTL, "pki", "issue", "--ca", ca, "--domain", "pec.c.test", "--out",
                        out, "--signing-key", "pkcs11:token=pec-b;object=other",
                        "--pkcs11-module", MODULE, "--pkcs11-pin-file", pin_file],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "signing key: pkcs11:token=pec-b;object=other" in r.stdout
    assert sorted(os.listdir(out)) == ["signing.pem", "tls.key", "tls.pem"]
    # the certificate is for the token's key: a CMS signature made in the token verifies
    cert = os.path.join(out, "signing.pem")
    r = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-ext", "subjectAltName"],
                       capture_output=True, text=True)
    assert "email:posta-certificata@pec.c.test" in r.stdout
    # the same URI again: the key there is used, not a second one made
    r2 = subprocess.run([PECCTL, "pki", "issue", "--ca", ca, "--domain", "pec.c.test", "--out",
                         str(tmp_path / "out2"), "--signing-key",
                         "pkcs11:token=pec-b;object=other", "--pkcs11-module", MODULE,
                         "--pkcs11-pin-file", pin_file], capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    pub = [subprocess.run(["openssl", "x509", "-in", c, "-noout", "-pubkey"], capture_output=True,
                          text=True).stdout
           for c in (cert, str(tmp_path / "out2" / "signing.pem"))]
    assert pub[0] == pub[1]
