# -*- test-case-name: tests.queue.test_dsn -*-
"""RFC 3464 delivery status notifications: telling a sender what became of their message.

A notice is C{multipart/report; report-type=delivery-status} (RFC 6522) with a
text a person reads (each recipient with the remote server's own words and the
host that said them), the C{message/delivery-status} fields programs read, and
the original message's header section as C{text/rfc822-headers}. The stdlib
C{email} package builds it, so any remote text, however long or non-ASCII,
comes out folded and encoded into 7-bit lines of at most 78 characters.
"""
from __future__ import annotations

import datetime
import re
import secrets
from collections.abc import Sequence
from email.headerregistry import Address
from email.message import Message, MIMEPart
from email.parser import BytesHeaderParser
from email.policy import SMTP, compat32
from email.utils import format_datetime

from ..model import RecipientResult, SpoolRecord

__all__ = ["build_dsn", "original_header_block", "FAILED_SUBJECT", "DELAYED_SUBJECT", "HEADER_LIMIT"]

FAILED_SUBJECT = "Undelivered Mail Returned to Sender"
DELAYED_SUBJECT = "Delayed Mail (still being retried)"
HEADER_LIMIT = 256 * 1024

# SMTP's line length and CRLF, and 7-bit bodies: a notice must reach senders
# whose servers take neither 8BITMIME nor SMTPUTF8.
_POLICY = SMTP.clone(cte_type="7bit")
_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}\Z")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # str.splitlines() breaks at all of these
_HOST = re.compile(r"\[[^\]\s]*\]|[^\s\[\]:]+")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>\Z")


def build_dsn(
    *,
    original_headers: bytes,
    record: SpoolRecord,
    failed: Sequence[RecipientResult],
    delayed: Sequence[RecipientResult] = (),
    reporting_mta: str,
    arrival: float,
    now: float,
    postmaster: str,
) -> bytes:
    """The notice for C{record}'s sender about C{failed} and C{delayed} recipients, as bytes to send.

    The caller sends it to the original envelope sender alone, with the null
    reverse-path C{MAIL FROM:<>} (RFC 5321 section 4.5.5) so that no notice
    is ever answered by another. Lines end in CRLF and are 7-bit. Pure but for
    the random part of its Message-ID.

    The Diagnostic-Code of each recipient is C{smtp; <code> <enhanced> <text>}
    with the lines of a multi-line reply joined by single spaces (a field
    cannot hold line breaks); the human-readable part keeps the lines as the
    server sent them. Non-ASCII text is carried as RFC 2047 encoded words in
    fields and quoted-printable in the text.

    @param original_headers: the original header section, e.g. from
        L{original_header_block}; when empty the third part is left out.
    @param arrival: when the relay accepted the message (POSIX time).
    @param now: when the notice is made; also the Last-Attempt-Date.
    @param postmaster: the address the notice comes from and replies go to.
    @raise ValueError: there is nothing to report, or the envelope sender is
        the null reverse-path (a bounce is never bounced).
    """
    if not failed and not delayed:
        raise ValueError("a delivery status notification needs a failed or delayed recipient")
    sender = record.envelope.sender
    if not sender:
        raise ValueError(f"message {record.message_id} has the null reverse-path; it gets no notice")

    report = MIMEPart(policy=_POLICY)
    report["From"] = Address("Mail Delivery System", addr_spec=postmaster)
    report["To"] = sender
    report["Subject"] = FAILED_SUBJECT if failed else DELAYED_SUBJECT
    report["Date"] = _date(now)
    report["Message-ID"] = f"<{record.message_id}.{secrets.token_hex(8)}.dsn@{reporting_mta}>"
    original_id = _original_message_id(original_headers)
    if original_id:
        report["In-Reply-To"] = original_id
        report["References"] = original_id
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report.set_content(_explanation(record, failed, delayed, reporting_mta, arrival, postmaster))
    report.make_mixed()
    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")
    report.attach(_status_part(record, failed, delayed, reporting_mta, arrival, now))
    headers = _headers_part(original_headers)
    if headers is not None:
        report.attach(headers)
    return report.as_bytes()


def original_header_block(path: str, limit: int = HEADER_LIMIT) -> bytes:
    """The header section of the spooled message at C{path}, without the blank line after it.

    Reads at most C{limit} bytes (and one more, to tell a cut from the end of
    the file). A header section longer than that is cut after its last
    complete line, so the notice never carries half a line.
    Blocking file I/O: call it in the spool thread pool.
    """
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    truncated = len(data) > limit
    data = data[:limit]
    kept: list[bytes] = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:  # a last line without its ending: the whole file, or cut off by the limit
            if not truncated:
                kept.append(data[start:])
            break
        line = data[start:end + 1]
        if line in (b"\r\n", b"\n"):
            break
        kept.append(line)
        start = end + 1
    return b"".join(kept)


def _explanation(
    record: SpoolRecord,
    failed: Sequence[RecipientResult],
    delayed: Sequence[RecipientResult],
    reporting_mta: str,
    arrival: float,
    postmaster: str,
) -> str:
    lines = [
        f"This is the mail delivery system at {reporting_mta}.",
        "",
    ]
    if failed:
        lines += [
            "Your message could not be delivered to one or more recipients.",
            "The reasons the receiving mail servers gave are quoted below exactly.",
            "",
        ]
    else:
        lines += [
            "Your message has not yet been delivered to one or more recipients.",
            "This is only a warning: you do not need to send it again.",
            "",
        ]
    lines += [
        f"For help, write to <{postmaster}> and include this notice.",
        "",
        f"Queue ID: {record.message_id}",
        f"Accepted: {_date(arrival)}",
        "",
    ]
    if failed:
        lines += ["Delivery failed permanently to these recipients; it will not be retried:", ""]
        lines += _recipient_lines(failed, reporting_mta)
    if delayed:
        lines += ["Delivery to these recipients has been delayed; it will be retried:", ""]
        lines += _recipient_lines(delayed, reporting_mta)
    return "\n".join(lines)


def _recipient_lines(results: Sequence[RecipientResult], reporting_mta: str) -> list[str]:
    lines = []
    for result in results:
        reply = _reply_lines(result)
        if result.remote:
            source = f"host {_clean(result.remote)} said:"
        else:
            source = f"no mail server answered; {reporting_mta} reports:"
        lines += [f"<{_clean(result.recipient)}>", f"    {source}"]
        lines += [f"    {line}" for line in reply]
        lines.append("")
    return lines


def _reply_lines(result: RecipientResult) -> list[str]:
    """The reply as its lines: the first prefixed with its codes, control characters shown as ?."""
    lines = _LINE_BREAK.split(_clean_keeping_lines(result.text))
    prefix = f"{result.code} {result.enhanced}".strip()
    lines[0] = f"{prefix} {lines[0]}".strip()
    return lines


def _status_part(
    record: SpoolRecord,
    failed: Sequence[RecipientResult],
    delayed: Sequence[RecipientResult],
    reporting_mta: str,
    arrival: float,
    now: float,
) -> MIMEPart:
    per_message = Message(policy=_POLICY)
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["X-Jangotw-Queue-ID"] = record.message_id
    per_message["Arrival-Date"] = _date(arrival)
    blocks: list[Message | str] = [per_message]
    for action, results, fallback in (("failed", failed, "5.0.0"), ("delayed", delayed, "4.0.0")):
        for result in results:
            block = Message(policy=_POLICY)
            block["Final-Recipient"] = _address_field(result.recipient)
            block["Action"] = action
            block["Status"] = result.enhanced if _ENHANCED.match(result.enhanced) else fallback
            host = _HOST.match(_clean(result.remote).strip())
            if host:
                block["Remote-MTA"] = f"dns; {host.group(0)}"
            block["Diagnostic-Code"] = "smtp; " + " ".join(_reply_lines(result))
            block["Last-Attempt-Date"] = _date(now)
            blocks.append(block)
    part = MIMEPart(policy=_POLICY)
    part["Content-Type"] = "message/delivery-status"
    part.set_payload(blocks)
    return part


def _headers_part(original_headers: bytes) -> MIMEPart | None:
    text = original_headers.decode("utf-8", "replace").rstrip("\r\n")
    if not text:
        return None
    part = MIMEPart(policy=_POLICY)
    part.set_content(text + "\n", subtype="rfc822-headers")
    return part


def _original_message_id(original_headers: bytes) -> str | None:
    value = BytesHeaderParser(policy=compat32).parsebytes(original_headers).get("Message-ID")
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value.isascii() and _MESSAGE_ID.match(value) else None


def _address_field(address: str) -> str:
    """An RFC 3464 address field: rfc822 for ASCII, else RFC 6533 utf-8 type in xtext form."""
    if address.isascii() and not _CONTROL.search(address):
        return f"rfc822; {address}"
    escaped = "".join(
        char if 0x21 <= ord(char) <= 0x7E and char not in "+=\\" else f"\\x{{{ord(char):X}}}" for char in address
    )
    return f"utf-8; {escaped}"


def _clean_keeping_lines(text: str) -> str:
    """C{text} with line breaks as LF, lone surrogates and other control characters (not tab) as ?."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub("?", text.replace("\r\n", "\n").replace("\r", "\n"))


def _clean(text: str) -> str:
    return _clean_keeping_lines(text).replace("\n", " ")


def _date(when: float) -> str:
    return format_datetime(datetime.datetime.fromtimestamp(when, datetime.timezone.utc))
