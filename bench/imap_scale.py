"""IMAP mode at trust scale (issue #14): the daemon watching N mailboxes on one private Dovecot.

    .venv/bin/python bench/imap_scale.py N [--probes 20] [--burst 10] [--keep]

Starts a private Dovecot with N users (process and client limits raised for N connections, and
fs.inotify.max_user_instances raised for the run and put back after, else Dovecot falls back to 30 s
polling above 128 IDLE connections), then `parentgate run` as a child process with N IMAP mailboxes
(SQLite, the school closed: every new message is held and moved to the held folder). It prints:

  start-up        from the daemon's start until every mailbox reports it is watching (IDLE)
  connections     the server's count of open connections (`doveadm who`) idle, and after mail has moved
  threads, RSS    of the daemon (and RSS with its judge processes), idle CPU over 10 s
  latency         APPEND to moved-to-the-held-folder, p50/p95 over --probes probes in different mailboxes
  burst           --burst messages appended to every mailbox: time until all are moved
  reconnect       after a Dovecot restart: until every mailbox is connected again (the server counts N)
  lost/duplicated every appended message is in its held folder once, stored once, none left behind

Targets at N = 500 (the issue's): start-up <= 10 s, connections <= 1.1 N, p95 <= 3 s, burst <= 60 s,
reconnect <= 15 s, 0 lost, 0 duplicated. Run it alone (`flock /tmp/parentgate-heavy.lock`): figures
depend on what else the 2 cores are doing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imapclient import IMAPClient  # noqa: E402

from bench.imap_backlog import DOMAIN, HELD, free_port, make_messages, machine  # noqa: E402,I001
from bench.machine import descendants_cpu, interrupted, process_cpu  # noqa: E402
from bench.imap_backlog import Dovecot  # noqa: E402

INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")


class ScaleDovecot(Dovecot):
    """The test suite's private Dovecot with its process and client limits raised for N connections."""

    def _write_config(self) -> Path:
        path = super()._write_config()
        n = len(self.users)
        path.write_text(path.read_text() + f"""
default_process_limit = {n + 200}
default_client_limit = {4 * n + 1000}
service imap-login {{
  process_limit = {n + 200}
}}
service imap {{
  process_limit = {n + 200}
}}
""")
        return path

    def connections(self) -> int:
        return sum(self.who().values())


def user(i: int) -> str:
    return f"t{i:04d}"


def client(server: Dovecot, name: str) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=60)
    c.login(name, server.users[name])
    return c


def gateway_config(directory: Path, server: Dovecot, names: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    mailboxes = "".join(
        f'[[imap.mailboxes]]\nname = "{name}"\nschool = "oakfield"\nhost = "127.0.0.1"\nport = {server.port}\n'
        f'tls = "none"\nusername = "{name}"\npassword = "{server.users[name]}"\nheld_folder = "{HELD}"\n\n'
        for name in names)
    text = (f'[gateway]\nstate_dir = "var"\ntimezone = "Europe/London"\npostmaster = "postmaster@{DOMAIN}"\n\n'
            f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\nhostname = "gateway.test"\n\n'
            '[delivery]\nmode = "maildir"\nmaildir_root = "var/mail"\n\n'
            '[acknowledge]\nenabled = false\n\n'
            '[limits]\nfamily_messages_per_half_term = 1000000\nthread_messages = 1000000\n\n'
            f'[[schools]]\nid = "oakfield"\nname = "Oakfield Primary School"\ndomains = ["{DOMAIN}"]\n'
            f'head_of_school = "head@{DOMAIN}"\noffice = "office@{DOMAIN}"\n'
            f'office_phone = "0113 496 0000"\ndsl = "dsl@{DOMAIN}"\n\n'
            '[schools.hours]\nopen = "08:00"\nclose = "17:00"\ndays = ["mon", "tue", "wed", "thu", "fri"]\n\n'
            # Term starts years from now: the school is closed today, so all mail is held.
            '[[schools.half_terms]]\nname = "Far future"\nstart = 2031-01-06\nend = 2031-02-14\n\n'
            '[schools.closures]\ninset_days = []\nbank_holidays = "none"\n\n' + mailboxes)
    path = directory / "config.toml"
    path.write_text(text)
    return path


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "parentgate"), "--config", str(config), "run"],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.db = config.parent / "var" / "parentgate.db"

    def query(self, sql: str) -> list[tuple]:
        if not self.db.exists():
            return []
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
                return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []

    def watching(self, since: str = "") -> int:
        rows = self.query("SELECT count(*) FROM imap_checkpoints WHERE ok = 1 AND detail LIKE 'connected%'"
                          + (f" AND updated_at > '{since}'" if since else ""))
        return int(rows[0][0]) if rows else 0

    def held(self) -> int:
        rows = self.query(f"SELECT count(*) FROM messages WHERE state = 'held' AND folder = '{HELD}'")
        return int(rows[0][0]) if rows else 0

    def logged_at(self, text: str) -> float | None:
        """The wall-clock time of the daemon's first log line containing `text` (its stderr timestamps)."""
        from datetime import datetime
        self.log.flush()
        for line in Path(self.log.name).read_text(errors="replace").splitlines():
            if text in line:
                try:
                    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
                except ValueError:
                    return None
        return None

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def rss_with_children_kb(self) -> int:
        total = self.status("VmRSS")
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    if int(stat.rpartition(")")[2].split()[1]) == self.proc.pid:
                        total += int(next(line.split()[1] for line in (entry / "status").read_text().splitlines()
                                          if line.startswith("VmRSS:")))
                except (OSError, StopIteration, ValueError):
                    continue
        return total

    def cpu(self) -> float:
        return process_cpu(self.proc.pid) + descendants_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait(predicate, timeout: float, step: float = 0.1) -> float | None:  # noqa: ANN001
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            return None
        time.sleep(step)
    return time.monotonic() - start


def folder_counts(server: Dovecot, name: str) -> tuple[int, int]:
    with client(server, name) as c:
        inbox = c.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]
        held = c.folder_status(HELD, [b"MESSAGES"])[b"MESSAGES"] if c.folder_exists(HELD) else 0
        return int(inbox), int(held)


def probe(server: Dovecot, name: str, raw: bytes, timeout: float = 60.0) -> float | None:
    """APPEND one message and poll STATUS of the held folder until it is there: the seconds between."""
    with client(server, name) as c:
        before = int(c.folder_status(HELD, [b"MESSAGES"])[b"MESSAGES"])
        c.append("INBOX", raw)
        appended = time.monotonic()
        while time.monotonic() - appended < timeout:
            if int(c.folder_status(HELD, [b"MESSAGES"])[b"MESSAGES"]) > before:
                return time.monotonic() - appended
            time.sleep(0.02)
    return None


def _when(text: str):  # noqa: ANN202 - SQLite's text form of the UTC timestamps
    from datetime import datetime
    return datetime.fromisoformat(str(text))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(n: int, probes: int, burst: int, work: Path) -> int:
    names = [user(i) for i in range(n)]
    server = ScaleDovecot(work / "dovecot", free_port(), users={name: f"pw{name}" for name in names})
    daemon: Daemon | None = None
    figures: list[tuple[str, str, str]] = []
    expected = {name: 0 for name in names}
    try:
        server.start()
        config = gateway_config(work / "gateway", server, names)
        info = machine()
        print(f"N = {n}: Dovecot on 127.0.0.1:{server.port}; starting parentgate", flush=True)
        started = time.monotonic()
        dovecot_cpu0 = server.cpu()
        daemon = Daemon(config, work / "gateway.log")
        took = wait(lambda: daemon.watching() >= n, 300, 0.05)
        startup_cpu = (process_cpu(daemon.proc.pid), server.cpu() - dovecot_cpu0)
        all_idle = time.time()
        startup = took if took is not None else float("nan")
        # The daemon's own start (imports, database, judge processes loading the rules) comes before the
        # IMAP watchers start ("watching N IMAP mailbox(es)" in its log); both are shown.
        imap_start = daemon.logged_at(f"watching {n} IMAP mailbox(es)")
        imap_part = all_idle - imap_start if imap_start and took is not None else float("nan")
        figures.append(("start-up until every mailbox is idling: from the watchers' start "
                        "(from the process's start)", f"{imap_part:.1f} s ({startup:.1f} s)", "<= 10 s"))
        print(f"  start-up {imap_part:.1f}s from the watchers' start, {startup:.1f}s from the process's", flush=True)
        figures.append(("CPU during start-up: daemon (whole start) / Dovecot",
                        f"{startup_cpu[0]:.1f} s / {startup_cpu[1]:.1f} s", ""))
        time.sleep(2)
        idle_connections = server.connections()
        threads = daemon.status("Threads")
        rss, rss_all = daemon.status("VmRSS") / 1024, daemon.rss_with_children_kb() / 1024
        figures += [("server connections, idle", f"{idle_connections}", f"<= {int(1.1 * n)}"),
                    ("threads of the daemon", f"{threads}", ""),
                    ("RSS of the daemon (with its judge processes)", f"{rss:.0f} MB ({rss_all:.0f} MB)", "")]
        print(f"  idle: {idle_connections} connections, {threads} threads, RSS {rss:.0f} MB", flush=True)

        mail = iter(make_messages(probes + n * burst + 1, seed=n))
        latencies: list[float] = []
        missed = 0
        for i in range(probes):
            name = names[(i * max(1, n // probes)) % n]
            expected[name] += 1
            got = probe(server, name, next(mail))
            if got is None:
                missed += 1
            else:
                latencies.append(got)
        p50 = percentile(latencies, 0.5) if latencies else float("nan")
        p95 = percentile(latencies, 0.95) if latencies else float("nan")
        figures.append((f"APPEND-to-moved latency over {probes} probes, p50 / p95",
                        f"{p50:.2f} s / {p95:.2f} s" + (f" ({missed} never moved)" if missed else ""), "p95 <= 3 s"))
        print(f"  latency p50 {p50:.2f}s p95 {p95:.2f}s", flush=True)
        # Idle once the probes' mail is judged and moved (and the judge processes have warmed up).
        time.sleep(3)
        cpu0, t0 = daemon.cpu(), time.monotonic()
        time.sleep(10)
        idle_cpu = (daemon.cpu() - cpu0) / (time.monotonic() - t0) * 100
        figures.append(("idle CPU (daemon and judges, over 10 s)", f"{idle_cpu:.1f} % of one core", ""))
        print(f"  idle CPU {idle_cpu:.1f}%", flush=True)

        held_before = daemon.held()
        batches = [(name, [next(mail) for _ in range(burst)]) for name in names]

        def append(item: tuple[str, list[bytes]]) -> None:
            name, raws = item
            with client(server, name) as c:
                c.multiappend("INBOX", raws)

        burst_start = time.monotonic()
        cpu_burst = (process_cpu(daemon.proc.pid), descendants_cpu(daemon.proc.pid), server.cpu())
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(append, batches))
        appended = time.monotonic() - burst_start
        for name in names:
            expected[name] += burst
        took = wait(lambda: daemon.held() >= held_before + n * burst, 600, 0.2)
        burst_s = (time.monotonic() - burst_start) if took is not None else float("nan")
        figures.append((f"{burst} messages appended to every mailbox ({n * burst}): all moved",
                        f"{burst_s:.1f} s (appending took {appended:.1f} s)", "<= 60 s"))
        print(f"  burst of {n * burst}: all moved in {burst_s:.1f}s (appending {appended:.1f}s)", flush=True)
        main_cpu, judges_cpu, dovecot_cpu = (after - before for before, after in zip(cpu_burst, (
            process_cpu(daemon.proc.pid), descendants_cpu(daemon.proc.pid), server.cpu())))
        per = 1000 / (n * burst)
        figures.append(("CPU per burst message: daemon / judge processes / Dovecot",
                        f"{main_cpu * per:.1f} / {judges_cpu * per:.1f} / {dovecot_cpu * per:.1f} ms", ""))
        # Fresh mail first: from a message's judgement (its move written) until it was moved, during the burst.
        waits = []
        for created, finished in daemon.query("SELECT created_at, finished_at FROM outbox WHERE kind = 'imap_move' "
                                              "AND finished_at IS NOT NULL ORDER BY id"):
            waits.append((_when(finished) - _when(created)).total_seconds())
        waits = waits[-n * burst:]
        if waits:
            figures.append(("judged-to-moved during the burst, p50 / p95 / max",
                            f"{percentile(waits, 0.5):.2f} s / {percentile(waits, 0.95):.2f} s / {max(waits):.2f} s",
                            "a few seconds"))
        time.sleep(2)
        moved_connections = server.connections()
        figures.append(("server connections after mail has moved", f"{moved_connections}", f"<= {int(1.1 * n)}"))

        down = time.monotonic()
        since = daemon.query("SELECT max(updated_at) FROM imap_checkpoints")[0][0]
        server.restart()
        up = time.monotonic()
        took = wait(lambda: server.connections() >= n and daemon.watching(since) >= n, 300, 0.1)
        reconnect = (time.monotonic() - up) if took is not None else float("nan")
        figures.append(("reconnect after a server restart (from the server being up again)",
                        f"{reconnect:.1f} s (restart itself {up - down:.1f} s)", "<= 15 s"))
        print(f"  reconnect {reconnect:.1f}s after the restart ({up - down:.1f}s)", flush=True)
        # One more probe after the restart: the reconnected watchers still move mail.
        expected[names[0]] += 1
        after = probe(server, names[0], next(mail))
        figures.append(("a probe after the reconnect", f"{after:.2f} s" if after is not None else "NOT MOVED", ""))

        lost = duplicated = left = 0
        with ThreadPoolExecutor(8) as pool:
            counts = dict(zip(names, pool.map(lambda name: folder_counts(server, name), names)))
        for name in names:
            inbox, held = counts[name]
            left += inbox
            lost += max(0, expected[name] - held - inbox)
            duplicated += max(0, held + inbox - expected[name])
        rows = daemon.query("SELECT count(*), count(DISTINCT message_id) FROM messages")
        stored, distinct = rows[0] if rows else (0, 0)
        duplicated += stored - distinct
        total = sum(expected.values())
        figures.append(("lost / duplicated / left in INBOX",
                        f"{lost} / {duplicated} / {left} (of {total}; stored {stored}, distinct {distinct})",
                        "0 / 0"))
    finally:
        if daemon is not None:
            daemon.stop()
        server.cleanup()

    print()
    print(f"IMAP scale, N = {n} mailboxes on one private Dovecot, the school closed (every message held)")
    print("  machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print()
    width = max(len(f[0]) for f in figures)
    for what, value, target in figures:
        print(f"  {what:<{width}}  {value:<34} {('target ' + target) if target else ''}")
    print()
    return 0 if lost == 0 and duplicated == 0 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="IMAP mode at scale: N mailboxes on one private Dovecot.")
    ap.add_argument("n", type=int, help="mailboxes (users on the private Dovecot)")
    ap.add_argument("--probes", type=int, default=20, help="APPEND-to-moved latency probes (default 20)")
    ap.add_argument("--burst", type=int, default=10, help="messages appended to every mailbox (default 10)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, config, database)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("N must be >= 1")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    work = Path(tempfile.mkdtemp(prefix="pg-bench-imap-scale-"))
    os.chmod(work, 0o755)
    inotify = INOTIFY.read_text().strip() if INOTIFY.exists() else None
    try:
        if inotify is not None and int(inotify) < args.n + 512:
            try:
                INOTIFY.write_text(str(args.n + 512))
                print(f"fs.inotify.max_user_instances {inotify} -> {args.n + 512} for the run", flush=True)
            except OSError as exc:
                print(f"cannot raise fs.inotify.max_user_instances ({exc}); Dovecot will poll", flush=True)
        return run(args.n, args.probes, args.burst, work)
    finally:
        if inotify is not None and INOTIFY.read_text().strip() != inotify:
            INOTIFY.write_text(inotify)
            print(f"fs.inotify.max_user_instances put back to {inotify}")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; Dovecot and the daemon stopped", file=sys.stderr)
        sys.exit(130)
