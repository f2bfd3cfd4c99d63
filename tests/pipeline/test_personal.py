"""Personalised copies from one template: every copy is byte for byte what rewriting it would give."""
from __future__ import annotations

import io
import os
from email.message import EmailMessage

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from jangotw.pipeline.personal import Copies, write_copies
from jangotw.pipeline.rewrite import RewritePlan, rewrite
from jangotw.tracking.links import UNIQUE_ID_TOKEN, TokenSigner, TrackingUrls

from .test_rewrite import _messages

MESSAGE_ID = "0123456789ABCDEF0A"
SIGNER = TokenSigner(b"s" * 32)
URLS = TrackingUrls("https://t.test", SIGNER)
INDEXES = (0, 7, 70_000)  # index lengths differ; tokens do not


def tokens(index: int, links: int) -> list[str]:
    return [SIGNER.unsubscribe_id(MESSAGE_ID, index), SIGNER.open_token(MESSAGE_ID, index),
            *(SIGNER.link_token(MESSAGE_ID, index, link) for link in range(links))]


def plan(index: int, wrap: int = 0, click_text: bool = False) -> RewritePlan:
    """Recipient C{index}'s rewrite: click and open tracking and its unique id."""
    return RewritePlan(wrap=wrap, click_url=lambda url, link: URLS.click(MESSAGE_ID, index, link),
                       click_text=click_text, open_pixel=URLS.open_pixel(MESSAGE_ID, index),
                       unique_id=SIGNER.unsubscribe_id(MESSAGE_ID, index),
                       headers_to_remove=frozenset({"to", "list-unsubscribe"}))


def fields(index: int) -> tuple[tuple[str, str], ...]:
    return (("To", f"member{index}@r.test"), ("List-Unsubscribe", f"<{URLS.unsubscribe(MESSAGE_ID, index)}>"))


def copies(directory: str, wrap: int = 0, click_text: bool = False, indexes: tuple[int, ...] = INDEXES) -> Copies:
    return Copies(indexes=indexes, paths=[os.path.join(directory, str(index)) for index in indexes],
                  plan=lambda index: plan(index, wrap, click_text), fields=fields, tokens=tokens)


def rewritten(source: str, index: int, wrap: int = 0, click_text: bool = False) -> bytes:
    """What rewriting recipient C{index}'s copy on its own writes."""
    output = io.BytesIO()
    with open(source, "rb") as reading:
        rewrite(reading, output, attrs.evolve(plan(index, wrap, click_text), headers_to_add=fields(index)))
    return output.getvalue()


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def newsletter(cte: str = "7bit") -> bytes:
    message = EmailMessage()
    message["From"] = "Shop <news@shop.test>"
    message["To"] = "list@shop.test"
    message["Subject"] = "News"
    message.set_content(f"Hello {UNIQUE_ID_TOKEN}, see https://ex.test/a and https://ex.test/b\n", cte=cte)
    message.add_alternative('<html><body><p>Hello, <a href="https://ex.test/a">A</a> '
                            f'<a href="https://ex.test/u.z?{UNIQUE_ID_TOKEN}">unsubscribe</a></p></body></html>\n',
                            subtype="html", cte=cte)
    return message.as_bytes().replace(b"\n", b"\r\n")


class WriteCopiesTests(SynchronousTestCase):
    def write(self, data: bytes, **options: object) -> tuple[str, str]:
        directory = self.mktemp()
        os.makedirs(directory)
        source = os.path.join(directory, "message")
        with open(source, "wb") as handle:
            handle.write(data)
        return directory, source

    def assert_copies_rewritten(self, data: bytes, wrap: int = 0, click_text: bool = False,
                                limit: int = 1024 * 1024) -> bool:
        directory, source = self.write(data)
        planned = copies(directory, wrap, click_text)
        report, shortcut = write_copies(source, planned, limit)
        for index, path in zip(planned.indexes, planned.paths):
            self.assertEqual(read(path), rewritten(source, index, wrap, click_text), f"copy {index}")
        self.assertEqual(report, rewrite(io.BytesIO(data), io.BytesIO(), plan(INDEXES[0], wrap, click_text)))
        return shortcut

    def test_plain_text_parts_take_the_shortcut(self) -> None:
        """7bit parts: each copy is the template with its own tokens and fields, as a rewrite makes it."""
        self.assertTrue(self.assert_copies_rewritten(newsletter(), wrap=30, click_text=True))

    def test_encoded_parts_are_rewritten_each(self) -> None:
        """Base64 or quoted-printable parts hide the tokens: every copy is rewritten in full."""
        for cte in ("base64", "quoted-printable"):
            self.assertFalse(self.assert_copies_rewritten(newsletter(cte)), cte)

    def test_large_messages_stream(self) -> None:
        """A message over the limit is never held in memory: every copy is rewritten in full."""
        self.assertFalse(self.assert_copies_rewritten(newsletter(), limit=100))

    def test_one_copy_is_rewritten(self) -> None:
        directory, source = self.write(newsletter())
        planned = copies(directory, indexes=(3,))
        self.assertFalse(write_copies(source, planned)[1])
        self.assertEqual(read(planned.paths[0]), rewritten(source, 3))

    def test_header_injection_refused(self) -> None:
        """A field value with a line break never reaches a copy."""
        directory, source = self.write(newsletter())
        planned = attrs.evolve(copies(directory), fields=lambda index: (("To", "a@b.test\r\nBcc: x@y.test"),))
        self.assertRaises(ValueError, write_copies, source, planned)

    @settings(max_examples=80, deadline=None)
    @given(message=_messages(), wrap=st.sampled_from([0, 30, 78]), click_text=st.booleans())
    def test_every_copy_is_its_rewrite(self, message: bytes, wrap: int, click_text: bool) -> None:
        """Whatever the message, each copy equals rewriting it for that recipient, shortcut or not."""
        self.assert_copies_rewritten(message, wrap, click_text)
