"""The log formatter: controls escaped, tracebacks kept safe, syslog priorities under journald."""

from __future__ import annotations

import io
import logging
import re

from gateway.ops.logs import SafeFormatter, configure, escape, kv, syslog_priority

ANY_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def record(msg: str, *args: object, level: int = logging.INFO, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad \x1b[31mvalue\nINFO parentgate: forged line")
        except ValueError:
            import sys
            exc_info = sys.exc_info()
    return logging.LogRecord("parentgate.test", level, __file__, 1, msg, args, exc_info)


def test_every_control_character_is_written_as_a_visible_escape():
    assert escape("a\x1b[31mb\x0b\x0c\x00\x7f\x85\u2028") == "a\\x1b[31mb\\x0b\\x0c\\x00\\x7f\\x85\\u2028"
    assert escape("plain text, ünïcode ok") == "plain text, ünïcode ok"


def test_a_value_with_a_newline_cannot_start_a_line_of_its_own():
    line = SafeFormatter(journald=False).format(record("message-id %s", "<a\r\nINFO fake@x>"))
    assert "\n" not in line and "\r" not in line and "\\x0d\\x0aINFO fake" in line


def test_exception_text_keeps_its_lines_indented_and_escaped():
    text = SafeFormatter(journald=False).format(record("failed", level=logging.ERROR, exc=True))
    first, *rest = text.split("\n")
    assert first.endswith("ERROR parentgate.test: failed")
    assert rest and all(line.startswith("  ") for line in rest)
    assert not ANY_CONTROL.search(text.replace("\n", ""))
    assert "\\x1b[31mvalue" in text
    assert "  INFO parentgate: forged line" in rest


def test_under_journald_each_line_has_its_priority_and_no_timestamp():
    fmt = SafeFormatter(journald=True)
    assert fmt.format(record("x", level=logging.ERROR)) == "<3>parentgate.test: x"
    assert fmt.format(record("x", level=logging.WARNING)).startswith("<4>")
    assert fmt.format(record("x", level=logging.INFO)).startswith("<6>")
    assert fmt.format(record("x", level=logging.DEBUG)).startswith("<7>")
    lines = fmt.format(record("failed", level=logging.ERROR, exc=True)).split("\n")
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert [syslog_priority(n) for n in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]


def test_key_value_fields_quote_values_with_blanks_and_leave_out_none():
    assert kv(id=5, state="queued", route=None, reason='route staff; "x"') == \
        'id=5 state=queued reason="route staff; \\"x\\""'


def test_third_party_info_chatter_is_quietened():
    stream = io.StringIO()
    configure("INFO", stream, journald=False)
    try:
        logging.getLogger("apscheduler.executors.default").info("Job executed successfully")
        logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
        logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")
        logging.getLogger("parentgate").info("ours")
    finally:
        logging.getLogger().handlers.clear()
    out = stream.getvalue()
    assert "Job executed" not in out and "Context impl" not in out
    assert "Run time of job was missed" in out and "ours" in out
