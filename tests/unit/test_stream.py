"""Streamed DATA: the pieces add up to exactly what aiosmtplib would send, whatever the line endings."""

from __future__ import annotations

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from gateway.act.stream import wire_pieces, wire_size

SAMPLES = [
    b"Subject: x\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n",
    b"bare\nline\nfeeds\n.dot\nno final newline",
    b"bare\rcarriage\r.returns\r\n\r\n",
    b"x" * 1000 + b"\r\n" + b".y\r\n" * 300 + b"z" * 700,
    b"",
]


@pytest.mark.parametrize("data", SAMPLES)
@pytest.mark.parametrize("piece", [1, 7, 64, 1 << 20])
def test_pieces_join_to_aiosmtplibs_normalised_dot_stuffed_message(data: bytes, piece: int) -> None:
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data))
    assert b"".join(wire_pieces(data, piece)) == expected
    assert wire_size(data, piece) == len(normalize_message_line_endings(data))
