"""What the benchmarks print about the machine they ran on, so figures can be compared."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


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
