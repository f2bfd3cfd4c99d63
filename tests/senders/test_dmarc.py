"""DMARC records, the organisational domain (Public Suffix List) and alignment."""
from __future__ import annotations

from publicsuffixlist import PublicSuffixList
from twisted.trial.unittest import SynchronousTestCase

from jangotw.senders.dmarc import DMARCPolicies, DMARCRecord, Organisations, parse_dmarc
from jangotw.senders.dns import LookupFailed, Lookups
from tests.support.dns import SERVFAIL, ZoneAuthority, txt

ORGANISATIONS = Organisations(PublicSuffixList())


class ParseTests(SynchronousTestCase):
    def test_full_record(self) -> None:
        record = parse_dmarc("v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=r; pct=50; "
                             "rua=mailto:a@example.com,mailto:b@example.net!10m; ruf=mailto:f@example.com; fo=1")
        self.assertEqual(record, DMARCRecord("quarantine", "reject", "s", "r", 50,
                                             ("mailto:a@example.com", "mailto:b@example.net!10m"),
                                             ("mailto:f@example.com",), record.text, True))

    def test_defaults(self) -> None:
        """sp= defaults to p=, alignment to relaxed, pct to 100."""
        record = parse_dmarc("v=DMARC1; p=none")
        self.assertEqual((record.subdomain_policy, record.adkim, record.aspf, record.pct, record.rua,
                          record.subdomain_policy_given), ("none", "r", "r", 100, (), False))

    def test_rua_without_policy_reads_as_none(self) -> None:
        """RFC 7489 6.6.3: no p= but a rua= is p=none."""
        self.assertEqual(parse_dmarc("v=DMARC1; rua=mailto:a@example.com").policy, "none")

    def test_invalid_records(self) -> None:
        for text, why in [("v=DMARC2; p=none", "starts with"), ("p=none; v=DMARC1", "starts with"),
                          ("v=DMARC1", "p= must be"), ("v=DMARC1; p=block", "p= must be"),
                          ("v=DMARC1; p=none; sp=maybe", "sp= must be"), ("v=DMARC1; p=none; adkim=x", "adkim="),
                          ("v=DMARC1; p=none; pct=150", "pct="), ("v=DMARC1; p=none; rua=reports@x.test", "URI"),
                          ("v=DMARC1; p=none; oops", "tag=value")]:
            self.assertIn(why, str(self.assertRaises(ValueError, parse_dmarc, text)), text)


class OrganisationTests(SynchronousTestCase):
    def test_organisational_domain(self) -> None:
        """The registrable domain by the Public Suffix List, including multi-label suffixes."""
        for name, organisation in [("news.example.com", "example.com"), ("example.com", "example.com"),
                                   ("a.b.shop.co.uk", "shop.co.uk"), ("Mail.Example.COM.", "example.com"),
                                   ("co.uk", "co.uk")]:
            self.assertEqual(ORGANISATIONS.domain(name), organisation, name)

    def test_alignment(self) -> None:
        self.assertTrue(ORGANISATIONS.aligned("example.com", "news.example.com"))
        self.assertTrue(ORGANISATIONS.aligned("bounce.example.com", "news.example.com", "r"))
        self.assertFalse(ORGANISATIONS.aligned("example.com", "news.example.com", "s"))
        self.assertTrue(ORGANISATIONS.aligned("Example.com", "example.COM", "s"))
        self.assertFalse(ORGANISATIONS.aligned("example.net", "example.com"))
        self.assertFalse(ORGANISATIONS.aligned("a.co.uk", "b.co.uk"))  # different registrable domains


class DiscoveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policies = DMARCPolicies(Lookups(ZoneAuthority({
            "example.com": {"_dmarc": [txt("v=DMARC1; p=reject; sp=none"), txt("unrelated")],
                            "_dmarc.own": [txt("v=DMARC1; p=quarantine")]},
            "twice.test": {"_dmarc": [txt("v=DMARC1; p=none"), txt("v=DMARC1; p=reject")]},
            "bad.test": {"_dmarc": [txt("v=DMARC1; p=sometimes")]},
            "broken.test": {"_dmarc": SERVFAIL},
        })), ORGANISATIONS)

    def test_own_record_first(self) -> None:
        found = self.successResultOf(self.policies.discover("own.example.com"))
        self.assertEqual((found.name, found.organisational, found.applied_policy),
                         ("_dmarc.own.example.com", False, "quarantine"))

    def test_subdomain_falls_back_to_organisational_sp(self) -> None:
        found = self.successResultOf(self.policies.discover("news.example.com"))
        self.assertEqual((found.name, found.organisational, found.applied_policy),
                         ("_dmarc.example.com", True, "none"))
        self.assertEqual(self.successResultOf(self.policies.discover("example.com")).applied_policy, "reject")

    def test_none_found(self) -> None:
        found = self.successResultOf(self.policies.discover("nothing.test"))
        self.assertEqual((found.record, found.name, found.problem, found.applied_policy),
                         (None, "_dmarc.nothing.test", "", ""))

    def test_unusable_records(self) -> None:
        """Two records, or an invalid one, count as none, with the problem said."""
        self.assertIn("2 DMARC records", self.successResultOf(self.policies.discover("twice.test")).problem)
        bad = self.successResultOf(self.policies.discover("bad.test"))
        self.assertEqual((bad.record, bad.text), (None, "v=DMARC1; p=sometimes"))
        self.assertIn("p= must be", bad.problem)

    def test_dns_failure(self) -> None:
        self.failureResultOf(self.policies.discover("broken.test"), LookupFailed)
