# -*- test-case-name: tests.ingress.test_receiver -*-
"""DATA, streamed: dot-unstuffing, the end-of-data rule, limits, and smuggling defence.

Data ends only at CRLF "." CRLF. A bare CR or LF is never a line end for that
purpose, so "\\n.\\n" cannot end a message early and smuggle a second one in
(SMTP smuggling, CVE-2023-51766 and friends); it is refused (550 5.6.0) or, when
configured, normalised to CRLF inside the message. Bytes go to the spool as they
arrive: only the header section (bounded) and one partial line (bounded) are ever
held in memory, whatever the message size or line length.
"""
from __future__ import annotations

import re
from typing import Callable

from ..errors import ReplyError
from ..interfaces import ISpoolFile
from .headers import HeaderSection, is_field_start

__all__ = ["Receiver", "MESSAGE_TOO_BIG", "HEADERS_TOO_BIG", "BARE_NEWLINE", "WRITE_FAILED"]

MESSAGE_TOO_BIG = ReplyError(552, "5.3.4", "Message size exceeds fixed maximum message size")
HEADERS_TOO_BIG = ReplyError(552, "5.3.4", "Header section too large")
BARE_NEWLINE = ReplyError(550, "5.6.0", "Bare CR or LF in message text; lines must end with CRLF")
WRITE_FAILED = ReplyError(451, "4.3.0", "Local error in processing; try again later")

_PARTIAL_LIMIT = 8192  # a partial body line longer than this is written through
_BARE = re.compile(rb"\r\n|\r|\n")


class Receiver:
    """Consume one message's DATA and write its content to a spool file.

    C{feed} returns None until end of data, then the bytes that followed it
    (pipelined commands). Afterwards C{problem} says why the message must be
    refused, if it must.
    """

    def __init__(
        self,
        sink: ISpoolFile,
        render_headers: Callable[[HeaderSection], bytes],
        max_size: int,
        max_header_size: int,
        normalise_bare_newlines: bool = False,
    ) -> None:
        self._sink = sink
        self._render_headers = render_headers
        self._max_size = max_size
        self._max_header_size = max_header_size
        self._normalise = normalise_bare_newlines
        self._pending = b""
        self._line_start = True
        self._header_lines: list[bytes] | None = []
        self._header_bytes = 0
        self.size = 0
        self.longest_line = 0  # of the body, in bytes: the rewrite stage skips wrapping short-lined mail
        self._partial_length = 0  # bytes of the current body line already written through
        self.headers = HeaderSection()
        self.problem: ReplyError | None = None

    # -- stream ------------------------------------------------------------

    def feed(self, data: bytes) -> bytes | None:
        buffer = self._pending + data
        self._pending = b""
        if self._header_lines is not None:
            consumed, ended = self._feed_headers(buffer)
            if ended:
                return buffer[consumed:]
            buffer = buffer[consumed:]
            if self._header_lines is not None:
                if len(buffer) <= self._max_header_size:
                    self._pending = buffer
                    return None
                self._refuse(HEADERS_TOO_BIG)
                self._end_headers()
                self._line_start = False
        return self._feed_body(buffer)

    def _feed_headers(self, buffer: bytes) -> tuple[int, bool]:
        """Consume complete header lines; returns (bytes consumed, whether data ended)."""
        position = 0
        while self._header_lines is not None:
            end = buffer.find(b"\r\n", position)
            if end < 0:
                return position, False
            line = buffer[position:end]
            if line == b".":
                self._end_headers()
                return end + 2, True
            if line.startswith(b"."):
                line = line[1:]
            if not self._header_line(line):
                return position, False  # not a header: leave it for the body
            position = end + 2
        return position, False

    def _header_line(self, line: bytes) -> bool:
        """Take one header line; False when it begins the body instead."""
        assert self._header_lines is not None
        pieces = self._bare_checked(line)
        for index, piece in enumerate(pieces):
            if piece == b"":
                self._end_headers(rest=pieces[index + 1:])
                return True
            if not (is_field_start(piece) or (piece[:1] in (b" ", b"\t") and self._header_lines)):
                if index:  # fields, then text after a normalised bare newline: the text starts the body
                    self._end_headers(rest=pieces[index:], blank_line_missing=True)
                    return True
                self._end_headers(blank_line_missing=True)
                return False
            self._header_bytes += len(piece) + 2
            if self._header_bytes > self._max_header_size:
                self._refuse(HEADERS_TOO_BIG)
            else:
                self._header_lines.append(piece)
        return True

    def _end_headers(self, rest: list[bytes] | None = None, blank_line_missing: bool = False) -> None:
        lines, self._header_lines = self._header_lines or [], None
        self.headers = HeaderSection.parse(lines)
        self._write(self._render_headers(self.headers), count=False)
        self.size += self._header_bytes + (0 if blank_line_missing else 2)
        if rest:
            self._write(b"\r\n".join(rest) + b"\r\n")

    def _feed_body(self, buffer: bytes) -> bytes | None:
        last = buffer.rfind(b"\r\n")
        if last < 0:
            self._hold_partial(buffer)
            return None
        complete = buffer[:last]
        if (self._line_start and complete[:1] == b".") or b"\r\n." in complete:
            end = self._lines_with_dots(complete)
            if end is not None:
                return buffer[end + 2:]
        else:
            self._write_text(complete)
        self._line_start = True
        self._hold_partial(buffer[last + 2:])
        return None

    def _lines_with_dots(self, complete: bytes) -> int | None:
        """Slow path for text with lines starting with a dot: unstuff, or find the end.
        Returns the offset of the end marker's line end when data ended."""
        lines = complete.split(b"\r\n")
        offset = 0
        kept: list[bytes] = []
        for index, line in enumerate(lines):
            at_line_start = index > 0 or self._line_start
            if at_line_start and line[:1] == b".":
                if line == b".":
                    if kept:
                        self._write_text(b"\r\n".join(kept))
                    return offset + 1
                line = line[1:]
            kept.append(line)
            offset += len(lines[index]) + 2
        self._write_text(b"\r\n".join(kept))
        return None

    def _hold_partial(self, rest: bytes) -> None:
        if len(rest) <= _PARTIAL_LIMIT:
            self._pending = rest
            return
        keep = 1 if rest.endswith(b"\r") else 0
        text = rest[: len(rest) - keep]
        if self._line_start and text[:1] == b".":
            text = text[1:]  # longer than "." so it is stuffing, not the end
        self._write(b"\r\n".join(self._bare_checked(text)))
        self._partial_length += len(text)
        self.longest_line = max(self.longest_line, self._partial_length)
        self._line_start = False
        self._pending = rest[len(rest) - keep:]

    # -- output ------------------------------------------------------------

    def _write_text(self, text: bytes) -> None:
        """Write complete lines (without the final CRLF, which is added)."""
        if text.count(b"\n") != text.count(b"\r\n") or text.count(b"\r") != text.count(b"\r\n"):
            text = b"\r\n".join(self._bare_checked(text))
        first, _, rest = text.partition(b"\r\n")
        self.longest_line = max(self.longest_line, self._partial_length + len(first),
                                max(map(len, rest.split(b"\r\n"))) if rest else 0)
        self._partial_length = 0
        self._write(text + b"\r\n")

    def _bare_checked(self, text: bytes) -> list[bytes]:
        """Split at any line ending; a bare CR or LF is refused unless normalising."""
        pieces = _BARE.split(text)
        if len(pieces) > 1 and not self._normalise and text.count(b"\r\n") != len(pieces) - 1:
            self._refuse(BARE_NEWLINE)
        return pieces if self._normalise else [text]

    def _write(self, data: bytes, count: bool = True) -> None:
        if count:
            self.size += len(data)
            if self.size > self._max_size:
                self._refuse(MESSAGE_TOO_BIG)
        if self.problem is None:
            try:
                self._sink.write(data)
            except OSError as error:  # a buffer flush failed (disk full): refuse, keep reading to the end
                self._refuse(WRITE_FAILED.because(f"spool write failed: {error}"))

    def _refuse(self, problem: ReplyError) -> None:
        if self.problem is None:
            self.problem = problem
