# -*- test-case-name: tests.auth.test_passwords -*-
"""Password hashing (argon2id) and the strength rule for new passwords.

Hashing and verifying are deliberately slow: callers on the reactor thread run
them in the C{cpu} thread pool.
"""
from __future__ import annotations

from typing import Sequence

import argon2
import zxcvbn

from ..errors import InputError

__all__ = ["PasswordHasher", "check_strength", "MIN_LENGTH", "MIN_SCORE"]

MIN_LENGTH = 12
MIN_SCORE = 3


class PasswordHasher:
    """argon2id with argon2-cffi's current recommended parameters."""

    def __init__(self, hasher: argon2.PasswordHasher | None = None) -> None:
        self._hasher = hasher or argon2.PasswordHasher()

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """True when C{password} matches; never raises for a mismatch or a corrupt hash."""
        try:
            return self._hasher.verify(password_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)


def check_strength(password: str, user_inputs: Sequence[str] = ()) -> None:
    """Refuse a password an attacker would guess.

    @raise InputError: saying why, and suggesting a passphrase.
    """
    advice = "use a passphrase of four or more unrelated words, e.g. 'copper lantern orbit meadow'"
    if len(password) < MIN_LENGTH:
        raise InputError(f"password refused: it must be at least {MIN_LENGTH} characters; {advice}")
    result = zxcvbn.zxcvbn(password[:100], user_inputs=list(user_inputs))
    if result["score"] < MIN_SCORE:
        warning = result["feedback"].get("warning") or "it is too easy to guess"
        raise InputError(f"password refused: {warning.rstrip('.').lower()}; {advice}")
