"""The suite's last test (pytest runs the files in name order): with the ASan+UBSan build
(`make check SANITIZE=1`, CI), no pecd or pecctl that any test started wrote an
AddressSanitizer, LeakSanitizer or UndefinedBehaviorSanitizer report
(scripts/sanitizer-reports).  A report fails this test, so pytest's summary stays the
last line of the run and still counts it."""
import os
import subprocess

import pytest

from pecd_harness import REPO

REPORTS = os.environ.get("PEC_SAN_REPORTS")


@pytest.mark.skipif(not REPORTS, reason="not the sanitizer build (make check SANITIZE=1)")
def test_no_sanitizer_report():
    r = subprocess.run([os.path.join(REPO, "scripts", "sanitizer-reports"), REPORTS],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
