# -*- test-case-name: tests.senders.test_spf -*-
"""The SPF check_host() function (RFC 7208) on twisted.names, with its DNS limits.

No maintained SPF library runs on twisted.names (pyspf and checkdmarc block
on dnspython), so this is a small evaluator of the whole record syntax:
mechanisms C{all}, C{include}, C{a}, C{mx}, C{ptr}, C{ip4}, C{ip6},
C{exists} with their qualifiers, the C{redirect} modifier (C{exp} and
unknown modifiers are parsed and ignored: no explanation is ever shown), and
macros (section 7; C{%{p}} expands to C{unknown}, as 7.3 allows).

Limits (section 4.6.4): the terms that query DNS (C{include}, C{a}, C{mx},
C{ptr}, C{exists}, C{redirect}) may number at most C{max_lookups} (10) in
one evaluation, C{include}d records counted; queries answering NXDOMAIN or no
records ("void lookups") at most C{max_void_lookups} (2); an C{mx} may name
at most 10 exchangers. Passing a limit is a C{permerror}. L{SPFChecker.lookup_count}
counts the terms a record needs in the worst case (no mechanism matching),
which is what an administrator must keep under the limit.
"""
from __future__ import annotations

import enum
import re
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import TypeVar
from urllib.parse import quote

from attrs import define, frozen
from twisted.internet.defer import Deferred

from .dns import LookupFailed, Lookups, valid_name

__all__ = ["SPFResult", "SPFOutcome", "LookupCount", "SPFChecker", "MAX_LOOKUPS", "MAX_VOID_LOOKUPS"]

_T = TypeVar("_T")

MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
_MAX_MX = 10  # exchangers an mx mechanism may name (4.6.4)
_MAX_PTR = 10  # PTR names checked (4.6.4: the rest are ignored)


class SPFResult(str, enum.Enum):
    """The results of section 2.6."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"


_QUALIFIERS = {"+": SPFResult.PASS, "-": SPFResult.FAIL, "~": SPFResult.SOFTFAIL, "?": SPFResult.NEUTRAL}


@frozen
class SPFOutcome:
    """What check_host() concluded, and what it cost.

    @ivar domain: the domain whose record was evaluated first.
    @ivar record: that record's text ("" when it has none).
    @ivar mechanism: the mechanism that matched (C{-all}, C{include:_spf.example.net}), if one did.
    @ivar reason: why the result is none, permerror or temperror, for an administrator.
    @ivar lookups: DNS-querying terms evaluated (the limit is L{MAX_LOOKUPS}).
    """

    result: SPFResult
    domain: str
    record: str = ""
    mechanism: str = ""
    reason: str = ""
    lookups: int = 0
    void_lookups: int = 0


@frozen
class LookupCount:
    """The DNS-querying terms a record needs when nothing matches, included records counted.

    @ivar uncounted: include or redirect targets that could not be followed
        (a macro, no record, a loop, a failed lookup), named with why.
    """

    lookups: int
    uncounted: tuple[str, ...] = ()


class _PermError(Exception):
    """The record (or one it includes) is wrong: permerror."""


class _TempError(Exception):
    """A lookup failed: temperror."""


@frozen
class _Term:
    qualifier: str  # "" for a modifier
    name: str  # lower-case mechanism or modifier name
    argument: str  # after ":" or "=" (mechanisms: "" when absent)
    cidr4: int = 32
    cidr6: int = 128
    text: str = ""  # as written, for reports

    @property
    def queries_dns(self) -> bool:
        return self.name in ("include", "a", "mx", "ptr", "exists", "redirect")


@define
class _Context:
    """One check_host() evaluation: the inputs macros expand, and the limits' counters."""

    ip: IPv4Address | IPv6Address
    sender: str
    helo: str
    max_lookups: int
    max_voids: int
    lookups: int = 0
    voids: int = 0

    def count(self, term: _Term) -> None:
        self.lookups += 1
        if self.lookups > self.max_lookups:
            raise _PermError(f"more than {self.max_lookups} DNS lookups (RFC 7208 4.6.4) at {term.text}")

    def void(self, term: _Term) -> None:
        self.voids += 1
        if self.voids > self.max_voids:
            raise _PermError(f"more than {self.max_voids} lookups found nothing (void lookups) at {term.text}")


_MECHANISM = re.compile(r"([+\-~?]?)(all|include|a|mx|ptr|ip4|ip6|exists)(?=$|[:/])(.*)\Z", re.IGNORECASE)
_MODIFIER = re.compile(r"([a-z][a-z0-9_.\-]*)=(.*)\Z", re.IGNORECASE)
_CIDR = re.compile(r"(.*?)(?:/(\d+))?(?://(\d+))?\Z", re.DOTALL)
_MACRO = re.compile(r"%(?:\{([a-z])(\d*)(r?)([.\-+,/_=]*)\}|(.))", re.IGNORECASE)
_MACRO_LITERAL = re.compile(r"[\x21-\x24\x26-\x7e]*\Z")
_TOPLABEL = re.compile(r"(?=.*[a-z])[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?\Z", re.IGNORECASE)
_DOMAIN_LETTERS = frozenset("slodiphv")  # c, r and t belong to explanations only


def _domain_spec(text: str, term: str) -> str:
    """Check a domain-spec's syntax (section 7.1): macros, literals, and a top label or macro at the end."""
    literal = _MACRO.sub("", text)
    for found in _MACRO.finditer(text):
        letter, escape = found.group(1), found.group(5)
        if escape is not None and escape not in "%_-":
            raise _PermError(f"bad macro %{escape} in {term}")
        if letter is not None and letter.lower() not in _DOMAIN_LETTERS:
            raise _PermError(f"macro %{{{letter}}} is not allowed in {term}")
        if found.group(2) == "0":
            raise _PermError(f"a macro may not keep 0 labels ({term})")
    if not text or not _MACRO_LITERAL.match(literal) or "%" in literal:
        raise _PermError(f"bad domain in {term}")
    if not text.endswith("}"):
        labels = text.rstrip(".").split(".")
        if len(labels) < 2 or not _TOPLABEL.match(labels[-1]):
            raise _PermError(f"bad domain in {term}: it must end in a top-level label")
    return text


def _cidr(value: str | None, maximum: int, term: str) -> int:
    if value is None:
        return maximum
    if int(value) > maximum or (len(value) > 1 and value.startswith("0")):
        raise _PermError(f"bad prefix length /{value} in {term}")
    return int(value)


def _parse_term(text: str) -> _Term:
    mechanism = _MECHANISM.match(text)
    if mechanism is None:
        modifier = _MODIFIER.match(text)
        if modifier is None:
            raise _PermError(f"unknown mechanism {text!r}")
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            _domain_spec(value, text)
        elif not _MACRO_LITERAL.match(_MACRO.sub("", value)):
            raise _PermError(f"bad modifier {text!r}")
        return _Term("", name, value, text=text)
    qualifier, name, rest = mechanism.group(1) or "+", mechanism.group(2).lower(), mechanism.group(3)
    if name == "all":
        if rest:
            raise _PermError(f"{text!r}: all takes no argument")
        return _Term(qualifier, name, "", text=text)
    if name in ("ip4", "ip6"):
        return _ip_term(qualifier, name, rest, text)
    if name in ("a", "mx"):
        cidr = _CIDR.match(rest)
        assert cidr is not None
        spec, cidr4, cidr6 = cidr.groups()
        if spec and not spec.startswith(":"):
            raise _PermError(f"bad mechanism {text!r}")
        return _Term(qualifier, name, _domain_spec(spec[1:], text) if spec else "",
                     _cidr(cidr4, 32, text), _cidr(cidr6, 128, text), text=text)
    if rest and not rest.startswith(":"):
        raise _PermError(f"bad mechanism {text!r}")
    if name in ("include", "exists") and not rest:
        raise _PermError(f"{text!r}: {name} needs a domain")
    return _Term(qualifier, name, _domain_spec(rest[1:], text) if rest else "", text=text)


def _ip_term(qualifier: str, name: str, rest: str, text: str) -> _Term:
    if not rest.startswith(":"):
        raise _PermError(f"{text!r}: {name} needs an address")
    address, slash, length = rest[1:].partition("/")
    version = 4 if name == "ip4" else 6
    maximum = 32 if version == 4 else 128
    try:
        parsed = ip_address(address)
    except ValueError:
        raise _PermError(f"bad address in {text!r}") from None
    if parsed.version != version:
        raise _PermError(f"{text!r}: not an IPv{version} address")
    if slash and not length.isdigit():
        raise _PermError(f"bad prefix length in {text!r}")
    prefix = _cidr(length if slash else None, maximum, text)
    network = str(ip_network(f"{parsed}/{prefix}", strict=False))
    return _Term(qualifier, name, network, text=text)


def _parse(record: str) -> list[_Term]:
    """Every term of a record; any syntax error anywhere is a permerror (section 4.6)."""
    terms = [_parse_term(text) for text in record.split(" ")[1:] if text]
    for name in ("redirect", "exp"):
        if sum(1 for term in terms if term.name == name and not term.qualifier) > 1:
            raise _PermError(f"more than one {name}= modifier")
    return terms


def _select(domain: str, texts: list[bytes]) -> str | None:
    """The domain's SPF record (section 4.5), or None; two or more are a permerror."""
    records = [text for text in texts if text.lower() == b"v=spf1" or text.lower().startswith(b"v=spf1 ")]
    if not records:
        return None
    if len(records) > 1:
        raise _PermError(f"{domain} publishes {len(records)} SPF records; there must be one")
    try:
        return records[0].decode("ascii")
    except UnicodeDecodeError:
        raise _PermError(f"the SPF record of {domain} is not ASCII") from None


def _client(ip: str) -> IPv4Address | IPv6Address:
    address = ip_address(ip)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # section 5: treated as IPv4
    return address


@frozen
class SPFChecker:
    """Evaluates SPF records found through C{lookups}."""

    lookups: Lookups
    max_lookups: int = MAX_LOOKUPS
    max_void_lookups: int = MAX_VOID_LOOKUPS

    def check_host(self, ip: str, domain: str, sender: str, helo: str = "") -> "Deferred[SPFOutcome]":
        """check_host(C{ip}, C{domain}, C{sender}) of section 4; never fails.

        C{sender} is the MAIL FROM address (C{postmaster@} the HELO name for
        the null sender, as section 2.4 says), C{helo} the HELO name macros
        may name. Fires with the outcome; DNS failures are C{temperror}.
        """
        return Deferred.fromCoroutine(self._check_host(ip, domain, sender, helo))

    async def _check_host(self, ip: str, domain: str, sender: str, helo: str) -> SPFOutcome:
        domain = domain.lower().rstrip(".")
        local, at, _ = sender.rpartition("@")
        context = _Context(_client(ip), sender if local and at else f"postmaster@{sender.lstrip('@')}",
                           helo, self.max_lookups, self.max_void_lookups)
        record = ""
        try:
            record = await self._record(domain) or ""
            if not record:
                result, mechanism, reason = SPFResult.NONE, "", f"{domain} publishes no SPF record"
            else:
                result, mechanism = await self._evaluate(context, domain, record)
                reason = ""
        except _PermError as error:
            result, mechanism, reason = SPFResult.PERMERROR, "", str(error)
        except _TempError as error:
            result, mechanism, reason = SPFResult.TEMPERROR, "", str(error)
        return SPFOutcome(result, domain, record, mechanism, reason, context.lookups, context.voids)

    async def _record(self, domain: str) -> str | None:
        if not valid_name(domain) or "." not in domain:
            return None  # section 4.3: not a multi-label domain name
        try:
            texts = await self.lookups.txt(domain)
        except LookupFailed as error:
            raise _TempError(str(error)) from None
        return _select(domain, texts)

    async def _evaluate(self, context: _Context, domain: str, record: str) -> tuple[SPFResult, str]:
        terms = _parse(record)
        for term in terms:
            if term.qualifier and await self._matches(context, domain, term):
                return _QUALIFIERS[term.qualifier], term.text.lstrip("+")
        redirect = [term for term in terms if term.name == "redirect"]
        if redirect and not any(term.name == "all" for term in terms):
            context.count(redirect[0])
            target = self._expand(context, domain, redirect[0].argument)
            record = await self._record(target) or ""
            if not record:
                raise _PermError(f"redirect={target}: it publishes no SPF record")
            return await self._evaluate(context, target, record)
        return SPFResult.NEUTRAL, ""

    async def _matches(self, context: _Context, domain: str, term: _Term) -> bool:
        if term.name == "all":
            return True
        if term.name in ("ip4", "ip6"):
            return context.ip in ip_network(term.argument)
        context.count(term)
        target = self._expand(context, domain, term.argument) if term.argument else domain
        if term.name == "include":
            return await self._include(context, target, term)
        if term.name == "a":
            return await self._address_matches(context, target, term, void=True)
        if term.name == "mx":
            exchangers = await self._query(self.lookups.mx(target), context, term)
            if len(exchangers) > _MAX_MX:
                raise _PermError(f"{term.text}: {target} has more than {_MAX_MX} MX records")
            for exchanger in exchangers:
                if await self._address_matches(context, exchanger, term, void=False):
                    return True
            return False
        if term.name == "ptr":
            return await self._ptr(context, target, term)
        return bool(await self._query(self.lookups.addresses(target, 4), context, term))  # exists: always A

    async def _include(self, context: _Context, target: str, term: _Term) -> bool:
        record = await self._record(target)
        if record is None:
            raise _PermError(f"{term.text}: {target} publishes no SPF record")
        result, _ = await self._evaluate(context, target, record)
        return result is SPFResult.PASS

    async def _address_matches(self, context: _Context, name: str, term: _Term, void: bool) -> bool:
        version = context.ip.version
        found = await self._query(self.lookups.addresses(name, version), context, term if void else None)
        network = ip_network(f"{context.ip}/{term.cidr4 if version == 4 else term.cidr6}", strict=False)
        return any(address in network for address in found)

    async def _ptr(self, context: _Context, target: str, term: _Term) -> bool:
        names = await self._query(self.lookups.ptr(context.ip), context, term)
        for name in names[:_MAX_PTR]:
            if name != target and not name.endswith("." + target):
                continue
            try:
                if context.ip in await self.lookups.addresses(name, context.ip.version):
                    return True
            except LookupFailed:
                continue  # 5.5: a failed lookup of a name only skips it
        return False

    async def _query(self, query: "Deferred[list[_T]]", context: _Context, term: _Term | None) -> list[_T]:
        try:
            found = await query
        except LookupFailed as error:
            raise _TempError(str(error)) from None
        if not found and term is not None:
            context.void(term)
        return found

    def _expand(self, context: _Context, domain: str, spec: str) -> str:
        """A domain-spec with its macros expanded (section 7.3), shortened to 253 octets."""
        local, _, sender_domain = context.sender.rpartition("@")
        ip = context.ip
        values = {
            "s": context.sender, "l": local, "o": sender_domain, "d": domain, "h": context.helo or "unknown",
            "i": str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", "")),
            "v": "in-addr" if ip.version == 4 else "ip6", "p": "unknown",
        }

        def expand(found: re.Match[str]) -> str:
            if found.group(5) is not None:
                return {"%": "%", "_": " ", "-": "%20"}[found.group(5)]
            letter, keep, reverse, delimiters = found.groups()[:4]
            parts = re.split("[" + re.escape(delimiters or ".") + "]", values[letter.lower()])
            if reverse:
                parts.reverse()
            if keep:
                parts = parts[-int(keep):]
            text = ".".join(parts)
            return quote(text, safe="-._~") if letter.isupper() else text

        expanded = _MACRO.sub(expand, spec).rstrip(".")
        while len(expanded) > 253 and "." in expanded:
            expanded = expanded.partition(".")[2]
        return expanded.lower()

    def lookup_count(self, domain: str) -> "Deferred[LookupCount]":
        """The DNS-querying terms C{domain}'s record needs when no mechanism matches.

        Fails with L{LookupFailed} if the domain's own record cannot be read;
        included records that cannot be followed are named in C{uncounted}.
        """
        return Deferred.fromCoroutine(self._lookup_count(domain.lower().rstrip(".")))

    async def _lookup_count(self, domain: str) -> LookupCount:
        uncounted: list[str] = []
        total = await self._count(domain, (), uncounted)
        return LookupCount(total, tuple(uncounted))

    async def _count(self, domain: str, seen: tuple[str, ...], uncounted: list[str]) -> int:
        try:
            record = await self._record(domain)
            terms = _parse(record) if record else []
        except _PermError as error:
            uncounted.append(f"{domain} ({error})")
            return 0
        except _TempError as error:
            if not seen:
                raise LookupFailed(str(error)) from None
            uncounted.append(f"{domain} ({error})")
            return 0
        if record is None and seen:
            uncounted.append(f"{domain} (no SPF record)")
        followed = [term for term in terms if term.name == "include"]
        if not any(term.name == "all" for term in terms):
            followed += [term for term in terms if term.name == "redirect"]
        total = sum(1 for term in terms if term.queries_dns and term.name != "redirect")
        total += sum(1 for term in followed if term.name == "redirect")
        for term in followed:
            target = term.argument.lower().rstrip(".")
            if "%" in target:
                uncounted.append(f"{term.text} (a macro: depends on the sender)")
            elif target in seen or target == domain:
                uncounted.append(f"{term.text} (a loop)")
            else:
                total += await self._count(target, (*seen, domain), uncounted)
        return total
