# -*- test-case-name: tests.admin.test_reports -*-
"""Sending reports for C{jangomail-admin report ACCOUNT [--message ID]}.

What an account (or one of its messages) did: sends, opens, clicks,
unsubscribes and bounces, counted from the stored tracking events, and for the
whole account how many addresses its Bounce and Unsubscribe lists hold. Opens
and clicks are events, not people: a recipient who opens a message three times
counts three times, and mail clients that block images count not at all.
"""
from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred

from ..errors import InputError
from ..interfaces import IStore
from ..model import BOUNCE_LIST, UNSUBSCRIBE_LIST

__all__ = ["ReportAdmin", "render_report", "COUNTED"]

# Report key -> the tracking event kind it counts, in the order reports show them.
COUNTED: dict[str, str] = {
    "sends": "send",
    "opens": "open",
    "clicks": "click",
    "unsubscribes": "unsubscribe",
    "bounces": "bounce",
}


@frozen
class ReportAdmin:
    """Answers report commands with JSON-able dictionaries."""

    store: IStore

    def report(self, account: str, message_id: str | None = None) -> "Deferred[dict[str, Any]]":
        """Fire with the counts of C{account}, or of its message C{message_id}.

        The answer has C{account} (as stored), C{message_id} (or None), one count per
        key of L{COUNTED} (zero when nothing happened), and for a whole-account report
        C{bounce_list} and C{unsubscribe_list}: the sizes of those lists.

        Fails with L{InputError} for an unknown account.
        """
        return Deferred.fromCoroutine(self._report(account, message_id))

    async def _report(self, account: str, message_id: str | None) -> dict[str, Any]:
        found = await self.store.get_account(account)
        if found is None:
            raise InputError(f"no account named {account!r}")
        name = found.name
        message = message_id.strip() if message_id else None
        events = await self.store.event_counts(name, message)
        answer: dict[str, Any] = {"account": name, "message_id": message}
        answer.update({key: events.get(kind, 0) for key, kind in COUNTED.items()})
        if message is None:
            answer["bounce_list"] = len(await self.store.list_suppressed(name, BOUNCE_LIST))
            answer["unsubscribe_list"] = len(await self.store.list_suppressed(name, UNSUBSCRIBE_LIST))
        return answer


def render_report(answer: dict[str, Any]) -> str:
    """The text form of a L{ReportAdmin.report} answer, one figure a line."""
    subject = answer["account"] if answer.get("message_id") is None else \
        f"message {answer['message_id']} of {answer['account']}"
    rows = [(key, answer[key]) for key in COUNTED]
    if "bounce_list" in answer:
        rows += [("on Bounce list", answer["bounce_list"]), ("on Unsubscribe list", answer["unsubscribe_list"])]
    width = max(len(label) for label, _ in rows)
    return "\n".join([f"report for {subject}:", *(f"  {label:<{width}}  {value:>8}" for label, value in rows)])
