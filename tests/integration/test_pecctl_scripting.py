"""pecctl for scripts (issue 22): help for every command and option, a queue listing on an
instance whose pecd never ran, routes added, changed and removed without an editor (comments
kept, a bad value refused with the file unchanged), and the --json listings read with the
standard json module."""
import json
import os
import re
import subprocess

from pecd_harness import PECCTL


def run(*args, check=True):
    r = subprocess.run([PECCTL, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"pecctl {args}: {r.returncode}\n{r.stdout}{r.stderr}"
    return r


INIT_OPTIONS = ["--domain", "--name", "--smtp", "--submission", "--submissions", "--ca",
                "--directory", "--route", "--force"]


def test_help_lists_every_command_and_option():
    overview = run("--help").stdout
    assert overview == run("help").stdout
    for opt in INIT_OPTIONS:
        assert opt in overview
    init = run("help", "init").stdout
    assert init == run("init", "--help").stdout
    for opt in INIT_OPTIONS:
        assert opt in init, opt
    for cmd, opts in {"queue": ["--json", "release"],
                      "user": ["--json", "--password-stdin", "passwd", "suspend", "resume",
                               "show"],
                      "domain": ["list", "--json"], "report": ["--from", "--to", "--csv"],
                      "route": ["list", "add", "del", "--json"], "trace": ["--json"],
                      "log": ["verify", "--json", "--cert", "--no-cert", "seal", "purge",
                              "search", "extract", "hold", "--address", "--subject", "--out"],
                      "directory": ["list", "--json", "--cache", "import", "export", "refresh",
                                    "publish"],
                      "verify": ["--json", "--trust", "--crl", "--directory", "--at"]}.items():
        text = run("help", cmd).stdout
        assert text == run(cmd, "--help").stdout
        for o in opts:
            assert o in text, (cmd, o)
    # the manual page holds every command's help, word for word
    man = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "man",
                            "pecctl.8.scd")).read()
    for block in overview.split("\n\n")[1:]:
        if block.strip() and not block.startswith("pecctl help"):
            assert block.strip() + "\n" in man, f"docs/man/pecctl.8.scd lacks:\n{block}"
    r = run("help", "nonsense", check=False)
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_fresh_instance_queue_and_routes(tmp_path):
    d = str(tmp_path / "inst")
    run("init", d, "--domain", "fresh.test")
    conf = os.path.join(d, "pecd.conf")
    assert run("-c", conf, "queue").stdout.strip() == "Queue is empty"
    assert json.loads(run("-c", conf, "queue", "--json").stdout) == []
    assert json.loads(run("-c", conf, "route", "list", "--json").stdout) == []

    before = open(conf).read()
    comments = [l for l in before.splitlines() if l.lstrip().startswith(("#", ";"))]
    run("-c", conf, "route", "add", "B.Test", "localhost:2600")
    assert json.loads(run("-c", conf, "route", "list", "--json").stdout) == [
        {"domain": "b.test", "next_hop": "localhost:2600"}]
    run("-c", conf, "route", "add", "b.test", "localhost:2601,localhost:2602")
    run("-c", conf, "route", "add", "c.test", "lmtp:127.0.0.1:24")
    routes = json.loads(run("-c", conf, "route", "list", "--json").stdout)
    assert routes == [{"domain": "b.test", "next_hop": "localhost:2601,localhost:2602"},
                      {"domain": "c.test", "next_hop": "lmtp:127.0.0.1:24"}]
    text = open(conf).read()
    assert len(re.findall(r"(?m)^b\.test = ", text)) == 1
    assert [l for l in text.splitlines() if l.lstrip().startswith(("#", ";"))] == comments
    # bad values: refused, the file unchanged
    for args in (["add", "d.test", "nohost"], ["add", "d.test", "h:99999"],
                 ["add", "bad domain", "h:25"], ["add", "d.test", "h:25\n[x]"],
                 ["del", "nosuch.test"]):
        r = run("-c", conf, "route", *args, check=False)
        assert r.returncode != 0, args
        assert open(conf).read() == text
    run("-c", conf, "route", "del", "b.test")
    run("-c", conf, "route", "del", "c.test")
    assert json.loads(run("-c", conf, "route", "list", "--json").stdout) == []
    after = open(conf).read()
    assert [l for l in after.splitlines() if l.lstrip().startswith(("#", ";"))] == comments
    assert json.loads(run("-c", conf, "user", "list", "--json").stdout) == []
