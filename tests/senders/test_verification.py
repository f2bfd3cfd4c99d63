"""FromVerification: SPF first, then DKIM from the copy, DMARC alignment, the header, time limits."""
from __future__ import annotations

import io
import os
from typing import Any

import dkim
from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import Deferred
from twisted.names import common
from twisted.trial.unittest import SynchronousTestCase

from jangotw.model import DomainKey
from jangotw.pipeline.dkim import dns_record, new_ed25519_key, new_rsa_key, split_txt
from jangotw.senders.dkimverify import DKIMResult, DKIMVerifier
from jangotw.senders.dmarc import DMARCPolicies, Organisations
from jangotw.senders.dns import Lookups
from jangotw.senders.spf import SPFChecker
from jangotw.senders.verification import FromVerification, SenderVerdict
from jangotw.testing import ClockWithThreads, SynchronousThreadPool
from tests.support.dns import SERVFAIL, ZoneAuthority, txt

RSA_KEY = new_rsa_key(1024)
ED_KEY = new_ed25519_key()
ORGANISATIONS = Organisations(PublicSuffixList())


def published(domain: str, selector: str, private_key: str, algorithm: str = "rsa") -> list[Any]:
    return [txt(*split_txt(dns_record(DomainKey("x", domain, selector, private_key, 0.0, algorithm))[1]))]


ZONES = {
    "example.com": {
        "example.com": [txt("v=spf1 ip4:203.0.113.7 -all")],
        "s1._domainkey": published("example.com", "s1", RSA_KEY),
        "e1._domainkey": published("example.com", "e1", ED_KEY, "ed25519"),
        "_dmarc": [txt("v=DMARC1; p=reject")],
    },
    "other.test": {"s1._domainkey": published("other.test", "s1", RSA_KEY)},
    "broken.test": {"s1._domainkey": SERVFAIL},
}
MESSAGE = b"Received: from client\r\nFrom: ann@news.example.com\r\nSubject: hi\r\n\r\nHello\r\n"


def signed(domain: bytes, selector: bytes = b"s1", algorithm: bytes = b"rsa-sha256", key: str = RSA_KEY) -> bytes:
    signature: bytes = dkim.sign(MESSAGE, selector, domain, key.encode(), signature_algorithm=algorithm,
                                 include_headers=[b"from", b"subject"])
    return signature + MESSAGE


def fields(message: bytes) -> list[bytes]:
    head = message.split(b"\r\n\r\n")[0].split(b"\r\n")
    found: list[bytes] = []
    for line in head:
        if line.lower().startswith(b"dkim-signature:"):
            found.append(line + b"\r\n")
        elif line[:1] in (b" ", b"\t") and found and not any(line.startswith(h) for h in (b"From", b"Subject")):
            found[-1] += line + b"\r\n"
    return found


class _Silent(common.ResolverBase):
    """A resolver that never answers (a server gone quiet)."""

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> "Deferred[Any]":
        return Deferred()


class FromVerificationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ClockWithThreads()
        self.verification = self.make(ZoneAuthority(ZONES))

    def make(self, resolver: Any) -> FromVerification:
        lookups = Lookups(resolver)
        directory = self.mktemp()
        os.makedirs(directory)
        return FromVerification(spf=SPFChecker(lookups),
                                dkim=DKIMVerifier(lookups, self.clock, SynchronousThreadPool()),  # type: ignore[arg-type]
                                policies=DMARCPolicies(lookups, ORGANISATIONS), authserv_id="relay.test",
                                scratch_directory=directory, clock=self.clock)

    def verify(self, ip: str, mail_from: str, message: bytes | None = None) -> SenderVerdict:
        copy = io.BytesIO(message) if message is not None else None
        verdict: SenderVerdict = self.successResultOf(self.verification.verify(
            ip, "client.test", mail_from, "ann@news.example.com", fields(message or b""), copy))
        return verdict

    def test_spf_aligned(self) -> None:
        """SPF for bounce@example.com aligns (relaxed) with From news.example.com; DKIM is not read."""
        verdict = self.verify("203.0.113.7", "bounce@example.com", signed(b"other.test"))
        self.assertEqual((verdict.passed, verdict.header),
                         (True, "relay.test; spf=pass smtp.mailfrom=bounce@example.com; "
                                "dmarc=pass header.from=news.example.com"))

    def test_dkim_aligned(self) -> None:
        verdict = self.verify("198.51.100.1", "bounce@example.com", signed(b"example.com"))
        self.assertTrue(verdict.passed, verdict.reason)
        self.assertRegex(verdict.header, r"^relay\.test; spf=fail smtp\.mailfrom=bounce@example\.com; "
                                         r"dkim=pass header\.d=example\.com header\.s=s1 header\.b=\S{12}; "
                                         r"dmarc=pass header\.from=news\.example\.com$")

    def test_ed25519_signature(self) -> None:
        verdict = self.verify("198.51.100.1", "", signed(b"example.com", b"e1", b"ed25519-sha256", ED_KEY))
        self.assertTrue(verdict.passed, verdict.reason)
        self.assertIn("spf=none smtp.helo=client.test; dkim=pass header.d=example.com header.s=e1", verdict.header)

    def test_unaligned_signature_refused(self) -> None:
        """A valid signature of another domain does not authenticate the From domain."""
        verdict = self.verify("198.51.100.1", "bounce@other.test", signed(b"other.test"))
        self.assertEqual((verdict.passed, verdict.temporary), (False, False))
        self.assertIn("dkim=pass header.d=other.test", verdict.header)
        self.assertTrue(verdict.header.endswith("dmarc=fail header.from=news.example.com"))
        self.assertIn("DKIM signatures: d=other.test pass", verdict.reason)

    def test_unsigned_and_no_spf(self) -> None:
        verdict = self.verify("198.51.100.1", "bounce@example.com")
        self.assertEqual((verdict.passed, verdict.header),
                         (False, "relay.test; spf=fail smtp.mailfrom=bounce@example.com; dkim=none; "
                                 "dmarc=fail header.from=news.example.com"))

    def test_key_lookup_failure_is_temporary(self) -> None:
        verdict = self.verify("198.51.100.1", "bounce@example.com", signed(b"broken.test"))
        self.assertEqual((verdict.passed, verdict.temporary), (False, True))
        self.assertIn("dkim=temperror header.d=broken.test", verdict.header)

    def test_time_limit(self) -> None:
        """A DNS that never answers: after the time limit the verdict is a temporary failure."""
        verification = self.make(_Silent())
        verdict = verification.verify("203.0.113.7", "client.test", "bounce@example.com", "ann@example.com", [], None)
        self.assertNoResult(verdict)
        self.clock.advance(verification.timeout)
        self.assertEqual(self.successResultOf(verdict),
                         SenderVerdict(False, "", True, "sender verification took over 60 seconds"))

    def test_scratch_copy_is_unnamed(self) -> None:
        """The copy is written and read back, and never has a name in the directory."""
        with self.verification.open_copy() as copy:
            copy.write(b"data")
            self.assertEqual(os.listdir(self.verification.scratch_directory), [])
            copy.seek(0)
            self.assertEqual(copy.read(), b"data")


class DKIMVerifierTests(SynchronousTestCase):
    def test_results_per_signature(self) -> None:
        """Each signature gets its result, in header order; an unreadable field is a permerror."""
        verifier = DKIMVerifier(Lookups(ZoneAuthority(ZONES)), ClockWithThreads(), SynchronousThreadPool())  # type: ignore[arg-type]
        message = signed(b"example.com")
        message = dkim.sign(message, b"s1", b"other.test", RSA_KEY.encode(), include_headers=[b"from"]) + message
        results = self.successResultOf(verifier.verify(fields(message) + [b"DKIM-Signature: v=1; junk\r\n"],
                                                       io.BytesIO(message)))
        self.assertEqual([(result.domain, result.result) for result in results],
                         [("other.test", "pass"), ("example.com", "pass"), ("", "permerror")])
        tampered = message.replace(b"Hello", b"Howdy")
        results = self.successResultOf(verifier.verify(fields(tampered), io.BytesIO(tampered)))
        self.assertEqual([result.result for result in results], ["fail", "fail"])
        self.assertEqual(self.successResultOf(verifier.verify([], io.BytesIO(MESSAGE))), [])
        missing = signed(b"nokey.test")
        [result] = self.successResultOf(verifier.verify(fields(missing), io.BytesIO(missing)))
        self.assertEqual((result.domain, result.result), ("nokey.test", "permerror"))
        self.assertIsInstance(result, DKIMResult)
