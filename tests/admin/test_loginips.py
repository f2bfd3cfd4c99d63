"""Login IP rules as the administration layer manages them, against a MemoryStore."""
from __future__ import annotations

from typing import Any

from jangotw.admin.loginips import LoginIPAdmin, render_rule, render_rules
from jangotw.model import Login

from .fixtures import CredentialAdminCase


class LoginIPAdminTests(CredentialAdminCase):
    """LoginIPAdmin parses ranges and scopes and keeps rules per account or per login."""

    def setUp(self) -> None:
        super().setUp()
        self.successResultOf(self.store.add_login(Login("alice", "bob")))
        self.admin = LoginIPAdmin(accounts=self.store, credentials=self.store, clock=self.clock)

    def add(self, *args: Any, **options: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.successResultOf(self.admin.add(*args, **options))
        return answer

    def test_add_for_account_with_both_scopes(self) -> None:
        """Without --login the rule is the account's (binding every login); by default for smtp and api."""
        answer = self.add("ALICE", "192.0.2.0/24")
        self.assertEqual(answer, {"account": "alice", "login": None, "range": "192.0.2.0/24", "first": "192.0.2.0",
                                  "last": "192.0.2.255", "scopes": ["smtp", "api"],
                                  "created": "2023-11-14T22:13:20+00:00", "new": True})
        self.assertEqual(render_rule(answer), "limited alice to 192.0.2.0/24 for smtp, api")

    def test_range_forms(self) -> None:
        """An address, a CIDR (host bits allowed) and a first-last range are all accepted."""
        self.assertEqual(self.add("alice", "203.0.113.7")["range"], "203.0.113.7")
        self.assertEqual(self.add("alice", "198.51.100.9/24")["range"], "198.51.100.0/24")
        answer = self.add("alice", "192.0.2.10-192.0.2.20", login="bob", scope="smtp")
        self.assertEqual((answer["login"], answer["range"], answer["scopes"]), ("bob", "192.0.2.10-192.0.2.20", ["smtp"]))
        self.assertEqual(render_rule(answer), "limited login bob of alice to 192.0.2.10-192.0.2.20 for smtp")
        self.assertEqual(self.add("alice", "2001:db8::/32")["range"], "2001:db8::/32")

    def test_adding_again_replaces_scopes(self) -> None:
        """Adding a range that is there changes its scopes and says the rule is not new."""
        self.add("alice", "192.0.2.1")
        answer = self.add("alice", "192.0.2.1", scope="api")
        self.assertEqual((answer["new"], answer["scopes"]), (False, ["api"]))
        self.assertEqual([rule["scopes"] for rule in self.successResultOf(self.admin.list_rules("alice"))], [["api"]])

    def test_add_refusals(self) -> None:
        """Bad ranges, unknown scopes, accounts and logins are refused."""
        self.assertIn("is not an IP address", self.refused(self.admin.add("alice", "example.com")))
        self.assertIn("ends before it begins", self.refused(self.admin.add("alice", "192.0.2.9-192.0.2.1")))
        self.assertEqual(self.refused(self.admin.add("alice", "192.0.2.1", scope="web")),
                         "unknown scope 'web': choose from smtp, api")
        self.assertEqual(self.refused(self.admin.add("ghost", "192.0.2.1")), "no account named 'ghost'")
        self.assertEqual(self.refused(self.admin.add("alice", "192.0.2.1", login="carol")),
                         "account 'alice' has no login named 'carol'")
        self.assertEqual(self.successResultOf(self.admin.list_rules("alice")), [])

    def test_list(self) -> None:
        """Without --login every rule of the account and its logins; with it, that login's own."""
        self.assertEqual(render_rules(self.successResultOf(self.admin.list_rules("alice"))),
                         "no login IP rules: the credentials work from any address")
        self.add("alice", "192.0.2.1", login="bob")
        self.add("alice", "198.51.100.0/24")
        everything = self.successResultOf(self.admin.list_rules("alice"))
        self.assertEqual([(rule["login"], rule["range"]) for rule in everything],
                         [(None, "198.51.100.0/24"), ("bob", "192.0.2.1")])
        self.assertEqual([rule["range"] for rule in self.successResultOf(self.admin.list_rules("alice", "BOB"))],
                         ["192.0.2.1"])
        lines = render_rules(everything).splitlines()
        self.assertEqual(lines[0].split(), ["RANGE", "LOGIN", "SCOPES", "ADDED"])
        self.assertIn("(account: every login)", lines[1])

    def test_remove(self) -> None:
        """A rule is removed by the range as written in any form; a missing one is refused by name."""
        self.add("alice", "192.0.2.0/24", login="bob")
        self.assertEqual(self.refused(self.admin.remove("alice", "192.0.2.0/24")),
                         "account 'alice' has no login IP rule for 192.0.2.0/24")
        answer = self.successResultOf(self.admin.remove("alice", "192.0.2.0-192.0.2.255", login="bob"))
        self.assertEqual(render_rule(answer), "login bob of alice is no longer limited to 192.0.2.0/24")
        self.assertEqual(self.refused(self.admin.remove("alice", "192.0.2.0/24", login="bob")),
                         "login 'bob' of account 'alice' has no login IP rule for 192.0.2.0/24")
