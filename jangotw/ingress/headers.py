# -*- test-case-name: tests.ingress.test_headers -*-
"""The header section of an incoming message: what the relay reads from it and adds to it.

The original header bytes are kept as they came (a client's DKIM signature must
survive); fields are only dropped whole (X-SMTPUsername) or added (Received,
Message-ID, Date).
"""
from __future__ import annotations

import email.utils
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP

from attrs import frozen

__all__ = ["HeaderSection", "FromHeader", "is_field_start", "MAX_RECEIVED"]

MAX_RECEIVED = 25
_DROPPED = frozenset({b"x-smtpusername"})


def is_field_start(line: bytes) -> bool:
    """Whether C{line} can begin a header field (C{name:}), per RFC 5322 section 2.2."""
    name, colon, _ = line.partition(b":")
    return bool(colon) and bool(name) and all(33 <= byte <= 126 for byte in name)


@frozen
class FromHeader:
    """The header From as a person reads it."""

    address: str
    display_name: str

    @property
    def as_text(self) -> str:
        """Display name, else the address: the text used in relay refusals."""
        return self.display_name or self.address


@frozen
class HeaderSection:
    """Header fields as raw byte lines (continuations included), in order."""

    fields: tuple[tuple[bytes, bytes], ...] = ()  # (lower-case name, raw field bytes incl. CRLFs)

    @classmethod
    def parse(cls, lines: list[bytes]) -> "HeaderSection":
        """Group header lines (without line endings) into fields; continuation lines join the field above."""
        fields: list[tuple[bytes, list[bytes]]] = []
        for line in lines:
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1][1].append(line)
            else:
                fields.append((line.partition(b":")[0].strip().lower(), [line]))
        return cls(tuple((name, b"\r\n".join(parts) + b"\r\n") for name, parts in fields))

    def count(self, name: bytes) -> int:
        return sum(1 for field_name, _ in self.fields if field_name == name)

    def value(self, name: bytes) -> str | None:
        """The unfolded value of the first field called C{name}, decoded leniently."""
        for field_name, raw in self.fields:
            if field_name == name:
                value = raw.partition(b":")[2].replace(b"\r\n", b"")
                return value.decode("utf-8", "replace").strip()
        return None

    @property
    def loops(self) -> bool:
        """More Received fields than any sane path has: a mail loop."""
        return self.count(b"received") > MAX_RECEIVED

    @property
    def smtp_username(self) -> str | None:
        """The account named by an X-SMTPUsername header, to choose among accounts sharing an IP."""
        value = self.value(b"x-smtpusername")
        return value or None

    @property
    def sender(self) -> FromHeader | None:
        """The first mailbox of the From header, or None when there is none that parses."""
        value = self.value(b"from")
        if value is None:
            return None
        try:
            header = SMTP.header_factory("from", value)
            addresses: tuple[Address, ...] = header.addresses  # type: ignore[attr-defined]
        except (ValueError, IndexError, AttributeError):
            addresses = ()
        if addresses and addresses[0].addr_spec and "@" in addresses[0].addr_spec:
            first = addresses[0]
            return FromHeader(first.addr_spec, first.display_name)
        name, address = email.utils.parseaddr(value)
        return FromHeader(address, name) if "@" in address else None

    def render(self, prepend: bytes, hostname: str, queue_id: str, now: float, subject: str | None = None) -> bytes:
        """The header block to spool: our Received on top, internal fields dropped,
        Message-ID and Date added when missing, ending with the blank line.
        C{subject}, when given, replaces the Subject (an initiation command never reaches the disk)."""
        dropped = _DROPPED | {b"subject"} if subject is not None else _DROPPED
        kept = b"".join(raw for name, raw in self.fields if name not in dropped)
        added = b""
        if subject is not None:
            charset = "us-ascii" if subject.isascii() else "utf-8"
            encoded = Header(subject, charset, header_name="Subject").encode(linesep="\r\n")
            added += b"Subject: " + encoded.encode("ascii") + b"\r\n"
        if not self.count(b"message-id"):
            added += f"Message-ID: <{queue_id}@{hostname}>\r\n".encode("ascii")
        if not self.count(b"date"):
            added += b"Date: " + email.utils.formatdate(now).encode("ascii") + b"\r\n"
        return prepend + kept + added + b"\r\n"
