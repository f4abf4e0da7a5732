"""What an envelope address may be: checks shared by the listener, triage and the relay. No I/O here.

aiosmtpd decodes command arguments as UTF-8 with `surrogateescape` (with SMTPUTF8 enabled), so bytes
that are not UTF-8 reach us as lone surrogates (U+DC80..U+DCFF); such a string can never be encoded
again, for a database row or for the next hop, and is refused where it arrives.
"""

from __future__ import annotations

import unicodedata
from email._header_value_parser import get_addr_spec
from email.errors import HeaderParseError, NonASCIILocalPartDefect

# RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
MAX_PATH = 254


def undecodable(text: str) -> bool:
    """True when `text` holds bytes that were not valid UTF-8 (decoded with surrogateescape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def has_controls(text: str) -> bool:
    """True for any control character (C0, DEL, C1) or line/paragraph separator: never part of a name."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def needs_smtputf8(address: str) -> bool:
    """RFC 6531 §3.4: an address with non-ASCII characters can be sent only with the SMTPUTF8 parameter."""
    return not address.isascii()


def envelope_problem(address: str, *, smtputf8: bool) -> str | None:
    """Why a MAIL or RCPT address must be refused at the command, or None to accept it.

    The reason is safe to show the client: it names the problem, never echoes the address.
    """
    if undecodable(address):
        return "address is not valid UTF-8"
    if has_controls(address):
        return "address contains control characters"
    if len(address.encode("utf-8")) > MAX_PATH:
        return "address is too long"
    if needs_smtputf8(address) and not smtputf8:
        # RFC 6531 §3.4: without SMTPUTF8 on MAIL, non-ASCII addresses are not permitted.
        return "non-ASCII address without SMTPUTF8"
    return None


def has_domain(address: str) -> bool:
    """True when the address names a domain after its local part (quoted "@" signs do not count).

    RFC 5321 §4.1.2: a reverse-path mailbox has a domain; `<"someone@example.com">` has none, and
    SMTP clients read it as a different mailbox, someone@example.com."""
    try:
        spec, _rest = get_addr_spec(address)
    except (HeaderParseError, IndexError, ValueError):
        return "@" in address
    return bool(spec.domain)


def reply_address(sender: str) -> str | None:
    """`sender` as an addr-spec a reply can be addressed to (in a To field and a RCPT), or None.

    Quoted local parts (`"a b"@example.com`) and non-ASCII addresses (RFC 6532, sent with SMTPUTF8)
    are usable; a sender without a domain, with bytes that were not UTF-8, with control characters or
    with a malformed local part is not.
    """
    text = sender.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text or undecodable(text) or has_controls(text) or len(text.encode("utf-8")) > MAX_PATH:
        return None
    if text.endswith(".") and not text.endswith(".."):
        # A fully qualified domain's root dot (`example.com.`) names the same domain.
        text = text[:-1]
    try:
        spec, rest = get_addr_spec(text)
    except (HeaderParseError, IndexError, ValueError):
        return None
    if rest or not spec.local_part or not spec.domain:
        return None
    if any(not isinstance(d, NonASCIILocalPartDefect) for d in spec.all_defects):
        return None
    address = str(spec.addr_spec)
    # The parser drops comments and folding white space; what is left must be one plain path.
    return address if "<" not in address and ">" not in address else None
