# -*- test-case-name: tests.pipeline.test_dkim -*-
"""DKIM signing (RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256; relaxed/relaxed): the pipeline's last step.

L{sign_message} reads a spooled message and writes a copy with a
C{DKIM-Signature} field prepended; the caller runs it in the C{cpu} thread pool
and then fsyncs and renames the copy like any rewritten spool file. The body is
never held in memory: L{RelaxedBodyHasher} canonicalises it (RFC 6376 3.4.4) and
hashes it a chunk at a time, so a 30 MB message costs a few chunks of memory.

How dkimpy is used: C{dkim.sign} and C{DKIM.sign} always canonicalise and hash
C{self.body} in memory and read the wall clock for C{t=}, and that step is not a
method of its own, so it cannot be overridden. Both C{DKIM.sign} and
C{ARC.sign} build their tag list themselves and hand it to
C{DomainSigner.gen_header}, which canonicalises the header fields, hashes the
signed ones plus the new field with an empty C{b=}, signs with RSA and folds the
result. This module does the same: it parses only the header section with
C{dkim.DKIM(header_block)}, computes C{bh=} with L{RelaxedBodyHasher}, takes
C{t=} from the caller's clock, and calls C{gen_header} with the finished tag
list, setting C{hasher} first as C{DKIM.sign} does. C{bh=} is part of the signed
field, so it must be known before C{gen_header} runs: nothing is patched
afterwards. The tests verify every result with C{dkim.verify}, which pins this
use of dkimpy's internals. A domain with an Ed25519 key as well gets a second
signature over the same body hash (RFC 8463 3: receivers that do not know
the algorithm ignore it and use the RSA one).

Only keys that may sign are used (L{signing_keys_for}): a key whose DNS
record a C{domain check} found, or one the operator forced, and not retired.

What is signed must be what the remote server receives, and
L{jangotw.outbound.protocol.BodyEncoder} changes two things on the way: a bare
CR becomes a line end, and a line longer than 998 octets (counting the dot that
dot-stuffing adds) is continued on a new line. Either would break the
signature, so such a message (never produced by the receiver, which refuses or
normalises bare CR and LF) is left unsigned: L{sign_message} returns False, as
it does for an unusable key. A bare LF is a line end for the encoder, dkimpy and
L{RelaxedBodyHasher} alike, so LF-only messages are signed.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
from email.utils import parseaddr
from functools import partial
from typing import IO, Any, Sequence

import dkim  # type: ignore[import-untyped]
import idna
import nacl.signing
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.canonicalization import CanonicalizationPolicy  # type: ignore[import-untyped]
from dkim.crypto import HASH_ALGORITHMS, UnparsableKeyError, parse_pem_private_key  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ..interfaces import IDomainStore
from ..model import ED25519, RSA, DomainKey

__all__ = [
    "SIGNED_HEADERS",
    "MIN_KEY_BITS",
    "RelaxedBodyHasher",
    "sign_message",
    "signing_keys_for",
    "new_rsa_key",
    "new_ed25519_key",
    "public_key_bytes",
    "dns_record",
    "split_txt",
]

log = Logger()

#: Header fields signed when present, each occurrence; From is signed once more
#: than it occurs, so that a From field added in transit breaks the signature.
SIGNED_HEADERS = (
    "From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "Reply-To", "List-Unsubscribe", "List-Unsubscribe-Post",
)
#: RFC 8301 3.2: verifiers must reject shorter RSA keys (dkimpy's default C{minkey}).
MIN_KEY_BITS = 1024

_SIGNED = frozenset(name.lower().encode("ascii") for name in SIGNED_HEADERS)
_ALGORITHMS = {RSA: b"rsa-sha256", ED25519: b"ed25519-sha256"}
_CANONICALISATION = b"relaxed/relaxed"
_CHUNK = 65536
_COPY_CHUNK = 1 << 20
_PARTIAL_LIMIT = 8192  # a body line longer than this is hashed in parts
_WIRE_LINE_LIMIT = 998  # jangotw.outbound.protocol.LINE_LIMIT: longer lines are broken on the wire
_MAX_HEADER_SECTION = 1048576  # the receiver's default [smtp] max_header_size
_TXT_STRING = 255  # RFC 1035 3.3: a <character-string> holds at most 255 octets

# Every WSP run that is not already a single SP (a tab, or two or more WSP).
_WSP_RUN = re.compile(rb"(?: [ \t]|\t)[ \t]*")


class _Unsignable(Exception):
    """This message or key cannot be signed faithfully; the text says why (log only)."""


def _compress(text: bytes) -> bytes:
    """Reduce every WSP run to one SP (skipping the regex when there is nothing to do)."""
    if b"\t" in text or b"  " in text:
        return _WSP_RUN.sub(b" ", text)
    return text


def _canonical_lines(complete: bytes) -> bytes:
    """Relaxed canonical form of complete lines: WSP runs as one SP, no trailing WSP, CRLF ends.

    After compression a line ends in at most one SP. Turning CRLF into LF first
    leaves a CR before LF only where it is content, so deleting SP before LF and
    writing every LF as CRLF is exact. Text that needs none of this (CRLF lines,
    single spaces) costs only a few substring searches.
    """
    text = _compress(complete)
    if b" \n" in text or b" \r\n" in text or text.count(b"\n") != text.count(b"\r\n"):
        text = text.replace(b"\r\n", b"\n").replace(b" \n", b"\n").replace(b"\n", b"\r\n")
    return text


class RelaxedBodyHasher:
    """The RFC 6376 3.4.4 relaxed body canonicalisation, hashed incrementally with SHA-256.

    Feed the body in chunks of any size with L{update}, then call L{digest}. The
    result equals hashing dkimpy's C{Relaxed.canonicalize_body} of the whole
    body as dkimpy's parser splits it (CRLF or bare LF ends a line; a bare CR is
    an ordinary character), except that an unterminated last line is treated as
    if it ended in CRLF, as the SMTP client sends it (so trailing WSP on it is
    deleted, as the RFC says).

    Only complete lines are canonicalised; the unfinished line is carried to the
    next chunk, so WSP runs and CR LF pairs split between chunks are handled. A
    carried line longer than C{partial_limit} is hashed up to its last non-WSP
    character, keeping memory bounded whatever the line length. Line ends are
    held back until more content follows, because empty lines at the end of the
    body are not hashed.

    While reading it records what the SMTP client would change: C{longest_line},
    the longest line in octets without its line end, plus one when it starts
    with "." (dot-stuffing); and C{bare_cr}, whether a CR not followed by LF was
    seen.
    """

    def __init__(self, partial_limit: int = _PARTIAL_LIMIT) -> None:
        if partial_limit < 1:
            raise ValueError("partial_limit must be positive")
        self._partial_limit = partial_limit
        self._hash = hashlib.sha256()
        self._carry = b""  # the current line's unhashed raw bytes (WSP runs maybe compressed)
        self._held = 0  # CRLFs owed: the end of the last content line, then empty lines
        self._content = False  # a non-empty line was hashed
        self._line_length = 0  # raw octets of the current line no longer in _carry
        self._line_dot = False  # the current line started with "." (when _line_length > 0)
        self._finished = False
        self.longest_line = 0
        self.bare_cr = False

    def update(self, data: bytes) -> None:
        if self._finished:
            raise ValueError("update() after digest()")
        buffer = self._carry + data
        end = buffer.rfind(b"\n") + 1
        if end:
            self._lines(buffer[:end])
            buffer = buffer[end:]
        if len(buffer) > self._partial_limit:
            buffer = self._settle(buffer)
        self._carry = buffer

    def digest(self) -> bytes:
        """The body hash (C{bh=} before base64); no more data may follow."""
        if not self._finished:
            self._finish()
        return self._hash.digest()

    def _lines(self, complete: bytes) -> None:
        """Hash complete lines (C{complete} ends with LF), holding back trailing line ends."""
        self._measure(complete)
        text = _canonical_lines(complete)
        # text is canonical: every line ends in CRLF, and a CR not followed by LF is
        # content. Its trailing CR/LF run is a sequence of line ends and bare CRs; the
        # line ends after the last bare CR (the first CR of the last "\r\r") are the
        # last line's end and empty lines, held back.
        run = text[len(text.rstrip(b"\r\n")):]
        bare = run.rfind(b"\r\r")
        ends = len(run) // 2 if bare < 0 else (len(run) - bare - 1) // 2
        core = text[: len(text) - 2 * ends]
        if core:
            self._emit(core)
        self._held += ends

    def _measure(self, complete: bytes) -> None:
        if complete.count(b"\r") != complete.count(b"\r\n"):
            self.bare_cr = True
        lines = complete.split(b"\n")
        lines.pop()  # empty: complete ends with LF
        if max(map(len, lines)) + self._line_length + 1 > self.longest_line:
            for index, line in enumerate(lines):
                length = len(line) - line.endswith(b"\r")
                if index == 0 and self._line_length:
                    length += self._line_length + self._line_dot
                else:
                    length += line.startswith(b".")
                self.longest_line = max(self.longest_line, length)
        self._line_length = 0

    def _settle(self, buffer: bytes) -> bytes:
        """Hash a long unfinished line up to its last non-WSP octet; return the rest, compressed.

        What follows that octet may still be deleted (trailing WSP) or be part of
        the line end (a final CR), so it stays; as a single SP and maybe a CR it is
        at most two octets.
        """
        if not self._line_length:
            self._line_dot = buffer.startswith(b".")
        cut = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
        cut = len(buffer[:cut].rstrip(b" \t"))
        settled, tail = buffer[:cut], _compress(buffer[cut:])
        if b"\r" in settled:
            self.bare_cr = True
        self._line_length += len(buffer) - len(tail)
        self.longest_line = max(self.longest_line, self._line_length + self._line_dot)
        if settled:
            self._emit(_compress(settled))
        return tail

    def _emit(self, text: bytes) -> None:
        while self._held:
            count = min(self._held, 32768)
            self._hash.update(b"\r\n" * count)
            self._held -= count
        self._hash.update(text)
        self._content = True

    def _finish(self) -> None:
        self._finished = True
        rest, self._carry = self._carry, b""
        if rest:
            if b"\r" in rest:
                self.bare_cr = True
            if not self._line_length:
                self._line_dot = rest.startswith(b".")
            self.longest_line = max(self.longest_line, self._line_length + len(rest) + self._line_dot)
            text = _compress(rest).rstrip(b" ")
            if text:
                self._emit(text)
        if self._content:
            self._hash.update(b"\r\n")  # ends the last content line; later empty lines are ignored


# -- signing ----------------------------------------------------------------------------

def _private_key(key: DomainKey) -> Any:
    """dkimpy's form of the key, after checking it: RSA of at least L{MIN_KEY_BITS} bits, or Ed25519.

    An RSA PEM is read with C{cryptography} (PKCS#1 or PKCS#8) and handed to
    dkimpy as PKCS#1, the form every dkimpy version parses; an Ed25519 key is
    its base64 32-byte seed, which dkimpy signs with through PyNaCl.
    """
    _tag(key.domain, "domain")
    _tag(key.selector, "selector")
    if key.algorithm == ED25519:
        try:
            seed = base64.b64decode(key.private_key, validate=True)
        except (ValueError, UnicodeEncodeError):
            seed = b""
        if len(seed) != 32:
            raise _Unsignable("the Ed25519 key is not a base64 32-byte seed")
        return nacl.signing.SigningKey(seed)
    if key.algorithm != RSA:
        raise _Unsignable(f"unknown key algorithm {key.algorithm!r}")
    try:
        loaded = serialization.load_pem_private_key(key.private_key.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm) as error:
        raise _Unsignable(f"the private key cannot be read ({type(error).__name__})") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise _Unsignable("the private key is not an RSA key")
    if loaded.key_size < MIN_KEY_BITS:
        raise _Unsignable(f"the RSA key has {loaded.key_size} bits; verifiers need at least {MIN_KEY_BITS}")
    pem = loaded.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())
    try:
        return parse_pem_private_key(pem)
    except UnparsableKeyError as error:
        raise _Unsignable(f"dkimpy cannot use the key: {error}") from None


def _tag(value: str, what: str) -> bytes:
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise _Unsignable(f"the {what} {value!r} is not in ASCII (A-label) form") from None


def _wire_length(line: bytes) -> int:
    """Octets of a header line on the wire, without its line end, with a stuffed dot."""
    return len(line.rstrip(b"\n").removesuffix(b"\r")) + line.startswith(b".")


def _read_header_section(source: IO[bytes], limit: int) -> bytes:
    """The header fields, up to (not including) the empty line that ends them."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = source.readline(limit + 1 - size)
        if not line:
            break
        size += len(line)
        if size > limit:
            raise _Unsignable(f"the header section is longer than {limit} octets")
        if line in (b"\r\n", b"\n"):
            break
        if _wire_length(line) > _WIRE_LINE_LIMIT:
            raise _Unsignable("a header line is longer than the SMTP line limit and would be broken in transit")
        if line.rstrip(b"\n").removesuffix(b"\r").count(b"\r"):
            raise _Unsignable("the header section has a bare CR, which becomes a line end in transit")
        lines.append(line)
    return b"".join(lines)


def _signature_field(header_block: bytes, key: DomainKey, private_key: Any, body_hash: bytes,
                     now: float) -> bytes:
    """The complete C{DKIM-Signature} field, CRLF-terminated (see the module docstring)."""
    algorithm = _ALGORITHMS[key.algorithm]
    try:
        signer = dkim.DKIM(header_block + b"\r\n", signature_algorithm=algorithm, linesep=b"\r\n")
    except dkim.MessageFormatError as error:
        raise _Unsignable(f"the header section cannot be parsed: {error}") from None
    present = [name.lower() for name, _ in signer.headers]
    if b"from" not in present:
        raise _Unsignable("the message has no From field")
    include = [name for name in present if name in _SIGNED] + [b"from"]
    fields = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", _CANONICALISATION),
        (b"d", _tag(key.domain, "domain")),
        (b"s", _tag(key.selector, "selector")),
        (b"t", str(int(now)).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", base64.b64encode(body_hash)),
        (b"b", b"0" * 60),  # DKIM.sign's placeholder: b= folds onto its own line
    ]
    signer.hasher = HASH_ALGORITHMS[algorithm]  # set by DKIM.sign before it calls gen_header
    canonicalisation = CanonicalizationPolicy.from_c_value(_CANONICALISATION)
    try:
        value: bytes = signer.gen_header(fields, include, canonicalisation, b"DKIM-Signature", private_key)
    except dkim.DKIMException as error:
        raise _Unsignable(f"dkimpy refused to sign: {error}") from None
    return b"DKIM-Signature: " + value


def _unterminated(source: IO[bytes]) -> bool:
    """Whether the file's last line lacks a line end (the hash assumed the CRLF)."""
    if source.seek(0, os.SEEK_END) == 0:
        return False
    source.seek(-1, os.SEEK_END)
    return source.read(1) != b"\n"


def _sign(path_in: str, path_out: str, keys: list[tuple[DomainKey, Any]], now: float,
          max_header_size: int) -> None:
    with open(path_in, "rb") as source:
        header_block = _read_header_section(source, max_header_size)
        body = RelaxedBodyHasher()
        for chunk in iter(partial(source.read, _CHUNK), b""):
            body.update(chunk)
        body_hash = body.digest()
        if body.bare_cr:
            raise _Unsignable("the body has a bare CR, which becomes a line end in transit")
        if body.longest_line > _WIRE_LINE_LIMIT:
            raise _Unsignable(f"a body line of {body.longest_line} octets would be broken in transit")
        fields = b"".join(_signature_field(header_block, key, private_key, body_hash, now)
                          for key, private_key in keys)
        source.seek(0)
        try:
            with open(path_out, "wb") as target:
                target.write(fields)
                shutil.copyfileobj(source, target, _COPY_CHUNK)
                if _unterminated(source):
                    target.write(b"\r\n")  # as the SMTP client would: the copy verifies as it is
        except BaseException:
            try:
                os.unlink(path_out)
            except FileNotFoundError:
                pass
            raise


def sign_message(path_in: str, path_out: str, keys: Sequence[DomainKey], now: float, *,
                 max_header_size: int = _MAX_HEADER_SECTION) -> bool:
    """Write the message at C{path_in} to C{path_out} with a C{DKIM-Signature} field per key first.

    Blocking: run it in the C{cpu} thread pool. The body streams (constant
    memory) and is hashed once for every key; the header section, at most
    C{max_header_size} octets, is read whole. C{t=} is C{now}. A last line
    without a line end gets CRLF in the copy, as the SMTP client would add it.
    The copy is not fsynced: the caller commits it.

    @return: True when C{path_out} holds the message signed with every usable
        key. A key that cannot be used (unreadable, not RSA or Ed25519, an RSA
        key under L{MIN_KEY_BITS} bits, a non-ASCII domain or selector) is
        skipped with the reason logged. False, with nothing written and the
        reason logged, when no key is usable or the message cannot be signed
        faithfully (no From field, an unparsable or oversized header section,
        a bare CR or a line the SMTP client would break): it should then go
        out unsigned.
    @raise OSError: reading or writing failed (a partial C{path_out} is removed).
    """
    usable = []
    for key in keys:
        try:
            usable.append((key, _private_key(key)))
        except _Unsignable as reason:
            _declined(key, reason)
    if not usable:
        return False
    try:
        _sign(path_in, path_out, usable, now, max_header_size)
    except _Unsignable as reason:
        for key, _ in usable:
            _declined(key, reason)
        return False
    return True


def _declined(key: DomainKey, reason: _Unsignable) -> None:
    log.warn("not DKIM-signing for {domain} (selector {selector}): {reason}",
             domain=key.domain, selector=key.selector, reason=str(reason))


# -- keys and DNS ------------------------------------------------------------------------

def _ascii_domain(text: str) -> str | None:
    domain = text.strip().rstrip(".").lower()
    if not domain:
        return None
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None


def signing_keys_for(store: IDomainStore, from_address: str) -> "Deferred[list[DomainKey]]":
    """The keys to sign mail from C{from_address} with: the From domain's own (no parent domains)
    newest RSA key that may sign, then its newest Ed25519 key that may sign, if any.

    C{from_address} is an address or a whole From field value (C{"Ann"
    <ann@example.com>}); an internationalised domain is looked up in its A-label
    form, as keys are stored. Fires with C{[]} when there is no usable address
    or no key may sign; store failures pass through.
    """
    address = parseaddr(from_address)[1] if "<" in from_address else from_address.strip()
    local, at, domain = address.rpartition("@")
    ascii_domain = _ascii_domain(domain) if local and at else None
    if ascii_domain is None:
        return succeed([])

    def chosen(keys: list[DomainKey]) -> list[DomainKey]:
        newest = {key.algorithm: key for key in keys if key.may_sign}  # keys come oldest first
        return [newest[algorithm] for algorithm in (RSA, ED25519) if algorithm in newest]
    found: "Deferred[list[DomainKey]]" = store.domain_keys(ascii_domain).addCallback(chosen)
    return found


def new_rsa_key(bits: int = 2048) -> str:
    """A new RSA private key in PEM (PKCS#1) form. CPU-bound: run it in a thread."""
    if bits < MIN_KEY_BITS:
        raise ValueError(f"DKIM RSA keys need at least {MIN_KEY_BITS} bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode("ascii")


def new_ed25519_key() -> str:
    """A new Ed25519 private key (RFC 8463): its 32-byte seed in base64, as dkimpy reads it."""
    return base64.b64encode(bytes(nacl.signing.SigningKey.generate())).decode("ascii")


def public_key_bytes(key: DomainKey) -> bytes:
    """The public half as a DKIM record's C{p=} carries it, decoded: an RSA key's DER
    SubjectPublicKeyInfo, an Ed25519 key's 32 octets."""
    if key.algorithm == ED25519:
        return bytes(nacl.signing.SigningKey(base64.b64decode(key.private_key)).verify_key)
    loaded = serialization.load_pem_private_key(key.private_key.encode("ascii"), password=None)
    return loaded.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)


def dns_record(key: DomainKey) -> tuple[str, str]:
    """The TXT record that publishes C{key}'s public half: C{(name, value)}.

    The name is C{<selector>._domainkey.<domain>} (no final dot); the value is
    C{v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>} (C{k=ed25519} and the
    raw key for Ed25519). Longer than one DNS string: publish it as
    L{split_txt} strings.
    """
    public = base64.b64encode(public_key_bytes(key)).decode("ascii")
    return f"{key.selector}._domainkey.{key.domain}", f"v=DKIM1; k={key.algorithm}; p={public}"


def split_txt(value: str) -> list[str]:
    """C{value} as the 255-octet strings of one TXT record (resolvers join them)."""
    data = value.encode("ascii")
    return [data[i:i + _TXT_STRING].decode("ascii") for i in range(0, len(data), _TXT_STRING)] or [""]
