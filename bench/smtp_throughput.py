"""SMTP relay throughput, side by side in one run.

Sends N messages (default 2,000 of 2 KB over 10 parallel sessions, a new connection per message) to
  (a) a bare aiosmtpd sink (the Python SMTP ceiling),
  (b) parentgate relaying into such a sink,
  (c) a private Postfix relaying into such a sink (when Postfix is installed and we are root),
and prints messages/s for each and the ratios b/a (target >= 0.5) and b/c.

End-to-end rate = messages that reached the sink for the recipient / time from the first connection
until the sink accepted the last of them. The load generator is Postfix's smtp-source when present,
else a thread pool of smtplib clients. Every process listens on 127.0.0.1 on free ports; the sink
(bench/sink.py) runs in its own process so it never shares a GIL with this one.

    .venv/bin/python bench/smtp_throughput.py [--n 2000] [--sessions 10] [--size 2048]
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import descendants_cpu, describe, interrupted, process_cpu  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX = "/usr/sbin/postfix"
SCHOOL_ID = "oakfield"
DOMAIN = "oakfield-primary.sch.example"
SENDER = "a@x.test"
RCPT = f"b@{DOMAIN}"
TARGET_RATIO = 0.5


# --------------------------------------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen, *, group: bool, timeout: float = 15.0) -> None:
    """SIGTERM (the process group when it has its own session), then SIGKILL after `timeout`."""

    def send(sig: int) -> bool:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
            return True
        except ProcessLookupError:
            return False

    if proc.poll() is not None or not send(signal.SIGTERM):
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()


def machine() -> dict[str, str]:
    info = describe("aiosmtpd")
    if Path("/usr/sbin/postconf").exists():
        r = subprocess.run(["/usr/sbin/postconf", "-d", "-h", "mail_version"], capture_output=True, text=True)
        if r.returncode == 0:
            info["postfix"] = r.stdout.strip()
    return info


# ------------------------------------------------------------------------------------------- the sink

class Sink:
    """bench/sink.py in its own process; counts per recipient, queried over its control port."""

    def __init__(self, work: Path, name: str) -> None:
        self.log = work / f"sink-{name}.log"
        self._err = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "sink.py"), "--host", "127.0.0.1", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self._err, start_new_session=True)
        line = self._first_line(15.0)
        m = re.match(r"listening 127\.0\.0\.1:(\d+) control (\d+)", line)
        if not m:
            stop_process(self.proc, group=True)
            raise RuntimeError(f"sink did not start: {line!r} {tail(self.log)}")
        self.port, self.control = int(m.group(1)), int(m.group(2))

    def _first_line(self, timeout: float) -> str:
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline().decode()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(timeout)
        return box[0].strip() if box else ""

    def stats(self) -> dict:
        with socket.create_connection(("127.0.0.1", self.control), timeout=5) as s:
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def reached(self, rcpt: str) -> tuple[int, float]:
        """(messages accepted for rcpt, time.monotonic() of the latest)."""
        count, last = self.stats()["rcpt"].get(rcpt.lower(), [0, 0.0])
        return int(count), float(last)

    def stop(self) -> None:
        stop_process(self.proc, group=True, timeout=5)
        self._err.close()


# ------------------------------------------------------------------------------------- load generators

@dataclass
class Load:
    n: int
    sessions: int
    size: int

    @property
    def generator(self) -> str:
        return "smtp-source" if os.access(SMTP_SOURCE, os.X_OK) else "python smtplib thread pool"

    def send(self, port: int, timeout: float) -> tuple[int, str]:
        """Blast N messages at 127.0.0.1:port; returns (failures known to the client, diagnostics)."""
        if os.access(SMTP_SOURCE, os.X_OK):
            try:
                r = subprocess.run([SMTP_SOURCE, "-m", str(self.n), "-s", str(self.sessions), "-l", str(self.size),
                                    "-f", SENDER, "-t", RCPT, f"127.0.0.1:{port}"],
                                   capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return -1, f"smtp-source did not finish within {timeout:.0f}s"
            out = (r.stdout + r.stderr).strip()
            return (0 if r.returncode == 0 else -1), out[-2000:]
        return self._python(port, timeout)

    def _message(self) -> tuple[bytes, bytes]:
        head = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: bench\r\n"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n").encode()
        body, line = b"", b"X" * 78 + b"\r\n"
        while len(head) + len(body) < self.size:
            body += line
        return head, body[: max(0, self.size - len(head))]

    def _python(self, port: int, timeout: float) -> tuple[int, str]:
        head, body = self._message()
        failures: list[str] = []

        def one(i: int) -> None:
            data = head + f"Message-ID: <{uuid.uuid4().hex}.{i}@x.test>\r\n\r\n".encode() + body
            try:
                with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60) as s:
                    s.sendmail(SENDER, [RCPT], data)
            except (OSError, smtplib.SMTPException) as exc:
                failures.append(f"{exc.__class__.__name__}: {exc}"[:200])

        with ThreadPoolExecutor(max_workers=self.sessions) as pool:
            list(pool.map(one, range(self.n), timeout=timeout))
        return len(failures), "\n".join(failures[:5])


# ------------------------------------------------------------------------------------ CPU accounting

def generator_cpu() -> float:
    """CPU seconds of this script's finished children: the load generator, once it has exited."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------------------- one path

@dataclass
class Result:
    path: str
    delivered: int = 0
    n: int = 0
    accept_s: float = 0.0  # until the load generator finished (every 250 received)
    total_s: float = 0.0  # until the sink held the last message for the recipient
    note: str = ""
    ran: bool = False
    # CPU seconds spent during the measurement, by part: see `measure`.
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.delivered / self.total_s if self.total_s > 0 else 0.0

    @property
    def accept_rate(self) -> float:
        return self.n / self.accept_s if self.accept_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.ran and self.delivered >= self.n


def measure(result: Result, load: Load, sink: Sink, port: int, timeout: float, server: int | None = None) -> Result:
    """Send, then wait for the sink. CPU is counted from the first connection until the sink held the
    last message (or the wait ended): the sink's, the server's (`server`: parentgate's daemon, and
    apart from it its triage workers) and the load generator's."""
    result.n = load.n
    before_sink, before_gen = process_cpu(sink.proc.pid), generator_cpu()
    before_server = (process_cpu(server), descendants_cpu(server)) if server else None
    t0 = time.monotonic()
    failures, diag = load.send(port, timeout)
    t_accept = time.monotonic()
    result.cpu["load generator"] = generator_cpu() - before_gen
    result.accept_s = t_accept - t0
    if failures:
        result.note = f"load generator reported failures: {diag.splitlines()[-1] if diag else failures}"
    deadline = t_accept + timeout
    count, last = sink.reached(RCPT)
    while count < load.n and time.monotonic() < deadline:
        time.sleep(0.02)
        count, last = sink.reached(RCPT)
    result.ran = True
    result.delivered = count
    result.cpu["sink"] = process_cpu(sink.proc.pid) - before_sink
    if server and before_server:
        result.cpu["parentgate daemon"] = process_cpu(server) - before_server[0]
        result.cpu["parentgate triage workers"] = descendants_cpu(server) - before_server[1]
    if count >= load.n:
        result.total_s = last - t0
    else:
        result.total_s = time.monotonic() - t0
        result.note = (result.note + "; " if result.note else "") + f"only {count}/{load.n} reached the sink in time"
    return result


# ------------------------------------------------------------------------------------ the three paths

def run_bare(work: Path, load: Load, timeout: float) -> Result:
    sink = Sink(work, "a")
    try:
        return measure(Result("(a) aiosmtpd sink (bare)"), load, sink, sink.port, timeout)
    finally:
        sink.stop()


def gateway_config(directory: Path, *, smtp_port: int, sink_port: int, database: str | None,
                   rules_dir: str | None = None, max_message_size: int = 1048576, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    db = f'database = "{database}"\n' if database else ""
    db += f'rules_dir = "{Path(rules_dir).resolve()}"\n' if rules_dir else ""
    text = (f'[gateway]\nstate_dir = "var"\n{db}timezone = "Europe/London"\n'
            f'postmaster = "postmaster@example.invalid"\n\n'
            f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\nhostname = "gateway.test"\nmax_message_size = {max_message_size}\n\n'
            f'[delivery]\nmode = "smtp"\nsmarthost = "127.0.0.1:{sink_port}"\n'
            f'retry_first_delay = "1s"\nretry_max_delay = "2s"\nlifetime = "1h"\n\n{extra}'
            f'[limits]\nfamily_messages_per_half_term = 1000000\nthread_messages = 1000000\n\n'
            f'[[schools]]\nid = "{SCHOOL_ID}"\nname = "Oakfield School"\ndomains = ["{DOMAIN}"]\n'
            f'head_of_school = "head@{DOMAIN}"\noffice = "office@{DOMAIN}"\n'
            f'office_phone = "0113 496 0000"\ndsl = "dsl@{DOMAIN}"\n\n'
            '[schools.hours]\nopen = "00:00"\nclose = "24:00"\n'
            'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n\n'
            '[[schools.half_terms]]\nname = "All year"\nstart = 2020-01-01\nend = 2035-12-31\n\n'
            '[schools.closures]\ninset_days = []\nbank_holidays = "none"\n')
    path = directory / "config.toml"
    path.write_text(text)
    return path


def parentgate_command() -> list[str]:
    script = Path(sys.executable).parent / "parentgate"
    if script.exists():
        return [str(script)]
    found = shutil.which("parentgate")
    return [found] if found else [sys.executable, "-m", "gateway"]


def run_parentgate(work: Path, load: Load, timeout: float, database: str | None,
                   rules_dir: str | None = None) -> Result:
    result = Result("(b) parentgate relay -> aiosmtpd sink")
    sink = Sink(work, "b")
    try:
        port = free_port()
        config = gateway_config(work / "gateway", smtp_port=port, sink_port=sink.port, database=database,
                                rules_dir=rules_dir)
        log = work / "gateway.log"
        with open(log, "ab") as logf:
            proc = subprocess.Popen([*parentgate_command(), "--config", str(config), "run"], cwd=work,
                                    stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if not wait_port(port, 60, alive=lambda: proc.poll() is None):
                result.note = f"parentgate did not start; log tail:\n{tail(log)}"
                return result
            measure(result, load, sink, port, timeout, server=proc.pid)
            return result
        finally:
            stop_process(proc, group=True)
    finally:
        sink.stop()


def run_postfix(work: Path, load: Load, timeout: float) -> Result:
    result = Result("(c) Postfix relay -> aiosmtpd sink")
    if not os.access(POSTFIX, os.X_OK):
        result.note = "skipped: Postfix is not installed"
        return result
    if os.geteuid() != 0:
        result.note = "skipped: a private Postfix master needs root"
        return result
    sink = Sink(work, "c")
    pdir = work / "postfix"
    try:
        port = free_port()
        # Postfix's master inherits its starter's stdout/stderr: a file, never a pipe we would wait on.
        with open(work / "postfix-start.log", "wb") as log:
            r = subprocess.run([str(SCRIPTS / "start-postfix-relay.sh"), str(pdir), str(port), str(sink.port)],
                               stdout=log, stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            result.note = f"Postfix did not start; log tail:\n{tail(work / 'postfix-start.log')}"
            return result
        measure(result, load, sink, port, timeout)
        return result
    finally:
        if (pdir / "spool" / "pid" / "master.pid").exists():
            subprocess.run([str(SCRIPTS / "stop-postfix-relay.sh"), str(pdir)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
        sink.stop()


# ---------------------------------------------------------------------------------------- PostgreSQL

def fresh_postgres(url: str, stack: ExitStack, keep: bool) -> tuple[str, str]:
    """Create a fresh database for `url` (its name, or parentgate_bench_<random> when it names none).
    Refuses an existing database rather than dropping someone's data. Dropped at exit unless --keep."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database or f"parentgate_bench_{uuid.uuid4().hex[:8]}"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise SystemExit(f"--database: use a plain database name (letters, digits, _), not {name!r}")
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            raise SystemExit(f"--database: database {name!r} already exists; name a fresh one "
                             "(or leave the name out: postgresql+psycopg://postgres@127.0.0.1:5432/)")
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.errors.SyntaxError:  # PostgreSQL < 13
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')

    if not keep:
        stack.callback(drop)
    return parsed.set(database=name).render_as_string(hide_password=False), name


# -------------------------------------------------------------------------------------------- report

def print_report(results: list[Result], load: Load, info: dict[str, str], database: str) -> None:
    print()
    print(f"SMTP relay throughput: {load.n} messages x {load.size} bytes, {load.sessions} parallel sessions, "
          f"a new connection per message; load generator: {load.generator}")
    print("  machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"  parentgate database: {database}")
    print()
    header = f"  {'path':<40} {'delivered':>11} {'accept s':>9} {'accept/s':>9} {'end-to-end s':>13} {'msg/s':>8}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    notes = []
    for r in results:
        if not r.ran:
            print(f"  {r.path:<40} {'-':>11} {'-':>9} {'-':>9} {'-':>13} {'-':>8}  (see note)")
        else:
            print(f"  {r.path:<40} {f'{r.delivered}/{r.n}':>11} {r.accept_s:>9.2f} {r.accept_rate:>9.0f} "
                  f"{r.total_s:>13.2f} {r.rate:>8.0f}" + ("" if r.complete else "  INCOMPLETE"))
        if r.note:
            notes.append(f"  note {r.path[:3]}: {r.note}")
    print()
    print("  accept = until the load generator had every reply; end-to-end = until the sink held all of them;")
    print("  msg/s = messages that reached the sink / end-to-end seconds.")
    print()
    parts = ["parentgate daemon", "parentgate triage workers", "sink", "load generator"]
    print("  CPU per message, ms (from the first connection until the sink held the last message):")
    print(f"  {'path':<40} " + " ".join(f"{p:>13}" for p in ["daemon", "triage wkrs", "sink", "load gen"])
          + f" {'total':>8} {'cores busy':>11}")
    for r in results:
        if not r.ran or not r.n or not r.cpu:
            continue
        cells = [f"{1000 * r.cpu[p] / r.n:>13.2f}" if p in r.cpu else f"{'-':>13}" for p in parts]
        total = sum(r.cpu.values())
        print(f"  {r.path:<40} " + " ".join(cells) + f" {1000 * total / r.n:>8.2f} {total / r.total_s:>11.2f}")
    print("  (Postfix's processes are not counted: its master runs detached.)")
    print()
    a, b, c = results
    if a.rate and b.rate:
        ratio = b.rate / a.rate
        verdict = "met" if ratio >= TARGET_RATIO and b.complete else "NOT met"
        print(f"  ratio b/a (parentgate / bare aiosmtpd) = {ratio:.2f}   (target >= {TARGET_RATIO}: {verdict})")
    else:
        print("  ratio b/a (parentgate / bare aiosmtpd) = n/a")
    if c.rate and b.rate:
        print(f"  ratio b/c (parentgate / Postfix relay) = {b.rate / c.rate:.2f}")
    else:
        print("  ratio b/c (parentgate / Postfix relay) = n/a")
    if notes:
        print()
        print("\n".join(notes))
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="SMTP relay throughput: bare aiosmtpd vs parentgate vs Postfix.")
    ap.add_argument("--n", type=int, default=2000, help="messages per path (default 2000)")
    ap.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions (default 10)")
    ap.add_argument("--size", type=int, default=2048, help="message size in bytes (default 2048)")
    ap.add_argument("--database", default=None,
                    help="parentgate's database: default SQLite in the temp dir; or "
                         "postgresql+psycopg://postgres@127.0.0.1:5432/[NAME] (a fresh database is created "
                         "and dropped; without NAME a random one)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds each path may take to send, and then to deliver (default 300)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database) and the PG database")
    ap.add_argument("--rules-dir", default=None,
                    help="parentgate's rules directory (default: the shipped rules/), e.g. a checkout of "
                         "the committed rules while they are being edited")
    ap.add_argument("--paths", default="abc",
                    help="which paths to run, e.g. 'b' while profiling parentgate alone (default abc)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.sessions < 1 or args.size < 200:
        ap.error("--n and --sessions must be >= 1, --size >= 200")

    # SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` stops the daemon, the sinks and Postfix.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    load = Load(args.n, args.sessions, args.size)
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="pg-bench-"))
    os.chmod(work, 0o755)  # the Postfix daemons run as user postfix
    code = 1
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        database, db_label = None, f"SQLite in {work / 'gateway' / 'var'}"
        if args.database and not args.database.startswith("sqlite"):
            if not args.database.startswith("postgresql"):
                ap.error("--database must be a sqlite:// or postgresql+psycopg:// URL")
            database, name = fresh_postgres(args.database, stack, args.keep)
            db_label = f"PostgreSQL, fresh database {name!r}" + (" (kept)" if args.keep else " (dropped at exit)")
        elif args.database:
            database, db_label = args.database, args.database
        print(f"work dir {work}; load generator {load.generator}", flush=True)
        results = []
        for label, fn in (("a", lambda: run_bare(work, load, args.timeout)),
                          ("b", lambda: run_parentgate(work, load, args.timeout, database, args.rules_dir)),
                          ("c", lambda: run_postfix(work, load, args.timeout))):
            if label not in args.paths:
                results.append(Result(f"({label})", note="skipped (--paths)"))
                continue
            print(f"running ({label}) ...", flush=True)
            r = fn()
            results.append(r)
            if r.ran:
                print(f"  ({label}) {r.delivered}/{r.n} delivered, {r.rate:.0f} msg/s end to end", flush=True)
            elif r.note:
                print(f"  ({label}) {r.note}", flush=True)
        print_report(results, load, info, db_label)
        if args.keep:
            print(f"kept {work} (gateway.log, gateway/config.toml, database, sink and Postfix logs)")
        code = 0 if all(r.complete for r in results[:2] if r.ran) else 1
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; processes stopped", file=sys.stderr)
        sys.exit(130)
