# -*- test-case-name: tests.pipeline.test_text -*-
"""The rewrite stage's text transformations, on one decoded text part at a time.

Pure C{str} to C{str} functions: tracked links, the open pixel, the unique id
and line wrapping. They know HTML only as far as email markup needs (tags,
quoted attribute values, comments, C{<pre>}-like raw elements); transfer
encodings and charsets belong to L{jangotw.pipeline.rewrite}.
"""
from __future__ import annotations

import html
import re
from bisect import bisect_right
from typing import Callable

from ..tracking.links import UNIQUE_ID_TOKEN

__all__ = ["UNIQUE_ID_TOKEN", "Track", "replace_unique_id", "track_html_links", "track_text_links",
           "pixel_tag", "insert_pixel", "wrap_lines"]

Track = Callable[[str], str | None]
"""Given a link destination, the URL to put in its place, or None to leave the link alone."""

_TRACKABLE = re.compile(r"https?://", re.IGNORECASE)
# Tag patterns never look past the next "<" (a quoted value holding one ends there): a
# tag that does not close costs only its own length, never a scan to the end of the part.
_LINK_TAG = re.compile(r"""<(a|area)(?=[\s/>])(?:[^<>"']|"[^"<]*"|'[^'<]*')*>""", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"""([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?""")
_BARE_URL = re.compile(r"""https?://[^\s<>"]+""", re.IGNORECASE)
_TRAILING = ".,;:!?'*"
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)

# Regions of HTML inside which a line break would change meaning or rendering.
_PROTECTED = re.compile(
    r"""<(pre|script|style|textarea)\b(?:[^<>"']|"[^"<]*"|'[^'<]*')*>.*?(?:</\1\s*>|\Z)"""
    r"""|<!--.*?(?:-->|\Z)"""
    r"""|<[!?][^>]*(?:>|\Z)"""
    r"""|</?[A-Za-z](?:[^<>"']|"[^"<]*"|'[^'<]*'|["'])*(?:>|(?=<)|\Z)""",
    re.IGNORECASE | re.DOTALL)
_BREAK = re.compile(r"(?<![ \t])[ \t]+(?=[^ \t\r\n])(?!--)")  # "--" could start a MIME delimiter
_LINE_END = re.compile(r"\r?\n")


def replace_unique_id(text: str, unique_id: str) -> str:
    """Personalise a copy: done after link tracking, so every copy of a message records the same
    destinations (the click redirect fills the token in, see L{jangotw.tracking.links.personalise})."""
    return text.replace(UNIQUE_ID_TOKEN, unique_id)


def track_html_links(markup: str, track: Track) -> str:
    """Replace the http(s) C{href} of every C{<a>} and C{<area>} tag by C{track(destination)}.

    The destination is the attribute value with HTML entities unescaped; the
    replacement is escaped again for an attribute. Tags with a C{data-notrack}
    attribute or the class C{notrack}, and links that are not absolute http(s)
    URLs (mailto:, tel:, #fragment, data:, javascript:, relative) are left alone.
    """
    def tag(match: re.Match[str]) -> str:
        text = match.group(0)
        href: re.Match[str] | None = None
        for attribute in _ATTRIBUTE.finditer(text, match.end(1) - match.start(), len(text) - 1):
            name = attribute.group(1).lower()
            if name == "data-notrack" or (name == "class" and "notrack" in _value(attribute).split()):
                return text
            if name == "href" and href is None:
                href = attribute
        if href is None:
            return text
        destination = html.unescape(_value(href)).strip()
        if not _TRACKABLE.match(destination):
            return text
        replacement = track(destination)
        if replacement is None:
            return text
        group = next(group for group in (2, 3, 4) if href.group(group) is not None)
        begin, end = href.span(group)
        if group != 4:  # include the quotes
            begin, end = begin - 1, end + 1
        quote = "'" if group == 3 else '"'
        return text[:begin] + quote + html.escape(replacement, quote=True) + quote + text[end:]
    return _LINK_TAG.sub(tag, markup)


def _value(attribute: re.Match[str]) -> str:
    """An attribute's value as written (entities still escaped); empty when it has none."""
    for group in (2, 3, 4):
        if attribute.group(group) is not None:
            return attribute.group(group)
    return ""


def track_text_links(text: str, track: Track) -> str:
    """Replace bare http(s) URLs in plain text, leaving trailing punctuation outside the URL."""
    def url(match: re.Match[str]) -> str:
        found = _trim(match.group(0))
        replacement = track(found)
        if replacement is None:
            return match.group(0)
        return replacement + match.group(0)[len(found):]
    return _BARE_URL.sub(url, text)


def _trim(url: str) -> str:
    """Drop the sentence punctuation a URL in prose usually ends with (and unbalanced closers)."""
    end = len(url)
    opened = {closer: url.count(opener) for closer, opener in _CLOSERS.items()}
    closed = {closer: url.count(closer) for closer in _CLOSERS}
    while end:
        last = url[end - 1]
        if last in _TRAILING:
            end -= 1
        elif last in _CLOSERS and closed[last] > opened[last]:
            closed[last] -= 1
            end -= 1
        else:
            break
    return url[:end]


def pixel_tag(url: str) -> str:
    return f'<img src="{html.escape(url, quote=True)}" width="1" height="1" alt="" style="display:none">'


def insert_pixel(markup: str, url: str) -> str:
    """Put the open pixel just before the last C{</body>}, or at the end when there is none."""
    last = None
    for last in _BODY_END.finditer(markup):
        pass
    at = last.start() if last is not None else len(markup)
    return markup[:at] + pixel_tag(url) + markup[at:]


def wrap_lines(text: str, width: int, eol: str, markup: bool) -> str:
    """Break lines longer than C{width} characters after a run of spaces or tabs.

    Nothing is removed: a break is an C{eol} inserted after whitespace, so the
    trailing space doubles as an RFC 3676 soft break. Words and URLs (which
    contain no whitespace) are never split, nor, when C{markup} is true, HTML
    tags, comments and C{pre}, C{script}, C{style} and C{textarea} elements;
    and no new line starts with "--", which could be taken for a MIME delimiter.
    A line that cannot be broken within C{width} is broken at its first
    opportunity after it, or stays long.
    """
    if width <= 0:
        return text
    protected: list[int] = []
    if markup:
        for span in _PROTECTED.finditer(text):
            protected.extend(span.span())
    pieces: list[str] = []
    done = start = 0
    for end in _line_ends(text):
        if end - start > width:
            breaks = [found.end() for found in _BREAK.finditer(text, start, end)
                      if found.start() > start and bisect_right(protected, found.start()) % 2 == 0]
            line = start
            while end - line > width and breaks:
                fitting = bisect_right(breaks, line + width) - 1
                first = bisect_right(breaks, line)
                if fitting >= first:
                    cut = breaks[fitting]
                elif first < len(breaks):
                    cut = breaks[first]
                else:
                    break
                pieces.append(text[done:cut])
                pieces.append(eol)
                done = line = cut
        start = _next_line(text, end)
    pieces.append(text[done:])
    return "".join(pieces)


def _line_ends(text: str) -> list[int]:
    """Offsets where each line's content ends (before its CRLF or LF), the last line included."""
    ends = [found.start() for found in _LINE_END.finditer(text)]
    ends.append(len(text))
    return ends


def _next_line(text: str, end: int) -> int:
    if text.startswith("\r\n", end):
        return end + 2
    return end + 1

