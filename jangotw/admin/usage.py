# -*- test-case-name: tests.admin.test_api_routes -*-
"""An account's monthly quota and what it has used of it, as an administrator reads them.

Usage is counted per calendar month (UTC) by the quota stage
(L{jangotw.pipeline.quota}); the limits are account settings
(C{monthly_messages}, C{monthly_bytes}, C{overage_allowed}), changed like any
other setting.
"""
from __future__ import annotations

import re
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ..errors import InputError
from ..interfaces import IStore
from ..model import Usage
from ..pipeline.quota import month_of

__all__ = ["UsageAdmin", "parse_month"]

JSONDict = dict[str, Any]

_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])\Z")


def parse_month(text: str) -> str:
    """C{YYYY-MM}, as the quota store names months.

    @raise InputError: anything else.
    """
    if not _MONTH.match(text.strip()):
        raise InputError(f"invalid month {text!r}: write YYYY-MM, e.g. 2026-03")
    return text.strip()


def _percent(used: int, limit: int) -> float | None:
    return None if not limit else round(100.0 * used / limit, 1)


@frozen
class UsageAdmin:
    """Reads monthly usage from C{store}; C{clock} says which month is the current one."""

    store: IStore
    clock: IReactorTime

    def usage(self, account: str, month: str | None = None) -> "Deferred[JSONDict]":
        """The account's usage in C{month} (default: the current one) beside its limits.

        Fails with InputError for an unknown account or a malformed month.
        """
        return Deferred.fromCoroutine(self._usage(account, month))

    async def _usage(self, account: str, month: str | None) -> JSONDict:
        chosen = month_of(self.clock.seconds()) if month is None else parse_month(month)
        found = await self.store.get_account(account)
        if found is None:
            raise InputError(f"no account named {account!r}")
        used: Usage = await self.store.usage(found.name, chosen)
        settings = found.settings
        return {
            "account": found.name,
            "month": chosen,
            "messages": used.messages,
            "bytes": used.bytes,
            "overage_messages": used.overage_messages,
            "overage_bytes": used.overage_bytes,
            "monthly_messages": settings.monthly_messages,
            "monthly_bytes": settings.monthly_bytes,
            "overage_allowed": settings.overage_allowed,
            "messages_percent": _percent(used.messages, settings.monthly_messages),
            "bytes_percent": _percent(used.bytes, settings.monthly_bytes),
        }
