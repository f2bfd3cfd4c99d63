# -*- test-case-name: tests.pipeline.test_quota -*-
"""Monthly quotas: messages (a recipient counts as one) and bytes per calendar month (UTC).

The charge is atomic in the store, so concurrent sessions and nodes never
overshoot. Over the limit, a message is held (kept 3 days, released with
C{jangomail-admin queue resend-held}) and its sender told; "overage allowed"
accounts are charged anyway and the overage is recorded. The manager hears at
80, 90 and 100 %.
"""
from __future__ import annotations

import datetime

import attrs
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ..interfaces import IQuotaStore
from ..model import Notice, PipelineWork, Usage

__all__ = ["Quota", "month_of", "WARNING_LEVELS", "HELD_FOR"]

WARNING_LEVELS = (80, 90, 100)
HELD_FOR = 3 * 86400.0  # held mail can be resent for three days


def month_of(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m")


@frozen
class Quota:
    name = "quota"
    usage: IQuotaStore
    clock: IReactorTime

    def process(self, work: PipelineWork) -> "Deferred[PipelineWork]":
        return Deferred.fromCoroutine(self._process(work))

    async def _process(self, work: PipelineWork) -> PipelineWork:
        account = work.account
        if account is None or not work.recipients:
            return work
        settings = account.settings
        if not (settings.monthly_messages or settings.monthly_bytes):
            return work
        month = month_of(self.clock.seconds())
        count = len(work.recipients)
        charged = await self.usage.charge(account.name, month, count, work.record.size * count,
                                          settings.monthly_messages, settings.monthly_bytes,
                                          settings.overage_allowed)
        work = attrs.evolve(work, side_effects=True)
        if not charged.charged:
            work = attrs.evolve(work, held=f"monthly quota of {account.name} exceeded")
            sender = work.headers.get("from-address")
            if sender:
                work = work.notify(Notice(
                    sender, "Message not delivered: monthly sending limit reached",
                    f"The account {account.name} has reached its monthly sending limit, so this message "
                    f"was not delivered.\n\nSubject: {work.headers.get('subject', '')}\n"
                    f"Date: {work.headers.get('date', '')}\nRecipients: {count}\n\n"
                    "It is held for three days: once the limit is raised, the administrator can resend it."))
            return work
        return work.notify(*await self._warnings(work, month, charged))

    async def _warnings(self, work: PipelineWork, month: str, charged: Usage) -> list[Notice]:
        settings = work.account.settings  # type: ignore[union-attr]
        if not settings.manager_email:
            return []
        shares = [charged.messages / settings.monthly_messages if settings.monthly_messages else 0.0,
                  charged.bytes / settings.monthly_bytes if settings.monthly_bytes else 0.0]
        percent = max(shares) * 100
        notices = []
        for level in WARNING_LEVELS:
            if percent >= level and await self.usage.mark_warning(work.account.name, month, level):  # type: ignore[union-attr]
                notices.append(Notice(
                    settings.manager_email, f"Account {work.account.name} has used {level}% of its monthly limit",  # type: ignore[union-attr]
                    f"Usage in {month}: {charged.messages} messages of {settings.monthly_messages or 'unlimited'}, "
                    f"{charged.bytes} bytes of {settings.monthly_bytes or 'unlimited'}."
                    + (f"\nOverage so far: {charged.overage_messages} messages." if charged.overage_messages else "")))
        return notices
