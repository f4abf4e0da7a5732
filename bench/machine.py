"""What the benchmarks print about the machine they ran on, so figures can be compared."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def describe(*packages: str) -> dict[str, str]:
    """Cores, CPU model, Python, kernel, SQLite, load, and the versions of `packages`."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    info = {"nproc": str(nproc), "cpu": model, "python": f"{platform.python_version()} ({sys.executable})",
            "kernel": platform.release(), "sqlite": sqlite3.sqlite_version}
    for package in packages:
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            pass
    info["load average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


# ------------------------------------------------------------------- CPU accounting (Linux /proc)

def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after "(comm)": state [0], ppid [1], utime [11], stime [12],
    cutime [13], cstime [14]; None if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_cpu(pid: int, *, reaped_children: bool = False) -> float:
    """CPU seconds of one process (all threads), with its reaped children's if asked."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return sum(int(fields[i]) for i in ((11, 12, 13, 14) if reaped_children else (11, 12))) / _TICK


def descendants_cpu(pid: int) -> float:
    """CPU seconds of the live descendants of a process (parentgate's triage workers, say)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, stack = 0.0, list(children.get(pid, []))
    while stack:
        child = stack.pop()
        total += process_cpu(child)
        stack.extend(children.get(child, []))
    return total


def interrupted(signum: int, _frame: object) -> None:
    """A SIGTERM/SIGHUP handler that unwinds like Ctrl-C, so a bench's `finally` blocks clean up."""
    raise KeyboardInterrupt(f"signal {signum}")
