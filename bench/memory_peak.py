"""Peak and settled memory of the daemon with six 25 MB messages in flight at once.

Starts `parentgate run` (SQLite, always open, max_message_size 26 MiB) relaying into bench/sink.py in
its own process, measures the idle daemon's RSS, then sends six 25 MB messages concurrently from six
clients, sampling /proc/<pid>/status (VmRSS, VmHWM) of the daemon and, apart from it, of its judge
worker processes every 50 ms until all six are at the sink and the RSS has settled. Prints the idle,
peak and settled RSS of the daemon (target: peak < 400 MiB), the ratios against idle, and the judge
workers' peak. Run it under the heavy lock on a shared machine:

    flock /tmp/parentgate-heavy.lock .venv/bin/python bench/memory_peak.py [--messages 6] [--size-mb 25]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe, interrupted  # noqa: E402
from bench.smtp_throughput import (RCPT, SENDER, Sink, free_port, gateway_config,  # noqa: E402
                                   parentgate_command, stop_process, tail, wait_port)

import subprocess  # noqa: E402

MIB = 1024 * 1024
TARGET_MIB = 400


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes ({} once it is gone)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        return {}
    return out


def children(pid: int) -> list[int]:
    """Every descendant of pid (the judge workers and multiprocessing's resource tracker)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            found.append(kid)
            todo.append(kid)
    return found


class Sampler(threading.Thread):
    """Samples the daemon's RSS, and the sum of its descendants', every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop_flag = threading.Event()
        self.peak = 0
        self.peak_children = 0
        self.samples: list[tuple[float, int, int]] = []

    def run(self) -> None:
        while not self.stop_flag.is_set():
            rss = status(self.pid).get("VmRSS", 0)
            kids = sum(status(k).get("VmRSS", 0) for k in children(self.pid))
            self.samples.append((time.monotonic(), rss, kids))
            self.peak = max(self.peak, rss)
            self.peak_children = max(self.peak_children, kids)
            self.stop_flag.wait(0.05)


def config(directory: Path, *, port: int, sink_port: int) -> Path:
    """The throughput bench's gateway, taking 26 MiB messages and sending no acknowledgements."""
    return gateway_config(directory, smtp_port=port, sink_port=sink_port, database=None,
                          max_message_size=26 * MIB, extra="[acknowledge]\nenabled = false\n\n")


def big_message(i: int, size: int) -> bytes:
    """A plain-text parent's message with a base64-looking attachment of about `size` bytes."""
    head = (f"From: Parent {i} <parent{i}@example.com>\r\nTo: <{RCPT}>\r\nSubject: Photos {i}\r\n"
            f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <big{i}.{time.time_ns()}@example.com>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nHello, the photos from the trip.\r\n--b\r\n"
            "Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"trip.jpg\"\r\n\r\n").encode()
    line = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3" + b"\r\n")
    body = line * ((size - len(head)) // len(line))
    return head + body + b"--b--\r\n"


def send(port: int, data: bytes, errors: list[str]) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=300) as s:
            s.sendmail(SENDER, [RCPT], data)
    except (OSError, smtplib.SMTPException) as exc:
        errors.append(f"{exc.__class__.__name__}: {exc}"[:200])


def settle(sampler: Sampler, seconds: float, timeout: float) -> int:
    """The daemon's RSS once it has changed by less than 2 MiB over `seconds` (or at `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(seconds)
        window = [rss for t, rss, _ in sampler.samples if t >= time.monotonic() - seconds]
        if window and max(window) - min(window) < 2 * MIB:
            return window[-1]
    return sampler.samples[-1][1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6)
    parser.add_argument("--size-mb", type=float, default=25.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (log, config, database)")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    size = int(args.size_mb * MIB)
    work = Path(tempfile.mkdtemp(prefix="pg-bench-memory-"))
    sink = Sink(work, "memory")
    proc = None
    try:
        port = free_port()
        cfg = config(work / "gateway", port=port, sink_port=sink.port)
        log = work / "gateway" / "gateway.log"
        with open(log, "ab") as logf:
            proc = subprocess.Popen([*parentgate_command(), "--config", str(cfg), "run"], cwd=work / "gateway",
                                    stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_port(port, 60, alive=lambda: proc.poll() is None):
            raise SystemExit(f"parentgate did not start; log tail:\n{tail(log)}")
        sampler = Sampler(proc.pid)
        sampler.start()
        # Idle: the judge workers started and loaded their rules; the daemon's RSS stable.
        idle = settle(sampler, 2.0, 60)
        idle_children = sampler.samples[-1][2]
        messages = [big_message(i, size) for i in range(args.messages)]
        errors: list[str] = []
        t0 = time.monotonic()
        clients = [threading.Thread(target=send, args=(port, m, errors)) for m in messages]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        accepted = time.monotonic() - t0
        del messages
        deadline = time.monotonic() + 600
        while sink.reached(RCPT)[0] < args.messages - len(errors) and time.monotonic() < deadline:
            time.sleep(0.2)
        delivered = sink.reached(RCPT)[0]
        end_to_end = time.monotonic() - t0
        settled = settle(sampler, 3.0, 60)
        hwm = status(proc.pid).get("VmHWM", 0)
        sampler.stop_flag.set()
        sampler.join()
    finally:
        if proc is not None:
            stop_process(proc, group=True)
        sink.stop()
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"memory with {args.messages} x {args.size_mb:g} MB messages in flight at once "
          f"({args.messages} clients, SQLite, relay to a sink)")
    print("  machine: " + ", ".join(f"{k} {v}" for k, v in describe("aiosmtpd").items()))
    print(f"  accepted in {accepted:.1f} s; {delivered}/{args.messages} at the sink {end_to_end:.1f} s after the start"
          + (f"; client errors: {errors[:2]}" if errors else ""))
    print()
    print(f"  {'daemon (main process)':<34} {'MiB':>8} {'x idle':>8}")
    print(f"  {'idle':<34} {idle / MIB:>8.0f} {1.0:>8.2f}")
    print(f"  {'peak (sampled VmRSS)':<34} {sampler.peak / MIB:>8.0f} {sampler.peak / idle:>8.2f}")
    print(f"  {'peak (kernel VmHWM)':<34} {hwm / MIB:>8.0f} {hwm / idle:>8.2f}")
    print(f"  {'settled after delivery':<34} {settled / MIB:>8.0f} {settled / idle:>8.2f}")
    print(f"  judge workers (all, summed): idle {idle_children / MIB:.0f} MiB, peak {sampler.peak_children / MIB:.0f} MiB")
    ok = hwm < TARGET_MIB * MIB and delivered == args.messages
    print(f"  target: daemon peak < {TARGET_MIB} MiB: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
