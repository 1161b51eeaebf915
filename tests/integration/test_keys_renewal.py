"""Signing certificate renewal without a gap (issue 23): SIGHUP makes the signer process load
the signing key and certificate pecd.conf names now, the PEC messages signed after it carry
the new certificate, and nothing is lost in between.  A key that does not match its
certificate, or a certificate for another provider's address, is refused by name and the
pair in force stays.  A signer that the keeper starts later (a module failure, a kill) loads the
renewed pair too, not the one of pecd's start.

The directory lists both certificates' hashes, as docs/directory.md's renewal runbook asks
(`signing_certificate_next`), so provider B accepts A's messages before and after."""
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from pec_providers import make_providers, openssl_verify, pecctl, ricevuta, start_pair
from pecd_harness import reachable_dir, sighup
from test_keys_privsep import roles
from test_pec_providers import message

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a start as root")


def first_cert_der(pem_path):
    r = subprocess.run(["openssl", "x509", "-in", pem_path, "-outform", "DER"],
                       capture_output=True, check=True)
    return r.stdout


def signer_cert_der(raw, tmp):
    """The certificate that signed the S/MIME message raw (not verified here: openssl_verify
    does that)."""
    msg, out = tmp / "msg.eml", tmp / "signer.pem"
    msg.write_bytes(raw)
    r = subprocess.run(["openssl", "smime", "-verify", "-noverify", "-in", str(msg),
                        "-signer", str(out), "-out", os.devnull], capture_output=True)
    assert r.returncode == 0, r.stderr
    return first_cert_der(str(out))


def send_and_check(a, b, ca, subject, want_cert, tmp):
    """A PEC from mario to anna: one transport envelope at B signed with want_cert, and the
    delivery receipt back at A."""
    a.submit("mario", ["anna@pec.b.test"], message("mario@pec.a.test", ["anna@pec.b.test"],
                                                    subject=subject))
    a.wait_mail("mario", lambda m: ricevuta("avvenuta-consegna")(m) and subject in
                m.get("Subject", ""))
    got = [x for x in b.mails("anna") if subject in x[2].get("Subject", "")]
    assert len(got) == 1, [x[2].get("Subject") for x in b.mails("anna")]
    raw = got[0][1]
    assert openssl_verify(raw, ca)[0] == 0
    assert signer_cert_der(raw, tmp) == want_cert


def issue(ca, out, domain="pec.a.test", name="Provider A"):
    pecctl("pki", "issue", "--ca", ca, "--domain", domain, "--out", str(out), "--name", name,
           "--tls-host", "localhost")
    return out


def sign_with(a, b, name):
    """A's pecd.conf names the pair NAME.key / NAME.pem (in force at the next SIGHUP)."""
    a.write_config({"pec.b.test": b.ports["mx"]},
                   extra={"pec": {"signing_key": f"{name}.key",
                                  "signing_certificate": f"{name}.pem"}})


def install(src_dir, dst_dir, name):
    """src_dir's signing.key/signing.pem as dst_dir/name.key/.pem, root's, key 0600."""
    for ext in ("key", "pem"):
        shutil.copy(os.path.join(src_dir, f"signing.{ext}"), os.path.join(dst_dir, f"{name}.{ext}"))
    os.chmod(os.path.join(dst_dir, f"{name}.key"), 0o600)


def test_signing_certificate_renewed_on_sighup(tmp_path):
    root = reachable_dir("pec-renew-")
    try:
        a, b, ca, directory = make_providers(pathlib.Path(root), privsep=True)
        # the new pair, issued ahead and listed in the directory beside the old one
        new = issue(ca, tmp_path / "new")
        new_hash = pecctl("pki", "hash", str(new / "signing.pem")).stdout.split()[-1]
        text = open(directory).read().replace(
            f"providerCertificateHash: {a.hash}\n",
            f"providerCertificateHash: {a.hash}\nproviderCertificateHash: {new_hash}\n")
        with open(directory, "w") as f:
            f.write(text)
        install(new, a.dir, "signing-next")
        start_pair(a, b)
        old_cert = first_cert_der(os.path.join(a.dir, "signing.pem"))
        new_cert = first_cert_der(str(new / "signing.pem"))
        assert old_cert != new_cert
        send_and_check(a, b, ca, "prima del rinnovo", old_cert, tmp_path)

        # the switch: pecd.conf names the new pair, SIGHUP
        sign_with(a, b, "signing-next")
        tail = sighup(a, "applied")
        assert "signing key and certificate read again" in tail, tail
        assert "need a restart" not in tail and "needs a restart" not in tail, tail
        assert "not in the providers' directory" not in a.log(100000)
        send_and_check(a, b, ca, "dopo il rinnovo", new_cert, tmp_path)

        # a key that does not match its certificate: refused, the pair in force stays
        shutil.copy(os.path.join(a.dir, "signing.key"), os.path.join(a.dir, "signing-next.key"))
        tail = sighup(a, "nothing changed")
        assert "does not match" in tail and "signing-next" in tail, tail
        send_and_check(a, b, ca, "chiave sbagliata", new_cert, tmp_path)
        install(new, a.dir, "signing-next")

        # a certificate for another address is another provider's: refused
        other = issue(ca, tmp_path / "other", "pec.c.test", "Provider C")
        install(other, a.dir, "signing-other")
        sign_with(a, b, "signing-other")
        tail = sighup(a, "nothing changed")
        assert "signing-other.pem is for <posta-certificata@pec.c.test>" in tail, tail
        sign_with(a, b, "signing-next")
        sighup(a, "applied")

        # a reload that fails on another file (the directory's password file) after the keys
        # it names would load: refused before the signer reads them, so the pair in force
        # still signs (the signer used to have loaded the other pair by then)
        a.write_config({"pec.b.test": b.ports["mx"]},
                       extra={"pec": {"signing_key": "signing.key",
                                      "signing_certificate": "signing.pem",
                                      "directory_password_file": "no-such-password-file"}})
        tail = sighup(a, "nothing changed")
        assert "directory_password_file" in tail and "read again" not in tail, tail
        send_and_check(a, b, ca, "password illeggibile", new_cert, tmp_path)
        sign_with(a, b, "signing-next")
        sighup(a, "applied")

        # a pair the directory does not list yet: taken, and the reload warns at once
        unlisted = issue(ca, tmp_path / "unlisted")
        install(unlisted, a.dir, "signing-unlisted")
        sign_with(a, b, "signing-unlisted")
        mark = len(a.log(100000))
        sighup(a, "applied")
        end = time.time() + 10
        while "is not in the providers' directory" not in a.log(100000)[mark:]:
            assert time.time() < end, a.log(30)
            time.sleep(0.1)
        sign_with(a, b, "signing-next")
        sighup(a, "applied")

        # the signer killed: the keeper's next one loads the renewed pair, not the first
        _, _, signer = roles(a)
        os.kill(signer, signal.SIGKILL)
        end = time.time() + 20
        while roles(a)[2] == signer:
            assert time.time() < end, a.log(30)
            time.sleep(0.1)
        new_signer = roles(a)[2]
        while f"signer (pid {new_signer}) answers" not in a.log(200):
            assert time.time() < end, a.log(30)
            time.sleep(0.1)
        send_and_check(a, b, ca, "dopo il riavvio del firmatario", new_cert, tmp_path)
        assert "not read again" not in a.log(100000)
    finally:
        for p in ("a", "b"):
            obj = locals().get(p)
            if obj is not None and obj.proc is not None:
                obj.stop()
        shutil.rmtree(root, ignore_errors=True)
