# -*- test-case-name: tests.senders.test_spf -*-
"""DNS lookups for sender authentication on an injected twisted.names resolver.

A name that does not exist (NXDOMAIN) and a name without records of the type
asked for (NODATA) both answer an empty list: SPF counts either as a void
lookup, and DKIM and DMARC read either as "no record". SERVFAIL, refusals and
timeouts raise L{LookupFailed}, which the callers report as a temporary error.
CNAMEs a server did not chase are followed. A name that cannot be a DNS name
(empty labels, over 253 octets, not ASCII) is never asked for: it has no records.
"""
from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Callable

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names.error import AuthoritativeDomainError, DNSNameError, DomainError, ResolverError

__all__ = ["Lookups", "LookupFailed", "valid_name"]

_CNAME_HOPS = 8
_MAX_NAME = 253


class LookupFailed(Exception):
    """The DNS gave no answer (SERVFAIL, refused, timed out): try again later."""


def valid_name(name: str) -> bool:
    """Whether C{name} (no final dot) can be asked for: ASCII labels of 1 to 63 octets, at most 253 in all."""
    return (bool(name) and name.isascii() and len(name) <= _MAX_NAME
            and all(0 < len(label) <= 63 for label in name.split(".")))


@frozen
class Lookups:
    """Typed answers from C{resolver}; each query may take the C{timeout} tries (seconds each)."""

    resolver: IResolver
    timeout: tuple[int, ...] = (2, 4)

    def txt(self, name: str) -> "Deferred[list[bytes]]":
        """Every TXT record of C{name}, its strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return Deferred.fromCoroutine(self._txt(name))

    async def _txt(self, name: str) -> list[bytes]:
        return [b"".join(record.data) for record in await self._records(name, dns.TXT)]

    def addresses(self, name: str, version: int) -> "Deferred[list[IPv4Address | IPv6Address]]":
        """The A (C{version} 4) or AAAA (6) addresses of C{name}."""
        return Deferred.fromCoroutine(self._addresses(name, version))

    async def _addresses(self, name: str, version: int) -> list[IPv4Address | IPv6Address]:
        if version == 4:
            return [ip_address(record.dottedQuad()) for record in await self._records(name, dns.A)]
        return [ip_address(socket.inet_ntop(socket.AF_INET6, record.address))
                for record in await self._records(name, dns.AAAA)]

    def mx(self, name: str) -> "Deferred[list[str]]":
        """The exchanger names of C{name}'s MX records in preference order (a null MX gives none)."""
        return Deferred.fromCoroutine(self._mx(name))

    async def _mx(self, name: str) -> list[str]:
        records = sorted(await self._records(name, dns.MX), key=lambda record: record.preference)
        return [host for host in (_text(record.name) for record in records) if host]

    def ptr(self, address: IPv4Address | IPv6Address) -> "Deferred[list[str]]":
        """The names a PTR lookup of C{address} gives."""
        return Deferred.fromCoroutine(self._ptr(address))

    async def _ptr(self, address: IPv4Address | IPv6Address) -> list[str]:
        return [_text(record.name) for record in await self._records(address.reverse_pointer, dns.PTR)]

    def cname(self, name: str) -> "Deferred[str | None]":
        """The target of C{name}'s CNAME record, or None."""
        return Deferred.fromCoroutine(self._cname(name))

    async def _cname(self, name: str) -> str | None:
        found = await self._answers(name, dns.CNAME, self.resolver.lookupCanonicalName)
        owner = dns.Name(name)
        targets = [_text(answer.payload.name) for answer in found if answer.type == dns.CNAME and answer.name == owner]
        return targets[0] if targets else None

    async def _records(self, name: str, kind: int) -> list[Any]:
        lookup: Callable[..., "Deferred[Any]"] = {
            dns.TXT: self.resolver.lookupText,
            dns.A: self.resolver.lookupAddress,
            dns.AAAA: self.resolver.lookupIPV6Address,
            dns.MX: self.resolver.lookupMailExchange,
            dns.PTR: self.resolver.lookupPointer,
        }[kind]
        current = name.lower().rstrip(".")
        for _ in range(_CNAME_HOPS):
            answers = await self._answers(current, kind, lookup)
            matching = [answer.payload for answer in answers if answer.type == kind]
            if matching:
                return matching
            owner = dns.Name(current)
            aliases = [answer.payload for answer in answers if answer.type == dns.CNAME and answer.name == owner]
            if not aliases:
                return []
            current = _text(aliases[0].name)
        raise LookupFailed(f"{name}: CNAME chain longer than {_CNAME_HOPS}")

    async def _answers(self, name: str, kind: int, lookup: Callable[..., "Deferred[Any]"]) -> list[Any]:
        name = name.lower().rstrip(".")
        if not valid_name(name):
            return []
        try:
            answers, _authority, _additional = await lookup(name, timeout=self.timeout)
        except (DNSNameError, AuthoritativeDomainError):
            return []
        except (DomainError, ResolverError, DeferredTimeoutError, ConnectError, OSError) as error:
            if type(error) is DomainError:  # twisted's NXDOMAIN from a local source (the hosts file)
                return []
            raise LookupFailed(f"{name}: {dns.QUERY_TYPES.get(kind, kind)} lookup failed "
                               f"({type(error).__name__})") from None
        return list(answers)


def _text(name: dns.Name) -> str:
    return name.name.decode("ascii", "replace").lower().rstrip(".")
