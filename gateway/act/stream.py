"""Sending a large message over SMTP in pieces, so that relaying it costs no copies of the whole.

aiosmtplib's `sendmail` makes several whole copies of a message as it sends it (one to count its SIZE,
one to normalise line endings, one to dot-stuff, one to append the final dot, and the transport's
buffer of what the socket has not taken yet): about four times a 25 MB message, per message in flight.
`sendmail_streamed` sends the same commands (MAIL with SIZE, RCPT each, DATA) and writes the data in
pieces of about `PIECE` bytes that end at a line's end, each normalised and dot-stuffed on its own
(RFC 5321 §4.5.2), waiting for the socket to drain between pieces.

It uses aiosmtplib's protocol object for the DATA phase (its command lock, write and drain), as its
own `execute_data_command` does; the version is pinned by the project's dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import aiosmtplib
from aiosmtplib import SMTPResponse

PIECE = 256 * 1024
# As aiosmtplib's: bare CR or LF become CRLF; a dot at a line's start is doubled.
_LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_PERIOD = re.compile(rb"(?m)^\.")


def _normalised(data: bytes, piece: int) -> Iterator[bytes]:
    """The message with CRLF line endings, in pieces that each end at a line's end (or the end)."""
    view = memoryview(data)
    pos, size = 0, len(data)
    while pos < size:
        cut = data.find(b"\n", min(pos + piece, size) - 1)
        end = size if cut < 0 else cut + 1
        yield _LINE_ENDINGS.sub(b"\r\n", view[pos:end])
        pos = end


def wire_pieces(data: bytes, piece: int = PIECE) -> Iterator[bytes]:
    """The message as DATA sends it (CRLF line endings, dot-stuffed, ending with CRLF), in pieces;
    without the final `.` line. A piece starts at a line's start, so `^.` is every line's dot."""
    last = b""
    for chunk in _normalised(data, piece):
        if chunk:
            last = chunk[-2:]
            yield _PERIOD.sub(b"..", chunk)
    if last != b"\r\n":
        yield b"\r\n"


def wire_size(data: bytes, piece: int = PIECE) -> int:
    """RFC 1870's SIZE: the octets of the message with CRLF line endings (as aiosmtplib counts it)."""
    size, last = 0, b""
    for chunk in _normalised(data, piece):
        size += len(chunk)
        last = chunk[-2:] or last
    return size + (0 if last == b"\r\n" else 2)


async def sendmail_streamed(client: aiosmtplib.SMTP, sender: str, recipients: list[str], data: bytes, *,
                            mail_options: list[str] | None = None,
                            timeout: float | None = None) -> tuple[dict[str, SMTPResponse], str]:
    """`client.sendmail(sender, recipients, data, mail_options=...)`, with the DATA written in pieces
    (see the module)."""
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    options = list(mail_options or [])
    # As sendmail: with SMTPUTF8 (RFC 6531) the addresses go as UTF-8.
    encoding = "utf-8" if any(o.lower() == "smtputf8" for o in options) else "ascii"
    if client.supports_extension("size"):
        options.insert(0, f"size={wire_size(data)}")
    try:
        await client.mail(sender, options=options, encoding=encoding, timeout=timeout)
        errors: dict[str, SMTPResponse] = {}
        refused: list[aiosmtplib.SMTPRecipientRefused] = []
        for rcpt in recipients:
            try:
                await client.rcpt(rcpt, encoding=encoding, timeout=timeout)
            except aiosmtplib.SMTPRecipientRefused as exc:
                errors[rcpt] = SMTPResponse(exc.code, exc.message)
                refused.append(exc)
        if len(refused) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(refused)
        response = await _data(client, data, timeout)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        try:
            await client.rset(timeout=timeout)
        except (ConnectionError, aiosmtplib.SMTPResponseException):
            pass
        raise
    return errors, response.message


async def _data(client: aiosmtplib.SMTP, data: bytes, timeout: float | None) -> SMTPResponse:
    protocol = client.protocol
    if protocol is None or protocol._command_lock is None:  # noqa: SLF001
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        async with protocol._command_lock:  # noqa: SLF001 - one command at a time, as aiosmtplib's own
            protocol._response_pending = True  # noqa: SLF001
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=timeout)
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol._response_pending = True  # noqa: SLF001
            for piece in wire_pieces(data):
                protocol.write(piece)
                await protocol._drain_helper()  # noqa: SLF001 - the socket takes a piece before the next
            protocol.write(b".\r\n")
            response = await protocol.read_response(timeout=timeout)
            if response.code != 250:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
            return response
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, ConnectionError):
        client.close()
        raise
