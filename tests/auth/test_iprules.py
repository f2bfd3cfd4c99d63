"""Login IP rules: ranges, IPv4-mapped clients, and the account AND login rule."""
from __future__ import annotations

from ipaddress import ip_address

from twisted.trial.unittest import SynchronousTestCase

from jangotw.auth.iprules import allowed, contains, parse_range
from jangotw.errors import InputError
from jangotw.model import PRIMARY, IPRule


def rule(text: str, login: str = PRIMARY, scopes: str = "smtp,api") -> IPRule:
    first, last = parse_range(text)
    return IPRule("alice", login, first, last, frozenset(scopes.split(",")))


class ParseRangeTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse_range("192.0.2.7"), ("192.0.2.7", "192.0.2.7"))
        self.assertEqual(parse_range(" 192.0.2.0/24 "), ("192.0.2.0", "192.0.2.255"))
        self.assertEqual(parse_range("192.0.2.9/24"), ("192.0.2.0", "192.0.2.255"))  # host bits ignored
        self.assertEqual(parse_range("192.0.2.10 - 192.0.2.20"), ("192.0.2.10", "192.0.2.20"))
        self.assertEqual(parse_range("2001:db8::/32"), ("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"))
        self.assertEqual(parse_range("::1"), ("::1", "::1"))
        self.assertEqual(parse_range("2001:db8::1-2001:db8::ff"), ("2001:db8::1", "2001:db8::ff"))

    def test_ipv4_mapped_forms_become_ipv4(self) -> None:
        self.assertEqual(parse_range("::ffff:192.0.2.7"), ("192.0.2.7", "192.0.2.7"))
        self.assertEqual(parse_range("::ffff:192.0.2.1-::ffff:192.0.2.9"), ("192.0.2.1", "192.0.2.9"))
        self.assertEqual(parse_range("::ffff:192.0.2.0/120"), ("192.0.2.0", "192.0.2.255"))
        self.assertEqual(parse_range("::/0"), ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))

    def test_refusals_say_why(self) -> None:
        for text, why in [("192.0.2", "not an IP address"), ("192.0.2.0/33", "not a CIDR"),
                          ("192.0.2.1-2001:db8::1", "mixes"), ("192.0.2.9-192.0.2.1", "ends before"),
                          ("", "not an IP address"), ("192.0.2.1-", "not an IP address")]:
            with self.assertRaises(InputError, msg=text) as raised:
                parse_range(text)
            self.assertIn(why, str(raised.exception))


class ContainsTests(SynchronousTestCase):
    def test_inclusive_bounds(self) -> None:
        span = rule("192.0.2.10-192.0.2.20")
        for text, inside in [("192.0.2.9", False), ("192.0.2.10", True), ("192.0.2.20", True), ("192.0.2.21", False)]:
            self.assertEqual(contains(span, ip_address(text)), inside, text)

    def test_families(self) -> None:
        self.assertTrue(contains(rule("::1"), ip_address("::1")))
        self.assertFalse(contains(rule("::1"), ip_address("127.0.0.1")))
        self.assertFalse(contains(rule("0.0.0.0/0"), ip_address("::1")))
        self.assertFalse(contains(rule("::/0"), ip_address("127.0.0.1")))

    def test_ipv4_mapped_client(self) -> None:
        """A client on an IPv6 socket is ::ffff:a.b.c.d: IPv4 rules see a.b.c.d, IPv6 rules the IPv6 form."""
        mapped = ip_address("::ffff:127.0.0.1")
        self.assertTrue(contains(rule("127.0.0.1"), mapped))
        self.assertTrue(contains(rule("127.0.0.0/8"), mapped))
        self.assertFalse(contains(rule("127.0.0.2"), mapped))
        self.assertTrue(contains(rule("::/0"), mapped))
        self.assertTrue(contains(rule("::ffff:127.0.0.1"), ip_address("127.0.0.1")))


class AllowedTests(SynchronousTestCase):
    here = ip_address("192.0.2.10")

    def test_no_rules_no_restriction(self) -> None:
        self.assertTrue(allowed([], self.here, "smtp"))

    def test_rules_of_another_scope_do_not_apply(self) -> None:
        self.assertTrue(allowed([rule("198.51.100.1", scopes="api")], self.here, "smtp"))
        self.assertFalse(allowed([rule("198.51.100.1", scopes="api")], self.here, "api"))

    def test_any_rule_of_a_login_suffices(self) -> None:
        rules = [rule("198.51.100.1"), rule("192.0.2.0/24")]
        self.assertTrue(allowed(rules, self.here, "smtp"))

    def test_account_and_login_rules_must_both_allow(self) -> None:
        account, sales = rule("192.0.2.0/24"), rule("192.0.2.10", login="sales")
        self.assertTrue(allowed([account, sales], self.here, "smtp"))
        self.assertFalse(allowed([account, sales], ip_address("192.0.2.11"), "smtp"))
        self.assertFalse(allowed([account, rule("198.51.100.1", login="Sales")], self.here, "smtp"))

    def test_login_names_compare_ignoring_case(self) -> None:
        rules = [rule("192.0.2.10", login="Sales"), rule("192.0.2.0/24", login="sales")]
        self.assertTrue(allowed(rules, self.here, "smtp"))
        self.assertTrue(allowed(rules, ip_address("192.0.2.11"), "smtp"))
