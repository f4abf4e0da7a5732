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
    assert sorted(ours._handle_hooks) == sorted(plain._handle_hooks) == ["DATA", "RCPT", "exception"]
    assert ours._handle_hooks["DATA"] == handler.handle_DATA
    assert ours._smtp_methods["DATA"] == ours.smtp_DATA
