"""The providers' directory as the PEC network exchanges it (issue 19, RFC 6109 §4.5, §5.6):
LDIF signed in a .p7m (CMS SignedData, DER, content attached) downloaded over HTTPS with a
client certificate.

A test "central authority" (its own CA and signing certificate, `pecctl pki`) collects the
records that providers A and B publish with `pecctl directory publish`, puts them into one
LDIF, signs it with `openssl cms -sign -nodetach -outform DER` and serves it from Python's
http.server behind ssl (CERT_REQUIRED against the providers' test CA).  Both pecd read
`directory = https://127.0.0.1:PORT/igpec.ldif.p7m` with `directory_client_cert` /
`directory_client_key`, `directory_ca_file` and `directory_signer` (the authority's CA).

Scenarios: PEC exchanged over that directory; every failure (one byte of content changed,
another authority's signature, an expired or a revoked signer, the file cut in half, the
connection dropped, HTTP 404 and 500, a server certificate of another name, a server that
stalls, LDIF the model refuses, not DER at all) keeps the copy in use, in pecd (SIGHUP) and
for `pecctl directory refresh` (exit 1, cache unchanged), each naming its reason; a client
without a certificate is refused by the server and pecd says so, starting from its cached
copy; `pecctl directory refresh` prints the changes and pecd takes the cache it wrote when
its own download fails; a copy older than 48 hours is warned about and shown with its age;
`directory publish` with a renewal certificate, checked with `openssl cms -verify` and read
back; configurations that are refused."""
import http.server
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time

import pytest

from ldap_fixture import exchange, reload, wait_log
from pec_providers import make_providers, pecctl
from pecd_harness import PECCTL, PECD, free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed")

ROOT = ("dn: o=postacert\nobjectclass: top\nobjectclass: organization\n"
        "objectClass: LDIFLocationURLObject\no: postacert\n"
        "LDIFLocationURL: https://127.0.0.1/igpec.ldif.p7m\n"
        "description: Base root for the PEC providers directory\n\n")
PATH = "/igpec.ldif.p7m"


def run(*args, input=None):
    r = subprocess.run(list(args), input=input, capture_output=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(args)}: {r.stderr.decode(errors='replace')}"
    return r.stdout


def cn(cert):
    for rdn in (cert or {}).get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return ""


class DirServer:
    """HTTPS on 127.0.0.1 (ssl, CERT_REQUIRED against ca): serves self.files[path] as
    self.mode[path] says ("ok", an HTTP status, "drop" half-way, "stall"), and records
    the client certificates it saw and the TLS handshakes it refused."""

    def __init__(self, cert, key, ca):
        self.ca = ca
        self.port = free_port()
        self.files, self.mode = {}, {}
        self.peers, self.errors = [], []
        self.set_cert(cert, key)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self):
                self.request.settimeout(15)
                self.request.do_handshake()          # refusals go to handle_error
                super().setup()

            def do_GET(self):
                server.peers.append(cn(self.connection.getpeercert()))
                body = server.files.get(self.path)
                mode = server.mode.get(self.path, "ok")
                if body is None or isinstance(mode, int):
                    self.send_error(mode if isinstance(mode, int) else 404)
                    return
                if mode == "stall":
                    time.sleep(8)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkcs7-mime; smime-type=signed-data")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "ok" else body[:len(body) // 2])
                self.wfile.flush()

            def log_message(self, *args):
                pass

        class Httpd(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = super().get_request()
                return server.ctx.wrap_socket(sock, server_side=True,
                                              do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):
                server.errors.append(str(sys.exc_info()[1]))

        self.httpd = Httpd(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def set_cert(self, cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.verify_mode = ssl.CERT_REQUIRED          # RFC 6109 §5.6: licensed providers only
        ctx.load_verify_locations(self.ca)
        self.ctx = ctx

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}{PATH}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Authority:
    """The central system: its own CA and a signing certificate (pecctl pki)."""

    def __init__(self, root, name="Test IGPEC"):
        self.dir = os.path.join(root, name.replace(" ", "-"))
        self.ca = os.path.join(self.dir, "ca")
        pecctl("pki", "ca", self.ca, "--name", name)
        self.signer = self.issue("signer")

    def issue(self, sub):
        out = os.path.join(self.dir, sub)
        pecctl("pki", "issue", "--ca", self.ca, "--domain", "igpec.test", "--out", out,
               "--name", "IGPEC")
        return (os.path.join(out, "signing.pem"), os.path.join(out, "signing.key"))

    @property
    def ca_pem(self):
        return os.path.join(self.ca, "ca.pem")

    def sign(self, ldif, signer=None):
        cert, key = signer or self.signer
        return run("openssl", "cms", "-sign", "-nodetach", "-binary", "-outform", "DER",
                   "-signer", cert, "-inkey", key, input=ldif.encode())

    def expired_signer(self):
        """A signing certificate of this authority valid from 2024-01-01 to 2024-02-01
        (`openssl ca -startdate/-enddate`: OpenSSL 3.0's x509 has no start date option)."""
        d = os.path.join(self.dir, "expired")
        os.makedirs(d)
        cnf = os.path.join(d, "ca.cnf")
        with open(cnf, "w") as f:
            f.write(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n"
                    f"serial = {d}/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
                    "[p]\ncommonName = supplied\n")
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1001\n")
        with open(os.path.join(d, "ext"), "w") as f:
            f.write("keyUsage = critical,digitalSignature\nextendedKeyUsage = emailProtection\n")
        key, csr, cert = (os.path.join(d, n) for n in ("signing.key", "req.csr", "signing.pem"))
        run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
            "-out", csr, "-subj", "/CN=IGPEC expired signer")
        run("openssl", "ca", "-batch", "-config", cnf, "-cert", self.ca_pem, "-keyfile",
            os.path.join(self.ca, "ca.key"), "-in", csr, "-out", cert, "-notext",
            "-startdate", "20240101000000Z", "-enddate", "20240201000000Z",
            "-extfile", os.path.join(d, "ext"))
        return (cert, key)


def record(p7m, ca):
    """The LDIF inside a provider's published .p7m, checked by openssl."""
    return run("openssl", "cms", "-verify", "-inform", "DER", "-in", p7m, "-CAfile", ca,
               "-purpose", "any").decode()


def body(ldif):
    """An LDIF without its "version: 1" line."""
    return ldif.split("\n\n", 1)[1] if ldif.startswith("version:") else ldif


def directory_of(*records):
    return "version: 1\n\n" + ROOT + "".join(body(r).rstrip("\n") + "\n\n" for r in records)


def dir_conf(p, server, auth, ca, client_cert=True, extra=None):
    pec = {"directory": server.url, "directory_signer": auth.ca_pem,
           "directory_ca_file": os.path.join(ca, "ca.pem"), "directory_timeout": "3s",
           "directory_location_url": f"https://127.0.0.1:{server.port}/{p.domain}.p7m"}
    if client_cert:
        pec.update(directory_client_cert="tls.pem", directory_client_key="tls.key")
    pec.update(extra or {})
    return {"pec": pec}


def cache_p7m(p):
    with open(os.path.join(p.dir, "directory", "directory.p7m"), "rb") as f:
        return f.read()


@pytest.fixture
def world(tmp_path):
    a, b, ca, _ = make_providers(tmp_path)
    auth = Authority(str(tmp_path))
    pecctl("pki", "crl", "--ca", auth.ca)                 # empty for now
    tls = str(tmp_path / "dirserver")
    pecctl("pki", "issue", "--ca", ca, "--domain", "directory.test", "--out", tls,
           "--tls-host", "127.0.0.1")
    server = DirServer(os.path.join(tls, "tls.pem"), os.path.join(tls, "tls.key"),
                       os.path.join(ca, "ca.pem"))
    crl = {"crl_urls": "file:" + os.path.join(auth.ca, "crl.pem")}
    a.write_config({b.domain: b.ports["mx"]}, extra=dir_conf(a, server, auth, ca, extra=crl))
    b.write_config({a.domain: a.ports["mx"]}, extra=dir_conf(b, server, auth, ca))
    # each provider publishes its own record; the authority collects them (§4.5)
    recs = []
    for p in (a, b):
        out = os.path.join(str(tmp_path), f"{p.domain}.p7m")
        pecctl("-c", p.conf, "directory", "publish", out)
        server.files[f"/{p.domain}.p7m"] = open(out, "rb").read()
        recs.append(record(out, os.path.join(ca, "ca.pem")))
    good = directory_of(*recs)
    server.files[PATH] = auth.sign(good)
    for p in (a, b):
        p.add_user("mario")
        p.add_user("anna")
        p.start()
    yield a, b, ca, auth, server, good, recs, tls
    for p in (a, b):
        p.stop()
    server.stop()


def test_exchange_over_the_signed_directory(world):
    a, b, ca, auth, server, good, recs, tls = world
    for p in (a, b):
        log = p.log()
        assert f"providers' directory loaded from {server.url}: 2 providers" in log, log
        assert "signed by /C=IT/O=IGPEC/CN=Posta Certificata IGPEC at " in log, log
        assert cache_p7m(p) == server.files[PATH]      # kept as received
    # both presented their client certificate (the TLS certificate of pecctl pki issue)
    assert {"pec.a.test", "pec.b.test"} <= set(server.peers), server.peers
    exchange(a, b, "over the signed directory")
    exchange(b, a, "and back")
    r = pecctl("-c", a.conf, "directory", "list")
    assert "Provider A" in r.stdout and "Provider B" in r.stdout, r.stdout
    assert "2 providers, 3 records" in r.stdout, r.stdout
    assert "signed by " in r.stdout and "cached copy: " in r.stdout, r.stdout
    assert "WARNING" not in r.stdout, r.stdout


def variant(world, what, reason):
    """Sets the server up for one failure; pecctl refresh and pecd's refresh both keep the
    copy in use and name the reason."""
    a = world[0]
    before = cache_p7m(a)
    r = pecctl("-c", a.conf, "directory", "refresh", check=False)
    assert r.returncode == 1, f"{what}: {r.stdout}{r.stderr}"
    assert reason in r.stderr, f"{what}: {r.stderr}"
    assert "(2 providers, fetched" in r.stderr and "stays in use" in r.stderr, r.stderr
    assert cache_p7m(a) == before, what
    assert reload(a) == "kept", what
    log = a.log(10)
    assert reason in log and "keeping the previous copy (2 providers" in log, f"{what}:\n{log}"


def test_every_failure_keeps_the_copy_in_use(world, tmp_path):
    a, b, ca, auth, server, good, recs, tls = world
    signed = server.files[PATH]
    other = Authority(str(tmp_path), "Other Authority")
    revoked = auth.issue("revoked-signer")
    pecctl("pki", "revoke", "--ca", auth.ca, "--reason", "keyCompromise", revoked[0])
    changed = bytearray(signed)
    at = changed.find(b"managedDomains: pec.b.test")
    assert at > 0
    changed[at + len("managedDomains: pec.b.")] ^= 0x01   # pec.b.test -> pec.b.uest
    broken = good.replace("mailReceipt: posta-certificata@pec.b.test",
                          "mailReceipt: not an address")
    wrong_name = str(tmp_path / "wrong-name")
    pecctl("pki", "issue", "--ca", ca, "--domain", "other-name.test", "--out", wrong_name)
    cases = [
        ("one byte of content changed", bytes(changed), "ok",
         "signature: content-changed: the content was changed after signing"),
        ("another authority", other.sign(good), "ok",
         "signature: unexpected-signer: the signer"),
        ("expired signer", auth.sign(good, auth.expired_signer()), "ok",
         "signature: signer-expired: the signer certificate"),
        ("revoked signer", auth.sign(good, revoked), "ok",
         "signature: signer-revoked: the signer certificate"),
        ("file cut in half", signed[:len(signed) // 2], "ok", "signature: truncated: the DER "
                                                              "structure announces"),
        ("connection dropped half-way", signed, "drop", "truncated download"),
        ("HTTP 404", signed, 404, "HTTP status 404"),
        ("HTTP 500", signed, 500, "HTTP status 500"),
        ("server stalls", signed, "stall", "timeout"),
        ("LDIF the model refuses", auth.sign(broken), "ok",
         "mailReceipt is not an address of dot-atoms"),
        ("not DER at all", good.encode(), "ok", "signature: not-der"),
    ]
    for what, data, mode, reason in cases:
        server.files[PATH], server.mode[PATH] = data, mode
        variant(world, what, reason)
    # the server's certificate names another host
    server.files[PATH], server.mode[PATH] = signed, "ok"
    server.set_cert(os.path.join(wrong_name, "tls.pem"), os.path.join(wrong_name, "tls.key"))
    variant(world, "server certificate of another name",
            "TLS: the server certificate is not accepted")
    assert "127.0.0.1" in a.log(10)
    server.set_cert(os.path.join(tls, "tls.pem"), os.path.join(tls, "tls.key"))
    # mail still flows on the copy kept, and the good file is taken again
    exchange(a, b, "on the copy kept")
    assert reload(a) == "loaded"
    r = pecctl("-c", a.conf, "directory", "refresh")
    assert "0 changes since the cached copy" in r.stdout, r.stdout


def test_client_without_certificate_is_refused(world, tmp_path):
    a, b, ca, auth, server, good, recs, tls = world
    refused = len(server.errors)
    served = len(server.peers)
    b.stop()
    b.write_config({a.domain: a.ports["mx"]},
                   extra=dir_conf(b, server, auth, ca, client_cert=False))
    r = pecctl("-c", b.conf, "directory", "refresh", check=False)
    assert r.returncode == 1 and "TLS" in r.stderr and "no client certificate" in r.stderr, \
        r.stderr
    b.start()                                          # from its cached copy
    wait_log(b, "using the cached copy")
    log = b.log(20)
    assert "TLS" in log and "no client certificate" in log, log
    assert len(server.errors) >= refused + 2, server.errors
    assert any("certificate" in e.lower() for e in server.errors[refused:]), server.errors
    assert len(server.peers) == served                 # nothing was served to it
    exchange(a, b, "B on its cached copy")


def test_refresh_prints_changes_and_pecd_takes_the_cache(world, tmp_path):
    a, b, ca, auth, server, good, recs, tls = world
    # A renews its signing certificate: the next one is published beside the current
    nxt = str(tmp_path / "a-next")
    pecctl("pki", "issue", "--ca", ca, "--domain", a.domain, "--out", nxt, "--name", a.name)
    new_hash = pecctl("pki", "hash", os.path.join(nxt, "signing.pem")).stdout.split()[-1]
    a_conf = open(a.conf).read()
    out = str(tmp_path / "a-renewed.p7m")
    conf2 = os.path.join(a.dir, "renew.conf")
    with open(conf2, "w") as f:
        f.write(a_conf.replace("[pec]\n", "[pec]\nsigning_certificate_next = "
                               + os.path.join(nxt, "signing.pem") + "\n", 1))
    pecctl("-c", conf2, "directory", "publish", out)
    rec_a = record(out, os.path.join(ca, "ca.pem"))
    assert rec_a.count("providerCertificateHash:") == 2 and new_hash in rec_a, rec_a
    # a third provider, and a domain that moves from A to B
    rec_c = ("dn: providerName=Provider C,o=postacert\nobjectclass: top\nobjectclass: provider\n"
             "providerName: Provider C\nproviderCertificateHash: " + "c" * 40 + "\n"
             "mailReceipt: posta-certificata@pec.c.test\nmanagedDomains: pec.c.test\n")
    old = directory_of(recs[0].replace("managedDomains: pec.a.test",
                                       "managedDomains: pec.a.test\nmanagedDomains: moved.test"),
                       recs[1])
    server.files[PATH] = auth.sign(old)
    assert reload(a) == "loaded"
    new = directory_of(rec_a, recs[1].replace("managedDomains: pec.b.test",
                                              "managedDomains: pec.b.test\n"
                                              "managedDomains: moved.test"), rec_c)
    server.files[PATH] = auth.sign(new)
    r = pecctl("-c", a.conf, "directory", "refresh")
    for line in ("+ provider Provider C", f"+ certificate {new_hash} (Provider A)",
                 "~ domain moved.test: Provider A -> Provider B",
                 f"+ certificate {'c' * 40} (Provider C)",
                 "+ domain pec.c.test (Provider C)", "5 changes since the cached copy",
                 "cached copy written"):
        assert line in r.stdout, r.stdout
    assert cache_p7m(a) == server.files[PATH]
    # pecd's own download now fails: it takes the copy pecctl wrote, verified again
    server.mode[PATH] = 503
    n = a.log(100000).count("loaded from the cached copy")
    a.proc.send_signal(signal.SIGHUP)
    wait_log(a, "loaded from the cached copy", count=n + 1)
    assert "3 providers" in a.log(5), a.log(5)
    # a cache file that does not verify is not taken
    with open(os.path.join(a.dir, "directory", "directory.p7m"), "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    a.proc.send_signal(signal.SIGHUP)
    wait_log(a, "changed but is not taken")


def test_stale_copy_is_warned_about(world):
    a, b, ca, auth, server, good, recs, tls = world
    a.stop()
    server.mode[PATH] = 500
    p7m = os.path.join(a.dir, "directory", "directory.p7m")
    three_days = time.time() - 72 * 3600
    os.utime(p7m, (three_days, three_days))
    a.start()
    wait_log(a, "using the cached copy")
    wait_log(a, "was fetched 72 hours ago")
    assert reload(a) == "kept"
    wait_log(a, "was fetched 72 hours ago", count=2)   # at every attempt
    r = pecctl("-c", a.conf, "directory", "list", check=False)
    assert r.returncode == 1 and "HTTP status 500" in r.stderr, r.stderr
    assert "3 d 0 h old: WARNING older than 48 hours" in r.stderr, r.stderr
    r = pecctl("-c", a.conf, "directory", "list", "--cache")
    assert "2 providers" in r.stdout and "WARNING older than 48 hours" in r.stdout, r.stdout
    exchange(a, b, "on a stale copy")


def test_publish_renewal_and_file_p7m(tmp_path):
    a, b, ca, _ = make_providers(tmp_path)
    nxt = str(tmp_path / "next")
    pecctl("pki", "issue", "--ca", ca, "--domain", a.domain, "--out", nxt, "--name", a.name)
    a.write_config({}, extra={"pec": {
        "signing_certificate_next": os.path.join(nxt, "signing.pem"),
        "directory_location_url": "https://pec.a.test/ldif/a.p7m",
        "directory_description": "Servizi di posta certificata \u00e8 qui"}})
    out = str(tmp_path / "a.p7m")
    r = pecctl("-c", a.conf, "directory", "publish", out)
    assert "(signing_certificate_next)" in r.stdout, r.stdout
    ca_pem = os.path.join(ca, "ca.pem")
    r = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", out,
                        "-CAfile", ca_pem], capture_output=True)
    assert r.returncode == 0 and b"Verification successful" in r.stderr, r.stderr
    ldif = r.stdout.decode()
    hashes = [a.hash.lower(),
              pecctl("pki", "hash", os.path.join(nxt, "signing.pem")).stdout.split()[-1].lower()]
    for h in hashes:
        assert f"providerCertificateHash: {h}" in ldif, ldif
    assert ldif.count("providerCertificate;binary::") == 2
    for line in ("dn: providerName=Provider A,o=postacert", "providerName: Provider A",
                 "mailReceipt: posta-certificata@pec.a.test", "managedDomains: pec.a.test",
                 "LDIFLocationURL: https://pec.a.test/ldif/a.p7m", "description:: "):
        assert line in ldif, ldif
    # DER, content attached, signer certificate included
    r = subprocess.run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", out],
                       capture_output=True, text=True)
    assert "eContent: " in r.stdout and "<ABSENT>" not in r.stdout.split("eContent:")[1][:20]
    assert "certificates:" in r.stdout
    # parsed back by the model: a configuration reading file:a.p7m
    conf = os.path.join(a.dir, "reader.conf")
    base = open(a.conf).read()

    def reader(signer):
        with open(conf, "w") as f:
            f.write(re.sub(r"(?m)^directory = .*$", f"directory = file:{out}\n"
                           f"directory_signer = {signer}", base))
    reader(ca_pem)
    r = pecctl("-c", conf, "directory", "list")
    assert all(h in r.stdout for h in hashes) and "1 providers, 1 records" in r.stdout, r.stdout
    assert "signed by /C=IT/O=Provider A" in r.stdout, r.stdout
    # from stdout too
    r = subprocess.run([PECCTL, "-c", a.conf, "directory",
                        "publish", "-"], capture_output=True)
    assert r.returncode == 0 and r.stdout[:1] == b"\x30", r.stderr
    # another signer than directory_signer names: refused with the reason
    other = str(tmp_path / "other-ca")
    pecctl("pki", "ca", other, "--name", "Another CA")
    reader(f"{other}/ca.pem")
    r = pecctl("-c", conf, "directory", "list", check=False)
    assert r.returncode == 1 and "unexpected-signer" in r.stderr, r.stderr


@pytest.mark.parametrize("pec,reason", [
    ({"directory": "http://127.0.0.1/igpec.ldif.p7m"}, "downloaded over HTTPS only"),
    ({"directory": "https://127.0.0.1/igpec.ldif.p7m"}, "it needs directory_signer"),
    ({"directory": "https://127.0.0.1/d.p7m", "directory_signer": "s.pem",
      "directory_client_key": "tls.key"}, "directory_client_cert and directory_client_key go "
                                          "together"),
    ({"directory_location_url": "http://pec.a.test/a.p7m"}, "is not an https:// URL"),
])
def test_refused_configurations(tmp_path, pec, reason):
    a, b, ca, _ = make_providers(tmp_path)
    a.write_config({}, extra={"pec": pec})
    r = pecctl("-c", a.conf, "directory", "list", check=False)
    assert r.returncode != 0 and reason in r.stderr, r.stderr
    r = subprocess.run([PECD, "-c", a.conf], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and reason in r.stderr, r.stderr
