"""Two-factor set-up, confirmation and removal as the administration layer does them, against a MemoryStore."""
from __future__ import annotations

import json
from typing import Any

import pyotp
from twisted.trial.unittest import SynchronousTestCase

from jangotw.admin.twofactor import TwoFactorAdmin, render_setup, render_two_factor, split_user
from jangotw.auth.totp import recovery_hash
from jangotw.errors import InputError
from jangotw.model import Login

from .fixtures import CredentialAdminCase


class SplitUserTests(SynchronousTestCase):
    """Two-factor commands name logins as SMTP AUTH does."""

    def test_forms(self) -> None:
        """ACCOUNT is the account's own login, LOGIN@ACCOUNT an additional one; a lone '@' side is refused."""
        self.assertEqual(split_user("alice"), ("alice", ""))
        self.assertEqual(split_user(" bob@alice "), ("alice", "bob"))
        for bad in ("@alice", "bob@", "@"):
            self.assertIn("LOGIN@ACCOUNT", str(self.assertRaises(InputError, split_user, bad)))


class TwoFactorAdminTests(CredentialAdminCase):
    """TwoFactorAdmin: pending until a code confirms it; off only with a code, a recovery code or force."""

    def setUp(self) -> None:
        super().setUp()
        self.successResultOf(self.store.add_login(Login("alice", "bob")))
        self.admin = TwoFactorAdmin(accounts=self.store, credentials=self.store, clock=self.clock)

    def begin(self, name: str = "alice") -> dict[str, Any]:
        answer: dict[str, Any] = self.successResultOf(self.admin.begin(name))
        return answer

    def code(self, setup: dict[str, Any], offset: float = 0) -> str:
        code: str = pyotp.TOTP(setup["secret"]).at(self.clock.seconds() + offset)
        return code

    def enabled(self, name: str = "alice") -> dict[str, Any]:
        setup = self.begin(name)
        self.successResultOf(self.admin.confirm(name, self.code(setup)))
        self.clock.advance(30)
        return setup

    def test_begin_stores_pending_state_with_hashed_recovery_codes(self) -> None:
        """The set-up answer holds the URI and ten codes; the store holds only the codes' hashes."""
        setup = self.begin("ALICE")
        self.assertEqual((setup["name"], setup["state"], len(setup["recovery_codes"])), ("alice", "pending", 10))
        self.assertEqual(pyotp.parse_uri(setup["uri"]).secret, setup["secret"])
        self.assertIn("issuer=jangotw", setup["uri"])
        state = self.successResultOf(self.store.two_factor("alice", ""))
        assert state is not None
        self.assertFalse(state.enabled)
        self.assertEqual(state.recovery_hashes, frozenset(recovery_hash(code) for code in setup["recovery_codes"]))
        self.assertEqual(self.successResultOf(self.admin.status("alice"))["state"], "pending")

    def test_confirm_turns_it_on(self) -> None:
        """A current code confirms a pending set-up, within one step of drift."""
        setup = self.begin("bob@alice")
        answer = self.successResultOf(self.admin.confirm("bob@ALICE", self.code(setup, offset=-30)))
        self.assertEqual({k: answer[k] for k in ("name", "login", "state", "recovery_codes_left")},
                         {"name": "bob@alice", "login": "bob", "state": "on", "recovery_codes_left": 10})
        state = self.successResultOf(self.store.two_factor("alice", "bob"))
        assert state is not None
        self.assertTrue(state.enabled)

    def test_confirm_refusals(self) -> None:
        """Nothing pending, a wrong or stale code, and confirming twice are refused."""
        self.assertIn("no two-factor set-up is pending for alice", self.refused(self.admin.confirm("alice", "123456")))
        setup = self.begin()
        self.assertIn("not a current code", self.refused(self.admin.confirm("alice", self.code(setup, offset=90))))
        self.assertIn("not a current code", self.refused(self.admin.confirm("alice", "k7wq-3mza")))
        self.successResultOf(self.admin.confirm("alice", self.code(setup)))
        self.assertEqual(self.refused(self.admin.confirm("alice", self.code(setup))),
                         "two-factor is already on for alice")

    def test_code_never_accepted_twice(self) -> None:
        """The code that confirmed the set-up cannot then turn two-factor off."""
        setup = self.begin()
        code = self.code(setup)
        self.successResultOf(self.admin.confirm("alice", code))
        self.assertEqual(self.refused(self.admin.disable("alice", code)),
                         "code refused: it was already used; wait for the next one")
        self.assertEqual(self.successResultOf(self.admin.status("alice"))["state"], "on")

    def test_begin_again(self) -> None:
        """A pending set-up is replaced by a new one; one that is on is refused."""
        first = self.begin()
        second = self.begin()
        self.assertNotEqual(first["secret"], second["secret"])
        self.assertIn("not a current code", self.refused(self.admin.confirm("alice", self.code(first))))
        self.successResultOf(self.admin.confirm("alice", self.code(second)))
        self.assertIn("already on for alice", self.refused(self.admin.begin("alice")))

    def test_disable_with_code(self) -> None:
        """A fresh code turns two-factor off; the state is gone."""
        setup = self.enabled()
        answer = self.successResultOf(self.admin.disable("alice", self.code(setup)))
        self.assertEqual((answer["state"], answer["method"]), ("off", "code"))
        self.assertIsNone(self.successResultOf(self.store.two_factor("alice", "")))
        self.assertEqual(render_two_factor(answer), "two-factor is off for alice with a code")

    def test_disable_with_recovery_code(self) -> None:
        """A recovery code (any case, dashes optional) turns it off; a made-up one does not."""
        setup = self.enabled("bob@alice")
        self.assertIn("neither a current code nor an unused recovery code",
                      self.refused(self.admin.disable("bob@alice", "aaaa-bbbb-cccc-dddd")))
        code = setup["recovery_codes"][3].replace("-", "").upper()
        answer = self.successResultOf(self.admin.disable("bob@alice", code))
        self.assertEqual((answer["state"], answer["method"]), ("off", "recovery code"))

    def test_recovery_code_used_once(self) -> None:
        """A spent recovery code is refused; the others stay counted."""
        setup = self.enabled()
        recovery = setup["recovery_codes"][0]
        self.successResultOf(self.store.use_recovery_code("alice", "", recovery_hash(recovery)))
        self.assertIn("unused recovery code", self.refused(self.admin.disable("alice", recovery)))
        self.assertEqual(self.successResultOf(self.admin.status("alice"))["recovery_codes_left"], 9)

    def test_disable_needs_code_unless_forced(self) -> None:
        """Without a code only force turns two-factor off, and the answer says it was forced."""
        self.enabled()
        self.assertEqual(self.refused(self.admin.disable("alice")),
                         "turning two-factor off for alice needs a current code or a recovery code")
        answer = self.successResultOf(self.admin.disable("alice", force=True))
        self.assertEqual(answer["method"], "forced")
        self.assertIn("forced", render_two_factor(answer))
        self.assertEqual(self.refused(self.admin.disable("alice", force=True)), "two-factor is off for alice")

    def test_unknown_names(self) -> None:
        """Unknown accounts and logins are refused by name."""
        self.assertEqual(self.refused(self.admin.status("ghost")), "no account named 'ghost'")
        self.assertEqual(self.refused(self.admin.begin("carol@alice")), "account 'alice' has no login named 'carol'")

    def test_status(self) -> None:
        """status: off, then pending, then on with the count of unused recovery codes."""
        self.assertEqual(self.successResultOf(self.admin.status("bob@alice")),
                         {"name": "bob@alice", "account": "alice", "login": "bob", "state": "off",
                          "recovery_codes_left": None})
        self.enabled()
        status = self.successResultOf(self.admin.status("alice"))
        self.assertEqual(render_two_factor(status), "two-factor is on for alice; 10 unused recovery codes")
        self.assertNotIn("secret", json.dumps(status))

    def test_render_setup(self) -> None:
        """The set-up text has the QR code, the URI, the key and every recovery code."""
        setup = self.begin()
        text = render_setup(setup)
        self.assertIn(f"URI: {setup['uri']}", text)
        self.assertIn("█", text)
        for code in setup["recovery_codes"]:
            self.assertIn(f"  {code}\n", text + "\n")
