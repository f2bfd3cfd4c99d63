"""API token text, stored hashes and lifetimes."""
from __future__ import annotations

import re

from hypothesis import given, strategies
from twisted.trial.unittest import SynchronousTestCase

from jangotw.auth.tokens import TOKEN_PREFIX, new_token, parse_lifetime, parse_token, secret_matches
from jangotw.errors import InputError
from jangotw.model import ApiToken

SHAPE = re.compile(r"jgt_[0-9a-f]{12}_[A-Za-z0-9_-]{32}\Z")


def stored(token_id: str, secret_hash: str) -> ApiToken:
    return ApiToken(token_id, "alice", "", frozenset({"smtp"}), "label", 0.0, secret_hash)


class NewTokenTests(SynchronousTestCase):
    def test_shape(self) -> None:
        """A recognisable prefix, a 12-hex-digit id, then 32 URL-safe characters (192 random bits)."""
        text, token_id, _ = new_token()
        self.assertTrue(text.startswith(TOKEN_PREFIX))
        self.assertRegex(text, SHAPE)
        self.assertEqual(text[4:16], token_id)

    def test_only_a_hash_of_the_secret_is_kept(self) -> None:
        text, _, secret_hash = new_token()
        secret = text[len("jgt_0123456789ab_"):]
        self.assertRegex(secret_hash, r"[0-9a-f]{64}\Z")
        self.assertNotIn(secret, secret_hash)

    def test_tokens_differ(self) -> None:
        made = [new_token() for _ in range(50)]
        self.assertEqual(len({text for text, _, _ in made}), 50)
        self.assertEqual(len({token_id for _, token_id, _ in made}), 50)


class ParseTokenTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """What parse_token reads from the text is the id and the hash new_token stored."""
        text, token_id, secret_hash = new_token()
        self.assertEqual(parse_token(text), (token_id, secret_hash))
        self.assertEqual(parse_token(f"  {text}\r\n"), (token_id, secret_hash))

    def test_secret_may_hold_underscores(self) -> None:
        text = "jgt_0123456789ab_" + "_" * 32
        self.assertEqual(parse_token(text)[0], "0123456789ab")  # type: ignore[index]

    def test_passwords_and_near_misses_are_not_tokens(self) -> None:
        text, _, _ = new_token()
        for candidate in ("copper lantern orbit meadow", "", TOKEN_PREFIX, text[:-1], text + "x",
                          text.replace("jgt_", "jgx_"), text.upper(), "JGT_" + text[4:],
                          text[:16] + "=" + text[17:], "x" + text):
            self.assertIsNone(parse_token(candidate), candidate)

    @given(strategies.text())
    def test_any_text_parses_or_is_none(self, text: str) -> None:
        parsed = parse_token(text)
        self.assertTrue(parsed is None or (len(parsed[0]) == 12 and len(parsed[1]) == 64))


class SecretMatchesTests(SynchronousTestCase):
    def test_match(self) -> None:
        text, token_id, secret_hash = new_token()
        other_text, _, _ = new_token()
        token = stored(token_id, secret_hash)
        self.assertTrue(secret_matches(token, parse_token(text)[1]))  # type: ignore[index]
        self.assertFalse(secret_matches(token, parse_token(other_text)[1]))  # type: ignore[index]


class LifetimeTests(SynchronousTestCase):
    def test_units(self) -> None:
        self.assertEqual(parse_lifetime("90d"), 90 * 86400)
        self.assertEqual(parse_lifetime("12h"), 12 * 3600)
        self.assertEqual(parse_lifetime("4w"), 4 * 7 * 86400)
        self.assertEqual(parse_lifetime(" 90D "), 90 * 86400)

    def test_never(self) -> None:
        self.assertEqual(parse_lifetime("never"), 0)
        self.assertEqual(parse_lifetime("0"), 0)

    def test_refused_with_the_forms_named(self) -> None:
        for text in ("90", "0d", "-1d", "1y", "100000d", "", "d", "1.5d", "90 d"):
            with self.assertRaises(InputError, msg=text) as raised:
                parse_lifetime(text)
            self.assertIn("90d", str(raised.exception))
