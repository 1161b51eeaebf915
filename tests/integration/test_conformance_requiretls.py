"""REQUIRETLS and TLS-Required (RFC 8689) through the PEC roles (issue 17).

The access point re-originates the user's message as a transport envelope; RFC 8689 §6 asks
such a mediator to carry the user's TLS requirement over, and §4.2/§5 to tell her when it
cannot be met:

- submitted with MAIL … REQUIRETLS to an external (non-PEC) address whose next hop offers no
  STARTTLS: the envelope is not delivered there, the sender gets a report with 5.7.10;
- the same with a next hop that offers STARTTLS and REQUIRETLS: MAIL carries REQUIRETLS;
- the receipts the recipient's provider makes for such an envelope (presa in carico, the
  completa delivery receipt that holds the original) leave it with REQUIRETLS too;
- "TLS-Required: No" in the submitted message goes into the envelope's header and relaxes
  the external domain's TLS policy; never the TLS between PEC providers (RFC 6109 §5.3).

The next hops are aiosmtpd servers (downstream.py) that record every MAIL parameter."""
import os
import time
from email import message_from_bytes, policy

import pytest

from downstream import Downstream
from pec_providers import make_providers, pecctl, ricevuta, trasporto
from pecd_harness import free_port


def message(frm, to, subject, extra=""):
    return (f"From: <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((frm, to, subject)))}@client.test>\r\n{extra}"
            f"\r\nRiservato.\r\n").encode()


def is_report(m):
    return m.get_content_type() == "multipart/report"


@pytest.fixture
def world(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    a.write_config({"pec.b.test": b.ports["mx"]})
    b.write_config({"pec.a.test": a.ports["mx"]})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    servers = []

    def downstream(tls=False, requiretls=False):
        """A next hop on loopback; with tls, a certificate for localhost from the test CA
        (the one every provider's [outbound] ca_file trusts)."""
        pair = None
        if tls:
            out = str(tmp_path / f"hop{len(servers)}")
            pecctl("pki", "issue", "--ca", ca, "--domain", "plain.test", "--out", out,
                   "--name", "Hop", "--tls-host", "localhost")
            pair = (os.path.join(out, "tls.pem"), os.path.join(out, "tls.key"))
        d = Downstream(free_port(), tls=pair)
        d.script.requiretls = requiretls
        d.start()
        servers.append(d)
        return d

    yield a, b, downstream
    for p in (a, b):
        p.stop()
    for d in servers:
        d.stop()


def nothing_arrives(d, seconds=4.0):
    end = time.time() + seconds
    while time.time() < end:
        assert d.script.messages == [], d.script.messages
        time.sleep(0.2)


def test_requiretls_to_an_external_hop_without_starttls_reports_5_7_10(world):
    a, b, downstream = world
    ext = downstream(tls=False)
    a.write_config({"pec.b.test": b.ports["mx"], "plain.test": ext.port},
                   extra={"tls_policy": {"plain.test": "may"}})
    a.start()
    a.submit("mario", ["x@plain.test"], message("mario@pec.a.test", "x@plain.test", "riservato"),
             mail_options=["REQUIRETLS"])
    a.wait_mail("mario", ricevuta("accettazione"))
    (rep,) = a.wait_mail("mario", is_report, timeout=30)
    report = message_from_bytes(rep[1], policy=policy.default)
    status = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    assert status, rep[1][:2000]
    text = rep[1].decode(errors="replace")
    assert "Status: 5.7.10" in text and "x@plain.test" in text, text[:3000]
    # the report itself is about her envelope, headers only (RFC 8689 §5: RET=HDRS)
    assert "text/rfc822-headers" in text and "Riservato." not in text
    nothing_arrives(ext, 1.0)


def test_requiretls_reaches_a_capable_external_hop_with_the_parameter(world):
    a, b, downstream = world
    ext = downstream(tls=True, requiretls=True)
    a.write_config({"pec.b.test": b.ports["mx"], "plain.test": ext.port},
                   extra={"tls_policy": {"plain.test": "may"}})
    a.start()
    a.submit("mario", ["x@plain.test"], message("mario@pec.a.test", "x@plain.test", "cifrato"),
             mail_options=["REQUIRETLS"])
    (got,) = ext.wait_messages(1, timeout=30)
    assert got["tls"] and "REQUIRETLS" in got["mail_options"], got["mail_options"]
    assert b"X-Trasporto: posta-certificata" in got["data"]
    # without REQUIRETLS from her, the envelope goes without it
    a.submit("mario", ["x@plain.test"], message("mario@pec.a.test", "x@plain.test", "normale"))
    got = ext.wait_messages(2, timeout=30)
    assert "REQUIRETLS" not in got[1]["mail_options"], got[1]["mail_options"]


def test_receipts_of_a_requiretls_envelope_leave_with_requiretls(world):
    """B's receipts for an envelope that reached it with REQUIRETLS (the presa in carico, and
    the completa delivery receipt, which carries her original) go with REQUIRETLS. B's route
    to pec.a.test is a recording next hop that offers STARTTLS and REQUIRETLS."""
    a, b, downstream = world
    a_mx = downstream(tls=True, requiretls=True)
    b.write_config({"pec.a.test": a_mx.port})
    a.start()
    b.start()
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", "anna@pec.b.test", "con requiretls"),
             mail_options=["REQUIRETLS"])
    b.wait_mail("anna", trasporto("posta-certificata"))
    got = a_mx.wait_messages(2, timeout=30)       # presa in carico + avvenuta consegna
    kinds = {}
    for g in got:
        m = message_from_bytes(g["data"], policy=policy.compat32)
        kinds[(m.get("X-Ricevuta") or "").strip()] = g
    assert set(kinds) == {"presa-in-carico", "avvenuta-consegna"}, list(kinds)
    for k, g in kinds.items():
        assert g["tls"] and "REQUIRETLS" in g["mail_options"], (k, g["mail_options"])
    assert b"postacert.eml" in kinds["avvenuta-consegna"]["data"]   # completa: the original
    # the same exchange without REQUIRETLS: the receipts go without it
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", "anna@pec.b.test", "senza requiretls"))
    got = a_mx.wait_messages(4, timeout=30)
    for g in got[2:]:
        assert "REQUIRETLS" not in g["mail_options"], g["mail_options"]


def test_tls_required_no_goes_into_the_envelope(world):
    """RFC 8689 §3, §6: her "TLS-Required: No" is carried in the envelope's header, so the
    external domain's TLS policy (here verify) is waived for it: it reaches a next hop
    without STARTTLS."""
    a, b, downstream = world
    ext = downstream(tls=False)
    a.write_config({"pec.b.test": b.ports["mx"], "plain.test": ext.port},
                   extra={"tls_policy": {"plain.test": "verify"}})
    a.start()
    a.submit("mario", ["x@plain.test"],
             message("mario@pec.a.test", "x@plain.test", "segnalazione",
                     extra="TLS-Required: No\r\n"))
    (got,) = ext.wait_messages(1, timeout=30)
    assert not got["tls"]
    env = message_from_bytes(got["data"], policy=policy.compat32)
    assert env["X-Trasporto"].strip() == "posta-certificata"
    assert env.get_all("TLS-Required") == ["No"], env.get_all("TLS-Required")
    # without the header field, the policy holds: nothing goes in cleartext
    a.submit("mario", ["x@plain.test"], message("mario@pec.a.test", "x@plain.test", "normale"))
    nothing_arrives_after = len(ext.script.messages)
    time.sleep(3)
    assert len(ext.script.messages) == nothing_arrives_after
    assert "status=deferred" in a.log(400)


def test_tls_required_no_does_not_lower_tls_between_providers(world):
    """RFC 6109 §5.3 requires TLS between PEC providers: TLS-Required: No (which waives the
    recipient domain's policy) does not let an envelope go to another provider in cleartext."""
    a, b, downstream = world
    fake_b = downstream(tls=False)     # pec.b.test's MX, without STARTTLS
    a.write_config({"pec.b.test": fake_b.port})
    a.start()
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", "anna@pec.b.test", "tra gestori",
                     extra="TLS-Required: No\r\n"))
    a.wait_mail("mario", ricevuta("accettazione"))
    nothing_arrives(fake_b, 4.0)
    assert "status=deferred" in a.log(400), a.log(60)
