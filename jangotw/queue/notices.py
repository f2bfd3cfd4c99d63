# -*- test-case-name: tests.queue.test_manager -*-
"""Telling a sender that delivery failed: a DSN written into the spool like any other message."""
from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool

from ..model import AuthMethod, Envelope, Notice, RecipientResult, SpoolRecord
from ..spool.writer import Spool
from .dsn import build_dsn, original_header_block

__all__ = ["Notices"]


@frozen
class Notices:
    spool: Spool
    clock: IReactorTime
    hostname: str

    def wanted(self, record: SpoolRecord) -> bool:
        """Never notify the null sender (RFC 5321 6.1) or about our own notices (no loops)."""
        return bool(record.envelope.sender) and record.auth_method is not AuthMethod.NOTICE

    def queue_failure_notice(self, record: SpoolRecord, failed: list[RecipientResult]) -> "Deferred[SpoolRecord]":
        """Spool a DSN to the original sender; fires with its record once it is durable."""
        return Deferred.fromCoroutine(self._queue(record, failed))

    async def _queue(self, record: SpoolRecord, failed: list[RecipientResult]) -> SpoolRecord:
        headers = await self.header_block(record)
        now = self.clock.seconds()
        data = build_dsn(original_headers=headers, record=record, failed=failed, reporting_mta=self.hostname,
                         arrival=record.received_at, now=now, postmaster=f"postmaster@{self.hostname}")
        return await self._spool(record.account, record.envelope.sender, data)

    def header_block(self, record: SpoolRecord) -> "Deferred[bytes]":
        """The header section of a spooled message, read in the spool pool."""
        return deferToThreadPool(self.spool.reactor, self.spool.threadpool,
                                 original_header_block, self.spool.body_path(record.message_id))

    def queue_notice(self, account: str | None, notice: Notice) -> "Deferred[SpoolRecord]":
        """Spool a plain-text notification (suppression, quota) from the mail system."""
        message = EmailMessage(policy=SMTP)
        message["From"] = f"Mail Delivery System <postmaster@{self.hostname}>"
        message["To"] = notice.to
        message["Subject"] = notice.subject
        message["Date"] = formatdate(self.clock.seconds())
        message["Message-ID"] = make_msgid(domain=self.hostname)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: never answered automatically
        message.set_content(notice.text)
        return Deferred.fromCoroutine(self._spool(account, notice.to, message.as_bytes()))

    async def _spool(self, account: str | None, to: str, data: bytes) -> SpoolRecord:
        now = self.clock.seconds()
        spool_file = self.spool.open()
        try:
            spool_file.write(data)
        except OSError:
            spool_file.abort()
            raise
        return await spool_file.commit(SpoolRecord(
            message_id=spool_file.message_id,
            envelope=Envelope(sender="", recipients=(to,)),
            account=account,
            auth_method=AuthMethod.NOTICE,
            client_ip="127.0.0.1",
            helo=self.hostname,
            tls=None,
            received_at=now,
            size=len(data),
        ))
