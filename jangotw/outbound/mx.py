# -*- test-case-name: tests.outbound.test_mx -*-
"""Find where a domain's mail goes: its MX hosts in preference order, then their addresses.

Follows RFC 5321 section 5.1: MX records sorted by preference, or the domain
itself when it has no MX but an address (the implicit MX); RFC 7505: a lone
MX of "." means the domain accepts no mail. Every lookup goes through an
injected twisted.names resolver, never C{socket.getaddrinfo}, so nothing blocks
the reactor and tests can point it at a loopback DNS server.

DNS answers decide retry versus bounce: NXDOMAIN and null MX are
L{PermanentError}s, SERVFAIL, refusals and timeouts L{TemporaryError}s.
"""
from __future__ import annotations

import socket
from typing import Any, Callable, cast

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IReactorUDP, IResolver
from twisted.names import client, dns, hosts, resolve
from twisted.names.error import (
    AuthoritativeDomainError,
    DNSNameError,
    DNSQueryRefusedError,
    DNSServerError,
    DomainError,
    ResolverError,
)

from ..errors import PermanentError, TemporaryError

__all__ = ["MailExchangers", "make_resolver", "parse_dns_server"]

_CNAME_HOPS = 8  # a longer chain is a loop or a misconfiguration


class _ResolverReactor(IReactorUDP, IReactorTCP, IReactorTime):
    """What the twisted.names client needs from a reactor: UDP and TCP queries, timeouts."""


def parse_dns_server(text: str) -> tuple[str, int]:
    """C{"127.0.0.1:5353"}, C{"[::1]:53"} or a bare address (port 53) as C{(host, port)}.

    @raise ValueError: a port that is not a number.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else dns.PORT
    if text.count(":") > 1:  # a bare IPv6 address
        return text, dns.PORT
    host, colon, port = text.rpartition(":")
    if not colon:
        return text, dns.PORT
    return host, int(port)


def make_resolver(dns_servers: tuple[str, ...], reactor: _ResolverReactor) -> IResolver:
    """The resolver delivery uses: the configured servers only, or else the system's.

    With servers configured, queries go to them alone: twisted's
    C{createResolver} would add the nameservers of C{/etc/resolv.conf} as
    fallbacks, take no reactor (so it would use the global one) and re-read
    that file on a timer. Without servers, C{/etc/hosts} is consulted first,
    then the nameservers of C{/etc/resolv.conf}, as the C library would.
    There is no answer cache here: run a caching resolver (unbound) nearby.
    """
    if dns_servers:
        servers = [parse_dns_server(text) for text in dns_servers]
        return cast(IResolver, client.Resolver(servers=servers, reactor=reactor))
    system = client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)
    return cast(IResolver, resolve.ResolverChain([hosts.Resolver(b"/etc/hosts"), system]))


@frozen
class MailExchangers:
    """MX and address lookups for delivery, on an injected resolver."""

    resolver: IResolver

    def lookup(self, domain: str) -> "Deferred[list[str]]":
        """The host names mail for C{domain} goes to, most preferred first.

        Equal preferences are ordered by name, so a delivery is reproducible.
        Fires with C{[domain]} when there is no MX but the domain has an
        address (RFC 5321 5.1 implicit MX). Fails with L{PermanentError} for
        NXDOMAIN, a null MX (RFC 7505) or no MX and no address; with
        L{TemporaryError} for SERVFAIL, a refused query or a timeout.
        """
        return Deferred.fromCoroutine(self._lookup(_normalise(domain)))

    def addresses(self, host: str) -> "Deferred[list[str]]":
        """The IPv4 then IPv6 addresses of C{host}, as text (C{[]} when it has none).

        Fails with L{PermanentError} when the name does not exist, with
        L{TemporaryError} when neither lookup got an answer.
        """
        return Deferred.fromCoroutine(self._addresses(_normalise(host)))

    async def _lookup(self, domain: str) -> list[str]:
        records = await self._records(domain, dns.MX)
        if not records:
            if await self._addresses(domain):
                return [domain]
            raise PermanentError(f"{domain}: the domain has no MX and no address records")
        exchangers: list[tuple[int, str]] = []
        null = 0
        for record in records:
            name = record.name.name.decode("ascii", "replace").lower().rstrip(".")
            if not name:
                null += 1
                continue
            exchangers.append((record.preference, name))
        if not exchangers:
            raise PermanentError(f"{domain}: the domain accepts no mail (null MX, RFC 7505)")
        ordered: list[str] = []
        for _, name in sorted(exchangers):
            if name not in ordered:
                ordered.append(name)
        return ordered

    async def _addresses(self, host: str) -> list[str]:
        queries = [Deferred.fromCoroutine(self._records(host, kind)) for kind in (dns.A, dns.AAAA)]
        found: list[str] = []
        problems: list[Exception] = []
        for query in queries:  # await both, so neither failure goes unhandled
            try:
                found += [_address_text(record) for record in await query]
            except (PermanentError, TemporaryError) as problem:
                problems.append(problem)
        if found or not problems:
            return found
        temporary = [problem for problem in problems if isinstance(problem, TemporaryError)]
        raise (temporary or problems)[0]

    async def _records(self, name: str, kind: int) -> list[Any]:
        """Payloads of type C{kind} for C{name}, following CNAMEs the server did not chase."""
        lookup: Callable[..., "Deferred[Any]"] = {
            dns.MX: self.resolver.lookupMailExchange,
            dns.A: self.resolver.lookupAddress,
            dns.AAAA: self.resolver.lookupIPV6Address,
        }[kind]
        current = name
        for _ in range(_CNAME_HOPS):
            try:
                answers, _authority, _additional = await lookup(current)
            except Exception as error:
                raise _classify(error, name) from None
            matching: list[Any] = [answer.payload for answer in answers if answer.type == kind]
            if matching:
                return matching
            owner = dns.Name(current)
            aliases: list[Any] = [answer.payload for answer in answers
                                  if answer.type == dns.CNAME and answer.name == owner]
            if not aliases:
                return []
            current = aliases[0].name.name.decode("ascii").lower()
        raise TemporaryError(f"{name}: CNAME chain longer than {_CNAME_HOPS}")


def _normalise(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _address_text(record: Any) -> str:
    if isinstance(record, dns.Record_A):
        return record.dottedQuad()  # type: ignore[no-any-return]
    return socket.inet_ntop(socket.AF_INET6, record.address)


def _classify(error: Exception, name: str) -> Exception:
    """Turn a resolver failure into retry-or-bounce; an unknown exception is a bug and passes through."""
    if isinstance(error, (DNSNameError, AuthoritativeDomainError)) or type(error) is DomainError:
        return PermanentError(f"{name}: domain does not exist (NXDOMAIN)")
    if isinstance(error, DNSServerError):
        return TemporaryError(f"{name}: DNS server failure (SERVFAIL)")
    if isinstance(error, DNSQueryRefusedError):
        return TemporaryError(f"{name}: DNS query refused")
    if isinstance(error, DeferredTimeoutError):
        return TemporaryError(f"{name}: DNS lookup timed out")
    if isinstance(error, (DomainError, ResolverError, ConnectError, OSError)):
        return TemporaryError(f"{name}: DNS lookup failed ({type(error).__name__})")
    return error
