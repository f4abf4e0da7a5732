"""The listener's SMTP session skips aiosmtpd's per-connection introspection but dispatches the same way."""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import SMTP

from gateway.ingest.smtp import GatewayHandler, GatewaySMTP


async def test_the_session_finds_the_same_commands_auth_mechanisms_and_hooks_as_aiosmtpd():
    loop = asyncio.get_running_loop()
    handler = GatewayHandler(lambda: None, None)  # type: ignore[arg-type,return-value]
    plain, ours = SMTP(handler, hostname="gw.test", loop=loop), GatewaySMTP(handler, hostname="gw.test", loop=loop)
    assert sorted(ours._smtp_methods) == sorted(plain._smtp_methods)
    assert "DATA" in ours._smtp_methods and "STARTTLS" in ours._smtp_methods
    assert sorted(ours._auth_methods) == sorted(plain._auth_methods)
    assert sorted(ours._handle_hooks) == sorted(plain._handle_hooks) == ["DATA", "MAIL", "RCPT", "exception"]
    assert ours._handle_hooks["DATA"] == handler.handle_DATA
    assert ours._smtp_methods["DATA"] == ours.smtp_DATA


PATHS = ["<a@x.test>", "<mum.patel@example.com>", "<a@x.test> SIZE=2048 BODY=8BITMIME", "<A+tag@Sub.Example.ORG>",
         "<o'brien@example.ie>", "<x_y-z{1}@d-1.example>", "<>", " <a@x.test>", "<a..b@x.test>", "<.a@x.test>",
         "<a.@x.test>", "<\"quoted name\"@x.test>", "<a@[127.0.0.1]>", "<@relay.example:a@x.test>", "<a@x.test",
         "a@x.test", "<a b@x.test>", "<a@x_y.test>", "<a@x.test>\r\n", "<ä@x.test>", "<a@x..test>",
         "<" + "l" * 70 + "@x.test>", "<a@x.test>>", "<a@x.test> <b@y.test>", "<a@x.test>  (note) SIZE=1",
         "<a@x.test>\tSIZE=1", "<a@x.test>   ", "<a@x.test>SIZE=1", "<a@x.test> \"q\" SIZE=1"]


async def test_a_plain_path_is_read_as_aiosmtpd_reads_it():
    loop = asyncio.get_running_loop()
    handler = GatewayHandler(lambda: None, None)  # type: ignore[arg-type,return-value]
    plain, ours = SMTP(handler, hostname="gw.test", loop=loop), GatewaySMTP(handler, hostname="gw.test", loop=loop)
    for limit in (0, 64):
        plain.local_part_limit = ours.local_part_limit = limit
        for path in PATHS:
            assert ours._getaddr(path) == plain._getaddr(path), (path, limit)
