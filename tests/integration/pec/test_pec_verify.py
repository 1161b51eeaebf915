"""`pecctl verify`: verdicts, reasons and exit codes (0 valid, 1 invalid,
2 unreadable) on real provider messages and on our own, with --trust,
--crl and --directory."""
import json

import pytest

from pec_helpers import run

EXPECTED = {
    "03-aruba-2014-accettazione.eml": ("accettazione", None, True, None),
    "05-aruba-2018-accettazione.eml": ("accettazione", None, True, None),
    "08-sogei-2018-posta-certificata-breve-sdi-ricevuta-consegna.eml":
        ("posta-certificata", "breve", True, None),
    "12-NEG-sogei-2018-trailing-whitespace-stripped.eml":
        ("posta-certificata", "breve", False, "content-changed"),
    "15-ANON-aruba-2024-accettazione-sig-removed.eml":
        ("accettazione", None, False, "no-signature"),
    "16-ANON-aruba-2024-errore-consegna-no-dest-sig-removed.eml":
        ("errore-consegna", None, False, "no-signature"),
    "17-ANON-2021-avvenuta-consegna-completa-sha256-sig-redacted.eml":
        ("avvenuta-consegna", "completa", False, "unreadable-signature"),
    "18-ANON-2021-posta-certificata-completa-sha256-sig-redacted-CRLF.eml":
        ("posta-certificata", "completa", False, "unreadable-signature"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_interop_verdicts(pecctl, interop, name):
    tipo, variant, valid, reason = EXPECTED[name]
    r = run(pecctl, "verify", "--json", interop / "eml" / name)
    assert r.returncode == (0 if valid else 1), r.stderr
    v = json.loads(r.stdout)
    assert v["file"].endswith(name)
    assert (v["type"], v["variant"], v["valid"], v["reason"]) == (tipo, variant, valid, reason)
    assert v["daticert"] is not None
    if valid:
        assert v["trust"] == "embedded" and v["digest"] == "sha1"
        assert v["signer"]["email"].startswith("posta-certificata@")


def test_interop_text_and_multiple(pecctl, interop):
    files = [interop / "eml" / n for n in sorted(EXPECTED)]
    r = run(pecctl, "verify", *files)
    assert r.returncode == 1
    assert r.stdout.count("signature: valid") == 3
    assert "INVALID [content-changed]" in r.stdout
    assert 'stray text "a" after </risposte>' in r.stdout       # file 16's daticert
    r = run(pecctl, "verify", "--json", *files)
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(lines) == len(files)


def test_unreadable_and_usage(pecctl, tmp_path):
    r = run(pecctl, "verify", "--json", tmp_path / "missing.eml")
    assert r.returncode == 2
    v = json.loads(r.stdout)
    assert v["readable"] is False and v["reason"] == "unreadable" and v["valid"] is False
    assert run(pecctl, "verify").returncode == 2
    plain = tmp_path / "plain.eml"
    plain.write_bytes(b"From: a@b.example\r\nTo: c@d.example\r\nSubject: hi\r\n\r\nhello\r\n")
    r = run(pecctl, "verify", "--json", plain)
    assert r.returncode == 1
    v = json.loads(r.stdout)
    assert v["type"] == "none" and v["reason"] == "not-pec"


def sample(pec_sample, pki, tmp_path, key=None, chain=None, tipo="accettazione"):
    out = tmp_path / f"{tipo}.eml"
    r = run(pec_sample, "--key", key or pki["key"], "--chain", chain or pki["chain"],
            "--domain", "pec.a.example", "--type", tipo, "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_directory_and_crl(pecctl, pec_sample, pki, tmp_path):
    msg = sample(pec_sample, pki, tmp_path)
    ca = pki["ca"] / "ca.pem"
    ldif = tmp_path / "dir.ldif"
    ldif.write_text("dn: providerName=Gestore A,o=postacert\nobjectClass: provider\n"
                    f"providerName: Gestore A\nproviderCertificateHash: {pki['sha1'].upper()}\n"
                    "mailReceipt: ricevute@pec.a.example\nmanagedDomains: pec.a.example\n")
    r = run(pecctl, "verify", "--json", "--trust", ca, "--directory", ldif, msg)
    v = json.loads(r.stdout)
    assert r.returncode == 0 and v["directory_checked"] is True
    other = tmp_path / "other.ldif"
    other.write_text("providerCertificateHash: " + "0" * 40 + "\n")
    r = run(pecctl, "verify", "--json", "--trust", ca, "--directory", other, msg)
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "not-in-directory"

    # a second provider whose certificate is then revoked
    prov = tmp_path / "provider-r"
    run(pecctl, "pki", "issue", "--ca", pki["ca"], "--domain", "pec.a.example",
        "--out", prov, check=True)
    msg2 = sample(pec_sample, pki, tmp_path, prov / "signing.key", prov / "signing.pem",
                  "presa-in-carico")
    r = run(pecctl, "pki", "revoke", "--ca", pki["ca"], prov / "signing.pem")
    assert r.returncode == 0, r.stderr
    crl = pki["ca"] / "crl.pem"
    r = run(pecctl, "verify", "--json", "--trust", ca, "--crl", crl, msg2)
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "revoked"
    r = run(pecctl, "verify", "--json", "--trust", ca, "--crl", crl, msg)
    assert r.returncode == 0                                   # the first one is not revoked


def test_untrusted_and_tampered(pecctl, pec_sample, pki, tmp_path):
    msg = sample(pec_sample, pki, tmp_path)
    other_ca = tmp_path / "other-ca"
    run(pecctl, "pki", "ca", other_ca, check=True)
    r = run(pecctl, "verify", "--json", "--trust", other_ca / "ca.pem", msg)
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "untrusted"
    data = msg.read_bytes()
    i = data.index(b"Ricevuta di accettazione")
    bad = tmp_path / "bad.eml"
    bad.write_bytes(data[:i] + b"r" + data[i + 1:])
    r = run(pecctl, "verify", "--json", "--trust", pki["ca"] / "ca.pem", bad)
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "content-changed"


def bare_entity(raw):
    """The multipart/signed entity of a message without the outer header fields, as a list
    re-wrapper or a mail client's "save attachment" leaves it: its Content-Type field
    (folded lines included) and its body, byte for byte."""
    nl = b"\r\n" if b"\r\n" in raw[:200] else b"\n"
    head, body = raw.split(nl + nl, 1)
    field, keep = [], False
    for line in head.split(nl):
        if line[:1] in (b" ", b"\t"):
            if keep:
                field.append(line)
            continue
        keep = line.lower().startswith(b"content-type: multipart/signed")
        if keep:
            field.append(line)
    assert field, raw[:300]
    return nl.join(field) + nl + nl + body


@pytest.mark.parametrize("tipo,variant", [("posta-certificata", "breve"),
                                          ("avvenuta-consegna", "completa"),
                                          ("accettazione", None)])
def test_bare_signed_entity(pecctl, pec_sample, pki, tmp_path, tipo, variant):
    """Issue 17 item 7: the signed entity cut out of one of our envelopes or receipts is
    verified and typed by its daticert, and the output says the outer header fields are
    missing."""
    out = tmp_path / f"{tipo}.eml"
    args = ["--variant", variant] if variant else []
    run(pec_sample, "--key", pki["key"], "--chain", pki["chain"], "--domain", "pec.a.example",
        "--type", tipo, *args, "--out", out, check=True)
    ldif = tmp_path / "dir.ldif"
    ldif.write_text("dn: providerName=Gestore A,o=postacert\nobjectClass: provider\n"
                    f"providerName: Gestore A\nproviderCertificateHash: {pki['sha1']}\n"
                    "mailReceipt: ricevute@pec.a.example\nmanagedDomains: pec.a.example\n")
    trust = ["--trust", pki["ca"] / "ca.pem", "--directory", ldif]
    # the whole message: the outer header fields are there
    r = run(pecctl, "verify", "--json", *trust, out)
    v = json.loads(r.stdout)
    assert r.returncode == 0 and v["valid"] and v["type"] == tipo, v
    assert v["outer_headers"] is True and v["note"] is None
    # the bare entity: no From, no X-Trasporto/X-Ricevuta
    bare = tmp_path / f"{tipo}-bare.eml"
    bare.write_bytes(bare_entity(out.read_bytes()))
    head = bare.read_bytes().split(b"\n\n")[0].split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"content-type: multipart/signed")
    assert b"from:" not in head and b"x-trasporto" not in head and b"x-ricevuta" not in head
    r = run(pecctl, "verify", "--json", *trust, bare)
    b = json.loads(r.stdout)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert (b["type"], b["variant"], b["valid"], b["reason"]) == (tipo, variant, True, None), b
    assert b["outer_headers"] is False
    assert "outer header fields" in b["note"] and "missing" in b["note"]
    assert b["directory_checked"] is True and b["trust"] == "anchors"
    assert b["signer"]["sha1"] == v["signer"]["sha1"]
    assert b["daticert"] == v["daticert"]
    r = run(pecctl, "verify", *trust, bare)                       # the text form says it too
    assert r.returncode == 0 and "outer header fields" in r.stdout and tipo in r.stdout
    # changed after signing: invalid, untyped, its daticert still shown
    data = bare.read_bytes()
    i = data.index(b"multi-part message")
    bad = tmp_path / f"{tipo}-bare-bad.eml"
    bad.write_bytes(data[:i] + b"M" + data[i + 1:])
    r = run(pecctl, "verify", "--json", *trust, bad)
    x = json.loads(r.stdout)
    assert r.returncode == 1
    assert (x["type"], x["valid"], x["reason"], x["outer_headers"]) == \
        ("none", False, "content-changed", False), x
    assert x["daticert"]["tipo"] == tipo
