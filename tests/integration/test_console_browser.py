"""The Head of School's console in a real browser: Playwright driving Debian's chromium against the real
daemon (a subprocess) and an SMTP sink on loopback."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.integration.test_crash import start_daemon
from tests.integration.test_dsl_digest import ETHIOPIC, FLAG_RULES, FLAGGED, ROUTINE
from tests.integration.test_metrics import stop
from gateway.triage.rules import default_rules_dir
from tests.support import DOMAIN, HEAD, STAFF, Sink, always_open, free_port, write_config

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                               "(pip install -e '.[test]')")
pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is missing (apt-get install -y chromium)")]

OTHER_DOMAIN = "hillcrest.sch.example"
OTHER_HEAD = f"head@{OTHER_DOMAIN}"
CLOSED_DOMAIN = "closed.sch.example"
HOSTILE = ("You are a useless, pathetic excuse for a teacher. Keeping {child} in again is a disgrace and\r\n"
           "you know it. If you put him in detention one more time I will come into that school and\r\n"
           "sort you out myself. I will make sure everyone knows what a bully you are.\r\n")
XSS_SUBJECT = '<img src=x onerror="window.__pwned=2"> you are a disgrace'


def raw(mid: str, sender: str, to: str, subject: str, body: str | None, html: str | None = None) -> bytes:
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Thu, 03 Dec 2026 19:12:00 +0000\r\n"
            f"Message-ID: <{mid}@parent.example>\r\nMIME-Version: 1.0\r\n")
    if html is None:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + (body or "")).encode()
    return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode()


class Pixel(http.server.BaseHTTPRequestHandler):
    """A remote host (tracking pixels, frames, style sheets) that a rendered message must never reach."""

    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        Pixel.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def poll(fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    return fn()


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.sink = Sink().start()
        self.signed_in: dict[str, tuple[Any, str]] = {}
        self.smtp, self.http = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http}"
        # The shipped rules and a school's own flag rules (possible safeguarding, needs an interpreter).
        rules = tmp / "rules"
        shutil.copytree(default_rules_dir(), rules)
        (rules / "school-flags.toml").write_text(FLAG_RULES, encoding="utf-8")
        self.cfg = write_config(tmp, smtp_port=self.smtp, sink_port=self.sink.port, retry_first="1s",
                                gateway_extra=os.environ.get("PG_TEST_GATEWAY_EXTRA", "") + f'\nrules_dir = "{rules}"\n',
                                extra=f'[console]\nlisten = "127.0.0.1:{self.http}"\nbase_url = "{self.base}"\n')
        # A second school, with its own Head, shares the gateway.
        with self.cfg.open("a") as f:
            f.write(f'\n[[schools]]\nid = "hillcrest"\nname = "Hillcrest School"\ndomains = ["{OTHER_DOMAIN}"]\n'
                    f'head_of_school = "{OTHER_HEAD}"\noffice = "office@{OTHER_DOMAIN}"\n'
                    f'dsl = "dsl@{OTHER_DOMAIN}"\n' + always_open().replace("[schools.", "[schools."))
            # A third school is closed all the time (its first half-term is years away): its mail is held.
            f.write(f'\n[[schools]]\nid = "closed"\nname = "Closed School"\ndomains = ["{CLOSED_DOMAIN}"]\n'
                    f'head_of_school = "head@{CLOSED_DOMAIN}"\noffice = "office@{CLOSED_DOMAIN}"\n'
                    f'dsl = "dsl@{CLOSED_DOMAIN}"\n[[schools.half_terms]]\nname = "Later"\n'
                    f'start = 2034-01-02\nend = 2034-02-10\n')
        self.log = tmp / "daemon.log"
        self.proc = start_daemon(self.cfg, self.smtp, self.log)
        self.pixel = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pixel)
        threading.Thread(target=self.pixel.serve_forever, daemon=True).start()

    def cli(self, *args: str) -> str:
        return self.run(*args).stdout

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "--config", str(self.cfg), *args],
                              capture_output=True, text=True, timeout=60)

    def review_ids(self) -> set[int]:
        return {int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s", self.cli("review", "list"), re.M)}

    def state(self, message_id: int) -> str:
        return self.cli("show", str(message_id)).split(":", 1)[1].split(",")[0].strip()

    def submit(self, data: bytes, to: str = STAFF, sender: str = "parent@parent.example") -> int:
        """Send one message and return its id once it waits for review."""
        before = self.review_ids()
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=30) as s:
            s.sendmail(sender, [to], data)
        new = poll(lambda: self.review_ids() - before)
        assert new, "the message never reached the review queue"
        return max(new)

    def ids_routed(self, route: str) -> set[int]:
        out = self.cli("queue", "--limit", "1000")
        return {int(m.group(1)) for m in re.finditer(rf"^\s*(\d+)\s+\S+\s+{route}\s", out, re.M)}

    def ids_held(self) -> set[int]:
        return {int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s", self.cli("held"), re.M)}

    def close(self) -> None:
        stop(self.proc)
        self.sink.stop()
        self.pixel.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    s = Setup(tmp_path_factory.mktemp("console"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def browser(setup: Setup) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def link_for(setup: Setup, address: str, after: int) -> str | None:
    for r in setup.sink.snapshot()[after:]:
        if address in r.rcpts and r.message["X-Parentgate"] == "console-sign-in":
            urls = re.findall(r"https?://\S+", r.message.get_body(("plain",)).get_content())
            return str(urls[0]) if urls else None
    return None


def sign_in(setup: Setup, browser: Any, address: str = HEAD) -> tuple[Any, Any, str]:
    """A signed-in page for `address`, and the link that signed it in. One sign-in per address for the
    module: the console allows only a few links per address in 15 minutes."""
    if address in setup.signed_in:
        ctx, link = setup.signed_in[address]
        page = ctx.new_page()
        page.goto(setup.base + "/")
        return ctx, page, link
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(setup.base + "/")
    page.get_by_label("Email address").fill(address)
    mark = len(setup.sink.snapshot())
    page.get_by_role("button", name=re.compile("sign-in link", re.I)).click()
    page.get_by_text("a sign-in link is on its way").wait_for()
    link = poll(lambda: link_for(setup, address, mark))
    assert link and link.startswith(setup.base + "/")
    page.goto(link)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(setup.base) + "/(queue|safeguarding|held)$"))
    setup.signed_in[address] = (ctx, link)
    return ctx, page, link


def test_the_emailed_link_signs_in_only_when_pressed_and_only_once(setup: Setup, browser: Any) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(setup.base + "/")
    page.get_by_label("Email address").fill(HEAD)
    mark = len(setup.sink.snapshot())
    page.get_by_role("button", name=re.compile("sign-in link", re.I)).click()
    page.get_by_text("a sign-in link is on its way").wait_for()
    link = poll(lambda: link_for(setup, HEAD, mark))
    assert link
    # Opening the link (as a mail scanner would) signs nobody in.
    page.goto(link)
    page.goto(setup.base + "/queue")
    assert page.url == setup.base + "/"
    page.goto(link)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(setup.base + "/queue")
    assert page.get_by_role("heading", name="Review queue").is_visible()
    cookie = next(c for c in ctx.cookies() if c["name"] == "pg_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    # The same link, used again in another browser, signs nobody in.
    other = browser.new_context().new_page()
    other.goto(link)
    assert other.get_by_role("button", name="Sign in").count() == 0
    assert "no longer works" in other.content()
    other.goto(setup.base + "/queue")
    assert other.url == setup.base + "/"
    # An address nobody configured gets the same answer, and no mail.
    mark = len(setup.sink.snapshot())
    other.goto(setup.base + "/")
    other.get_by_label("Email address").fill("stranger@parent.example")
    other.get_by_role("button", name=re.compile("sign-in link", re.I)).click()
    other.get_by_text("a sign-in link is on its way").wait_for()
    time.sleep(1)
    assert not [r for r in setup.sink.snapshot()[mark:] if "stranger@parent.example" in r.rcpts]


def test_the_queue_marks_the_evidence_and_release_delivers_the_original_byte_identical(
        setup: Setup, browser: Any) -> None:
    data = raw("release-1", "Darren Cole <darren.cole@parent.example>", STAFF, "Tyler's detention",
               HOSTILE.format(child="Tyler"))
    message_id = setup.submit(data)
    summary = poll(lambda: [r for r in setup.sink.to(HEAD) if r.message["X-Parentgate"] == "review-summary"
                            and f"/messages/{message_id}" in r.message.get_body(("plain",)).get_content()])
    assert summary, "the Head's summary does not link to the message's page"
    assert summary[0].message["Reply-To"] == HEAD
    assert "parentgate review" not in summary[0].data.decode(errors="replace")
    _ctx, page, _ = sign_in(setup, browser)
    page.get_by_role("link", name="Tyler's detention").click()
    page.wait_for_url(f"{setup.base}/messages/{message_id}")
    page.wait_for_load_state()
    page.locator("pre.text mark").first.wait_for(timeout=10_000)
    marks = page.locator("pre.text mark").all_inner_texts()
    assert any(re.search(r"useless|pathetic|sort you out", t, re.I) for t in marks), page.content()
    assert "sends it to" in page.content()
    page.get_by_role("button", name="Release").click()
    page.wait_for_url(re.compile(r"done=release"))
    arrived = poll(lambda: [r for r in setup.sink.to(STAFF) if r.data.endswith(data)])
    assert arrived, "the released message did not reach the teacher"
    trace, _, rest = arrived[0].data.partition(b"\r\n\t")
    assert trace.startswith(b"Received: from ") and arrived[0].data.index(data) > 0
    assert arrived[0].data[arrived[0].data.index(data) - 2:arrived[0].data.index(data)] == b"\r\n"
    assert message_id not in setup.review_ids()
    assert f"by {HEAD}" in setup.cli("show", str(message_id))


def test_dismiss_needs_a_note_and_every_post_needs_the_csrf_token(setup: Setup, browser: Any) -> None:
    message_id = setup.submit(raw("dismiss-1", "Lee Grant <lee.grant@parent.example>", STAFF, "Mia's reading book",
                                  HOSTILE.format(child="Mia")))
    ctx, page, _ = sign_in(setup, browser)
    page.goto(f"{setup.base}/messages/{message_id}")
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    # Without the token (but with the session cookie) a POST is refused, and nothing changes.
    for action in ("release", "dismiss"):
        r = ctx.request.post(f"{setup.base}/messages/{message_id}/{action}", form={"note": "x"}, max_redirects=0)
        assert r.status == 403
    r = ctx.request.post(f"{setup.base}/messages/{message_id}/release", form={"csrf": "forged"}, max_redirects=0)
    assert r.status == 403
    assert message_id in setup.review_ids()
    # Without a note, Dismiss is refused (by the server, whatever the browser's form checks do).
    r = ctx.request.post(f"{setup.base}/messages/{message_id}/dismiss", form={"csrf": token, "note": "  "},
                         max_redirects=0)
    assert r.status == 400 and "Write a note" in r.text()
    assert message_id in setup.review_ids()
    page.get_by_label("Note").fill("Spoke to the parent by phone.")
    page.get_by_role("button", name="Dismiss").click()
    page.wait_for_url(re.compile(r"done=dismiss"))
    assert "dismissed" in page.content()
    shown = setup.cli("show", str(message_id))
    assert "dismissed" in shown and f"by {HEAD}" in shown and "Spoke to the parent by phone." in shown


def test_a_head_of_one_school_gets_404_for_another_schools_message(setup: Setup, browser: Any) -> None:
    ours = setup.submit(raw("scope-1", "Kerry Moss <kerry.moss@parent.example>", f"a.reid@{OTHER_DOMAIN}",
                            "Jayden's report card", HOSTILE.format(child="Jayden")), to=f"a.reid@{OTHER_DOMAIN}")
    ctx, page, _ = sign_in(setup, browser, HEAD)
    assert "Jayden's report card" not in page.content()
    response = page.goto(f"{setup.base}/messages/{ours}")
    assert response is not None and response.status == 404 and "Jayden" not in page.content()
    assert page.goto(f"{setup.base}/messages/999999").status == 404
    assert page.goto(f"{setup.base}/messages/{ours}/attachments/0").status == 404
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    r = ctx.request.post(f"{setup.base}/messages/{ours}/release", form={"csrf": token}, max_redirects=0)
    assert r.status == 404
    assert ours in setup.review_ids()
    # Its own Head sees it.
    _ctx2, page2, _ = sign_in(setup, browser, OTHER_HEAD)
    assert "Jayden's report card" in page2.content()
    assert page2.goto(f"{setup.base}/messages/{ours}").status == 200


def test_hostile_markup_in_a_parents_message_renders_inert_and_loads_nothing(setup: Setup, browser: Any) -> None:
    port = setup.pixel.server_address[1]
    html = ("<html><head><style>@import url(http://127.0.0.1:{p}/css);</style></head><body>"
            "<p>You are a useless, pathetic excuse for a teacher.</p><script>window.__pwned=1</script>"
            '<img src="http://127.0.0.1:{p}/pixel.png" onerror="window.__pwned=4">'
            '<a href="javascript:window.__pwned=3">click</a><a href="https://example.org/">site</a>'
            '<iframe src="http://127.0.0.1:{p}/frame"></iframe>'
            '<form action="http://127.0.0.1:{p}/form"><input name=a></form>'
            '<div style="background:url(http://127.0.0.1:{p}/bg)">I will sort you out</div>'
            '<svg onload="window.__pwned=5"></svg></body></html>').format(p=port)
    message_id = setup.submit(raw("xss-1", "Sam Hale <sam.hale@parent.example>", STAFF, XSS_SUBJECT, None, html))
    ctx, page, _ = sign_in(setup, browser)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    assert page.get_by_role("link", name=re.compile("you are a disgrace")).count() == 1
    assert page.evaluate("() => window.__pwned") is None
    page.get_by_role("link", name=re.compile("you are a disgrace")).click()
    page.wait_for_url(f"{setup.base}/messages/{message_id}")
    page.wait_for_load_state("networkidle")
    assert page.evaluate("() => window.__pwned") is None and not dialogs
    assert page.locator(".html mark").count() >= 1
    for tag in ("script", "img", "iframe", "form input[name=a]", "style", "svg"):
        assert page.locator(f"main .html {tag}").count() == 0, tag
    hrefs = [a.get_attribute("href") or "" for a in page.locator("a").all()]
    assert not [h for h in hrefs if h.lower().startswith("javascript:")]
    assert page.locator("h1").inner_text() == XSS_SUBJECT
    assert Pixel.hits == []
    response = page.goto(f"{setup.base}/messages/{message_id}")
    assert response is not None
    h = response.headers
    assert "default-src 'self'" in h["content-security-policy"] and "unsafe-inline" not in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer"
    assert h["cache-control"] == "no-store" and h["x-content-type-options"] == "nosniff"


def test_the_log_carries_no_subject_or_body(setup: Setup) -> None:
    text = setup.log.read_text(errors="replace")
    assert "console listening" in text
    for secret in ("pathetic excuse", "Tyler's detention", "you are a disgrace", "reading book"):
        assert secret.lower() not in text.lower()


def test_a_reply_written_in_the_console_reaches_the_parent_threaded_and_recorded(setup: Setup, browser: Any) -> None:
    message_id = setup.submit(raw("reply-1", "Nina Shah <nina.shah@parent.example>", STAFF, "Aiden's trip",
                                  HOSTILE.format(child="Aiden")), sender="nina.shah@parent.example")
    _ctx, page, _ = sign_in(setup, browser)
    page.goto(f"{setup.base}/messages/{message_id}")
    page.get_by_label("Your reply").fill("Dear Ms Shah,\nPlease come in on Monday at 9 so that we can talk.\n")
    page.get_by_role("button", name="Send reply").click()
    page.wait_for_url(re.compile(r"done=reply"))
    replies = poll(lambda: [r for r in setup.sink.to("nina.shah@parent.example")
                            if r.message["X-Parentgate"] == "head-reply"])
    assert replies, "the reply did not reach the parent"
    reply = replies[0]
    assert reply.mail_from == HEAD and str(reply.message["From"]).endswith(f"<{HEAD}>")
    assert reply.message["In-Reply-To"] == "<reply-1@parent.example>"
    assert reply.message["References"] == "<reply-1@parent.example>"
    assert reply.message["Subject"] == "Re: Aiden's trip"
    assert "come in on Monday" in reply.message.get_body(("plain",)).get_content()
    assert f"replied to nina.shah@parent.example by {HEAD}" in setup.cli("show", str(message_id))
    # Replying does not take the message out of review: the Head still decides on it.
    assert message_id in setup.review_ids()


def test_screenshots_of_the_queue_and_a_message_page_on_a_laptop_and_a_phone(
        setup: Setup, browser: Any, tmp_path: Path) -> None:
    """The README's pictures: PG_CONSOLE_SCREENSHOTS=docs writes them there, else into the test's folder."""
    import os
    out = Path(os.environ.get("PG_CONSOLE_SCREENSHOTS") or tmp_path)
    message_id = setup.submit(raw("shot-1", "Chris Lowe <chris.lowe@parent.example>", STAFF,
                                  "Year 4 homework is ridiculous", HOSTILE.format(child="Ellie")))
    ctx, _page, _ = sign_in(setup, browser)
    page = ctx.new_page()
    page.set_viewport_size({"width": 1200, "height": 800})
    page.goto(setup.base + "/queue")
    page.screenshot(path=str(out / "console-queue.png"), full_page=True)
    page.goto(f"{setup.base}/messages/{message_id}")
    page.locator("pre.text mark").first.wait_for()
    page.screenshot(path=str(out / "console-message.png"), full_page=True)
    phone = ctx.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto(f"{setup.base}/messages/{message_id}")
    # On a phone nothing is wider than the screen: the layout is one column.
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(out / "console-message-phone.png"))
    for name in ("console-queue.png", "console-message.png", "console-message-phone.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_dsl_sees_safeguarding_messages_unseen_first_and_marks_them_seen(setup: Setup, browser: Any) -> None:
    dsl = f"dsl@{DOMAIN}"
    before = setup.ids_routed("dsl")
    with smtplib.SMTP("127.0.0.1", setup.smtp, timeout=30) as s:
        s.sendmail("amy.ford@parent.example", [STAFF], raw(
            "sg-1", "Amy Ford <amy.ford@parent.example>", STAFF, "Worried about Leo",
            "Leo told me last night that his stepdad hits him and he is scared to go home on Fridays.\r\n"))
    new = poll(lambda: setup.ids_routed("dsl") - before)
    assert new
    message_id = max(new)
    # The DSL's copy says why it came and links to the Safeguarding page, with the original attached.
    copies = poll(lambda: [r for r in setup.sink.to(dsl) if r.message["X-Parentgate"] == "dsl-copy"])
    assert copies
    note = copies[0].message.get_body(("plain",)).get_content()
    assert "stepdad hits him" in note and f"{setup.base}/safeguarding" in note
    assert b"Leo told me last night" in copies[0].data
    ctx, page, _ = sign_in(setup, browser, dsl)
    # The DSL starts on the Safeguarding page and has no review queue.
    page.goto(setup.base + "/")
    page.wait_for_url(setup.base + "/safeguarding")
    card = page.locator(".card.unseen", has_text="Worried about Leo")
    assert card.count() == 1 and card.locator("mark").count() >= 1
    assert page.goto(setup.base + "/queue").url == setup.base + "/safeguarding"
    # The DSL may open it, but not a message in the Head's review queue.
    assert page.goto(f"{setup.base}/messages/{message_id}").status == 200
    in_review = sorted(setup.review_ids())
    if in_review:
        assert page.goto(f"{setup.base}/messages/{in_review[0]}").status == 404
    page.goto(setup.base + "/safeguarding")
    page.locator(".card", has_text="Worried about Leo").get_by_role("button", name="Seen").click()
    page.wait_for_url(setup.base + "/safeguarding")
    page.get_by_text(f"Seen by {dsl}").wait_for()
    assert page.locator(".card.unseen", has_text="Worried about Leo").count() == 0
    assert f"seen by {dsl}" in setup.cli("show", str(message_id))


def test_the_dsl_opens_a_flagged_message_from_its_digest_and_the_page_shows_both_flags(
        setup: Setup, browser: Any) -> None:
    dsl = f"dsl@{DOMAIN}"
    before = setup.ids_routed("staff")
    with smtplib.SMTP("127.0.0.1", setup.smtp, timeout=30) as s:
        s.sendmail("priya@parent.example", [STAFF], raw("pf-1", "Priya <priya@parent.example>", STAFF, "Ali",
                                                         FLAGGED + ETHIOPIC))
        s.sendmail("priya@parent.example", [STAFF], raw("pf-2", "Priya <priya@parent.example>", STAFF, "Book",
                                                         ROUTINE))
    new = poll(lambda: len(setup.ids_routed("staff") - before) == 2 and setup.ids_routed("staff") - before)
    flagged, routine = sorted(new)
    shown = setup.cli("show", str(flagged))
    assert "possible-safeguarding" in shown and "needs-interpreter" in shown
    ctx, page, _ = sign_in(setup, browser, dsl)
    # The digest's link opens the message for the DSL, though it was routed to the teacher ...
    assert page.goto(f"{setup.base}/messages/{flagged}").status == 200
    flags = page.locator("dd .flag").all_inner_texts()
    assert any("Possible safeguarding concern" in f for f in flags)
    assert any("Needs an interpreter" in f for f in flags)
    # The DSL records having looked at it, as for the messages sent to the DSL at once.
    page.get_by_role("button", name="Seen").click()
    page.wait_for_url(f"{setup.base}/messages/{flagged}?done=seen")
    page.get_by_text(f"Seen by {dsl}").wait_for()
    assert f"seen by {dsl}" in setup.cli("show", str(flagged))
    # ... but routine mail to a teacher stays the Head's to read.
    assert page.goto(f"{setup.base}/messages/{routine}").status == 404


def test_held_mail_is_listed_with_its_time_and_released_early_by_the_office(setup: Setup, browser: Any) -> None:
    office = f"office@{CLOSED_DOMAIN}"
    before = setup.ids_held()
    data = raw("held-1", "Jo Park <jo.park@parent.example>", f"t.west@{CLOSED_DOMAIN}", "PE kit", "Hello, is PE on Tuesday?\r\n")
    with smtplib.SMTP("127.0.0.1", setup.smtp, timeout=30) as s:
        s.sendmail("jo.park@parent.example", [f"t.west@{CLOSED_DOMAIN}"], data)
    new = poll(lambda: setup.ids_held() - before)
    assert new
    _ctx, page, _ = sign_in(setup, browser, office)
    assert page.url == setup.base + "/held"
    card = page.locator(".card", has_text="PE kit")
    assert card.count() == 1 and "2034" in card.inner_text()
    card.get_by_role("button", name="Release now").click()
    page.wait_for_url(setup.base + "/held")
    assert poll(lambda: [r for r in setup.sink.to(f"t.west@{CLOSED_DOMAIN}") if r.data.endswith(data)])
    assert max(new) not in setup.ids_held()
    page.reload()
    assert page.locator(".card", has_text="PE kit").count() == 0


def test_forward_to_the_dsl_and_the_activity_page_shows_console_and_cli_actions(setup: Setup, browser: Any) -> None:
    message_id = setup.submit(raw("fwd-1", "Rob Dale <rob.dale@parent.example>", STAFF, "Sports day",
                                  HOSTILE.format(child="Max")))
    _ctx, page, _ = sign_in(setup, browser)
    page.goto(f"{setup.base}/messages/{message_id}")
    page.get_by_label("Message for the DSL").fill("Please look at the family's file.")
    page.get_by_role("button", name="Forward to the DSL").click()
    page.wait_for_url(re.compile(r"done=forward"))
    sent = poll(lambda: [r for r in setup.sink.to(f"dsl@{DOMAIN}") if r.message["X-Parentgate"] == "dsl-forward"])
    assert sent and "Please look at the family's file." in sent[0].message.get_body(("plain",)).get_content()
    assert message_id in setup.review_ids()
    # An operator dismisses another message on the server; the Activity page shows both people's actions.
    other = setup.submit(raw("fwd-2", "Rob Dale <rob.dale@parent.example>", STAFF, "Sports day again",
                             HOSTILE.format(child="Max")))
    setup.cli("review", "dismiss", str(other), "--note", "dealt with by phone", "--actor", "itmanager")
    page.goto(setup.base + "/activity")
    text = page.locator("table.activity").inner_text()
    assert "forwarded to the DSL" in text and HEAD in text
    assert "itmanager" in text and "dealt with by phone" in text
    page.goto(setup.base + "/activity?person=itmanager")
    assert HEAD not in page.locator("table.activity").inner_text()


def test_attachments_download_only_as_attachments_with_nosniff(setup: Setup, browser: Any) -> None:
    boundary = "att-b"
    data = ("From: Kim Lee <kim.lee@parent.example>\r\nTo: " + STAFF + "\r\nSubject: Report attached\r\n"
            "Date: Thu, 03 Dec 2026 19:12:00 +0000\r\nMessage-ID: <att-1@parent.example>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + HOSTILE.format(child="Sam") + f"--{boundary}\r\n"
            'Content-Type: text/html; name="page.html"\r\nContent-Disposition: attachment; filename="page.html"\r\n\r\n'
            f"<script>window.__pwned=9</script>\r\n--{boundary}--\r\n").encode()
    message_id = setup.submit(data, sender="kim.lee@parent.example")
    ctx, page, _ = sign_in(setup, browser)
    page.goto(f"{setup.base}/messages/{message_id}")
    link = page.get_by_role("link", name="page.html")
    href = link.get_attribute("href")
    assert href == f"/messages/{message_id}/attachments/1"
    r = ctx.request.get(setup.base + href)
    assert r.status == 200 and r.body().startswith(b"<script>")
    assert r.headers["content-disposition"] == 'attachment; filename="page.html"'
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-type"] == "application/octet-stream"
