"""Every message type built by src/pec, checked by independent tools:
Python's email package, `openssl cms -verify` / `openssl smime -verify`,
xmllint against the RFC's DTD, and `pecctl verify --json`."""
import email
import email.policy
import json

import pytest

from pec_helpers import DTD, run

TYPES = [
    ("posta-certificata", "completa", None, "POSTA CERTIFICATA: ", True),
    ("posta-certificata", "breve", None, "POSTA CERTIFICATA: ", True),
    ("errore", None, None, "ANOMALIA MESSAGGIO: ", False),
    ("accettazione", None, None, "ACCETTAZIONE: ", True),
    ("non-accettazione", None, "altro", "AVVISO DI NON ACCETTAZIONE: ", True),
    ("non-accettazione", None, "virus", "AVVISO DI NON ACCETTAZIONE PER VIRUS: ", True),
    ("presa-in-carico", None, None, "PRESA IN CARICO: ", True),
    ("avvenuta-consegna", "completa", None, "CONSEGNA: ", True),
    ("avvenuta-consegna", "breve", None, "CONSEGNA: ", True),
    ("avvenuta-consegna", "sintetica", None, "CONSEGNA: ", True),
    ("errore-consegna", None, "no-dest", "AVVISO DI MANCATA CONSEGNA: ", True),
    ("errore-consegna", None, "virus", "AVVISO DI MANCATA CONSEGNA PER VIRUS: ", True),
    ("preavviso-errore-consegna", None, "altro",
     "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ", True),
    ("rilevazione-virus", None, "virus", "PROBLEMA DI SICUREZZA: ", True),
]


def build(pec_sample, pki, tmp_path, tipo, variant, errore):
    out = tmp_path / f"{tipo}-{variant}-{errore}.eml"
    args = [pec_sample, "--key", pki["key"], "--chain", pki["chain"],
            "--domain", "pec.a.example", "--type", tipo, "--out", out]
    if variant:
        args += ["--variant", variant]
    if errore:
        args += ["--errore", errore]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("tipo,variant,errore,prefix,has_xml", TYPES)
def test_message(pecctl, pec_sample, pki, tmp_path, tipo, variant, errore, prefix, has_xml):
    path = build(pec_sample, pki, tmp_path, tipo, variant, errore)
    raw = path.read_bytes()
    assert b"\n" not in raw.replace(b"\r\n", b"")      # CRLF only

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.defects == []
    assert msg["Subject"].startswith(prefix)
    if tipo in ("posta-certificata", "errore"):
        assert msg["X-Trasporto"] == tipo
        assert msg["From"].addresses[0].display_name == "Per conto di: mario.rossi@pec.a.example"
        assert msg["From"].addresses[0].addr_spec == "posta-certificata@pec.a.example"
    else:
        assert msg["X-Ricevuta"] == tipo
        assert msg["From"] == "posta-certificata@pec.a.example"
    assert msg.get_content_type() == "multipart/signed"
    assert msg.get_param("protocol") == "application/pkcs7-signature"
    assert msg.get_param("micalg") == "sha-256"
    signed, sig = msg.get_payload()
    assert sig.get_content_type() == "application/pkcs7-signature"
    assert sig.get_filename() == "smime.p7s"
    assert signed.get_content_type() == "multipart/mixed"
    names = [p.get_filename() for p in signed.iter_parts()]
    assert ("daticert.xml" in names) == has_xml
    with_original = tipo in ("posta-certificata", "errore") or variant in ("completa", "breve")
    assert any(p.get_content_type() == "message/rfc822" for p in signed.iter_parts()) == with_original

    # the signature, by the openssl command line, both front ends
    ca = pki["ca"] / "ca.pem"
    r = run("openssl", "cms", "-verify", "-CAfile", ca, "-in", path, "-out", "/dev/null")
    assert r.returncode == 0, r.stderr
    r = run("openssl", "smime", "-verify", "-CAfile", ca, "-in", path, "-out", "/dev/null")
    assert r.returncode == 0, r.stderr

    if has_xml:
        xml = next(p for p in signed.iter_parts() if p.get_filename() == "daticert.xml")
        data = xml.get_payload(decode=True)
        assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
        x = tmp_path / "daticert.xml"
        x.write_bytes(data)
        r = run("xmllint", "--noout", "--dtdvalid", DTD, x)
        assert r.returncode == 0, r.stderr

    r = run(pecctl, "verify", "--json", "--trust", ca, path)
    assert r.returncode == 0, r.stdout + r.stderr
    v = json.loads(r.stdout)
    assert v["valid"] is True and v["reason"] is None
    assert v["type"] == tipo
    assert v["signer"]["email"] == "posta-certificata@pec.a.example"
    assert v["trust"] == "anchors"
    if tipo == "avvenuta-consegna" or tipo == "posta-certificata":
        assert v["variant"] == variant
    if has_xml:
        assert v["daticert"]["tipo"] == tipo
        assert v["daticert"]["mittente"] == "mario.rossi@pec.a.example"
        kinds = {d["indirizzo"]: d["tipo"] for d in v["daticert"]["destinatari"]}
        assert kinds["luca@ordinaria.example"] == "esterno"
    else:
        assert v["daticert"] is None


def test_breve_attachment_replaced(pec_sample, pki, tmp_path):
    path = build(pec_sample, pki, tmp_path, "avvenuta-consegna", "breve", None)
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    signed, _ = msg.get_payload()
    orig = next(p for p in signed.iter_parts() if p.get_content_type() == "message/rfc822")
    inner = orig.get_payload()[0]
    names = [p.get_filename() for p in inner.iter_parts()]
    assert "contratto.pdf.hash" in names and "contratto.pdf" not in names
    h = next(p for p in inner.iter_parts() if p.get_filename() == "contratto.pdf.hash")
    value = h.get_content().strip()
    assert len(value) == 40 and all(c in "0123456789abcdef" for c in value)
