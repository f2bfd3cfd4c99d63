# -*- test-case-name: tests.integration.test_sender_verification -*-
"""A spool file whose writes also go to a scratch copy, for a check at end of DATA that reads the body.

Mail authorised only by its From address may need its DKIM signatures
verified before the reply, and the spool file cannot be read back until it is
committed; so the receiver writes through L{CopyingSpoolFile} into both. The
copy is an unnamed scratch file (L{jangotw.senders.verification.FromVerification.open_copy}),
written through a buffer on the reactor thread like the spool file, and gone
when closed. Only such sessions pay for it.
"""
from __future__ import annotations

from typing import BinaryIO

from attrs import frozen
from twisted.internet.defer import Deferred
from zope.interface import implementer

from ..interfaces import ISpoolFile
from ..model import SpoolRecord

__all__ = ["CopyingSpoolFile"]


@implementer(ISpoolFile)
@frozen
class CopyingSpoolFile:
    """Writes to C{spool_file} and to C{copy}; commit and abort are the spool file's."""

    spool_file: ISpoolFile
    copy: BinaryIO

    @property
    def message_id(self) -> str:
        return str(self.spool_file.message_id)

    @property
    def size(self) -> int:
        return int(self.spool_file.size)

    def write(self, data: bytes) -> None:
        """@raise OSError: either write failed (e.g. disk full); the caller aborts."""
        self.spool_file.write(data)
        self.copy.write(data)

    def commit(self, record: SpoolRecord) -> "Deferred[SpoolRecord]":
        committed: "Deferred[SpoolRecord]" = self.spool_file.commit(record)
        return committed

    def abort(self) -> None:
        self.spool_file.abort()
