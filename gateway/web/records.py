"""The console's family page (addresses, children, half-term counts, messages, incidents, stage, plan,
block) and the incidents page (the list, a form to record one by hand, the CSV download).

Reads go through `gateway.store.records`, scoped to the schools the person may read; the one write
(recording an incident) goes through `gateway.records`, for a school where the person is the Head.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway import records as services
from gateway.domain.casework import STAGE_LABELS
from gateway.records import CATEGORIES, category_name, label, summary
from gateway.services import ServiceError
from gateway.store import records as queries
from gateway.web.base import _DONE, PageBase
from gateway.web.identity import HEAD, Viewer
from gateway.web.render import headers
from gateway.web.security import Session

log = logging.getLogger("parentgate.console")
STAGES = {stage.value: text for stage, text in STAGE_LABELS.items()}


def _date(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


class RecordPages(PageBase):
    """The family page and the incidents page."""

    def _incident(self, i: queries.Incident) -> dict[str, Any]:
        return {"id": i.id, "when": self._when(i.at), "category": label(i.category), "summary": summary(i.reasons),
                "action": i.action, "actor": i.actor, "note": i.note, "message": i.message, "family": i.family,
                "children": ", ".join(f"{n} ({y})" if y else n for n, y in i.children), "erased": i.erased,
                "school": i.school}

    async def family(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            key = request.path_params["key"]
            now = self.rt.clock.now()
            found = await self.rt.db.run(lambda s: queries.family_overview(s, viewer.readers, key, now))
            if found is None:
                return await self._not_found_page(session)
            stage = found.stages[0] if found.stages else None
            messages = [{"id": m.id, "subject": headers(m.head).get("subject", ""), "when": self._when(m.received_at),
                         "route": m.route, "state": _DONE.get(m.state, m.state)} for m in found.messages]
            plan = found.plan
            plan_text = None
            if plan is not None:
                day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[int(plan["window_day"]) % 7]
                plan_text = (f"{'fortnightly' if plan.get('fortnightly') else 'weekly'}, {day} {plan['window_from']}-"
                             f"{plan['window_to']}, read by {plan['reader']}; review on {plan['review_on']}")
            return self._page(
                "family.html", session, f=found, key=key, quoted=quote(key, safe=""), messages=messages,
                incidents=[self._incident(i) for i in found.incidents], plan=plan, plan_text=plan_text,
                stage=STAGES.get(stage["stage"], stage["stage"]) if stage else "none", stage_row=stage,
                stages=found.stages, blocks=found.blocks, can_act=viewer.can(found.school, HEAD),
                categories=[(c, label(c)) for c in CATEGORIES], school_name=self.rt.config.school(found.school).name,
                banner="Done: the incident is recorded." if request.query_params.get("done") == "incident" else None,
                problem="The incident was not recorded: choose a category and write the action taken."
                if request.query_params.get("problem") else None)
        return await self._guarded(request, page)

    def _filters(self, request: Request) -> dict[str, Any]:
        category = category_name(request.query_params.get("category") or "")
        return {"category": category, "start": _date(request.query_params.get("from")),
                "end": _date(request.query_params.get("to"))}

    async def incidents(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            return await self._incidents_page(session, viewer, self._filters(request),
                                              done=request.query_params.get("done"))
        return await self._guarded(request, page)

    async def _incidents_page(self, session: Session, viewer: Viewer, filters: dict[str, Any], *,
                              done: str | None = None, problem: str | None = None, status: int = 200,
                              form: dict[str, str] | None = None) -> Response:
        if not viewer.readers:
            return await self._not_found_page(session)
        items = await self.rt.db.call(lambda: services.list_incidents(self.rt, schools=viewer.readers, limit=200,
                                                                      **filters))
        query = urlencode({k: v for k, v in (("category", filters["category"]),
                                             ("from", filters["start"] and filters["start"].isoformat()),
                                             ("to", filters["end"] and filters["end"].isoformat())) if v})
        return self._page("incidents.html", session, status, items=[self._incident(i) for i in items],
                          categories=[(c, label(c)) for c in CATEGORIES], filters=filters, query=query,
                          can_record=bool(viewer.schools(HEAD)), form=form or {}, problem=problem,
                          banner=f"Done: incident {done} recorded." if done and done.isdigit() else None)

    async def record_incident(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer) -> Response:
            form = await self._form(request, session)
            heads = viewer.schools(HEAD)
            if not heads:
                return await self._not_found_page(session)
            message = form.get("message", "").strip()
            family = form.get("family", "").strip()[:320]
            try:
                number = await self.rt.db.call(lambda: services.add_incident(
                    self.rt, category=form.get("category", ""), action=form.get("action", "")[:2000],
                    actor=viewer.email, family=family or None,
                    message=int(message) if message.isdigit() else None, note=form.get("note", "")[:2000],
                    schools=heads))
            except ServiceError as exc:
                back = form.get("back", "")
                if back.startswith("/families/"):
                    return RedirectResponse(f"{back}?problem=1", status_code=303)
                return await self._incidents_page(session, viewer, {"category": None, "start": None, "end": None},
                                                  problem=str(exc), status=400, form=form)
            log.info("console: incident %s recorded", number)
            back = form.get("back", "")
            if back.startswith("/families/") and "//" not in back:
                return RedirectResponse(f"{back}?done=incident", status_code=303)
            return RedirectResponse(f"/incidents?done={number}", status_code=303)
        return await self._guarded(request, act)

    async def incidents_csv(self, request: Request) -> Response:
        async def download(session: Session, viewer: Viewer) -> Response:
            if not viewer.readers:
                return await self._not_found_page(session)
            filters = dict(self._filters(request), family=(request.query_params.get("family") or "")[:320] or None)
            body = await self.rt.db.call(lambda: services.incidents_csv(self.rt, schools=viewer.readers, **filters))
            return Response(body.encode("utf-8"), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="incidents.csv"',
                                     "X-Content-Type-Options": "nosniff"})
        return await self._guarded(request, download)
