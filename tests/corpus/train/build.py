#!/usr/bin/env python3
"""Render hand-written labelled batches into the corpora's layout.

    python3 tests/corpus/train/build.py FOLDER...

Each FOLDER holds a ``source.jsonl`` (one parent email a line, written by a
person; schema in tests/corpus/train/README.md). The script writes, beside it,
one ``<id>.eml`` per line (CRLF, realistic headers, MIME as ``format`` asks)
and a ``labels.jsonl`` in the layout of tests/corpus/dev (file, route, tone,
urgent, safeguarding, personal, language, notes, category).

Deterministic: every choice (school, staff address, date, time, Message-ID,
attachment bytes, boundaries) is derived from a sha256 of the folder name and
the row id, so the same input gives the same bytes on every machine. Dates and
times are independent of the labels, so a model cannot learn the renderer.

The script prints only counts and ids, never the text of a message (blind
batches are rendered by it unread).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import quopri
import re
import sys
import unicodedata
from email.header import Header
from email.utils import formataddr, format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
FORMATS = {"", "html", "alt", "qp", "base64", "latin1", "attachment", "nodate", "rawsubject"}
ROUTES = {"staff", "office", "dsl", "head_of_school"}
TONES = {"neutral", "worried", "negative", "abusive"}
REQUIRED = ("id", "from_name", "from", "subject", "body", "route", "tone", "urgent",
            "safeguarding", "personal", "language", "category")
LABEL_KEYS = ("route", "tone", "urgent", "safeguarding", "personal", "language", "notes", "category")

SCHOOLS = (
    ("Brookfield Primary School", "brookfield-primary.sch.example"),
    ("Holy Cross Catholic High School", "holycross-high.sch.example"),
    ("Wensum Valley Primary", "wensumvalley.sch.example"),
    ("Eastgate Academy", "eastgate-academy.sch.example"),
    ("Lime Tree Special School", "limetree-sen.sch.example"),
    ("St Aidan's CE Primary", "staidans-ce.sch.example"),
    ("Millbrook Community Secondary", "millbrook-secondary.sch.example"),
    ("Canal Side Junior School", "canalside-junior.sch.example"),
)
SURNAMES = ("patel", "hughes", "okafor", "brennan", "walsh", "khan", "morgan", "clarke", "nowak",
            "evans", "ahmed", "taylor")
TITLES = {"mr", "mrs", "miss", "ms", "mx", "dr", "sir", "madam", "prof", "mme", "herr", "frau",
          "teacher", "dear", "the"}
# Autumn 2026 and spring 2027 terms, without half-terms and the Christmas break.
TERM = (
    (dt.date(2026, 9, 7), dt.date(2026, 10, 23)),
    (dt.date(2026, 11, 2), dt.date(2026, 12, 18)),
    (dt.date(2027, 1, 5), dt.date(2027, 2, 12)),
    (dt.date(2027, 2, 22), dt.date(2027, 3, 26)),
)
SCHOOL_DAYS = tuple(
    start + dt.timedelta(days=n)
    for start, end in TERM
    for n in range((end - start).days + 1)
    if (start + dt.timedelta(days=n)).weekday() < 5
)
# A tiny valid JPEG (1x1) and a tiny PDF: attachments need real bytes, not content.
JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8MCgsOCwkJDRENDg8Q"
    "EBEQCgwSExIQEw8QEBD/yQALCAABAAEBAREA/8wABgAQEAX/2gAIAQEAAD8A0s8g/9k="
)
PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]"
       b"/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
       b"trailer<</Root 1 0 R>>\n%%EOF\n")


class BuildError(Exception):
    pass


def _h(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def _hex(*parts: str, n: int = 24) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:n]


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", folded.lower())


def staff_address(to_name: str, domain: str, key: str) -> str:
    words = [w for w in re.split(r"[\s.,]+", to_name or "") if w]
    names = [_ascii_slug(w) for w in words if _ascii_slug(w) and _ascii_slug(w) not in TITLES]
    if not names:
        if not words:
            return f"office@{domain}"
        names = [SURNAMES[_h(key, "surname") % len(SURNAMES)]]
    surname = names[-1]
    initial = names[0][0] if len(names) > 1 else "abcdefghjklmnprstw"[_h(key, "init") % 18]
    return f"{initial}.{surname}@{domain}"


def sent_at(key: str) -> dt.datetime:
    day = SCHOOL_DAYS[_h(key, "day") % len(SCHOOL_DAYS)]
    r = _h(key, "time") % 1000
    if r < 350:  # before school
        minute = 6 * 60 + 20 + _h(key, "min") % 145
    elif r < 600:  # during the school day
        minute = 8 * 60 + 45 + _h(key, "min") % 405
    else:  # after school and evening
        minute = 15 * 60 + 30 + _h(key, "min") % 450
    local = dt.datetime.combine(day, dt.time(minute // 60, minute % 60), LONDON)
    return local


def _header(name: str, value: str) -> str:
    if value.isascii():
        return f"{name}: {value}"
    return f"{name}: " + Header(value, "utf-8", header_name=name).encode().replace("\n", "\r\n")


def _addr(name: str, address: str) -> str:
    return formataddr((name, address), charset="utf-8") if name else address


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def plain_text(row: dict, when: dt.datetime, staff: str, school: str, key: str) -> str:
    body = row["body"].replace("\r\n", "\n").rstrip("\n")
    quoted = (row.get("quoted") or "").replace("\r\n", "\n").strip("\n")
    if not quoted:
        return body + "\n"
    earlier = when - dt.timedelta(days=1 + _h(key, "qd") % 6, minutes=_h(key, "qm") % 300)
    tag = f"{row.get('category', '')} {row.get('notes', '')}".lower()
    if "forward" in tag or "newsletter" in tag or "club" in tag:
        sender = f"{school} <newsletter@{staff.split('@')[1]}>" if "newsletter" in tag else \
            f"{row.get('to_name') or school} <{staff}>"
        block = ["", "---------- Forwarded message ---------", f"From: {sender}",
                 f"Date: {format_datetime(earlier)}",
                 "Subject: " + re.sub(r"^((re|fwd?|fw)\s*:\s*)+", "", row.get("subject", ""), flags=re.I),
                 "",
                 quoted]
        return body + "\n" + "\n".join(block) + "\n"
    who = row.get("to_name") or school
    stamp = f"{earlier.strftime('%a')}, {earlier.day} {earlier.strftime('%b %Y at %H:%M')}"
    head = f"On {stamp}, {who} <{staff}> wrote:"
    return body + "\n\n" + head + "\n" + "\n".join(
        ("> " + line) if line else ">" for line in _lines(quoted)) + "\n"


def html_text(row: dict, plain: str) -> str:
    body = row["body"].replace("\r\n", "\n").rstrip("\n")
    paras = [p for p in re.split(r"\n\s*\n", body) if p.strip()]
    out = ['<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head>',
           '<body><div dir="ltr">']
    for p in paras:
        out.append("<p>" + "<br>\n".join(html.escape(x) for x in p.split("\n")) + "</p>")
    out.append("</div>")
    rest = plain[len(body):].strip("\n")
    if rest:
        lines = _lines(rest)
        intro = lines[0] if lines and not lines[0].startswith(">") else ""
        inner = [ln[2:] if ln.startswith("> ") else ln.lstrip(">") for ln in lines[1 if intro else 0:]]
        if intro:
            out.append(f'<div class="gmail_quote">{html.escape(intro)}<br>')
        out.append('<blockquote style="margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex">'
                   + "<br>\n".join(html.escape(x) for x in inner) + "</blockquote>")
        if intro:
            out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def encode_part(text: str, ctype: str, cte: str, charset: str = "utf-8") -> bytes:
    raw = text.encode(charset)
    if cte == "8bit" and (max((len(x) for x in raw.split(b"\n")), default=0) > 900):
        cte = "quoted-printable"
    if cte == "8bit" and raw.isascii():
        cte = "7bit"
    if cte == "quoted-printable":
        payload = _crlf(quopri.encodestring(raw))
    elif cte == "base64":
        enc = base64.b64encode(raw)
        payload = b"\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76)) + b"\r\n"
    else:
        payload = _crlf(raw)
    head = f'Content-Type: {ctype}; charset="{charset}"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
    return head.encode() + payload


def latin_charset(text: str) -> str:
    for cs in ("iso-8859-1", "windows-1252", "iso-8859-2"):
        try:
            text.encode(cs)
            return cs
        except UnicodeEncodeError:
            continue
    return "utf-8"


def render(row: dict, folder: str) -> bytes:
    key = f"{folder}\x1f{row['id']}"
    fmt = row.get("format") or ""
    if fmt not in FORMATS:
        raise BuildError(f"{row['id']}: unknown format {fmt!r}")
    school, domain = SCHOOLS[_h(folder, "school") % len(SCHOOLS)]
    staff = staff_address(row.get("to_name") or "", domain, key)
    when = sent_at(key)
    sender = row["from"]
    sender_domain = sender.rsplit("@", 1)[-1] if "@" in sender else "parent.example"
    subject = row.get("subject") or ""
    quoted = bool((row.get("quoted") or "").strip())
    plain = plain_text(row, when, staff, school, key)

    heads = [_header("From", _addr(row.get("from_name") or "", sender)),
             _header("To", _addr(row.get("to_name") or "", staff))]
    if fmt == "rawsubject":
        heads.append(f"Subject: {subject}")  # raw 8-bit, as some phones send it
    else:
        heads.append(_header("Subject", subject))
    if fmt != "nodate":
        heads.append("Date: " + format_datetime(when))
    heads.append(f"Message-ID: <{_hex(key, 'mid')}@{sender_domain}>")
    if quoted and subject.lower().startswith("re:"):
        ref = f"<{_hex(key, 'ref', n=20)}.{_hex(key, 'ref2', n=8)}@{domain}>"
        heads += [f"In-Reply-To: {ref}", f"References: {ref}"]
    mailer = _h(key, "mailer") % 6
    if mailer == 0:
        heads.append("X-Mailer: iPhone Mail (20B101)")
    elif mailer == 1:
        heads.append("X-Mailer: Android Mail 6.0")
    heads.append("MIME-Version: 1.0")
    head = "\r\n".join(heads).encode("utf-8") + b"\r\n"

    boundary = f"=_pg_{_hex(key, 'boundary', n=20)}"
    if fmt in ("", "nodate", "rawsubject"):
        return head + encode_part(plain, "text/plain", "8bit")
    if fmt == "qp":
        return head + encode_part(plain, "text/plain", "quoted-printable")
    if fmt == "base64":
        return head + encode_part(plain, "text/plain", "base64")
    if fmt == "latin1":
        return head + encode_part(plain, "text/plain", "8bit", latin_charset(plain))
    if fmt == "html":
        return head + encode_part(html_text(row, plain), "text/html", "quoted-printable")
    if fmt == "alt":
        parts = [encode_part(plain, "text/plain", "quoted-printable"),
                 encode_part(html_text(row, plain), "text/html", "quoted-printable")]
        return _multipart(head, "alternative", boundary, parts)
    # attachment
    if _h(key, "att") % 2:
        name, ctype, data = f"IMG_{_h(key, 'img') % 9000 + 1000}.jpg", "image/jpeg", JPEG
    else:
        name, ctype, data = "letter.pdf", "application/pdf", PDF
    enc = base64.b64encode(data)
    att = (f'Content-Type: {ctype}; name="{name}"\r\nContent-Disposition: attachment; '
           f'filename="{name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n').encode() + \
        b"\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76)) + b"\r\n"
    return _multipart(head, "mixed", boundary, [encode_part(plain, "text/plain", "8bit"), att])


def _multipart(head: bytes, kind: str, boundary: str, parts: list[bytes]) -> bytes:
    out = head + f'Content-Type: multipart/{kind}; boundary="{boundary}"\r\n\r\n'.encode()
    for p in parts:
        out += f"--{boundary}\r\n".encode() + p
    return out + f"--{boundary}--\r\n".encode()


def load_rows(source: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BuildError(f"{source}:{n}: not JSON ({exc.msg})") from None
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise BuildError(f"{source}:{n}: missing {', '.join(missing)}")
        if row["route"] not in ROUTES or row["tone"] not in TONES:
            raise BuildError(f"{source}:{n}: bad route or tone")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", str(row["id"])):
            raise BuildError(f"{source}:{n}: id must be letters, digits, . _ -")
        rows.append(row)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise BuildError(f"{source}: duplicate ids")
    return rows


def build(folder: Path) -> int:
    source = folder / "source.jsonl"
    if not source.is_file():
        raise BuildError(f"{folder}: no source.jsonl")
    rows = load_rows(source)
    name = folder.resolve().name
    for old in folder.glob("*.eml"):
        old.unlink()
    labels = []
    for row in rows:
        file = f"{row['id']}.eml"
        (folder / file).write_bytes(render(row, name))
        label = {"file": file}
        for k in LABEL_KEYS:
            v = row.get(k, "")
            label[k] = bool(v) if k in ("urgent", "safeguarding", "personal") else (v or "")
        labels.append(json.dumps(label, ensure_ascii=False))
    (folder / "labels.jsonl").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return len(rows)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    status = 0
    for arg in argv:
        try:
            n = build(Path(arg))
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{arg}: {n} messages")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
