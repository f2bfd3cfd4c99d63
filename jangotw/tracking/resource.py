# -*- test-case-name: tests.tracking.test_resource -*-
"""The tracking web server: open pixels, click redirects and unsubscribe pages.

    GET  /o.z?TOKEN   record an open; answer a transparent 1x1 GIF, uncacheable
    GET  /c.z?TOKEN   record a click; 302 to the destination stored for the link
    GET  /u.z?ID      a page naming the address, with a button that POSTs to the same URL
    POST /u.z?ID      put the address on the account's Unsubscribe list; a confirmation
                      (also the RFC 8058 one-click POST a mail client sends unattended)

Only a token signed by L{jangotw.tracking.links.TokenSigner} for that kind is
believed, and every fact comes from the store: a redirect only ever goes to a
destination the pipeline recorded (never an open redirect), the address comes
from the send log. A bad token gets the same pixel (a mail client learns
nothing) or a plain 404. GET never unsubscribes, because link scanners and
preview panes fetch every URL in a message; HEAD answers like GET and records
nothing. A store that fails or does not answer in time gets 503, logged.

The query is the token; junk a mail client or a campaign tool appends
(C{&utm_source=...}, C{=}, punctuation) is ignored, and the first field holding a
genuine token wins. Tokens are never logged: the access log is a debug event
with the path alone.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import quote, unquote_to_bytes, urlsplit

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..interfaces import IStore
from ..metrics import Metrics
from ..model import UNSUBSCRIBE_LIST, TrackingEvent
from .links import MAX_TOKEN_LENGTH, TokenSigner, personalise

__all__ = [
    "QuietSite",
    "IDLE_TIMEOUT",
    "tracking_root",
    "tracking_site",
    "TRANSPARENT_GIF",
    "OPEN",
    "CLICK",
    "UNSUBSCRIBE",
    "UNSUBSCRIBE_REASON",
    "STORE_TIMEOUT",
]

log = Logger()

OPEN, CLICK, UNSUBSCRIBE = "open", "click", "unsubscribe"
UNSUBSCRIBE_REASON = "unsubscribed via link"
STORE_TIMEOUT = 10.0  # seconds a request waits for the store before 503
IDLE_TIMEOUT = 60  # seconds an HTTP connection may stay silent

TRANSPARENT_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")

_MAX_FIELDS = 8  # query fields searched for a token
_MAX_DETAIL = 256  # characters of a User-Agent kept with an open
_TOKEN_RUN = re.compile(r"[a-z2-7]{0,%d}" % (MAX_TOKEN_LENGTH + 1))
_FIELD_SEPARATORS = re.compile(rb"[&;]")
_URL_SAFE = "".join(chr(code) for code in range(0x21, 0x7F))  # printable ASCII but space
_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
_GIF = b"image/gif"
_NO_CACHE = {
    b"Cache-Control": b"no-store, no-cache, must-revalidate, private, max-age=0",
    b"Pragma": b"no-cache",
    b"Expires": b"Thu, 01 Jan 1970 00:00:00 GMT",
}
_PAGE = {
    b"Content-Security-Policy": b"default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
}
_NOT_FOUND = b"Not found.\n"
_UNAVAILABLE = b"Service unavailable; please try again later.\n"

_Found = TypeVar("_Found")


# -- what a request means, apart from HTTP ---------------------------------------------

@frozen
class _Tracker:
    """The store side of each request: look facts up, record events, unsubscribe.

    Every method fires with None (or False) for a message or recipient the
    store does not know, and fails only when the store does.
    """

    store: IStore
    clock: IReactorTime
    metrics: Metrics

    async def open(self, message_id: str, recipient_index: int, user_agent: str) -> bool:
        sent = await self.store.find_send(message_id, recipient_index)
        if sent is None:
            return False
        account, recipient = sent
        await self.store.record_event(account, TrackingEvent(OPEN, message_id, recipient, self.clock.seconds(),
                                                             detail=user_agent[:_MAX_DETAIL]))
        self.metrics.tracking_event(OPEN)
        return True

    async def destination(self, message_id: str, link_index: int) -> str | None:
        destination = await self.store.link(message_id, link_index)
        if destination is None:
            return None
        if not _redirectable(destination):
            log.warn("stored link {link_index} of {message_id} is not an http(s) URL; not redirecting",
                     link_index=link_index, message_id=message_id)
            return None
        return destination

    async def click(self, message_id: str, recipient_index: int, destination: str) -> bool:
        sent = await self.store.find_send(message_id, recipient_index)
        if sent is None:
            return False
        account, recipient = sent
        await self.store.record_event(account, TrackingEvent(CLICK, message_id, recipient, self.clock.seconds(),
                                                             detail=destination))
        self.metrics.tracking_event(CLICK)
        return True

    async def recipient(self, message_id: str, recipient_index: int) -> str | None:
        sent = await self.store.find_send(message_id, recipient_index)
        return None if sent is None else sent[1]

    async def unsubscribe(self, message_id: str, recipient_index: int) -> str | None:
        """Put the recipient on the Unsubscribe list; an event only the first time (idempotent)."""
        sent = await self.store.find_send(message_id, recipient_index)
        if sent is None:
            return None
        account, recipient = sent
        if await self.store.suppress(account, UNSUBSCRIBE_LIST, recipient, UNSUBSCRIBE_REASON):
            await self.store.record_event(account, TrackingEvent(UNSUBSCRIBE, message_id, recipient,
                                                                 self.clock.seconds()))
            self.metrics.tracking_event(UNSUBSCRIBE)
            log.info("recipient {recipient_index} of {message_id} unsubscribed from {account}",
                     recipient_index=recipient_index, message_id=message_id, account=account)
        return recipient


def _redirectable(destination: str) -> bool:
    try:
        parts = urlsplit(destination)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _location(destination: str) -> bytes:
    """The Location header for a stored URL: the URL itself when it is plain printable
    ASCII; otherwise spaces, controls and non-ASCII characters percent-encoded (UTF-8)."""
    return quote(destination, safe=_URL_SAFE).encode("ascii")


def _found(request: Request, parse: Callable[[str], _Found | None]) -> _Found | None:
    """What C{parse} makes of the first query field holding a genuine token, else None."""
    query = (request.uri or b"").partition(b"?")[2].partition(b"#")[0]
    for text in _FIELD_SEPARATORS.split(query)[:_MAX_FIELDS]:
        name = unquote_to_bytes(text.partition(b"=")[0]).decode("ascii", "replace").strip()
        match = _TOKEN_RUN.match(name)
        token = match.group(0) if match else ""
        if token:
            found = parse(token)
            if found is not None:
                return found
    return None


def _header(request: Request, name: bytes) -> str:
    value = request.getHeader(name)
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# -- HTTP -------------------------------------------------------------------------------

@define
class _Reply:
    """One request's answer, written once, and not at all after the client went away."""

    request: Request
    gone: bool = field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self.request.notifyFinish().addErrback(self._lost)

    def _lost(self, failure: Failure) -> None:
        self.gone = True

    def send(self, code: int, content_type: bytes, body: bytes, headers: dict[bytes, bytes] | None = None) -> None:
        request = self.request
        if self.gone or request.finished:
            return
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        request.write(body)  # discarded for HEAD
        request.finish()

    def not_found(self) -> None:
        self.send(404, _TEXT, _NOT_FOUND, _NO_CACHE)


class _Endpoint(Resource):
    """A leaf with render_METHOD methods; anything below it is 404, other methods 405."""

    def __init__(self, tracker: _Tracker, signer: TokenSigner, timeout: float) -> None:
        super().__init__()
        self.tracker = tracker
        self.signer = signer
        self.timeout = timeout

    def getChild(self, path: bytes, request: Request) -> IResource:
        return _NotFound()

    def render(self, request: Request) -> bytes | object:
        method = getattr(self, "render_" + request.method.decode("ascii", "replace"), None)
        if method is None:
            allowed = sorted(name[len("render_"):] for name in dir(self) if name.startswith("render_"))
            request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
            _Reply(request).send(405, _TEXT, b"Method not allowed.\n")
            return NOT_DONE_YET
        return method(request)

    def _answer(self, request: Request, work: Callable[[_Reply], Coroutine[Any, Any, None]]) -> object:
        """Run C{work} against the store; a failure or timeout becomes 503 and a logged failure."""
        reply = _Reply(request)
        done = Deferred.fromCoroutine(work(reply))
        done.addTimeout(self.timeout, self.tracker.clock)
        done.addErrback(self._failed, reply, request.path)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, reply: _Reply, path: bytes) -> None:
        log.failure("tracking request for {path} failed", failure, path=path.decode("ascii", "replace"))
        reply.send(503, _TEXT, _UNAVAILABLE, {**_NO_CACHE, b"Retry-After": b"60"})


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> object:
        _Reply(request).not_found()
        return NOT_DONE_YET


class _OpenPixel(_Endpoint):
    def render_GET(self, request: Request) -> object:
        return self._pixel(request, record=True)

    def render_HEAD(self, request: Request) -> object:
        return self._pixel(request, record=False)

    def _pixel(self, request: Request, record: bool) -> object:
        found = _found(request, self.signer.parse_open)
        user_agent = _header(request, b"User-Agent")

        async def work(reply: _Reply) -> None:
            if found is not None and record:
                await self.tracker.open(*found, user_agent)
            reply.send(200, _GIF, TRANSPARENT_GIF, _NO_CACHE)

        return self._answer(request, work)


class _Click(_Endpoint):
    def render_GET(self, request: Request) -> object:
        return self._redirect(request, record=True)

    def render_HEAD(self, request: Request) -> object:
        return self._redirect(request, record=False)

    def _redirect(self, request: Request, record: bool) -> object:
        found = _found(request, self.signer.parse_link)

        async def work(reply: _Reply) -> None:
            if found is None:
                return reply.not_found()
            message_id, recipient_index, link_index = found
            destination = await self.tracker.destination(message_id, link_index)
            if destination is None:
                return reply.not_found()
            destination = personalise(destination, self.signer.unsubscribe_id(message_id, recipient_index))
            if record:
                await self.tracker.click(message_id, recipient_index, destination)
            reply.send(302, _TEXT, b"Redirecting.\n", {**_NO_CACHE, b"Location": _location(destination)})

        return self._answer(request, work)


class _Unsubscribe(_Endpoint):
    def render_GET(self, request: Request) -> object:
        found = _found(request, self.signer.parse_unsubscribe)

        async def work(reply: _Reply) -> None:
            recipient = None if found is None else await self.tracker.recipient(*found)
            if found is None or recipient is None:
                return reply.not_found()
            token = self.signer.unsubscribe_id(*found)
            reply.send(200, _HTML, _confirm_page(recipient, token), {**_NO_CACHE, **_PAGE})

        return self._answer(request, work)

    render_HEAD = render_GET  # records nothing either way

    def render_POST(self, request: Request) -> object:
        found = _found(request, self.signer.parse_unsubscribe)
        one_click = _is_one_click(request)

        async def work(reply: _Reply) -> None:
            recipient = None if found is None else await self.tracker.unsubscribe(*found)
            if recipient is None:
                return reply.not_found()
            if one_click:
                reply.send(200, _TEXT, b"Unsubscribed.\n", _NO_CACHE)
            else:
                reply.send(200, _HTML, _done_page(recipient), {**_NO_CACHE, **_PAGE})

        return self._answer(request, work)


def _is_one_click(request: Request) -> bool:
    """An RFC 8058 POST (form-urlencoded or multipart): List-Unsubscribe=One-Click."""
    if request.args and request.args.get(b"List-Unsubscribe") == [b"One-Click"]:
        return True
    content = request.content
    if content is None:
        return False
    content.seek(0)
    return b"List-Unsubscribe=One-Click" in content.read(4096)


def _page(title: str, body: str) -> bytes:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta name=\"robots\" content=\"noindex, nofollow\">"
            f"<title>{html.escape(title)}</title></head>\n<body><main>\n<h1>{html.escape(title)}</h1>\n"
            f"{body}\n</main></body></html>\n").encode("utf-8")


def _confirm_page(address: str, token: str) -> bytes:
    return _page("Unsubscribe", (
        f"<p>Stop sending mail to <strong>{html.escape(address)}</strong>?</p>\n"
        f"<form method=\"post\" action=\"?{html.escape(token)}\">"
        "<button type=\"submit\" name=\"confirm\" value=\"yes\">Unsubscribe</button></form>"))


def _done_page(address: str) -> bytes:
    return _page("Unsubscribed", f"<p><strong>{html.escape(address)}</strong> has been unsubscribed "
                                 "and will get no more of these messages.</p>")


# -- the site ---------------------------------------------------------------------------

class _Root(Resource):
    def getChild(self, path: bytes, request: Request) -> IResource:
        return _NotFound()

    def render(self, request: Request) -> object:
        _Reply(request).not_found()
        return NOT_DONE_YET


class QuietSite(Site):
    """A Site whose access log is a debug event naming the path without its query (a tracking
    token); the admin web server uses it too (Prometheus scrapes every few seconds)."""

    noisy = False
    displayTracebacks = False

    def log(self, request: Request) -> None:
        log.debug("{method} {path} {code}", method=request.method.decode("ascii", "replace"),
                  path=(request.path or b"").decode("ascii", "replace"), code=request.code)


def tracking_root(store: IStore, signer: TokenSigner, clock: IReactorTime,
                  timeout: float = STORE_TIMEOUT, metrics: Metrics | None = None) -> Resource:
    """The resource tree: C{/o.z}, C{/c.z} and C{/u.z}; everything else is 404.
    Recorded events are counted on C{metrics} (the server's)."""
    tracker = _Tracker(store, clock, Metrics() if metrics is None else metrics)
    root = _Root()
    root.putChild(b"o.z", _OpenPixel(tracker, signer, timeout))
    root.putChild(b"c.z", _Click(tracker, signer, timeout))
    root.putChild(b"u.z", _Unsubscribe(tracker, signer, timeout))
    return root


def tracking_site(store: IStore, signer: TokenSigner, clock: IReactorTime,
                  timeout: float = STORE_TIMEOUT, metrics: Metrics | None = None) -> Site:
    """The tracking server's HTTP factory, for every C{[tracking] listen} endpoint.

    C{clock} (the reactor, as L{IReactorTime}) times out idle connections and slow store calls.
    """
    return QuietSite(tracking_root(store, signer, clock, timeout, metrics), timeout=IDLE_TIMEOUT, reactor=clock)
