# -*- test-case-name: tests.queue.test_manager -*-
"""Which next hop a recipient's mail goes to: a remote domain, the smarthost, or ourselves."""
from __future__ import annotations

from attrs import frozen

__all__ = ["Router", "BOUNCES", "INITIATION", "NO_CONSUMER", "RELAY", "is_bounce_address"]

BOUNCES = "local:bounces"  # VERP return paths: asynchronous bounces to parse
INITIATION = "local:initiation"  # <account>@<initiation domain>: a mailing to a list
NO_CONSUMER = "local:no-consumer"  # our own mailboxes without a consumer yet (initiation): kept
RELAY = "relay"  # everything goes to [delivery] relay_host


def is_bounce_address(recipient: str, bounce_domain: str) -> bool:
    """Mail for our bounce mailbox: anything at the bounce domain, or a VERP return path at
    C{bounces.<sender domain>}, a customer's CNAME to it (L{jangotw.senders.returnpath})."""
    local, _, domain = recipient.rpartition("@")
    domain = domain.lower()
    if not bounce_domain or not domain:
        return False
    return domain == bounce_domain or (domain.startswith("bounces.") and local.lower().startswith("bounces+"))


@frozen
class Router:
    bounce_domain: str = ""
    initiation_domain: str = ""
    held_domains: frozenset[str] = frozenset()
    smarthost: bool = False

    def destination(self, recipient: str) -> str:
        """The destination key: concurrency limits and connection reuse are per destination."""
        domain = recipient.rpartition("@")[2].lower()
        if is_bounce_address(recipient, self.bounce_domain):
            return BOUNCES
        if domain and domain == self.initiation_domain:
            return INITIATION
        if domain in self.held_domains:
            return NO_CONSUMER
        return RELAY if self.smarthost else domain
