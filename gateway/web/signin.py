"""Signing in with an emailed link: ask for a link, open it, press "Sign in"; and signing out.

The answer to a request never says whether the address is known; a GET on the link changes nothing
(mail scanners open every link), only the POST spends it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway import services
from gateway.store import console as queries
from gateway.web.base import Forbidden, PageBase, _home
from gateway.web.identity import viewer_for
from gateway.web.security import COOKIE, Session, new_token, token_hash

log = logging.getLogger("parentgate.console")


class SignInPages(PageBase):
    """The sign-in pages."""

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
