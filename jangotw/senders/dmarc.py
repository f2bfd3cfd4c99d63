# -*- test-case-name: tests.senders.test_dmarc -*-
"""DMARC (RFC 7489): policy records, their discovery, the organisational domain and alignment.

The organisational domain is the registrable domain by the Public Suffix List
(the C{publicsuffixlist} package's copy, never a hand-written list): mail
from C{news.example.com} is covered by C{_dmarc.example.com} when it has no
record of its own, under that record's C{sp=} policy (section 6.6.3), and a
DKIM C{d=example.com} or MAIL FROM domain C{bounce.example.com} aligns with
From C{news.example.com} in relaxed mode (3.1), the default; strict mode needs
the same domain.
"""
from __future__ import annotations

import re

from attrs import frozen
from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import Deferred

from .dns import Lookups

__all__ = ["DMARCRecord", "FoundPolicy", "Organisations", "DMARCPolicies", "parse_dmarc", "POLICIES"]

POLICIES = ("none", "quarantine", "reject")
_VERSION = re.compile(r"v\s*=\s*DMARC1\s*(?:;|\Z)")


@frozen
class DMARCRecord:
    """A parsed DMARC record (section 6.3); tags it does not know are ignored."""

    policy: str  # p=
    subdomain_policy: str  # sp=, else p=
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    text: str = ""
    subdomain_policy_given: bool = False


def _uris(value: str) -> tuple[str, ...]:
    uris = tuple(uri.strip() for uri in value.split(",") if uri.strip())
    for uri in uris:
        if ":" not in uri:
            raise ValueError(f"report address {uri!r} is not a URI (write mailto:reports@example.com)")
    return uris


def parse_dmarc(text: str) -> DMARCRecord:
    """Parse a record that starts with C{v=DMARC1}.

    @raise ValueError: saying what is wrong (not DMARC1 first, a bad p=,
        sp=, adkim=, aspf= or pct= value, or no p= and no rua=).
    """
    if not _VERSION.match(text):
        raise ValueError('a DMARC record starts with "v=DMARC1;"')
    tags: dict[str, str] = {}
    for part in text.split(";")[1:]:
        name, equals, value = part.partition("=")
        if equals:
            tags.setdefault(name.strip().lower(), value.strip())
        elif part.strip():
            raise ValueError(f"{part.strip()!r} is not a tag=value pair")
    rua = _uris(tags.get("rua", ""))
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        if "p" in tags or not rua:  # 6.6.3: without p=, a record with rua= is read as p=none
            raise ValueError(f"p= must be none, quarantine or reject, not {tags.get('p', '(missing)')!r}")
        policy = "none"
    subdomain = tags.get("sp", policy).lower()
    if subdomain not in POLICIES:
        raise ValueError(f"sp= must be none, quarantine or reject, not {tags['sp']!r}")
    modes = {}
    for name in ("adkim", "aspf"):
        modes[name] = tags.get(name, "r").lower()
        if modes[name] not in ("r", "s"):
            raise ValueError(f"{name}= must be r (relaxed) or s (strict), not {tags[name]!r}")
    pct = tags.get("pct", "100")
    if not pct.isdigit() or int(pct) > 100:
        raise ValueError(f"pct= must be a number from 0 to 100, not {pct!r}")
    return DMARCRecord(policy, subdomain, modes["adkim"], modes["aspf"], int(pct), rua,
                       _uris(tags.get("ruf", "")), text.strip(), "sp" in tags)


@frozen
class Organisations:
    """Organisational domains by the Public Suffix List (load it once: parsing it takes ~30 ms)."""

    psl: PublicSuffixList

    def domain(self, name: str) -> str:
        """The organisational domain of C{name} (itself when it is one, or a public suffix)."""
        lower = name.lower().rstrip(".")
        found: str | None = self.psl.privatesuffix(lower)
        return found or lower

    def aligned(self, identifier: str, from_domain: str, mode: str = "r") -> bool:
        """Whether an authenticated domain (DKIM d=, SPF's MAIL FROM domain) aligns with the From domain."""
        one, other = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
        if mode == "s":
            return one == other
        return self.domain(one) == self.domain(other)


@frozen
class FoundPolicy:
    """The DMARC record that applies to a From domain, and where it was found.

    @ivar name: the name queried last (C{_dmarc.<domain>} or C{_dmarc.<organisational domain>}).
    @ivar organisational: the record is the organisational domain's (its C{sp=} applies to a subdomain).
    @ivar problem: why a published record could not be used ("" when none was found, or it was fine).
    """

    record: DMARCRecord | None
    name: str
    organisational: bool = False
    problem: str = ""
    text: str = ""  # the unusable record's text, with problem

    @property
    def applied_policy(self) -> str:
        """The policy for mail from the domain: p=, or sp= when inherited by a subdomain; "" without one."""
        if self.record is None:
            return ""
        return self.record.subdomain_policy if self.organisational else self.record.policy


@frozen
class DMARCPolicies:
    """Finds the DMARC record for a From domain (section 6.6.3)."""

    lookups: Lookups
    organisations: Organisations

    def discover(self, from_domain: str) -> "Deferred[FoundPolicy]":
        """Fires with the domain's own record, else its organisational domain's, else neither.

        Fails with L{jangotw.senders.dns.LookupFailed} when the DNS gave no answer.
        """
        return Deferred.fromCoroutine(self._discover(from_domain.lower().rstrip(".")))

    async def _discover(self, domain: str) -> FoundPolicy:
        found = await self._at(domain, organisational=False)
        organisation = self.organisations.domain(domain)
        if found.record is None and not found.problem and organisation != domain:
            return await self._at(organisation, organisational=True)
        return found

    async def _at(self, domain: str, organisational: bool) -> FoundPolicy:
        name = f"_dmarc.{domain}"
        texts = [text.decode("utf-8", "replace") for text in await self.lookups.txt(name)]
        records = [text for text in texts if _VERSION.match(text)]
        if not records:
            return FoundPolicy(None, name, organisational)
        if len(records) > 1:
            return FoundPolicy(None, name, organisational, f"{name} has {len(records)} DMARC records; "
                               "receivers ignore them all", records[0])
        try:
            return FoundPolicy(parse_dmarc(records[0]), name, organisational)
        except ValueError as error:
            return FoundPolicy(None, name, organisational, str(error), records[0])
