"""Interoperability with a real Postfix, both directions, with verified TLS (issue 5).

A private Postfix instance (Debian package postfix) runs for this module: its own
config_directory, queue_directory and data_directory under a temporary directory,
smtpd on a loopback high port only; /etc/postfix is only read (meta_directory), never
written.  It is stopped at the end of the module, even when a test fails.

  pecd  (example.test; [mx] require_tls = yes; certificate from test CA "E")
  Postfix (postfix.test; smtpd_tls_security_level = encrypt; certificate for "localhost"
           from test CA "P"; virtual(8) delivers postfix.test into Maildirs)

- pecd -> Postfix: [routes] postfix.test = localhost:PORT, [tls_policy] postfix.test =
  verify, [outbound] ca_file = CA P.  Postfix's Received says ESMTPS / "using TLS".
- Postfix -> pecd: transport_maps example.test -> smtp:[127.0.0.1]:MXPORT,
  smtp_tls_policy_maps: verify match=mx.example.test, smtp_tls_CAfile = CA E.  pecd's
  Received says ESMTPS with the TLS version and cipher; Postfix logs "Verified TLS".
- The round trip: alice@example.test -> back@postfix.test (a virtual alias of
  bob@example.test) -> bob@example.test.

Skipped only when the Postfix binaries are missing.  Needs root (postfix start), as the
rest of the suite does.
"""
import email
import email.policy
import glob
import os
import pwd
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile
import time

import pytest

from downstream import submit, wait_log
from pecd_harness import HOST, free_port, message, unique_id, wait_port

ALICE = "alice@example.test"
BOB = "bob@example.test"
PF_DOMAIN = "postfix.test"
PF_HOST = "mx.postfix.test"
PF_USERS = ("bob", "carol")

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
MASTER = "/usr/lib/postfix/sbin/master"
TIMEOUT = 30.0


# ----------------------------------------------------------------------------- PKI

def _run(*args):
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(args)}: {r.stderr}"


def make_ca(d, name):
    key, crt = os.path.join(d, f"{name}-ca.key"), os.path.join(d, f"{name}-ca.crt")
    _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN=Test CA {name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", key, "-out", crt)
    return crt, key


def make_cert(d, ca, dns_name, base):
    """A server certificate for dns_name signed by ca=(crt, key); returns (crt, key)."""
    key, csr, crt = (os.path.join(d, f"{base}.key"), os.path.join(d, f"{base}.csr"),
                     os.path.join(d, f"{base}.crt"))
    ext = os.path.join(d, f"{base}.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=DNS:{dns_name}\nextendedKeyUsage=serverAuth\n"
                "basicConstraints=CA:FALSE\n")
    _run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", f"/CN={dns_name}", "-keyout", key, "-out", csr)
    _run("openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
         "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt)
    os.chmod(key, 0o600)
    return crt, key


# ----------------------------------------------------------------------------- Postfix

MASTER_CF = """\
# private test instance (tests/integration/test_postfix_interop.py)
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
virtual   unix  -       n       n       -       -       virtual
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance:
    """A throw-away Postfix: own directories under a 0755 temporary directory (virtual(8)
    runs as nobody and the daemons as postfix: they must traverse it)."""

    def __init__(self, port, cert, key, ca_for_client, relay_to, pecd_name):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="pecpfx-")
        os.chmod(self.dir, 0o755)
        self.conf_dir = os.path.join(self.dir, "etc")
        self.queue_dir = os.path.join(self.dir, "spool")
        self.data_dir = os.path.join(self.dir, "data")
        self.mail_base = os.path.join(self.dir, "mail")
        self.log_file = os.path.join(self.dir, "postfix.log")
        self.started = False
        nobody = pwd.getpwnam("nobody")
        pf = pwd.getpwnam("postfix")
        for d in (self.conf_dir, self.queue_dir, self.data_dir, self.mail_base):
            os.makedirs(d)
            os.chmod(d, 0o755)
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
        dom = os.path.join(self.mail_base, PF_DOMAIN)
        os.makedirs(dom)
        os.chown(dom, nobody.pw_uid, nobody.pw_gid)
        for src, name, mode in ((cert, "tls.crt", 0o644), (key, "tls.key", 0o600),
                                (ca_for_client, "peer-ca.crt", 0o644)):
            shutil.copy(src, os.path.join(self.conf_dir, name))
            os.chmod(os.path.join(self.conf_dir, name), mode)
        with open(os.path.join(self.conf_dir, "transport"), "w") as f:
            f.write(f"example.test smtp:{relay_to}\n")
        with open(os.path.join(self.conf_dir, "tls_policy"), "w") as f:
            f.write(f"{relay_to} verify match={pecd_name}\n")
        mailboxes = ", ".join(f"{u}@{PF_DOMAIN}={PF_DOMAIN}/{u}/" for u in PF_USERS)
        main_cf = f"""\
# private test instance (tests/integration/test_postfix_interop.py); deleted afterwards
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = {PF_HOST}
mydomain = {PF_DOMAIN}
myorigin = $mydomain
mydestination =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP Postfix
biff = no
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is disabled
virtual_transport = virtual
virtual_mailbox_domains = {PF_DOMAIN}
virtual_mailbox_base = {self.mail_base}
virtual_mailbox_maps = inline:{{ {mailboxes} }}
virtual_alias_maps = inline:{{ back@{PF_DOMAIN}={BOB} }}
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
virtual_minimum_uid = 1
transport_maps = texthash:{self.conf_dir}/transport
smtp_dns_support_level = disabled
smtp_host_lookup = native
# server side: TLS mandatory, certificate from test CA P
smtpd_tls_security_level = encrypt
smtpd_tls_cert_file = {self.conf_dir}/tls.crt
smtpd_tls_key_file = {self.conf_dir}/tls.key
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
# client side: verified TLS to pecd (test CA E)
smtp_tls_security_level = verify
smtp_tls_CAfile = {self.conf_dir}/peer-ca.crt
smtp_tls_policy_maps = texthash:{self.conf_dir}/tls_policy
smtp_tls_loglevel = 1
smtp_connect_timeout = 10s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
queue_run_delay = 2s
syslog_name = pectest-postfix
maillog_file_prefixes = {self.dir}
maillog_file = {self.log_file}
"""
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=port))

    def _env(self):
        e = dict(os.environ)
        e.pop("MAIL_CONFIG", None)
        return e

    def _postfix(self, *args, timeout=60):
        # postfix(1) prints its errors only to a terminal: give it one with script(1)
        cmd = " ".join([POSTFIX, "-c", self.conf_dir, *args])
        r = subprocess.run(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout, env=self._env())
        return r.returncode, (r.stdout + r.stderr).replace("\r", "")

    def master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                pid = int(f.read().split()[0])
            with open(f"/proc/{pid}/comm") as f:
                return pid if f.read().strip() == "master" else None
        except (OSError, ValueError, IndexError):
            return None

    def start(self):
        r = subprocess.run([POSTCONF, "-c", self.conf_dir, "-n"], capture_output=True, text=True,
                           timeout=30, env=self._env())
        assert r.returncode == 0 and "warning" not in r.stderr, f"postconf -n: {r.stderr}"
        self.started = True   # from here on stop() must run
        rc, out = self._postfix("start")
        assert rc == 0, f"postfix start failed ({rc}):\n{out}\n--- log ---\n{self.log()}"
        assert wait_port(self.port, timeout=TIMEOUT), \
            f"Postfix does not listen on 127.0.0.1:{self.port}\n{self.log()}"

    def stop(self):
        if not self.started:
            return
        self.started = False
        pid = self.master_pid()
        try:
            self._postfix("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 20
        while pid is not None and self.master_pid() == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and self.master_pid() == pid:
            try:
                self._postfix("abort", timeout=15)
            except subprocess.TimeoutExpired:
                pass
            time.sleep(1)
            if self.master_pid() == pid:
                os.kill(pid, signal.SIGKILL)

    def cleanup(self):
        if os.environ.get("PEC_KEEP_POSTFIX"):
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self, tail=60):
        try:
            with open(self.log_file, errors="replace") as f:
                return "\n".join(f.read().splitlines()[-tail:])
        except OSError:
            return "(no Postfix log)"

    def maildir_files(self, user):
        return sorted(glob.glob(os.path.join(self.mail_base, PF_DOMAIN, user, "new", "*")))

    def wait_mail(self, user, marker, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for p in self.maildir_files(user):
                with open(p, "rb") as f:
                    data = f.read()
                if marker.encode() in data:
                    return data
            if time.monotonic() > deadline:
                pytest.fail(f"no message {marker!r} in Postfix's Maildir of {user} after "
                            f"{timeout}s\n--- Postfix log ---\n{self.log()}", pytrace=False)
            time.sleep(0.1)

    def wait_log(self, pattern, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            text = self.log(tail=100000)
            m = re.search(pattern, text)
            if m:
                return m
            if time.monotonic() > deadline:
                pytest.fail(f"Postfix never logged /{pattern}/\n--- Postfix log ---\n"
                            f"{self.log()}", pytrace=False)
            time.sleep(0.1)

    def send(self, sender, rcpts, msg):
        """Inject a message over SMTP + STARTTLS (smtpd_tls_security_level = encrypt)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test",
                          timeout=TIMEOUT) as s:
            s.starttls(context=ctx)
            refused = s.sendmail(sender, rcpts, msg)
            assert not refused, refused


# ----------------------------------------------------------------------------- fixtures

def _postfix_available():
    missing = [b for b in (POSTFIX, POSTCONF, MASTER) if not os.access(b, os.X_OK)]
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        missing.append("user postfix")
    return missing


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("interop-pki"))
    ca_p = make_ca(d, "P")               # trusted by pecd
    ca_e = make_ca(d, "E")               # trusted by Postfix
    pf_cert = make_cert(d, ca_p, "localhost", "postfix")
    pecd_cert = make_cert(d, ca_e, HOST, "pecd")
    return {"ca_p": ca_p[0], "ca_e": ca_e[0], "postfix": pf_cert, "pecd": pecd_cert}


@pytest.fixture(scope="module")
def pair(make_module_instance, pki):
    """(pecd, postfix), both running and pointed at each other."""
    missing = _postfix_available()
    if missing:
        pytest.skip(f"Postfix is not installed (missing: {', '.join(missing)}); "
                    "apt-get install postfix")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (postfix start)")
    pf_port = free_port()
    inst = make_module_instance(conf={
        "mx": {"require_tls": "yes"},
        "routes": {PF_DOMAIN: f"localhost:{pf_port}"},
        "tls_policy": {PF_DOMAIN: "verify"},
        "outbound": {"tls": "may", "ca_file": pki["ca_p"], "timeout": "15s"},
    }, start=False)
    shutil.copy(pki["pecd"][0], os.path.join(inst.dir, "tls.crt"))
    shutil.copy(pki["pecd"][1], os.path.join(inst.dir, "tls.key"))
    os.chmod(os.path.join(inst.dir, "tls.key"), 0o600)
    inst.start()
    relay_to = f"[127.0.0.1]:{inst.ports['mx']}"
    pf = PostfixInstance(pf_port, *pki["postfix"], ca_for_client=pki["ca_e"],
                         relay_to=relay_to, pecd_name=HOST)
    try:
        pf.start()
        yield inst, pf
    finally:
        pf.stop()
        problems = [l for l in pf.log(100000).splitlines()
                    if re.search(r"\b(fatal|panic):", l)]
        pf.cleanup()
    assert not problems, "Postfix logged:\n" + "\n".join(problems)


def unfolded_headers(data):
    """The header lines of a message (CRLF or LF), unfolded, in order."""
    data = data.replace(b"\r\n", b"\n")
    head = data.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    return re.sub(r"\n[ \t]+", " ", head).split("\n")


def received(data):
    return [h for h in unfolded_headers(data) if h.lower().startswith("received:")]


# ----------------------------------------------------------------------------- tests

def test_pecd_to_postfix_over_verified_tls(pair):
    inst, pf = pair
    tid = unique_id("to-postfix")
    rcpt = f"bob@{PF_DOMAIN}"
    qid = submit(inst, [rcpt], message(tid, sender=ALICE, to=rcpt))
    data = pf.wait_mail("bob", tid)
    top = received(data)[0]
    # Postfix's own Received: from pecd's EHLO name, over TLS (smtpd_tls_received_header)
    assert re.match(rf"Received: from {re.escape(HOST)} \(\S* ?\[127\.0\.0\.1\]\) "
                    r"\(using TLSv1\.[23] with cipher \S+", top), top
    assert re.search(rf"by {re.escape(PF_HOST)} \(Postfix\) with ESMTPS id \w+", top), top
    assert re.search(rf"for <{re.escape(rcpt)}>", top), top
    # below it: pecd's Received of the submission (authenticated, TLS)
    assert re.match(rf"Received: from client\.test \(\[127\.0\.0\.1\]\) by {re.escape(HOST)} "
                    rf"\(pecmail\) with ESMTPSA id {qid}", received(data)[1]), received(data)
    # pecd verified Postfix's certificate (policy verify); Postfix says TLS was used
    wait_log(inst, f"{qid}: to=<{rcpt}> status=sent (relayed to localhost [127.0.0.1]: 250")
    pf.wait_log(r"Anonymous TLS connection established from \S+\[127\.0\.0\.1\]: TLSv1\.[23]")
    inst.wait_queue_empty()


def test_postfix_to_pecd_over_verified_tls(pair):
    inst, pf = pair
    tid = unique_id("from-postfix")
    sender = f"carol@{PF_DOMAIN}"
    pf.send(sender, [BOB], message(tid, sender=sender, to=BOB))
    (m,) = inst.wait_messages(BOB, marker=tid, timeout=TIMEOUT)
    assert m.header("Return-Path") == f"<{sender}>"
    top = received(m.data)[0]
    # pecd's Received: Postfix's EHLO name, ESMTPS, TLS version and cipher
    assert re.match(rf"Received: from {re.escape(PF_HOST)} \(\[127\.0\.0\.1\]\) by "
                    rf"{re.escape(HOST)} \(pecmail\) with ESMTPS id {m.qid} "
                    r"\(using TLSv1\.[23] with cipher \S+\) for <" + re.escape(BOB) + ">;", top), top
    # the next one is Postfix's (the injection over STARTTLS)
    assert re.search(rf"by {re.escape(PF_HOST)} \(Postfix\) with ESMTPS", received(m.data)[1])
    # Postfix verified pecd's certificate (test CA E, name mx.example.test)
    pf.wait_log(rf"Verified TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:"
                rf"{inst.ports['mx']}: TLSv1\.[23]")
    pf.wait_log(rf"to=<{re.escape(BOB)}>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{inst.ports['mx']}"
                rf".*status=sent \(250 2\.0\.0 Ok: queued as {m.qid}\)")


def test_round_trip_pecd_postfix_pecd(pair):
    """alice@example.test -> back@postfix.test (Postfix alias of bob@example.test) ->
    bob@example.test: out and back, TLS verified both ways."""
    inst, pf = pair
    tid = unique_id("round-trip")
    rcpt = f"back@{PF_DOMAIN}"
    qid1 = submit(inst, [rcpt], message(tid, sender=ALICE, to=rcpt))
    (m,) = inst.wait_messages(BOB, marker=tid, timeout=TIMEOUT)
    assert m.header("Return-Path") == f"<{ALICE}>"
    assert m.header("Delivered-To") == BOB
    rec = received(m.data)
    assert len(rec) == 3, rec
    # newest first: pecd's [mx] (from Postfix), Postfix's (from pecd), pecd's submission
    assert re.match(rf"Received: from {re.escape(PF_HOST)} \(\[127\.0\.0\.1\]\) by "
                    rf"{re.escape(HOST)} \(pecmail\) with ESMTPS id {m.qid} \(using TLSv1", rec[0])
    assert re.match(rf"Received: from {re.escape(HOST)} \(\S* ?\[127\.0\.0\.1\]\) "
                    r"\(using TLSv1", rec[1]), rec[1]
    assert f"by {PF_HOST} (Postfix) with ESMTPS" in rec[1]
    assert re.match(rf"Received: from client\.test \(\[127\.0\.0\.1\]\) by {re.escape(HOST)} "
                    rf"\(pecmail\) with ESMTPSA id {qid1}", rec[2]), rec[2]
    assert m.qid != qid1
    body = email.message_from_bytes(m.data, policy=email.policy.compat32)
    assert body["X-Test-Id"] == tid
    assert f"Hello from {tid}." in body.get_payload()
    inst.wait_queue_empty()


def test_pecd_defers_when_postfix_certificate_is_not_trusted(make_instance, pair, pki):
    """verify against the wrong CA: nothing is sent in clear, the message waits."""
    _, pf = pair
    other = make_instance(conf={
        "routes": {PF_DOMAIN: f"localhost:{pf.port}"},
        "tls_policy": {PF_DOMAIN: "verify"},
        "outbound": {"tls": "may", "ca_file": pki["ca_e"], "timeout": "15s"},   # wrong CA
    })
    tid = unique_id("untrusted")
    rcpt = f"carol@{PF_DOMAIN}"
    qid = submit(other, [rcpt], message(tid, sender=ALICE, to=rcpt))
    wait_log(other, f"{qid}: to=<{rcpt}> status=deferred")
    assert not any(tid.encode() in open(p, "rb").read() for p in pf.maildir_files("carol"))
    assert any(qid in l for l in other.queue_lines())
