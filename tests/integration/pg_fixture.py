"""A private PostgreSQL cluster for the tests of several nodes (issue 24): initdb on a
temporary directory, the server on a loopback high port, started and stopped by the fixture.

The cluster itself is bench/benchlib.py's PostgresCluster (bench/pec-exchange makes the same
one to measure provider B on PostgreSQL): the server runs as `nobody`, the superuser is
`pecmail` with a password (PG_PASSWORD), and for the tests fsync is off (start() without
durable=True).  Here: that class, and wait_until.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "bench"))
from benchlib import PG_PASSWORD, PG_USER, PostgresCluster, pg_bindir  # noqa: E402,F401


def wait_until(pred, timeout, step=0.2, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s")
