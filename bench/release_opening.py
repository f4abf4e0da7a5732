"""Held mail released at the school's opening: how long until all of it is at the mail server.

In one run, two daemons (`parentgate run`, SQLite, each with its own sink in its own process):

  (a) baseline: the school closed for the whole run; N messages sent (smtp-source) and held, then
      `parentgate release --all` (the CLI's early release) run against the live daemon; timed from
      the command's start until the sink holds all N;
  (b) opening: the school opens at a minute boundary a few minutes ahead of the real clock; N messages
      sent and held before it, then timed from the opening instant until the sink holds all N;

and prints both times and the ratio b/a (the target is b <= 60 s for N = 10,000). Nothing may reach
the sink before the opening (checked). Run it under the heavy lock on a shared machine:

    flock /tmp/parentgate-heavy.lock .venv/bin/python bench/release_opening.py [--n 10000] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe, interrupted  # noqa: E402
from bench.smtp_throughput import (DOMAIN, RCPT, SCHOOL_ID, SENDER, SMTP_SOURCE, Sink, free_port,  # noqa: E402
                                   parentgate_command, stop_process, tail, wait_port)

# The school's timezone: London unless the opening would fall too near midnight there (an opening
# must be later on the same day), then one far from it.
ZONES = ("Europe/London", "Asia/Tokyo", "America/New_York")
TARGET_S = 60.0


def calendar(open_at: str, half_term_start: str = "2020-01-01") -> str:
    return (f'[schools.hours]\nopen = "{open_at}"\nclose = "24:00"\n'
            'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n\n'
            f'[[schools.half_terms]]\nname = "All year"\nstart = {half_term_start}\nend = 2035-12-31\n\n'
            '[schools.closures]\ninset_days = []\nbank_holidays = "none"\n')


def write_config(directory: Path, *, smtp_port: int, sink_port: int, school_calendar: str, zone: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = (f'[gateway]\nstate_dir = "var"\ntimezone = "{zone}"\npostmaster = "postmaster@example.invalid"\n\n'
            f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\nhostname = "gateway.test"\nmax_message_size = 1048576\n\n'
            f'[delivery]\nmode = "smtp"\nsmarthost = "127.0.0.1:{sink_port}"\n'
            f'retry_first_delay = "1s"\nretry_max_delay = "2s"\nlifetime = "1h"\n\n'
            f'[acknowledge]\nenabled = false\n\n'
            f'[limits]\nfamily_messages_per_half_term = 1000000\nthread_messages = 1000000\n\n'
            f'[[schools]]\nid = "{SCHOOL_ID}"\nname = "Oakfield School"\ndomains = ["{DOMAIN}"]\n'
            f'head_of_school = "head@{DOMAIN}"\noffice = "office@{DOMAIN}"\n'
            f'office_phone = "0113 496 0000"\ndsl = "dsl@{DOMAIN}"\n\n' + school_calendar)
    path = directory / "config.toml"
    path.write_text(text)
    return path


class Daemon:
    """One `parentgate run` with its own sink, config and SQLite database under `directory`."""

    def __init__(self, directory: Path, school_calendar: str, zone: str) -> None:
        self.dir = directory
        self.sink = Sink(directory.parent, directory.name)
        self.port = free_port()
        self.config = write_config(directory, smtp_port=self.port, sink_port=self.sink.port,
                                   school_calendar=school_calendar, zone=zone)
        self.log = directory / "gateway.log"
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([*parentgate_command(), "--config", str(self.config), "run"], cwd=directory,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_port(self.port, 60, alive=lambda: self.proc.poll() is None):
            self.stop()
            raise SystemExit(f"parentgate did not start; log tail:\n{tail(self.log)}")

    def held(self) -> int:
        with sqlite3.connect(self.dir / "var" / "parentgate.db", timeout=30) as db:
            return int(db.execute("SELECT count(*) FROM messages WHERE state = 'held'").fetchone()[0])

    def at_sink(self) -> tuple[int, float]:
        return self.sink.reached(RCPT)

    def fill(self, n: int, timeout: float = 600) -> float:
        """Send n messages and wait until all are held; returns the seconds it took."""
        t0 = time.monotonic()
        subprocess.run([SMTP_SOURCE, "-m", str(n), "-s", "20", "-l", "1024", "-f", SENDER, "-t", RCPT,
                        f"127.0.0.1:{self.port}"], capture_output=True, timeout=timeout)
        while self.held() < n:
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"only {self.held()}/{n} held after {timeout:.0f} s; log tail:\n{tail(self.log)}")
            time.sleep(0.5)
        return time.monotonic() - t0

    def wait_sink(self, n: int, since: float, timeout: float = 900) -> float:
        """Seconds from `since` (time.monotonic()) until the sink held n messages (the last one's time)."""
        count, last = self.at_sink()
        while count < n:
            if time.monotonic() - since > timeout:
                raise SystemExit(f"only {count}/{n} at the sink after {timeout:.0f} s; log tail:\n{tail(self.log)}")
            time.sleep(0.05)
            count, last = self.at_sink()
        return last - since

    def stop(self) -> None:
        stop_process(self.proc, group=True)
        self.sink.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="held messages (default 10,000)")
    parser.add_argument("--lead", type=float, default=5.0,
                        help="minutes from the start until the opening (default 5; both fills must fit)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs, databases)")
    args = parser.parse_args()
    if not shutil.which(SMTP_SOURCE):
        raise SystemExit(f"{SMTP_SOURCE} (Postfix's smtp-source) is needed: apt-get install postfix")
    work = Path(tempfile.mkdtemp(prefix="pg-bench-release-"))
    for zone in ZONES:
        opening = (datetime.now(ZoneInfo(zone)) + timedelta(minutes=args.lead)).replace(second=0, microsecond=0)
        if opening.date() == (opening + timedelta(minutes=60)).date() and opening.hour > 0:
            break
    print(f"release at opening: {args.n} held messages; opening at {opening:%H:%M} {zone}")
    print("  machine: " + ", ".join(f"{k} {v}" for k, v in describe("aiosmtpd").items()))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    daemons: list[Daemon] = []
    try:
        # (b) first: its mail must be held before the opening.
        opening_gw = Daemon(work / "opening", calendar(f"{opening:%H:%M}"), zone)
        daemons.append(opening_gw)
        fill_b = opening_gw.fill(args.n)
        print(f"  (b) {args.n} sent and held in {fill_b:.1f} s")
        # (a) a school closed all run (its half-term starts in the future), released by hand.
        closed_gw = Daemon(work / "closed", calendar("08:00", "2034-01-01"), zone)
        daemons.append(closed_gw)
        fill_a = closed_gw.fill(args.n)
        print(f"  (a) {args.n} sent and held in {fill_a:.1f} s")
        t0 = time.monotonic()
        release = subprocess.run([*parentgate_command(), "--config", str(closed_gw.config), "release", "--all"],
                                 cwd=closed_gw.dir, capture_output=True, text=True, timeout=600)
        cli_s = time.monotonic() - t0
        if release.returncode != 0:
            raise SystemExit(f"release --all failed: {release.stderr[-500:]}")
        baseline = closed_gw.wait_sink(args.n, t0)
        print(f"  (a) release --all: command {cli_s:.1f} s; all {args.n} at the sink {baseline:.1f} s after its start")
        closed_gw.stop()
        daemons.remove(closed_gw)
        early, _ = opening_gw.at_sink()
        left = opening.timestamp() - time.time()
        if left < 1:
            raise SystemExit(f"the opening passed before the fills were done ({-left:.0f} s late): raise --lead")
        print(f"  (b) waiting {left:.0f} s for the opening")
        time.sleep(left)
        opened = time.monotonic() - (time.time() - opening.timestamp())
        took = opening_gw.wait_sink(args.n, opened)
    finally:
        for daemon in daemons:
            daemon.stop()
        if args.keep:
            print(f"  kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"  {'path':<46} {'seconds':>8}")
    print(f"  {'(a) release --all (baseline)':<46} {baseline:>8.1f}")
    print(f"  {'(b) release at the opening':<46} {took:>8.1f}")
    print(f"  ratio b/a: {took / baseline:.2f}   delivered before the opening: {early}   "
          f"target: b <= {TARGET_S:.0f} s: {'met' if took <= TARGET_S and early == 0 else 'NOT met'}")
    return 0 if took <= TARGET_S and early == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
