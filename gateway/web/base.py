"""What every console page shares: who is asking (the one place that decides), forms checked for
their CSRF token, and pages rendered with the session cookie renewed (so the idle expiry slides)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from gateway.act.transport import Transport
from gateway.domain.states import State
from gateway.store import console as queries
from gateway.web.identity import DSL, HEAD, TRUST, Viewer, viewer_for
from gateway.web.render import headers
from gateway.web.security import COOKIE, RateLimit, Session, Sessions, csrf_ok
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.console")
HERE = Path(__file__).parent
PAGE_SIZE = 50
_DONE = {State.QUEUED.value: "sent on to the addressee", State.DELIVERED.value: "delivered",
         State.FORWARDED.value: "forwarded", State.HELD.value: "held until the school opens",
         State.DISMISSED.value: "dismissed (kept, not delivered)",
         State.BLOCKED.value: "blocked sender (kept, not delivered)", State.IN_REVIEW.value: "waiting for review",
         State.FAILED.value: "delivery failed"}


def _home(viewer: Viewer | None) -> str:
    """Where a person starts: the review queue, the safeguarding page or the held mail."""
    if viewer is None or viewer.readers:
        return "/queue"
    return "/safeguarding" if viewer.schools(DSL) else "/held"


class Forbidden(Exception):
    """A POST without a valid CSRF token."""


class PageBase:
    """Shared by the console's page groups; `Console` in pages.py sets these attributes."""

    rt: Runtime
    sessions: Sessions
    templates: Environment
    mailer: Transport
    per_address: RateLimit
    per_client: RateLimit
    _sending: set[Any]

    def _session(self, request: Request) -> Session:
        return self.sessions.read(request.cookies.get(COOKIE))

    def _viewer(self, session: Session) -> Viewer | None:
        return viewer_for(self.rt.config, session.email) if session.signed_in else None

    async def _form(self, request: Request, session: Session) -> dict[str, str]:
        form = await request.form()
        submitted = form.get("csrf")
        if not csrf_ok(session, submitted if isinstance(submitted, str) else None):
            raise Forbidden
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def _page(self, template: str, session: Session, status: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("viewer", self._viewer(session))
        html = self.templates.get_template(template).render(csrf=session.csrf, **values)
        response = HTMLResponse(html, status_code=status)
        response.headers.append("set-cookie", self.sessions.cookie_header(session))
        return response

    def _problem(self, session: Session, status: int, heading: str, text: str) -> HTMLResponse:
        return self._page("problem.html", session, status, heading=heading, text=text)

    def _when(self, t: datetime | None) -> str:
        return t.astimezone(self.rt.config.tz).strftime("%a %d %b %Y, %H:%M") if t else "-"

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self._problem(self._session(request), 404, "Not found",
                             "There is nothing here, or it is not yours to see.")

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse("Method not allowed", status_code=405)

    async def _guarded(self, request: Request, handler: Callable[[Session, Viewer], Awaitable[Response]]) -> Response:
        session = self._session(request)
        viewer = self._viewer(session)
        if viewer is None:
            return RedirectResponse("/", status_code=303)
        try:
            return await handler(session, viewer)
        except Forbidden:
            return self._problem(session, 403, "Refused", "The form had expired. Go back, reload and try again.")

    async def _not_found_page(self, session: Session) -> Response:
        return self._problem(session, 404, "Not found", "There is nothing here, or it is not yours to see.")

    def _visible(self, viewer: Viewer) -> frozenset[str]:
        """Schools whose messages may be loaded at all; `Viewer.may_read` then decides per message."""
        return viewer.schools(HEAD, TRUST, DSL)

    def _item(self, item: queries.QueueItem) -> dict[str, Any]:
        h = headers(item.head)
        return {"id": item.id, "subject": h.get("subject", ""), "sender": h.get("from") or item.mail_from,
                "to": h.get("to", ""), "family": item.family, "received": self._when(item.received_at),
                "school": item.school, "rules": sorted({r for r, _ in item.reasons}), "reasons": item.reasons,
                "state": _DONE.get(item.state, item.state)}
