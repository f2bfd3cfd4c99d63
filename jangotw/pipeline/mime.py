# -*- test-case-name: tests.pipeline.test_rewrite -*-
"""A streaming walk over one RFC 5322 / RFC 2045-2046 message, copying it to a sink.

The stdlib parser reads whole messages; this walk keeps one block of input,
one header block and at most one selected part's body in memory. Multiparts
are followed by their boundaries, everything the L{Editor} does not select is
copied through byte for byte, and the bytes between parts (preambles,
delimiters, epilogues) are never touched. CRLF and bare LF line ends are both
accepted and kept.
"""
from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import BinaryIO, Callable, Protocol

import attrs
from attrs import field, frozen

from ..errors import PermanentError

__all__ = ["HeaderBlock", "Editor", "walk", "MAX_DEPTH", "MAX_HEADER_BYTES"]

MAX_DEPTH = 64  # deeper multiparts are copied through as one opaque part
MAX_HEADER_BYTES = 256 * 1024  # a longer header block is not parsed, its entity copied through
_BLOCK = 256 * 1024
_MAX_DELIMITER = 1024  # a line starting with "--" and longer than this is never a delimiter
_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")

Emit = Callable[[bytes | memoryview], object]


@frozen
class HeaderBlock:
    """One entity's header fields as read (each with its continuation lines and line end).

    C{separator} is the empty line that ended the block (empty if there was
    none), C{eol} the line end the block uses, for any line written anew.
    """
    fields: tuple[bytes, ...]
    separator: bytes
    eol: bytes
    default_type: str
    parsed: Message = field(eq=False, repr=False)

    @classmethod
    def parse(cls, fields: tuple[bytes, ...], separator: bytes, default_type: str = "text/plain") -> HeaderBlock:
        first = fields[0] if fields else separator
        eol = b"\n" if first.endswith(b"\n") and not first.endswith(b"\r\n") else b"\r\n"
        parsed = BytesHeaderParser(policy=compat32).parsebytes(b"".join(fields) + b"\r\n")
        parsed.set_default_type(default_type)
        return cls(fields, separator, eol, default_type, parsed)

    def to_bytes(self) -> bytes:
        return b"".join(self.fields) + self.separator

    @property
    def content_type(self) -> str:
        return self.parsed.get_content_type()

    @property
    def boundary(self) -> bytes | None:
        found = self.parsed.get_boundary()
        try:
            return found.encode("ascii", "surrogateescape") if found else None
        except UnicodeError:  # mangled while decoding the parameter: no delimiter matches it
            return None

    @property
    def charset(self) -> str | None:
        found = self.parsed.get_content_charset()
        return found if isinstance(found, str) else None

    @property
    def transfer_encoding(self) -> str:
        """Lower-case Content-Transfer-Encoding, empty when absent."""
        return str(self.parsed.get("content-transfer-encoding", "")).strip().lower()

    @property
    def is_attachment(self) -> bool:
        return self.parsed.get_content_disposition() == "attachment"

    def names(self) -> list[str]:
        return [_name(line) for line in self.fields]

    def without(self, names: frozenset[str]) -> HeaderBlock:
        """The block without the fields whose lower-case names are in C{names} (raw bytes kept)."""
        kept = tuple(line for line in self.fields if _name(line) not in names)
        return HeaderBlock.parse(kept, self.separator, self.default_type)

    def plus(self, *lines: bytes) -> HeaderBlock:
        """The block with already folded fields (ending in C{eol}) appended."""
        return HeaderBlock.parse(self.fields + lines, self.separator or self.eol, self.default_type)


def _name(line: bytes) -> str:
    return line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")


class Editor(Protocol):
    """What the walk asks about a message; L{jangotw.pipeline.rewrite} answers."""

    def top(self, header: HeaderBlock) -> HeaderBlock:
        """The top-level header block to write, and to walk by, instead of C{header}."""

    def select(self, header: HeaderBlock) -> bool:
        """Whether a leaf part's body should be read into memory and offered to L{rewrite}."""

    def rewrite(self, header: HeaderBlock, body: bytes) -> tuple[HeaderBlock, bytes] | None:
        """A new header block and body for a selected part (the body without the line end
        that belongs to the next delimiter), or None to copy the part unchanged."""

    def oversized(self, header: HeaderBlock) -> None:
        """A selected part was longer than the walk's limit and was copied unchanged."""


class _Input:
    """Buffered reading of the source: header lines one by one, bodies block by block."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buffer = b""
        self._at = 0
        self._eof = False

    def _fill(self) -> bool:
        """Read one more block; False at end of input."""
        if self._eof:
            return False
        block = self._stream.read(_BLOCK)
        self._buffer = self._buffer[self._at:] + block
        self._at = 0
        self._eof = not block
        return bool(block)

    def readline(self, limit: int) -> bytes:
        """The next line with its line end; at most C{limit} bytes; empty at end of input."""
        while True:
            end = self._buffer.find(b"\n", self._at, self._at + limit)
            if end >= 0:
                end += 1
                break
            if len(self._buffer) - self._at >= limit or not self._fill():
                end = min(len(self._buffer), self._at + limit)
                break
        line = self._buffer[self._at:end]
        self._at = end
        return line

    def unread(self, line: bytes) -> None:
        """Push back the line the last L{readline} returned."""
        self._at -= len(line)

    def scan(self, emit: Emit, is_delimiter: Callable[[bytes], bool]) -> bytes:
        """Emit everything up to the next line for which C{is_delimiter} is true and return
        that line (consumed, not emitted); empty at end of input. Called at a line start."""
        candidate = self._at  # a line start that may hold a delimiter, or -1
        while True:
            buffer = self._buffer
            undecided = False
            while candidate >= 0:
                if len(buffer) - candidate < 2 or not buffer.startswith(b"--", candidate):
                    if len(buffer) - candidate < 2 and not self._eof:
                        undecided = True
                        break
                else:
                    end = buffer.find(b"\n", candidate, candidate + _MAX_DELIMITER)
                    short = len(buffer) - candidate < _MAX_DELIMITER
                    if end < 0 and short and not self._eof:
                        undecided = True
                        break
                    line = buffer[candidate:end + 1] if end >= 0 else buffer[candidate:] if short else b""
                    if line and is_delimiter(line):
                        emit(memoryview(buffer)[self._at:candidate])
                        self._at = candidate + len(line)
                        return line
                found = buffer.find(b"\n--", candidate)
                candidate = found + 1 if found >= 0 else -1
            if self._eof:
                emit(memoryview(buffer)[self._at:])
                self._at = len(buffer)
                return b""
            # keep the undecided line, or else a tail that may be the start of "\n--"
            keep = candidate if undecided else max(self._at, len(buffer) - 2)
            emit(memoryview(buffer)[self._at:keep])
            self._at = keep
            self._fill()
            if not undecided:
                found = self._buffer.find(b"\n--", self._at)
                candidate = found + 1 if found >= 0 else -1
            else:
                candidate = self._at


class _Delimiters:
    """Matches the delimiter lines of the enclosing multiparts, innermost first."""

    def __init__(self, boundaries: tuple[bytes, ...]) -> None:
        self.boundaries = boundaries
        alternatives = b"|".join(re.escape(b) for b in reversed(boundaries)) or b"(?!)"
        self._pattern = re.compile(rb"--(" + alternatives + rb")(--)?[ \t]*(?:\r?\n)?\Z")

    def nested(self, boundary: bytes) -> _Delimiters:
        return _Delimiters(self.boundaries + (boundary,))

    def match(self, line: bytes) -> tuple[bytes, bool] | None:
        """(boundary, is the close delimiter) for a delimiter line, None for any other line."""
        found = self._pattern.match(line)
        return (found.group(1), found.group(2) is not None) if found else None

    def __call__(self, line: bytes) -> bool:
        return self._pattern.match(line) is not None


class _Collector:
    """Gathers a selected body in memory until it grows past the limit, then streams it."""

    def __init__(self, sink: BinaryIO, header: bytes, limit: int) -> None:
        self._sink = sink
        self._header: bytes | None = header
        self._limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    @property
    def overflowed(self) -> bool:
        return self._header is None

    def __call__(self, data: bytes | memoryview) -> None:
        if self._header is None:
            self._sink.write(data)
            return
        self.chunks.append(bytes(data))
        self.size += len(data)
        if self.size > self._limit:
            self._sink.write(self._header)
            for chunk in self.chunks:
                self._sink.write(chunk)
            self._header, self.chunks = None, []


def walk(source: BinaryIO, sink: BinaryIO, editor: Editor, max_part: int) -> None:
    """Copy the message in C{source} to C{sink}, letting C{editor} change what it selects.

    C{max_part} bounds the body of a selected part held in memory.

    @raise PermanentError: the top-level header block is longer than L{MAX_HEADER_BYTES}.
    """
    _Walk(_Input(source), sink, editor, max_part).entity(_Delimiters(()), "text/plain", top=True)


class _Walk:
    def __init__(self, source: _Input, sink: BinaryIO, editor: Editor, max_part: int) -> None:
        self.source = source
        self.sink = sink
        self.editor = editor
        self.max_part = max_part

    def entity(self, delimiters: _Delimiters, default_type: str, top: bool = False) -> bytes:
        """Copy one entity (header and body); return the delimiter line that ended it
        (consumed, not yet written) or empty at end of input."""
        header = self.header_block(delimiters, default_type)
        if header is None:  # unreasonable header block: copied as read, the rest with it
            if top:
                raise PermanentError(f"message header block longer than {MAX_HEADER_BYTES} bytes")
            return self.source.scan(self.sink.write, delimiters)
        if top:
            header = self.editor.top(header)
        boundary = header.boundary if header.content_type.startswith("multipart/") else None
        if boundary is not None and len(delimiters.boundaries) < MAX_DEPTH:
            self.sink.write(header.to_bytes())
            return self.multipart(delimiters.nested(boundary), header.content_type == "multipart/digest")
        if not self.editor.select(header):
            self.sink.write(header.to_bytes())
            return self.source.scan(self.sink.write, delimiters)
        return self.selected(header, delimiters)

    def header_block(self, delimiters: _Delimiters, default_type: str) -> HeaderBlock | None:
        """Read a header block up to its empty line (or up to the first line that is neither a
        field nor a continuation, which is left for the body). None, after copying what was
        read, when the block exceeds L{MAX_HEADER_BYTES}."""
        fields: list[bytes] = []
        size = 0
        while True:
            line = self.source.readline(MAX_HEADER_BYTES)
            size += len(line)
            if size > MAX_HEADER_BYTES:
                self.sink.write(b"".join(fields) + line)
                return None
            if line in (b"\r\n", b"\n"):
                return HeaderBlock.parse(tuple(fields), line, default_type)
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += line
            elif line and not delimiters(line) and _FIELD.match(line):
                fields.append(line)
            else:
                self.source.unread(line)
                return HeaderBlock.parse(tuple(fields), b"", default_type)

    def multipart(self, delimiters: _Delimiters, digest: bool) -> bytes:
        """Copy the preamble, each part and the epilogue of a multipart entity."""
        own = delimiters.boundaries[-1]
        outer = _Delimiters(delimiters.boundaries[:-1])
        line = self.source.scan(self.sink.write, delimiters)
        while line:
            boundary, close = delimiters.match(line) or (b"", False)
            if boundary != own:  # an enclosing multipart ends here (this one was not closed)
                return line
            self.sink.write(line)
            if close:
                return self.source.scan(self.sink.write, outer)
            line = self.entity(delimiters, "message/rfc822" if digest else "text/plain")
        return line

    def selected(self, header: HeaderBlock, delimiters: _Delimiters) -> bytes:
        """Read a selected part's body, offer it to the editor, write the result."""
        collector = _Collector(self.sink, header.to_bytes(), self.max_part)
        line = self.source.scan(collector, delimiters)
        if collector.overflowed:
            self.editor.oversized(header)
            return line
        body = b"".join(collector.chunks)
        end = b"\r\n" if body.endswith(b"\r\n") else b"\n" if body.endswith(b"\n") else b""
        body = body[:len(body) - len(end)]
        result = self.editor.rewrite(header, body)
        if result is not None:
            header, body = result
            if not header.separator:  # a new body must not be read as more header fields
                header = attrs.evolve(header, separator=header.eol)
            if line and body and not end:  # the part was empty: its delimiter needs a line end
                end = header.eol
        self.sink.write(header.to_bytes())
        self.sink.write(body)
        self.sink.write(end)
        return line
