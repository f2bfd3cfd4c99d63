"""DATA streaming: end-of-data, dot-unstuffing and limits, at every chunk boundary."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from jangotw.ingress.headers import HeaderSection
from jangotw.ingress.receiver import BARE_NEWLINE, MESSAGE_TOO_BIG, Receiver
from jangotw.testing import MemorySpool


def render(headers: HeaderSection) -> bytes:
    return b"".join(raw for _, raw in headers.fields) + b"\r\n"


def receive(chunks: list[bytes], **options: object) -> tuple[bytes, bytes | None, Receiver]:
    sink = MemorySpool().open()
    receiver = Receiver(sink, render, options.get("max_size", 10**8), options.get("max_header_size", 65536),
                        bool(options.get("normalise", False)))
    for index, chunk in enumerate(chunks):
        rest = receiver.feed(chunk)
        if rest is not None:
            return bytes(sink.data), rest + b"".join(chunks[index + 1:]), receiver
    return bytes(sink.data), None, receiver


def stuff(message: bytes) -> bytes:
    """What a client sends for C{message} (CRLF lines): dot-stuffed, then the end marker."""
    lines = message.split(b"\r\n")[:-1]
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


_line = st.binary(max_size=120).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))


class ReceiverTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(body=st.lists(_line, max_size=30), cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8))
    def test_round_trip_at_any_chunking(self, body: list[bytes], cuts: list[int]) -> None:
        """Whatever the chunk boundaries, the stored text is the client's text unstuffed,
        data ends exactly at the marker, and what follows is handed back."""
        message = b"Subject: t\r\n\r\n" + b"".join(line + b"\r\n" for line in body)
        wire = stuff(message) + b"QUIT\r\n"
        points = sorted({cut % (len(wire) + 1) for cut in cuts})
        chunks = [wire[start:end] for start, end in zip([0, *points], [*points, len(wire)])]
        stored, rest, receiver = receive(chunks)
        self.assertEqual(stored, message)
        self.assertEqual(rest, b"QUIT\r\n")
        self.assertIsNone(receiver.problem)
        self.assertEqual(receiver.size, len(message))

    def test_long_line_is_written_through(self) -> None:
        """A 1 MB line is not held in memory whole; it arrives intact."""
        line = b".x" + b"y" * 1_000_000
        stored, rest, _ = receive([b"A: b\r\n\r\n"] + [stuff(line + b"\r\n")[i:i + 4096]
                                                        for i in range(0, len(line) + 10, 4096)])
        self.assertEqual(stored, b"A: b\r\n\r\n" + line + b"\r\n")
        self.assertEqual(rest, b"")

    def test_bare_newlines_refused(self) -> None:
        for smuggle in (b"a\n.\nb", b"a\r.\rb", b"a\n.\r\nb", b"a\r\n.\nb"):
            _, rest, receiver = receive([b"A: b\r\n\r\n" + smuggle + b"\r\n.\r\n"])
            self.assertEqual((rest, receiver.problem), (b"", BARE_NEWLINE), smuggle)

    def test_bare_newline_in_header_refused(self) -> None:
        _, _, receiver = receive([b"A: b\nB: c\r\n\r\nbody\r\n.\r\n"])
        self.assertEqual(receiver.problem, BARE_NEWLINE)

    def test_too_big_stops_writing(self) -> None:
        stored, rest, receiver = receive([b"A: b\r\n\r\n", b"x" * 5000 + b"\r\n", b"y" * 5000 + b"\r\n.\r\n"],
                                         max_size=6000)
        self.assertEqual((rest, receiver.problem), (b"", MESSAGE_TOO_BIG))
        self.assertLess(len(stored), 6000)


class LongestLineTests(SynchronousTestCase):
    def test_longest_body_line_measured_across_chunks(self) -> None:
        """Header lines do not count; a long line split over chunks is measured whole."""
        wire = b"Subject: " + b"s" * 300 + b"\r\n\r\nshort\r\n" + b"y" * 20_000 + b"\r\nend\r\n.\r\n"
        _, _, receiver = receive([wire[i:i + 4096] for i in range(0, len(wire), 4096)])
        self.assertEqual(receiver.longest_line, 20_000)
        _, _, receiver = receive([b"A: b\r\n\r\n" + b"x" * 77 + b"\r\nab\r\n.\r\n"])
        self.assertEqual(receiver.longest_line, 77)
