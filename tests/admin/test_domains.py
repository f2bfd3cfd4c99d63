"""Sender domains and DKIM keys as an administrator adds them (DomainAdmin on MemoryStore)."""
from __future__ import annotations

import calendar
import functools
import json
import os
from typing import Any

import attrs
import dkim
import dns.rdatatype
import dns.zone
from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.admin.domainrecords import SenderSettings
from jangotw.admin.domains import DomainAdmin, parse_domain, parse_selector, render_domain, render_domains
from jangotw.errors import InputError
from jangotw.model import DomainKey
from jangotw.pipeline.dkim import dns_record, new_rsa_key, sign_message
from jangotw.senders.dmarc import Organisations
from jangotw.store.memory import MemoryStore

JUNE_2024 = float(calendar.timegm((2024, 6, 15, 10, 0, 0)))
ORGANISATIONS = Organisations(PublicSuffixList())
SETTINGS = SenderSettings(spf_include="_spf.relay.test", tracking_host="track.relay.test",
                          bounce_domain="bounces.relay.test")


@functools.cache
def small_key(which: int) -> str:
    """1024-bit keys keep the tests quick; the CLI passes new_rsa_key's 2048-bit default."""
    return new_rsa_key(1024)


class KeyMaker:
    """Stands in for new_rsa_key in a thread: hands out cached keys and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> "Deferred[str]":
        self.calls += 1
        return succeed(small_key(self.calls))


class DomainAdminTests(SynchronousTestCase):
    """DomainAdmin validates input, stores a new key and answers with the record to publish."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(JUNE_2024)
        self.store = MemoryStore(clock=self.clock)
        self.successResultOf(self.store.add_account("Alice", None))
        self.successResultOf(self.store.add_account("bob", None))
        self.make_key = KeyMaker()
        self.admin = DomainAdmin(store=self.store, make_key=self.make_key, clock=self.clock,
                                 organisations=ORGANISATIONS, settings=SETTINGS)

    def refused(self, deferred: "Deferred[Any]") -> str:
        return str(self.failureResultOf(deferred, InputError).value)

    def test_add_domain_answers_with_the_records(self) -> None:
        """The answer names every record to publish; the key is stored, unverified, and does not sign."""
        answer = self.successResultOf(self.admin.add_domain("alice", "Example.COM"))
        stored = self.successResultOf(self.store.domain_key("example.com"))
        assert stored is not None
        self.assertEqual((stored.account, stored.domain, stored.selector, stored.created, stored.may_sign),
                         ("Alice", "example.com", "jt202406", JUNE_2024, False))
        self.assertEqual(stored.private_key, small_key(1))
        name, value = dns_record(stored)
        self.assertEqual((answer["account"], answer["domain"], answer["added"]), ("Alice", "example.com", ["jt202406"]))
        self.assertEqual(answer["status"], {"verified": False, "checked": None})
        self.assertEqual(answer["keys"], [{
            "selector": "jt202406", "algorithm": "rsa", "created": "2024-06-15T10:00:00+00:00", "state": "unverified",
            "signs": False, "dkim_name": "jt202406._domainkey.example.com",
            "dkim_txt": [value[i:i + 255] for i in range(0, len(value), 255)]}])
        records = {record["kind"]: record for record in answer["records"]}
        self.assertEqual(list(records), ["spf", "dkim", "dmarc", "tracking", "return-path"])
        self.assertEqual((records["spf"]["name"], records["spf"]["value"]),
                         ("example.com", "v=spf1 include:_spf.relay.test ~all"))
        self.assertEqual((records["dkim"]["name"], records["dkim"]["value"]), (name, value))
        self.assertEqual((records["dmarc"]["name"], records["dmarc"]["value"]),
                         ("_dmarc.example.com", "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"))
        self.assertIn("p=quarantine, then to p=reject", records["dmarc"]["note"])
        self.assertEqual((records["tracking"]["name"], records["tracking"]["type"], records["tracking"]["value"]),
                         ("track.example.com", "CNAME", "track.relay.test"))
        self.assertEqual((records["return-path"]["name"], records["return-path"]["value"]),
                         ("bounces.example.com", "bounces.relay.test"))
        self.assertTrue(value.startswith("v=DKIM1; k=rsa; p="))

    def test_ed25519_second_key(self) -> None:
        """--ed25519 adds an Ed25519 key under the RSA selector plus "-ed"; both records are printed."""
        answer = self.successResultOf(self.admin.add_domain("alice", "example.com", ed25519=True))
        self.assertEqual(answer["added"], ["jt202406", "jt202406-ed"])
        self.assertEqual([(key["selector"], key["algorithm"]) for key in answer["keys"]],
                         [("jt202406", "rsa"), ("jt202406-ed", "ed25519")])
        dkim_records = [record for record in answer["records"] if record["kind"] == "dkim"]
        self.assertTrue(dkim_records[1]["value"].startswith("v=DKIM1; k=ed25519; p="))
        self.assertEqual(len(dkim_records[1]["strings"]), 1)

    def test_subdomain_records(self) -> None:
        """A subdomain gets its own records; the DMARC note explains the organisational domain's sp=."""
        answer = self.successResultOf(self.admin.add_domain("alice", "news.example.com"))
        records = {record["kind"]: record for record in answer["records"]}
        self.assertEqual(records["spf"]["name"], "news.example.com")
        self.assertEqual(records["dmarc"]["name"], "_dmarc.news.example.com")
        self.assertIn("_dmarc.example.com applies to news.example.com through its sp= tag", records["dmarc"]["note"])
        self.assertEqual(records["tracking"]["name"], "track.news.example.com")

    def test_spf_lists_addresses_without_an_include(self) -> None:
        admin = attrs.evolve(self.admin, settings=SenderSettings(sending_addresses=("192.0.2.25", "2001:db8::25")))
        answer = self.successResultOf(admin.add_domain("alice", "example.com"))
        self.assertEqual([record["value"] for record in answer["records"] if record["kind"] == "spf"],
                         ["v=spf1 ip4:192.0.2.25 ip6:2001:db8::25 ~all"])
        self.assertEqual([record["kind"] for record in answer["records"]], ["spf", "dkim", "dmarc"])

    def test_tracking_name_follows_the_account_setting(self) -> None:
        self.successResultOf(self.store.set_setting("alice", "tracking_domain", "https://click.example.com"))
        answer = self.successResultOf(self.admin.add_domain("alice", "example.com"))
        self.assertEqual([record["name"] for record in answer["records"] if record["kind"] == "tracking"],
                         ["click.example.com"])

    def test_answer_never_holds_the_private_key(self) -> None:
        answer = self.successResultOf(self.admin.add_domain("alice", "example.com"))
        text = json.dumps(answer) + json.dumps(self.successResultOf(self.admin.list_domains("alice")))
        self.assertNotIn("PRIVATE", text)
        self.assertNotIn(small_key(1).splitlines()[1], text)

    def test_internationalised_domain(self) -> None:
        """A U-label domain is stored and published in A-label form."""
        answer = self.successResultOf(self.admin.add_domain("alice", "Bücher.Example."))
        self.assertEqual((answer["domain"], answer["keys"][0]["dkim_name"]),
                         ("xn--bcher-kva.example", "jt202406._domainkey.xn--bcher-kva.example"))
        self.assertIsNotNone(self.successResultOf(self.store.domain_key("xn--bcher-kva.example")))

    def test_invalid_domains(self) -> None:
        """Nothing that is not a domain name gets a key (and none is generated)."""
        for text in ("", ".", "localhost", "exa mple.com", "-bad.com", "bad-.com", "a..b", "192.0.2.1",
                     "x" * 64 + ".com", "ann@example.com", "under_score.com", "a." * 127 + "com"):
            self.assertIn("invalid domain", self.refused(self.admin.add_domain("alice", text)), text)
        self.assertEqual(self.make_key.calls, 0)

    def test_unknown_account(self) -> None:
        self.assertIn("no account named 'carol'", self.refused(self.admin.add_domain("carol", "example.com")))
        self.assertIn("no account named 'carol'", self.refused(self.admin.list_domains("carol")))
        self.assertEqual(self.make_key.calls, 0)

    def test_domain_of_another_account(self) -> None:
        """A domain belongs to one account; another account's attempt changes nothing."""
        first = self.successResultOf(self.admin.add_domain("bob", "example.com"))
        self.assertIn("belongs to another account", self.refused(self.admin.add_domain("alice", "EXAMPLE.com")))
        stored = self.successResultOf(self.store.domain_key("example.com"))
        assert stored is not None
        self.assertEqual((stored.account, stored.selector), ("bob", first["added"][0]))
        self.assertEqual(self.make_key.calls, 1)

    def test_explicit_selector(self) -> None:
        answer = self.successResultOf(self.admin.add_domain("alice", "example.com", selector="Mail-2024"))
        self.assertEqual((answer["added"], answer["keys"][0]["dkim_name"]),
                         (["mail-2024"], "mail-2024._domainkey.example.com"))

    def test_invalid_selectors(self) -> None:
        for text in ("", "bad selector", "-x", "x-", "a..b", "s" * 61, "sé"):
            self.assertIn("invalid selector", self.refused(self.admin.add_domain("alice", "example.com", text)),
                          text)
        self.assertEqual(self.make_key.calls, 0)

    def test_new_key_gets_a_new_selector(self) -> None:
        """Adding a domain again (or rotating its key) the same month makes jt202406b, jt202406c...;
        every key stays listed, so the old records stay published while mail signed with them is in flight."""
        selectors = [self.successResultOf(self.admin.add_domain("alice", "example.com"))["added"][0],
                     self.successResultOf(self.admin.rotate_key("example.com"))["added"][0],
                     self.successResultOf(self.admin.rotate_key("EXAMPLE.com"))["added"][0]]
        self.assertEqual(selectors, ["jt202406", "jt202406b", "jt202406c"])
        keys = self.successResultOf(self.store.domain_keys("example.com"))
        self.assertEqual([(key.selector, key.private_key) for key in keys],
                         [("jt202406", small_key(1)), ("jt202406b", small_key(2)), ("jt202406c", small_key(3))])
        answer = self.successResultOf(self.admin.show("example.com"))
        self.assertEqual(len([record for record in answer["records"] if record["kind"] == "dkim"]), 3)
        self.clock.advance(31 * 86400)
        self.assertEqual(self.successResultOf(self.admin.rotate_key("example.com"))["added"], ["jt202407"])

    def test_rotation_keeps_ed25519(self) -> None:
        """A domain with an Ed25519 key gets a new one with the new RSA key."""
        self.successResultOf(self.admin.add_domain("alice", "example.com", ed25519=True))
        self.assertEqual(self.successResultOf(self.admin.rotate_key("example.com"))["added"],
                         ["jt202406b", "jt202406b-ed"])

    def test_retire_key(self) -> None:
        """A retired key is no longer listed nor signs; its selector is never used again; the last
        RSA key cannot be retired."""
        self.successResultOf(self.admin.add_domain("alice", "example.com"))
        self.assertIn("last RSA key", self.refused(self.admin.retire_key("example.com", "jt202406")))
        self.successResultOf(self.admin.rotate_key("example.com"))
        answer = self.successResultOf(self.admin.retire_key("example.com", "JT202406"))
        self.assertEqual(answer, {"domain": "example.com", "selector": "jt202406",
                                  "retired": "2024-06-15T10:00:00+00:00"})
        self.assertEqual([key["selector"] for key in self.successResultOf(self.admin.show("example.com"))["keys"]],
                         ["jt202406b"])
        self.assertIn("already has (or had) selector jt202406",
                      self.refused(self.admin.rotate_key("example.com", "jt202406")))
        self.assertIn("no key with selector nope", self.refused(self.admin.retire_key("example.com", "nope")))

    def test_force_sign(self) -> None:
        self.successResultOf(self.admin.add_domain("alice", "example.com"))
        forced = self.successResultOf(self.admin.force_sign("example.com", "jt202406"))
        self.assertEqual((forced["state"], forced["signs"]), ("forced", True))
        self.assertTrue(self.successResultOf(self.store.domain_key("example.com")).may_sign)  # type: ignore[union-attr]
        self.assertFalse(self.successResultOf(self.admin.force_sign("example.com", "jt202406", False))["signs"])
        self.assertIn("no sender domain example.org", self.refused(self.admin.force_sign("example.org", "x")))

    def test_current_selector_refused(self) -> None:
        self.successResultOf(self.admin.add_domain("alice", "example.com", "mail"))
        self.assertIn("already has (or had) selector mail",
                      self.refused(self.admin.add_domain("alice", "example.com", "MAIL")))

    def test_key_generation_failure_stores_nothing(self) -> None:
        admin = attrs.evolve(self.admin, make_key=lambda: fail(RuntimeError("no entropy")))
        self.failureResultOf(admin.add_domain("alice", "example.com"), RuntimeError)
        self.assertIsNone(self.successResultOf(self.store.domain_key("example.com")))

    def test_list_domains(self) -> None:
        """An account's domains by name, each with its status and keys; other accounts' are not shown."""
        self.assertEqual(self.successResultOf(self.admin.list_domains("alice")), [])
        self.successResultOf(self.admin.add_domain("alice", "zeta.example"))
        self.successResultOf(self.admin.add_domain("alice", "alpha.example"))
        self.successResultOf(self.admin.add_domain("bob", "bob.example"))
        listed = self.successResultOf(self.admin.list_domains("ALICE"))
        self.assertEqual([entry["domain"] for entry in listed], ["alpha.example", "zeta.example"])
        self.assertEqual([key["state"] for key in listed[0]["keys"]], ["unverified"])
        self.assertEqual(render_domains(listed).splitlines()[0],
                         "alpha.example  not checked yet: publish the records, then run domain check  "
                         "keys: jt202406 (rsa, unverified)")

    def test_stored_key_signs_verifiable_mail(self) -> None:
        """The stored key signs mail that verifies against the published strings."""
        answer = self.successResultOf(self.admin.add_domain("alice", "example.com"))["keys"][0]
        key = self.successResultOf(self.store.domain_key("example.com"))
        assert key is not None
        directory = self.mktemp()
        os.makedirs(directory)
        source, target = os.path.join(directory, "in"), os.path.join(directory, "out")
        with open(source, "wb") as handle:
            handle.write(b"From: ann@example.com\r\nSubject: hi\r\n\r\nHello\r\n")
        self.assertTrue(sign_message(source, target, [key], self.clock.seconds()))
        published = {f"{answer['dkim_name']}.".encode(): "".join(answer["dkim_txt"]).encode()}
        with open(target, "rb") as handle:
            self.assertTrue(dkim.verify(handle.read(), dnsfunc=lambda name, timeout=5: published.get(name)))


class ParsingTests(SynchronousTestCase):
    def test_parse_domain(self) -> None:
        self.assertEqual(parse_domain(" Mail.Example.COM. "), "mail.example.com")
        self.assertEqual(parse_domain("xn--bcher-kva.example"), "xn--bcher-kva.example")
        self.assertEqual(parse_domain("BÜCHER.example"), "xn--bcher-kva.example")

    def test_parse_selector(self) -> None:
        self.assertEqual(parse_selector(" JT202406 "), "jt202406")
        self.assertEqual(parse_selector("2024.mail"), "2024.mail")
        self.assertRaises(InputError, parse_selector, "a b")


class RenderTests(SynchronousTestCase):
    """The zone-file text can be pasted into a zone as it is."""

    def answer(self) -> dict[str, Any]:
        clock = Clock()
        clock.advance(JUNE_2024)
        store = MemoryStore(clock=clock)
        self.successResultOf(store.add_account("alice", None))
        admin = DomainAdmin(store=store, make_key=lambda: succeed(new_rsa_key(2048)), clock=clock,
                            organisations=ORGANISATIONS, settings=SETTINGS)
        answer: dict[str, Any] = self.successResultOf(admin.add_domain("alice", "example.com", ed25519=True))
        self.key: DomainKey | None = self.successResultOf(store.domain_keys("example.com"))[0]
        return answer

    def test_render_domain(self) -> None:
        answer = self.answer()
        self.assertEqual(len(answer["keys"][0]["dkim_txt"]), 2)  # a 2048-bit key needs two strings
        lines = render_domain(answer).split("\n")
        self.assertEqual(lines[:3], [
            "; sender domain example.com (account alice): not checked yet: publish the records, then run domain check",
            "; key jt202406 (rsa, unverified, does not sign until verified) (new)",
            "; key jt202406-ed (ed25519, unverified, does not sign until verified) (new)"])
        self.assertIn('example.com. IN TXT "v=spf1 include:_spf.relay.test ~all"', lines)
        self.assertIn("jt202406._domainkey.example.com. IN TXT "
                      + " ".join(f'"{text}"' for text in answer["keys"][0]["dkim_txt"]), lines)
        self.assertIn("track.example.com. IN CNAME track.relay.test.", lines)

    def test_zone_parser_reads_the_records(self) -> None:
        """dnspython's zone-file parser reads back exactly the published records."""
        answer = self.answer()
        zone = dns.zone.from_text(
            "$ORIGIN example.com.\n$TTL 3600\n"
            "@ IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 60\n"
            "@ IN NS ns1.example.com.\n" + render_domain(answer) + "\n",
            relativize=False)
        [rdata] = zone.find_rdataset("jt202406._domainkey.example.com.", dns.rdatatype.TXT)
        assert self.key is not None
        self.assertEqual(b"".join(rdata.strings).decode(), dns_record(self.key)[1])
        [dmarc] = zone.find_rdataset("_dmarc.example.com.", dns.rdatatype.TXT)
        self.assertEqual(b"".join(dmarc.strings), b"v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com")
        [cname] = zone.find_rdataset("bounces.example.com.", dns.rdatatype.CNAME)
        self.assertEqual(str(cname.target), "bounces.relay.test.")

    def test_render_domains(self) -> None:
        self.assertEqual(render_domains([]), "no domains")
