"""A real Dovecot 2.3 (dovecot-imapd, dovecot-lmtpd) in a temporary directory, for the Dovecot
tests (issue 8): IMAP and LMTP on free loopback ports, the auth-client and auth-userdb sockets in
its base_dir, passdb/userdb passwd-file reading each provider's own users file
(ROOT/<domain>/users, pecd's [users] passwd_file), mail_location matching pecd's default
[delivery] mailbox (ROOT/<domain>/mail/%d/%n).

Mail belongs to one system user (MAIL_USER, Debian's 'mail'): Dovecot refuses mail access as
root, so pecd runs as that user too (MailProvider), exactly as docs/dovecot.md recommends."""
import os
import pwd
import grp
import shutil
import socket
import subprocess
import tempfile
import time

from pecd_harness import PECD, LIVE, free_port, wait_port, stop_process
from pec_providers import Provider, make_providers

DOVECOT = "/usr/sbin/dovecot"
MAIL_USER = "mail"


def dovecot_available():
    return os.path.exists(DOVECOT) and os.path.exists("/usr/lib/dovecot/imap") and \
        os.path.exists("/usr/lib/dovecot/lmtp")


CONF = """# written by tests/integration/dovecot_fixture.py
base_dir = {run}
state_dir = {state}
log_path = {log}
instance_name = pectest-{port}
listen = 127.0.0.1
protocols = imap lmtp
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 1 secs
default_internal_user = dovecot
default_login_user = dovenull
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{root}/%d/mail/%d/%n
passdb {{
  driver = passwd-file
  args = scheme=CRYPT username_format=%u {root}/%d/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/%d/users
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
  unix_listener lmtp {{
    mode = 0600
    user = {user}
  }}
}}
service auth {{
  unix_listener auth-client {{
    mode = 0600
    user = {user}
  }}
  unix_listener auth-userdb {{
    mode = 0600
    user = {user}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@localhost
}}
"""


class Dovecot:
    def __init__(self, root):
        self.root = root
        self.dir = os.path.join(root, "dovecot")
        self.run = os.path.join(self.dir, "run")
        os.makedirs(os.path.join(self.dir, "state"), exist_ok=True)
        self.imap_port, self.lmtp_port = free_port(), free_port()
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        pw = pwd.getpwnam(MAIL_USER)
        with open(self.conf, "w") as f:
            f.write(CONF.format(run=self.run, state=os.path.join(self.dir, "state"),
                                log=self.log_path, root=root, uid=pw.pw_uid, gid=pw.pw_gid,
                                user=MAIL_USER, imap=self.imap_port, lmtp=self.lmtp_port,
                                port=self.imap_port))
        self.proc = None

    @property
    def auth_client(self):
        return os.path.join(self.run, "auth-client")

    @property
    def auth_userdb(self):
        return os.path.join(self.run, "auth-userdb")

    def start(self):
        # a master.pid left by an earlier run names a pid that may now be another process
        try:
            os.unlink(os.path.join(self.run, "master.pid"))
        except FileNotFoundError:
            pass
        self.out = open(os.path.join(self.dir, "stdout.log"), "a")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdout=self.out,
                                     stderr=self.out)
        LIVE.append(self)
        for p in (self.imap_port, self.lmtp_port):
            wait_port(p, self.proc)
        end = time.time() + 10
        while not os.path.exists(self.auth_client) and time.time() < end:
            time.sleep(0.05)
        assert os.path.exists(self.auth_client), self.log()

    def stop(self):
        stop_process(self.proc)
        self.proc = None
        if self in LIVE:
            LIVE.remove(self)
        # the sockets go with the master; wait until connecting fails
        end = time.time() + 5
        while time.time() < end:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(self.auth_client)
            except OSError:
                break
            finally:
                s.close()
            time.sleep(0.05)

    def kill(self):
        self.stop()

    def log(self, tail=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-tail:])
        except FileNotFoundError:
            return ""


class MailProvider(Provider):
    """A pecd provider running as MAIL_USER, the owner of the Maildirs Dovecot serves."""

    def own(self):
        """Gives the instance to MAIL_USER (after every pecctl step: pecctl runs as root);
        the users file is group-readable by dovecot's auth process."""
        pw = pwd.getpwnam(MAIL_USER)
        for base, dirs, files in os.walk(self.dir):
            for n in dirs + files:
                os.chown(os.path.join(base, n), pw.pw_uid, pw.pw_gid, follow_symlinks=False)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        users = os.path.join(self.dir, "users")
        if os.path.exists(users):
            os.chown(users, pw.pw_uid, grp.getgrnam("dovecot").gr_gid)
            os.chmod(users, 0o640)

    def start(self):
        self.own()
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(["setpriv", f"--reuid={MAIL_USER}", f"--regid={MAIL_USER}",
                                      "--clear-groups", PECD, "-c", self.conf],
                                     stderr=self.logf, stdout=self.logf)
        LIVE.append(self)
        for p in self.ports.values():
            wait_port(p, self.proc)


def make_mail_providers():
    """make_providers() in a root that MAIL_USER and dovecot can traverse (pytest's own
    temporary directories are private to root); returns (root, a, b, ca, directory)."""
    import pathlib
    root = tempfile.mkdtemp(prefix="pec-dovecot-")
    os.chmod(root, 0o755)
    a, b, ca, directory = make_providers(pathlib.Path(root))
    for p in (a, b):
        p.__class__ = MailProvider
    os.chmod(ca, 0o755)
    return root, a, b, ca, directory


def remove_root(root):
    shutil.rmtree(root, ignore_errors=True)
