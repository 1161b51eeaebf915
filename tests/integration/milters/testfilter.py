#!/usr/bin/python3
"""A scriptable milter on Debian's python3-milter (libmilter), for the tests.

    /usr/bin/python3 testfilter.py SOCKET RECORD.json [--noreply]

The behaviour is chosen per message by the header field X-Test-Milter:
reject | tempfail | discard | addheader | chgheader | replbody | quarantine |
reply:CODE X.Y.Z text ; otherwise the message is accepted.  Envelope changes,
one per X-Test-Milter field (several fields combine): addrcpt:ADDR,
delrcpt:ADDR, chgfrom:ADDR.  A recipient whose local part starts with
"reject-" (or "tempfail-") is refused at RCPT.

Forbidden MIME types: a message with a part of type application/x-msdownload
(by Content-Type, or a .exe file name) is refused with 554 5.7.1, whatever
X-Test-Milter says (the body is kept up to 10 MB for this check).

Each message appends a record to RECORD.json (a JSON list, rewritten
atomically): the connect arguments, HELO, sender, recipients, headers, body
size, the macros seen, and the action taken.  --noreply asks the MTA for
no replies to connect, helo and headers (SMFIP_NR_*), to exercise them.
"""
import email
import email.policy
import json
import os
import sys
import threading

import Milter

MACROS = ["j", "{daemon_name}", "_", "{client_addr}", "{client_port}", "{client_name}",
          "{if_addr}", "i", "{auth_authen}", "{auth_type}", "{tls_version}", "{cipher}",
          "{cipher_bits}", "{mail_addr}", "{mail_host}", "{mail_mailer}", "{rcpt_addr}",
          "{rcpt_host}"]

RECORD = None
# libmilter runs each connection on its own thread, and the PEC tests point two
# pecd at one filter: the read-modify-write of RECORD must not interleave.
RECORD_LOCK = threading.Lock()
FORBIDDEN_TYPES = {"application/x-msdownload"}
BODY_MAX = 10 * 1024 * 1024


def forbidden_part(raw):
    """The first forbidden MIME type in the message raw (bytes), or None."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in msg.walk():
        ctype = part.get_content_type().lower()
        name = (part.get_filename() or "").lower()
        if ctype in FORBIDDEN_TYPES:
            return ctype
        if name.endswith(".exe"):
            return "application/x-msdownload"
    return None


def save(rec):
    with RECORD_LOCK:
        data = []
        if os.path.exists(RECORD):
            with open(RECORD) as f:
                data = json.load(f)
        data.append(rec)
        tmp = RECORD + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, RECORD)


class TestFilter(Milter.Base):
    def __init__(self):
        self.rec = {"macros": {}, "rcpts": [], "headers": [], "body_len": 0}
        self.body_parts = []

    def see(self):
        for m in MACROS:
            v = self.getsymval(m)
            if v is not None:
                self.rec["macros"].setdefault(m, v)

    def connect(self, hostname, family, hostaddr):
        self.see()
        self.rec["connect"] = [hostname, str(family), list(hostaddr) if hostaddr else None]
        return Milter.CONTINUE

    def hello(self, hostname):
        self.see()
        self.rec["helo"] = hostname
        return Milter.CONTINUE

    def envfrom(self, f, *params):
        self.see()
        self.rec["mail_from"] = f
        return Milter.CONTINUE

    def envrcpt(self, to, *params):
        self.see()
        self.rec["macros"]["{rcpt_addr}"] = self.getsymval("{rcpt_addr}")
        local = to.strip("<>").split("@")[0]
        if local.startswith("reject-"):
            self.setreply("550", "5.1.1", "no such user here")
            return Milter.REJECT
        if local.startswith("tempfail-"):
            return Milter.TEMPFAIL
        self.rec["rcpts"].append(to)
        return Milter.CONTINUE

    def header(self, name, value):
        self.rec["headers"].append([name, value])
        return Milter.CONTINUE

    def body(self, chunk):
        if self.rec["body_len"] + len(chunk) <= BODY_MAX:
            self.body_parts.append(chunk)
        self.rec["body_len"] += len(chunk)
        return Milter.CONTINUE

    def envelope(self, hows):
        """addrcpt:/delrcpt:/chgfrom: fields; the changes made, for the record."""
        done = []
        for how in hows:
            kind, _, addr = how.partition(":")
            addr = addr.strip()
            if kind == "addrcpt":
                self.addrcpt("<%s>" % addr)
            elif kind == "delrcpt":
                self.delrcpt("<%s>" % addr)
            elif kind == "chgfrom":
                self.chgfrom("<%s>" % addr)
            else:
                continue
            done.append(how)
        return done

    def eom(self):
        self.see()
        how, hows = "", []
        for name, value in self.rec["headers"]:
            if name.lower() == "x-test-milter":
                how = value.strip()
                hows.append(how)
        head = "".join("%s: %s\r\n" % (n, v) for n, v in self.rec["headers"])
        bad = forbidden_part(head.encode("utf-8", "surrogateescape") + b"\r\n" +
                             b"".join(self.body_parts))
        verdict, action = Milter.ACCEPT, "accept"
        if bad is not None:
            self.setreply("554", "5.7.1", "forbidden attachment type %s" % bad)
            self.rec["action"] = "mime-reject"
            save(self.rec)
            return Milter.REJECT
        self.rec["envelope"] = self.envelope(hows)
        if how == "reject":
            verdict, action = Milter.REJECT, "reject"
        elif how == "tempfail":
            verdict, action = Milter.TEMPFAIL, "tempfail"
        elif how == "discard":
            verdict, action = Milter.DISCARD, "discard"
        elif how == "addheader":
            self.addheader("X-Test-Added", "yes, by testfilter")
            action = "addheader"
        elif how == "chgheader":
            self.chgheader("Subject", 1, "changed by testfilter")
            action = "chgheader"
        elif how == "replbody":
            self.replacebody(b"replaced by testfilter\r\n")
            action = "replbody"
        elif how == "quarantine":
            self.quarantine("held by testfilter")
            action = "quarantine"
        elif how.startswith("reply:"):
            code, xcode, text = (how[6:].split(" ", 2) + ["", ""])[:3]
            self.setreply(code, xcode, text)
            verdict = Milter.REJECT if code.startswith("5") else Milter.TEMPFAIL
            action = "reply"
        self.rec["action"] = action
        save(self.rec)
        return verdict


class NoReplyFilter(TestFilter):
    @Milter.noreply
    def connect(self, hostname, family, hostaddr):
        return TestFilter.connect(self, hostname, family, hostaddr)

    @Milter.noreply
    def hello(self, hostname):
        return TestFilter.hello(self, hostname)

    @Milter.noreply
    def header(self, name, value):
        return TestFilter.header(self, name, value)


def main():
    global RECORD
    if len(sys.argv) < 3:
        sys.exit("usage: testfilter.py SOCKET RECORD.json [--noreply]")
    RECORD = sys.argv[2]
    Milter.factory = NoReplyFilter if "--noreply" in sys.argv[3:] else TestFilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY | Milter.ADDRCPT |
                     Milter.DELRCPT | Milter.QUARANTINE | Milter.CHGFROM)
    sys.stdout.write("testfilter: listening on %s\n" % sys.argv[1])
    sys.stdout.flush()
    Milter.runmilter("testfilter", sys.argv[1], 30)


if __name__ == "__main__":
    main()
