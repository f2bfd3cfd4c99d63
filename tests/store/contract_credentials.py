"""The behaviour every L{ICredentialStore} shares, written once and run against each store that keeps
logins, API tokens, login IP rules and two-factor state.

A test case mixes in L{CredentialStoreContractMixin} and defines C{make_store()},
which fires with a fresh, empty store providing L{IStore} and
L{ICredentialStore}, telling the time by C{self.clock}, and registers a cleanup
that closes it. Everything goes through the interface.
"""
from __future__ import annotations

from typing import Any

from twisted.internet.defer import gatherResults
from zope.interface.verify import verifyObject

from jangotw.interfaces import ICredentialStore, IFailureStore, IStore
from jangotw.model import PRIMARY, ApiToken, IPRule, Login, TwoFactor

from .contract import StoreFixtures

__all__ = ["CredentialStoreContractMixin"]

_RACERS = 20  # concurrent calls in the atomicity tests


def _token(token_id: str, account: str = "alice", login: str = PRIMARY, created: float = 1000.0,
           **changes: Any) -> ApiToken:
    values: dict[str, Any] = {"scopes": frozenset({"smtp"}), "label": f"for {token_id}",
                              "secret_hash": f"sha256-of-{token_id}"}
    values.update(changes)
    return ApiToken(id=token_id, account=account, login=login, created=created, **values)


def _rule(first: str, login: str = PRIMARY, account: str = "alice", scopes: tuple[str, ...] = ("smtp",),
          last: str | None = None) -> IPRule:
    return IPRule(account, login, first, last or first, frozenset(scopes))


def _two_factor(login: str = PRIMARY, account: str = "alice", **changes: Any) -> TwoFactor:
    values: dict[str, Any] = {"secret": "JBSWY3DPEHPK3PXP", "enabled": True,
                              "recovery_hashes": frozenset({"hash-one", "hash-two"})}
    values.update(changes)
    return TwoFactor(account, login, **values)


class CredentialStoreContractMixin(StoreFixtures):
    """Tests of the L{ICredentialStore} contract; the concrete test case supplies C{make_store}."""

    def setUp(self) -> None:
        super().setUp()
        self.clock.advance(1000.0)

    async def store_with_logins(self, *logins: str) -> Any:
        """A fresh store with account "Alice" (and "bob"), and Alice's additional C{logins}."""
        store = await self.store_with("Alice", "bob")
        for name in logins:
            await store.add_login(Login("alice", name))
        return store

    # -- interface ---------------------------------------------------------------------

    async def test_provides_credential_interface(self) -> None:
        """The store provides ICredentialStore with the declared signatures; IStore does not include it."""
        store = await self.make_store()
        self.assertTrue(verifyObject(ICredentialStore, store))
        self.assertFalse(IStore.isOrExtends(ICredentialStore))

    # -- logins ------------------------------------------------------------------------

    async def test_add_then_get_login(self) -> None:
        """An added login carries the account's stored name and the store's time, and reads back the same."""
        store = await self.store_with("Alice")
        added = await store.add_login(Login("ALICE", "Ops Team", frozenset({"relay", "reports"}), created=5.0,
                                            password_hash="$argon2id$ops"))
        expected = Login("Alice", "Ops Team", frozenset({"relay", "reports"}), 1000.0, False, "$argon2id$ops")
        self.assertEqual(added, expected)
        self.assertEqual(await store.get_login("alice", "ops team"), expected)
        self.assertEqual(await store.get_login("alice", "OPS TEAM"), expected)

    async def test_get_unknown_login_is_none(self) -> None:
        """A login the account does not have, and PRIMARY (not an additional login), read as None."""
        store = await self.store_with_logins("ops")
        self.assertIsNone(await store.get_login("alice", "dev"))
        self.assertIsNone(await store.get_login("alice", PRIMARY))
        self.assertIsNone(await store.get_login("bob", "ops"))

    async def test_logins_ordered_by_name_ignoring_case(self) -> None:
        """list_logins gives the account's logins (only its own) by name ignoring case, spelling kept."""
        store = await self.store_with_logins("carol", "Alpha", "beta")
        await store.add_login(Login("bob", "aaron"))
        self.assertEqual([login.name for login in await store.list_logins("ALICE")], ["Alpha", "beta", "carol"])
        self.assertEqual([login.account for login in await store.list_logins("alice")], ["Alice"] * 3)
        self.assertEqual([login.name for login in await store.list_logins("bob")], ["aaron"])

    async def test_duplicate_login_refused(self) -> None:
        """A second login of the same name in any case fails with InputError naming it; nothing changes."""
        store = await self.store_with_logins("Ops")
        message = await self.assert_input_error(store.add_login(Login("alice", "OPS", frozenset({"api"}))))
        self.assertIn("Ops", message)
        self.assertEqual([(login.name, login.capabilities) for login in await store.list_logins("alice")],
                         [("Ops", Login("a", "b").capabilities)])

    async def test_same_login_name_in_two_accounts(self) -> None:
        """Each account has its own logins: the same name may be used by both."""
        store = await self.store_with_logins("ops")
        await store.add_login(Login("bob", "OPS", frozenset({"api"})))
        bobs = await store.get_login("bob", "ops")
        assert bobs is not None
        self.assertEqual((bobs.account, bobs.name, bobs.capabilities), ("bob", "OPS", frozenset({"api"})))
        await store.delete_login("bob", "ops")
        self.assertIsNotNone(await store.get_login("alice", "ops"))

    async def test_primary_is_not_an_additional_login(self) -> None:
        """PRIMARY names the account itself: it cannot be added, changed or deleted as a login."""
        store = await self.store_with("alice")
        await self.assert_input_error(store.add_login(Login("alice", PRIMARY)))
        await self.assert_input_error(store.update_login("alice", PRIMARY, disabled=True))
        await self.assert_input_error(store.delete_login("alice", PRIMARY))
        self.assertEqual(await store.list_logins("alice"), [])

    async def test_update_login_each_field_separately(self) -> None:
        """update_login changes only what it is given and fires with the login as it now is."""
        store = await self.store_with("alice")
        await store.add_login(Login("alice", "Ops", frozenset({"relay"}), password_hash="old"))
        base = Login("alice", "Ops", frozenset({"relay"}), 1000.0, False, "old")
        steps: list[tuple[dict[str, Any], Login]] = [
            ({}, base),
            ({"capabilities": frozenset({"api", "reports"})},
             Login("alice", "Ops", frozenset({"api", "reports"}), 1000.0, False, "old")),
            ({"password_hash": "new"}, Login("alice", "Ops", frozenset({"api", "reports"}), 1000.0, False, "new")),
            ({"disabled": True}, Login("alice", "Ops", frozenset({"api", "reports"}), 1000.0, True, "new")),
            ({"capabilities": frozenset()}, Login("alice", "Ops", frozenset(), 1000.0, True, "new")),
            ({"disabled": False}, Login("alice", "Ops", frozenset(), 1000.0, False, "new")),
        ]
        for changes, expected in steps:
            self.assertEqual(await store.update_login("ALICE", "ops", **changes), expected)
            self.assertEqual(await store.get_login("alice", "Ops"), expected)

    async def test_delete_login_takes_its_credentials(self) -> None:
        """Deleting a login deletes its tokens, IP rules and two-factor state, and nothing of anyone else."""
        store = await self.store_with_logins("Ops", "dev")
        await store.add_login(Login("bob", "ops"))
        await store.add_token(_token("t-account"))
        await store.add_token(_token("t-ops", login="ops"))
        await store.add_token(_token("t-dev", login="dev"))
        await store.add_token(_token("t-bob", account="bob", login="ops"))
        for login in (PRIMARY, "ops", "dev"):
            await store.add_ip_rule(_rule("192.0.2.1", login))
            await store.set_two_factor(_two_factor(login))
        await store.add_ip_rule(_rule("192.0.2.1", "ops", account="bob"))
        await store.set_two_factor(_two_factor("ops", account="bob"))

        deleted = await store.delete_login("alice", "OPS")
        self.assertEqual((deleted.account, deleted.name), ("Alice", "Ops"))
        self.assertIsNone(await store.get_login("alice", "ops"))
        self.assertIsNone(await store.get_token("t-ops"))
        self.assertEqual([token.id for token in await store.list_tokens("alice")], ["t-account", "t-dev"])
        self.assertEqual([rule.login for rule in await store.ip_rules("alice")], [PRIMARY, "dev"])
        self.assertIsNotNone(await store.two_factor("alice", PRIMARY))
        self.assertIsNotNone(await store.two_factor("alice", "dev"))
        self.assertEqual([token.id for token in await store.list_tokens("bob")], ["t-bob"])
        self.assertEqual(len(await store.ip_rules("bob", "ops")), 1)
        self.assertIsNotNone(await store.two_factor("bob", "ops"))

        await store.add_login(Login("alice", "ops"))  # a new login of the same name starts with nothing
        self.assertEqual(await store.ip_rules("alice", "ops"), [])
        self.assertIsNone(await store.two_factor("alice", "ops"))

    async def test_delete_unknown_login_refused(self) -> None:
        """Deleting a login the account does not have fails with InputError naming it."""
        store = await self.store_with_logins("ops")
        self.assertIn("dev", await self.assert_input_error(store.delete_login("alice", "dev")))
        self.assertEqual(len(await store.list_logins("alice")), 1)

    async def test_unknown_account_refused(self) -> None:
        """Every method naming an account that does not exist fails with InputError naming it."""
        store = await self.store_with("alice")
        for deferred in [
            store.add_login(Login("carol", "ops")),
            store.get_login("carol", "ops"),
            store.list_logins("carol"),
            store.update_login("carol", "ops", disabled=True),
            store.delete_login("carol", "ops"),
            store.add_token(_token("t1", account="carol")),
            store.list_tokens("carol"),
            store.add_ip_rule(_rule("192.0.2.1", account="carol")),
            store.remove_ip_rule("carol", PRIMARY, "192.0.2.1", "192.0.2.1"),
            store.ip_rules("carol"),
            store.ip_rules("carol", PRIMARY),
            store.set_two_factor(_two_factor(account="carol")),
            store.two_factor("carol", PRIMARY),
            store.clear_two_factor("carol", PRIMARY),
            store.use_totp_step("carol", PRIMARY, 10),
            store.use_recovery_code("carol", PRIMARY, "hash-one"),
        ]:
            self.assertIn("carol", await self.assert_input_error(deferred))

    async def test_unknown_login_refused(self) -> None:
        """Every method naming a login the account does not have fails with InputError naming it."""
        store = await self.store_with_logins("ops")
        await store.add_login(Login("bob", "ghost"))
        for deferred in [
            store.update_login("alice", "ghost", disabled=True),
            store.delete_login("alice", "ghost"),
            store.add_token(_token("t1", login="ghost")),
            store.add_ip_rule(_rule("192.0.2.1", "ghost")),
            store.remove_ip_rule("alice", "ghost", "192.0.2.1", "192.0.2.1"),
            store.ip_rules("alice", "ghost"),
            store.set_two_factor(_two_factor("ghost")),
            store.two_factor("alice", "ghost"),
            store.clear_two_factor("alice", "ghost"),
            store.use_totp_step("alice", "ghost", 10),
            store.use_recovery_code("alice", "ghost", "hash-one"),
        ]:
            self.assertIn("ghost", await self.assert_input_error(deferred))
        self.assertEqual(await store.list_tokens("alice"), [])
        self.assertEqual(await store.ip_rules("alice"), [])

    # -- API tokens --------------------------------------------------------------------

    async def test_add_then_get_token(self) -> None:
        """A token reads back exactly, by its exact id, with the stored spellings of account and login."""
        store = await self.store_with_logins("Ops")
        token = ApiToken(id="0123456789ab", account="ALICE", login="ops", scopes=frozenset({"smtp", "api"}),
                         label="shop", created=1000.25, secret_hash="9f" * 32, expires=1_700_000_000.1)
        expected = ApiToken(id="0123456789ab", account="Alice", login="Ops", scopes=frozenset({"smtp", "api"}),
                            label="shop", created=1000.25, secret_hash="9f" * 32, expires=1_700_000_000.1)
        self.assertEqual(await store.add_token(token), expected)
        found = await store.get_token("0123456789ab")
        self.assertEqual(found, expected)
        assert found is not None
        self.assertEqual(found.secret_hash, "9f" * 32)
        self.assertNotIn("9f" * 32, repr(found))
        self.assertIsNone(await store.get_token("0123456789AB"))
        self.assertIsNone(await store.get_token("0123456789a"))

    async def test_get_unknown_token_is_none(self) -> None:
        """An id no token has reads as None."""
        store = await self.make_store()
        self.assertIsNone(await store.get_token("feedfacecafe"))

    async def test_duplicate_token_id_refused(self) -> None:
        """Token ids are unique across accounts: a second token with an id in use fails with InputError."""
        store = await self.store_with_logins()
        await store.add_token(_token("same", label="first"))
        await self.assert_input_error(store.add_token(_token("same", account="bob")))
        found = await store.get_token("same")
        assert found is not None
        self.assertEqual((found.account, found.label), ("Alice", "first"))
        self.assertEqual(await store.list_tokens("bob"), [])

    async def test_list_tokens_oldest_first(self) -> None:
        """list_tokens gives the account's and its logins' tokens, revoked too, oldest first; no one else's."""
        store = await self.store_with_logins("ops")
        await store.add_token(_token("newest", created=3000.0))
        await store.add_token(_token("oldest", login="ops", created=1000.0))
        await store.add_token(_token("middle", created=2000.0))
        await store.add_token(_token("bobs", account="bob", created=500.0))
        await store.revoke_token("middle", 2500.0)
        self.assertEqual([token.id for token in await store.list_tokens("ALICE")], ["oldest", "middle", "newest"])
        self.assertEqual([token.revoked for token in await store.list_tokens("alice")], [0.0, 2500.0, 0.0])
        self.assertEqual([token.id for token in await store.list_tokens("bob")], ["bobs"])

    async def test_revoke_keeps_first_time(self) -> None:
        """Revoking marks the token; revoking again fires with it unchanged, first time kept."""
        store = await self.store_with_logins()
        await store.add_token(_token("t1"))
        revoked = await store.revoke_token("t1", 1500.5)
        self.assertEqual(revoked, _token("t1", account="Alice", revoked=1500.5))
        self.assertEqual(await store.revoke_token("t1", 1600.0), revoked)
        self.assertEqual(await store.get_token("t1"), revoked)

    async def test_revoke_unknown_token_refused(self) -> None:
        """Revoking an id no token has fails with InputError naming it."""
        store = await self.make_store()
        self.assertIn("nosuchtoken", await self.assert_input_error(store.revoke_token("nosuchtoken", 1.0)))

    async def test_touch_token(self) -> None:
        """touch_token records the time of use; an unknown id is ignored and creates nothing."""
        store = await self.store_with_logins()
        await store.add_token(_token("t1"))
        await store.touch_token("t1", 1234.5)
        found = await store.get_token("t1")
        assert found is not None
        self.assertEqual(found.last_used, 1234.5)
        await store.touch_token("t1", 1300.0)
        self.assertEqual(await store.get_token("t1"), _token("t1", account="Alice", last_used=1300.0))
        await store.touch_token("unknown", 1300.0)
        self.assertIsNone(await store.get_token("unknown"))

    # -- login IP rules ----------------------------------------------------------------

    async def test_add_ip_rule(self) -> None:
        """A new rule fires True and is listed with stored spellings and the store's time."""
        store = await self.store_with_logins("Ops")
        self.assertTrue(await store.add_ip_rule(_rule("192.0.2.0", "OPS", account="ALICE", scopes=("smtp", "api"),
                                                      last="192.0.2.255")))
        self.assertEqual(await store.ip_rules("alice", "ops"),
                         [IPRule("Alice", "Ops", "192.0.2.0", "192.0.2.255", frozenset({"smtp", "api"}), 1000.0)])

    async def test_same_range_replaces_scopes(self) -> None:
        """Adding a rule for a range the login has fires False and replaces only its scopes, in place."""
        store = await self.store_with_logins("ops")
        await store.add_ip_rule(_rule("192.0.2.1", "ops"))
        await store.add_ip_rule(_rule("2001:db8::1", "ops"))
        self.clock.advance(10)
        self.assertFalse(await store.add_ip_rule(_rule("192.0.2.1", "ops", scopes=("api",))))
        self.assertEqual([(rule.first, rule.scopes, rule.created) for rule in await store.ip_rules("alice", "ops")],
                         [("192.0.2.1", frozenset({"api"}), 1000.0), ("2001:db8::1", frozenset({"smtp"}), 1000.0)])

    async def test_remove_ip_rule(self) -> None:
        """Removing a rule fires with whether the login had it; other rules stay."""
        store = await self.store_with_logins("ops")
        await store.add_ip_rule(_rule("192.0.2.1", "ops"))
        await store.add_ip_rule(_rule("192.0.2.2", "ops"))
        self.assertTrue(await store.remove_ip_rule("alice", "OPS", "192.0.2.1", "192.0.2.1"))
        self.assertFalse(await store.remove_ip_rule("alice", "ops", "192.0.2.1", "192.0.2.1"))
        self.assertFalse(await store.remove_ip_rule("alice", "ops", "192.0.2.2", "192.0.2.9"))
        self.assertEqual([rule.first for rule in await store.ip_rules("alice", "ops")], ["192.0.2.2"])

    async def test_primary_and_login_rules_kept_apart(self) -> None:
        """The account's rules and a login's are separate, even for the same range."""
        store = await self.store_with_logins("ops")
        self.assertTrue(await store.add_ip_rule(_rule("192.0.2.1")))
        self.assertTrue(await store.add_ip_rule(_rule("192.0.2.1", "ops", scopes=("api",))))
        self.assertEqual([(rule.login, rule.scopes) for rule in await store.ip_rules("alice", PRIMARY)],
                         [(PRIMARY, frozenset({"smtp"}))])
        self.assertTrue(await store.remove_ip_rule("alice", PRIMARY, "192.0.2.1", "192.0.2.1"))
        self.assertEqual(await store.ip_rules("alice", PRIMARY), [])
        self.assertEqual([(rule.login, rule.scopes) for rule in await store.ip_rules("alice", "ops")],
                         [("ops", frozenset({"api"}))])
        self.assertEqual(await store.ip_rules("bob"), [])

    async def test_all_rules_by_login_then_insertion(self) -> None:
        """ip_rules(account, None): the account's own first, then each login by name ignoring case,
        each login's rules in the order they were added."""
        store = await self.store_with_logins("Zed", "alpha")
        for first, login in [("192.0.2.9", "zed"), ("192.0.2.5", PRIMARY), ("192.0.2.3", "alpha"),
                             ("192.0.2.1", "Zed"), ("10.0.0.1", PRIMARY), ("2001:db8::1", "ALPHA")]:
            await store.add_ip_rule(_rule(first, login))
        await store.add_ip_rule(_rule("192.0.2.7", account="bob"))
        self.assertEqual([(rule.login, rule.first) for rule in await store.ip_rules("alice")],
                         [(PRIMARY, "192.0.2.5"), (PRIMARY, "10.0.0.1"), ("alpha", "192.0.2.3"),
                          ("alpha", "2001:db8::1"), ("Zed", "192.0.2.9"), ("Zed", "192.0.2.1")])
        self.assertEqual([rule.first for rule in await store.ip_rules("alice", "zed")], ["192.0.2.9", "192.0.2.1"])

    # -- two-factor --------------------------------------------------------------------

    async def test_two_factor_set_get_clear(self) -> None:
        """Two-factor state is stored, replaced and cleared per login; clearing fires with whether it was set."""
        store = await self.store_with_logins("Ops")
        self.assertIsNone(await store.two_factor("alice", "ops"))
        await store.set_two_factor(_two_factor("OPS", account="ALICE", enabled=False, last_step=7))
        self.assertEqual(await store.two_factor("alice", "ops"),
                         _two_factor("Ops", account="Alice", enabled=False, last_step=7))
        replaced = _two_factor("Ops", account="Alice", secret="NEWSECRET234", recovery_hashes=frozenset({"h"}))
        await store.set_two_factor(replaced)
        self.assertEqual(await store.two_factor("ALICE", "ops"), replaced)
        self.assertIsNone(await store.two_factor("alice", PRIMARY))
        self.assertTrue(await store.clear_two_factor("alice", "ops"))
        self.assertFalse(await store.clear_two_factor("alice", "ops"))
        self.assertIsNone(await store.two_factor("alice", "ops"))

    async def test_two_factor_kept_per_login(self) -> None:
        """The account's own two-factor state and a login's are separate."""
        store = await self.store_with_logins("ops")
        await store.set_two_factor(_two_factor(secret="PRIMARYSECRET"))
        await store.set_two_factor(_two_factor("ops", secret="OPSSECRET"))
        self.assertTrue(await store.use_totp_step("alice", PRIMARY, 10))
        self.assertTrue(await store.use_totp_step("alice", "ops", 10))
        self.assertTrue(await store.clear_two_factor("alice", PRIMARY))
        state = await store.two_factor("alice", "ops")
        assert state is not None
        self.assertEqual((state.secret, state.last_step), ("OPSSECRET", 10))

    async def test_totp_steps_only_move_forward(self) -> None:
        """A step is accepted once, and only if newer than the last accepted one."""
        store = await self.store_with_logins()
        await store.set_two_factor(_two_factor())
        self.assertTrue(await store.use_totp_step("alice", PRIMARY, 10))
        self.assertFalse(await store.use_totp_step("alice", PRIMARY, 10))
        self.assertFalse(await store.use_totp_step("alice", PRIMARY, 9))
        self.assertTrue(await store.use_totp_step("ALICE", PRIMARY, 11))
        state = await store.two_factor("alice", PRIMARY)
        assert state is not None
        self.assertEqual(state.last_step, 11)

    async def test_totp_without_state_is_refused(self) -> None:
        """Without two-factor state no step is accepted, and none is recorded."""
        store = await self.store_with_logins("ops")
        self.assertFalse(await store.use_totp_step("alice", PRIMARY, 10))
        self.assertFalse(await store.use_totp_step("alice", "ops", 10))
        self.assertIsNone(await store.two_factor("alice", "ops"))

    async def test_recovery_code_used_once(self) -> None:
        """A recovery code hash is used once: it is removed and the others stay."""
        store = await self.store_with_logins("ops")
        await store.set_two_factor(_two_factor("ops"))
        self.assertTrue(await store.use_recovery_code("alice", "ops", "hash-one"))
        self.assertFalse(await store.use_recovery_code("alice", "ops", "hash-one"))
        self.assertFalse(await store.use_recovery_code("alice", "ops", "hash-unknown"))
        state = await store.two_factor("alice", "ops")
        assert state is not None
        self.assertEqual(state.recovery_hashes, frozenset({"hash-two"}))
        self.assertFalse(await store.use_recovery_code("alice", PRIMARY, "hash-two"))

    async def test_concurrent_totp_step_accepted_once(self) -> None:
        """Many uses of one step at once: exactly one is accepted."""
        store = await self.store_with_logins("ops")
        await store.set_two_factor(_two_factor("ops"))
        results = await gatherResults([store.use_totp_step("alice", "ops", 42) for _ in range(_RACERS)],
                                      consumeErrors=True)
        self.assertEqual(sorted(results), [False] * (_RACERS - 1) + [True])

    async def test_concurrent_recovery_code_accepted_once(self) -> None:
        """Many uses of one recovery code at once: exactly one is accepted."""
        store = await self.store_with_logins()
        await store.set_two_factor(_two_factor())
        results = await gatherResults([store.use_recovery_code("alice", PRIMARY, "hash-two")
                                       for _ in range(_RACERS)], consumeErrors=True)
        self.assertEqual(sorted(results), [False] * (_RACERS - 1) + [True])

    # -- failed authentications (IFailureStore) ---------------------------------------

    async def test_failures_count_within_their_window(self) -> None:
        """Each failure counts until its own window ends; keys are independent; clearing forgets a key."""
        store = await self.make_store()
        self.assertTrue(verifyObject(IFailureStore, store))
        self.assertEqual([await store.count_failure("ip:192.0.2.1", at, 300) for at in (100.0, 150.0, 200.0)],
                         [1, 2, 3])
        await store.count_failure("user:alice", 200.0, 300)
        self.assertEqual(await store.recent_failures("ip:192.0.2.1", 399.0), 3)
        self.assertEqual(await store.recent_failures("ip:192.0.2.1", 400.0), 2, "the first stopped counting")
        self.assertEqual(await store.count_failure("ip:192.0.2.1", 460.0, 300), 2)
        self.assertEqual(await store.recent_failures("ip:192.0.2.9", 460.0), 0)
        await store.clear_failures("ip:192.0.2.1")
        self.assertEqual(await store.recent_failures("ip:192.0.2.1", 460.0), 0)
        self.assertEqual(await store.recent_failures("user:alice", 460.0), 1)

    async def test_concurrent_failures_all_count(self) -> None:
        """Failures arriving at once (other nodes, other workers) are all counted."""
        store = await self.make_store()
        counts = await gatherResults([store.count_failure("user:bob", 10.0, 60) for _ in range(20)])
        self.assertEqual(sorted(counts), list(range(1, 21)))
        self.assertEqual(await store.recent_failures("user:bob", 11.0), 20)
