"""`pecctl pki`: the test PKI has the certificate profile of RFC 6109 §5.5."""
import stat

from pec_helpers import run


def mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_ca_created_once_and_keys_private(pecctl, pki):
    assert mode(pki["ca"] / "ca.key") == 0o600
    assert mode(pki["key"]) == 0o600
    assert mode(pki["dir"] / "tls.key") == 0o600
    before = (pki["ca"] / "ca.pem").read_bytes()
    r = run(pecctl, "pki", "ca", pki["ca"])
    assert r.returncode == 0 and "kept" in r.stdout
    assert (pki["ca"] / "ca.pem").read_bytes() == before


def test_signing_certificate_profile(pki):
    text = run("openssl", "x509", "-in", pki["chain"], "-noout", "-text", check=True).stdout
    assert "Public-Key: (2048 bit)" in text
    assert "sha256WithRSAEncryption" in text
    assert "X509v3 Key Usage: critical" in text and "Digital Signature" in text
    assert "E-mail Protection" in text
    assert "email:posta-certificata@pec.a.example" in text
    assert "Basic Constraints" not in text            # §5.5: MUST NOT be present
    assert "X509v3 Subject Key Identifier" in text
    assert "X509v3 Authority Key Identifier" in text
    assert "O = Gestore A S.p.A." in text
    # the chain verifies for S/MIME signing against the CA
    r = run("openssl", "verify", "-purpose", "smimesign", "-CAfile", pki["ca"] / "ca.pem",
            pki["chain"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_tls_certificate(pki):
    text = run("openssl", "x509", "-in", pki["dir"] / "tls.pem", "-noout", "-text",
               check=True).stdout
    assert "DNS:pec.a.example" in text and "DNS:mx.pec.a.example" in text
    assert "TLS Web Server Authentication" in text


def test_hash_matches_openssl(pecctl, pki):
    r = run(pecctl, "pki", "hash", pki["chain"], check=True)
    fp = run("openssl", "x509", "-in", pki["chain"], "-noout", "-fingerprint", "-sha1",
             check=True).stdout.split("=", 1)[1].strip().replace(":", "").lower()
    assert r.stdout.strip() == fp == pki["sha1"]


def test_usage_errors(pecctl):
    assert run(pecctl, "pki").returncode == 2
    assert run(pecctl, "pki", "issue", "--domain", "x").returncode == 2
    assert run(pecctl, "pki", "frobnicate").returncode == 2
