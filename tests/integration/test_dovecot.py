"""pecd with a real Dovecot 2.3 (issue 8): (a) Dovecot serves over IMAP the Maildirs pecd writes,
authenticating from pecd's own users files; (b) delivery through Dovecot LMTP
([delivery] mailbox = lmtp:), an unknown LMTP user gives errore-consegna; (c) SMTP AUTH through
Dovecot's auth-client socket ([users] users = dovecot:), Dovecot down gives 454 4.7.0.
Every PEC message read back with imaplib is checked with pecctl verify and openssl cms -verify."""
import imaplib
import os
import smtplib
import ssl
import tempfile
import time
from email import message_from_bytes, policy

import pytest

from dovecot_fixture import Dovecot, dovecot_available, make_mail_providers, remove_root
from pec_providers import openssl_verify, verify

pytestmark = pytest.mark.skipif(not dovecot_available(),
                                reason="dovecot-imapd and dovecot-lmtpd are not installed")


def message(frm, to, subject):
    return (f"From: <{frm}>\r\nTo: {', '.join('<%s>' % t for t in to)}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash(subject))}.{time.time()}@client.test>\r\n\r\n"
            "Buongiorno,\r\nprova.\r\n").encode()


def imap_messages(dovecot, addr, password):
    """Every message of addr's INBOX over IMAP, as (raw, parsed)."""
    m = imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=10)
    try:
        m.login(addr, password)
        typ, _ = m.select("INBOX", readonly=True)
        assert typ == "OK"
        typ, data = m.search(None, "ALL")
        out = []
        for num in data[0].split():
            typ, msg = m.fetch(num, "(BODY.PEEK[])")
            raw = msg[0][1]
            out.append((raw, message_from_bytes(raw, policy=policy.compat32)))
        m.logout()
        return out
    except imaplib.IMAP4.error as e:
        raise AssertionError(f"IMAP {addr}: {e}\n{dovecot.log()}")


def wait_imap(dovecot, provider, local, header, kind, count=1, timeout=40):
    addr = f"{local}@{provider.domain}"
    end = time.time() + timeout
    got = []
    while time.time() < end:
        got = [x for x in imap_messages(dovecot, addr, f"{local}-password")
               if (x[1].get(header) or "").strip() == kind]
        if len(got) >= count:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{addr}: {len(got)} of {count} {kind} over IMAP\n{provider.log(60)}\n"
                         f"{dovecot.log()}")


def assert_signed(raw, ca, directory, kind):
    with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as f:
        f.write(raw)
    try:
        v, rc = verify(f.name, ca, directory)
    finally:
        os.unlink(f.name)
    assert rc == 0 and v["valid"], (kind, v)
    assert v["type"] == kind, v
    code, err = openssl_verify(raw, ca)
    assert code == 0, f"openssl cms -verify failed for {kind}: {err}"
    return v


@pytest.fixture
def world():
    root, a, b, ca, directory = make_mail_providers()
    dv = Dovecot(root)
    yield root, a, b, ca, directory, dv
    for p in (a, b):
        p.stop()
    dv.stop()
    remove_root(root)


def start(world, a_extra=None, b_extra=None):
    root, a, b, ca, directory, dv = world
    a.write_config({"pec.b.test": b.ports["mx"]}, extra=a_extra)
    b.write_config({"pec.a.test": a.ports["mx"]}, extra=b_extra)
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    dv.start()
    a.start()
    b.start()


def exchange(world):
    """mario@A sends to anna@B; returns after checking every message over IMAP."""
    root, a, b, ca, directory, dv = world
    a.submit("mario", ["anna@pec.b.test"],
             message("mario@pec.a.test", ["anna@pec.b.test"], "Prova Dovecot"))
    (env,) = wait_imap(dv, b, "anna", "X-Trasporto", "posta-certificata")
    assert_signed(env[0], ca, directory, "posta-certificata")
    assert env[1]["Subject"].startswith("POSTA CERTIFICATA: Prova Dovecot")
    (acc,) = wait_imap(dv, a, "mario", "X-Ricevuta", "accettazione")
    assert_signed(acc[0], ca, directory, "accettazione")
    (dlv,) = wait_imap(dv, a, "mario", "X-Ricevuta", "avvenuta-consegna")
    v = assert_signed(dlv[0], ca, directory, "avvenuta-consegna")
    assert v["daticert"]["consegna"] == "anna@pec.b.test", v
    return env


def test_imap_serves_pecd_maildirs(world):
    start(world)
    root, a, b, ca, directory, dv = world
    exchange(world)
    # the same files pecd wrote: Dovecot moved nothing it could not read
    assert any(os.listdir(os.path.join(b.maildir("anna"), sub)) for sub in ("new", "cur"))


def test_lmtp_delivery_and_unknown_user(world):
    root, a, b, ca, directory, dv = world
    # B delivers through Dovecot LMTP and asks nobody else whether a mailbox exists
    start(world, b_extra={"delivery": {"mailbox": f"lmtp:127.0.0.1:{dv.lmtp_port}"},
                          "users": {"users": f"dovecot:{dv.auth_client}"}})
    env = exchange(world)
    assert "Delivered-To" in env[1], "Dovecot LMTP adds Delivered-To"
    assert "delivered via LMTP" in b.log(400)
    # an address Dovecot does not know: LMTP 550, errore-consegna to the sender
    a.submit("mario", ["nessuno@pec.b.test"],
             message("mario@pec.a.test", ["nessuno@pec.b.test"], "Nessuno"))
    (err,) = wait_imap(dv, a, "mario", "X-Ricevuta", "errore-consegna")
    v = assert_signed(err[0], ca, directory, "errore-consegna")
    assert v["daticert"]["consegna"] == "nessuno@pec.b.test", v
    assert v["daticert"].get("errore") == "no-dest", v
    assert "5.1.1" in err[1].get_payload(0).as_string() or "5.1.1" in str(v), v


def smtp_login(p, addr, password):
    ctx = ssl.create_default_context(cafile=os.path.join(p.ca, "ca.pem"))
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", p.ports["submission"], timeout=30) as s:
        s.starttls(context=ctx)
        s.ehlo()
        try:
            code, text = s.login(addr, password)
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code, e.smtp_error.decode()
        return code, text.decode()


def test_smtp_auth_through_dovecot(world):
    root, a, b, ca, directory, dv = world
    start(world, a_extra={"users": {"users": f"dovecot:{dv.auth_client}",
                                    "userdb": dv.auth_userdb}})
    assert smtp_login(a, "mario@pec.a.test", "mario-password")[0] == 235
    code, text = smtp_login(a, "mario@pec.a.test", "wrong")
    assert code == 535 and text.startswith("5.7.8"), (code, text)
    # a login Dovecot delays (failure delay and penalty) stalls no other session
    import threading
    slow = threading.Thread(target=smtp_login, args=(a, "anna@pec.a.test", "wrong"))
    slow.start()
    time.sleep(0.3)
    t0 = time.time()
    with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=10) as s:
        assert s.ehlo()[0] == 250
    assert time.time() - t0 < 0.5, time.time() - t0
    assert slow.is_alive(), "the failed login should still be waiting for Dovecot"
    slow.join(30)
    # the userdb socket answers the existence checks of A's local deliveries
    exchange(world)
    dv.stop()
    code, text = smtp_login(a, "mario@pec.a.test", "mario-password")
    assert code == 454 and text.startswith("4.7.0"), (code, text)
    assert "through Dovecot" in a.log(100)


def test_dovecot_canonical_user_and_a_sender_map(world, tmp_path):
    """Issue 23: a provider's identity system. A login Dovecot maps to another user (its
    passwd-file's user= extra field) sends as that user; a login the sender map lists for a
    role address sends as it too; nobody else does."""
    root, a, b, ca, directory, dv = world
    senders = os.path.join(a.dir, "senders")   # pecd runs as mail here: in its own tree
    with open(senders, "w") as f:
        f.write("# role addresses\nprotocollo@pec.a.test  mario@pec.a.test\n")
    a.write_config({"pec.b.test": b.ports["mx"]},
                   extra={"users": {"users": f"dovecot:{dv.auth_client}",
                                    "userdb": dv.auth_userdb, "senders": senders}})
    b.write_config({"pec.a.test": a.ports["mx"]})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    a.add_user("protocollo")
    users = os.path.join(a.dir, "users")
    with open(users) as f:
        mario = next(l for l in f if l.startswith("mario@"))
    h = mario.split(":")[1]
    with open(users, "a") as f:
        # the login "mrossi" is mario for Dovecot (user= changes the user name)
        f.write(f"mrossi@pec.a.test:{h}::::::user=mario@pec.a.test\n")
    dv.start()
    a.start()
    b.start()
    ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
    ctx.check_hostname = False

    def send(login, password, sender, subject):
        with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=30) as s:
            s.starttls(context=ctx)
            s.login(login, password)
            try:
                s.sendmail(sender, ["anna@pec.b.test"], message(sender, ["anna@pec.b.test"],
                                                                subject))
            except smtplib.SMTPSenderRefused as e:
                return e.smtp_code
        return 250

    # the password of mario's line (mrossi's copies it), login by the other name
    assert send("mrossi@pec.a.test", "mario-password", "mario@pec.a.test", "canonico") == 250
    assert "authenticated as mario@pec.a.test" in a.log(200)
    assert send("mario@pec.a.test", "mario-password", "protocollo@pec.a.test", "ruolo") == 250
    assert send("anna@pec.a.test", "anna-password", "protocollo@pec.a.test", "abuso") == 553
    wait_imap(dv, a, "protocollo", "X-Ricevuta", "accettazione")
    wait_imap(dv, b, "anna", "X-Trasporto", "posta-certificata", count=2)
