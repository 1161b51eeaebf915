"""Antivirus callout against a real clamd (clamd_fixture.py) on a plain (non-PEC)
pecd: clean mail passes with an OPES-Trace header, a virus gets 554 5.7.1 naming it,
a scanner that is down gives 451 4.7.1 and queues nothing, fail_open accepts unscanned
with a warning, over clamd's StreamMaxLength gives 552 5.3.4."""
import time

import pytest

from clamd_fixture import EICAR, PECMAIL_VIRUS, Clamd, clamd, require_clamd  # noqa: F401
from pecd_harness import message, queued_qid, tcp_nodelay_of, unique_id


def av_conf(addr, **extra):
    conf = {"antivirus": {"clamd": addr, "timeout": "5s", "pool_size": "2"}}
    conf["antivirus"].update(extra)
    return conf


def send(inst, msg, rcpt="alice@example.test"):
    with inst.connect() as c:
        c.ehlo()
        assert c.mail_from("sender@client.test").startswith("250")
        assert c.cmd(f"RCPT TO:<{rcpt}>").startswith("250")
        return c.data(msg)


def test_clean_mail_passes_with_trace(make_instance, clamd):
    inst = make_instance(av_conf(clamd.unix))
    tid = unique_id("clean")
    qid = queued_qid(send(inst, message(tid)))
    [m] = inst.wait_messages("alice@example.test", marker=tid)
    assert m.header("OPES-Trace") is not None
    assert "antivirus=clean" in m.header("OPES-Trace")
    assert f"{qid}: callouts: antivirus=clean" in inst.log()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_eicar_refused_with_554(make_instance, clamd, transport):
    inst = make_instance(av_conf(getattr(clamd, transport)))
    tid = unique_id("eicar")
    body = b"Here it is:\r\n" + EICAR + b"\r\n"
    r = send(inst, message(tid, body=body))
    assert r.startswith("554 5.7.1 "), r
    assert "Eicar-Signature" in r
    assert inst.queue_is_empty()
    assert inst.messages("alice@example.test", marker=tid) == []


def test_custom_signature_in_base64_attachment(make_instance, clamd):
    import base64
    inst = make_instance(av_conf(clamd.unix))
    tid = unique_id("b64")
    att = base64.encodebytes(b"prefix " + PECMAIL_VIRUS + b" suffix").replace(b"\n", b"\r\n")
    body = (b"MIME-Version: 1.0\r\n")
    msg = message(tid).replace(b"\r\n\r\n", b"\r\nMIME-Version: 1.0\r\n"
                               b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n", 1)
    msg += (b"--BB\r\nContent-Type: text/plain\r\n\r\nhi\r\n--BB\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=x.bin\r\n\r\n" + att + b"--BB--\r\n")
    del body
    r = send(inst, msg)
    assert r.startswith("554 5.7.1 ") and "Pecmail-Test-Virus" in r, r


def test_many_messages_reuse_the_pool(make_instance, clamd):
    inst = make_instance(av_conf(clamd.tcp))
    with inst.connect() as c:
        c.ehlo()
        for i in range(10):
            tid = unique_id(f"pool{i}")
            qid = c.send_mail("sender@client.test", ["alice@example.test"], message(tid))
            assert qid
    inst.wait_messages("alice@example.test", count=10)
    # the pooled connections send without waiting for Nagle (a chunk, then the end marker)
    kept = tcp_nodelay_of(inst.proc.pid, remote_port=clamd.port)
    assert kept and all(kept), kept


def test_scanner_down_tempfails_and_queues_nothing(make_instance, tmp_path):
    require_clamd()
    c = Clamd(tmp_path / "down")
    c.start()
    inst = make_instance(av_conf(c.unix))
    tid = unique_id("ok")
    queued_qid(send(inst, message(tid)))
    c.stop()
    tid = unique_id("down")
    r = send(inst, message(tid))
    assert r.startswith("451 4.7.1 "), r
    time.sleep(0.5)
    assert inst.messages("alice@example.test", marker=tid) == []
    inst.wait_queue_empty()


def test_fail_open_accepts_unscanned_with_warning(make_instance, tmp_path):
    inst = make_instance(av_conf(f"unix:{tmp_path}/no-such.sock", fail_open="yes"))
    tid = unique_id("open")
    queued_qid(send(inst, message(tid)))
    [m] = inst.wait_messages("alice@example.test", marker=tid)
    assert "antivirus=unscanned" in m.header("OPES-Trace")
    assert "UNSCANNED" in inst.log()


def test_over_stream_max_length_552(make_instance, tmp_path):
    require_clamd()
    c = Clamd(tmp_path / "small", stream_max="20K")
    c.start()
    try:
        inst = make_instance(av_conf(c.unix))
        tid = unique_id("big")
        body = (b"x" * 70 + b"\r\n") * 600     # ~43 KB
        r = send(inst, message(tid, body=body))
        assert r.startswith("552 5.3.4 "), r
        # the pool survives: a small message right after is scanned
        queued_qid(send(inst, message(unique_id("small"))))
    finally:
        c.stop()


def test_consent_off_skips_antivirus(make_instance, clamd):
    conf = av_conf(clamd.unix)
    conf["callouts"] = {"default": "none"}
    inst = make_instance(conf)
    tid = unique_id("noconsent")
    r = send(inst, message(tid, body=EICAR + b"\r\n"))
    assert r.startswith("250 "), r
    [m] = inst.wait_messages("alice@example.test", marker=tid)
    assert m.header("OPES-Trace") is None
