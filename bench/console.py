"""The console's pages under a realistic database: the review queue and a message page against a trivial
page served by the same server in the same run.

One daemon (`parentgate run` with [console], SQLite unless --database is given) over a database of
--total messages (default 20,000), --review of them (default 2,000) in the Head of School's review
queue and the rest delivered, spread over two schools and a few hundred families. Signed in as the
Head, the script requests each page --requests times (default 200) over one keep-alive connection,
one after another, and prints the median and 95th percentile of each and their ratio to the trivial
page. The queue must stay under 10x the trivial page (exit 1 otherwise). Run it under the heavy lock:

    flock /tmp/parentgate-heavy.lock .venv/bin/python bench/console.py [--total 20000] [--review 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe, interrupted  # noqa: E402

DOMAIN = "oakfield-primary.sch.example"
HEAD = f"head@{DOMAIN}"
OPEN = ('[schools.hours]\nopen = "00:00"\nclose = "24:00"\ndays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
        '[schools.closures]\ninset_days = []\nbank_holidays = "none"\n')
BODY = ("You are a useless, pathetic excuse for a teacher. Keeping {child} in again is a disgrace and\r\n"
        "you know it. If you put him in detention one more time I will come into that school and\r\n"
        "sort you out myself. I will make sure everyone knows what a bully you are.\r\n") * 3
REASONS = [{"rule": "insult-to-staff", "evidence": "You are a useless"},
           {"rule": "threat-to-staff", "evidence": "sort you out myself"},
           {"rule": "criticism-words", "evidence": "pathetic"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(work: Path, smtp: int, http_port: int, database: str | None) -> Path:
    db = f'database = "{database}"\n' if database else ""
    schools = "".join(
        f'[[schools]]\nid = "{sid}"\ndomains = ["{dom}"]\nhead_of_school = "head@{dom}"\n'
        f'office = "office@{dom}"\ndsl = "dsl@{dom}"\n' + OPEN + "\n"
        for sid, dom in (("oakfield", DOMAIN), ("hillcrest", "hillcrest.sch.example")))
    path = work / "config.toml"
    path.write_text(f'[gateway]\nstate_dir = "var"\n{db}postmaster = "postmaster@{DOMAIN}"\n\n'
                    f'[smtp]\nlisten = "127.0.0.1:{smtp}"\n\n[delivery]\nmode = "maildir"\n\n'
                    f'[console]\nlisten = "127.0.0.1:{http_port}"\nbase_url = "http://127.0.0.1:{http_port}"\n\n'
                    + schools)
    return path


def fill(config: Path, total: int, review: int) -> tuple[list[int], str]:
    """The database, filled directly through the store's schema; returns the ids in review and a
    sign-in token recorded for the Head."""
    from sqlalchemy import insert

    from gateway import services
    from gateway.app import build_runtime, load_config
    from gateway.store.models import MessageRow
    conf, rules = load_config(config)
    rt = build_runtime(conf, rules)
    rng = random.Random(7)
    start = datetime(2026, 11, 2, 8, tzinfo=timezone.utc)
    in_review = set(rng.sample(range(total), review))
    rows = []
    for i in range(total):
        school = "oakfield" if i % 4 else "hillcrest"
        family = f"parent{i % 400}@parent.example"
        raw = (f"From: Parent {i % 400} <{family}>\r\nTo: teacher{i % 30}@{DOMAIN}\r\n"
               f"Subject: About my child's week, message {i}\r\nDate: Mon, 02 Nov 2026 08:00:00 +0000\r\n"
               f"Message-ID: <bench-{i}@parent.example>\r\nMIME-Version: 1.0\r\n"
               f"Content-Type: text/plain; charset=utf-8\r\n\r\n" + BODY.format(child=f"Child {i % 400}")).encode()
        at = start + timedelta(minutes=i)
        rows.append(dict(school=school, source="smtp", mail_from=family, rcpt_tos=[f"teacher{i % 30}@{DOMAIN}"],
                         peer="127.0.0.1", helo="bench", raw=raw, size=len(raw),
                         sha256=hashlib.sha256(raw).hexdigest(), message_id=f"<bench-{i}@parent.example>",
                         state="in_review" if i in in_review else "delivered", received_at=at, updated_at=at,
                         route="head_of_school" if i in in_review else "staff", tone="abusive",
                         flags=["abusive"], reasons=REASONS if i in in_review else [], family=family,
                         half_term="Nov-Dec 2026", counted=1, thread_id=None, claims=0))
    for chunk in range(0, total, 2000):
        rt.db.transact(lambda s, c=chunk: s.execute(insert(MessageRow), rows[c:c + 2000]))
    from gateway.web.security import new_token, token_hash
    token = new_token()
    services.console_add_link(rt, token_hash(token), HEAD, 60)
    ids = rt.db.transact(lambda s: [r for (r,) in s.execute(
        __import__("sqlalchemy").select(MessageRow.id).where(MessageRow.state == "in_review",
                                                             MessageRow.school == "oakfield"))])
    rt.db.close()
    return ids, token


class Client:
    """One keep-alive HTTP connection carrying the session cookie."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookie = ""

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("pg_console="):
                self.cookie = value.split(";", 1)[0]
        return response.status, text


def timed(client: Client, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        t0 = time.perf_counter()
        status, _ = client.request("GET", path)
        out.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise SystemExit(f"GET {path} answered {status}")
    return out


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=20_000)
    parser.add_argument("--review", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database", help="a postgresql+psycopg:// URL (default: SQLite in the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    work = Path(tempfile.mkdtemp(prefix="pg-bench-console-"))
    smtp, http_port = free_port(), free_port()
    config = write_config(work, smtp, http_port, args.database)
    print(f"console pages: {args.total} messages, {args.review} in review, {args.requests} requests each")
    print("  machine: " + ", ".join(f"{k} {v}" for k, v in describe("starlette", "uvicorn").items()))
    t0 = time.monotonic()
    ids, token = fill(config, args.total, args.review)
    print(f"  database filled in {time.monotonic() - t0:.1f} s")
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "run"], cwd=work,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the console did not start: " + (work / "daemon.log").read_text()[-500:])
                time.sleep(0.1)
        client = Client(http_port)
        _, page = client.request("GET", f"/link/s{token}")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf, "no sign-in form"
        status, _ = client.request("POST", "/link", f"csrf={csrf.group(1)}&token={token}")
        if status != 303:
            raise SystemExit(f"sign-in answered {status}")
        rng = random.Random(11)
        # Warm up each page once (template compilation, first connections), then measure.
        timed(client, ["/ping", "/queue", f"/messages/{ids[0]}"])
        n = args.requests
        trivial = timed(client, ["/ping"] * n)
        queue = timed(client, ["/queue"] * n)
        message = timed(client, [f"/messages/{rng.choice(ids)}" for _ in range(n)])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(trivial)
    print(f"  {'page':<14} {'median ms':>10} {'p95 ms':>10} {'median ratio':>13}")
    for name, values in (("trivial", trivial), ("queue", queue), ("message", message)):
        print(f"  {name:<14} {statistics.median(values):>10.2f} {p95(values):>10.2f} "
              f"{statistics.median(values) / base:>12.1f}x")
    ratio = statistics.median(queue) / base
    verdict = "ok" if ratio < 10 else "TOO SLOW"
    print(f"  queue / trivial = {ratio:.1f}x (target < 10x): {verdict}")
    return 0 if ratio < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
