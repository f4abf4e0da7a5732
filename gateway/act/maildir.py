"""Delivery into local Maildirs (the embedded default and demos): root/<address>/new, atomically.

Each file is written under tmp/, flushed to disk, then renamed into new/ (the Maildir protocol), so a
reader never sees half a message and a crash never leaves one in new/.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from pathlib import Path

from gateway.act.transport import Outcome

_counter = itertools.count()


def _safe_name(address: str) -> str:
    name = address.strip().lower().replace("/", "_").replace("\\", "_")
    return name if name not in ("", ".", "..") else "_"


class MaildirTransport:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")

    def folder(self, address: str) -> Path:
        return self.root / _safe_name(address)

    def _deliver_one(self, address: str, data: bytes) -> None:
        box = self.folder(address)
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(_counter)}.{self._host}"
        tmp, new = box / "tmp" / name, box / "new" / name
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, new)
        dir_fd = os.open(box / "new", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _deliver(self, rcpts: list[str], data: bytes) -> Outcome:
        try:
            for rcpt in rcpts:
                self._deliver_one(rcpt, data)
        except OSError as exc:
            return Outcome(ok=False, temporary=True, detail=f"maildir: {exc.strerror or exc.__class__.__name__}")
        return Outcome.sent("maildir")

    async def send(self, mail_from: str, rcpts: list[str], data: bytes) -> Outcome:
        return await asyncio.to_thread(self._deliver, rcpts, data)

    async def close(self) -> None:
        return None
