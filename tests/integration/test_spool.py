"""DATA read into one buffer: dot-transparency undone exactly (RFC 5321 §4.5.2), limits as before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from tests.conftest import utc
from tests.support import STAFF, InProcessGateway, Sink, message, wire, write_config


@pytest.fixture
async def gateway(tmp_path: Path, sink: Sink):
    cfg = write_config(tmp_path, sink_port=sink.port, extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 24, 10, 0))).start()
    yield gw
    await gw.stop()


async def test_lines_starting_with_dots_arrive_byte_for_byte(gateway, sink):
    original = message(body=".one dot\r\n..two dots\r\n.\r\n...\r\nend\r\n")
    assert (await gateway.send(original))[0] == 250
    [row] = gateway.messages()
    assert bytes(row.raw) == wire(original)
    await gateway.settle()
    [got] = sink.to(STAFF)
    assert got.data.endswith(wire(original))




async def test_an_over_long_line_is_refused_after_the_data_and_nothing_is_stored(gateway):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    await reader.readline()
    for command in (b"HELO client.test\r\n", b"MAIL FROM:<p@example.com>\r\n", f"RCPT TO:<{STAFF}>\r\n".encode(),
                    b"DATA\r\n"):
        writer.write(command)
        await writer.drain()
        await reader.readline()
    writer.write(b"Subject: x\r\n\r\n" + b"a" * 20000 + b"\r\nmore\r\n.\r\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert reply.startswith(b"500 ")
    assert gateway.messages() == []
