# -*- test-case-name: tests.admin.test_web -*-
"""The admin web server (C{[admin] listen}): metrics and health for operators.

    GET /metrics    Prometheus text format (OpenMetrics when the scraper asks for it)
    GET /healthz    200 while the process runs (liveness)
    GET /readyz     200 when the store answers and the spool is writable, else 503 and why
    /api/v1/...     the JSON admin API, when one is given to L{admin_root}

Nothing here authenticates: the listener defaults to loopback; expose it only
to a trusted network (Prometheus, the load balancer's health checks).
"""
from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..metrics import Metrics
from ..tracking.resource import IDLE_TIMEOUT, QuietSite
from .health import Readiness

__all__ = ["admin_root", "admin_site"]

log = Logger()

_TEXT = b"text/plain; charset=utf-8"
_INDEX = b"jangotw admin: /metrics /healthz /readyz\n"


class _Text(Resource):
    """A fixed plain-text answer."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._body = body

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", _TEXT)
        request.setHeader(b"cache-control", b"no-store")
        return self._body


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader(b"accept")
        encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return encode(self._metrics.registry)


class _Ready(Resource):
    isLeaf = True

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self._readiness = readiness

    def render_GET(self, request: Request) -> object:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)  # the client hung up: answer nobody

        def answer(problem: str | None) -> None:
            if gone:
                return
            request.setResponseCode(200 if problem is None else 503)
            request.setHeader(b"content-type", _TEXT)
            request.setHeader(b"cache-control", b"no-store")
            request.write(b"ready\n" if problem is None else f"not ready: {problem}\n".encode("utf-8"))
            request.finish()

        self._readiness.check().addCallback(answer).addErrback(
            lambda failure: log.failure("readiness answer failed", failure))
        return NOT_DONE_YET


def admin_root(metrics: Metrics, readiness: Readiness, api_v1: IResource | None = None) -> Resource:
    """The resource tree. C{api_v1} is where the JSON admin API attaches: it is served under
    C{/api/v1/} (its children are the routes); without it, C{/api} is 404."""
    root = Resource()
    root.putChild(b"", _Text(_INDEX))
    root.putChild(b"metrics", _Metrics(metrics))
    root.putChild(b"healthz", _Text(b"ok\n"))
    root.putChild(b"readyz", _Ready(readiness))
    if api_v1 is not None:
        api = Resource()
        api.putChild(b"v1", api_v1)
        root.putChild(b"api", api)
    return root


def admin_site(root: Resource, clock: IReactorTime) -> Site:
    """The HTTP factory for every C{[admin] listen} endpoint; C{clock} times out idle connections."""
    return QuietSite(root, timeout=IDLE_TIMEOUT, reactor=clock)
