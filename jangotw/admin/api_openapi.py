# -*- test-case-name: tests.admin.test_api -*-
"""The OpenAPI 3.1 document of the admin API, generated from the route table.

Paths, methods, parameters and request bodies come from the same L{Route}
and L{Fields} values the dispatcher checks requests against, so the document
describes exactly what is served. Each operation also names what it needs in
C{x-capability} and C{x-operator}.
"""
from __future__ import annotations

from typing import Any, Sequence

from .api_route import Route

__all__ = ["openapi_document", "API_VERSION"]

API_VERSION = "1"

JSONDict = dict[str, Any]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "Stable snake_case code, e.g. unknown_field, not_found."},
            "message": {"type": "string", "description": "One human sentence."},
            "field": {"type": "string", "description": "The body member or query parameter at fault."},
        },
    }},
}
_ERROR_RESPONSE = {"description": "An error",
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_PATH_PARAMETER_HELP = {
    "account": "Account name.",
    "network": "A relay network, '/' percent-encoded: 192.0.2.0%2F24.",
    "address": "An address (or @domain).",
    "login": "An additional login's name.",
    "range": "A login IP range: address, CIDR ('/' percent-encoded) or first-last.",
    "token": "A token id or its jgt_<id> prefix.",
    "list": "A list name (contact lists: percent-encoded; suppressions: bounce or unsubscribe).",
    "message": "A queue id.",
    "campaign": "A campaign id (the initiation message's queue id).",
    "domain": "A sender domain.",
    "selector": "A DKIM selector.",
}


def _operation(route: Route) -> JSONDict:
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"},
                   "description": _PATH_PARAMETER_HELP.get(name, name)} for name in route.parameters]
    parameters += [{"name": field.name, "in": "query", "required": field.required, "schema": field.schema(),
                    "description": field.description} for field in route.query.fields]
    success: JSONDict = {"description": "Done"}
    if route.download:
        success["content"] = {route.download: {"schema": {"type": "string"}}}
    else:
        success["content"] = {"application/json": {"schema": {}}}
    operation: JSONDict = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": {str(route.status): success, "default": _ERROR_RESPONSE},
        "x-capability": route.capability,
        "x-operator": route.operator,
    }
    if route.public:
        operation["security"] = []
    if route.body is not None:
        operation["requestBody"] = {"required": any(field.required for field in route.body.fields),
                                    "content": {"application/json": {"schema": route.body.schema()}}}
    elif route.upload:
        operation["requestBody"] = {"required": True, "content": {route.upload: {"schema": {"type": "string"}}}}
    return operation


def openapi_document(routes: Sequence[Route]) -> JSONDict:
    """The document for C{routes}, served at C{/api/v1/openapi.json}."""
    paths: dict[str, JSONDict] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jangotw admin API",
            "version": API_VERSION,
            "description": "Accounts, credentials, lists, suppressions, the queue, reports and sender domains "
                           "of a jangotw node. Authenticate with Authorization: Bearer and an API token "
                           "(jgt_..., scope api) or a session token from POST /session.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR},
        },
    }
