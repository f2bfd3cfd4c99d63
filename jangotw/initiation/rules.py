# -*- test-case-name: tests.initiation.test_rules -*-
"""Decide whether a message to an initiation mailbox may start a mailing.

Every refusal is a C{ReplyError(550, "5.7.1", text)} given in the SMTP session
at the end of DATA, so the initiation mailbox never mails a bounce to a sender
address that may be forged. The texts are constants here, said plainly because
the marketer reading them in their mail client's error is the audience.

An account authorises initiation by one of three methods:

  - C{"password"} (the default): the subject carries the account's initiation
    password (C{[YourPassword-send ListName] Subject}).
  - C{"from"}: the message's From address must be the list's From address
    (C{[send ListName] Subject}). A password form is refused, not read with
    its password ignored: a list name holding C{-send } is read as part of a
    password (see L{jangotw.initiation.parse}), and ignoring that password
    would send to the wrong list; under the password methods such a misread
    password simply fails its check.
  - C{"both"}: the password and the From address.

Checking the password is slow (argon2 in a thread pool), so the caller asks
L{needs_password} first, verifies the password if so, and hands the result to
L{authorise}, which is synchronous.

Order of checks
===============

L{authorise} checks in this order and refuses at the first failure:

  1. the login may initiate mailings (about the client's own login; refusing
     first also means a login that may not initiate cannot be used to guess
     passwords);
  2. the subject starts with a command (else the accepted forms are quoted);
  3. for C{"password"} and C{"both"}: a password is present, then it is right;
     for C{"from"}: no password is present;
  4. the list exists (the named list, or a default list is set);
  5. for C{"from"} and C{"both"}: the list has a From address, then the
     message's From address matches it.

So under a password method nobody without the password learns whether a list
exists or what its From address is. Under C{"from"} the list's From address
is the credential and cannot be compared before the list is found, so whoever
knows an account's name can learn which of its list names exist; the From
address, the list's contents and its From address stay hidden.

The From address comparison ignores the case of ASCII letters in the whole
address, local part included: nearly every mailbox ignores case there, mail
clients and address books change it, and a From address is no secret an exact
local part would protect. Other letters compare exactly (as the store's
C{NOCASE} columns do), so distinct internationalised mailboxes stay distinct.
"""
from __future__ import annotations

import string

from ..errors import ReplyError
from .parse import FORMATS_HELP, InitiationCommand

__all__ = [
    "PASSWORD_METHOD",
    "FROM_METHOD",
    "BOTH_METHOD",
    "METHODS",
    "MALFORMED_SUBJECT",
    "PASSWORD_REQUIRED",
    "PASSWORD_NOT_USED",
    "WRONG_PASSWORD",
    "UNKNOWN_LIST",
    "NO_DEFAULT_LIST",
    "LIST_HAS_NO_FROM",
    "FROM_MISMATCH",
    "FROM_NOT_VERIFIED",
    "LOGIN_MAY_NOT_INITIATE",
    "needs_password",
    "authorise",
    "same_address",
]

PASSWORD_METHOD = "password"
FROM_METHOD = "from"
BOTH_METHOD = "both"
METHODS = frozenset({PASSWORD_METHOD, FROM_METHOD, BOTH_METHOD})
_PASSWORD_METHODS = frozenset({PASSWORD_METHOD, BOTH_METHOD})
_FROM_METHODS = frozenset({FROM_METHOD, BOTH_METHOD})

MALFORMED_SUBJECT = "the subject does not start with an initiation command; " + FORMATS_HELP
PASSWORD_REQUIRED = "this account requires its initiation password in the subject"
PASSWORD_NOT_USED = ('this account initiates by From address without a password: '
                     'start the subject with "[send ListName] Subject" or "[send] Subject"')
WRONG_PASSWORD = "wrong initiation password"
UNKNOWN_LIST = "unknown list"
NO_DEFAULT_LIST = "no default list is set for this account"
LIST_HAS_NO_FROM = "the list has no From address"
FROM_MISMATCH = "the From address does not match the list's From address"
FROM_NOT_VERIFIED = ("the message could not be verified as sent by its From address's domain: "
                     "send it through that domain's own mail server")
LOGIN_MAY_NOT_INITIATE = "method not allowed for this login"  # issue 6 wording; mail to alice+sales@

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _refuse(text: str) -> ReplyError:
    return ReplyError(550, "5.7.1", text)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown initiation method {method!r}; expected one of {sorted(METHODS)}")


def same_address(one: str, other: str) -> bool:
    """Whether two bare addresses (C{local@domain}) are the same, ignoring ASCII case."""
    return one.translate(_ASCII_LOWER) == other.translate(_ASCII_LOWER)


def needs_password(command: InitiationCommand | None, method: str) -> bool:
    """Whether the caller must verify C{command}'s password before L{authorise}.

    True only when the method uses a password and the subject carries one; in
    every other case L{authorise} decides without it (refusing a missing
    command or password), so no hash is computed for nothing.

    @raise ValueError: C{method} is not one of L{METHODS}.
    """
    _check_method(method)
    return method in _PASSWORD_METHODS and command is not None and command.password is not None


def authorise(command: InitiationCommand | None, method: str, password_ok: bool | None, from_address: str,
              list_from_address: str | None, list_exists: bool, default_list_exists: bool,
              login_may_initiate: bool = True) -> None:
    """Return if the message may start a mailing; else raise the refusal.

    The checks run in the order given in the module docstring.

    @param command: what L{jangotw.initiation.parse.parse_subject} read, or
        C{None} if the subject has no command.
    @param method: the account's method, one of L{METHODS}.
    @param password_ok: the verdict of the password check when
        L{needs_password} said one was needed; otherwise ignored (pass C{None}).
    @param from_address: the message's From address, bare (C{local@domain}).
    @param list_from_address: the From address of the list the command names
        (or of the default list), if that list has one.
    @param list_exists: whether the list the command names exists (used when
        it names one).
    @param default_list_exists: whether the account has a default list (used
        when the command names none).
    @param login_may_initiate: whether the authenticated login, if any, has
        the permission to initiate mailings.
    @raise ReplyError: 550 5.7.1 with one of this module's texts.
    @raise ValueError: C{method} is unknown, or a password needed checking and
        C{password_ok} is C{None} (a bug in the caller; failing closed).
    """
    _check_method(method)
    if not login_may_initiate:
        raise _refuse(LOGIN_MAY_NOT_INITIATE)
    if command is None:
        raise _refuse(MALFORMED_SUBJECT)
    if method in _PASSWORD_METHODS:
        if command.password is None:
            raise _refuse(PASSWORD_REQUIRED)
        if password_ok is None:
            raise ValueError("the initiation password was not checked")
        if not password_ok:
            raise _refuse(WRONG_PASSWORD)
    elif command.password is not None:
        raise _refuse(PASSWORD_NOT_USED)
    if command.list_name is not None and not list_exists:
        raise _refuse(UNKNOWN_LIST)
    if command.list_name is None and not default_list_exists:
        raise _refuse(NO_DEFAULT_LIST)
    if method in _FROM_METHODS:
        if not list_from_address:
            raise _refuse(LIST_HAS_NO_FROM)
        if not same_address(from_address, list_from_address):
            raise _refuse(FROM_MISMATCH)
