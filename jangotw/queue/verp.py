# -*- test-case-name: tests.queue.test_verp -*-
"""Signed VERP return paths: which message and recipient an asynchronous bounce is about.

Each recipient's copy leaves with C{MAIL FROM:<bounces+TOKEN@BOUNCE_DOMAIN>}, so
a bounce that arrives hours later names the message and recipient it is about
without anyone parsing its free-form text. TOKEN carries an HMAC so that mail
forged to a guessed address cannot put a recipient on the suppression list.

TOKEN is C{<queue id>-<recipient index>-<mac>}: the queue id lower-cased
(C{[0-9a-z]}), the index in decimal without leading zeros, and the first 80
bits of HMAC-SHA256 over both in lower-case base32 without padding
(C{[a-z2-7]}, 16 characters, no unused bits). None of the three can contain the
C{-} separator, the whole local part uses only letters, digits, C{+} and C{-}
(safe through every MTA), is at most 50 characters (RFC 5321 allows 64), and
reads the same after an MTA lower- or upper-cases it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile

from attrs import field, frozen
from attrs.validators import instance_of

from ..errors import ConfigError

__all__ = ["VerpSigner", "load_or_create_secret", "SECRET_SIZE", "MAX_MESSAGE_ID", "MAX_RECIPIENT_INDEX"]

SECRET_SIZE = 32
MAX_MESSAGE_ID = 20
MAX_RECIPIENT_INDEX = 9999

_PREFIX = "bounces+"
_MAC_BYTES = 10  # 80 bits: a whole number of base32 characters, so every MAC has one spelling
_CONTEXT = b"jangotw verp v1\0"  # keeps these MACs apart from any other use of the secret
_MESSAGE_ID = re.compile(r"[0-9A-Z]{1,%d}\Z" % MAX_MESSAGE_ID)
_TOKEN = re.compile(r"([0-9a-z]{1,%d})-(0|[1-9][0-9]{0,3})-([a-z2-7]{16})\Z" % MAX_MESSAGE_ID)
_DOMAIN = re.compile(r"[^\s@<>\"()\[\],;:\\]+\Z")


def _check_secret(instance: object, attribute: object, value: bytes) -> None:
    if len(value) < 16:
        raise ValueError("a VERP secret needs at least 16 bytes")


@frozen
class VerpSigner:
    """Make and check signed VERP return paths with one secret.

    The domain is not signed: a token read from any domain is accepted, so the
    bounce domain can change without invalidating mail already sent.
    """

    secret: bytes = field(repr=False, validator=[instance_of(bytes), _check_secret])

    def return_path(self, message_id: str, recipient_index: int, bounce_domain: str) -> str:
        """The reverse-path for recipient C{recipient_index} of queued message C{message_id}.

        @raise ValueError: the id is not 1-20 upper-case letters and digits, the
            index is outside 0-9999, or the domain is not a plain domain.
        """
        if _MESSAGE_ID.match(message_id) is None:
            raise ValueError(f"not a queue id: {message_id!r}")
        if (isinstance(recipient_index, bool) or not isinstance(recipient_index, int)
                or not 0 <= recipient_index <= MAX_RECIPIENT_INDEX):
            raise ValueError(f"recipient index out of range: {recipient_index!r}")
        if _DOMAIN.match(bounce_domain) is None:
            raise ValueError(f"not a bounce domain: {bounce_domain!r}")
        token = f"{message_id.lower()}-{recipient_index}-{self._mac(message_id, recipient_index)}"
        return f"{_PREFIX}{token}@{bounce_domain}"

    def parse(self, address: str) -> tuple[str, int] | None:
        """C{(queue id, recipient index)} from a return path this signer made; else None.

        The local part is compared without regard to case; angle brackets around
        the address are allowed. Anything else (another prefix, a malformed or
        altered token, another secret's MAC) is None.
        """
        address = address.strip()
        if address.startswith("<") and address.endswith(">"):
            address = address[1:-1]
        local, at, domain = address.rpartition("@")
        if not at or not domain:
            return None
        local = local.lower()
        if not local.startswith(_PREFIX):
            return None
        match = _TOKEN.match(local[len(_PREFIX):])
        if match is None:
            return None
        message_id, index = match.group(1).upper(), int(match.group(2))
        if not hmac.compare_digest(match.group(3), self._mac(message_id, index)):
            return None
        return message_id, index

    def _mac(self, message_id: str, recipient_index: int) -> str:
        signed = _CONTEXT + f"{message_id}\0{recipient_index}".encode("ascii")
        digest = hmac.new(self.secret, signed, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.b32encode(digest).decode("ascii").lower()


def load_or_create_secret(path: str) -> bytes:
    """Read the VERP secret from C{path}, creating a random one there first if there is none.

    Blocking: call it once at start-up, before the reactor runs. A new secret
    is written to a temporary file (mode 0600) in the same directory, fsynced,
    then linked into place and the directory fsynced, so a crash leaves either
    no file or the whole secret. Linking never replaces an existing file: if
    another process created the secret first, both use that one. (Only where
    the file system has no hard links is the temporary file renamed instead.)

    @raise ConfigError: the file exists but does not hold exactly 32 bytes.
    @raise OSError: the file or its directory cannot be read or written.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".verp-secret-", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(SECRET_SIZE))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won the race; its secret is the one in use
        except OSError:
            os.replace(temporary, path)
        _fsync_directory(directory)
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
    return _read_secret(path)


def _read_secret(path: str) -> bytes:
    with open(path, "rb") as handle:
        secret = handle.read(SECRET_SIZE + 1)
    if len(secret) != SECRET_SIZE:
        raise ConfigError(f"VERP secret file {path} must hold exactly {SECRET_SIZE} bytes, not {len(secret)}")
    return secret


def _fsync_directory(directory: str) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
