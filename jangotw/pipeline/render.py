# -*- test-case-name: tests.pipeline.test_render -*-
"""The rewrite stages, applied when an attempt starts: wrap, tracking, unsubscribe, DKIM.

Rewritten copies are made from the spooled original (never edited) into
C{spool/render/} just before delivery and deleted with the message. Nothing
about them needs to survive a crash: every token is derived from the queue id
and recipient index, so a retry or a restart renders the same message again
(only the DKIM signature's timestamp differs). A message that needs no
rewriting is delivered straight from the spool, with no copy at all; one that
needs only wrapping or signing gets one copy shared by all its recipients;
tracking and unsubscribe links make one copy per recipient, all of an
attempt's copies made in one pass from one template (L{jangotw.pipeline.personal}).
Wrapping that could change nothing (no long line has a space to break at) makes
no copy. Mail whose From address was verified at receipt gets the
C{Authentication-Results} field recorded then (replacing any the client wrote),
before it is signed.
"""
from __future__ import annotations

import glob
import os
from typing import Callable

from attrs import Factory, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..interfaces import IStore
from ..model import Account, AuthMethod, DomainKey, SpoolRecord
from ..spool.recycle import Recycler
from ..tracking.links import TokenSigner, TrackingUrls, account_base_url
from .dkim import sign_message, signing_keys_for
from .personal import Copies, write_copies
from .rewrite import RewritePlan, RewriteReport, rewrite
from .summary import Summaries

__all__ = ["Renderer", "Rendering", "MAX_LINE"]

log = Logger()

MAX_LINE = 998  # RFC 5321: longer body lines are re-encoded

Rendering = list[tuple[tuple[str, ...], "str | None"]]  # recipients sharing a body; None: the spooled original
_Fields = tuple[tuple[str, str], ...]


@frozen
class Renderer:
    store: IStore
    signer: TokenSigner
    base_url: str  # [tracking] base_url; an account's tracking_domain overrides it
    bounce_domain: str  # List-Unsubscribe also offers mailto:unsubscribe+ID@<bounce_domain> when set
    directory: str
    summaries: Summaries  # each message's header summary, read once (shared with the pipeline)
    spool_body: Callable[[str], str]  # queue id -> path of the spooled bytes
    reactor: IReactorFromThreads
    clock: IReactorTime
    cpu_pool: ThreadPool
    # Messages whose link destinations are stored: every copy of a message has the same
    # links (personalisation changes tokens, not destinations), so one write serves them all.
    _links_recorded: set[str] = field(factory=set, init=False)
    _copies: dict[str, set[str]] = field(factory=dict, init=False)  # queue id -> copies made
    _recycler: Recycler = field(init=False, default=Factory(lambda self: Recycler(self.directory), takes_self=True))

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
        self.summaries.forget(message_id)
        for path in self._copies.pop(message_id, ()):
            self._recycler.give(path)

    def release(self, paths: list[str]) -> None:
        """Personal copies that were sent: park their files for the next copies (a copy shared
        by all recipients may still be in use by another attempt and stays until L{discard})."""
        for path in paths:
            message_id, _, name = os.path.basename(path).partition(".")
            made = self._copies.get(message_id, set())
            if name.isdigit() and path in made:
                made.discard(path)
                made.discard(path + ".tmp")
                self._recycler.give(path)

    async def _render(self, record: SpoolRecord, recipients: list[str]) -> Rendering:
        account = await self.store.get_account(record.account) if record.account else None
        if account is None:
            return [(tuple(recipients), None)]
        summary = await self.summaries.of(record)
        keys = await signing_keys_for(self.store, summary.headers.get("from-address", ""))
        settings = account.settings
        campaign = record.auth_method is AuthMethod.CAMPAIGN  # list mail: To and List-Unsubscribe per member
        personal = campaign or settings.open_tracking or settings.click_tracking or settings.list_unsubscribe
        breakable = summary.breakable_line
        wrap = settings.wrap if 0 < settings.wrap < record.longest_line and (
            breakable is None or settings.wrap < breakable) else 0
        if not (personal or wrap or keys or record.authentication_results or record.longest_line > MAX_LINE):
            return [(tuple(recipients), None)]
        if not personal:
            path = await self._copy(record, self._plan(record, account, wrap, None), keys, "all")
            return [(tuple(recipients), path)]
        positions = {recipient: index for index, recipient in enumerate(record.envelope.recipients)}
        paths = await self._personal(record, account, keys, wrap, [positions[r] for r in recipients])
        return [((recipient,), path) for recipient, path in zip(recipients, paths)]

    async def _copy(self, record: SpoolRecord, plan: RewritePlan, keys: list[DomainKey], name: str) -> str:
        path = self._path(record.message_id, name)
        report: RewriteReport = await deferToThreadPool(
            self.reactor, self.cpu_pool, _rewrite_file, self.spool_body(record.message_id), path + ".tmp", plan,
            self._recycler)
        await self._record_links(record, report)
        return await self._signed(record, keys, path)

    async def _personal(self, record: SpoolRecord, account: Account, keys: list[DomainKey], wrap: int,
                        indexes: list[int]) -> list[str]:
        """Every recipient's copy, made in one pass of the cpu pool (L{write_copies}), signed in another."""
        message_id, urls, signer = record.message_id, self._urls(account), self.signer
        paths = [self._path(message_id, str(index)) for index in indexes]

        def tokens(index: int, links: int) -> list[str]:
            return [signer.unsubscribe_id(message_id, index), signer.open_token(message_id, index),
                    *(signer.link_token(message_id, index, link) for link in range(links))]
        copies = Copies(indexes=indexes, paths=[path + ".tmp" for path in paths] if keys else paths,
                        plan=lambda index: self._plan(record, account, wrap, index, urls),
                        fields=lambda index: self._fields(record, account, index, urls), tokens=tokens,
                        reuse=self._recycler.take)
        report, _ = await deferToThreadPool(self.reactor, self.cpu_pool, write_copies,
                                            self.spool_body(message_id), copies)
        await self._record_links(record, report)
        if keys:
            signed = await deferToThreadPool(self.reactor, self.cpu_pool, _sign_all, paths, keys, self.clock.seconds(),
                                             self._recycler)
            if not all(signed):
                log.warn("DKIM signing of {count} cop(ies) of {message_id} with {domain} failed; sent unsigned",
                         count=signed.count(False), message_id=message_id, domain=keys[0].domain)
        return paths

    async def _record_links(self, record: SpoolRecord, report: RewriteReport) -> None:
        if report.destinations and record.message_id not in self._links_recorded:
            await self.store.record_links(record.message_id, report.destinations)
            self._links_recorded.add(record.message_id)

    async def _signed(self, record: SpoolRecord, keys: list[DomainKey], path: str) -> str:
        """The copy at C{path}.tmp, signed into C{path} with C{keys} (or moved there unsigned)."""
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

    def _path(self, message_id: str, name: str) -> str:
        path = os.path.join(self.directory, f"{message_id}.{name}")
        self._copies.setdefault(message_id, set()).update((path, path + ".tmp"))
        return path

    def _plan(self, record: SpoolRecord, account: Account, wrap: int, index: int | None,
              urls: TrackingUrls | None = None) -> RewritePlan:
        """The rewrite of one copy, without the recipient's own header fields (L{_fields})."""
        settings = account.settings
        message_id = record.message_id
        headers: _Fields = ()
        if record.authentication_results:  # ours replaces any the client wrote (RFC 8601 5)
            headers = (("Authentication-Results", record.authentication_results),)
        own = self._field_names(record, account, urls) if index is not None else ()
        return RewritePlan(
            wrap=wrap,
            click_url=(lambda url, link: urls.click(message_id, index, link))  # type: ignore[union-attr, arg-type]
            if urls is not None and settings.click_tracking else None,
            click_text=settings.click_tracking_text,
            open_pixel=urls.open_pixel(message_id, index) if urls is not None and settings.open_tracking else None,  # type: ignore[arg-type]
            unique_id=self.signer.unsubscribe_id(message_id, index) if index is not None else None,
            headers_to_add=headers,
            headers_to_remove=frozenset(name.lower() for name in (*(name for name, _ in headers), *own)),
        )  # ours replace the client's

    def _field_names(self, record: SpoolRecord, account: Account, urls: TrackingUrls | None) -> tuple[str, ...]:
        """The names of L{_fields}."""
        campaign = record.auth_method is AuthMethod.CAMPAIGN
        names = ("To",) if campaign else ()
        if urls is not None and (account.settings.list_unsubscribe or campaign):
            names += ("List-Unsubscribe", "List-Unsubscribe-Post")
        return names

    def _fields(self, record: SpoolRecord, account: Account, index: int, urls: TrackingUrls | None) -> _Fields:
        """Recipient C{index}'s own header fields: To for list mail, List-Unsubscribe."""
        message_id = record.message_id
        campaign = record.auth_method is AuthMethod.CAMPAIGN
        fields: _Fields = (("To", record.envelope.recipients[index]),) if campaign else ()
        if urls is not None and (account.settings.list_unsubscribe or campaign):
            # RFC 8058: the header URL is the unsubscribe URL itself, never a tracking redirect.
            targets = [f"<{urls.unsubscribe(message_id, index)}>"]
            if self.bounce_domain:
                targets.append(f"<mailto:unsubscribe+{self.signer.unsubscribe_id(message_id, index)}"
                               f"@{self.bounce_domain}>")
            fields += (("List-Unsubscribe", ", ".join(targets)),
                       ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        return fields

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


def _sign_all(paths: list[str], keys: list[DomainKey], now: float, recycler: Recycler) -> list[bool]:
    """Sign each C{path}.tmp into C{path}, or move it there unsigned; which were signed (blocking)."""
    signed = []
    for path in paths:
        recycler.take(path)
        signed.append(sign_message(path + ".tmp", path, keys, now))
        if signed[-1]:
            recycler.give(path + ".tmp")
        else:
            os.replace(path + ".tmp", path)
    return signed


def _rewrite_file(source: str, target: str, plan: RewritePlan, recycler: Recycler) -> RewriteReport:
    recycler.take(target)
    with open(source, "rb") as reading, open(target, "wb") as writing:
        return rewrite(reading, writing, plan)
