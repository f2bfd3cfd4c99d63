"""Reading the initiation command at the start of a Subject header."""
from __future__ import annotations

from email.header import Header

from hypothesis import assume, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from jangotw.initiation.parse import FORMATS_HELP, InitiationCommand, parse_subject

# Text a header can carry as typed: no surrogates, controls or line separators
# (email.header.Header turns the latter into folds).
_characters = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))


def _has_separator(text: str) -> bool:
    """Whether C{text} holds C{-send} followed by whitespace or at its end."""
    lowered = text.lower()
    start = lowered.find("-send")
    while start != -1:
        after = lowered[start + 5:start + 6]
        if not after or after.isspace() or after == "]":
            return True
        start = lowered.find("-send", start + 1)
    return False


passwords = st.text(_characters, min_size=1).filter(lambda p: "]" not in p)
list_names = (st.text(_characters, min_size=1)
              .filter(lambda n: "]" not in n and n == n.strip() and not _has_separator(n)))
subjects = st.text(_characters).filter(lambda s: s == s.lstrip())


def format_subject(command: InitiationCommand) -> str:
    """The subject a marketer types for C{command}."""
    head = "send" if command.password is None else command.password + "-send"
    if command.list_name is not None:
        head += " " + command.list_name
    return f"[{head}] {command.subject}"


def parsed(raw: str) -> tuple[str | None, str | None, str]:
    command = parse_subject(raw)
    assert command is not None, raw
    return command.password, command.list_name, command.subject


class FormTests(SynchronousTestCase):
    def test_password_named_list(self) -> None:
        """C{[YourPassword-send ListName] Subject} carries a password and a list."""
        self.assertEqual(parse_subject("[MyPassword-send Newsletter] Spring offers"),
                         InitiationCommand(password="MyPassword", list_name="Newsletter", subject="Spring offers"))

    def test_password_default_list(self) -> None:
        """C{[YourPassword-send] Subject} names no list: the default list."""
        self.assertEqual(parsed("[MyPassword-send] Spring offers"), ("MyPassword", None, "Spring offers"))

    def test_send_named_list(self) -> None:
        """C{[send ListName] Subject} carries no password."""
        self.assertEqual(parsed("[send Newsletter] Spring offers"), (None, "Newsletter", "Spring offers"))

    def test_send_default_list(self) -> None:
        """C{[send] Subject} carries neither a password nor a list."""
        self.assertEqual(parsed("[send] Spring offers"), (None, None, "Spring offers"))

    def test_send_any_case(self) -> None:
        """C{send} is matched in any case, in both kinds of form."""
        self.assertEqual(parsed("[pw-SEND List] s"), ("pw", "List", "s"))
        self.assertEqual(parsed("[pw-Send] s"), ("pw", None, "s"))
        self.assertEqual(parsed("[Send List] s"), (None, "List", "s"))
        self.assertEqual(parsed("[SEND] s"), (None, None, "s"))
        self.assertEqual(parsed("[pw-sEnD List] s"), ("pw", "List", "s"))

    def test_send_is_ascii(self) -> None:
        """Only ASCII letters spell C{send}: the long s (U+017F) does not, as case-folding would have it."""
        self.assertIsNone(parse_subject("[\u017fend] s"))
        self.assertIsNone(parse_subject("[pw-\u017fend List] s"))

    def test_leading_whitespace(self) -> None:
        """Whitespace before the command and between it and the subject is dropped."""
        self.assertEqual(parsed(" \t[send List]   s"), (None, "List", "s"))
        self.assertEqual(parsed("[send List]s"), (None, "List", "s"))

    def test_empty_remaining_subject(self) -> None:
        """A command alone leaves an empty subject."""
        self.assertEqual(parsed("[pw-send List]"), ("pw", "List", ""))
        self.assertEqual(parsed("[send]  "), (None, None, ""))

    def test_subject_kept_exactly(self) -> None:
        """The subject after the command keeps its own text, brackets and C{-send} words included."""
        self.assertEqual(parsed("[pw-send List] Please re-send [2] the form]  now "),
                         ("pw", "List", "Please re-send [2] the form]  now "))
        self.assertEqual(parsed("[send] [URGENT] pre-send List] checks"),
                         (None, None, "[URGENT] pre-send List] checks"))


class NotACommandTests(SynchronousTestCase):
    def test_no_bracket(self) -> None:
        """A subject that does not start with a bracket is no command."""
        self.assertIsNone(parse_subject("Spring offers"))
        self.assertIsNone(parse_subject("Spring offers [send List]"))

    def test_reply_and_forward_prefixes(self) -> None:
        """C{Re:}/C{Fwd:} before the bracket make it no command."""
        self.assertIsNone(parse_subject("Re: [send] x"))
        self.assertIsNone(parse_subject("Fwd: [pw-send List] x"))

    def test_empty(self) -> None:
        """An empty or blank subject is no command."""
        self.assertIsNone(parse_subject(""))
        self.assertIsNone(parse_subject("  \r\n "))

    def test_malformed_brackets(self) -> None:
        """Brackets holding none of the forms are no command."""
        for raw in ["[] x", "[List] x", "[sendList] x", "[pw-sendList] x", "[pw send List] x", "[send List x",
                    "[pw-send List", "[-send List] x", "[-send] x", "[ send] x", "[pw-send ] x", "[send ] x",
                    "[send\t] x", "send] x", "[[send] x"]:
            self.assertIsNone(parse_subject(raw), raw)

    def test_formats_help_is_one_line(self) -> None:
        """The help quoted in a refusal is one ASCII line naming every form."""
        self.assertTrue(FORMATS_HELP.isascii())
        self.assertNotIn("\n", FORMATS_HELP)
        for form in ["[YourPassword-send ListName]", "[YourPassword-send]", "[send ListName]", "[send]"]:
            self.assertIn(form, FORMATS_HELP)


class PasswordTests(SynchronousTestCase):
    def test_password_with_hyphens(self) -> None:
        """Hyphens belong to the password."""
        self.assertEqual(parsed("[my-pass-word-send List] s"), ("my-pass-word", "List", "s"))
        self.assertEqual(parsed("[-pw--send] s"), ("-pw-", None, "s"))

    def test_password_containing_send(self) -> None:
        """The password is everything before the last C{-send} that ends a word."""
        self.assertEqual(parsed("[a-send-b-send List] s"), ("a-send-b", "List", "s"))
        self.assertEqual(parsed("[a-sendb-send] s"), ("a-sendb", None, "s"))
        self.assertEqual(parsed("[x-send-send List] s"), ("x-send", "List", "s"))
        self.assertEqual(parsed("[send-send List] s"), ("send", "List", "s"))
        self.assertEqual(parsed("[a-send b-send List] s"), ("a-send b", "List", "s"))

    def test_password_with_spaces(self) -> None:
        """A password is kept exactly, surrounding spaces included."""
        self.assertEqual(parsed("[ my pw -send List] s"), (" my pw ", "List", "s"))

    def test_password_containing_bracket(self) -> None:
        """A C{]} in the password does not end the command: the first well-formed bracket does."""
        self.assertEqual(parsed("[a]b-send List] s"), ("a]b", "List", "s"))
        self.assertEqual(parsed("[ab]-send] s"), ("ab]", None, "s"))
        self.assertEqual(parsed("[]x]-send List] s"), ("]x]", "List", "s"))
        self.assertEqual(parsed("[a] b-send List] s [t]"), ("a] b", "List", "s [t]"))
        self.assertEqual(parsed("[a]-send-b]-send List] s"), ("a]-send-b]", "List", "s"))

    def test_ambiguous_password_is_read_as_documented(self) -> None:
        """A password whose part before a C{]} is itself a command is cut there (and then fails its check)."""
        # Password "p-send]x": "[p-send]" is already well formed.
        self.assertEqual(parsed("[p-send]x-send List] s"), ("p", None, "x-send List] s"))
        # Password "p-send x]y": "[p-send x]" names list "x".
        self.assertEqual(parsed("[p-send x]y-send List] s"), ("p", "x", "y-send List] s"))
        # Password "send x]y": "[send x]" is the send form.
        self.assertEqual(parsed("[send x]y-send List] s"), (None, "x", "y-send List] s"))

    def test_bracket_in_list_part_is_not_a_list_name(self) -> None:
        """A list name never holds C{]}: a later C{]} cannot stretch a malformed list part."""
        self.assertIsNone(parse_subject("[pw-send ] x] s"))
        self.assertIsNone(parse_subject("[send ] x] s"))

    def test_password_not_in_repr(self) -> None:
        """The password never shows in the command's repr or str; the rest does."""
        command = parse_subject("[Sekr1t-pass-send List] Spring")
        assert command is not None
        for text in (repr(command), str(command)):
            self.assertNotIn("Sekr1t", text)
            self.assertIn("List", text)
            self.assertIn("Spring", text)


class ListNameTests(SynchronousTestCase):
    def test_spaces_inside(self) -> None:
        """A list name may hold spaces; surrounding whitespace is not part of it."""
        self.assertEqual(parsed("[pw-send  Spring  News \t] s"), ("pw", "Spring  News", "s"))
        self.assertEqual(parsed("[send My Customers] s"), (None, "My Customers", "s"))

    def test_kept_as_written(self) -> None:
        """The list name keeps its case."""
        self.assertEqual(parsed("[send NewsLetter-2024] s"), (None, "NewsLetter-2024", "s"))

    def test_hyphen_send_inside_word(self) -> None:
        """A C{-send} inside a word of the list name is part of the name."""
        self.assertEqual(parsed("[pw-send Auto-sender list] s"), ("pw", "Auto-sender list", "s"))

    def test_separator_in_list_name_joins_password(self) -> None:
        """A list name cannot hold C{-send} then whitespace: the last such is the separator."""
        self.assertEqual(parsed("[pw-send Pre-send list] s"), ("pw-send Pre", "list", "s"))
        self.assertEqual(parsed("[pw-send Auto-send] s"), ("pw-send Auto", None, "s"))


class EncodingTests(SynchronousTestCase):
    def test_utf8_q(self) -> None:
        """A Q-encoded UTF-8 subject is decoded before reading."""
        self.assertEqual(parsed("=?UTF-8?Q?=5Bp=C3=A4ss-send_Caf=C3=A9_List=5D_Sch=C3=B6n?="),
                         ("päss", "Café List", "Schön"))

    def test_utf8_b(self) -> None:
        """A B-encoded UTF-8 subject is decoded before reading."""
        raw = "=?utf-8?b?" + "W3DDpHNzLXNlbmQgQ2Fmw6kgTGlzdF0gU2Now7Zu" + "?="
        self.assertEqual(parsed(raw), ("päss", "Café List", "Schön"))

    def test_split_across_encoded_words(self) -> None:
        """A command split across encoded words (whitespace between them dropped) reads whole."""
        raw = "=?utf-8?q?=5Bp=C3=A4ss-se?= =?utf-8?b?bmQgQ2Fmw6k=?= =?utf-8?q?_List=5D?= plain text"
        self.assertEqual(parsed(raw), ("päss", "Café List", "plain text"))

    def test_folded(self) -> None:
        """A folded header is unfolded (CRLF removed, the whitespace after it kept)."""
        raw = "=?utf-8?q?=5Bp=C3=A4ss-send?=\r\n =?utf-8?q?_News=5D?= Spring\r\n\toffers"
        self.assertEqual(parsed(raw), ("päss", "News", "Spring\toffers"))
        self.assertEqual(parsed("[pw-send\r\n News] Spring\n offers"), ("pw", "News", "Spring offers"))

    def test_encoded_words_after_command(self) -> None:
        """Encoded words in the subject part are decoded; mixed plain text keeps its spaces."""
        self.assertEqual(parsed("[send News] Caf=?iso-8859-1?q?=E9?= and =?utf-8?q?cr=C3=A8me?="),
                         (None, "News", "Caf\xe9 and cr\xe8me"))

    def test_bad_encoded_words_do_not_raise(self) -> None:
        """An unknown charset or broken encoding never raises; the text reads as best it can."""
        self.assertEqual(parsed("[send] =?x-unknown?q?abc?="), (None, None, "abc"))
        self.assertIsInstance(parse_subject("=?utf-8?b?!!!?= [send] x"), (InitiationCommand, type(None)))
        self.assertIsNone(parse_subject("=?utf-8?b?W3Nl?="))

    def test_undecodable_bytes(self) -> None:
        """Surrogate-escaped raw bytes (an 8-bit header) do not raise."""
        self.assertEqual(parsed("[send] caf\udce9"), (None, None, "caf\ufffd"))


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(password=st.none() | passwords, list_name=st.none() | list_names, subject=subjects)
    def test_plain_round_trip(self, password: str | None, list_name: str | None, subject: str) -> None:
        """Any command formatted as typed reads back the same parts."""
        raw = format_subject(InitiationCommand(password=password, list_name=list_name, subject=subject))
        assume("=?" not in raw)  # plain text that looks like an encoded word is decoded, as it should be
        self.assertEqual(parsed(raw), (password, list_name, subject))

    @settings(max_examples=300)
    @given(password=st.none() | passwords, list_name=st.none() | list_names, subject=subjects)
    def test_encoded_round_trip(self, password: str | None, list_name: str | None, subject: str) -> None:
        """Any command formatted then RFC 2047-encoded (and folded) by the stdlib reads back the same parts."""
        typed = format_subject(InitiationCommand(password=password, list_name=list_name, subject=subject))
        raw = Header(typed, "utf-8").encode()
        self.assertEqual(parsed(raw), (password, list_name, subject))

    @settings(max_examples=300)
    @given(text=st.text())
    def test_never_raises(self, text: str) -> None:
        """Any text at all parses to a command or None."""
        self.assertIsInstance(parse_subject(text), (InitiationCommand, type(None)))

    @settings(max_examples=300)
    @given(text=st.text(st.sampled_from(list("[]-sendSEND =?qQbB_utf8 \r\n")), max_size=60))
    def test_never_raises_on_near_commands(self, text: str) -> None:
        """Text made of command and encoded-word pieces parses to a command or None."""
        self.assertIsInstance(parse_subject(text), (InitiationCommand, type(None)))

    def test_many_brackets_without_a_command(self) -> None:
        """A long subject of C{]} and C{-send} words, none well formed, is read (in linear time) as no command."""
        self.assertIsNone(parse_subject("[" + "-send ]" * 20000))
