"""The providers' directory over TLS (issue 7): slapd with a certificate from the test CA
(`pecctl pki issue --tls-host 127.0.0.1`) answers StartTLS on ldap:// and ldaps:// on a
second port.  A reads `ldaps://127.0.0.1:P2/o=postacert`, B `ldap://127.0.0.1:P1/...` with
`directory_starttls = yes`; both check the server against `directory_ca_file`.

Scenarios: mail flows over both TLS directories; slapd restarted with a certificate from
another (self-signed) CA fails the refresh with a TLS error that names the cause, and the
previous copy stays in use; the server's password changed makes A's bind fail clearly (the
previous copy stays in use) and `pecctl directory list` says the same; `pecctl verify
--directory ldaps://...` and `ldap://...????starttls` check a delivered envelope against the
server."""
import os
import shutil

import pytest

from ldap_fixture import ADMIN, PASSWORD, ROOT, SLAPD, Slapd, entry, exchange, reload
from pec_providers import make_providers, pecctl, trasporto

pytestmark = pytest.mark.skipif(not os.path.exists(SLAPD) or not shutil.which("ldapadd"),
                                reason="slapd and ldap-utils are needed")


def server_cert(ca, out):
    pecctl("pki", "issue", "--ca", ca, "--domain", "ldap.test", "--out", out,
           "--tls-host", "127.0.0.1", "--tls-host", "localhost")
    return (os.path.join(out, "tls.pem"), os.path.join(out, "tls.key"))


@pytest.fixture
def tls_world(tmp_path):
    a, b, ca, _ = make_providers(tmp_path)
    cert = server_cert(ca, str(tmp_path / "ldap-server"))
    ca_pem = os.path.join(ca, "ca.pem")
    slapd = Slapd(str(tmp_path), tls=cert, ca=ca_pem)
    slapd.start()
    slapd.ldap("ldapadd", "-ZZ", input=ROOT + entry(a) + entry(b))
    pwfile = str(tmp_path / "ldap.secret")
    with open(pwfile, "w") as f:
        f.write(PASSWORD + "\n")
    a.write_config({b.domain: b.ports["mx"]}, extra={"pec": {
        "directory": f"{slapd.ldaps_url}/o=postacert", "directory_ca_file": ca_pem,
        "directory_bind_dn": ADMIN, "directory_password_file": pwfile,
        "directory_timeout": "5s"}})
    b.write_config({a.domain: a.ports["mx"]}, extra={"pec": {
        "directory": f"{slapd.url}/o=postacert", "directory_starttls": "yes",
        "directory_ca_file": ca_pem, "directory_timeout": "5s"}})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
        p.start()
    yield a, b, ca, slapd, cert
    for p in (a, b):
        p.stop()
    slapd.stop()


def test_ldaps_starttls_and_a_certificate_from_another_ca(tls_world, tmp_path):
    a, b, ca, slapd, cert = tls_world
    assert f"providers' directory loaded from {slapd.ldaps_url}/o=postacert" in a.log()
    assert f"providers' directory loaded from {slapd.url}/o=postacert" in b.log()
    exchange(a, b, "over ldaps")
    exchange(b, a, "over starttls")
    assert reload(a) == "loaded" and reload(b) == "loaded"
    # the server now shows a certificate from another self-signed CA
    other = str(tmp_path / "other-ca")
    pecctl("pki", "ca", other, "--name", "Another CA")
    slapd.stop()
    slapd.configure(server_cert(other, str(tmp_path / "ldap-other")), PASSWORD)
    slapd.start()
    for p in (a, b):
        assert reload(p) == "kept"
        log = p.log(10)
        assert "TLS: the server certificate is not accepted" in log, log
        assert "keeping the previous copy (2 providers" in log, log
    assert ("StartTLS: TLS:" in b.log(10)) and ("bind as cn=admin,o=postacert: TLS:" in a.log(10))
    exchange(a, b, "on the previous copy")
    # the right certificate again: both refresh
    slapd.stop()
    slapd.configure(cert, PASSWORD)
    slapd.start()
    assert reload(a) == "loaded" and reload(b) == "loaded"


def test_wrong_password_keeps_the_previous_copy(tls_world):
    a, b, ca, slapd, cert = tls_world
    slapd.stop()
    slapd.configure(cert, "another-secret")      # the password was changed on the server
    slapd.start()
    assert reload(a) == "kept"
    log = a.log(10)
    assert "bind as cn=admin,o=postacert: Invalid credentials" in log, log
    assert "keeping the previous copy (2 providers" in log, log
    assert reload(b) == "loaded"                  # B binds anonymously
    exchange(a, b, "after a failed bind")
    r = pecctl("-c", a.conf, "directory", "list", check=False)
    assert r.returncode == 1 and "Invalid credentials" in r.stderr, r.stderr


def test_pecctl_verify_reads_the_directory_over_tls(tls_world, tmp_path):
    a, b, ca, slapd, cert = tls_world
    exchange(a, b, "to verify")
    (env,) = b.wait_mail("anna", trasporto("posta-certificata"))
    ca_pem = os.path.join(ca, "ca.pem")
    for url in (f"{slapd.ldaps_url}/o=postacert", f"{slapd.url}/o=postacert????starttls"):
        r = pecctl("verify", "--trust", ca_pem, "--directory", url, "--directory-ca", ca_pem,
                   env[0], check=False)
        assert r.returncode == 0 and "checked in the directory" in r.stdout, r.stdout + r.stderr
    # a simple bind, as pecd's [pec] directory_bind_dn / directory_password_file
    good, bad = str(tmp_path / "pw.good"), str(tmp_path / "pw.bad")
    for path, pw in ((good, PASSWORD), (bad, "wrong")):
        with open(path, "w") as f:
            f.write(pw + "\n")
    base = ["verify", "--trust", ca_pem, "--directory", f"{slapd.ldaps_url}/o=postacert",
            "--directory-ca", ca_pem, "--directory-bind-dn", ADMIN]
    r = pecctl(*base, "--directory-password-file", good, env[0], check=False)
    assert r.returncode == 0 and "checked in the directory" in r.stdout, r.stdout + r.stderr
    r = pecctl(*base, "--directory-password-file", bad, env[0], check=False)
    assert r.returncode == 2 and "Invalid credentials" in r.stderr, r.stdout + r.stderr
    r = pecctl(*base, env[0], check=False)
    assert r.returncode == 2 and "go together" in r.stderr, r.stderr
    # a provider missing from the server: the signer is not in the directory
    slapd.ldap("ldapdelete", "-ZZ", f"providerName={a.name},o=postacert")
    r = pecctl("verify", "--json", "--trust", ca_pem, "--directory",
               f"{slapd.ldaps_url}/o=postacert", "--directory-ca", ca_pem, env[0], check=False)
    assert r.returncode == 1 and "not-in-directory" in r.stdout, r.stdout + r.stderr
    # the server's certificate is not from the CA given
    other = str(tmp_path / "other-ca")
    pecctl("pki", "ca", other, "--name", "Another CA")
    r = pecctl("verify", "--trust", ca_pem, "--directory", f"{slapd.ldaps_url}/o=postacert",
               "--directory-ca", os.path.join(other, "ca.pem"), env[0], check=False)
    assert r.returncode == 2 and "TLS: the server certificate is not accepted" in r.stderr, \
        r.stderr
