"""Session tokens of the admin API: signed, stateless, an hour long."""
from __future__ import annotations

import base64
import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.admin.api_session import SESSION_LIFETIME, SessionSigner
from jangotw.auth.principals import Principal
from jangotw.model import Account, Login

KEY = b"k" * 32


def principal(login: Login | None = None) -> Principal:
    return Principal.local(Account(1, "shop"), login)


class SessionSignerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.signer = SessionSigner(KEY, self.clock)

    def test_round_trip(self) -> None:
        token, claims = self.signer.issue(principal(Login("shop", "sales", frozenset({"api", "reports"}))))
        self.assertTrue(token.startswith("jgs_"))
        self.assertEqual(self.signer.verify(token), claims)
        self.assertEqual((claims.account, claims.login, claims.name, claims.capabilities, claims.directory),
                         ("shop", "sales", "sales@shop", frozenset({"api", "reports"}), False))

    def test_expires_after_an_hour(self) -> None:
        """Valid until SESSION_LIFETIME seconds after issue, on the injected clock."""
        token, _ = self.signer.issue(principal())
        self.clock.advance(SESSION_LIFETIME - 1)
        self.assertIsNotNone(self.signer.verify(token))
        self.clock.advance(1)
        self.assertIsNone(self.signer.verify(token))

    def test_another_key_or_a_changed_claim_is_refused(self) -> None:
        token, _ = self.signer.issue(principal())
        self.assertIsNone(SessionSigner(b"x" * 32, self.clock).verify(token))
        payload, _, mac = token[len("jgs_"):].partition(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["a"] = "other"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        self.assertIsNone(self.signer.verify(f"jgs_{forged}.{mac}"))

    def test_garbage_is_refused_quietly(self) -> None:
        for text in ("", "jgs_", "jgs_.", "jgs_e30.", "jgs_!!!.???", "jgs_\u00e9.x", "jgt_abc", "jgs_" + "A" * 5000):
            self.assertIsNone(self.signer.verify(text), text)

    def test_a_signed_but_malformed_claim_is_refused(self) -> None:
        """Claims of the wrong shape are refused even with a good MAC (a key shared with an older format)."""
        payload = base64.urlsafe_b64encode(b'{"a": 1}').rstrip(b"=").decode()
        mac = base64.urlsafe_b64encode(self.signer._mac(payload)).rstrip(b"=").decode()
        self.assertIsNone(self.signer.verify(f"jgs_{payload}.{mac}"))
