"""pecd as a service (issue 22): the Prometheus endpoint scraped during a PEC exchange and
parsed with python3-prometheus-client's parser (the counters match what the test sent);
the endpoint's bounds; [log] format = json read with the json module; SIGHUP applying a
route, a limit, a timer, the TLS certificate, a milter and the directory settings without
dropping an open session, naming a listener change as needing a restart, and changing
nothing for a broken file (whose line the log names)."""
import json
import os
import signal
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from downstream import Downstream
from pec_providers import make_providers, pecctl, ricevuta, trasporto
from pecd_harness import free_port


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def message(frm, to, subject):
    return (f"From: <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash(subject))}.{time.time()}@client.test>\r\n\r\nprova\r\n").encode()


def wait_for(pred, timeout=30, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pair(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    ports = {"a": free_port(), "b": free_port()}
    a.write_config({"pec.b.test": b.ports["mx"]},
                   extra={"metrics": {"listen": f"127.0.0.1:{ports['a']}"},
                          "log": {"format": "json"}})
    b.write_config({"pec.a.test": a.ports["mx"]},
                   extra={"metrics": {"listen": f"127.0.0.1:{ports['b']}"}})
    a.add_user("mario")
    b.add_user("luigi")
    a.start()
    b.start()
    yield a, b, ca, directory, ports
    for p in (a, b):
        p.stop()


def test_metrics_count_a_pec_exchange(pair):
    a, b, ca, directory, ports = pair
    before = scrape(ports["a"])
    assert value(before, "pecmail_directory_providers") == 2
    assert value(before, "pecmail_queue_messages", state="active") == 0
    n = 3
    for i in range(n):
        a.submit("mario", ["luigi@pec.b.test"],
                 message("mario@pec.a.test", "luigi@pec.b.test", f"metrics {i}"))
    mid = scrape(ports["a"])       # while the exchange runs
    assert value(mid, "pecmail_messages_accepted_total", listener="submission") == n
    a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=n)
    b.wait_mail("luigi", trasporto("posta-certificata"), count=n)
    sa = wait_for(lambda: (s := scrape(ports["a"])) and
                  value(s, "pecmail_queue_messages", state="active") == 0 and s,
                  what="A's queue to empty")
    sb = scrape(ports["b"])
    # provider A: the access point
    assert value(sa, "pecmail_messages_accepted_total", listener="submission") == n
    assert value(sa, "pecmail_pec_transactions_total", point="access", result="accepted") == n
    assert value(sa, "pecmail_pec_messages_made_total", type="accettazione") == n
    assert value(sa, "pecmail_pec_messages_made_total", type="posta-certificata") == n
    assert value(sa, "pecmail_messages_accepted_total", listener="mx") == 2 * n  # the receipts
    assert value(sa, "pecmail_deliveries_total", result="sent", next_hop="localhost") == n
    assert value(sa, "pecmail_signatures_total", op="sign", result="ok") == 2 * n
    assert value(sa, "pecmail_signature_duration_seconds_count", op="sign") == 2 * n
    assert value(sa, "pecmail_signature_duration_seconds_bucket", op="sign", le="+Inf") == 2 * n
    assert value(sa, "pecmail_signature_duration_seconds_sum", op="sign") > 0
    # provider B: the incoming and delivery points
    assert value(sb, "pecmail_messages_accepted_total", listener="mx") == n
    assert value(sb, "pecmail_pec_transactions_total", point="incoming", result="verified") == n
    assert value(sb, "pecmail_pec_transactions_total", point="delivery", result="delivered") == n
    assert value(sb, "pecmail_pec_messages_made_total", type="presa-in-carico") == n
    assert value(sb, "pecmail_pec_messages_made_total", type="avvenuta-consegna") == n
    assert value(sb, "pecmail_signatures_total", op="verify", result="valid") == n
    assert value(sb, "pecmail_pec_anomalies_total", reason="not-pec") == 0
    for s in (sa, sb):
        assert value(s, "pecmail_queue_messages", state="deferred") == 0
        assert value(s, "pecmail_directory_providers") == 2
        assert 0 <= value(s, "pecmail_directory_age_seconds") < 120
        assert value(s, "pecmail_certificate_expiry_days", certificate="tls") > 300
        assert value(s, "pecmail_certificate_expiry_days", certificate="signing") > 300
        assert value(s, "pecmail_evidence_records") >= 2 * n
        assert value(s, "pecmail_clock_synchronised") in (1, 0, -1)
        assert value(s, "pecmail_connections_total", listener="mx") >= 1  # connections are reused
    # contrib/grafana/pecmail.json charts every series the endpoint exports
    dash = open(os.path.join(os.path.dirname(__file__), "..", "..", "contrib", "grafana",
                             "pecmail.json")).read()
    families = {k[0].removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
                for k in list(sa) + list(sb)}
    missing = [f for f in families if f.startswith("pecmail_") and f not in dash
               and f not in ("pecmail_start_time_seconds",)]
    assert not missing, missing
    # an ordinary message to a PEC mailbox: an anomaly, counted by its reason
    with smtplib.SMTP("127.0.0.1", b.ports["mx"], timeout=30) as s:
        s.sendmail("someone@plain.test", ["luigi@pec.b.test"],
                   message("someone@plain.test", "luigi@pec.b.test", "not pec"))
    b.wait_mail("luigi", trasporto("errore"))
    sb = scrape(ports["b"])
    assert value(sb, "pecmail_pec_anomalies_total", reason="not-pec") == 1
    assert value(sb, "pecmail_pec_transactions_total", point="incoming", result="anomaly") == 1

    # [log] format = json on A: every line is one JSON object, with the ids
    events = []
    with open(a.log_path) as f:
        for line in f:
            events.append(json.loads(line))
    acc = [e for e in events if e.get("event") == "accettazione" and e.get("result") == "accepted"]
    assert len(acc) == n
    assert all(e["qid"] and e["pec_id"] and e["level"] == "info" and e["prog"] == "pecd"
               for e in acc)
    sent = [e for e in events if e.get("event") == "delivery" and e.get("result") == "sent"]
    assert len(sent) >= n and all(len(e["qid"]) == 16 for e in sent)

    # pecctl's listings as JSON (the standard json module reads them)
    tr = json.loads(pecctl("-c", a.conf, "trace", acc[0]["pec_id"], "--json").stdout)
    assert tr["id"] == acc[0]["pec_id"]
    types = [e["type"] for e in tr["events"]]
    assert "accettazione" in types and all(e["pec_id"] == acc[0]["pec_id"] for e in tr["events"])
    lv = json.loads(pecctl("-c", a.conf, "log", "verify", "--json").stdout)
    assert lv["valid"] is True and lv["result"] == "intact" and lv["error"] is None
    q = json.loads(pecctl("-c", a.conf, "queue", "--json").stdout)
    assert q == []
    users = json.loads(pecctl("-c", a.conf, "user", "list", "--json").stdout)
    assert users == [{"address": "mario@pec.a.test"}]
    dl = json.loads(pecctl("-c", a.conf, "directory", "list", "--json").stdout)
    assert dl["count"] == 2 and {p["name"] for p in dl["providers"]} == {"Provider A", "Provider B"}


def raw_http(port, data, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        out = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_metrics_endpoint_bounds(pair):
    a, b, ca, directory, ports = pair
    p = ports["a"]
    assert raw_http(p, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404")
    r = raw_http(p, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 405") and b"Allow: GET" in r
    assert raw_http(p, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")
    # a head that never ends is cut at 8 KiB (exactly that much sent: more would be
    # left unread, and the close would reset the connection before the answer is read)
    head = b"GET /metrics HTTP/1.1\r\nX-Long: "
    r = raw_http(p, head + b"a" * (8192 - len(head)))
    assert r.startswith(b"HTTP/1.1 431")
    # a client that says nothing is closed after the time bound
    t0 = time.time()
    with socket.create_connection(("127.0.0.1", p), timeout=20) as c:
        assert c.recv(10) == b""
    assert time.time() - t0 < 15
    # the endpoint still answers
    assert value(scrape(p), "pecmail_directory_providers") == 2


def set_conf(provider, section, key, val):
    """Sets key in [section] of the provider's pecd.conf (adds the section if absent)."""
    with open(provider.conf) as f:
        lines = f.read().splitlines()
    out, in_sec, done = [], False, False
    for line in lines:
        s = line.strip()
        if s.startswith("["):
            if in_sec and not done:
                out.append(f"{key} = {val}")
                done = True
            in_sec = s == f"[{section}]"
        elif in_sec and s.split("=")[0].strip() == key:
            line, done = f"{key} = {val}", True
        out.append(line)
    if in_sec and not done:
        out.append(f"{key} = {val}")
        done = True
    if not done:
        out += ["", f"[{section}]", f"{key} = {val}"]
    with open(provider.conf, "w") as f:
        f.write("\n".join(out) + "\n")


def reload(provider, marker):
    """SIGHUP, then waits for the reload's last log line after marker lines."""
    with open(provider.log_path) as f:
        start = len(f.readlines())
    provider.proc.send_signal(signal.SIGHUP)

    def done():
        with open(provider.log_path) as f:
            new = f.readlines()[start:]
        text = "".join(new)
        return text if ("reload: " + marker) in text else None
    return wait_for(done, timeout=20, what=f"reload ({marker})")


def peer_cert(port, ca):
    ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.starttls(context=ctx)
        return s.sock.getpeercert(binary_form=True)


def test_reload_applies_without_dropping_a_session(pair, tmp_path):
    a, b, ca, directory, ports = pair
    ext = Downstream(free_port())
    ext.start()
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
        ctx.check_hostname = False
        # an authenticated session opened before the reloads, used after each
        sess = smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=30)
        sess.starttls(context=ctx)
        sess.login("mario@pec.a.test", "mario-password")
        cert_before = peer_cert(a.ports["submission"], ca)

        # a broken file: nothing changes, the log names the file and line
        good = open(a.conf).read()
        with open(a.conf, "a") as f:
            f.write("[limits]\nmax_recipients = many\n")
        bad_line = good.count("\n") + 2
        text = reload(a, "")
        assert f"{a.conf}:{bad_line}:" in text and "nothing changed" in text, text
        with open(a.conf, "w") as f:
            f.write(good)

        # a limit, a route, a timer, the TLS certificate, the directory, a listener
        set_conf(a, "limits", "max_recipients", "1")
        set_conf(a, "routes", "plain.test", f"localhost:{ext.port}")
        set_conf(a, "tls_policy", "plain.test", "may")
        set_conf(a, "timers", "preavviso", "3s")
        set_conf(a, "timers", "mancata_consegna", "10s")
        newtls = str(tmp_path / "newtls")
        os.makedirs(newtls)
        pecctl("pki", "issue", "--ca", ca, "--domain", "pec.a.test", "--out", newtls, "--name",
               "Provider A", "--tls-host", "localhost")
        set_conf(a, "tls", "certificate", os.path.join(newtls, "tls.pem"))
        set_conf(a, "tls", "key", os.path.join(newtls, "tls.key"))
        dir3 = str(tmp_path / "directory3.ldif")
        with open(directory) as f, open(dir3, "w") as g:
            g.write(f.read() + "dn: providerName=Provider C,o=postacert\nobjectclass: top\n"
                    "objectclass: provider\nproviderName: Provider C\nproviderCertificateHash: "
                    + "ab" * 20 + "\nmailReceipt: posta-certificata@pec.c.test\n"
                    "managedDomains: pec.c.test\n\n")
        set_conf(a, "pec", "directory", dir3)
        set_conf(a, "mx", "listen", f"127.0.0.1:{free_port()}")
        text = reload(a, "")
        assert "[mx] listen or tls changed" in text and "needs a restart" in text, text
        assert "[mx] listen" in text.split("reload: ")[-1]

        # the old session goes on, with the new limit
        sess.mail("mario@pec.a.test")
        assert sess.rcpt("luigi@pec.b.test")[0] == 250
        code, _ = sess.rcpt("mario@pec.a.test")
        assert code == 452, code          # max_recipients = 1 now
        sess.rset()
        # the new certificate for new handshakes; the old listener still listens
        assert peer_cert(a.ports["submission"], ca) != cert_before
        a_mx_old = a.ports["mx"]
        with smtplib.SMTP("127.0.0.1", a_mx_old, timeout=10) as s:
            assert s.noop()[0] == 250
        # the directory: three providers
        wait_for(lambda: value(scrape(ports["a"]), "pecmail_directory_providers") == 3,
                 what="the new directory")
        # the route: mail to plain.test goes to ext
        sess.sendmail("mario@pec.a.test", ["someone@plain.test"],
                      message("mario@pec.a.test", "someone@plain.test", "route"))
        ext.wait_messages(1)
        # the timer: B down, a PEC to B gets the 3 s preavviso
        b.stop()
        sess.sendmail("mario@pec.a.test", ["luigi@pec.b.test"],
                      message("mario@pec.a.test", "luigi@pec.b.test", "timer"))
        a.wait_mail("mario", ricevuta("preavviso-errore-consegna"), timeout=40)

        # a milter that cannot be reached, default reject: new messages refused
        set_conf(a, "milter.gone", "socket", "inet:1@127.0.0.1")
        set_conf(a, "milter.gone", "phase", "incoming")
        set_conf(a, "milter.gone", "default", "reject")
        set_conf(a, "callouts", "default", "gone")
        reload(a, "")
        with pytest.raises(smtplib.SMTPDataError) as ei:
            sess.sendmail("mario@pec.a.test", ["luigi@pec.b.test"],
                          message("mario@pec.a.test", "luigi@pec.b.test", "milter"))
        assert ei.value.smtp_code == 550
        assert sess.noop()[0] == 250          # still the same session
        sess.quit()
        s = scrape(ports["a"])
        assert value(s, "pecmail_config_reloads_total", result="error") == 1
        assert value(s, "pecmail_config_reloads_total", result="partial") == 2
        # counters survived the reloads
        assert value(s, "pecmail_messages_accepted_total", listener="submission") == 2
        assert value(s, "pecmail_messages_refused_total", listener="submission",
                     code="5.7.1") == 1
    finally:
        ext.stop()
