"""Outbound delivery (issue 5, first part): an authenticated user's mail to another domain is
relayed over SMTP to the next hop of a static route, recipients grouped per transaction, with
DSN parameters kept, per-recipient results, TLS policies and REQUIRETLS (RFC 8689), and
RFC 3464 notifications back to the sender. The next hop is a scriptable aiosmtpd server."""
import os
import time

import pytest

from downstream import Downstream, make_ca_and_cert, reports, submit, wait_log, wait_reports
from pecd_harness import free_port, message, tcp_nodelay_of, unique_id

ALICE = "alice@example.test"


@pytest.fixture
def pki(tmp_path):
    return make_ca_and_cert(str(tmp_path))


@pytest.fixture
def downstream(request, pki):
    ca, crt, key = pki
    tls = getattr(request, "param", True)
    d = Downstream(free_port(), tls=(crt, key) if tls else None)
    d.start()
    yield d
    d.stop()


def relay_instance(make_instance, downstream, pki, policy="may", extra=None):
    conf = {
        "routes": {"remote.test": f"localhost:{downstream.port}"},
        "outbound": {"tls": policy, "ca_file": pki[0], "timeout": "10s"},
    }
    for k, v in (extra or {}).items():
        conf.setdefault(k, {}).update(v)
    return make_instance(conf=conf)


def test_relay_groups_recipients_and_keeps_dsn_parameters(make_instance, downstream, pki):
    inst = relay_instance(make_instance, downstream, pki, policy="verify")
    tid = unique_id("relay")
    submit(inst, ["a@remote.test", "b@remote.test"], message(tid, sender=ALICE, to="a@remote.test"),
           mail_params="RET=HDRS ENVID=env+2B1",
           rcpt_params={"a@remote.test": "NOTIFY=FAILURE,DELAY ORCPT=rfc822;A@remote.test"})
    got = downstream.wait_messages(1)
    m = got[0]
    assert m["mail_from"] == ALICE
    assert sorted(m["rcpts"]) == ["a@remote.test", "b@remote.test"]   # one transaction
    assert m["tls"], "policy verify: the relay used TLS"
    opts = " ".join(m["mail_options"])
    assert "RET=HDRS" in opts and "ENVID=env+2B1" in opts, opts
    ropts = dict(zip(m["rcpts"], m["rcpt_options"]))
    assert "NOTIFY=FAILURE,DELAY" in ropts["a@remote.test"]
    assert "ORCPT=rfc822;A@remote.test" in ropts["a@remote.test"]
    assert tid.encode() in m["data"]
    assert b"Received: from client.test" in m["data"]
    inst.wait_queue_empty()


def test_unauthenticated_relay_is_refused(make_instance, downstream, pki):
    inst = relay_instance(make_instance, downstream, pki)
    with inst.connect("mx") as c:
        c.ehlo()
        assert c.mail_from("x@client.test") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<a@remote.test>") == "550 5.7.1 <a@remote.test>: Relay access denied"


def test_per_recipient_results_bounce_and_retry(make_instance, downstream, pki):
    inst = relay_instance(make_instance, downstream, pki)
    s = downstream.script
    s.rcpt_replies["gone@remote.test"] = ["550 5.1.1 <gone@remote.test>: no such user"]
    s.rcpt_replies["later@remote.test"] = ["451 4.3.0 try again later", "250 2.1.5 OK"]
    tid = unique_id("partial")
    submit(inst, ["ok@remote.test", "gone@remote.test", "later@remote.test"],
           message(tid, sender=ALICE, to="ok@remote.test"))
    got = downstream.wait_messages(2)
    assert got[0]["rcpts"] == ["ok@remote.test"]
    assert got[1]["rcpts"] == ["later@remote.test"], "only the deferred recipient is retried"
    # the permanent failure is reported to alice, once, as an RFC 3464 report
    (rep,) = wait_reports(inst, ALICE)
    assert rep["From"].startswith("Mail Delivery System <MAILER-DAEMON@")
    parts = rep.get_payload()
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    text = status.as_string()
    assert "Final-Recipient: rfc822; gone@remote.test" in text
    assert "Action: failed" in text and "Status: 5.1.1" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 <gone@remote.test>: no such user" in text
    assert "ok@remote.test" not in text and "later@remote.test" not in text
    assert parts[2].get_content_type() == "message/rfc822"     # RET=FULL is the default
    inst.wait_queue_empty()
    assert len(reports(inst, ALICE)) == 1
    assert inst.messages(ALICE)[0].header("Return-Path") == "<>"


@pytest.mark.parametrize("downstream", [False], indirect=True)
def test_tls_required_but_not_offered_defers(make_instance, downstream, pki):
    inst = relay_instance(make_instance, downstream, pki, policy="encrypt")
    submit(inst, ["a@remote.test"], message(unique_id("enc"), sender=ALICE, to="a@remote.test"))
    wait_log(inst, "TLS is required (policy encrypt) but localhost does not offer STARTTLS")
    assert downstream.script.messages == []
    assert len(inst.queue_lines()) >= 1 and "a@remote.test" in inst.queue_lines()[0]


@pytest.mark.parametrize("downstream", [False], indirect=True)
def test_tls_required_no_header_relaxes_policy(make_instance, downstream, pki):
    inst = relay_instance(make_instance, downstream, pki, policy="encrypt")
    msg = message(unique_id("tlsno"), sender=ALICE, to="a@remote.test")
    msg = msg.replace(b"X-Test-Id:", b"TLS-Required: No\r\nX-Test-Id:", 1)
    submit(inst, ["a@remote.test"], msg)
    got = downstream.wait_messages(1)
    assert not got[0]["tls"]


def test_requiretls_needs_the_next_hop_to_offer_it(make_instance, downstream, pki):
    inst = relay_instance(make_instance, downstream, pki, policy="may")
    tid = unique_id("rtls")
    submit(inst, ["a@remote.test"], message(tid, sender=ALICE, to="a@remote.test"),
           mail_params="REQUIRETLS")
    (rep,) = wait_reports(inst, ALICE)
    text = rep.get_payload()[1].as_string()
    assert "Status: 5.7.30" in text, text
    # RFC 8689 §5: the bounce returns the header only, whatever RET says
    assert rep.get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert downstream.script.messages == []
    inst.wait_queue_empty()


def test_requiretls_relayed_when_offered_after_verified_tls(make_instance, downstream, pki):
    downstream.script.requiretls = True
    inst = relay_instance(make_instance, downstream, pki, policy="may")
    submit(inst, ["a@remote.test"], message(unique_id("rtls-ok"), sender=ALICE, to="a@remote.test"),
           mail_params="REQUIRETLS")
    got = downstream.wait_messages(1)
    assert got[0]["tls"]
    assert "REQUIRETLS" in got[0]["mail_options"]


def test_requiretls_with_untrusted_certificate_bounces(make_instance, downstream, pki, tmp_path):
    downstream.script.requiretls = True
    os.makedirs(tmp_path / "other")
    other_ca = make_ca_and_cert(str(tmp_path / "other"))[0]    # not the downstream's CA
    conf_pki = (other_ca, pki[1], pki[2])
    inst = relay_instance(make_instance, downstream, conf_pki, policy="may")
    submit(inst, ["a@remote.test"], message(unique_id("rtls-bad"), sender=ALICE, to="a@remote.test"),
           mail_params="REQUIRETLS")
    (rep,) = wait_reports(inst, ALICE)
    assert "Status: 5.7.10" in rep.get_payload()[1].as_string()
    assert downstream.script.messages == []


def test_success_notification_when_asked(make_instance, downstream, pki):
    inst = relay_instance(make_instance, downstream, pki)
    submit(inst, ["a@remote.test"], message(unique_id("succ"), sender=ALICE, to="a@remote.test"),
           rcpt_params={"a@remote.test": "NOTIFY=SUCCESS"})
    downstream.wait_messages(1)
    (rep,) = wait_reports(inst, ALICE)
    assert "Action: delivered" in rep.get_payload()[1].as_string()   # the next hop does DSN


def test_no_notification_for_never_or_null_sender(make_instance, downstream, pki):
    s = downstream.script
    s.rcpt_replies["gone@remote.test"] = ["550 5.1.1 no such user"]
    inst = relay_instance(make_instance, downstream, pki)
    submit(inst, ["gone@remote.test"], message(unique_id("never"), sender=ALICE, to="gone@remote.test"),
           rcpt_params={"gone@remote.test": "NOTIFY=NEVER"})
    inst.wait_queue_empty()
    wait_log(inst, "status=bounced")
    assert reports(inst, ALICE) == []


def test_lmtp_route_gives_one_reply_per_recipient(make_instance):
    """A route "lmtp:HOST:PORT" speaks LMTP (RFC 2033): LHLO, and after the data one reply
    per recipient, so one recipient can fail while the other is delivered."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.lmtp import LMTP
    from downstream import wait_reports

    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            got.append((list(envelope.rcpt_tos), envelope.original_content))
            return "\r\n".join("550 5.2.2 mailbox full" if r.startswith("full") else "250 2.0.0 stored"
                               for r in envelope.rcpt_tos)

    class LmtpController(Controller):
        def factory(self):
            return LMTP(self.handler, hostname="lmtp.remote.test")

    port = free_port()
    ctl = LmtpController(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        inst = make_instance(conf={"routes": {"store.test": f"lmtp:127.0.0.1:{port}"},
                                   "tls_policy": {"store.test": "none"}})
        submit(inst, ["ok@store.test", "full@store.test"],
               message(unique_id("lmtp"), sender=ALICE, to="ok@store.test"))
        (rep,) = wait_reports(inst, ALICE)
        text = rep.get_payload()[1].as_string()
        assert "Final-Recipient: rfc822; full@store.test" in text and "Status: 5.2.2" in text
        assert "ok@store.test" not in text
        assert got and sorted(got[0][0]) == ["full@store.test", "ok@store.test"]
        inst.wait_queue_empty()
    finally:
        ctl.stop()


def test_queue_lifetime_bounces_with_5_4_7(make_instance):
    """A recipient still deferred when [queue] lifetime is over fails, and the sender is told."""
    port = free_port()       # nothing listens there: every attempt is a temporary failure
    inst = make_instance(conf={"routes": {"remote.test": f"127.0.0.1:{port}"},
                               "outbound": {"tls": "may", "timeout": "5s"},
                               "queue": {"retry_min": "1s", "retry_max": "1s", "lifetime": "3s"}})
    submit(inst, ["a@remote.test"], message(unique_id("expire"), sender=ALICE, to="a@remote.test"))
    (rep,) = wait_reports(inst, ALICE)
    text = rep.get_payload()[1].as_string()
    assert "Status: 5.4.7" in text and "Action: failed" in text, text
    assert "delivery time expired" in text
    inst.wait_queue_empty()


def test_no_notification_about_a_notification(make_instance, downstream, pki):
    """A message from the null reverse-path that fails for good is not bounced (no loops)."""
    downstream.script.rcpt_replies["gone@remote.test"] = ["550 5.1.1 no such user"]
    inst = relay_instance(make_instance, downstream, pki,
                          extra={"mx": {"relay_networks": "127.0.0.0/8"}})
    with inst.connect("mx") as c:
        c.ehlo()
        assert c.mail_from("") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<gone@remote.test>") == "250 2.1.5 Recipient OK"
        assert c.data(message(unique_id("null"), to="gone@remote.test")).startswith("250 ")
    wait_log(inst, "status=bounced")
    inst.wait_queue_empty()
    assert "sender notification" not in inst.log(tail=2000)


def test_requiretls_bounce_is_relayed_without_requiretls_where_not_offered(make_instance, downstream, pki):
    """RFC 8689 §5: the notification about a REQUIRETLS message carries REQUIRETLS where the
    next hop offers it, and is not held back where it does not; it returns headers only."""
    downstream.script.rcpt_replies["gone@remote.test"] = ["550 5.1.1 no such user"]
    inst = relay_instance(make_instance, downstream, pki, policy="may",
                          extra={"mx": {"relay_networks": "127.0.0.0/8"}})
    downstream.script.requiretls = True
    # a REQUIRETLS message from a remote sender; its recipient fails at the next hop
    with inst.connect("mx") as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        assert c.mail_from("sender@remote.test", "REQUIRETLS") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<gone@remote.test>") == "250 2.1.5 Recipient OK"
        assert c.data(message(unique_id("rbounce"), sender="sender@remote.test",
                              to="gone@remote.test")).startswith("250 ")
    got = downstream.wait_messages(1)          # the bounce, relayed to the sender's domain
    bounce = got[0]
    assert bounce["mail_from"] == "" and bounce["rcpts"] == ["sender@remote.test"]
    assert "REQUIRETLS" in bounce["mail_options"]
    assert b"text/rfc822-headers" in bounce["data"]
    # the same next hop without REQUIRETLS: the bounce still goes (after the idle
    # connection pecd keeps for reuse, 5 s, has been closed: a new EHLO)
    downstream.script.requiretls = False
    time.sleep(6)
    with inst.connect("mx") as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        assert c.mail_from("sender@remote.test", "REQUIRETLS") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<gone@remote.test>") == "250 2.1.5 Recipient OK"
        assert c.data(message(unique_id("rbounce2"), sender="sender@remote.test",
                              to="gone@remote.test")).startswith("250 ")
    got = downstream.wait_messages(2)
    assert got[1]["mail_from"] == "" and "REQUIRETLS" not in got[1]["mail_options"]


def test_connection_reused_for_the_next_message(make_instance, downstream, pki):
    """Several messages to one destination in a row travel over one SMTP connection."""
    inst = relay_instance(make_instance, downstream, pki)
    for i in range(3):
        submit(inst, [f"r{i}@remote.test"], message(unique_id("reuse"), sender=ALICE,
                                                    to=f"r{i}@remote.test"))
        downstream.wait_messages(i + 1)
    peers = {m["peer"] for m in downstream.script.messages}
    assert len(peers) == 1, peers


@pytest.mark.parametrize("limit", [1, 2])
def test_per_destination_concurrency_limit(make_instance, downstream, pki, limit):
    """[outbound] max_per_destination bounds the deliveries running at once to one domain."""
    downstream.script.data_delay = 0.4
    inst = relay_instance(make_instance, downstream, pki,
                          extra={"outbound": {"max_per_destination": str(limit)},
                                 "queue": {"delivery_workers": "4"}})
    import threading
    ts = [threading.Thread(target=submit, args=(inst, [f"c{i}@remote.test"],
                                                 message(unique_id("conc"), sender=ALICE,
                                                         to=f"c{i}@remote.test")))
          for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    downstream.wait_messages(6, timeout=30)
    assert downstream.script.max_active == limit, downstream.script.max_active


def test_smtp_connections_do_not_wait_for_nagle(make_instance, downstream, pki):
    """The relay's connections and the server's sessions set TCP_NODELAY: a BDAT line and its
    body, or a body and its final dot, go out at once instead of waiting for the peer's
    delayed ACK (up to 40 ms a message)."""
    inst = relay_instance(make_instance, downstream, pki)
    submit(inst, ["r@remote.test"], message(unique_id("nodelay"), sender=ALICE,
                                            to="r@remote.test"))
    downstream.wait_messages(1)
    client = tcp_nodelay_of(inst.proc.pid, remote_port=downstream.port)   # kept for reuse
    assert client and all(client), client
    with inst.connect("mx") as c:
        c.ehlo()
        server = tcp_nodelay_of(inst.proc.pid, local_port=inst.ports["mx"])
    assert server and all(server), server
