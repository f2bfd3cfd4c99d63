"""The tracking web server, over real HTTP on loopback (and in memory where time matters)."""
from __future__ import annotations

import html
import http.client
import string
from typing import Any

import attrs
from attrs import define, field, frozen
from hypothesis import given, settings, strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jangotw.model import UNSUBSCRIBE_LIST, TrackingEvent
from jangotw.store.memory import MemoryStore
from jangotw.tracking.links import MAX_LINK_INDEX, MAX_RECIPIENT_INDEX, TokenSigner
from jangotw.tracking.resource import TRANSPARENT_GIF, UNSUBSCRIBE_REASON, tracking_site

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
MESSAGE_ID = "18ABC0F3E2D41ZX7Q9"
OTHER_MESSAGE_ID = "18ABC0F3E2D41ZX7R0"  # has no send log and no links
BOB = "bob@example.com"
ODD = "o'hara&<sons>@example.com"  # must be escaped on the page
RECIPIENTS = [BOB, ODD]
DESTINATIONS = [
    "https://www.example.org/offer?id=1&utm_source=mail",
    "http://example.net/",
    "https://example.org/caf\u00e9 menu",  # sent percent-encoded
    "javascript:alert(1)",  # never redirected to
]
ONE_CLICK = b"List-Unsubscribe=One-Click"

signer = TokenSigner(SECRET)


@define
class RecordingStore(MemoryStore):
    """A MemoryStore that keeps every recorded event in order."""

    recorded: list[tuple[str, TrackingEvent]] = field(factory=list, init=False)

    def record_event(self, account: str, event: TrackingEvent) -> "Deferred[None]":
        self.recorded.append((account, event))
        return super().record_event(account, event)


@define
class BrokenStore(RecordingStore):
    """A store whose send log and link table fail."""

    def find_send(self, message_id: str, index: int) -> "Deferred[tuple[str, str] | None]":
        return fail(RuntimeError("send log unavailable"))

    def link(self, message_id: str, index: int) -> "Deferred[str | None]":
        return fail(RuntimeError("link table unavailable"))


@define
class SilentStore(RecordingStore):
    """A store whose send log never answers."""

    def find_send(self, message_id: str, index: int) -> "Deferred[tuple[str, str] | None]":
        return Deferred()


def filled(store: RecordingStore) -> RecordingStore:
    """Alice's account, one message to two recipients, and its links."""
    for deferred in [store.add_account("alice", None),
                     store.record_send(MESSAGE_ID, "alice", RECIPIENTS, 1.0),
                     store.record_links(MESSAGE_ID, DESTINATIONS)]:
        assert deferred.called
    return store


@frozen
class Answer:
    status: int
    headers: dict[str, str]  # lower-case name -> value
    body: bytes


@frozen
class Ask:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = attrs.Factory(dict)


def _exchange(port: int, asks: list[Ask]) -> list[Answer]:
    """Send each request in turn on one connection (run in a thread); the connection is closed after."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        answers = []
        for ask in asks:
            connection.request(ask.method, ask.path, body=ask.body, headers=ask.headers)
            response = connection.getresponse()
            body = response.read()
            answers.append(Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body))
        return answers
    finally:
        connection.close()


class _Connections(WrappingFactory):
    """Wraps the site so a test can wait until every server-side connection has closed."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._waiting: list[Deferred[None]] = []

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for deferred in waiting:
                deferred.callback(None)

    def closed(self) -> "Deferred[None]":
        if not self.protocols:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()
        return waiting


class TrackingServerTests(TestCase):
    """Real HTTP requests from http.client (in a thread) to the site on a loopback port."""

    def serve(self, store: RecordingStore | None = None) -> RecordingStore:
        self.store = store if store is not None else filled(RecordingStore(Clock()))
        connections = _Connections(tracking_site(self.store, signer, reactor))
        port: IListeningPort = reactor.listenTCP(0, connections, interface="127.0.0.1")
        self.addCleanup(connections.closed)
        self.addCleanup(port.stopListening)  # cleanups run last-added first: stop listening, then wait
        self.port = port.getHost().port
        return self.store

    async def ask(self, *asks: Ask) -> list[Answer]:
        return await deferToThread(_exchange, self.port, list(asks))

    async def get(self, path: str, **headers: str) -> Answer:
        [answer] = await self.ask(Ask("GET", path, headers=headers))
        return answer

    async def post(self, path: str, body: bytes = b"confirm=yes",
                   content_type: str = "application/x-www-form-urlencoded") -> Answer:
        [answer] = await self.ask(Ask("POST", path, body, {"Content-Type": content_type}))
        return answer

    async def unsubscribed(self) -> set[str]:
        return await self.store.suppressed("alice", UNSUBSCRIBE_LIST, RECIPIENTS)

    # opens

    async def test_open_answers_gif_and_records(self) -> None:
        """A genuine open token gets the 43-byte transparent GIF, uncacheable, and one open event."""
        store = self.serve()
        answer = await self.get(f"/o.z?{signer.open_token(MESSAGE_ID, 1)}", **{"User-Agent": "Mail/1.0"})
        self.assertEqual((answer.status, answer.body), (200, TRANSPARENT_GIF))
        self.assertEqual(len(answer.body), 43)
        self.assertEqual(answer.headers["content-type"], "image/gif")
        self.assertIn("no-store", answer.headers["cache-control"])
        self.assertIn("no-cache", answer.headers["cache-control"])
        self.assertEqual(answer.headers["pragma"], "no-cache")
        [(account, event)] = store.recorded
        self.assertEqual((account, event.kind, event.message_id, event.recipient, event.detail),
                         ("alice", "open", MESSAGE_ID, ODD, "Mail/1.0"))

    async def test_bad_open_token_answers_gif_and_records_nothing(self) -> None:
        """Forged, altered, foreign, other-kind and unknown tokens get the same GIF; nothing is recorded."""
        store = self.serve()
        genuine = signer.open_token(MESSAGE_ID, 0)
        for token in ["", "nonsense", genuine[:-1] + ("a" if genuine[-1] != "a" else "b"), genuine[:-2],
                      TokenSigner(OTHER_SECRET).open_token(MESSAGE_ID, 0), signer.unsubscribe_id(MESSAGE_ID, 0),
                      signer.open_token(OTHER_MESSAGE_ID, 0), signer.open_token(MESSAGE_ID, 2)]:
            answer = await self.get(f"/o.z?{token}")
            self.assertEqual((answer.status, answer.body, answer.headers["content-type"]),
                             (200, TRANSPARENT_GIF, "image/gif"), token)
        self.assertEqual(store.recorded, [])

    async def test_head_records_nothing(self) -> None:
        """HEAD answers the headers GET would, with no body, and records no open or click."""
        store = self.serve()
        pixel, click = await self.ask(Ask("HEAD", f"/o.z?{signer.open_token(MESSAGE_ID, 0)}"),
                                      Ask("HEAD", f"/c.z?{signer.link_token(MESSAGE_ID, 0, 0)}"))
        self.assertEqual((pixel.status, pixel.body, pixel.headers["content-length"]), (200, b"", "43"))
        self.assertEqual((click.status, click.headers["location"]), (302, DESTINATIONS[0]))
        self.assertEqual(store.recorded, [])

    # clicks

    async def test_click_redirects_and_records(self) -> None:
        """A genuine link token gets 302 to exactly the stored destination, and one click event."""
        store = self.serve()
        answer = await self.get(f"/c.z?{signer.link_token(MESSAGE_ID, 0, 0)}")
        self.assertEqual((answer.status, answer.headers["location"]), (302, DESTINATIONS[0]))
        self.assertIn("no-store", answer.headers["cache-control"])
        self.assertNotIn(DESTINATIONS[0].encode(), answer.body)
        [(account, event)] = store.recorded
        self.assertEqual((account, event.kind, event.message_id, event.recipient, event.detail),
                         ("alice", "click", MESSAGE_ID, BOB, DESTINATIONS[0]))

    async def test_click_fills_in_the_recipients_unique_id(self) -> None:
        """A destination stored with ***uniqueid*** (once for every copy) sends each recipient to their own id."""
        store = self.serve()
        await store.record_links(MESSAGE_ID, [*DESTINATIONS, "https://shop.test/prefs?u=***uniqueid***"])
        for index in (0, 1):
            answer = await self.get(f"/c.z?{signer.link_token(MESSAGE_ID, index, 4)}")
            self.assertEqual((answer.status, answer.headers["location"]),
                             (302, "https://shop.test/prefs?u=" + signer.unsubscribe_id(MESSAGE_ID, index)))

    async def test_non_ascii_destination_is_percent_encoded(self) -> None:
        """A stored URL with spaces or non-ASCII characters leaves as its percent-encoded UTF-8 form."""
        self.serve()
        answer = await self.get(f"/c.z?{signer.link_token(MESSAGE_ID, 1, 2)}")
        self.assertEqual((answer.status, answer.headers["location"]), (302, "https://example.org/caf%C3%A9%20menu"))

    async def test_only_http_destinations_are_followed(self) -> None:
        """A stored destination that is not an http(s) URL is 404, never a redirect."""
        store = self.serve()
        answer = await self.get(f"/c.z?{signer.link_token(MESSAGE_ID, 0, 3)}")
        self.assertEqual(answer.status, 404)
        self.assertNotIn("location", answer.headers)
        self.assertEqual(store.recorded, [])

    async def test_tampered_click_token_is_404(self) -> None:
        """Forged, altered, truncated and other-kind tokens are a plain 404, with no Location and no event."""
        store = self.serve()
        genuine = signer.link_token(MESSAGE_ID, 0, 0)
        for token in ["", "x", genuine[:-1] + ("a" if genuine[-1] != "a" else "b"), genuine[:20],
                      genuine.upper(), TokenSigner(OTHER_SECRET).link_token(MESSAGE_ID, 0, 0),
                      signer.open_token(MESSAGE_ID, 0), signer.unsubscribe_id(MESSAGE_ID, 0),
                      signer.link_token(OTHER_MESSAGE_ID, 0, 0), signer.link_token(MESSAGE_ID, 0, 4)]:
            answer = await self.get(f"/c.z?{token}")
            self.assertEqual((answer.status, answer.headers["content-type"]), (404, "text/plain; charset=utf-8"))
            self.assertNotIn("location", answer.headers)
        self.assertEqual(store.recorded, [])

    async def test_no_redirect_but_to_a_stored_destination(self) -> None:
        """Over every token we can build (any kind, either secret, ids with and without links, every
        recipient and link index nearby, and each one-character alteration of a genuine token), a
        Location is only ever a stored destination, and only for a genuine link token."""
        self.serve()
        other = TokenSigner(OTHER_SECRET)
        genuine = signer.link_token(MESSAGE_ID, 1, 1)
        tokens: dict[str, bool] = {}  # token -> whether it may redirect
        for message_id in (MESSAGE_ID, OTHER_MESSAGE_ID):
            for recipient in (0, 1, 2, MAX_RECIPIENT_INDEX):
                for link in (0, 1, 2, 4, MAX_LINK_INDEX):
                    tokens[signer.link_token(message_id, recipient, link)] = message_id == MESSAGE_ID and link < 3
                    tokens[other.link_token(message_id, recipient, link)] = False
                tokens[signer.open_token(message_id, recipient)] = False
                tokens[signer.unsubscribe_id(message_id, recipient)] = False
        for position in range(len(genuine)):
            for replacement in "ab7%=&/":
                altered = genuine[:position] + replacement + genuine[position + 1:]
                tokens.setdefault(altered, altered == genuine)
        paths = list(tokens)
        answers = await self.ask(*(Ask("GET", f"/c.z?{token}") for token in paths))
        for token, answer in zip(paths, answers):
            location = answer.headers.get("location")
            if tokens[token]:
                self.assertEqual(answer.status, 302, token)
                self.assertIn(location, {DESTINATIONS[0], DESTINATIONS[1], "https://example.org/caf%C3%A9%20menu"})
            else:
                self.assertEqual((answer.status, location), (404, None), token)

    async def test_query_junk_is_ignored(self) -> None:
        """Campaign parameters, a trailing =, punctuation or a token in a later field still work."""
        self.serve()
        token = signer.link_token(MESSAGE_ID, 0, 1)
        for query in [f"{token}&utm_source=news", f"{token}=", f"utm_source=news&{token}", f"{token}.",
                      f"{token}%22", f"{token};x"]:
            answer = await self.get(f"/c.z?{query}")
            self.assertEqual((answer.status, answer.headers.get("location")), (302, DESTINATIONS[1]), query)

    # unsubscribes

    async def test_unsubscribe_page_names_address_and_changes_nothing(self) -> None:
        """GET shows the (escaped) address and a POST form to the same token; nothing is unsubscribed."""
        store = self.serve()
        token = signer.unsubscribe_id(MESSAGE_ID, 1)
        answer = await self.get(f"/u.z?{token}")
        self.assertEqual((answer.status, answer.headers["content-type"]), (200, "text/html; charset=utf-8"))
        page = answer.body.decode("utf-8")
        self.assertIn(html.escape(ODD), page)
        self.assertNotIn(ODD, page)
        self.assertIn('method="post"', page)
        self.assertIn(f'action="?{token}"', page)
        self.assertIn("frame-ancestors 'none'", answer.headers["content-security-policy"])
        self.assertEqual(await self.unsubscribed(), set())
        self.assertEqual(store.recorded, [])

    async def test_post_unsubscribes_once(self) -> None:
        """POST puts the address on the Unsubscribe list and records one event; again changes nothing."""
        store = self.serve()
        token = signer.unsubscribe_id(MESSAGE_ID, 0)
        first = await self.post(f"/u.z?{token}")
        self.assertEqual(first.status, 200)
        self.assertIn(BOB, first.body.decode("utf-8"))
        self.assertEqual(await self.unsubscribed(), {BOB})
        [entry] = await store.list_suppressed("alice", UNSUBSCRIBE_LIST)
        self.assertEqual(entry.reason, UNSUBSCRIBE_REASON)
        again = await self.post(f"/u.z?{token}")
        self.assertEqual(again.status, 200)
        self.assertEqual([(account, event.kind, event.message_id, event.recipient) for account, event in store.recorded],
                         [("alice", "unsubscribe", MESSAGE_ID, BOB)])
        self.assertEqual(await store.event_counts("alice"), {"unsubscribe": 1})

    async def test_one_click_post(self) -> None:
        """The RFC 8058 POST (form-urlencoded or multipart) unsubscribes and answers 200 at once."""
        store = self.serve()
        plain = await self.post(f"/u.z?{signer.unsubscribe_id(MESSAGE_ID, 0)}", ONE_CLICK)
        self.assertEqual((plain.status, plain.headers["content-type"]), (200, "text/plain; charset=utf-8"))
        multipart = (b"--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
                     b"One-Click\r\n--XyZ--\r\n")
        parts = await self.post(f"/u.z?{signer.unsubscribe_id(MESSAGE_ID, 1)}", multipart,
                                "multipart/form-data; boundary=XyZ")
        self.assertEqual(parts.status, 200)
        self.assertEqual(await self.unsubscribed(), {BOB, ODD})
        self.assertEqual(len(store.recorded), 2)

    async def test_bad_unsubscribe_id_is_404(self) -> None:
        """Forged or other-kind ids and unknown sends are 404 for GET and POST; nobody is unsubscribed."""
        store = self.serve()
        genuine = signer.unsubscribe_id(MESSAGE_ID, 0)
        for token in [genuine[:-1] + ("a" if genuine[-1] != "a" else "b"), signer.open_token(MESSAGE_ID, 0),
                      signer.link_token(MESSAGE_ID, 0, 0), signer.unsubscribe_id(OTHER_MESSAGE_ID, 0),
                      TokenSigner(OTHER_SECRET).unsubscribe_id(MESSAGE_ID, 0), ""]:
            self.assertEqual((await self.get(f"/u.z?{token}")).status, 404, token)
            self.assertEqual((await self.post(f"/u.z?{token}", ONE_CLICK)).status, 404, token)
        self.assertEqual(await self.unsubscribed(), set())
        self.assertEqual(store.recorded, [])

    # HTTP edges

    async def test_other_methods_are_405(self) -> None:
        """PUT, DELETE and the like are 405 with an Allow header; POST only on /u.z."""
        self.serve()
        token = signer.link_token(MESSAGE_ID, 0, 0)
        put, delete, post, options = await self.ask(
            Ask("PUT", f"/c.z?{token}", b"x"), Ask("DELETE", f"/u.z?{signer.unsubscribe_id(MESSAGE_ID, 0)}"),
            Ask("POST", f"/o.z?{signer.open_token(MESSAGE_ID, 0)}", b""), Ask("OPTIONS", "/c.z"))
        self.assertEqual((put.status, put.headers["allow"]), (405, "GET, HEAD"))
        self.assertEqual((delete.status, delete.headers["allow"]), (405, "GET, HEAD, POST"))
        self.assertEqual((post.status, options.status), (405, 405))
        self.assertEqual(await self.unsubscribed(), set())

    async def test_unknown_paths_are_404(self) -> None:
        self.serve()
        for path in ["/", "/x", "/o.z/extra", "/c.z/", "/favicon.ico"]:
            self.assertEqual((await self.get(path)).status, 404, path)

    async def test_store_failure_is_503_and_logged(self) -> None:
        """A failing store answers 503 (not the GIF, a redirect or a page) and logs the failure."""
        store = self.serve(filled(BrokenStore(Clock())))
        answers = await self.ask(Ask("GET", f"/o.z?{signer.open_token(MESSAGE_ID, 0)}"),
                                 Ask("GET", f"/c.z?{signer.link_token(MESSAGE_ID, 0, 0)}"),
                                 Ask("GET", f"/u.z?{signer.unsubscribe_id(MESSAGE_ID, 0)}"),
                                 Ask("POST", f"/u.z?{signer.unsubscribe_id(MESSAGE_ID, 0)}", ONE_CLICK))
        self.assertEqual([answer.status for answer in answers], [503] * 4)
        self.assertNotIn("location", answers[1].headers)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 4)
        self.assertEqual(store.recorded, [])

    async def test_tokens_never_logged(self) -> None:
        """No log event, at any level, holds a token."""
        self.serve()
        tokens = [signer.open_token(MESSAGE_ID, 0), signer.link_token(MESSAGE_ID, 0, 0),
                  signer.unsubscribe_id(MESSAGE_ID, 0)]
        with capturedLogs() as events:
            await self.ask(Ask("GET", f"/o.z?{tokens[0]}"), Ask("GET", f"/c.z?{tokens[1]}"),
                           Ask("GET", f"/u.z?{tokens[2]}"), Ask("POST", f"/u.z?{tokens[2]}", ONE_CLICK),
                           Ask("PUT", f"/c.z?{tokens[1]}"))
        self.assertTrue(events)
        for event in events:
            text = formatEvent(event) + repr(event)
            for token in tokens:
                self.assertNotIn(token, text)


def _in_memory(site: Any, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Feed one raw request to a site's protocol; the status, headers and body written so far."""
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    return _parsed(transport.value())


def _parsed(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    if not raw:
        return 0, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


class InMemoryTests(SynchronousTestCase):
    """The same site driven through a StringTransport with a fake clock."""

    def test_slow_store_times_out_with_503(self) -> None:
        """A store that never answers gets 503 once the timeout passes on the injected clock."""
        clock = Clock()
        store = filled(SilentStore(Clock()))
        site = tracking_site(store, signer, clock, timeout=10)
        site.doStart()
        self.addCleanup(site.doStop)
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(f"GET /o.z?{signer.open_token(MESSAGE_ID, 0)} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        clock.advance(9)
        self.assertEqual(transport.value(), b"")
        clock.advance(1)
        self.assertEqual(_parsed(transport.value())[0], 503)
        self.assertEqual(len(self.flushLoggedErrors(TimeoutError)), 1)
        protocol.connectionLost(Failure(ConnectionDone()))

    @settings(max_examples=300, deadline=None)
    @given(token=st.one_of(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", max_size=62),
        st.text(alphabet=string.printable.strip().replace("#", ""), max_size=62),
        st.builds(lambda secret, mid, recipient, link: TokenSigner(secret).link_token(mid, recipient, link),
                  st.sampled_from([SECRET, OTHER_SECRET]), st.sampled_from([MESSAGE_ID, OTHER_MESSAGE_ID]),
                  st.integers(0, 3), st.integers(0, 5)),
        st.builds(lambda mid, recipient: signer.open_token(mid, recipient),
                  st.sampled_from([MESSAGE_ID, OTHER_MESSAGE_ID]), st.integers(0, 3)),
        st.builds(lambda mid, recipient: signer.unsubscribe_id(mid, recipient),
                  st.sampled_from([MESSAGE_ID, OTHER_MESSAGE_ID]), st.integers(0, 3)),
    ))
    def test_location_is_only_ever_a_stored_destination(self, token: str) -> None:
        """Whatever follows /c.z?, the answer is a redirect to a stored http(s) destination or 404."""
        store = filled(RecordingStore(Clock()))
        site = tracking_site(store, signer, Clock())
        query = "".join(c if c.isalnum() or c in "-._~=&;" else "%%%02X" % ord(c) for c in token)
        status, headers, _ = _in_memory(site, f"GET /c.z?{query} HTTP/1.0\r\n\r\n".encode())
        self.assertIn(status, (302, 404))
        if status == 302:
            self.assertIn(headers["location"], {DESTINATIONS[0], DESTINATIONS[1],
                                                "https://example.org/caf%C3%A9%20menu"})
            self.assertEqual(signer.parse_link(token)[0], MESSAGE_ID)  # type: ignore[index]
        else:
            self.assertNotIn("location", headers)
