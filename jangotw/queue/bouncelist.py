# -*- test-case-name: tests.queue.test_manager -*-
"""Putting addresses on an account's Bounce list, for synchronous and asynchronous bounces alike."""
from __future__ import annotations

from ..interfaces import IStore
from ..model import BOUNCE_LIST

__all__ = ["hard_bounce", "soft_bounce"]


async def hard_bounce(store: IStore, account: str, address: str, reason: str) -> None:
    """The address is invalid: it joins the Bounce list at once."""
    await store.suppress(account, BOUNCE_LIST, address, reason)


async def soft_bounce(store: IStore, account: str, address: str, reason: str) -> int:
    """Count a soft bounce; the address joins the Bounce list at the account's
    C{soft_bounce_limit}. Returns the count."""
    count = await store.count_soft_bounce(account, address)
    settings = await store.get_account(account)
    if settings is not None and count >= settings.settings.soft_bounce_limit:
        await store.suppress(account, BOUNCE_LIST, address, f"{count} soft bounces; last: {reason}")
    return count
