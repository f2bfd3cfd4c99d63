# -*- test-case-name: tests.pipeline.test_suppression -*-
"""Never deliver to an address on the account's Bounce or Unsubscribe list.

The message is still accepted (as the hosted relay does); the suppressed
recipients are skipped and the message's From address and/or the account's
manager get the notification texts JangoMail's users know.
"""
from __future__ import annotations

from attrs import frozen
from twisted.internet.defer import Deferred

from ..errors import BOUNCED_TEXT, UNSUBSCRIBED_TEXT, ConfigError
from ..interfaces import ISuppressionStore
from ..model import BOUNCE_LIST, UNSUBSCRIBE_LIST, Notice, PipelineWork

__all__ = ["Suppression", "read_blocklist"]

SERVER_BLOCK = "server block"
SERVER_BLOCKED_TEXT = "Email address is on the server's block list."
_TEXTS = {BOUNCE_LIST: BOUNCED_TEXT, UNSUBSCRIBE_LIST: UNSUBSCRIBED_TEXT, SERVER_BLOCK: SERVER_BLOCKED_TEXT}


def read_blocklist(path: str) -> frozenset[str]:
    """Entries of a block-list file, lower-cased (blocking; start-up)."""
    if not path:
        return frozenset()
    try:
        with open(path, encoding="utf-8") as handle:
            lines = (line.split("#", 1)[0].strip().lower() for line in handle)
            return frozenset(line for line in lines if line)
    except OSError as error:
        raise ConfigError(f"delivery.blocklist_file: cannot read {path}: {error.strerror}") from None


def _blocked(recipient: str, blocklist: frozenset[str]) -> bool:
    address = recipient.lower()
    return address in blocklist or "@" + address.rpartition("@")[2] in blocklist


@frozen
class Suppression:
    name = "suppression"
    lists: ISuppressionStore
    blocklist: frozenset[str] = frozenset()  # server-wide: [delivery] blocklist_file

    def process(self, work: PipelineWork) -> "Deferred[PipelineWork]":
        return Deferred.fromCoroutine(self._process(work))

    async def _process(self, work: PipelineWork) -> PipelineWork:
        account = work.account
        if account is None or not work.recipients:
            return work
        for recipient in [r for r in work.recipients if _blocked(r, self.blocklist)]:
            work = work.without(recipient, "server block").notify(
                *self._notices(work, recipient, SERVER_BLOCK))
        checked = [BOUNCE_LIST] + ([] if account.settings.bypass_unsubscribe else [UNSUBSCRIBE_LIST])
        for list_name in checked:
            for recipient in sorted(await self.lists.suppressed(account.name, list_name, work.recipients)):
                if recipient in work.recipients:
                    work = work.without(recipient, list_name).notify(*self._notices(work, recipient, list_name))
        return work

    def _notices(self, work: PipelineWork, recipient: str, list_name: str) -> list[Notice]:
        settings = work.account.settings  # type: ignore[union-attr]
        targets = []
        if settings.notify_sender_of_suppression and work.headers.get("from-address"):
            targets.append(work.headers["from-address"])
        if settings.notify_manager_of_suppression and settings.manager_email:
            targets.append(settings.manager_email)
        text = (f"{_TEXTS[list_name]}\n\nRecipient: {recipient}\nSubject: {work.headers.get('subject', '')}\n"
                f"Date: {work.headers.get('date', '')}\n")
        subject = f"Not delivered to {recipient}: address is on the {list_name} list"
        return [Notice(target, subject, text) for target in dict.fromkeys(targets)]
