"""Users: `pecctl user add|del|list` and the Dovecot passwd-file format pecd reads."""
import base64
import os
import re
import subprocess

import pytest

from pecd_harness import USERS, password


def auth_plain(inst, user, pw):
    with inst.connect("submissions") as c:
        c.ehlo()
        token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
        return c.cmd(f"AUTH PLAIN {token}")


OK = "235 2.7.0 Authentication successful"
BAD = "535 5.7.8 Authentication credentials invalid"


def users_lines(inst):
    with open(os.path.join(inst.dir, "users")) as f:
        return [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]


def test_user_list(make_instance):
    inst = make_instance(start=False)
    r = inst.pecctl("user", "list")
    assert r.returncode == 0, r.stderr
    listed = set(re.findall(r"\S+@\S+", r.stdout))
    assert listed == set(USERS), r.stdout


def test_user_add_writes_a_crypt_hash(make_instance):
    inst = make_instance(start=False)
    r = inst.pecctl("user", "add", "newbie@example.test", "--password-stdin",
                    input="s3cret passphrase\n")
    assert r.returncode == 0, r.stderr
    assert "s3cret" not in r.stdout + r.stderr
    [line] = [l for l in users_lines(inst) if l.startswith("newbie@example.test:")]
    fields = line.split(":")
    assert fields[0] == "newbie@example.test"
    assert re.match(r"^(\{[A-Z0-9-]+\})?\$(y|6)\$", fields[1]), line
    assert "s3cret" not in line
    assert "newbie@example.test" in inst.pecctl("user", "list").stdout
    inst.start()
    assert auth_plain(inst, "newbie@example.test", "s3cret passphrase") == OK
    assert auth_plain(inst, "newbie@example.test", "s3cret") == BAD
    with inst.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<newbie@example.test>") == "250 2.1.5 Recipient OK"


def test_user_add_generated_password(make_instance):
    inst = make_instance(start=False)
    r = inst.pecctl("user", "add", "gen@example.test")
    assert r.returncode == 0, r.stderr
    inst.start()
    # The generated password is printed; one of the printed words must work.
    words = [w.strip("'\".,;") for w in r.stdout.split()]
    assert any(auth_plain(inst, "gen@example.test", w) == OK for w in words if len(w) >= 8), \
        r.stdout


def test_user_del(make_instance):
    inst = make_instance(start=False)
    r = inst.pecctl("user", "del", "bob@example.test")
    assert r.returncode == 0, r.stderr
    assert "bob@example.test" not in inst.pecctl("user", "list").stdout
    inst.start()
    with inst.connect("mx") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Sender OK"
        assert c.cmd("RCPT TO:<bob@example.test>") == \
            "550 5.1.1 <bob@example.test>: Recipient address rejected: no such user"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient OK"
    assert auth_plain(inst, "bob@example.test", password("bob@example.test")) == BAD


def sha512_crypt(pw):
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=pw + "\n",
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def test_passwd_file_schemes(make_instance):
    """Hand-written Dovecot passwd-file entries: {SHA512-CRYPT}, {CRYPT} and bare $6$,
    a bare $y$ (yescrypt), comments and blank lines."""
    inst = make_instance(start=False)
    yes = [l for l in users_lines(inst) if l.startswith("alice@example.test:")][0]
    yes_hash = re.sub(r"^\{[A-Z0-9-]+\}", "", yes.split(":")[1])
    assert yes_hash.startswith("$")
    entries = {
        "s1@example.test": "{SHA512-CRYPT}" + sha512_crypt("pw-s1"),
        "s2@example.test": "{CRYPT}" + sha512_crypt("pw-s2"),
        "s3@example.test": sha512_crypt("pw-s3"),
        "y1@example.test": yes_hash,        # alice's password, without a scheme prefix
    }
    with open(os.path.join(inst.dir, "users"), "a") as f:
        f.write("# hand-written entries\n\n")
        for user, h in entries.items():
            f.write(f"{user}:{h}:::::\n")
    inst.start()
    assert auth_plain(inst, "s1@example.test", "pw-s1") == OK
    assert auth_plain(inst, "s2@example.test", "pw-s2") == OK
    assert auth_plain(inst, "s3@example.test", "pw-s3") == OK
    assert auth_plain(inst, "s3@example.test", "pw-s1") == BAD
    assert auth_plain(inst, "y1@example.test", password("alice@example.test")) == OK
    assert auth_plain(inst, "alice@example.test", password("alice@example.test")) == OK


def test_passwd_file_blowfish(make_instance):
    crypt = pytest.importorskip("crypt")
    if "BLOWFISH" not in [m.name for m in crypt.methods]:
        pytest.skip("libcrypt here has no bcrypt")
    inst = make_instance(start=False)
    h = crypt.crypt("pw-b1", crypt.mksalt(crypt.METHOD_BLOWFISH))
    with open(os.path.join(inst.dir, "users"), "a") as f:
        f.write(f"b1@example.test:{{BLF-CRYPT}}{h}:::::\n")
    inst.start()
    assert auth_plain(inst, "b1@example.test", "pw-b1") == OK
    assert auth_plain(inst, "b1@example.test", "pw-b2") == BAD
