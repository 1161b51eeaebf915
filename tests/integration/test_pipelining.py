"""PIPELINING (RFC 2920): whole transactions in one write, replies in order."""
from pecd_harness import HOST, dot_stuff, message, queued_qid, split_delivered, unique_id


def test_rfc2920_groups(server):
    """The groups a conforming client sends: MAIL..DATA in one write, then the data."""
    tid = unique_id("pipe")
    msg = message(tid)
    with server.connect("mx") as c:
        c.ehlo()
        c.send("MAIL FROM:<a@client.test>\r\n"
               "RCPT TO:<alice@example.test>\r\n"
               "RCPT TO:<nobody@example.test>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "DATA\r\n")
        assert c.replies(5) == [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "550 5.1.1 <nobody@example.test>: Recipient address rejected: no such user",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
        c.send(dot_stuff(msg) + b".\r\nNOOP\r\nQUIT\r\n")
        qid = queued_qid(c.reply())
        assert c.replies(2) == ["250 2.0.0 OK", f"221 2.0.0 {HOST} Bye"]
        c.expect_closed()
    for rcpt in ("alice@example.test", "bob@example.test"):
        [m] = server.wait_messages(rcpt, marker=tid)
        assert m.qid == qid
        assert split_delivered(m.data)[3] == msg


def test_whole_session_in_one_write(server):
    """EHLO, two transactions (DATA and BDAT), RSET, errors and QUIT in a single write."""
    t1, t2 = unique_id("onewrite"), unique_id("onewrite")
    m1, m2 = message(t1), message(t2)
    wire = (b"EHLO client.test\r\n"
            b"MAIL FROM:<a@client.test>\r\n"
            b"RCPT TO:<dave@example.test>\r\n"
            b"RCPT TO:<x@elsewhere.test>\r\n"
            b"DATA\r\n" + dot_stuff(m1) + b".\r\n"
            b"RSET\r\n"
            b"MAIL FROM:<>\r\n"
            b"RCPT TO:<erin@example.test>\r\n"
            b"BDAT " + str(len(m2)).encode() + b" LAST\r\n" + m2 +
            b"VRFY x\r\n"
            b"NOOP\r\n"
            b"QUIT\r\n")
    with server.connect("mx") as c:
        c.send(wire)
        ehlo = c.reply_lines()
        assert ehlo[0] == f"250-{HOST}" and ehlo[-1].startswith("250 "), ehlo
        assert c.replies(4) == [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "550 5.7.1 <x@elsewhere.test>: Relay access denied",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
        q1 = queued_qid(c.reply())
        assert c.replies(3) == [
            "250 2.0.0 Reset state",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
        ]
        q2 = queued_qid(c.reply())
        assert c.replies(3) == [
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
            "250 2.0.0 OK",
            f"221 2.0.0 {HOST} Bye",
        ]
        c.expect_closed()
    [d1] = server.wait_messages("dave@example.test", marker=t1)
    [d2] = server.wait_messages("erin@example.test", marker=t2)
    assert (d1.qid, d2.qid) == (q1, q2)
    assert split_delivered(d1.data)[3] == m1
    assert split_delivered(d2.data)[3] == m2
    assert split_delivered(d2.data)[0] == "Return-Path: <>"


def test_pipelined_replies_when_sent_byte_by_byte(server):
    """The same replies when the client trickles its pipelined group one octet a time."""
    tid = unique_id("trickle")
    msg = message(tid)
    wire = (b"MAIL FROM:<a@client.test>\r\nRCPT TO:<frank@example.test>\r\nDATA\r\n"
            + dot_stuff(msg) + b".\r\nNOOP\r\n")
    with server.connect("mx") as c:
        c.ehlo()
        for i in range(len(wire)):
            c.send(wire[i:i + 1])
        assert c.replies(3) == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK",
                                "354 End data with <CR><LF>.<CR><LF>"]
        qid = queued_qid(c.reply())
        assert c.reply() == "250 2.0.0 OK"
    [m] = server.wait_messages("frank@example.test", marker=tid)
    assert m.qid == qid
    assert split_delivered(m.data)[3] == msg


def test_many_pipelined_commands(server):
    """Thousands of commands in one write, the client reading only afterwards: every
    reply arrives, in order (the server must not stall on a full output buffer)."""
    n = 3000
    with server.connect("mx") as c:
        c.ehlo()
        c.send(b"NOOP\r\nVRFY x\r\n" * n + b"QUIT\r\n")
        for i in range(n):
            assert c.reply() == "250 2.0.0 OK", i
            assert c.reply().startswith("252 2.5.0 "), i
        assert c.reply() == f"221 2.0.0 {HOST} Bye"
        c.expect_closed()
