"""A private Postfix on 127.0.0.1 for integration tests, configured with README's master.cf recipe.

Adapted from the shared start/stop recipes: config in DIR/etc, queue in DIR/spool, log in
DIR/postfix.log; no chroot, TLS, DNS or local delivery. The master.cf services are README's block
itself (read from README.md), with ports swapped for free ones and chroot off; Postfix's own
services are appended. Postfix's master must start as root: the fixture skips otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
POSTFIX = "/usr/sbin/postfix"

# Postfix's internal services, as in the shared recipe (chroot off: the queue is under a temp dir).
SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# A teacher's mail client authenticates with SASL over TLS on 587; the test client cannot, so the
# submission service trusts loopback instead (later -o options override earlier ones).
SUBMISSION_IN_TESTS = ("  -o smtpd_tls_security_level=none", "  -o smtpd_sasl_auth_enable=no",
                       "  -o smtpd_client_restrictions=permit_mynetworks,reject",
                       "  -o smtpd_relay_restrictions=permit_mynetworks,reject")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def skip_reason() -> str | None:
    """Why the Postfix tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private Postfix needs root (its master process must start as root)"
    if not os.access(POSTFIX, os.X_OK) or not shutil.which("postqueue", path="/usr/sbin:/usr/bin"):
        return "postfix is not installed (apt-get install postfix)"
    return None


def readme_master_cf() -> str:
    """README's master.cf block: the fenced block whose first line is `# /etc/postfix/master.cf`."""
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M):
        if block.startswith("# /etc/postfix/master.cf\n"):
            return str(block)
    raise AssertionError("README.md has no ``` block starting with '# /etc/postfix/master.cf'")


def adapt_master_cf(block: str, *, outside: int, submission: int, reinject: int, filter_port: int) -> str:
    """README's services on free loopback ports: smtp (25) → outside, submission (587) → submission."""
    services: list[list[str]] = []
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            services[-1].append(line.replace("[127.0.0.1]:2525", f"[127.0.0.1]:{filter_port}"))
        else:
            services.append([line])
    renamed = {"smtp": f"127.0.0.1:{outside}", "submission": f"127.0.0.1:{submission}",
               "127.0.0.1:10026": f"127.0.0.1:{reinject}"}
    out: list[str] = []
    for service in services:
        fields = service[0].split()
        name = fields[0]
        fields[0] = renamed.get(name, name)
        fields[4] = "n"
        out.append("  ".join(fields))
        out.extend(service[1:])
        if name == "submission":
            out.extend(SUBMISSION_IN_TESTS)
    return "\n".join(out) + "\n" + SERVICES


@dataclass
class Postfix:
    """One private Postfix instance: README's master.cf, the school's domain to one sink, the rest to another."""

    directory: Path
    school_domain: str
    school_sink: int
    outside_sink: int
    filter_port: int

    def __post_init__(self) -> None:
        self.outside, self.submission, self.reinject = free_port(), free_port(), free_port()
        self.etc = self.directory / "etc"
        self.log = self.directory / "postfix.log"

    def main_cf(self) -> str:
        d = self.directory
        return f"""\
compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = data
maillog_file = {self.log}
maillog_file_prefixes = {d}
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-test-{self.outside}
myhostname = mx.{self.school_domain}
mydomain = {self.school_domain}
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
# The school's domain goes to its mailbox server; everything else to the outside world.
relay_domains = {self.school_domain}
transport_maps = inline:{{{self.school_domain}=relay:[127.0.0.1]:{self.school_sink}}}
relayhost = [127.0.0.1]:{self.outside_sink}
biff = no
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 30s
smtp_tls_security_level = none
smtpd_tls_security_level = none
"""

    def start(self, wait_s: float = 20.0) -> None:
        (self.directory / "spool" / "data").mkdir(parents=True, exist_ok=True)
        self.etc.mkdir(parents=True, exist_ok=True)
        # data_directory is relative to the queue: user postfix never walks pytest's 0700 temp root.
        shutil.chown(self.directory / "spool" / "data", user="postfix")
        self.log.touch()
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(adapt_master_cf(
            readme_master_cf(), outside=self.outside, submission=self.submission, reinject=self.reinject,
            filter_port=self.filter_port))
        for command in ("check", "start"):
            done = subprocess.run([POSTFIX, "-c", str(self.etc), command], capture_output=True, text=True,
                                  timeout=60, stdin=subprocess.DEVNULL)
            assert done.returncode == 0, f"postfix {command}: {done.stderr.strip()[-500:]}"
        deadline = time.monotonic() + wait_s
        for port in (self.outside, self.submission, self.reinject):
            while not _greets(port):
                assert time.monotonic() < deadline, f"postfix did not answer on {port}: {self.log_tail()}"
                time.sleep(0.1)

    def stop(self) -> None:
        pid_file = self.directory / "spool" / "pid" / "master.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        # The master SIGTERMs its own process group (every daemon of this instance) and exits.
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.etc), "-f"], check=True, capture_output=True, timeout=30)

    def queue_listing(self) -> str:
        done = subprocess.run(["postqueue", "-c", str(self.etc), "-p"], capture_output=True, text=True, timeout=30)
        return done.stdout + done.stderr

    def queue_empty(self) -> bool:
        return "Mail queue is empty" in self.queue_listing()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            ok = s.recv(512).startswith(b"220")
            s.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """A master re-parented to PID 1 may linger as a zombie: read its state, not just its existence."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def postfix_skip() -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
