# -*- test-case-name: tests.queue.test_manager -*-
"""The queue manager: every spooled message, through delivery attempts, until it is done.

A message is split by destination (recipient domain, the smarthost, or our own
bounce mailbox). At most C{max_active} attempts run at once, and at most
C{max_per_destination} to one destination; an attempt with one copy per
recipient (tracking, list mail) sends its copies at once, within
C{max_per_destination} transactions to that destination in all. Each attempt's per-recipient
outcomes are journalled (fsynced) before anything acts on them; temporary
failures are retried on the injected clock with exponential backoff; a message
leaves the spool only when every recipient is delivered or has failed (and the
sender's DSN is queued). Recovery at start-up rebuilds all of this from the
spool and the journals.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Callable, Protocol

import attrs
from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import (CancelledError, Deferred, DeferredList, DeferredSemaphore, TimeoutError,
                                    gatherResults, succeed)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..interfaces import IDeliverer, IStore
from ..metrics import Metrics
from ..model import (BOUNCE_EVENT, SEND_EVENT, AuthMethod, OutboundMessage, PipelineWork, RecipientResult,
                     RecipientStatus, SpoolRecord, TrackingEvent)
from ..spool.journal import HELD, NOTICE_QUEUED, PREPARED, RELEASED, DeliveryJournal, JournalEntry
from ..spool.writer import Spool
from .bouncelist import hard_bounce, soft_bounce
from .notices import Notices
from .routing import BOUNCES, INITIATION, NO_CONSUMER, Router
from .state import MessageState, RetryPolicy

__all__ = ["QueueManager", "ReturnPath", "is_hard_bounce", "RENDER_CHUNK"]

log = Logger()

RENDER_CHUNK = 100  # recipients rendered (and their copies on disk) at a time per attempt

ReturnPath = Callable[[SpoolRecord, int], "Deferred[str]"]  # (record, recipient index) -> MAIL FROM
LocalDelivery = Callable[[SpoolRecord, list[str]], "Deferred[list[RecipientResult]]"]
Preparer = Callable[[SpoolRecord, tuple[str, ...]], "Deferred[PipelineWork]"]


class Renderer(Protocol):
    """Makes the copies each recipient must receive (see L{jangotw.pipeline.render})."""

    def render(self, record: SpoolRecord, recipients: list[str]) -> "Deferred[list[tuple[tuple[str, ...], str | None]]]": ...

    def discard(self, message_id: str) -> None: ...

    def release(self, paths: list[str]) -> None:
        """These copies were sent (or failed) this attempt: their files may be reused."""


def is_hard_bounce(result: RecipientResult) -> bool:
    """A permanent failure that says the address itself is bad (RFC 3463 X.1.x, or
    a mailbox disabled, X.2.1). Policy or content refusals (5.7.x, 5.3.x, 5.6.x)
    refused this message, not the mailbox, so they do not list the address."""
    if result.status is not RecipientStatus.FAILED:
        return False
    if result.enhanced:
        return result.enhanced.startswith("5.1.") or result.enhanced == "5.2.1"
    return result.code in (550, 551, 553)


@define
class QueueManager(Service):
    clock: IReactorTime
    spool: Spool
    journal: DeliveryJournal
    deliverer: IDeliverer
    store: IStore
    notices: Notices
    router: Router
    deliver_locally: LocalDelivery
    return_path: ReturnPath | None = None  # VERP; None keeps each message's own sender
    policy: RetryPolicy = RetryPolicy()
    max_active: int = 200
    max_per_destination: int = 20
    stop_timeout: float = 10.0
    hold: bool = False  # spool everything, deliver nothing ([delivery] hold)
    prepare: Preparer | None = None  # the policy pipeline; None: deliver as received
    renderer: Renderer | None = None  # the rewrite stages, applied as an attempt starts
    initiate: LocalDelivery | None = None  # fans an initiation message out to its list
    held_for: float = 3 * 86400.0  # how long over-quota mail is kept for a resend
    metrics: Metrics = field(factory=Metrics)
    _messages: dict[str, MessageState] = field(factory=dict, init=False)
    _ready: dict[str, deque[str]] = field(factory=dict, init=False)
    _scheduled: set[tuple[str, str]] = field(factory=set, init=False)  # (message id, destination) ready or active
    _active: Counter[str] = field(factory=Counter, init=False)
    _slots: dict[str, DeferredSemaphore] = field(factory=dict, init=False)  # transactions per destination
    _active_total: int = field(default=0, init=False)
    _attempts: set[Deferred[None]] = field(factory=set, init=False)
    _timers: dict[str, IDelayedCall] = field(factory=dict, init=False)
    _stopping: bool = field(default=False, init=False)
    _pumping: bool = field(default=False, init=False)
    _pump_again: bool = field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        Service.__init__(self)

    # -- lifecycle -----------------------------------------------------------

    def recover(self, records: list[SpoolRecord]) -> "Deferred[None]":
        """Resume every spooled message from its journal (called once at start-up)."""
        return Deferred.fromCoroutine(self._recover(records))

    async def _recover(self, records: list[SpoolRecord]) -> None:
        for record in records:
            entries = await self.journal.read(record.message_id)
            state = MessageState.from_journal(record, entries)
            self._messages[record.message_id] = state
            if state.finished:
                await self._finish(state)
            else:
                self._admit(state)
        log.info("queue resumed {count} message(s)", count=len(self._messages))

    def stopService(self) -> "Deferred[object]":
        """Start nothing new; give attempts in flight C{stop_timeout} seconds to finish and
        journal their outcome (an attempt cut short is simply retried after the restart)."""
        super().stopService()
        self._stopping = True
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        waiting: Deferred[object] = DeferredList(list(self._attempts), consumeErrors=True)
        waiting.addTimeout(self.stop_timeout, self.clock)
        return waiting.addErrback(lambda failure: failure.trap(CancelledError, TimeoutError))

    # -- intake --------------------------------------------------------------

    def enqueue(self, record: SpoolRecord) -> None:
        """Take a newly spooled message: through the pipeline, then delivery at once.
        One handed over while stopping (a commit that completed after the shutdown grace
        closed its session) stays in the spool for the next start."""
        if self._stopping:
            return
        state = MessageState.fresh(record)
        self._messages[record.message_id] = state
        if self.return_path is not None and record.account and record.envelope.sender:
            self.store.record_send(record.message_id, record.account, record.envelope.recipients,
                                   self.clock.seconds()).addErrback(
                lambda failure: log.failure("send log for {message_id} failed", failure,
                                            message_id=record.message_id))
        self._admit(state)

    def _admit(self, state: MessageState) -> None:
        """Schedule a prepared message; prepare a new one; keep a held one until it expires."""
        record = state.record
        if state.held:
            self._expire_held_later(state)
        elif state.prepared:
            self._schedule(state)
        elif (self.prepare is None or record.account is None
              or record.auth_method in (AuthMethod.NOTICE, AuthMethod.CAMPAIGN, AuthMethod.INITIATION)):
            state.prepared = True  # nothing to check: own mail, notices, list batches checked at fan-out
            self._schedule(state)
        else:
            self._track(Deferred.fromCoroutine(self._prepare(state)), record.message_id)

    async def _prepare(self, state: MessageState) -> None:
        record = state.record
        assert self.prepare is not None
        waiting = tuple(r.recipient for r in state.recipients.values() if not r.final)
        work = await self.prepare(record, waiting)
        now = self.clock.seconds()
        entries = [JournalEntry(now, RecipientResult(recipient, RecipientStatus.SUPPRESSED, 550, "5.7.1",
                                                     f"not sent: the address is on the {list_name} list"))
                   for recipient, list_name in work.suppressed]
        entries.append(JournalEntry(now, event=HELD, detail=work.held) if work.held
                       else JournalEntry(now, event=PREPARED))
        for notice in work.notices:
            self.enqueue(await self.notices.queue_notice(record.account, notice))
        if work.side_effects or work.held or work.suppressed:
            await self.journal.append(record.message_id, entries)
        for entry in entries:
            state.apply(entry)
        for _ in work.suppressed:
            self.metrics.recipient_outcome(RecipientStatus.SUPPRESSED, now - record.received_at)
        log.info("pipeline {message_id} for {account}: {waiting} recipient(s), {suppressed} suppressed",
                 message_id=record.message_id, account=record.account, waiting=len(waiting),
                 suppressed=len(work.suppressed))
        if work.held:
            log.info("holding {message_id}: {reason}", message_id=record.message_id, reason=work.held)
            self._expire_held_later(state)
        elif state.finished:
            await self._finish(state)
        else:
            self._schedule(state)

    def _expire_held_later(self, state: MessageState) -> None:
        message_id = state.record.message_id
        delay = max(0.0, state.held_at + self.held_for - self.clock.seconds())
        self._set_timer_call(message_id, delay, self._expire_held, message_id)

    def _expire_held(self, message_id: str) -> None:
        self._timers.pop(message_id, None)
        state = self._messages.get(message_id)
        if state is not None and state.held:
            log.info("held {message_id} expired unsent after {days:g} days", message_id=message_id,
                     days=self.held_for / 86400)
            self.forget(message_id).addErrback(lambda failure: log.failure("expiring {message_id}", failure,
                                                                           message_id=message_id))

    def release_held(self, account: str) -> int:
        """Send again the account's held messages (after its limit was raised): each goes
        through the pipeline afresh, quota included. Returns how many were released."""
        chosen = [s for s in self._messages.values()
                  if s.held and (s.record.account or "").lower() == account.lower()]
        for state in chosen:
            self._track(Deferred.fromCoroutine(self._release(state)), state.record.message_id)
        return len(chosen)

    async def _release(self, state: MessageState) -> None:
        entry = JournalEntry(self.clock.seconds(), event=RELEASED)
        await self.journal.append(state.record.message_id, [entry])
        state.apply(entry)
        log.info("released held {message_id}", message_id=state.record.message_id)
        await self._prepare(state)

    def _track(self, work: "Deferred[None]", message_id: str) -> None:
        """Keep background work visible to stopService and settled(); a failure retries later."""
        self._attempts.add(work)

        def failed(failure: Failure) -> None:
            log.failure("preparing {message_id} failed; retrying in {delay}s", failure,
                        message_id=message_id, delay=self.policy.base)
            self._set_timer_call(message_id, self.policy.base, self._retry_preparation, message_id)

        work.addErrback(failed)
        work.addBoth(lambda _: self._attempts.discard(work))

    def _retry_preparation(self, message_id: str) -> None:
        self._timers.pop(message_id, None)
        state = self._messages.get(message_id)
        if state is not None and not self._stopping:
            self._admit(state)

    def _set_timer_call(self, message_id: str, delay: float, function: Callable[[str], None], *args: str) -> None:
        old = self._timers.pop(message_id, None)
        if old is not None and old.active():
            old.cancel()
        if not self._stopping:
            self._timers[message_id] = self.clock.callLater(delay, function, *args)

    def settled(self) -> "Deferred[None]":
        """Fires once no attempt is running (those started meanwhile included): for tests and tools."""
        async def wait() -> None:
            while self._attempts:
                await DeferredList(list(self._attempts), consumeErrors=True)
        return Deferred.fromCoroutine(wait())

    def __len__(self) -> int:
        return len(self._messages)

    def messages(self) -> list[MessageState]:
        """What is queued now, oldest first (for the admin CLI and metrics)."""
        return [self._messages[key] for key in sorted(self._messages)]

    def retry_now(self, message_id: str | None = None) -> int:
        """Forget backoff for one message (or all): their waiting recipients are due now.
        Returns how many messages were rescheduled."""
        chosen = [self._messages[message_id]] if message_id in self._messages else (
            list(self._messages.values()) if message_id is None else [])
        chosen = [state for state in chosen if state.prepared and not state.held]
        for state in chosen:
            for recipient in state.recipients.values():
                if not recipient.final:
                    recipient.last_at = -self.policy.cap  # next_attempt is in the past
            self._schedule(state)
        return len(chosen)

    def forget(self, message_id: str) -> "Deferred[bool]":
        """Drop a message without delivering it further (admin delete)."""
        state = self._messages.pop(message_id, None)
        timer = self._timers.pop(message_id, None)
        if timer is not None and timer.active():
            timer.cancel()
        if state is None:
            return succeed(False)
        log.info("deleted {message_id} from the queue on request", message_id=message_id)
        if self.renderer is not None:
            self.renderer.discard(message_id)
        return self.spool.remove(message_id).addCallback(lambda _: True)

    # -- scheduling ----------------------------------------------------------

    def _schedule(self, state: MessageState) -> None:
        if self._stopping or self.hold:
            return
        message_id = state.record.message_id
        now = self.clock.seconds()
        for destination in sorted({self.router.destination(r) for r in state.due(now, self.policy)}):
            if self._unroutable(destination):
                continue
            if (message_id, destination) not in self._scheduled:
                self._scheduled.add((message_id, destination))
                self._ready.setdefault(destination, deque()).append(message_id)
        self._set_timer(state, now)
        self._pump()

    def _set_timer(self, state: MessageState, now: float) -> None:
        message_id = state.record.message_id
        old = self._timers.pop(message_id, None)
        if old is not None and old.active():
            old.cancel()
        waiting = [r.next_attempt(self.policy) for r in state.recipients.values()
                   if not r.final and r.next_attempt(self.policy) > now
                   and not self._unroutable(self.router.destination(r.recipient))]
        if waiting:
            self._timers[message_id] = self.clock.callLater(min(waiting) - now, self._wake, message_id)

    def _unroutable(self, destination: str) -> bool:
        """Our own mailboxes with nothing to consume them: such mail is kept, not attempted."""
        return destination == NO_CONSUMER or (destination == INITIATION and self.initiate is None)

    def _wake(self, message_id: str) -> None:
        self._timers.pop(message_id, None)
        state = self._messages.get(message_id)
        if state is not None:
            self._schedule(state)

    def _pump(self) -> None:
        """Start ready attempts within the limits. An attempt that ends synchronously calls
        back into here; that call only asks for another pass, so the loop is never re-entered."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                for destination in list(self._ready):
                    waiting = self._ready.get(destination)
                    while (waiting and self._active_total < self.max_active
                           and self._active[destination] < self.max_per_destination):
                        self._start(waiting.popleft(), destination)
                    if not waiting:
                        self._ready.pop(destination, None)
        finally:
            self._pumping = False

    def _start(self, message_id: str, destination: str) -> None:
        self._active[destination] += 1
        self._active_total += 1
        attempt = Deferred.fromCoroutine(self._attempt(message_id, destination))
        self._attempts.add(attempt)
        attempt.addCallbacks(lambda _: self._attempt_ended(attempt, message_id, destination, crashed=False),
                             lambda failure: self._attempt_crashed(failure, attempt, message_id, destination))

    def _attempt_crashed(self, failure: Failure, attempt: "Deferred[None]", message_id: str,
                         destination: str) -> None:
        """A bug or a journal write error: nothing was recorded, so try again later, not at once."""
        log.failure("attempt for {message_id} crashed; retrying in {delay}s", failure,
                    message_id=message_id, delay=self.policy.base)
        self._attempt_ended(attempt, message_id, destination, crashed=True)

    def _attempt_ended(self, attempt: "Deferred[None]", message_id: str, destination: str,
                       crashed: bool) -> None:
        self._attempts.discard(attempt)
        self._active[destination] -= 1
        self._active_total -= 1
        if self._active[destination] <= 0:
            del self._active[destination]
        self._scheduled.discard((message_id, destination))
        state = self._messages.get(message_id)
        if state is None or state.finished or self._stopping:
            self._pump()
        elif crashed:
            self._timers.setdefault(message_id, self.clock.callLater(self.policy.base, self._wake, message_id))
            self._pump()
        else:
            self._schedule(state)

    # -- one attempt ---------------------------------------------------------

    async def _attempt(self, message_id: str, destination: str) -> None:
        state = self._messages.get(message_id)
        if state is None:
            return
        now = self.clock.seconds()
        recipients = [r for r in state.due(now, self.policy) if self.router.destination(r) == destination]
        if not recipients:
            return
        record = state.record
        if destination == BOUNCES:
            results = await self.deliver_locally(record, recipients)
        elif destination == INITIATION and self.initiate is not None:
            results = await self.initiate(record, recipients)
        else:
            results = await self._send(record, destination, recipients)
        if message_id not in self._messages:
            return  # deleted by an administrator meanwhile
        now = self.clock.seconds()
        results = [self._expire(record, result, now) for result in results]
        for result in results:
            self.metrics.recipient_outcome(result.status, now - record.received_at)
        entries = [JournalEntry(now, result) for result in results]
        for entry in entries:
            state.apply(entry)
        if not (state.finished and not state.failed()):
            # Journal what a restart must know. A message delivered to everyone is simply
            # removed: a crash before that re-sends it, the same window the journal has.
            await self.journal.append(message_id, entries)
        await self._update_lists(state, results)
        if state.finished and message_id in self._messages:
            await self._finish(state)

    async def _send(self, record: SpoolRecord, destination: str, recipients: list[str]) -> list[RecipientResult]:
        """Render and deliver C{RENDER_CHUNK} recipients at a time, each chunk's copies released for
        reuse once sent; the copies go out at once, within C{max_per_destination} transactions to
        the destination in all."""
        results: list[RecipientResult] = []
        slots = self._slots.setdefault(destination, DeferredSemaphore(self.max_per_destination))
        try:
            for start in range(0, len(recipients), RENDER_CHUNK):
                chunk = recipients[start:start + RENDER_CHUNK]
                bodies = (await self.renderer.render(record, chunk) if self.renderer is not None
                          else [(tuple(chunk), None)])
                outbound = [OutboundMessage(message_id=record.message_id, sender=sender, recipients=tuple(batch),
                                            body_path=rendered or self.spool.body_path(record.message_id),
                                            size=record.size, eight_bit=record.envelope.body == "8BITMIME")
                            for group, rendered in bodies
                            for sender, batch in await self._envelopes(record, list(group))]
                try:
                    sent = await gatherResults([slots.run(self.deliverer.deliver, message) for message in outbound])
                finally:
                    if self.renderer is not None:
                        self.renderer.release([rendered for _, rendered in bodies if rendered is not None])
                results += [result for delivered in sent for result in delivered]
        finally:
            if slots.tokens == slots.limit and self._slots.get(destination) is slots:
                del self._slots[destination]
        return results

    async def _envelopes(self, record: SpoolRecord, recipients: list[str]) -> list[tuple[str, list[str]]]:
        """One transaction for all, or one per recipient when each gets its own VERP return
        path (a bounce domain is configured and the account has not turned C{verp} off)."""
        if self.return_path is None or not record.envelope.sender or not record.account:
            return [(record.envelope.sender, recipients)]
        account = await self.store.get_account(record.account)
        if account is None or not account.settings.verp:
            return [(record.envelope.sender, recipients)]
        index = {recipient: position for position, recipient in enumerate(record.envelope.recipients)}
        return [(await self.return_path(record, index[recipient]), [recipient]) for recipient in recipients]

    def _expire(self, record: SpoolRecord, result: RecipientResult, now: float) -> RecipientResult:
        if result.status is not RecipientStatus.DEFERRED or not self.policy.expired(record, now):
            return result
        days = self.policy.lifetime / 86400
        return attrs.evolve(result, status=RecipientStatus.FAILED, enhanced="4.4.7",
                            text=f"delivery time expired after {days:g} days in the queue; "
                                 f"last error: {result.reply}")

    async def _update_lists(self, state: MessageState, results: list[RecipientResult]) -> None:
        """Invalid addresses join the account's Bounce list; expired ones count as soft bounces."""
        record = state.record
        if record.account is None or record.auth_method is AuthMethod.NOTICE:
            return
        now = self.clock.seconds()
        events = [TrackingEvent(SEND_EVENT, record.message_id, result.recipient, now)
                  if result.status is RecipientStatus.DELIVERED else
                  TrackingEvent(BOUNCE_EVENT, record.message_id, result.recipient, now, result.reply)
                  for result in results if result.status in (RecipientStatus.DELIVERED, RecipientStatus.FAILED)]
        # All at once: the store writes events that arrive together in one transaction.
        for recorded, outcome in await DeferredList([self.store.record_event(record.account, event)
                                                     for event in events], consumeErrors=True):
            if not recorded:
                log.failure("recording a send or bounce of {message_id} failed", outcome,
                            message_id=record.message_id)
        for result in results:
            try:
                if is_hard_bounce(result):
                    await hard_bounce(self.store, record.account, result.recipient,
                                      f"{result.reply} ({result.remote or 'no server'})")
                    log.info("{recipient} joined the Bounce list of {account}: {reply}",
                             recipient=result.recipient, account=record.account, reply=result.reply)
                elif result.status is RecipientStatus.FAILED and result.enhanced == "4.4.7":
                    await soft_bounce(self.store, record.account, result.recipient, result.reply)
                elif result.status is RecipientStatus.DELIVERED and state.recipients[result.recipient].deferrals:
                    await self.store.clear_soft_bounces(record.account, result.recipient)
            except Exception:
                log.failure("updating the Bounce list of {account} failed", account=record.account)

    # -- the end -------------------------------------------------------------

    async def _finish(self, state: MessageState) -> None:
        record = state.record
        failed = state.failed()
        if failed and not state.notice_queued and self.notices.wanted(record) and await self._notify(record):
            notice = await self.notices.queue_failure_notice(record, failed)
            await self.journal.append(record.message_id, [JournalEntry(self.clock.seconds(), event=NOTICE_QUEUED)])
            state.notice_queued = True
            self.enqueue(notice)
        self._messages.pop(record.message_id, None)
        if self.renderer is not None:
            self.renderer.discard(record.message_id)
        await self.spool.remove(record.message_id)
        delivered = len(state.recipients) - len(failed)
        log.info("done with {message_id}: {delivered} delivered, {failed} failed",
                 message_id=record.message_id, delivered=delivered, failed=len(failed))

    async def _notify(self, record: SpoolRecord) -> bool:
        if record.account is None:
            return True
        account = await self.store.get_account(record.account)
        return account is None or account.settings.bounce_notifications

