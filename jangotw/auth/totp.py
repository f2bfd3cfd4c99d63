# -*- test-case-name: tests.auth.test_totp -*-
"""Time-based one-time passwords (RFC 6238, pyotp) and one-time recovery codes.

A code is accepted for the current 30-second step and one step either side
(clock drift); the caller records the step that matched
(L{jangotw.interfaces.ICredentialStore.use_totp_step}), so a code is never
accepted twice. Recovery codes carry 80 random bits each, so a SHA-256 of the
normalised code is a safe way to store them and lets one lookup find the code.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets

import pyotp
import qrcode

__all__ = ["STEP_SECONDS", "new_secret", "provisioning_uri", "qr_text", "matching_step", "new_recovery_codes",
           "recovery_hash", "looks_like_code"]

STEP_SECONDS = 30
_DRIFT_STEPS = 1
_CODE = re.compile(r"[0-9]{6}\Z")
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def new_secret() -> str:
    """A 160-bit base32 secret, the size RFC 4226 recommends."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, name: str, issuer: str = "jangotw") -> str:
    """The C{otpauth://} URI an authenticator app imports."""
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=issuer)


def qr_text(uri: str) -> str:
    """The URI as a QR code drawn with block characters, to scan from a terminal."""
    code = qrcode.QRCode(border=2)
    code.add_data(uri)
    code.make(fit=True)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


def looks_like_code(text: str) -> bool:
    """Six digits: a TOTP code rather than a recovery code."""
    return _CODE.match(text.strip()) is not None


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (within one of C{now}'s) whose code is C{code}, or None."""
    code = code.strip()
    if not looks_like_code(code):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now // STEP_SECONDS)
    # Steps, not times, go to pyotp: nothing converts through local time, and no step before the epoch.
    for step in range(max(0, current - _DRIFT_STEPS), current + _DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes(count: int = 10) -> list[str]:
    """C{count} codes such as C{k7wq-3mza-pp2x-9fte} (16 base32 characters: 80 bits)."""
    codes = []
    for _ in range(count):
        text = "".join(secrets.choice(_BASE32) for _ in range(16))
        codes.append("-".join(text[index:index + 4] for index in range(0, 16, 4)))
    return codes


def recovery_hash(code: str) -> str:
    """The stored form of a recovery code; dashes, spaces and case do not matter."""
    normal = re.sub(r"[\s-]", "", code).lower()
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()
