# -*- test-case-name: tests.test_model -*-
"""Plain values that travel between layers: accounts, envelopes, spool records."""
from __future__ import annotations

import enum
from typing import Any

import attrs
from attrs import frozen

from .errors import InputError

__all__ = [
    "AuthMethod",
    "AccountSettings",
    "Account",
    "TLSInfo",
    "Envelope",
    "SpoolRecord",
    "parse_setting",
    "setting_names",
]


class AuthMethod(str, enum.Enum):
    """How a message came to belong to an account."""

    SMTP_AUTH = "smtp-auth"
    IP = "ip"
    FROM = "from"
    LOCAL = "local"  # addressed to the server's own domains; no relay authorisation


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@frozen
class AccountSettings:
    """Per-account settings, changed with C{jangomail-admin account set NAME KEY VALUE}.

    Each field's metadata C{doc} is its user-facing description; the field type
    decides how the CLI parses the value.
    """

    restrict_from: bool = attrs.field(
        default=False,
        metadata=_doc("Refuse mail whose header From is not one of the account's authorised From addresses, "
                      "even when the session is authenticated or IP-authorised."),
    )
    manager_email: str = attrs.field(
        default="", metadata=_doc("Address of the account's manager, for notices.")
    )


def setting_names() -> list[str]:
    """Names of every account setting, in declaration order."""
    return [f.name for f in attrs.fields(AccountSettings)]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_setting(key: str, text: str) -> Any:
    """Convert the CLI text for setting C{key} to its typed value.

    @raise InputError: unknown key or a value of the wrong type.
    """
    fields = attrs.fields_dict(AccountSettings)
    if key not in fields:
        raise InputError(f"unknown setting {key!r}; known settings: {', '.join(setting_names())}")
    kind = fields[key].type
    if kind in (bool, "bool"):
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InputError(f"setting {key!r} takes true or false, not {text!r}")
    if kind in (int, "int"):
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"setting {key!r} takes a whole number, not {text!r}") from None
        if value < 0:
            raise InputError(f"setting {key!r} cannot be negative")
        return value
    return text


@frozen
class Account:
    """A sending account: the avatar every accepted message belongs to."""

    id: int
    name: str
    disabled: bool = False
    settings: AccountSettings = AccountSettings()
    created: float = 0.0
    password_hash: str | None = attrs.field(default=None, repr=False)


@frozen
class TLSInfo:
    """What protected a session: protocol version and cipher name."""

    version: str
    cipher: str


@frozen
class Envelope:
    """One SMTP transaction's envelope (replaced whole by RSET)."""

    sender: str  # "" is the null reverse-path <>
    recipients: tuple[str, ...] = ()
    body: str = "7BIT"  # 7BIT or 8BITMIME, from MAIL ... BODY=
    declared_size: int | None = None


@frozen
class SpoolRecord:
    """Everything known about an accepted message, written beside its bytes in the spool."""

    message_id: str
    envelope: Envelope
    account: str | None
    auth_method: AuthMethod
    client_ip: str
    helo: str
    tls: TLSInfo | None
    received_at: float
    size: int

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self, value_serializer=_serialise)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SpoolRecord":
        envelope = data["envelope"]
        tls = data.get("tls")
        return cls(
            message_id=data["message_id"],
            envelope=Envelope(
                sender=envelope["sender"],
                recipients=tuple(envelope["recipients"]),
                body=envelope.get("body", "7BIT"),
                declared_size=envelope.get("declared_size"),
            ),
            account=data.get("account"),
            auth_method=AuthMethod(data["auth_method"]),
            client_ip=data["client_ip"],
            helo=data.get("helo", ""),
            tls=TLSInfo(**tls) if tls else None,
            received_at=float(data["received_at"]),
            size=int(data["size"]),
        )


def _serialise(instance: object, field: object, value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value
