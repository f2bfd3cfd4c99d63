# -*- test-case-name: tests.admin.test_api_session -*-
"""Session tokens of the admin API: what an interactive login (password, then TOTP) hands back.

A session token is stateless: C{jgs_<claims>.<mac>}, the claims (who, what
they may do, until when) in base64url JSON and an HMAC-SHA256 over them with
the key in C{data_dir/secrets/api-session.key}. Every node sharing the secrets
directory accepts it, and nothing is stored. It lives L{SESSION_LIFETIME}
seconds and cannot be revoked before that; each use checks again that the
account and the login still exist, are enabled and keep the capability, so
disabling a login or narrowing it takes effect at once (a directory user's
group capabilities are the ones of its login, for that hour).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

from ..auth.principals import Principal

__all__ = ["SessionSigner", "SessionClaims", "SESSION_PREFIX", "SESSION_LIFETIME"]

SESSION_PREFIX = "jgs_"
SESSION_LIFETIME = 3600.0
_CONTEXT = b"jangotw admin api session v1\0"  # keeps these MACs apart from any other use of a key
_MAX_TOKEN = 4096


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@frozen
class SessionClaims:
    """What a session token says: the account, the login (PRIMARY for the account's own), the
    principal's name, its capabilities at login, whether it is a directory user, and its expiry."""

    account: str
    login: str
    name: str
    capabilities: frozenset[str]
    directory: bool
    expires: float

    def to_json(self) -> dict[str, Any]:
        return {"a": self.account, "l": self.login, "n": self.name, "c": sorted(self.capabilities),
                "d": self.directory, "e": int(self.expires)}

    @classmethod
    def from_json(cls, document: Any) -> "SessionClaims":
        """@raise ValueError: not the shape L{to_json} writes."""
        if not isinstance(document, dict):
            raise ValueError("claims are not an object")
        account, login, name, capabilities = document["a"], document["l"], document["n"], document["c"]
        directory, expires = document["d"], document["e"]
        if not (all(isinstance(text, str) for text in (account, login, name)) and isinstance(capabilities, list)
                and all(isinstance(text, str) for text in capabilities) and isinstance(directory, bool)
                and isinstance(expires, int)):
            raise ValueError("claims of the wrong types")
        return cls(account, login, name, frozenset(capabilities), directory, float(expires))


@frozen
class SessionSigner:
    """Issues and checks session tokens with C{key}; C{clock} dates them."""

    key: bytes
    clock: IReactorTime
    lifetime: float = SESSION_LIFETIME

    def issue(self, principal: Principal) -> tuple[str, SessionClaims]:
        """A new token for C{principal} and the claims it carries."""
        claims = SessionClaims(
            account=principal.account.name, login=principal.login_name, name=principal.name,
            capabilities=principal.capabilities, directory=principal.via == "directory",
            expires=float(int(self.clock.seconds() + self.lifetime)))
        payload = _encode(json.dumps(claims.to_json(), separators=(",", ":")).encode("utf-8"))
        return f"{SESSION_PREFIX}{payload}.{_encode(self._mac(payload))}", claims

    def verify(self, text: str) -> SessionClaims | None:
        """The claims of a token this key signed that has not expired; None for anything else."""
        if not text.startswith(SESSION_PREFIX) or len(text) > _MAX_TOKEN:
            return None
        payload, dot, mac = text[len(SESSION_PREFIX):].partition(".")
        try:
            if not dot or not hmac.compare_digest(_decode(mac), self._mac(payload)):
                return None
            claims = SessionClaims.from_json(json.loads(_decode(payload)))
        except (binascii.Error, ValueError, KeyError):
            return None
        if claims.expires <= self.clock.seconds():
            return None
        return claims

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self.key, _CONTEXT + payload.encode("ascii"), hashlib.sha256).digest()

