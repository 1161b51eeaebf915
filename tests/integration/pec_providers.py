"""Two PEC providers on loopback for the provider tests (issue 6): a shared test CA and
providers' directory made with `pecctl pki`, routes and TLS (policy verify) between them."""
import os
import smtplib
import ssl
import subprocess
import time
from email import message_from_bytes, policy

from pecd_harness import PECCTL, PECD, free_port, wait_port, LIVE, stop_process


def pecctl(*args, input=None, check=True):
    r = subprocess.run([PECCTL, *args], input=input, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"pecctl {' '.join(args)}: {r.returncode}\n{r.stdout}{r.stderr}"
    return r


class Provider:
    """privsep: pecd started as root runs its network-facing process as [pecd] user (the
    default, pecmail), its data in DIR/data (pecd gives that to the user; the keys and
    pecd.conf stay root's in DIR); root must be a directory that user can traverse.
    issue_args: more `pecctl pki issue` options (keys in a hardware module)."""

    def __init__(self, root, name, domain, ca, directory, privsep=False, issue_args=()):
        self.root, self.name, self.domain = root, name, domain
        self.dir = os.path.join(root, domain)
        os.makedirs(self.dir)
        self.privsep = privsep
        self.data = os.path.join(self.dir, "data") if privsep else self.dir
        self.ca, self.directory = ca, directory
        pecctl("pki", "issue", "--ca", ca, "--domain", domain, "--out", self.dir, "--name", name,
               "--tls-host", "localhost", "--tls-host", f"mx.{domain}", *issue_args)
        out = pecctl("pki", "hash", os.path.join(self.dir, "signing.pem")).stdout.split()
        self.hash = out[-1]
        self.ports = {"mx": free_port(), "submission": free_port()}
        self.proc = None
        self.log_path = os.path.join(self.dir, "pecd.log")
        self.extra = {}

    def directory_entry(self):
        return (f"dn: providerName={self.name},o=postacert\nobjectclass: top\nobjectclass: provider\n"
                f"providerName: {self.name}\nproviderCertificateHash: {self.hash}\n"
                f"mailReceipt: posta-certificata@{self.domain}\nmanagedDomains: {self.domain}\n\n")

    def write_config(self, routes, extra=None):
        conf = {
            # the data beside pecd.conf: no change of user (privsep: the default user)
            "pecd": {} if self.privsep else {"user": "root"},
            "provider": {"domain": self.domain, "hostname": f"mx.{self.domain}", "name": self.name,
                         "log_level": "debug", **({"data_dir": "data"} if self.privsep else {})},
            "users": {"passwd_file": "users"},
            "tls": {"certificate": "tls.pem", "key": "tls.key"},
            "mx": {"listen": f"127.0.0.1:{self.ports['mx']}"},
            "submission": {"listen": f"127.0.0.1:{self.ports['submission']}"},
            "pec": {"enabled": "yes", "signing_key": "signing.key",
                    "signing_certificate": "signing.pem", "trust": os.path.join(self.ca, "ca.pem"),
                    "directory": self.directory},
            "outbound": {"ca_file": os.path.join(self.ca, "ca.pem"), "timeout": "10s"},
            "tls_policy": {},
            "routes": {},
            "queue": {"retry_min": "1s", "retry_max": "2s"},
        }
        for dom, port in routes.items():
            conf["routes"][dom] = f"localhost:{port}"
            conf["tls_policy"][dom] = "verify"
        for sec, kv in (extra or {}).items():
            conf.setdefault(sec, {}).update(kv)
        with open(self.conf, "w") as f:
            for sec, kv in conf.items():
                if kv:
                    f.write(f"[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n")

    @property
    def conf(self):
        return os.path.join(self.dir, "pecd.conf")

    def add_user(self, local):
        addr = f"{local}@{self.domain}"
        pecctl("-c", self.conf, "user", "add", addr, "--password-stdin", input=f"{local}-password\n")
        return addr

    def start(self):
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([PECD, "-c", self.conf], stderr=self.logf, stdout=self.logf)
        LIVE.append(self)
        for p in self.ports.values():
            wait_port(p, self.proc)

    def stop(self):
        stop_process(self.proc)
        if self in LIVE:
            LIVE.remove(self)
        self.proc = None

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def log(self, tail=200):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-tail:])

    def submit(self, user, rcpts, msg, mail_from=None, mail_options=()):
        """Submits msg (bytes) as user (local part) over STARTTLS + AUTH; returns the reply.
        mail_options: MAIL FROM parameters (e.g. ["REQUIRETLS"])."""
        addr = f"{user}@{self.domain}"
        ctx = ssl.create_default_context(cafile=os.path.join(self.ca, "ca.pem"))
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30) as s:
            s.starttls(context=ctx)
            s.login(addr, f"{user}-password")
            return s.sendmail(mail_from or addr, rcpts, msg, mail_options=list(mail_options))

    def maildir(self, local):
        return os.path.join(self.data, "mail", self.domain, local)

    def mails(self, local):
        """Parsed messages in local's Maildir (new/ and cur/), oldest first, as (path, raw, msg)."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir(local), sub)
            if not os.path.isdir(d):
                continue
            for n in os.listdir(d):
                p = os.path.join(d, n)
                with open(p, "rb") as f:
                    raw = f.read()
                out.append((p, raw, message_from_bytes(raw, policy=policy.compat32)))
        out.sort(key=lambda x: os.path.basename(x[0]))
        return out

    def wait_mail(self, local, pred=lambda m: True, count=1, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            got = [x for x in self.mails(local) if pred(x[2])]
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{local}@{self.domain}: {len([x for x in self.mails(local) if pred(x[2])])}"
                             f" of {count} messages; have "
                             f"{[(x[2].get('X-Ricevuta') or x[2].get('X-Trasporto') or x[2].get('Subject')) for x in self.mails(local)]}"
                             f"\n{self.log(60)}")


def ricevuta(kind):
    return lambda m: (m.get("X-Ricevuta") or "").strip() == kind


def trasporto(kind):
    return lambda m: (m.get("X-Trasporto") or "").strip() == kind


def verify(path, ca, directory):
    """pecctl verify --json on a stored message (the Maildir lines we add stay outside the
    signed part); returns the parsed JSON object."""
    import json
    r = pecctl("verify", "--json", "--trust", os.path.join(ca, "ca.pem"), "--directory",
               directory, path, check=False)
    return json.loads(r.stdout.strip().splitlines()[-1]), r.returncode


def openssl_verify(raw, ca):
    """openssl cms -verify on the signed entity of a stored message, unchanged."""
    body = raw
    r = subprocess.run(["openssl", "cms", "-verify", "-CAfile", os.path.join(ca, "ca.pem"),
                        "-purpose", "any", "-out", "/dev/null"], input=body, capture_output=True)
    return r.returncode, r.stderr.decode(errors="replace")


def make_providers(tmp_path, privsep=False, issue_args=lambda domain: ()):
    """Provider A (pec.a.test) and B (pec.b.test) with one test CA and one directory;
    returns (a, b, ca, directory), not configured or started yet."""
    ca = str(tmp_path / "ca")
    pecctl("pki", "ca", ca, "--name", "Test PEC CA")
    if privsep:
        os.chmod(ca, 0o755)     # ca.pem: the trust anchors pecd's user reads
    directory = str(tmp_path / "directory.ldif")
    a = Provider(str(tmp_path), "Provider A", "pec.a.test", ca, directory, privsep,
                 issue_args("pec.a.test"))
    b = Provider(str(tmp_path), "Provider B", "pec.b.test", ca, directory, privsep,
                 issue_args("pec.b.test"))
    with open(directory, "w") as f:
        f.write("dn: o=postacert\nobjectclass: top\nobjectclass: organization\no: postacert\n\n")
        f.write(a.directory_entry() + b.directory_entry())
    return a, b, ca, directory


def start_pair(a, b):
    """A and B routed to each other (TLS verify), with users mario@A and anna@B, started."""
    a.write_config({"pec.b.test": b.ports["mx"]})
    b.write_config({"pec.a.test": a.ports["mx"]})
    a.add_user("mario")
    b.add_user("anna")
    a.start()
    b.start()
