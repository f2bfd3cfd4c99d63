# -*- test-case-name: tests.senders.test_verification -*-
"""Verified From-address authentication: does mail authorised only by its From address come from there?

A client that neither logs in nor connects from an authorised address is
trusted only because the message's From address is an account's; anybody can
write that address. So the message must also be authenticated for the From
domain as DMARC (RFC 7489) defines it: SPF must pass for the client's address
and the MAIL FROM domain (the HELO name for the null sender), and that domain
align with the From domain; or a DKIM signature must verify whose C{d=}
aligns with it. Alignment is relaxed (same organisational domain) unless the
From domain's DMARC record asks for strict (C{aspf=s}, C{adkim=s}).

SPF is checked first: when it passes aligned, the body is never read. Only
otherwise are the signatures verified, from a scratch copy of the message
(L{FromVerification.open_copy}: an unnamed file that disappears when closed).
The verdict carries the C{Authentication-Results} value (RFC 8601, unfolded:
results separated by C{"; "}) the server adds to the message, and says whether a DNS failure may be why it failed, so
the client can be told to try again rather than refused.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import BinaryIO

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from .dkimverify import DKIMResult, DKIMVerifier
from .dmarc import DMARCPolicies, FoundPolicy
from .dns import LookupFailed
from .spf import SPFChecker, SPFOutcome, SPFResult

__all__ = ["FromVerification", "SenderVerdict", "COPY_BUFFER"]

COPY_BUFFER = 256 * 1024  # bytes buffered before the scratch copy is written (as the spool does)


@frozen
class SenderVerdict:
    """Whether the message is authenticated for its From domain.

    @ivar header: the C{Authentication-Results} field value to add.
    @ivar temporary: it is not, and a DNS failure (or timeout) may be why.
    @ivar reason: for the log.
    """

    passed: bool
    header: str
    temporary: bool = False
    reason: str = ""


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def _spf_part(outcome: SPFOutcome, mail_from: str, helo: str) -> str:
    identity = f"smtp.mailfrom={mail_from}" if mail_from else f"smtp.helo={helo}"
    return f"spf={outcome.result.value} {identity}"


def _dkim_part(result: DKIMResult) -> str:
    if not result.domain:
        return f"dkim={result.result}"
    text = f"dkim={result.result} header.d={result.domain} header.s={result.selector}"
    return text + (f" header.b={result.signature}" if result.signature else "")


@frozen
class FromVerification:
    """Checks From-authorised mail; C{authserv_id} (the server's host name) names us in the header."""

    spf: SPFChecker
    dkim: DKIMVerifier
    policies: DMARCPolicies
    authserv_id: str
    scratch_directory: str
    clock: IReactorTime
    timeout: float = 60.0

    def open_copy(self) -> BinaryIO:
        """A new scratch file for a copy of the message (unnamed: it disappears when closed).

        @raise OSError: it could not be created.
        """
        return tempfile.TemporaryFile(dir=self.scratch_directory, buffering=COPY_BUFFER)

    def verify(self, client_ip: str, helo: str, mail_from: str, from_address: str, signatures: Sequence[bytes],
               copy: BinaryIO | None) -> "Deferred[SenderVerdict]":
        """Decide whether the message is authenticated for the domain of C{from_address}.

        C{signatures} are its C{DKIM-Signature} fields, C{copy} the whole
        message as spooled (None: DKIM cannot be checked). Never fails: DNS
        failures and a timeout make a temporary refusal.
        """
        checked = Deferred.fromCoroutine(self._verify(client_ip, helo, mail_from, _domain(from_address),
                                                      signatures, copy))
        checked.addTimeout(self.timeout, self.clock)

        def timed_out(failure: Failure) -> SenderVerdict:
            failure.trap(DeferredTimeoutError)
            return SenderVerdict(False, "", True, f"sender verification took over {self.timeout:g} seconds")
        return checked.addErrback(timed_out)

    async def _verify(self, client_ip: str, helo: str, mail_from: str, from_domain: str, signatures: Sequence[bytes],
                      copy: BinaryIO | None) -> SenderVerdict:
        organisations = self.policies.organisations
        try:
            policy: FoundPolicy | None = await self.policies.discover(from_domain)
        except LookupFailed:
            policy = None
        record = policy.record if policy is not None else None
        spf_domain = _domain(mail_from) if mail_from else helo.lower()
        spf = await self.spf.check_host(client_ip, spf_domain, mail_from or f"postmaster@{helo}", helo)
        spf_aligned = spf.result is SPFResult.PASS and organisations.aligned(
            spf_domain, from_domain, record.aspf if record else "r")
        dkim: list[DKIMResult] = []
        if not spf_aligned and signatures and copy is not None:
            dkim = await self.dkim.verify(signatures, copy)
        dkim_aligned = [result for result in dkim if result.result == "pass" and organisations.aligned(
            result.domain, from_domain, record.adkim if record else "r")]
        passed = spf_aligned or bool(dkim_aligned)
        if policy is None:
            dmarc = "temperror"
        elif record is None:
            dmarc = "none"
        else:
            dmarc = "pass" if passed else "fail"
        parts = [_spf_part(spf, mail_from, helo)]
        if not spf_aligned:
            parts += [_dkim_part(result) for result in dkim] or ["dkim=none"]
        parts.append(f"dmarc={dmarc} header.from={from_domain}")
        temporary = not passed and (spf.result is SPFResult.TEMPERROR or policy is None
                                    or any(result.result == "temperror" for result in dkim))
        return SenderVerdict(passed, "; ".join([self.authserv_id, *parts]), temporary,
                             _explain(spf, spf_aligned, dkim, dkim_aligned, from_domain))


def _explain(spf: SPFOutcome, spf_aligned: bool, dkim: list[DKIMResult], dkim_aligned: list[DKIMResult],
             from_domain: str) -> str:
    if spf_aligned:
        return f"SPF passed for {spf.domain}, aligned with From domain {from_domain}"
    if dkim_aligned:
        return f"DKIM d={dkim_aligned[0].domain} passed, aligned with From domain {from_domain}"
    signatures = ", ".join(f"d={result.domain or '?'} {result.result}" for result in dkim) or "none"
    return (f"not authenticated for From domain {from_domain}: SPF {spf.result.value} for {spf.domain} "
            f"{spf.reason}; DKIM signatures: {signatures}")
