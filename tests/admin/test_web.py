"""The admin web server over real HTTP on loopback: metrics, liveness, readiness and why not."""
from __future__ import annotations

import os

from attrs import define
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from jangotw.admin.health import Readiness
from jangotw.admin.web import admin_root, admin_site
from jangotw.errors import TemporaryError
from jangotw.metrics import Metrics
from jangotw.model import Account
from jangotw.store.memory import MemoryStore


@define
class UnreachableStore(MemoryStore):
    """A store whose server went away: every lookup fails at once, as the Redis store's do."""

    def get_account(self, name: str) -> "Deferred[Account | None]":
        return fail(TemporaryError("redis: connection refused"))


class _Leaf(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b'{"routes": []}'


class AdminWebTests(TestCase):
    def setUp(self) -> None:
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="test-spool")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.spool_tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.spool_tmp)
        self.metrics = Metrics()

    def serve(self, store: MemoryStore | None = None, api_v1: Resource | None = None) -> None:
        readiness = Readiness(store or MemoryStore(Clock()), self.spool_tmp, reactor, reactor, self.pool)
        port = reactor.listenTCP(0, admin_site(admin_root(self.metrics, readiness, api_v1), reactor),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"

    async def get(self, path: str, accept: str | None = None) -> tuple[int, bytes, str]:
        headers = Headers({b"accept": [accept.encode()]} if accept else {})
        response = await Agent(reactor).request(b"GET", (self.base + path).encode(), headers)
        body = await readBody(response)
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode()
        return response.code, body, content_type

    async def test_healthz(self) -> None:
        self.serve()
        self.assertEqual(await self.get("/healthz"), (200, b"ok\n", "text/plain; charset=utf-8"))

    async def test_metrics_in_prometheus_text_format(self) -> None:
        self.serve()
        self.metrics.message_accepted()
        code, body, content_type = await self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(content_type.startswith("text/plain; version=0.0.4"), content_type)
        self.assertIn(b"jangotw_messages_accepted_total 1.0\n", body)
        self.assertIn(b"# TYPE jangotw_delivery_latency_seconds histogram\n", body)

    async def test_metrics_in_openmetrics_when_asked(self) -> None:
        self.serve()
        code, body, content_type = await self.get("/metrics", accept="application/openmetrics-text; version=1.0.0")
        self.assertTrue(content_type.startswith("application/openmetrics-text"), content_type)
        self.assertTrue(body.endswith(b"# EOF\n"))

    async def test_ready_when_store_answers_and_spool_writable(self) -> None:
        self.serve()
        self.assertEqual(await self.get("/readyz"), (200, b"ready\n", "text/plain; charset=utf-8"))
        self.assertEqual(os.listdir(self.spool_tmp), [], "the probe file is removed")

    async def test_not_ready_when_store_is_away(self) -> None:
        self.serve(UnreachableStore(Clock()))
        code, body, _ = await self.get("/readyz")
        self.assertEqual((code, body), (503, b"not ready: store: redis: connection refused\n"))

    async def test_not_ready_when_spool_is_not_writable(self) -> None:
        self.serve()
        os.rmdir(self.spool_tmp)
        code, body, _ = await self.get("/readyz")
        self.assertEqual(code, 503)
        self.assertIn(b"not ready: spool: cannot create a file in ", body)
        self.assertIn(b"No such file or directory", body)

    async def test_unknown_path_is_404_and_api_absent_until_attached(self) -> None:
        self.serve()
        self.assertEqual((await self.get("/nope"))[0], 404)
        self.assertEqual((await self.get("/api/v1"))[0], 404)

    async def test_api_v1_attaches_under_its_path(self) -> None:
        self.serve(api_v1=_Leaf())
        self.assertEqual((await self.get("/api/v1/accounts"))[:2], (200, b'{"routes": []}'))


class ReadinessTimeoutTests(TestCase):
    async def test_store_that_never_answers(self) -> None:
        """A hung store (no error, no answer) makes the node not ready after the timeout."""
        clock = Clock()

        @define
        class HungStore(MemoryStore):
            def get_account(self, name: str) -> "Deferred[Account | None]":
                return Deferred()

        readiness = Readiness(HungStore(clock), "/nonexistent", clock, reactor, ThreadPool(), timeout=5)
        checked = readiness.check()
        clock.advance(5)
        self.assertEqual(self.successResultOf(checked), "store: no answer within 5s")
