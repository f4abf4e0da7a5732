"""A child process's lifeline to the daemon: it dies when the daemon dies, even by SIGKILL."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("parentgate.lifeline")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL = 1.0  # seconds between checks of the parent, where the kernel's signal is not available


def die_with(daemon_pid: int) -> None:
    """End this process when `daemon_pid`, its parent, ends.

    On Linux the kernel sends SIGKILL at the parent's death (prctl PR_SET_PDEATHSIG). The signal is
    tied to the parent *thread* that started this process, so the daemon starts its workers from its
    event-loop thread, which lives as long as the daemon. A watcher thread polling the parent's pid
    backs it up (other systems, or a parent that died before the prctl call).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except OSError:
            log.warning("libc not found: the worker watches its parent by polling only")
    # The daemon may have died before the prctl call took effect: then this process was already
    # handed to another parent, and must not start work for nobody.
    if os.getppid() != daemon_pid:
        os._exit(1)
    threading.Thread(target=_watch, args=(daemon_pid,), name="parentgate-lifeline", daemon=True).start()


def _watch(daemon_pid: int) -> None:
    while os.getppid() == daemon_pid:
        time.sleep(POLL)
    os._exit(1)
