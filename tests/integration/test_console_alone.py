"""`parentgate console` serves the console without the mail pipeline; a port in use is one line, exit 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support import free_port, write_config


def test_parentgate_console_serves_the_sign_in_page_alone_with_strict_headers(tmp_path: Path) -> None:
    port, smtp = free_port(), free_port()
    cfg = write_config(tmp_path, smtp_port=smtp,
                       extra=f'[console]\nlisten = "127.0.0.1:{port}"\nbase_url = "https://console.test"\n')
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(cfg), "console"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body, headers = r.read().decode(), r.headers
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the console did not start"
                time.sleep(0.1)
        assert 'for="email">Email address</label>' in body
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
        # The mail pipeline is not running: nothing listens for SMTP.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", smtp)) != 0
        # A second console on the same port says so in one line and exits 2.
        again = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "console"],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "cannot serve the console" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
