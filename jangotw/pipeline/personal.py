# -*- test-case-name: tests.pipeline.test_personal -*-
"""Personalised copies of one message, cheaply: rewrite it once, then swap each recipient's tokens.

With tracking on, the copies of a message differ only in fixed-length tokens
(the unsubscribe id, the open token and one click token per link, see
L{jangotw.tracking.links.TokenSigner}) and in a few top-level header fields
(To for list mail, List-Unsubscribe). So the first recipient's copy is
rewritten in full, as a template, and every other copy is that template with
the recipient's tokens put in place of the first recipient's and its fields
added: no MIME walk per copy. Tokens of equal length keep every line the same
length, so wrapping and the 998-byte rule decide alike for every copy.

The shortcut is taken only when it gives what rewriting would: every part the
rewrite changed was written as plain 7bit/8bit text (inside base64 or
quoted-printable a token is not there literally), the message is small enough
to hold in memory, and the second recipient's copy, rewritten in full, equals
the template with its tokens swapped. Otherwise every copy is rewritten in
full, streaming, as before.
"""
from __future__ import annotations

import io
import os
import re
from typing import Callable, Sequence

import attrs
from attrs import frozen

from .rewrite import RewritePlan, RewriteReport, fold_field, rewrite

__all__ = ["Copies", "write_copies", "TEMPLATE_LIMIT"]

TEMPLATE_LIMIT = 1024 * 1024  # bytes of message held in memory for the shortcut; larger ones stream

Fields = tuple[tuple[str, str], ...]


@frozen
class Copies:
    """The copies to write, one per recipient index, and how each differs.

    C{plan(index)} is the rewrite with that recipient's tokens but without its own
    header C{fields(index)} (whose names the plan removes, so the client's are
    replaced); C{tokens(index, links)} lists its tokens, the same kinds in the same
    order for every index; C{paths[n]} is where copy C{n} goes, and C{reuse(path)}
    may put an existing file there first (L{jangotw.spool.recycle}). Plans and
    fields are made only for the copies that are rewritten in full.
    """

    indexes: Sequence[int]
    paths: Sequence[str]
    plan: Callable[[int], RewritePlan]
    fields: Callable[[int], Fields]
    tokens: Callable[[int, int], Sequence[str]]
    reuse: Callable[[str], None] = lambda path: None


def write_copies(source: str, copies: Copies, limit: int = TEMPLATE_LIMIT) -> tuple[RewriteReport, bool]:
    """Write each copy of the message at C{source} (blocking: a pool thread). Returns the
    first copy's report and whether the template shortcut was used."""
    indexes = copies.indexes
    if len(indexes) >= 2 and os.path.getsize(source) <= limit:
        first, report = _rewritten(source, copies.plan(indexes[0]))
        if report.parts_encoded == 0 and first.find(b"\r\n\r\n") >= 0:
            second, _ = _rewritten(source, copies.plan(indexes[1]))
            links = len(report.destinations)
            swap = _Swap(copies.tokens(indexes[0], links))
            if swap.into(first, copies.tokens(indexes[1], links)) == second:
                for number, (index, path) in enumerate(zip(indexes, copies.paths)):
                    data = first if number == 0 else second if number == 1 else swap.into(
                        first, copies.tokens(index, links))
                    data = _with_fields(data, _checked(copies.fields(index)))
                    copies.reuse(path)
                    _write(path, data)
                return report, True
    reports = [_rewrite_to(source, path, copies.plan(index), copies.fields(index), copies.reuse)
               for index, path in zip(indexes, copies.paths)]
    return reports[0], False


def _checked(fields: Fields) -> Fields:
    """Fields that fold as the rewrite's own would (no line break, none too long), else the
    plan's own check raises ValueError."""
    if any("\r" in value or "\n" in value or "\0" in value or len(name) + len(value) > 900
           for name, value in fields):
        RewritePlan(headers_to_add=fields)
    return fields


@frozen
class _Swap:
    """Replaces the template recipient's tokens by another recipient's, in one pass."""

    template: Sequence[str]
    pattern: re.Pattern[bytes] = attrs.field(init=False, default=attrs.Factory(
        lambda self: re.compile(b"|".join(re.escape(token.encode("ascii")) for token in self.template)),
        takes_self=True))

    def into(self, data: bytes, tokens: Sequence[str]) -> bytes:
        replacement = {old.encode("ascii"): new.encode("ascii") for old, new in zip(self.template, tokens)}
        return self.pattern.sub(lambda found: replacement[found.group(0)], data)


def _rewritten(source: str, plan: RewritePlan) -> tuple[bytes, RewriteReport]:
    output = io.BytesIO()
    with open(source, "rb") as reading:
        report = rewrite(reading, output, plan)
    return output.getvalue(), report


def _with_fields(data: bytes, fields: Fields) -> bytes:
    """The fields appended to the top-level header section, as the rewrite would add them."""
    if not fields:
        return data
    end = data.find(b"\r\n\r\n") + 2
    return data[:end] + b"".join(fold_field(name, value, b"\r\n") for name, value in fields) + data[end:]


def _rewrite_to(source: str, path: str, plan: RewritePlan, fields: Fields,
                reuse: Callable[[str], None]) -> RewriteReport:
    plan = attrs.evolve(plan, headers_to_add=plan.headers_to_add + fields)
    reuse(path)
    with open(source, "rb") as reading, open(path, "wb") as writing:
        return rewrite(reading, writing, plan)


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
