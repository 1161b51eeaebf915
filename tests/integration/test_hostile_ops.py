"""Attacks on the operator's commands (issue 23 follow-up): what a local user who writes
inside the data directory ([pecd] user, a Maildir's owner) or who hands the operator a
file can make `pecctl` (often run as root) do.

- backup: a directory of the spool or of the mail tree swapped for a symbolic link to
  somewhere else is not followed (the link is skipped and counted); an answer on the
  control socket naming another staging directory is refused, so root neither copies
  nor removes what the socket's holder chose.
(The walks themselves, with links swapped in while they run: tests/unit/test_fs_copy.c.)
"""
import os
import socket
import subprocess
import threading

import pytest

from pecd_harness import PECCTL


def run(*args, input=None, timeout=120):
    return subprocess.run([PECCTL, *args], capture_output=True, text=True, timeout=timeout,
                          input=input)


@pytest.fixture
def stopped(tmp_path):
    inst = tmp_path / "inst"
    r = run("init", str(inst), "--domain", "pec.r.test", "--ca", str(tmp_path / "ca"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("-c", str(inst / "pecd.conf"), "user", "add", "anna@pec.r.test",
            "--password-stdin", input="una-password-lunga\n")
    assert r.returncode == 0, r.stderr
    return str(inst / "pecd.conf"), inst


def outside_secret(tmp_path):
    """A directory outside the instance with a file the backup must never hold."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret").write_bytes(b"ROOT-ONLY-SECRET\n")
    return out


def all_files(top):
    for root, _, files in os.walk(top):
        for n in files:
            yield os.path.join(root, n)


def holds_secret(top):
    for p in all_files(top):
        with open(p, "rb") as f:
            if b"ROOT-ONLY-SECRET" in f.read():
                return p
    return None


def test_backup_does_not_follow_a_spool_directory_swapped_for_a_link(stopped, tmp_path):
    conf, inst = stopped
    out = outside_secret(tmp_path)
    hold = inst / "queue" / "hold"
    if hold.exists():
        os.rmdir(hold)
    hold.parent.mkdir(exist_ok=True)
    os.symlink(out, hold)              # what pecd's user can do in its own spool
    backup = tmp_path / "b"
    r = run("-c", conf, "backup", str(backup))
    assert r.returncode == 0, r.stdout + r.stderr
    assert holds_secret(backup) is None, "the backup followed queue/hold into another directory"
    assert "hold: a symbolic link" in r.stdout and "not copied: 1 symbolic link" in r.stdout, \
        r.stdout
    assert (out / "secret").exists()


def test_backup_does_not_follow_the_mail_tree_swapped_for_a_link(stopped, tmp_path):
    conf, inst = stopped
    out = outside_secret(tmp_path)
    mail = inst / "mail"
    if mail.exists():
        os.rename(mail, inst / "mail.old")
    os.symlink(out, mail)
    backup = tmp_path / "b"
    r = run("-c", conf, "backup", str(backup))
    assert r.returncode == 0, r.stdout + r.stderr
    assert holds_secret(backup) is None, "the backup followed mail/ into another directory"
    assert "mail: a symbolic link" in r.stdout and "not copied: 1 symbolic link" in r.stdout, \
        r.stdout


def test_backup_refuses_a_staging_directory_named_by_the_socket(stopped, tmp_path):
    """A fake pecd on control.sock (its user can bind there) answers with a staging path
    of its choice: pecctl must neither copy it into the backup nor remove it."""
    conf, inst = stopped
    out = outside_secret(tmp_path)
    (out / "queue").mkdir()
    (out / "queue" / "q").write_bytes(b"ROOT-ONLY-SECRET queued\n")
    path = str(inst / "control.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(60)

    def answer():
        try:
            c, _ = srv.accept()
        except OSError:
            return
        with c:
            c.settimeout(10)
            c.recv(128)
            c.sendall(f"ok messages=1 bytes=1 paused_ms=0 staging={out}\n".encode())

    t = threading.Thread(target=answer)
    t.start()
    try:
        backup = tmp_path / "b"
        r = run("-c", conf, "backup", str(backup))
    finally:
        t.join(timeout=70)
        srv.close()
    assert (out / "secret").exists() and (out / "queue" / "q").exists(), \
        "pecctl removed the directory the socket named"
    assert holds_secret(backup) is None
    assert r.returncode == 1 and "staging directory" in r.stderr, r.stdout + r.stderr
