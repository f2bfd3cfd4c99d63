"""Additional logins as the administration layer manages them, against a MemoryStore."""
from __future__ import annotations

import json
from typing import Any, Sequence

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from jangotw.admin.logins import (LoginAdmin, check_login_name, iso_time, parse_capabilities, parse_scopes, range_text,
                                  render_login, render_logins, render_table)
from jangotw.auth.passwords import check_strength
from jangotw.errors import InputError
from jangotw.model import ApiToken, IPRule, TwoFactor

from .fixtures import CredentialAdminCase

STRONG = "violet harbour tractor whisper"
OTHER_STRONG = "correct horse battery staple"


def checked(password: str, inputs: Sequence[str]) -> "Deferred[None]":
    return maybeDeferred(check_strength, password, inputs)


class ParsingTests(SynchronousTestCase):
    """Login names, capability and scope lists, and the forms of times and ranges in answers."""

    def test_login_name_rules(self) -> None:
        """Login names follow account names' rules, so NAME@ACCOUNT splits at its only '@'."""
        self.assertEqual(check_login_name("ci-bot.2"), "ci-bot.2")
        for bad in ("", "bob@alice", "-bob", "b b", "x" * 65):
            message = str(self.assertRaises(InputError, check_login_name, bad))
            self.assertTrue(message.startswith("invalid login name"), message)

    def test_capabilities(self) -> None:
        """Capabilities are a comma list in any case; an unknown one is refused naming the valid ones."""
        self.assertEqual(parse_capabilities(" Relay, reports ,"), frozenset({"relay", "reports"}))
        message = str(self.assertRaises(InputError, parse_capabilities, "relay,admin"))
        self.assertEqual(message, "unknown capability 'admin': choose from relay, initiation, api, reports, settings")
        message = str(self.assertRaises(InputError, parse_capabilities, " , "))
        self.assertIn("at least one capability", message)

    def test_scopes(self) -> None:
        """Scopes are smtp and api."""
        self.assertEqual(parse_scopes("api,SMTP"), frozenset({"smtp", "api"}))
        message = str(self.assertRaises(InputError, parse_scopes, "imap"))
        self.assertEqual(message, "unknown scope 'imap': choose from smtp, api")

    def test_iso_time(self) -> None:
        """Times are ISO 8601 UTC; 0 (never) is None."""
        self.assertEqual(iso_time(86400), "1970-01-02T00:00:00+00:00")
        self.assertIsNone(iso_time(0))

    def test_range_text(self) -> None:
        """A range reads as an address, a CIDR when it is exactly one, else first-last."""
        self.assertEqual(range_text("192.0.2.7", "192.0.2.7"), "192.0.2.7")
        self.assertEqual(range_text("192.0.2.0", "192.0.2.255"), "192.0.2.0/24")
        self.assertEqual(range_text("192.0.2.10", "192.0.2.20"), "192.0.2.10-192.0.2.20")
        self.assertEqual(range_text("2001:db8::", "2001:db8::ffff"), "2001:db8::/112")

    def test_render_table(self) -> None:
        """Columns are padded to the widest cell; the last is not padded."""
        self.assertEqual(render_table(("A", "B"), [("long", "x"), ("s", "yy")]), "A     B\nlong  x\ns     yy")


class LoginAdminTests(CredentialAdminCase):
    """LoginAdmin validates input, changes the store and answers with JSON-able values."""

    def setUp(self) -> None:
        super().setUp()
        self.hashed: list[str] = []
        self.admin = LoginAdmin(accounts=self.store, credentials=self.store, hash_password=self.hash,
                                check_password=checked, clock=self.clock)

    def hash(self, password: str) -> "Deferred[str]":
        self.hashed.append(password)
        return succeed(f"$fake${len(self.hashed)}")

    def add_bob(self, allow: str | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = self.successResultOf(self.admin.add_login("ALICE", "bob", STRONG, allow))
        return answer

    def test_add_defaults_to_relay_only(self) -> None:
        """A new login may only relay unless told; the answer names its SMTP user and omits the hash."""
        answer = self.add_bob()
        self.assertEqual(answer, {"account": "alice", "name": "bob", "smtp_user": "bob@alice",
                                  "capabilities": ["relay"], "disabled": False, "has_password": True,
                                  "created": "2023-11-14T22:13:20+00:00"})
        login = self.successResultOf(self.store.get_login("alice", "BOB"))
        assert login is not None
        self.assertEqual((login.password_hash, login.capabilities), ("$fake$1", frozenset({"relay"})))

    def test_add_with_capabilities(self) -> None:
        """--allow sets the capabilities, listed in their canonical order."""
        self.assertEqual(self.add_bob("reports,relay")["capabilities"], ["relay", "reports"])

    def test_add_refusals(self) -> None:
        """Unknown account, bad or taken name, unknown capability and weak password are refused, and
        a refused login is neither hashed nor stored."""
        self.assertEqual(self.refused(self.admin.add_login("ghost", "bob", STRONG)), "no account named 'ghost'")
        self.assertIn("invalid login name", self.refused(self.admin.add_login("alice", "bob@x", STRONG)))
        self.assertIn("unknown capability 'root'", self.refused(self.admin.add_login("alice", "bob", STRONG, "root")))
        self.assertIn("password refused", self.refused(self.admin.add_login("alice", "bob", "password1234")))
        self.assertEqual(self.hashed, [])
        self.assertEqual(self.successResultOf(self.store.list_logins("alice")), [])
        self.add_bob()
        self.assertEqual(self.refused(self.admin.add_login("alice", "BOB", OTHER_STRONG)),
                         "account 'alice' already has a login named 'bob'")

    def test_password_resembling_login_or_account_refused(self) -> None:
        """The login and account names count as guesses when judging its password."""
        self.successResultOf(self.store.add_account("harbourmaster", None))
        self.assertIn("password refused",
                      self.refused(self.admin.add_login("harbourmaster", "bob", "harbourmaster1")))

    def test_list(self) -> None:
        """Logins are listed by name; an account without any lists none."""
        self.assertEqual(self.successResultOf(self.admin.list_logins("alice")), [])
        self.successResultOf(self.admin.add_login("alice", "zed", STRONG))
        self.add_bob()
        self.assertEqual([login["name"] for login in self.successResultOf(self.admin.list_logins("alice"))],
                         ["bob", "zed"])
        self.assertEqual(self.refused(self.admin.list_logins("ghost")), "no account named 'ghost'")

    def test_show_with_two_factor_rules_and_tokens(self) -> None:
        """show adds two-factor state, the login's own IP rules and its tokens, never a secret."""
        self.add_bob()
        self.assertEqual({k: v for k, v in self.successResultOf(self.admin.show_login("alice", "bob")).items()
                          if k in ("two_factor", "ip_rules", "tokens")},
                         {"two_factor": "off", "ip_rules": [], "tokens": []})
        self.successResultOf(self.store.set_two_factor(TwoFactor("alice", "bob", secret="S" * 32)))
        self.successResultOf(self.store.add_ip_rule(IPRule("alice", "bob", "192.0.2.0", "192.0.2.255",
                                                           frozenset({"smtp"}))))
        self.successResultOf(self.store.add_ip_rule(IPRule("alice", "", "198.51.100.1", "198.51.100.1",
                                                           frozenset({"api"}))))
        for token_id, login in (("0123456789ab", "bob"), ("ba9876543210", "")):
            self.successResultOf(self.store.add_token(ApiToken(
                id=token_id, account="alice", login=login, scopes=frozenset({"smtp"}), label="ci",
                created=self.clock.seconds(), secret_hash="secrethash")))
        shown = self.successResultOf(self.admin.show_login("alice", "Bob"))
        self.assertEqual(shown["two_factor"], "pending")
        self.assertEqual([rule["range"] for rule in shown["ip_rules"]], ["192.0.2.0/24"])
        self.assertEqual([(token["prefix"], token["state"]) for token in shown["tokens"]],
                         [("jgt_0123456789ab", "active")])
        self.assertNotIn("secrethash", json.dumps(shown))
        self.assertNotIn("SSSS", json.dumps(shown))
        text = render_login(shown)
        self.assertIn("SMTP user:    bob@alice", text)
        self.assertIn("two-factor:   pending", text)
        self.assertIn("  192.0.2.0/24  (smtp)", text)
        self.assertIn("  jgt_0123456789ab  active  (smtp)  ci", text)

    def test_show_unknown_login(self) -> None:
        """Naming a login the account lacks is refused, naming both."""
        self.assertEqual(self.refused(self.admin.show_login("alice", "ghost")),
                         "account 'alice' has no login named 'ghost'")

    def test_delete_takes_tokens_and_rules(self) -> None:
        """Deleting a login deletes its tokens and rules, reports how many, and leaves other logins."""
        self.add_bob()
        self.successResultOf(self.admin.add_login("alice", "carol", STRONG))
        self.successResultOf(self.store.add_token(ApiToken(
            id="0123456789ab", account="alice", login="bob", scopes=frozenset({"smtp"}), label="",
            created=1.0, secret_hash="h")))
        self.successResultOf(self.store.add_ip_rule(IPRule("alice", "bob", "192.0.2.1", "192.0.2.1",
                                                           frozenset({"smtp"}))))
        answer = self.successResultOf(self.admin.delete_login("alice", "BOB"))
        self.assertEqual((answer["name"], answer["deleted_tokens"], answer["deleted_ip_rules"]), ("bob", 1, 1))
        self.assertIsNone(self.successResultOf(self.store.get_token("0123456789ab")))
        self.assertEqual(self.successResultOf(self.store.ip_rules("alice")), [])
        self.assertEqual([login["name"] for login in self.successResultOf(self.admin.list_logins("alice"))],
                         ["carol"])
        self.assertEqual(self.refused(self.admin.delete_login("alice", "bob")),
                         "account 'alice' has no login named 'bob'")

    def test_restrict_replaces_capabilities(self) -> None:
        """restrict replaces the capabilities; an empty or unknown list changes nothing."""
        self.add_bob("relay,api")
        self.assertEqual(self.successResultOf(self.admin.restrict("alice", "bob", "reports"))["capabilities"],
                         ["reports"])
        self.assertIn("unknown capability", self.refused(self.admin.restrict("alice", "bob", "everything")))
        self.assertIn("at least one", self.refused(self.admin.restrict("alice", "bob", "")))
        login = self.successResultOf(self.store.get_login("alice", "bob"))
        assert login is not None
        self.assertEqual(login.capabilities, frozenset({"reports"}))

    def test_disable_enable(self) -> None:
        """disable and enable change only the login."""
        self.add_bob()
        self.assertTrue(self.successResultOf(self.admin.disable("alice", "bob"))["disabled"])
        self.assertFalse(self.successResultOf(self.admin.enable("alice", "bob"))["disabled"])
        self.assertIn("no login named", self.refused(self.admin.disable("alice", "ghost")))

    def test_passwd(self) -> None:
        """A new login password is strength-checked, then hashed and stored."""
        self.add_bob()
        self.assertIn("password refused", self.refused(self.admin.set_password("alice", "bob", "bobbob123456")))
        self.successResultOf(self.admin.set_password("alice", "bob", OTHER_STRONG))
        login = self.successResultOf(self.store.get_login("alice", "bob"))
        assert login is not None
        self.assertEqual(login.password_hash, "$fake$2")
        self.assertEqual(self.hashed, [STRONG, OTHER_STRONG])

    def test_render_logins(self) -> None:
        """The listing is a table, or a sentence when there are no logins."""
        self.assertEqual(render_logins([]), "no additional logins")
        self.add_bob()
        lines = render_logins(self.successResultOf(self.admin.list_logins("alice"))).splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "SMTP", "USER", "STATUS", "CAPABILITIES", "CREATED"])
        self.assertEqual(lines[1].split()[:4], ["bob", "bob@alice", "enabled", "relay"])
