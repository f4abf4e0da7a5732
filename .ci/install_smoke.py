"""CI: parentgate installed as a user would, outside the editable development venv. Standard library only; root.

1. The wheel: built with `pip wheel --no-deps`, installed (not editable) into a fresh venv of Debian's
   Python; `parentgate --version`; `check-config` of a copy of config.example.toml; a daemon on a free
   port takes one message over SMTP, which is delivered or held; SIGTERM; exit 0.
2. README's install steps, run line by line from README.md itself. What needs systemd as PID 1 is
   done by hand from the installed unit file: StateDirectory= is created as systemd would, and the
   unit's ExecStartPre= and ExecStart= run under `runuser -u <User=>` with the unit's environment
   ($STATE_DIRECTORY, $NOTIFY_SOCKET, $WATCHDOG_USEC). The daemon must say READY=1 and WATCHDOG=1,
   listen, take a message, and stop cleanly on SIGTERM. It runs under strace, so that the unit's
   SystemCallFilter= and MemoryDenyWriteExecute= are checked against what the daemon really does.

Idempotent (an existing parentgate user, venv or config is fine); every process it starts is gone when
it ends. Exit 0 when everything held, 1 otherwise.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
RECIPIENT = "j.smith@oakfield-primary.sch.example"
STEP_TIMEOUT = 600


def say(text: str) -> None:
    print(f"install-smoke: {text}", flush=True)


def fail(text: str) -> None:
    raise SystemExit(f"install-smoke: FAILED: {text}")


def run(cmd: list[str] | str, *, ok: tuple[int, ...] = (0,), **kwargs: object) -> subprocess.CompletedProcess[str]:
    shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
    say(f"$ {shown}")
    r = subprocess.run(cmd, text=True, capture_output=True, timeout=STEP_TIMEOUT, **kwargs)  # type: ignore[call-overload]
    if r.returncode not in ok:
        fail(f"{shown} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    fail(f"timed out after {seconds:.0f} s waiting for {what}")


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def with_port(config: Path, port: int) -> None:
    """The administrator's edit: the listener on a free port (the example's 2525 may be taken here)."""
    text = config.read_text()
    edited = re.sub(r'(?m)^listen = "127\.0\.0\.1:\d+"$', f'listen = "127.0.0.1:{port}"', text, count=1)
    if edited == text:
        fail(f"{config}: no [smtp] listen line to set the port on")
    config.write_text(edited)


def send_one(port: int, marker: str) -> None:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "parent@example.com", RECIPIENT, "Parents' evening"
    m["Message-ID"] = f"<{marker}@example.com>"
    m.set_content(f"Could we meet on Thursday after school? {marker}\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("parent@example.com", [RECIPIENT], m.as_bytes())


def delivered_or_held(maildir_root: Path, marker: str, held: Callable[[], str]) -> Callable[[], bool]:
    def check() -> bool:
        new = maildir_root / RECIPIENT / "new"
        if new.is_dir() and any(marker.encode() in p.read_bytes() for p in new.iterdir()):
            return True
        return RECIPIENT in held()
    return check


def stop(proc: subprocess.Popen[bytes], pid: int | None = None) -> int:
    """SIGTERM to the daemon alone (systemd's KillMode=mixed), then its exit code; nothing of it is left.

    The daemon's pid comes from its READY=1; without it, the whole process group started here is
    sent SIGTERM (runuser and strace do not pass a signal on to the daemon).
    """
    try:
        if pid:
            os.kill(pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        code = None
    # Whatever is left of the group (judge processes, a daemon that did not stop) is killed.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if code is None:
        proc.wait(10)
        fail("the daemon did not stop within 60 s of SIGTERM")
    return code


class NotifyListener:
    """What systemd does with NOTIFY_SOCKET: a datagram socket (abstract, `@…`) that sees each sender's pid."""

    def __init__(self) -> None:
        self.name = f"@parentgate-ci-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, str]] = []

    def poll(self) -> None:
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (socket.timeout, BlockingIOError):
                return
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            for line in data.decode("utf-8", "replace").split("\n"):
                self.messages.append((pid, line))

    def seen(self, line: str) -> int | None:
        """The pid that sent `line` (or a line starting with it), once it has arrived."""
        self.poll()
        return next((pid for pid, got in self.messages if got == line or got.startswith(line)), None)

    def close(self) -> None:
        self.sock.close()


def part_wheel(work: Path) -> None:
    say("--- 1. the built wheel in a fresh venv (not editable)")
    venv, dist = work / "venv", work / "dist"
    run([PYTHON, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)])
    [wheel] = dist.glob("parentgate-*.whl")
    run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)])
    pg = str(venv / "bin" / "parentgate")
    where = run([str(venv / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"], cwd=work).stdout
    if not where.startswith(str(venv)):
        fail(f"gateway imported from {where.strip()}, not from the fresh venv")
    version = run([pg, "--version"]).stdout.strip()
    if not re.fullmatch(r"parentgate \d+\.\d+.*", version):
        fail(f"--version printed {version!r}")
    etc = work / "etc"
    etc.mkdir()
    config = etc / "config.toml"
    shutil.copy(ROOT / "config.example.toml", config)
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "NOTIFY_SOCKET", "PYTHONPATH")}
    run([pg, "--config", str(config), "check-config"], env=env, cwd=work)

    port = free_port()
    with_port(config, port)
    log = work / "wheel-daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([pg, "--config", str(config), "run"], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=work, start_new_session=True)
    try:
        wait_for(lambda: accepts(port) or proc.poll() is not None, 90, "the daemon to listen")
        if proc.poll() is not None:
            fail(f"the daemon exited {proc.returncode}: {log.read_text()[-2000:]}")
        marker = f"wheel-{uuid.uuid4().hex[:8]}"
        send_one(port, marker)
        held = lambda: subprocess.run([pg, "--config", str(config), "held"], capture_output=True, text=True,
                                      env=env, timeout=60).stdout
        wait_for(delivered_or_held(etc / "var" / "mail", marker, held), 60, "the message to be delivered or held")
        say("the message was delivered or held")
    finally:
        code = stop(proc) if proc.poll() is None else proc.returncode
    if code != 0:
        fail(f"the daemon exited {code} on SIGTERM: {log.read_text()[-2000:]}")
    say("wheel install: --version, check-config, smoke delivery and clean stop all passed")


def install_steps(readme: Path) -> list[str]:
    """The command lines of the fenced block after README's `install-steps` marker."""
    text = readme.read_text()
    match = re.search(r"<!-- install-steps[^>]*-->\s*```sh\n(.*?)```", text, re.S)
    if not match:
        fail("README.md has no install-steps block")
    return [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.startswith("#")]


def unit_settings(path: Path) -> dict[str, list[str]]:
    """[Service] settings of a unit file, each key with its values in order (systemd.syntax(7), no continuations)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(ms|s|min|m)?", value)
    if not match:
        fail(f"cannot read the time span {value!r}")
    n, unit = int(match.group(1)), match.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "min": 60, "m": 60}[unit]


def syscall_groups() -> dict[str, set[str]]:
    """systemd's syscall groups (`systemd-analyze syscall-filter`), nested groups left as names."""
    out = run(["systemd-analyze", "syscall-filter"]).stdout
    groups: dict[str, set[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), set())
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.add(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, set[str]]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found |= expand(sorted(groups.get(name, set())), groups) if name.startswith("@") else {name}
    return found


def allowed_syscalls(settings: dict[str, list[str]]) -> set[str]:
    """The unit's SystemCallFilter= lines: an allow list, then `~` lines taking groups away."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in settings.get("SystemCallFilter", []):
        if value.startswith("~"):
            allowed -= expand(value[1:].split(), groups)
        else:
            allowed |= expand(value.split(), groups)
    return allowed


_SYSCALL = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]")


def hardening_problems(strace_log: Path, settings: dict[str, list[str]]) -> list[str]:
    """System calls outside the unit's filter, and memory made writable and executable (MemoryDenyWriteExecute=)."""
    allowed = allowed_syscalls(settings)
    used: set[str] = set()
    wx: list[str] = []
    for line in strace_log.read_text(errors="replace").splitlines():
        match = _SYSCALL.match(line)
        if not match or "resumed>" in line:
            continue
        name = match.group(1)
        used.add(name)
        # systemd refuses mmap with PROT_WRITE|PROT_EXEC and mprotect/pkey_mprotect adding PROT_EXEC.
        if (name == "mmap" and "PROT_WRITE" in line and "PROT_EXEC" in line) or \
                (name in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in line):
            wx.append(line[:200])
    problems = [f"system call outside SystemCallFilter=: {name}" for name in sorted(used - allowed)]
    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        problems += [f"writable and executable memory (MemoryDenyWriteExecute=yes): {line}" for line in wx[:5]]
    return problems


def part_readme(work: Path) -> None:
    say("--- 2. README's install steps, then the unit's commands as its user")
    unit: Path | None = None
    for line in install_steps(ROOT / "README.md"):
        words = shlex.split(line)
        if words[0] == "apt-get":
            if run(["dpkg-query", "-W", "-f=${Status}", *words[3:]], ok=(0, 1)).stdout.count("install ok installed") \
                    == len(words[3:]):
                say(f"(already installed) {line}")
                continue
            run(["apt-get", "update", "-qq"])
            run(line, shell=True, cwd=ROOT)
        elif words[0] == "useradd":
            if subprocess.run(["id", "-u", words[-1]], capture_output=True).returncode == 0:
                say(f"(user exists) {line}")
                continue
            run(line, shell=True, cwd=ROOT)
        elif words[0] == "editor":
            # The administrator's edit: here only the listener's port, which must be free on this machine.
            port = free_port()
            with_port(Path(words[1]), port)
            say(f"(edited) {words[1]}: listen = 127.0.0.1:{port}")
        elif words[0] == "systemctl" and words[1] == "daemon-reload":
            if shutil.which("systemd-analyze") and unit is not None:
                # Unit syntax, and that every command it names exists (no systemd as PID 1 needed).
                run(["systemd-analyze", "verify", str(unit)])
        elif words[0] == "systemctl" and words[1] == "enable":
            if unit is None:
                fail("README enables the unit before installing it")
            start_unit(unit, work)
        elif words[0] in ("systemctl", "journalctl"):
            say(f"(needs systemd as PID 1; skipped) {line}")
        else:
            r = run(line, shell=True, cwd=ROOT)
            if words[0] == "install" and words[-1].endswith(".service"):
                unit = Path(words[-1])


def start_unit(unit: Path, work: Path) -> None:
    """`systemctl enable --now` by hand: StateDirectory=, then ExecStartPre= and ExecStart= as User=."""
    s = unit_settings(unit)
    user, group = s["User"][-1], s.get("Group", s["User"])[-1]
    if s.get("Type", ["simple"])[-1] != "notify":
        fail(f"{unit}: Type= is not notify")
    state = Path("/var/lib") / s["StateDirectory"][-1]
    state.mkdir(parents=True, exist_ok=True)
    shutil.chown(state, user, group)
    state.chmod(int(s.get("StateDirectoryMode", ["0755"])[-1], 8))
    config = Path(shlex.split(s["ExecStart"][-1])[shlex.split(s["ExecStart"][-1]).index("--config") + 1])
    port = int(re.search(r'(?m)^listen = "127\.0\.0\.1:(\d+)"$', config.read_text()).group(1))  # type: ignore[union-attr]
    notify = NotifyListener()
    watchdog = seconds(s["WatchdogSec"][-1])
    # What systemd puts in the service's environment (systemd.exec(5)); the unit sets nothing else.
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                   "USER": user, "LOGNAME": user, "HOME": str(state), "SHELL": "/usr/sbin/nologin",
                   "STATE_DIRECTORY": str(state), "NOTIFY_SOCKET": notify.name,
                   # A shorter watchdog than the unit's, so that a ping is seen within this run.
                   "WATCHDOG_USEC": str(int(min(watchdog, 4.0) * 1_000_000))}
    for extra in s.get("Environment", []):
        for assignment in shlex.split(extra):
            key, value = assignment.split("=", 1)
            environment[key] = value
    env_words = ["env", "-i", *[f"{k}={v}" for k, v in environment.items()]]
    cwd = s.get("WorkingDirectory", [str(state)])[-1]
    umask = int(s.get("UMask", ["0022"])[-1], 8)
    as_user = ["runuser", "-u", user, "--"]
    try:
        for pre in s.get("ExecStartPre", []):
            r = run([*as_user, *env_words, *shlex.split(pre)], cwd=cwd, umask=umask)
            say(r.stdout.strip().replace("\n", " | "))

        strace_dir = work / "strace"
        strace_dir.mkdir()
        shutil.chown(strace_dir, user, group)
        strace_log = strace_dir / "daemon.strace"
        strace = ["strace", "-f", "-qq", "-o", str(strace_log)] if shutil.which("strace") else []
        if not strace:
            fail("strace is missing: the unit's SystemCallFilter= and MemoryDenyWriteExecute= cannot be checked")
        log = work / "unit-daemon.log"
        say(f"$ {shlex.join([*as_user, *strace, *env_words[:2], '…', *shlex.split(s['ExecStart'][-1])])}")
        with open(log, "wb") as out:
            proc = subprocess.Popen([*as_user, *strace, *env_words, *shlex.split(s["ExecStart"][-1])], cwd=cwd,
                                    umask=umask, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        main_pid: int | None = None
        try:
            wait_for(lambda: notify.seen("READY=1") is not None or proc.poll() is not None, 120, "READY=1")
            if proc.poll() is not None:
                fail(f"the daemon exited {proc.returncode} before READY=1: {log.read_text()[-2000:]}")
            main_pid = notify.seen("READY=1")
            if not accepts(port):
                fail("READY=1 arrived before the listener accepted connections")
            say(f"READY=1 from pid {main_pid}; listening on 127.0.0.1:{port}")
            wait_for(lambda: notify.seen("WATCHDOG=1") is not None, 30, "WATCHDOG=1")
            wait_for(lambda: notify.seen("STATUS=queue: ") is not None, 30, "STATUS=queue: …")
            if {pid for pid, _ in notify.messages} != {main_pid}:
                fail(f"notifications came from several processes {sorted({p for p, _ in notify.messages})} "
                     f"(NotifyAccess=main would drop all but the main one's)")
            owner = subprocess.run(["ps", "-o", "user=", "-p", str(main_pid)], capture_output=True,
                                   text=True).stdout.strip()
            if owner != user:
                fail(f"the daemon runs as {owner!r}, not {user!r}")
            marker = f"unit-{uuid.uuid4().hex[:8]}"
            send_one(port, marker)
            pg = shlex.split(s["ExecStart"][-1])[:3]
            held = lambda: subprocess.run([*as_user, *env_words, *pg, "held"], capture_output=True, text=True,
                                          cwd=cwd, timeout=60).stdout
            wait_for(delivered_or_held(state / "mail", marker, held), 60, "the message to be delivered or held")
            say(f"the message was delivered or held, in {state}")
        finally:
            code = stop(proc, main_pid) if proc.poll() is None else proc.returncode
        if code != 0:
            fail(f"the daemon exited {code} on SIGTERM: {log.read_text()[-2000:]}")
        if notify.seen("STOPPING=1") is None:
            fail("no STOPPING=1 on SIGTERM")
        say("SIGTERM: STOPPING=1 and exit 0")
        problems = hardening_problems(strace_log, s)
        if problems:
            fail("the unit's hardening would break the daemon:\n  " + "\n  ".join(problems))
        say("no system call outside SystemCallFilter= and no writable+executable memory")
    finally:
        notify.close()


def main() -> int:
    if os.geteuid() != 0:
        fail("run as root (it installs into /opt, /etc and creates a user, as README says)")
    work = Path(tempfile.mkdtemp(prefix="pg-install-smoke-"))
    work.chmod(0o755)
    try:
        part_wheel(work)
        part_readme(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
