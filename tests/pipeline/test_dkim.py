"""DKIM signing: the streaming relaxed body hash, and signatures that dkimpy verifies.

Every signed message is checked with C{dkim.verify}; the public key comes from
the L{dns_record} text, served to dkimpy directly for most cases and through a
real DNS server on loopback for the end-to-end ones.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import tracemalloc
from email.message import EmailMessage
from email.policy import SMTP
from typing import Callable, Sequence

import attrs
import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dkim.canonicalization import Relaxed
from dkim.util import parse_tag_value
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.logger import capturedLogs
from twisted.names import client
from twisted.names import dns as names_dns
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jangotw.model import DomainKey
from jangotw.outbound.protocol import LINE_LIMIT, BodyEncoder
from jangotw.pipeline.dkim import (
    SIGNED_HEADERS,
    RelaxedBodyHasher,
    dns_record,
    new_rsa_key,
    new_ed25519_key,
    sign_message,
    signing_keys_for,
    split_txt,
)
from jangotw.store.memory import MemoryStore
from tests.support.dns import start_dns, txt

NOW = 1718445600.0  # 2024-06-15T10:00:00Z
DnsFunc = Callable[..., "bytes | None"]


@functools.cache
def pem(bits: int, which: int) -> str:
    """A cached RSA key: 1024 bits (the smallest verifiers accept) keeps the tests quick."""
    return new_rsa_key(bits)


def a_key(domain: str = "example.test", selector: str = "jt202406", bits: int = 1024, which: int = 0) -> DomainKey:
    return DomainKey(account="alice", domain=domain, selector=selector, private_key=pem(bits, which), created=NOW)


def serve(*keys: DomainKey) -> DnsFunc:
    """A dkimpy C{dnsfunc} answering with each key's published TXT strings, joined as resolvers do."""
    records = {f"{name}.".encode(): "".join(split_txt(value)).encode()
               for name, value in map(dns_record, keys)}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)
    return dnsfunc


def reference_body_hash(body: bytes) -> bytes:
    """dkimpy's relaxed body hash of C{body} as dkimpy parses a message.

    An unterminated last line gets the CRLF the SMTP client adds before the
    final dot (RFC 6376 3.4.4 hashes it so; dkimpy would keep its trailing WSP).
    """
    if body and not body.endswith(b"\n"):
        body += b"\r\n"
    parsed = dkim.rfc822_parse(b"X: y\r\n\r\n" + body)[1]
    return hashlib.sha256(Relaxed.canonicalize_body(parsed)).digest()


def reference_measure(body: bytes) -> tuple[int, bool]:
    """(longest line with a leading dot counted twice, any bare CR) — what the SMTP client changes."""
    lines = re.split(rb"\r?\n", body)
    if not body or body.endswith(b"\n"):
        lines.pop()
    return max((len(line) + line.startswith(b".") for line in lines), default=0), any(b"\r" in l for l in lines)


def hashed(body: bytes, cuts: Sequence[int], partial_limit: int = 8192) -> RelaxedBodyHasher:
    """A hasher fed C{body} in the pieces between the offsets C{cuts}, then finished."""
    hasher = RelaxedBodyHasher(partial_limit)
    start = 0
    for cut in sorted(cuts):
        hasher.update(body[start:cut])
        start = max(start, cut)
    hasher.update(body[start:])
    hasher.digest()
    return hasher


def over_the_wire(message: bytes) -> bytes:
    """C{message} as the receiving server stores it: through L{BodyEncoder}, then un-stuffed."""
    encoder = BodyEncoder()
    wire = encoder.feed(message) + encoder.finish()
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def signature_tags(message: bytes) -> dict[bytes, bytes]:
    field = message.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in message else message
    value = re.match(rb"DKIM-Signature:(.*?)\r\n(?![ \t])", field, re.S)
    assert value is not None, message[:300]
    tags: dict[bytes, bytes] = parse_tag_value(value.group(1))
    return tags


def signed_names(message: bytes) -> list[str]:
    return [name.strip().decode() for name in signature_tags(message)[b"h"].split(b":")]


SIMPLE = (b"From: Ann Example <ann@example.test>\r\n"
          b"To: bob@remote.test\r\n"
          b"Subject: Quarterly  report\r\n"
          b"Date: Sat, 15 Jun 2024 10:00:00 +0000\r\n"
          b"Message-ID: <1@example.test>\r\n"
          b"X-Mailer: something\r\n"
          b"\r\n"
          b"Hello Bob,\r\n"
          b"\r\n"
          b"the  numbers\tare in.\r\n")


class SigningTestMixin:
    """Write a message to a file, sign it, read the result."""

    mktemp: Callable[[], str]

    def path(self, name: str = "in.eml", data: bytes | None = None) -> str:
        directory = getattr(self, "_directory", None)
        if directory is None:
            directory = self._directory = self.mktemp()
            os.makedirs(directory)
        path = os.path.join(directory, name)
        if data is not None:
            with open(path, "wb") as handle:
                handle.write(data)
        return path

    def sign(self, message: bytes, key: DomainKey | None = None, now: float = NOW) -> bytes:
        """The signed copy of C{message}; fails the test if it was not signed."""
        source, target = self.path("in.eml", message), self.path("out.eml")
        assert sign_message(source, target, [key or a_key()], now), "not signed"
        with open(target, "rb") as handle:
            return handle.read()

    def declined(self, message: bytes, key: DomainKey | None = None) -> bool:
        """Whether signing C{message} was declined, leaving no output file."""
        source, target = self.path("in.eml", message), self.path("declined.eml")
        signed = sign_message(source, target, [key or a_key()], NOW)
        assert signed or not os.path.exists(target), "a declined message left a file behind"
        return not signed


class RelaxedBodyHasherTests(SynchronousTestCase):
    """The incremental canonicaliser agrees with dkimpy's whole-body canonicalisation."""

    def digest(self, body: bytes, cuts: Sequence[int] = (), partial_limit: int = 8192) -> bytes:
        return hashed(body, cuts, partial_limit).digest()

    @settings(max_examples=2000, deadline=None)
    @given(body=st.lists(st.sampled_from([b"a", b"b", b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b"."]),
                         max_size=60).map(b"".join),
           cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=8),
           partial_limit=st.sampled_from([1, 2, 3, 5, 16, 8192]))
    def test_matches_dkimpy_for_any_body_and_chunking(self, body: bytes, cuts: list[int],
                                                       partial_limit: int) -> None:
        """Whatever the bytes and wherever the chunks split them (inside WSP runs, between
        CR and LF, within long lines hashed in parts), the hash is dkimpy's."""
        self.assertEqual(self.digest(body, cuts, partial_limit), reference_body_hash(body))

    @settings(max_examples=1000, deadline=None)
    @given(body=st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r", b"\n", b"\r\n", b"."]),
                         max_size=60).map(b"".join),
           cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=8),
           partial_limit=st.sampled_from([1, 2, 3, 5, 8192]))
    def test_measures_what_the_smtp_client_changes(self, body: bytes, cuts: list[int], partial_limit: int) -> None:
        """The longest line (a leading dot counted twice) and bare CRs are found across chunks."""
        hasher = hashed(body, cuts, partial_limit)
        self.assertEqual((hasher.longest_line, hasher.bare_cr), reference_measure(body))

    def test_rfc_6376_example(self) -> None:
        """RFC 6376 3.4.6: " C \\r\\nD \\t E\\r\\n\\r\\n\\r\\n" canonicalises to " C\\r\\nD E\\r\\n"."""
        self.assertEqual(self.digest(b" C \r\nD \t E\r\n\r\n\r\n"), hashlib.sha256(b" C\r\nD E\r\n").digest())

    def test_empty_bodies(self) -> None:
        """An empty body, or one of empty or blank lines only, hashes as nothing (RFC 6376 3.4.4)."""
        for body in (b"", b"\r\n", b"\r\n\r\n", b"  \t\r\n\n \r\n", b"\n\n"):
            self.assertEqual(self.digest(body), hashlib.sha256(b"").digest(), body)

    def test_unterminated_last_line(self) -> None:
        """A last line without CRLF is hashed with one, its trailing WSP deleted."""
        self.assertEqual(self.digest(b"abc \t"), hashlib.sha256(b"abc\r\n").digest())
        self.assertEqual(self.digest(b"x\r\n\r\n  y "), hashlib.sha256(b"x\r\n\r\n y\r\n").digest())

    def test_every_split_point(self) -> None:
        """A body cut in two at every offset, and fed a byte at a time, hashes the same."""
        body = b"a \t \r\n\r\n  \t\r\nb\t\tc  \n\r\n.d \r \r\n\r\n\r\n \r\n"
        expected = reference_body_hash(body)
        for cut in range(len(body) + 1):
            for limit in (1, 4, 8192):
                self.assertEqual(self.digest(body, [cut], limit), expected, (cut, limit))
        self.assertEqual(self.digest(body, list(range(len(body)))), expected)

    def test_long_lines_in_parts(self) -> None:
        """Lines far longer than the carried part, with WSP runs at the part boundaries."""
        body = (b"x" * 20000 + b" " * 9000 + b"y\r\n" + b" " * 30000 + b"\r\n" + b"z" * 9000 + b"\t" * 9000
                + b"\r\n\r\n")
        for size in (1000, 4096, 65536):
            cuts = list(range(size, len(body), size))
            self.assertEqual(self.digest(body, cuts), reference_body_hash(body), size)

    def test_many_empty_lines_then_content(self) -> None:
        """Held-back empty lines are hashed once content follows them, however many."""
        body = b"a\r\n" + b"\r\n" * 100000 + b"b\r\n" + b"\r\n" * 5
        self.assertEqual(self.digest(body, list(range(0, len(body), 7919))), reference_body_hash(body))

    def test_no_update_after_digest(self) -> None:
        hasher = RelaxedBodyHasher()
        hasher.digest()
        self.assertRaises(ValueError, hasher.update, b"more")


class SignMessageTests(SigningTestMixin, SynchronousTestCase):
    """sign_message prepends a signature that dkimpy verifies, and refuses what it cannot sign."""

    def test_simple_message_verifies(self) -> None:
        """The copy is the original with one DKIM-Signature field first; dkim.verify accepts it."""
        key = a_key()
        signed = self.sign(SIMPLE, key)
        self.assertTrue(signed.startswith(b"DKIM-Signature: "))
        self.assertTrue(signed.endswith(SIMPLE))
        self.assertTrue(dkim.verify(signed, dnsfunc=serve(key)))

    def test_signature_tags(self) -> None:
        """rsa-sha256, relaxed/relaxed, d= and s= of the key, t= from the given clock."""
        tags = signature_tags(self.sign(SIMPLE, a_key(selector="s1"), now=NOW + 0.9))
        self.assertEqual((tags[b"v"], tags[b"a"], tags[b"c"], tags[b"d"], tags[b"s"], tags[b"t"]),
                         (b"1", b"rsa-sha256", b"relaxed/relaxed", b"example.test", b"s1", b"%d" % NOW))
        self.assertEqual(base64.b64decode(tags[b"bh"]), reference_body_hash(SIMPLE.split(b"\r\n\r\n", 1)[1]))

    def test_signs_present_headers_and_oversigns_from(self) -> None:
        """h= lists the configured fields that occur, in message order, then From once more;
        absent fields and unlisted ones (X-Mailer) are not listed."""
        self.assertEqual(signed_names(self.sign(SIMPLE)),
                         ["from", "to", "subject", "date", "message-id", "from"])

    def test_signs_every_configured_header(self) -> None:
        """Each configured field is signed when present, repeated fields once per occurrence."""
        fields = b"".join(f"{name}: value {i}\r\n".encode() for i, name in enumerate(reversed(SIGNED_HEADERS)))
        message = (fields.replace(b"From: value 11", b"From: ann@example.test")
                   + b"To: second@remote.test\r\nReceived: from x\r\n\r\nbody\r\n")
        signed = self.sign(message)
        expected = [name.lower() for name in reversed(SIGNED_HEADERS)] + ["to", "from"]
        self.assertEqual(signed_names(signed), expected)
        self.assertTrue(dkim.verify(signed, dnsfunc=serve(a_key())))

    def test_multipart_message(self) -> None:
        """A MIME message with an alternative part and a binary attachment."""
        message = EmailMessage()
        message["From"] = "Ann <ann@example.test>"
        message["To"] = "bob@remote.test"
        message["Subject"] = "Report with attachment"
        message["List-Unsubscribe"] = "<https://example.test/u/1>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content("Plain  text\n\twith tabs   \nand trailing spaces   \n\n\n")
        message.add_alternative("<p>HTML  part</p>\n", subtype="html")
        message.add_attachment(os.urandom(5000), maintype="application", subtype="octet-stream",
                               filename="data.bin")
        data = message.as_bytes(policy=SMTP)
        signed = self.sign(data)
        self.assertIn("list-unsubscribe-post", signed_names(signed))
        self.assertIn("content-type", signed_names(signed))
        self.assertTrue(dkim.verify(signed, dnsfunc=serve(a_key())))
        self.assertTrue(dkim.verify(over_the_wire(signed), dnsfunc=serve(a_key())))

    def test_trailing_blank_lines(self) -> None:
        """Trailing empty lines are not hashed: the signature survives adding or removing them."""
        body = b"Body\r\n\r\n\r\n   \r\n\r\n"
        signed = self.sign(SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body)
        self.assertTrue(dkim.verify(signed, dnsfunc=serve(a_key())))
        self.assertTrue(dkim.verify(signed + b"\r\n\r\n", dnsfunc=serve(a_key())))
        self.assertTrue(dkim.verify(signed[: -len(body)] + b"Body\r\n", dnsfunc=serve(a_key())))

    def test_whitespace_heavy_lines(self) -> None:
        """Runs of spaces and tabs, trailing WSP and blank lines; relaxed canonicalisation
        accepts the message after a relay changes whitespace amounts."""
        body = b"".join(b" \t" * i + b"word" + b"\t  " * (i % 3) + b"  and\t\tmore" + b" " * i + b"\r\n"
                        for i in range(200))
        signed = self.sign(SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body)
        self.assertTrue(dkim.verify(signed, dnsfunc=serve(a_key())))
        reflowed = signed.replace(b"\t\tmore", b" more").replace(b"word\t  ", b"word ")
        self.assertNotEqual(reflowed, signed)
        self.assertTrue(dkim.verify(reflowed, dnsfunc=serve(a_key())))

    def test_lf_only_lines(self) -> None:
        """Bare LF ends a line for the SMTP client and dkimpy alike: LF-only bodies, and whole
        LF-only messages, verify as stored and as received."""
        mixed = SIMPLE + b"lf only  \nline\n\ncrlf\r\nend\n\n"
        lf_only = SIMPLE.replace(b"\r\n", b"\n")
        for message in (mixed, lf_only):
            signed = self.sign(message)
            self.assertTrue(dkim.verify(signed, dnsfunc=serve(a_key())), message)
            self.assertTrue(dkim.verify(over_the_wire(signed), dnsfunc=serve(a_key())), message)

    def test_unterminated_last_line(self) -> None:
        """A last line without CRLF (trailing WSP included) is copied with the CRLF the SMTP
        client adds anyway, so the copy verifies as written and as received."""
        head = SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        for body in (b"last line  \t", b"text\r\n\r\nend"):
            signed = self.sign(head + body)
            self.assertTrue(signed.endswith(head + body + b"\r\n"))
            self.assertTrue(dkim.verify(signed, dnsfunc=serve(a_key())), body)
            self.assertTrue(dkim.verify(over_the_wire(signed), dnsfunc=serve(a_key())), body)

    def test_no_body(self) -> None:
        """A message of header fields only (with or without the empty line) verifies."""
        for message in (SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n", SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"):
            self.assertTrue(dkim.verify(self.sign(message), dnsfunc=serve(a_key())))

    def test_existing_signature_stays_below_ours(self) -> None:
        """A message already signed by the author's system gets ours on top; dkimpy checks the first."""
        other = a_key(domain="author.test", selector="a", which=1)
        signed_once = self.sign(SIMPLE, other)
        signed_twice = self.sign(signed_once)
        self.assertTrue(dkim.verify(signed_twice, dnsfunc=serve(a_key())))
        self.assertEqual(signature_tags(signed_twice)[b"d"], b"example.test")

    def test_tampered_body_fails(self) -> None:
        signed = self.sign(SIMPLE)
        self.assertFalse(dkim.verify(signed.replace(b"numbers", b"Numbers"), dnsfunc=serve(a_key())))
        self.assertFalse(dkim.verify(signed + b"P.S. appended\r\n", dnsfunc=serve(a_key())))

    def test_tampered_subject_fails(self) -> None:
        signed = self.sign(SIMPLE)
        self.assertFalse(dkim.verify(signed.replace(b"Quarterly", b"Urgent"), dnsfunc=serve(a_key())))

    def test_added_from_fails_but_unsigned_field_passes(self) -> None:
        """The oversigned From stops a second From being added; an unlisted field may be added."""
        signed = self.sign(SIMPLE)
        with_from = signed.replace(b"X-Mailer:", b"From: mallory@evil.test\r\nX-Mailer:")
        self.assertFalse(dkim.verify(with_from, dnsfunc=serve(a_key())))
        with_other = signed.replace(b"X-Mailer:", b"X-Spam-Score: 0\r\nX-Mailer:")
        self.assertTrue(dkim.verify(with_other, dnsfunc=serve(a_key())))

    def test_wrong_key_fails(self) -> None:
        """A signature checked against another published key fails."""
        signed = self.sign(SIMPLE)
        self.assertFalse(dkim.verify(signed, dnsfunc=serve(a_key(which=1))))

    def test_2048_bit_key(self) -> None:
        key = a_key(bits=2048)
        self.assertTrue(dkim.verify(self.sign(SIMPLE, key), dnsfunc=serve(key)))

    def test_unusable_keys_copy_nothing(self) -> None:
        """An unreadable, non-RSA or non-ASCII key is declined and the reason logged."""
        ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        for key in (DomainKey("alice", "example.test", "s", "not a key"),
                    DomainKey("alice", "example.test", "s", ec_pem),
                    DomainKey("alice", "bücher.example", "s", pem(1024, 0)),
                    DomainKey("alice", "example.test", "sé", pem(1024, 0))):
            with capturedLogs() as events:
                self.assertTrue(self.declined(SIMPLE, key), key)
            self.assertEqual([event["log_format"] for event in events],
                             ["not DKIM-signing for {domain} (selector {selector}): {reason}"])
            self.assertNotIn("PRIVATE", repr(events))

    def test_pkcs8_key(self) -> None:
        """A key stored in PKCS#8 form (as OpenSSL 3 writes it) is used too."""
        loaded = serialization.load_pem_private_key(pem(1024, 0).encode(), password=None)
        pkcs8 = loaded.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        key = DomainKey("alice", "example.test", "jt202406", pkcs8)
        self.assertTrue(dkim.verify(self.sign(SIMPLE, key), dnsfunc=serve(a_key())))

    def test_messages_that_cannot_be_signed_faithfully(self) -> None:
        """No From field, an unparsable header, a bare CR, or a line the SMTP client would break:
        the message is left unsigned rather than sent with a signature that cannot verify."""
        head = SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        self.assertTrue(self.declined(SIMPLE.replace(b"From: Ann Example <ann@example.test>\r\n", b"")))
        self.assertTrue(self.declined(b"not a header line\r\n" + SIMPLE))
        self.assertTrue(self.declined(head + b"bare\rCR\r\n"))
        self.assertTrue(self.declined(SIMPLE.replace(b"Subject: ", b"Subject: \r")))
        self.assertTrue(self.declined(head + b"x" * (LINE_LIMIT + 1) + b"\r\n"))
        self.assertTrue(self.declined(head + b"." + b"x" * (LINE_LIMIT - 1) + b"\r\n"))  # stuffed: 999 octets
        self.assertTrue(self.declined(SIMPLE.replace(b"Quarterly", b"Q" * LINE_LIMIT)))

    def test_lines_at_the_smtp_limit_survive_the_wire(self) -> None:
        """The longest lines the SMTP client sends unchanged are signed and verify as received."""
        head = SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        message = head + b"x" * LINE_LIMIT + b"\r\n." + b"y" * (LINE_LIMIT - 2) + b"\r\n"
        signed = self.sign(message)
        self.assertTrue(dkim.verify(over_the_wire(signed), dnsfunc=serve(a_key())))

    @settings(max_examples=60, deadline=None)
    @given(body=st.lists(st.sampled_from([b"text", b" ", b"\t", b"\r\n", b"\n", b".", b"\r", b"y" * 400]),
                         max_size=12).map(b"".join))
    def test_signed_or_declined_never_broken(self, body: bytes) -> None:
        """Any body is either signed so that it verifies both as written and as the remote
        server receives it, or (bare CR, over-long line) declined."""
        message = SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body
        longest, bare_cr = reference_measure(body)
        if bare_cr or longest > LINE_LIMIT:
            self.assertTrue(self.declined(message))
            return
        signed = self.sign(message)
        self.assertTrue(dkim.verify(signed, dnsfunc=serve(a_key())))
        self.assertTrue(dkim.verify(over_the_wire(signed), dnsfunc=serve(a_key())))

    def test_large_message_streams(self) -> None:
        """A 30 MB message is signed with memory bounded by a few chunks, and verifies."""
        key = a_key(bits=2048)
        source = self.path("big.eml")
        lines = [b"Line %d of a large  message,\twith WSP runs and trailing space  \r\n" % i for i in range(997)]
        lines += [b"\r\n", b"\r\n", b"=" * 76 + b"\n", b"x" * 900 + b"\r\n"]
        block = b"".join(lines)
        with open(source, "wb") as handle:
            handle.write(SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
            while handle.tell() < 30_000_000:
                handle.write(block)
            handle.write(b"\r\n" * 1000)
            size = handle.tell()
        target = self.path("big-signed.eml")
        tracemalloc.start()
        try:
            self.assertTrue(sign_message(source, target, [key], NOW))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 4 * 1024 * 1024, f"peak {peak} bytes for a {size} byte message")
        with open(target, "rb") as handle:
            signed = handle.read()
        field = signed[: len(signed) - size]
        self.assertTrue(field.startswith(b"DKIM-Signature: ") and field.endswith(b"\r\n"))
        self.assertLess(len(field), 1000)
        self.assertTrue(signed.endswith(block + b"\r\n" * 1000))
        self.assertTrue(dkim.verify(signed, dnsfunc=serve(key)))


class SigningKeysForTests(SynchronousTestCase):
    """signing_keys_for finds the keys of the From domain exactly, and only those that may sign."""

    def setUp(self) -> None:
        self.store = MemoryStore(clock=Clock())
        self.successResultOf(self.store.add_account("alice", None))
        self.key = self.successResultOf(self.store.add_domain(attrs.evolve(a_key(), forced=True)))
        self.idn = self.successResultOf(self.store.add_domain(
            attrs.evolve(a_key(domain="xn--bcher-kva.example"), forced=True)))

    def keys(self, text: str) -> list[DomainKey]:
        found: list[DomainKey] = self.successResultOf(signing_keys_for(self.store, text))
        return found

    def test_address_and_field_forms(self) -> None:
        for text in ("ann@example.test", "Ann@EXAMPLE.test", '"Ann, Example" <ann@example.test>',
                     "ann@example.test."):
            self.assertEqual(self.keys(text), [self.key], text)

    def test_exact_domain_only(self) -> None:
        """A subdomain or parent domain of a key's domain has no key."""
        for text in ("ann@mail.example.test", "ann@test", "ann@other.test"):
            self.assertEqual(self.keys(text), [], text)

    def test_no_address(self) -> None:
        for text in ("", "ann", "@example.test", "Ann <>", "ann@", "ann@exa mple..test"):
            self.assertEqual(self.keys(text), [], text)

    def test_internationalised_domain(self) -> None:
        """A U-label From domain finds the key stored under its A-label."""
        self.assertEqual(self.keys("ann@Bücher.example"), [self.idn])

    def test_only_keys_that_may_sign(self) -> None:
        """An unverified key never signs; a verified one does once checked, the newest of each
        algorithm (RSA first), and a retired one no longer does."""
        newer = self.successResultOf(self.store.add_domain(a_key(selector="jt202407", which=1)))
        ed = self.successResultOf(self.store.add_domain(DomainKey("alice", "example.test", "jt202407e",
                                                                  new_ed25519_key(), NOW, "ed25519")))
        self.assertEqual(self.keys("ann@example.test"), [self.key])  # the new ones are not verified
        self.successResultOf(self.store.record_check("example.test", NOW, True, ["jt202407", "jt202407e"]))
        self.assertEqual([(key.selector, key.algorithm) for key in self.keys("ann@example.test")],
                         [(newer.selector, "rsa"), (ed.selector, "ed25519")])
        self.successResultOf(self.store.retire_key("example.test", "jt202407", NOW))
        self.assertEqual([key.selector for key in self.keys("ann@example.test")], ["jt202406", "jt202407e"])
        self.successResultOf(self.store.set_forced("example.test", "jt202406", False))
        self.assertEqual([key.selector for key in self.keys("ann@example.test")], ["jt202407e"])


class Ed25519Tests(SigningTestMixin, SynchronousTestCase):
    """RFC 8463: an Ed25519 signature beside the RSA one; dkimpy verifies both."""

    def test_both_signatures_verify(self) -> None:
        rsa = a_key()
        ed = DomainKey("alice", "example.test", "jt202406e", new_ed25519_key(), NOW, "ed25519")
        source, target = self.path("in.eml", SIMPLE), self.path("out.eml")
        self.assertTrue(sign_message(source, target, [rsa, ed], NOW))
        with open(target, "rb") as handle:
            signed = handle.read()
        fields = re.findall(rb"^DKIM-Signature: (.*?)\r\n(?! )", signed, re.M | re.S)
        self.assertEqual([parse_tag_value(re.sub(rb"\s+", b"", field))[b"a"] for field in fields[:2]],
                         [b"rsa-sha256", b"ed25519-sha256"])
        verifier = dkim.DKIM(signed)
        dnsfunc = serve(rsa, ed)
        self.assertEqual([verifier.verify(idx=index, dnsfunc=dnsfunc) for index in (0, 1)], [True, True])
        self.assertTrue(dns_record(ed)[1].startswith("v=DKIM1; k=ed25519; p="))

    def test_unusable_key_skipped(self) -> None:
        """A broken Ed25519 key is skipped (and logged); the RSA signature is still made."""
        broken = DomainKey("alice", "example.test", "jt202406e", "not base64!", NOW, "ed25519")
        source, target = self.path("in.eml", SIMPLE), self.path("out.eml")
        with capturedLogs() as events:
            self.assertTrue(sign_message(source, target, [a_key(), broken], NOW))
        self.assertEqual(len(events), 1)
        with open(target, "rb") as handle:
            self.assertTrue(dkim.verify(handle.read(), dnsfunc=serve(a_key())))


class KeyAndRecordTests(SynchronousTestCase):
    def test_dns_record(self) -> None:
        """The TXT record names the selector under _domainkey and carries the public key."""
        key = a_key(selector="jt202406")
        name, value = dns_record(key)
        self.assertEqual(name, "jt202406._domainkey.example.test")
        tags = parse_tag_value(value.encode())
        self.assertEqual((tags[b"v"], tags[b"k"]), (b"DKIM1", b"rsa"))
        public = serialization.load_der_public_key(base64.b64decode(tags[b"p"]))
        private = serialization.load_pem_private_key(key.private_key.encode(), password=None)
        self.assertEqual(public.public_numbers(), private.public_key().public_numbers())  # type: ignore[union-attr]

    def test_split_txt(self) -> None:
        """The value is split into strings of at most 255 octets that join back to it."""
        for bits in (1024, 2048, 4096):
            value = dns_record(a_key(bits=bits))[1]
            strings = split_txt(value)
            self.assertEqual("".join(strings), value)
            self.assertTrue(all(0 < len(text) <= 255 for text in strings))
            self.assertEqual(len(strings), -(-len(value) // 255))

    def test_new_rsa_key(self) -> None:
        key = serialization.load_pem_private_key(new_rsa_key(1024).encode(), password=None)
        self.assertEqual(key.key_size, 1024)  # type: ignore[union-attr]
        self.assertTrue(new_rsa_key.__defaults__ == (2048,))
        self.assertRaises(ValueError, new_rsa_key, 512)


class LoopbackDNSTests(SigningTestMixin, TestCase):
    """End to end: dkimpy (in a thread) looks the key up in a real DNS server on loopback."""

    async def verify_through_dns(self, message: bytes, *published: DomainKey) -> bool:
        zone = {"example.test": {f"{key.selector}._domainkey": [txt(*split_txt(dns_record(key)[1]))]
                                 for key in published}}
        port = await start_dns(self, zone)
        resolver = client.Resolver(servers=[("127.0.0.1", port)], reactor=reactor)

        def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
            answers, _, _ = blockingCallFromThread(reactor, resolver.lookupText, name.decode().rstrip("."))
            records = [b"".join(answer.payload.data) for answer in answers if answer.type == names_dns.TXT]
            return records[0] if records else None

        verified: bool = await deferToThread(dkim.verify, message, dnsfunc=dnsfunc)
        return verified

    async def test_simple_message_through_dns(self) -> None:
        key = a_key(bits=2048)
        self.assertTrue(await self.verify_through_dns(self.sign(SIMPLE, key), key))
        self.assertIn(("jt202406._domainkey.example.test", names_dns.TXT), self.dns_authority.queries)  # type: ignore[attr-defined]

    async def test_multipart_lf_message_through_dns(self) -> None:
        message = EmailMessage()
        message["From"] = "ann@example.test"
        message["Subject"] = "LF only"
        message.set_content("one  \n\ttwo\n\n")
        message.add_attachment(b"\x00\x01" * 3000, maintype="application", subtype="octet-stream")
        key = a_key(selector="s2048", bits=2048)
        signed = self.sign(message.as_bytes(), key)
        self.assertTrue(await self.verify_through_dns(over_the_wire(signed), key))

    async def test_tampered_message_fails_through_dns(self) -> None:
        key = a_key()
        signed = self.sign(SIMPLE, key)
        self.assertFalse(await self.verify_through_dns(signed.replace(b"numbers", b"figures"), key))
