"""SMTP smuggling: only CRLF.CRLF ends DATA; bare LF/CR and NUL are refused."""
import pytest

from pecd_harness import message, queued_qid, split_delivered, unique_id

BARE = "550 5.6.0 Bare LF or CR in message data; only CRLF ends a line; message refused"
NUL = "550 5.6.0 NUL octet in message data; message refused"

VARIANTS = {
    "LF.LF": b"\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.CR": b"\r\n.\r",
}


def smuggled_payload(tid, smug, variant):
    """A message that 'ends' with a fake end-of-data, then a smuggled transaction, then
    the real end."""
    return (message(tid, body=b"Innocent body.\r\nLast line") + variant +
            b"MAIL FROM:<evil@attacker.test>\r\n"
            b"RCPT TO:<bob@example.test>\r\n"
            b"DATA\r\n" + message(smug, sender="evil@attacker.test", to="bob@example.test") +
            b".\r\n")


def check_nothing_delivered(server, c, markers):
    """The session goes on; a marker message sent afterwards is delivered, the refused
    (and smuggled) ones are not."""
    assert c.cmd("NOOP") == "250 2.0.0 OK"              # the very next reply: nothing ran
    assert c.cmd("RCPT TO:<alice@example.test>") == "503 5.5.1 Need MAIL command first"
    after = unique_id("after")
    after_msg = message(after)
    c.send_mail("a@client.test", ["alice@example.test", "bob@example.test"], after_msg)
    for rcpt in ("alice@example.test", "bob@example.test"):
        [m] = server.wait_messages(rcpt, marker=after)
        assert split_delivered(m.data)[3] == after_msg     # nothing of the refused one leaks
    server.wait_queue_empty()
    for rcpt in ("alice@example.test", "bob@example.test"):
        for m in markers:
            assert server.messages(rcpt, marker=m) == [], f"{m} delivered to {rcpt}"


def start_data(c, rcpt="alice@example.test"):
    assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
    assert c.cmd(f"RCPT TO:<{rcpt}>") == "250 2.1.5 Recipient OK"
    assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_smuggling_variant(server, variant):
    tid, smug = unique_id("smuggle"), unique_id("smuggled")
    with server.connect("mx") as c:
        c.ehlo()
        start_data(c)
        c.send(smuggled_payload(tid, smug, VARIANTS[variant]))
        assert c.reply() == BARE
        check_nothing_delivered(server, c, [tid, smug])


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_smuggling_variant_trickled(server, variant):
    """The same, fed one octet per write (the end-of-data detector must be resumable)."""
    tid, smug = unique_id("smuggle-t"), unique_id("smuggled-t")
    with server.connect("mx") as c:
        c.ehlo()
        start_data(c)
        data = smuggled_payload(tid, smug, VARIANTS[variant])
        for i in range(len(data)):
            c.send(data[i:i + 1])
        assert c.reply() == BARE
        check_nothing_delivered(server, c, [tid, smug])


@pytest.mark.parametrize("body", [b"bare\nLF inside\r\n", b"bare\rCR inside\r\n",
                                  b"ends with bare CR\r", b"ends with bare LF\n",
                                  b"\n.\r\n\r\n"])
def test_bare_lf_or_cr_anywhere(server, body):
    tid = unique_id("bare")
    with server.connect("mx") as c:
        c.ehlo()
        start_data(c)
        c.send(message(tid, body=body) + b"\r\n.\r\n")
        assert c.reply() == BARE
        check_nothing_delivered(server, c, [tid])


def test_nul_in_data(server):
    tid = unique_id("nul")
    with server.connect("mx") as c:
        c.ehlo()
        start_data(c)
        c.send(message(tid, body=b"a NUL \x00 here\r\n") + b".\r\n")
        assert c.reply() == NUL
        check_nothing_delivered(server, c, [tid])


def test_nul_in_bdat(server):
    tid = unique_id("nulbdat")
    msg = message(tid, body=b"NUL\x00\r\n")
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
        c.send(f"BDAT {len(msg)} LAST\r\n".encode() + msg)
        assert c.reply() == NUL
        check_nothing_delivered(server, c, [tid])


def test_bare_lf_in_bdat(server):
    tid = unique_id("lfbdat")
    msg = message(tid, body=b"one\ntwo\r\n")
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
        c.send(f"BDAT {len(msg)} LAST\r\n".encode() + msg)
        assert c.reply() == BARE
        check_nothing_delivered(server, c, [tid])


def test_end_of_data_inside_bdat_is_data(server):
    """In a BDAT chunk CRLF.CRLF is just data: one message, nothing smuggled."""
    tid, smug = unique_id("bdat-end"), unique_id("bdat-smuggled")
    msg = (message(tid, body=b"before\r\n") + b".\r\nMAIL FROM:<evil@attacker.test>\r\n"
           b"RCPT TO:<bob@example.test>\r\nDATA\r\n" +
           message(smug, to="bob@example.test") + b".\r\n")
    with server.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
        c.send(f"BDAT {len(msg)} LAST\r\n".encode() + msg)
        qid = queued_qid(c.reply())
        assert c.cmd("NOOP") == "250 2.0.0 OK"
    [m] = server.wait_messages("alice@example.test", marker=tid)
    assert m.qid == qid
    assert split_delivered(m.data)[3] == msg
    server.wait_queue_empty()
    assert server.messages("bob@example.test", marker=smug) == []


def test_bare_lf_in_command(server):
    with server.connect("mx") as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@client.test>\nRCPT TO:<alice@example.test>\r\nNOOP\r\n")
        first = c.reply()
        assert first == "500 5.5.2 Bare LF in command; only CRLF ends a line"
        rest = []
        while True:
            r = c.reply()
            if r == "250 2.0.0 OK":
                break
            rest.append(r)
        # Neither half of the LF-joined line may have been executed as a command.
        assert all(not r.startswith("250") for r in rest), rest
        assert len(rest) <= 1, rest
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"   # not "Nested"


def test_bare_lf_in_ehlo(server):
    with server.connect("mx") as c:
        c.send(b"EHLO client.test\n")
        c.send(b"\r\n")
        assert c.reply() == "500 5.5.2 Bare LF in command; only CRLF ends a line"


def test_binary_garbage_never_crashes(server):
    """Random octets as commands, inside DATA and inside BDAT: replies or a close, never
    a crash; a normal session works afterwards."""
    import random
    import socket
    rng = random.Random(20240101)
    for i in range(30):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        s = socket.create_connection(("127.0.0.1", server.ports["mx"]), timeout=5)
        try:
            prefix = [b"", b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\n"
                      b"DATA\r\n", b"EHLO x\r\nMAIL FROM:<a@b.test>\r\n"
                      b"RCPT TO:<alice@example.test>\r\nBDAT 2000\r\n"][i % 3]
            s.sendall(prefix + junk + b"\r\n.\r\nQUIT\r\n")
            s.settimeout(0.2)
            try:
                while s.recv(65536):
                    pass
            except (socket.timeout, ConnectionResetError):
                pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            s.close()
    assert server.running(), server.log()
    with server.connect("mx") as c:
        c.ehlo()
        c.send_mail("a@client.test", ["bob@example.test"], message(unique_id("after-junk")))
