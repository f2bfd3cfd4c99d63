# -*- test-case-name: tests.ingress.test_session -*-
"""Errors shared by every layer, and the exact SMTP reply texts users know.

A L{ReplyError} carries what the client is told (C{public}) apart from what only
the log may see (C{reason}), so no mechanism, host or config key leaks into a
reply.
"""
from __future__ import annotations

import attrs

__all__ = [
    "JangoError",
    "ReplyError",
    "ConfigError",
    "InputError",
    "TemporaryError",
    "PermanentError",
    "relaying_denied",
    "BOUNCED_TEXT",
    "UNSUBSCRIBED_TEXT",
]


class JangoError(Exception):
    """Root of every error jangotw raises on purpose."""


@attrs.define(eq=False, str=False)
class ReplyError(JangoError):
    """An SMTP refusal: code, RFC 3463 enhanced code, public text, private reason."""

    code: int
    enhanced: str
    public: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.public}"

    def because(self, reason: str) -> "ReplyError":
        """The same reply with a log-only reason attached."""
        return attrs.evolve(self, reason=reason)


class ConfigError(JangoError):
    """A configuration file that cannot be used; the message names the key."""


class InputError(JangoError):
    """Bad input from an administrator (unknown account, invalid CIDR, weak password)."""


class TemporaryError(JangoError):
    """A failure worth retrying later."""


class PermanentError(JangoError):
    """A failure that retrying will not fix."""


# The notification texts of a suppressed send, exactly as JangoMail's users know them.
BOUNCED_TEXT = (
    "Web Service Exception BouncedEmailAddressException: Email address is on account's Bounce list. "
    "System.Exception: JangoMailNamespace.BouncedEmailAddressException: Web Service Exception "
    "BouncedEmailAddressException: Email address is on account's Bounce list."
)
UNSUBSCRIBED_TEXT = (
    "Web Service Exception UnsubscribedEmailAddressException: Email address is on account's Unsubscribe list. "
    "System.Exception: Namespace.UnsubscribedEmailAddressException: Web Service Exception "
    "UnsubscribedEmailAddressException: Email address is on account's Unsubscribe list."
)


def relaying_denied(client_ip: str, from_text: str) -> ReplyError:
    """The refusal JangoMail's users know, given in-session so a forged sender gets no bounce."""
    return ReplyError(550, "5.7.1", f'Relaying denied for [{client_ip}] / "{from_text}"')
