"""Reading SMTP DATA into one buffer, so a large message costs its size in memory once, not three times.

aiosmtpd keeps every line of DATA as its own bytearray object in a list (an object header, a pointer and
an allocation per ~78-byte line: about twice the message's size), then joins them into one more copy.
`SpooledData.smtp_DATA` reads the same lines and appends each (dot-unstuffed, RFC 5321 §4.5.2) to a
single growing bytearray, with aiosmtpd's own limits and replies: 552 over the size limit and 500 for
an over-long line, both after the end of the data (RFC 5321 §4.2.5), and the handler's `handle_DATA`
hook sees `envelope.original_content` as usual (a bytearray here).
"""

from __future__ import annotations

import asyncio
import logging

from aiosmtpd.smtp import MISSING, SMTP

log = logging.getLogger("parentgate.smtp")


class SpooledData(SMTP):
    """aiosmtpd's SMTP session with DATA read into one buffer (mixed in before `SMTP`)."""

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        buffer = bytearray()
        size, limit = 0, self.data_size_limit
        too_long = too_much = False
        partial = False
        while self.transport is not None:
            try:
                line: bytes = await self._reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                log.info("connection lost during DATA")
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as exc:
                # A line longer than the stream's limit: drained and discarded, refused at the end.
                too_long = True
                buffer = bytearray()
                line = await self._reader.read(exc.consumed)
            if not partial and line == b".\r\n":
                break
            size += len(line)
            if limit and size > limit and not too_much:
                too_much = True
                buffer = bytearray()
            ends = line.endswith(b"\r\n")
            if not (too_long or too_much):
                # A line that starts with a dot had one added by the client (RFC 5321 §4.5.2).
                buffer += line[1:] if line.startswith(b".") and not partial else line
            partial = not ends
        if too_long or too_much:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)" if too_long
                            else "552 Error: Too much mail data")
            self._set_post_data_state()
            return
        self.envelope.content = buffer
        self.envelope.original_content = buffer
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)
