"""Helpers shared by the PEC core integration tests (a module name of its
own, so it never clashes with another directory's conftest)."""
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[3]
BUILD = pathlib.Path(os.environ.get("PEC_BUILD") or ROOT / "build")
INTEROP = ROOT.parent / "shared" / "interop"
DTD = ROOT.parent / "shared" / "reference" / "daticert.dtd"


def run(*args, check=False, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          check=check, **kw)
