"""The tree names no path outside the repository (issue 17): the integration tests find the
binaries in build/ of the clone they are in unless $PEC_BUILD says otherwise, so
`python3 -m pytest tests/integration` works from any clone, and no tracked file names the
directory the repository happens to sit in."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


@pytest.mark.parametrize("where,module", [(HERE, "pecd_harness"), (HERE, "test_evidence"),
                                          (os.path.join(HERE, "pec"), "pec_helpers")],
                         ids=["pecd_harness", "test_evidence", "pec_helpers"])
def test_default_build_is_the_repositorys_own(where, module, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PEC_BUILD"}
    env["PYTHONPATH"] = os.pathsep.join([where, HERE])
    r = subprocess.run([sys.executable, "-c", f"import {module}; print({module}.BUILD)"],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert os.path.realpath(r.stdout.strip()) == os.path.realpath(os.path.join(REPO, "build"))
    # and $PEC_BUILD still wins
    env["PEC_BUILD"] = str(tmp_path / "elsewhere")
    r = subprocess.run([sys.executable, "-c", f"import {module}; print({module}.BUILD)"],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == str(tmp_path / "elsewhere"), r.stdout + r.stderr


def test_no_tracked_file_names_the_directory_around_the_repository():
    r = subprocess.run(["git", "-C", REPO, "ls-files", "-z"], capture_output=True, timeout=60)
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    parent = os.path.dirname(os.path.realpath(REPO)).encode() + b"/"
    if parent == b"//":
        pytest.skip("the repository sits at the root of the file system")
    hits = []
    for name in r.stdout.split(b"\0"):
        path = os.path.join(REPO.encode(), name)
        if not name or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if parent in line:
                    hits.append(f"{name.decode()}:{n}: {line.decode(errors='replace').strip()}")
    assert hits == [], "paths outside the repository:\n" + "\n".join(hits)
