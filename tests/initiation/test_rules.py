"""Deciding whether a message to an initiation mailbox may start a mailing."""
from __future__ import annotations

import itertools
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from jangotw.errors import ReplyError
from jangotw.initiation.parse import FORMATS_HELP, InitiationCommand, parse_subject
from jangotw.initiation.rules import (BOTH_METHOD, FROM_METHOD, FROM_MISMATCH, LIST_HAS_NO_FROM,
                                     LOGIN_MAY_NOT_INITIATE, MALFORMED_SUBJECT, METHODS, NO_DEFAULT_LIST,
                                     PASSWORD_METHOD, PASSWORD_NOT_USED, PASSWORD_REQUIRED, UNKNOWN_LIST,
                                     WRONG_PASSWORD, authorise, needs_password, same_address)

LIST_FROM = "News@Shop.example"
PASSWORD_NAMED = InitiationCommand(password="pw", list_name="News", subject="Spring")
PASSWORD_DEFAULT = InitiationCommand(password="pw", list_name=None, subject="Spring")
SEND_NAMED = InitiationCommand(password=None, list_name="News", subject="Spring")
SEND_DEFAULT = InitiationCommand(password=None, list_name=None, subject="Spring")
FORMS = [PASSWORD_NAMED, PASSWORD_DEFAULT, SEND_NAMED, SEND_DEFAULT]


def decide(command: InitiationCommand | None, method: str, **overrides: Any) -> str | None:
    """The refusal text for a message that passes every check C{overrides} does not spoil, or None."""
    arguments: dict[str, Any] = dict(
        password_ok=True if needs_password(command, method) else None,
        from_address="news@shop.example",
        list_from_address=LIST_FROM,
        list_exists=True,
        default_list_exists=True,
        login_may_initiate=True,
    )
    arguments.update(overrides)
    try:
        authorise(command, method, **arguments)
    except ReplyError as refusal:
        assert (refusal.code, refusal.enhanced) == (550, "5.7.1"), refusal
        return refusal.public
    return None


class TextTests(SynchronousTestCase):
    def test_exact_texts(self) -> None:
        """The refusal texts are exactly the documented ones."""
        self.assertEqual(PASSWORD_REQUIRED, "this account requires its initiation password in the subject")
        self.assertEqual(WRONG_PASSWORD, "wrong initiation password")
        self.assertEqual(UNKNOWN_LIST, "unknown list")
        self.assertEqual(NO_DEFAULT_LIST, "no default list is set for this account")
        self.assertEqual(LIST_HAS_NO_FROM, "the list has no From address")
        self.assertEqual(FROM_MISMATCH, "the From address does not match the list's From address")
        self.assertEqual(LOGIN_MAY_NOT_INITIATE, "method not allowed for this login")
        self.assertEqual(PASSWORD_NOT_USED, 'this account initiates by From address without a password: '
                                            'start the subject with "[send ListName] Subject" or "[send] Subject"')

    def test_malformed_quotes_the_forms(self) -> None:
        """A subject without a command is refused with the accepted forms, on one line."""
        self.assertIn(FORMATS_HELP, MALFORMED_SUBJECT)
        self.assertNotIn("\n", MALFORMED_SUBJECT)
        for method in METHODS:
            self.assertEqual(decide(None, method), MALFORMED_SUBJECT)

    def test_refusal_is_550_5_7_1(self) -> None:
        """Refusals are permanent policy replies given in the session."""
        error = self.assertRaises(ReplyError, authorise, None, PASSWORD_METHOD, None, "a@b.example", None,
                                  False, False)
        self.assertEqual(str(error), "550 5.7.1 " + MALFORMED_SUBJECT)


class PasswordMethodTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        """The right password sends to a named list or the default list."""
        self.assertIsNone(decide(PASSWORD_NAMED, PASSWORD_METHOD))
        self.assertIsNone(decide(PASSWORD_DEFAULT, PASSWORD_METHOD))

    def test_from_address_not_required(self) -> None:
        """Under the password method the From address and the list's From address do not matter."""
        self.assertIsNone(decide(PASSWORD_NAMED, PASSWORD_METHOD, from_address="x@elsewhere.example"))
        self.assertIsNone(decide(PASSWORD_DEFAULT, PASSWORD_METHOD, list_from_address=None))

    def test_send_form_lacks_password(self) -> None:
        """A C{[send …]} form is refused as a missing password."""
        self.assertEqual(decide(SEND_NAMED, PASSWORD_METHOD), PASSWORD_REQUIRED)
        self.assertEqual(decide(SEND_DEFAULT, PASSWORD_METHOD), PASSWORD_REQUIRED)

    def test_wrong_password(self) -> None:
        """A wrong password is refused for either form."""
        self.assertEqual(decide(PASSWORD_NAMED, PASSWORD_METHOD, password_ok=False), WRONG_PASSWORD)
        self.assertEqual(decide(PASSWORD_DEFAULT, PASSWORD_METHOD, password_ok=False), WRONG_PASSWORD)

    def test_unknown_list(self) -> None:
        """A list the account does not have is refused once the password passed."""
        self.assertEqual(decide(PASSWORD_NAMED, PASSWORD_METHOD, list_exists=False), UNKNOWN_LIST)

    def test_no_default_list(self) -> None:
        """The default form is refused when the account has no default list."""
        self.assertEqual(decide(PASSWORD_DEFAULT, PASSWORD_METHOD, default_list_exists=False), NO_DEFAULT_LIST)

    def test_list_flags_apply_to_their_own_form(self) -> None:
        """A named list ignores whether a default list exists, and the default form whether the named one does."""
        self.assertIsNone(decide(PASSWORD_NAMED, PASSWORD_METHOD, default_list_exists=False))
        self.assertIsNone(decide(PASSWORD_DEFAULT, PASSWORD_METHOD, list_exists=False))


class FromMethodTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        """A matching From address sends to a named list or the default list."""
        self.assertIsNone(decide(SEND_NAMED, FROM_METHOD))
        self.assertIsNone(decide(SEND_DEFAULT, FROM_METHOD))

    def test_password_form_refused(self) -> None:
        """A password form is refused (never checked), whatever the rest: it could be a misread list name."""
        self.assertFalse(needs_password(PASSWORD_NAMED, FROM_METHOD))
        self.assertEqual(decide(PASSWORD_NAMED, FROM_METHOD, password_ok=None), PASSWORD_NOT_USED)
        self.assertEqual(decide(PASSWORD_DEFAULT, FROM_METHOD, password_ok=True), PASSWORD_NOT_USED)
        self.assertEqual(decide(PASSWORD_NAMED, FROM_METHOD, from_address="x@elsewhere.example",
                                list_exists=False), PASSWORD_NOT_USED)

    def test_list_name_with_separator_never_reaches_another_list(self) -> None:
        """C{[send Pre-send list]} reads as password C{send Pre} and list C{list}: refused, not sent to C{list}."""
        command = parse_subject("[send Pre-send list] Spring")
        self.assertEqual(decide(command, FROM_METHOD), PASSWORD_NOT_USED)
        self.assertEqual(decide(command, PASSWORD_METHOD, password_ok=False), WRONG_PASSWORD)

    def test_from_mismatch(self) -> None:
        """A From address other than the list's is refused, whatever the form."""
        for command in (SEND_NAMED, SEND_DEFAULT):
            self.assertEqual(decide(command, FROM_METHOD, from_address="other@shop.example"), FROM_MISMATCH)

    def test_list_has_no_from(self) -> None:
        """A list without a From address cannot be sent to by From address."""
        for command in (SEND_NAMED, SEND_DEFAULT):
            self.assertEqual(decide(command, FROM_METHOD, list_from_address=None), LIST_HAS_NO_FROM)
            self.assertEqual(decide(command, FROM_METHOD, list_from_address=""), LIST_HAS_NO_FROM)

    def test_unknown_list(self) -> None:
        """A list the account does not have is refused."""
        self.assertEqual(decide(SEND_NAMED, FROM_METHOD, list_exists=False), UNKNOWN_LIST)

    def test_no_default_list(self) -> None:
        """The default form is refused when the account has no default list."""
        self.assertEqual(decide(SEND_DEFAULT, FROM_METHOD, default_list_exists=False), NO_DEFAULT_LIST)


class BothMethodTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        """The right password and a matching From address send."""
        self.assertIsNone(decide(PASSWORD_NAMED, BOTH_METHOD))
        self.assertIsNone(decide(PASSWORD_DEFAULT, BOTH_METHOD))

    def test_send_form_lacks_password(self) -> None:
        """A C{[send …]} form is refused as a missing password."""
        self.assertEqual(decide(SEND_NAMED, BOTH_METHOD), PASSWORD_REQUIRED)
        self.assertEqual(decide(SEND_DEFAULT, BOTH_METHOD), PASSWORD_REQUIRED)

    def test_wrong_password(self) -> None:
        """A wrong password is refused even with a matching From address."""
        self.assertEqual(decide(PASSWORD_NAMED, BOTH_METHOD, password_ok=False), WRONG_PASSWORD)

    def test_from_mismatch(self) -> None:
        """The right password does not excuse a From address other than the list's."""
        self.assertEqual(decide(PASSWORD_NAMED, BOTH_METHOD, from_address="x@elsewhere.example"), FROM_MISMATCH)
        self.assertEqual(decide(PASSWORD_DEFAULT, BOTH_METHOD, from_address="x@elsewhere.example"), FROM_MISMATCH)

    def test_list_has_no_from(self) -> None:
        """A list without a From address is refused."""
        self.assertEqual(decide(PASSWORD_NAMED, BOTH_METHOD, list_from_address=None), LIST_HAS_NO_FROM)

    def test_unknown_and_default_lists(self) -> None:
        """Unknown and missing default lists are refused after the password."""
        self.assertEqual(decide(PASSWORD_NAMED, BOTH_METHOD, list_exists=False), UNKNOWN_LIST)
        self.assertEqual(decide(PASSWORD_DEFAULT, BOTH_METHOD, default_list_exists=False), NO_DEFAULT_LIST)


class LoginTests(SynchronousTestCase):
    def test_login_may_not_initiate(self) -> None:
        """A login without the permission is refused whatever the method and form."""
        for method, command in itertools.product(METHODS, FORMS):
            self.assertEqual(decide(command, method, login_may_initiate=False), LOGIN_MAY_NOT_INITIATE)

    def test_default_allows(self) -> None:
        """Without a login (mail from anywhere) the permission is not in question."""
        self.assertIsNone(authorise(PASSWORD_NAMED, PASSWORD_METHOD, True, "a@b.example", None, True, True))


class OrderTests(SynchronousTestCase):
    """Every check failing at once: the first in the documented order is reported."""

    everything_wrong = dict(password_ok=False, from_address="x@elsewhere.example", list_from_address=None,
                            list_exists=False, default_list_exists=False)

    def test_login_before_malformed(self) -> None:
        """The login's permission is checked before the subject."""
        self.assertEqual(decide(None, PASSWORD_METHOD, login_may_initiate=False), LOGIN_MAY_NOT_INITIATE)

    def test_password_before_list(self) -> None:
        """Without the right password nothing about the lists is revealed."""
        for method in (PASSWORD_METHOD, BOTH_METHOD):
            for command in (PASSWORD_NAMED, PASSWORD_DEFAULT):
                self.assertEqual(decide(command, method, **self.everything_wrong), WRONG_PASSWORD)
            for command in (SEND_NAMED, SEND_DEFAULT):
                self.assertEqual(decide(command, method, **self.everything_wrong), PASSWORD_REQUIRED)

    def test_missing_password_before_checking_it(self) -> None:
        """A C{[send …]} form under a password method is refused before any password verdict is needed."""
        self.assertEqual(decide(SEND_NAMED, PASSWORD_METHOD, password_ok=None), PASSWORD_REQUIRED)

    def test_list_before_from(self) -> None:
        """Once the password passes, an unknown list is reported before any From address check."""
        wrong_but_password = dict(self.everything_wrong, password_ok=True)
        self.assertEqual(decide(PASSWORD_NAMED, BOTH_METHOD, **wrong_but_password), UNKNOWN_LIST)
        self.assertEqual(decide(PASSWORD_DEFAULT, BOTH_METHOD, **wrong_but_password), NO_DEFAULT_LIST)
        self.assertEqual(decide(SEND_NAMED, FROM_METHOD, **self.everything_wrong), UNKNOWN_LIST)
        self.assertEqual(decide(SEND_DEFAULT, FROM_METHOD, **self.everything_wrong), NO_DEFAULT_LIST)

    def test_password_form_under_from_before_list(self) -> None:
        """Under the From method a password form is refused before lists or addresses are looked at."""
        for command in (PASSWORD_NAMED, PASSWORD_DEFAULT):
            self.assertEqual(decide(command, FROM_METHOD, **self.everything_wrong), PASSWORD_NOT_USED)

    def test_list_from_before_match(self) -> None:
        """A list without a From address is reported as such, not as a mismatch."""
        self.assertEqual(decide(SEND_NAMED, FROM_METHOD, from_address="x@elsewhere.example",
                                list_from_address=None), LIST_HAS_NO_FROM)


class NeedsPasswordTests(SynchronousTestCase):
    def test_each_method_and_form(self) -> None:
        """A password is verified only when the method uses one and the subject carries one."""
        expected = {
            (PASSWORD_METHOD, True): True, (BOTH_METHOD, True): True, (FROM_METHOD, True): False,
            (PASSWORD_METHOD, False): False, (BOTH_METHOD, False): False, (FROM_METHOD, False): False,
        }
        for method, command in itertools.product(METHODS, FORMS):
            self.assertEqual(needs_password(command, method), expected[method, command.password is not None],
                             (method, command))

    def test_no_command(self) -> None:
        """Without a command there is no password to verify."""
        for method in METHODS:
            self.assertFalse(needs_password(None, method))

    def test_unchecked_password_fails_closed(self) -> None:
        """A caller that skipped a needed check gets an error, never an acceptance."""
        for method in (PASSWORD_METHOD, BOTH_METHOD):
            self.assertRaises(ValueError, authorise, PASSWORD_NAMED, method, None, "news@shop.example",
                              LIST_FROM, True, True)

    def test_unknown_method(self) -> None:
        """A method outside the three is a bug, not a refusal."""
        self.assertRaises(ValueError, needs_password, PASSWORD_NAMED, "Password")
        self.assertRaises(ValueError, authorise, PASSWORD_NAMED, "token", True, "a@b.example", LIST_FROM,
                          True, True)


class AddressTests(SynchronousTestCase):
    def test_ascii_case_ignored_in_whole_address(self) -> None:
        """Local part and domain both ignore ASCII case."""
        self.assertTrue(same_address("NEWS@shop.EXAMPLE", "news@Shop.example"))
        self.assertIsNone(decide(SEND_NAMED, FROM_METHOD, from_address="nEwS@sHoP.eXaMpLe"))

    def test_different_addresses(self) -> None:
        """Addresses differing in anything but ASCII case differ."""
        self.assertFalse(same_address("news@shop.example", "news@shop.example.org"))
        self.assertFalse(same_address("news@shop.example", "news2@shop.example"))
        self.assertFalse(same_address("", "news@shop.example"))

    def test_non_ascii_compared_exactly(self) -> None:
        """Only ASCII letters fold: distinct internationalised mailboxes stay distinct."""
        self.assertFalse(same_address("stra\xdfe@shop.example", "strasse@shop.example"))
        self.assertFalse(same_address("\xc9lise@shop.example", "\xe9lise@shop.example"))
        self.assertTrue(same_address("\xe9LISE@shop.example", "\xe9lise@shop.example"))


class ParsedSubjectTests(SynchronousTestCase):
    def test_end_to_end(self) -> None:
        """The table's subjects, parsed, meet the rules of their method."""
        cases = [
            ("[MyPassword-send Newsletter] Spring", PASSWORD_METHOD, None),
            ("[MyPassword-send] Spring", PASSWORD_METHOD, None),
            ("[send Newsletter] Spring", PASSWORD_METHOD, PASSWORD_REQUIRED),
            ("[send Newsletter] Spring", FROM_METHOD, None),
            ("[send] Spring", FROM_METHOD, None),
            ("[MyPassword-send Newsletter] Spring", FROM_METHOD, PASSWORD_NOT_USED),
            ("[MyPassword-send Newsletter] Spring", BOTH_METHOD, None),
            ("[send] Spring", BOTH_METHOD, PASSWORD_REQUIRED),
            ("Re: [send] Spring", FROM_METHOD, MALFORMED_SUBJECT),
        ]
        for subject, method, expected in cases:
            self.assertEqual(decide(parse_subject(subject), method), expected, (subject, method))
