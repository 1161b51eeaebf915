"""docs/pec-schema.ldif, the PEC directory schema (RFC 6109 §4.5) for OpenLDAP's cn=config,
loaded the way docs/directory.md says (issue 17).

A private slapd with a cn=config database (slapd.d made with `slapadd -n0`: core schema, an
mdb database for o=postacert, the config database administered by this user over ldapi://
with SASL EXTERNAL) is started; then

    ldapadd -Y EXTERNAL -H ldapi://… -f docs/pec-schema.ldif

must succeed, a providers' directory with every attribute of §4.5 (the MAY ones too:
description, providerUnit, LDIFLocationURL) loads over ldap://, reads back with ldapsearch,
and `pecctl directory list` reads it through pecd's LDAP source."""
import os
import subprocess
import urllib.parse

import pytest

from ldap_fixture import ADMIN, PASSWORD, ROOT, entry
from pec_providers import make_providers, pecctl
from pecd_harness import free_port, stop_process, wait_port

SLAPD, SLAPADD = "/usr/sbin/slapd", "/usr/sbin/slapadd"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA_LDIF = os.path.join(REPO, "docs", "pec-schema.ldif")
CORE_LDIF = "/etc/ldap/schema/core.ldif"


def run(*args, input=None):
    return subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=60)


@pytest.fixture
def slapd_cn_config(tmp_path):
    for tool in (SLAPD, SLAPADD, CORE_LDIF):
        if not os.path.exists(tool):
            pytest.skip(f"{tool} is not installed (scripts/install-deps)")
    root = tmp_path / "slapd"
    confdir, db = root / "slapd.d", root / "db"
    for d in (confdir, db):
        d.mkdir(parents=True)
    me = f"gidNumber={os.getgid()}+uidNumber={os.getuid()},cn=peercred,cn=external,cn=auth"
    with open(CORE_LDIF) as f:
        core = f.read()
    base = (f"dn: cn=config\nobjectClass: olcGlobal\ncn: config\n"
            f"olcPidFile: {root}/slapd.pid\n\n"
            f"dn: cn=module,cn=config\nobjectClass: olcModuleList\ncn: module\n"
            f"olcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n"
            f"dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n"
            f"{core.strip()}\n\n"
            f"dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\n"
            f"olcDatabase: {{0}}config\nolcRootDN: {me}\n\n"
            f"dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\n"
            f"objectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\nolcSuffix: o=postacert\n"
            f"olcRootDN: {ADMIN}\nolcRootPW: {PASSWORD}\nolcDbDirectory: {db}\n"
            f"olcDbMaxSize: 104857600\nolcAccess: to * by * read\n")
    (root / "base.ldif").write_text(base)
    r = run(SLAPADD, "-n0", "-F", str(confdir), "-l", str(root / "base.ldif"))
    assert r.returncode == 0, r.stdout + r.stderr
    port = free_port()
    sock = str(root / "ldapi")
    ldapi = "ldapi://" + urllib.parse.quote(sock, safe="")
    log = open(root / "slapd.log", "a")
    proc = subprocess.Popen([SLAPD, "-F", str(confdir), "-h", f"ldap://127.0.0.1:{port}/ {ldapi}",
                             "-d", "0"], stdout=log, stderr=log)
    try:
        wait_port(port, proc)
        yield {"ldap": f"ldap://127.0.0.1:{port}", "ldapi": ldapi, "root": root}
    finally:
        stop_process(proc)
        log.close()


def test_pec_schema_ldif_loads_into_cn_config_and_serves_a_directory(slapd_cn_config, tmp_path):
    s = slapd_cn_config
    # docs/directory.md: ldapadd -Y EXTERNAL -H ldapi:/// -f docs/pec-schema.ldif
    r = run("ldapadd", "-Q", "-Y", "EXTERNAL", "-H", s["ldapi"], "-f", SCHEMA_LDIF)
    assert r.returncode == 0, f"ldapadd of {SCHEMA_LDIF}:\n{r.stdout}{r.stderr}"
    r = run("ldapsearch", "-Q", "-LLL", "-Y", "EXTERNAL", "-H", s["ldapi"], "-b",
            "cn=schema,cn=config", "(cn=*pec)", "olcObjectClasses")
    assert r.returncode == 0 and "NAME 'provider'" in r.stdout, r.stdout + r.stderr
    # a providers' directory with the MUST and the MAY attributes of §4.5.9
    a, b, ca, directory = make_providers(tmp_path)
    ldif = ROOT + entry(a) + entry(b).replace(
        "description: ", f"providerUnit: Unita operativa B\n"
                        f"LDIFLocationURL: https://directory.example/b.ldif\ndescription: ")
    path = tmp_path / "providers.ldif"
    path.write_text(ldif)
    r = run("ldapadd", "-x", "-H", s["ldap"], "-D", ADMIN, "-w", PASSWORD, "-f", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("ldapsearch", "-x", "-LLL", "-H", s["ldap"], "-b", "o=postacert",
            "(objectClass=provider)", "providerName", "mailReceipt", "managedDomains",
            "providerCertificateHash", "providerUnit", "description", "LDIFLocationURL")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for p in (a, b):
        assert f"providerName: {p.name}" in out and f"managedDomains: {p.domain}" in out, out
        assert f"providerCertificateHash: {p.hash}" in out, out
        assert f"description: test provider {p.name}" in out, out
    assert "providerUnit: Unita operativa B" in out, out
    assert "LDIFLocationURL: https://directory.example/b.ldif" in out, out
    # pecd's own LDAP source reads it back
    a.write_config({}, extra={"pec": {"directory": s["ldap"] + "/o=postacert"}})
    listing = pecctl("-c", a.conf, "directory", "list").stdout
    assert "2 providers" in listing and a.name in listing and b.name in listing, listing


def test_the_two_forms_of_the_schema_agree():
    """docs/pec-schema.ldif (cn=config) and share/pec.schema (slapd.conf) hold the same
    definitions, word for word once white space is normalised; each one complete."""
    import re
    with open(os.path.join(REPO, "share", "pec.schema")) as f:
        conf = "\n".join(l for l in f.read().splitlines() if not l.startswith("#"))
    defs_conf = [" ".join(d.split()) for d in
                 re.findall(r"^(?:attributetype|objectclass)\s+(\(.*?\))\s*$(?=\s*(?:^\w|\Z))",
                            conf, flags=re.S | re.M)]
    with open(SCHEMA_LDIF) as f:
        ldif = re.sub(r"\n ", "", f.read())          # RFC 2849 line folding
    defs_ldif = [" ".join(v.split()) for v in
                 re.findall(r"^olc(?:AttributeTypes|ObjectClasses):\s*(.*)$", ldif, flags=re.M)]
    assert len(defs_conf) == 9, defs_conf
    assert defs_ldif == defs_conf
    for d in defs_ldif:
        assert d.count("(") == d.count(")"), d
