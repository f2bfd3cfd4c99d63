# -*- test-case-name: tests.pipeline.test_rewrite -*-
"""The rewrite stage's engine: one message in, its wrapped and tracked copy out, streaming.

Reads an RFC 5322 message and writes it again with lines wrapped, links
tracked, an open pixel, the recipient's unique id and top-level header fields
added or removed, as a L{RewritePlan} says, and tells in a L{RewriteReport}
what it did. Text parts (inline text/plain and text/html) are rewritten on
their decoded content and encoded again with their own charset and
Content-Transfer-Encoding (RFC 2045); everything else, and every text part
that needs no change, is copied byte for byte. No line written anew exceeds
RFC 5322's 998 bytes: a 7bit or 8bit text part that would have one becomes
quoted-printable. Memory stays bounded by one text part (L{mime.walk}).
"""
from __future__ import annotations

import base64
import binascii
import codecs
import re
from email.header import Header
from typing import BinaryIO, Callable, Iterable
from urllib.parse import quote

from attrs import Factory, define, field, frozen
from attrs.validators import ge, instance_of, is_callable, optional

from .mime import HeaderBlock, walk
from .text import insert_pixel, replace_unique_id, track_html_links, track_text_links, wrap_lines

__all__ = ["RewritePlan", "RewriteReport", "rewrite", "fold_field", "MAX_LINE", "TEXT_TYPES"]

MAX_LINE = 998  # RFC 5322 section 2.1.1, without the CRLF
TEXT_TYPES = frozenset({"text/plain", "text/html"})
_UNENCODED = frozenset({"", "7bit", "8bit"})
_ENCODINGS = _UNENCODED | {"quoted-printable", "base64"}
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_UNIQUE_ID = re.compile(r"""[^\s<>&"'\x00-\x1f\x7f]+""")
_FOLD_AT = 78
_QP_LINE = 76
_LINE_END = re.compile(rb"\r?\n")


def fold_field(name: str, value: str, eol: bytes) -> bytes:
    """One header field, folded at whitespace to 78 characters where it can be (RFC 5322 2.2.3);
    a non-ASCII value becomes RFC 2047 encoded words."""
    if not value.isascii():
        encoded = Header(value, "utf-8", header_name=name).encode(linesep=eol.decode("ascii"))
        return f"{name}: {encoded}".encode("ascii") + eol
    lines: list[str] = []
    line = f"{name}:"
    for piece in re.findall(r"[ \t]*[^ \t]+", value.strip()):
        if not piece[0].isspace():
            piece = " " + piece
        if len(line) + len(piece) > _FOLD_AT and line != f"{name}:":
            lines.append(line)
            line = piece
        else:
            line += piece
    lines.append(line)
    return eol.join(part.encode("ascii") for part in lines) + eol


def _check_fields(instance: object, attribute: object, fields: tuple[tuple[str, str], ...]) -> None:
    for name, value in fields:
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"not a header field name: {name!r}")
        if any(character in value for character in "\r\n\0"):
            raise ValueError(f"line break or NUL in the value of {name}")
        if any(len(line) > MAX_LINE for line in _LINE_END.split(fold_field(name, value, b"\r\n"))):
            raise ValueError(f"{name} cannot be folded to {MAX_LINE}-byte lines")


def _check_unique_id(instance: object, attribute: object, value: str | None) -> None:
    if value is not None and not _UNIQUE_ID.fullmatch(value):
        raise ValueError("a unique id is one printable token without HTML specials")


def _field_tuple(fields: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in fields)


def _lower_names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.lower() for name in names)


@frozen
class RewritePlan:
    """What to change in one copy of a message. The defaults change nothing.

    @ivar wrap: break lines of 7bit/8bit text parts longer than this many
        characters, at whitespace (0: off).
    @ivar click_url: C{click_url(destination, index)} is the tracked URL for the
        link to C{destination}, the C{index}-th distinct destination in the message.
    @ivar click_text: track bare URLs in text/plain parts too.
    @ivar open_pixel: URL of a 1x1 image put before C{</body>} of each HTML part.
    @ivar unique_id: replaces C{***uniqueid***} in text parts.
    @ivar headers_to_add: (name, value) fields appended to the top-level header block.
    @ivar headers_to_remove: names of top-level fields to drop (any case); a field
        named here and in C{headers_to_add} is replaced.
    @ivar unsubscribe_marker_path: links containing this are never tracked.
    @ivar max_text_part: a text part longer than this (encoded) is copied unchanged.
    """

    wrap: int = field(default=0, validator=[instance_of(int), ge(0)])
    click_url: Callable[[str, int], str] | None = field(default=None, validator=optional(is_callable()))
    click_text: bool = False
    open_pixel: str | None = field(default=None, validator=optional(instance_of(str)))
    unique_id: str | None = field(default=None, validator=_check_unique_id)
    headers_to_add: tuple[tuple[str, str], ...] = field(default=(), converter=_field_tuple,
                                                       validator=_check_fields)
    headers_to_remove: frozenset[str] = field(default=frozenset(), converter=_lower_names)
    unsubscribe_marker_path: str = "/u.z?"
    max_text_part: int = field(default=4 * 1024 * 1024, validator=ge(1))


@frozen
class RewriteReport:
    """What L{rewrite} did, for the stage to record and to decide whether the copy is needed.

    @ivar destinations: the tracked link destinations, in index order.
    @ivar links_tracked: links replaced, repeats included.
    @ivar pixel_inserted: an open pixel went into at least one HTML part.
    @ivar parts_reencoded: text parts written from changed content.
    @ivar parts_made_quoted_printable: of those, 7bit/8bit parts that became quoted-printable.
    @ivar parts_too_large: text parts over C{max_text_part}, copied unchanged.
    @ivar changed: the output differs from the input.
    @ivar parts_encoded: of the parts written from changed content, those written base64 or
        quoted-printable (their new text is not in the output as it is).
    """

    destinations: tuple[str, ...] = ()
    links_tracked: int = 0
    pixel_inserted: bool = False
    parts_reencoded: int = 0
    parts_made_quoted_printable: int = 0
    parts_too_large: int = 0
    changed: bool = False
    parts_encoded: int = 0


def rewrite(source: BinaryIO, sink: BinaryIO, plan: RewritePlan) -> RewriteReport:
    """Write the message read from C{source} to C{sink}, changed as C{plan} says.

    Blocking file I/O: run it off the reactor thread.

    @raise jangotw.errors.PermanentError: the top-level header block is too long to read.
    """
    editor = _Rewriter(plan)
    walk(source, sink, editor, plan.max_text_part)
    return editor.report()


@define
class _Rewriter:
    """The L{jangotw.pipeline.mime.Editor} for one message; collects the report as it goes."""

    plan: RewritePlan
    links: dict[str, int] = Factory(dict)
    urls: dict[str, str] = Factory(dict)
    tracked: int = 0
    pixels: int = 0
    reencoded: int = 0
    made_quoted_printable: int = 0
    too_large: int = 0
    header_changed: bool = False
    encoded: int = 0

    def report(self) -> RewriteReport:
        return RewriteReport(tuple(self.links), self.tracked, self.pixels > 0, self.reencoded,
                             self.made_quoted_printable, self.too_large,
                             self.header_changed or self.reencoded > 0, self.encoded)

    def top(self, header: HeaderBlock) -> HeaderBlock:
        plan = self.plan
        edited = header
        if plan.headers_to_remove.intersection(header.names()):
            edited = edited.without(plan.headers_to_remove)
        if plan.headers_to_add:
            edited = edited.plus(*(fold_field(name, value, header.eol) for name, value in plan.headers_to_add))
        if edited is not header:
            self.header_changed = True
        return edited

    def select(self, header: HeaderBlock) -> bool:
        return (header.content_type in TEXT_TYPES and not header.is_attachment
                and header.transfer_encoding in _ENCODINGS)

    def oversized(self, header: HeaderBlock) -> None:
        self.too_large += 1

    def rewrite(self, header: HeaderBlock, body: bytes) -> tuple[HeaderBlock, bytes] | None:
        encoding = header.transfer_encoding
        decoded = _decode(encoding, body)
        if decoded is None:
            return None
        edited = self._edit(header, decoded, encoding in _UNENCODED)
        eol = header.eol
        if encoding == "base64":
            return None if edited is None else self._done(header, _encode_base64(edited, eol), encoded=True)
        if encoding == "quoted-printable":
            return None if edited is None else self._done(header, _encode_quoted_printable(edited, eol), encoded=True)
        content = decoded if edited is None else edited
        too_long = _longest_line(content) > MAX_LINE
        if too_long or (edited is not None and encoding in ("", "7bit") and not content.isascii()):
            self.made_quoted_printable += 1
            header = header.without(frozenset({"content-transfer-encoding"})).plus(
                b"Content-Transfer-Encoding: quoted-printable" + eol)
            return self._done(header, _encode_quoted_printable(content, eol), encoded=True)
        return None if edited is None else self._done(header, content)

    def _done(self, header: HeaderBlock, body: bytes, encoded: bool = False) -> tuple[HeaderBlock, bytes]:
        self.reencoded += 1
        self.encoded += encoded
        return header, body

    def _edit(self, header: HeaderBlock, decoded: bytes, wrappable: bool) -> bytes | None:
        """The part's changed content in its own charset, or None if nothing changes (or its
        charset is unknown, or does not give back the same bytes: then it is left alone)."""
        try:
            codec = codecs.lookup(header.charset or "us-ascii").name
            text = decoded.decode(codec, "surrogateescape")
            if text.encode(codec, "surrogateescape") != decoded:
                return None
        except (LookupError, UnicodeError, ValueError):  # unknown, not a text codec, or odd
            return None
        plan = self.plan
        markup = header.content_type == "text/html"
        edited = text
        if plan.click_url is not None and markup:
            edited = track_html_links(edited, self._track)
        elif plan.click_url is not None and plan.click_text:
            edited = track_text_links(edited, self._track)
        if plan.unique_id is not None:
            edited = replace_unique_id(edited, plan.unique_id)
        if plan.open_pixel is not None and markup:
            edited = insert_pixel(edited, plan.open_pixel)
            self.pixels += 1
        if plan.wrap and wrappable:
            edited = wrap_lines(edited, plan.wrap, _eol_of(edited, header.eol), markup)
        if edited == text:
            return None
        return _encode_text(edited, codec)

    def _track(self, destination: str) -> str | None:
        plan = self.plan
        if plan.click_url is None or (plan.unsubscribe_marker_path and plan.unsubscribe_marker_path in destination):
            return None
        self.tracked += 1
        if destination not in self.urls:
            index = self.links.setdefault(destination, len(self.links))
            self.urls[destination] = plan.click_url(destination, index)
        return self.urls[destination]


def _eol_of(text: str, default: bytes) -> str:
    """The line end a text already uses, for the breaks wrapping adds."""
    first = text.find("\n")
    if first < 0:
        return default.decode("ascii")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _decode(encoding: str, body: bytes) -> bytes | None:
    """A part's content without its transfer encoding; None when it is not decodable."""
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            return None
    return body


def _encode_text(text: str, codec: str) -> bytes:
    """Encode back to the part's charset; characters the charset lacks (only ever in inserted
    URLs) are percent-encoded as UTF-8."""
    encoded = bytearray()
    while text:
        try:
            encoded += text.encode(codec, "surrogateescape")
            break
        except UnicodeEncodeError as error:
            encoded += text[:error.start].encode(codec, "surrogateescape")
            encoded += quote(text[error.start:error.end], safe="", errors="replace").encode("ascii")
            text = text[error.end:]
    return bytes(encoded)


def _encode_base64(content: bytes, eol: bytes) -> bytes:
    """Base64 in 76-character lines (RFC 2045 6.8), without a final line end."""
    return base64.encodebytes(content).rstrip(b"\n").replace(b"\n", eol)


def _encode_quoted_printable(content: bytes, eol: bytes) -> bytes:
    """Quoted-printable (RFC 2045 6.7): each line encoded on its own, so CR or LF inside a line
    and trailing whitespace are escaped and hard line breaks stay C{eol}."""
    return eol.join(_quoted_printable_line(line, eol) for line in _LINE_END.split(content))


def _quoted_printable_line(line: bytes, eol: bytes) -> bytes:
    """One line in soft-broken pieces of at most 76 characters. No piece starts with "--",
    so none can be taken for a MIME delimiter: such a piece starts with C{=2D}."""
    encoded = binascii.b2a_qp(line, istext=False).replace(b"=\n", b"")  # one long line
    pieces = []
    at = 0
    while True:
        head = b""
        if encoded.startswith(b"--", at):
            head, at = b"=2D", at + 1
        room = _QP_LINE - len(head)
        if len(encoded) - at <= room:
            pieces.append(head + encoded[at:])
            return (b"=" + eol).join(pieces)
        cut = at + room - 1  # leave room for the soft break's "="
        if encoded[cut - 1:cut] == b"=":  # never split an =XX escape
            cut -= 1
        elif encoded[cut - 2:cut - 1] == b"=":
            cut -= 2
        pieces.append(head + encoded[at:cut])
        at = cut


def _longest_line(content: bytes) -> int:
    return max(len(line) - line.endswith(b"\r") for line in content.split(b"\n"))
