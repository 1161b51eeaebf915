"""Outbound delivery (issue 5): a next hop that drops the connection in the middle of DATA,
a restart of pecd with deferred relay mail in its queue, and delay notifications
(RFC 3461 NOTIFY=DELAY, [queue] delay_warning).

The next hops are the aiosmtpd server of downstream.py and, for the disconnects, a small
raw-socket SMTP server (aiosmtpd cannot drop a connection in the middle of DATA)."""
import re
import socket
import threading
import time

import pytest

from downstream import Downstream, reports, submit, wait_log, wait_reports
from pecd_harness import free_port, message, unique_id

ALICE = "alice@example.test"
RETRY = {"retry_min": "1s", "retry_max": "2s"}


# ----------------------------------------------------------------------------- raw next hop

class RawNextHop:
    """A plaintext SMTP server on 127.0.0.1:port (no STARTTLS, no PIPELINING) whose
    behaviour during DATA is scripted per connection:

    - "drop-mid-data": reply 354, read part of the message, then close the connection
      without a reply;
    - "drop-after-dot": read the whole message, then close without the final reply;
    - "accept": read the whole message and reply 250.
    The list `data_modes` is consumed one entry per DATA; when one entry is left it is
    used for every later transaction.  RCPT for an address in `refuse` gets a 550.
    `sessions` records, per connection, each command verb with its arrival time."""

    def __init__(self, port, data_modes, refuse=()):
        self.port = port
        self.data_modes = list(data_modes)
        self.refuse = set(refuse)
        self.sessions = []
        self.accepted = []       # whole messages that got a 250
        self.dropped = []        # what had arrived when the connection was dropped
        self.transactions = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()

    def _next_mode(self):
        with self.lock:
            self.transactions += 1
            return self.data_modes.pop(0) if len(self.data_modes) > 1 else self.data_modes[0]

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        conn.settimeout(10)
        f = conn.makefile("rb")
        verbs = []
        with self.lock:
            self.sessions.append(verbs)

        def send(line):
            conn.sendall(line.encode() + b"\r\n")

        try:
            send("220 mx.raw.test ESMTP raw")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line.strip().split(b" ", 1)[0].upper()
                verbs.append((verb.decode(errors="replace"), time.monotonic()))
                if verb == b"EHLO":
                    send("250-mx.raw.test")
                    send("250-8BITMIME")
                    send("250 ENHANCEDSTATUSCODES")
                elif verb in (b"HELO", b"RSET", b"NOOP"):
                    send("250 2.0.0 OK")
                elif verb == b"MAIL":
                    send("250 2.1.0 OK")
                elif verb == b"RCPT":
                    addr = line.strip()[8:].split(b">")[0].lstrip(b"<").decode()
                    send("550 5.1.1 no such user" if addr in self.refuse else "250 2.1.5 OK")
                elif verb == b"QUIT":
                    send("221 2.0.0 Bye")
                    return
                elif verb == b"DATA":
                    mode = self._next_mode()
                    send("354 go ahead")
                    if mode == "drop-mid-data":
                        got = f.readline() + f.readline()   # a little of the header
                        with self.lock:
                            self.dropped.append(got)
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    data = b""
                    while True:
                        l = f.readline()
                        if not l:
                            return
                        if l == b".\r\n":
                            break
                        data += l[1:] if l.startswith(b".") else l
                    if mode == "drop-after-dot":
                        with self.lock:
                            self.dropped.append(data)
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    with self.lock:
                        self.accepted.append(data)
                    send("250 2.0.0 OK accepted")
                else:
                    send("502 5.5.1 unknown")
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def wait_accepted(self, n=1, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.accepted) >= n:
                    return list(self.accepted)
            time.sleep(0.05)
        raise AssertionError(f"next hop accepted {len(self.accepted)} messages, wanted {n} "
                             f"({self.transactions} transactions)")


def log_lines(inst, pattern):
    return [l for l in inst.log(tail=100000).splitlines() if re.search(pattern, l)]


def wait_log_count(inst, pattern, n, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = log_lines(inst, pattern)
        if len(got) >= n:
            return got
        time.sleep(0.1)
    raise AssertionError(f"log has {len(log_lines(inst, pattern))} lines /{pattern}/, wanted {n}:"
                         f"\n{inst.log(tail=40)}")


def plain_relay_instance(make_instance, port, extra=None):
    conf = {
        "routes": {"remote.test": f"127.0.0.1:{port}"},
        "outbound": {"tls": "may", "timeout": "10s"},
        "queue": dict(RETRY),
    }
    for k, v in (extra or {}).items():
        conf.setdefault(k, {}).update(v)
    return make_instance(conf=conf)


# ----------------------------------------------------------------------------- mid-DATA

@pytest.mark.parametrize("mode", ["drop-mid-data", "drop-after-dot"])
def test_disconnect_during_data_defers_then_delivers(make_instance, mode):
    hop = RawNextHop(free_port(), [mode, "accept"])
    try:
        inst = plain_relay_instance(make_instance, hop.port)
        tid = unique_id("middata")
        qid = submit(inst, ["a@remote.test"], message(tid, sender=ALICE, to="a@remote.test"))
        got = hop.wait_accepted(1)
        assert len(hop.dropped) == 1, "the first attempt was cut off"
        assert tid.encode() in got[0]
        # the message was whole on the second attempt (the body's last line arrived)
        assert got[0].endswith(b"Second line.\r\n"), got[0][-80:]
        inst.wait_queue_empty()
        deferred = log_lines(inst, rf"{qid}: to=<a@remote\.test> status=deferred")
        sent = log_lines(inst, rf"{qid}: to=<a@remote\.test> status=sent")
        assert len(deferred) == 1 and len(sent) == 1, (deferred, sent)
        assert " 4." in deferred[0] or "(4." in deferred[0], deferred[0]   # a temporary failure
        time.sleep(2.5)   # > retry_max: no further attempt
        assert len(hop.accepted) == 1 and hop.transactions == 2
        assert reports(inst, ALICE) == [], "a retried message needs no notification"
    finally:
        hop.stop()


# ----------------------------------------------------------------------------- RSET

def test_reused_connection_reset_only_when_a_transaction_is_open(make_instance):
    """A connection kept for the next message gets RSET after a transaction left open
    (every recipient refused, so no DATA), not after one that ended with the reply to its
    message; one that sat idle for a second or more is probed with RSET before reuse."""
    hop = RawNextHop(free_port(), ["accept"], refuse={"nobody@remote.test"})
    try:
        inst = plain_relay_instance(make_instance, hop.port)
        q1 = submit(inst, ["nobody@remote.test"],
                    message(unique_id("refused"), sender=ALICE, to="nobody@remote.test"))
        wait_log_count(inst, rf"{q1}: to=<nobody@remote\.test> status=bounced", 1)
        submit(inst, ["a@remote.test"], message(unique_id("second"), sender=ALICE,
                                                to="a@remote.test"))
        hop.wait_accepted(1)
        submit(inst, ["b@remote.test"], message(unique_id("third"), sender=ALICE,
                                                to="b@remote.test"))
        hop.wait_accepted(2)
        inst.wait_queue_empty()
        assert len(hop.sessions) == 1, [[v for v, _ in s] for s in hop.sessions]
        s = hop.sessions[0]
        verbs = [v for v, _ in s]
        assert verbs[:4] == ["EHLO", "MAIL", "RCPT", "RSET"], verbs   # the refused one
        mails = [i for i, v in enumerate(verbs) if v == "MAIL"]
        assert len(mails) == 3, verbs
        prev, nxt = mails[1], mails[2]
        between = verbs[prev:nxt]
        # from the second message's DATA to the next command: how long the connection idled
        gap = s[prev + 3][1] - s[prev + 2][1]
        if gap < 0.8:
            assert "RSET" not in between, (verbs, gap)
        elif gap > 1.3:
            assert between[-1] == "RSET", (verbs, gap)   # the idle probe
    finally:
        hop.stop()


# ----------------------------------------------------------------------------- restart

def test_restart_with_deferred_relay_queue(make_instance):
    """The next hop is down; pecd stops and starts again with the message deferred; the
    retries go on after the restart; once the hop is up the message arrives exactly once."""
    port = free_port()
    inst = plain_relay_instance(make_instance, port)
    tid = unique_id("restart")
    qid = submit(inst, ["a@remote.test"], message(tid, sender=ALICE, to="a@remote.test"))
    pat = rf"{qid}: to=<a@remote\.test> status=deferred"
    wait_log_count(inst, pat, 1)
    assert inst.stop() == 0
    before = len(log_lines(inst, pat))
    assert any(qid in l for l in inst.queue_lines()), "deferred message kept in the queue"

    inst.start()
    wait_log(inst, "1 messages resumed")
    # retries resume after the restart, on the back-off schedule (retry_min 1s, max 2s)
    t0 = time.monotonic()
    wait_log_count(inst, pat, before + 3, timeout=15)
    assert time.monotonic() - t0 >= 1.5, "retries are spaced by the back-off"
    hop = Downstream(port)
    hop.start()
    try:
        got = hop.wait_messages(1, timeout=15)
        inst.wait_queue_empty()
        time.sleep(3)     # > retry_max: a duplicate would show by now
        assert len(hop.script.messages) == 1
        assert tid.encode() in got[0]["data"]
        assert got[0]["rcpts"] == ["a@remote.test"]
        assert len(log_lines(inst, rf"{qid}: to=<a@remote\.test> status=sent")) == 1
        assert reports(inst, ALICE) == []
    finally:
        hop.stop()


def test_restart_keeps_the_retry_schedule(make_instance):
    """Issue 5: 'retries resume on schedule'.  A message deferred with retry_min = 30s
    must not be retried a second after a restart (Postfix keeps a deferred message's
    next-attempt time across restarts)."""
    port = free_port()     # nothing listens: the next hop is down
    inst = plain_relay_instance(make_instance, port,
                                extra={"queue": {"retry_min": "30s", "retry_max": "1m"}})
    qid = submit(inst, ["a@remote.test"],
                 message(unique_id("schedule"), sender=ALICE, to="a@remote.test"))
    pat = rf"{qid}: to=<a@remote\.test> status=deferred"
    wait_log_count(inst, pat, 1)
    assert inst.stop() == 0
    inst.start()
    wait_log(inst, "1 messages resumed")
    time.sleep(4)
    got = log_lines(inst, pat)
    assert len(got) == 1, ("retried at once after the restart instead of ~30s after the "
                           "first attempt:\n" + "\n".join(got))


def test_restart_keeps_per_recipient_results(make_instance):
    """One recipient accepted, one deferred; after a restart only the deferred one is
    retried, and nothing is lost."""
    hop = Downstream(free_port())
    hop.script.rcpt_replies["later@remote.test"] = ["451 4.3.0 not now"]
    hop.start()
    try:
        inst = plain_relay_instance(make_instance, hop.port)
        tid = unique_id("restart-partial")
        qid = submit(inst, ["ok@remote.test", "later@remote.test"],
                     message(tid, sender=ALICE, to="ok@remote.test"))
        wait_log(inst, f"{qid}: to=<ok@remote.test> status=sent")
        wait_log(inst, f"{qid}: to=<later@remote.test> status=deferred")
        assert inst.stop() == 0
        n_before = len(hop.script.messages)
        assert n_before == 1 and hop.script.messages[0]["rcpts"] == ["ok@remote.test"]
        hop.script.rcpt_replies["later@remote.test"] = ["250 2.1.5 OK"]
        inst.start()
        got = hop.wait_messages(2)
        inst.wait_queue_empty()
        time.sleep(2.5)
        assert [m["rcpts"] for m in hop.script.messages] == [["ok@remote.test"],
                                                             ["later@remote.test"]]
        assert all(tid.encode() in m["data"] for m in got)
    finally:
        hop.stop()


# ----------------------------------------------------------------------------- DELAY

def test_delay_notification_sent_once(make_instance):
    hop = Downstream(free_port())
    hop.script.rcpt_replies["slow@remote.test"] = ["451 4.2.0 mailbox busy, try later"]
    hop.start()
    try:
        inst = plain_relay_instance(make_instance, hop.port,
                                    extra={"queue": {"delay_warning": "2s"}})
        tid = unique_id("delay")
        qid = submit(inst, ["slow@remote.test"], message(tid, sender=ALICE, to="slow@remote.test"),
                     rcpt_params={"slow@remote.test": "NOTIFY=DELAY,FAILURE"})
        (rep,) = wait_reports(inst, ALICE)
        assert rep["From"].startswith("Mail Delivery System <MAILER-DAEMON@")
        assert rep.get_content_type() == "multipart/report"
        assert rep.get_param("report-type") == "delivery-status"
        parts = rep.get_payload()
        assert parts[1].get_content_type() == "message/delivery-status"
        text = parts[1].as_string()
        assert "Final-Recipient: rfc822; slow@remote.test" in text, text
        assert "Action: delayed" in text, text
        assert re.search(r"Status: 4\.\d+\.\d+", text), text
        assert "451 4.2.0 mailbox busy" in text, text
        assert tid.encode() in rep.as_bytes() or tid in rep.as_string()
        (mail,) = inst.messages(ALICE)
        assert mail.header("Return-Path") == "<>"
        # more retries, still one warning
        n = len(log_lines(inst, rf"{qid}: to=<slow@remote\.test> status=deferred"))
        wait_log_count(inst, rf"{qid}: to=<slow@remote\.test> status=deferred", n + 2)
        assert len(reports(inst, ALICE)) == 1
        # the warning is recorded in the spool: a restart does not send it again
        assert inst.stop() == 0
        inst.start()
        wait_log_count(inst, rf"{qid}: to=<slow@remote\.test> status=deferred", n + 4)
        assert len(reports(inst, ALICE)) == 1
        # delivered at last: no success notification (not asked for)
        hop.script.rcpt_replies["slow@remote.test"] = ["250 2.1.5 OK"]
        hop.wait_messages(1)
        inst.wait_queue_empty()
        time.sleep(1)
        assert len(inst.messages(ALICE)) == 1
    finally:
        hop.stop()


def test_no_delay_notification_without_notify_delay(make_instance):
    hop = Downstream(free_port())
    hop.script.rcpt_replies["slow@remote.test"] = ["451 4.2.0 mailbox busy, try later"]
    hop.start()
    try:
        inst = plain_relay_instance(make_instance, hop.port,
                                    extra={"queue": {"delay_warning": "2s"}})
        qid = submit(inst, ["slow@remote.test"],
                     message(unique_id("nodelay"), sender=ALICE, to="slow@remote.test"))
        # default NOTIFY (FAILURE only): deferred past delay_warning, and no warning
        wait_log_count(inst, rf"{qid}: to=<slow@remote\.test> status=deferred", 4, timeout=20)
        assert inst.messages(ALICE) == []
    finally:
        hop.stop()
