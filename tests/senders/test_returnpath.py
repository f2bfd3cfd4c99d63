"""The VERP return-path domain: bounces.<sender domain> once its CNAME points at the bounce domain."""
from __future__ import annotations

from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from jangotw.queue.routing import BOUNCES, Router, is_bounce_address
from jangotw.senders.dns import Lookups
from jangotw.senders.returnpath import ReturnPathDomains
from tests.support.dns import SERVFAIL, ZoneAuthority, cname

BOUNCE_DOMAIN = "bounce.relay.test"
ZONES = {
    "shop.test": {"bounces": [cname(BOUNCE_DOMAIN)]},
    "other.test": {"bounces": [cname("bounce.elsewhere.test")]},
    "broken.test": {"bounces.broken.test": SERVFAIL},
}


class ReturnPathDomainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resolver = ZoneAuthority(ZONES)
        self.domains = ReturnPathDomains(Lookups(self.resolver), BOUNCE_DOMAIN, self.clock)

    def domain(self, sender: str) -> str:
        return self.successResultOf(self.domains.for_sender(sender))

    def test_aligned_when_the_cname_points_here(self) -> None:
        """Bounces to news@shop.test's mail then align with shop.test for SPF and DMARC."""
        self.assertEqual(self.domain("news@Shop.Test"), "bounces.shop.test")

    def test_bounce_domain_otherwise(self) -> None:
        """No CNAME, a CNAME elsewhere, a DNS failure, no sender domain: the bounce domain itself."""
        for sender in ("news@none.test", "news@other.test", "news@broken.test", "", f"x@{BOUNCE_DOMAIN}"):
            self.assertEqual(self.domain(sender), BOUNCE_DOMAIN, sender)

    def test_answers_are_cached(self) -> None:
        """An answer holds for an hour (a DNS failure for a minute): deliveries cost no lookup."""
        self.domain("a@shop.test")
        self.domain("b@broken.test")
        asked = len(self.resolver.queries)
        self.domain("c@shop.test")
        self.domain("d@broken.test")
        self.assertEqual(len(self.resolver.queries), asked)
        self.clock.advance(61)
        self.domain("e@broken.test")
        self.assertEqual([name for name, kind in self.resolver.queries[asked:] if kind == dns.CNAME],
                         ["bounces.broken.test"])
        self.clock.advance(3600)
        self.domain("f@shop.test")
        self.assertEqual(self.resolver.queries[-1], ("bounces.shop.test", dns.CNAME))


class BounceAddressTests(SynchronousTestCase):
    def test_return_paths_at_a_customers_cname_reach_the_bounce_mailbox(self) -> None:
        router = Router(bounce_domain=BOUNCE_DOMAIN)
        self.assertEqual(router.destination("bounces+abc-0-xyz@bounces.shop.test"), BOUNCES)
        self.assertEqual(router.destination(f"anything@{BOUNCE_DOMAIN}"), BOUNCES)

    def test_only_return_paths_and_only_with_a_bounce_domain(self) -> None:
        self.assertFalse(is_bounce_address("news@bounces.shop.test", BOUNCE_DOMAIN))
        self.assertFalse(is_bounce_address("bounces+x@shop.test", BOUNCE_DOMAIN))
        self.assertFalse(is_bounce_address("bounces+x@bounces.shop.test", ""))
        self.assertEqual(Router(bounce_domain=BOUNCE_DOMAIN).destination("news@bounces.shop.test"),
                         "bounces.shop.test")
