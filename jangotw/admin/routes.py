# -*- test-case-name: tests.admin.test_api_routes -*-
"""The admin API's route table: sessions, accounts, settings, relay IPs, From addresses, usage, audit.

Every route of the API is in L{ROUTES} (this module's, then
L{jangotw.admin.routes_credentials} and L{jangotw.admin.routes_mail}); the
dispatcher serves exactly these and the OpenAPI document describes exactly
these. Handlers only translate: path, query and body into a service-layer
call (L{jangotw.admin.services}), whose answer is the response.

Authorisation (checked by the dispatcher from each route's fields):

    route                                           needs
    POST /session, GET /openapi.json                nothing (public)
    any other                                       a principal (capability api); on /accounts/{account}/...
                                                    its own account, unless an operator
    changing settings, passwords, relay IPs, From   capability settings
      addresses, logins, login IP rules, tokens,
      two-factor, domains
    reports, campaigns                              capability reports
    POST /accounts, enable/disable, POST            an operator ([admin] operators) with settings
      /queue/retry, GET /audit
    GET/POST/DELETE /queue/{message}...             an operator, or the message's own account
"""
from __future__ import annotations

import datetime
from functools import cache
from typing import Any

from ..auth.credentials import Secret
from ..errors import InputError
from ..model import parse_setting
from .api_openapi import openapi_document
from .api_route import Call, Route
from .api_schema import INTEGER, SETTINGS, STRING, Field, FieldError, Fields
from .routes_credentials import CREDENTIAL_ROUTES
from .routes_mail import MAIL_ROUTES

__all__ = ["ROUTES"]

JSONDict = dict[str, Any]

_ACCOUNTS = "accounts"
_SESSION = "session"

_PASSWORD = Fields((Field("password", STRING, "The new password: 12+ characters, zxcvbn score 3 (a passphrase).",
                          required=True),))


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


# -- session and the document ------------------------------------------------------------------

async def _log_in(call: Call) -> JSONDict:
    code = call.body.get("code")
    session = await call.credentials.log_in(call.body["username"], Secret(call.body["password"]),
                                            None if code is None else Secret(code), call.address)
    me = session.principal
    return {"token": session.token, "token_type": "Bearer", "expires": _iso(session.claims.expires),
            "name": me.name, "account": me.account.name, "capabilities": sorted(me.capabilities)}


async def _who(call: Call) -> JSONDict:
    me = call.me
    return {"name": me.name, "account": me.account.name, "login": me.login.name if me.login else None,
            "capabilities": sorted(me.capabilities), "operator": call.operator, "via": me.via}


@cache
def _document() -> JSONDict:
    return openapi_document(ROUTES)


async def _openapi(call: Call) -> JSONDict:
    return _document()


# -- accounts and settings -------------------------------------------------------------------

async def _accounts(call: Call) -> list[JSONDict]:
    accounts: list[JSONDict] = await call.admin.accounts.list_accounts()
    if call.operator:
        return accounts
    return [account for account in accounts if account["name"].lower() == call.me.account.name.lower()]


async def _add_account(call: Call) -> JSONDict:
    answer: JSONDict = await call.admin.accounts.add_account(call.body["name"], call.body.get("password"))
    return answer


async def _settings(call: Call) -> JSONDict:
    shown = await call.admin.accounts.show_account(call.account)
    return {"account": shown["name"], "settings": shown["settings"]}


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def _change_settings(call: Call) -> JSONDict:
    """Every value is checked before any is stored, so a refused change changes nothing."""
    texts = {key: _setting_text(value) for key, value in call.body.items()}
    for key, text in texts.items():
        try:
            parse_setting(key, text)
        except InputError as error:
            raise FieldError("invalid_value", str(error), key) from None
    for key, text in texts.items():
        await call.admin.accounts.set_setting(call.account, key, text)
    return await _settings(call)


async def _set_initiation_password(call: Call) -> JSONDict:
    answer: JSONDict = await call.need(call.admin.lists).set_initiation_password(call.account,
                                                                                call.body["password"])
    return answer


# -- audit -------------------------------------------------------------------------------------

async def _audit(call: Call) -> JSONDict:
    page: JSONDict = await call.audit.recent(call.query.get("before"), call.query.get("limit", 100))
    return page


def _account_route(method: str, suffix: str, summary: str, handler: Any, **options: Any) -> Route:
    return Route(method, f"/accounts/{{account}}{suffix}", summary, handler, options.pop("tag", _ACCOUNTS),
                 **options)


_CORE: tuple[Route, ...] = (
    Route("POST", "/session", "Log in with a password (and a TOTP or recovery code when two-factor is on); "
          "answers a session token for Authorization: Bearer, valid one hour on every node.", _log_in, _SESSION,
          body=Fields((Field("username", STRING, "ACCOUNT, or LOGIN@ACCOUNT for an additional login.",
                             required=True, audited=True),
                       Field("password", STRING, "The login's password (never an API token).", required=True),
                       Field("code", STRING, "A current TOTP code or an unused recovery code."))),
          public=True),
    Route("GET", "/session", "Who the credential is: account, login, capabilities, operator or not.", _who,
          _SESSION),
    Route("GET", "/openapi.json", "This API as an OpenAPI 3.1 document.", _openapi, "meta", public=True),
    Route("GET", "/accounts", "Every account (an operator), or the caller's own.", _accounts, _ACCOUNTS),
    Route("POST", "/accounts", "Create an account (no password: authorised only by IP or From address).",
          _add_account, _ACCOUNTS, status=201, capability="settings", operator=True,
          body=Fields((Field("name", STRING, "1-64 letters, digits, '.', '_' or '-'.", required=True,
                             audited=True),
                       Field("password", STRING, "Its password (12+ characters, zxcvbn score 3).")))),
    _account_route("GET", "", "One account with its settings, relay IPs and From addresses.",
                   lambda call: call.admin.accounts.show_account(call.account)),
    _account_route("POST", "/disable", "Disable the account: it authenticates and relays no more.",
                   lambda call: call.admin.accounts.disable(call.account), capability="settings", operator=True),
    _account_route("POST", "/enable", "Enable a disabled account.",
                   lambda call: call.admin.accounts.enable(call.account), capability="settings", operator=True),
    _account_route("PUT", "/password", "Change the account's own password.",
                   lambda call: call.admin.accounts.set_password(call.account, call.body["password"]),
                   capability="settings", body=_PASSWORD),
    _account_route("GET", "/settings", "The account's settings.", _settings),
    _account_route("PATCH", "/settings", "Change settings; the values are checked first, then all are stored.",
                   _change_settings, capability="settings", body=SETTINGS),
    _account_route("PUT", "/initiation-password", "Set the password that authorises mass mailings.",
                   _set_initiation_password, capability="settings", body=_PASSWORD),
    _account_route("GET", "/usage", "Monthly quota and usage.",
                   lambda call: call.admin.usage.usage(call.account, call.query.get("month")),
                   query=Fields((Field("month", STRING, "YYYY-MM (default: the current month, UTC)."),))),
    _account_route("GET", "/ips", "Client networks that relay as the account with no credential.",
                   lambda call: call.admin.accounts.list_ips(call.account), tag="relay"),
    _account_route("POST", "/ips", "Authorise a client address or CIDR range.",
                   lambda call: call.admin.accounts.add_ip(call.account, call.body["network"]), tag="relay",
                   capability="settings", status=201,
                   body=Fields((Field("network", STRING, "203.0.113.7, 203.0.113.0/24 or 2001:db8::/32.",
                                      required=True, audited=True),))),
    _account_route("DELETE", "/ips/{network}", "Remove an authorised network (percent-encode the '/').",
                   lambda call: call.admin.accounts.remove_ip(call.account, call.path["network"]), tag="relay",
                   capability="settings"),
    _account_route("GET", "/from", "From addresses whose mail relays as the account.",
                   lambda call: call.admin.accounts.list_from(call.account), tag="relay"),
    _account_route("POST", "/from", "Authorise a From address, or @domain for a whole domain.",
                   lambda call: call.admin.accounts.add_from(call.account, call.body["address"]), tag="relay",
                   capability="settings", status=201,
                   body=Fields((Field("address", STRING, "news@shop.example or @shop.example.", required=True,
                                      audited=True),))),
    _account_route("DELETE", "/from/{address}", "Remove an authorised From address.",
                   lambda call: call.admin.accounts.remove_from(call.account, call.path["address"]), tag="relay",
                   capability="settings"),
    Route("GET", "/audit", "Recent audit log entries, newest first (operators).", _audit, "audit", operator=True,
          query=Fields((Field("before", INTEGER, "Only entries numbered below this (the next of a page).",
                              minimum=1),
                        Field("limit", INTEGER, "At most this many (default 100).", minimum=1, maximum=1000)))),
)

#: Every route of the API.
ROUTES: tuple[Route, ...] = (*_CORE, *CREDENTIAL_ROUTES, *MAIL_ROUTES)
