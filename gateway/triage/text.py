"""Readable text from a message body: HTML to text, and the new text the sender wrote. No I/O here.

"New text" is what a parent typed in this message. Quoted replies, forwarded sections and
signatures are cut, because triage must judge this message and never the staff member's words
or an older, already-handled thread quoted beneath a thank-you.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Tags that start a new line when HTML is rendered, so sentences in separate paragraphs,
# list items or table cells do not run together into one line.
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
})
# Content of these tags is never shown to a reader.
_HIDDEN_TAGS = frozenset({"script", "style", "head", "title", "template", "noscript"})
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0\u200b]+")


class _TextMaker(HTMLParser):
    """Collects visible text, one line per block, with blockquoted lines prefixed by "> "."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._line_depth = 0
        self._quote_depth = 0
        self._hidden = 0
        self._pre = 0

    def _flush(self, blank: bool = False) -> None:
        text = "".join(self._line)
        if not self._pre:
            text = _SPACES.sub(" ", text).strip()
        if text:
            self.lines.append("> " * self._line_depth + text)
        elif blank and self.lines and self.lines[-1]:
            # Two <br> in a row are how HTML mail writes a paragraph break.
            self.lines.append("")
        self._line = []
        self._line_depth = self._quote_depth

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self._flush(blank=tag == "br")
            if tag == "blockquote":
                self._quote_depth += 1
                self._line_depth = self._quote_depth
            elif tag == "pre":
                self._pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self._flush(blank=tag == "br")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "blockquote":
                self._quote_depth = max(0, self._quote_depth - 1)
                self._line_depth = self._quote_depth
            elif tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._pre:
            for i, piece in enumerate(data.split("\n")):
                if i:
                    self._flush()
                self._line.append(piece)
        else:
            self._line.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML body: scripts and styles dropped, a line per block, quotes marked "> "."""
    maker = _TextMaker()
    try:
        maker.feed(html)
        maker.close()
    except Exception:
        # html.parser is lenient, but a hostile body must never stop triage: keep what was read.
        pass
    maker._flush()
    return "\n".join(maker.lines).strip()


# "On Tue, 3 Nov 2026 at 09:12, Mrs Smith <j.smith@school> wrote:" and its translations. Mail
# clients often wrap this line in two, so it is also tried on a line joined with the next one.
_ATTRIBUTION = re.compile(
    r"^\s*(?:on|le|am|el|em|il|op|w dniu|den|dne|pe|на|在)\b.{0,300}"
    r"(?:wrote|a écrit|schrieb|escribió|escreveu|ha scritto|schreef|napisał\(a\)|napisał|pisze|skrev|"
    r"napsal|a scris|написал|写道)\s*:?\s*$",
    re.IGNORECASE)
# An attribution line names a date, a time or an address; this stops "On Monday she wrote:" in
# the parent's own words from being taken for the start of a quote.
_ATTRIBUTION_DETAIL = re.compile(r"\d|@|<")
_SEPARATOR = re.compile(
    r"^\s*(?:-{2,}\s*(?:original message|forwarded message|original|message d'origine|"
    r"ursprüngliche nachricht|mensaje original|mensagem original|messaggio originale)\s*-{2,}"
    r"|begin forwarded message:?|forwarded message:?|_{10,})\s*$",
    re.IGNORECASE)
# Outlook's reply header: "From: …" followed within a few lines by "Sent:" / "Date:" and "To:" or
# "Subject:". Bold markers (*From:*) appear when an HTML reply was flattened to text.
_OUTLOOK_FROM = re.compile(r"^\s*\*?(?:from|von|de|da|van|od)\s*:\*?\s*\S", re.IGNORECASE)
_OUTLOOK_FIELD = re.compile(
    r"^\s*\*?(?:sent|date|to|subject|cc|gesendet|envoyé|enviado|inviato|verzonden|wysłano|an|à|para|"
    r"a|aan|do|betreff|objet|asunto|assunto|oggetto|onderwerp|temat)\s*:\*?", re.IGNORECASE)
# "-- " is the RFC 3676 §4.3 signature separator; mobile clients add their own footers.
_SIGNATURE = re.compile(r"^(?:--|-- |__)\s*$")
_MOBILE_FOOTER = re.compile(
    r"^\s*(?:sent from (?:my |the )?\S.{0,40}|get outlook for \S.{0,30}|sent from outlook.{0,30}|"
    r"sent via .{1,40}|envoyé de mon .{1,30}|enviado desde mi .{1,30}|von meinem .{1,30} gesendet)\s*$",
    re.IGNORECASE)
_QUOTED = re.compile(r"^\s*>")
_BLANK_RUN = re.compile(r"\n{3,}")
_INLINE_SPACE = re.compile(r"[ \t\u00a0]+")
# Control characters other than line breaks and tabs carry no words and upset terminals.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")


def _starts_quote(lines: list[str], i: int) -> bool:
    """Whether line i begins a quoted reply, an Outlook reply header or a forwarded section."""
    line = lines[i]
    if _SEPARATOR.match(line):
        return True
    if _ATTRIBUTION.match(line) and _ATTRIBUTION_DETAIL.search(line):
        return True
    if i + 1 < len(lines):
        joined = line.rstrip() + " " + lines[i + 1].strip()
        if len(line) < 300 and _ATTRIBUTION.match(joined) and _ATTRIBUTION_DETAIL.search(joined) \
                and not _ATTRIBUTION.match(lines[i + 1]):
            return True
    if _OUTLOOK_FROM.match(line):
        following = [ln for ln in lines[i + 1:i + 6] if ln.strip()]
        fields = sum(1 for ln in following[:4] if _OUTLOOK_FIELD.match(ln))
        return fields >= 2
    return False


def new_text(text: str) -> str:
    """What the sender wrote in this message: quotes, forwarded parts and signatures removed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        if _SIGNATURE.match(line) or _MOBILE_FOOTER.match(line) or _starts_quote(lines, i):
            break
        if _QUOTED.match(line):
            continue
        kept.append(line)
    return normalise("\n".join(kept))


def normalise(text: str) -> str:
    """Trailing spaces dropped, runs of blank lines collapsed to one, ends stripped."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    # Runs of blanks within lines are one space (once over the whole text: they never span a line).
    lines = [ln.strip() for ln in _INLINE_SPACE.sub(" ", text).split("\n")]
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip()
