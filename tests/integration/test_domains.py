"""The local domains of a provider hosting many customers (issue 23, "Domains"):

- `[provider] local_domains_file`: 20,000 domains, no cap; a domain added to the file is
  served after a reload (SIGHUP), a broken file changes nothing;
- per-domain settings: sending limits for one customer's users;
- TLS certificates chosen by SNI: a customer's names get its certificate, other names the
  [tls] one, and a reload takes a renewed certificate.
"""
import json
import os
import smtplib
import socket
import ssl
import subprocess

from pecd_harness import DOMAIN, PECD, client_tls_context, password, sighup

N_DOMAINS = 20000


def write_domains(inst, lines):
    path = os.path.join(inst.dir, "domains")
    with open(path, "w") as f:
        f.write("# customer domains\n" + "".join(line + "\n" for line in lines))
    return path


def add_user(inst, addr):
    r = inst.pecctl("user", "add", addr, "--password-stdin", input=password(addr) + "\n")
    assert r.returncode == 0, r.stderr


def rcpt_reply(inst, rcpt):
    with smtplib.SMTP("127.0.0.1", inst.ports["mx"], timeout=30) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        return s.rcpt(rcpt)


def test_many_domains_and_reload(make_instance):
    inst = make_instance(start=False)
    lines = [f"cliente{i}.example" for i in range(N_DOMAINS)]
    write_domains(inst, lines)
    inst.configure({"provider": {"local_domains_file": "domains"}})
    last = f"anna@cliente{N_DOMAINS - 1}.example"
    add_user(inst, last)
    # pecctl refuses a user of a domain that is not local
    r = inst.pecctl("user", "add", "anna@nuovo.example", "--password-stdin", input="x" * 12 + "\n")
    assert r.returncode != 0 and "nuovo.example" in r.stderr, r.stderr
    inst.start()
    assert rcpt_reply(inst, last)[0] == 250
    code, text = rcpt_reply(inst, "anna@nuovo.example")
    assert (code, text) == (550, b"5.7.1 <anna@nuovo.example>: Relay access denied")

    # a new customer: a line in the file, a user, a reload
    write_domains(inst, lines + ["nuovo.example"])
    add_user(inst, "anna@nuovo.example")
    sighup(inst)
    assert rcpt_reply(inst, "anna@nuovo.example")[0] == 250
    with smtplib.SMTP("127.0.0.1", inst.ports["mx"], timeout=30) as s:
        s.sendmail("sender@client.test", ["anna@nuovo.example"],
                   b"From: <sender@client.test>\r\nSubject: benvenuto\r\n\r\nciao\r\n")
    assert inst.wait_messages("anna@nuovo.example", 1)

    # a mistake in the file: the reload names the line and keeps what is in force
    write_domains(inst, lines + ["nuovo.example", "not a domain!"])
    tail = sighup(inst, "nothing changed")
    assert f"domains:{N_DOMAINS + 3}:" in tail, tail
    assert rcpt_reply(inst, "anna@nuovo.example")[0] == 250
    # pecd -t says the same before a restart
    r = subprocess.run([PECD, "-t", "-c", inst.conf_path], capture_output=True, text=True)
    assert r.returncode == 1 and f"domains:{N_DOMAINS + 3}:" in r.stderr, r.stderr


def submit(inst, user, n_rcpts=1):
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as s:
        s.starttls(context=client_tls_context())
        s.login(user, password(user))
        rcpts = [f"alice@{DOMAIN}"] * n_rcpts
        try:
            s.sendmail(user, rcpts, f"From: <{user}>\r\nSubject: x\r\n\r\nx\r\n".encode())
            return 250, b""
        except smtplib.SMTPSenderRefused as e:
            return e.smtp_code, e.smtp_error


def test_per_domain_sending_limits(make_instance):
    inst = make_instance(start=False)
    write_domains(inst, ["limitato.example messages_per_hour=2",
                         "libero.example messages_per_hour=0"])
    inst.configure({"provider": {"local_domains_file": "domains"},
                    "limits": {"messages_per_hour": "3"}})
    for u in ("anna@limitato.example", "bea@libero.example"):
        add_user(inst, u)
    r = inst.pecctl("domain", "list", "--json")
    assert r.returncode == 0, r.stderr
    listed = {d["domain"]: d for d in json.loads(r.stdout)}
    assert sorted(listed) == [DOMAIN, "libero.example", "limitato.example", "other.test"]
    assert listed["limitato.example"]["messages_per_hour"] == 2
    assert listed["limitato.example"]["recipients_per_hour"] is None
    assert listed["libero.example"]["messages_per_hour"] == 0
    assert inst.pecctl("domain", "list").stdout.splitlines()[1:3] == [
        "libero.example messages_per_hour=0", "limitato.example messages_per_hour=2"]
    inst.start()
    assert [submit(inst, "anna@limitato.example")[0] for _ in range(2)] == [250, 250]
    code, text = submit(inst, "anna@limitato.example")
    assert code == 451 and text.startswith(b"4.7.1 Sending limit of this user reached (2 "
                                           b"messages an hour)"), (code, text)
    # 0: no limit for that domain's users, whatever [limits] says
    assert [submit(inst, "bea@libero.example")[0] for _ in range(5)] == [250] * 5
    # everyone else has [limits]'s 3
    alice = f"alice@{DOMAIN}"
    assert [submit(inst, alice)[0] for _ in range(4)] == [250, 250, 250, 451]


def make_cert(d, name, cn):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", f"/CN={cn}",
                    "-keyout", key, "-out", crt], check=True, capture_output=True)
    os.chmod(key, 0o600)
    with open(crt) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def peer_cert(inst, listener, sni):
    """The certificate pecd presents after STARTTLS (submission) or at once (submissions)."""
    ctx = client_tls_context()
    sock = socket.create_connection(("127.0.0.1", inst.ports[listener]), timeout=30)
    try:
        if listener == "submission":
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO client.test\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
        with ctx.wrap_socket(sock, server_hostname=sni) as t:
            return t.getpeercert(binary_form=True)
    finally:
        sock.close()


def test_sni_chooses_the_domain_certificate(make_instance):
    inst = make_instance(start=False)
    cust = make_cert(inst.dir, "cliente", "smtp.cliente.example")
    write_domains(inst, ["cliente.example tls_certificate=cliente.crt tls_key=cliente.key",
                         "altro.example"])
    inst.configure({"provider": {"local_domains_file": "domains"}})
    with open(os.path.join(inst.dir, "tls.crt")) as f:
        main = ssl.PEM_cert_to_DER_cert(f.read())
    inst.start()
    assert "1 local domain with a certificate of their own (SNI)" in inst.log()
    for listener in ("submission", "submissions"):
        assert peer_cert(inst, listener, "smtp.cliente.example") == cust
        assert peer_cert(inst, listener, "CLIENTE.example") == cust
        assert peer_cert(inst, listener, "smtp.altro.example") == main
        assert peer_cert(inst, listener, None) == main

    # renewal: a new certificate in the same files, a reload, new sessions get it
    renewed = make_cert(inst.dir, "cliente", "smtp.cliente.example")
    assert renewed != cust
    sighup(inst)
    assert peer_cert(inst, "submission", "smtp.cliente.example") == renewed
    # a key that does not match: the reload names the domain and keeps the old one
    make_cert(inst.dir, "other", "x")
    os.replace(os.path.join(inst.dir, "other.key"), os.path.join(inst.dir, "cliente.key"))
    tail = sighup(inst, "nothing changed")
    assert "domains:2: cliente.example" in tail and "does not match" in tail, tail
    assert peer_cert(inst, "submission", "smtp.cliente.example") == renewed
