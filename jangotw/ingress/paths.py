# -*- test-case-name: tests.ingress.test_paths -*-
"""Parsing the arguments of MAIL and RCPT: reverse/forward paths and ESMTP parameters.

Strict where strictness protects (no source routes, no non-ASCII without
SMTPUTF8, RFC 5321 length limits) and precise in its replies, so a client learns
exactly what was wrong.
"""
from __future__ import annotations

import re

from ..errors import ReplyError

__all__ = ["parse_path", "parse_parameters"]

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL = rf'(?:{_ATEXT}+(?:\.{_ATEXT}+)*|"(?:[^"\\\r\n]|\\[ -~])*")'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[A-Za-z0-9:.]+\])"
_MAILBOX = re.compile(rf"{_LOCAL}@{_DOMAIN}")
_PARAMETER = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([!-<>-~]+))?")


def parse_path(argument: str, keyword: str, null_allowed: bool) -> tuple[str, str]:
    """Split C{FROM:<path> params} (or C{TO:}); return (address, parameter text).

    @param keyword: C{"FROM"} or C{"TO"}.
    @raise ReplyError: 501 for syntax, 553 for a source route or a bad mailbox.
    """
    enhanced = "5.1.7" if keyword == "FROM" else "5.1.3"
    head, colon, rest = argument.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise ReplyError(501, "5.5.4", f"Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>")
    rest = rest.lstrip(" ")
    if not rest.startswith("<") or ">" not in rest:
        raise ReplyError(501, enhanced, "Syntax: the address must be enclosed in <>")
    path, _, parameters = rest[1:].partition(">")
    if parameters and not parameters.startswith(" "):
        raise ReplyError(501, enhanced, "Syntax: a space must follow the address")
    if path.startswith("@"):
        raise ReplyError(553, enhanced, "Source routes are not accepted")
    if not path:
        if null_allowed:
            return "", parameters.strip()
        raise ReplyError(501, enhanced, "A recipient address is required")
    if not path.isascii():
        raise ReplyError(553, "5.6.7", "Non-ASCII addresses need SMTPUTF8, which is not offered")
    local, _, domain = path.rpartition("@")
    if not _MAILBOX.fullmatch(path) or len(local) > 64 or len(domain) > 255 or len(path) > 254:
        raise ReplyError(553, enhanced, f"Malformed address <{path}>")
    return f"{local}@{domain.rstrip('.').lower()}", parameters.strip()


def parse_parameters(text: str) -> dict[str, str | None]:
    """ESMTP parameters (C{SIZE=123 BODY=8BITMIME}) keyed by upper-case name.

    @raise ReplyError: 501 5.5.4 for malformed or repeated parameters.
    """
    result: dict[str, str | None] = {}
    for word in text.split():
        match = _PARAMETER.fullmatch(word)
        if match is None:
            raise ReplyError(501, "5.5.4", f"Malformed parameter {word[:40]!r}")
        name = match.group(1).upper()
        if name in result:
            raise ReplyError(501, "5.5.4", f"Parameter {name} given twice")
        result[name] = match.group(2)
    return result
