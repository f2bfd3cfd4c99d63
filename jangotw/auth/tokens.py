# -*- test-case-name: tests.auth.test_tokens -*-
"""API tokens: what a token looks like, and how its secret is kept.

A token reads C{jgt_<id>_<secret>}: the recognisable prefix lets secret
scanners (and people) spot a leaked token, the 12-hex-digit id names it in
listings and C{token revoke}, and the secret carries 192 random bits. Only the
SHA-256 of the secret is stored: a slow password hash buys nothing against a
secret that cannot be guessed, and a fast one keeps every SMTP AUTH cheap.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from ..errors import InputError
from ..model import ApiToken

__all__ = ["TOKEN_PREFIX", "NewToken", "new_token", "parse_token", "secret_matches", "parse_lifetime"]

TOKEN_PREFIX = "jgt_"
_TOKEN = re.compile(r"jgt_([0-9a-f]{12})_([A-Za-z0-9_-]{32})\Z")
_LIFETIME = re.compile(r"([1-9][0-9]{0,4})([hdw])\Z")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}

NewToken = tuple[str, str, str]  # (token text shown once, id, secret hash)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_token() -> NewToken:
    """A fresh token: its full text (print it once), its public id and the hash to store."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)  # 24 bytes: 192 bits, 32 characters
    return f"{TOKEN_PREFIX}{token_id}_{secret}", token_id, _digest(secret)


def parse_token(text: str) -> tuple[str, str] | None:
    """(id, secret hash) of something shaped like a token, else None (e.g. a password)."""
    match = _TOKEN.match(text.strip())
    if match is None:
        return None
    return match.group(1), _digest(match.group(2))


def secret_matches(token: ApiToken, secret_hash: str) -> bool:
    """Whether a presented token's secret hash is this token's, compared in constant time."""
    return hmac.compare_digest(token.secret_hash, secret_hash)


def parse_lifetime(text: str) -> int:
    """Seconds in C{90d}, C{12h} or C{4w}; C{never} (or C{0}) is 0, no expiry."""
    text = text.strip().lower()
    if text in ("never", "0"):
        return 0
    match = _LIFETIME.match(text)
    if match is None:
        raise InputError(f"cannot read the lifetime {text!r}: write a number of hours, days or weeks "
                         "such as 12h, 90d or 4w, or 'never'")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
