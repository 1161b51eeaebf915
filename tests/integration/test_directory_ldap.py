"""The providers' directory from a real LDAP server (issue 7): Debian's slapd on a loopback
port with a temporary configuration and the PEC schema (share/pec.schema), two providers'
entries loaded with ldapadd, and two pecd reading `directory = ldap://...`.

Scenarios: exchange over the LDAP directory; a provider deleted from LDAP + SIGHUP makes its
mail an anomaly; slapd down + SIGHUP keeps the previous copy; pecd started with slapd down
starts from the cached copy; broken entries in LDAP keep the old copy with a clear error;
a revoked signer (CRL at a file: and at an http: URL) gives an anomaly that names the
revocation; pecctl directory list/export read the server."""
import base64
import http.server
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time

import pytest

from pec_providers import make_providers, pecctl, ricevuta, trasporto
from pecd_harness import free_port, wait_port

SLAPD = "/usr/sbin/slapd"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN, PASSWORD = "cn=admin,o=postacert", "secret"

pytestmark = pytest.mark.skipif(not os.path.exists(SLAPD) or not shutil.which("ldapadd"),
                                reason="slapd and ldap-utils are needed")


class Slapd:
    def __init__(self, root):
        self.root = os.path.join(root, "slapd")
        self.db = os.path.join(self.root, "db")
        os.makedirs(self.db)
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.conf = os.path.join(self.root, "slapd.conf")
        with open(self.conf, "w") as f:
            f.write(f"include /etc/ldap/schema/core.schema\n"
                    f"include {REPO}/share/pec.schema\n"
                    f"pidfile {self.root}/slapd.pid\n"
                    f"modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
                    f"database mdb\nmaxsize 104857600\nsuffix \"o=postacert\"\n"
                    f"rootdn \"{ADMIN}\"\nrootpw {PASSWORD}\ndirectory {self.db}\n"
                    f"access to * by * read\n")
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.root, "slapd.log"), "a")
        self.proc = subprocess.Popen([SLAPD, "-f", self.conf, "-h", self.url + "/", "-d", "0"],
                                     stdout=self.log, stderr=self.log)
        wait_port(self.port, self.proc)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def ldap(self, tool, *args, input=None):
        r = subprocess.run([tool, "-x", "-H", self.url, "-D", ADMIN, "-w", PASSWORD, *args],
                           input=input, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{tool}: {r.stdout}{r.stderr}"
        return r.stdout


def entry(p):
    """p's record with the MUST attributes of §4.5.9, the certificate as DER."""
    with open(os.path.join(p.dir, "signing.pem")) as f:
        pem = f.read()
    der = ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE"):])
    return (f"dn: providerName={p.name},o=postacert\nobjectClass: top\nobjectClass: provider\n"
            f"providerName: {p.name}\nproviderCertificateHash: {p.hash}\n"
            f"providerCertificate;binary:: {base64.b64encode(der).decode()}\n"
            f"mailReceipt: posta-certificata@{p.domain}\nmanagedDomains: {p.domain}\n"
            f"description: test provider {p.name}\n\n")


ROOT = ("dn: o=postacert\nobjectClass: top\nobjectClass: organization\n"
        "objectClass: LDIFLocationURLObject\no: postacert\n"
        "LDIFLocationURL: https://directory.example/igpec.ldif.p7m\n\n")


def message(frm, to, subject):
    return (f"From: <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((frm, subject)))}@client.test>\r\n\r\nprova\r\n").encode()


def wait_log(p, text, count=1, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if p.log(100000).count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{p.domain}: no '{text}' x{count} in the log:\n{p.log(40)}")


def reload(p):
    """SIGHUP and wait for the refresh thread's verdict (loaded or kept)."""
    before = p.log(100000)
    n_ok = before.count("providers' directory loaded from")
    n_kept = before.count("providers' directory not refreshed")
    p.proc.send_signal(signal.SIGHUP)
    end = time.time() + 30
    while time.time() < end:
        now = p.log(100000)
        if now.count("providers' directory loaded from") > n_ok:
            return "loaded"
        if now.count("providers' directory not refreshed") > n_kept:
            return "kept"
        time.sleep(0.1)
    raise AssertionError(f"no directory refresh after SIGHUP:\n{p.log(40)}")


def exchange(a, b, subject):
    """mario@a -> anna@b: b delivers the envelope, a gets avvenuta-consegna."""
    a.submit("mario", [f"anna@{b.domain}"], message(f"mario@{a.domain}", f"anna@{b.domain}",
                                                     subject))
    b.wait_mail("anna", lambda m: (m.get("X-Trasporto") or "").strip() == "posta-certificata"
                and subject in (m.get("Subject") or ""))
    a.wait_mail("mario", lambda m: (m.get("X-Ricevuta") or "").strip() == "avvenuta-consegna"
                and subject in (m.get("Subject") or ""))


class CrlServer:
    """Python's http.server on loopback serving one directory (CRLs)."""

    def __init__(self, root):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=root, **k)
        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def world(tmp_path):
    slapd = Slapd(str(tmp_path))
    slapd.start()
    a, b, ca, _ = make_providers(tmp_path)
    slapd.ldap("ldapadd", input=ROOT + entry(a) + entry(b))
    crl_dir = str(tmp_path / "crl-http")
    os.makedirs(crl_dir)
    web = CrlServer(crl_dir)
    base = f"{slapd.url}/o=postacert"
    pwfile = str(tmp_path / "ldap.secret")
    with open(pwfile, "w") as f:
        f.write(PASSWORD + "\n")
    # A binds as the admin (password file) and takes CRLs over http; B reads anonymously
    # with the base and scope in the URL and takes CRLs from a file: URL
    a.write_config({b.domain: b.ports["mx"]}, extra={"pec": {
        "directory": base, "directory_bind_dn": ADMIN, "directory_password_file": pwfile,
        "directory_timeout": "5s", "crl_urls": f"http://127.0.0.1:{web.port}/crl.pem"}})
    b.write_config({a.domain: a.ports["mx"]}, extra={"pec": {
        "directory": base + "??sub", "directory_timeout": "5s",
        "crl_urls": f"file:{crl_dir}/crl.pem"}})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
        p.start()
    yield a, b, ca, slapd, crl_dir
    for p in (a, b):
        p.stop()
    slapd.stop()
    web.stop()


def test_exchange_over_ldap_and_a_provider_removed(world):
    a, b, ca, slapd, _ = world
    assert "providers' directory loaded from ldap://" in a.log()
    exchange(a, b, "over ldap")
    exchange(b, a, "back over ldap")
    # B leaves the directory: A reloads and B's mail becomes an anomaly at A
    slapd.ldap("ldapdelete", f"providerName={b.name},o=postacert")
    assert reload(a) == "loaded"
    assert "1 providers" in a.log(5)
    b.submit("mario", [f"anna@{a.domain}"], message(f"mario@{b.domain}", f"anna@{a.domain}",
                                                     "after removal"))
    (x,) = a.wait_mail("anna", trasporto("errore"))
    assert b"not-in-directory" in x[1], x[1][:2000]


def test_ldap_down_keeps_the_cached_copy(world):
    a, b, ca, slapd, _ = world
    slapd.stop()
    assert reload(a) == "kept"
    assert reload(b) == "kept"
    assert "keeping the previous copy (2 providers" in a.log(20)
    exchange(a, b, "slapd down")
    # a restart with slapd down starts from the cached copy
    a.stop()
    a.start()
    wait_log(a, "using the cached copy")
    exchange(a, b, "restarted on the cache")
    exchange(b, a, "to the restarted provider")
    # the server comes back: the next refresh reads it again
    slapd.start()
    assert reload(a) == "loaded"


def test_broken_ldap_answer_keeps_the_old_copy(world):
    a, b, ca, slapd, _ = world
    slapd.ldap("ldapmodify", input=f"dn: providerName={b.name},o=postacert\nchangetype: modify\n"
                                   "replace: mailReceipt\nmailReceipt: not an address\n")
    assert reload(a) == "kept"
    log = a.log(10)
    assert "mailReceipt is not an address" in log and f"providerName={b.name}" in log, log
    exchange(a, b, "after a broken answer")
    assert a.proc.poll() is None


def test_revoked_signer_is_an_anomaly(world, tmp_path):
    a, b, ca, slapd, crl_dir = world
    # before: no CRL at either URL (a warning), mail flows
    assert "revocation by this CRL is not checked" in a.log()
    pecctl("pki", "revoke", "--ca", ca, os.path.join(a.dir, "signing.pem"))
    pecctl("pki", "revoke", "--ca", ca, os.path.join(b.dir, "signing.pem"))
    shutil.copy(os.path.join(ca, "crl.pem"), os.path.join(crl_dir, "crl.pem"))
    assert reload(a) == "loaded" and reload(b) == "loaded"
    assert "1 CRLs" in a.log(5) and "1 CRLs" in b.log(5)
    # B (CRL from a file: URL) refuses A's envelope; A (http:) refuses B's
    a.submit("mario", [f"anna@{b.domain}"], message(f"mario@{a.domain}", f"anna@{b.domain}",
                                                     "revoked a"))
    (x,) = b.wait_mail("anna", trasporto("errore"))
    assert b"revoked" in x[1], x[1][:2000]
    b.submit("mario", [f"anna@{a.domain}"], message(f"mario@{b.domain}", f"anna@{a.domain}",
                                                     "revoked b"))
    (y,) = a.wait_mail("anna", trasporto("errore"))
    assert b"revoked" in y[1], y[1][:2000]
    assert "anomaly" in a.log(200) and "revoked" in a.log(200)
    # the http server goes away: the cached CRL still serves
    os.unlink(os.path.join(crl_dir, "crl.pem"))
    assert reload(a) == "loaded"
    assert "using the copy kept in" in a.log(10)


def test_pecctl_directory_reads_ldap(world):
    a, b, ca, slapd, _ = world
    out = pecctl("-c", a.conf, "directory", "list").stdout
    assert a.name in out and b.name in out and b.hash.lower() in out and "2 providers" in out
    ldif = pecctl("-c", a.conf, "directory", "export").stdout
    assert "providerCertificate;binary:: " in ldif and "LDIFLocationURL:" in ldif
    # the export loads into another slapd subtree as it is: a round trip
    path = os.path.join(a.dir, "export.ldif")
    with open(path, "w") as f:
        f.write(ldif)
    out2 = pecctl("-c", b.conf, "directory", "import", path).stdout
    assert "2 providers" in out2
    assert pecctl("-c", b.conf, "directory", "export", "--cache").stdout == ldif
