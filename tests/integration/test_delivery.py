"""Queue and Maildir delivery: exactly one byte-exact copy per recipient, retries, the
queue listing, restart with a deferred queue, SIGTERM, and start-up refusals."""
import os
import re
import shutil
import subprocess
import time

import pytest

from pecd_harness import (HOST, PECD, Mail, message, queued_qid, received_re,
                          split_delivered, unique_id, wait_port)


def block_mailbox(inst, addr):
    """Makes delivery to addr fail temporarily: the Maildir path is a regular file (we
    run as root, so permissions would not stop pecd)."""
    path = inst.maildir(addr)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.isdir(path):
        shutil.rmtree(path)
    with open(path, "w") as f:
        f.write("not a maildir\n")


def unblock_mailbox(inst, addr):
    os.unlink(inst.maildir(addr))


def queue_entry(inst, qid):
    """The `pecctl queue` entry of qid: its line, plus any indented continuation lines
    (the strict one-line format is checked by test_queue_listing_one_line_per_message)."""
    entry = None
    for line in inst.queue_lines():
        if line[:1].isspace():
            if entry is not None:
                entry += " " + line.strip()
        elif entry is not None:
            break
        elif line.split()[0] == qid:
            entry = line
    return entry


def check_maildir_file(m, qid):
    assert m.name_match, f"bad Maildir name {m.name!r}: want <arrival>.Q<QID>R<n>.<host>,S=<size>"
    assert m.qid == qid
    assert m.size == len(m.data), f"S={m.size} but the file has {len(m.data)} octets"
    assert os.path.basename(os.path.dirname(m.path)) == "new"


# --------------------------------------------------------------------------- delivery

def test_two_recipients_exactly_once_byte_exact(server):
    tid = unique_id("two")
    body = (b"Line one\r\n"
            b".A line starting with a dot\r\n"
            b"..two dots\r\n"
            b".\r\n"
            b"\r\n"
            b"8-bit: caf\xc3\xa9 \xe2\x82\xac\r\n"
            b"trailing spaces   \r\n"
            b"\ttab\r\n"
            b"From the start (no mbox quoting)\r\n"
            b"last line without much\r\n")
    msg = message(tid, to="alice@example.test, bob@example.test", body=body)
    with server.connect("mx") as c:
        c.ehlo("sender.client.test")
        assert c.cmd("MAIL FROM:<a@client.test> BODY=8BITMIME SIZE=%d" % len(msg)) == \
            "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
        assert c.cmd("RCPT TO:<bob@example.test>") == "250 2.1.5 Recipient OK"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        wire = msg.replace(b"\r\n.", b"\r\n..")       # dot-stuffing by hand
        c.send(wire + b".\r\n")
        qid = queued_qid(c.reply())
        assert c.cmd("QUIT") == f"221 2.0.0 {HOST} Bye"
    server.wait_messages("alice@example.test", marker=tid)
    server.wait_messages("bob@example.test", marker=tid)
    server.wait_queue_empty()
    indexes = []
    for rcpt in ("alice@example.test", "bob@example.test"):
        files = server.messages(rcpt, marker=tid)
        assert len(files) == 1, f"{rcpt}: {files}"
        m = files[0]
        check_maildir_file(m, qid)
        indexes.append(m.rcpt_index)
        rp, dt, rcv, rest = split_delivered(m.data)
        assert rp == "Return-Path: <a@client.test>"
        assert dt == f"Delivered-To: {rcpt}"
        assert received_re("sender.client.test", "ESMTP", qid).match(rcv), rcv
        assert rest == msg                         # byte-exact, CRLF kept, un-stuffed
        for sub in ("cur", "new", "tmp"):
            assert os.path.isdir(os.path.join(server.maildir(rcpt), sub))
    assert indexes[0] != indexes[1], "both copies have the same recipient index"


def test_domain_is_lower_cased_in_the_path(server):
    tid = unique_id("case")
    with server.connect("mx") as c:
        c.ehlo()
        qid = c.send_mail("a@client.test", ["dave@EXAMPLE.Test"], message(tid))
    [m] = server.wait_messages("dave@example.test", marker=tid)
    check_maildir_file(m, qid)
    assert os.path.dirname(os.path.dirname(m.path)) == \
        os.path.join(server.dir, "mail", "example.test", "dave")


def test_postmaster_delivered_to_configured_address(server):
    tid = unique_id("pm")
    with server.connect("mx") as c:
        c.ehlo()
        qid = c.send_mail("a@client.test", ["postmaster"], message(tid, to="postmaster"))
    [m] = server.wait_messages("postmaster@example.test", marker=tid)
    check_maildir_file(m, qid)


def test_tmp_is_empty_after_delivery(server):
    tid = unique_id("tmp")
    with server.connect("mx") as c:
        c.ehlo()
        c.send_mail("a@client.test", ["erin@example.test"], message(tid))
    server.wait_messages("erin@example.test", marker=tid)
    server.wait_queue_empty()
    assert os.listdir(os.path.join(server.maildir("erin@example.test"), "tmp")) == []


def test_client_disconnect_mid_transfer_queues_nothing(server):
    """A client that goes away in the middle of DATA or BDAT leaves no message."""
    t1, t2, t3 = unique_id("cut-data"), unique_id("cut-bdat"), unique_id("cut-end")
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<frank@example.test>") == "250 2.1.5 Recipient OK"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        c.send(message(t1))                            # no end-of-data
    with server.connect("mx") as c:
        c.ehlo()
        m2 = message(t2)
        c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<frank@example.test>\r\n"
               + f"BDAT {len(m2)}\r\n".encode() + m2)   # no LAST chunk
        assert c.replies(3)[2].startswith("250 2.0.0 ")
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<frank@example.test>") == "250 2.1.5 Recipient OK"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        c.send(message(t3) + b".\r")                   # all but the final LF
    marker = unique_id("cut-marker")
    with server.connect("mx") as c:
        c.ehlo()
        c.send_mail("a@client.test", ["frank@example.test"], message(marker))
    server.wait_messages("frank@example.test", marker=marker)
    server.wait_queue_empty()
    for t in (t1, t2, t3):
        assert server.messages("frank@example.test", marker=t) == [], t


# --------------------------------------------------------------------------- queue, retries

def test_queue_lists_deferred_message_and_retry_delivers(make_instance):
    inst = make_instance()   # retry_min = 1s, retry_max = 2s
    assert inst.queue_lines() == ["Queue is empty"]
    block_mailbox(inst, "bob@example.test")
    tid = unique_id("deferred")
    msg = message(tid)
    with inst.connect("mx") as c:
        c.ehlo()
        qid = c.send_mail("sender@client.test", ["alice@example.test", "bob@example.test"], msg)
    inst.wait_messages("alice@example.test", marker=tid)
    # bob's copy cannot be delivered: the message stays queued and is listed.
    deadline = time.monotonic() + 5
    while (line := queue_entry(inst, qid)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert line is not None, inst.queue_lines()
    assert "sender@client.test" in line and "bob@example.test" in line, line
    assert line.index("sender@client.test") < line.index("bob@example.test"), line
    time.sleep(2.5)                                 # at least one retry fails meanwhile
    assert queue_entry(inst, qid) is not None
    assert inst.messages("bob@example.test") == []
    unblock_mailbox(inst, "bob@example.test")
    [m] = inst.wait_messages("bob@example.test", marker=tid, timeout=10)
    check_maildir_file(m, qid)
    assert split_delivered(m.data)[3] == msg
    inst.wait_queue_empty()
    assert inst.queue_lines() == ["Queue is empty"]
    assert len(inst.messages("alice@example.test", marker=tid)) == 1   # not delivered twice


def test_queue_listing_one_line_per_message(make_instance):
    """`pecctl queue`: a line per message starting with the QID, then the sender, then
    the recipients."""
    inst = make_instance()
    block_mailbox(inst, "bob@example.test")
    qids = []
    with inst.connect("mx") as c:
        c.ehlo()
        for sender in ("one@client.test", "two@client.test"):
            assert c.cmd(f"MAIL FROM:<{sender}>") == "250 2.1.0 Sender OK"
            assert c.cmd("RCPT TO:<bob@example.test>") == "250 2.1.5 Recipient OK"
            assert c.cmd("RCPT TO:<erin@example.test>") == "250 2.1.5 Recipient OK"
            qids.append(queued_qid(c.data(message(unique_id("listing")))))
    inst.wait_messages("erin@example.test", count=2)
    lines = inst.queue_lines()
    for qid, sender in zip(qids, ("one@client.test", "two@client.test")):
        mine = [l for l in lines if qid in l]
        assert len(mine) == 1, lines
        line = mine[0]
        assert line.split()[0] == qid, lines
        assert sender in line and "bob@example.test" in line, lines
        assert line.index(sender) < line.index("bob@example.test"), lines


def test_restart_with_deferred_queue(make_instance):
    inst = make_instance()
    block_mailbox(inst, "bob@example.test")
    tids = [unique_id("restart") for _ in range(3)]
    qids = []
    with inst.connect("mx") as c:
        c.ehlo()
        for tid in tids:
            qids.append(c.send_mail("s@client.test", ["alice@example.test", "bob@example.test"],
                                    message(tid)))
    for tid in tids:
        inst.wait_messages("alice@example.test", marker=tid)
    assert inst.stop() == 0
    # While pecd is down the queue is still listed.
    listed = {l.split()[0] for l in inst.queue_lines()}
    assert set(qids) <= listed, inst.queue_lines()
    unblock_mailbox(inst, "bob@example.test")
    inst.start()
    for tid, qid in zip(tids, qids):
        [m] = inst.wait_messages("bob@example.test", marker=tid)
        check_maildir_file(m, qid)
    inst.wait_queue_empty()
    for tid in tids:
        assert len(inst.messages("alice@example.test", marker=tid)) == 1
        assert len(inst.messages("bob@example.test", marker=tid)) == 1


def test_restart_delivers_messages_queued_before_stop(make_instance):
    """Messages acknowledged just before SIGTERM are delivered, once, after a restart."""
    inst = make_instance()
    tids = [unique_id("burst") for _ in range(10)]
    with inst.connect("mx") as c:
        c.ehlo()
        for tid in tids:
            c.send_mail("s@client.test", ["frank@example.test"], message(tid))
    assert inst.stop() == 0
    inst.start()
    inst.wait_queue_empty()
    for tid in tids:
        assert len(inst.wait_messages("frank@example.test", marker=tid)) == 1


# --------------------------------------------------------------------------- SIGTERM

def test_sigterm_with_open_session(make_instance):
    inst = make_instance()
    proc = inst.proc
    with inst.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        proc.terminate()
        deadline = time.monotonic() + 5
        while True:                       # until pecd has seen the signal
            r = c.cmd("NOOP")
            if r != "250 2.0.0 OK" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r == f"421 4.3.2 {HOST} Service shutting down"
        c.expect_closed()
    assert proc.wait(10) == 0
    inst.proc = None


# --------------------------------------------------------------------------- start-up

GOOD = """[provider]
domain = example.test
hostname = mx.example.test
[tls]
certificate = tls.crt
key = tls.key
[mx]
listen = 127.0.0.1:{port}
require_tls = no
[limits]
max_recipients = 5
"""


def pecd_check(inst, text):
    with open(inst.conf_path, "w") as f:
        f.write(text)
    return subprocess.run([PECD, "-t", "-c", inst.conf_path], capture_output=True, text=True,
                          timeout=10)


def test_config_check_ok(make_instance):
    inst = make_instance(start=False)
    r = pecd_check(inst, GOOD.format(port=inst.ports["mx"]))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("extra,section,name", [
    ("bogus_key = 1", "limits", "bogus_key"),
    ("max_recipients = lots", "limits", "max_recipients"),
    ("timeout_command = 5 parsecs", "limits", "timeout_command"),
    ("max_message_size = 12Q", "limits", "max_message_size"),
    ("[bogus_section]\nkey = 1", None, "bogus_section"),
])
def test_config_errors_name_file_and_line(make_instance, extra, section, name):
    inst = make_instance(start=False)
    text = GOOD.format(port=inst.ports["mx"]) + extra + "\n"
    bad_line = text.count("\n")                   # the last line
    r = pecd_check(inst, text)
    assert r.returncode == 1, (r.returncode, r.stderr)
    out = r.stdout + r.stderr
    m = re.search(r"(\S*pecd\.conf):(\d+): (.*)", out)
    assert m, out
    assert os.path.basename(m.group(1)) == "pecd.conf"
    assert int(m.group(2)) == bad_line, out
    assert name in m.group(3), out


@pytest.mark.parametrize("section_text,name", [
    ("[provider]\nlog_level = loud\n", "log_level"),
    ("[mx]\ntls = sometimes\n", "tls"),
    ("[mx]\nrequire_tls = maybe\n", "require_tls"),
    ("[submission]\nauth = perhaps\n", "auth"),
])
def test_config_bad_values_in_other_sections(make_instance, section_text, name):
    inst = make_instance(start=False)
    text = GOOD.format(port=inst.ports["mx"]) + section_text
    bad_line = text.count("\n")
    r = pecd_check(inst, text)
    assert r.returncode == 1, (r.returncode, r.stderr)
    out = r.stdout + r.stderr
    assert re.search(r"pecd\.conf:%d: .*%s" % (bad_line, name), out), out


def test_config_error_stops_startup(make_instance):
    inst = make_instance(conf={"limits": {"no_such_limit": "1"}}, start=False)
    lines = open(inst.conf_path).read().splitlines()
    bad_line = lines.index("no_such_limit = 1") + 1
    r = subprocess.run([PECD, "-c", inst.conf_path], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert re.search(r"pecd\.conf:%d: .*no_such_limit" % bad_line, r.stderr), r.stderr


def test_missing_domain_refused(make_instance):
    inst = make_instance(start=False)
    r = pecd_check(inst, GOOD.format(port=inst.ports["mx"]).replace("domain = example.test\n", ""))
    assert r.returncode == 1
    assert "domain" in r.stderr + r.stdout


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_readable_tls_key_refused(make_instance, mode):
    inst = make_instance(start=False)
    os.chmod(os.path.join(inst.dir, "tls.key"), mode)
    inst.start(expect_ready=False)
    proc = inst.proc
    try:
        rc = proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pecd started with a key of mode {mode:o}\n{inst.log()}")
    inst.proc = None
    assert rc != 0
    assert not wait_port(inst.ports["mx"], timeout=0.2)
    assert "tls.key" in inst.log(), inst.log()


def test_key_mode_600_accepted_after_fix(make_instance):
    inst = make_instance(start=False)
    key = os.path.join(inst.dir, "tls.key")
    os.chmod(key, 0o644)
    inst.start(expect_ready=False)
    assert inst.proc.wait(10) != 0
    inst.proc = None
    os.chmod(key, 0o600)
    inst.start()
    with inst.connect("mx") as c:
        c.ehlo()
        c.starttls()


def test_mail_name_fields(server):
    """The Maildir name: <arrival>.Q<QID>R<n>.<host>,S=<size> (arrival starts with the
    Unix time of delivery)."""
    tid = unique_id("name")
    t0 = int(time.time())
    with server.connect("mx") as c:
        c.ehlo()
        qid = c.send_mail("a@client.test", ["bob@example.test"], message(tid))
    [m] = server.wait_messages("bob@example.test", marker=tid)
    check_maildir_file(m, qid)
    arrival = int(re.match(r"\d+", m.name_match.group("arrival")).group(0))
    assert t0 - 2 <= arrival <= int(time.time()) + 2
    assert isinstance(m, Mail)


# --------------------------------------------------------------------------- paths

def test_data_dir_holds_the_defaults(make_instance):
    """data_dir (relative to the config file) is where users, queue and mail default to."""
    inst = make_instance(conf={"provider": {"data_dir": "data"}}, start=False)
    data = os.path.join(inst.dir, "data")
    os.makedirs(data)
    os.rename(os.path.join(inst.dir, "users"), os.path.join(data, "users"))
    inst.start()
    tid = unique_id("datadir")
    with inst.connect("mx") as c:
        c.ehlo()
        qid = c.send_mail("a@client.test", ["alice@example.test"], message(tid))
    deadline = time.monotonic() + 10
    new = os.path.join(data, "mail", "example.test", "alice", "new")
    while not (os.path.isdir(new) and os.listdir(new)) and time.monotonic() < deadline:
        time.sleep(0.05)
    [name] = os.listdir(new)
    assert Mail(os.path.join(new, name)).qid == qid
    assert os.path.isdir(os.path.join(data, "queue"))
    assert not os.path.exists(os.path.join(inst.dir, "mail"))


def test_explicit_paths(make_instance):
    """[delivery] mailbox with %u, [queue] directory and [users] passwd_file, relative to
    the config file's directory."""
    inst = make_instance(conf={"delivery": {"mailbox": "maildir:boxes/%u"},
                               "queue": {"directory": "spool"},
                               "users": {"passwd_file": "accounts"}}, start=False)
    os.rename(os.path.join(inst.dir, "users"), os.path.join(inst.dir, "accounts"))
    inst.start()
    tid = unique_id("paths")
    with inst.connect("mx") as c:
        c.ehlo()
        qid = c.send_mail("a@client.test", ["bob@example.test"], message(tid))
    new = os.path.join(inst.dir, "boxes", "bob@example.test", "new")
    deadline = time.monotonic() + 10
    while not (os.path.isdir(new) and os.listdir(new)) and time.monotonic() < deadline:
        time.sleep(0.05)
    [name] = os.listdir(new)
    assert Mail(os.path.join(new, name)).qid == qid
    assert os.path.isdir(os.path.join(inst.dir, "spool"))
    assert not os.path.exists(os.path.join(inst.dir, "queue"))
    assert not os.path.exists(os.path.join(inst.dir, "mail"))


# --------------------------------------------------------------------------- queue write errors

@pytest.fixture
def small_queue_fs(make_instance):
    """An instance whose queue directory is a 192 KB tmpfs (needs root and mount rights:
    skipped where the environment forbids mounting)."""
    inst = make_instance(conf={"queue": {"directory": "qfs"}}, start=False)
    mnt = os.path.join(inst.dir, "qfs")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k,mode=700", "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield inst
    finally:
        inst.stop()
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def test_queue_full_gives_451(small_queue_fs):
    """When the queue cannot store a message: 451 4.3.0, the session goes on, and only the
    acknowledged messages are ever delivered."""
    inst = small_queue_fs
    block_mailbox(inst, "alice@example.test")           # keep queue files in the queue
    inst.start()
    acked, refused = [], []
    with inst.connect("mx") as c:
        c.ehlo()
        for i in range(8):
            tid = unique_id("qfull")
            msg = message(tid, body=(b"q" * 70 + b"\r\n") * 800)     # ~58 KB
            assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
            assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
            reply = c.data(msg)
            if reply.startswith("250 "):
                acked.append((tid, queued_qid(reply)))
            else:
                assert reply == "451 4.3.0 Queue file write error, try again later"
                refused.append(tid)
                assert c.cmd("NOOP") == "250 2.0.0 OK"
                assert c.cmd("RCPT TO:<alice@example.test>") == \
                    "503 5.5.1 Need MAIL command first"
        assert refused, f"192 KB of queue took {len(acked)} messages of 58 KB"
        assert acked, "not even one message fitted"
    unblock_mailbox(inst, "alice@example.test")
    inst.wait_queue_empty()
    for tid, qid in acked:
        [m] = inst.messages("alice@example.test", marker=tid)
        assert m.qid == qid
    for tid in refused:
        assert inst.messages("alice@example.test", marker=tid) == []


def thread_nices(proc):
    """{thread name: set of nice values} of a running process, from /proc."""
    out = {}
    for tid in os.listdir(f"/proc/{proc.pid}/task"):
        try:
            with open(f"/proc/{proc.pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{proc.pid}/task/{tid}/stat") as f:
                nice = int(f.read().rsplit(")", 1)[1].split()[16])
        except FileNotFoundError:
            continue
        out.setdefault(name, set()).add(nice)
    return out


@pytest.mark.parametrize("setting, want", [(None, 19), ("0", 0), ("10", 10)])
def test_delivery_threads_run_below_the_event_loop(make_instance, setting, want):
    """[queue] worker_nice: the delivery threads' nice value; the event loop, the committer
    and the rest keep pecd's own, so a client waiting for its 250 goes first."""
    inst = make_instance(conf={"queue": {"worker_nice": setting}} if setting else None)
    deadline = time.time() + 10
    while True:
        nices = thread_nices(inst.proc)
        if {"deliver", "commit"} <= nices.keys() or time.time() > deadline:
            break
        time.sleep(0.05)
    base = os.getpriority(os.PRIO_PROCESS, 0)          # pecd inherits ours
    assert nices["pecd"] == {base} and nices["commit"] == {base}, nices
    assert nices.get("deliver") == {min(19, base + want)}, nices
    # mail still flows
    tid = unique_id("nice")
    with inst.connect("mx") as c:
        c.ehlo()
        c.send_mail("s@client.test", ["alice@example.test"], message(tid))
    inst.wait_messages("alice@example.test", marker=tid)
