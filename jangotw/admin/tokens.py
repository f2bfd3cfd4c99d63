# -*- test-case-name: tests.admin.test_tokens -*-
"""API tokens as an administrator creates, lists and revokes them.

A token lets an application send mail (scope C{smtp}: the token is the SMTP
AUTH password) or call the admin API (scope C{api}: an HTTP Bearer credential)
without holding a password; it belongs to the account or to one of its logins.
Its text (L{jangotw.auth.tokens}) is in the answer of L{TokenAdmin.create}
only: the store keeps a hash, and listings show the public id and prefix.
Revoking is immediate for every node sharing the store.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..auth.tokens import TOKEN_PREFIX, new_token, parse_lifetime
from ..errors import InputError
from ..interfaces import IAccountStore, ICredentialStore
from ..model import PRIMARY, TOKEN_SCOPES, ApiToken
from .logins import find_account, find_login, parse_scopes, render_table, smtp_user, token_answer

__all__ = ["TokenAdmin", "DEFAULT_SCOPES", "MAX_LABEL_LENGTH", "parse_token_id", "check_label",
           "render_new_token", "render_tokens", "render_revoked"]

log = Logger()

JSONDict = dict[str, Any]

DEFAULT_SCOPES = frozenset(TOKEN_SCOPES)
MAX_LABEL_LENGTH = 100
_CAPABILITY_OF_SCOPE = {"smtp": "relay", "api": "api"}  # what a login must be allowed to use a scope
_TOKEN_ID = re.compile(rf"(?:{TOKEN_PREFIX})?([0-9a-f]{{12}})(?:_[A-Za-z0-9_-]*)?\Z")


# -- parsing administrator input (pure) ---------------------------------------------------

def parse_token_id(text: str) -> str:
    """The id of C{0123456789ab}, its prefix C{jgt_0123456789ab}, or a whole (leaked) token.

    @raise InputError: none of those.
    """
    match = _TOKEN_ID.match(text.strip())
    if match is None:
        raise InputError(f"invalid token id: write the 12 hex digits shown by 'token list', "
                         f"or the {TOKEN_PREFIX}<id> prefix")
    return match.group(1)


def check_label(text: str) -> str:
    """A token's label (what it is for), without surrounding whitespace.

    @raise InputError: longer than L{MAX_LABEL_LENGTH} or with control characters.
    """
    label = text.strip()
    if len(label) > MAX_LABEL_LENGTH or not label.isprintable():
        raise InputError(f"invalid label: use at most {MAX_LABEL_LENGTH} characters without control characters")
    return label


# -- answers -------------------------------------------------------------------------------

def _short(iso: str | None, never: str = "never") -> str:
    return never if iso is None else f"{iso[:10]} {iso[11:16]}"


def render_new_token(answer: JSONDict) -> str:
    """C{token create}: the token once, with a warning that it cannot be shown again."""
    login = f"{answer['login']} (SMTP user {answer['smtp_user']})" if answer["login"] else "(the account itself)"
    return "\n".join([
        answer["token"],
        "Copy this token now: it cannot be shown again (only its hash is kept).",
        f"id:       {answer['id']}",
        f"account:  {answer['account']}",
        f"login:    {login}",
        f"scopes:   {', '.join(answer['scopes'])}",
        f"expires:  {answer['expires'] or 'never'}",
        *([f"label:    {answer['label']}"] if answer["label"] else []),
    ])


def render_tokens(tokens: Sequence[JSONDict]) -> str:
    """C{token list}: a table (times in UTC to the minute), or a sentence when there are none."""
    if not tokens:
        return "no tokens"
    return render_table(("ID", "PREFIX", "LOGIN", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "STATE", "LABEL"), [
        (t["id"], t["prefix"], t["login"] or "-", ",".join(t["scopes"]), _short(t["created"]),
         _short(t["expires"]), _short(t["last_used"]),
         f"revoked {_short(t['revoked'])}" if t["revoked"] else t["state"], t["label"] or "-") for t in tokens])


def render_revoked(answer: JSONDict) -> str:
    """C{token revoke}."""
    if answer["already_revoked"]:
        return f"token {answer['id']} of {answer['account']} was already revoked at {answer['revoked']}"
    return f"revoked token {answer['id']} of {answer['account']}: it is refused from now on"


# -- the service ---------------------------------------------------------------------------

@frozen
class TokenAdmin:
    """Create, list and revoke the API tokens of the accounts in C{accounts}.

    @ivar clock: stamps tokens and computes their expiry.
    """

    accounts: IAccountStore
    credentials: ICredentialStore
    clock: IReactorTime

    def create(self, account: str, login: str | None = None, scope: str | None = None,
               expires: str | None = None, label: str = "") -> "Deferred[JSONDict]":
        """A new token for C{account} (or its login C{login}); the answer alone holds its text.

        C{scope} defaults to C{smtp,api}, narrowed for a login to what it may do
        (C{smtp} needs its C{relay} capability, C{api} its C{api}); C{expires} is
        a lifetime such as C{90d} or C{never} (the default). Fails with InputError
        for an unknown account or login, an unknown scope, a scope the login may
        not use, an unreadable lifetime or a bad label.
        """
        return Deferred.fromCoroutine(self._create(account, login, scope, expires, label))

    async def _create(self, account: str, login: str | None, scope: str | None, expires: str | None,
                      label: str) -> JSONDict:
        scopes = None if scope is None else parse_scopes(scope)
        lifetime = 0 if expires is None else parse_lifetime(expires)
        label = check_label(label)
        if login is None:
            account_name, login_name = await find_account(self.accounts, account), PRIMARY
            scopes = DEFAULT_SCOPES if scopes is None else scopes
        else:
            account_name, found = await find_login(self.accounts, self.credentials, account, login)
            login_name = found.name
            permitted = frozenset(s for s, capability in _CAPABILITY_OF_SCOPE.items()
                                  if capability in found.capabilities)
            who = f"login {login_name!r} of account {account_name!r}"
            if scopes is None:
                if not permitted:
                    raise InputError(f"{who} may neither relay nor use the API, so a token would be useless; "
                                     "allow it relay or api first")
                scopes = permitted
            refused = sorted(scopes - permitted)
            if refused:
                raise InputError(f"{who} may not use scope {refused[0]} (it needs the "
                                 f"{_CAPABILITY_OF_SCOPE[refused[0]]} capability); leave that scope out "
                                 "or allow it first")
        now = self.clock.seconds()
        text, token_id, secret_hash = new_token()
        token: ApiToken = await self.credentials.add_token(ApiToken(
            id=token_id, account=account_name, login=login_name, scopes=scopes, label=label, created=now,
            secret_hash=secret_hash, expires=now + lifetime if lifetime else 0.0))
        log.info("created token {token_id} for {account} {login}", token_id=token.id, account=token.account,
                 login=token.login)
        return {"token": text, "smtp_user": smtp_user(token.account, token.login), **token_answer(token, now)}

    def list_tokens(self, account: str) -> "Deferred[list[JSONDict]]":
        """Every token of the account and its logins, revoked and expired ones too, oldest first;
        never a secret or a hash."""
        return Deferred.fromCoroutine(self._list_tokens(account))

    async def _list_tokens(self, account: str) -> list[JSONDict]:
        tokens: list[ApiToken] = await self.credentials.list_tokens(await find_account(self.accounts, account))
        now = self.clock.seconds()
        return [token_answer(token, now) for token in tokens]

    def revoke(self, token_id: str) -> "Deferred[JSONDict]":
        """Revoke a token at once. Revoking a revoked token changes nothing and says so
        (C{already_revoked}); an unknown id fails with InputError."""
        return Deferred.fromCoroutine(self._revoke(token_id))

    async def _revoke(self, text: str) -> JSONDict:
        token_id = parse_token_id(text)
        before: ApiToken | None = await self.credentials.get_token(token_id)
        if before is None:
            raise InputError(f"no token with id {token_id}")
        now = self.clock.seconds()
        token: ApiToken = await self.credentials.revoke_token(token_id, now)
        if not before.revoked:
            log.info("revoked token {token_id} of {account}", token_id=token.id, account=token.account)
        return {**token_answer(token, now), "already_revoked": bool(before.revoked)}
