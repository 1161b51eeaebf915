"""RFC 4496 §4 use cases with the python3-milter test filter (milters/testfilter.py):
forbidden MIME types refused during the SMTP dialogue, and rerouting / address rewriting
(milter ADD_RCPT, DEL_RCPT, CHGFROM) honoured on ordinary mail — the delivered copies,
Return-Path and the relayed envelope change, the trace and the log say so — and refused
on PEC mail (logged, traced, the signed message delivered intact to its recipients only).
A PEC message refused or tempfailed by a callout during the dialogue is in the evidence
log ("callout-refused"), so `pecctl trace MESSAGE-ID` shows it."""
import smtplib

import pytest

from downstream import ALICE, Downstream, make_ca_and_cert, reports, submit, wait_reports
from milter_fixtures import TestFilter
from pec_providers import make_providers, pecctl, trasporto
from pecd_harness import free_port, message, password, queued_qid, unique_id
from test_pec_providers import assert_signed

BOB = "bob@example.test"


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    f = TestFilter(tmp_path_factory.mktemp("testfilter"))
    f.start()
    yield f
    f.stop()


def filter_conf(tf):
    return {"milter.test": {"socket": tf.socket, "phase": "incoming", "timeout": "5s"},
            "callouts": {"default": "antivirus, test"}}


@pytest.fixture(scope="module")
def inst(make_module_instance, tf):
    return make_module_instance(filter_conf(tf))


def send(inst, tid, hows=(), rcpts=(ALICE,), body=None):
    msg = message(tid, body=body)
    extra = "".join(f"X-Test-Milter: {h}\r\n" for h in hows).encode()
    msg = msg.replace(b"\r\n\r\n", b"\r\n" + extra + b"\r\n", 1)
    with inst.connect() as c:
        c.ehlo("client.example")
        assert c.mail_from("sender@client.test").startswith("250")
        for r in rcpts:
            assert c.cmd(f"RCPT TO:<{r}>").startswith("250")
        return c.data(msg)


def with_part(tid, ctype, filename):
    """A multipart message with one attachment (headers written by us, not by message())."""
    b = "b-" + tid
    return (f"Content-Type: multipart/mixed; boundary=\"{b}\"\r\nMIME-Version: 1.0\r\n",
            f"--{b}\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            f"--{b}\r\nContent-Type: {ctype}; name=\"{filename}\"\r\n"
            f"Content-Disposition: attachment; filename=\"{filename}\"\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAA\r\n"
            f"--{b}--\r\n")


def send_mime(inst, tid, ctype, filename):
    head, body = with_part(tid, ctype, filename)
    msg = message(tid, body=body).replace(b"\r\n\r\n", b"\r\n" + head.encode() + b"\r\n", 1)
    with inst.connect() as c:
        c.ehlo("client.example")
        assert c.mail_from("sender@client.test").startswith("250")
        assert c.cmd(f"RCPT TO:<{ALICE}>").startswith("250")
        return c.data(msg)


# ---- forbidden MIME types ----------------------------------------------------------

@pytest.mark.parametrize("ctype,filename", [("application/x-msdownload", "setup.bin"),
                                            ("application/octet-stream", "invoice.exe")])
def test_forbidden_mime_type_refused_at_end_of_data(inst, ctype, filename):
    tid = unique_id("mime")
    r = send_mime(inst, tid, ctype, filename)
    assert r.startswith("554 5.7.1 forbidden attachment type application/x-msdownload"), r
    assert inst.messages(ALICE, marker=tid) == []
    assert "test=reject" in inst.log(60)


def test_allowed_mime_type_passes(inst):
    tid = unique_id("pdf")
    queued_qid(send_mime(inst, tid, "application/pdf", "invoice.pdf"))
    [m] = inst.wait_messages(ALICE, marker=tid)
    assert m.header("OPES-Trace").endswith("test=accept")


# ---- rerouting and address rewriting on ordinary mail --------------------------------

def test_addrcpt_delivers_a_copy_to_the_added_recipient(inst):
    tid = unique_id("addrcpt")
    qid = queued_qid(send(inst, tid, [f"addrcpt:{BOB}"]))
    [a] = inst.wait_messages(ALICE, marker=tid)
    [b] = inst.wait_messages(BOB, marker=tid)
    assert b.header("Delivered-To") == BOB
    assert "test=accept+envelope" in b.header("OPES-Trace")
    assert f"{qid}: milter test: add recipient <{BOB}>" in inst.log(80)


def test_delrcpt_removes_a_recipient(inst):
    tid = unique_id("delrcpt")
    queued_qid(send(inst, tid, [f"delrcpt:{BOB}"], rcpts=(ALICE, BOB)))
    [a] = inst.wait_messages(ALICE, marker=tid)
    inst.wait_queue_empty()
    assert inst.messages(BOB, marker=tid) == []
    assert "test=accept+envelope" in a.header("OPES-Trace")


def test_delrcpt_of_every_recipient_discards(inst):
    tid = unique_id("delall")
    queued_qid(send(inst, tid, [f"delrcpt:{ALICE}"]))
    inst.wait_queue_empty()
    assert inst.messages(ALICE, marker=tid) == []


def test_chgfrom_changes_the_envelope_sender(inst):
    tid = unique_id("chgfrom")
    qid = queued_qid(send(inst, tid, ["chgfrom:bounces@client.test"]))
    [a] = inst.wait_messages(ALICE, marker=tid)
    assert a.header("Return-Path") == "<bounces@client.test>"
    assert f"{qid}: milter test: change sender to <bounces@client.test>" in inst.log(80)


@pytest.fixture
def relay(make_instance, tf, tmp_path):
    ca, crt, key = make_ca_and_cert(str(tmp_path))
    d = Downstream(free_port(), tls=(crt, key))
    d.start()
    conf = filter_conf(tf)
    conf["routes"] = {"remote.test": f"localhost:{d.port}"}
    conf["outbound"] = {"tls": "may", "ca_file": ca, "timeout": "10s"}
    yield make_instance(conf), d
    d.stop()


def test_relayed_envelope_follows_the_filter(relay):
    inst, d = relay
    tid = unique_id("relay")
    msg = message(tid, sender=ALICE, to="a@remote.test").replace(
        b"\r\n\r\n", b"\r\nX-Test-Milter: addrcpt:b@remote.test\r\n"
        b"X-Test-Milter: chgfrom:list-bounces@example.test\r\n\r\n", 1)
    submit(inst, ["a@remote.test"], msg)
    [m] = d.wait_messages(1)
    assert m["mail_from"] == "list-bounces@example.test"
    assert sorted(m["rcpts"]) == ["a@remote.test", "b@remote.test"]
    assert b"test=accept+envelope" in m["data"]


def test_access_control_at_rcpt(relay):
    """The filter refuses a recipient at RCPT (the filters run after DATA, where SMTP has one
    reply for all): the message goes to the others and the sender gets a non-delivery report
    with the filter's reply for that one; one refused with a 4xx: the whole message is
    deferred (451, the client retries it); all refused: 550."""
    inst, d = relay
    tid = unique_id("rcpt")
    submit(inst, ["a@remote.test", "reject-me@remote.test"],
           message(tid, sender=ALICE, to="a@remote.test"))
    [m] = d.wait_messages(1)
    assert m["rcpts"] == ["a@remote.test"]
    (rep,) = wait_reports(inst, ALICE)
    status = rep.get_payload()[1].as_string()
    assert "Final-Recipient: rfc822; reject-me@remote.test" in status
    assert "Action: failed" in status and "Status: 5.1.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user here" in status
    assert "a@remote.test" not in status.replace("reject-me@remote.test", "")
    inst.wait_queue_empty()
    assert len(reports(inst, ALICE)) == 1

    def data_reply(rcpts, tid):
        """The reply to the end of DATA of a submission by alice to rcpts."""
        with inst.connect("submission") as c:
            c.ehlo()
            c.starttls()
            c.ehlo()
            assert c.auth_plain(ALICE, password(ALICE)).startswith("235")
            assert c.mail_from(ALICE).startswith("250")
            for r in rcpts:
                assert c.cmd(f"RCPT TO:<{r}>").startswith("250")
            return c.data(message(unique_id(tid), sender=ALICE, to=rcpts[0]))

    r = data_reply(["b@remote.test", "tempfail-x@remote.test"], "rcpt4xx")
    assert r.startswith("451 "), r
    r = data_reply(["reject-me@remote.test"], "rcptall")
    assert r.startswith("550 5.1.1 no such user here"), r


# ---- PEC: envelope changes refused --------------------------------------------------

def pec_pair(tmp_path, tf):
    a, b, ca, directory = make_providers(tmp_path)
    a.write_config({"pec.b.test": b.ports["mx"]},
                   extra={"milter.test": {"socket": tf.socket, "phase": "incoming"},
                          "callouts": {"pec.a.test": "antivirus, test"}})
    b.write_config({"pec.a.test": a.ports["mx"]})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
        p.add_user("bruno")
    a.start()
    b.start()
    return a, b, ca, directory


def test_pec_envelope_changes_refused(tmp_path, tf):
    a, b, ca, directory = pec_pair(tmp_path, tf)
    try:
        msg = (b"From: <mario@pec.a.test>\r\nTo: <anna@pec.b.test>\r\nSubject: instradamento\r\n"
               b"Message-ID: <env-refused@client.test>\r\n"
               b"X-Test-Milter: addrcpt:bruno@pec.b.test\r\n"
               b"X-Test-Milter: delrcpt:anna@pec.b.test\r\n"
               b"X-Test-Milter: chgfrom:anna@pec.a.test\r\n\r\nTesto originale.\r\n")
        a.submit("mario", ["anna@pec.b.test"], msg)
        (env,) = b.wait_mail("anna", trasporto("posta-certificata"))
        assert_signed(b, *env[:2], ca, directory, "posta-certificata")
        assert b"Testo originale." in env[1]
        log = a.log(400)
        assert "envelope changes on PEC mail refused (3 ignored)" in log
        assert "test=accept+envelope-refused" in log
        a.wait_mail("mario", lambda m: (m.get("X-Ricevuta") or "") == "accettazione")
        assert b.mails("bruno") == []
        assert a.mails("anna") == []
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("how,code", [("reject", 550), ("tempfail", 451),
                                      ("reply:554 5.7.0 Not here", 554)])
def test_pec_refusal_in_the_evidence_log(tmp_path, tf, how, code):
    a, b, ca, directory = pec_pair(tmp_path, tf)
    try:
        mid = f"refused-{code}@client.test"
        msg = (f"From: <mario@pec.a.test>\r\nTo: <anna@pec.b.test>\r\nSubject: rifiutato\r\n"
               f"Message-ID: <{mid}>\r\nX-Test-Milter: {how}\r\n\r\nTesto.\r\n").encode()
        with pytest.raises(smtplib.SMTPDataError) as e:
            a.submit("mario", ["anna@pec.b.test"], msg)
        assert e.value.smtp_code == code
        t = pecctl("-c", a.conf, "trace", mid, check=False)
        assert t.returncode == 0, t.stdout + t.stderr
        assert "callout-refused" in t.stdout, t.stdout
        assert "mario@pec.a.test" in t.stdout and "anna@pec.b.test" in t.stdout, t.stdout
        assert f"test={'reject' if code != 451 else 'tempfail'}" in t.stdout, t.stdout
        assert str(code) in t.stdout, t.stdout
        assert b.mails("anna") == []
    finally:
        a.stop()
        b.stop()


# ---- the quarantine purge runs on ordinary (non-PEC) instances too -------------------

def test_quarantine_purged_on_a_non_pec_instance(make_instance, tf):
    import os
    import time
    conf = filter_conf(tf)
    conf["antivirus"] = {"quarantine_retention": "10d"}
    inst = make_instance(conf, start=False)
    q = os.path.join(inst.dir, "quarantine")
    old, today = "2001-01-01", time.strftime("%Y-%m-%d", time.gmtime())
    for day in (old, today):
        os.makedirs(os.path.join(q, day))
        with open(os.path.join(q, day, "OLDQID.eml"), "w") as f:
            f.write("x")
    inst.start()
    tid = unique_id("quar")
    queued_qid(send(inst, tid, ["quarantine"]))
    inst.wait_queue_empty()
    assert not os.path.exists(os.path.join(q, old))
    assert os.path.exists(os.path.join(q, today, "OLDQID.eml"))
    assert "quarantine: 1 days past retention removed" in inst.log(200)


# ---- {auth_type}: the SASL mechanism the client used ---------------------------------

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_type_macro_is_the_sasl_mechanism(inst, tf, mech):
    import base64
    tid = unique_id("auth" + mech)
    with inst.connect("submission") as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        if mech == "PLAIN":
            assert c.auth_plain(ALICE, password(ALICE)).startswith("235")
        else:
            b64 = lambda s: base64.b64encode(s.encode()).decode()
            assert c.cmd("AUTH LOGIN " + b64(ALICE)).startswith("334 ")
            assert c.cmd(b64(password(ALICE))).startswith("235")
        assert c.mail_from(ALICE).startswith("250")
        assert c.cmd(f"RCPT TO:<{BOB}>").startswith("250")
        queued_qid(c.data(message(tid, sender=ALICE, to=BOB)))
    inst.wait_messages(BOB, marker=tid)
    rec = [r for r in tf.records() if any(v == tid for k, v in r["headers"])][-1]
    assert rec["macros"].get("{auth_type}") == mech
    assert rec["macros"].get("{auth_authen}") == ALICE
