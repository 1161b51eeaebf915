"""The systemd unit in the tree (share/systemd/pecd.service, issue 20): `systemd-analyze verify`
accepts it without a warning, `systemd-analyze security` rates its sandbox at most 3.0
("OK"), and pecd started as root with nothing but the unit's CapabilityBoundingSet and
NoNewPrivileges (setpriv, as systemd would) still binds, hands its data to pecmail, drops to
it and takes a PEC message.  systemd itself does not run here, so the sandbox's file-system
directives are checked by systemd-analyze only."""
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import time

import pytest

from pecd_harness import PECCTL, PECD, REPO, free_port, reachable_dir, stop_process, wait_port
from test_pec_providers import message

UNIT = os.path.join(REPO, "share", "systemd", "pecd.service")
ANALYZE = shutil.which("systemd-analyze")


def unit_for_build(tmp_path):
    """The unit with ExecStart naming the binary of this build (verify runs it with -h), and
    without its man pages, which only the package installs (tests/package checks those)."""
    text = open(UNIT).read().replace("/usr/sbin/pecd", PECD)
    text = re.sub(r"(?m)^Documentation=.*\n", "", text)
    path = tmp_path / "pecd.service"
    path.write_text(text)
    return str(path)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_verifies(tmp_path):
    r = subprocess.run([ANALYZE, "verify", unit_for_build(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # systemd-analyze only warns about a directive it cannot parse: none may be left
    assert "pecd.service" not in r.stdout + r.stderr, r.stdout + r.stderr
    # a broken directive is caught by that check
    bad = tmp_path / "bad" / "pecd.service"
    bad.parent.mkdir()
    bad.write_text(open(unit_for_build(tmp_path)).read().replace("ProtectSystem=strict",
                                                                  "ProtectSystem=sometimes"))
    r = subprocess.run([ANALYZE, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "ProtectSystem" in r.stdout + r.stderr or "protect system" in r.stdout + r.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_sandbox_exposure(tmp_path):
    r = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=30",
                        unit_for_build(tmp_path)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for pecd.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert r.returncode == 0 and float(m.group(1)) <= 3.0, r.stdout[-2000:]


def unit_directives(name):
    return [line.split("=", 1)[1].strip() for line in open(UNIT)
            if line.startswith(name + "=")]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a start as root")
def test_pecd_starts_with_the_units_capabilities():
    caps = unit_directives("CapabilityBoundingSet")[0].split()
    assert unit_directives("NoNewPrivileges") == ["yes"]
    bounding = "-all," + ",".join("+" + c.lower().removeprefix("cap_") for c in caps)
    root = reachable_dir("pec-unit-")
    proc = None
    try:
        d = os.path.join(root, "inst")
        smtp, sub = free_port(), free_port()
        r = subprocess.run([PECCTL, "init", d, "--domain", "pec.u.test", "--smtp", str(smtp),
                            "--submission", str(sub)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        conf = os.path.join(d, "pecd.conf")
        r = subprocess.run([PECCTL, "-c", conf, "user", "add", "u@pec.u.test",
                            "--password-stdin"], input="u-password\n", capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        log = open(os.path.join(d, "pecd.log"), "w")
        proc = subprocess.Popen(["setpriv", "--bounding-set", bounding, "--no-new-privs",
                                 PECD, "-c", conf], stderr=log, stdout=log)
        assert wait_port(sub, proc), open(os.path.join(d, "pecd.log")).read()
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", sub, timeout=30) as s:
            s.starttls(context=ctx)
            s.login("u@pec.u.test", "u-password")
            s.sendmail("u@pec.u.test", ["u@pec.u.test"],
                       message("u@pec.u.test", ["u@pec.u.test"], subject="capacità"))
        new = os.path.join(d, "data", "mail", "pec.u.test", "u", "new")
        end = time.time() + 30
        while not (os.path.isdir(new) and any(b"avvenuta-consegna" in open(os.path.join(new, n),
                                                                           "rb").read()
                                              for n in os.listdir(new))):
            assert time.time() < end, open(os.path.join(d, "pecd.log")).read()[-3000:]
            time.sleep(0.2)
        text = open(os.path.join(d, "pecd.log")).read()
        assert "the network-facing process runs as pecmail" in text
        with open(f"/proc/{proc.pid}/status") as f:
            assert re.search(r"^CapEff:\s+0+$", f.read(), re.M)      # pecmail: none at all
        # a second start, on data pecmail owns already (root may not read it without
        # CAP_DAC_OVERRIDE, which the unit does not give)
        stop_process(proc)
        assert proc.returncode == 0, open(os.path.join(d, "pecd.log")).read()[-3000:]
        proc = subprocess.Popen(["setpriv", "--bounding-set", bounding, "--no-new-privs",
                                 PECD, "-c", conf], stderr=log, stdout=log)
        assert wait_port(sub, proc), open(os.path.join(d, "pecd.log")).read()[-3000:]
    finally:
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)
