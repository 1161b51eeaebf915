"""`pecctl init`: a ready-to-run provider instance (docs/pecctl-init.md).

Two providers initialised with one --ca and one --directory: both configurations pass
`pecd -t`, both entries are in the providers' directory with the right
providerCertificateHash (checked against `openssl x509 -fingerprint -sha1`), the signing
and TLS certificates chain to the shared CA with the right names and purposes, key files
are 0600, --force replaces (never duplicates) an entry, concurrent inits lose no entry,
pecd starts with the generated configuration, and bad arguments exit 2.
"""
import base64
import configparser
import os
import shutil
import signal
import socket
import ssl
import subprocess

import pytest

from pecd_harness import PECCTL, PECD, free_port, reachable_dir, require_binaries, wait_port

CA_SUBDIR = "ca"


def init(*args, timeout=60):
    return subprocess.run([PECCTL, "init", *args], capture_output=True, text=True,
                          timeout=timeout)


def openssl(*args, input=None):
    return subprocess.run(["openssl", *args], capture_output=True, text=True, input=input)


def pem_certs(path):
    """The PEM blocks of a file, in order."""
    text = open(path).read()
    out, cur = [], None
    for line in text.splitlines(keepends=True):
        if line.startswith("-----BEGIN CERTIFICATE-----"):
            cur = line
        elif cur is not None:
            cur += line
            if line.startswith("-----END CERTIFICATE-----"):
                out.append(cur)
                cur = None
    return out


def sha1_fingerprint(path):
    r = openssl("x509", "-in", path, "-noout", "-fingerprint", "-sha1")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split("=", 1)[1].replace(":", "").upper()


def der_of(path):
    r = subprocess.run(["openssl", "x509", "-in", path, "-outform", "DER"], capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def ldif_records(path):
    """RFC 2849, what we need of it: records separated by blank lines; each record a
    list of (attribute, value) with folded lines joined and '::' values decoded."""
    text = open(path, encoding="utf-8").read()
    records = []
    for chunk in text.split("\n\n"):
        lines = []
        for line in chunk.split("\n"):
            if not line:
                continue
            if line.startswith(" "):
                lines[-1] += line[1:]
            elif not line.startswith("#"):
                lines.append(line)
        attrs = []
        for line in lines:
            name, _, rest = line.partition(":")
            if rest.startswith(":"):
                value = base64.b64decode(rest[1:].strip())
                if not name.lower().endswith(";binary"):
                    value = value.decode("utf-8")
            else:
                value = rest.lstrip(" ")
            attrs.append((name, value))
        if attrs:
            records.append(attrs)
    return records


def values(rec, name):
    return [v for n, v in rec if n.lower() == name.lower()]


def provider_entries(path):
    return {values(r, "providerName")[0]: r for r in ldif_records(path)
            if values(r, "providerName")}


class Provider:
    def __init__(self, base, key, domain, name, smtp, submission):
        self.dir = os.path.join(base, key)
        self.domain = domain
        self.name = name
        self.smtp = smtp
        self.submission = submission
        self.conf = os.path.join(self.dir, "pecd.conf")

    def path(self, *p):
        return os.path.join(self.dir, *p)


def init_provider(p, ca, directory, *extra):
    r = init(p.dir, "--domain", p.domain, "--name", p.name, "--smtp", str(p.smtp),
             "--submission", str(p.submission), "--ca", ca, "--directory", directory, *extra)
    assert r.returncode == 0, f"pecctl init {p.domain}: {r.returncode}\n{r.stdout}{r.stderr}"
    return r


@pytest.fixture(scope="module")
def pair():
    """Providers A and B, one test CA, one directory file, routes to each other; in a
    directory pecd's unprivileged user can reach (pecd starts as root here)."""
    require_binaries()
    base = reachable_dir("pec-init-")
    a = Provider(base, "a", "pec-a.test", "Provider A S.p.A.", free_port(), free_port())
    b = Provider(base, "b", "pec-b.test", "Provider B", free_port(), free_port())
    ca = os.path.join(base, "shared-ca")
    directory = os.path.join(base, "shared", "providers.ldif")
    a.init_out = init_provider(a, ca, directory, "--route", f"{b.domain}=127.0.0.1:{b.smtp}",
                               "--submissions", str(free_port())).stdout
    b.init_out = init_provider(b, ca, directory, "--route",
                               f"{a.domain}=127.0.0.1:{a.smtp}").stdout
    yield {"a": a, "b": b, "ca": ca, "directory": directory, "base": base}
    shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- files

def test_files_and_modes(pair):
    # run as root, the users file is read by pecd's unprivileged user through its group,
    # and the instance directory is that group's to enter, not to change (issue 20)
    import grp
    as_root = os.geteuid() == 0
    for p in (pair["a"], pair["b"]):
        if as_root:
            gid = grp.getgrnam("pecmail").gr_gid
            st = os.stat(p.path("users"))
            assert (st.st_uid, st.st_gid) == (0, gid), st
            st = os.stat(p.dir)
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, 0o750), st
        for f, mode in [("pec/sign.key", 0o600), ("tls/key.pem", 0o600),
                        ("users", 0o640 if as_root else 0o600),
                        ("pec/sign.crt", None), ("tls/cert.pem", None), ("ca.crt", None),
                        ("pecd.conf", None)]:
            st = os.stat(p.path(f))
            if mode is not None:
                assert st.st_mode & 0o777 == mode, f"{p.path(f)}: {oct(st.st_mode & 0o777)}"
        assert os.path.getsize(p.path("users")) == 0
    assert os.stat(os.path.join(pair["ca"], "ca.key")).st_mode & 0o777 == 0o600
    ca = open(os.path.join(pair["ca"], "ca.crt")).read()
    assert open(pair["a"].path("ca.crt")).read() == ca
    assert open(pair["b"].path("ca.crt")).read() == ca


def test_summary_names_the_next_commands(pair):
    out = pair["a"].init_out
    assert "created" in out and pair["directory"] in out
    assert f"pecctl -c {pair['a'].conf} user add" in out
    assert f"pecd -c {pair['a'].conf}" in out
    assert "reused" in pair["b"].init_out


def test_pecd_t_accepts_both(pair):
    for p in (pair["a"], pair["b"]):
        r = subprocess.run([PECD, "-t", "-c", p.conf], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "configuration OK" in r.stdout


def test_pecd_conf_contents(pair):
    a, b = pair["a"], pair["b"]
    cp = configparser.ConfigParser(inline_comment_prefixes=(";",))
    cp.read(a.conf)
    assert cp["provider"]["domain"] == a.domain
    assert cp["provider"]["hostname"] == f"mx.{a.domain}"
    assert cp["provider"]["name"] == a.name
    assert cp["tls"]["certificate"] == "tls/cert.pem"
    assert cp["mx"]["listen"] == f"127.0.0.1:{a.smtp}"
    assert cp["submission"]["listen"] == f"127.0.0.1:{a.submission}"
    assert cp.has_section("submissions")
    assert cp["pec"]["enabled"] == "yes"
    assert cp["pec"]["signing_key"] == "pec/sign.key"
    assert cp["pec"]["trust"] == "ca.crt"
    assert cp["pec"]["directory"] == pair["directory"]
    assert os.path.isabs(cp["pec"]["directory"])
    assert cp["outbound"]["ca_file"] == "ca.crt"
    assert cp["routes"][b.domain] == f"127.0.0.1:{b.smtp}"
    cp_b = configparser.ConfigParser(inline_comment_prefixes=(";",))
    cp_b.read(b.conf)
    assert not cp_b.has_section("submissions")
    for line in open(a.conf):
        assert len(line.rstrip("\n")) <= 196


# --------------------------------------------------------------------------- directory

def test_directory_holds_both_entries(pair):
    path = pair["directory"]
    text = open(path).read()
    recs = ldif_records(path)
    root = recs[0]
    assert values(root, "dn") == ["o=postacert"]
    assert values(root, "o") == ["postacert"]
    assert "LDIFLocationURLObject" in values(root, "objectClass")
    entries = provider_entries(path)
    assert set(entries) == {pair["a"].name, pair["b"].name}
    for p in (pair["a"], pair["b"]):
        e = entries[p.name]
        assert values(e, "dn") == [f"providerName={p.name},o=postacert"]
        assert set(values(e, "objectclass")) == {"top", "provider"}
        assert values(e, "providerCertificateHash") == [sha1_fingerprint(p.path("pec/sign.crt"))]
        assert values(e, "providerCertificate;binary") == [der_of(p.path("pec/sign.crt"))]
        assert values(e, "mailReceipt") == [f"posta-certificata@{p.domain}"]
        assert values(e, "managedDomains") == [p.domain]
    # RFC 2849: lines folded at 76 columns; D12: a blank line between entries
    assert all(len(line) <= 76 for line in text.split("\n"))
    assert text.count("\ndn: ") == 2 and text.count("\n\ndn: ") == 2
    assert text.endswith("\n") and not text.endswith("\n\n")


# --------------------------------------------------------------------------- certificates

@pytest.mark.parametrize("key", ["a", "b"])
def test_signing_certificate(pair, key):
    p = pair[key]
    ca = p.path("ca.crt")
    r = openssl("verify", "-CAfile", ca, "-purpose", "smimesign", p.path("pec/sign.crt"))
    assert r.returncode == 0, r.stdout + r.stderr
    certs = pem_certs(p.path("pec/sign.crt"))
    assert len(certs) == 2 and certs[1] == open(ca).read(), "chain: signer then CA"
    r = openssl("x509", "-in", p.path("pec/sign.crt"), "-noout", "-ext",
                "subjectAltName,extendedKeyUsage,keyUsage", "-subject")
    assert r.returncode == 0, r.stderr
    assert f"email:posta-certificata@{p.domain}" in r.stdout
    assert "E-mail Protection" in r.stdout
    assert "Digital Signature" in r.stdout
    assert f"O = {p.name}" in r.stdout
    # the key belongs to the certificate
    k = openssl("pkey", "-in", p.path("pec/sign.key"), "-pubout")
    c = openssl("x509", "-in", p.path("pec/sign.crt"), "-noout", "-pubkey")
    assert k.returncode == 0 and k.stdout == c.stdout


@pytest.mark.parametrize("key", ["a", "b"])
def test_tls_certificate(pair, key):
    p = pair[key]
    ca, cert = p.path("ca.crt"), p.path("tls/cert.pem")
    for check in (["-verify_hostname", f"mx.{p.domain}"], ["-verify_hostname", "localhost"],
                  ["-verify_ip", "127.0.0.1"]):
        r = openssl("verify", "-CAfile", ca, "-purpose", "sslserver", *check, cert)
        assert r.returncode == 0, f"{check}: {r.stdout}{r.stderr}"
    other = pair["b" if key == "a" else "a"]
    r = openssl("verify", "-CAfile", ca, "-verify_hostname", f"mx.{other.domain}", cert)
    assert r.returncode != 0
    certs = pem_certs(cert)
    assert len(certs) == 2 and certs[1] == open(ca).read()


def test_pki_tools_read_the_ca(pair):
    """`pecctl pki` names the CA certificate ca.pem: the shared CADIR serves it too."""
    r = subprocess.run([PECCTL, "pki", "crl", "--ca", pair["ca"]], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = openssl("crl", "-in", os.path.join(pair["ca"], "crl.pem"), "-noout", "-CAfile",
                os.path.join(pair["ca"], "ca.crt"))
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- re-running

def test_force_replaces_the_entry(tmp_path):
    require_binaries()
    base = str(tmp_path)
    ca, directory = os.path.join(base, "ca"), os.path.join(base, "dir.ldif")
    a = Provider(base, "a", "pec-a.test", "Provider A", 26001, 26002)
    b = Provider(base, "b", "pec-b.test", "Provider B", 26003, 26004)
    init_provider(a, ca, directory)
    init_provider(b, ca, directory)
    first = provider_entries(directory)
    open(a.path("users"), "w").write("kept@pec-a.test:{CRYPT}$y$x:::::\n")

    r = init(a.dir, "--domain", a.domain, "--name", a.name, "--ca", ca,
             "--directory", directory)
    assert r.returncode == 1
    assert "pecd.conf" in r.stderr and "--force" in r.stderr
    assert provider_entries(directory) == first

    r = init(a.dir, "--domain", a.domain, "--name", a.name, "--ca", ca, "--directory",
             directory, "--force")
    assert r.returncode == 0, r.stderr
    assert "replaced" in r.stdout
    after = provider_entries(directory)
    assert set(after) == {a.name, b.name}
    assert after[b.name] == first[b.name]
    new_hash = sha1_fingerprint(a.path("pec/sign.crt"))
    assert values(after[a.name], "providerCertificateHash") == [new_hash]
    assert new_hash != values(first[a.name], "providerCertificateHash")[0]
    assert sum(1 for r in ldif_records(directory) if values(r, "dn") == ["o=postacert"]) == 1
    assert "kept@pec-a.test" in open(a.path("users")).read(), "--force keeps the users"

    # same domain under a new name: the old entry goes (a domain has one provider)
    r = init(os.path.join(base, "a2"), "--domain", a.domain, "--name", "Renamed A",
             "--ca", ca, "--directory", directory)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr
    assert set(provider_entries(directory)) == {"Renamed A", b.name}


def test_entries_of_others_are_kept_verbatim(tmp_path):
    """A directory written by someone else (a comment, version line, CRLF, a foreign
    entry with a folded hash as RFC 6109 §4.5.10 prints it) keeps what is not ours."""
    require_binaries()
    d = str(tmp_path)
    directory = os.path.join(d, "dir.ldif")
    foreign = ("dn: providerName=Postal Services S.p.A,o=postacert\r\n"
               "objectclass: top\r\n"
               "objectclass: provider\r\n"
               "providerName: Postal Services S.p.A\r\n"
               "providerCertificateHash:\r\n"
               " e00fdd9d88be0e2cc766b893315caf93d5701a6a\r\n"
               "mailReceipt: takecharge@postalser.example.com\r\n"
               "managedDomains: postal-services.example.com\r\n")
    with open(directory, "w", newline="") as f:
        f.write("version: 1\r\n# a comment\r\ndn: o=postacert\r\nobjectclass: top\r\n"
                "o: postacert\r\nLDIFLocationURL: https://igpec.example/igpec.ldif.p7m\r\n"
                "\r\n" + foreign)
    r = init(os.path.join(d, "p"), "--domain", "pec-p.test", "--directory", directory)
    assert r.returncode == 0, r.stderr
    text = open(directory).read()
    assert text.startswith("version: 1\n")
    assert "LDIFLocationURL: https://igpec.example/igpec.ldif.p7m" in text
    assert foreign.replace("\r\n", "\n") in text
    assert set(provider_entries(directory)) == {"Postal Services S.p.A", "pec-p.test"}


def test_concurrent_inits_lose_no_entry(tmp_path):
    require_binaries()
    base = str(tmp_path)
    ca, directory = os.path.join(base, "ca"), os.path.join(base, "dir.ldif")
    procs = []
    for i in range(6):
        procs.append(subprocess.Popen(
            [PECCTL, "init", os.path.join(base, f"p{i}"), "--domain", f"pec-{i}.test",
             "--smtp", str(27000 + i), "--submission", str(27100 + i), "--ca", ca,
             "--directory", directory], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
    assert set(provider_entries(directory)) == {f"pec-{i}.test" for i in range(6)}
    ca_pem = open(os.path.join(ca, "ca.crt")).read()
    for i in range(6):
        assert open(os.path.join(base, f"p{i}", "ca.crt")).read() == ca_pem, "one CA"


def test_defaults(tmp_path):
    require_binaries()
    d = os.path.join(str(tmp_path), "inst")
    r = init(d, "--domain", "Pec-D.Test")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(d, "ca", "ca.crt"))
    assert os.stat(os.path.join(d, "ca", "ca.key")).st_mode & 0o777 == 0o600
    entries = provider_entries(os.path.join(d, "directory.ldif"))
    assert list(entries) == ["pec-d.test"], "name defaults to the (lower-cased) domain"
    cp = configparser.ConfigParser()
    cp.read(os.path.join(d, "pecd.conf"))
    assert cp["provider"]["domain"] == "pec-d.test"
    assert cp["mx"]["listen"] == "127.0.0.1:2525"
    assert cp["submission"]["listen"] == "127.0.0.1:2587"
    assert not cp.has_section("submissions") and not cp.has_section("routes")
    assert cp["pec"]["directory"] == os.path.join(d, "directory.ldif")


# --------------------------------------------------------------------------- running

def test_pecd_starts_with_the_generated_configuration(pair):
    a = pair["a"]
    r = subprocess.run([PECCTL, "-c", a.conf, "user", "add", f"alice@{a.domain}",
                        "--password-stdin"], input="alice-secret\n", capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    log = open(a.path("pecd.log"), "w")
    proc = subprocess.Popen([PECD, "-c", a.conf], stderr=log)
    try:
        assert wait_port(a.smtp, proc), "pecd did not listen:\n" + open(a.path("pecd.log")).read()
        s = socket.create_connection(("127.0.0.1", a.smtp), timeout=5)
        f = s.makefile("rb")
        assert f.readline().decode().startswith(f"220 mx.{a.domain} ")
        s.sendall(b"EHLO client.test\r\n")
        lines = []
        while True:
            line = f.readline().decode()
            lines.append(line)
            if line[3:4] != "-":
                break
        assert any("STARTTLS" in line for line in lines)
        s.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220")
        # the TLS certificate verifies against the shared CA under the MX name
        ctx = ssl.create_default_context(cafile=a.path("ca.crt"))
        t = ctx.wrap_socket(s, server_hostname=f"mx.{a.domain}")
        t.sendall(b"QUIT\r\n")
        assert t.recv(100).startswith(b"221")
        t.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
    assert rc == 0, open(a.path("pecd.log")).read()


# --------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("args,message", [
    ([], "DIR"),
    (["{d}"], "--domain"),
    (["{d}", "--domain"], "needs a value"),
    (["{d}", "--domain", "not a domain"], "not a domain"),
    (["{d}", "--domain", "a..test"], "not a domain"),
    (["{d}", "--domain", "a.test", "--smtp", "0"], "port"),
    (["{d}", "--domain", "a.test", "--submission", "65536"], "port"),
    (["{d}", "--domain", "a.test", "--smtp", "25x"], "port"),
    (["{d}", "--domain", "a.test", "--smtp", "2587"], "distinct"),
    (["{d}", "--domain", "a.test", "--route", "b.test"], "DOMAIN=HOST:PORT"),
    (["{d}", "--domain", "a.test", "--route", "b.test=host"], "DOMAIN=HOST:PORT"),
    (["{d}", "--domain", "a.test", "--route", "b.test=h/st:25"], "host"),
    (["{d}", "--domain", "a.test", "--name", "semi;colon"], "--name"),
    (["{d}", "--domain", "a.test", "--bogus"], "--bogus"),
    (["{d}", "extra", "--domain", "a.test"], "extra"),
])
def test_bad_arguments(tmp_path, args, message):
    require_binaries()
    d = os.path.join(str(tmp_path), "inst")
    r = init(*[a.format(d=d) for a in args])
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert not os.path.exists(d), "nothing is created on bad arguments"


def test_io_failure_names_the_file(tmp_path):
    require_binaries()
    blocker = os.path.join(str(tmp_path), "file")
    open(blocker, "w").close()
    r = init(os.path.join(blocker, "inst"), "--domain", "a.test")
    assert r.returncode == 1
    assert blocker in r.stderr
    d = os.path.join(str(tmp_path), "inst")
    r = init(d, "--domain", "a.test", "--ca", blocker)
    assert r.returncode == 1 and blocker in r.stderr
    assert not os.path.exists(os.path.join(d, "pecd.conf"))
