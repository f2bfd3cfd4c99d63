# -*- test-case-name: tests.senders.test_returnpath -*-
"""Which domain a message's VERP return paths use, so bounces align with the sender's domain.

`domain add` asks customers to publish C{bounces.<their domain>} as a CNAME to
the server's bounce domain. Once that name resolves there, return paths
C{bounces+TOKEN@bounces.<their domain>} reach our bounce mailbox through the
CNAME (its MX and SPF are the bounce domain's) while SPF checks the sender's
own (organisational) domain: DMARC's SPF alignment holds for the bounce
address. Until it does, the bounce domain itself is used. Answers are cached
for an hour (a DNS failure for a minute), so a delivery costs no lookup.
"""
from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .dns import LookupFailed, Lookups, valid_name

__all__ = ["RETURN_PATH_LABEL", "ReturnPathDomains"]

log = Logger()

RETURN_PATH_LABEL = "bounces"
_KNOWN_FOR = 3600.0
_UNKNOWN_FOR = 60.0  # a DNS failure: try again soon, meanwhile use the bounce domain


@define
class ReturnPathDomains:
    lookups: Lookups
    bounce_domain: str
    clock: IReactorTime
    _cache: dict[str, tuple[float, str]] = field(factory=dict, init=False)  # sender domain -> (until, answer)

    def for_sender(self, sender: str) -> "Deferred[str]":
        """The return-path domain for mail whose envelope sender is C{sender}."""
        domain = sender.rpartition("@")[2].lower().rstrip(".")
        aligned = f"{RETURN_PATH_LABEL}.{domain}"
        if not domain or domain == self.bounce_domain or not valid_name(aligned):
            return succeed(self.bounce_domain)
        cached = self._cache.get(domain)
        if cached is not None and cached[0] > self.clock.seconds():
            return succeed(cached[1])
        return Deferred.fromCoroutine(self._look_up(domain, aligned))

    async def _look_up(self, domain: str, aligned: str) -> str:
        try:
            target = await self.lookups.cname(aligned)
        except LookupFailed as error:
            log.warn("return-path CNAME {name} not checked ({error}); using {bounce_domain}",
                     name=aligned, error=error, bounce_domain=self.bounce_domain)
            answer, lifetime = self.bounce_domain, _UNKNOWN_FOR
        else:
            points_here = target is not None and target.lower().rstrip(".") == self.bounce_domain
            answer, lifetime = (aligned if points_here else self.bounce_domain), _KNOWN_FOR
        self._cache[domain] = (self.clock.seconds() + lifetime, answer)
        return answer
