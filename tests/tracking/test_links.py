"""Signed tracking tokens and the URLs that carry them."""
from __future__ import annotations

import string

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from jangotw.tracking.links import (MAX_LINK_INDEX, MAX_RECIPIENT_INDEX, MAX_TOKEN_LENGTH, TokenSigner,
                                    TrackingUrls, account_base_url)

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
MESSAGE_ID = "18ABC0F3E2D41ZX7Q9"

message_ids = st.text(alphabet=string.digits + string.ascii_uppercase, min_size=1, max_size=20)
recipient_indices = st.integers(min_value=0, max_value=MAX_RECIPIENT_INDEX)
link_indices = st.integers(min_value=0, max_value=MAX_LINK_INDEX)
# Anything an attacker (or a mangling mail client) might put in place of one character.
_REPLACEMENTS = string.ascii_letters + string.digits + "-_=.~%+/"
_TOKEN_ALPHABET = set("abcdefghijklmnopqrstuvwxyz234567")

signer = TokenSigner(SECRET)


def every_token(message_id: str, recipient_index: int, link_index: int) -> dict[str, str]:
    return {
        "link": signer.link_token(message_id, recipient_index, link_index),
        "open": signer.open_token(message_id, recipient_index),
        "unsubscribe": signer.unsubscribe_id(message_id, recipient_index),
    }


def parsers(chosen: TokenSigner) -> dict[str, object]:
    return {"link": chosen.parse_link, "open": chosen.parse_open, "unsubscribe": chosen.parse_unsubscribe}


def alterations(token: str) -> list[str]:
    """Every token one character away: each character replaced, dropped or doubled, one appended."""
    altered = []
    for position, original in enumerate(token):
        altered += [token[:position] + other + token[position + 1:] for other in _REPLACEMENTS if other != original]
        altered.append(token[:position] + token[position + 1:])
        altered.append(token[:position] + original + token[position:])
    altered += [token + other for other in _REPLACEMENTS]
    return altered


class TokenTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(message_id=message_ids, recipient_index=recipient_indices, link_index=link_indices)
    def test_round_trip(self, message_id: str, recipient_index: int, link_index: int) -> None:
        """Each kind of token gives back exactly what it was made from."""
        tokens = every_token(message_id, recipient_index, link_index)
        self.assertEqual(signer.parse_link(tokens["link"]), (message_id, recipient_index, link_index))
        self.assertEqual(signer.parse_open(tokens["open"]), (message_id, recipient_index))
        self.assertEqual(signer.parse_unsubscribe(tokens["unsubscribe"]), (message_id, recipient_index))

    @given(message_id=message_ids, recipient_index=recipient_indices, link_index=link_indices)
    def test_url_safe_and_short(self, message_id: str, recipient_index: int, link_index: int) -> None:
        """Tokens are lower-case base32 without padding, and at most 60 characters."""
        for token in every_token(message_id, recipient_index, link_index).values():
            self.assertLessEqual(len(token), MAX_TOKEN_LENGTH)
            self.assertTrue(set(token) <= _TOKEN_ALPHABET, token)

    def test_longest_token(self) -> None:
        """The longest token (a click for a 20-character id and the largest indices) fits the limit."""
        token = signer.link_token("Z" * 20, MAX_RECIPIENT_INDEX, MAX_LINK_INDEX)
        self.assertEqual(len(token), MAX_TOKEN_LENGTH)

    def test_opaque(self) -> None:
        """A token does not show the queue id or the indices in readable form."""
        for token in every_token(MESSAGE_ID, 42, 7).values():
            self.assertNotIn(MESSAGE_ID.lower(), token)
            self.assertNotIn(MESSAGE_ID, token)

    def test_distinct_per_recipient_and_link(self) -> None:
        """Recipients and links each get their own token."""
        tokens = {signer.link_token(MESSAGE_ID, recipient, link) for recipient in range(5) for link in range(5)}
        tokens |= {signer.open_token(MESSAGE_ID, recipient) for recipient in range(5)}
        tokens |= {signer.unsubscribe_id(MESSAGE_ID, recipient) for recipient in range(5)}
        self.assertEqual(len(tokens), 35)

    @settings(max_examples=25, deadline=None)
    @given(message_id=message_ids, recipient_index=recipient_indices, link_index=link_indices)
    def test_every_single_character_alteration_is_refused(self, message_id: str, recipient_index: int,
                                                          link_index: int) -> None:
        """Changing, dropping, doubling or appending any one character makes any token worthless,
        whichever kind it is then presented as."""
        for token in every_token(message_id, recipient_index, link_index).values():
            for altered in alterations(token):
                for kind, parse in parsers(signer).items():
                    self.assertIsNone(parse(altered), (kind, token, altered))  # type: ignore[operator]

    def test_upper_case_is_refused(self) -> None:
        """Only the encoder's own spelling is accepted."""
        for token in every_token(MESSAGE_ID, 3, 4).values():
            for parse in parsers(signer).values():
                self.assertIsNone(parse(token.upper()))  # type: ignore[operator]

    @given(message_id=message_ids, recipient_index=recipient_indices, link_index=link_indices)
    def test_kinds_are_not_interchangeable(self, message_id: str, recipient_index: int, link_index: int) -> None:
        """A token is accepted only as its own kind."""
        tokens = every_token(message_id, recipient_index, link_index)
        for made, token in tokens.items():
            for kind, parse in parsers(signer).items():
                if kind != made:
                    self.assertIsNone(parse(token), (made, kind))  # type: ignore[operator]

    @given(message_id=message_ids, recipient_index=recipient_indices, link_index=link_indices)
    def test_wrong_secret_refused(self, message_id: str, recipient_index: int, link_index: int) -> None:
        """Another secret's tokens mean nothing."""
        other = TokenSigner(OTHER_SECRET)
        for kind, token in every_token(message_id, recipient_index, link_index).items():
            self.assertIsNone(parsers(other)[kind](token))  # type: ignore[operator]

    @given(st.text(max_size=80))
    def test_arbitrary_text_refused(self, text: str) -> None:
        """Whatever a client sends, parsing answers None and never raises."""
        for parse in parsers(signer).values():
            self.assertIsNone(parse(text))  # type: ignore[operator]

    def test_truncations_refused(self) -> None:
        """Every prefix of a token is refused."""
        for token in every_token(MESSAGE_ID, 9, 2).values():
            for end in range(len(token)):
                for parse in parsers(signer).values():
                    self.assertIsNone(parse(token[:end]))  # type: ignore[operator]

    def test_bad_input_to_make_raises(self) -> None:
        """Making a token from a bad id or index is a bug in the caller: ValueError."""
        for message_id in ["", "lower", "A" * 21, "A-B", "É"]:
            self.assertRaises(ValueError, signer.open_token, message_id, 0)
        for index in [-1, MAX_RECIPIENT_INDEX + 1, True]:
            self.assertRaises(ValueError, signer.unsubscribe_id, MESSAGE_ID, index)
            self.assertRaises(ValueError, signer.link_token, MESSAGE_ID, index, 0)
        for index in [-1, MAX_LINK_INDEX + 1]:
            self.assertRaises(ValueError, signer.link_token, MESSAGE_ID, 0, index)

    def test_secret_hidden_and_checked(self) -> None:
        """The secret never appears in a repr, and a short one is refused."""
        self.assertNotIn(repr(SECRET), repr(signer))
        self.assertRaises(ValueError, TokenSigner, b"short")
        self.assertRaises(TypeError, TokenSigner, "a text secret of enough length")


class TrackingUrlTests(SynchronousTestCase):
    urls = TrackingUrls("https://track.example.com/", signer)

    def test_urls(self) -> None:
        """Each URL is the base, the kind's path and the token as the whole query."""
        self.assertEqual(self.urls.click(MESSAGE_ID, 1, 2),
                         f"https://track.example.com/c.z?{signer.link_token(MESSAGE_ID, 1, 2)}")
        self.assertEqual(self.urls.open_pixel(MESSAGE_ID, 1),
                         f"https://track.example.com/o.z?{signer.open_token(MESSAGE_ID, 1)}")
        self.assertEqual(self.urls.unsubscribe(MESSAGE_ID, 1),
                         f"https://track.example.com/u.z?{signer.unsubscribe_id(MESSAGE_ID, 1)}")

    def test_base_with_path(self) -> None:
        urls = TrackingUrls("http://example.com/t", signer)
        self.assertTrue(urls.open_pixel(MESSAGE_ID, 0).startswith("http://example.com/t/o.z?"))

    def test_bad_base_refused(self) -> None:
        for base in ["track.example.com", "ftp://example.com", "https://", "https://example.com/?a=b", ""]:
            self.assertRaises(ValueError, TrackingUrls, base, signer)

    def test_account_base_url(self) -> None:
        """An account's tracking domain replaces the default host, keeping its scheme."""
        self.assertEqual(account_base_url("", "https://t.example.net"), "https://t.example.net")
        self.assertEqual(account_base_url("track.example.com", "http://t.example.net"), "http://track.example.com")
        self.assertEqual(account_base_url("track.example.com", ""), "https://track.example.com")
        self.assertEqual(account_base_url("https://track.example.com/x", "http://t.example.net"),
                         "https://track.example.com/x")
