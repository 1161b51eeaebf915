"""Key custody (issue 20): pecd started as root keeps its keys out of the processes that read
the network.  Two providers, each started as root with the default [pecd] user (pecmail),
exchange PEC messages; then, on the running processes:

- every process of pecd that holds a listening socket or a connection to a next hop runs
  with a uid other than 0 and other than the keys' owner (root), and that uid cannot read
  the signing key or the TLS key (EACCES);
- the signer process has no network socket (its descriptors are AF_UNIX sockets and its
  standard streams only);
- the private key is in the signer's memory and not in the network-facing process's: both
  processes' memory is searched for the key's private exponent (the search finding it in
  the signer shows it can find it).
Start-up refusals: a key the unprivileged user could read, data beside pecd.conf, a user
that does not exist; `pecd -t` says the same.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from pec_providers import make_providers, start_pair, openssl_verify, pecctl, ricevuta, trasporto
from pecd_harness import PECD, reachable_dir
from test_pec_providers import message

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a start as root")

USER = "pecmail"


@pytest.fixture(scope="module")
def pair():
    root = reachable_dir("pec-keys-")
    import pathlib
    a, b, ca, directory = make_providers(pathlib.Path(root), privsep=True)
    start_pair(a, b)
    yield a, b, ca
    for p in (a, b):
        p.stop()
    shutil.rmtree(root, ignore_errors=True)


def tree(pid):
    """pid and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))


def socket_inodes(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if t.startswith("socket:["):
            out.add(t[8:-1])
    return out


def inet_inodes():
    """inode -> (table, state) of every TCP and UDP socket, IPv4 and IPv6."""
    out = {}
    for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        with open(f"/proc/net/{table}") as f:
            for line in list(f)[1:]:
                fields = line.split()
                out[fields[9]] = (table, fields[3])
    return out


def unix_inodes():
    with open("/proc/net/unix") as f:
        return {line.split()[6] for line in list(f)[1:]}


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def roles(p, timeout=10):
    """The pecd processes of a provider: the network-facing one (the pid started), the
    keeper (its child) and the signer (the keeper's child; waited for while the keeper
    starts a new one)."""
    main = p.proc.pid
    end = time.time() + timeout
    while True:
        keeper = children(main)
        assert len(keeper) == 1, keeper
        signer = children(keeper[0])
        if len(signer) == 1:
            return main, keeper[0], signer[0]
        assert time.time() < end, f"no signer under the keeper {keeper[0]}"
        time.sleep(0.02)


def open_as(uid, gid, path):
    """errno of opening path for reading as uid/gid (0 when it opens)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with open(path, "rb"):
                os._exit(0)
        except OSError as e:
            os._exit(e.errno or 1)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def private_exponent(keyfile):
    """The RSA private exponent of a PEM key, as big-endian octets."""
    r = subprocess.run(["openssl", "rsa", "-in", keyfile, "-noout", "-text"], capture_output=True,
                       text=True, check=True)
    m = re.search(r"privateExponent:\n((?:\s+[0-9a-f:]+\n)+)", r.stdout)
    return bytes.fromhex(re.sub(r"[\s:]", "", m.group(1)))


def memory_holds(pid, needles):
    """Whether any readable mapping of pid contains one of needles."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            lo, hi = (int(x, 16) for x in addr.split("-"))
            if hi - lo > 1 << 30:
                continue
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            if any(n in data for n in needles):
                return True
    return False


def exchange(a, b, ca, subject):
    a.submit("mario", ["anna@pec.b.test"], message("mario@pec.a.test", ["anna@pec.b.test"],
                                                    subject=subject))
    a.wait_mail("mario", lambda m: ricevuta("avvenuta-consegna")(m) and subject in
                m.get("Subject", ""))
    got = [x for x in b.mails("anna") if subject in x[2].get("Subject", "")]
    assert len(got) == 1
    for p, local in ((a, "mario"), (b, "anna"), (a, "posta-certificata")):
        for _, raw, m in p.mails(local):
            rc, err = openssl_verify(raw, ca)
            assert rc == 0, f"{p.domain} {local}: {err}"


def test_exchange_between_separated_providers(pair):
    a, b, ca = pair
    exchange(a, b, ca, "separati")
    pw = pwd.getpwnam(USER)
    for p in (a, b):
        assert f"the network-facing process runs as {USER} (uid {pw.pw_uid})" in p.log(4000)
        # the data is the user's; the keys and pecd.conf stay root's, 0600
        assert os.stat(p.data).st_uid == pw.pw_uid
        for f in ("signing.key", "tls.key"):
            st = os.stat(os.path.join(p.dir, f))
            assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)


def test_network_processes_are_unprivileged(pair):
    a, b, ca = pair
    # a connection to a next hop is open now: A keeps the one to B for the next envelope
    exchange(a, b, ca, "connessione")
    pw = pwd.getpwnam(USER)
    key_owner = os.stat(os.path.join(a.dir, "signing.key")).st_uid
    inet = inet_inodes()
    for p in (a, b):
        main, keeper, signer = roles(p)
        listening = next_hop = 0
        for pid in tree(main):
            mine = [inet[i] for i in socket_inodes(pid) if i in inet]
            if not mine:
                continue
            uid = uid_of(pid)
            assert uid not in (0, key_owner), (p.domain, pid, uid, mine)
            listening += sum(1 for t, st in mine if t.startswith("tcp") and st == "0A")
            next_hop += sum(1 for t, st in mine if t.startswith("tcp") and st == "01")
        assert listening == 2, (p.domain, listening)      # mx and submission
        if p is a:
            assert next_hop >= 1                          # A to B's mx, kept for reuse
        assert uid_of(main) == pw.pw_uid
        # the keys are closed to that user
        for f in ("signing.key", "tls.key"):
            assert open_as(pw.pw_uid, pw.pw_gid, os.path.join(p.dir, f)) == 13   # EACCES
        assert open_as(pw.pw_uid, pw.pw_gid, os.path.join(p.dir, "signing.pem")) == 0
        # the keeper and the signer: root, no network socket
        unix = unix_inodes()
        for pid in (keeper, signer):
            assert uid_of(pid) == 0
            socks = socket_inodes(pid)
            assert not socks & set(inet), (pid, socks & set(inet))
            assert socks <= unix, socks - unix
        assert len(socket_inodes(signer)) >= 2          # its TLS socket and the pool


def test_the_key_is_in_the_signer_only(pair):
    a, b, ca = pair
    exchange(a, b, ca, "memoria")
    for p in (a, b):
        main, keeper, signer = roles(p)
        for f in ("signing.key", "tls.key"):
            d = private_exponent(os.path.join(p.dir, f))
            # big-endian (DER, PEM decoded) and little-endian (OpenSSL's BIGNUM words)
            needles = [d[32:96], d[::-1][32:96]]
            assert memory_holds(signer, needles), f"{f}: not found in the signer either"
            assert not memory_holds(main, needles), f"{f} is in {p.domain}'s network process"
            assert not memory_holds(keeper, needles), f"{f} is in {p.domain}'s keeper"


def start_fails(p, fragment):
    """pecd -t and pecd itself stop with a reason containing fragment."""
    r = subprocess.run([PECD, "-t", "-c", p.conf], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and fragment in r.stderr, r.stderr
    r = subprocess.run([PECD, "-c", p.conf], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and fragment in r.stderr, r.stderr


def test_refusals_at_start(tmp_path_factory):
    root = reachable_dir("pec-keys-bad-")
    try:
        import pathlib
        a, b, ca, directory = make_providers(pathlib.Path(root), privsep=True)
        a.write_config({"pec.b.test": b.ports["mx"]})
        key = os.path.join(a.dir, "signing.key")
        # a key the unprivileged user could read
        os.chmod(key, 0o644)
        start_fails(a, f"[pec] signing_key {key}")
        os.chmod(key, 0o600)
        os.chown(key, pwd.getpwnam(USER).pw_uid, -1)
        start_fails(a, "can be read by pecmail")
        os.chown(key, 0, -1)
        # the configuration in a directory that user may change
        os.chown(a.dir, pwd.getpwnam(USER).pw_uid, -1)
        start_fails(a, "can be changed by pecmail")
        os.chown(a.dir, 0, -1)
        # no such user
        a.write_config({"pec.b.test": b.ports["mx"]}, extra={"pecd": {"user": "nosuchpecuser"}})
        start_fails(a, "[pecd] user nosuchpecuser: no such user")
        # the data beside pecd.conf: the user would get the configuration's directory
        a.write_config({"pec.b.test": b.ports["mx"]}, extra={"provider": {"data_dir": "."}})
        r = subprocess.run([PECD, "-c", a.conf], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "holds" in r.stderr and "data_dir" in r.stderr, r.stderr
        # and it starts once things are right
        a.write_config({"pec.b.test": b.ports["mx"]})
        r = subprocess.run([PECD, "-t", "-c", a.conf], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def served_certificate(port, ca):
    """The DER certificate pecd presents after STARTTLS on port."""
    import ssl
    ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO x\r\n")
        while f.readline()[3:4] == b"-":
            pass
        s.sendall(b"STARTTLS\r\n")
        f.readline()
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return t.getpeercert(binary_form=True)


def test_sighup_reloads_the_tls_key_in_the_signer(pair, tmp_path):
    """SIGHUP: the signer (root) reads the new TLS key the network process cannot read; a
    broken new key is refused and the previous one kept."""
    a, b, ca = pair
    before = served_certificate(a.ports["submission"], ca)
    new = tmp_path / "new"
    pecctl("pki", "issue", "--ca", ca, "--domain", "pec.a.test", "--out", str(new),
           "--tls-host", "localhost", "--tls-host", "mx.pec.a.test")
    for f in ("tls.key", "tls.pem"):
        shutil.copy(new / f, os.path.join(a.dir, f))
    os.chmod(os.path.join(a.dir, "tls.key"), 0o600)
    os.kill(a.proc.pid, signal.SIGHUP)
    end = time.time() + 10
    while served_certificate(a.ports["submission"], ca) == before:
        assert time.time() < end, a.log(30)
        time.sleep(0.1)
    after = served_certificate(a.ports["submission"], ca)
    import ssl
    pem = open(new / "tls.pem").read()
    first = pem[:pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    assert after == ssl.PEM_cert_to_DER_cert(first)
    # a key that does not match its certificate: refused, the loaded one stays
    with open(os.path.join(a.dir, "tls.key"), "w") as f:
        f.write(open(os.path.join(a.dir, "signing.key")).read())
    os.kill(a.proc.pid, signal.SIGHUP)
    end = time.time() + 10
    while "nothing changed" not in a.log(50):
        assert time.time() < end, a.log(30)
        time.sleep(0.1)
    assert "[tls] key" in a.log(50) and "does not match" in a.log(50)
    assert served_certificate(a.ports["submission"], ca) == after
    exchange(a, b, ca, "dopo il SIGHUP")
