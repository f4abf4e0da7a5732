"""Logging set-up: one safe line per event on stderr, with syslog priorities when journald reads it.

Every rendered line has its control characters escaped (C0, DEL, C1, and the Unicode line and paragraph
separators), so a value a sender chose (a Message-ID, an address, an EHLO name) can neither forge a log
line nor send escape sequences to the operator's terminal. Exception text keeps its lines, each
continuation indented (and, under journald, given the record's priority), so that it cannot pass for a
line of its own either.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO

# Everything a terminal or a log reader could take as a control, except the space.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Third-party loggers whose INFO lines say nothing an operator needs: aiosmtpd's per-session chatter
# (peer addresses included), APScheduler's "job executed" every 30 s, alembic's on every command.
QUIET = ("mail.log", "apscheduler", "alembic")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every control character written as a visible escape (ESC becomes \\x1b)."""
    return _CONTROLS.sub(_escape_char, text)


def syslog_priority(levelno: int) -> int:
    """The sd-daemon(3) priority prefix for a logging level: err 3, warning 4, info 6, debug 7."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def kv(**fields: object) -> str:
    """`key=value` fields to put after a log message; None is left out, values with blanks are quoted."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value) or '""'
        if text != '""' and any(c in text for c in ' "='):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class SafeFormatter(logging.Formatter):
    """Renders a record on one line with its controls escaped; tracebacks follow as indented lines."""

    def __init__(self, *, journald: bool) -> None:
        # journald stamps each line itself; a timestamp of our own would only be noise there.
        fmt = "%(name)s: %(message)s" if journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        super().__init__(fmt)
        self.journald = journald

    def _prefix(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>" if self.journald else ""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self._prefix(record) + escape(self.formatMessage(record))
        extra = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            extra.append(record.exc_text)
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            for part in block.splitlines():
                line += "\n" + self._prefix(record) + "  " + escape(part)
        return line


def under_journald() -> bool:
    """systemd sets JOURNAL_STREAM when stderr is connected to the journal (systemd.exec(5))."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def configure(level: str, stream: TextIO | None = None, *, journald: bool | None = None) -> None:
    """Send every log record to `stream` (stderr) through the safe formatter, replacing other handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(SafeFormatter(journald=under_journald() if journald is None else journald))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    effective = root.getEffectiveLevel()
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, effective))
