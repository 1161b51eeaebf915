"""The providers' directory from a real LDAP server (issue 7): Debian's slapd on a loopback
port with a temporary configuration and the PEC schema (share/pec.schema), two providers'
entries loaded with ldapadd, and two pecd reading `directory = ldap://...`.

Scenarios: exchange over the LDAP directory; a provider deleted from LDAP + SIGHUP makes its
mail an anomaly; slapd down + SIGHUP keeps the previous copy; pecd started with slapd down
starts from the cached copy; broken entries in LDAP keep the old copy with a clear error;
a revoked signer (CRL at a file: and at an http: URL) gives an anomaly that names the
revocation's date and reason (anomaly text and log); pecctl directory list/export read the server."""
import http.server
import os
import re
import shutil
import threading
import time

import pytest

from pec_providers import make_providers, pecctl, trasporto
from pecd_harness import free_port

from ldap_fixture import (ADMIN, PASSWORD, ROOT, SLAPD, Slapd, entry, exchange, message,
                          reload, wait_log)

pytestmark = pytest.mark.skipif(not os.path.exists(SLAPD) or not shutil.which("ldapadd"),
                                reason="slapd and ldap-utils are needed")


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


def anomaly_text(msg):
    """The anomaly's own text/plain part, decoded (an anomaly carries no daticert.xml of its
    own: the reason is in this text, RFC 6109 §3.2.2)."""
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8",
                                                        "replace")
    return ""


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
    pecctl("pki", "revoke", "--ca", ca, "--reason", "keyCompromise",
           os.path.join(a.dir, "signing.pem"))
    pecctl("pki", "revoke", "--ca", ca, "--reason", "cessationOfOperation",
           os.path.join(b.dir, "signing.pem"))
    shutil.copy(os.path.join(ca, "crl.pem"), os.path.join(crl_dir, "crl.pem"))
    assert reload(a) == "loaded" and reload(b) == "loaded"
    assert "1 CRLs" in a.log(5) and "1 CRLs" in b.log(5)
    # B (CRL from a file: URL) refuses A's envelope; A (http:) refuses B's
    a.submit("mario", [f"anna@{b.domain}"], message(f"mario@{a.domain}", f"anna@{b.domain}",
                                                     "revoked a"))
    (x,) = b.wait_mail("anna", trasporto("errore"))
    # the CRL's date and reason, in the anomaly's text and in the log
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    for where in (anomaly_text(x[2]), b.log(50)):
        m = re.search(r"the signer certificate was revoked on "
                      r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \(keyCompromise\)", where)
        assert m and m.group(1) >= since, where[-2000:]
    b.submit("mario", [f"anna@{a.domain}"], message(f"mario@{b.domain}", f"anna@{a.domain}",
                                                     "revoked b"))
    (y,) = a.wait_mail("anna", trasporto("errore"))
    assert "(cessationOfOperation)" in anomaly_text(y[2]), y[1][:2000]
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
