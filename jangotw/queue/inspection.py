# -*- test-case-name: tests.admin.test_queue -*-
"""Reading the queue from the spool directory without changing it (for jangomail-admin).

Unlike recovery, nothing here deletes or moves a file, so it is safe while the
server runs; a message the server finishes meanwhile simply disappears.
"""
from __future__ import annotations

import json
import os

from ..model import SpoolRecord
from ..spool.journal import DeliveryJournal
from ..spool.layout import ENVELOPE, INCOMING, is_queue_id
from .state import MessageState

__all__ = ["queued_messages", "queued_message"]


def queued_message(journal: DeliveryJournal, message_id: str) -> MessageState | None:
    """One queued message with its recipients' states, or None (blocking)."""
    if not is_queue_id(message_id):
        return None
    try:
        with open(journal.layout.envelope(INCOMING, message_id), "rb") as handle:
            record = SpoolRecord.from_json(json.loads(handle.read()))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return MessageState.from_journal(record, journal.read_now(message_id))


def queued_messages(journal: DeliveryJournal) -> list[MessageState]:
    """Every queued message, oldest first (blocking)."""
    try:
        names = sorted(os.listdir(journal.layout.directory(INCOMING)))
    except FileNotFoundError:
        return []
    found = (queued_message(journal, name[: -len(ENVELOPE)]) for name in names if name.endswith(ENVELOPE))
    return [state for state in found if state is not None]
