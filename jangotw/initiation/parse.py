# -*- test-case-name: tests.initiation.test_parse -*-
"""Read the initiation command at the start of a message's Subject.

A marketer starts a mailing by sending a message to C{<account>@<initiation
domain>} whose subject starts with a bracketed command::

    [YourPassword-send ListName] Subject     password, named list
    [YourPassword-send] Subject              password, the account's default list
    [send ListName] Subject                  no password (From-address method), named list
    [send] Subject                           no password, default list

The command is removed and the rest is the subject the list receives. This
module only reads the command; L{jangotw.initiation.rules} decides whether the
sender may use it. It is pure: no reactor, store or I/O.

The header value is first unfolded (RFC 5322 section 2.2.3: every CR and LF is
removed, the whitespace after them is kept) and then RFC 2047 encoded words are
decoded by the stdlib's lenient C{email.policy.default} header parser, which
joins adjacent encoded words, tolerates unknown charsets and bad encodings, and
never raises; so a subject typed in any mail client's charset, split across
several encoded words or folded over several lines reads the same as the plain
text would.

How the command is delimited
============================

A password may contain C{-}, C{-send} and even C{]}, so "the bracket" is
defined as the I{shortest well-formed} one: starting from the subject's first
C{[} (only whitespace may precede it, so C{Re: [send] x} is no command), each
C{]} in turn is tried as the end of the command, and the first that makes the
text between the brackets one of these forms is taken:

  1. Password forms. A I{separator} is C{-send} (ASCII letters in any case)
     followed by whitespace or by the closing C{]}. If the text has a
     separator, the B{last} one splits it: the password is everything before
     it (at least one character, kept exactly), and what follows it is either
     nothing (the default list) or whitespace and a list name.
  2. C{send} forms, only when the text has no separator: C{send} (any case)
     alone (the default list), or followed by whitespace and a list name.

A list name is kept as written, less surrounding whitespace; it may contain
spaces but no C{]}, and may not be blank. Consequences, all covered by tests:

  - C{[a-send-b-send List]} has password C{a-send-b}: a C{-send} followed by
    anything but whitespace or C{]} is not a separator.
  - A list name cannot contain a separator (C{Auto-send}, C{Pre-send list}):
    the last separator is taken, so the extra text joins the password and
    the command is refused rather than sent to another list (the misread
    password fails its check; the From-address method refuses every password
    form, see L{jangotw.initiation.rules}).
  - A password containing C{]} is read correctly unless it contains a
    separator (C{-send} followed by whitespace or C{]}) or starts with C{send}
    followed by whitespace or C{]}; otherwise the part before one of its C{]}
    would already be a well-formed command. Such a subject is refused too:
    what is read as the password is only a part of it, or is missing.
  - The subject the list receives keeps its own text exactly, including its
    own brackets and C{-send} words (C{[pw-send List] Please re-send [2]}).

Nothing here checks the characters of the subject that remains: it may hold
anything an encoded word can carry, so whoever writes it into a new message
must encode it as a header again (the C{email} package does).
"""
from __future__ import annotations

import re
from email.policy import default as _default_policy

from attrs import field, frozen
from attrs.validators import instance_of, optional

__all__ = ["InitiationCommand", "parse_subject", "FORMATS_HELP"]

FORMATS_HELP = ('start the subject with "[YourPassword-send ListName] Subject", '
                '"[YourPassword-send] Subject", "[send ListName] Subject" or "[send] Subject"')

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Written out, not re.IGNORECASE: that would also let U+017F (long s) stand for "s".
_SEPARATOR = re.compile(r"-[sS][eE][nN][dD](?=[\s\]])")
_SEND_FORM = re.compile(r"[sS][eE][nN][dD](?P<rest>\s.*)?\Z", re.DOTALL)


@frozen
class InitiationCommand:
    """What a subject's command asks for; the password is left out of C{repr}.

    @ivar password: the initiation password as typed, or C{None} for the
        C{[send …]} forms (which carry none).
    @ivar list_name: the list as typed (lists are matched case-insensitively
        elsewhere), or C{None} for the account's default list.
    @ivar subject: the subject to send, with the command and the whitespace
        after it removed.
    """

    password: str | None = field(repr=False, validator=optional(instance_of(str)))
    list_name: str | None = field(validator=optional(instance_of(str)))
    subject: str = field(validator=instance_of(str))


def _decode(raw_subject: str) -> str:
    """The subject's text: unfolded, then RFC 2047 encoded words decoded."""
    unfolded = _LINE_BREAK.sub("", raw_subject)
    return str(_default_policy.header_factory("subject", unfolded))


def _list_name(rest: str) -> tuple[bool, str | None]:
    """Whether C{rest} (what follows C{send}) is well formed, and the list it names.

    C{rest} is empty (the default list) or starts with whitespace; the caller
    has made sure it holds no C{]}.
    """
    if not rest:
        return True, None
    name = rest.strip()
    if not name:
        return False, None
    return True, name


def parse_subject(raw_subject: str) -> InitiationCommand | None:
    """Read the initiation command at the start of a raw Subject header value.

    See the module docstring for the forms and for how the command's closing
    C{]} is chosen. Runs in time linear in the subject's length.

    @param raw_subject: the header's value as received: possibly folded,
        possibly holding RFC 2047 encoded words.
    @return: the command, or C{None} if the subject does not start with one
        (the caller refuses it, quoting L{FORMATS_HELP}).
    """
    text = _decode(raw_subject).lstrip()
    if not text.startswith("["):
        return None
    separators = list(_SEPARATOR.finditer(text))
    following = 0  # index in separators of the first that does not end before the current "]"
    previous_close = 0  # where the previous "]" was (0: none yet, as text[0] is "[")
    close = text.find("]")
    while close != -1:
        while following < len(separators) and separators[following].end() <= close:
            following += 1
        if following:
            last = separators[following - 1]
            if last.start() > 1 and previous_close < last.end():
                well_formed, list_name = _list_name(text[last.end():close])
                if well_formed:
                    return InitiationCommand(password=text[1:last.start()], list_name=list_name,
                                             subject=text[close + 1:].lstrip())
        elif previous_close == 0:
            send_form = _SEND_FORM.match(text, 1, close)
            if send_form is not None:
                well_formed, list_name = _list_name(send_form.group("rest") or "")
                if well_formed:
                    return InitiationCommand(password=None, list_name=list_name,
                                             subject=text[close + 1:].lstrip())
        previous_close = close
        close = text.find("]", close + 1)
    return None
