# -*- test-case-name: tests.auth.test_checkers -*-
"""Credential types for the relay portal: user name and secret, client address, From address.

L{Secret} keeps passwords and tokens out of logs and reprs until a checker
needs them.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from attrs import field, frozen
from zope.interface import implementer

from ..interfaces import IClientAddress, IFromAddress, ISecretLogin

__all__ = ["Secret", "SecretLogin", "ClientAddress", "FromAddress"]


@frozen(repr=False)
class Secret:
    """A password or token: its repr and str never show the value."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


@implementer(ISecretLogin)
@frozen
class SecretLogin:
    """SMTP AUTH: the user name, the password or API token, and the client it came from."""

    username: str
    secret: Secret
    address: IPv4Address | IPv6Address


@implementer(IClientAddress)
@frozen
class ClientAddress:
    """The connecting client's IP address, and the account an X-SMTPUsername header names."""

    address: IPv4Address | IPv6Address
    username: str | None = None


@implementer(IFromAddress)
@frozen
class FromAddress:
    """A From address; C{within} limits the accounts that may claim it (those that
    authorised the envelope sender)."""

    address: str = field(converter=lambda text: text.strip())
    username: str | None = None
    within: frozenset[str] | None = None
