"""An authoritative DNS server on loopback, serving zones from a dict, for delivery tests.

    port = await start_dns(self, {
        "example.test": {
            "example.test": [mx(10, "mx1.example.test"), mx(20, "mx2.example.test")],
            "mx1": [a("127.0.0.2")],                 # relative to the zone
            "mx2.example.test": [a("127.0.0.1"), aaaa("::1")],
            "alias": [cname("mx2.example.test")],
            "nomail.example.test": [null_mx()],
            "broken.example.test": SERVFAIL,         # every query for it gets SERVFAIL
        },
    })
    resolver = make_resolver((f"127.0.0.1:{port}",), reactor)

Names nobody listed get NXDOMAIN; a listed name asked for a type it lacks gets
an empty NOERROR answer (NODATA). CNAMEs are chased within the data. Every
address must be loopback (127.0.0.0/8 or ::1): tests never reach out. The
server answers over UDP and TCP on the same ephemeral port of 127.0.0.1 and is
stopped by the test's cleanup.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Any, Mapping, Sequence, Union

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.names import common, dns, server
from twisted.names.error import AuthoritativeDomainError, DNSServerError
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

__all__ = ["start_dns", "mx", "null_mx", "a", "aaaa", "txt", "cname", "SERVFAIL", "ZoneAuthority"]

TTL = 60


class _ServFail:
    def __repr__(self) -> str:
        return "SERVFAIL"


SERVFAIL: Any = _ServFail()
Records = Union[Sequence[Any], _ServFail]


def mx(preference: int, host: str) -> dns.Record_MX:
    return dns.Record_MX(preference, host.encode("idna"), ttl=TTL)


def null_mx() -> dns.Record_MX:
    """RFC 7505: "MX 0 ." (the root name, encoded as an empty name)."""
    return dns.Record_MX(0, b"", ttl=TTL)


def a(address: str) -> dns.Record_A:
    return dns.Record_A(address, ttl=TTL)


def aaaa(address: str) -> dns.Record_AAAA:
    return dns.Record_AAAA(address, ttl=TTL)


def txt(*strings: str) -> dns.Record_TXT:
    return dns.Record_TXT(*(text.encode("utf-8") for text in strings), ttl=TTL)


def cname(target: str) -> dns.Record_CNAME:
    return dns.Record_CNAME(target.encode("idna"), ttl=TTL)


class _ServerFailure(DNSServerError):
    """Answer this query with SERVFAIL (quietly, in L{_Factory}; as twisted's client would fail, when
    the authority is used directly as a resolver)."""


def _absolute(name: str, zone: str) -> bytes:
    name, zone = name.lower().rstrip("."), zone.lower().rstrip(".")
    if name in ("", "@"):
        name = zone
    elif name != zone and not name.endswith("." + zone):
        name = f"{name}.{zone}"
    return name.encode("idna")


def _check_loopback(record: Any) -> None:
    if isinstance(record, dns.Record_A):
        address = ipaddress.ip_address(record.dottedQuad())
    elif isinstance(record, dns.Record_AAAA):
        address = ipaddress.ip_address(socket.inet_ntop(socket.AF_INET6, record.address))
    else:
        return
    if not address.is_loopback:
        raise ValueError(f"test DNS data must use loopback addresses only, not {address}")


class ZoneAuthority(common.ResolverBase):
    """An IResolver answering authoritatively from in-memory records.

    Behind L{start_dns} it is a real server; used directly as a resolver it
    answers synchronously, for tests on a Clock.
    """

    def __init__(self, zones: Mapping[str, Mapping[str, Records]]) -> None:
        super().__init__()
        self.records: dict[bytes, Records] = {}
        for zone, names in zones.items():
            for name, records in names.items():
                if not isinstance(records, _ServFail):
                    for record in records:
                        _check_loopback(record)
                self.records[_absolute(name, zone)] = records
        self.queries: list[tuple[str, int]] = []  # (name, type) in the order asked

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> "Deferred[Any]":
        owner = name.lower()
        self.queries.append((owner.decode("ascii", "replace"), type))
        answers: list[dns.RRHeader] = []
        for _ in range(8):
            records = self.records.get(owner)
            if records is None:
                if answers:
                    break
                return fail(AuthoritativeDomainError(name))
            if isinstance(records, _ServFail):
                return fail(_ServerFailure(name))
            matching = [record for record in records if record.TYPE == type or type == dns.ALL_RECORDS]
            answers += [dns.RRHeader(owner, record.TYPE, dns.IN, record.ttl, record, auth=True) for record in matching]
            aliases = [record for record in records if record.TYPE == dns.CNAME]
            if matching or not aliases or type == dns.CNAME:
                break
            answers.append(dns.RRHeader(owner, dns.CNAME, dns.IN, aliases[0].ttl, aliases[0], auth=True))
            owner = aliases[0].name.name.lower()
        return succeed((answers, [], []))


class _Factory(server.DNSServerFactory):
    def gotResolverError(self, failure: Failure, protocol: Any, message: dns.Message, address: Any) -> None:
        if failure.check(_ServerFailure):
            response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
            self.sendReply(protocol, response, address)
            return
        super().gotResolverError(failure, protocol, message, address)


async def start_dns(testcase: TestCase, zones: Mapping[str, Mapping[str, Records]]) -> int:
    """Serve C{zones} on 127.0.0.1 (UDP and TCP, one ephemeral port); return the port.

    The authority is available afterwards as C{testcase.dns_authority}, with
    the queries it answered in C{.queries}.
    """
    authority = ZoneAuthority(zones)
    factory = _Factory(authorities=[authority])
    for _ in range(50):
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        port: int = udp.getHost().port
        try:
            tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
        except CannotListenError:
            await maybeDeferred(udp.stopListening)
            continue
        testcase.addCleanup(udp.stopListening)
        testcase.addCleanup(tcp.stopListening)
        testcase.dns_authority = authority  # type: ignore[attr-defined]
        return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")
