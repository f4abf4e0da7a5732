"""A bare aiosmtpd sink for the throughput benchmark: answers 250 to every message and counts them.

Run it in its own process (so it never shares a GIL with the process that measures):

    python bench/sink.py [--host 127.0.0.1] [--port 0]

Once bound it prints one line, `listening HOST:SMTP_PORT control CONTROL_PORT`. The control port answers
one JSON line per connection: {"total": n, "sessions": n, "rcpt": {address: [count, last_monotonic]}},
where last_monotonic is time.monotonic() (CLOCK_MONOTONIC, comparable across processes on Linux) when
the latest message for that recipient was accepted. On SIGTERM/SIGINT it prints the totals and exits 0.

This is the "bare Python SMTP" ceiling: no parsing, no storage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

from aiosmtpd.smtp import SMTP


class CountingHandler:
    def __init__(self) -> None:
        self.total = 0
        self.sessions = 0
        self.rcpt: dict[str, list[float]] = {}

    async def handle_DATA(self, server: SMTP, session: object, envelope: object) -> str:
        now = time.monotonic()
        self.total += 1
        for address in envelope.rcpt_tos:  # type: ignore[attr-defined]
            entry = self.rcpt.setdefault(address.lower(), [0, 0.0])
            entry[0] += 1
            entry[1] = now
        return "250 OK"


async def main(host: str, port: int) -> None:
    handler = CountingHandler()
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        handler.sessions += 1
        # hostname given explicitly: otherwise aiosmtpd calls socket.getfqdn() for every connection.
        return SMTP(handler, hostname="sink.test", ident="parentgate-bench-sink")

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = {"total": handler.total, "sessions": handler.sessions, "rcpt": handler.rcpt}
        writer.write(json.dumps(stats).encode() + b"\n")
        try:
            await writer.drain()
        finally:
            writer.close()

    server = await loop.create_server(factory, host=host, port=port, backlog=1000)
    ctl = await asyncio.start_server(control, host=host, port=0)
    smtp_port = server.sockets[0].getsockname()[1]
    ctl_port = ctl.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening {host}:{smtp_port} control {ctl_port}", flush=True)
    await stop.wait()
    server.close()
    ctl.close()
    print(f"messages={handler.total} sessions={handler.sessions}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="SMTP port (0: any free port, printed once bound)")
    args = ap.parse_args()
    asyncio.run(main(args.host, args.port))
