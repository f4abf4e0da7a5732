"""The pages for the DSL and the office: Safeguarding (with "Seen"), Held mail (release early), and
the Activity page of every action people took, in the console or on the server."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway import services
from gateway.domain.states import State
from gateway.store import console as queries
from gateway.web.base import PAGE_SIZE, PageBase
from gateway.web.identity import DSL, HEAD, OFFICE, Viewer, for_dsl
from gateway.web.security import Session

log = logging.getLogger("parentgate.console")


def _action(src: str | None, dst: str, reason: str) -> str:
    """An event as a line of the activity page (the reason is the operator's own words)."""
    if reason.startswith(("replied", "forwarded", "seen by")):
        return reason.split(" by ", 1)[0] if reason.startswith("seen") else reason.split(":")[0]
    if reason.startswith("incident recorded"):
        return reason.rsplit(" by ", 1)[0]
    if dst == State.DISMISSED.value:
        return "dismissed" + (": " + reason.split(": ", 1)[1] if ": " in reason else "")
    if src == State.IN_REVIEW.value:
        return "released" + (" (held until the school opens)" if dst == State.HELD.value else "")
    if src == State.HELD.value:
        return "released early"
    return f"{src or 'new'} → {dst}: {reason}"


class RolePages(PageBase):
    """Safeguarding, held mail and activity."""

    async def seen(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer) -> Response:
            await self._form(request, session)
            message_id = request.path_params["id"]
            view = await self.rt.db.run(lambda s: queries.message_view(s, viewer.schools(DSL), message_id))
            if view is None or not for_dsl(view.route, view.flags):
                return await self._not_found_page(session)
            await self.rt.db.call(lambda: services.mark_seen(self.rt, message_id, viewer.email))
            # A message from the digest is not on the Safeguarding page: back to the message itself.
            back = "/safeguarding" if view.route == "dsl" else f"/messages/{message_id}?done=seen"
            return RedirectResponse(back, status_code=303)
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
