# -*- test-case-name: tests.admin.test_domains -*-
"""Sender domains as an administrator manages them: DKIM keys, the records to publish, their check.

C{jangomail-admin domain add ACCOUNT DOMAIN [--selector S] [--ed25519]}
validates the domain (internationalised names are stored in A-label form,
lower-cased, since DKIM's C{d=} and DNS both use it), generates an RSA 2048
key (and an Ed25519 one for a second signature, RFC 8463) and answers with
every record to publish (L{jangotw.admin.domainrecords}). A domain belongs to
one account.

A new key does not sign until C{domain check} finds its record published
(L{jangotw.admin.domaincheck}); the check stores the domain's verdict and
which keys verified. C{domain force-sign DOMAIN SELECTOR} lets a key sign
before that (C{--off} takes it back), for an operator who knows better than
the resolver the server uses. C{domain rotate-key DOMAIN} adds a new key
under a new selector (adding a domain again does the same); old and new stay
published, listed and able to sign until C{domain retire-key DOMAIN
SELECTOR}, so mail signed with the old key still verifies while the DNS
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
from ..model import ED25519, RSA, DomainKey, DomainStatus
from ..pipeline.dkim import dns_record, new_ed25519_key, split_txt
from ..senders.dmarc import Organisations
from .domaincheck import OK, DomainChecker, Finding
from .domainrecords import DNSRecord, SenderSettings, records_for, zone_line

__all__ = ["DomainAdmin", "parse_domain", "parse_selector", "render_domain", "render_domains", "render_check",
           "ED25519_SUFFIX"]

log = Logger()

JSONDict = dict[str, Any]

ED25519_SUFFIX = "-ed"  # the Ed25519 key's selector is the RSA key's with this appended

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

    @raise InputError: anything else, or longer than 63 characters (room is kept for L{ED25519_SUFFIX}).
    """
    selector = text.strip().lower()
    if (not selector or len(selector) > _MAX_SELECTOR - len(ED25519_SUFFIX)
            or not all(_SELECTOR_LABEL.match(label) for label in selector.split("."))):
        raise InputError(f"invalid selector {text!r}: use letters, digits and '-', such as jt202406")
    return selector


def _month(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y%m")


def _timestamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _state(key: DomainKey) -> str:
    if key.retired_at is not None:
        return "retired"
    if key.verified_at is not None:
        return "verified"
    return "forced" if key.forced else "unverified"


def _key(key: DomainKey) -> JSONDict:
    name, value = dns_record(key)
    return {"selector": key.selector, "algorithm": key.algorithm, "created": _timestamp(key.created),
            "state": _state(key), "signs": key.may_sign, "dkim_name": name, "dkim_txt": split_txt(value)}


def _record(record: DNSRecord) -> JSONDict:
    return {"kind": record.kind, "name": record.name, "type": record.type, "value": record.value,
            "strings": record.strings, "note": record.note, "required": record.required,
            "zone": zone_line(record)}


def _finding(finding: Finding) -> JSONDict:
    return {"kind": finding.kind, "name": finding.name, "type": finding.type, "status": finding.status,
            "found": finding.found, "fix": finding.fix, "notes": list(finding.notes), "selector": finding.selector,
            "required": finding.required}


def _status(status: DomainStatus) -> JSONDict:
    return {"verified": status.verified, "checked": _timestamp(status.checked_at)}


def _status_text(answer: JSONDict) -> str:
    status = answer["status"]
    if status["checked"] is None:
        return "not checked yet: publish the records, then run domain check"
    return f"{'verified' if status['verified'] else 'NOT verified'} (checked {status['checked']})"


def render_domain(answer: JSONDict) -> str:
    """C{domain add}, C{show}, C{rotate-key}: status, keys, and every record as zone-file lines with notes."""
    lines = [f"; sender domain {answer['domain']} (account {answer['account']}): {_status_text(answer)}"]
    for key in answer["keys"]:
        added = " (new)" if key["selector"] in answer.get("added", ()) else ""
        signs = "signs" if key["signs"] else "does not sign until verified"
        lines.append(f"; key {key['selector']} ({key['algorithm']}, {key['state']}, {signs}){added}")
    for record in answer["records"]:
        optional = "" if record["required"] else " (optional)"
        lines.append(f"; {record['kind']}{optional}: {record['note']}" if record["note"]
                     else f"; {record['kind']}{optional}")
        lines.append(record["zone"])
    return "\n".join(lines)


def render_domains(answers: Sequence[JSONDict]) -> str:
    """C{domain list}: one line per domain with its keys, or a sentence when there are none."""
    if not answers:
        return "no domains"
    return "\n".join(f"{answer['domain']}  {_status_text(answer)}  keys: "
                     + ", ".join(f"{key['selector']} ({key['algorithm']}, {key['state']})" for key in answer["keys"])
                     for answer in answers)


def render_check(answer: JSONDict) -> str:
    """C{domain check}: each record's status, what was found, the fix and the notes."""
    lines = [f"{answer['domain']} (account {answer['account']}): {_status_text(answer)}"]
    for finding in answer["findings"]:
        optional = "" if finding["required"] else " (optional)"
        lines.append(f"[{finding['status'].upper()}] {finding['kind'].upper()}{optional} {finding['name']} "
                     f"{finding['type']}")
        if finding["found"]:
            lines.append(f"    found: {finding['found']}")
        if finding["fix"]:
            lines.append(f"    fix: {finding['fix']}")
        lines += [f"    note: {note}" for note in finding["notes"]]
    return "\n".join(lines)


@frozen
class DomainAdmin:
    """Administer sender domains and their DKIM keys in C{store}.

    @ivar make_key: makes a new PEM RSA private key; generating a 2048-bit key
        takes a noticeable fraction of a second, so a server or the CLI passes
        one that runs L{jangotw.pipeline.dkim.new_rsa_key} in a thread pool.
    @ivar clock: stamps keys and checks, and dates the default selector (UTC month).
    @ivar checker: looks records up for L{check} (None: checks are refused).
    """

    store: IStore
    make_key: Callable[[], "Deferred[str]"]
    clock: IReactorTime
    organisations: Organisations
    settings: SenderSettings = SenderSettings()
    checker: DomainChecker | None = None

    def add_domain(self, account: str, domain: str, selector: str | None = None,
                   ed25519: bool = False) -> "Deferred[JSONDict]":
        """Give C{account} a new key for C{domain} (with C{ed25519}, an Ed25519 key too); fires with
        the domain's records to publish.

        Without C{selector} it is C{jt<YYYYMM>}, with a letter appended when the
        domain already has that one. Fails with InputError for an unknown
        account, an invalid domain or selector, a domain of another account,
        or a selector the domain has (or had).
        """
        return Deferred.fromCoroutine(self._add_domain(account, domain, selector, ed25519))

    async def _add_domain(self, account: str, domain: str, selector: str | None, ed25519: bool) -> JSONDict:
        name = await self._account(account)
        ascii_domain = parse_domain(domain)
        chosen = None if selector is None else parse_selector(selector)
        status = await self.store.domain_status(ascii_domain)
        if status is not None and status.account.lower() != name.lower():
            raise InputError(f"domain {ascii_domain} belongs to another account")
        return await self._new_keys(name, ascii_domain, chosen, ed25519)

    def rotate_key(self, domain: str, selector: str | None = None) -> "Deferred[JSONDict]":
        """Add a new RSA key (and a new Ed25519 key when the domain has one) under a new selector;
        the current keys stay until L{retire_key}. Fires with the records to publish."""
        return Deferred.fromCoroutine(self._rotate_key(domain, selector))

    async def _rotate_key(self, domain: str, selector: str | None) -> JSONDict:
        status = await self._domain(domain)
        keys = await self.store.domain_keys(status.domain)
        ed25519 = any(key.algorithm == ED25519 and key.retired_at is None for key in keys)
        return await self._new_keys(status.account, status.domain,
                                    None if selector is None else parse_selector(selector), ed25519)

    async def _new_keys(self, account: str, domain: str, selector: str | None, ed25519: bool) -> JSONDict:
        used = {key.selector for key in await self.store.domain_keys(domain)}
        chosen = selector or self._default_selector(used)
        selectors = [chosen] + ([chosen + ED25519_SUFFIX] if ed25519 else [])
        taken = [each for each in selectors if each in used]
        if taken:
            raise InputError(f"{domain} already has (or had) selector {taken[0]}; choose another, so mail "
                             "signed with the other key still verifies while DNS changes")
        pem = await self.make_key()
        now = self.clock.seconds()
        added = [await self.store.add_domain(DomainKey(account, domain, chosen, pem, now, RSA))]
        if ed25519:
            added.append(await self.store.add_domain(DomainKey(account, domain, selectors[1], new_ed25519_key(),
                                                               now, ED25519)))
        for key in added:
            log.info("added DKIM key {selector} ({algorithm}) for {domain} of account {account}",
                     selector=key.selector, algorithm=key.algorithm, domain=key.domain, account=key.account)
        return {**await self._answer(domain), "added": [key.selector for key in added]}

    def show(self, domain: str) -> "Deferred[JSONDict]":
        """The domain's status, keys and records to publish."""
        return Deferred.fromCoroutine(self._answer(domain))

    async def _answer(self, domain: str) -> JSONDict:
        status = await self._domain(domain)
        keys = [key for key in await self.store.domain_keys(status.domain) if key.retired_at is None]
        account = await self.store.get_account(status.account)
        tracking = account.settings.tracking_domain if account is not None else ""
        records = records_for(status.domain, keys, self.settings, tracking,
                              self.organisations.domain(status.domain))
        return {"account": status.account, "domain": status.domain, "status": _status(status),
                "keys": [_key(key) for key in keys], "records": [_record(record) for record in records]}

    def list_domains(self, account: str) -> "Deferred[list[JSONDict]]":
        """Every domain of C{account}, by name, with its status and its keys that are not retired."""
        return Deferred.fromCoroutine(self._list_domains(account))

    async def _list_domains(self, account: str) -> list[JSONDict]:
        keys: list[DomainKey] = await self.store.list_domains(await self._account(account))
        answers = []
        for domain in sorted({key.domain for key in keys}):
            status = await self._domain(domain)
            answers.append({"domain": domain, "account": status.account, "status": _status(status),
                            "keys": [_key(key) for key in keys if key.domain == domain]})
        return answers

    def check(self, domain: str) -> "Deferred[JSONDict]":
        """Look up every record of the domain, store the verdict and which keys verified; fires with
        the findings. Fails with InputError for a domain not added, or without a checker."""
        return Deferred.fromCoroutine(self._check(domain))

    async def _check(self, domain: str) -> JSONDict:
        if self.checker is None:
            raise InputError("domain checks need the DNS: no resolver was configured")
        status = await self._domain(domain)
        keys = await self.store.domain_keys(status.domain)
        account = await self.store.get_account(status.account)
        findings = await self.checker.check(status.domain, keys,
                                            account.settings.tracking_domain if account is not None else "")
        verified = all(finding.status == OK for finding in findings if finding.required)
        selectors = [finding.selector for finding in findings if finding.kind == "dkim" and finding.status == OK]
        stored = await self.store.record_check(status.domain, self.clock.seconds(), verified, selectors)
        log.info("checked sender domain {domain}: {verdict}", domain=status.domain,
                 verdict="verified" if verified else "not verified")
        return {"account": status.account, "domain": status.domain, "status": _status(stored),
                "findings": [_finding(finding) for finding in findings]}

    def retire_key(self, domain: str, selector: str) -> "Deferred[JSONDict]":
        """Stop signing with a key and stop listing it (its record may then be removed). The domain's
        last RSA key that is not retired is kept: rotate first."""
        return Deferred.fromCoroutine(self._retire_key(domain, selector))

    async def _retire_key(self, domain: str, selector: str) -> JSONDict:
        status = await self._domain(domain)
        chosen = selector.strip().lower()
        keys = {key.selector: key for key in await self.store.domain_keys(status.domain)}
        key = keys.get(chosen)
        if key is None:
            raise InputError(f"{status.domain} has no key with selector {chosen}")
        others = [other for other in keys.values() if other.algorithm == RSA and other.retired_at is None
                  and other.selector != chosen]
        if key.algorithm == RSA and key.retired_at is None and not others:
            raise InputError(f"{chosen} is the last RSA key of {status.domain}: add one with domain rotate-key "
                             "first, publish it and check it")
        retired = await self.store.retire_key(status.domain, chosen, self.clock.seconds())
        log.info("retired DKIM key {selector} of {domain}", selector=chosen, domain=status.domain)
        return {"domain": status.domain, "selector": chosen, "retired": _timestamp(retired.retired_at)}

    def force_sign(self, domain: str, selector: str, forced: bool = True) -> "Deferred[JSONDict]":
        """Let a key sign before its record verified (C{forced} False: only once verified)."""
        return Deferred.fromCoroutine(self._force_sign(domain, selector, forced))

    async def _force_sign(self, domain: str, selector: str, forced: bool) -> JSONDict:
        status = await self._domain(domain)
        key = await self.store.set_forced(status.domain, selector.strip(), forced)
        log.info("DKIM key {selector} of {domain} forced={forced}", selector=key.selector, domain=key.domain,
                 forced=forced)
        return {"domain": key.domain, **_key(key)}

    async def _account(self, name: str) -> str:
        found = await self.store.get_account(name)
        if found is None:
            raise InputError(f"no account named {name!r}")
        return str(found.name)

    async def _domain(self, domain: str) -> DomainStatus:
        ascii_domain = parse_domain(domain)
        status = await self.store.domain_status(ascii_domain)
        if status is None:
            raise InputError(f"no sender domain {ascii_domain}: add it with domain add ACCOUNT {ascii_domain}")
        return status

    def _default_selector(self, used: set[str]) -> str:
        base = f"jt{_month(self.clock.seconds())}"
        for candidate in [base] + [base + chr(letter) for letter in range(ord("b"), ord("z") + 1)]:
            if candidate not in used:
                return candidate
        return f"{base}-{int(self.clock.seconds())}"
