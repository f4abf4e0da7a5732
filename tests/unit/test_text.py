"""New-text extraction and HTML to text: quotes, forwards and signatures cut; whitespace tidied."""

from __future__ import annotations

from gateway.triage.text import html_to_text, new_text, normalise


def test_on_wrote_attribution_and_everything_below_is_cut() -> None:
    body = ("Thanks, that's sorted then.\n\nOn Mon, 2 Mar 2026 at 16:05, Mr Lowe <lowe@school.sch.uk> wrote:\n"
            "> Dear Mrs Baker, the trip has moved to Friday.\n")
    assert new_text(body) == "Thanks, that's sorted then."


def test_attribution_wrapped_over_two_lines_is_cut() -> None:
    body = ("Great, see you then.\n\nOn Tue, 3 Mar 2026 at 09:12, Mrs Okoro\n<okoro@school.sch.uk> wrote:\n\n"
            "Could you come in at 3.30?\n")
    assert new_text(body) == "Great, see you then."


def test_interleaved_quoted_lines_are_dropped_but_replies_kept() -> None:
    body = "> Can you send the form back?\nYes, it's in her bag.\n> And the money?\nPaid online."
    assert new_text(body) == "Yes, it's in her bag.\nPaid online."


def test_outlook_reply_header_cuts_the_quoted_message() -> None:
    body = ("That's fine, thank you.\n\nFrom: Mrs Hall <hall@school.sch.uk>\nSent: 04 March 2026 18:02\n"
            "To: Tom Hill\nSubject: RE: detention\n\nThis is unacceptable behaviour.")
    assert new_text(body) == "That's fine, thank you."


def test_original_message_separator_cuts_the_rest() -> None:
    body = "Noted.\n\n-----Original Message-----\nFrom: someone\nYou are all useless."
    assert new_text(body) == "Noted."


def test_forwarded_section_is_cut() -> None:
    body = ("See below from the club.\n\n---------- Forwarded message ---------\nFrom: Club <c@club.org>\n"
            "Date: Tue, 3 Mar 2026\nSubject: Fees\n\nFees are due today.")
    assert new_text(body) == "See below from the club."


def test_signature_separator_cuts_the_signature() -> None:
    body = "Can she bring a packed lunch on Friday?\n\n-- \nJane Doe\nSenior Solicitor, Doe & Co\n"
    assert new_text(body) == "Can she bring a packed lunch on Friday?"


def test_mobile_footer_is_cut() -> None:
    assert new_text("He'll be in late.\n\nSent from my iPhone\n\nOn Tue wrote: x") == "He'll be in late."


def test_parents_own_words_about_writing_are_kept() -> None:
    body = "On Monday she wrote a lovely poem about autumn.\nCould she read it in assembly?"
    assert new_text(body) == body


def test_whitespace_is_normalised() -> None:
    assert normalise("  Hello \u00a0 there  \r\n\r\n\r\n\r\nBye\x00 ") == "Hello there\n\nBye"


def test_html_drops_script_and_style_and_keeps_block_breaks() -> None:
    html = ("<html><head><style>p{color:red}</style><title>x</title></head><body>"
            "<script>alert(1)</script><p>First&nbsp;paragraph.</p><div>Second <b>line</b></div>"
            "Third<br>Fourth<ul><li>one</li><li>two</li></ul></body></html>")
    assert html_to_text(html) == "First paragraph.\nSecond line\nThird\nFourth\none\ntwo"


def test_html_blockquote_becomes_quoted_lines_that_new_text_drops() -> None:
    html = ("<div>Thank you so much!</div><div class=gmail_quote>On Mon, 2 Mar 2026, Mr X wrote:"
            "<blockquote type=cite><p>We will be contacting Ofsted.</p></blockquote></div>")
    text = html_to_text(html)
    assert "> We will be contacting Ofsted." in text
    assert new_text(text) == "Thank you so much!"


def test_broken_html_never_raises() -> None:
    assert html_to_text("<p>Unclosed <b>bold <div><<<>>> &bogus; text") != ""
