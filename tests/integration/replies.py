"""The SMTP replies a user sees, spelt out once (cf. aiosmtpd.testing.statuscodes).

They are written here rather than imported from jangotw so that a change to a
reply a client or a user's log parser depends on fails a test.
"""
from __future__ import annotations

import base64

OK = "250 2.0.0 Ok"
SENDER_OK = "250 2.1.0 Sender ok"
RECIPIENT_OK = "250 2.1.5 Recipient ok"
QUEUED = "250 2.0.0 Ok: queued as "
START_DATA = "354 2.0.0 End data with <CR><LF>.<CR><LF>"
READY_FOR_TLS = "220 2.0.0 Ready to start TLS"
BYE = "221 2.0.0 Bye"
BANNER = "220 relay.test ESMTP jangotw"

TOO_MANY_CONNECTIONS = "421 4.7.0 relay.test Too many connections; try again later"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors; closing connection"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
UNRECOGNISED = "500 5.5.2 Command unrecognized"
BARE_NEWLINE = "550 5.6.0 Bare CR or LF in message text; lines must end with CRLF"
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"

AUTHENTICATED = "235 2.7.0 Authentication successful"
CREDENTIALS_INVALID = "535 5.7.8 Authentication credentials invalid"
TEMPORARY_FAILURE = "454 4.7.0 Temporary authentication failure"
USE_A_TOKEN = "535 5.7.8 Two-factor authentication is on for this login: use an API token as the password"
ADDRESS_REFUSED = "535 5.7.1 Authentication from this IP address is not allowed for this login"
THROTTLED = "454 4.7.0 Too many failed authentication attempts; try again later"
LOGIN_MAY_NOT_INITIATE = "550 5.7.1 method not allowed for this login"


def relaying_denied(client_ip: str, shown: str) -> str:
    """The refusal JangoMail users know: client address and the sender as a person reads it."""
    return f'550 5.7.1 Relaying denied for [{client_ip}] / "{shown}"'


def plain(username: str, password: str) -> str:
    """An AUTH PLAIN command with its initial response."""
    return "PLAIN " + base64.b64encode(f"\0{username}\0{password}".encode()).decode()
