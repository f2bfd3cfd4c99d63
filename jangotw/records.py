"""Store records: the state a whole-store copy (C{jangomail-admin store migrate}) moves that no
other store method lists, or writes back exactly.

Each record is one stored row with its account named and its times, counts
and spellings as stored, so a copy reads back the same through every store
interface. A store exports them page by page (L{jangotw.interfaces.IStoreExport})
and imports them as given (L{jangotw.interfaces.IStoreImport}); the rest of
the state (networks, From addresses, domains, list members, default lists,
credentials) is copied through the ordinary interfaces, which already keep
it exactly, except that adding a login or an IP rule stamps the time of the
copy: those are imported as records too (L{CopiedRecord}).
"""
from __future__ import annotations

import attrs
from attrs import frozen

from .model import ContactList, IPRule, Login, Suppression, TrackingEvent, Usage

__all__ = [
    "AccountRecord",
    "SuppressionRecord",
    "SoftBounceRecord",
    "SendRecord",
    "UsageRecord",
    "WarningRecord",
    "LinkRecord",
    "EventRecord",
    "Record",
    "RECORD_KINDS",
    "CopiedRecord",
]


@frozen
class AccountRecord:
    """An account with its creation time and only the settings changed from their defaults
    (as stored: setting name, JSON text), so a copy keeps following the defaults of later versions."""

    name: str
    disabled: bool
    created: float
    settings: tuple[tuple[str, str], ...] = ()
    password_hash: str | None = attrs.field(default=None, repr=False)


@frozen
class SuppressionRecord:
    """A Bounce or Unsubscribe list entry, with the time it was first added."""

    account: str
    entry: Suppression


@frozen
class SoftBounceRecord:
    """Consecutive soft bounces of an address (lower-cased) since its last delivery."""

    account: str
    address: str
    count: int


@frozen
class SendRecord:
    """One recipient of a sent message, by its index in the envelope (VERP tokens name it)."""

    message_id: str
    index: int
    account: str
    recipient: str
    at: float


@frozen
class UsageRecord:
    """An account's usage in one month ("YYYY-MM"), overage included."""

    account: str
    month: str
    usage: Usage


@frozen
class WarningRecord:
    """A level% quota warning already sent for a month."""

    account: str
    month: str
    level: int


@frozen
class LinkRecord:
    """A tracked message's link destination, by index (click tokens carry it)."""

    message_id: str
    index: int
    url: str


@frozen
class EventRecord:
    """An open, click, unsubscribe, send or bounce event of an account."""

    account: str
    event: TrackingEvent


Record = (AccountRecord | ContactList | SuppressionRecord | SoftBounceRecord | SendRecord | UsageRecord
          | WarningRecord | LinkRecord | EventRecord)

#: Every kind, in the order a copy imports them: accounts before what names them.
RECORD_KINDS: tuple[type[Record], ...] = (AccountRecord, ContactList, SuppressionRecord, SoftBounceRecord,
                                          SendRecord, UsageRecord, WarningRecord, LinkRecord, EventRecord)

#: What a store imports: the exported records, and the logins and IP rules that
#: L{jangotw.interfaces.ICredentialStore} lists exactly but adds with a new time.
CopiedRecord = Record | Login | IPRule
