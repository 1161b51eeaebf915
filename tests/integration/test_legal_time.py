"""RFC 6109 §4.2 (issue 18 item 4): the times in receipts, envelopes and daticert are Italian
legal time (Europe/Rome, +0100 or +0200 in summer) whatever the time zone of the host: two
providers run with TZ=UTC, as in a container, and still write Rome's offset; `[pec]
timezone` names another zone (for tests)."""
import datetime
import email.utils
import re
import time
import xml.etree.ElementTree as ET
from zoneinfo import ZoneInfo

import pytest

from pec_providers import make_providers, ricevuta, trasporto


def daticert(msg):
    for p in msg.walk():
        if p.get_filename() == "daticert.xml":
            return ET.fromstring(p.get_payload(decode=True))
    raise AssertionError("no daticert.xml")


def offset_of(zone, when):
    off = datetime.datetime.fromtimestamp(when, ZoneInfo(zone)).utcoffset()
    m = int(off.total_seconds()) // 60
    return f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}{abs(m) % 60:02d}"


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")          # the host's zone: pecd must not use it
    a, b, ca, directory = make_providers(tmp_path)
    a.write_config({"pec.b.test": b.ports["mx"]})
    b.write_config({"pec.a.test": a.ports["mx"]}, extra={"pec": {"timezone": "Asia/Tokyo"}})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    a.start()
    b.start()
    yield a, b
    for p in (a, b):
        p.stop()


def test_receipts_carry_legal_time_whatever_the_hosts_zone(world):
    a, b = world
    before = time.time()
    a.submit("mario", ["anna@pec.b.test"],
             b"From: <mario@pec.a.test>\r\nTo: <anna@pec.b.test>\r\nSubject: ora legale\r\n"
             b"Message-ID: <ora@client.test>\r\n\r\nciao\r\n")
    (acc,) = a.wait_mail("mario", ricevuta("accettazione"))
    want = offset_of("Europe/Rome", before)
    assert want in ("+0100", "+0200")
    d = daticert(acc[2])
    data = d.find("dati/data")
    assert data.get("zona") == want, ET.tostring(d)
    # giorno and ora are Rome's wall clock at the time of the operation
    local = datetime.datetime.strptime(f"{data.findtext('giorno')} {data.findtext('ora')}",
                                       "%d/%m/%Y %H:%M:%S").replace(tzinfo=ZoneInfo("Europe/Rome"))
    assert abs(local.timestamp() - before) < 60, (local, before)
    # the Date field and the readable text say the same offset
    assert acc[2]["Date"].strip().endswith(want), acc[2]["Date"]
    assert email.utils.parsedate_to_datetime(acc[2]["Date"]).timestamp() == local.timestamp()
    text = acc[1].decode("utf-8", "replace")
    assert f"({want})" in text, text[:2000]
    # the envelope at B too
    (env,) = b.wait_mail("anna", trasporto("posta-certificata"))
    assert daticert(env[2]).find("dati/data").get("zona") == want
    # B names another zone: its presa in carico and delivery receipt follow it
    (rec,) = a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    assert daticert(rec[2]).find("dati/data").get("zona") == "+0900"
    assert rec[2]["Date"].strip().endswith("+0900")


class Timex(__import__("ctypes").Structure):
    """struct timex of <sys/timex.h> (x86_64), for adjtimex(2)."""
    import ctypes as _c
    _fields_ = [("modes", _c.c_uint), ("offset", _c.c_long), ("freq", _c.c_long),
                ("maxerror", _c.c_long), ("esterror", _c.c_long), ("status", _c.c_int),
                ("constant", _c.c_long), ("precision", _c.c_long), ("tolerance", _c.c_long),
                ("time_sec", _c.c_long), ("time_usec", _c.c_long), ("tick", _c.c_long),
                ("ppsfreq", _c.c_long), ("jitter", _c.c_long), ("shift", _c.c_int),
                ("stabil", _c.c_long), ("jitcnt", _c.c_long), ("calcnt", _c.c_long),
                ("errcnt", _c.c_long), ("stbcnt", _c.c_long), ("tai", _c.c_int),
                ("pad", _c.c_int * 11)]


def test_start_says_whether_the_clock_is_synchronised(world):
    """RFC 6109 §4.1 (issue 18 item 5): pecd reads the kernel's clock state at start and
    logs it; an unsynchronised clock is an error naming the fix."""
    import ctypes
    import ctypes.util
    a, b = world
    tx = Timex()
    rc = ctypes.CDLL(ctypes.util.find_library("c")).adjtimex(ctypes.byref(tx))
    log = a.log(400)
    if rc == 5 or tx.status & 0x40:          # TIME_ERROR, STA_UNSYNC
        assert "error: the system clock is NOT synchronised" in log, log
        assert "run chrony" in log
    else:
        assert "the system clock is synchronised" in log, log
