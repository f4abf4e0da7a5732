"""The console's casework: the Plans and Blocks pages, and the forms behind the family page's buttons
(start or end a plan, block or lift a block, escalate with the letter drafted, edited, sent by email
or downloaded as text).

Reads and writes go through `gateway.casework`, scoped to the schools where the person is the Head
(lists: the schools they may read). Every POST carries the CSRF token.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway import casework as services
from gateway.services import ServiceError
from gateway.domain.states import State
from gateway.store import console as queries
from gateway.web.base import PAGE_SIZE, PageBase
from gateway.web.identity import HEAD, Viewer
from gateway.web.security import Session

log = logging.getLogger("parentgate.console")
STAGE_CHOICES = (("meeting", "Request a meeting"), ("warning", "Formal warning"),
                 ("legal-advice", "Advice from the local authority's legal team"),
                 ("ban", "Ban from the site and from contacting staff"))
_LONG = 20000
FamilyPage = Callable[..., Awaitable[Response]]
FamilyAction = Callable[[services.FamilyRef, dict[str, str], Viewer], Awaitable[str]]


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text.strip()) if text and text.strip() else None
    except ValueError:
        raise ServiceError(f"{text!r} is not a date (YYYY-MM-DD)") from None


class CaseworkPages(PageBase):
    """Plans, blocks, and a family's plan, block and escalation forms."""

    async def plans(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            if not viewer.readers:
                return await self._not_found_page(session)
            items = await self.rt.db.call(lambda: services.list_plans(self.rt, viewer.readers))
            shown = [{"v": v, "next": self._when(v.next_window), "ended": self._when(v.ended_at),
                      "quoted": quote(v.family_id, safe="")} for v in items]
            return self._page("plans.html", session, items=shown)
        return await self._guarded(request, page)

    async def blocks(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            if not viewer.readers:
                return await self._not_found_page(session)
            items = await self.rt.db.call(lambda: services.list_blocks(self.rt, viewer.readers))
            shown = [{"v": v, "until": self._when(v.until), "since": self._when(v.created_at),
                      "lifted": self._when(v.lifted_at),
                      "quoted": quote(v.family_id or v.address or "", safe="")} for v in items]
            schools = viewer.schools(HEAD)
            kept = await self.rt.db.run(lambda s: queries.messages_in(s, schools, State.BLOCKED.value,
                                                                      limit=PAGE_SIZE)) if schools else []
            return self._page("blocks.html", session, items=shown, kept=[self._item(i) for i in kept])
        return await self._guarded(request, page)

    async def _family(self, viewer: Viewer, key: str) -> services.FamilyRef | None:
        heads = viewer.schools(HEAD)
        if not heads:
            return None

        def find() -> services.FamilyRef | None:
            try:
                return self.rt.db.transact(lambda s: services.find_family(s, key, heads))
            except ServiceError:
                return None
        return await self.rt.db.call(find)

    async def plan_form(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            return await self._plan_page(session, viewer, request.path_params["key"])
        return await self._guarded(request, page)

    async def _plan_page(self, session: Session, viewer: Viewer, key: str, *, problem: str | None = None,
                         form: dict[str, str] | None = None, status: int = 200) -> Response:
        family = await self._family(viewer, key)
        if family is None:
            return await self._not_found_page(session)
        plan = await self.rt.db.call(lambda: services.plan_of(self.rt, family.school, family.family_id))
        school = self.rt.config.school(family.school)
        return self._page("family_plan.html", session, status, key=key, quoted=quote(key, safe=""), family=family,
                          plan=plan, next=self._when(plan.next_window) if plan else "", problem=problem,
                          form=form or {}, head=school.head_of_school)

    async def _family_act(self, request: Request, shown_by: FamilyPage, action: FamilyAction) -> Response:
        """A family form's POST: the CSRF token checked, the family found in the person's own schools, the
        action done through gateway.casework (it returns where to go next, "" for the family page), and the
        form shown again with the reason when it is refused."""
        async def act(session: Session, viewer: Viewer) -> Response:
            form = await self._form(request, session)
            key = request.path_params["key"]
            family = await self._family(viewer, key)
            if family is None:
                return await self._not_found_page(session)
            try:
                where = await action(family, form, viewer)
            except ServiceError as exc:
                return await shown_by(session, viewer, key, problem=str(exc), form=form, status=400)
            return RedirectResponse(where or f"/families/{quote(key, safe='')}", status_code=303)
        return await self._guarded(request, act)

    async def plan_act(self, request: Request) -> Response:
        async def act(family: services.FamilyRef, form: dict[str, str], viewer: Viewer) -> str:
            heads = frozenset({family.school})
            if form.get("action") == "end":
                await self.rt.db.call(lambda: services.end_plan(
                    self.rt, family.family_id, note=form.get("note", "")[:2000], actor=viewer.email, schools=heads))
            else:
                review = _day(form.get("review"))
                await self.rt.db.call(lambda: services.start_plan(
                    self.rt, family.family_id, window=form.get("window", "")[:64],
                    fortnightly=form.get("fortnightly") == "on", reader=form.get("reader", "").strip()[:320] or None,
                    review=review, note=form.get("note", "")[:2000], actor=viewer.email, schools=heads))
            log.info("console: plan %s for a family", "ended" if form.get("action") == "end" else "started")
            return ""
        return await self._family_act(request, self._plan_page, act)

    async def block_form(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            return await self._block_page(session, viewer, request.path_params["key"])
        return await self._guarded(request, page)

    async def _block_page(self, session: Session, viewer: Viewer, key: str, *, problem: str | None = None,
                          form: dict[str, str] | None = None, status: int = 200) -> Response:
        family = await self._family(viewer, key)
        if family is None:
            return await self._not_found_page(session)
        everything = await self.rt.db.call(lambda: services.list_blocks(self.rt, frozenset({family.school}),
                                                                        active_only=True))
        mine = [b for b in everything if b.family_id == family.family_id or b.address in family.addresses]
        shown = [{"v": b, "until": self._when(b.until), "target": b.family_id or b.address or ""} for b in mine]
        return self._page("family_block.html", session, status, key=key, quoted=quote(key, safe=""), family=family,
                          blocks=shown, problem=problem, form=form or {})

    async def block_act(self, request: Request) -> Response:
        async def act(family: services.FamilyRef, form: dict[str, str], viewer: Viewer) -> str:
            target = form.get("target", "")
            if target not in (family.family_id, *family.addresses):
                raise ServiceError("Choose the family or one of its addresses.")
            heads = frozenset({family.school})
            note = form.get("note", "")[:2000]
            if form.get("action") == "lift":
                await self.rt.db.call(lambda: services.unblock(self.rt, target, note=note, actor=viewer.email,
                                                               schools=heads))
            else:
                until = _day(form.get("until"))
                await self.rt.db.call(lambda: services.block(self.rt, target, note=note, actor=viewer.email,
                                                             until=until, schools=heads))
            log.info("console: block %s", "lifted" if form.get("action") == "lift" else "added")
            return ""
        return await self._family_act(request, self._block_page, act)

    async def escalate_form(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            return await self._escalate_page(session, viewer, request.path_params["key"])
        return await self._guarded(request, page)

    async def _escalate_page(self, session: Session, viewer: Viewer, key: str, *, problem: str | None = None,
                             form: dict[str, str] | None = None, status: int = 200) -> Response:
        family = await self._family(viewer, key)
        if family is None:
            return await self._not_found_page(session)
        stages, letters = await self.rt.db.call(lambda: services.family_casework(self.rt, family.school,
                                                                                 family.family_id))
        return self._page("family_escalate.html", session, status, key=key, quoted=quote(key, safe=""),
                          family=family, stages=[dict(s=s, when=self._when(s.at)) for s in reversed(stages)],
                          letters=[dict(l=le, when=self._when(le.created_at), sent=self._when(le.sent_at))
                                   for le in reversed(letters)],
                          choices=STAGE_CHOICES, problem=problem, form=form or {})

    async def escalate_act(self, request: Request) -> Response:
        async def act(family: services.FamilyRef, form: dict[str, str], viewer: Viewer) -> str:
            until = _day(form.get("until"))
            done = await self.rt.db.call(lambda: services.escalate(
                self.rt, family.family_id, stage=form.get("stage", ""), note=form.get("note", "")[:2000],
                actor=viewer.email, until=until, schools=frozenset({family.school})))
            log.info("console: a family escalated to %s", done.stage.value)
            return f"/letters/{done.letter_id}" if done.letter_id is not None else ""
        return await self._family_act(request, self._escalate_page, act)

    async def letter(self, request: Request) -> Response:
        async def page(session: Session, viewer: Viewer) -> Response:
            return await self._letter_page(session, viewer, request.path_params["id"],
                                           done=request.query_params.get("done"))
        return await self._guarded(request, page)

    async def _letter_page(self, session: Session, viewer: Viewer, letter_id: int, *, done: str | None = None,
                           problem: str | None = None, text: str | None = None, status: int = 200) -> Response:
        heads = viewer.schools(HEAD)
        found = await self.rt.db.call(lambda: services.get_letter(self.rt, letter_id, heads)) if heads else None
        if found is None:
            return await self._not_found_page(session)
        banner = {"sent": f"Sent to {', '.join(found.sent_to)}.", "saved": "The draft is saved."}.get(done or "")
        return self._page("letter.html", session, status, letter=found, text=text if text is not None else found.draft,
                          sent=self._when(found.sent_at), banner=banner, problem=problem,
                          quoted=quote(found.family_id, safe=""))

    async def letter_act(self, request: Request) -> Response:
        async def act(session: Session, viewer: Viewer) -> Response:
            form = await self._form(request, session)
            letter_id = request.path_params["id"]
            heads = viewer.schools(HEAD)
            if not heads:
                return await self._not_found_page(session)
            text = form.get("text", "")[:_LONG]
            try:
                if form.get("action") == "send":
                    await self.rt.db.call(lambda: services.send_letter(self.rt, letter_id, actor=viewer.email,
                                                                       text=text, schools=heads))
                    self.rt.wake_delivery()
                    done = "sent"
                else:
                    await self.rt.db.call(lambda: services.save_letter(self.rt, letter_id, text=text, schools=heads))
                    done = "saved"
            except ServiceError as exc:
                return await self._letter_page(session, viewer, letter_id, problem=str(exc), text=text, status=400)
            log.info("console: letter %s %s", letter_id, done)
            return RedirectResponse(f"/letters/{letter_id}?done={done}", status_code=303)
        return await self._guarded(request, act)

    async def letter_text(self, request: Request) -> Response:
        async def download(session: Session, viewer: Viewer) -> Response:
            heads = viewer.schools(HEAD)
            letter_id = request.path_params["id"]
            found = await self.rt.db.call(lambda: services.get_letter(self.rt, letter_id, heads)) if heads else None
            if found is None:
                return await self._not_found_page(session)
            name = f"letter-{found.id}-{found.kind}.txt"
            return Response(found.draft.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8"),
                            media_type="text/plain; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"',
                                     "X-Content-Type-Options": "nosniff"})
        return await self._guarded(request, download)


def routes(pages: CaseworkPages) -> list[Any]:
    from starlette.routing import Route
    return [
        Route("/plans", pages.plans), Route("/blocks", pages.blocks),
        Route("/families/{key}/plan", pages.plan_form), Route("/families/{key}/plan", pages.plan_act, methods=["POST"]),
        Route("/families/{key}/block", pages.block_form),
        Route("/families/{key}/block", pages.block_act, methods=["POST"]),
        Route("/families/{key}/escalate", pages.escalate_form),
        Route("/families/{key}/escalate", pages.escalate_act, methods=["POST"]),
        Route("/letters/{id:int}", pages.letter), Route("/letters/{id:int}", pages.letter_act, methods=["POST"]),
        Route("/letters/{id:int}.txt", pages.letter_text),
    ]
