"""When parentgate may acknowledge a message (RFC 3834), and which acknowledgement it sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.decide.acknowledge import (
    OUR_MESSAGE_ID_PREFIX,
    AckKind,
    ack_kind,
    is_our_message_id,
    make_message_id,
    suppression,
    template_for,
)
from gateway.domain.facts import Facts
from gateway.domain.findings import Route

TEMPLATES = Path(__file__).parents[2] / "rules" / "templates"
SCHOOL = frozenset({"ashdown.sch.uk", "ashdown-trust.org.uk"})
PARENT = "sarah.jones@example.com"


def facts(headers: dict[str, str | tuple[str, ...]] | None = None, *, message_id: str | None = "<1@example.com>",
          from_addr: str = PARENT) -> Facts:
    lowered = {
        name.lower(): (value if isinstance(value, tuple) else (value,)) for name, value in (headers or {}).items()
    }
    return Facts(
        message_id=message_id,
        subject="Trip on Friday",
        from_addr=from_addr,
        from_name="Sarah Jones",
        to=("teacher@ashdown.sch.uk",),
        cc=(),
        date=None,
        in_reply_to=None,
        references=(),
        headers=lowered,
        text="Is the trip still on?",
        new_text="Is the trip still on?",
    )


def test_ordinary_parent_mail_is_acknowledged() -> None:
    assert suppression(facts(), PARENT, SCHOOL) is None


def test_auto_submitted_no_with_normal_precedence_is_acknowledged() -> None:
    assert suppression(facts({"Auto-Submitted": "no", "Precedence": "normal"}), PARENT, SCHOOL) is None


@pytest.mark.parametrize("sender", ["", "<>", "  ", " <> "])
def test_null_sender_is_never_answered(sender: str) -> None:
    assert suppression(facts(), sender, SCHOOL) == "null-sender"


@pytest.mark.parametrize("sender", ["sarah", "sarah@", "sarah jones@example.com", "a@b@example.com",
                                    "sarah@example.com\r\nBcc: x@example.com"])
def test_sender_that_is_not_an_address_is_never_answered(sender: str) -> None:
    assert suppression(facts(), sender, SCHOOL) == "unusable-sender"


@pytest.mark.parametrize("value", ["auto-generated", "auto-replied", "auto-notified", "yes", "Auto-Generated",
                                   "auto-replied; owner-email=x@example.com"])
def test_auto_submitted_other_than_no_is_not_answered(value: str) -> None:
    assert suppression(facts({"Auto-Submitted": value}), PARENT, SCHOOL) == "auto-submitted"


def test_any_auto_submitted_value_other_than_no_wins_when_repeated() -> None:
    assert suppression(facts({"Auto-Submitted": ("no", "auto-generated")}), PARENT, SCHOOL) == "auto-submitted"


@pytest.mark.parametrize("header", ["List-Id", "List-Unsubscribe", "List-Post", "List-Help"])
def test_list_headers_mean_list_mail(header: str) -> None:
    assert suppression(facts({header: "<x.lists.example.com>"}), PARENT, SCHOOL) == "list-mail"


def test_dovecot_list_mail_with_bounces_envelope_is_list_mail() -> None:
    message = facts({"List-ID": "Dovecot Mailing List <dovecot.dovecot.org>"})
    sender = "dovecot-bounces+timo=example.com@lists.example.com"
    assert suppression(message, sender, SCHOOL) == "list-mail"


@pytest.mark.parametrize("value", ["bulk", "junk", "list", "Bulk", " LIST "])
def test_bulk_junk_and_list_precedence_are_not_answered(value: str) -> None:
    assert suppression(facts({"Precedence": value}), PARENT, SCHOOL) == "bulk-precedence"


@pytest.mark.parametrize("value", ["All", "OOF", "oof", "DR, OOF", "NDR,RN,All", "AutoReply"])
def test_x_auto_response_suppress_all_or_oof_is_respected(value: str) -> None:
    assert suppression(facts({"X-Auto-Response-Suppress": value}), PARENT, SCHOOL) == "auto-response-suppressed"


@pytest.mark.parametrize("value", ["None", "DR", "NDR, RN"])
def test_x_auto_response_suppress_without_all_or_oof_is_answered(value: str) -> None:
    assert suppression(facts({"X-Auto-Response-Suppress": value}), PARENT, SCHOOL) is None


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.example.com",
        "mailer-daemon@example.com",
        "postmaster@example.com",
        "Postmaster@Example.COM",
        "owner-parents@lists.example.com",
        "news-request@example.com",
        "parents-bounces@lists.example.com",
        "dovecot-bounces+timo=example.com@lists.example.com",
        "no-reply@example.com",
        "noreply@example.com",
        "NoReply+abc@example.com",
        "do-not-reply@example.com",
        "donotreply@example.com",
        "no-reply-newsletter@example.com",
        "bounce-4521=sarah=example.com@mail.example.com",
    ],
)
def test_system_senders_are_not_answered(sender: str) -> None:
    assert suppression(facts(from_addr=sender), sender, SCHOOL) == "system-sender"


def test_no_reply_from_address_is_not_answered_even_with_an_ordinary_envelope() -> None:
    assert suppression(facts(from_addr="no-reply@portal.example.com"), "robot@portal.example.com", SCHOOL) == (
        "system-sender"
    )


@pytest.mark.parametrize("sender", ["requester@example.com", "owner@example.com", "bounce.smith@example.com",
                                    "noreplyfan@example.com"])
def test_addresses_that_merely_resemble_system_senders_are_answered(sender: str) -> None:
    assert suppression(facts(from_addr=sender), sender, SCHOOL) is None


@pytest.mark.parametrize("sender", ["office@ashdown.sch.uk", "Office@ASHDOWN.SCH.UK", "head+x@ashdown-trust.org.uk",
                                    "alerts@portal.ashdown.sch.uk", "office@ashdown.sch.uk."])
def test_our_own_domains_are_not_answered(sender: str) -> None:
    assert suppression(facts(), sender, SCHOOL) == "own-domain"


def test_a_domain_that_only_ends_like_ours_is_answered() -> None:
    assert suppression(facts(), "parent@notashdown.sch.uk", SCHOOL) is None


def test_a_message_carrying_our_own_message_id_is_not_answered() -> None:
    ours = make_message_id("gateway.ashdown.sch.uk", "0f3c2a")
    assert suppression(facts(message_id=ours), PARENT, SCHOOL) == "own-message"


@pytest.mark.parametrize("content_type", ['multipart/report; report-type=delivery-status; boundary="x"',
                                          'Multipart/Report; report-type=disposition-notification; boundary="y"',
                                          "message/delivery-status"])
def test_delivery_and_read_reports_are_not_answered(content_type: str) -> None:
    assert suppression(facts({"Content-Type": content_type}), PARENT, SCHOOL) == "delivery-report"


def test_make_message_id_is_recognised_as_ours() -> None:
    mid = make_message_id("gw.ashdown.sch.uk", "abc123")
    assert mid == f"<{OUR_MESSAGE_ID_PREFIX}abc123@gw.ashdown.sch.uk>"
    assert is_our_message_id(mid)
    assert is_our_message_id(mid.strip("<>"))


@pytest.mark.parametrize("mid", [None, "", "<1234@local.machine.example>", "<pgx.1@example.com>"])
def test_other_message_ids_are_not_ours(mid: str | None) -> None:
    assert not is_our_message_id(mid)


@pytest.mark.parametrize("hostname,unique", [("", "a"), ("host", ""), ("ho st", "a"), ("host", "a>b"),
                                             ("host", "a@b"), ("host\r\n", "a")])
def test_make_message_id_rejects_parts_that_would_break_the_header(hostname: str, unique: str) -> None:
    with pytest.raises(ValueError):
        make_message_id(hostname, unique)


def test_office_route_gets_the_urgent_acknowledgement() -> None:
    assert ack_kind(Route.OFFICE) is AckKind.URGENT


@pytest.mark.parametrize("route", [Route.STAFF, Route.DSL, Route.HEAD_OF_SCHOOL])
def test_staff_dsl_and_head_of_school_routes_get_the_standard_acknowledgement(route: Route) -> None:
    assert ack_kind(route) is AckKind.STANDARD


def test_blocked_mail_is_not_acknowledged() -> None:
    assert ack_kind(Route.BLOCKED) is None


@pytest.mark.parametrize(
    "closure,template",
    [
        ("open", "ack_in_hours.txt.j2"),
        ("out_of_hours", "ack_out_of_hours.txt.j2"),
        ("weekend", "ack_weekend.txt.j2"),
        ("holiday", "ack_holiday.txt.j2"),
        ("bank_holiday", "ack_out_of_hours.txt.j2"),
        ("inset", "ack_out_of_hours.txt.j2"),
    ],
)
def test_standard_template_follows_the_closure(closure: str, template: str) -> None:
    assert template_for(AckKind.STANDARD, closure) == template


@pytest.mark.parametrize("closure", ["open", "out_of_hours", "weekend", "holiday", "bank_holiday", "inset"])
def test_urgent_template_is_used_whenever_the_school_is_open_or_closed(closure: str) -> None:
    assert template_for(AckKind.URGENT, closure) == "ack_urgent.txt.j2"


def test_unknown_closure_is_an_error() -> None:
    with pytest.raises(ValueError):
        template_for(AckKind.STANDARD, "snow-day")


def test_every_template_named_exists() -> None:
    closures = ["open", "out_of_hours", "weekend", "holiday", "bank_holiday", "inset"]
    for kind in AckKind:
        for closure in closures:
            assert (TEMPLATES / template_for(kind, closure)).is_file()
