"""A scriptable downstream SMTP server for the outbound tests, built on aiosmtpd.

aiosmtpd refuses MAIL and RCPT parameters it does not know (REQUIRETLS, RET, ENVID,
NOTIFY, ORCPT) and the null reverse-path, so MAIL and RCPT are re-implemented here to record
whatever pecd sends; EHLO advertises what the test asks for (DSN, REQUIRETLS after TLS).
"""
import asyncio
import email
import email.policy
import os
import re
import ssl
import subprocess
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, syntax

from pecd_harness import password

ALICE = "alice@example.test"


def make_ca_and_cert(d, name="localhost"):
    """A test CA and a server certificate for `name` signed by it; returns (ca, cert, key)."""
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = os.path.join(d, "srv.key"), os.path.join(d, "srv.csr"), os.path.join(d, "srv.crt")
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=Test CA", "-keyout", ca_key, "-out", ca)
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", key, "-out", csr)
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-days", "2", "-extfile", ext, "-out", crt)
    return ca, crt, key


class Script:
    """What the downstream server does; the test changes it while pecd retries."""

    def __init__(self):
        self.rcpt_replies = {}      # address -> list of replies, one per attempt ("250" = accept)
        self.data_reply = "250 2.0.0 OK queued"
        self.dsn = True
        self.requiretls = False     # advertise REQUIRETLS (after STARTTLS only)
        self.messages = []          # what arrived
        self.lock = threading.Lock()
        self.data_delay = 0.0       # seconds each DATA takes (to observe concurrency)
        self.active = 0             # DATA commands being handled now, and the most seen
        self.max_active = 0

    def rcpt_reply(self, addr):
        with self.lock:
            lst = self.rcpt_replies.get(addr.lower())
            if not lst:
                return "250 2.1.5 OK"
            return lst.pop(0) if len(lst) > 1 else lst[0]


class _Session(SMTP):
    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg):
        if await self.check_helo_needed():
            return
        m = re.match(r"(?i)FROM:\s*<([^>]*)>(.*)$", arg or "")
        if not m:
            return await self.push("501 5.5.4 Syntax: MAIL FROM:<address>")
        self.envelope.mail_from = m.group(1)
        self.envelope.mail_options.extend(m.group(2).split())
        await self.push("250 2.1.0 OK")

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg):
        if self.envelope.mail_from is None:
            return await self.push("503 5.5.1 need MAIL")
        m = re.match(r"(?i)TO:\s*<([^>]*)>(.*)$", arg or "")
        if not m:
            return await self.push("501 5.5.4 Syntax: RCPT TO:<address>")
        reply = self.event_handler.script.rcpt_reply(m.group(1))
        if not reply.startswith("250"):
            return await self.push(reply)
        self.envelope.rcpt_tos.append(m.group(1))
        self.envelope.rcpt_options.append(m.group(2).split())
        await self.push(reply)


class _Handler:
    def __init__(self, script):
        self.script = script

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        extra = ["250-ENHANCEDSTATUSCODES"]
        if self.script.dsn:
            extra.append("250-DSN")
        if self.script.requiretls and server._tls_protocol:
            extra.append("250-REQUIRETLS")
        return responses[:-1] + extra + responses[-1:]

    async def handle_DATA(self, server, session, envelope):
        if self.script.data_delay:
            with self.script.lock:
                self.script.active += 1
                self.script.max_active = max(self.script.max_active, self.script.active)
            await asyncio.sleep(self.script.data_delay)
            with self.script.lock:
                self.script.active -= 1
        with self.script.lock:
            self.script.messages.append({
                "mail_from": envelope.mail_from,
                "mail_options": list(envelope.mail_options),
                "rcpts": list(envelope.rcpt_tos),
                "rcpt_options": list(envelope.rcpt_options),
                "data": envelope.original_content,
                "tls": server._tls_protocol is not None,
                "peer": session.peer,
            })
        return self.script.data_reply


class Downstream(Controller):
    """Downstream(port, tls=(cert, key) or None); .script to steer, .stop() at the end."""

    def __init__(self, port, tls=None):
        self.script = Script()
        self._tls = None
        if tls:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(*tls)
        super().__init__(_Handler(self.script), hostname="127.0.0.1", port=port,
                         server_hostname="mx.remote.test")

    def factory(self):
        return _Session(self.handler, hostname="mx.remote.test", tls_context=self._tls,
                        enable_SMTPUTF8=True)

    def wait_messages(self, n=1, timeout=15.0):
        end = time.time() + timeout
        while time.time() < end:
            with self.script.lock:
                if len(self.script.messages) >= n:
                    return list(self.script.messages)
            time.sleep(0.05)
        raise AssertionError(f"downstream got {len(self.script.messages)} messages, wanted {n}")


# ---- helpers shared by the outbound tests

def submit(inst, rcpts, msg, mail_params="", rcpt_params=None):
    with inst.connect("submission") as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        assert c.auth_plain(ALICE, password(ALICE)).startswith("235")
        assert c.mail_from(ALICE, mail_params) == "250 2.1.0 Sender OK"
        for r in rcpts:
            line = f"RCPT TO:<{r}>" + ((" " + rcpt_params[r]) if rcpt_params and r in rcpt_params else "")
            assert c.cmd(line) == "250 2.1.5 Recipient OK", r
        reply = c.data(msg)
        assert reply.startswith("250 2.0.0 Ok: queued as"), reply
        return reply.split()[-1]


def wait_log(inst, text, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        if text in inst.log(tail=2000):
            return
        time.sleep(0.1)
    raise AssertionError(f"log never said {text!r}:\n{inst.log(tail=40)}")


def reports(inst, addr):
    """The notifications (multipart/report) in addr's Maildir, parsed."""
    out = []
    for m in inst.messages(addr):
        msg = email.message_from_bytes(m.data, policy=email.policy.compat32)
        if msg.get_content_type() == "multipart/report":
            out.append(msg)
    return out


def wait_reports(inst, addr, n=1):
    inst.wait_messages(addr, count=n)
    r = reports(inst, addr)
    assert len(r) >= n, [m.data[:300] for m in inst.messages(addr)]
    return r


