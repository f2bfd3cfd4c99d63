# -*- test-case-name: tests.queue.test_bounces -*-
"""Sorting mail that arrives at a VERP bounce address: hard bounce, soft bounce or auto-reply.

Only a hard bounce should put an address on the suppression list, so the
mistakes that matter are calling a vacation notice or a full mailbox a hard
bounce. The order of the checks follows from that:

 1. A C{message/delivery-status} part (RFC 3464) is read field by field and
    wins over everything else: Postfix, Exim and Gmail mark their bounces
    C{Auto-Submitted: auto-replied} too.
 2. An RFC 3834 auto-reply or an out-of-office subject is an auto-reply and
    never a bounce. C{Auto-Submitted} alone does not count when the message
    comes from a mail system (MAILER-DAEMON, postmaster, X-Failed-Recipients).
 3. Other bounce formats (qmail, old Exchange, Exim text, ...) are left to
    flufl.bounce's detectors.

Anything else, and anything that cannot be read, is "unknown". Input comes
from anyone on the internet: nothing here raises on malformed mail.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from email.errors import HeaderParseError
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.policy import compat32, default
from email.utils import parseaddr
from typing import NamedTuple

import flufl.bounce
from attrs import frozen
from twisted.logger import Logger

__all__ = ["BounceKind", "BouncedRecipient", "BounceReport", "classify"]

log = Logger()


class BounceKind(str, enum.Enum):
    """What a message at a bounce address means for the recipient it names."""

    HARD = "hard"  # permanent failure: suppress the address
    SOFT = "soft"  # temporary failure or delay: the address may work later
    AUTO_REPLY = "auto-reply"  # vacation notice and the like: never a bounce
    UNKNOWN = "unknown"  # not recognisably any of those


class BouncedRecipient(NamedTuple):
    """One recipient as a bounce reports it; a field is None when the bounce does not say."""

    recipient: str | None
    status: str | None  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str | None  # the Diagnostic-Code field, unfolded, e.g. "smtp; 550 5.1.1 no such user"


@frozen
class BounceReport:
    """The classification of one message, with the recipients it reports.

    From an RFC 3464 report: every recipient block in report order, failed or
    not (judge each by its status). From flufl.bounce: the failed addresses,
    sorted, with no status or diagnostic.
    """

    kind: BounceKind
    recipients: tuple[BouncedRecipient, ...] = ()


_UNKNOWN = BounceReport(BounceKind.UNKNOWN)
_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ENHANCED = re.compile(r"(?<![0-9.])([245]\.[0-9]{1,3}\.[0-9]{1,3})(?![0-9.])")
_BASIC_CODE = re.compile(r"\s*([2-5])[0-9][0-9](?![0-9])")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BLOCK_SEPARATOR = re.compile(r"\r?\n[ \t]*\r?\n")
_XTEXT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_MAIL_SYSTEM = frozenset({"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "maildaemon", "postmaster"})
_OUT_OF_OFFICE = re.compile(
    r"\s*(?:out of (?:the )?office|automatic reply|auto[- ]?reply|auto[- ]?respon(?:se|der)"
    r"|abwesenheitsnotiz|automatische antwort|absence|réponse automatique|respuesta automática"
    r"|risposta automatica|resposta automática|on vacation|vacation reply|away from (?:the )?office)\b",
    re.IGNORECASE,
)


def classify(message: bytes) -> BounceReport:
    """Classify the raw message C{message} that arrived at a bounce address."""
    try:
        return _classify(message)
    except RecursionError:  # the stdlib parser recurses once per level of MIME nesting
        log.warn("bounce nested too deeply to read; message treated as unknown")
        return _UNKNOWN
    except Exception:  # boundary: hostile input must not stop the bounce processor
        log.failure("bounce classification failed; message treated as unknown")
        return _UNKNOWN


def _classify(message: bytes) -> BounceReport:
    parsed = BytesParser(policy=compat32).parsebytes(message)
    report = _delivery_status(parsed)
    if report is not None:
        return report
    if _is_auto_reply(parsed):
        return BounceReport(BounceKind.AUTO_REPLY)
    return _detected(parsed)


def _delivery_status(message: Message) -> BounceReport | None:
    """The RFC 3464 reading, or None when no delivery-status part names a recipient."""
    recipients: list[BouncedRecipient] = []
    kinds: set[BounceKind] = set()
    for part in _parts(message):
        if part.get_content_type() not in _STATUS_TYPES:
            continue
        for block in _status_blocks(part):
            if not any(_field(block, name) for name in ("action", "final-recipient", "original-recipient")):
                continue  # the per-message block
            recipient = _address(_field(block, "original-recipient") or _field(block, "final-recipient"))
            diagnostic = _field(block, "diagnostic-code")
            status = _status(_field(block, "status")) or _status(diagnostic)
            recipients.append(BouncedRecipient(recipient, status, diagnostic))
            kinds.add(_block_kind((_field(block, "action") or "").lower(), status, diagnostic))
    if not recipients:
        return None
    for kind in (BounceKind.HARD, BounceKind.SOFT):
        if kind in kinds:
            return BounceReport(kind, tuple(recipients))
    return BounceReport(BounceKind.UNKNOWN, tuple(recipients))


def _block_kind(action: str, status: str | None, diagnostic: str | None) -> BounceKind:
    if action.startswith("delayed"):
        return BounceKind.SOFT
    if not action.startswith(("fail", "error")):  # delivered, relayed, expanded
        return BounceKind.UNKNOWN
    if status is not None:
        return BounceKind.SOFT if status.startswith("4") else BounceKind.HARD
    basic = _BASIC_CODE.match((diagnostic or "").partition(";")[2])
    return BounceKind.SOFT if basic and basic.group(1) == "4" else BounceKind.HARD


def _parts(message: Message) -> Iterator[Message]:
    """Every part of the report itself, not descending into attached messages."""
    yield message
    if message.get_content_maintype() == "multipart":
        payload = message.get_payload()
        if isinstance(payload, list):
            for part in payload:
                if isinstance(part, Message):
                    yield from _parts(part)


def _status_blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part.

    The parser splits C{message/delivery-status} into blocks itself; it reads
    C{message/global-delivery-status} (RFC 6533) as one message whose headers
    are the first block and whose body holds the rest.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    blocks = [block for block in payload if isinstance(block, Message)]
    if part.get_content_type() == "message/delivery-status" or not blocks:
        return blocks
    rest = blocks[0].get_payload()
    if isinstance(rest, str):
        parser = HeaderParser(policy=compat32)
        blocks += [parser.parsestr(text.strip("\r\n") + "\n") for text in _BLOCK_SEPARATOR.split(rest) if text.strip()]
    return blocks


def _field(message: Message, name: str) -> str | None:
    """The first field C{name}: unfolded, 8-bit bytes read as UTF-8, encoded words decoded."""
    values = _fields(message, name)
    return values[0] if values else None


def _fields(message: Message, name: str) -> list[str]:
    values = []
    for key, value in message.raw_items():
        if key.lower() == name:
            text = value if isinstance(value, str) else str(value)
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            values.append(_decoded_words(_FOLD.sub("", text).strip()))
    return values


def _decoded_words(text: str) -> str:
    if "=?" not in text:
        return text
    try:
        return str(default.header_factory("x-field", text))
    except (HeaderParseError, ValueError, LookupError, IndexError):
        return text


def _address(value: str | None) -> str | None:
    """The address of an RFC 3464 address field, C{rfc822; a@b} or RFC 6533 C{utf-8; ...}."""
    if not value:
        return None
    kind, semicolon, address = value.partition(";")
    if not semicolon:
        kind, address = "rfc822", value
    address = address.strip().strip("<>").strip()
    if kind.strip().lower() == "utf-8":
        address = _XTEXT.sub(_unescape, address)
    return address or None


def _unescape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    return chr(code) if code <= 0x10FFFF else match.group(0)


def _status(value: str | None) -> str | None:
    if not value:
        return None
    match = _ENHANCED.search(value)
    return match.group(1) if match else None


def _is_auto_reply(message: Message) -> bool:
    auto_submitted = _field(message, "auto-submitted")
    if auto_submitted is not None and not _from_mail_system(message):
        value = auto_submitted.partition(";")[0].strip().lower()
        if value and value != "no":
            return True
    if _field(message, "x-autoreply") is not None or _field(message, "x-autorespond") is not None:
        return True
    if (_field(message, "precedence") or "").lower() == "auto_reply":
        return True
    return _OUT_OF_OFFICE.match(_field(message, "subject") or "") is not None


def _from_mail_system(message: Message) -> bool:
    """Whether the message is a mail system's report rather than a person's auto-responder."""
    if _field(message, "x-failed-recipients") is not None:
        return True
    _, address = parseaddr(_field(message, "from") or "")
    local = address.rpartition("@")[0] or address
    return local.lower() in _MAIL_SYSTEM


def _detected(message: Message) -> BounceReport:
    """flufl.bounce's reading of a bounce that is not RFC 3464."""
    try:
        temporary, permanent = flufl.bounce.all_failures(_for_detectors(message))
    except Exception as error:  # boundary: third-party heuristics meeting hostile input
        log.warn("bounce detectors failed ({error}); message treated as unknown", error=repr(error))
        return _UNKNOWN
    if permanent:
        kind = BounceKind.HARD
    elif temporary:
        kind = BounceKind.SOFT
    else:
        return _UNKNOWN
    addresses = sorted(address.decode("ascii", "replace") for address in permanent) + sorted(
        address.decode("ascii", "replace") for address in temporary - permanent
    )
    return BounceReport(kind, tuple(BouncedRecipient(address, None, None) for address in addresses))


def _for_detectors(message: Message) -> Message:
    """C{message}, changed in place, with fields that flufl.bounce's detectors can handle.

    They call string methods on field values, where compat32 gives a Header
    object for 8-bit bytes, and fail on a From field that holds no address,
    before later detectors have had their turn. So 8-bit fields are decoded
    as UTF-8 and From is reduced to its address, or C{<>} when it has none.
    """
    for part in message.walk():
        items = list(part.raw_items())
        if all(isinstance(value, str) and value.isascii() for _, value in items):
            continue
        for name in {name for name, _ in items}:
            del part[name]
        for name, value in items:
            text = value if isinstance(value, str) else str(value)
            part[name] = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    sender = parseaddr(_field(message, "from") or "")[1]
    del message["from"]
    message["From"] = sender or "<>"
    return message
