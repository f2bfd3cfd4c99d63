# -*- test-case-name: tests.admin.test_accounts -*-
"""Account administration: every rule and check behind C{jangomail-admin} and the JSON API.

Callers hand over the administrator's raw text; this layer validates it
(account names, password strength, networks, From addresses), changes the
store, and answers with plain JSON-able dicts and lists, so the command line
and the web API only parse arguments and format answers. Bad input fails with
L{InputError} carrying one sentence meant for the administrator. Passwords and
hashes never appear in an answer or a log event.
"""
from __future__ import annotations

import datetime
import ipaddress
import re
from functools import wraps
from typing import Any, Callable, Coroutine, ParamSpec, Sequence, TypeVar

import attrs
from attrs import frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from ..auth.passwords import check_strength
from ..errors import InputError
from ..interfaces import IStore
from ..model import Account, parse_setting

__all__ = [
    "AccountAdmin",
    "check_account_name",
    "parse_network",
    "parse_from_address",
    "MAX_NAME_LENGTH",
]

log = Logger()

MAX_NAME_LENGTH = 64
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}\Z")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

_P = ParamSpec("_P")
_T = TypeVar("_T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
JSONDict = dict[str, Any]


def _deferred(method: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, "Deferred[_T]"]:
    """Run an C{async def} method as a Deferred-returning one."""
    @wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> "Deferred[_T]":
        return Deferred.fromCoroutine(method(*args, **kwargs))
    return wrapper


# -- parsing administrator input (pure) ---------------------------------------------------

def check_account_name(name: str) -> str:
    """Return C{name} if it may name a new account.

    @raise InputError: it is not 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit.
    """
    if not _NAME.match(name):
        raise InputError(f"invalid account name {name!r}: use 1 to {MAX_NAME_LENGTH} letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit")
    return name


def parse_network(text: str) -> Network:
    """A single address or CIDR range; IPv4-mapped IPv6 ranges become IPv4.

    Strict: C{10.0.0.1/8} is refused, naming the network C{10.0.0.0/8}, since a
    typo there would silently authorise a different range than the one meant.

    @raise InputError: not an address or range, host bits set, or an IPv6 zone.
    """
    cleaned = text.strip()
    try:
        network = ipaddress.ip_network(cleaned)
    except ValueError:
        try:
            loose = ipaddress.ip_network(cleaned, strict=False)
        except ValueError:
            raise InputError(f"invalid address or CIDR range: {text!r}") from None
        address = cleaned.partition("/")[0]
        raise InputError(f"{cleaned} has host bits set: the network is {loose}, "
                         f"and the single address is {address}") from None
    if isinstance(network, ipaddress.IPv6Network):
        if network.network_address.scope_id:
            raise InputError(f"invalid address or CIDR range: {text!r} (zone indexes are not allowed)")
        if network.prefixlen >= 96 and network.subnet_of(_MAPPED):
            mapped = network.network_address.ipv4_mapped
            assert mapped is not None
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def parse_from_address(text: str, what: str = "From address") -> str:
    """An address C{user@example.com}, or C{@example.com} for the whole domain (authorised From
    addresses, suppression list entries).

    @return: the address with its domain lower-cased.
    @raise InputError: anything else.
    """
    cleaned = text.strip()
    local, at, domain = cleaned.rpartition("@")
    labels = domain.split(".")
    valid = (
        bool(at)
        and (not local or (len(local) <= 64 and _LOCAL_PART.match(local) is not None))
        and len(domain) <= 253
        and len(labels) >= 2
        and all(_LABEL.match(label) for label in labels)
    )
    if not valid:
        raise InputError(f"invalid {what} {text!r}: write user@example.com, "
                         "or @example.com for every address at a domain")
    return f"{local}@{domain.lower()}"


# -- answers -------------------------------------------------------------------------------

def _timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _summary(account: Account) -> JSONDict:
    return {
        "name": account.name,
        "disabled": account.disabled,
        "has_password": account.password_hash is not None,
        "created": _timestamp(account.created),
    }


def _check_strength_now(password: str, user_inputs: Sequence[str]) -> "Deferred[None]":
    return maybeDeferred(check_strength, password, user_inputs)


# -- the service ---------------------------------------------------------------------------

@frozen
class AccountAdmin:
    """Administer accounts in C{store}.

    @ivar hash_password: hashes a new password away from the reactor thread.
    @ivar check_password: refuses weak passwords (fails with InputError); zxcvbn
        is CPU-bound, so a server passes one that runs in its C{cpu} pool.
    """

    store: IStore
    hash_password: Callable[[str], "Deferred[str]"]
    check_password: Callable[[str, Sequence[str]], "Deferred[None]"] = _check_strength_now

    async def _account(self, name: str) -> Account:
        account: Account | None = await self.store.get_account(name)
        if account is None:
            raise InputError(f"no account named {name!r}")
        return account

    async def _hash(self, name: str, password: str) -> str:
        await self.check_password(password, [name])
        return await self.hash_password(password)

    # accounts

    @_deferred
    async def add_account(self, name: str, password: str | None) -> JSONDict:
        """Create an account; with no password it authenticates only by IP or From address."""
        check_account_name(name)
        existing = await self.store.get_account(name)
        if existing is not None:
            raise InputError(f"an account named {existing.name!r} already exists")
        password_hash = None if password is None else await self._hash(name, password)
        account = await self.store.add_account(name, password_hash)
        log.info("added account {account}", account=account.name)
        return _summary(account)

    @_deferred
    async def list_accounts(self) -> list[JSONDict]:
        return [_summary(account) for account in await self.store.list_accounts()]

    @_deferred
    async def show_account(self, name: str) -> JSONDict:
        """The account with its settings, networks and From addresses."""
        account = await self._account(name)
        return {
            **_summary(account),
            "settings": attrs.asdict(account.settings),
            "ips": await self.store.list_ips(account.name),
            "from": await self.store.list_from(account.name),
        }

    @_deferred
    async def disable(self, name: str) -> JSONDict:
        """Disable an account: it can no longer log in, and no network or From address authorises it."""
        account = await self.store.set_disabled((await self._account(name)).name, True)
        log.info("disabled account {account}", account=account.name)
        return _summary(account)

    @_deferred
    async def enable(self, name: str) -> JSONDict:
        account = await self.store.set_disabled((await self._account(name)).name, False)
        log.info("enabled account {account}", account=account.name)
        return _summary(account)

    @_deferred
    async def set_password(self, name: str, password: str) -> JSONDict:
        account = await self._account(name)
        await self.store.set_password_hash(account.name, await self._hash(account.name, password))
        log.info("changed the password of account {account}", account=account.name)
        return _summary(await self._account(account.name))

    @_deferred
    async def set_setting(self, name: str, key: str, text: str) -> JSONDict:
        """Parse C{text} for setting C{key} (see L{jangotw.model.AccountSettings}) and store it."""
        account = await self._account(name)
        value = parse_setting(key, text)
        account = await self.store.set_setting(account.name, key, value)
        log.info("set {setting} of account {account}", setting=key, account=account.name)
        return {"account": account.name, "setting": key, "value": getattr(account.settings, key)}

    # networks

    @_deferred
    async def add_ip(self, account: str, text: str) -> JSONDict:
        network = parse_network(text)
        name = (await self._account(account)).name
        await self.store.add_ip(name, network)
        log.info("authorised {network} for account {account}", network=str(network), account=name)
        return {"account": name, "network": str(network)}

    @_deferred
    async def remove_ip(self, account: str, text: str) -> JSONDict:
        network = parse_network(text)
        name = (await self._account(account)).name
        if not await self.store.remove_ip(name, network):
            raise InputError(f"account {name!r} has no authorised network {network}")
        log.info("removed {network} from account {account}", network=str(network), account=name)
        return {"account": name, "network": str(network)}

    @_deferred
    async def list_ips(self, account: str) -> list[str]:
        networks: list[str] = await self.store.list_ips((await self._account(account)).name)
        return networks

    # From addresses

    @_deferred
    async def add_from(self, account: str, text: str) -> JSONDict:
        address = parse_from_address(text)
        name = (await self._account(account)).name
        await self.store.add_from(name, address)
        log.info("authorised From {address} for account {account}", address=address, account=name)
        return {"account": name, "address": address}

    @_deferred
    async def remove_from(self, account: str, text: str) -> JSONDict:
        address = parse_from_address(text)
        name = (await self._account(account)).name
        if not await self.store.remove_from(name, address):
            raise InputError(f"account {name!r} has no authorised From address {address}")
        log.info("removed From {address} from account {account}", address=address, account=name)
        return {"account": name, "address": address}

    @_deferred
    async def list_from(self, account: str) -> list[str]:
        addresses: list[str] = await self.store.list_from((await self._account(account)).name)
        return addresses
