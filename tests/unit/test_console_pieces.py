"""The console's pure pieces: [console] configuration, who may sign in, rendering, sessions, rate limits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner

from gateway.config import ConfigError, load
from gateway.web.identity import viewer_for
from gateway.web.render import mark, render, sanitise
from gateway.web.security import IDLE_SECONDS, RateLimit, Session, Sessions
from tests.support import DSL, HEAD, OFFICE, write_config

CONSOLE = ('[console]\nlisten = "127.0.0.1:8025"\nbase_url = "https://gw.example/"\n\n'
           '[[console.users]]\nemail = "Ceo@Trust.example"\nrole = "trust"\nschools = ["oakfield"]\n')


def test_console_keys_and_users_are_read_with_their_defaults(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, extra=CONSOLE))
    assert config.console is not None
    assert (config.console.host, config.console.port) == ("127.0.0.1", 8025)
    assert config.console.base_url == "https://gw.example" and config.console.secure
    assert (config.console.session_hours, config.console.link_minutes) == (8, 15)
    assert config.console.users[0].email == "ceo@trust.example"


@pytest.mark.parametrize("bad, key", [
    ('[console]\nbase_url = "ftp://x"\n', "base_url"),
    ('[console]\n[[console.users]]\nemail = "a@b.example"\nrole = "king"\nschools = ["oakfield"]\n', "role"),
    ('[console]\n[[console.users]]\nemail = "a@b.example"\nrole = "head"\nschools = ["nowhere"]\n', "schools"),
    ('[console]\nlisten_on = "x"\n', "listen_on"),
])
def test_a_bad_console_table_names_the_key(tmp_path: Path, bad: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write_config(tmp_path, extra=bad))
    assert key in str(exc.value)


def test_roles_come_from_the_schools_and_the_console_users(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, extra=CONSOLE))
    assert viewer_for(config, HEAD.upper()).roles == {"oakfield": frozenset({"head"})}  # type: ignore[union-attr]
    assert viewer_for(config, DSL).schools("dsl") == {"oakfield"}  # type: ignore[union-attr]
    assert viewer_for(config, OFFICE).readers == frozenset()  # type: ignore[union-attr]
    trust = viewer_for(config, "ceo@trust.example")
    assert trust is not None and trust.readers == {"oakfield"} and not trust.can("oakfield", "head")
    assert viewer_for(config, "someone@parent.example") is None


def test_evidence_is_marked_across_line_breaks_and_everything_else_escaped() -> None:
    out = str(mark("<b>I will sort\r\nyou out</b> & more", ["sort you out"]))
    assert out == "&lt;b&gt;I will <mark>sort\r\nyou out</mark>&lt;/b&gt; &amp; more"


def test_html_only_mail_keeps_text_and_harmless_tags_and_loses_everything_active() -> None:
    html = ('<p onclick="x()">You are useless</p><script>alert(1)</script><img src="http://t/p.png">'
            '<a href="javascript:alert(1)">a</a><a href="https://ok.example/">b</a><iframe src="http://t"></iframe>'
            '<style>@import url(http://t/c.css);</style><form action="http://t"><input></form>'
            '<div style="background:url(http://t/bg)">x</div>')
    out = str(sanitise(html, ["useless"]))
    for gone in ("script", "alert", "img", "iframe", "style", "@import", "form", "input", "onclick", "javascript"):
        assert gone not in out, gone
    assert "<mark>useless</mark>" in out and 'href="https://ok.example/"' in out


def test_attachments_are_listed_and_text_is_preferred_to_html() -> None:
    raw = (b"From: a@b.example\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
           b"--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x\r\nContent-Type: text/html\r\n"
           b"Content-Disposition: attachment; filename=\"a.html\"\r\n\r\n<script>x</script>\r\n--x--\r\n")
    out = render(raw, [])
    assert not out.is_html and "hello" in str(out.body)
    assert [a.filename for a in out.attachments] == ["a.html"]


def test_a_session_cookie_that_was_tampered_with_idle_too_long_or_too_old_is_anonymous(monkeypatch) -> None:
    sessions = Sessions("k" * 48, 8, secure=True)
    now = time.time()
    cookie = sessions.write(Session(email=HEAD, csrf="t", began=now))
    assert sessions.read(cookie).email == HEAD and sessions.read(cookie).csrf == "t"
    assert sessions.read(cookie[:-2] + "xx").email == ""
    assert Sessions("other-key" * 6, 8, secure=False).read(cookie).email == ""
    # Begun nine hours ago: past session_hours, however active.
    assert sessions.read(sessions.write(Session(email=HEAD, csrf="t", began=now - 9 * 3600))).email == ""
    # Last signed (last active) more than an hour ago: idle, signed out.
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(now) - IDLE_SECONDS - 5)
    idle = sessions.write(Session(email=HEAD, csrf="t", began=now - 100))
    monkeypatch.undo()
    assert sessions.read(idle).email == ""
    header = sessions.cookie_header(Session(email=HEAD, csrf="t", began=now))
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header


def test_rate_limit_counts_per_key_in_a_sliding_window() -> None:
    limit = RateLimit(2, 60)
    assert limit.allow("a", 0) and limit.allow("a", 1) and not limit.allow("a", 2)
    assert limit.allow("b", 2)
    assert limit.allow("a", 61)
