# -*- test-case-name: tests.admin.test_domaincheck -*-
"""C{domain check}: look a sender domain's records up and say, for each, what is right and what to change.

Every lookup goes through twisted.names with the configured resolvers. Each
record is C{ok}, C{missing}, C{wrong} or C{unchecked} (the DNS did not
answer), with what was found and the exact fix:

  - SPF: one C{v=spf1} record that passes (RFC 7208 check_host) for each of
    the server's C{sending_addresses}, or includes its C{spf_include}, and
    needs at most 10 DNS-querying terms when nothing matches (4.6.4).
  - DKIM: each key's C{<selector>._domainkey} record publishes exactly the
    public half of the stored private key.
  - DMARC: a valid record at C{_dmarc.<domain>}, or at the organisational
    domain's (whose C{sp=} then applies); C{p=none} and a missing C{rua=}
    get advice, and alignment is explained.
  - tracking and return-path CNAMEs (optional: they do not decide
    verification).

The domain is verified when SPF, every DKIM key and DMARC are C{ok}.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from attrs import frozen
from dkim.util import InvalidTagValueList, parse_tag_value  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred

from ..model import DomainKey
from ..pipeline.dkim import public_key_bytes
from ..senders.dmarc import DMARCPolicies, DMARCRecord
from ..senders.dns import LookupFailed, Lookups
from ..senders.spf import MAX_LOOKUPS, SPFChecker, SPFResult
from .domainrecords import DMARC_ADVICE, DNSRecord, SenderSettings, records_for, spf_terms, with_terms, zone_line

__all__ = ["Finding", "DomainChecker", "OK", "MISSING", "WRONG", "UNCHECKED"]

OK, MISSING, WRONG, UNCHECKED = "ok", "missing", "wrong", "unchecked"


@frozen
class Finding:
    """One record's state: C{found} is what the DNS has, C{fix} the exact change ("" when ok)."""

    kind: str
    name: str
    type: str
    status: str
    found: str = ""
    fix: str = ""
    notes: tuple[str, ...] = ()
    selector: str = ""
    required: bool = True


def _publish(record: DNSRecord) -> str:
    return f"publish: {zone_line(record)}"


def _alignment(domain: str, organisation: str, record: DMARCRecord) -> str:
    def mode(what: str, tag: str, value: str) -> str:
        if value == "s":
            return f"{what} must be {domain} itself ({tag}=s, strict)"
        return f"{what} may be any domain under {organisation} ({tag}=r, relaxed)"
    return (f"alignment: {mode('DKIM d=', 'adkim', record.adkim)}; "
            f"{mode('the MAIL FROM domain', 'aspf', record.aspf)}")


@frozen
class DomainChecker:
    """Checks a domain's published records against what this server needs."""

    lookups: Lookups
    spf: SPFChecker
    policies: DMARCPolicies
    settings: SenderSettings

    def check(self, domain: str, keys: Sequence[DomainKey], tracking_domain: str = "") -> "Deferred[list[Finding]]":
        """Look up every record C{domain} should publish for its keys that are not retired; never fails."""
        return Deferred.fromCoroutine(self._check(domain, [key for key in keys if key.retired_at is None],
                                                  tracking_domain))

    async def _check(self, domain: str, keys: list[DomainKey], tracking_domain: str) -> list[Finding]:
        organisation = self.policies.organisations.domain(domain)
        expected = {(record.kind, record.selector): record
                    for record in records_for(domain, keys, self.settings, tracking_domain, organisation)}
        findings = [await self._spf(domain)]
        findings += [await self._dkim(key, expected["dkim", key.selector]) for key in keys]
        findings.append(await self._dmarc(domain, organisation, expected["dmarc", ""]))
        for kind in ("tracking", "return-path"):
            if (kind, "") in expected:
                findings.append(await self._cname(expected[kind, ""]))
        return findings

    async def _spf(self, domain: str) -> Finding:
        def finding(status: str, found: str = "", fix: str = "", notes: Sequence[str] = ()) -> Finding:
            return Finding("spf", domain, "TXT", status, found, fix, tuple(notes))
        terms = spf_terms(self.settings)
        if not terms:
            return finding(UNCHECKED, notes=["set [delivery] spf_include or sending_addresses to check SPF"])
        try:
            texts = [text.decode("ascii", "replace") for text in await self.lookups.txt(domain)]
            count = await self.spf.lookup_count(domain)
        except LookupFailed as error:
            return finding(UNCHECKED, notes=[f"the DNS did not answer ({error}); try again"])
        published = [text for text in texts if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")]
        wanted = " ".join(["v=spf1", *terms, "~all"])
        if not published:
            return finding(MISSING, fix=f'publish: {domain}. IN TXT "{wanted}"')
        if len(published) > 1:
            others = [term for text in published[1:] for term in text.split()[1:]
                      if term.lower().lstrip("+-~?") != "all" and not term.lower().startswith("redirect=")]
            merged = with_terms(published[0], others + terms)
            return finding(WRONG, " | ".join(published),
                           f'receivers see {len(published)} SPF records as an error (permerror): replace them by '
                           f'one: {domain}. IN TXT "{merged}"')
        record = published[0]
        problems: list[str] = []
        notes = [f"needs {count.lookups} of the {MAX_LOOKUPS} DNS lookups allowed when nothing matches"
                 ] if count.lookups <= MAX_LOOKUPS else []
        notes += [f"not counted: {what}" for what in count.uncounted]
        for address in self.settings.sending_addresses:
            outcome = await self.spf.check_host(address, domain, f"postmaster@{domain}")
            if outcome.result is SPFResult.TEMPERROR:
                return finding(UNCHECKED, record, notes=[f"the DNS did not answer ({outcome.reason}); try again"])
            if outcome.result is not SPFResult.PASS:
                problems.append(f"{address}: {outcome.result.value}" + (f" ({outcome.reason})" if outcome.reason
                                                                          else ""))
            else:
                notes.append(f"passes for {address} ({outcome.mechanism}, {outcome.lookups} DNS lookups)")
        if not self.settings.sending_addresses and not any(
                part.lower().lstrip("+") in (terms[0].lower(), f"redirect={self.settings.spf_include}")
                for part in record.split()):
            problems.append(f"it does not include {self.settings.spf_include}")
        fixes = []
        if problems:
            fixes.append(f'allow this server: {domain}. IN TXT "{with_terms(record, terms)}"')
        if count.lookups > MAX_LOOKUPS:
            problems.append(f"it needs {count.lookups} DNS lookups; receivers give up (permerror) after "
                            f"{MAX_LOOKUPS} (RFC 7208 4.6.4)")
            fixes.append("remove include: mechanisms of services that no longer send for the domain, or list "
                         "their addresses as ip4:/ip6: mechanisms instead")
        if record.split()[-1].lower() in ("+all", "all"):
            problems.append("it ends in +all: anybody may send as the domain")
            fixes.append("end it in ~all (or -all)")
        if problems:
            return finding(WRONG, record, "; ".join(fixes), problems + notes)
        return finding(OK, record, notes=notes)

    async def _dkim(self, key: DomainKey, expected: DNSRecord) -> Finding:
        def finding(status: str, found: str = "", fix: str = "", notes: Sequence[str] = ()) -> Finding:
            return Finding("dkim", expected.name, "TXT", status, found, fix, tuple(notes), key.selector)
        try:
            texts = [text.decode("ascii", "replace") for text in await self.lookups.txt(expected.name)]
        except LookupFailed as error:
            return finding(UNCHECKED, notes=[f"the DNS did not answer ({error}); try again"])
        if not texts:
            return finding(MISSING, fix=_publish(expected))
        if len(texts) > 1:
            return finding(WRONG, " | ".join(texts), "keep one TXT record there: " + zone_line(expected),
                           [f"{len(texts)} TXT records: verifiers read only one"])
        found = texts[0]
        try:
            tags = parse_tag_value(found.encode("ascii", "replace"))
            published = base64.b64decode(b"".join(tags.get(b"p", b"").split()), validate=True)
        except (InvalidTagValueList, binascii.Error, ValueError):
            return finding(WRONG, found, "replace it: " + zone_line(expected), ["it is not a DKIM key record"])
        algorithm = tags.get(b"k", b"rsa").decode("ascii", "replace")
        notes = ["testing mode (t=y): receivers may treat failures as unsigned"] if b"y" in tags.get(
            b"t", b"").split(b":") else []
        if not published:
            return finding(WRONG, found, "replace it: " + zone_line(expected), ["the key is revoked (empty p=)"])
        if algorithm != key.algorithm or published != public_key_bytes(key):
            return finding(WRONG, found, "replace it: " + zone_line(expected),
                           [f"it publishes another key than the {key.algorithm} key stored for selector "
                            f"{key.selector}: mail signed with it would fail"])
        return finding(OK, found, notes=notes)

    async def _dmarc(self, domain: str, organisation: str, expected: DNSRecord) -> Finding:
        def finding(status: str, name: str, found: str = "", fix: str = "", notes: Sequence[str] = ()) -> Finding:
            return Finding("dmarc", name, "TXT", status, found, fix, tuple(notes))
        try:
            policy = await self.policies.discover(domain)
        except LookupFailed as error:
            return finding(UNCHECKED, expected.name, notes=[f"the DNS did not answer ({error}); try again"])
        if policy.problem:
            return finding(WRONG, policy.name, policy.text, "replace it: " + zone_line(expected), [policy.problem])
        record = policy.record
        if record is None:
            notes = [f"neither _dmarc.{domain} nor _dmarc.{organisation} has a record"] if organisation != domain \
                else []
            return finding(MISSING, expected.name, fix=_publish(expected), notes=notes + [f"DMARC: {DMARC_ADVICE}"])
        notes = []
        if policy.organisational:
            given = f"sp={record.subdomain_policy}" if record.subdomain_policy_given else \
                f"p={record.policy} (it has no sp=, so its p= applies)"
            notes.append(f"{domain} has no DMARC record of its own: {organisation}'s record covers it with "
                         f"{given}; publish _dmarc.{domain} to give it its own policy")
        notes.append(_alignment(domain, organisation, record))
        applied = policy.applied_policy
        if applied == "none":
            notes.append(f"policy none only reports: {DMARC_ADVICE}")
        elif applied == "quarantine":
            notes.append("policy quarantine: once the reports stay clean, move to p=reject")
        if record.pct < 100:
            notes.append(f"pct={record.pct}: the policy applies to only {record.pct}% of failing mail")
        if not record.rua:
            notes.append("no rua=: nobody receives aggregate reports; add rua=mailto:<a mailbox that reads them>")
        return finding(OK, policy.name, record.text, notes=notes)

    async def _cname(self, expected: DNSRecord) -> Finding:
        def finding(status: str, found: str = "", fix: str = "", notes: Sequence[str] = ()) -> Finding:
            return Finding(expected.kind, expected.name, "CNAME", status, found, fix, (*notes, expected.note),
                           required=False)
        try:
            target = await self.lookups.cname(expected.name)
        except LookupFailed as error:
            return finding(UNCHECKED, notes=[f"the DNS did not answer ({error}); try again"])
        if target is None:
            return finding(MISSING, fix=_publish(expected))
        if target != expected.value:
            return finding(WRONG, target, "replace it: " + zone_line(expected))
        return finding(OK, target)
