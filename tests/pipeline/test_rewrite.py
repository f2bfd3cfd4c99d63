"""The rewrite engine: a message in, its wrapped and tracked copy out, streaming."""
from __future__ import annotations

import base64
import binascii
import hashlib
import html
import io
import os
import re
import tracemalloc
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import SMTP, compat32
from typing import BinaryIO

from hypothesis import HealthCheck, example, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from jangotw.errors import PermanentError
from jangotw.pipeline.rewrite import MAX_LINE, RewritePlan, RewriteReport, rewrite
from jangotw.pipeline.text import UNIQUE_ID_TOKEN, pixel_tag

CLICK = re.compile(r"https://t\.test/c/(\d+)")
PIXEL = "https://t.test/o.gif?m=1&r=2"
LF = SMTP.clone(linesep="\n")


def click(destination: str, index: int) -> str:
    return f"https://t.test/c/{index}"


def run(message: bytes, plan: RewritePlan, source: BinaryIO | io.RawIOBase | None = None) -> tuple[bytes, RewriteReport]:
    sink = io.BytesIO()
    report = rewrite(source or io.BytesIO(message), sink, plan)  # type: ignore[arg-type]
    return sink.getvalue(), report


def parse(message: bytes) -> Message:
    return BytesParser(policy=compat32).parsebytes(message)


def leaves(message: Message) -> list[Message]:
    return [part for part in message.walk() if not part.is_multipart()]


def text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(part.get_content_charset() or "us-ascii", "surrogateescape")


def message(*parts: bytes, headers: bytes = b"From: a@s.test\r\nTo: b@r.test\r\nSubject: hi\r\n") -> bytes:
    """A multipart/mixed message from raw parts (each a header block, empty line and body)."""
    if len(parts) == 1:
        return headers + parts[0]
    body = b"".join(b"--BOUND\r\n" + part + b"\r\n" for part in parts)
    return (headers + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="BOUND"\r\n\r\n'
            + b"preamble\r\n" + body + b"--BOUND--\r\nepilogue\r\n")


def plain(body: bytes, encoding: bytes = b"7bit", charset: bytes = b"us-ascii", extra: bytes = b"") -> bytes:
    cte = b"Content-Transfer-Encoding: " + encoding + b"\r\n" if encoding else b""
    return b"Content-Type: text/plain; charset=" + charset + b"\r\n" + cte + extra + b"\r\n" + body


def page(body: bytes, encoding: bytes = b"7bit", charset: bytes = b"utf-8") -> bytes:
    cte = b"Content-Transfer-Encoding: " + encoding + b"\r\n" if encoding else b""
    return b"Content-Type: text/html; charset=" + charset + b"\r\n" + cte + b"\r\n" + body


class _Trickle(io.RawIOBase):
    """A source that hands out at most C{size} bytes per read, to cross every block edge."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data = io.BytesIO(data)
        self._size = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "memoryview") -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), self._size))
        buffer[:len(chunk)] = chunk
        return len(chunk)


class CopyTests(SynchronousTestCase):
    def test_nothing_to_do_copies_every_byte(self) -> None:
        """With an empty plan the output is the input and the report says nothing changed."""
        source = message(plain(b"Hello https://s.test/ " + b"w " * 100), page(b"<a href='https://s.test/'>x</a>"))
        out, report = run(source, RewritePlan())
        self.assertEqual(out, source)
        self.assertEqual(report, RewriteReport())

    def test_unchanged_text_parts_are_not_reencoded(self) -> None:
        """A plan that finds nothing to do in a part leaves it byte-identical (odd base64 kept)."""
        odd = b"SGVs\r\nbG8g\r\nd29y\r\nbGQ=\r\n"
        source = message(plain(odd, b"base64"), plain(b"caf=E9 =\r\nau lait", b"quoted-printable"))
        out, report = run(source, RewritePlan(wrap=5, unique_id="7", click_url=click, click_text=True))
        self.assertEqual((out, report.changed, report.parts_reencoded), (source, False, 0))

    def test_attachment_byte_identical(self) -> None:
        """Attachments, text ones included, are copied as they are, however the plan reads."""
        attachment = (b'Content-Type: text/plain; name="a.txt"\r\nContent-Disposition: attachment; filename="a.txt"'
                      b"\r\n\r\n" + b"https://s.test/x " * 200 + UNIQUE_ID_TOKEN.encode() + b"\r\n" + b"z" * 2000)
        binary = (b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  + base64.encodebytes(os.urandom(5000)).replace(b"\n", b"\r\n").rstrip())
        source = message(page(b'<a href="https://s.test/">x</a>'), attachment, binary)
        out, report = run(source, RewritePlan(wrap=40, click_url=click, click_text=True, unique_id="9",
                                              open_pixel=PIXEL))
        self.assertIn(attachment, out)
        self.assertIn(binary, out)
        self.assertEqual(report.parts_reencoded, 1)

    def test_lf_only_input(self) -> None:
        """A message with bare LF line ends is rewritten with bare LF line ends."""
        source = message(plain(b"Hello " * 30 + UNIQUE_ID_TOKEN.encode() + b"\r\n"),
                         page(base64.b64encode(b"<p><a href='https://s.test/'>x</a></p>\n"), b"base64")
                         ).replace(b"\r\n", b"\n")
        out, report = run(source, RewritePlan(wrap=40, click_url=click, unique_id="5",
                                              headers_to_add=(("X-Campaign", "c " * 50),)))
        self.assertNotIn(b"\r", out)
        parsed = parse(out)
        first, second = leaves(parsed)
        self.assertEqual(text_of(first), ("Hello " * 6 + "\n") * 4 + "Hello " * 6 + "5\n")
        self.assertEqual(text_of(second), "<p><a href='https://t.test/c/0'>x</a></p>\n")
        self.assertEqual(parsed["X-Campaign"].replace("\n", ""), ("c " * 50).strip())
        self.assertTrue(report.changed)

    def test_single_part_message(self) -> None:
        source = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<body><a href=\"http://s.test/\">x</a></body>\r\n"
        out, report = run(source, RewritePlan(click_url=click, open_pixel=PIXEL))
        self.assertEqual(out, b"Subject: x\r\nContent-Type: text/html\r\n\r\n<body><a href=\"https://t.test/c/0\">x</a>"
                         + pixel_tag(PIXEL).encode() + b"</body>\r\n")
        self.assertEqual(report.destinations, ("http://s.test/",))

    def test_message_without_mime_headers_is_us_ascii_text(self) -> None:
        source = b"Subject: x\r\n\r\nsee https://s.test/a\r\n"
        out, _ = run(source, RewritePlan(click_url=click, click_text=True))
        self.assertEqual(out, b"Subject: x\r\n\r\nsee https://t.test/c/0\r\n")

    def test_message_rfc822_part_copied(self) -> None:
        inner = b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\n<a href=\"https://s.test/\">" + b"x " * 600
        source = message(inner, page(b'<a href="https://s.test/">x</a>'))
        out, report = run(source, RewritePlan(click_url=click, wrap=20))
        self.assertIn(inner, out)
        self.assertEqual(report.links_tracked, 1)

    def test_unclosed_multipart_still_walked(self) -> None:
        """A multipart whose close delimiter is missing ends at the end of input."""
        source = message(page(b'<a href="https://s.test/">x</a>'), plain(b"y")).replace(b"--BOUND--\r\nepilogue\r\n", b"")
        out, report = run(source, RewritePlan(click_url=click))
        self.assertEqual(out, source.replace(b"https://s.test/", b"https://t.test/c/0"))

    def test_nested_multiparts_and_prefix_boundaries(self) -> None:
        """An inner boundary that extends the outer one is told apart from it."""
        inner = (b'Content-Type: multipart/alternative; boundary="BOUND-2"\r\n\r\n--BOUND-2\r\n'
                 + plain(b"https://s.test/1") + b"\r\n--BOUND-2\r\n" + page(b'<a href="https://s.test/2">x</a>')
                 + b"\r\n--BOUND-2--\r\n")
        source = message(inner, page(b'<a href="https://s.test/1">x</a>'))
        out, report = run(source, RewritePlan(click_url=click, click_text=True))
        self.assertEqual(report.destinations, ("https://s.test/1", "https://s.test/2"))
        self.assertEqual(out, source.replace(b"https://s.test/1", b"https://t.test/c/0")
                         .replace(b"https://s.test/2", b"https://t.test/c/1"))

    def test_part_with_delimiter_like_lines(self) -> None:
        """Lines that start like a delimiter but are not one stay in the part."""
        body = b"--BOUNDARY not\r\n--BOUND x\r\n-- \r\n<a href='https://s.test/'>x</a>"
        source = message(page(body), plain(b"z"))
        out, _ = run(source, RewritePlan(click_url=click))
        self.assertEqual(out, source.replace(b"https://s.test/", b"https://t.test/c/0"))

    def test_part_without_empty_line_gets_one_when_rewritten(self) -> None:
        """A part whose header block runs into the next delimiter gets an empty line before
        the body written for it, so the body cannot be read as header fields."""
        source = message(b"Content-Type: text/html", plain(b"x"))
        out, report = run(source, RewritePlan(open_pixel=PIXEL))
        self.assertIn(b"--BOUND\r\nContent-Type: text/html\r\n\r\n" + pixel_tag(PIXEL).encode() + b"\r\n--BOUND", out)
        self.assertEqual(leaves(parse(out))[0].get_payload(), pixel_tag(PIXEL))

    def test_tiny_reads(self) -> None:
        """The result does not depend on how the source splits its reads."""
        source = message(plain(b"a " * 700 + b"https://s.test/"), page(b'<a href="https://s.test/">x</a>'),
                         b"Content-Type: application/octet-stream\r\n\r\n--BOUND-\r\n\n--\r\n-")
        plan = RewritePlan(click_url=click, click_text=True, wrap=30, open_pixel=PIXEL)
        expected, _ = run(source, plan)
        for size in (1, 2, 3, 5, 64):
            self.assertEqual(run(b"", plan, _Trickle(source, size))[0], expected)
        self.assertIn(b"\r\n--BOUND-\r\n\n--\r\n-\r\n--BOUND--", expected)

    def test_oversized_text_part_copied(self) -> None:
        body = b"<a href='https://s.test/'>x</a>" * 100
        source = message(page(body), page(b"<a href='https://s.test/'>y</a>"))
        out, report = run(source, RewritePlan(click_url=click, max_text_part=1000))
        self.assertIn(body, out)
        self.assertEqual((report.parts_too_large, report.links_tracked), (1, 1))

    def test_unknown_charset_left_alone(self) -> None:
        source = message(page(b"<a href='https://s.test/'>x</a>", charset=b"x-klingon"))
        out, report = run(source, RewritePlan(click_url=click))
        self.assertEqual((out, report.changed), (source, False))

    def test_huge_top_level_header_refused(self) -> None:
        source = b"X-Big: " + b"a" * 300_000 + b"\r\n\r\nbody\r\n"
        self.assertRaises(PermanentError, run, source, RewritePlan())

    def test_deep_nesting_copied_past_the_limit(self) -> None:
        body = b"<a href='https://s.test/'>x</a>"
        for depth in range(100):
            boundary = b"b%d" % depth
            body = (b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n--' + boundary + b"\r\n"
                    + (page(body) if depth == 0 else body) + b"\r\n--" + boundary + b"--")
        source = b"Subject: deep\r\n" + body + b"\r\n"
        out, report = run(source, RewritePlan(click_url=click))
        self.assertEqual((out, report.changed), (source, False))


class WrapTests(SynchronousTestCase):
    def test_wraps_7bit_text_at_whitespace(self) -> None:
        source = message(plain(b"one two three four five six seven\r\neight\r\n"))
        out, report = run(source, RewritePlan(wrap=12))
        self.assertEqual(out, message(plain(b"one two \r\nthree four \r\nfive six \r\nseven\r\neight\r\n")))
        self.assertEqual((report.parts_reencoded, report.changed), (1, True))

    def test_wraps_8bit_html_but_not_urls_or_tags(self) -> None:
        url = b"https://s.test/" + b"p" * 40
        body = (b'<p>caf\xc3\xa9 cr\xc3\xa8me <a href="' + url + b'" class="a b c">link text</a> ' + url
                + b" end</p>")
        out, _ = run(message(page(body, b"8bit")), RewritePlan(wrap=20))
        self.assertEqual(out, message(page(b"<p>caf\xc3\xa9 cr\xc3\xa8me \r\n<a href=\"" + url
                                           + b"\" class=\"a b c\">link \r\ntext</a> \r\n" + url + b" \r\nend</p>", b"8bit")))

    def test_quoted_printable_and_base64_line_structure_left_to_the_encoder(self) -> None:
        """wrap applies to 7bit and 8bit parts only."""
        source = message(plain(b"a " * 30 + b"=\r\n" + b"b " * 30, b"quoted-printable"),
                         plain(base64.b64encode(b"c " * 200), b"base64"))
        out, report = run(source, RewritePlan(wrap=20))
        self.assertEqual((out, report.changed), (source, False))

    def test_overlong_line_becomes_quoted_printable(self) -> None:
        """Whatever wrap is, a 7bit/8bit part with a line over 998 bytes is made quoted-printable."""
        line = b"x" * 1500
        for wrap in (0, 78):
            source = message(plain(b"ok\r\n" + line + b"\r\nend", b"8bit", b"utf-8"), plain(b"fine"))
            out, report = run(source, RewritePlan(wrap=wrap))
            self.assertEqual(max(len(l) for l in out.split(b"\r\n")), 76)
            first = leaves(parse(out))[0]
            self.assertEqual(first["Content-Transfer-Encoding"], "quoted-printable")
            self.assertEqual(first.get_all("Content-Transfer-Encoding"), ["quoted-printable"])
            self.assertEqual(first.get_payload(decode=True), b"ok\r\n" + line + b"\r\nend")
            self.assertEqual((report.parts_reencoded, report.parts_made_quoted_printable), (1, 1))
            self.assertIn(plain(b"fine"), out)

    def test_overlong_line_without_encoding_header(self) -> None:
        source = message(plain(b"y" * 1000, b""))
        out, _ = run(source, RewritePlan())
        part = leaves(parse(out))[0]
        self.assertEqual((part["Content-Transfer-Encoding"], part.get_payload(decode=True)),
                         ("quoted-printable", b"y" * 1000))

    def test_7bit_part_that_becomes_non_ascii_is_quoted_printable(self) -> None:
        source = message(page(b"<a href='https://s.test/'>x</a>"))
        out, report = run(source, RewritePlan(click_url=lambda destination, index: "https://t.test/\u00e9"))
        part = leaves(parse(out))[0]
        self.assertEqual(part["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(text_of(part), "<a href='https://t.test/\u00e9'>x</a>")
        self.assertEqual(report.parts_made_quoted_printable, 1)

    def test_characters_the_charset_lacks_are_percent_encoded(self) -> None:
        source = message(page(b"<a href='https://s.test/'>x</a>", charset=b"us-ascii"))
        out, _ = run(source, RewritePlan(click_url=lambda destination, index: "https://t.test/\u00e9"))
        self.assertIn(b"<a href='https://t.test/%C3%A9'>x</a>", out)


class EncodingTests(SynchronousTestCase):
    plan = RewritePlan(click_url=click, unique_id="ID-1", open_pixel=PIXEL)

    def test_base64_round_trip(self) -> None:
        """A base64 part stays base64, in 76-character lines."""
        content = ("<html><body><p>Gr\u00fc\u00dfe " * 20 + f"{UNIQUE_ID_TOKEN}<a href=\"https://s.test/\">x</a>"
                   "</p></body></html>\n").encode("utf-8")
        source = message(page(base64.encodebytes(content).replace(b"\n", b"\r\n").rstrip(), b"base64"))
        out, report = run(source, self.plan)
        part = leaves(parse(out))[0]
        self.assertEqual(part["Content-Transfer-Encoding"], "base64")
        lines = str(part.get_payload()).split("\r\n")
        self.assertEqual({len(line) for line in lines[:-1]}, {76})
        self.assertEqual(text_of(part), content.decode().replace(UNIQUE_ID_TOKEN, "ID-1")
                         .replace("https://s.test/", "https://t.test/c/0")
                         .replace("</body>", pixel_tag(PIXEL) + "</body>"))
        self.assertEqual((report.parts_reencoded, report.pixel_inserted), (1, True))

    def test_quoted_printable_round_trip(self) -> None:
        """A quoted-printable part stays quoted-printable, in its charset, and decodes to the edit."""
        source = message(page(b"<p>caf=E9 " + b"au lait " * 12 + b"=\r\n" + UNIQUE_ID_TOKEN.encode()
                              + b" <a href=3D\"https://s.test/?a=3D1&amp;b=3D2\">x</a>  \r\nline two</p>",
                              b"quoted-printable", b"iso-8859-1"))
        out, _ = run(source, self.plan)
        part = leaves(parse(out))[0]
        self.assertEqual(part["Content-Transfer-Encoding"], "quoted-printable")
        self.assertTrue(all(len(line) <= 76 for line in str(part.get_payload()).split("\r\n")))
        self.assertEqual(part.get_payload(decode=True),
                         b"<p>caf\xe9 " + b"au lait " * 12 + b"ID-1 <a href=\"https://t.test/c/0\">x</a>  \r\n"
                         b"line two</p>" + pixel_tag(PIXEL).encode())

    def test_8bit_round_trip_keeps_undecodable_bytes(self) -> None:
        """An 8bit part stays 8bit; bytes invalid in its charset survive the edit."""
        body = b"Gr\xc3\xbc\xc3\x9fe \xff\xfe " + UNIQUE_ID_TOKEN.encode() + b" https://s.test/\r\n"
        source = message(plain(body, b"8bit", b"utf-8"))
        out, _ = run(source, RewritePlan(unique_id="u", click_url=click, click_text=True))
        self.assertEqual(out, message(plain(b"Gr\xc3\xbc\xc3\x9fe \xff\xfe u https://t.test/c/0\r\n", b"8bit", b"utf-8")))

    def test_unique_id_in_base64_and_quoted_printable_parts(self) -> None:
        token = UNIQUE_ID_TOKEN.encode()
        source = message(plain(base64.b64encode(b"hi " + token + b"\n"), b"base64"),
                         plain(b"hi =2A=2A=2Auniqueid=2A=2A=2A and " + token, b"quoted-printable"))
        out, report = run(source, RewritePlan(unique_id="abc"))
        first, second = leaves(parse(out))
        self.assertEqual(first.get_payload(decode=True), b"hi abc\n")
        self.assertEqual(second.get_payload(decode=True), b"hi abc and abc")
        self.assertEqual(report.parts_reencoded, 2)

    def test_encoded_delimiter_line_stays_encoded(self) -> None:
        """Content holding a delimiter line (encoded in the source) cannot end the part when
        encoded again: a quoted-printable line never starts with "--"."""
        source = message(plain(b"before\r\n=2D-BOUND--\r\n" + UNIQUE_ID_TOKEN.encode(), b"quoted-printable"),
                         plain(base64.b64encode(b"--BOUND\n" + UNIQUE_ID_TOKEN.encode() + b"\n"), b"base64"),
                         plain(b"end"))
        out, _ = run(source, RewritePlan(unique_id="1"))
        first, second, third = leaves(parse(out))
        self.assertEqual(first.get_payload(decode=True), b"before\r\n--BOUND--\r\n1")
        self.assertEqual(second.get_payload(decode=True), b"--BOUND\n1\n")
        self.assertEqual(third.get_payload(), "end")

    def test_wrapping_never_starts_a_line_with_two_dashes(self) -> None:
        source = message(plain(b"one --BOUND two --BOUND-- three"), plain(b"end"))
        out, _ = run(source, RewritePlan(wrap=5))
        self.assertEqual(out, message(plain(b"one --BOUND two --BOUND-- three".replace(b" t", b" \r\nt")), plain(b"end")))

    @settings(max_examples=200)
    @given(st.binary(max_size=400), st.sampled_from([b"\r\n", b"\n"]))
    def test_quoted_printable_encoding_round_trips(self, content: bytes, eol: bytes) -> None:
        """Any bytes come back from quoted-printable as they went in (line ends as the
        message's), in lines of at most 76 characters, none starting with "--"."""
        encoded = binascii.b2a_qp(content + UNIQUE_ID_TOKEN.encode(), istext=False)
        source = message(plain(b"#BODY#", b"quoted-printable"), page(b"x")).replace(b"\r\n", eol)
        source = source.replace(b"#BODY#", encoded)
        out, _ = run(source, RewritePlan(unique_id="Q"))
        part = leaves(parse(out))[0]
        self.assertEqual(part.get_payload(decode=True), re.sub(rb"\r?\n", eol, content) + b"Q")
        for line in str(part.get_payload()).split(eol.decode()):
            self.assertLessEqual(len(line), 76)
            self.assertFalse(line.startswith("--"))

    def test_invalid_base64_left_alone(self) -> None:
        source = message(plain(b"SGVsbG8", b"base64"))
        out, _ = run(source, RewritePlan(unique_id="x"))
        self.assertEqual(out, source)


class LinkTests(SynchronousTestCase):
    def test_entities_unescaped_in_destination_and_replacement_escaped(self) -> None:
        source = message(page(b'<a href="https://s.test/?a=1&amp;b=2">x</a>'))
        out, report = run(source, RewritePlan(click_url=lambda destination, index: f"https://t.test/c?i={index}&v=1"))
        self.assertEqual(report.destinations, ("https://s.test/?a=1&b=2",))
        self.assertIn(b'<a href="https://t.test/c?i=0&amp;v=1">x</a>', out)

    def test_skip_rules(self) -> None:
        """Only absolute http(s) links without notrack markers, outside the unsubscribe path, are tracked."""
        links = (b'<a href="mailto:a@s.test">1</a><a href="tel:+1">2</a><a href="#top">3</a>'
                 b'<a href="data:,x">4</a><a href="javascript:void(0)">5</a><a href="/rel">6</a>'
                 b'<a data-notrack href="https://s.test/n">7</a><a class="notrack" href="https://s.test/c">8</a>'
                 b'<a href="https://s.test/u.z?k=1">9</a><a href="https://s.test/tracked">10</a>')
        source = message(page(links))
        out, report = run(source, RewritePlan(click_url=click))
        self.assertEqual(out, source.replace(b"https://s.test/tracked", b"https://t.test/c/0"))
        self.assertEqual((report.destinations, report.links_tracked), (("https://s.test/tracked",), 1))

    def test_custom_unsubscribe_marker(self) -> None:
        source = message(page(b'<a href="https://s.test/unsub/1">x</a><a href="https://s.test/u.z?1">y</a>'))
        _, report = run(source, RewritePlan(click_url=click, unsubscribe_marker_path="/unsub/"))
        self.assertEqual(report.destinations, ("https://s.test/u.z?1",))

    def test_index_counts_distinct_destinations_across_parts(self) -> None:
        source = message(plain(b"https://s.test/b and https://s.test/a"),
                         page(b'<a href="https://s.test/a">a</a><a href="https://s.test/c">c</a>'
                              b'<a href="https://s.test/b">b</a><a href="https://s.test/a">a</a>'))
        out, report = run(source, RewritePlan(click_url=click, click_text=True))
        self.assertEqual(report.destinations, ("https://s.test/b", "https://s.test/a", "https://s.test/c"))
        self.assertEqual(report.links_tracked, 6)
        self.assertIn(b'<a href="https://t.test/c/1">a</a><a href="https://t.test/c/2">c</a>'
                      b'<a href="https://t.test/c/0">b</a><a href="https://t.test/c/1">a</a>', out)

    def test_plain_text_links_only_with_click_text(self) -> None:
        source = message(plain(b"see https://s.test/"))
        out, report = run(source, RewritePlan(click_url=click))
        self.assertEqual((out, report.links_tracked), (source, 0))

    def test_unique_id_stays_in_tracked_destinations(self) -> None:
        """A personalised link is recorded with the token in it (the same for every copy; the redirect
        fills it in), while untracked text gets the recipient's id."""
        source = message(page(b'<a href="https://s.test/?u=' + UNIQUE_ID_TOKEN.encode() + b'">x</a> '
                              + UNIQUE_ID_TOKEN.encode()))
        out, report = run(source, RewritePlan(click_url=click, unique_id="42"))
        self.assertEqual(report.destinations, ("https://s.test/?u=" + UNIQUE_ID_TOKEN,))
        self.assertNotIn(UNIQUE_ID_TOKEN.encode(), out)
        self.assertIn(b"</a> 42", out)


class PixelTests(SynchronousTestCase):
    def test_pixel_before_body_end_in_each_html_part(self) -> None:
        source = message(plain(b"no pixel here </body>"), page(b"<html><body>a</body></html>"),
                         page(b"<p>no body</p>\r\n"))
        out, report = run(source, RewritePlan(open_pixel=PIXEL))
        tag = pixel_tag(PIXEL).encode()
        self.assertEqual(out, message(plain(b"no pixel here </body>"), page(b"<html><body>a" + tag + b"</body></html>"),
                                      page(b"<p>no body</p>\r\n" + tag)))
        self.assertEqual((report.pixel_inserted, report.parts_reencoded), (True, 2))

    def test_no_html_no_pixel(self) -> None:
        _, report = run(message(plain(b"x")), RewritePlan(open_pixel=PIXEL))
        self.assertEqual((report.pixel_inserted, report.changed), (False, False))


class HeaderTests(SynchronousTestCase):
    def test_headers_added_folded_at_the_end_of_the_top_block(self) -> None:
        value = "<https://t.test/u.z?" + "k" * 40 + ">, <mailto:unsubscribe@t.test?subject=" + "s" * 40 + ">"
        source = message(plain(b"x"), plain(b"y"))
        out, report = run(source, RewritePlan(headers_to_add=(("List-Unsubscribe", value),
                                                              ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))))
        header, _, body = out.partition(b"\r\n\r\n")
        self.assertTrue(header.endswith(
            b"\r\nList-Unsubscribe: <https://t.test/u.z?" + b"k" * 40 + b">,\r\n <mailto:unsubscribe@t.test?subject="
            + b"s" * 40 + b">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click"))
        self.assertEqual(parse(out)["List-Unsubscribe"].replace("\r\n", ""), value)
        self.assertEqual(body, source.partition(b"\r\n\r\n")[2])
        self.assertTrue(report.changed)

    def test_non_ascii_value_encoded(self) -> None:
        out, _ = run(message(plain(b"x")), RewritePlan(headers_to_add=(("X-Note", "Gr\u00fc\u00dfe"),)))
        self.assertIn(b"X-Note: =?utf-8?b?R3LDvMOfZQ==?=\r\n", out)

    def test_headers_removed_by_name_in_any_case(self) -> None:
        source = message(plain(b"x"), headers=b"From: a@s.test\r\nX-Mailer: m\r\n  continued\r\nx-mailer: n\r\nTo: b@r.test\r\n")
        out, report = run(source, RewritePlan(headers_to_remove=frozenset({"X-MAILER"})))
        self.assertEqual(out, source.replace(b"X-Mailer: m\r\n  continued\r\nx-mailer: n\r\n", b""))
        self.assertTrue(report.changed)

    def test_removing_absent_header_changes_nothing(self) -> None:
        source = message(plain(b"x"))
        out, report = run(source, RewritePlan(headers_to_remove=frozenset({"x-absent"})))
        self.assertEqual((out, report.changed), (source, False))

    def test_part_headers_untouched(self) -> None:
        source = message(plain(b"x", extra=b"X-Mailer: keep\r\n"), plain(b"y"))
        out, _ = run(source, RewritePlan(headers_to_remove=frozenset({"x-mailer"})))
        self.assertIn(b"X-Mailer: keep", out)

    def test_bad_plans_refused(self) -> None:
        self.assertRaises(ValueError, RewritePlan, headers_to_add=(("Bad Name", "x"),))
        self.assertRaises(ValueError, RewritePlan, headers_to_add=(("X-Injected", "a\r\nBcc: x@y"),))
        self.assertRaises(ValueError, RewritePlan, headers_to_add=(("X-Long", "z" * 1000),))
        self.assertRaises(ValueError, RewritePlan, unique_id="a b")
        self.assertRaises(ValueError, RewritePlan, unique_id='"><script>')
        self.assertRaises(ValueError, RewritePlan, wrap=-1)


# --- the property: any generated MIME message survives the rewrite intact but for the plan ---

_URLS = ("https://ex.test/a", "http://ex.test/b?x=1&y=2", "https://ex.test/u.z?k=9", "https://ex.test/" + "l" * 90,
         "mailto:m@ex.test", "#top", "/relative")
_ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGH0123456789.,;:!?()-_=+*/'"
_LATIN = _ASCII + "\u00e9\u00fc\u00df\u00e0\u00f1\u00a0\u00ff"
_WIDE = _LATIN + "\u20ac\u4e2d\u0416\U0001f600"


@st.composite
def _tokens(draw: st.DrawFn, alphabet: str, markup: bool) -> str:
    choices = [st.text(alphabet, min_size=1, max_size=12), st.text(alphabet, min_size=30, max_size=70),
               st.sampled_from(_URLS[:4]), st.just(UNIQUE_ID_TOKEN), st.just("x" * 1100)]
    if markup:
        choices += [st.builds(lambda url, words: f'<a href="{html.escape(url)}">{words}</a>',
                              st.sampled_from(_URLS), st.text(_ASCII, min_size=1, max_size=9)),
                    st.builds(lambda url: f'<a class="button notrack" href="{html.escape(url)}">skip</a>',
                              st.sampled_from(_URLS)),
                    st.just('<img src="logo.png" alt="our logo">'), st.just("<p>"), st.just("</p>")]
    token: str = draw(st.one_of(*choices))
    return token


@st.composite
def _text(draw: st.DrawFn, alphabet: str, markup: bool) -> str:
    lines = draw(st.lists(st.lists(_tokens(alphabet, markup), max_size=25).map(
        lambda tokens: " ".join(tokens)), min_size=1, max_size=8))
    text = "\n".join(lines) + "\n"
    if markup and draw(st.booleans()):
        text = f"<html><body>\n{text}</body></html>\n"
    return text


@st.composite
def _text_part(draw: st.DrawFn, subtype: str | None = None) -> EmailMessage:
    subtype = subtype or draw(st.sampled_from(["plain", "html"]))
    encoding = draw(st.sampled_from(["7bit", "8bit", "quoted-printable", "base64"]))
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1"]))
    alphabet = _ASCII if encoding == "7bit" else _LATIN if charset == "iso-8859-1" else _WIDE
    part = EmailMessage()
    part.set_content(draw(_text(alphabet, subtype == "html")), subtype=subtype, charset=charset, cte=encoding)
    return part


@st.composite
def _attachment(draw: st.DrawFn) -> EmailMessage:
    part = EmailMessage()
    if draw(st.booleans()):
        part.set_content(draw(st.binary(max_size=3000)), maintype="application", subtype="octet-stream",
                         filename="data.bin")
    else:
        part.set_content("Terms https://ex.test/a " + UNIQUE_ID_TOKEN + " " + "t" * 200 + "\n", subtype="plain",
                         disposition="attachment", filename="terms.txt")
    return part


def _multipart(subtype: str, parts: list[EmailMessage]) -> EmailMessage:
    container = EmailMessage()
    container["Content-Type"] = f"multipart/{subtype}"
    for part in parts:
        container.attach(part)
    return container


def _bodies(depth: int) -> st.SearchStrategy[EmailMessage]:
    alternative = st.builds(lambda plain, rich: _multipart("alternative", [plain, rich]),
                            _text_part("plain"), _text_part("html"))
    leaf = st.one_of(_text_part(), _attachment(), alternative)
    if depth == 0:
        return leaf
    return st.one_of(leaf, st.lists(_bodies(depth - 1), min_size=1, max_size=3).map(
        lambda parts: _multipart("mixed", parts)))


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    root = draw(_bodies(2))
    root["From"] = "Shop <news@shop.test>"
    root["To"] = "you@r.test"
    root["Subject"] = "News"
    for number, part in enumerate(root.walk()):
        if part.is_multipart():  # fixed boundaries: the generator's are random
            part.set_boundary(f"XYZ-{number}-QWV")
    return root.as_bytes(policy=draw(st.sampled_from([SMTP, LF])))


_plans = st.builds(
    RewritePlan, wrap=st.sampled_from([0, 0, 30, 78, 200]),
    click_url=st.sampled_from([None, click]), click_text=st.booleans(),
    open_pixel=st.sampled_from([None, PIXEL]), unique_id=st.sampled_from([None, "R-17"]),
    headers_to_add=st.sampled_from([(), (("List-Unsubscribe", "<https://t.test/u.z?" + "q" * 70 + ">"),
                                         ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))]),
    headers_to_remove=st.sampled_from([frozenset(), frozenset({"subject"})]))


def _undo(text: str, plan: RewritePlan, report: RewriteReport, markup: bool) -> str:
    """The decoded text of a rewritten part with tracked URLs put back and the pixel dropped."""
    if plan.open_pixel is not None and markup:
        text = text.replace(pixel_tag(plan.open_pixel), "", 1)
    def destination(found: re.Match[str]) -> str:
        url = report.destinations[int(found.group(1))]
        return html.escape(url) if markup else url
    return CLICK.sub(destination, text)


def _unwrap(original: str, wrapped: str) -> str:
    """Drop from C{wrapped} the line ends C{original} lacks that follow a space or tab."""
    out: list[str] = []
    i = j = 0
    while j < len(wrapped):
        if i < len(original) and original[i] == wrapped[j]:
            out.append(wrapped[j])
            i, j = i + 1, j + 1
            continue
        end = 2 if wrapped.startswith("\r\n", j) else 1 if wrapped.startswith("\n", j) else 0
        if not (end and j and wrapped[j - 1] in " \t"):
            out.append(wrapped[j:])
            break
        j += end
    return "".join(out)


def _breakable_inside(line: str, markup: bool) -> bool:
    """Whether a line has a break opportunity after its start (whitespace then more text,
    outside tags, with text before it)."""
    tags = [found.span() for found in re.finditer(r"<[^<>]*>", line)] if markup else []
    for found in re.finditer(r"[ \t]+(?=[^ \t])", line):
        if found.start() > 0 and not any(start <= found.start() < end for start, end in tags):
            return True
    return False


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.data_too_large])
    @given(_messages(), _plans, st.sampled_from([None, 1, 7, 100]))
    def test_rewrite_changes_only_what_the_plan_says(self, source: bytes, plan: RewritePlan,
                                                     trickle: int | None) -> None:
        """Parts, encodings and content survive; only tracking, pixel, unique id and wrapping
        differ; no line exceeds 998 bytes, nor the wrap width where a break was possible."""
        out, report = run(source, plan, _Trickle(source, trickle) if trickle else None)
        self.assertEqual(report.changed, out != source)
        original, rewritten = parse(source), parse(out)
        self.assertEqual(rewritten.defects, [])
        self.assertTrue(all(len(line.rstrip(b"\r")) <= MAX_LINE for line in out.split(b"\n")))
        for name, value in plan.headers_to_add:
            self.assertEqual(re.sub(r"\r?\n", "", rewritten[name]), value)
        if plan.headers_to_remove:
            self.assertIsNone(rewritten["subject"])
        for destination in report.destinations:
            self.assertRegex(destination, r"^https?://")
            self.assertNotIn(plan.unsubscribe_marker_path, destination)
        before, after = list(original.walk()), list(rewritten.walk())
        self.assertEqual([part.get_content_type() for part in before], [part.get_content_type() for part in after])
        for old, new in zip(before, after):
            self.assertEqual(new.defects, [])
            if old.is_multipart():
                continue
            self._check_part(old, new, plan, report)

    def _check_part(self, old: Message, new: Message, plan: RewritePlan, report: RewriteReport) -> None:
        encoding = old.get("content-transfer-encoding", "").lower()
        is_text = old.get_content_type() in ("text/plain", "text/html") and old.get_content_disposition() != "attachment"
        if not is_text:
            self.assertEqual(new.get_payload(), old.get_payload())
            return
        new_encoding = new.get("content-transfer-encoding", "").lower()
        unencoded = encoding in ("", "7bit", "8bit")
        self.assertIn(new_encoding, (encoding, "quoted-printable") if unencoded else (encoding,))
        markup = old.get_content_type() == "text/html"
        expected, text = text_of(old), text_of(new)
        if plan.unique_id is not None:
            expected = expected.replace(UNIQUE_ID_TOKEN, plan.unique_id)
        undone = _undo(text, plan, report, markup)
        if plan.wrap and unencoded:
            self.assertEqual(_unwrap(expected, undone), expected)
            for line in re.split(r"\r?\n", text):
                if len(line) > plan.wrap:
                    self.assertFalse(_breakable_inside(line, markup), (plan.wrap, line))
        else:
            self.assertEqual(undone, expected)
        if not markup and not plan.click_text:
            self.assertNotRegex(text, CLICK)


_FRAGMENTS = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=B", b'Content-Type: multipart/alternative; boundary="C"',
    b"Content-Type: text/html; charset=utf-8", b"Content-Type: text/plain", b"Content-Type: multipart/digest; boundary=D",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Disposition: attachment", b" continued", b"", b"--B", b"--B--", b"--C", b"--C--  ", b"--D", b"--",
    b"--B-", b"<a href='https://s.test/'>x</a></body>", b"https://s.test/ " + UNIQUE_ID_TOKEN.encode(),
    b"SGVsbG8=", b"=E9t=E9=", b"not a header", b"Content-Type: text/plain; charset=\xff", b" \x80",
    b"Content-Type: text/html; charset=rot13", b"Content-Type: multipart/mixed; boundary*=utf-8''%FF%FE"])


@st.composite
def _scrambled(draw: st.DrawFn) -> bytes:
    """Byte soup made of MIME fragments, random bytes and either line end."""
    lines = draw(st.lists(st.one_of(_FRAGMENTS, st.binary(max_size=20).map(lambda data: data.replace(b"\n", b""))),
                          max_size=40))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    return eol.join(lines) + draw(st.sampled_from([eol, b""]))


class RobustnessTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(_scrambled(), st.sampled_from([None, 1, 3]))
    def test_empty_plan_copies_any_input(self, source: bytes, trickle: int | None) -> None:
        """Whatever the bytes, a plan that asks for nothing gives them back unchanged (no line
        here is long enough to need quoted-printable)."""
        out, report = run(source, RewritePlan(), _Trickle(source, trickle) if trickle else None)
        self.assertEqual((out, report.changed), (source, False))

    @settings(max_examples=300, deadline=None)
    @given(_scrambled())
    @example(b"Content-Type: multipart/mixed; boundary=B\r\n \x80\r\n")
    def test_any_input_is_rewritten_without_error(self, source: bytes) -> None:
        """Malformed input never makes the rewrite fail, and the result does not depend on the reads."""
        plan = RewritePlan(wrap=10, click_url=click, click_text=True, open_pixel=PIXEL, unique_id="7",
                           headers_to_add=(("X-Added", "yes"),))
        out, report = run(source, plan)
        self.assertTrue(report.changed)
        self.assertEqual(run(b"", plan, _Trickle(source, 2))[0], out)


class StreamingTests(SynchronousTestCase):
    def test_30_megabyte_message_in_bounded_memory(self) -> None:
        """A 30 MB message (a text part and a 29 MB attachment) is rewritten in a few MB of
        memory and its attachment copied byte for byte."""
        directory = self.mktemp()
        os.makedirs(directory)
        source_path, sink_path = os.path.join(directory, "in.eml"), os.path.join(directory, "out.eml")
        block = base64.encodebytes(os.urandom(57 * 1024)).replace(b"\n", b"\r\n")
        with open(source_path, "wb") as source:
            source.write(message(page(b'<html><body><a href="https://s.test/">x</a> ' + b"w " * 2000
                                      + b"</body></html>"), plain(b"x")).split(b"--BOUND--")[0])
            source.write(b"--BOUND\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
                         b"Content-Disposition: attachment; filename=big.zip\r\n\r\n")
            attachment_at = source.tell()
            while source.tell() < 30 * 1024 * 1024:
                source.write(block)
            source.write(b"\r\n--BOUND--\r\n")
        plan = RewritePlan(wrap=78, click_url=click, open_pixel=PIXEL, unique_id="1",
                           headers_to_add=(("List-Unsubscribe", "<https://t.test/u.z?1>"),))
        tracemalloc.start()
        try:
            with open(source_path, "rb") as source, open(sink_path, "wb") as sink:
                report = rewrite(source, sink, plan)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 8 * 1024 * 1024)
        self.assertEqual((report.links_tracked, report.pixel_inserted, report.parts_reencoded), (1, True, 1))
        with open(source_path, "rb") as source, open(sink_path, "rb") as sink:
            source.seek(attachment_at)
            head = sink.read(64 * 1024)
            sink.seek(head.index(b"filename=big.zip\r\n\r\n") + len(b"filename=big.zip\r\n\r\n"))
            self.assertEqual(_digest(sink), _digest(source))


def _digest(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()
