"""/metrics and /healthz of the real daemon over HTTP on loopback; start-up failures are one line, exit 2."""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from tests.integration.test_crash import start_daemon
from tests.support import STAFF, Sink, free_port, message, wire, write_config

pytestmark = pytest.mark.timeout(150)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in the exposition text, or None if it is absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(2) or "").split(","))) == want:
            return float(m.group(3))
    return None


def poll(fn: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.2)
    return fn()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def send(port: int, m: bytes, mail_from: str = "mum.patel@example.com") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(mail_from, [STAFF], m)


IMAP_BOX = '[[imap.mailboxes]]\nname = "nobody-home"\nschool = "oakfield"\nhost = "127.0.0.1"\nport = {port}\n' \
           'tls = "none"\nusername = "nobody"\npassword = "x"\n\n'


def test_metrics_expose_queue_deliveries_triage_acknowledgements_imap_and_sessions(tmp_path: Path, sink: Sink):
    port, mport = free_port(), free_port()
    cfg = write_config(tmp_path, smtp_port=port, sink_port=sink.port, retry_first="60s",
                       extra=f'[metrics]\nlisten = "127.0.0.1:{mport}"\n\n' + IMAP_BOX.format(port=free_port()))
    proc = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        # A parent's message: delivered and acknowledged. A robot's: delivered, acknowledgement suppressed.
        send(port, wire(message()))
        send(port, wire(message(headers={"Auto-Submitted": "auto-generated"})), mail_from="robot@example.com")
        # A long message waits for the Head of School.
        send(port, wire(message(body="Word " * 500 + "\n")))

        def scraped() -> str:
            return get(mport, "/metrics")[1]

        def settled() -> bool:
            text = scraped()
            return (sample(text, "parentgate_messages", state="delivered") == 2
                    and sample(text, "parentgate_messages", state="in_review") == 1
                    and (sample(text, "parentgate_acknowledgements_sent_total") or 0) >= 1)
        assert poll(settled)
        # The next hop starts deferring: one delivery waits for a retry.
        sink.defer = True
        send(port, wire(message(subject="Trip money")))

        assert poll(lambda: (sample(scraped(), "parentgate_deliveries_total", outcome="deferred", kind="deliver")
                             or 0) >= 1)
        assert poll(lambda: (sample(scraped(), "parentgate_oldest_message_age_seconds", state="deferred") or 0) > 0)
        text = scraped()
        assert sample(text, "parentgate_messages", state="delivered") == 2
        assert sample(text, "parentgate_messages", state="in_review") == 1
        assert sample(text, "parentgate_messages", state="queued") == 1
        assert sample(text, "parentgate_messages", state="quarantined") == 0
        assert (sample(text, "parentgate_oldest_message_age_seconds", state="in_review") or 0) > 0
        assert sample(text, "parentgate_oldest_message_age_seconds", state="held") == 0
        assert sample(text, "parentgate_deliveries_total", outcome="sent", kind="deliver") == 2
        assert (sample(text, "parentgate_triage_duration_seconds_count") or 0) >= 1
        assert sample(text, "parentgate_triaged_messages_total") == 4
        assert (sample(text, "parentgate_acknowledgements_sent_total") or 0) >= 1
        assert sample(text, "parentgate_acknowledgements_suppressed_total", reason="auto-submitted") == 1
        # Nothing listens on the mailbox's port: it is reported failing.
        assert sample(text, "parentgate_imap_mailbox_ok", mailbox="nobody-home") == 0

        # An SMTP session held open shows in the gauge, and leaves it when closed.
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo("client.test")
        assert poll(lambda: sample(scraped(), "parentgate_smtp_sessions_open") == 1)
        client.quit()
        assert poll(lambda: sample(scraped(), "parentgate_smtp_sessions_open") == 0)
    finally:
        stop(proc)
    assert proc.returncode == 0


def test_healthz_is_200_then_503_when_the_database_becomes_unreachable(tmp_path: Path, database_url: str):
    port, mport = free_port(), free_port()
    cfg = write_config(tmp_path, smtp_port=port, database=database_url,
                       extra=f'[metrics]\nlisten = "127.0.0.1:{mport}"\n')
    proc = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        # Healthy once the worker loops run, which is shortly after the listener accepts.
        assert poll(lambda: get(mport, "/healthz") == (200, "ok\n"))
        if database_url.startswith("sqlite"):
            # The state directory moved away: the daemon's open connection would write into a file
            # nobody will ever read again.
            shutil.move(tmp_path / "var", tmp_path / "var-moved")
        else:
            import psycopg
            from tests.conftest import PG_ADMIN
            name = database_url.rsplit("/", 1)[1]
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        assert poll(lambda: get(mport, "/healthz")[0] == 503)
        status, body = get(mport, "/healthz")
        assert status == 503 and body.startswith("database") and len(body.splitlines()) == 1
        assert get(mport, "/nowhere")[0] == 404
    finally:
        stop(proc)


def run_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=60)


def one_clear_line(r: subprocess.CompletedProcess[str]) -> str:
    out = (r.stderr + r.stdout).strip()
    assert r.returncode == 2, out
    assert "Traceback" not in out
    assert len(out.splitlines()) == 1, out
    return out


def test_a_second_daemon_on_a_port_in_use_says_so_in_one_line_and_exits_2(tmp_path: Path):
    port, mport = free_port(), free_port()
    cfg = write_config(tmp_path / "a", smtp_port=port, extra=f'[metrics]\nlisten = "127.0.0.1:{mport}"\n')
    proc = start_daemon(cfg, port, tmp_path / "a.log")
    try:
        out = one_clear_line(run_cli(cfg, "run"))
        assert f"127.0.0.1:{port}" in out and "address already in use" in out
        # Its own SMTP port free, the metrics port taken: the same.
        other = write_config(tmp_path / "b", smtp_port=free_port(), extra=f'[metrics]\nlisten = "127.0.0.1:{mport}"\n')
        out = one_clear_line(run_cli(other, "run"))
        assert f"metrics on 127.0.0.1:{mport}" in out and "address already in use" in out
        # The first daemon is untouched.
        assert poll(lambda: get(mport, "/healthz") == (200, "ok\n"))
    finally:
        stop(proc)


def test_an_unreachable_database_an_uncreatable_state_dir_or_an_invalid_config_is_one_line_and_exit_2(tmp_path: Path):
    dead = f"postgresql+psycopg://parentgate:secret@127.0.0.1:{free_port()}/parentgate"
    out = one_clear_line(run_cli(write_config(tmp_path / "pg", database=dead), "run"))
    assert "cannot open the database" in out and "secret" not in out
    # A state directory that cannot be created (a file stands where its parent should be).
    blocked = write_config(tmp_path / "blocked")
    blocked.write_text(blocked.read_text().replace('state_dir = "var"', 'state_dir = "config.toml/var"'))
    out = one_clear_line(run_cli(blocked, "run"))
    assert "cannot create the state directory" in out
    bad = write_config(tmp_path / "bad")
    bad.write_text(bad.read_text() + '\n[metrics]\nlisten = "127.0.0.1:http"\n')
    out = one_clear_line(run_cli(bad, "run"))
    assert "metrics.listen" in out


async def test_health_waits_for_the_workers_to_start_and_notices_a_loop_that_stopped(tmp_path: Path):
    import asyncio
    from gateway.ops.health import Health
    from gateway.ops.metrics import Metrics
    from gateway.store.database import Database

    db = Database(f"sqlite:///{tmp_path / 'health.db'}")
    metrics = Metrics()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    health = Health(db, metrics, lambda: server, ("127.0.0.1", port))
    try:
        assert await health.problem() == "starting: the worker loops are not running yet"
        metrics.running = True
        assert await health.problem() is None
        metrics.ticks["delivery"] -= 61
        assert (await health.problem() or "").startswith("delivery loop has not run for 61 s")
        metrics.tick("delivery")
        server.close()
        await server.wait_closed()
        assert await health.problem() == "SMTP listener is not serving"
    finally:
        server.close()
        db.close()


async def test_the_ops_server_answers_get_only_and_drops_malformed_requests_quietly(tmp_path: Path, caplog):
    import asyncio
    from gateway.clock import SystemClock
    from gateway.ops.health import Health
    from gateway.ops.metrics import Metrics
    from gateway.ops.server import OpsServer
    from gateway.store.database import Database

    db = Database(f"sqlite:///{tmp_path / 'ops.db'}")
    metrics = Metrics()
    ops = OpsServer(metrics, Health(db, metrics, lambda: None, ("127.0.0.1", 1)), db, SystemClock(), ())
    port = free_port()
    await ops.start("127.0.0.1", port)

    async def exchange(request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    try:
        assert (await exchange(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        assert await exchange(b"\x16\x03\x01 not http at all\r\n\r\n") == b""
        assert await exchange(b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\n\r\n") == b""
        head = await exchange(b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        answer = await exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"\r\n\r\nSMTP listener is not serving\n")
        assert not [r for r in caplog.records if r.name == "parentgate.metrics"]
    finally:
        await ops.close()
        db.close()
