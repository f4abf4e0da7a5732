"""A private Dovecot IMAP server on 127.0.0.1 for integration tests, in the test's own temp dirs.

Adapted from the shared start/stop recipes: plain IMAP on a free loopback port,
passwd-file users, config and maildirs under the test's directory, sockets in a
short private /tmp directory (removed afterwards). As root, login runs as
`dovenull` and mail as `nobody`, chrooted into the mail directory, because
Dovecot refuses uid 0 and pytest's tmp dirs are 0700. Tests that use the
`dovecot` fixture are skipped when the binary is missing.
"""

from __future__ import annotations

import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

USERS = {"alice": "alicepass", "bob": "bobpass"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None)


@dataclass
class Dovecot:
    """One Dovecot instance; `start`, `stop` and `restart` (same port, same mail)."""

    directory: Path
    port: int
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))
    host: str = "127.0.0.1"
    # When set, XOAUTH2 is offered and tokens are checked by POSTing them here
    # (RFC 7662 introspection); passwords keep working for the other mechanisms.
    oauth2_introspection_url: str | None = None
    _pid: int | None = None
    _run: Path | None = None

    @property
    def run_dir(self) -> Path:
        """Sockets live in a short /tmp path: unix socket paths are limited to 107 bytes."""
        if self._run is None:
            self._run = Path(tempfile.mkdtemp(prefix="pg-dovecot-"))
            os.chmod(self._run, 0o755)
        return self._run

    def cleanup(self) -> None:
        self.stop()
        if self._run is not None:
            shutil.rmtree(self._run, ignore_errors=True)
            self._run = None

    def start(self, wait_s: float = 15.0) -> None:
        binary = dovecot_binary()
        assert binary is not None
        config = self._write_config()
        pid_file = self.run_dir / "master.pid"
        pid_file.unlink(missing_ok=True)
        # The daemonised master keeps inherited pipes open, so never capture its output.
        with open(self.directory / "start.log", "ab") as out:
            subprocess.run([binary, "-c", str(config)], check=True, stdin=subprocess.DEVNULL,
                           stdout=out, stderr=out)
        self._wait_for_greeting(wait_s)
        # The forked master writes its pid file a moment after the starter exits.
        deadline = time.monotonic() + wait_s
        while not pid_file.exists() or not pid_file.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot wrote no {pid_file}")
            time.sleep(0.02)
        self._pid = int(pid_file.read_text().strip())

    def stop(self) -> None:
        """SIGTERM the master and wait until it has really exited (not merely a zombie)."""
        if self._pid is None:
            return
        pid, self._pid = self._pid, None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        # Dovecot lets an imap process serve its client after the master has gone;
        # a real restart or failover drops the connection, so end them too.
        for child in self._instance_pids():
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _instance_pids(self) -> list[int]:
        prefix = f"dovecot-test-{self.port}/".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "cmdline").read_bytes().startswith(prefix) and _alive(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def restart(self) -> None:
        self.stop()
        self.start()

    def who(self) -> dict[str, int]:
        """Open IMAP connections per user, as the server counts them (`doveadm who`)."""
        result = subprocess.run(["doveadm", "-c", str(self.directory / "dovecot.conf"), "who"],
                                capture_output=True, text=True, timeout=30, check=True)
        counts = {}
        for line in result.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                counts[fields[0]] = int(fields[1])
        return counts

    def _wait_for_greeting(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as conn:
                    if conn.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                log = (self.directory / "dovecot.log")
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"dovecot did not answer on {self.host}:{self.port}:\n{tail}")
            time.sleep(0.05)

    def _write_config(self) -> Path:
        d = self.directory.resolve()
        for sub in ("state", "mail"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "mail", 0o755)
        me, my_group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        if os.getuid() == 0:
            login_user, mail = "dovenull", pwd.getpwnam("nobody")
            mail_uid, mail_gid = mail.pw_uid, mail.pw_gid
            home, chroot, login_chroot, anvil = f"{d}/mail/./%u", f"valid_chroot_dirs = {d}/mail", "", ""
        else:
            login_user, mail_uid, mail_gid = me, os.getuid(), os.getgid()
            home, chroot, login_chroot = f"{d}/mail/%u", "", "chroot ="
            anvil = "service anvil {\n  chroot =\n}"
        lines = []
        for user, password in self.users.items():
            lines.append(f"{user}:{{PLAIN}}{password}::::::")
            maildir = d / "mail" / user
            maildir.mkdir(exist_ok=True)
            os.chown(maildir, mail_uid, mail_gid)
            os.chmod(maildir, 0o700)
        (d / "passwd").write_text("\n".join(lines) + "\n")
        os.chmod(d / "passwd", 0o600)
        mechanisms, oauth2_passdb, password_filter = "plain login", "", ""
        if self.oauth2_introspection_url:
            (d / "oauth2.conf.ext").write_text(
                f"introspection_mode = post\nintrospection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = username\n")
            mechanisms += " xoauth2 oauthbearer"
            password_filter = "mechanisms = plain login"
            oauth2_passdb = (f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                             f"  args = {d}/oauth2.conf.ext\n}}")
        config = d / "dovecot.conf"
        config.write_text(f"""\
instance_name = dovecot-test-{self.port}
base_dir = {self.run_dir}
state_dir = {d}/state
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
log_path = {d}/dovecot.log
default_internal_user = {me}
default_internal_group = {my_group}
default_login_user = {login_user}
first_valid_uid = {mail_uid}
last_valid_uid = {mail_uid}
{chroot}
passdb {{
  driver = passwd-file
  {password_filter}
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
{oauth2_passdb}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={home}
}}
mail_location = maildir:~/Maildir
service imap-login {{
  {login_chroot}
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
{anvil}
protocol imap {{
  mail_max_userip_connections = 100
}}
""")
        return config


def _alive(pid: int) -> bool:
    # A daemonised master is reparented to PID 1; until reaped it lingers as a
    # zombie and kill(pid, 0) still succeeds, so read the process state instead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install -y dovecot-imapd)")
    server = Dovecot(tmp_path / "dovecot", free_port())
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
