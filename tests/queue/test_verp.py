"""Signed VERP return paths."""
from __future__ import annotations

import os
import stat

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from jangotw.errors import ConfigError
from jangotw.queue.verp import SECRET_SIZE, VerpSigner, load_or_create_secret

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
DOMAIN = "bounce.example.com"

_ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
message_ids = st.text(alphabet=_ALPHANUMERIC, min_size=1, max_size=20)
indices = st.integers(min_value=0, max_value=9999)
# Characters an attacker (or a broken MTA) might put in place of one token character.
replacements = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-+._=")


def token_of(address: str) -> str:
    local = address.partition("@")[0]
    return local[len("bounces+"):]


class ReturnPathTests(SynchronousTestCase):
    signer = VerpSigner(SECRET)

    def test_shape(self) -> None:
        """A return path is bounces+TOKEN at the bounce domain, with a lower-case token."""
        address = self.signer.return_path("18ABC0F3E2D41ZX7Q9", 42, DOMAIN)
        local, _, domain = address.partition("@")
        self.assertEqual(domain, DOMAIN)
        self.assertTrue(local.startswith("bounces+18abc0f3e2d41zx7q9-42-"), local)
        self.assertEqual(self.signer.parse(address), ("18ABC0F3E2D41ZX7Q9", 42))

    @settings(max_examples=300)
    @given(message_id=message_ids, index=indices)
    def test_round_trip(self, message_id: str, index: int) -> None:
        """Every queue id and recipient index comes back from its return path, which stays
        within 64 characters of letters, digits, + and -."""
        address = self.signer.return_path(message_id, index, DOMAIN)
        local = address.partition("@")[0]
        self.assertLessEqual(len(local), 64)
        self.assertTrue(set(local) <= set("abcdefghijklmnopqrstuvwxyz0123456789+-"), local)
        self.assertEqual(self.signer.parse(address), (message_id, index))

    @given(message_id=message_ids, index=indices)
    def test_case_of_local_part_is_ignored(self, message_id: str, index: int) -> None:
        """An MTA that upper-cases the address (or just the local part) does not break the token."""
        address = self.signer.return_path(message_id, index, DOMAIN)
        local, _, domain = address.partition("@")
        self.assertEqual(self.signer.parse(address.upper()), (message_id, index))
        self.assertEqual(self.signer.parse(f"{local.upper()}@{domain}"), (message_id, index))
        self.assertEqual(self.signer.parse(f"<{address}>"), (message_id, index))

    @settings(max_examples=500)
    @given(message_id=message_ids, index=indices, position=st.integers(min_value=0), replacement=replacements)
    def test_any_single_changed_character_is_refused(
        self, message_id: str, index: int, position: int, replacement: str
    ) -> None:
        """Changing any one character of the token (other than its case) makes it worthless."""
        address = self.signer.return_path(message_id, index, DOMAIN)
        token = token_of(address)
        position %= len(token)
        if token[position] == replacement:
            return
        tampered = token[:position] + replacement + token[position + 1:]
        self.assertIsNone(self.signer.parse(f"bounces+{tampered}@{DOMAIN}"), tampered)

    @given(message_id=message_ids, index=indices)
    def test_other_secret_is_refused(self, message_id: str, index: int) -> None:
        """A token made with another secret does not parse."""
        address = VerpSigner(OTHER_SECRET).return_path(message_id, index, DOMAIN)
        self.assertIsNone(self.signer.parse(address))

    def test_token_is_valid_at_any_domain(self) -> None:
        """The domain is not signed, so the bounce domain can change under mail already sent."""
        address = self.signer.return_path("18ABC0F3E2D41ZX7Q9", 7, DOMAIN)
        moved = address.replace(DOMAIN, "new-bounces.example.net")
        self.assertEqual(self.signer.parse(moved), ("18ABC0F3E2D41ZX7Q9", 7))

    def test_non_bounce_addresses_are_refused(self) -> None:
        """Ordinary addresses and near misses are None, never an exception."""
        good = self.signer.return_path("18ABC0F3E2D41ZX7Q9", 7, DOMAIN)
        token = token_of(good)
        identifier, index, mac = token.split("-")
        for address in [
            "",
            "@",
            "postmaster@example.com",
            "bounces@example.com",
            f"bounces+{token}",  # no domain
            f"bounces+{token}@",
            f"bounce+{token}@{DOMAIN}",
            f"bounces-{token}@{DOMAIN}",
            f"bounces+{token}x@{DOMAIN}",
            f"bounces+{identifier}-0{index}-{mac}@{DOMAIN}",  # leading zero
            f"bounces+{identifier}-{index}@{DOMAIN}",
            f"bounces+{identifier}-{index}-{mac}-x@{DOMAIN}",
            f"bounces+{identifier}--{mac}@{DOMAIN}",
            f"bounces+{'a' * 21}-{index}-{mac}@{DOMAIN}",
            f"bounces+{identifier}-10000-{mac}@{DOMAIN}",
            f"bounces+{identifier}-{index}-{mac[:-1]}@{DOMAIN}",
            f"bounces+{identifier}-{index}-{mac}=@{DOMAIN}",
            f'"bounces+{token}"@{DOMAIN}',
            "bounces+\udcff\x00@example.com",
        ]:
            self.assertIsNone(self.signer.parse(address), address)

    def test_refuses_to_sign_what_it_cannot_parse(self) -> None:
        """Ids, indices and domains outside the token's alphabet are programming errors."""
        for message_id, index, domain in [
            ("", 0, DOMAIN),
            ("18abc0f3e2d41zx7q9", 0, DOMAIN),
            ("A" * 21, 0, DOMAIN),
            ("18ABC-0F3", 0, DOMAIN),
            ("18ABC0F3E2D41ZX7Q9", -1, DOMAIN),
            ("18ABC0F3E2D41ZX7Q9", 10000, DOMAIN),
            ("18ABC0F3E2D41ZX7Q9", True, DOMAIN),
            ("18ABC0F3E2D41ZX7Q9", 0, ""),
            ("18ABC0F3E2D41ZX7Q9", 0, "a@b.example"),
            ("18ABC0F3E2D41ZX7Q9", 0, "bounce.example.com>"),
        ]:
            self.assertRaises(ValueError, self.signer.return_path, message_id, index, domain)

    def test_secret_is_not_shown(self) -> None:
        """The repr of a signer does not reveal its secret."""
        self.assertNotIn(repr(SECRET), repr(self.signer))
        self.assertNotIn("secret", repr(self.signer))

    def test_short_secret_refused(self) -> None:
        self.assertRaises(ValueError, VerpSigner, b"short")
        self.assertRaises(TypeError, VerpSigner, "a text secret of some length")


class SecretFileTests(SynchronousTestCase):
    def test_created_private_and_read_back(self) -> None:
        """A missing secret file is created with mode 0600 and read back identically later."""
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "verp.key")
        secret = load_or_create_secret(path)
        self.assertEqual(len(secret), SECRET_SIZE)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(), secret)
        self.assertEqual(load_or_create_secret(path), secret)
        self.assertEqual(os.listdir(directory), ["verp.key"])  # no temporary file left behind

    def test_existing_secret_is_kept(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as handle:
            handle.write(SECRET)
        self.assertEqual(load_or_create_secret(path), SECRET)

    def test_wrong_size_refused(self) -> None:
        """A truncated or foreign file stops start-up instead of silently changing every token."""
        for content in (b"", SECRET[:31], SECRET + b"\n"):
            path = self.mktemp()
            with open(path, "wb") as handle:
                handle.write(content)
            error = self.assertRaises(ConfigError, load_or_create_secret, path)
            self.assertIn(path, str(error))
            with open(path, "rb") as handle:
                self.assertEqual(handle.read(), content)  # never overwritten

    def test_secrets_differ(self) -> None:
        first, second = self.mktemp(), self.mktemp()
        self.assertNotEqual(load_or_create_secret(first), load_or_create_secret(second))
