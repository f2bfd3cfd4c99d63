# -*- test-case-name: tests.auth.test_iprules -*-
"""Login IP authorisation: which client addresses may use a login's credentials.

A rule is a range of addresses (one address, a CIDR or C{first-last}) scoped to
C{smtp}, C{api} or both. A login with no rules for a scope is unrestricted
there; otherwise the client must fall in one of them. An account's own rules
bind every login of the account and the login's rules bind it too, so a
credential can be limited to given addresses ("credential AND IP").
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..errors import InputError
from ..model import IPRule

__all__ = ["Address", "parse_range", "contains", "allowed"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise InputError(f"{text.strip()!r} is not an IP address") from None


def _plain(address: Address) -> Address:
    """IPv4-mapped IPv6 clients (::ffff:192.0.2.1) compare as IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_range(text: str) -> tuple[str, str]:
    """(first, last) of C{192.0.2.7}, C{192.0.2.0/24} or C{192.0.2.10-192.0.2.20}."""
    text = text.strip()
    if "-" in text:
        first_text, _, last_text = text.partition("-")
        first, last = _plain(_address(first_text)), _plain(_address(last_text))
        if first.version != last.version:
            raise InputError(f"{text!r} mixes IPv4 and IPv6 addresses")
        if int(last) < int(first):
            raise InputError(f"{text!r} ends before it begins")
        return str(first), str(last)
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InputError(f"{text!r} is not a CIDR range such as 192.0.2.0/24") from None
        first, last = _plain(network[0]), _plain(network[-1])
        if first.version != last.version:  # straddles the IPv4-mapped block: stays IPv6
            first, last = network[0], network[-1]
        return str(first), str(last)
    single = str(_plain(_address(text)))
    return single, single


def contains(rule: IPRule, address: Address) -> bool:
    """Whether the rule's range holds the client, as it connected or (IPv4-mapped) as IPv4."""
    first, last = ipaddress.ip_address(rule.first), ipaddress.ip_address(rule.last)
    return any(client.version == first.version and int(first) <= int(client) <= int(last)
               for client in {address, _plain(address)})


def allowed(rules: Iterable[IPRule], address: Address, scope: str) -> bool:
    """Whether C{address} may use a credential bound by C{rules} (the account's and the login's)
    for C{scope}: every login whose rules mention the scope must have one containing it."""
    by_login: dict[str, list[IPRule]] = {}
    for rule in rules:
        if scope in rule.scopes:
            by_login.setdefault(rule.login.lower(), []).append(rule)
    return all(any(contains(rule, address) for rule in group) for group in by_login.values())
