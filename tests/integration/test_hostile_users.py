"""Attacks and lost mail around our users (issue 16 items 3, 7 and 8):

- case variants: one account per address whatever the case (DESIGN.md): `user add` refuses
  a variant, a users file with two variants does not load, mail to ALICE@ reaches alice's
  Maildir, receipts for Mario@ land in mario's;
- addresses RCPT would refuse (local part over 64 octets) or at a domain that is not ours
  cannot become users;
- the evidence log and tracking database are closed to other users from creation, and pecd
  warns about looser files at start;
- no mail is lost without notice: postmaster of every domain has a mailbox, ordinary mail
  for nobody is refused after the data (550 5.1.1), for some unknown recipients the sender
  gets a non-delivery report, and a user added a moment ago gets mail at once.
"""
import email
import email.policy
import os
import smtplib
import ssl
import stat
import subprocess
import time

import pytest

from downstream import Downstream
from pec_providers import make_providers, pecctl, ricevuta, trasporto, verify
from pecd_harness import PECD, free_port


def pec_message(frm, to, subject, cc=None):
    head = f"From: <{frm}>\r\nTo: {', '.join('<%s>' % t for t in to)}\r\n"
    if cc:
        head += f"Cc: {', '.join('<%s>' % c for c in cc)}\r\n"
    return (head + f"Subject: {subject}\r\nMessage-ID: <{abs(hash(subject))}@client.test>\r\n"
            "\r\nBuongiorno.\r\n").encode()


@pytest.fixture
def world(tmp_path):
    a, b, ca, directory = make_providers(tmp_path)
    ext = Downstream(free_port())      # where B's non-delivery reports for plain.test go
    ext.start()
    a.write_config({"pec.b.test": b.ports["mx"]})
    b.write_config({"pec.a.test": a.ports["mx"], "plain.test": ext.port},
                   extra={"tls_policy": {"plain.test": "may"}})
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
    a.start()
    b.start()
    yield a, b, ext, ca, directory
    for p in (a, b):
        p.stop()
    ext.stop()


def mx_send(p, ca, mail_from, rcpts, raw):
    """An outsider's transfer to p's MX over STARTTLS; returns the DATA reply or raises."""
    ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", p.ports["mx"], timeout=30) as s:
        s.starttls(context=ctx)
        return s.sendmail(mail_from, rcpts, raw)


def ordinary(frm, to, subject):
    return (f"From: <{frm}>\r\nTo: {', '.join('<%s>' % t for t in to)}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash(subject))}@plain.test>\r\n\r\nciao\r\n").encode()


# ---------------------------------------------------------------- case variants (item 3)

def test_user_add_refuses_a_case_variant(world):
    a, b, ext, ca, directory = world
    r = pecctl("-c", a.conf, "user", "add", "MARIO@pec.a.test", "--password-stdin",
               input="other-password\n", check=False)
    assert r.returncode != 0
    assert "exists already" in r.stderr and "without case" in r.stderr, r.stderr
    listed = pecctl("-c", a.conf, "user", "list").stdout.split()
    assert [u for u in listed if u.lower() == "mario@pec.a.test"] == ["mario@pec.a.test"]
    # a new user is stored in the canonical (lower-case) form
    pecctl("-c", a.conf, "user", "add", "Luca@PEC.A.test", "--password-stdin",
           input="luca-password\n")
    assert "luca@pec.a.test" in pecctl("-c", a.conf, "user", "list").stdout.split()


def test_users_file_with_two_case_variants_does_not_load(world, tmp_path):
    a, b, ext, ca, directory = world
    users = os.path.join(a.dir, "users")
    with open(users) as f:
        line = next(l for l in f if l.startswith("mario@"))
    with open(users, "a") as f:
        f.write("MARIO" + line[len("mario"):])
    r = subprocess.run([PECD, "-t", "-c", a.conf], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "appears twice" in r.stderr and users in r.stderr, r.stderr


def test_login_in_another_case_is_the_same_account(world):
    """Authenticated as MARIO@ (mario's password), the user sends as mario and only as mario;
    the receipts land in the one Maildir 'mario'."""
    a, b, ext, ca, directory = world
    ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=30) as s:
        s.starttls(context=ctx)
        s.login("MARIO@PEC.A.TEST", "mario-password")
        code, msg = s.mail("anna@pec.a.test")
        assert code == 553 and b"5.7.1" in msg, (code, msg)
        s.rset()
        s.sendmail("Mario@pec.a.test", ["anna@pec.b.test"],
                   pec_message("Mario@pec.a.test", ["anna@pec.b.test"], "maiuscole"))
    a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    domain_dir = os.path.join(a.dir, "mail", "pec.a.test")
    names = os.listdir(domain_dir)
    assert "mario" in names and all(n == n.lower() for n in names), names


def test_mail_to_an_upper_case_address_reaches_the_mailbox(world):
    a, b, ext, ca, directory = world
    a.submit("mario", ["ANNA@pec.b.test"], pec_message("mario@pec.a.test", ["ANNA@pec.b.test"],
                                                       "al maiuscolo"))
    (env,) = b.wait_mail("anna", trasporto("posta-certificata"))
    (rec,) = a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    v, rc = verify(rec[0], ca, directory)
    assert rc == 0 and v["valid"], v
    names = os.listdir(os.path.join(b.dir, "mail", "pec.b.test"))
    assert "anna" in names and all(n == n.lower() for n in names), names


def test_user_add_refuses_what_rcpt_would_refuse(world):
    a, b, ext, ca, directory = world
    long_local = "x" * 65
    r = pecctl("-c", a.conf, "user", "add", f"{long_local}@pec.a.test", "--password-stdin",
               input="long-password\n", check=False)
    assert r.returncode != 0 and "64" in r.stderr, r.stderr
    pecctl("-c", a.conf, "user", "add", f"{'y' * 64}@pec.a.test", "--password-stdin",
           input="long-password\n")
    r = pecctl("-c", a.conf, "user", "add", "luca@elsewhere.test", "--password-stdin",
               input="luca-password\n", check=False)
    assert r.returncode != 0 and "not one of this provider's domains" in r.stderr, r.stderr
    for bad in ("luca", "lu:ca@pec.a.test", "lu/ca@pec.a.test", '"lu ca"@pec.a.test'):
        r = pecctl("-c", a.conf, "user", "add", bad, "--password-stdin",
                   input="luca-password\n", check=False)
        assert r.returncode != 0 and "cannot be a user" in r.stderr, (bad, r.stderr)


# ---------------------------------------------------------------- file modes (item 7)

def test_databases_are_closed_to_other_users(world):
    a, b, ext, ca, directory = world
    a.submit("mario", ["anna@pec.b.test"], pec_message("mario@pec.a.test", ["anna@pec.b.test"],
                                                       "permessi"))
    a.wait_mail("mario", ricevuta("avvenuta-consegna"))
    for p in (a, b):
        names = [n for n in os.listdir(p.dir) if n.startswith(("evidence.db", "tracking.db"))]
        assert "evidence.db" in names and "tracking.db" in names, names
        for n in names:
            mode = stat.S_IMODE(os.stat(os.path.join(p.dir, n)).st_mode)
            assert mode & 0o027 == 0, f"{p.domain}/{n}: {oct(mode)}"
        for root, dirs, files in os.walk(os.path.join(p.dir, "mail")):
            for n in files:
                mode = stat.S_IMODE(os.stat(os.path.join(root, n)).st_mode)
                assert mode & 0o007 == 0, f"{root}/{n}: {oct(mode)}"


def test_start_warns_about_loose_files(world):
    a, b, ext, ca, directory = world
    a.stop()
    os.chmod(os.path.join(a.dir, "evidence.db"), 0o644)
    a.start()
    log = a.log(200)
    assert f"evidence log {os.path.join(a.dir, 'evidence.db')} is mode 0644" in log, log
    assert "chmod o-rwx" in log


# ---------------------------------------------------------------- lost mail (item 8)

@pytest.mark.parametrize("rcpt", ["postmaster@pec.b.test", "POSTMASTER@pec.b.test", "postmaster"])
def test_postmaster_gets_mail(world, rcpt):
    a, b, ext, ca, directory = world
    mx_send(b, ca, "someone@plain.test", [rcpt], ordinary("someone@plain.test",
                                                          ["postmaster@pec.b.test"], "per te"))
    (x,) = b.wait_mail("postmaster", trasporto("errore"))
    assert x[2]["Subject"].startswith("ANOMALIA MESSAGGIO: ")


def test_ordinary_mail_for_nobody_is_refused(world):
    a, b, ext, ca, directory = world
    with pytest.raises(smtplib.SMTPDataError) as e:
        mx_send(b, ca, "someone@plain.test", ["nessuno@pec.b.test", "neppure@pec.b.test"],
                ordinary("someone@plain.test", ["nessuno@pec.b.test"], "a nessuno"))
    assert e.value.smtp_code == 550 and b"5.1.1" in e.value.smtp_error, e.value


def test_ordinary_mail_for_some_unknown_gives_a_report(world):
    a, b, ext, ca, directory = world
    mx_send(b, ca, "someone@plain.test", ["anna@pec.b.test", "nessuno@pec.b.test"],
            ordinary("someone@plain.test", ["anna@pec.b.test", "nessuno@pec.b.test"], "misto"))
    b.wait_mail("anna", trasporto("errore"))
    (dsn,) = ext.wait_messages(1)
    assert dsn["rcpts"] == ["someone@plain.test"]
    m = email.message_from_bytes(dsn["data"], policy=email.policy.compat32)
    assert m.get_content_type() == "multipart/report"
    status = m.get_payload(1).as_string()
    assert "Final-Recipient: rfc822; nessuno@pec.b.test" in status, status
    assert "Status: 5.1.1" in status, status
    assert not os.path.exists(b.maildir("nessuno"))


def test_pec_to_an_unknown_mailbox_gets_errore_consegna(world):
    """RFC 6109 §3.3.3: a correct envelope for an address without a mailbox gets the signed
    non-delivery receipt (no-dest), not an SMTP refusal."""
    a, b, ext, ca, directory = world
    a.submit("mario", ["nessuno@pec.b.test"],
             pec_message("mario@pec.a.test", ["nessuno@pec.b.test"], "sconosciuto"))
    (e,) = a.wait_mail("mario", ricevuta("errore-consegna"))
    v, rc = verify(e[0], ca, directory)
    assert rc == 0 and v["daticert"]["errore"] == "no-dest", v


def test_user_added_while_running_gets_mail_at_once(world):
    """The users file is looked at again before an address is found unknown: a user added a
    moment ago is never refused nor sent a no-dest receipt."""
    a, b, ext, ca, directory = world
    for i in range(3):
        local = f"nuovo{i}"
        b.add_user(local)
        a.submit("mario", [f"{local}@pec.b.test"],
                 pec_message("mario@pec.a.test", [f"{local}@pec.b.test"], f"benvenuto {i}"))
        b.wait_mail(local, trasporto("posta-certificata"))
        mx_send(b, ca, "someone@plain.test", [f"{local}@pec.b.test"],
                ordinary("someone@plain.test", [f"{local}@pec.b.test"], f"ordinaria {i}"))
    a.wait_mail("mario", ricevuta("avvenuta-consegna"), count=3)
    assert [m for m in a.mails("mario") if (m[2].get("X-Ricevuta") or "").strip() ==
            "errore-consegna"] == []
