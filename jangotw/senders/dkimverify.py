# -*- test-case-name: tests.senders.test_verification -*-
"""DKIM verification (RFC 6376, RFC 8463) of a received message, with dkimpy in a thread.

dkimpy looks keys up with a blocking resolver it calls itself, so the keys are
fetched first, on the reactor, with twisted.names: the C{DKIM-Signature}
fields (from the header section already parsed) name each key
(C{<s>._domainkey.<d>}), and dkimpy then runs in the C{cpu} pool with a
C{dnsfunc} answering from what was fetched. A key whose lookup failed is a
C{temperror} without asking dkimpy.

Memory: dkimpy verifies a message held whole in memory, and canonicalises
the body into another copy, so verifying a 30 MB message costs roughly three
times that (~90 MB) while it runs; the C{cpu} pool's size bounds how many run
at once. Only the first L{MAX_SIGNATURES} signatures are verified.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

import dkim  # type: ignore[import-untyped]
from attrs import frozen
from dkim.util import InvalidTagValueList, parse_tag_value  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from .dns import LookupFailed, Lookups

__all__ = ["DKIMResult", "DKIMVerifier", "MAX_SIGNATURES"]

MAX_SIGNATURES = 5
_B_SHOWN = 12  # header.b= carries this much of the signature (RFC 6008)


@frozen
class DKIMResult:
    """One signature's verdict: C{pass}, C{fail}, C{temperror} or C{permerror} (RFC 8601 2.7.1)."""

    domain: str
    selector: str
    result: str
    reason: str = ""
    signature: str = ""  # the start of b=, telling signatures of one domain apart


@frozen
class _Signature:
    domain: str
    selector: str
    signature: str
    problem: str = ""  # the field could not be read (permerror)

    @property
    def key_name(self) -> bytes:
        return f"{self.selector}._domainkey.{self.domain}.".encode("ascii")


def _read(field: bytes) -> _Signature:
    value = field.partition(b":")[2].replace(b"\r\n", b"").replace(b"\n", b"")
    try:
        tags = parse_tag_value(value)
        domain, selector = tags[b"d"].decode("ascii").lower().rstrip("."), tags[b"s"].decode("ascii").lower()
    except (InvalidTagValueList, KeyError, UnicodeDecodeError):
        return _Signature("", "", "", "the DKIM-Signature field cannot be read (no d= or s=)")
    signature = b"".join(tags.get(b"b", b"").split()).decode("ascii", "replace")[:_B_SHOWN]
    return _Signature(domain, selector, signature)


def _verify(message: BinaryIO, signatures: list[_Signature], keys: dict[bytes, bytes | None],
            preset: dict[int, DKIMResult]) -> list[DKIMResult]:
    """The blocking part: read the message whole and verify each signature not already decided."""
    message.flush()
    message.seek(0)
    data = message.read()
    try:
        verifier = dkim.DKIM(data, minkey=1024)
    except dkim.DKIMException as error:
        return [preset.get(index) or DKIMResult(each.domain, each.selector, "permerror", str(error), each.signature)
                for index, each in enumerate(signatures)]
    results = []
    for index, each in enumerate(signatures):
        if index in preset:
            results.append(preset[index])
            continue
        try:
            verified = verifier.verify(idx=index, dnsfunc=lambda name, timeout=5: keys.get(name))
        except dkim.ValidationError as error:  # the signature does not hold: body hash, expired, ...
            results.append(DKIMResult(each.domain, each.selector, "fail", str(error), each.signature))
            continue
        except dkim.DKIMException as error:  # no usable key, unparsable signature or message
            results.append(DKIMResult(each.domain, each.selector, "permerror", str(error), each.signature))
            continue
        results.append(DKIMResult(each.domain, each.selector, "pass" if verified else "fail",
                                  "" if verified else "the signature does not verify", each.signature))
    return results


@frozen
class DKIMVerifier:
    """Verifies the DKIM signatures of spooled messages: keys through C{lookups}, dkimpy in C{pool}."""

    lookups: Lookups
    reactor: IReactorFromThreads
    pool: ThreadPool
    max_signatures: int = MAX_SIGNATURES

    def verify(self, fields: Sequence[bytes], message: BinaryIO) -> "Deferred[list[DKIMResult]]":
        """Verify the message in C{message} (read from its start) against its C{DKIM-Signature}
        C{fields} (whole raw fields, in header order); one result per field verified. Never fails
        for a bad signature or key; the file is read, not closed."""
        return Deferred.fromCoroutine(self._verify(list(fields)[:self.max_signatures], message))

    async def _verify(self, fields: list[bytes], message: BinaryIO) -> list[DKIMResult]:
        signatures = [_read(field) for field in fields]
        if not signatures:
            return []
        preset: dict[int, DKIMResult] = {}
        keys: dict[bytes, bytes | None] = {}
        failed: dict[bytes, str] = {}
        for index, each in enumerate(signatures):
            if each.problem:
                preset[index] = DKIMResult("", "", "permerror", each.problem)
                continue
            if each.key_name not in keys and each.key_name not in failed:
                try:
                    found = await self.lookups.txt(each.key_name.decode("ascii").rstrip("."))
                    keys[each.key_name] = found[0] if found else None
                except LookupFailed as error:
                    failed[each.key_name] = str(error)
            if each.key_name in failed:
                preset[index] = DKIMResult(each.domain, each.selector, "temperror", failed[each.key_name],
                                           each.signature)
            elif keys.get(each.key_name) is None:
                preset[index] = DKIMResult(each.domain, each.selector, "permerror",
                                           f"no key published at {each.key_name.decode('ascii')}", each.signature)
        return await deferToThreadPool(self.reactor, self.pool, _verify, message, signatures, keys, preset)
