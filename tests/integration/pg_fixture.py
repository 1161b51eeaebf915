"""A private PostgreSQL cluster for the tests of several nodes (issue 24): initdb on a
temporary directory, the server on a loopback high port, started and stopped by the fixture.

The binaries come from Debian's postgresql package: `pg_config --bindir`, else the highest
/usr/lib/postgresql/*/bin (never a fixed version).  PostgreSQL refuses to run as root, so the
server runs as `nobody` (setpriv) in a directory that user can traverse (tempfile, 0755, like
the Dovecot and Postfix fixtures: pytest's own temporary directories are private to root);
everything is removed at the end.  The superuser is `pecmail` with a password (scram-sha-256),
so the tests can give pecd a wrong one.  fsync is off: the tests stop the server (fast or
immediate) but never the machine, and the WAL in the page cache survives that.
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from pecd_harness import free_port

PG_USER = "pecmail"
PG_PASSWORD = "pg-test-secret"
RUN_AS = "nobody"


def pg_bindir():
    try:
        d = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                           timeout=10).stdout.strip()
        if d and os.path.exists(os.path.join(d, "initdb")):
            return d
    except OSError:
        pass
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) if x.isdigit() else x for x in p.split("/")])
    return os.path.dirname(found[-1]) if found else None


class PostgresCluster:
    def __init__(self):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (package postgresql)")
        self.root = tempfile.mkdtemp(prefix="pec-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.run = os.path.join(self.root, "run")
        self.log_path = os.path.join(self.run, "postgres.log")
        self.port = free_port()
        pw = pwd.getpwnam(RUN_AS)
        for d in (self.data, self.run):
            os.makedirs(d)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.data, 0o700)
        pwfile = os.path.join(self.root, "pw")
        with open(pwfile, "w") as f:
            f.write(PG_PASSWORD + "\n")
        os.chmod(pwfile, 0o644)
        self._as_user([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", PG_USER,
                       "-A", "scram-sha-256", "--pwfile", pwfile, "-E", "UTF8", "--no-sync",
                       "--locale", "C"], timeout=120)
        os.unlink(pwfile)
        self.started = False
        self.dbs = 0

    def _as_user(self, argv, timeout=60, check=True):
        pw = pwd.getpwnam(RUN_AS)
        r = subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                            "--clear-groups"] + argv, capture_output=True, text=True,
                           timeout=timeout, cwd="/")
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.returncode}\n{r.stdout}{r.stderr}\n"
                               f"{self.log()}")
        return r

    def start(self):
        opts = (f"-p {self.port} -k {self.run} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB "
                f"-c log_min_messages=warning")
        self._as_user([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", opts,
                       "-l", self.log_path, "-w", "-t", "60", "start"], timeout=90)
        self.started = True

    def stop(self, mode="fast"):
        if self.started:
            self._as_user([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode,
                           "-w", "-t", "60", "stop"], timeout=90, check=False)
            self.started = False

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self, tail=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-tail:])
        except OSError:
            return ""

    def uri(self, db="postgres", password=False):
        auth = f"{PG_USER}:{PG_PASSWORD}@" if password else f"{PG_USER}@"
        return f"postgresql://{auth}127.0.0.1:{self.port}/{db}"

    def psql(self, sql, db="postgres"):
        """Runs sql with psql as the superuser; returns its output (tuples only, unaligned)."""
        env = dict(os.environ, PGPASSWORD=PG_PASSWORD, PGCONNECT_TIMEOUT="10")
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
                            "-v", "ON_ERROR_STOP=1", "-d", self.uri(db), "-c", sql],
                           capture_output=True, text=True, env=env, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {sql}: {r.stderr}")
        return r.stdout.strip()

    def new_database(self):
        """A fresh database for one test; returns its name."""
        self.dbs += 1
        name = f"pec{self.dbs}"
        self.psql(f"CREATE DATABASE {name}")
        return name

    def password_file(self, directory, password=PG_PASSWORD):
        path = os.path.join(directory, "state-password")
        with open(path, "w") as f:
            f.write(password + "\n")
        os.chmod(path, 0o600)
        return path


def wait_until(pred, timeout, step=0.2, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s")
