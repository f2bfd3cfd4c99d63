# -*- test-case-name: tests.tracking.test_links -*-
"""Signed tracking tokens and the URLs that carry them: open pixels, clicks, unsubscribes.

A recipient's copy of a message carries URLs on the tracking server whose query
is a token naming the queued message, the recipient (by index in the send log)
and, for a click, the link (by index in the stored link list). The tracking
server believes only what a token's MAC vouches for, so nobody can record
events for, redirect through, or unsubscribe an address they never received a
message for, and a token of one kind is never accepted as another.

A token is lower-case base32 without padding (C{[a-z2-7]}, safe in a URL
query, an HTML attribute, a quoted-printable body and a header) of::

    kind (1 byte)  id length (1)  queue id (ASCII, 1-20)  recipient index (3)  [link index (2)]  MAC (10)

where the MAC is the first 80 bits of HMAC-SHA256 over a per-kind context string
and every byte before it. A parser accepts only the one spelling its encoder
makes (no upper case, no unused trailing bits set), so every altered character
changes the bytes and fails the MAC or the layout. The longest token (a click
for a 20-character id) is 60 characters.

The secret is its own file (not the VERP secret); both use
L{jangotw.queue.verp.load_or_create_secret}.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from urllib.parse import urlsplit

import attrs
from attrs import field, frozen
from attrs.validators import instance_of

__all__ = [
    "UNIQUE_ID_TOKEN",
    "personalise",
    "TokenSigner",
    "TrackingUrls",
    "account_base_url",
    "MAX_MESSAGE_ID",
    "MAX_RECIPIENT_INDEX",
    "MAX_LINK_INDEX",
    "MAX_TOKEN_LENGTH",
]

UNIQUE_ID_TOKEN = "***uniqueid***"  # replaced by each recipient's unsubscribe id

MAX_MESSAGE_ID = 20
MAX_RECIPIENT_INDEX = 2 ** 24 - 1
MAX_LINK_INDEX = 2 ** 16 - 1
MAX_TOKEN_LENGTH = 60

_MAC_BYTES = 10  # 80 bits
_RECIPIENT_BYTES = 3
_LINK_BYTES = 2
_CLICK, _OPEN, _UNSUBSCRIBE = b"c", b"o", b"u"
_CONTEXTS = {  # keeps each kind's MACs apart from the others and from any other use of a secret
    _CLICK: b"jangotw tracking click v1\0",
    _OPEN: b"jangotw tracking open v1\0",
    _UNSUBSCRIBE: b"jangotw tracking unsubscribe v1\0",
}
_MESSAGE_ID = re.compile(rb"[0-9A-Z]{1,%d}\Z" % MAX_MESSAGE_ID)
_TOKEN = re.compile(r"[a-z2-7]{1,%d}\Z" % MAX_TOKEN_LENGTH)


def _check_secret(instance: object, attribute: object, value: bytes) -> None:
    if len(value) < 16:
        raise ValueError("a tracking secret needs at least 16 bytes")


def _encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _decode(token: str) -> bytes | None:
    """The bytes of a token in its one canonical spelling, else None."""
    if not isinstance(token, str) or _TOKEN.match(token) is None:
        return None
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError):
        return None
    return raw if _encode(raw) == token else None


def _index(value: int, maximum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{what} index out of range: {value!r}")
    return value


@frozen
class TokenSigner:
    """Make and check the three kinds of tracking token with one secret.

    Making a token from a bad queue id (not 1-20 upper-case letters and digits)
    or an index out of range raises ValueError: that is a bug in the caller.
    Parsing never raises: anything not made by this signer, for this kind, is None.
    """

    secret: bytes = field(repr=False, validator=[instance_of(bytes), _check_secret])
    # The keyed hash with the secret already absorbed: each token copies it (a campaign signs
    # a token per link per member), instead of setting up the key every time.
    _keyed: "hmac.HMAC" = field(init=False, repr=False, eq=False,
                                default=attrs.Factory(lambda self: hmac.new(self.secret, digestmod=hashlib.sha256),
                                                      takes_self=True))

    def link_token(self, message_id: str, recipient_index: int, link_index: int) -> str:
        """The token of link C{link_index} in recipient C{recipient_index}'s copy of a message."""
        fields = (_index(recipient_index, MAX_RECIPIENT_INDEX, "recipient").to_bytes(_RECIPIENT_BYTES, "big")
                  + _index(link_index, MAX_LINK_INDEX, "link").to_bytes(_LINK_BYTES, "big"))
        return self._sign(_CLICK, message_id, fields)

    def open_token(self, message_id: str, recipient_index: int) -> str:
        """The token of the open pixel in recipient C{recipient_index}'s copy of a message."""
        return self._sign(_OPEN, message_id, self._recipient(recipient_index))

    def unsubscribe_id(self, message_id: str, recipient_index: int) -> str:
        """What replaces C{***uniqueid***} in recipient C{recipient_index}'s copy of a message."""
        return self._sign(_UNSUBSCRIBE, message_id, self._recipient(recipient_index))

    def parse_link(self, token: str) -> tuple[str, int, int] | None:
        """C{(queue id, recipient index, link index)} from a link token, else None."""
        found = self._verify(_CLICK, token, _RECIPIENT_BYTES + _LINK_BYTES)
        if found is None:
            return None
        message_id, fields = found
        return (message_id, int.from_bytes(fields[:_RECIPIENT_BYTES], "big"),
                int.from_bytes(fields[_RECIPIENT_BYTES:], "big"))

    def parse_open(self, token: str) -> tuple[str, int] | None:
        """C{(queue id, recipient index)} from an open-pixel token, else None."""
        found = self._verify(_OPEN, token, _RECIPIENT_BYTES)
        return None if found is None else (found[0], int.from_bytes(found[1], "big"))

    def parse_unsubscribe(self, token: str) -> tuple[str, int] | None:
        """C{(queue id, recipient index)} from an unsubscribe id, else None."""
        found = self._verify(_UNSUBSCRIBE, token, _RECIPIENT_BYTES)
        return None if found is None else (found[0], int.from_bytes(found[1], "big"))

    @staticmethod
    def _recipient(recipient_index: int) -> bytes:
        return _index(recipient_index, MAX_RECIPIENT_INDEX, "recipient").to_bytes(_RECIPIENT_BYTES, "big")

    def _sign(self, kind: bytes, message_id: str, fields: bytes) -> str:
        encoded = message_id.encode("ascii", "replace") if isinstance(message_id, str) else b""
        if _MESSAGE_ID.match(encoded) is None:
            raise ValueError(f"not a queue id: {message_id!r}")
        payload = kind + bytes([len(encoded)]) + encoded + fields
        return _encode(payload + self._mac(kind, payload))

    def _verify(self, kind: bytes, token: str, field_size: int) -> tuple[str, bytes] | None:
        """The queue id and the fixed-size fields of a genuine token of C{kind}, else None."""
        raw = _decode(token)
        if raw is None or len(raw) < 2 or raw[:1] != kind:
            return None
        id_length = raw[1]
        if len(raw) != 2 + id_length + field_size + _MAC_BYTES:
            return None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(kind, payload)):
            return None
        message_id = payload[2:2 + id_length]
        if _MESSAGE_ID.match(message_id) is None:  # only a signer bug could get here
            return None
        return message_id.decode("ascii"), payload[2 + id_length:]

    def _mac(self, kind: bytes, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(_CONTEXTS[kind] + payload)
        return mac.digest()[:_MAC_BYTES]


def _check_base_url(instance: object, attribute: object, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"a tracking base URL is http(s)://host[/path], not {value!r}")


@frozen
class TrackingUrls:
    """The tracking URLs of one base (an account's tracking domain or the server's default).

    The base may carry a path (C{https://example.com/t}); a trailing slash is dropped.
    """

    base_url: str = field(converter=lambda url: str(url).rstrip("/"), validator=_check_base_url)
    signer: TokenSigner = field(validator=instance_of(TokenSigner))

    def click(self, message_id: str, recipient_index: int, link_index: int) -> str:
        """The URL that records a click and redirects to the stored destination."""
        return f"{self.base_url}/c.z?{self.signer.link_token(message_id, recipient_index, link_index)}"

    def open_pixel(self, message_id: str, recipient_index: int) -> str:
        """The URL of the 1x1 image that records an open."""
        return f"{self.base_url}/o.z?{self.signer.open_token(message_id, recipient_index)}"

    def unsubscribe(self, message_id: str, recipient_index: int) -> str:
        """The recipient's unsubscribe page (also the RFC 8058 one-click POST target)."""
        return f"{self.base_url}/u.z?{self.signer.unsubscribe_id(message_id, recipient_index)}"


def personalise(destination: str, unique_id: str) -> str:
    """A tracked destination for the recipient who clicked: links are stored once per message
    with the C{***uniqueid***} token still in them, and filled in at the redirect."""
    return destination.replace(UNIQUE_ID_TOKEN, unique_id)


def account_base_url(tracking_domain: str, default_base_url: str) -> str:
    """The tracking base URL for an account's C{tracking_domain} setting.

    Empty: the server's C{[tracking] base_url}. A full URL is used as it is; a
    bare host name (C{track.example.com}, a CNAME to this server) takes the
    scheme of the default base URL (https when there is none), so one TLS
    decision covers every domain the server answers for.
    """
    domain = tracking_domain.strip()
    if not domain:
        return default_base_url
    if "://" in domain:
        return domain
    scheme = urlsplit(default_base_url).scheme or "https"
    return f"{scheme}://{domain}"
