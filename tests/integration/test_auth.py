"""AUTH PLAIN and LOGIN (RFC 4954, 4616): only after TLS, with the documented replies."""
import base64

import pytest

from pecd_harness import message, password, received_re, split_delivered, unique_id

ALICE = "alice@example.test"


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain(user, pw, authzid=""):
    return b64(f"{authzid}\0{user}\0{pw}")


@pytest.fixture(scope="module")
def srv(make_module_instance):
    return make_module_instance(conf={"submissions": {"auth": "optional"}})


@pytest.fixture
def sub(srv):
    """A [submission] session after STARTTLS and EHLO."""
    with srv.connect("submission") as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        yield c


def test_auth_before_tls(srv):
    with srv.connect("submission") as c:
        kw = c.ehlo()
        assert not any(k.startswith("AUTH") for k in kw), kw
        assert c.cmd(f"AUTH PLAIN {plain(ALICE, password(ALICE))}") == \
            "538 5.7.11 Encryption required for requested authentication mechanism"
        assert c.cmd("AUTH LOGIN") == \
            "538 5.7.11 Encryption required for requested authentication mechanism"
        # Nothing was authenticated in clear text: after TLS, MAIL still needs AUTH.
        c.starttls()
        c.ehlo()
        assert c.cmd(f"MAIL FROM:<{ALICE}>") == "530 5.7.0 Authentication required"


def test_auth_not_available_on_mx(srv):
    with srv.connect("mx") as c:
        c.ehlo()
        c.starttls()
        kw = c.ehlo()
        assert not any(k.startswith("AUTH") for k in kw), kw
        assert c.cmd(f"AUTH PLAIN {plain(ALICE, password(ALICE))}") == \
            "502 5.5.1 AUTH not available on this service"


def test_submission_requires_auth(sub):
    assert sub.cmd(f"MAIL FROM:<{ALICE}>") == "530 5.7.0 Authentication required"
    assert sub.cmd("RCPT TO:<bob@example.test>") == "503 5.5.1 Need MAIL command first"


def test_plain_initial_response(sub):
    assert sub.cmd(f"AUTH PLAIN {plain(ALICE, password(ALICE))}") == \
        "235 2.7.0 Authentication successful"
    assert sub.cmd(f"MAIL FROM:<{ALICE}>") == "250 2.1.0 Sender OK"


def test_plain_with_challenge(sub):
    assert sub.cmd("AUTH PLAIN") in ("334", "334 ")
    assert sub.cmd(plain(ALICE, password(ALICE))) == "235 2.7.0 Authentication successful"


def test_plain_mechanism_name_case_insensitive(sub):
    assert sub.cmd(f"auth plain {plain(ALICE, password(ALICE))}") == \
        "235 2.7.0 Authentication successful"


def test_plain_wrong_password(sub):
    assert sub.cmd(f"AUTH PLAIN {plain(ALICE, 'wrong')}") == \
        "535 5.7.8 Authentication credentials invalid"
    assert sub.cmd(f"MAIL FROM:<{ALICE}>") == "530 5.7.0 Authentication required"
    # and a later correct attempt still works
    assert sub.cmd(f"AUTH PLAIN {plain(ALICE, password(ALICE))}") == \
        "235 2.7.0 Authentication successful"


def test_plain_unknown_user(sub):
    assert sub.cmd(f"AUTH PLAIN {plain('nobody@example.test', 'x')}") == \
        "535 5.7.8 Authentication credentials invalid"


def test_plain_other_users_password(sub):
    assert sub.cmd(f"AUTH PLAIN {plain(ALICE, password('bob@example.test'))}") == \
        "535 5.7.8 Authentication credentials invalid"


def test_login(sub):
    assert sub.cmd("AUTH LOGIN").startswith("334 ")
    assert sub.cmd(b64(ALICE)).startswith("334 ")
    assert sub.cmd(b64(password(ALICE))) == "235 2.7.0 Authentication successful"
    assert sub.cmd(f"MAIL FROM:<{ALICE}>") == "250 2.1.0 Sender OK"


def test_login_wrong_password(sub):
    assert sub.cmd("AUTH LOGIN").startswith("334 ")
    assert sub.cmd(b64(ALICE)).startswith("334 ")
    assert sub.cmd(b64("not-it")) == "535 5.7.8 Authentication credentials invalid"
    assert sub.cmd(f"MAIL FROM:<{ALICE}>") == "530 5.7.0 Authentication required"


def test_cancel(sub):
    assert sub.cmd("AUTH PLAIN") in ("334", "334 ")
    assert sub.cmd("*") == "501 5.0.0 Authentication cancelled"
    assert sub.cmd("AUTH LOGIN").startswith("334 ")
    assert sub.cmd("*") == "501 5.0.0 Authentication cancelled"
    assert sub.cmd("AUTH LOGIN").startswith("334 ")
    assert sub.cmd(b64(ALICE)).startswith("334 ")
    assert sub.cmd("*") == "501 5.0.0 Authentication cancelled"
    assert sub.cmd("NOOP") == "250 2.0.0 OK"
    assert sub.cmd(f"MAIL FROM:<{ALICE}>") == "530 5.7.0 Authentication required"


def test_bad_base64(sub):
    assert sub.cmd("AUTH PLAIN !!!not-base64!!!") == "501 5.5.2 Invalid base64 data"
    assert sub.cmd("AUTH PLAIN") in ("334", "334 ")
    assert sub.cmd("%%%") == "501 5.5.2 Invalid base64 data"
    assert sub.cmd("AUTH LOGIN").startswith("334 ")
    assert sub.cmd("abc$def") == "501 5.5.2 Invalid base64 data"
    assert sub.cmd("NOOP") == "250 2.0.0 OK"


def test_unknown_mechanism(sub):
    assert sub.cmd("AUTH CRAM-MD5") == "504 5.5.4 Unrecognized authentication mechanism"
    assert sub.cmd("AUTH XOAUTH2 abc") == "504 5.5.4 Unrecognized authentication mechanism"


def test_auth_twice(sub):
    assert sub.cmd(f"AUTH PLAIN {plain(ALICE, password(ALICE))}") == \
        "235 2.7.0 Authentication successful"
    assert sub.cmd(f"AUTH PLAIN {plain(ALICE, password(ALICE))}") == \
        "503 5.5.1 Already authenticated"


def test_auth_inside_transaction(srv):
    # [submissions] here has auth = optional, so MAIL is allowed before AUTH.
    with srv.connect("submissions") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd(f"AUTH PLAIN {plain(ALICE, password(ALICE))}") == \
            "503 5.5.1 AUTH not permitted during a mail transaction"
        assert c.cmd("RSET") == "250 2.0.0 Reset state"
        assert c.cmd(f"AUTH PLAIN {plain(ALICE, password(ALICE))}") == \
            "235 2.7.0 Authentication successful"


def test_received_says_esmtpsa(srv):
    tid = unique_id("esmtpsa")
    msg = message(tid, sender=ALICE, to="bob@example.test")
    with srv.connect("submission") as c:
        c.ehlo()
        tls = c.starttls()
        c.ehlo("laptop.test")
        assert c.cmd("AUTH LOGIN").startswith("334 ")
        assert c.cmd(b64(ALICE)).startswith("334 ")
        assert c.cmd(b64(password(ALICE))) == "235 2.7.0 Authentication successful"
        qid = c.send_mail(ALICE, ["bob@example.test"], msg)
        version, cipher = tls.version(), tls.cipher()[0]
    [m] = srv.wait_messages("bob@example.test", marker=tid)
    rp, dt, rcv, rest = split_delivered(m.data)
    assert rp == f"Return-Path: <{ALICE}>"
    assert dt == "Delivered-To: bob@example.test"
    assert received_re("laptop.test", "ESMTPSA", qid, rcpt="bob@example.test",
                       tls=(version, cipher)).match(rcv), rcv
    assert rest == msg



def test_received_says_utf8smtpsa(srv):
    tid = unique_id("utf8smtpsa")
    msg = message(tid, sender=ALICE, to="bob@example.test", subject="Grüße")
    with srv.connect("submissions") as c:
        c.ehlo("laptop.test")
        assert c.cmd(f"AUTH PLAIN {plain(ALICE, password(ALICE))}") == \
            "235 2.7.0 Authentication successful"
        qid = c.send_mail(ALICE, ["bob@example.test"], msg, mail_params="SMTPUTF8")
        version, cipher = c.sock.version(), c.sock.cipher()[0]
    [m] = srv.wait_messages("bob@example.test", marker=tid)
    rcv = split_delivered(m.data)[2]
    assert received_re("laptop.test", "UTF8SMTPSA", qid, rcpt="bob@example.test",
                       tls=(version, cipher)).match(rcv), rcv
