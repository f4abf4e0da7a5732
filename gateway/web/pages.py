"""The console's application: its routes, the review queue and the message page with its actions.

Handlers read through `gateway.store.console` (every query scoped by `Viewer`) and change things
only through `gateway.services`. A GET never changes anything; every POST carries the CSRF token.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway import services
from gateway.act.reply import parent_address
from gateway.act.transport import Transport
from gateway.domain.states import State
from gateway.store import console as queries
from gateway.web.base import _DONE, HERE, PAGE_SIZE, _home
from gateway.web.identity import DSL, HEAD, Viewer, for_dsl
from gateway.web.render import attachments, headers, parse, render
from gateway.web.casework import CaseworkPages, routes as casework_routes
from gateway.web.records import RecordPages
from gateway.web.roles import RolePages
from gateway.web.security import RateLimit, SecurityHeaders, Session, Sessions
from gateway.web.signin import SignInPages
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.console")


# The flags that mean someone else has this message too, in the words the page shows.
FLAG_TEXT = {
    "possible-safeguarding": "Possible safeguarding concern: delivered as usual and listed in the DSL's digest",
    "needs-interpreter": "Needs an interpreter: a copy went to the office to arrange one",
}


class Console(SignInPages, RolePages, RecordPages, CaseworkPages):
    """The console's state: the runtime, templates, sessions and limits; `app` is the ASGI app."""

    def __init__(self, rt: Runtime, signing_key: str, mailer: Transport) -> None:
        assert rt.config.console is not None
        self.rt = rt
        self.mailer = mailer
        self.sessions = Sessions(signing_key, rt.config.console.session_hours, rt.config.console.secure)
        self.per_address = RateLimit(5, 15 * 60)
        self.per_client = RateLimit(20, 15 * 60)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))
        self._sending: set[Any] = set()
        routes = [
            Route("/", self.home), Route("/sign-in", self.request_link, methods=["POST"]),
            Route("/link/{token}", self.show_link), Route("/link", self.use_link, methods=["POST"]),
            Route("/sign-out", self.sign_out, methods=["POST"]), Route("/queue", self.queue),
            Route("/messages/{id:int}", self.message),
            Route("/messages/{id:int}/release", self.release, methods=["POST"]),
            Route("/messages/{id:int}/dismiss", self.dismiss, methods=["POST"]),
            Route("/messages/{id:int}/reply", self.reply, methods=["POST"]),
            Route("/messages/{id:int}/forward", self.forward, methods=["POST"]),
            Route("/messages/{id:int}/seen", self.seen, methods=["POST"]),
            Route("/held", self.held), Route("/held/{id:int}/release", self.release_held, methods=["POST"]),
            Route("/safeguarding", self.safeguarding), Route("/activity", self.activity),
            Route("/families/{key}", self.family), Route("/incidents", self.incidents),
            Route("/incidents", self.record_incident, methods=["POST"]),
            Route("/incidents.csv", self.incidents_csv),
            Route("/messages/{id:int}/attachments/{n:int}", self.attachment),
            *casework_routes(self),
            Route("/ping", self.ping), Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={404: self._not_found, 405: self._not_allowed})
        self.app = SecurityHeaders(app)

    async def ping(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def queue(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            if not viewer.readers:
                return RedirectResponse(_home(viewer), status_code=303)
            school = request.query_params.get("school") or None
            reason = (request.query_params.get("reason") or "").strip()[:64] or None
            before = request.query_params.get("before")
            before_id = int(before) if before and before.isdigit() else None
            items = await self.rt.db.run(lambda s: queries.messages_in(
                s, viewer.readers, State.IN_REVIEW.value, school=school, reason=reason, limit=PAGE_SIZE,
                before=before_id))
            shown = []
            for item in items:
                h = headers(item.head)
                shown.append({"id": item.id, "subject": h.get("subject", ""), "sender": h.get("from") or item.mail_from,
                              "family": item.family, "received": self._when(item.received_at),
                              "school": item.school, "rules": sorted({r for r, _ in item.reasons})})
            more = (urlencode({k: v for k, v in (("school", school), ("reason", reason),
                                                  ("before", str(items[-1].id))) if v})
                    if len(items) == PAGE_SIZE else "")
            schools = [s for s in self.rt.config.schools if s.id in viewer.readers]
            return self._page("queue.html", session, items=shown, schools=schools, school=school or "",
                              reason=reason or "", more=more)
        return await self._guarded(request, page)

    async def message(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            return await self._message_page(session, viewer, request.path_params["id"],
                                            done=request.query_params.get("done"))
        return await self._guarded(request, page)

    async def _message_page(self, session: Session, viewer: Viewer, message_id: int, *, done: str | None = None,
                            problem: str | None = None, status: int = 200) -> Response:
        def read(s: Any) -> Any:
            view = queries.message_view(s, self._visible(viewer), message_id)
            if view is None or not viewer.may_read(view.school, view.route, view.flags):
                return None
            return view, queries.related(s, view), queries.message_events(s, view.id)
        found = await self.rt.db.run(read)
        if found is None:
            return await self._not_found_page(session)
        view, (family, thread), events = found
        body = render(view.raw, [e for _, e in view.reasons])
        h = headers(view.raw[:queries.HEAD_BYTES].split(b"\r\n\r\n", 1)[0])
        status_text = _DONE.get(view.state, view.state)
        if view.state == State.HELD.value and view.release_at:
            status_text = f"held until {self._when(view.release_at)}"
        banner = ("Done: sent to the DSL with your note." if done == "forward" else
                  "Done: recorded that you have seen it." if done == "seen" else
                  f"Done: your reply to {parent_address(view.raw, view.mail_from)} is on its way." if done == "reply"
                  else f"Done: this message is now {status_text}." if done else None)
        return self._page(
            "message.html", session, status, m=view, h=h, body=body, received=self._when(view.received_at),
            state_text=status_text, banner=banner, problem=problem,
            flagged=[FLAG_TEXT[f] for f in view.flags if f in FLAG_TEXT],
            can_act=view.state == State.IN_REVIEW.value and viewer.can(view.school, HEAD),
            can_reply=viewer.can(view.school, HEAD), reply_to=parent_address(view.raw, view.mail_from),
            can_see=for_dsl(view.route, view.flags) and viewer.can(view.school, DSL),
            seen=(await self.rt.db.run(lambda s: queries.seen_by(s, [view.id]))).get(view.id),
            release_text=self._release_text(view), family=self._related(family), thread=self._related(thread),
            events=[{"when": self._when(at), "what": f"{src or 'new'} → {dst}", "actor": actor}
                    for at, src, dst, actor, _reason in events])

    def _related(self, rows: list[queries.Related]) -> list[dict[str, Any]]:
        return [{"id": r.id, "subject": headers(r.head).get("subject", ""), "when": self._when(r.received_at),
                 "route": r.route, "state": _DONE.get(r.state, r.state)} for r in rows]

    def _release_text(self, view: queries.MessageView) -> str:
        to = ", ".join(view.rcpts)
        try:
            at = self.rt.config.school(view.school).calendar.release_time(self.rt.clock.now())
        except (KeyError, ValueError):
            at = None
        if at is None:
            return f"Release sends it to {to} now."
        return f"The school is closed: Release holds it for {to} until {self._when(at)}, when the school opens."

    async def _on_message(self, request: Request, act: Callable[
            [Session, Viewer, str, queries.MessageView, dict[str, str]], Awaitable[Response]]) -> Response:
        """A Head's action on one message: the form read (its CSRF token checked), the message found
        among the Head's schools (404 otherwise), then `act(session, viewer, message_id, view, form)`."""
        async def guarded(session: Session, viewer: Viewer) -> Response:
            form = await self._form(request, session)
            message_id = request.path_params["id"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, viewer.schools(HEAD), message_id))
            if view is None:
                return await self._not_found_page(session)
            return await act(session, viewer, message_id, view, form)
        return await self._guarded(request, guarded)

    async def _no_longer_in_review(self, session: Session, viewer: Viewer, message_id: str) -> Response:
        return await self._message_page(session, viewer, message_id, status=409,
                                        problem="This message is no longer waiting for review.")

    async def release(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer, message_id: str, view: queries.MessageView,
                      form: dict[str, str]) -> Response:
            try:
                await self.rt.db.call(lambda: services.review_release(self.rt, message_id, viewer.email))
            except services.ServiceError:
                return await self._no_longer_in_review(session, viewer, message_id)
            self.rt.wake_delivery()
            log.info("console: message %s released", message_id)
            return RedirectResponse(f"/messages/{message_id}?done=release", status_code=303)
        return await self._on_message(request, act)

    async def dismiss(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer, message_id: str, view: queries.MessageView,
                      form: dict[str, str]) -> Response:
            note = form.get("note", "").strip()[:2000]
            if not note:
                return await self._message_page(session, viewer, message_id, status=400,
                                                problem="Write a note saying why the message is kept back.")
            try:
                await self.rt.db.call(lambda: services.review_dismiss(self.rt, message_id, viewer.email, note))
            except services.ServiceError:
                return await self._no_longer_in_review(session, viewer, message_id)
            log.info("console: message %s dismissed", message_id)
            return RedirectResponse(f"/messages/{message_id}?done=dismiss", status_code=303)
        return await self._on_message(request, act)

    async def reply(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer, message_id: str, view: queries.MessageView,
                      form: dict[str, str]) -> Response:
            text = form.get("reply", "").replace("\r\n", "\n").strip()[:20000]
            if not text:
                return await self._message_page(session, viewer, message_id, status=400,
                                                problem="Write your reply before sending it.")
            name = self.rt.config.school(view.school).name
            await self.rt.db.call(lambda: services.reply_as_head(self.rt, message_id, viewer.email,
                                                                 f"Head of School, {name}", text))
            self.rt.wake_delivery()
            log.info("console: message %s replied to", message_id)
            return RedirectResponse(f"/messages/{message_id}?done=reply", status_code=303)
        return await self._on_message(request, act)

    async def forward(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer, message_id: str, view: queries.MessageView,
                      form: dict[str, str]) -> Response:
            note = form.get("note", "").strip()[:2000]
            if not note:
                return await self._message_page(session, viewer, message_id, status=400,
                                                problem="Write a note for the DSL before forwarding.")
            await self.rt.db.call(lambda: services.forward_to_dsl(self.rt, message_id, viewer.email, note))
            self.rt.wake_delivery()
            log.info("console: message %s forwarded to the DSL", message_id)
            return RedirectResponse(f"/messages/{message_id}?done=forward", status_code=303)
        return await self._on_message(request, act)

    async def attachment(self, request: Request) -> Response:
        async def download(session: Session, viewer: Viewer) -> Response:
            message_id, n = request.path_params["id"], request.path_params["n"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, self._visible(viewer), message_id))
            if view is None or not viewer.may_read(view.school, view.route, view.flags):
                return await self._not_found_page(session)
            for info, part in attachments(parse(view.raw)):
                if info.index == n:
                    payload = part.get_payload(decode=True)
                    safe = "".join(c for c in info.filename if c.isalnum() or c in "._- ")[:100] or "attachment"
                    return Response(payload if isinstance(payload, bytes) else b"",
                                    media_type="application/octet-stream",
                                    headers={"Content-Disposition": f'attachment; filename="{safe}"',
                                             "X-Content-Type-Options": "nosniff"})
            return await self._not_found_page(session)
        return await self._guarded(request, download)
