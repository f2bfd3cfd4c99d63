# -*- test-case-name: tests.pipeline.test_runner -*-
"""Runs the configured stages in order on each new message, as a chain of Deferreds.

Order (the policy issue's): account settings → suppression → quota → (rewrite
stages). A stage that fails is logged and the message is held back for a retry
rather than sent unchecked.
"""
from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import default
from email.utils import parseaddr
from typing import Callable

from attrs import frozen
from twisted.internet.defer import Deferred

from ..interfaces import IAccountStore
from ..model import PipelineWork, SpoolRecord
from .stages import Stage

__all__ = ["Pipeline", "summary_headers"]


def summary_headers(header_block: bytes) -> dict[str, str]:
    """From address, Subject and Date of a message, decoded (RFC 2047), for notices."""
    parsed = BytesHeaderParser(policy=default).parsebytes(header_block)
    found: dict[str, str] = {}
    for name in ("from", "subject", "date"):
        try:
            value = parsed.get(name)
        except (ValueError, IndexError, TypeError):  # a header the parser cannot make sense of
            value = None
        if value is not None:
            found[name] = " ".join(str(value).split())
    address = parseaddr(found.get("from", ""))[1]
    if "@" in address:
        found["from-address"] = address
    return found


@frozen
class Pipeline:
    stages: tuple[Stage, ...]
    accounts: IAccountStore
    headers: Callable[[SpoolRecord], "Deferred[dict[str, str]]"]  # summary_headers, read off the reactor thread

    def prepare(self, record: SpoolRecord, recipients: tuple[str, ...]) -> "Deferred[PipelineWork]":
        """Run every stage on a message for C{recipients} (those not yet final)."""
        return Deferred.fromCoroutine(self._prepare(record, recipients))

    async def _prepare(self, record: SpoolRecord, recipients: tuple[str, ...]) -> PipelineWork:
        account = await self.accounts.get_account(record.account) if record.account else None
        headers = await self.headers(record) if account is not None else {}
        work = PipelineWork(record=record, account=account, headers=headers, recipients=recipients)
        for stage in self.stages:
            work = await stage.process(work)
            if work.held:
                break
        return work
