"""The console's casework in a real browser (Playwright driving Debian's chromium) against the real daemon
and an SMTP sink: a plan started and ended from the family page, a block added and lifted, escalation
with the letter drafted, edited, downloaded and sent from the Head's address; the Plans and Blocks
pages; scoping to the Head's schools and CSRF."""

from __future__ import annotations

import re
import smtplib
from pathlib import Path
from typing import Any, Iterator

import pytest

# `browser` is the console tests' own fixture, on this module's `setup`.
from tests.integration.test_console_browser import CHROMIUM, OTHER_HEAD, Setup, browser, poll, raw, sign_in  # noqa: F401
from tests.support import HEAD, STAFF

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is missing (apt-get install -y chromium)")]
LEE = "lee.grant@parent.example"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("casework")
    s = Setup(tmp)
    try:
        (tmp / "families.csv").write_text("family_id,email,parent_name,child_name,year_group,school\n"
                                          f"F-GRANT,{LEE},Lee Grant,Mia Grant,Year 2,oakfield\n"
                                          "F-GRANT,sam.grant@parent.example,Sam Grant,Mia Grant,Year 2,oakfield\n")
        assert "2 row(s)" in s.cli("families", "import", str(tmp / "families.csv"))
        yield s
    finally:
        s.close()


def test_plan_and_block_from_the_family_page_and_their_pages(setup: Setup, browser: Any) -> None:
    ctx, page, _ = sign_in(setup, browser)
    page.goto(setup.base + "/families/F-GRANT")
    page.get_by_role("link", name="Start a communication plan").click()
    page.get_by_label("Reading window").fill("someday")
    page.get_by_label("Note (required)").fill("Agreed at the meeting")
    page.get_by_role("button", name="Start the plan").click()
    page.get_by_role("alert").get_by_text("tue 09:00-10:00").wait_for()
    page.get_by_label("Reading window").fill("wed 15:00-16:00")
    page.get_by_role("button", name="Start the plan").click()
    page.wait_for_url(setup.base + "/families/F-GRANT")
    assert "wed 15:00-16:00" in page.locator("#plan").inner_text()
    page.get_by_role("link", name="Plans").click()
    row = page.locator("table.plans tbody tr").first
    assert "F-GRANT" in row.inner_text() and "every Wednesday, 15:00-16:00" in row.inner_text()
    assert HEAD in row.inner_text() and "active" in row.inner_text()
    assert "F-GRANT" in setup.cli("plans")

    # Block one address: its mail is kept, the Blocks page counts it, the teacher never gets it.
    page.goto(setup.base + "/families/F-GRANT")
    page.get_by_role("link", name="Block this family").click()
    page.get_by_label("Who").select_option(LEE)
    page.get_by_label("Why (required)").fill("Abusive emails to staff")
    page.get_by_role("button", name="Block", exact=True).click()
    page.wait_for_url(setup.base + "/families/F-GRANT")
    assert LEE in page.locator("#block").inner_text()
    with smtplib.SMTP("127.0.0.1", setup.smtp, timeout=30) as s:
        s.sendmail(LEE, [STAFF], raw("cw-blocked", f"Lee Grant <{LEE}>", STAFF, "Trip", "Still waiting.\r\n"))
    assert poll(lambda: re.search(r"^\s*\d+\s+blocked\s", setup.cli("queue", "--state", "blocked"), re.M))
    page.get_by_role("link", name="Blocks").click()
    row = page.locator("table.blocks tbody tr").first
    assert LEE in row.inner_text() and "in force" in row.inner_text()
    assert row.locator("td").nth(3).inner_text().strip() == "1"
    # The kept message is listed, and its page opens for the Head.
    page.locator("ul.kept").get_by_role("link", name="Trip").click()
    page.wait_for_url(re.compile(re.escape(setup.base) + r"/messages/\d+$"))
    assert "Still waiting." in page.content() and "blocked sender" in page.content()
    assert not [r for r in setup.sink.to(STAFF) if b"cw-blocked" in r.data]

    # Lift it, and end the plan.
    page.goto(setup.base + "/families/F-GRANT/block")
    page.get_by_label("Why it is lifted (required)").fill("Apologised")
    page.get_by_role("button", name="Lift the block").click()
    page.wait_for_url(setup.base + "/families/F-GRANT")
    assert "Not blocked" in page.locator("#block").inner_text()
    page.get_by_role("link", name="End the communication plan").click()
    page.get_by_label("Why the plan ends (required)").fill("Reviewed")
    page.get_by_role("button", name="End the plan").click()
    page.wait_for_url(setup.base + "/families/F-GRANT")
    assert "No plan" in page.locator("#plan").inner_text()


def test_escalation_drafts_a_letter_edited_downloaded_and_sent_from_the_head(setup: Setup, browser: Any) -> None:
    ctx, page, _ = sign_in(setup, browser)
    page.goto(setup.base + "/families/F-GRANT/escalate")
    page.get_by_label("Step").select_option("warning")
    page.get_by_label("Why (required; it also goes in the letter)").fill("Second abusive email this term")
    page.get_by_role("button", name="Record and draft the letter").click()
    page.wait_for_url(re.compile(re.escape(setup.base) + r"/letters/\d+$"))
    letter_url = page.url
    draft = page.get_by_label("The letter (edit it before sending)").input_value()
    for words in ("Lee Grant", "Mia Grant", "Oakfield Primary School", "Second abusive email this term"):
        assert words in draft
    page.get_by_label("The letter (edit it before sending)").fill(draft.replace("Dear Lee Grant and Sam Grant",
                                                                                "Dear Mr and Mrs Grant"))
    page.get_by_role("button", name="Save the draft").click()
    page.get_by_text("The draft is saved.").wait_for()
    with page.expect_download() as info:
        page.get_by_role("link", name="Download as text").click()
    text = Path(info.value.path()).read_text(encoding="utf-8")
    assert "Dear Mr and Mrs Grant" in text and "Mia Grant" in text
    assert info.value.suggested_filename.endswith("-warning.txt")
    page.get_by_role("button", name="Send by email to the family").click()
    page.get_by_text(re.compile("Sent to .*lee.grant@parent.example")).wait_for()
    sent = poll(lambda: [r for r in setup.sink.to(LEE) if r.message["X-Parentgate"] == "letter"])
    assert sent and sent[0].mail_from == HEAD and HEAD in str(sent[0].message["From"])
    assert "Dear Mr and Mrs Grant" in sent[0].message.get_body(("plain",)).get_content()
    # Sent once: the page shows the letter as sent and offers no second send.
    page.goto(letter_url)
    assert page.get_by_role("button", name="Send by email to the family").count() == 0
    # The stage and the incident are on the family page.
    page.goto(setup.base + "/families/F-GRANT")
    assert "warned" in page.locator("#stage").inner_text()
    assert "escalated to warned" in page.locator("table.incidents").inner_text()


def test_another_schools_head_gets_404_and_posts_need_the_csrf_token(setup: Setup, browser: Any) -> None:
    ctx, page, _ = sign_in(setup, browser, OTHER_HEAD)
    for path in ("/families/F-GRANT/plan", "/families/F-GRANT/block", "/families/F-GRANT/escalate", "/letters/1",
                 "/letters/1.txt"):
        assert page.goto(setup.base + path).status == 404, path
    page.goto(setup.base + "/plans")
    assert "F-GRANT" not in page.content()
    ctx, page, _ = sign_in(setup, browser)
    answer = page.request.post(setup.base + "/families/F-GRANT/block",
                               form={"action": "block", "target": "F-GRANT", "note": "no token"})
    assert answer.status == 403
    assert "F-GRANT" not in setup.cli("blocks")
