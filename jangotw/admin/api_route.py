# -*- test-case-name: tests.admin.test_api -*-
"""One admin API route, and what its handler is given: the values the route table is made of.

A L{Route} names its method and path template (C{/accounts/{account}/ips}),
what it needs (capability, operator), what it accepts (query and JSON body
L{Fields}, or a streamed CSV body) and its handler. The dispatcher
(L{jangotw.admin.api}) checks all of that before the handler runs, and the
OpenAPI document (L{jangotw.admin.api_openapi}) is generated from the same
values. A handler gets a L{Call} and answers with something JSON-able.
"""
from __future__ import annotations

import contextlib
import io
import re
from typing import Any, Awaitable, Callable, Iterator, TypeVar

from attrs import frozen
from twisted.web.server import Request

from ..auth.iprules import Address
from ..auth.principals import Principal
from .api_audit import AuditLog
from .api_auth import ApiCredentials
from .api_schema import Fields
from .services import Admin

__all__ = ["Route", "Call", "Handler", "ApiError", "Download", "CSV"]

CSV = "text/csv"
_PARAMETER = re.compile(r"\{([a-z_]+)\}\Z")
_T = TypeVar("_T")


class ApiError(Exception):
    """A refusal with its HTTP status, stable code, sentence, and the field it is about (if any)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


class Download:
    """A streamed text answer: the status and content type go out with the first write."""

    def __init__(self, request: Request, content_type: str, filename: str) -> None:
        self._request = request
        self._content_type = content_type
        self._filename = filename
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.started = True
            self._request.setResponseCode(200)
            self._request.setHeader(b"content-type", f"{self._content_type}; charset=utf-8".encode("ascii"))
            self._request.setHeader(b"content-disposition",
                                    f'attachment; filename="{self._filename}"'.encode("ascii"))
            self._request.setHeader(b"cache-control", b"no-store")

    def write(self, text: str) -> int:
        self.start()
        self._request.write(text.encode("utf-8"))
        return len(text)


@frozen
class Call:
    """One authorised request, as a handler sees it.

    @ivar principal: who is calling (None only on public routes).
    @ivar operator: whether the principal's account is one of C{[admin] operators}.
    @ivar path: the path parameters, percent-decoded.
    @ivar query: the checked query parameters; C{body}: the checked JSON body members.
    """

    admin: Admin
    credentials: ApiCredentials
    audit: AuditLog
    principal: Principal | None
    operator: bool
    path: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any]
    request: Request
    address: Address
    download: Download | None = None

    @property
    def account(self) -> str:
        return self.path["account"]

    @property
    def me(self) -> Principal:
        assert self.principal is not None, "a public route asked who is calling"
        return self.principal

    @contextlib.contextmanager
    def upload(self, errors: str) -> Iterator[io.TextIOWrapper]:
        """The request body as text (UTF-8, a BOM skipped), read in chunks from where twisted.web
        buffered it (memory, or a temporary file past 100 kB): never held whole. C{errors} is how
        undecodable bytes are read (C{surrogateescape} lets the layer refuse those rows)."""
        content = self.request.content
        assert content is not None
        content.seek(0)
        text = io.TextIOWrapper(content, encoding="utf-8-sig", errors=errors, newline="")
        try:
            yield text
        finally:
            text.detach()  # the request owns the buffer: do not close it

    def need(self, service: _T | None) -> _T:
        """The service layer, or 501 when the configured store does not keep what it manages."""
        if service is None:
            raise ApiError(501, "not_supported", "the configured store does not keep this kind of data")
        return service


Handler = Callable[[Call], Awaitable[Any]]


@frozen
class Route:
    """A method and path template with what it needs, accepts and does.

    @ivar capability: what the principal's login must be allowed (every route needs C{api}).
    @ivar operator: only principals of C{[admin] operators} accounts may call it.
    @ivar public: no credential at all (the session login, the OpenAPI document).
    @ivar upload: the content type of a streamed request body (instead of JSON).
    @ivar download: the content type of a streamed answer (instead of JSON).
    """

    method: str
    path: str
    summary: str
    handler: Handler
    tag: str
    body: Fields | None = None
    query: Fields = Fields()
    capability: str = "api"
    operator: bool = False
    public: bool = False
    status: int = 200
    upload: str | None = None
    download: str | None = None

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))

    @property
    def parameters(self) -> list[str]:
        """The names of the path parameters, in order."""
        return [match.group(1) for match in map(_PARAMETER.match, self.segments) if match is not None]

    @property
    def mutation(self) -> bool:
        """Whether calls change something (and so go to the audit log)."""
        return self.method != "GET"

    @property
    def operation_id(self) -> str:
        words = [segment.strip("{}") for segment in self.segments]
        return "_".join([self.method.lower(), *words]).replace("-", "_").replace(".", "_")

    def match(self, segments: tuple[str, ...]) -> dict[str, str] | None:
        """The path parameters if C{segments} fit this template (a parameter matches one
        non-empty segment), else None."""
        if len(segments) != len(self.segments):
            return None
        found: dict[str, str] = {}
        for template, segment in zip(self.segments, segments):
            parameter = _PARAMETER.match(template)
            if parameter is not None:
                if not segment:
                    return None
                found[parameter.group(1)] = segment
            elif template != segment:
                return None
        return found

    def specificity(self) -> tuple[bool, ...]:
        """Literal segments before parameters: C{/suppressions/{list}/export} wins over
        C{/suppressions/{list}/{address}}."""
        return tuple(_PARAMETER.match(segment) is None for segment in self.segments)
