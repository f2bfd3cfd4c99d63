"""The password checker: argon2id verification and rehashing with current parameters."""
from __future__ import annotations

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.auth.checkers import PasswordChecker
from jangotw.auth.passwords import PasswordHasher
from jangotw.store.memory import MemoryStore
from jangotw.testing import fast_hasher

PASSWORD = "copper lantern orbit meadow"


class RehashTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemoryStore(Clock())
        self.old = fast_hasher()  # weak parameters, as an older release might have stored
        self.current = PasswordHasher()
        self.successResultOf(self.store.add_account("alice", self.old.hash(PASSWORD)))

        def verify(password_hash: str, password: str) -> "Deferred[bool]":
            return succeed(self.current.verify(password_hash, password))

        def rehash(password_hash: str, password: str) -> "Deferred[str | None]":
            return succeed(self.current.hash(password) if self.current.needs_rehash(password_hash) else None)

        self.checker = PasswordChecker(self.store, verify, rehash)

    def stored(self) -> str:
        account = self.successResultOf(self.store.get_account("alice"))
        assert account is not None and account.password_hash is not None
        return account.password_hash

    def test_login_upgrades_an_outdated_hash(self) -> None:
        """A successful login stores a hash with the current argon2 parameters; it still verifies."""
        self.assertTrue(self.current.needs_rehash(self.stored()))
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(UsernamePassword("alice", PASSWORD))),
                         "alice")
        self.assertFalse(self.current.needs_rehash(self.stored()))
        self.assertTrue(self.current.verify(self.stored(), PASSWORD))

    def test_failed_login_changes_nothing(self) -> None:
        before = self.stored()
        self.failureResultOf(self.checker.requestAvatarId(UsernamePassword("alice", "wrong")), UnauthorizedLogin)
        self.assertEqual(self.stored(), before)
