"""The milter client library (src/filters/milter*.c) against real filters,
through tests/unit/milter_probe: opendkim signs and dkimpy verifies; each
behaviour of the python3-milter test filter; the macros a filter sees;
refused recipients; a filter that is down or silent gives MILTER_FAILED fast.
"""
import os
import socket
import subprocess
import threading
import time

import pytest

from milter_fixtures import OpenDKIM, TestFilter
from pecd_harness import BUILD, free_port

PROBE = os.path.join(BUILD, "tests", "unit", "milter_probe")

MSG = (b"From: Sender <sender@example.test>\r\n"
       b"To: <rcpt@dest.test>\r\n"
       b"Subject: a folded\r\n\tsubject line\r\n"
       b"Date: Mon, 1 Jan 2024 10:00:00 +0100\r\n"
       b"Message-ID: <m1@example.test>\r\n"
       b"\r\n"
       b"Hello,\r\n\r\nthe body.\r\n")


@pytest.fixture(scope="module", autouse=True)
def probe_built():
    if not os.access(PROBE, os.X_OK):
        pytest.fail(f"{PROBE} not built (cmake --build BUILD --target milter_probe)",
                    pytrace=False)


def probe(tmp_path, sock, msg=MSG, args=(), timeout=30):
    """Runs milter_probe; returns (fields dict, list of lines, resulting message or None)."""
    src, out = tmp_path / "in.eml", tmp_path / "out.eml"
    src.write_bytes(msg)
    if out.exists():
        out.unlink()
    r = subprocess.run([PROBE, "--out", str(out), *args, sock, str(src)], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    fields = {}
    for line in lines:
        k, _, v = line.partition(": ")
        fields.setdefault(k, v)
    return fields, lines, out.read_bytes() if out.exists() else None


def with_header(value):
    return MSG.replace(b"\r\n\r\n", b"\r\nX-Test-Milter: " + value.encode() + b"\r\n\r\n", 1)


# ---- opendkim -------------------------------------------------------------------------

@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple"])
def test_opendkim_signature_verifies(tmp_path, canon):
    with OpenDKIM(tmp_path / "dkim", "example.test", "sel1", canon) as dk:
        f, lines, out = probe(tmp_path, dk.socket, args=["--from", "sender@example.test"])
        assert f["action"] == "accept", lines
        assert f["apply"] == "ok"
        assert out.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=" + canon.encode())
        assert out.endswith(MSG), "everything else is kept byte for byte"
        assert dk.verify(out)
        assert not dk.verify(out.replace(b"the body.", b"the body!")), "tampering is seen"
        # a DKIM signature is the kind of change a signed PEC takes
        f, _, out2 = probe(tmp_path, dk.socket, args=["--pec", "--from", "sender@example.test"])
        assert f["apply"] == "ok" and dk.verify(out2)


def test_opendkim_large_body(tmp_path):
    body = b"".join(b"line %06d of a long body that takes several chunks\r\n" % i
                    for i in range(6000))   # ~330 kB: six BODY packets
    msg = MSG.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + body
    with OpenDKIM(tmp_path / "dkim", "example.test", "big") as dk:
        f, _, out = probe(tmp_path, dk.socket, msg=msg)
        assert f["action"] == "accept"
        assert dk.verify(out)


# ---- the test filter ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def testfilter(tmp_path_factory):
    with TestFilter(tmp_path_factory.mktemp("testfilter")) as tf:
        yield tf


@pytest.mark.parametrize("how,action,code,reply", [
    ("accept", "accept", "0", ""),
    ("reject", "reject", "550", "550 5.7.1 Command rejected"),
    ("tempfail", "tempfail", "451", "451 4.7.1 Service unavailable - try again later"),
    ("discard", "discard", "0", ""),
    ("reply:554 5.7.1 Message refused by policy", "reject", "554",
     "554 5.7.1 Message refused by policy"),
    ("reply:452 4.3.1 Come back later", "tempfail", "452", "452 4.3.1 Come back later"),
])
def test_testfilter_verdicts(tmp_path, testfilter, how, action, code, reply):
    f, lines, out = probe(tmp_path, testfilter.socket, msg=with_header(how))
    assert f["action"] == action, lines
    assert f["code"] == code
    assert f["reply"] == reply


def test_testfilter_addheader(tmp_path, testfilter):
    msg = with_header("addheader")
    f, _, out = probe(tmp_path, testfilter.socket, msg=msg)
    assert f["action"] == "accept"
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.endswith(b"\r\nX-Test-Added: yes, by testfilter")
    assert out == msg.replace(b"\r\n\r\n", b"\r\nX-Test-Added: yes, by testfilter\r\n\r\n", 1)
    f, _, _ = probe(tmp_path, testfilter.socket, msg=msg, args=["--pec"])
    assert f["apply"] == "ok", "a new X- field is fine on a signed PEC"


def test_testfilter_chgheader(tmp_path, testfilter):
    msg = with_header("chgheader")
    f, _, out = probe(tmp_path, testfilter.socket, msg=msg)
    assert f["action"] == "accept"
    assert b"Subject: changed by testfilter\r\nDate:" in out
    assert b"folded" not in out, "the whole folded field is replaced"
    f, _, out = probe(tmp_path, testfilter.socket, msg=msg, args=["--pec"])
    assert f["apply"].startswith("refused: signed PEC: refused milter change CHGHEADER Subject")
    assert out is None


def test_testfilter_replbody(tmp_path, testfilter):
    f, _, out = probe(tmp_path, testfilter.socket, msg=with_header("replbody"))
    assert f["action"] == "accept"
    assert out.endswith(b"X-Test-Milter: replbody\r\n\r\nreplaced by testfilter\r\n")
    f, _, _ = probe(tmp_path, testfilter.socket, msg=with_header("replbody"), args=["--pec"])
    assert "REPLBODY" in f["apply"]


def test_testfilter_quarantine(tmp_path, testfilter):
    f, _, out = probe(tmp_path, testfilter.socket, msg=with_header("quarantine"))
    assert f["action"] == "quarantine"
    assert f["quarantine"] == "held by testfilter"


def test_testfilter_macros(tmp_path, testfilter):
    n = len(testfilter.records())
    f, _, _ = probe(tmp_path, testfilter.socket, args=[
        "--ip", "192.0.2.10", "--port", "41234", "--name", "client.example", "--helo", "helo.example",
        "--tls", "TLSv1.3", "--cipher", "TLS_AES_256_GCM_SHA384", "--auth", "user@example.test",
        "--queue-id", "QID42", "--hostname", "mx.example.test", "--daemon", "mx",
        "--from", "sender@example.test", "--rcpt", "one@dest.test", "--rcpt", "two@dest.test"])
    assert f["action"] == "accept"
    rec = testfilter.records()[n]
    m = rec["macros"]
    assert m["{client_addr}"] == "192.0.2.10"
    assert m["{client_port}"] == "41234"
    assert m["_"] == "client.example [192.0.2.10]"
    assert m["j"] == "mx.example.test"
    assert m["{daemon_name}"] == "mx"
    assert m["i"] == "QID42"
    assert m["{tls_version}"] == "TLSv1.3"
    assert m["{cipher}"] == "TLS_AES_256_GCM_SHA384"
    assert m["{auth_authen}"] == "user@example.test"
    assert m["{auth_type}"] == "PLAIN"
    assert m["{mail_addr}"] == "sender@example.test"
    assert m["{rcpt_addr}"] == "two@dest.test"
    assert rec["connect"][0] == "client.example"
    assert rec["connect"][2] == ["192.0.2.10", 41234]
    assert rec["helo"] == "helo.example"
    assert rec["mail_from"] == "<sender@example.test>"
    assert rec["rcpts"] == ["<one@dest.test>", "<two@dest.test>"]
    assert ["Subject", "a folded\n\tsubject line"] in rec["headers"]
    assert rec["body_len"] == len(MSG.split(b"\r\n\r\n", 1)[1])


def test_testfilter_refused_recipient(tmp_path, testfilter):
    n = len(testfilter.records())
    f, lines, _ = probe(tmp_path, testfilter.socket, args=[
        "--rcpt", "ok@dest.test", "--rcpt", "reject-me@dest.test", "--rcpt", "tempfail-x@dest.test"])
    assert f["action"] == "accept"
    refused = [line for line in lines if line.startswith("refused: ")]
    assert refused == ["refused: 1 550 550 5.1.1 no such user here",
                       "refused: 2 451 451 4.7.1 Service unavailable - try again later"]
    assert testfilter.records()[n]["rcpts"] == ["<ok@dest.test>"]
    f, _, _ = probe(tmp_path, testfilter.socket, args=["--rcpt", "reject-a@dest.test",
                                                       "--rcpt", "reject-b@dest.test"])
    assert f["action"] == "reject"
    assert f["reply"] == "550 5.1.1 no such user here"


def test_testfilter_local_mail(tmp_path, testfilter):
    n = len(testfilter.records())
    f, _, _ = probe(tmp_path, testfilter.socket, args=["--ip", "", "--from", ""])
    assert f["action"] == "accept"
    rec = testfilter.records()[n]
    assert rec["mail_from"] == "<>"
    assert "{client_addr}" not in rec["macros"]


def test_testfilter_no_reply_steps(tmp_path):
    with TestFilter(tmp_path / "nr", noreply=True) as tf:
        f, _, out = probe(tmp_path, tf.socket, msg=with_header("addheader"))
        assert f["action"] == "accept"
        assert b"X-Test-Added" in out
        assert tf.records()[0]["helo"] == "client.probe.test"
        assert len(tf.records()[0]["headers"]) == 6


# ---- a filter that is not there, or says nothing ---------------------------------------------

def test_filter_down_fails_fast(tmp_path):
    t0 = time.monotonic()
    f, _, out = probe(tmp_path, f"inet:{free_port()}@127.0.0.1")
    assert f["action"] == "failed"
    assert "connect" in f["err"]
    assert time.monotonic() - t0 < 2.0
    assert out == MSG, "nothing to apply: the message unchanged"


def test_filter_silent_times_out(tmp_path):
    port = free_port()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    held = []
    t = threading.Thread(target=lambda: held.append(srv.accept()[0]), daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        f, _, _ = probe(tmp_path, f"inet:127.0.0.1:{port}", args=["--timeout", "300"])
        dt = time.monotonic() - t0
        assert f["action"] == "failed"
        assert "timed out" in f["err"]
        assert dt < 2.0, dt
    finally:
        t.join(2)
        for c in held:
            c.close()
        srv.close()
