"""Milter callouts wired into pecd (issue 8): the incoming phase with the python3-milter
test filter (reject, tempfail, discard, quarantine, reply codes, header and body changes,
envelope facts as macros), the filter's default when it is down, consent off, the trace
header; and on PEC mail: the outgoing phase with a real opendkim signing our envelopes
and receipts (verified with dkimpy), a body change refused on PEC content."""
import glob
import os

import pytest

from milter_fixtures import OpenDKIM, TestFilter, have_opendkim
from pec_providers import make_providers, ricevuta, trasporto
from pecd_harness import message, queued_qid, unique_id
from test_pec_providers import assert_signed


def milter_conf(sock, default="tempfail", consent="antivirus, test"):
    return {"milter.test": {"socket": sock, "phase": "incoming", "default": default,
                            "timeout": "5s"},
            "callouts": {"default": consent}}


def send(inst, how, tid, rcpt="alice@example.test"):
    msg = message(tid).replace(b"\r\n\r\n", f"\r\nX-Test-Milter: {how}\r\n\r\n".encode(), 1)
    with inst.connect() as c:
        c.ehlo("client.example")
        assert c.mail_from("sender@client.test").startswith("250")
        assert c.cmd(f"RCPT TO:<{rcpt}>").startswith("250")
        return c.data(msg)


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    f = TestFilter(tmp_path_factory.mktemp("testfilter"))
    f.start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def inst(make_module_instance, tf):
    return make_module_instance(milter_conf(tf.socket))


@pytest.mark.parametrize("how,want", [
    ("reject", "550 5.7.1 "),
    ("tempfail", "451 4.7.1 "),
    ("reply:554 5.7.0 Go away, spammer", "554 5.7.0 Go away, spammer"),
])
def test_refusals(inst, how, want):
    tid = unique_id("ref")
    r = send(inst, how, tid)
    assert r.startswith(want), r
    assert inst.messages("alice@example.test", marker=tid) == []


def test_discard_answers_250_and_drops(inst):
    tid = unique_id("disc")
    queued_qid(send(inst, "discard", tid))
    assert "discarded" in inst.log(50)
    queued_qid(send(inst, "accept", unique_id("after")))     # the session goes on
    inst.wait_queue_empty()
    assert inst.messages("alice@example.test", marker=tid) == []


def test_addheader_and_trace_and_macros(inst, tf):
    tid = unique_id("add")
    qid = queued_qid(send(inst, "addheader", tid))
    [m] = inst.wait_messages("alice@example.test", marker=tid)
    assert m.header("X-Test-Added") == "yes, by testfilter"
    assert "test=accept+changed" in m.header("OPES-Trace")
    rec = [r for r in tf.records() if any(v == tid for k, v in r["headers"])][-1]
    mac = rec["macros"]
    assert mac.get("i") == qid
    assert mac.get("{client_addr}") == "127.0.0.1"
    assert mac.get("{daemon_name}") == "mx"
    assert rec["helo"] == "client.example"
    assert rec["mail_from"].strip("<>") == "sender@client.test"


def test_body_replaced_on_ordinary_mail(inst):
    tid = unique_id("body")
    queued_qid(send(inst, "replbody", tid))
    [m] = inst.wait_messages("alice@example.test", marker=tid)
    assert m.data.endswith(b"\r\n\r\nreplaced by testfilter\r\n"), m.data


def test_quarantine_holds_the_message(inst):
    tid = unique_id("quar")
    qid = queued_qid(send(inst, "quarantine", tid))
    inst.wait_queue_empty()
    assert inst.messages("alice@example.test", marker=tid) == []
    files = glob.glob(os.path.join(inst.dir, "quarantine", "*", f"{qid}.info"))
    assert files and "held by testfilter" in open(files[0]).read()


def test_consent_off_filter_not_called(make_instance, tf):
    inst = make_instance(milter_conf(tf.socket, consent="antivirus"))
    before = len(tf.records())
    tid = unique_id("noconsent")
    queued_qid(send(inst, "reject", tid))
    [m] = inst.wait_messages("alice@example.test", marker=tid)
    assert len(tf.records()) == before
    assert m.header("OPES-Trace") is None
    # one recipient's policy is enough (RFC 3238 §2.1: one-party consent)
    conf = milter_conf(tf.socket, consent="antivirus")
    conf["callouts"]["bob@example.test"] = "test"
    inst2 = make_instance(conf)
    r = send(inst2, "reject", unique_id("bob"), rcpt="bob@example.test")
    assert r.startswith("550 "), r


@pytest.mark.parametrize("default,want", [("tempfail", "451 4.7.1 "), ("accept", "250 "),
                                          ("reject", "550 5.7.1 ")])
def test_filter_down_default(make_instance, default, want):
    from pecd_harness import free_port
    inst = make_instance(milter_conf(f"inet:{free_port()}@127.0.0.1", default=default))
    r = send(inst, "accept", unique_id("down"))
    assert r.startswith(want), r


# ---- PEC: outgoing DKIM signing, signed content protected ------------------------

@pytest.fixture
def pec_pair(tmp_path):
    if not have_opendkim():
        pytest.skip("opendkim not installed")
    a, b, ca, directory = make_providers(tmp_path)
    dk_a = OpenDKIM(tmp_path / "dkim-a", domain="pec.a.test", selector="pec").start()
    dk_b = OpenDKIM(tmp_path / "dkim-b", domain="pec.b.test", selector="pec").start()
    tf = TestFilter(tmp_path / "tf").start()
    yield a, b, ca, directory, dk_a, dk_b, tf
    for p in (a, b):
        p.stop()
    for d in (dk_a, dk_b, tf):
        d.stop()


def dkim_conf(dk, domain):
    return {"milter.dkim": {"socket": dk.socket, "phase": "outgoing", "timeout": "10s"},
            "callouts": {domain: "antivirus, dkim"}}


def test_pec_outgoing_dkim_and_body_change_refused(pec_pair):
    a, b, ca, directory, dk_a, dk_b, tf = pec_pair
    conf_a = dkim_conf(dk_a, "pec.a.test")
    conf_a["milter.test"] = {"socket": tf.socket, "phase": "incoming"}
    conf_a["callouts"]["pec.a.test"] = "antivirus, dkim, test"
    a.write_config({"pec.b.test": b.ports["mx"]}, extra=conf_a)
    b.write_config({"pec.a.test": a.ports["mx"]}, extra=dkim_conf(dk_b, "pec.b.test"))
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    a.start()
    b.start()
    msg = (b"From: <mario@pec.a.test>\r\nTo: <anna@pec.b.test>\r\nSubject: firmata\r\n"
           b"Message-ID: <dkim-test@client.test>\r\nX-Test-Milter: replbody\r\n\r\n"
           b"Testo originale.\r\n")
    a.submit("mario", ["anna@pec.b.test"], msg)
    # our envelope leaves A signed by opendkim and still a valid PEC envelope
    (env,) = b.wait_mail("anna", trasporto("posta-certificata"))
    assert env[2]["DKIM-Signature"] is not None
    assert "d=pec.a.test" in env[2]["DKIM-Signature"].replace(" ", "")
    raw = env[1]
    assert dk_a.verify(raw), "envelope DKIM"
    assert_signed(b, *env[:2], ca, directory, "posta-certificata")
    # the body change asked for at the access point was refused: content intact
    assert b"Testo originale." in raw and b"replaced by testfilter" not in raw
    assert "change refused" in a.log(400)
    assert "test=change-refused" in a.log(400)
    # B's receipts to A leave B signed by B's opendkim
    (pic,) = a.wait_mail("posta-certificata", ricevuta("presa-in-carico"))
    assert dk_b.verify(pic[1]), "presa-in-carico DKIM"
    (cons,) = a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    assert dk_b.verify(cons[1]), "avvenuta-consegna DKIM"
    assert_signed(a, *cons[:2], ca, directory, "avvenuta-consegna")
