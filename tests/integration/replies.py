"""The SMTP replies a user sees, spelt out once (cf. aiosmtpd.testing.statuscodes).

They are written here rather than imported from jangotw so that a change to a
reply a client or a user's log parser depends on fails a test.
"""
from __future__ import annotations

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


def relaying_denied(client_ip: str, shown: str) -> str:
    """The refusal JangoMail users know: client address and the sender as a person reads it."""
    return f'550 5.7.1 Relaying denied for [{client_ip}] / "{shown}"'
