"""The Authenticator: logins, API tokens, two-factor, login IP rules and throttling, on a memory store."""
from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import pyotp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from jangotw.auth.credentials import Secret
from jangotw.auth.iprules import parse_range
from jangotw.auth.passwords import PasswordHasher
from jangotw.auth.principals import (AddressNotAuthorised, Authenticator, BadCredentials, CodeRefused,
                                     NotPermitted, Principal, TooManyFailures, TwoFactorRequired, split_username)
from jangotw.auth.throttle import FailureThrottle
from jangotw.auth.tokens import new_token
from jangotw.auth.totp import STEP_SECONDS, new_recovery_codes, new_secret, recovery_hash
from jangotw.model import CAPABILITIES, PRIMARY, ApiToken, IPRule, Login, TwoFactor
from jangotw.store.memory import MemoryStore
from jangotw.testing import fast_hasher

PASSWORD = "copper lantern orbit meadow"
SALES_PASSWORD = "velvet canyon ladder frost"
OPS_PASSWORD = "amber socket walrus drift"
VIEWER_PASSWORD = "quiet marble engine tulip"
CLIENT = ip_address("192.0.2.10")
ELSEWHERE = ip_address("198.51.100.7")
NOW = 1_700_000_000.0
LIMIT = 3


class AuthenticatorTestCase(SynchronousTestCase):
    """Account alice with logins sales (relay, reports), ops (relay) and viewer (api)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore(self.clock)
        self.hasher = fast_hasher()
        self.verified: list[str] = []  # the hashes verify was asked about
        self.ok(self.store.add_account("alice", self.hasher.hash(PASSWORD)))
        self.login("sales", SALES_PASSWORD, "relay", "reports")
        self.login("ops", OPS_PASSWORD, "relay")
        self.login("viewer", VIEWER_PASSWORD, "api")
        self.authenticator = self.make_authenticator()

    def make_authenticator(self, **changes: Any) -> Authenticator:
        def verify(password_hash: str, password: str) -> "Deferred[bool]":
            self.verified.append(password_hash)
            return succeed(self.hasher.verify(password_hash, password))

        values: dict[str, Any] = dict(accounts=self.store, credentials=self.store, verify=verify,
                                      throttle=FailureThrottle(self.store, self.clock, limit=LIMIT, window=300), clock=self.clock)
        values.update(changes)
        return Authenticator(**values)

    def without_throttle(self) -> None:
        """For tests that fail more often than the throttle allows."""
        self.authenticator = self.make_authenticator(throttle=FailureThrottle(self.store, self.clock, limit=100, window=300))

    def ok(self, deferred: "Deferred[Any]") -> Any:
        return self.successResultOf(deferred)

    def login(self, name: str, password: str, *capabilities: str) -> None:
        self.ok(self.store.add_login(Login("alice", name, frozenset(capabilities),
                                           password_hash=self.hasher.hash(password))))

    def token(self, login: str = PRIMARY, scopes: str = "smtp", expires: float = 0.0) -> tuple[str, str]:
        """(token text, id) of a new token of alice (or of one of her logins)."""
        text, token_id, secret_hash = new_token()
        self.ok(self.store.add_token(ApiToken(token_id, "alice", login, frozenset(scopes.split(",")), "test",
                                              self.clock.seconds(), secret_hash, expires=expires)))
        return text, token_id

    def rule(self, login: str, text: str, scopes: str = "smtp") -> None:
        first, last = parse_range(text)
        self.ok(self.store.add_ip_rule(IPRule("alice", login, first, last, frozenset(scopes.split(",")))))

    def two_factor(self, login: str = PRIMARY, enabled: bool = True) -> tuple[str, list[str]]:
        """(TOTP secret, recovery codes) of two-factor set up for the login."""
        secret, codes = new_secret(), new_recovery_codes()
        self.ok(self.store.set_two_factor(TwoFactor("alice", login, secret, enabled=enabled,
                                                    recovery_hashes=frozenset(map(recovery_hash, codes)))))
        return secret, codes

    def smtp(self, username: str, secret: str, address: Any = CLIENT) -> "Deferred[Principal]":
        return self.authenticator.smtp_login(username, Secret(secret), address)

    def api(self, token: str, address: Any = CLIENT) -> "Deferred[Principal]":
        return self.authenticator.api_token(Secret(token), address)

    def interactive(self, username: str, password: str, code: str | None = None,
                    address: Any = CLIENT) -> "Deferred[Principal]":
        return self.authenticator.interactive_login(username, Secret(password),
                                                    Secret(code) if code is not None else None, address)

    def refused(self, deferred: "Deferred[Any]", kind: type[Exception]) -> Exception:
        return self.failureResultOf(deferred, kind).value  # type: ignore[no-any-return]


class UsernameTests(SynchronousTestCase):
    def test_split_at_the_last_at(self) -> None:
        self.assertEqual(split_username("alice"), ("alice", PRIMARY))
        self.assertEqual(split_username("sales@alice"), ("alice", "sales"))
        self.assertEqual(split_username("bob@corp.example@alice"), ("alice", "bob@corp.example"))


class SMTPLoginTests(AuthenticatorTestCase):
    def test_primary_login_may_do_everything(self) -> None:
        principal = self.ok(self.smtp("alice", PASSWORD))
        self.assertEqual((principal.account.name, principal.login, principal.name, principal.via),
                         ("alice", None, "alice", "password"))
        self.assertEqual(principal.capabilities, frozenset(CAPABILITIES))

    def test_additional_login_is_charged_to_its_account(self) -> None:
        """sales@alice acts as login sales with its own capabilities; the account is alice."""
        principal = self.ok(self.smtp("sales@alice", SALES_PASSWORD))
        self.assertEqual((principal.account.name, principal.login.name, principal.name),  # type: ignore[union-attr]
                         ("alice", "sales", "sales@alice"))
        self.assertEqual(principal.capabilities, frozenset({"relay", "reports"}))

    def test_names_match_ignoring_case(self) -> None:
        self.assertEqual(self.ok(self.smtp("SALES@Alice", SALES_PASSWORD)).name, "sales@alice")

    def test_each_login_has_its_own_password(self) -> None:
        self.refused(self.smtp("sales@alice", PASSWORD), BadCredentials)
        self.refused(self.smtp("alice", SALES_PASSWORD), BadCredentials)

    def test_login_without_relay_refused(self) -> None:
        error = self.refused(self.smtp("viewer@alice", VIEWER_PASSWORD), NotPermitted)
        self.assertIn("lacks the relay capability", str(error))

    def test_deleting_one_login_leaves_the_others_working(self) -> None:
        self.ok(self.store.delete_login("alice", "sales"))
        self.refused(self.smtp("sales@alice", SALES_PASSWORD), BadCredentials)
        self.assertEqual(self.ok(self.smtp("ops@alice", OPS_PASSWORD)).name, "ops@alice")
        self.assertEqual(self.ok(self.smtp("alice", PASSWORD)).name, "alice")

    def test_disabled_login_or_account_refused(self) -> None:
        self.ok(self.store.update_login("alice", "sales", disabled=True))
        self.refused(self.smtp("sales@alice", SALES_PASSWORD), BadCredentials)
        self.ok(self.store.set_disabled("alice", True))
        self.refused(self.smtp("ops@alice", OPS_PASSWORD), BadCredentials)
        self.refused(self.smtp("alice", PASSWORD), BadCredentials)

    def test_unknown_users_cost_a_password_verification(self) -> None:
        """Unknown accounts and logins are verified against a decoy hash: as slow as a wrong password."""
        self.without_throttle()
        for username in ("nobody", "nobody@alice", "@alice", "alice@"):
            self.verified.clear()
            self.refused(self.smtp(username, PASSWORD), BadCredentials)
            self.assertEqual(len(self.verified), 1, username)

    def test_empty_at_names_are_not_the_primary_login(self) -> None:
        self.refused(self.smtp("@alice", PASSWORD), BadCredentials)

    def test_outdated_hashes_are_upgraded(self) -> None:
        """A successful login stores a hash with current argon2 parameters, for the account and for logins."""
        current = PasswordHasher()

        def rehash(password_hash: str, password: str) -> "Deferred[str | None]":
            return succeed(current.hash(password) if current.needs_rehash(password_hash) else None)

        self.authenticator = self.make_authenticator(rehash=rehash)
        self.ok(self.smtp("alice", PASSWORD))
        self.ok(self.smtp("sales@alice", SALES_PASSWORD))
        account = self.ok(self.store.get_account("alice"))
        login = self.ok(self.store.get_login("alice", "sales"))
        for stored, password in ((account.password_hash, PASSWORD), (login.password_hash, SALES_PASSWORD)):
            self.assertFalse(current.needs_rehash(stored))
            self.assertTrue(current.verify(stored, password))

    def test_failed_login_changes_no_hash(self) -> None:
        before = self.ok(self.store.get_account("alice")).password_hash
        self.authenticator = self.make_authenticator(rehash=lambda stored, password: succeed("changed"))
        self.refused(self.smtp("alice", "wrong"), BadCredentials)
        self.assertEqual(self.ok(self.store.get_account("alice")).password_hash, before)

    def test_without_credential_store_only_primary_logins(self) -> None:
        self.authenticator = self.make_authenticator(credentials=None)
        self.assertEqual(self.ok(self.smtp("alice", PASSWORD)).name, "alice")
        self.refused(self.smtp("sales@alice", SALES_PASSWORD), BadCredentials)


class SMTPTokenTests(AuthenticatorTestCase):
    def test_token_as_password(self) -> None:
        """The account's token works as its SMTP password; its use is recorded."""
        text, token_id = self.token()
        self.verified.clear()
        principal = self.ok(self.smtp("alice", text))
        self.assertEqual((principal.name, principal.via), ("alice", f"token {token_id}"))
        self.assertEqual(self.verified, [], "no argon2 for a token")
        self.assertEqual(self.ok(self.store.get_token(token_id)).last_used, NOW)

    def test_token_of_a_login_acts_as_that_login(self) -> None:
        text, _ = self.token("sales")
        self.assertEqual(self.ok(self.smtp("sales@alice", text)).name, "sales@alice")
        principal = self.ok(self.smtp("alice", text))
        self.assertEqual((principal.name, principal.capabilities), ("sales@alice", frozenset({"relay", "reports"})))

    def test_token_must_belong_to_the_named_account_and_login(self) -> None:
        self.without_throttle()
        self.ok(self.store.add_account("bob", self.hasher.hash(PASSWORD)))
        sales, _ = self.token("sales")
        primary, _ = self.token()
        self.refused(self.smtp("ops@alice", sales), BadCredentials)
        self.refused(self.smtp("sales@alice", primary), BadCredentials)
        self.refused(self.smtp("bob", primary), BadCredentials)
        self.refused(self.smtp("nobody", primary), BadCredentials)

    def test_revoked_token_refused_at_once(self) -> None:
        text, token_id = self.token()
        self.ok(self.smtp("alice", text))
        self.ok(self.store.revoke_token(token_id, self.clock.seconds()))
        self.refused(self.smtp("alice", text), BadCredentials)

    def test_expired_token_refused(self) -> None:
        text, _ = self.token(expires=NOW + 90)
        self.clock.advance(89)
        self.ok(self.smtp("alice", text))
        self.clock.advance(1)
        self.refused(self.smtp("alice", text), BadCredentials)

    def test_api_only_token_refused_for_smtp(self) -> None:
        text, _ = self.token(scopes="api")
        error = self.refused(self.smtp("alice", text), BadCredentials)
        self.assertIn("not for smtp", str(error))

    def test_wrong_secret_with_a_real_id_refused(self) -> None:
        text, _ = self.token()
        self.refused(self.smtp("alice", text[:-1] + ("A" if text[-1] != "A" else "B")), BadCredentials)

    def test_token_of_a_login_without_relay_refused(self) -> None:
        text, _ = self.token("viewer")
        self.refused(self.smtp("alice", text), NotPermitted)

    def test_tokens_die_with_their_login(self) -> None:
        text, _ = self.token("sales")
        self.ok(self.store.delete_login("alice", "sales"))
        self.refused(self.smtp("alice", text), BadCredentials)


class TwoFactorSMTPTests(AuthenticatorTestCase):
    def test_password_refused_token_accepted(self) -> None:
        """With two-factor on, SMTP cannot ask for a code: the password is refused, tokens keep working."""
        self.two_factor("sales")
        error = self.refused(self.smtp("sales@alice", SALES_PASSWORD), TwoFactorRequired)
        self.assertIn("two-factor", str(error))
        text, _ = self.token("sales")
        self.assertEqual(self.ok(self.smtp("sales@alice", text)).name, "sales@alice")
        self.assertEqual(self.ok(self.smtp("ops@alice", OPS_PASSWORD)).name, "ops@alice")

    def test_wrong_password_is_still_just_wrong(self) -> None:
        self.two_factor()
        self.refused(self.smtp("alice", "not the password"), BadCredentials)

    def test_pending_two_factor_changes_nothing(self) -> None:
        """Set up but not yet confirmed with a code: not enabled."""
        self.two_factor(enabled=False)
        self.ok(self.smtp("alice", PASSWORD))


class IPRuleTests(AuthenticatorTestCase):
    def test_account_rule_refuses_elsewhere(self) -> None:
        self.rule(PRIMARY, "192.0.2.0/24")
        self.ok(self.smtp("alice", PASSWORD, CLIENT))
        error = self.refused(self.smtp("alice", PASSWORD, ELSEWHERE), AddressNotAuthorised)
        self.assertIn("198.51.100.7 is outside the smtp IP rules of alice", str(error))

    def test_account_rules_bind_every_login(self) -> None:
        self.rule(PRIMARY, "192.0.2.0/24")
        self.refused(self.smtp("sales@alice", SALES_PASSWORD, ELSEWHERE), AddressNotAuthorised)

    def test_login_rules_and_account_rules_both_apply(self) -> None:
        """Credential AND IP: a login's rules narrow what the account's allow."""
        self.rule(PRIMARY, "192.0.2.0/24")
        self.rule("sales", "192.0.2.10")
        self.ok(self.smtp("sales@alice", SALES_PASSWORD, CLIENT))
        self.refused(self.smtp("sales@alice", SALES_PASSWORD, ip_address("192.0.2.11")), AddressNotAuthorised)
        self.ok(self.smtp("ops@alice", OPS_PASSWORD, ip_address("192.0.2.11")))  # another login's rules: not ops'

    def test_rules_are_scoped(self) -> None:
        self.rule(PRIMARY, "192.0.2.0/24", scopes="api")
        self.ok(self.smtp("alice", PASSWORD, ELSEWHERE))
        self.refused(self.interactive("alice", PASSWORD, address=ELSEWHERE), AddressNotAuthorised)

    def test_refused_address_never_has_the_secret_tested(self) -> None:
        self.rule(PRIMARY, "192.0.2.0/24")
        self.verified.clear()
        self.refused(self.smtp("alice", "any guess at all", ELSEWHERE), AddressNotAuthorised)
        self.assertEqual(self.verified, [])

    def test_tokens_follow_the_rules_of_their_login(self) -> None:
        self.rule("sales", "192.0.2.10")
        text, _ = self.token("sales")
        self.ok(self.smtp("alice", text, CLIENT))
        self.refused(self.smtp("alice", text, ELSEWHERE), AddressNotAuthorised)

    def test_ipv6_and_ipv4_mapped_clients(self) -> None:
        """::1 matches an IPv6 rule; a client on an IPv6 socket as ::ffff:192.0.2.10 matches IPv4 rules."""
        self.rule(PRIMARY, "192.0.2.10")
        self.rule(PRIMARY, "::1")
        self.ok(self.smtp("alice", PASSWORD, ip_address("::1")))
        self.ok(self.smtp("alice", PASSWORD, ip_address("::ffff:192.0.2.10")))
        self.refused(self.smtp("alice", PASSWORD, ip_address("::2")), AddressNotAuthorised)
        self.refused(self.smtp("alice", PASSWORD, ip_address("::ffff:192.0.2.11")), AddressNotAuthorised)


class APITokenTests(AuthenticatorTestCase):
    def test_api_token(self) -> None:
        text, token_id = self.token("viewer", scopes="api")
        principal = self.ok(self.api(text))
        self.assertEqual((principal.name, principal.via), ("viewer@alice", f"token {token_id}"))
        self.assertEqual(self.ok(self.store.get_token(token_id)).last_used, NOW)

    def test_smtp_only_token_refused(self) -> None:
        text, _ = self.token(scopes="smtp")
        self.refused(self.api(text), BadCredentials)

    def test_login_without_api_refused(self) -> None:
        text, _ = self.token("sales", scopes="smtp,api")
        self.refused(self.api(text), NotPermitted)

    def test_refused_address_has_the_api_text(self) -> None:
        self.rule(PRIMARY, "192.0.2.0/24", scopes="api")
        text, _ = self.token(scopes="api")
        error = self.refused(self.api(text, ELSEWHERE), AddressNotAuthorised)
        self.assertEqual(error.api_text,  # type: ignore[attr-defined]
                         "UnauthorizedAddressException: The current IP Address (198.51.100.7) "
                         "is not authorized to access the API.")

    def test_not_a_token_refused(self) -> None:
        self.refused(self.api(PASSWORD), BadCredentials)
        self.refused(self.api("jgt_000000000000_" + "a" * 32), BadCredentials)


class InteractiveLoginTests(AuthenticatorTestCase):
    def code(self, secret: str, offset_steps: int = 0) -> str:
        return pyotp.TOTP(secret).at(self.clock.seconds() + offset_steps * STEP_SECONDS)

    def test_password_without_two_factor(self) -> None:
        self.assertEqual(self.ok(self.interactive("viewer@alice", VIEWER_PASSWORD)).name, "viewer@alice")

    def test_never_a_token(self) -> None:
        text, _ = self.token(scopes="smtp,api")
        self.refused(self.interactive("alice", text), BadCredentials)

    def test_login_without_api_refused(self) -> None:
        self.refused(self.interactive("sales@alice", SALES_PASSWORD), NotPermitted)

    def test_code_required_and_accepted_once(self) -> None:
        secret, _ = self.two_factor()
        self.refused(self.interactive("alice", PASSWORD), TwoFactorRequired)
        code = self.code(secret)
        self.assertEqual(self.ok(self.interactive("alice", PASSWORD, code)).name, "alice")
        error = self.refused(self.interactive("alice", PASSWORD, code), CodeRefused)
        self.assertIn("already used", str(error))
        self.clock.advance(STEP_SECONDS)
        self.ok(self.interactive("alice", PASSWORD, self.code(secret)))

    def test_an_older_code_after_a_newer_one_refused(self) -> None:
        """Within the drift window, a code is accepted only if its step is newer than the last accepted."""
        secret, _ = self.two_factor()
        self.ok(self.interactive("alice", PASSWORD, self.code(secret, +1)))
        self.refused(self.interactive("alice", PASSWORD, self.code(secret)), CodeRefused)

    def test_wrong_code_refused(self) -> None:
        secret, _ = self.two_factor()
        self.refused(self.interactive("alice", PASSWORD, self.code(secret, +3)), CodeRefused)
        self.refused(self.interactive("alice", PASSWORD, "not-a-code"), CodeRefused)

    def test_recovery_code_once(self) -> None:
        _, codes = self.two_factor("viewer")
        self.ok(self.interactive("viewer@alice", VIEWER_PASSWORD, codes[0].upper()))
        self.refused(self.interactive("viewer@alice", VIEWER_PASSWORD, codes[0]), CodeRefused)
        self.ok(self.interactive("viewer@alice", VIEWER_PASSWORD, codes[1]))

    def test_wrong_password_never_reaches_the_code(self) -> None:
        secret, _ = self.two_factor()
        self.refused(self.interactive("alice", "wrong", self.code(secret)), BadCredentials)
        self.ok(self.interactive("alice", PASSWORD, self.code(secret)))


class ThrottleTests(AuthenticatorTestCase):
    def test_password_failures_throttle_the_client_ip(self) -> None:
        for username in ("alice", "sales@alice", "nobody"):
            self.refused(self.smtp(username, "wrong"), BadCredentials)
        self.verified.clear()
        self.refused(self.smtp("ops@alice", OPS_PASSWORD), TooManyFailures)
        self.assertEqual(self.verified, [], "a throttled attempt tests nothing")
        self.ok(self.smtp("ops@alice", OPS_PASSWORD, ELSEWHERE))
        self.clock.advance(300)
        self.ok(self.smtp("ops@alice", OPS_PASSWORD))

    def test_failures_throttle_the_user_name_from_any_address(self) -> None:
        for last_byte in range(LIMIT):
            self.refused(self.smtp("Sales@alice", "wrong", ip_address(f"203.0.113.{last_byte}")), BadCredentials)
        self.refused(self.smtp("sales@alice", SALES_PASSWORD), TooManyFailures)
        self.ok(self.smtp("alice", PASSWORD))

    def test_token_failures_are_throttled(self) -> None:
        text, token_id = self.token()
        self.ok(self.store.revoke_token(token_id, NOW))
        for _ in range(LIMIT):
            self.refused(self.smtp("alice", text), BadCredentials)
        fresh, _ = self.token()
        self.refused(self.smtp("alice", fresh), TooManyFailures)

    def test_api_token_failures_are_throttled(self) -> None:
        for _ in range(LIMIT):
            self.refused(self.api("jgt_000000000000_" + "a" * 32), BadCredentials)
        text, _ = self.token(scopes="api")
        self.refused(self.api(text), TooManyFailures)

    def test_smtp_and_api_share_one_throttle(self) -> None:
        for _ in range(LIMIT):
            self.refused(self.interactive("alice", "wrong"), BadCredentials)
        self.refused(self.smtp("alice", PASSWORD), TooManyFailures)

    def test_wrong_codes_count_missing_ones_do_not(self) -> None:
        """A right password with no code (the first step of a two-step login) is no guess; a wrong code is."""
        secret, _ = self.two_factor()
        for _ in range(LIMIT + 1):
            self.refused(self.interactive("alice", PASSWORD), TwoFactorRequired)
        self.refused(self.smtp("alice", PASSWORD), TwoFactorRequired)
        for _ in range(LIMIT):
            self.refused(self.interactive("alice", PASSWORD, "000000"), CodeRefused)
        self.refused(self.interactive("alice", PASSWORD, pyotp.TOTP(secret).at(NOW)), TooManyFailures)

    def test_success_forgets_earlier_failures(self) -> None:
        for _ in range(LIMIT - 1):
            self.refused(self.smtp("alice", "wrong"), BadCredentials)
        self.ok(self.smtp("alice", PASSWORD))
        for _ in range(LIMIT - 1):
            self.refused(self.smtp("alice", "wrong"), BadCredentials)
        self.ok(self.smtp("alice", PASSWORD))


class LoggingTests(AuthenticatorTestCase):
    def test_failures_logged_with_ip_user_and_reason_never_the_secret(self) -> None:
        text, _ = self.token(scopes="api")
        secret, _ = self.two_factor("viewer")
        code = pyotp.TOTP(secret).at(NOW)
        with capturedLogs() as events:
            self.refused(self.smtp("sales@alice", "guess one two"), BadCredentials)
            self.refused(self.smtp("alice", text), BadCredentials)
            self.ok(self.api(text))
            self.ok(self.interactive("viewer@alice", VIEWER_PASSWORD, code))
        lines = [formatEvent(event) for event in events]
        self.assertIn("auth failed 192.0.2.10 sales@alice (smtp): wrong password for sales@alice", lines)
        self.assertIn("auth failed 192.0.2.10 alice (smtp): token", " ".join(lines))
        self.assertIn("authenticated viewer@alice from 192.0.2.10 via password (interactive)", lines)
        everything = repr(events) + " ".join(lines)
        for leaked in ("guess one two", text, text.rpartition("_")[2], VIEWER_PASSWORD, code):
            self.assertNotIn(leaked, everything)
