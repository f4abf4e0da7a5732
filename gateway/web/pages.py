"""The console's pages: sign-in, the review queue and the message page, with their two actions.

Handlers read through `gateway.store.console` (every query scoped by `Viewer`) and change things
only through `gateway.services`. A GET never changes anything; every POST carries the CSRF token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway import services
from gateway.act.reply import parent_address
from gateway.act.transport import Transport
from gateway.domain.states import State
from gateway.store import console as queries
from gateway.web.identity import DSL, HEAD, OFFICE, TRUST, Viewer, viewer_for
from gateway.web.render import attachments, headers, parse, render
from gateway.web.security import (COOKIE, RateLimit, SecurityHeaders, Session, Sessions, csrf_ok, new_token,
                                  token_hash)
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.console")
HERE = Path(__file__).parent
PAGE_SIZE = 50
_DONE = {State.QUEUED.value: "sent on to the addressee", State.DELIVERED.value: "delivered",
         State.FORWARDED.value: "forwarded", State.HELD.value: "held until the school opens",
         State.DISMISSED.value: "dismissed (kept, not delivered)", State.IN_REVIEW.value: "waiting for review",
         State.FAILED.value: "delivery failed"}


def _home(viewer: Viewer | None) -> str:
    """Where a person starts: the review queue, the safeguarding page or the held mail."""
    if viewer is None or viewer.readers:
        return "/queue"
    return "/safeguarding" if viewer.schools(DSL) else "/held"


def _action(src: str | None, dst: str, reason: str) -> str:
    """An event as a line of the activity page (the reason is the operator's own words)."""
    if reason.startswith(("replied", "forwarded", "seen by")):
        return reason.split(" by ", 1)[0] if reason.startswith("seen") else reason.split(":")[0]
    if dst == State.DISMISSED.value:
        return "dismissed" + (": " + reason.split(": ", 1)[1] if ": " in reason else "")
    if src == State.IN_REVIEW.value:
        return "released" + (" (held until the school opens)" if dst == State.HELD.value else "")
    if src == State.HELD.value:
        return "released early"
    return f"{src or 'new'} → {dst}: {reason}"


class Forbidden(Exception):
    """A POST without a valid CSRF token."""


class Console:
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
            Route("/messages/{id:int}/attachments/{n:int}", self.attachment),
            Route("/ping", self.ping), Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={404: self._not_found, 405: self._not_allowed})
        self.app = SecurityHeaders(app)

    # The one place that says who is asking: every page calls this before it reads anything.

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

    # Signing in.

    async def home(self, request: Request) -> Response:
        session = self._session(request)
        viewer = self._viewer(session)
        if viewer is not None:
            return RedirectResponse(_home(viewer), status_code=303)
        return self._page("sign_in.html", session, minutes=self.rt.config.console.link_minutes)  # type: ignore[union-attr]

    async def request_link(self, request: Request) -> Response:
        session = self._session(request)
        try:
            form = await self._form(request, session)
        except Forbidden:
            return self._problem(session, 403, "Refused", "The form had expired. Reload the page and try again.")
        email = form.get("email", "").strip().lower()[:320]
        client = request.client.host if request.client else "?"
        minutes = self.rt.config.console.link_minutes  # type: ignore[union-attr]
        if not email or "@" not in email:
            return self._page("sign_in.html", session, 400, problem="Type your school email address.", minutes=minutes)
        if not self.per_client.allow(client) or not self.per_address.allow(email):
            return self._page("sign_in.html", session, 429, minutes=minutes,
                              problem="Too many sign-in links were asked for. Wait a few minutes and try again.")
        # The answer is the same whether or not the address may sign in, and the mail goes out after
        # the answer, so that neither the page nor its timing says which addresses are known.
        if viewer_for(self.rt.config, email) is not None:
            task = asyncio.ensure_future(self._send_link(email))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return self._page("sign_in.html", session, sent=email, minutes=minutes)

    async def _send_link(self, email: str) -> None:
        token = new_token()
        console = self.rt.config.console
        assert console is not None
        try:
            await self.rt.db.call(lambda: services.console_add_link(self.rt, token_hash(token), email,
                                                                    console.link_minutes))
            data = self._link_mail(email, f"{console.base_url}/link/s{token}", console.link_minutes)
            outcome = await self.mailer.send(self.rt.config.gateway.postmaster, [email], data)
        except Exception:  # noqa: BLE001 - a failed send is logged; the person asks again
            log.exception("console: could not send a sign-in link")
            return
        log.info("console: sign-in link sent ok=%s", outcome.ok)

    def _link_mail(self, email: str, url: str, minutes: int) -> bytes:
        msg = EmailMessage()
        msg["From"] = Address("School email console", addr_spec=self.rt.config.gateway.postmaster)
        msg["To"] = email
        msg["Subject"] = "Your sign-in link for the school email console"
        msg["Date"] = format_datetime(self.rt.clock.now())
        msg["Message-ID"] = make_msgid(domain=self.rt.config.smtp.hostname)
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Parentgate"] = "console-sign-in"
        msg.set_content(f"Open this link to sign in to the school email console:\n\n{url}\n\n"
                        f"It works once, for {minutes} minutes. If you did not ask for it, ignore this email.\n")
        return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    async def show_link(self, request: Request) -> Response:
        session = self._session(request)
        token = request.path_params["token"][1:]
        email = await self.rt.db.run(lambda s: queries.peek_link(s, token_hash(token), self.rt.clock.now()))
        return self._page("link.html", session, valid=email is not None, token=token)

    async def use_link(self, request: Request) -> Response:
        session = self._session(request)
        try:
            form = await self._form(request, session)
        except Forbidden:
            return self._problem(session, 403, "Refused", "The form had expired. Open the link again.")
        token = form.get("token", "")
        email = await self.rt.db.call(lambda: services.console_use_link(self.rt, token_hash(token)))
        if email is None or viewer_for(self.rt.config, email) is None:
            return self._page("link.html", session, 400, valid=False, token="")
        log.info("console: signed in")
        # A new CSRF token with the new session: nothing learned before signing in carries over.
        fresh = Session(email=email, csrf=new_token(), began=time.time())
        response = RedirectResponse(_home(viewer_for(self.rt.config, email)), status_code=303)
        response.headers.append("set-cookie", self.sessions.cookie_header(fresh))
        return response

    async def sign_out(self, request: Request) -> Response:
        session = self._session(request)
        try:
            await self._form(request, session)
        except Forbidden:
            return self._problem(session, 403, "Refused", "The form had expired.")
        response = RedirectResponse("/", status_code=303)
        response.headers.append("set-cookie", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax")
        return response

    async def ping(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    # The review queue and the message page.

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

    def _visible(self, viewer: Viewer) -> frozenset[str]:
        """Schools whose messages may be loaded at all; `Viewer.may_read` then decides per message."""
        return viewer.schools(HEAD, TRUST, DSL)

    async def message(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            return await self._message_page(session, viewer, request.path_params["id"],
                                            done=request.query_params.get("done"))
        return await self._guarded(request, page)

    async def _message_page(self, session: Session, viewer: Viewer, message_id: int, *, done: str | None = None,
                            problem: str | None = None, status: int = 200) -> Response:
        def read(s: Any) -> Any:
            view = queries.message_view(s, self._visible(viewer), message_id)
            if view is None or not viewer.may_read(view.school, view.route):
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
            can_act=view.state == State.IN_REVIEW.value and viewer.can(view.school, HEAD),
            can_reply=viewer.can(view.school, HEAD), reply_to=parent_address(view.raw, view.mail_from),
            can_see=view.route == "dsl" and viewer.can(view.school, DSL),
            seen=(await self.rt.db.run(lambda s: queries.seen_by(s, [view.id]))).get(view.id),
            release_text=self._release_text(view), family=self._related(family), thread=self._related(thread),
            events=[{"when": self._when(at), "what": f"{src or 'new'} → {dst}", "actor": actor}
                    for at, src, dst, actor, _reason in events])

    async def _not_found_page(self, session: Session) -> Response:
        return self._problem(session, 404, "Not found", "There is nothing here, or it is not yours to see.")

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

    async def release(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer) -> Response:
            await self._form(request, session)
            message_id = request.path_params["id"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, viewer.schools(HEAD), message_id))
            if view is None:
                return await self._not_found_page(session)
            try:
                await self.rt.db.call(lambda: services.review_release(self.rt, message_id, viewer.email))
            except services.ServiceError:
                return await self._message_page(session, viewer, message_id, status=409,
                                                problem="This message is no longer waiting for review.")
            self.rt.wake_delivery()
            log.info("console: message %s released", message_id)
            return RedirectResponse(f"/messages/{message_id}?done=release", status_code=303)
        return await self._guarded(request, act)

    async def dismiss(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer) -> Response:
            form = await self._form(request, session)
            message_id = request.path_params["id"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, viewer.schools(HEAD), message_id))
            if view is None:
                return await self._not_found_page(session)
            note = form.get("note", "").strip()[:2000]
            if not note:
                return await self._message_page(session, viewer, message_id, status=400,
                                                problem="Write a note saying why the message is kept back.")
            try:
                await self.rt.db.call(lambda: services.review_dismiss(self.rt, message_id, viewer.email, note))
            except services.ServiceError:
                return await self._message_page(session, viewer, message_id, status=409,
                                                problem="This message is no longer waiting for review.")
            log.info("console: message %s dismissed", message_id)
            return RedirectResponse(f"/messages/{message_id}?done=dismiss", status_code=303)
        return await self._guarded(request, act)

    async def reply(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer) -> Response:
            form = await self._form(request, session)
            message_id = request.path_params["id"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, viewer.schools(HEAD), message_id))
            if view is None:
                return await self._not_found_page(session)
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
        return await self._guarded(request, act)

    async def forward(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer) -> Response:
            form = await self._form(request, session)
            message_id = request.path_params["id"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, viewer.schools(HEAD), message_id))
            if view is None:
                return await self._not_found_page(session)
            note = form.get("note", "").strip()[:2000]
            if not note:
                return await self._message_page(session, viewer, message_id, status=400,
                                                problem="Write a note for the DSL before forwarding.")
            await self.rt.db.call(lambda: services.forward_to_dsl(self.rt, message_id, viewer.email, note))
            self.rt.wake_delivery()
            log.info("console: message %s forwarded to the DSL", message_id)
            return RedirectResponse(f"/messages/{message_id}?done=forward", status_code=303)
        return await self._guarded(request, act)

    async def seen(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer) -> Response:
            await self._form(request, session)
            message_id = request.path_params["id"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, viewer.schools(DSL), message_id))
            if view is None or view.route != "dsl":
                return await self._not_found_page(session)
            await self.rt.db.call(lambda: services.mark_seen(self.rt, message_id, viewer.email))
            return RedirectResponse("/safeguarding", status_code=303)
        return await self._guarded(request, act)

    async def safeguarding(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            schools = viewer.schools(DSL)
            if not schools:
                return await self._not_found_page(session)

            def read(s: Any) -> Any:
                items = queries.messages_in(s, schools, None, route="dsl", limit=PAGE_SIZE)
                return items, queries.seen_by(s, [i.id for i in items])
            items, seen = await self.rt.db.run(read)
            shown = [dict(self._item(i), seen=seen.get(i.id), seen_text=(
                f"Seen by {seen[i.id][0]}, {self._when(seen[i.id][1])}" if i.id in seen else "")) for i in items]
            return self._page("safeguarding.html", session, items=shown)
        return await self._guarded(request, page)

    async def held(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            schools = viewer.schools(OFFICE, HEAD)
            if not schools:
                return await self._not_found_page(session)
            items = await self.rt.db.run(lambda s: queries.messages_in(s, schools, State.HELD.value,
                                                                       limit=PAGE_SIZE * 4))
            shown = [dict(self._item(i), until=self._when(i.release_at), link=viewer.may_read(i.school, i.route))
                     for i in items]
            return self._page("held.html", session, items=shown)
        return await self._guarded(request, page)

    async def release_held(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer) -> Response:
            await self._form(request, session)
            message_id = request.path_params["id"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, viewer.schools(OFFICE, HEAD), message_id))
            if view is None:
                return await self._not_found_page(session)
            try:
                await self.rt.db.call(lambda: services.release(self.rt, [message_id], viewer.email))
            except services.ServiceError:
                pass
            self.rt.wake_delivery()
            log.info("console: held message %s released early", message_id)
            return RedirectResponse("/held", status_code=303)
        return await self._guarded(request, act)

    async def activity(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            schools = viewer.readers
            if not schools:
                return await self._not_found_page(session)
            person = (request.query_params.get("person") or "").strip()[:320] or None
            day = request.query_params.get("day") or ""
            since = until = None
            try:
                if day:
                    start = datetime.fromisoformat(day).replace(tzinfo=self.rt.config.tz)
                    since, until = start, start + timedelta(days=1)
            except ValueError:
                day = ""
            rows = await self.rt.db.run(lambda s: queries.activity(s, schools, actor=person, since=since,
                                                                   until=until))
            shown = [{"when": self._when(a.at), "actor": a.actor, "message": a.message,
                      "what": _action(a.from_state, a.to_state, a.reason)} for a in rows]
            return self._page("activity.html", session, rows=shown, person=person or "", day=day)
        return await self._guarded(request, page)

    def _item(self, item: queries.QueueItem) -> dict[str, Any]:
        h = headers(item.head)
        return {"id": item.id, "subject": h.get("subject", ""), "sender": h.get("from") or item.mail_from,
                "to": h.get("to", ""), "family": item.family, "received": self._when(item.received_at),
                "school": item.school, "rules": sorted({r for r, _ in item.reasons}), "reasons": item.reasons,
                "state": _DONE.get(item.state, item.state)}

    async def attachment(self, request: Request) -> Response:
        async def download(session: Session, viewer: Viewer) -> Response:
            message_id, n = request.path_params["id"], request.path_params["n"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, self._visible(viewer), message_id))
            if view is None or not viewer.may_read(view.school, view.route):
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
