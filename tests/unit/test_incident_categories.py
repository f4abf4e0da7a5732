"""Which category a message of concern is filed under, and the short summary of why. Pure."""

from __future__ import annotations

from gateway.decide.incidents import (ABUSIVE, EXCESSIVE_CONTACT, NEGATIVE, PERSONAL, SAFEGUARDING, category_name,
                                      incident_category, label, summary)
from gateway.domain.findings import Flag, Route


def test_the_dsl_route_is_safeguarding_whatever_else_was_found():
    assert incident_category(Route.DSL, [Flag.ABUSIVE, Flag.SAFEGUARDING]) == SAFEGUARDING


def test_the_heads_route_is_filed_under_its_most_serious_finding():
    assert incident_category(Route.HEAD_OF_SCHOOL, [Flag.LONG_MESSAGE, Flag.ABUSIVE]) == ABUSIVE
    assert incident_category(Route.HEAD_OF_SCHOOL, [Flag.PERSONAL, Flag.FAMILY_LIMIT]) == PERSONAL
    assert incident_category(Route.HEAD_OF_SCHOOL, [Flag.THREAD_LIMIT]) == EXCESSIVE_CONTACT
    assert incident_category(Route.HEAD_OF_SCHOOL, []) == NEGATIVE


def test_other_routes_are_not_incidents():
    for route in (Route.STAFF, Route.OFFICE, Route.BLOCKED):
        assert incident_category(route, [Flag.URGENT]) is None


def test_categories_are_read_as_people_type_them():
    assert category_name("Excessive contact") == "excessive-contact" == category_name("excessive_contact")
    assert category_name(" plan-breach ") == "plan-breach" and category_name("rude") is None
    assert label("plan-breach") == "plan breach"


def test_the_summary_is_rule_names_with_a_few_words_of_evidence():
    long = "word " * 40
    text = summary([("abusive-language", "useless"), ("long-message", long), ("family-half-term-limit", "")])
    parts = text.split("; ")
    assert parts[0] == "abusive-language: useless" and parts[2] == "family-half-term-limit"
    assert parts[1].startswith("long-message: word word") and parts[1].endswith("…") and len(parts[1]) < 80


def test_the_activity_page_names_an_incident_recorded_by_hand_without_repeating_who():
    from gateway.web.roles import _action
    assert _action("in_review", "in_review", "incident recorded (plan breach) by head@school.example") == \
        "incident recorded (plan breach)"
