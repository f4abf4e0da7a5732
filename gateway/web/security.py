"""Sessions, CSRF tokens, sign-in link tokens, rate limits and the security headers of every answer.

A session is a signed cookie (itsdangerous) holding the signed-in address, the CSRF token and when it
began; it is re-signed on every request, so its signature's age is the time since the person was last
active (the idle expiry), while `began` caps the whole session at `session_hours`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "pg_console"
# Signed in but idle this long: signed out (a laptop left open in a staff room).
IDLE_SECONDS = 60 * 60
# Strict: nothing but our own files; no inline script or style, no frames of us or in us.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
       "connect-src 'self'; frame-src 'none'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'")


def token_hash(token: str) -> str:
    """Links are stored only as this hash: a copy of the database signs nobody in."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Session:
    email: str
    csrf: str
    began: float

    @property
    def signed_in(self) -> bool:
        return bool(self.email)


class Sessions:
    """Reads and writes the session cookie."""

    def __init__(self, key: str, session_hours: int, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="parentgate-console-session")
        self._lifetime = session_hours * 3600
        self.secure = secure

    def read(self, cookie: str | None) -> Session:
        """The visitor's session; a fresh anonymous one when there is none or it has run out."""
        if cookie:
            try:
                data: Any = self._serializer.loads(cookie, max_age=min(IDLE_SECONDS, self._lifetime))
                began = float(data["b"])
                if isinstance(data.get("e"), str) and time.time() - began < self._lifetime:
                    return Session(email=data["e"], csrf=str(data["c"]), began=began)
            except (BadSignature, KeyError, TypeError, ValueError):
                pass
        return Session(email="", csrf=new_token(), began=time.time())

    def write(self, session: Session) -> str:
        return self._serializer.dumps({"e": session.email, "c": session.csrf, "b": session.began})

    def cookie_header(self, session: Session) -> str:
        attributes = "Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if self.secure else "")
        return f"{COOKIE}={self.write(session)}; Max-Age={self._lifetime}; {attributes}"


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf, str(submitted))


class RateLimit:
    """At most `limit` events per key in a sliding `window` seconds (kept in memory, per process)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        if len(self._seen) > 10_000:
            self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - self.window}
        return True


class SecurityHeaders:
    """ASGI middleware: the same strict headers on every answer; no caching of anything we serve."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                ours = {b"cache-control", b"content-security-policy", b"x-frame-options", b"referrer-policy",
                        b"x-content-type-options", b"cross-origin-opener-policy"}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in ours]
                headers += [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"no-referrer"), (b"x-content-type-options", b"nosniff"),
                            (b"cross-origin-opener-policy", b"same-origin"),
                            (b"cache-control", b"max-age=3600" if static else b"no-store")]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
