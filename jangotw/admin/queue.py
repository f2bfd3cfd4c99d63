# -*- test-case-name: tests.admin.test_queue -*-
"""The queue and Bounce list as an administrator sees them: the layer under
C{jangomail-admin queue …} and C{bounces list} (and the coming JSON API)."""
from __future__ import annotations

import datetime
from typing import Any, Callable

from attrs import frozen
from twisted.internet.defer import Deferred

from ..errors import InputError
from ..interfaces import IStore
from ..model import BOUNCE_LIST
from ..queue.control import ALL, DELETE, RESEND_HELD, RETRY, ControlRequests
from ..queue.inspection import queued_message, queued_messages
from ..queue.state import MessageState, RetryPolicy
from ..spool.journal import DeliveryJournal

__all__ = ["QueueAdmin", "SpoolQueue"]

Blocking = Callable[..., "Deferred[Any]"]  # runs a blocking function off the reactor thread


def _time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _summary(state: MessageState, policy: RetryPolicy) -> dict[str, Any]:
    record = state.record
    recipients = state.recipients.values()
    waiting = [r for r in recipients if not r.final]
    last = max((r for r in (waiting or recipients) if r.last is not None), key=lambda r: r.last_at, default=None)
    next_times = [r.next_attempt(policy) for r in waiting]
    return {
        "id": record.message_id,
        "received": _time(record.received_at),
        "account": record.account,
        "sender": record.envelope.sender,
        "size": record.size,
        "recipients": len(state.recipients),
        "waiting": len(waiting),
        "delivered": sum(1 for r in recipients if r.final and r.last and r.last.code < 300),
        "failed": len(state.failed()),
        "last_reply": last.last.reply if last and last.last else "",
        "next_attempt": "" if not next_times else "now" if min(next_times) <= 0 else _time(min(next_times)),
        "held": state.held,
    }


def _detail(state: MessageState, policy: RetryPolicy) -> dict[str, Any]:
    record = state.record
    detail = _summary(state, policy)
    detail.update({
        "client_ip": record.client_ip,
        "auth_method": record.auth_method.value,
        "tls": f"{record.tls.version} {record.tls.cipher}" if record.tls else "",
        "recipient_states": [{
            "address": r.recipient,
            "status": r.last.status.value if r.last else "pending",
            "deferrals": r.deferrals,
            "last_reply": r.last.reply if r.last else "",
            "remote": r.last.remote if r.last else "",
            "next_attempt": "" if r.final else (_time(r.next_attempt(policy)) if r.deferrals else "now"),
        } for r in state.recipients.values()],
    })
    return detail


@frozen
class SpoolQueue:
    """One spool's queue as an administrator reaches it (one per worker, see
    L{jangotw.workers}): its journal to read and its control directory for requests."""

    journal: DeliveryJournal
    control: ControlRequests


def _all_queued(spools: tuple[SpoolQueue, ...]) -> list[MessageState]:
    return sorted((state for spool in spools for state in queued_messages(spool.journal)),
                  key=lambda state: state.record.message_id)  # queue ids sort by arrival


def _find(spools: tuple[SpoolQueue, ...], message_id: str) -> tuple[MessageState, SpoolQueue] | None:
    for spool in spools:
        state = queued_message(spool.journal, message_id)
        if state is not None:
            return state, spool
    return None


@frozen
class QueueAdmin:
    spools: tuple[SpoolQueue, ...]
    store: IStore
    policy: RetryPolicy
    blocking: Blocking

    def list(self, account: str | None = None) -> "Deferred[list[dict[str, Any]]]":
        """Queued messages of every worker's spool, oldest first."""
        def matching(states: list[MessageState]) -> list[dict[str, Any]]:
            wanted = account.lower() if account else None
            return [_summary(s, self.policy) for s in states
                    if wanted is None or (s.record.account or "").lower() == wanted]
        return self.blocking(_all_queued, self.spools).addCallback(matching)

    def show(self, message_id: str) -> "Deferred[dict[str, Any]]":
        return self._queued(message_id).addCallback(lambda found: _detail(found[0], self.policy))

    def retry(self, message_id: str | None) -> "Deferred[dict[str, Any]]":
        """Ask the running server to try now, ignoring backoff (one message, or all when None)."""
        if message_id is None:
            return self.blocking(self._request, self.spools, RETRY, ALL)
        return self._queued(message_id).addCallback(
            lambda found: self.blocking(self._request, (found[1],), RETRY, message_id))

    def delete(self, message_id: str) -> "Deferred[dict[str, Any]]":
        """Ask the running server to drop a message without delivering it further."""
        return self._queued(message_id).addCallback(
            lambda found: self.blocking(self._request, (found[1],), DELETE, message_id))

    def resend_held(self, account: str) -> "Deferred[dict[str, Any]]":
        """Ask the running server to send the account's held (over-quota) mail of the last
        three days again, through the pipeline: raise the limit first."""
        def request(found: Any) -> "Deferred[dict[str, Any]]":
            if found is None:
                raise InputError(f"no account named {account!r}")
            return self.blocking(self._request, self.spools, RESEND_HELD, found.name)
        return self.store.get_account(account).addCallback(request)

    def bounces(self, account: str) -> "Deferred[list[dict[str, Any]]]":
        return self.store.list_suppressed(account, BOUNCE_LIST).addCallback(lambda entries: [
            {"address": e.address, "reason": e.reason, "added": _time(e.created)} for e in entries])

    def _queued(self, message_id: str) -> "Deferred[tuple[MessageState, SpoolQueue]]":
        def found(where: tuple[MessageState, SpoolQueue] | None) -> tuple[MessageState, SpoolQueue]:
            if where is None:
                raise InputError(f"no queued message {message_id!r}")
            return where
        return self.blocking(_find, self.spools, message_id.upper()).addCallback(found)

    @staticmethod
    def _request(spools: tuple[SpoolQueue, ...], action: str, target: str) -> dict[str, Any]:
        for spool in spools:
            spool.control.request(action, target)
        return {"requested": action, "target": target}
