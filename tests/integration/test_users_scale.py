"""The users file of a provider with many mailboxes (issue 23, "Users at scale"):

- concurrent `pecctl user add` lose nobody (the file is edited under a lock and replaced
  atomically);
- `pecctl user passwd`, `suspend` / `resume` (a suspended account cannot log in, its mail is
  still delivered) and `show`;
- 500,000 users: the reload is timed, and it never stalls the event loop (sessions keep
  answering while the file is parsed again in a thread), and a user added meanwhile gets
  mail.
"""
import os
import smtplib
import subprocess
import threading
import time

import pytest

from pecd_harness import DOMAIN, PECCTL, client_tls_context, password, run_pecctl

NEW = f"nuovo@{DOMAIN}"


def login_ok(inst, user, pw):
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as s:
        s.starttls(context=client_tls_context())
        try:
            s.login(user, pw)
            return True
        except smtplib.SMTPAuthenticationError:
            return False


def users_listed(inst):
    r = inst.pecctl("user", "list")
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_concurrent_adds_lose_nobody(make_instance):
    inst = make_instance(start=False)
    procs = [subprocess.Popen([PECCTL, "-c", inst.conf_path, "user", "add",
                               f"parallel{i}@{DOMAIN}", "--password-stdin"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i in range(24)]
    for p in procs:
        out, err = p.communicate("parallel-password\n", timeout=120)
        assert p.returncode == 0, err
    listed = users_listed(inst)
    assert all(f"parallel{i}@{DOMAIN}" in listed for i in range(24)), listed
    assert os.path.exists(inst.conf_path)


def test_passwd_suspend_resume_show(make_instance):
    inst = make_instance()
    alice = f"alice@{DOMAIN}"
    assert login_ok(inst, alice, password(alice))
    r = inst.pecctl("user", "passwd", alice, "--password-stdin", input="nuova-password\n")
    assert r.returncode == 0, r.stderr
    assert login_ok(inst, alice, "nuova-password")
    assert not login_ok(inst, alice, password(alice))
    # suspended: no login, even with the right password; mail is still delivered
    r = inst.pecctl("user", "suspend", alice)
    assert r.returncode == 0 and "suspended" in r.stdout, r.stdout + r.stderr
    assert "state:     suspended" in inst.pecctl("user", "show", alice).stdout
    assert not login_ok(inst, alice, "nuova-password")
    assert "the account is suspended" in inst.log(200)
    with smtplib.SMTP("127.0.0.1", inst.ports["mx"], timeout=30) as s:
        s.sendmail(f"someone@{DOMAIN}", [alice],
                   b"From: someone@example.test\r\nSubject: sospeso\r\n\r\nciao\r\n")
    inst.wait_messages(alice, marker="sospeso")
    # the line keeps its other fields; Dovecot reads "nologin" the same way
    with open(os.path.join(inst.dir, "users")) as f:
        line = next(l for l in f if l.startswith(alice + ":"))
    assert line.rstrip().endswith(":nologin reason=suspended"), line
    r = inst.pecctl("user", "resume", alice)
    assert r.returncode == 0, r.stderr
    assert login_ok(inst, alice, "nuova-password")
    show = inst.pecctl("user", "show", alice).stdout
    assert "state:     active" in show and "password:  yescrypt hash" in show, show
    assert inst.pecctl("user", "show", f"nobody@{DOMAIN}").returncode == 1


def test_500k_users_reload_off_the_event_loop(make_instance):
    inst = make_instance(start=False)
    users = os.path.join(inst.dir, "users")
    with open(users) as f:
        first = f.readline()
    h = first.split(":")[1]
    with open(users, "a") as f:
        f.writelines(f"bulk{i:06d}@{DOMAIN}:{h}:::::\n" for i in range(500000))
    inst.start()
    loaded = [l for l in inst.log(400).splitlines() if "users in" in l]
    # a session answers NOOP all the time, while a user is added (the 55 MB file is written
    # again) and pecd reads the file again because RCPT asks for the new user
    lat = []
    stop = threading.Event()
    c = inst.connect("mx")
    c.ehlo()

    def noops():
        while not stop.is_set():
            t0 = time.monotonic()
            assert c.cmd("NOOP").startswith("250")
            lat.append(time.monotonic() - t0)
            time.sleep(0.02)

    th = threading.Thread(target=noops)
    th.start()
    try:
        r = inst.pecctl("user", "add", NEW, "--password-stdin", input="nuovo-password\n")
        assert r.returncode == 0, r.stderr
        end = time.monotonic() + 60
        while True:   # 451 while the new copy is read, then 250
            with smtplib.SMTP("127.0.0.1", inst.ports["mx"], timeout=30) as s:
                s.ehlo()
                s.mail(f"someone@{DOMAIN}")
                code, _ = s.rcpt(NEW)
            if code == 250:
                break
            assert code == 451 and time.monotonic() < end, code
            time.sleep(0.2)
        end = time.monotonic() + 30
        while "loaded: 500007 users" not in inst.log(400) and time.monotonic() < end:
            time.sleep(0.2)
    finally:
        stop.set()
        th.join()
        c.close()
    reloads = [l for l in inst.log(400).splitlines() if "loaded: 500007 users in" in l]
    assert reloads, inst.log(40)
    secs = float(reloads[-1].split(" users in ")[1].split()[0])
    assert max(lat) < 0.5, f"a NOOP waited {max(lat):.2f} s while {secs:.2f} s went to the reload"
    print(f"500,000 users: reload {secs:.2f} s; NOOP max {max(lat) * 1000:.0f} ms over "
          f"{len(lat)}; {loaded[-1] if loaded else ''}")


def submit_as(inst, user, rcpts, subject):
    """user submits one message to rcpts; the SMTP error, or None when accepted."""
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as s:
        s.starttls(context=client_tls_context())
        s.login(user, password(user))
        try:
            refused = s.sendmail(user, rcpts,
                                 f"From: {user}\r\nSubject: {subject}\r\n\r\nx\r\n".encode())
        except (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused) as e:
            return e
    return smtplib.SMTPRecipientsRefused(refused) if refused else None


def test_sending_limits(make_instance):
    """Issue 23: per-user and per-client sending limits, a clear 4xx, the others unaffected."""
    inst = make_instance(conf={"limits": {"messages_per_hour": "3", "recipients_per_hour": "5",
                                          "client_messages_per_hour": "6"}})
    alice, bob, dave = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "dave"))
    for i in range(3):
        assert submit_as(inst, alice, [bob], f"uno {i}") is None
    e = submit_as(inst, alice, [bob], "quattro")
    assert isinstance(e, smtplib.SMTPSenderRefused), e
    assert e.smtp_code == 451 and b"4.7.1" in e.smtp_error and b"3 messages an hour" in \
        e.smtp_error, e
    # recipients: bob may send to 5 in all; a message with 4 passes, the next RCPT over 5 not
    assert submit_as(inst, bob, [alice, dave, f"erin@{DOMAIN}", f"frank@{DOMAIN}"], "quattro") \
        is None
    e = submit_as(inst, bob, [alice, dave], "ancora")
    assert isinstance(e, smtplib.SMTPRecipientsRefused), e
    code, text = e.recipients[dave]
    assert code == 451 and b"5 recipients an hour" in text, e.recipients
    # the address: 6 messages from 127.0.0.1 in all (alice 3, bob 1, bob's refused one
    # counts once: its first recipient went through) -> dave has one left
    assert submit_as(inst, dave, [alice], "dave 1") is None
    e = submit_as(inst, dave, [alice], "dave 2")
    assert isinstance(e, smtplib.SMTPSenderRefused) and b"this address" in e.smtp_error, e
    assert "sending limit: user alice@example.test: 3 messages an hour reached" in inst.log(300)
