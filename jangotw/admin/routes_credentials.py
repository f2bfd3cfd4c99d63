# -*- test-case-name: tests.admin.test_api_routes -*-
"""Admin API routes for an account's credentials: logins, login IP rules, API tokens, two-factor.

Every change here needs the C{settings} capability. Capability and scope lists
travel as JSON arrays and reach the service layers as the comma-separated text
the command line passes, so both are checked by the same rules.
"""
from __future__ import annotations

from typing import Any

from ..errors import InputError
from .api_route import Call, Route
from .api_schema import BOOLEAN, STRING, STRINGS, Field, Fields
from .tokens import parse_token_id

__all__ = ["CREDENTIAL_ROUTES"]

JSONDict = dict[str, Any]

_LOGINS = "logins"
_TOKENS = "tokens"
_TWO_FACTOR = "two-factor"

_LOGIN = Field("login", STRING, "An additional login's name (default: the account's own login).", audited=True)
_CAPABILITIES = "relay, initiation, api, reports, settings"


def _listed(names: list[str] | None) -> str | None:
    return None if names is None else ",".join(names)


# -- logins ------------------------------------------------------------------------------------

async def _add_login(call: Call) -> JSONDict:
    body = call.body
    answer: JSONDict = await call.need(call.admin.logins).add_login(
        call.account, body["name"], body["password"], _listed(body.get("capabilities")))
    return answer


async def _change_login(call: Call) -> JSONDict:
    logins = call.need(call.admin.logins)
    account, name = call.account, call.path["login"]
    answer: JSONDict = await logins.show_login(account, name)
    if "capabilities" in call.body:
        answer = await logins.restrict(account, name, ",".join(call.body["capabilities"]))
    if "disabled" in call.body:
        answer = await (logins.disable if call.body["disabled"] else logins.enable)(account, name)
    return answer


# -- tokens ------------------------------------------------------------------------------------

async def _create_token(call: Call) -> JSONDict:
    body = call.body
    answer: JSONDict = await call.need(call.admin.tokens).create(
        call.account, body.get("login"), _listed(body.get("scopes")), body.get("expires"), body.get("label", ""))
    return answer


async def _revoke_token(call: Call) -> JSONDict:
    """Only a token of the account in the path: another account's id is as unknown as a made-up one."""
    tokens = call.need(call.admin.tokens)
    token_id = parse_token_id(call.path["token"])
    if token_id not in {token["id"] for token in await tokens.list_tokens(call.account)}:
        raise InputError(f"no token with id {token_id}")
    answer: JSONDict = await tokens.revoke(token_id)
    return answer


# -- two-factor --------------------------------------------------------------------------------

def _user(call: Call, login: str | None) -> str:
    """The name the two-factor layer takes: ACCOUNT, or LOGIN@ACCOUNT."""
    if login is not None and ("@" in login or not login.strip()):
        raise InputError(f"invalid login name {login!r}")
    return call.account if login is None else f"{login}@{call.account}"


def _two_factor(call: Call, method: str, *arguments: Any) -> Any:
    service = call.need(call.admin.two_factor)
    login = call.body.get("login", call.query.get("login"))
    return getattr(service, method)(_user(call, login), *arguments)


def _route(method: str, suffix: str, summary: str, handler: Any, tag: str, **options: Any) -> Route:
    return Route(method, f"/accounts/{{account}}{suffix}", summary, handler, tag, **options)


CREDENTIAL_ROUTES: tuple[Route, ...] = (
    _route("GET", "/logins", "The account's additional logins.",
           lambda call: call.need(call.admin.logins).list_logins(call.account), _LOGINS),
    _route("POST", "/logins", "Add a login with its own password; SMTP AUTH user name NAME@ACCOUNT.", _add_login,
           _LOGINS, capability="settings", status=201,
           body=Fields((Field("name", STRING, "1-64 letters, digits, '.', '_' or '-'.", required=True,
                              audited=True),
                        Field("password", STRING, "Its password (12+ characters, zxcvbn score 3).", required=True),
                        Field("capabilities", STRINGS, f"What it may do, of {_CAPABILITIES} (default: relay).",
                              audited=True)))),
    _route("GET", "/logins/{login}", "One login with its two-factor state, IP rules and tokens (no secrets).",
           lambda call: call.need(call.admin.logins).show_login(call.account, call.path["login"]), _LOGINS),
    _route("PATCH", "/logins/{login}", "Replace what a login may do, or disable or enable it.", _change_login,
           _LOGINS, capability="settings",
           body=Fields((Field("capabilities", STRINGS, f"What it may do, of {_CAPABILITIES}.", audited=True),
                        Field("disabled", BOOLEAN, "true stops its password and tokens working.", audited=True)))),
    _route("PUT", "/logins/{login}/password", "Change a login's password.",
           lambda call: call.need(call.admin.logins).set_password(call.account, call.path["login"],
                                                                  call.body["password"]),
           _LOGINS, capability="settings",
           body=Fields((Field("password", STRING, "The new password.", required=True),))),
    _route("DELETE", "/logins/{login}", "Delete a login with its tokens, IP rules and two-factor state.",
           lambda call: call.need(call.admin.logins).delete_login(call.account, call.path["login"]), _LOGINS,
           capability="settings"),
    _route("GET", "/login-ips", "Login IP rules: where the account's (or one login's) credentials work from.",
           lambda call: call.need(call.admin.login_ips).list_rules(call.account, call.query.get("login")),
           _LOGINS, query=Fields((_LOGIN,))),
    _route("POST", "/login-ips", "Accept passwords and tokens only from this range (adding it again replaces "
                                 "its scopes).",
           lambda call: call.need(call.admin.login_ips).add(call.account, call.body["range"],
                                                            call.body.get("login"), _listed(call.body.get("scopes"))),
           _LOGINS, capability="settings", status=201,
           body=Fields((Field("range", STRING, "An address, a CIDR or first-last.", required=True, audited=True),
                        _LOGIN,
                        Field("scopes", STRINGS, "smtp, api or both (default).", audited=True)))),
    _route("DELETE", "/login-ips/{range}", "Remove a login IP rule (percent-encode a CIDR's '/').",
           lambda call: call.need(call.admin.login_ips).remove(call.account, call.path["range"],
                                                               call.query.get("login")),
           _LOGINS, capability="settings", query=Fields((_LOGIN,))),
    _route("GET", "/tokens", "The account's API tokens (never their secrets).",
           lambda call: call.need(call.admin.tokens).list_tokens(call.account), _TOKENS),
    _route("POST", "/tokens", "Create an API token; the answer is the only place its text appears.",
           _create_token, _TOKENS, capability="settings", status=201,
           body=Fields((_LOGIN,
                        Field("scopes", STRINGS, "smtp and/or api (default: both, or what the login may use).",
                              audited=True),
                        Field("expires", STRING, "A lifetime such as 12h, 90d, 4w, or never (the default).",
                              audited=True),
                        Field("label", STRING, "What the token is for.", audited=True)))),
    _route("DELETE", "/tokens/{token}", "Revoke a token at once (its id or jgt_<id> prefix).", _revoke_token,
           _TOKENS, capability="settings"),
    _route("GET", "/two-factor", "Two-factor state of the account's own login or of one login.",
           lambda call: _two_factor(call, "status"), _TWO_FACTOR, query=Fields((_LOGIN,))),
    _route("POST", "/two-factor", "Start setting up two-factor: the answer holds the secret, the otpauth URI and "
                                  "ten recovery codes, shown once; it stays pending until confirmed.",
           lambda call: _two_factor(call, "begin"), _TWO_FACTOR, capability="settings", status=201,
           body=Fields((_LOGIN,))),
    _route("POST", "/two-factor/confirm", "Switch a pending set-up on with a current code.",
           lambda call: _two_factor(call, "confirm", call.body["code"]), _TWO_FACTOR, capability="settings",
           body=Fields((_LOGIN, Field("code", STRING, "A current code from the authenticator.", required=True)))),
    _route("POST", "/two-factor/disable", "Turn two-factor off with a current code or an unused recovery code.",
           lambda call: _two_factor(call, "disable", call.body["code"]), _TWO_FACTOR, capability="settings",
           body=Fields((_LOGIN, Field("code", STRING, "A current code or an unused recovery code.",
                                      required=True)))),
)
