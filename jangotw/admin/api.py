# -*- test-case-name: tests.admin.test_api -*-
"""The JSON admin API under C{/api/v1/}: routing, credentials, authorisation, errors, audit.

For each request: find the route (unknown path 404 C{unknown_route}, known
path with another method 405 C{method_not_allowed}); find who is calling
(C{Authorization: Bearer} with an API token or a session token; 401 with
C{WWW-Authenticate: Bearer}, 403 with the exact C{UnauthorizedAddressException}
text outside the login IP rules, 429 with C{Retry-After} when throttled);
check what the route needs (L{jangotw.admin.routes}); check the query and the
JSON body (400 naming the field); run the handler; answer JSON. A call that
changes something is written to the audit log, whatever its outcome, before
the answer goes out.

Errors are C{{"error": {"code", "message", "field"?}}}. An L{InputError} from a
service layer is 404 C{not_found} when its sentence says the thing named does
not exist (C{no account named …}, C{… has no login named …}, C{… is not on
the … list}), 409 C{conflict} when it already exists, else 400
C{invalid_input}; a store that keeps no such data is 501, one that cannot
answer now 503.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..auth.credentials import Secret
from ..auth.iprules import Address
from ..auth.principals import (AddressNotAuthorised, AuthenticationFailed, CodeRefused, Principal, TooManyFailures,
                               TwoFactorRequired)
from ..errors import ConfigError, InputError, TemporaryError
from .api_audit import AuditLog
from .api_auth import ApiCredentials
from .api_route import ApiError, Call, Download, Route
from .api_schema import FieldError, Fields
from .services import Admin

__all__ = ["AdminAPI", "MAX_JSON_BODY"]

log = Logger()

MAX_JSON_BODY = 1 << 20  # bytes of a JSON request body (CSV uploads stream and are not limited here)
_JSON = b"application/json; charset=utf-8"
_NOT_FOUND = re.compile(r"^no (such \w+|account named|queued message|token with id|campaign|sender domain)\b"
                        r"|\bhas no (login named|list named|authorised|login IP rule|key with selector)\b"
                        r"|\bis not on the\b")
_CONFLICT = re.compile(r"\balready (exists|has a)\b")
_CHALLENGE = 'Bearer realm="jangotw"'


def input_error(error: InputError) -> ApiError:
    """The HTTP form of a service layer's refusal (see the module docstring)."""
    message = str(error)
    if _NOT_FOUND.search(message):
        return ApiError(404, "not_found", message)
    if _CONFLICT.search(message):
        return ApiError(409, "conflict", message)
    return ApiError(400, "invalid_input", message)


def _auth_error(error: AuthenticationFailed, retry_after: int) -> ApiError:
    """The answer to a refused credential; the reason itself only goes to the log."""
    if isinstance(error, TooManyFailures):
        return ApiError(429, "too_many_failures", "too many failed authentications; try again later",
                        headers=(("retry-after", str(retry_after)),))
    if isinstance(error, AddressNotAuthorised):
        return ApiError(403, "address_not_authorized", error.api_text)
    challenge = (("www-authenticate", f'{_CHALLENGE}, error="invalid_token"'),)
    if isinstance(error, TwoFactorRequired):
        return ApiError(401, "two_factor_required", "two-factor authentication is on for this login: send a code",
                        "code", challenge)
    if isinstance(error, CodeRefused):
        return ApiError(401, "code_refused", "the code is wrong or was already used", "code", challenge)
    return ApiError(401, "invalid_credentials", "Authentication credentials invalid", headers=challenge)


def _as_api_error(failure: Failure, retry_after: int) -> ApiError:
    error = failure.value
    if isinstance(error, ApiError):
        return error
    if isinstance(error, FieldError):
        return ApiError(400, error.code, error.message, error.field)
    if isinstance(error, AuthenticationFailed):
        return _auth_error(error, retry_after)
    if isinstance(error, InputError):
        return input_error(error)
    if isinstance(error, ConfigError):
        return ApiError(501, "not_supported", str(error))
    if isinstance(error, TemporaryError):
        log.warn("admin API: a dependency cannot answer: {error}", error=str(error))
        return ApiError(503, "unavailable", "a dependency of the server cannot answer now; try again later",
                        headers=(("retry-after", "5"),))
    log.failure("admin API call crashed", failure)
    return ApiError(500, "internal_error", "internal error; the server log has the details")


@frozen
class _Outcome:
    status: int
    answer: Any = None
    error: ApiError | None = None


class AdminAPI(Resource):
    """The resource at C{/api/v1}: every path below it is one of C{routes} (or 404)."""

    isLeaf = True

    def __init__(self, routes: Sequence[Route], admin: Admin, credentials: ApiCredentials, audit: AuditLog,
                 operators: Sequence[str]) -> None:
        super().__init__()
        self._routes = tuple(routes)
        self._admin = admin
        self._credentials = credentials
        self._audit = audit
        self._operators = frozenset(name.lower() for name in operators)
        self._retry_after = max(1, int(credentials.authenticator.throttle.window))

    def render(self, request: Request) -> object:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)  # the client hung up: answer nobody
        Deferred.fromCoroutine(self._serve(request, gone)).addErrback(
            lambda failure: log.failure("admin API answer failed", failure))
        return NOT_DONE_YET

    # -- one request -----------------------------------------------------------------------

    async def _serve(self, request: Request, gone: list[Failure]) -> None:
        method = request.method.decode("ascii", "replace")
        try:
            route, parameters = self._route(method, request.postpath or [])
        except ApiError as error:
            return self._respond(request, gone, _Outcome(error.status, error=error))
        address = _client_address(request)
        entry: dict[str, Any] = {"principal": None, "account": None, "via": None, "client_ip": str(address),
                                 "method": method, "route": route.path, "target": dict(parameters)}
        download = Download(request, route.download, _filename(route, parameters)) if route.download else None
        try:
            answer = await self._call(route, parameters, request, address, entry, download)
            outcome = _Outcome(route.status, answer)
        except Exception:
            refusal = _as_api_error(Failure(), self._retry_after)
            outcome = _Outcome(refusal.status, error=refusal)
        if route.mutation:
            entry.update(status=outcome.status, error=outcome.error.code if outcome.error else None)
            try:
                await self._audit.record(entry)
            except Exception:
                log.failure("audit log entry not written: {entry}", entry=entry)
        if download is not None and download.started:
            if outcome.error is not None:
                log.error("admin API download broke off: {message}", message=outcome.error.message)
            if not gone:
                request.finish()
            return None
        return self._respond(request, gone, outcome)

    async def _call(self, route: Route, parameters: dict[str, str], request: Request, address: Address,
                    entry: dict[str, Any], download: Download | None) -> Any:
        principal = None if route.public else await self._principal(request, address)
        operator = principal is not None and principal.account.name.lower() in self._operators
        if principal is not None:
            entry.update(principal=principal.name, account=principal.account.name, via=principal.via)
            self._authorise(route, principal, operator, parameters)
        body: dict[str, Any] = {}
        if route.upload is None:  # a JSON body; a route that takes none refuses any member as unknown
            fields = route.body or Fields()
            body = fields.parse_json(_json_bytes(request))
            audited = {field.name for field in fields.fields if field.audited}
            entry["target"].update({name: value for name, value in body.items() if name in audited})
        query = route.query.parse_query(request.args)
        call = Call(self._admin, self._credentials, self._audit, principal, operator, parameters, query, body,
                    request, address, download)
        return await route.handler(call)

    def _route(self, method: str, postpath: Sequence[bytes]) -> tuple[Route, dict[str, str]]:
        try:
            segments = tuple(segment.decode("utf-8") for segment in postpath)
        except UnicodeDecodeError:
            raise ApiError(404, "unknown_route", "no such route (the path is not UTF-8)") from None
        if segments and not segments[-1]:
            segments = segments[:-1]  # a trailing slash
        matching = [(route, found) for route in self._routes if (found := route.match(segments)) is not None]
        if not matching:
            raise ApiError(404, "unknown_route", f"no route /{'/'.join(segments)}; see /api/v1/openapi.json")
        allowed = [pair for pair in matching if pair[0].method == method]
        if not allowed:
            methods = ", ".join(sorted({route.method for route, _ in matching}))
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed here; allowed: {methods}",
                           headers=(("allow", methods),))
        return max(allowed, key=lambda pair: pair[0].specificity())

    async def _principal(self, request: Request, address: Address) -> Principal:
        header = (request.getHeader(b"authorization") or b"").decode("latin-1").strip()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "authentication_required",
                           "send Authorization: Bearer with an API token or a session token",
                           headers=(("www-authenticate", _CHALLENGE),))
        principal: Principal = await self._credentials.bearer(Secret(token.strip()), address)
        return principal

    def _authorise(self, route: Route, principal: Principal, operator: bool, parameters: dict[str, str]) -> None:
        if route.operator and not operator:
            raise ApiError(403, "operator_required", "only an operator ([admin] operators) may do this")
        if route.capability not in principal.capabilities:
            raise ApiError(403, "capability_required", f"this login lacks the {route.capability} capability")
        account = parameters.get("account")
        if account is not None and not operator and account.lower() != principal.account.name.lower():
            raise ApiError(403, "forbidden_account",
                           f"this credential may act only on account {principal.account.name!r}", "account")

    # -- answers ---------------------------------------------------------------------------

    def _respond(self, request: Request, gone: list[Failure], outcome: _Outcome) -> None:
        if gone:
            return
        if outcome.error is not None:
            error = outcome.error
            described: dict[str, Any] = {"code": error.code, "message": error.message}
            if error.field is not None:
                described["field"] = error.field
            document: Any = {"error": described}
            for name, value in error.headers:
                request.setHeader(name.encode("ascii"), value.encode("latin-1"))
        else:
            document = outcome.answer
        request.setResponseCode(outcome.status)
        request.setHeader(b"content-type", _JSON)
        request.setHeader(b"cache-control", b"no-store")
        request.write(json.dumps(document, ensure_ascii=False).encode("utf-8") + b"\n")
        request.finish()


def _json_bytes(request: Request) -> bytes:
    """The body of a JSON request: 413 past L{MAX_JSON_BODY}, 415 when it says it is something else
    (no type at all is taken as JSON; a form-encoded body is refused, not read as query parameters)."""
    assert request.content is not None
    raw: bytes = request.content.read(MAX_JSON_BODY + 1)
    if len(raw) > MAX_JSON_BODY:
        raise ApiError(413, "body_too_large", f"a JSON body may hold at most {MAX_JSON_BODY} bytes")
    media = (request.getHeader(b"content-type") or b"application/json").split(b";")[0].strip().lower()
    if raw.strip() and media != b"application/json" and not media.endswith(b"+json"):
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    return raw


def _client_address(request: Request) -> Address:
    host = getattr(request.getClientAddress(), "host", "") or "0.0.0.0"
    return ipaddress.ip_address(host)


def _filename(route: Route, parameters: dict[str, str]) -> str:
    name = "-".join([*(parameters[key] for key in route.parameters), route.segments[-1]])
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".csv"
