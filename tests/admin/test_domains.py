"""Sender domains and DKIM keys as an administrator adds them (DomainAdmin on MemoryStore)."""
from __future__ import annotations

import calendar
import functools
import json
import os
from typing import Any

import dkim
import dns.rdatatype
import dns.zone
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.admin.domains import DomainAdmin, parse_domain, parse_selector, render_domain, render_domains
from jangotw.errors import InputError
from jangotw.model import DomainKey
from jangotw.pipeline.dkim import dns_record, new_rsa_key, sign_message
from jangotw.store.memory import MemoryStore

JUNE_2024 = float(calendar.timegm((2024, 6, 15, 10, 0, 0)))


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
        self.admin = DomainAdmin(store=self.store, make_key=self.make_key, clock=self.clock)

    def refused(self, deferred: "Deferred[Any]") -> str:
        return str(self.failureResultOf(deferred, InputError).value)

    def test_add_domain_answers_with_the_record(self) -> None:
        """The answer names the TXT record and its 255-octet strings; the key is stored."""
        answer = self.successResultOf(self.admin.add_domain("alice", "Example.COM"))
        stored = self.successResultOf(self.store.domain_key("example.com"))
        assert stored is not None
        self.assertEqual((stored.account, stored.domain, stored.selector, stored.created),
                         ("Alice", "example.com", "jt202406", JUNE_2024))
        self.assertEqual(stored.private_key, small_key(1))
        name, value = dns_record(stored)
        self.assertEqual(answer, {
            "account": "Alice",
            "domain": "example.com",
            "selector": "jt202406",
            "created": "2024-06-15T10:00:00+00:00",
            "dkim_name": "jt202406._domainkey.example.com",
            "dkim_txt": [value[i:i + 255] for i in range(0, len(value), 255)],
        })
        self.assertTrue(value.startswith("v=DKIM1; k=rsa; p="))

    def test_answer_never_holds_the_private_key(self) -> None:
        answer = self.successResultOf(self.admin.add_domain("alice", "example.com"))
        text = json.dumps(answer) + json.dumps(self.successResultOf(self.admin.list_domains("alice")))
        self.assertNotIn("PRIVATE", text)
        self.assertNotIn(small_key(1).splitlines()[1], text)

    def test_internationalised_domain(self) -> None:
        """A U-label domain is stored and published in A-label form."""
        answer = self.successResultOf(self.admin.add_domain("alice", "Bücher.Example."))
        self.assertEqual((answer["domain"], answer["dkim_name"]),
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
        self.assertEqual((stored.account, stored.selector), ("bob", first["selector"]))
        self.assertEqual(self.make_key.calls, 1)

    def test_explicit_selector(self) -> None:
        answer = self.successResultOf(self.admin.add_domain("alice", "example.com", selector="Mail-2024"))
        self.assertEqual((answer["selector"], answer["dkim_name"]),
                         ("mail-2024", "mail-2024._domainkey.example.com"))

    def test_invalid_selectors(self) -> None:
        for text in ("", "bad selector", "-x", "x-", "a..b", "s" * 64, "sé"):
            self.assertIn("invalid selector", self.refused(self.admin.add_domain("alice", "example.com", text)),
                          text)
        self.assertEqual(self.make_key.calls, 0)

    def test_new_key_gets_a_new_selector(self) -> None:
        """Adding a domain again the same month makes jt202406b, jt202406c...: the old key's
        record can stay published while mail signed with it is still in flight."""
        selectors = [self.successResultOf(self.admin.add_domain("alice", "example.com"))["selector"]
                     for _ in range(3)]
        self.assertEqual(selectors, ["jt202406", "jt202406b", "jt202406c"])
        stored = self.successResultOf(self.store.domain_key("example.com"))
        assert stored is not None
        self.assertEqual((stored.selector, stored.private_key), ("jt202406c", small_key(3)))
        self.clock.advance(31 * 86400)
        self.assertEqual(self.successResultOf(self.admin.add_domain("alice", "example.com"))["selector"],
                         "jt202407")

    def test_current_selector_refused(self) -> None:
        self.successResultOf(self.admin.add_domain("alice", "example.com", "mail"))
        self.assertIn("already uses selector mail", self.refused(self.admin.add_domain("alice", "example.com", "MAIL")))

    def test_key_generation_failure_stores_nothing(self) -> None:
        admin = DomainAdmin(store=self.store, make_key=lambda: fail(RuntimeError("no entropy")), clock=self.clock)
        self.failureResultOf(admin.add_domain("alice", "example.com"), RuntimeError)
        self.assertIsNone(self.successResultOf(self.store.domain_key("example.com")))

    def test_list_domains(self) -> None:
        """An account's domains by name, each with its current record; other accounts' are not shown."""
        self.assertEqual(self.successResultOf(self.admin.list_domains("alice")), [])
        self.successResultOf(self.admin.add_domain("alice", "zeta.example"))
        self.successResultOf(self.admin.add_domain("alice", "alpha.example"))
        self.successResultOf(self.admin.add_domain("bob", "bob.example"))
        listed = self.successResultOf(self.admin.list_domains("ALICE"))
        self.assertEqual([entry["domain"] for entry in listed], ["alpha.example", "zeta.example"])
        self.assertEqual(listed[0], self.successResultOf(self.admin.list_domains("alice"))[0])
        self.assertTrue(all(entry["dkim_txt"] for entry in listed))

    def test_stored_key_signs_verifiable_mail(self) -> None:
        """The stored key signs mail that verifies against the published strings."""
        answer = self.successResultOf(self.admin.add_domain("alice", "example.com"))
        key = self.successResultOf(self.store.domain_key("example.com"))
        assert key is not None
        directory = self.mktemp()
        os.makedirs(directory)
        source, target = os.path.join(directory, "in"), os.path.join(directory, "out")
        with open(source, "wb") as handle:
            handle.write(b"From: ann@example.com\r\nSubject: hi\r\n\r\nHello\r\n")
        self.assertTrue(sign_message(source, target, key, self.clock.seconds()))
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
        admin = DomainAdmin(store=store, make_key=lambda: succeed(new_rsa_key(2048)), clock=clock)
        answer: dict[str, Any] = self.successResultOf(admin.add_domain("alice", "example.com"))
        self.key: DomainKey | None = self.successResultOf(store.domain_key("example.com"))
        return answer

    def test_render_domain(self) -> None:
        answer = self.answer()
        self.assertEqual(len(answer["dkim_txt"]), 2)  # a 2048-bit key needs two strings
        comment, record = render_domain(answer).split("\n")
        self.assertEqual(comment, "; DKIM key of example.com (account alice, selector jt202406)")
        self.assertEqual(record, "jt202406._domainkey.example.com. IN TXT "
                         + " ".join(f'"{text}"' for text in answer["dkim_txt"]))

    def test_zone_parser_reads_the_record(self) -> None:
        """dnspython's zone-file parser reads back exactly the published key."""
        answer = self.answer()
        zone = dns.zone.from_text(
            "$ORIGIN example.com.\n$TTL 3600\n"
            "@ IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 60\n"
            "@ IN NS ns1.example.com.\n" + render_domain(answer) + "\n",
            relativize=False)
        [rdata] = zone.find_rdataset("jt202406._domainkey.example.com.", dns.rdatatype.TXT)
        assert self.key is not None
        self.assertEqual(b"".join(rdata.strings).decode(), dns_record(self.key)[1])

    def test_render_domains(self) -> None:
        self.assertEqual(render_domains([]), "no domains")
        answer = self.answer()
        self.assertEqual(render_domains([answer, answer]), render_domain(answer) + "\n" + render_domain(answer))
