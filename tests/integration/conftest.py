"""pytest fixtures for the pecd integration tests; the helpers are in pecd_harness.py.

- pec_template (session): a self-signed certificate (openssl CLI, key mode 600) and a
  users file made with `pecctl user add --password-stdin`, copied into every instance.
- make_instance / make_module_instance: factories, make_instance(conf={section: {key:
  value}}, start=True) -> Instance; every instance is stopped at the end of the test /
  module (SIGTERM, then SIGKILL) and must have exited 0.
- server: one pecd with the default configuration, shared by a test module.
- On failure, the tail of every running pecd's log is attached to the report.
"""
import os
import subprocess

import pytest

from pecd_harness import (HOST, LIVE, USERS, InstanceFactory, default_config, free_port,
                          password, render_config, require_binaries, run_pecctl)


@pytest.fixture(scope="session")
def pec_template(tmp_path_factory):
    """A self-signed certificate and a users file made with pecctl, copied into
    every instance (hashing passwords is slow; doing it once keeps the suite fast)."""
    require_binaries()
    d = str(tmp_path_factory.mktemp("template"))
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}",
                        "-keyout", os.path.join(d, "tls.key"), "-out", os.path.join(d, "tls.crt")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    os.chmod(os.path.join(d, "tls.key"), 0o600)
    ports = {"mx": free_port(), "submission": free_port(), "submissions": free_port()}
    conf = os.path.join(d, "pecd.conf")
    with open(conf, "w") as f:
        f.write(render_config(default_config(ports)))
    for addr in USERS:
        r = run_pecctl(conf, "user", "add", addr, "--password-stdin", input=password(addr) + "\n")
        assert r.returncode == 0, f"pecctl user add {addr}: {r.returncode}\n{r.stdout}{r.stderr}"
    assert os.path.exists(os.path.join(d, "users")), "pecctl user add did not write DATA_DIR/users"
    return d


def _factory_fixture(request, tmp_path_factory, template):
    factory = InstanceFactory(tmp_path_factory, template)
    yield factory
    problems = factory.close()
    if problems:
        pytest.fail("pecd did not exit cleanly (0 after SIGTERM):\n" + "\n".join(problems),
                    pytrace=False)


@pytest.fixture
def make_instance(request, tmp_path_factory, pec_template):
    """make_instance(conf={section: {key: value}}, start=True) -> Instance."""
    yield from _factory_fixture(request, tmp_path_factory, pec_template)


@pytest.fixture(scope="module")
def make_module_instance(request, tmp_path_factory, pec_template):
    yield from _factory_fixture(request, tmp_path_factory, pec_template)


@pytest.fixture(scope="module")
def server(make_module_instance):
    """One pecd with the default configuration, shared by a test module."""
    return make_module_instance()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for inst in LIVE:
            rep.sections.append((f"pecd log {inst.dir}", inst.log(80)))
