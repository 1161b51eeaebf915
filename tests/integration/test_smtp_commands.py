"""Every command and extension of docs/smtp-replies.md, one short dialog each."""
import pytest

from pecd_harness import (HOST, client_tls_context, message, queued_qid, received_re,
                          split_delivered, unique_id)

# The keywords in the order the server advertises them (src/smtp/server_cmd.c
# extensions[]): STARTTLS, AUTH and REQUIRETLS go in their place when offered.
def keywords(starttls=False, auth=False, requiretls=False):
    return (["PIPELINING", "SIZE 100000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
             "DSN", "CHUNKING"] + (["STARTTLS"] if starttls else [])
            + (["AUTH PLAIN LOGIN"] if auth else []) + (["REQUIRETLS"] if requiretls else [])
            + ["HELP"])


SENDER_OK = "250 2.1.0 Sender OK"
RCPT_OK = "250 2.1.5 Recipient OK"
RESET_OK = "250 2.0.0 Reset state"
NOOP_OK = "250 2.0.0 OK"
NEED_MAIL = "503 5.5.1 Need MAIL command first"
NEED_RCPT = "503 5.5.1 Need RCPT command first"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"


def dialog(c, *steps):
    """Sends each (command, reply) step and asserts the exact reply: a dialog reads as
    a transcript, and a failure names its step."""
    for n, (line, want) in enumerate(steps, 1):
        got = c.cmd(line)
        assert got == want, f"step {n}, {line!r}: got {got!r}, want {want!r}"


def mail(sender="a@client.test", params=""):
    """The step MAIL FROM:<sender> [params] answered 250 2.1.0 Sender OK."""
    return (f"MAIL FROM:<{sender}>" + (f" {params}" if params else ""), SENDER_OK)


def rcpt(addr):
    """The step RCPT TO:<addr> answered 250 2.1.5 Recipient OK."""
    return (f"RCPT TO:<{addr}>", RCPT_OK)


@pytest.fixture(scope="module")
def srv(make_module_instance):
    # submissions with auth = optional, so MAIL before AUTH works there (AUTH inside a
    # transaction); mx keeps auth = no (AUTH not available on this service).
    return make_module_instance(conf={"submissions": {"auth": "optional"}})


@pytest.fixture
def c(srv):
    with srv.connect("mx") as client:
        yield client


# --------------------------------------------------------------------------- EHLO / HELO

def test_ehlo_mx_cleartext_keywords(c):
    assert c.ehlo() == keywords(starttls=True)


def test_ehlo_mx_after_starttls_keywords(c):
    c.ehlo()
    c.starttls()
    # mx has auth = no: REQUIRETLS yes, AUTH no, STARTTLS no longer.
    assert c.ehlo() == keywords(requiretls=True)


def test_ehlo_submission_keywords_before_and_after_tls(srv):
    with srv.connect("submission") as c:
        assert c.ehlo() == keywords(starttls=True)
        c.starttls()
        assert c.ehlo() == keywords(auth=True, requiretls=True)


def test_ehlo_submissions_implicit_tls_keywords(srv):
    with srv.connect("submissions") as c:
        assert c.ehlo() == keywords(auth=True, requiretls=True)


def test_ehlo_listener_without_starttls(make_instance):
    inst = make_instance(conf={"mx": {"tls": "none"}})
    with inst.connect("mx") as c:
        assert c.ehlo() == keywords()
        dialog(c, ("STARTTLS", "502 5.5.1 STARTTLS not available"),
               mail())


def test_ehlo_twice_resets_transaction(c):
    c.ehlo()
    dialog(c, mail())
    c.ehlo()
    assert c.cmd("RCPT TO:<alice@example.test>") == "503 5.5.1 Need MAIL command first"


def test_helo(c):
    dialog(c, ("HELO client.test", f"250 {HOST}"),
           mail())


def test_ehlo_helo_without_name(c):
    assert c.cmd("EHLO") == "501 5.5.4 Syntax: EHLO hostname"
    assert c.cmd("HELO") == "501 5.5.4 Syntax: HELO hostname"
    assert c.cmd("MAIL FROM:<a@client.test>") == "503 5.5.1 Send EHLO or HELO first"


# --------------------------------------------------------------------------- preconditions

EHLO = ("EHLO client.test", None)      # a step whose reply c.ehlo() checks
STARTTLS = ("STARTTLS", None)          # a step done by c.starttls()


def run_steps(c, steps):
    for line, want in steps:
        if (line, want) == EHLO:
            c.ehlo()
        elif (line, want) == STARTTLS:
            c.starttls()
        else:
            dialog(c, (line, want))


# One row per refusal of a command's precondition (src/smtp/server_cmd.c, enum need):
# the listener, the dialog before, the command and its exact reply.  Where several
# preconditions fail, the row shows which refusal comes first.
PRECONDITIONS = [
    pytest.param("mx", [], "MAIL FROM:<a@client.test>", "503 5.5.1 Send EHLO or HELO first",
                 id="RFC 5321 §4.1.4: MAIL needs EHLO or HELO"),
    pytest.param("mx", [EHLO, mail()], "MAIL FROM:<b@client.test>",
                 "503 5.5.1 Nested MAIL command",
                 id="RFC 5321 §4.1.4: no MAIL inside a transaction"),
    pytest.param("mx", [EHLO], "RCPT TO:<alice@example.test>", NEED_MAIL,
                 id="RFC 5321 §3.3: RCPT needs MAIL"),
    pytest.param("mx", [EHLO, mail()], "DATA", NEED_RCPT,
                 id="RFC 5321 §3.3: DATA needs a recipient"),
    pytest.param("mx", [EHLO], "DATA now", "501 5.5.4 Syntax: DATA",
                 id="RFC 5321 §4.1.1.4: DATA takes no argument (checked first)"),
    pytest.param("mx", [EHLO], "STARTTLS now", "501 5.5.4 Syntax: STARTTLS",
                 id="RFC 3207 §4: STARTTLS takes no argument"),
    pytest.param("mx", [EHLO, STARTTLS], "STARTTLS", "503 5.5.1 TLS already active",
                 id="RFC 3207 §4.2: STARTTLS once"),
    pytest.param("mx", [EHLO], "AUTH PLAIN",
                 "538 5.7.11 Encryption required for requested authentication mechanism",
                 id="RFC 4954 §6: AUTH only over TLS (before any other check)"),
    pytest.param("mx", [EHLO, STARTTLS, EHLO], "AUTH PLAIN",
                 "502 5.5.1 AUTH not available on this service",
                 id="RFC 4954 §3: AUTH only where offered (mx: auth = no)"),
    pytest.param("submissions", [], "AUTH PLAIN", "503 5.5.1 Send EHLO first",
                 id="RFC 4954 §3: AUTH is an EHLO extension"),
    pytest.param("submissions", [EHLO, mail()], "AUTH PLAIN",
                 "503 5.5.1 AUTH not permitted during a mail transaction",
                 id="RFC 4954 §4: no AUTH inside a transaction"),
    pytest.param("submission", [], "MAIL FROM:<a@client.test>",
                 "503 5.5.1 Send EHLO or HELO first",
                 id="RFC 5321 §4.1.4: EHLO is asked for before STARTTLS"),
    pytest.param("submission", [EHLO], "MAIL FROM:<a@client.test>",
                 "530 5.7.0 Must issue a STARTTLS command first",
                 id="RFC 3207 §4: require_tls refuses MAIL before STARTTLS"),
    pytest.param("submission", [EHLO], "RCPT TO:<alice@example.test>", NEED_MAIL,
                 id="RFC 5321 §3.3: RCPT before STARTTLS still needs MAIL first"),
    pytest.param("submission", [EHLO, STARTTLS, EHLO], "MAIL FROM:<a@client.test>",
                 "530 5.7.0 Authentication required",
                 id="RFC 4954 §6: auth = required refuses MAIL before AUTH"),
    pytest.param("submission", [EHLO, STARTTLS], "MAIL FROM:<a@client.test>",
                 "503 5.5.1 Send EHLO or HELO first",
                 id="RFC 3207 §4.2: STARTTLS forgets the EHLO"),
]


@pytest.mark.parametrize("listener,before,line,reply", PRECONDITIONS)
def test_precondition_refused(srv, listener, before, line, reply):
    with srv.connect(listener) as c:
        run_steps(c, before)
        dialog(c, (line, reply))
        assert c.cmd("NOOP") == NOOP_OK      # a refusal leaves the session usable


# --------------------------------------------------------------------------- simple commands

def test_noop(c):
    assert c.cmd("NOOP") == "250 2.0.0 OK"
    c.ehlo()
    assert c.cmd("NOOP") == "250 2.0.0 OK"


def test_rset(c):
    c.ehlo()
    dialog(c, mail(),
           rcpt("alice@example.test"),
           ("RSET", RESET_OK),
           ("RCPT TO:<alice@example.test>", NEED_MAIL),
           mail())


def test_vrfy(c):
    c.ehlo()
    assert c.cmd("VRFY alice") == \
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
    assert c.cmd("VRFY nobody@example.test") == \
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"


def test_expn(c):
    c.ehlo()
    assert c.cmd("EXPN staff") == "502 5.5.1 EXPN not supported"


def test_help(c):
    assert c.cmd("HELP") == \
        "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"


def test_quit(c):
    c.ehlo()
    assert c.cmd("QUIT") == f"221 2.0.0 {HOST} Bye"
    c.expect_closed()


def test_unknown_command(c):
    dialog(c, ("FROBNICATE now", "500 5.5.1 Command unrecognized"),
           ("SEND FROM:<a@b.test>", "500 5.5.1 Command unrecognized"),  # obsolete
           ("NOOP", NOOP_OK))


def test_commands_are_case_insensitive(c):
    assert c.cmd("ehlo client.test").startswith(f"250-{HOST}")
    dialog(c, ("mail from:<a@client.test>", SENDER_OK),
           ("rcpt to:<alice@example.test>", RCPT_OK),
           ("rset", RESET_OK))


# --------------------------------------------------------------------------- MAIL

@pytest.mark.parametrize("line", [
    "MAIL FROM a@client.test",
    "MAIL FROM:a@client.test>",
    "MAIL FROM:<a@client.test",
    "MAIL TO:<a@client.test>",
    "MAIL",
])
def test_mail_syntax_error(c, line):
    c.ehlo()
    dialog(c, (line, "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"),
           mail())


def test_mail_null_sender(c):
    c.ehlo()
    dialog(c, mail(""))


@pytest.mark.parametrize("params", [
    "SIZE=1000",
    "BODY=8BITMIME",
    "BODY=7BIT",
    "SMTPUTF8",
    "RET=FULL",
    "RET=HDRS",
    "ENVID=abc+2Bdef",
    "SIZE=99999 BODY=8BITMIME RET=HDRS ENVID=QQ123",
    "size=10 body=8bitmime",
])
def test_mail_parameters_accepted(c, params):
    c.ehlo()
    dialog(c, mail("a@client.test", params))


@pytest.mark.parametrize("params,name", [
    ("SIZE=x", "SIZE"),
    ("BODY=X", "BODY"),
    ("RET=X", "RET"),
    ("ENVID=a+zz", "ENVID"),      # bad xtext: "+" must be followed by two hex digits
])
def test_mail_parameter_bad_value(c, params, name):
    c.ehlo()
    assert c.cmd(f"MAIL FROM:<a@client.test> {params}") == \
        f"501 5.5.4 Bad value for parameter {name}"


@pytest.mark.parametrize("params,name", [
    ("FOO=bar", "FOO"),
    ("XYZZY", "XYZZY"),
    ("SIZE=10 SIZE=10", "SIZE"),
    ("BODY=8BITMIME BODY=8BITMIME", "BODY"),
])
def test_mail_parameter_unknown_or_repeated(c, params, name):
    c.ehlo()
    assert c.cmd(f"MAIL FROM:<a@client.test> {params}") == \
        f"555 5.5.4 Unsupported parameter {name}"


def test_mail_parameter_not_offered_after_helo(c):
    dialog(c, ("HELO client.test", f"250 {HOST}"),
           ("MAIL FROM:<a@client.test> SMTPUTF8",
            "555 5.5.4 Unsupported parameter SMTPUTF8"))


def test_mail_size_over_limit(c):
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@client.test> SIZE=100001") == \
        "552 5.3.4 Message size exceeds fixed maximum message size"
    dialog(c, mail("a@client.test", "SIZE=100000"))


def test_requiretls_refused_on_cleartext(c):
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@client.test> REQUIRETLS") == \
        "530 5.7.10 REQUIRETLS needs a TLS session"
    assert c.cmd("RCPT TO:<alice@example.test>") == "503 5.5.1 Need MAIL command first"


def test_requiretls_accepted_on_tls(srv):
    tid = unique_id("requiretls")
    with srv.connect("mx") as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        qid = c.send_mail("a@client.test", ["bob@example.test"], message(tid),
                          mail_params="REQUIRETLS")
    [m] = srv.wait_messages("bob@example.test", marker=tid)
    assert m.qid == qid


def test_non_ascii_address_needs_smtputf8(c):
    c.ehlo()
    dialog(c, ("MAIL FROM:<jörg@exämple.test>", "553 5.6.7 Non-ASCII address needs SMTPUTF8"),
           mail(),
           ("RCPT TO:<jörg@example.test>", "553 5.6.7 Non-ASCII address needs SMTPUTF8"))


def test_smtputf8_message_delivered(srv):
    tid = unique_id("utf8")
    msg = message(tid, sender="jörg@exämple.test", subject="Grüße",
                  body="Schöne Grüße — ☃\r\n")
    with srv.connect("mx") as c:
        c.ehlo()
        qid = c.send_mail("jörg@exämple.test", ["alice@example.test"], msg,
                          mail_params="SMTPUTF8 BODY=8BITMIME")
    [m] = srv.wait_messages("alice@example.test", marker=tid)
    rp, dt, received, rest = split_delivered(m.data)
    assert rp == "Return-Path: <jörg@exämple.test>"
    assert dt == "Delivered-To: alice@example.test"
    assert received_re("client.test", "UTF8SMTP", qid, rcpt="alice@example.test").match(received), \
        received
    assert rest == msg


# --------------------------------------------------------------------------- RCPT

@pytest.mark.parametrize("line", [
    "RCPT TO alice@example.test",
    "RCPT TO:<alice@example.test",
    "RCPT FROM:<alice@example.test>",
    "RCPT",
])
def test_rcpt_syntax_error(c, line):
    c.ehlo()
    dialog(c, mail(),
           (line, "501 5.5.4 Syntax: RCPT TO:<address> [parameters]"),
           rcpt("alice@example.test"))


def test_rcpt_local_users_and_domains(c):
    c.ehlo()
    dialog(c, mail(),
           rcpt("alice@example.test"),
           rcpt("carol@other.test"),  # local_domains
           rcpt("bob@EXAMPLE.Test"))  # domain case


def test_rcpt_unknown_local_user(c):
    c.ehlo()
    dialog(c, mail(),
           ("RCPT TO:<nobody@example.test>",
            "550 5.1.1 <nobody@example.test>: Recipient address rejected: no such user"),
           ("RCPT TO:<alice@other.test>",
            "550 5.1.1 <alice@other.test>: Recipient address rejected: no such user"),
           rcpt("alice@example.test"))


def test_rcpt_relay_denied(c):
    c.ehlo()
    dialog(c, mail(),
           ("RCPT TO:<someone@elsewhere.test>",
            "550 5.7.1 <someone@elsewhere.test>: Relay access denied"),
           ("RCPT TO:<alice@sub.example.test>",
            "550 5.7.1 <alice@sub.example.test>: Relay access denied"))


def test_rcpt_dsn_parameters(c):
    c.ehlo()
    dialog(c, mail("a@client.test", "RET=HDRS ENVID=env1"),
           ("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE "
            "ORCPT=rfc822;alice@example.test", RCPT_OK),
           ("RCPT TO:<bob@example.test> NOTIFY=NEVER", RCPT_OK),
           ("RCPT TO:<dave@example.test> ORCPT=rfc822;d+2Bx@example.test", RCPT_OK),
           ("RCPT TO:<erin@example.test> NOTIFY=BOGUS",
            "501 5.5.4 Bad value for parameter NOTIFY"),
           ("RCPT TO:<erin@example.test> FOO=bar", "555 5.5.4 Unsupported parameter FOO"))


def test_rcpt_postmaster(srv):
    tid = unique_id("postmaster")
    with srv.connect("mx") as c:
        c.ehlo()
        dialog(c, mail(),
               rcpt("postmaster"))
        queued_qid(c.data(message(tid, to="postmaster")))
        # postmaster of any local domain, any case (RFC 5321 §4.5.1)
        dialog(c, mail(),
               rcpt("postmaster@other.test"),
               rcpt("PostMaster"),
               ("RSET", RESET_OK))
    srv.wait_messages("postmaster@example.test", marker=tid)


# --------------------------------------------------------------------------- DATA

def test_data_without_rcpt(c):
    c.ehlo()
    dialog(c, ("DATA", NEED_RCPT),
           mail(),
           ("DATA", NEED_RCPT))
    assert c.cmd("RCPT TO:<nobody@example.test>").startswith("550 5.1.1")
    assert c.cmd("DATA") == "503 5.5.1 Need RCPT command first"


def test_data_dot_stuffing_preserved(srv):
    tid = unique_id("dots")
    body = (b".leading dot\r\n"
            b"..two dots\r\n"
            b".\r\n"            # a lone dot inside the message: sent as ".."
            b" .not at start\r\n"
            b"...\r\n"
            b"last\r\n")
    msg = message(tid, body=body)
    with srv.connect("mx") as c:
        c.ehlo()
        dialog(c, mail(),
               rcpt("alice@example.test"),
               ("DATA", GO_AHEAD))
        wire = msg.replace(b"\r\n.", b"\r\n..")
        assert b"\r\n..leading dot\r\n...two dots\r\n..\r\n .not" in wire
        c.send(wire + b".\r\n")
        qid = queued_qid(c.reply())
        assert c.cmd("NOOP") == "250 2.0.0 OK"
    [m] = srv.wait_messages("alice@example.test", marker=tid)
    assert m.qid == qid
    assert split_delivered(m.data)[3] == msg


def test_data_first_line_starts_with_dot(srv):
    """The start of DATA is the start of a line: a first line ".." is ".", unstuffed."""
    tid = unique_id("firstdot")
    msg = b".first line\r\n" + message(tid)
    with srv.connect("mx") as c:
        c.ehlo()
        qid = c.send_mail("a@client.test", ["dave@example.test"], msg)   # sent as "..first"
    [m] = srv.wait_messages("dave@example.test", marker=tid)
    assert m.qid == qid
    assert split_delivered(m.data)[3] == msg


def test_rset_discards_bdat_chunks(srv):
    """Chunks of a transaction ended by RSET never leak into the next message."""
    tid = unique_id("noleak")
    msg = message(tid)
    with srv.connect("mx") as c:
        c.ehlo()
        dialog(c, mail(),
               rcpt("alice@example.test"))
        c.send(b"BDAT 10\r\nLEAKED!!\r\n")
        assert c.reply() == "250 2.0.0 10 octets received"
        assert c.cmd("RSET") == "250 2.0.0 Reset state"
        qid = c.send_mail("a@client.test", ["alice@example.test"], msg)
        c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<bob@example.test>\r\n"
               b"BDAT 10\r\nLEAKED!!\r\n")
        assert c.replies(3)[2] == "250 2.0.0 10 octets received"
        assert c.cmd("RSET") == "250 2.0.0 Reset state"
        c.send(f"MAIL FROM:<a@client.test>\r\nRCPT TO:<bob@example.test>\r\n"
               f"BDAT {len(msg)} LAST\r\n".encode() + msg)
        assert c.replies(2) == [SENDER_OK, RCPT_OK]
        qid2 = queued_qid(c.reply())
    [m] = srv.wait_messages("alice@example.test", marker=tid)
    assert m.qid == qid and split_delivered(m.data)[3] == msg
    [m] = srv.wait_messages("bob@example.test", marker=tid)
    assert m.qid == qid2 and split_delivered(m.data)[3] == msg


def test_data_empty_message(srv):
    with srv.connect("mx") as c:
        c.ehlo()
        dialog(c, mail(),
               rcpt("frank@example.test"),
               ("DATA", GO_AHEAD))
        c.send(b".\r\n")
        queued_qid(c.reply())


def test_two_transactions_in_one_session(srv):
    t1, t2 = unique_id("two"), unique_id("two")
    with srv.connect("mx") as c:
        c.ehlo()
        q1 = c.send_mail("a@client.test", ["bob@example.test"], message(t1))
        q2 = c.send_mail("a@client.test", ["bob@example.test"], message(t2))
    assert q1 != q2
    assert [m.qid for m in srv.wait_messages("bob@example.test", marker=t1)] == [q1]
    assert [m.qid for m in srv.wait_messages("bob@example.test", marker=t2)] == [q2]


# --------------------------------------------------------------------------- BDAT

def test_bdat_chunks(srv):
    tid = unique_id("bdat")
    msg = message(tid, body=b".not stuffed in BDAT\r\n..two\r\nend\r\n")
    a, b = msg[:40], msg[40:]
    with srv.connect("mx") as c:
        c.ehlo()
        dialog(c, mail("a@client.test", "BODY=8BITMIME"),
               rcpt("alice@example.test"))
        c.send(f"BDAT {len(a)}\r\n".encode() + a)
        assert c.reply() == f"250 2.0.0 {len(a)} octets received"
        c.send(f"BDAT {len(b)} LAST\r\n".encode() + b)
        qid = queued_qid(c.reply())
        assert c.cmd("NOOP") == "250 2.0.0 OK"
    [m] = srv.wait_messages("alice@example.test", marker=tid)
    assert m.qid == qid
    assert split_delivered(m.data)[3] == msg     # no un-stuffing with BDAT


def test_bdat_pipelined_chunks_and_bdat_0_last(srv):
    tid = unique_id("bdatpipe")
    msg = message(tid)
    parts = [msg[:10], msg[10:11], msg[11:]]
    wire = b"MAIL FROM:<a@client.test>\r\nRCPT TO:<bob@example.test>\r\n"
    for p in parts:
        wire += f"BDAT {len(p)}\r\n".encode() + p
    wire += b"BDAT 0 LAST\r\nNOOP\r\n"
    with srv.connect("mx") as c:
        c.ehlo()
        c.send(wire)     # one write (RFC 3030 allows pipelining BDAT)
        assert c.replies(2) == [SENDER_OK, RCPT_OK]
        total = 0
        for p in parts:
            total += len(p)
            # the octets received so far in the transaction (RFC 3030 leaves the text free)
            assert c.reply() == f"250 2.0.0 {total} octets received"
        qid = queued_qid(c.reply())
        assert c.reply() == "250 2.0.0 OK"
    [m] = srv.wait_messages("bob@example.test", marker=tid)
    assert m.qid == qid
    assert split_delivered(m.data)[3] == msg


def test_bdat_without_rcpt_discards_chunk(c):
    c.ehlo()
    c.send(b"BDAT 12\r\nNOOP\r\nNOOP\r\nNOOP\r\n")   # the chunk is 12 octets: "NOOP\r\nNOOP\r\n"
    assert c.reply() == "503 5.5.1 Need RCPT command first"
    assert c.reply() == "250 2.0.0 OK"           # only the third NOOP is a command
    dialog(c, mail())
    c.send(b"BDAT 5 LAST\r\nhello")
    assert c.reply() == "503 5.5.1 Need RCPT command first"
    assert c.cmd("NOOP") == "250 2.0.0 OK"


@pytest.mark.parametrize("args", ["x", "", "-1", "10 NOTLAST", "12x"])
def test_bdat_bad_size(c, args):
    c.ehlo()
    dialog(c, mail(),
           rcpt("alice@example.test"),
           (f"BDAT {args}".rstrip(), "501 5.5.4 Syntax: BDAT size [LAST]"))


def test_data_after_bdat(c):
    c.ehlo()
    dialog(c, mail(),
           rcpt("alice@example.test"))
    c.send(b"BDAT 4\r\nab\r\n")
    assert c.reply() == "250 2.0.0 4 octets received"
    dialog(c, ("DATA", "503 5.5.1 DATA not permitted after BDAT"),
           ("RSET", RESET_OK),
           mail())


# --------------------------------------------------------------------------- Received

def test_received_header_esmtp_and_smtp(srv):
    t1, t2 = unique_id("recv"), unique_id("recv")
    m1, m2 = message(t1), message(t2)
    with srv.connect("mx") as c:
        c.ehlo("client-one.test")
        q1 = c.send_mail("a@client.test", ["erin@example.test"], m1)
    with srv.connect("mx") as c:
        assert c.cmd("HELO client-two.test") == f"250 {HOST}"
        q2 = c.send_mail("a@client.test", ["erin@example.test", "frank@example.test"], m2)
    [d1] = srv.wait_messages("erin@example.test", marker=t1)
    rp, dt, rcv, rest = split_delivered(d1.data)
    assert (rp, dt) == ("Return-Path: <a@client.test>", "Delivered-To: erin@example.test")
    assert received_re("client-one.test", "ESMTP", q1, rcpt="erin@example.test").match(rcv), rcv
    assert rest == m1
    [d2] = srv.wait_messages("erin@example.test", marker=t2)
    rcv = split_delivered(d2.data)[2]
    assert received_re("client-two.test", "SMTP", q2).match(rcv), rcv
    assert " for <" not in rcv          # two recipients: no "for" clause


def test_received_header_esmtps(srv):
    tid = unique_id("recvtls")
    msg = message(tid)
    with srv.connect("mx") as c:
        c.ehlo()
        tls = c.starttls(client_tls_context())
        c.ehlo("tls-client.test")
        qid = c.send_mail("a@client.test", ["dave@example.test"], msg)
        version, cipher = tls.version(), tls.cipher()[0]
    [m] = srv.wait_messages("dave@example.test", marker=tid)
    rcv = split_delivered(m.data)[2]
    assert received_re("tls-client.test", "ESMTPS", qid, rcpt="dave@example.test",
                       tls=(version, cipher)).match(rcv), rcv


def test_smtputf8_recipient(make_instance):
    """A user with a UTF-8 local part (RFC 6531): reachable only with SMTPUTF8."""
    inst = make_instance(start=False)
    r = inst.pecctl("user", "add", "jörg@example.test", "--password-stdin", input="pw-jörg\n")
    assert r.returncode == 0, r.stderr
    inst.start()
    tid = unique_id("utf8rcpt")
    msg = message(tid, to="jörg@example.test", subject="Grüße")
    with inst.connect("mx") as c:
        c.ehlo()
        dialog(c, mail(),
               ("RCPT TO:<jörg@example.test>", "553 5.6.7 Non-ASCII address needs SMTPUTF8"),
               ("RSET", RESET_OK))
        qid = c.send_mail("a@client.test", ["jörg@example.test"], msg, mail_params="SMTPUTF8")
    [m] = inst.wait_messages("jörg@example.test", marker=tid)
    assert m.qid == qid
    rp, dt, rcv, rest = split_delivered(m.data)
    assert dt == "Delivered-To: jörg@example.test"
    assert received_re("client.test", "UTF8SMTP", qid, rcpt="jörg@example.test").match(rcv), rcv
    assert rest == msg
