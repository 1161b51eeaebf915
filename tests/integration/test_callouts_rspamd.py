"""Spam filtering with a real rspamd through its milter interface (RFC 4496 §4, issue 8):
rspamd's proxy worker in milter mode scanning itself, offline (milter_fixtures.Rspamd),
as `[milter.rspamd] phase = incoming` on the plain mx listener with consent on.
A message carrying the GTUBE pattern is refused at the end of DATA with rspamd's own
5xx reply and nothing is delivered; a clean message passes, traced as rspamd's work."""
import pytest

from milter_fixtures import GTUBE, Rspamd, have_rspamd
from pecd_harness import message, queued_qid, unique_id


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    if not have_rspamd():
        pytest.skip("rspamd not installed (scripts/install-deps)")
    r = Rspamd(tmp_path_factory.mktemp("rspamd")).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def inst(make_module_instance, rspamd):
    return make_module_instance({
        "milter.rspamd": {"socket": rspamd.socket, "phase": "incoming", "default": "tempfail",
                          "timeout": "30s"},
        "callouts": {"default": "antivirus, rspamd"}})


def send(inst, body_line, tid):
    msg = message(tid).replace(b"\r\n\r\n", b"\r\n\r\n" + body_line.encode() + b"\r\n", 1)
    with inst.connect() as c:
        c.ehlo("client.example")
        assert c.mail_from("sender@client.test").startswith("250")
        assert c.cmd("RCPT TO:<alice@example.test>").startswith("250")
        return c.data(msg)


def test_gtube_refused_with_rspamds_reply(inst, rspamd):
    tid = unique_id("gtube")
    r = send(inst, GTUBE, tid)
    assert r.startswith("5"), r
    assert "Gtube pattern" in r, r          # rspamd's own reply text, not ours
    assert inst.messages("alice@example.test", marker=tid) == []
    log = inst.log(80)
    assert "milter rspamd: reject" in log
    assert "rspamd=reject" in log
    assert "GTUBE" in rspamd.log_text() or "Gtube" in rspamd.log_text()


def test_clean_message_passes_traced(inst, rspamd):
    tid = unique_id("clean")
    qid = queued_qid(send(inst, "Just a normal message about lunch.", tid))
    [m] = inst.wait_messages("alice@example.test", marker=tid)
    trace = m.header("OPES-Trace")
    assert trace is not None and "rspamd=accept" in trace, trace
    assert f"{qid}: callouts: " in inst.log(80)
    assert "dns req: 0" in rspamd.log_text()     # scanned offline
