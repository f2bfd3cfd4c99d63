# -*- test-case-name: tests.admin.test_domains -*-
"""Sender domains as an administrator adds them: a DKIM key per domain, and its DNS record.

C{jangomail-admin domain add ACCOUNT DOMAIN [--selector S]} validates the
domain (internationalised names are stored in A-label form, lower-cased, since
DKIM's C{d=} and DNS both use it), picks a selector, generates a key and stores
it; the answer is the TXT record to publish before the server signs with the
key. A domain belongs to one account. Re-adding a domain makes a new key under
a new selector, so mail signed with the old key still verifies while the DNS
changes. Private keys never appear in an answer or a log event.
"""
from __future__ import annotations

import datetime
import re
from typing import Any, Callable, Sequence

import idna
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..errors import InputError
from ..interfaces import IStore
from ..model import DomainKey
from ..pipeline.dkim import dns_record, split_txt

__all__ = ["DomainAdmin", "parse_domain", "parse_selector", "render_domain", "render_domains"]

log = Logger()

JSONDict = dict[str, Any]

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_SELECTOR_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
_MAX_DOMAIN = 253
_MAX_SELECTOR = 63


def parse_domain(text: str) -> str:
    """A sender domain in the form keys are stored and signed with: A-labels, lower case.

    C{Bücher.Example} becomes C{xn--bcher-kva.example}; a final dot is dropped.

    @raise InputError: not a domain name of at least two labels, or a
        top-level label that is all digits (an IP address).
    """
    cleaned = text.strip().rstrip(".").lower()
    try:
        domain = idna.encode(cleaned, uts46=True).decode("ascii") if cleaned else ""
    except (idna.IDNAError, UnicodeError):
        domain = ""
    labels = domain.split(".")
    if (not domain or len(domain) > _MAX_DOMAIN or len(labels) < 2
            or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit()):
        raise InputError(f"invalid domain {text!r}: write a domain name such as example.com")
    return domain


def parse_selector(text: str) -> str:
    """A DKIM selector (RFC 6376 3.1): one or more dot-separated DNS labels, lower-cased.

    @raise InputError: anything else, or longer than 63 characters.
    """
    selector = text.strip().lower()
    if (not selector or len(selector) > _MAX_SELECTOR
            or not all(_SELECTOR_LABEL.match(label) for label in selector.split("."))):
        raise InputError(f"invalid selector {text!r}: use letters, digits and '-', such as jt202406")
    return selector


def _month(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y%m")


def _timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _answer(key: DomainKey) -> JSONDict:
    name, value = dns_record(key)
    return {
        "account": key.account,
        "domain": key.domain,
        "selector": key.selector,
        "created": _timestamp(key.created),
        "dkim_name": name,
        "dkim_txt": split_txt(value),
    }


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_domain(answer: JSONDict) -> str:
    """The answer as a zone-file comment and a record line, ready to paste into the zone."""
    return (f"; DKIM key of {answer['domain']} (account {answer['account']}, selector {answer['selector']})\n"
            f"{answer['dkim_name']}. IN TXT {' '.join(_quoted(text) for text in answer['dkim_txt'])}")


def render_domains(answers: Sequence[JSONDict]) -> str:
    """C{domain list}: every domain's record, or a sentence when there are none."""
    return "\n".join(render_domain(answer) for answer in answers) if answers else "no domains"


@frozen
class DomainAdmin:
    """Administer sender domains and their DKIM keys in C{store}.

    @ivar make_key: makes a new PEM RSA private key; generating a 2048-bit key
        takes a noticeable fraction of a second, so a server or the CLI passes
        one that runs L{jangotw.pipeline.dkim.new_rsa_key} in a thread pool.
    @ivar clock: stamps keys and dates the default selector (UTC month).
    """

    store: IStore
    make_key: Callable[[], "Deferred[str]"]
    clock: IReactorTime

    def add_domain(self, account: str, domain: str, selector: str | None = None) -> "Deferred[JSONDict]":
        """Give C{account} a new key for C{domain}; fires with the record to publish.

        Without C{selector} it is C{jt<YYYYMM>}, with a letter appended when the
        domain's current key already uses that. Fails with InputError for an
        unknown account, an invalid domain or selector, a domain of another
        account, or a selector the domain already uses.
        """
        return Deferred.fromCoroutine(self._add_domain(account, domain, selector))

    async def _add_domain(self, account: str, domain: str, selector: str | None) -> JSONDict:
        name = await self._account(account)
        ascii_domain = parse_domain(domain)
        chosen = None if selector is None else parse_selector(selector)
        current: DomainKey | None = await self.store.domain_key(ascii_domain)
        if current is not None and current.account.lower() != name.lower():
            raise InputError(f"domain {ascii_domain} belongs to another account")
        if chosen is None:
            chosen = self._default_selector(current)
        if current is not None and current.selector == chosen:
            raise InputError(f"{ascii_domain} already uses selector {chosen}; choose another, so mail "
                             "signed with the current key still verifies while DNS changes")
        pem = await self.make_key()
        stored = await self.store.add_domain(
            DomainKey(account=name, domain=ascii_domain, selector=chosen, private_key=pem,
                      created=self.clock.seconds()))
        log.info("added DKIM key {selector} for {domain} of account {account}",
                 selector=stored.selector, domain=stored.domain, account=stored.account)
        return _answer(stored)

    def list_domains(self, account: str) -> "Deferred[list[JSONDict]]":
        """Every domain of C{account} with its current key's record, by domain."""
        return Deferred.fromCoroutine(self._list_domains(account))

    async def _list_domains(self, account: str) -> list[JSONDict]:
        keys: list[DomainKey] = await self.store.list_domains(await self._account(account))
        return [_answer(key) for key in keys]

    async def _account(self, name: str) -> str:
        found = await self.store.get_account(name)
        if found is None:
            raise InputError(f"no account named {name!r}")
        return str(found.name)

    def _default_selector(self, current: DomainKey | None) -> str:
        base = f"jt{_month(self.clock.seconds())}"
        if current is None or not current.selector.startswith(base):
            return base
        suffix = current.selector[len(base):]
        if suffix == "":
            return base + "b"
        if len(suffix) == 1 and "b" <= suffix < "z":
            return base + chr(ord(suffix) + 1)
        return f"{base}-{int(self.clock.seconds())}"
