"""Fixtures for the PEC core integration tests.

The binaries come from $PEC_BUILD (default: build/ in this repository): pecctl in
src/cmd/ and the test helper pec_sample in src/pec/.  The interoperability
vectors are read from ../shared/interop next to the repository and the tests
that need them skip when it is absent.
"""
import pytest

from pec_helpers import BUILD, INTEROP, run


@pytest.fixture(scope="session")
def pecctl():
    p = BUILD / "src" / "cmd" / "pecctl"
    if not p.exists():
        pytest.skip(f"{p} not built")
    return p


@pytest.fixture(scope="session")
def pec_sample():
    p = BUILD / "src" / "pec" / "pec_sample"
    if not p.exists():
        pytest.skip(f"{p} not built")
    return p


@pytest.fixture(scope="session")
def interop():
    if not (INTEROP / "eml").is_dir():
        pytest.skip(f"{INTEROP} absent: interoperability vectors not run")
    return INTEROP


@pytest.fixture(scope="session")
def pki(pecctl, tmp_path_factory):
    """A test CA and the signing material of provider pec.a.example."""
    base = tmp_path_factory.mktemp("pki")
    ca, prov = base / "ca", base / "provider-a"
    run(pecctl, "pki", "ca", ca, "--name", "pecmail test CA", check=True)
    out = run(pecctl, "pki", "issue", "--ca", ca, "--domain", "pec.a.example",
              "--name", "Gestore A S.p.A.", "--out", prov, "--tls-host", "mx.pec.a.example",
              check=True).stdout
    sha1 = [l.split()[-1] for l in out.splitlines() if l.startswith("providerCertificateHash")][0]
    return {"ca": ca, "dir": prov, "key": prov / "signing.key", "chain": prov / "signing.pem",
            "sha1": sha1}
