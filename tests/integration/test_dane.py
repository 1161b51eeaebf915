"""Next hops from DNS (issue 5): MX over DNSSEC, the null MX of RFC 7505, DANE (RFC 7672) and
REQUIRETLS over a DNSSEC-found MX (RFC 8689 §4.2.1).  A local unbound serves a zone signed
with ldns-signzone on a loopback high port; pecd's resolver forwards to it and trusts the
zone's key.  (RFC 6761's "test." is blocked by resolvers, hence "remote.example".)"""
import os
import shutil
import socket
import subprocess
import time

import pytest

from downstream import Downstream, make_ca_and_cert, submit, wait_log, wait_reports
from pecd_harness import free_port, message, unique_id

ALICE = "alice@example.test"
ZONE = "remote.example"

pytestmark = pytest.mark.skipif(
    not (shutil.which("unbound") and shutil.which("ldns-signzone")),
    reason="needs unbound and ldnsutils (scripts/install-deps installs them)")


def spki_sha256(cert):
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    import hashlib
    return hashlib.sha256(der).hexdigest()


class SignedZone:
    """remote.example signed, served by unbound on 127.0.0.1:port."""

    def __init__(self, d, smtp_port, tlsa_hex):
        self.dir = d
        self.port = free_port()
        zone = os.path.join(d, f"{ZONE}.zone")
        with open(zone, "w") as f:
            f.write(f"$ORIGIN {ZONE}.\n$TTL 300\n"
                    f"@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 3600 600 86400 300\n"
                    f"@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n"
                    f"@ IN MX 10 mx.{ZONE}.\nmx IN A 127.0.0.1\n"
                    f"_{smtp_port}._tcp.mx IN TLSA 3 1 1 {tlsa_hex}\n"
                    f"wrong IN MX 10 mx2.{ZONE}.\nmx2 IN A 127.0.0.1\n"
                    f"_{smtp_port}._tcp.mx2 IN TLSA 3 1 1 {'00' * 32}\n"
                    f"nomail IN MX 0 .\n")
        run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True, text=True)
        ksk = run("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", ZONE).stdout.strip()
        zsk = run("ldns-keygen", "-a", "ECDSAP256SHA256", ZONE).stdout.strip()
        run("ldns-signzone", zone, ksk, zsk)
        self.trust_anchor = os.path.join(d, "ta.key")
        shutil.copy(os.path.join(d, ksk + ".key"), self.trust_anchor)
        conf = os.path.join(d, "unbound.conf")
        with open(conf, "w") as f:
            f.write(f'server:\n  interface: 127.0.0.1\n  port: {self.port}\n  do-daemonize: no\n'
                    f'  username: ""\n  chroot: ""\n  directory: "{d}"\n  pidfile: ""\n'
                    f'  use-syslog: no\n  logfile: ""\n  do-ip6: no\n'
                    f'  access-control: 127.0.0.0/8 allow\n  module-config: "iterator"\n'
                    f'auth-zone:\n  name: "{ZONE}."\n  zonefile: "{zone}.signed"\n'
                    f'  for-downstream: yes\n  for-upstream: no\n')
        self.log = open(os.path.join(d, "unbound.log"), "w")
        self.proc = subprocess.Popen(["unbound", "-d", "-c", conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        end = time.time() + 10
        while time.time() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("unbound did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.log.close()


@pytest.fixture
def env(tmp_path, make_instance):
    ca, crt, key = make_ca_and_cert(str(tmp_path), name=f"mx.{ZONE}")
    down = Downstream(free_port(), tls=(crt, key))
    down.start()
    zdir = tmp_path / "zone"
    zdir.mkdir()
    zone = SignedZone(str(zdir), down.port, spki_sha256(crt))
    os.makedirs(tmp_path / "other")
    other_ca = make_ca_and_cert(str(tmp_path / "other"))[0]   # PKIX would fail: DANE must work

    def instance(policy="dane"):
        return make_instance(conf={
            "outbound": {"tls": policy, "ca_file": other_ca, "dns_server": f"127.0.0.1@{zone.port}",
                         "dns_trust_anchor": zone.trust_anchor, "mx_port": down.port,
                         "timeout": "10s"},
        })
    yield down, instance
    down.stop()
    zone.stop()


def test_mx_found_over_dnssec_and_dane_authenticates(env):
    down, instance = env
    inst = instance("dane")
    tid = unique_id("dane")
    submit(inst, [f"a@{ZONE}"], message(tid, sender=ALICE, to=f"a@{ZONE}"))
    got = down.wait_messages(1)
    assert got[0]["tls"] and tid.encode() in got[0]["data"]
    inst.wait_queue_empty()


def test_dane_mismatch_is_not_delivered(env):
    down, instance = env
    inst = instance("dane")
    submit(inst, [f"a@wrong.{ZONE}"], message(unique_id("dane-bad"), sender=ALICE, to=f"a@wrong.{ZONE}"))
    wait_log(inst, "not verified by its TLSA records")
    assert down.script.messages == []


def test_verify_policy_fails_where_only_dane_vouches(env):
    down, instance = env
    inst = instance("verify")
    submit(inst, [f"a@{ZONE}"], message(unique_id("pkix"), sender=ALICE, to=f"a@{ZONE}"))
    wait_log(inst, "certificate of mx.remote.example not verified")
    assert down.script.messages == []


def test_null_mx_bounces_at_once(env):
    down, instance = env
    inst = instance("may")
    submit(inst, [f"a@nomail.{ZONE}"], message(unique_id("nullmx"), sender=ALICE, to=f"a@nomail.{ZONE}"))
    (rep,) = wait_reports(inst, ALICE)
    assert "Status: 5.1.10" in rep.get_payload()[1].as_string()
    inst.wait_queue_empty()


def test_requiretls_over_dnssec_mx_and_dane(env):
    down, instance = env
    down.script.requiretls = True
    inst = instance("dane")
    submit(inst, [f"a@{ZONE}"], message(unique_id("rtls-dane"), sender=ALICE, to=f"a@{ZONE}"),
           mail_params="REQUIRETLS")
    got = down.wait_messages(1)
    assert "REQUIRETLS" in got[0]["mail_options"] and got[0]["tls"]
