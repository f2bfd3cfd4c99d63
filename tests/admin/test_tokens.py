"""API tokens as the administration layer creates, lists and revokes them, against a MemoryStore."""
from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from jangotw.admin.tokens import TokenAdmin, check_label, parse_token_id, render_new_token, render_revoked, render_tokens
from jangotw.auth.tokens import parse_token, secret_matches
from jangotw.errors import InputError
from jangotw.model import Login

from .fixtures import CredentialAdminCase

DAY = 86400


class ParsingTests(SynchronousTestCase):
    """Token ids and labels as an administrator writes them."""

    def test_token_id_forms(self) -> None:
        """The id, its jgt_ prefix and a whole token all name the token."""
        for text in ("0123456789ab", " jgt_0123456789ab ", "jgt_0123456789ab_" + "x" * 32):
            self.assertEqual(parse_token_id(text), "0123456789ab")
        for bad in ("", "0123", "jgt_XYZ", "0123456789abc"):
            self.assertIn("invalid token id", str(self.assertRaises(InputError, parse_token_id, bad)))

    def test_label(self) -> None:
        """A label is trimmed; control characters and overlong labels are refused."""
        self.assertEqual(check_label("  CI deploys "), "CI deploys")
        self.assertRaises(InputError, check_label, "a\nb")
        self.assertRaises(InputError, check_label, "x" * 101)


class TokenAdminTests(CredentialAdminCase):
    """TokenAdmin stores only a hash, shows the token once and revokes at once."""

    def setUp(self) -> None:
        super().setUp()
        self.admin = TokenAdmin(accounts=self.store, credentials=self.store, clock=self.clock)

    def add_login(self, name: str, *capabilities: str) -> None:
        self.successResultOf(self.store.add_login(Login("alice", name, capabilities=frozenset(capabilities))))

    def create(self, account: str = "alice", **options: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.successResultOf(self.admin.create(account, **options))
        return answer

    def test_create_defaults(self) -> None:
        """By default a token of the account has both scopes and never expires; only a hash is stored."""
        answer = self.create("ALICE")
        parsed = parse_token(answer["token"])
        assert parsed is not None
        token_id, secret_hash = parsed
        self.assertEqual({k: answer[k] for k in ("id", "prefix", "account", "login", "scopes", "expires", "label",
                                                 "created", "state", "smtp_user")},
                         {"id": token_id, "prefix": f"jgt_{token_id}", "account": "alice", "login": None,
                          "scopes": ["smtp", "api"], "expires": None, "label": "",
                          "created": "2023-11-14T22:13:20+00:00", "state": "active", "smtp_user": "alice"})
        stored = self.successResultOf(self.store.get_token(token_id))
        assert stored is not None
        self.assertTrue(secret_matches(stored, secret_hash))
        self.assertNotIn(answer["token"].split("_", 2)[2], repr(stored))

    def test_create_with_options(self) -> None:
        """Scope, lifetime and label are honoured."""
        answer = self.create(scope="smtp", expires="90d", label="CI")
        self.assertEqual((answer["scopes"], answer["label"]), (["smtp"], "CI"))
        self.assertEqual(answer["expires"], "2024-02-12T22:13:20+00:00")
        self.assertIsNone(self.create(expires="never")["expires"])

    def test_create_refusals(self) -> None:
        """Unknown account, login or scope, an unreadable lifetime and a bad label are refused."""
        self.assertEqual(self.refused(self.admin.create("ghost")), "no account named 'ghost'")
        self.assertEqual(self.refused(self.admin.create("alice", login="bob")),
                         "account 'alice' has no login named 'bob'")
        self.assertEqual(self.refused(self.admin.create("alice", scope="imap")),
                         "unknown scope 'imap': choose from smtp, api")
        self.assertIn("cannot read the lifetime", self.refused(self.admin.create("alice", expires="soon")))
        self.assertIn("invalid label", self.refused(self.admin.create("alice", label="a\tb")))
        self.assertEqual(self.successResultOf(self.store.list_tokens("alice")), [])

    def test_login_token_scopes_follow_capabilities(self) -> None:
        """A login's token defaults to the scopes its capabilities allow, and no more may be asked."""
        self.add_login("bob", "relay")
        answer = self.create(login="BOB")
        self.assertEqual((answer["login"], answer["scopes"], answer["smtp_user"]), ("bob", ["smtp"], "bob@alice"))
        self.assertEqual(self.refused(self.admin.create("alice", login="bob", scope="smtp,api")),
                         "login 'bob' of account 'alice' may not use scope api (it needs the api capability); "
                         "leave that scope out or allow it first")
        self.add_login("reader", "reports")
        self.assertIn("may neither relay nor use the API", self.refused(self.admin.create("alice", login="reader")))
        self.add_login("full", "relay", "api")
        self.assertEqual(self.create(login="full")["scopes"], ["smtp", "api"])

    def test_list_never_shows_secrets(self) -> None:
        """The listing has ids, prefixes, state and times, and neither the token text nor its hash."""
        first = self.create(label="old", expires="1d")
        self.clock.advance(2 * DAY)
        second = self.create()
        listed = self.successResultOf(self.admin.list_tokens("alice"))
        self.assertEqual([(t["id"], t["state"]) for t in listed], [(first["id"], "expired"), (second["id"], "active")])
        stored = self.successResultOf(self.store.list_tokens("alice"))
        dumped = json.dumps(listed) + render_tokens(listed)
        for answer, token in zip((first, second), stored):
            self.assertNotIn(answer["token"], dumped)
            self.assertNotIn(answer["token"].split("_", 2)[2], dumped)
            self.assertNotIn(token.secret_hash, dumped)
        self.assertEqual(self.refused(self.admin.list_tokens("ghost")), "no account named 'ghost'")

    def test_revoke_at_once_and_twice(self) -> None:
        """A revoked token is unusable at once; revoking again is no error but says so."""
        token_id = self.create()["id"]
        answer = self.successResultOf(self.admin.revoke(f"jgt_{token_id}"))
        self.assertEqual((answer["state"], answer["already_revoked"], answer["revoked"]),
                         ("revoked", False, "2023-11-14T22:13:20+00:00"))
        stored = self.successResultOf(self.store.get_token(token_id))
        assert stored is not None
        self.assertFalse(stored.usable(self.clock.seconds()))
        self.clock.advance(60)
        again = self.successResultOf(self.admin.revoke(token_id))
        self.assertEqual((again["already_revoked"], again["revoked"]), (True, "2023-11-14T22:13:20+00:00"))
        self.assertEqual(render_revoked(again),
                         f"token {token_id} of alice was already revoked at 2023-11-14T22:13:20+00:00")
        self.assertIn("refused from now on", render_revoked(answer))

    def test_revoke_unknown(self) -> None:
        """An unknown or malformed id is refused."""
        self.assertEqual(self.refused(self.admin.revoke("0123456789ab")), "no token with id 0123456789ab")
        self.assertIn("invalid token id", self.refused(self.admin.revoke("nope")))

    def test_render_new_token(self) -> None:
        """The token is printed first, once, with the warning that it cannot be shown again."""
        self.add_login("bob", "relay")
        answer = self.create(login="bob", label="CI")
        lines = render_new_token(answer).splitlines()
        self.assertEqual(lines[0], answer["token"])
        self.assertIn("cannot be shown again", lines[1])
        self.assertIn("login:    bob (SMTP user bob@alice)", lines)
        self.assertIn("expires:  never", lines)
        self.assertIn("label:    CI", lines)

    def test_render_tokens(self) -> None:
        """The listing is a table with the columns an administrator looks for."""
        self.assertEqual(render_tokens([]), "no tokens")
        token_id = self.create(label="CI")["id"]
        self.successResultOf(self.admin.revoke(token_id))
        lines = render_tokens(self.successResultOf(self.admin.list_tokens("alice"))).splitlines()
        self.assertEqual(lines[0].split(), ["ID", "PREFIX", "LOGIN", "SCOPES", "CREATED", "EXPIRES", "LAST", "USED",
                                            "STATE", "LABEL"])
        self.assertEqual(lines[1].split(), [token_id, f"jgt_{token_id}", "-", "smtp,api", "2023-11-14", "22:13",
                                            "never", "never", "revoked", "2023-11-14", "22:13", "CI"])
