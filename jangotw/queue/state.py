# -*- test-case-name: tests.queue.test_state -*-
"""Where each recipient of a queued message stands, rebuilt from its journal.

Pure bookkeeping, no I/O: the queue manager applies journal entries as it
writes them, and recovery applies the same entries read back from disk, so a
restart sees exactly what the running server saw.
"""
from __future__ import annotations

from attrs import define, field, frozen

from ..model import RecipientResult, RecipientStatus, SpoolRecord
from ..spool.journal import HELD, NOTICE_QUEUED, PREPARED, RELEASED, JournalEntry

__all__ = ["RetryPolicy", "RecipientState", "MessageState"]


@frozen
class RetryPolicy:
    """Exponential backoff from C{base} doubling to C{cap}; give up after C{lifetime}."""

    base: float = 60.0
    cap: float = 3600.0
    lifetime: float = 5 * 86400.0

    def delay(self, attempts: int) -> float:
        """Wait after the C{attempts}-th temporary failure."""
        return float(min(self.base * 2 ** max(attempts - 1, 0), self.cap))

    def expired(self, record: SpoolRecord, now: float) -> bool:
        return now - record.received_at >= self.lifetime


@define
class RecipientState:
    recipient: str
    deferrals: int = 0
    last: RecipientResult | None = None
    last_at: float = 0.0

    @property
    def final(self) -> bool:
        return self.last is not None and self.last.status is not RecipientStatus.DEFERRED

    def next_attempt(self, policy: RetryPolicy) -> float:
        """When this recipient may be tried again (0: at once)."""
        return self.last_at + policy.delay(self.deferrals) if self.deferrals else 0.0


@define
class MessageState:
    """One spooled message's recipients and whether its sender was notified."""

    record: SpoolRecord
    recipients: dict[str, RecipientState] = field(factory=dict)
    notice_queued: bool = False
    prepared: bool = False  # the policy pipeline has run
    held: str = ""  # why the message is held (over quota), or ""
    held_at: float = 0.0

    @classmethod
    def fresh(cls, record: SpoolRecord) -> "MessageState":
        return cls(record, {recipient: RecipientState(recipient) for recipient in record.envelope.recipients})

    @classmethod
    def from_journal(cls, record: SpoolRecord, entries: list[JournalEntry]) -> "MessageState":
        state = cls.fresh(record)
        for entry in entries:
            state.apply(entry)
        return state

    def apply(self, entry: JournalEntry) -> None:
        if entry.event:
            self._event(entry)
            return
        result = entry.result
        if result is None or result.recipient not in self.recipients:
            return
        state = self.recipients[result.recipient]
        state.last, state.last_at = result, entry.at
        if result.status is RecipientStatus.DEFERRED:
            state.deferrals += 1

    def _event(self, entry: JournalEntry) -> None:
        if entry.event == NOTICE_QUEUED:
            self.notice_queued = True
        elif entry.event == PREPARED:
            self.prepared = True
        elif entry.event == HELD:
            self.held, self.held_at, self.prepared = entry.detail or "held", entry.at, True
        elif entry.event == RELEASED:
            self.held, self.prepared = "", False

    def due(self, now: float, policy: RetryPolicy) -> list[str]:
        """Recipients not yet final whose next attempt time has come (none before the
        pipeline has run, or while the message is held)."""
        if not self.prepared or self.held:
            return []
        return [state.recipient for state in self.recipients.values()
                if not state.final and state.next_attempt(policy) <= now]

    def next_due(self, policy: RetryPolicy) -> float | None:
        """The earliest future attempt time of a waiting recipient, if any."""
        if not self.prepared or self.held:
            return None
        times = [state.next_attempt(policy) for state in self.recipients.values() if not state.final]
        return min(times) if times else None

    @property
    def finished(self) -> bool:
        return all(state.final for state in self.recipients.values())

    def suppressed(self) -> list[str]:
        return [state.recipient for state in self.recipients.values()
                if state.last is not None and state.last.status is RecipientStatus.SUPPRESSED]

    def failed(self) -> list[RecipientResult]:
        return [state.last for state in self.recipients.values()
                if state.last is not None and state.last.status is RecipientStatus.FAILED]
