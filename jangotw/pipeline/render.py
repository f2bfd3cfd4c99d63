# -*- test-case-name: tests.pipeline.test_render -*-
"""The rewrite stages, applied when an attempt starts: wrap, tracking, unsubscribe, DKIM.

Rewritten copies are made from the spooled original (never edited) into
C{spool/render/} just before delivery and deleted with the message. Nothing
about them needs to survive a crash: every token is derived from the queue id
and recipient index, so a retry or a restart renders the same message again
(only the DKIM signature's timestamp differs). A message that needs no
rewriting is delivered straight from the spool, with no copy at all; one that
needs only wrapping or signing gets one copy shared by all its recipients;
tracking and unsubscribe links make one copy per recipient. Mail whose From
address was verified at receipt gets the C{Authentication-Results} field
recorded then (replacing any the client wrote), before it is signed.
"""
from __future__ import annotations

import glob
import os
from contextlib import suppress
from typing import Callable

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..interfaces import IStore
from ..model import Account, AuthMethod, DomainKey, SpoolRecord
from ..tracking.links import TokenSigner, TrackingUrls, account_base_url
from .dkim import sign_message, signing_keys_for
from .rewrite import RewritePlan, RewriteReport, rewrite
from .runner import summary_headers

__all__ = ["Renderer", "Rendering", "MAX_LINE"]

log = Logger()

MAX_LINE = 998  # RFC 5321: longer body lines are re-encoded

Rendering = list[tuple[tuple[str, ...], "str | None"]]  # recipients sharing a body; None: the spooled original


@frozen
class Renderer:
    store: IStore
    signer: TokenSigner
    base_url: str  # [tracking] base_url; an account's tracking_domain overrides it
    bounce_domain: str  # List-Unsubscribe also offers mailto:unsubscribe+ID@<bounce_domain> when set
    directory: str
    read_headers: Callable[[SpoolRecord], "Deferred[bytes]"]
    spool_body: Callable[[str], str]  # queue id -> path of the spooled bytes
    reactor: IReactorFromThreads
    clock: IReactorTime
    cpu_pool: ThreadPool
    # Messages whose link destinations are stored: every copy of a message has the same
    # links (personalisation changes tokens, not destinations), so one write serves them all.
    _links_recorded: set[str] = field(factory=set, init=False)

    def prepare_directory(self) -> None:
        """Start empty: copies left by a crash are made again when needed (blocking, start-up)."""
        os.makedirs(self.directory, exist_ok=True)
        for path in glob.glob(os.path.join(self.directory, "*")):
            os.unlink(path)

    def render(self, record: SpoolRecord, recipients: list[str]) -> "Deferred[Rendering]":
        """Group C{recipients} by the body each must receive, making the copies needed."""
        return Deferred.fromCoroutine(self._render(record, recipients))

    def discard(self, message_id: str) -> None:
        """Delete a finished message's copies."""
        self._links_recorded.discard(message_id)
        for path in glob.glob(os.path.join(self.directory, f"{message_id}.*")):
            with suppress(FileNotFoundError):
                os.unlink(path)

    async def _render(self, record: SpoolRecord, recipients: list[str]) -> Rendering:
        account = await self.store.get_account(record.account) if record.account else None
        if account is None:
            return [(tuple(recipients), None)]
        headers = summary_headers(await self.read_headers(record))
        keys = await signing_keys_for(self.store, headers.get("from-address", ""))
        settings = account.settings
        campaign = record.auth_method is AuthMethod.CAMPAIGN  # list mail: To and List-Unsubscribe per member
        personal = campaign or settings.open_tracking or settings.click_tracking or settings.list_unsubscribe
        wrap = 0 < settings.wrap < record.longest_line
        if not (personal or wrap or keys or record.authentication_results or record.longest_line > MAX_LINE):
            return [(tuple(recipients), None)]
        if not personal:
            path = await self._copy(record, account, keys, None, "all")
            return [(tuple(recipients), path)]
        positions = {recipient: index for index, recipient in enumerate(record.envelope.recipients)}
        rendering: Rendering = []
        for recipient in recipients:
            path = await self._copy(record, account, keys, positions[recipient], str(positions[recipient]))
            rendering.append(((recipient,), path))
        return rendering

    async def _copy(self, record: SpoolRecord, account: Account, keys: list[DomainKey],
                    index: int | None, name: str) -> str:
        path = os.path.join(self.directory, f"{record.message_id}.{name}")
        plan = self._plan(record, account, index)
        report: RewriteReport = await deferToThreadPool(
            self.reactor, self.cpu_pool, _rewrite_file, self.spool_body(record.message_id), path + ".tmp", plan)
        if report.destinations and record.message_id not in self._links_recorded:
            await self.store.record_links(record.message_id, report.destinations)
            self._links_recorded.add(record.message_id)
        if keys:
            signed = await deferToThreadPool(self.reactor, self.cpu_pool, sign_message, path + ".tmp", path, keys,
                                             self.clock.seconds())
            if signed:
                os.unlink(path + ".tmp")
                return path
            log.warn("DKIM signing of {message_id} with {domain} failed; sending unsigned",
                     message_id=record.message_id, domain=keys[0].domain)
        os.replace(path + ".tmp", path)
        return path

    def _plan(self, record: SpoolRecord, account: Account, index: int | None) -> RewritePlan:
        settings = account.settings
        urls = self._urls(account) if index is not None else None
        message_id = record.message_id
        headers: tuple[tuple[str, str], ...] = ()
        campaign = record.auth_method is AuthMethod.CAMPAIGN
        if campaign and index is not None:
            headers = (("To", record.envelope.recipients[index]),)
        if record.authentication_results:  # ours replaces any the client wrote (RFC 8601 5)
            headers += (("Authentication-Results", record.authentication_results),)
        if urls is not None and (settings.list_unsubscribe or campaign):
            # RFC 8058: the header URL is the unsubscribe URL itself, never a tracking redirect.
            targets = [f"<{urls.unsubscribe(message_id, index)}>"]  # type: ignore[arg-type]
            if self.bounce_domain:
                unique = self.signer.unsubscribe_id(message_id, index)  # type: ignore[arg-type]
                targets.append(f"<mailto:unsubscribe+{unique}@{self.bounce_domain}>")
            headers += (("List-Unsubscribe", ", ".join(targets)),
                        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        return RewritePlan(
            wrap=settings.wrap,
            click_url=(lambda url, link: urls.click(message_id, index, link))  # type: ignore[union-attr, arg-type]
            if urls is not None and settings.click_tracking else None,
            click_text=settings.click_tracking_text,
            open_pixel=urls.open_pixel(message_id, index) if urls is not None and settings.open_tracking else None,  # type: ignore[arg-type]
            unique_id=self.signer.unsubscribe_id(message_id, index) if index is not None else None,
            headers_to_add=headers,
            headers_to_remove=frozenset(name.lower() for name, _ in headers),  # ours replace the client's
        )


    def _urls(self, account: Account) -> TrackingUrls | None:
        """The account's tracking base (its custom domain, else the server's); None without one."""
        base = account_base_url(account.settings.tracking_domain, self.base_url)
        if not base:
            return None
        try:
            return TrackingUrls(base, self.signer)
        except ValueError:
            log.warn("tracking_domain {domain!r} of {account} is not usable; using {base}",
                     domain=account.settings.tracking_domain, account=account.name, base=self.base_url)
            return TrackingUrls(self.base_url, self.signer) if self.base_url else None


def _rewrite_file(source: str, target: str, plan: RewritePlan) -> RewriteReport:
    with open(source, "rb") as reading, open(target, "wb") as writing:
        return rewrite(reading, writing, plan)

