"""Debian's slapd on loopback for the directory tests (issue 7): a temporary slapd.conf with
the PEC schema (share/pec.schema), optionally TLS (ldaps:// on a second port, StartTLS on the
first), plus the helpers the LDAP scenarios share."""
import base64
import os
import signal
import ssl
import subprocess
import time

from pecd_harness import free_port, wait_port, stop_process

SLAPD = "/usr/sbin/slapd"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN, PASSWORD = "cn=admin,o=postacert", "secret"


class Slapd:
    """slapd -h "ldap://127.0.0.1:P/ [ldaps://127.0.0.1:P2/]"; tls=(cert.pem, key.pem) turns
    on TLS (StartTLS on ldap://, and ldaps://); ca is the CA file the ldap tools trust."""

    def __init__(self, root, tls=None, ca=None):
        self.root = os.path.join(root, "slapd")
        self.db = os.path.join(self.root, "db")
        os.makedirs(self.db)
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.tls_port = free_port() if tls else None
        self.ldaps_url = f"ldaps://127.0.0.1:{self.tls_port}" if tls else None
        self.conf = os.path.join(self.root, "slapd.conf")
        self.ca = ca
        self.proc = None
        self.configure(tls, PASSWORD)

    def configure(self, tls, rootpw):
        """(Re)writes slapd.conf: takes effect at the next start."""
        tls_lines = (f"TLSCertificateFile {tls[0]}\nTLSCertificateKeyFile {tls[1]}\n"
                     if tls else "")
        with open(self.conf, "w") as f:
            f.write(f"include /etc/ldap/schema/core.schema\n"
                    f"include {REPO}/share/pec.schema\n"
                    f"pidfile {self.root}/slapd.pid\n{tls_lines}"
                    f"modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
                    f"database mdb\nmaxsize 104857600\nsuffix \"o=postacert\"\n"
                    f"rootdn \"{ADMIN}\"\nrootpw {rootpw}\ndirectory {self.db}\n"
                    f"access to * by * read\n")

    def start(self):
        self.log = open(os.path.join(self.root, "slapd.log"), "a")
        urls = self.url + "/" + (f" {self.ldaps_url}/" if self.ldaps_url else "")
        self.proc = subprocess.Popen([SLAPD, "-f", self.conf, "-h", urls, "-d", "0"],
                                     stdout=self.log, stderr=self.log)
        wait_port(self.port, self.proc)
        if self.tls_port:
            wait_port(self.tls_port, self.proc)

    def stop(self):
        stop_process(self.proc)
        self.proc = None

    def ldap(self, tool, *args, input=None):
        env = dict(os.environ, LDAPTLS_CACERT=self.ca) if self.ca else None
        r = subprocess.run([tool, "-x", "-H", self.url, "-D", ADMIN, "-w", PASSWORD, *args],
                           input=input, capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 0, f"{tool}: {r.stdout}{r.stderr}"
        return r.stdout


def entry(p):
    """p's record with the MUST attributes of §4.5.9, the certificate as DER."""
    with open(os.path.join(p.dir, "signing.pem")) as f:
        pem = f.read()
    der = ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE"):])
    return (f"dn: providerName={p.name},o=postacert\nobjectClass: top\nobjectClass: provider\n"
            f"providerName: {p.name}\nproviderCertificateHash: {p.hash}\n"
            f"providerCertificate;binary:: {base64.b64encode(der).decode()}\n"
            f"mailReceipt: posta-certificata@{p.domain}\nmanagedDomains: {p.domain}\n"
            f"description: test provider {p.name}\n\n")


ROOT = ("dn: o=postacert\nobjectClass: top\nobjectClass: organization\n"
        "objectClass: LDIFLocationURLObject\no: postacert\n"
        "LDIFLocationURL: https://directory.example/igpec.ldif.p7m\n\n")


def message(frm, to, subject):
    return (f"From: <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((frm, subject)))}@client.test>\r\n\r\nprova\r\n").encode()


def wait_log(p, text, count=1, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if p.log(100000).count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{p.domain}: no '{text}' x{count} in the log:\n{p.log(40)}")


def reload(p):
    """SIGHUP and wait for the refresh thread's verdict (loaded or kept)."""
    before = p.log(100000)
    n_ok = before.count("providers' directory loaded from")
    n_kept = before.count("providers' directory not refreshed")
    p.proc.send_signal(signal.SIGHUP)
    end = time.time() + 30
    while time.time() < end:
        now = p.log(100000)
        if now.count("providers' directory loaded from") > n_ok:
            return "loaded"
        if now.count("providers' directory not refreshed") > n_kept:
            return "kept"
        time.sleep(0.1)
    raise AssertionError(f"no directory refresh after SIGHUP:\n{p.log(40)}")


def exchange(a, b, subject):
    """mario@a -> anna@b: b delivers the envelope, a gets avvenuta-consegna."""
    a.submit("mario", [f"anna@{b.domain}"], message(f"mario@{a.domain}", f"anna@{b.domain}",
                                                     subject))
    b.wait_mail("anna", lambda m: (m.get("X-Trasporto") or "").strip() == "posta-certificata"
                and subject in (m.get("Subject") or ""))
    a.wait_mail("mario", lambda m: (m.get("X-Ricevuta") or "").strip() == "avvenuta-consegna"
                and subject in (m.get("Subject") or ""))
