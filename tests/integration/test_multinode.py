"""Several nodes of one provider sharing their state in PostgreSQL (issue 24; docs/scaling.md).

Provider A runs on the embedded SQLite; provider B on a private PostgreSQL cluster (initdb on
a loopback high port, pg_fixture.py), with two or three pecd nodes made by `pecctl node add`
and a route at A listing every node.  What is checked:
- one node of B on PostgreSQL: the exchange with A, `pecctl log verify` on the shared log,
  trace, nodes, the quarantine index;
- three nodes, A sends 300 PEC spread over them, one node killed -9 mid-run and not started
  again: every message A accepted gets exactly one presa in carico and one delivery receipt,
  every mailbox exactly one copy, the dead node's spool is taken over, the log verifies;
- timers with the nodes that hold the messages killed between the (shortened) deadlines: each
  notice exactly once;
- PostgreSQL restarted under load: 4xx while it is down, nothing acknowledged lost, the
  nodes reconnect by themselves;
- bad input at start: a wrong URI, a wrong password, no schema, an older schema;
- `pecctl log export --day` of the shared log: every chain of the day in one file that
  `pecctl log verify FILE` checks alone.
"""
import json
import os
import subprocess
import time

import pytest

from multinode import (Node, count_by_ref, make_cluster, start_nowait, state_section,
                       submit_many)
from pec_providers import make_providers, pecctl, ricevuta, trasporto
from pecd_harness import PECD, free_port, reachable_dir
from pg_fixture import PostgresCluster, wait_until


@pytest.fixture(scope="module")
def pg():
    c = PostgresCluster()
    c.start()
    yield c
    c.destroy()


def stop_all(*procs):
    for p in procs:
        if p is not None and getattr(p, "proc", None) is not None:
            p.stop()


def verify_log(conf):
    r = pecctl("-c", conf, "log", "verify", "--json", check=False)
    v = json.loads(r.stdout)
    assert r.returncode == 0 and v["valid"], r.stdout + r.stderr
    return v


def test_one_node_on_postgresql(tmp_path, pg):
    a, b, nodes, ca, directory, db = make_cluster(tmp_path, pg, nodes=1)
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    a.start()
    b.start()
    try:
        r = pecctl("-c", b.conf, "nodes", "--json")
        (n,) = json.loads(r.stdout)
        assert n["node"] == "b1" and n["alive"] and n["spool_owner"] == "b1", n
        done = submit_many(a, ["mario"], lambda k: "anna@pec.b.test", 5, "uno", threads=1)
        assert len(done) == 5
        b.wait_mail("anna", trasporto("posta-certificata"), count=5)
        a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=5)
        # a message B sends: its acceptance, the tracking of its receipts in the database
        b.submit("anna", ["mario@pec.a.test"],
                 b"From: <anna@pec.b.test>\r\nTo: <mario@pec.a.test>\r\nSubject: ritorno\r\n"
                 b"Message-ID: <ritorno@client.test>\r\n\r\nciao\r\n")
        b.wait_mail("anna", ricevuta("avvenuta-consegna"))
        assert pg.psql("SELECT count(*) FROM expect", db) == "0"   # its tracking ended
        # taken in (duplicate suppression): 5 envelopes, the 2 receipts of "ritorno"
        assert int(pg.psql("SELECT count(*) FROM taken_in", db)) == 7
        v = verify_log(b.conf)
        assert any("chain b1" in line for line in v["report"]), v
        # seal the day now (a test clock is not needed: seal covers finished days only)
        t = pecctl("-c", b.conf, "trace", "ritorno@client.test")
        assert "accettazione" in t.stdout and "#b1:" in t.stdout, t.stdout
        tj = json.loads(pecctl("-c", b.conf, "trace", "ritorno@client.test", "--json").stdout)
        assert tj["events"] and all(e["chain"] == "b1" for e in tj["events"]), tj
        s = pecctl("-c", b.conf, "log", "search", "--address", "anna@pec.b.test", "--json")
        assert "ritorno" in s.stdout
        hold = pecctl("-c", b.conf, "log", "hold", "add", "--address", "anna@pec.b.test",
                      "--reason", "test")
        assert "hold" in hold.stdout.lower(), hold.stdout
        assert "anna@pec.b.test" in pecctl("-c", b.conf, "log", "hold", "list").stdout
    finally:
        stop_all(a, b)


def test_a_node_killed_mid_run_its_spool_is_taken_over(tmp_path, pg):
    """Three nodes of B; A sends 300 PEC spread over them (one route, three next hops); node b2
    is killed with -9 while they arrive and is not started again.  Everything A accepted ends
    with one presa in carico and one delivery receipt per message, one copy per mailbox."""
    N = 300
    a, b, nodes, ca, directory, db = make_cluster(tmp_path, pg, nodes=3)
    senders = [f"s{i}" for i in range(6)]
    rcpts = [f"r{i}" for i in range(6)]
    for u in senders:
        a.add_user(u)
    for u in rcpts:
        b.add_user(u)     # one users file and one mail tree for every node (node add)
    a.start()
    for n in nodes:
        n.start()
    b1, b2, b3 = nodes
    try:
        killed = {}

        def killer():
            # mid-run: once b2 has taken a good part of its share in
            wait_until(lambda: b2.log(100000).count("incoming stage done") >= 25, 120,
                       what="b2 taking messages in")
            killed["queued"] = len(os.listdir(os.path.join(b2.queue_dir, "queue")))
            b2.kill()
            killed["at"] = time.monotonic()

        import threading
        t = threading.Thread(target=killer)
        t.start()
        done = submit_many(a, senders, lambda k: f"{rcpts[k % len(rcpts)]}@pec.b.test", N,
                           "kill", threads=6)
        t.join(180)
        assert "at" in killed, "b2 was not killed"
        assert len(done) == N
        mids = {mid for _, _, _, mid in done}
        # every receipt back at A, within a bounded time
        def receipts():
            # the presa in carico goes to A itself (its service address), the delivery
            # receipt to the sender (RFC 6109 §3.2.1, §3.3)
            got = {"presa-in-carico": count_by_ref(a.mails("posta-certificata"),
                                                   ricevuta("presa-in-carico")),
                   "avvenuta-consegna": {}}
            for u in senders:
                for r, c in count_by_ref(a.mails(u), ricevuta("avvenuta-consegna")).items():
                    got["avvenuta-consegna"][r] = got["avvenuta-consegna"].get(r, 0) + c
            return got
        def complete():
            got = receipts()
            return all(len(got.get(k, {})) >= N for k in ("presa-in-carico", "avvenuta-consegna"))
        wait_until(complete, 180, step=1, what=f"receipts of {N} messages at A")
        time.sleep(3)   # anything late would be a duplicate: give it a moment to show
        got = receipts()
        for kind in ("presa-in-carico", "avvenuta-consegna"):
            assert set(got[kind]) == mids, kind
            dup = {r: c for r, c in got[kind].items() if c != 1}
            assert not dup, f"{kind} more than once: {dup}"
        copies = {}
        for u in rcpts:
            for r, c in count_by_ref(b.mails(u), trasporto("posta-certificata")).items():
                copies[r] = copies.get(r, 0) + c
        assert set(copies) == mids
        assert {r: c for r, c in copies.items() if c != 1} == {}
        # the dead node's spool was taken over by a survivor (when it held something)
        logs = b1.log(100000) + b3.log(100000)
        if killed["queued"] > 0:
            assert "node b2 is gone" in logs and "now delivering the spool of node b2" in logs
        nodes_json = json.loads(pecctl("-c", b.conf, "nodes", "--json").stdout)
        states = {n["node"]: n for n in nodes_json}
        assert not states["b2"]["alive"] and states["b2"]["spool_owner"] in ("b1", "b3")
        assert states["b2"]["queued"] == 0, states["b2"]
        verify_log(b.conf)
        # every node logged into its own chain
        chains = pg.psql("SELECT string_agg(name, ',' ORDER BY name) FROM evidence_chains", db)
        assert chains == "b1,b2,b3", chains
        print(f"b2 killed with {killed['queued']} files in its queue; "
              f"{len(mids)} transactions complete")
    finally:
        stop_all(a, *nodes)


def notices_by_which(mails):
    """{(original Message-ID, 1 or 2): count} of the timeout notices in mails; which notice
    a Message-ID ends in: .<2 * slot + which + 1>@ (docs/pec.md), one recipient each here."""
    out = {}
    for _, _, m in mails:
        if (m.get("X-Ricevuta") or "").strip() != "preavviso-errore-consegna":
            continue
        mid = (m.get("Message-ID") or "").strip()
        n = int(mid.rsplit("@", 1)[0].rsplit(".", 1)[1])
        key = (mid and (m.get("X-Riferimento-Message-ID") or "").strip(), 1 if n == 2 else 2)
        out[key] = out.get(key, 0) + 1
    return out


def test_timeout_notices_once_with_nodes_killed(tmp_path, pg):
    """B sends to a provider that is down (C: in the directory, never started), with the
    timers shortened (4 s and 8 s).  The node that accepted the messages (b1) is killed
    before the first deadline, the node that first sends notices (b2 or b3) as soon as it
    does; the last one sends the rest.  Each sender gets each notice exactly once."""
    from pec_providers import Provider
    K = 12
    timers = {"preavviso": "4s", "mancata_consegna": "8s"}
    a, b, nodes, ca, directory, db = make_cluster(tmp_path, pg, nodes=3, timers=timers)
    c = Provider(str(tmp_path), "Provider C", "pec.c.test", ca, directory)
    with open(directory, "a") as f:
        f.write(c.directory_entry())
    closed = free_port()
    with open(b.conf) as f:
        text = f.read()
    text = text.replace("[routes]\n", f"[routes]\npec.c.test = localhost:{closed}\n")
    text = text.replace("[tls_policy]\n", "[tls_policy]\npec.c.test = verify\n")
    with open(b.conf, "w") as f:
        f.write(text)
    for n in nodes[1:]:    # the other nodes' routes: made from b's file again
        pecctl("node", "add", n.dir, "--from", b.dir, "--node", n.name, "--force",
               "--smtp", f"127.0.0.1:{n.ports['mx']}",
               "--submission", f"127.0.0.1:{n.ports['submission']}")
    senders = [f"m{i}" for i in range(3)]
    for u in senders:
        b.add_user(u)
    for n in nodes:
        n.start()
    b1, b2, b3 = nodes
    try:
        done = submit_many(b, senders, lambda k: f"dest{k}@pec.c.test", K, "timer", threads=3)
        sent = time.monotonic()
        mids = {mid for _, _, _, mid in done}
        assert len(mids) == K
        # the acceptances (their stage committed the tracking rows), then b1 goes
        wait_until(lambda: sum(len(b.mails(u)) for u in senders) >= K, 30, what="acceptances")
        b1.kill()
        assert time.monotonic() - sent < 4, "too slow: the first deadline passed already"
        # the first node that sends notices is killed as soon as it has stored a batch
        first = wait_until(lambda: next((n for n in (b2, b3)
                                         if "timeout notice" in n.log(100000)), None), 30,
                           what="a node making timeout notices")
        first.kill()
        last = b3 if first is b2 else b2

        def all_mails():
            return [m for u in senders for m in b.mails(u)]
        wait_until(lambda: len(notices_by_which(all_mails())) >= 2 * K, 90, step=0.5,
                   what=f"{2 * K} timeout notices")
        time.sleep(5)     # a notice sent twice would show now
        got = notices_by_which(all_mails())
        assert set(got) == {(m, w) for m in mids for w in (1, 2)}, got
        assert {k: v for k, v in got.items() if v != 1} == {}, got
        logs = last.log(100000)
        assert "node b1 is gone" in logs and "node " + first.name + " is gone" in logs, logs[-3000:]
        verify_log(last.conf)
        print(f"notices: {first.name} killed after its first batch, {last.name} finished")
    finally:
        stop_all(*nodes)


def test_postgresql_restarted_under_load(tmp_path, pg):
    """The database goes down while A sends to B's two nodes: B answers 4xx (A and B's own
    users try again), nothing it acknowledged is lost or doubled, and the nodes reconnect by
    themselves when it is back."""
    import smtplib
    import ssl
    import threading
    N = 120
    a, b, nodes, ca, directory, db = make_cluster(tmp_path, pg, nodes=2)
    senders = [f"s{i}" for i in range(4)]
    for u in senders:
        a.add_user(u)
    b.add_user("r0")
    b.add_user("local")
    a.start()
    for n in nodes:
        n.start()
    try:
        result = {}

        def load():
            result["done"] = submit_many(a, senders, lambda k: "r0@pec.b.test", N, "pgdown",
                                         threads=2)
        t = threading.Thread(target=load)
        t.start()
        wait_until(lambda: len(b.mails("r0")) >= 20, 60, what="the exchange under way")
        pg.stop("fast")
        down = time.monotonic()
        # B's own users are told to come back later (451), not accepted blindly
        ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
        ctx.check_hostname = False
        msg = (b"From: <local@pec.b.test>\r\nTo: <s0@pec.a.test>\r\nSubject: durante\r\n"
               b"Message-ID: <durante@client.test>\r\n\r\nciao\r\n")

        def refused():
            try:
                with smtplib.SMTP("127.0.0.1", b.ports["submission"], timeout=10) as s:
                    s.starttls(context=ctx)
                    s.login("local@pec.b.test", "local-password")
                    s.sendmail("local@pec.b.test", ["s0@pec.a.test"], msg)
                return None     # accepted: the node has not noticed yet
            except smtplib.SMTPSenderRefused as e:
                return e
        e = wait_until(refused, 15, step=0.3, what="a 4xx while the database is down")
        assert e.smtp_code == 451 and b"4.3.0" in e.smtp_error, e
        time.sleep(max(0, 6 - (time.monotonic() - down)))   # longer than the 3 s lease
        pg.start()
        t.join(600)
        done = result["done"]
        assert len(done) == N
        mids = {mid for _, _, _, mid in done}

        def copies():
            return count_by_ref(b.mails("r0"), trasporto("posta-certificata"))

        def delivered():
            got = {}
            for u in senders:
                for r, c in count_by_ref(a.mails(u), ricevuta("avvenuta-consegna")).items():
                    got[r] = got.get(r, 0) + c
            return got
        wait_until(lambda: len(delivered()) >= N and len(copies()) >= N, 180, step=1,
                   what="every message delivered after the restart")
        time.sleep(3)
        assert {r: c for r, c in copies().items() if c != 1} == {}
        assert set(copies()) == mids
        assert {r: c for r, c in delivered().items() if c != 1} == {}
        presa = count_by_ref(a.mails("posta-certificata"), ricevuta("presa-in-carico"))
        assert set(presa) == mids and set(presa.values()) == {1}
        # the nodes took mail again without a restart of theirs
        wait_until(lambda: refused() is None, 30, step=0.5, what="submissions accepted again")
        for n in nodes:
            assert "state database reachable again" in n.log(100000), n.name
            assert n.proc is not None and n.proc.poll() is None, f"{n.name} exited"
        verify_log(b.conf)
    finally:
        if not pg.started:
            pg.start()
        stop_all(a, *nodes)


def start_fails(conf, *extra):
    """Runs pecd (or pecd -t) on conf; returns (exit code, stderr) of a start that must fail
    quickly."""
    import subprocess
    r = subprocess.run([PECD, *extra, "-c", conf], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stderr


def set_state(provider, **kv):
    import re
    with open(provider.conf) as f:
        text = f.read()
    for k, v in kv.items():
        text = re.sub(rf"^{k} = .*$", f"{k} = {v}", text, flags=re.M)
    with open(provider.conf, "w") as f:
        f.write(text)


def test_bad_state_settings_are_clear_errors_at_start(tmp_path, pg):
    a, b, ca, directory = make_providers(tmp_path)
    db = pg.new_database()
    b.write_config({"pec.a.test": a.ports["mx"]},
                   extra={"state": state_section(pg, db, "b1", b.dir)})
    good_uri = pg.uri(db)
    # no schema yet: start refused, naming the command to run
    rc, err = start_fails(b.conf)
    assert rc == 1 and "has no pecmail schema" in err and f"pecctl -c {b.conf} state init" in err, err
    # a malformed URI: a configuration error naming the file, line and reason
    set_state(b, database="postgresql://pecmail@127.0.0.1:notaport/x?bogus=1")
    rc, err = start_fails(b.conf)
    assert rc == 1 and "configuration error" in err and "database: not a valid PostgreSQL URI" in err, err
    assert b.conf + ":" in err, err
    set_state(b, database="mysql://127.0.0.1/x")
    rc, err = start_fails(b.conf, "-t")
    assert rc == 1 and "is not postgresql://" in err, err
    # nothing listening there
    set_state(b, database=f"postgresql://pecmail@127.0.0.1:{free_port()}/{db}")
    rc, err = start_fails(b.conf, "-t")
    assert rc == 1 and "cannot connect" in err and "Connection refused" in err, err
    # the wrong password (from [state] password_file); the password never in the message
    set_state(b, database=good_uri)
    pw = pg.password_file(b.dir, "not-the-password")
    rc, err = start_fails(b.conf)
    assert rc == 1 and "password authentication failed" in err, err
    assert "not-the-password" not in err
    pg.password_file(b.dir)
    # schema made, pecd -t checks the connection
    r = pecctl("-c", b.conf, "state", "init")
    assert "schema version 2 created" in r.stdout
    r2 = pecctl("-c", b.conf, "state", "init", check=False)
    assert r2.returncode == 1 and "has a pecmail schema already" in r2.stderr
    import subprocess
    t = subprocess.run([PECD, "-t", "-c", b.conf], capture_output=True, text=True, timeout=60)
    assert t.returncode == 0 and "state database reachable, schema version 2" in t.stdout, t
    # a database of an older pecmail (schema 1: before the quarantine index)
    pg.psql("DROP TABLE quarantine; UPDATE pecmail_schema SET version = 1", db)
    rc, err = start_fails(b.conf)
    assert rc == 1 and "schema version 1" in err and f"pecctl -c {b.conf} state migrate" in err, err
    r = pecctl("-c", b.conf, "state", "migrate")
    assert "migrated from version 1 to 2" in r.stdout, r.stdout
    assert pg.psql("SELECT count(*) FROM quarantine", db) == "0"
    assert "nothing to migrate" in pecctl("-c", b.conf, "state", "migrate").stdout
    # a newer one: this pecd is too old
    pg.psql("UPDATE pecmail_schema SET version = 99", db)
    rc, err = start_fails(b.conf)
    assert rc == 1 and "made by a newer pecmail" in err, err
    pg.psql("UPDATE pecmail_schema SET version = 2", db)
    # a node name that cannot name a chain; a password file that is not there
    set_state(b, node="Bad Name")
    rc, err = start_fails(b.conf)
    assert rc == 1 and "is not a node name" in err, err
    set_state(b, node="b1")
    os.unlink(pw)
    rc, err = start_fails(b.conf)
    assert rc == 1 and "password_file" in err and "No such file" in err, err


def test_node_add_makes_a_node_of_the_same_provider(tmp_path, pg):
    a, b, ca, directory = make_providers(tmp_path)
    db = pg.new_database()
    b.write_config({"pec.a.test": a.ports["mx"]},
                   extra={"state": state_section(pg, db, "b1", b.dir),
                          "metrics": {"listen": f"127.0.0.1:{free_port()}"}})
    n2 = str(tmp_path / "n2")
    smtp, sub = free_port(), free_port()
    r = pecctl("node", "add", n2, "--from", b.dir, "--node", "b2", "--smtp",
               f"127.0.0.1:{smtp}", "--submission", f"127.0.0.1:{sub}")
    assert "node b2 of pec.b.test" in r.stdout and "[metrics] listen not copied" in r.stdout
    with open(os.path.join(n2, "pecd.conf")) as f:
        conf = f.read()
    assert "node = b2" in conf and f"listen = 127.0.0.1:{smtp}" in conf
    assert f"data_dir = {n2}" in conf
    assert os.path.join(b.dir, "signing.key") in conf            # the very same key
    assert f"passwd_file = {os.path.join(b.dir, 'users')}" in conf
    assert f"mailbox = maildir:{b.dir}/mail/%d/%n" in conf
    metrics = conf.split("[metrics]", 1)[1].split("\n[", 1)[0]
    assert "listen" not in metrics, metrics     # a port of its own, if wanted
    # refused: the same name, an existing file, the embedded default, a bad address
    for args, why in (
            (["--node", "b1"], "is node b1 already"),
            (["--node", "b2"], "exists (--force replaces it)"),
            (["--node", "B 2"], "is not a node name")):
        r = pecctl("node", "add", n2, "--from", b.dir, *args, "--smtp", "127.0.0.1:1",
                   "--submission", "127.0.0.1:2", check=False)
        assert r.returncode != 0 and why in r.stderr, (args, r.stderr)
    r = pecctl("node", "add", str(tmp_path / "n3"), "--from", b.dir, "--node", "b3",
               "--smtp", "127.0.0.1", "--submission", "127.0.0.1:2", check=False)
    assert r.returncode == 2 and "is not HOST:PORT" in r.stderr
    a.write_config({"pec.b.test": b.ports["mx"]})
    r = pecctl("node", "add", str(tmp_path / "n4"), "--from", a.dir, "--node", "a2",
               "--smtp", "127.0.0.1:1", "--submission", "127.0.0.1:2", check=False)
    assert r.returncode == 1 and "has no [state] database" in r.stderr
    r = pecctl("-c", a.conf, "nodes", check=False)
    assert r.returncode == 1 and "embedded SQLite" in r.stderr


def test_a_node_back_gets_its_spool_handed_over(tmp_path, pg):
    """b1 is killed, b2 takes its spool over; b1 is started again while mail keeps coming: it
    waits until b2 hands the spool back (never both at once), then runs it itself."""
    import threading
    N = 160
    a, b, nodes, ca, directory, db = make_cluster(tmp_path, pg, nodes=2)
    senders = [f"s{i}" for i in range(4)]
    for u in senders:
        a.add_user(u)
    b.add_user("r0")
    a.start()
    for n in nodes:
        n.start()
    b1, b2 = nodes
    try:
        result = {}

        def load():
            result["done"] = submit_many(a, senders, lambda k: "r0@pec.b.test", N, "back",
                                         threads=2)
        t = threading.Thread(target=load)
        t.start()
        wait_until(lambda: len(b.mails("r0")) >= 15, 60, what="the exchange under way")
        b1.kill()
        wait_until(lambda: "now delivering the spool of node b1" in b2.log(100000), 30,
                   what="b2 taking b1's spool over")
        start_nowait(b1)
        wait_until(lambda: "node b1 is back: handing its spool over" in b2.log(100000), 30,
                   what="b2 handing the spool back")
        wait_until(lambda: "joined" in b1.log(2000).split("node b1: its spool")[-1]
                   and b1.log(100000).count(" joined: ") >= 2, 30, what="b1 joining again")
        log1 = b1.log(100000)
        t.join(600)
        mids = {mid for _, _, _, mid in result["done"]}
        assert len(mids) == N

        def delivered():
            got = {}
            for u in senders:
                for r, c in count_by_ref(a.mails(u), ricevuta("avvenuta-consegna")).items():
                    got[r] = got.get(r, 0) + c
            return got
        wait_until(lambda: len(delivered()) >= N, 180, step=1, what="every delivery receipt")
        time.sleep(3)
        copies = count_by_ref(b.mails("r0"), trasporto("posta-certificata"))
        assert set(copies) == mids and set(copies.values()) == {1}, copies
        assert set(delivered().values()) == {1}
        # the hand-over: b2 stopped b1's queue and released the lease before b1 took it
        log2 = b2.log(100000)
        assert log2.index("handing its spool over") < log2.index("the spool of node b1 given back")
        epochs = [int(x.split("lease epoch ")[1].split()[0].rstrip(",")) for x in
                  log1.splitlines() if " joined: " in x]
        assert len(epochs) == 2 and epochs[1] >= epochs[0] + 2, epochs   # b2's take between
        (n1,) = [n for n in json.loads(pecctl("-c", b.conf, "nodes", "--json").stdout)
                 if n["node"] == "b1"]
        assert n1["alive"] and n1["spool_owner"] == "b1" and n1["epoch"] == epochs[1], n1
        verify_log(b.conf)
    finally:
        stop_all(a, *nodes)


def test_state_backend_against_the_server(tmp_path, pg):
    """tests/unit/test_state_pg (skipped by ctest without a server) against a fresh database:
    two chains over four months with a test clock, retention dropping monthly partitions with
    a held day kept and verified, tampering found after the drop, claims between two
    connections (FOR UPDATE SKIP LOCKED), the quarantine index."""
    import subprocess
    from pecd_harness import BUILD
    from pg_fixture import PG_PASSWORD
    prog = os.path.join(BUILD, "tests", "unit", "test_state_pg")
    db = pg.new_database()
    env = dict(os.environ, PEC_TEST_PG_URI=pg.uri(db), PGPASSWORD=PG_PASSWORD)
    r = subprocess.run([prog], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "[  PASSED  ] 3 test(s)" in r.stdout + r.stderr, \
        r.stdout + r.stderr


def test_nodes_started_as_root_run_as_pecmail(pg):
    """pecd started as root (the packaged service): each node's network-facing process runs as
    [pecd] user (pecmail) with its data in DIR/data, connects to PostgreSQL with the password
    file that user's group reads, holds its spool's lease, and takes over the spool of a node
    killed with -9 (a queue directory another pecmail process made).  A password file the
    user cannot read stops the start with a reason naming it."""
    import pathlib
    import pwd
    import shutil
    import threading
    if os.geteuid() != 0:
        pytest.skip("pecd must be started as root to drop to [pecd] user")
    N = 120
    root = reachable_dir("pec-nodes-")
    try:
        a, b, nodes, ca, directory, db = make_cluster(pathlib.Path(root), pg, nodes=2,
                                                      privsep=True)
        b1, b2 = nodes
        # node add followed the source's layout: data in NEWDIR/data, not beside pecd.conf
        with open(b2.conf) as f:
            assert f"data_dir = {os.path.join(b2.dir, 'data')}" in f.read()
        senders = [f"s{i}" for i in range(3)]
        for u in senders:
            a.add_user(u)
        b.add_user("r0")
        # the password file closed to pecmail: a clear refusal at start
        pwfile = os.path.join(b.dir, "state-password")
        os.chmod(pwfile, 0o600)
        r = subprocess.run([PECD, "-c", b.conf], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "[state] password_file" in r.stderr \
            and "pecmail" in r.stderr, r.stderr
        os.chmod(pwfile, 0o640)
        a.start()
        for n in nodes:
            n.start()
        pecmail = pwd.getpwnam("pecmail").pw_uid
        try:
            for n in nodes:
                # the process that serves the network is pecmail's, and so is its spool
                with open(f"/proc/{n.proc.pid}/status") as f:
                    uids = [ln for ln in f if ln.startswith("Uid:")][0].split()[1:]
                assert all(int(u) == pecmail for u in uids), (n.name, uids)
                qdir = getattr(n, "queue_dir", None) or os.path.join(n.data, "queue")
                assert os.stat(qdir).st_uid == pecmail
            (row,) = [x for x in json.loads(pecctl("-c", b.conf, "nodes", "--json").stdout)
                      if x["node"] == "b2"]
            assert row["alive"] and row["spool_owner"] == "b2", row
            killed = {}

            def killer():
                wait_until(lambda: b2.log(100000).count("incoming stage done") >= 10, 120,
                           what="b2 taking messages in")
                b2.kill()
                killed["at"] = time.monotonic()
            t = threading.Thread(target=killer)
            t.start()
            done = submit_many(a, senders, lambda k: "r0@pec.b.test", N, "root", threads=3)
            t.join(180)
            assert "at" in killed and len(done) == N
            mids = {mid for _, _, _, mid in done}

            def delivered():
                got = {}
                for u in senders:
                    for r_, c in count_by_ref(a.mails(u), ricevuta("avvenuta-consegna")).items():
                        got[r_] = got.get(r_, 0) + c
                return got
            wait_until(lambda: len(delivered()) >= N, 180, step=1, what="every delivery receipt")
            time.sleep(3)
            assert set(delivered()) == mids and set(delivered().values()) == {1}
            copies = count_by_ref(b.mails("r0"), trasporto("posta-certificata"))
            assert set(copies) == mids and set(copies.values()) == {1}
            (row,) = [x for x in json.loads(pecctl("-c", b.conf, "nodes", "--json").stdout)
                      if x["node"] == "b2"]
            assert not row["alive"] and row["spool_owner"] == "b1" and row["queued"] == 0, row
            verify_log(b.conf)
        finally:
            stop_all(a, *nodes)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_backup_of_a_node_leaves_the_database_to_pg_dump(tmp_path, pg):
    """pecctl backup of a node whose state is in PostgreSQL: pecd's snapshot copies the spool
    but no tracking file, the backup says the database is backed up with pg_dump and holds no
    evidence.db; the same without pecd (under the queue's lock); restore names pg_restore."""
    a, b, nodes, ca, directory, db = make_cluster(tmp_path, pg, nodes=1)
    a.add_user("mario")
    b.add_user("anna")
    a.start()
    b.start()
    try:
        submit_many(a, ["mario"], lambda k: "anna@pec.b.test", 3, "bk", threads=1)
        b.wait_mail("anna", trasporto("posta-certificata"), count=3)
        for i, running in enumerate((True, False)):
            if not running:
                b.stop()
            out = str(tmp_path / f"backup{i}")
            r = pecctl("-c", b.conf, "backup", out, check=False)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "back it up with pg_dump" in r.stdout and pg.uri(db) in r.stdout, r.stdout
            assert ("pecd's snapshot" in r.stdout) == running, r.stdout
            names = set(os.listdir(out))
            assert "MANIFEST" in names and "queue" in names, names
            assert "tracking.db" not in names and "evidence.db" not in names, names
            with open(os.path.join(out, "MANIFEST")) as f:
                manifest = f.read()
            assert "tracking" not in manifest and "evidence" not in manifest, manifest
        r = pecctl("-c", b.conf, "restore", str(tmp_path / "backup1"), "--force", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "restore it with pg_restore" in r.stdout, r.stdout
        # the log in the database is untouched by either
        verify_log(b.conf)
    finally:
        stop_all(a, b)


# ---- an exported day of the shared log --------------------------------------------------
# Records written here by an independent implementation of the record format of
# docs/evidence.md (hashlib), in two chains, so that the export is checked against the format
# as documented, not only against our own writer.

EV_FIELDS = ["type", "pec_id", "orig_msgid", "message_id", "sender", "recipients", "subject",
             "outcome", "queue_id", "dedupe_key"]


def ev_field(v):
    if v is None:
        return b"\xff\xff\xff\xff"
    b = str(v).encode()
    return len(b).to_bytes(4, "big") + b


def ev_hash(prev, seq, day, logged_at, event_time, values):
    import hashlib
    h = hashlib.sha256(prev + b"pecmail-evidence-1" + ev_field(seq) + ev_field(day)
                       + ev_field(logged_at) + ev_field(event_time))
    for name in EV_FIELDS:
        h.update(ev_field(values.get(name)))
    return h.digest()


def sql_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        return f"'\\x{v.hex()}'::bytea"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def write_chain(pg, db, chain, days, start=(0, bytes(32))):
    """Appends to chain one record per entry of days (a unix time each, its UTC day the
    record's), from start = (last seq, last hash); returns the new (seq, hash, day)."""
    import datetime
    seq, prev = start
    rows = []
    day = None
    for k, when in enumerate(days):
        seq += 1
        day = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%d")
        values = dict(type="accettazione", pec_id=f"opec{chain}.{seq}@pec.b.test",
                      orig_msgid=f"m{seq}@mua", sender=f"s{k}@pec.b.test",
                      recipients="r@pec.a.test", subject=f"Fattura {chain} {seq}", outcome="ok",
                      queue_id=f"Q{seq}")
        h = ev_hash(prev, seq, day, when, when, values)
        rows.append("(" + ", ".join(sql_literal(x) for x in
                                    [chain, seq, day, when, when]
                                    + [values.get(n) for n in EV_FIELDS] + [prev, h]) + ")")
        prev = h
    pg.psql("INSERT INTO evidence_events (chain, seq, day, logged_at, event_time, "
            + ", ".join(EV_FIELDS) + ", prev_hash, hash) VALUES " + ", ".join(rows), db)
    pg.psql(f"INSERT INTO evidence_chains (name, head_seq, head_hash, head_day) VALUES "
            f"({sql_literal(chain)}, {seq}, {sql_literal(prev)}, '{day}') ON CONFLICT (name) DO "
            f"UPDATE SET head_seq = excluded.head_seq, head_hash = excluded.head_hash, "
            f"head_day = excluded.head_day", db)
    return seq, prev, day


def test_export_a_day_of_the_shared_log(tmp_path, pg):
    """`pecctl log export --day D` on the shared log: one file with every node's chain of that
    day (the day's records and seal of each chain, and the seal before it), that
    `pecctl log verify FILE` checks alone, on a host without pecd.conf; an altered, cut or
    unlinked copy is caught; a day that one chain has not sealed yet is refused."""
    import shutil
    import sqlite3
    a, b, nodes, ca, directory, db = make_cluster(tmp_path, pg, nodes=1)
    now = int(time.time())
    noon = now // 86400 * 86400 - 86400 + 43200      # yesterday, 12:00 UTC
    # b1: two records two days ago, three yesterday; b2: two yesterday (its first day)
    s1 = write_chain(pg, db, "b1", [noon - 86400, noon - 86400 + 60])
    s1 = write_chain(pg, db, "b1", [noon, noon + 1, noon + 2], s1[:2])
    yesterday = s1[2]
    s2 = write_chain(pg, db, "b2", [noon + 5, noon + 6])
    r = pecctl("-c", b.conf, "log", "seal")
    assert "3 day(s) sealed" in r.stdout, r.stdout + r.stderr
    verify_log(b.conf)      # the records written here are a valid shared log
    out = str(tmp_path / f"evidence-{yesterday}.db")
    r = pecctl("-c", b.conf, "log", "export", "--day", yesterday, "--out", out, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"day {yesterday}, 5 records" in r.stdout and "every node's chain" in r.stdout, \
        r.stdout
    assert os.stat(out).st_mode & 0o777 == 0o600 and not os.path.exists(out + "-wal")
    # an auditor's host: no pecd.conf, the provider's certificate given
    cert = os.path.join(b.dir, "signing.pem")
    from pecd_harness import PECCTL

    def verify_file(path):
        return subprocess.run([PECCTL, "log", "verify", path, "--cert", cert],
                              capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    v = verify_file(out)
    assert v.returncode == 0, v.stdout + v.stderr
    assert f"evidence export of day {yesterday}" in v.stdout and "2 chains): intact" in v.stdout
    assert "chain b1: records 3..5 (3), following record 2, the last of day" in v.stdout, v.stdout
    assert "chain b2: records 1..2 (2), the start of the chain" in v.stdout, v.stdout
    assert "5 records in 1 days; 3 day seals verified" in v.stdout, v.stdout
    # the file, read as docs/evidence.md says: each chain's hashes and its signed seal
    f = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
    for chain, first, prev in (("b1", 3, None), ("b2", 1, bytes(32))):
        if prev is None:
            prev = f.execute("SELECT last_hash FROM chain_seals WHERE chain = ? AND last_seq = ?",
                             (chain, first - 1)).fetchone()[0]
        rows = f.execute("SELECT seq, day, logged_at, event_time, " + ", ".join(EV_FIELDS)
                         + ", prev_hash, hash FROM chain_events WHERE chain = ? ORDER BY seq",
                         (chain,)).fetchall()
        assert rows[0][0] == first
        for row in rows:
            assert row[-2] == prev
            assert ev_hash(prev, *row[:4], dict(zip(EV_FIELDS, row[4:14]))) == row[-1]
            prev = row[-1]
        signed, sig = f.execute("SELECT signed, signature FROM chain_seals WHERE chain = ? "
                                "AND day = ?", (chain, yesterday)).fetchone()
        assert f"chain: {chain}\n" in signed and f"last-hash: {prev.hex()}" in signed, signed
        (tmp_path / "seal.txt").write_bytes(signed.encode())
        (tmp_path / "seal.der").write_bytes(sig)
        o = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER",
                            "-in", str(tmp_path / "seal.der"), "-content",
                            str(tmp_path / "seal.txt"), "-CAfile", os.path.join(ca, "ca.pem"),
                            "-purpose", "any", "-out", "/dev/null"],
                           capture_output=True, text=True)
        assert o.returncode == 0, o.stderr
    f.close()

    def tampered(name, *sql):
        bad = str(tmp_path / name)
        shutil.copy(out, bad)
        os.chmod(bad, 0o600)
        t = sqlite3.connect(bad, isolation_level=None)
        for q in sql:
            t.execute(q)
        t.close()
        return verify_file(bad)
    v = tampered("edit.db", "UPDATE chain_events SET subject = 'Fattura 43' "
                 "WHERE chain = 'b2' AND seq = 2")
    assert v.returncode == 1 and "TAMPERED" in v.stdout and "chain b2 record 2" in v.stdout \
        and "altered" in v.stdout, v.stdout
    v = tampered("gone.db", "DELETE FROM chain_events WHERE chain = 'b1' AND seq = 4")
    assert v.returncode == 1 and "chain b1: record 4 is missing" in v.stdout, v.stdout
    v = tampered("cut.db", "DELETE FROM chain_events WHERE chain = 'b2'",
                 "DELETE FROM chain_seals WHERE chain = 'b2'")
    assert v.returncode == 1 and "holds 2 chains, it holds 1" in v.stdout, v.stdout
    v = tampered("unlinked.db", f"DELETE FROM chain_seals WHERE chain = 'b1' "
                 f"AND day <> '{yesterday}'")
    assert v.returncode == 1 and "chain b1 day" in v.stdout and "the seal before it" in v.stdout \
        and "is missing" in v.stdout, v.stdout
    v = tampered("moved.db", "UPDATE chain_seals SET chain = 'b9' WHERE chain = 'b2'")
    assert v.returncode == 1 and "seal invalid" in v.stdout, v.stdout
    # a name from the file is not printed unless it is a node's (no line of its own making)
    v = tampered("name.db", "UPDATE chain_events SET chain = 'b2' || char(10) || 'intact' "
                 "WHERE chain = 'b2'")
    assert v.returncode == 1 and "a record names no node's chain" in v.stdout, v.stdout
    # the same file is never written twice
    r = pecctl("-c", b.conf, "log", "export", "--day", yesterday, "--out", out, check=False)
    assert r.returncode == 1 and "File exists" in r.stderr, r.stderr
    # a day one chain has not sealed: refused, no file left
    write_chain(pg, db, "b2", [now], s2[:2])
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    part = str(tmp_path / "today.db")
    r = pecctl("-c", b.conf, "log", "export", "--day", today, "--out", part, check=False)
    assert r.returncode == 1 and "not sealed yet in chain b2" in r.stderr, r.stderr
    assert not os.path.exists(part)


def test_backup_holds_the_spools_taken_over(tmp_path, pg):
    """b2 dies with messages in its spool (for C, a provider that is down) and b1 takes the
    spool over: b1's backup holds that spool too (pecd pauses and copies it as its own), as
    no other backup made while b2 is down can; b2's backup says who holds its spool instead of
    failing; restored after the spool is lost, the spool is back where the [state] database
    says, and b1 takes it over again."""
    import shutil
    import smtplib
    import ssl
    from pec_providers import Provider
    K = 5
    a, b, nodes, ca, directory, db = make_cluster(tmp_path, pg, nodes=2)
    c = Provider(str(tmp_path), "Provider C", "pec.c.test", ca, directory)
    with open(directory, "a") as f:
        f.write(c.directory_entry())
    closed = free_port()
    with open(b.conf) as f:
        text = f.read()
    text = text.replace("[routes]\n", f"[routes]\npec.c.test = localhost:{closed}\n")
    text = text.replace("[tls_policy]\n", "[tls_policy]\npec.c.test = verify\n")
    with open(b.conf, "w") as f:
        f.write(text)
    b1, b2 = nodes
    pecctl("node", "add", b2.dir, "--from", b.dir, "--node", b2.name, "--force",
           "--smtp", f"127.0.0.1:{b2.ports['mx']}",
           "--submission", f"127.0.0.1:{b2.ports['submission']}")
    b.add_user("m0")
    for n in nodes:
        n.start()
    spool = os.path.join(b2.queue_dir, "queue")
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", b2.ports["submission"], timeout=30) as s:
            s.starttls(context=ctx)
            s.login("m0@pec.b.test", "m0-password")
            for k in range(K):
                s.sendmail("m0@pec.b.test", [f"dest{k}@pec.c.test"],
                           f"From: <m0@pec.b.test>\r\nTo: <dest{k}@pec.c.test>\r\nSubject: "
                           f"spool {k}\r\nMessage-ID: <spool.{k}@client.test>\r\n\r\nciao\r\n"
                           .encode())
        # accepted; their transport envelopes wait in b2's spool for C, which is down
        wait_until(lambda: len(b.mails("m0")) >= K, 30, what="the acceptances")
        wait_until(lambda: len(os.listdir(spool)) >= K, 30, what="b2's spool")
        b2.kill()
        wait_until(lambda: "now delivering the spool of node b2" in b1.log(100000), 30,
                   what="b1 taking b2's spool over")
        out1 = str(tmp_path / "backup-b1")
        r = pecctl("-c", b.conf, "backup", out1, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "spools=1 " in r.stdout and "the spool of node b2, which this node runs since " \
            "it took it over" in r.stdout, r.stdout
        copied = set(os.listdir(os.path.join(out1, "spools", "b2", "queue")))
        assert len(copied) >= K and copied <= set(os.listdir(spool)), (copied, os.listdir(spool))
        with open(os.path.join(out1, "MANIFEST")) as f:
            assert "f spools spools/b2/queue/" in f.read()
        # b2's own backup: its spool is in b1's
        out2 = str(tmp_path / "backup-b2")
        r = pecctl("-c", b2.conf, "backup", out2, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "is run by node b1, which took it over" in r.stdout, r.stdout
        assert os.path.exists(os.path.join(out2, "MANIFEST"))
        assert not os.path.exists(os.path.join(out2, "queue"))
        # the spool lost while b1 is stopped (it gives the spool back when it stops)
        b1.stop()
        shutil.rmtree(spool)
        r = pecctl("-c", b.conf, "restore", out1, "--force", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"restored the spool of node b2 into {b2.queue_dir}" in r.stdout, r.stdout
        assert set(os.listdir(spool)) == copied
        # b1 again: b2 still down, its restored spool is taken over and run again
        b1.start()
        wait_until(lambda: b1.log(100000).count("now delivering the spool of node b2") >= 2, 60,
                   what="b1 taking the restored spool over")
        (row,) = [x for x in json.loads(pecctl("-c", b.conf, "nodes", "--json").stdout)
                  if x["node"] == "b2"]
        assert row["spool_owner"] == "b1" and row["queued"] >= K, row
        verify_log(b.conf)
    finally:
        stop_all(a, *nodes)
