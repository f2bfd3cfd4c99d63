"""The SPF evaluator (RFC 7208) against an in-memory authority: results, limits, macros."""
from __future__ import annotations

from typing import Any

from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from jangotw.senders.dns import Lookups
from jangotw.senders.spf import LookupCount, SPFChecker, SPFOutcome, SPFResult
from tests.support.dns import SERVFAIL, ZoneAuthority, a, aaaa, cname, mx, txt

PASS, FAIL, SOFTFAIL, NEUTRAL = SPFResult.PASS, SPFResult.FAIL, SPFResult.SOFTFAIL, SPFResult.NEUTRAL
NONE, PERMERROR, TEMPERROR = SPFResult.NONE, SPFResult.PERMERROR, SPFResult.TEMPERROR


def ptr(name: str) -> dns.Record_PTR:
    return dns.Record_PTR(name.encode(), ttl=60)


ZONES: dict[str, dict[str, Any]] = {
    "example.test": {
        "example.test": [txt("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.partner.test -all")],
        "soft.example.test": [txt("v=spf1 a ~all")],
        "a.example.test": [txt("v=spf1 a/24 -all"), a("127.0.0.9")],
        "mx.example.test": [txt("v=spf1 mx -all"), mx(10, "mail.example.test")],
        "mail.example.test": [a("127.0.0.25"), aaaa("::1")],
        "other.example.test": [txt("some other text"), txt("v=spf1 a:mail.example.test ?all")],
        "twice.example.test": [txt("v=spf1 -all"), txt("v=spf1 +all")],
        "bad.example.test": [txt("v=spf1 ip4:192.0.2.300 -all")],
        "unknown.example.test": [txt("v=spf1 foo:bar -all")],
        "redirect.example.test": [txt("v=spf1 redirect=example.test")],
        "redirect-nothing.example.test": [txt("v=spf1 redirect=nothing.test")],
        "neutral.example.test": [txt("v=spf1 ip4:198.51.100.1")],
        "exists.example.test": [txt("v=spf1 exists:%{i}._ip.%{d} -all")],
        "127.0.0.8._ip.exists.example.test": [a("127.0.0.2")],
        "macro.example.test": [txt("v=spf1 include:%{l1r-}.users.%{d2} -all")],
        "jo.users.example.test": [txt("v=spf1 ip4:203.0.113.5 -all")],
        "ptr.example.test": [txt("v=spf1 ptr -all")],
        "host.ptr.example.test": [a("127.0.0.44")],
        "loop.example.test": [txt("v=spf1 include:loop.example.test -all")],
        "voids.example.test": [txt("v=spf1 a:n1.example.test a:n2.example.test a:n3.example.test -all")],
        "tempfail.example.test": [txt("v=spf1 include:broken.test -all")],
        "alias.example.test": [cname("example.test")],
        "many.example.test": [txt("v=spf1 " + " ".join(f"include:i{n}.example.test" for n in range(11)) + " -all")],
        **{f"i{n}.example.test": [txt("v=spf1 ?all" if n < 10 else "v=spf1 +all")] for n in range(11)},
        "nested.example.test": [txt("v=spf1 include:many.example.test a mx ptr exists:x.example.test "
                                    "redirect=example.test")],
    },
    "partner.test": {"_spf.partner.test": [txt("v=spf1 ip4:198.51.100.0/24 ~all")]},
    "broken.test": {"broken.test": SERVFAIL},
    "in-addr.arpa": {"44.0.0.127.in-addr.arpa": [ptr("host.ptr.example.test")],
                     "45.0.0.127.in-addr.arpa": [ptr("host.elsewhere.test")]},
}


class SPFTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.authority = ZoneAuthority(ZONES)
        self.checker = SPFChecker(Lookups(self.authority))

    def check(self, ip: str, domain: str, sender: str = "") -> SPFOutcome:
        outcome: SPFOutcome = self.successResultOf(self.checker.check_host(ip, domain, sender or f"ann@{domain}"))
        return outcome

    def result(self, ip: str, domain: str, sender: str = "") -> SPFResult:
        return self.check(ip, domain, sender).result

    def test_ip_mechanisms_and_include(self) -> None:
        """ip4 and ip6 ranges match; an include passes only on the included record's pass."""
        outcome = self.check("192.0.2.77", "example.test")
        self.assertEqual((outcome.result, outcome.mechanism, outcome.lookups), (PASS, "ip4:192.0.2.0/24", 0))
        self.assertEqual(self.result("2001:db8::5", "example.test"), PASS)
        self.assertEqual(self.result("::ffff:192.0.2.9", "example.test"), PASS)  # IPv4-mapped is IPv4
        self.assertEqual(self.result("203.0.113.1", "example.test"), FAIL)
        included = self.check("198.51.100.7", "example.test")
        self.assertEqual((included.result, included.mechanism, included.lookups),
                         (PASS, "include:_spf.partner.test", 1))
        include_softfail = self.check("198.51.101.7", "example.test")  # ~all inside the include: no match
        self.assertEqual((include_softfail.result, include_softfail.mechanism, include_softfail.lookups),
                         (FAIL, "-all", 1))
        self.assertEqual(self.check("203.0.113.1", "example.test").record,
                         "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.partner.test -all")

    def test_a_and_mx(self) -> None:
        """a and mx match the client against the addresses, with prefix lengths."""
        self.assertEqual(self.result("127.0.0.200", "a.example.test"), PASS)  # a/24
        self.assertEqual(self.result("127.0.1.9", "a.example.test"), FAIL)
        self.assertEqual(self.result("127.0.0.25", "mx.example.test"), PASS)
        self.assertEqual(self.result("::1", "mx.example.test"), PASS)
        self.assertEqual(self.result("127.0.0.26", "mx.example.test"), FAIL)
        self.assertEqual(self.result("127.0.0.1", "soft.example.test"), SOFTFAIL)  # no A record: void, ~all

    def test_record_selection(self) -> None:
        """Only v=spf1 records count; none is "none", two are a permerror."""
        self.assertEqual(self.result("127.0.0.25", "other.example.test"), PASS)
        self.assertEqual(self.result("127.0.0.1", "other.example.test"), NEUTRAL)
        self.assertEqual(self.result("127.0.0.1", "nothing.test"), NONE)
        self.assertEqual(self.result("127.0.0.1", "mail.example.test"), NONE)
        self.assertEqual(self.result("127.0.0.1", "localhost"), NONE)  # not a multi-label name
        twice = self.check("127.0.0.1", "twice.example.test")
        self.assertEqual(twice.result, PERMERROR)
        self.assertIn("2 SPF records", twice.reason)

    def test_syntax_errors_are_permerrors(self) -> None:
        """A syntax error anywhere in the record is a permerror, even after a matching term."""
        self.assertEqual(self.result("127.0.0.1", "bad.example.test"), PERMERROR)
        unknown = self.check("127.0.0.1", "unknown.example.test")
        self.assertEqual(unknown.result, PERMERROR)
        self.assertIn("unknown mechanism 'foo:bar'", unknown.reason)

    def test_redirect(self) -> None:
        """redirect= evaluates the target's record; a target without one is a permerror."""
        self.assertEqual(self.result("192.0.2.1", "redirect.example.test"), PASS)
        self.assertEqual(self.result("10.0.0.1", "redirect.example.test"), FAIL)
        self.assertEqual(self.result("192.0.2.1", "redirect-nothing.example.test"), PERMERROR)
        self.assertEqual(self.result("192.0.2.1", "neutral.example.test"), NEUTRAL)  # no match, no all

    def test_macros(self) -> None:
        """%{i} and %{d} in exists:, %{l1r-} and %{d2} in include: expand as section 7 says."""
        self.assertEqual(self.result("127.0.0.8", "exists.example.test"), PASS)
        self.assertEqual(self.result("127.0.0.9", "exists.example.test"), FAIL)
        self.assertEqual(self.result("203.0.113.5", "macro.example.test", "jo-ann@macro.example.test"), PASS)
        self.assertIn(("jo.users.example.test", dns.TXT), self.authority.queries)

    def test_ptr(self) -> None:
        """ptr matches a validated name (its address is the client's) within the domain."""
        self.assertEqual(self.result("127.0.0.44", "ptr.example.test"), PASS)
        self.assertEqual(self.result("127.0.0.45", "ptr.example.test"), FAIL)

    def test_lookup_limit(self) -> None:
        """The eleventh DNS-querying term is a permerror (RFC 7208 4.6.4)."""
        outcome = self.check("203.0.113.9", "many.example.test")
        self.assertEqual((outcome.result, outcome.lookups), (PERMERROR, 11))
        self.assertIn("more than 10 DNS lookups", outcome.reason)

    def test_void_lookup_limit(self) -> None:
        """A third lookup that finds nothing is a permerror."""
        outcome = self.check("127.0.0.1", "voids.example.test")
        self.assertEqual((outcome.result, outcome.void_lookups), (PERMERROR, 3))
        self.assertIn("void lookups", outcome.reason)

    def test_include_loop(self) -> None:
        self.assertEqual(self.result("127.0.0.1", "loop.example.test"), PERMERROR)

    def test_dns_failure_is_temperror(self) -> None:
        outcome = self.check("127.0.0.1", "tempfail.example.test")
        self.assertEqual(outcome.result, TEMPERROR)
        self.assertIn("broken.test", outcome.reason)
        self.assertEqual(self.result("127.0.0.1", "broken.test"), TEMPERROR)

    def test_cname_followed(self) -> None:
        self.assertEqual(self.result("192.0.2.1", "alias.example.test"), PASS)

    def test_lookup_count(self) -> None:
        """The worst-case count follows includes and redirects, and names what it cannot follow."""
        count = self.successResultOf(self.checker.lookup_count("example.test"))
        self.assertEqual(count, LookupCount(1))
        self.assertEqual(self.successResultOf(self.checker.lookup_count("many.example.test")), LookupCount(11))
        nested = self.successResultOf(self.checker.lookup_count("nested.example.test"))
        self.assertEqual(nested.lookups, 1 + 11 + 4 + 1 + 1)  # include (11), a mx ptr exists, redirect (+1)
        macro = self.successResultOf(self.checker.lookup_count("macro.example.test"))
        self.assertEqual((macro.lookups, len(macro.uncounted)), (1, 1))
        self.assertIn("macro", macro.uncounted[0])
        self.assertEqual(self.successResultOf(self.checker.lookup_count("loop.example.test")).lookups, 1)
