# -*- test-case-name: tests.store.test_sqlite -*-
"""Account settings as every store keeps them: one JSON value per setting name."""
from __future__ import annotations

import json
from typing import Any, Iterable

import attrs
from twisted.logger import Logger

from ..model import AccountSettings

__all__ = ["decode_settings"]

log = Logger()

_SETTING_TYPES: dict[Any, type] = {"bool": bool, bool: bool, "int": int, int: int, "str": str, str: str}


def decode_settings(pairs: Iterable[tuple[str, str]], account: str) -> AccountSettings:
    """Settings from stored (name, JSON) pairs; unknown names (from a newer version) and
    unreadable values are skipped with a warning, so the default applies."""
    fields = attrs.fields_dict(AccountSettings)
    values: dict[str, Any] = {}
    for key, text in pairs:
        field = fields.get(key)
        if field is None:
            continue
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        expected = _SETTING_TYPES.get(field.type, object)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            log.warn("ignoring unreadable setting {key} of {account}", key=key, account=account)
            continue
        values[key] = value
    return AccountSettings(**values)
