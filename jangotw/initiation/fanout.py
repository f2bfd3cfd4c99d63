# -*- test-case-name: tests.integration.test_initiation -*-
"""Sending an accepted initiation message to every member of its list.

The campaign body is the received message minus its transport headers, with
the list's From when it has one. Members are read a page at a time: each page
is checked against the Bounce and Unsubscribe lists and the monthly quota, and
what remains is spooled as one batch message (delivered like any other mail,
one personalised copy per member by the renderer). Progress is saved in
C{spool/campaigns/<id>.json} around each batch, so a restart resumes the
campaign without spooling any member twice: the batch's queue id is saved
before it is committed, and a restart that finds that batch committed counts
its page as done (recovery has queued it) instead of spooling it again; a
batch is handed to the queue only after the progress naming it is on disk. A
crash between charging the quota and committing a batch charges that page
again. A confirmation goes to the sender.
"""
from __future__ import annotations

import json
import os
from contextlib import suppress
from email.utils import formataddr, parseaddr
from typing import Any, Callable

from attrs import asdict, define, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ..interfaces import IListStore, IStore
from ..model import (BOUNCE_LIST, UNSUBSCRIBE_LIST, AuthMethod, Envelope, Notice, RecipientResult,
                     RecipientStatus, SpoolRecord)
from ..pipeline.quota import month_of
from ..spool.layout import INCOMING
from ..spool.writer import Spool

__all__ = ["Campaigns", "CampaignProgress", "PAGE"]

log = Logger()

PAGE = 1000  # members per page and per batch message
_TRANSPORT = {b"received", b"return-path", b"dkim-signature", b"authentication-results", b"to",
              b"x-original-to", b"delivered-to", b"from", b"cc", b"bcc"}


@define
class CampaignProgress:
    """What a campaign has done so far (saved after every batch)."""

    id: str
    account: str
    list_name: str
    subject: str
    sender: str
    members: int = 0
    queued: int = 0
    suppressed: int = 0
    over_quota: int = 0
    invalid: int = 0
    cursor: str | None = None  # the last member address handled
    done: bool = False
    quota_reached: bool = False  # once a page did not fit, the rest of the list is over quota too
    pending: str | None = None  # queue id of the batch being committed: this progress counts it
    previous: dict[str, Any] | None = None  # the progress before that batch, if it never committed


def _header_block(path: str) -> tuple[list[bytes], int]:
    """The message's header lines (unfolded fields kept raw) and the offset of its body."""
    with open(path, "rb") as handle:
        head = handle.read(1024 * 1024)
    end = head.find(b"\r\n\r\n")
    block = head[: end + 2] if end >= 0 else head
    fields: list[bytes] = []
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        elif line:
            fields.append(line)
    return fields, (end + 4 if end >= 0 else len(head))


def _write_body(source: str, target: str, from_header: str) -> int:
    """The campaign body: transport headers dropped, the list's From set; the body copied in chunks."""
    fields, offset = _header_block(source)
    kept = [field for field in fields if field.partition(b":")[0].strip().lower() not in _TRANSPORT]
    with open(source, "rb") as reading, open(target + ".tmp", "wb") as writing:
        writing.write(f"From: {from_header}\r\n".encode("utf-8"))
        writing.write(b"".join(field + b"\r\n" for field in kept) + b"\r\n")
        reading.seek(offset)
        for chunk in iter(lambda: reading.read(256 * 1024), b""):
            writing.write(chunk)
        writing.flush()
        os.fsync(writing.fileno())
        size = writing.tell()
    os.replace(target + ".tmp", target)
    return size


def _save(path: str, progress: CampaignProgress) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(asdict(progress), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


@frozen
class Campaigns:
    store: IStore
    lists: IListStore
    spool: Spool
    clock: IReactorTime
    enqueue: Callable[[SpoolRecord], None]
    notify: Callable[[str | None, Notice], "Deferred[SpoolRecord]"]
    directory: str

    def start(self, record: SpoolRecord, recipients: list[str]) -> "Deferred[list[RecipientResult]]":
        """Fan an initiation message out (resuming a campaign a crash interrupted)."""
        return Deferred.fromCoroutine(self._start(record, recipients))

    def _blocking(self, function: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        return deferToThreadPool(self.spool.reactor, self.spool.threadpool, function, *args)

    async def _start(self, record: SpoolRecord, recipients: list[str]) -> list[RecipientResult]:
        assert record.account is not None
        os.makedirs(self.directory, exist_ok=True)
        state_path = os.path.join(self.directory, f"{record.message_id}.json")
        body_path = os.path.join(self.directory, f"{record.message_id}.body")
        saved = await self._blocking(_load, state_path)
        contact_list = await self.lists.get_list(record.account, record.initiation_list)
        if contact_list is None:
            return [RecipientResult(r, RecipientStatus.FAILED, 550, "5.1.1", "the list no longer exists")
                    for r in recipients]
        if saved is None:
            headers, _ = await self._blocking(_header_block, self.spool.body_path(record.message_id))
            subject = next((f.partition(b":")[2].strip().decode("utf-8", "replace") for f in headers
                            if f.lower().startswith(b"subject:")), "")
            progress = CampaignProgress(record.message_id, record.account, contact_list.name, subject,
                                        record.envelope.sender)
        else:
            progress = await self._resumed(saved)
        from_header = (formataddr((contact_list.from_name, contact_list.from_address))
                       if contact_list.from_address else formataddr(parseaddr(progress.sender)))
        size = await self._blocking(_write_body, self.spool.body_path(record.message_id), body_path, from_header)
        while not progress.done:
            page = await self.lists.members(record.account, contact_list.name, after=progress.cursor, limit=PAGE)
            batch = None
            if not page:
                progress.done = True
            else:
                batch = await self._batch(record, progress, [m.address for m in page], body_path, size,
                                          contact_list.from_address, state_path)
                progress.cursor = page[-1].address
            await self._record(state_path, progress)
            if batch is not None:
                self.enqueue(batch)  # only now: the saved progress counts it
        with suppress(FileNotFoundError):
            os.unlink(body_path)
        await self._confirm(record, progress)
        log.info("campaign {message_id} to {list} of {account}: {queued} queued of {members}",
                 message_id=record.message_id, list=progress.list_name, account=progress.account,
                 queued=progress.queued, members=progress.members)
        return [RecipientResult(r, RecipientStatus.DELIVERED, 250, "2.0.0",
                                f"mailing queued for {progress.queued} of {progress.members} members")
                for r in recipients]

    async def _record(self, state_path: str, progress: CampaignProgress) -> None:
        """Save progress: on this node's disk (what a restart resumes from), then in the store
        (what every node and C{campaign list} show)."""
        await self._blocking(_save, state_path, progress)
        await self.lists.save_campaign(progress.account, progress.id, json.dumps(asdict(progress)))

    async def _resumed(self, saved: dict[str, Any]) -> CampaignProgress:
        """The progress to go on from: a batch interrupted in its commit counts if it was
        committed (recovery has queued it), else its page is done again."""
        progress = CampaignProgress(**saved)
        if progress.pending is not None:
            committed = await self._blocking(os.path.exists, self.spool.layout.envelope(INCOMING, progress.pending))
            if not committed and progress.previous is not None:
                return CampaignProgress(**progress.previous)
            progress.pending = progress.previous = None
        return progress

    async def _batch(self, record: SpoolRecord, progress: CampaignProgress, addresses: list[str],
                     body_path: str, size: int, list_from: str, state_path: str) -> SpoolRecord | None:
        """Check one page and spool what remains as one batch; the caller queues it once the
        progress that counts it is saved."""
        account = progress.account
        previous = asdict(progress)
        progress.members += len(addresses)
        valid = [a for a in addresses if "@" in a and " " not in a and len(a) <= 254]
        progress.invalid += len(addresses) - len(valid)
        settings = (await self.store.get_account(account)).settings  # type: ignore[union-attr]
        blocked = await self.store.suppressed(account, BOUNCE_LIST, valid)
        if not settings.bypass_unsubscribe:
            blocked |= await self.store.suppressed(account, UNSUBSCRIBE_LIST, valid)
        progress.suppressed += len(blocked)
        rest = [a for a in valid if a not in blocked]
        if not rest:
            return None
        if progress.quota_reached:
            progress.over_quota += len(rest)
            return None
        if settings.monthly_messages or settings.monthly_bytes:
            charged = await self.store.charge(account, month_of(self.clock.seconds()), len(rest), size * len(rest),
                                              settings.monthly_messages, settings.monthly_bytes,
                                              settings.overage_allowed)
            if not charged.charged:
                progress.over_quota += len(rest)
                progress.quota_reached = True
                return None
        spool_file = self.spool.open()
        progress.queued += len(rest)
        progress.cursor, progress.pending, progress.previous = addresses[-1], spool_file.message_id, previous
        await self._record(state_path, progress)
        try:
            await self._blocking(_copy_into, body_path, spool_file)
        except OSError:
            spool_file.abort()
            raise
        batch = await spool_file.commit(SpoolRecord(
            message_id=spool_file.message_id,
            envelope=Envelope(list_from or record.envelope.sender, tuple(rest)),
            account=account, auth_method=AuthMethod.CAMPAIGN, client_ip=record.client_ip, helo=record.helo,
            tls=record.tls, received_at=self.clock.seconds(), size=size, longest_line=record.longest_line))
        progress.pending = progress.previous = None
        return batch

    async def _confirm(self, record: SpoolRecord, progress: CampaignProgress) -> None:
        to = parseaddr(progress.sender)[1] or record.envelope.sender
        if not to:
            return
        text = (f"Your mailing to the list {progress.list_name} has been queued.\n\n"
                f"Subject: {progress.subject}\nMembers: {progress.members}\nQueued: {progress.queued}\n"
                f"Suppressed (Bounce/Unsubscribe lists): {progress.suppressed}\nOver quota: {progress.over_quota}\n"
                f"Invalid addresses: {progress.invalid}\n")
        notice = await self.notify(progress.account, Notice(to, f"Mailing queued: {progress.subject}", text))
        self.enqueue(notice)


def _copy_into(path: str, spool_file: Any) -> None:
    """Copy the campaign body into a spool file (runs in the spool pool; the file is ours alone)."""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(256 * 1024), b""):
            spool_file.write(chunk)
