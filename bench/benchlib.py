"""Shared helpers for the pecmail benchmarks (bench/smtp-maildir, bench/idle-connections,
bench/pec-exchange), and the private PostgreSQL cluster that bench/pec-exchange and the tests
of several nodes (tests/integration/pg_fixture.py) both make.

Everything here is bounded in time: every wait has a deadline and raises BenchError with a
message instead of hanging.  Servers started here are stopped by their own pid (never by name).
"""

import glob
import grp
import json
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
DOMAIN = "bench.test"
PASSWORD = "bench-password-1"


class BenchError(Exception):
    """A benchmark could not complete; the message says why."""


def env_int(name, default):
    v = os.environ.get(name, "")
    if v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise BenchError(f"{name}={v!r} is not an integer")


def env_float(name, default):
    v = os.environ.get(name, "")
    if v == "":
        return default
    try:
        return float(v)
    except ValueError:
        raise BenchError(f"{name}={v!r} is not a number")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def install_signal_handlers():
    """Turn SIGTERM/SIGHUP into SystemExit so that `finally:` blocks stop the servers."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


def raise_nofile(wanted):
    """Raise RLIMIT_NOFILE to at least `wanted` (children such as pecd inherit it)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    new_hard = hard
    if hard != resource.RLIM_INFINITY and hard < wanted:
        new_hard = wanted  # only root may do this
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
    except (ValueError, OSError) as e:
        raise BenchError(f"cannot raise RLIMIT_NOFILE to {wanted} (soft {soft}, hard {hard}): {e}")
    return wanted


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(env_name):
    p = env_int(env_name, 0)
    if p:
        if not port_is_free(p):
            raise BenchError(f"{env_name}={p}: port 127.0.0.1:{p} is already in use")
        return p
    return free_port()


def read_greeting(port, timeout):
    """Connect to 127.0.0.1:port and return the first reply line (b'220 ...')."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        try:
            s.sendall(b"QUIT\r\n")
            s.recv(4096)
        except OSError:
            pass
        return buf.split(b"\n")[0].strip()


def wait_greeting(port, timeout, alive=None, what="server"):
    """Wait until a 220 greeting is served on port; `alive()` returning False aborts."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BenchError(f"{what} exited before listening on 127.0.0.1:{port}")
        try:
            line = read_greeting(port, 2.0)
            if line.startswith(b"220"):
                return line.decode("ascii", "replace")
            last = f"unexpected greeting {line!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise BenchError(f"{what} did not greet on 127.0.0.1:{port} within {timeout:.0f}s ({last})")


def proc_status(pid):
    """The /proc/PID/status fields as a dict of strings (empty dict if the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def proc_kb(pid, field):
    """A /proc/PID/status memory field (VmRSS, VmHWM, ...) in KiB, or None."""
    v = proc_status(pid).get(field)
    if not v:
        return None
    return int(v.split()[0])


def children(pid):
    """Direct children of pid (all threads' children)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children(p):
            out.append(c)
            todo.append(c)
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid, reaped=False):
    """User+system CPU seconds of pid (all its threads); with reaped=True, plus those of its
    children that it has waited for.  0.0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK_TCK


def tree_cpu_s(pid):
    """CPU seconds of pid, its descendants, and the children they have reaped."""
    return sum(proc_cpu_s(p, reaped=True) for p in [pid] + descendants(pid))


def machine_cpu_s():
    """(busy, steal): CPU seconds of the whole machine so far, all CPUs.  busy excludes idle,
    iowait and steal; steal is time the hypervisor gave to someone else."""
    total, idle, steal = _cpu_times()
    return (total - idle - steal) / CLK_TCK, steal / CLK_TCK


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def count_files(d):
    try:
        with os.scandir(d) as it:
            return sum(1 for e in it if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def last_change(d):
    """Latest st_ctime (rename into new/ updates it) and total size of the files in d."""
    newest, total, smallest = 0.0, 0, None
    with os.scandir(d) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            st = e.stat(follow_symlinks=False)
            newest = max(newest, st.st_ctime, st.st_mtime)
            total += st.st_size
            smallest = st.st_size if smallest is None else min(smallest, st.st_size)
    return newest, total, smallest


def tail(path, n=20):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


def make_tmpdir(prefix):
    base = os.environ.get("BENCH_TMPDIR") or None
    d = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(d, 0o755)  # the Postfix virtual agent runs as nobody and must traverse it
    return d


def keep_tmp():
    return os.environ.get("BENCH_KEEP", "") not in ("", "0", "no")


def remove_tmp(d):
    if d and os.path.isdir(d) and not keep_tmp():
        shutil.rmtree(d, ignore_errors=True)
    elif d:
        log(f"kept {d}")


def out_dir():
    d = os.environ.get("BENCH_OUT") or os.path.join(BENCH_DIR, "out")
    os.makedirs(d, exist_ok=True)
    return d


def write_result(name, data):
    path = os.path.join(out_dir(), f"{name}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return path


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    steal = v[7] if len(v) > 7 else 0
    return sum(v[:8]), idle, steal


def cpu_busy(seconds=1.0):
    """Fraction (0..1) of all CPUs busy during the next `seconds`: other work on the machine."""
    try:
        t1, i1, _ = _cpu_times()
        time.sleep(seconds)
        t2, i2, _ = _cpu_times()
    except (OSError, ValueError):
        return 0.0
    return 0.0 if t2 == t1 else 1.0 - (i2 - i1) / (t2 - t1)


def wait_quiet(limit, max_wait):
    """Wait (at most max_wait seconds) until other work uses under `limit` of the CPUs.
    Returns the last measured busy fraction."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy(1.0)
    announced = False
    while busy > limit and time.monotonic() < deadline:
        if not announced:
            log(f"the CPUs are {busy:.0%} busy with other work; waiting up to {max_wait:.0f}s "
                f"for them to calm down")
            announced = True
        busy = cpu_busy(1.0)
    return busy


def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    debian = "?"
    try:
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    except OSError:
        pass
    fs = "?"
    try:
        tmp = os.environ.get("BENCH_TMPDIR") or tempfile.gettempdir()
        r = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", tmp],
                           capture_output=True, text=True, timeout=5)
        fs = " ".join(r.stdout.split())
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "debian": debian,
        "tmp_fs": fs,
    }


def postfix_version():
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "postfix"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


# --------------------------------------------------------------------------------------------
# pecd

class Pecd:
    """A pecd instance in its own directory, configured for the benchmarks."""

    def __init__(self, build, workdir, port, extra_limits=None):
        self.build = build
        self.pecd = os.path.join(build, "src", "cmd", "pecd")
        self.pecctl = os.path.join(build, "src", "cmd", "pecctl")
        for b in (self.pecd, self.pecctl):
            if not os.access(b, os.X_OK):
                raise BenchError(f"{b} not found or not executable (build pecd first: make build)")
        self.dir = workdir
        self.port = port
        self.conf = os.path.join(workdir, "pecd.conf")
        self.stderr_path = os.path.join(workdir, "pecd.stderr")
        self.proc = None
        self.stderr = None
        self.exited_by_itself = False
        limits = {"max_connections": 5000, "max_connections_per_ip": 5000}
        limits.update(extra_limits or {})
        with open(self.conf, "w") as f:
            f.write(
                "[provider]\n"
                f"domain = {DOMAIN}\n"
                f"hostname = mx.{DOMAIN}\n"
                "log_level = warning\n"
                # started as root, pecd gives its data to pecmail ([pecd] user): not the
                # directory of pecd.conf (issue 20)
                "data_dir = data\n"
                "\n[users]\npasswd_file = users\n"
                "\n[mx]\n"
                f"listen = 127.0.0.1:{port}\n"
                "tls = none\n"
                "require_tls = no\n"
                "\n[limits]\n"
                + "".join(f"{k} = {v}\n" for k, v in limits.items())
                + "\n[queue]\n"
                "delivery_workers = 2\n"
                + (f"sync = {os.environ['BENCH_PECD_SYNC']}\n"
                   if os.environ.get("BENCH_PECD_SYNC") else ""))

    def maildir_new(self, local):
        return os.path.join(self.dir, "data", "mail", DOMAIN, local, "new")

    def add_user(self, local, timeout=30):
        addr = f"{local}@{DOMAIN}"
        try:
            r = subprocess.run([self.pecctl, "-c", self.conf, "user", "add", addr, "--password-stdin"],
                               input=PASSWORD + "\n", capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"pecctl user add {addr} did not finish within {timeout}s")
        if r.returncode != 0:
            raise BenchError(f"pecctl user add {addr} failed (exit {r.returncode}): "
                             f"{(r.stderr or r.stdout).strip()}")

    def start(self, timeout=30):
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([self.pecd, "-c", self.conf], cwd=self.dir,
                                     stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=subprocess.STDOUT)
        try:
            return wait_greeting(self.port, timeout, alive=self.alive, what="pecd")
        except BenchError as e:
            raise BenchError(f"{e}\n--- pecd stderr (last lines) ---\n{tail(self.stderr_path)}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self, timeout=20):
        """SIGTERM, wait, SIGKILL if needed.  Returns the exit status (None if never started)."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        self.exited_by_itself = rc is not None
        if rc is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"pecd (pid {self.proc.pid}) ignored SIGTERM for {timeout}s; killing it")
                self.proc.kill()
                rc = self.proc.wait(timeout=10)
                rc = f"killed after SIGTERM timeout ({rc})"
        if self.stderr:
            self.stderr.close()
            self.stderr = None
        return rc

    def stderr_tail(self, n=20):
        return tail(self.stderr_path, n)


# --------------------------------------------------------------------------------------------
# A private Postfix instance

POSTFIX_MASTER_CF = """\
# Private benchmark instance: only the SMTP listener and the services it needs.
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{port} inet n      -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
virtual   unix  -       n       n       -       -       virtual
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A throw-away Postfix instance: own config_directory, queue_directory, data_directory,
    listening on 127.0.0.1:port only, delivering bench.test to Maildir with virtual(8).
    The system's /etc/postfix is only read (meta_directory), never written."""

    def __init__(self, workdir, port, users=("user",), log_to_file=True):
        self.dir = workdir
        self.port = port
        self.conf_dir = os.path.join(workdir, "etc")
        self.queue_dir = os.path.join(workdir, "spool")
        self.data_dir = os.path.join(workdir, "data")
        self.mail_base = os.path.join(workdir, "mail")
        self.log_file = os.path.join(workdir, "postfix.log")
        self.started = False
        try:
            pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError:
            raise BenchError("the postfix user or postdrop group is missing (apt-get install postfix)")
        for b in ("/usr/sbin/postfix", "/usr/sbin/postconf", "/usr/lib/postfix/sbin/master"):
            if not os.access(b, os.X_OK):
                raise BenchError(f"{b} not found (apt-get install postfix)")
        if os.geteuid() != 0:
            raise BenchError("the Postfix half of the benchmark must run as root "
                             "(postfix start needs it); set BENCH_TARGETS=pecd to skip it")
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        for d in (self.conf_dir, self.data_dir):
            os.makedirs(d, exist_ok=True)
        os.makedirs(self.queue_dir, exist_ok=True)
        os.chmod(self.queue_dir, 0o755)
        postfix_pw = pwd.getpwnam("postfix")
        os.chown(self.data_dir, postfix_pw.pw_uid, postfix_pw.pw_gid)
        dom = os.path.join(self.mail_base, DOMAIN)
        os.makedirs(dom, exist_ok=True)
        os.chmod(self.mail_base, 0o755)
        os.chown(dom, self.uid, self.gid)
        inline = ", ".join(f"{u}@{DOMAIN}={DOMAIN}/{u}/" for u in users)
        main_cf = f"""\
# Private benchmark instance (bench/smtp-maildir); deleted after the run.
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = $myhostname
mydestination =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP
biff = no
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is disabled
virtual_transport = virtual
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {self.mail_base}
virtual_mailbox_maps = inline:{{ {inline} }}
virtual_uid_maps = static:{self.uid}
virtual_gid_maps = static:{self.gid}
virtual_minimum_uid = 100
syslog_name = pecbench-postfix
maillog_file_prefixes = {workdir}
{"maillog_file = " + self.log_file if log_to_file else "# no maillog_file: logging goes to syslog (none here)"}
"""
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER_CF.format(port=port))

    def maildir_new(self, local):
        return os.path.join(self.mail_base, DOMAIN, local, "new")

    def _postfix(self, *args, timeout=60):
        try:
            # postfix(1) reports errors on stderr only when it is a terminal: give it one
            # with script(1) (util-linux), so that a failure comes with its reason.
            cmd = " ".join(["/usr/sbin/postfix", "-c", self.conf_dir, *args])
            r = subprocess.run(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=timeout, env=self._env())
            r.stdout = r.stdout.replace("\r", "")
            return r
        except subprocess.TimeoutExpired:
            raise BenchError(f"postfix -c {self.conf_dir} {' '.join(args)} did not finish in {timeout}s")

    def _env(self):
        e = dict(os.environ)
        e.pop("MAIL_CONFIG", None)
        return e

    def master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        st = proc_status(pid)
        if st.get("Name") != "master":
            return None
        return pid

    def check(self):
        r = subprocess.run(["/usr/sbin/postconf", "-c", self.conf_dir, "-n"],
                           capture_output=True, text=True, timeout=30, env=self._env())
        if r.returncode != 0 or "warning" in r.stderr:
            raise BenchError(f"postconf -c {self.conf_dir} -n: {r.stderr.strip()}")

    def start(self, timeout=30):
        self.check()
        self.started = True  # from here on, stop() must run
        r = self._postfix("start", timeout=timeout)
        if r.returncode != 0:
            raise BenchError(f"postfix -c {self.conf_dir} start failed (exit {r.returncode}):\n"
                             f"{r.stdout}{r.stderr}\n--- log ---\n{tail(self.log_file)}")
        return wait_greeting(self.port, timeout, what="Postfix")

    def alive(self):
        return self.master_pid() is not None

    def pss_total_kb(self):
        m = self.master_pid()
        if m is None:
            return None
        return sum(pss_kb(p) or 0 for p in [m] + descendants(m))

    def stop(self, timeout=30):
        if not self.started:
            return
        pid = self.master_pid()
        try:
            r = self._postfix("stop", timeout=timeout)
            if r.returncode != 0:
                log(f"postfix stop: {(r.stdout + r.stderr).strip()}")
        except BenchError as e:
            log(str(e))
        deadline = time.monotonic() + timeout
        while pid is not None and proc_status(pid).get("Name") == "master" \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and proc_status(pid).get("Name") == "master":
            log(f"Postfix master (pid {pid}) still running; postfix abort")
            try:
                self._postfix("abort", timeout=15)
            except BenchError as e:
                log(str(e))
            time.sleep(1)
            if proc_status(pid).get("Name") == "master":
                for p in descendants(pid) + [pid]:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.started = False


# --------------------------------------------------------------------------------------------
# A private PostgreSQL cluster (issue 24): bench/pec-exchange BENCH_STATE=postgresql, and
# tests/integration/pg_fixture.py, which imports it from here

PG_USER = "pecmail"
PG_PASSWORD = "pg-test-secret"
PG_RUN_AS = "nobody"


def pg_bindir():
    """Debian's postgresql server binaries: `pg_config --bindir`, else the highest
    /usr/lib/postgresql/*/bin (never a fixed version).  None if there are none."""
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
    """initdb on a temporary directory (under base, else the system's), the server on a
    loopback high port, started and stopped here; everything removed by destroy().

    PostgreSQL refuses to run as root, so started by root the server runs as `nobody`
    (setpriv; otherwise as the caller) in a directory that user can traverse (0755, like the
    Dovecot and Postfix instances: pytest's own temporary directories are private to root).
    The superuser is `pecmail` with a password
    (scram-sha-256), so that a test can give pecd a wrong one.

    start(durable=False), for the tests: fsync and full_page_writes off (the tests stop the
    server, fast or immediate, but never the machine, and the WAL in the page cache survives
    that).  start(durable=True), for the benchmark: PostgreSQL's own defaults (fsync,
    synchronous_commit and full_page_writes on), as in production, so that the comparison with
    the embedded SQLite (which syncs) is fair.
    Errors: RuntimeError with the command's output and the end of the server's log."""

    def __init__(self, base=None):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (package postgresql)")
        self.root = tempfile.mkdtemp(prefix="pec-pg-", dir=base)
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.run = os.path.join(self.root, "run")
        self.log_path = os.path.join(self.run, "postgres.log")
        self.port = free_port()
        for d in (self.data, self.run):
            os.makedirs(d)
            if os.geteuid() == 0:
                pw = pwd.getpwnam(PG_RUN_AS)
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
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_RUN_AS)
            argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                    "--clear-groups"] + argv
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.returncode}\n{r.stdout}{r.stderr}\n"
                               f"{self.log()}")
        return r

    def start(self, durable=False):
        opts = (f"-p {self.port} -k {self.run} -c listen_addresses=127.0.0.1 "
                f"-c max_connections=300 -c shared_buffers=64MB -c log_min_messages=warning")
        if not durable:
            opts += " -c fsync=off -c full_page_writes=off"
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

    def postmaster_pid(self):
        """The server's pid (first line of postmaster.pid), or None."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def cpu_s(self):
        """User + system CPU seconds of the server so far: the postmaster, every process it
        runs (backends, checkpointer, WAL writer, autovacuum...) and those it has reaped (a
        backend whose connection closed)."""
        pid = self.postmaster_pid()
        return tree_cpu_s(pid) if pid else 0.0

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
        """A fresh database (for one test, or one round); returns its name."""
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
