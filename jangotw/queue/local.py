# -*- test-case-name: tests.queue.test_local -*-
"""Our own mailboxes at the bounce domain: VERP bounces and List-Unsubscribe mail.

C{unsubscribe+ID@bounce_domain} (the mailto: of List-Unsubscribe) puts the
recipient behind ID on the account's Unsubscribe list.

The token in C{bounces+TOKEN@bounce_domain} names the message and recipient
(signed, so a forged bounce changes nothing); the send log maps it back to the
account and the address that bounced. Hard bounces put the address on the
account's Bounce list at once, soft ones after C{soft_bounce_limit}; auto-replies
(out-of-office, RFC 3834) never count.
"""
from __future__ import annotations

from typing import Callable

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ..interfaces import IStore
from ..model import (BOUNCE_EVENT, UNSUBSCRIBE_EVENT, UNSUBSCRIBE_LIST, RecipientResult, RecipientStatus,
                     SpoolRecord, TrackingEvent)
from ..spool.writer import Spool
from .bouncelist import hard_bounce, soft_bounce
from .bounces import BounceReport, classify
from .verp import VerpSigner

__all__ = ["BounceMailbox", "MAX_BOUNCE_SIZE", "UNSUBSCRIBE_PREFIX"]

log = Logger()

MAX_BOUNCE_SIZE = 1024 * 1024  # a bounce report is small; only this much is parsed
UNSUBSCRIBE_PREFIX = "unsubscribe+"


def _read_head(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(MAX_BOUNCE_SIZE)


@frozen
class BounceMailbox:
    spool: Spool
    store: IStore
    signer: VerpSigner
    clock: IReactorTime
    unsubscribe_ids: Callable[[str], "tuple[str, int] | None"]  # ID -> (queue id, recipient index)

    def deliver(self, record: SpoolRecord, recipients: list[str]) -> "Deferred[list[RecipientResult]]":
        """Consume a bounce addressed to C{recipients} (all VERP return paths)."""
        return Deferred.fromCoroutine(self._deliver(record, recipients))

    async def _deliver(self, record: SpoolRecord, recipients: list[str]) -> list[RecipientResult]:
        data = await deferToThreadPool(self.spool.reactor, self.spool.threadpool, _read_head,
                                       self.spool.body_path(record.message_id))
        report = classify(data)
        results = []
        for recipient in recipients:
            if recipient.lower().startswith(UNSUBSCRIBE_PREFIX):
                outcome = await self._unsubscribe(recipient)
            else:
                outcome = await self._apply(recipient, report)
            log.info("bounce {message_id} to {recipient}: {outcome}", message_id=record.message_id,
                     recipient=recipient, outcome=outcome)
            results.append(RecipientResult(recipient, RecipientStatus.DELIVERED, 250, "2.0.0", outcome,
                                           remote="bounce mailbox"))
        return results

    async def _unsubscribe(self, address: str) -> str:
        found = self.unsubscribe_ids(address.partition("+")[2].rpartition("@")[0])
        sent = await self.store.find_send(*found) if found is not None else None
        if sent is None:
            return "ignored: not a valid unsubscribe address"
        account, recipient = sent
        if await self.store.suppress(account, UNSUBSCRIBE_LIST, recipient, "unsubscribed by mail"):
            await self.store.record_event(account, TrackingEvent(UNSUBSCRIBE_EVENT, found[0], recipient,  # type: ignore[index]
                                                                 self.clock.seconds(), "mailto"))
        return f"{recipient} unsubscribed from {account}"

    async def _apply(self, return_path: str, report: BounceReport) -> str:
        token = self.signer.parse(return_path)
        if token is None:
            return "ignored: not a valid signed return path"
        sent = await self.store.find_send(*token)
        if sent is None:
            return "ignored: unknown message"
        account, address = sent
        message_id = token[0]
        diagnostic = next((detail.diagnostic for detail in report.recipients if detail.diagnostic), "") or report.kind.value
        if report.kind in ("hard", "soft"):
            await self.store.record_event(account, TrackingEvent(BOUNCE_EVENT, message_id, address,
                                                                 self.clock.seconds(), diagnostic))
        if report.kind == "hard":
            await hard_bounce(self.store, account, address, f"asynchronous bounce: {diagnostic}")
            return f"hard bounce: {address} added to the Bounce list of {account}"
        if report.kind == "soft":
            count = await soft_bounce(self.store, account, address, diagnostic)
            return f"soft bounce {count} for {address} of {account}"
        return f"{report.kind.value}: not a bounce, nothing changed"
