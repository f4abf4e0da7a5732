"""The console's family page and incidents page in a real browser (Playwright driving Debian's chromium)
against the real daemon and an SMTP sink: incidents recorded automatically and by hand, the CSV
download, the family page's facts and action links, scoping to the Head's schools and CSRF."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any, Iterator


import pytest

from gateway.records import CSV_COLUMNS
# `browser` is that module's fixture, here over this module's `setup`.
from tests.integration.test_console_browser import CHROMIUM, HOSTILE, OTHER_HEAD, Setup, browser, raw, sign_in  # noqa: F401
from tests.support import STAFF

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is missing (apt-get install -y chromium)")]
COLE = "darren.cole@parent.example"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("records")
    s = Setup(tmp)
    try:
        (tmp / "families.csv").write_text("family_id,email,parent_name,child_name,year_group,school\n"
                                          f"F-COLE,{COLE},Darren Cole,Tyler Cole,Year 5,oakfield\n"
                                          "F-COLE,kim.cole@parent.example,Kim Cole,Tyler Cole,Year 5,oakfield\n")
        assert "2 row(s)" in s.cli("families", "import", str(tmp / "families.csv"))
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def hostile(setup: Setup) -> int:
    """A hostile message from the Cole family, waiting for review (and so an incident), once per module
    in each test process (the tests may be shared between processes)."""
    return setup.submit(raw("rec-1", f"Darren Cole <{COLE}>", STAFF, "Tyler's detention",
                            HOSTILE.format(child="Tyler")), sender=COLE)


def test_incidents_page_lists_records_by_hand_and_downloads_the_csv(setup: Setup, browser: Any, hostile: int) -> None:
    message_id = hostile
    ctx, page, _ = sign_in(setup, browser)
    page.get_by_role("link", name="Incidents").click()
    page.wait_for_url(setup.base + "/incidents")
    row = page.locator("table.incidents tbody tr").first
    assert "abusive" in row.inner_text() and "Tyler Cole (Year 5)" in row.inner_text()
    assert row.get_by_role("link", name=f"message {message_id}").count() == 1
    # Recorded by hand: a formula in the action stays text in the download.
    page.get_by_label("Family (id or an address)").fill("kim.cole@parent.example")
    page.get_by_label("Category", exact=True).select_option(label="excessive contact")
    page.get_by_label("Action taken").fill("=phoned the parent")
    page.get_by_role("button", name="Record incident").click()
    page.get_by_text(re.compile(r"Done: incident \d+ recorded")).wait_for()
    assert "=phoned the parent" in page.locator("table.incidents tbody tr").first.inner_text()
    with page.expect_download() as info:
        page.get_by_role("link", name="Download CSV").click()
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    by_category = {r["category"]: r for r in rows}
    assert by_category["excessive contact"]["action"] == "'=phoned the parent"
    assert by_category["excessive contact"]["staff member"] == "head@oakfield-primary.sch.example"
    assert by_category["abusive"]["family"] == "F-COLE" and by_category["abusive"]["parent email"] == COLE
    # A category nobody has: the form says so and records nothing.
    before = len(rows)
    response = ctx.request.post(setup.base + "/incidents", form={
        "csrf": page.locator("input[name=csrf]").first.get_attribute("value"), "family": "F-COLE",
        "category": "rudeness", "action": "x"})
    assert response.status == 400 and "unknown category" in response.text()
    # Without the CSRF token nothing is recorded.
    assert ctx.request.post(setup.base + "/incidents", form={"family": "F-COLE", "category": "negative",
                                                             "action": "x"}).status == 403
    assert len(list(csv.DictReader(io.StringIO(ctx.request.get(setup.base + "/incidents.csv").text())))) == before


def test_family_page_shows_the_familys_facts_and_links_to_its_actions(setup: Setup, browser: Any,
                                                                     hostile: int) -> None:
    assert "F-COLE" in setup.cli("incidents", "export")
    _ctx, page, _ = sign_in(setup, browser)
    page.goto(setup.base + "/incidents")
    page.get_by_role("link", name="F-COLE").first.click()
    page.wait_for_url(setup.base + "/families/F-COLE")
    content = page.locator("main").inner_text()
    for fact in (COLE, "kim.cole@parent.example", "Tyler Cole, Year 5", "Tyler's detention", "abusive",
                 "Emails per half-term", "Not blocked.", "No plan."):
        assert fact in content, fact
    assert page.locator("#stage").inner_text().strip() == "none"
    for name in ("Start a communication plan", "Block this family", re.compile("^Escalate")):
        assert page.get_by_role("link", name=name).count() == 1
    assert page.get_by_role("link", name="Tyler's detention").get_attribute("href").startswith("/messages/")
    # Recording an incident from the family page comes back to it.
    page.get_by_label("Category", exact=True).select_option(label="personal")
    page.get_by_label("Action taken").fill("met the parents")
    page.get_by_role("button", name="Record incident").click()
    page.get_by_text("Done: the incident is recorded.").wait_for()
    assert "met the parents" in page.locator("table.incidents").inner_text()
    # Casework done on the server shows on the page: the plan, the block and the stage.
    for args in (("plan", "start", "F-COLE", "--window", "tue 09:00-10:00", "--note", "Agreed at meeting"),
                 ("block", "kim.cole@parent.example", "--note", "Abusive emails to staff"),
                 ("escalate", "F-COLE", "--stage", "meeting", "--note", "Second abusive email")):
        out = setup.run(*args)
        assert out.returncode == 0, out.stderr
    page.reload()
    assert page.locator("#plan").inner_text().startswith("weekly, tue 09:00-10:00, read by head@")
    assert "kim.cole@parent.example" in page.locator("#block").inner_text()
    assert page.locator("#stage").inner_text().strip() == "meeting requested"
    assert page.get_by_role("link", name="End the communication plan").count() == 1
    # The message page links to the family's page.
    page.get_by_role("link", name="Tyler's detention").click()
    page.get_by_role("link", name="The family's page").click()
    page.wait_for_url(setup.base + "/families/F-COLE")


def test_another_schools_head_cannot_see_the_family_or_its_incidents(setup: Setup, browser: Any,
                                                                     hostile: int) -> None:
    assert "F-COLE" in setup.cli("incidents", "export")
    _ctx, page, _ = sign_in(setup, browser, OTHER_HEAD)
    page.goto(setup.base + "/families/F-COLE")
    assert "Not found" in page.content()
    page.goto(setup.base + "/incidents")
    assert "F-COLE" not in page.content() and "No incidents recorded." in page.content()
    csv_text = page.context.request.get(setup.base + "/incidents.csv").text()
    assert "F-COLE" not in csv_text and csv_text.startswith("date,time,school")
