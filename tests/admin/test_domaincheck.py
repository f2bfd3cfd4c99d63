"""domain check against a real twisted.names authoritative server on loopback.

The zones hold a correct domain, one with nothing published, one with wrong
records (an SPF record needing more than 10 lookups that does not include the
server, a DKIM key that is not the stored one, DMARC p=none without reports,
a tracking CNAME elsewhere) and a subdomain without its own DMARC record.
"""
from __future__ import annotations

import calendar
import json
import os
import sys
from typing import Any

from publicsuffixlist import PublicSuffixList
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from jangotw.admin.domaincheck import DomainChecker
from jangotw.admin.domainrecords import SenderSettings
from jangotw.admin.domains import DomainAdmin, render_check
from jangotw.model import DomainKey
from jangotw.outbound.mx import make_resolver
from jangotw.pipeline.dkim import dns_record, new_ed25519_key, new_rsa_key, split_txt
from jangotw.senders.dmarc import DMARCPolicies, Organisations
from jangotw.senders.dns import Lookups
from jangotw.senders.spf import SPFChecker
from jangotw.store.memory import MemoryStore
from tests.support.dns import cname, start_dns, txt

from ..integration.server import config_document, toml

NOW = float(calendar.timegm((2024, 6, 15, 10, 0, 0)))
SENDING = "192.0.2.25"  # the server's address as receivers see it: evaluated, never contacted
SETTINGS = SenderSettings(spf_include="_spf.relay.test", sending_addresses=(SENDING,),
                          tracking_host="track.relay.test", bounce_domain="bounces.relay.test")
RSA_KEY = new_rsa_key(1024)
OTHER_KEY = new_rsa_key(1024)
ED_KEY = new_ed25519_key()


def published(domain: str, selector: str, private_key: str, algorithm: str = "rsa") -> list[Any]:
    return [txt(*split_txt(dns_record(DomainKey("shop", domain, selector, private_key, 0.0, algorithm))[1]))]


ZONES: dict[str, dict[str, Any]] = {
    "relay.test": {"_spf.relay.test": [txt(f"v=spf1 ip4:{SENDING} -all")]},
    "good.test": {
        "good.test": [txt("v=spf1 include:_spf.relay.test ~all")],
        "s1._domainkey": published("good.test", "s1", RSA_KEY),
        "s1-ed._domainkey": published("good.test", "s1-ed", ED_KEY, "ed25519"),
        "_dmarc": [txt("v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@good.test")],
        "track": [cname("track.relay.test")],
        "bounces": [cname("bounces.relay.test")],
        "news.good.test": [txt("v=spf1 include:_spf.relay.test -all")],
        "s1._domainkey.news": published("news.good.test", "s1", RSA_KEY),
    },
    "wrong.test": {
        "wrong.test": [txt("v=spf1 " + " ".join(f"include:i{n}.wrong.test" for n in range(11)) + " -all")],
        **{f"i{n}": [txt("v=spf1 ip4:198.51.100.0/24 ~all")] for n in range(11)},
        "s1._domainkey": published("wrong.test", "s1", OTHER_KEY),
        "_dmarc": [txt("v=DMARC1; p=none")],
        "track": [cname("elsewhere.example.test")],
    },
}


class DomainCheckTests(TestCase):
    async def setUp(self) -> None:
        port = await start_dns(self, ZONES)
        self.dns_servers = (f"127.0.0.1:{port}",)
        lookups = Lookups(make_resolver(self.dns_servers, reactor))
        organisations = Organisations(PublicSuffixList())
        self.store = MemoryStore(clock=reactor)
        await self.store.add_account("shop", None)
        checker = DomainChecker(lookups, SPFChecker(lookups), DMARCPolicies(lookups, organisations), SETTINGS)
        self.admin = DomainAdmin(store=self.store, make_key=lambda: succeed(RSA_KEY), clock=reactor,
                                 organisations=organisations, settings=SETTINGS, checker=checker)

    async def add(self, domain: str, *keys: tuple[str, str, str]) -> None:
        for selector, private_key, algorithm in keys or (("s1", RSA_KEY, "rsa"),):
            await self.store.add_domain(DomainKey("shop", domain, selector, private_key, NOW, algorithm))

    async def check(self, domain: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        answer: dict[str, Any] = await self.admin.check(domain)
        return answer, {finding["kind"] + finding["selector"]: finding for finding in answer["findings"]}

    async def test_correct_domain_verifies(self) -> None:
        """Every record right: the domain is verified and its keys may sign from now on."""
        await self.add("good.test", ("s1", RSA_KEY, "rsa"), ("s1-ed", ED_KEY, "ed25519"))
        self.assertFalse(any(key.may_sign for key in await self.store.domain_keys("good.test")))
        answer, findings = await self.check("good.test")
        self.assertEqual({kind: finding["status"] for kind, finding in findings.items()},
                         {"spf": "ok", "dkims1": "ok", "dkims1-ed": "ok", "dmarc": "ok", "tracking": "ok",
                          "return-path": "ok"})
        self.assertTrue(answer["status"]["verified"])
        self.assertIn(f"passes for {SENDING} (include:_spf.relay.test, 1 DNS lookups)", findings["spf"]["notes"])
        self.assertIn("needs 1 of the 10 DNS lookups allowed when nothing matches", findings["spf"]["notes"])
        self.assertEqual(findings["dmarc"]["found"], "v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@good.test")
        self.assertEqual([(key.selector, key.may_sign) for key in await self.store.domain_keys("good.test")],
                         [("s1", True), ("s1-ed", True)])
        status = await self.store.domain_status("good.test")
        assert status is not None
        self.assertEqual((status.verified, status.checked_at is not None), (True, True))
        text = render_check(answer)
        self.assertTrue(text.startswith("good.test (account shop): verified (checked "), text)
        self.assertIn("[OK] DKIM s1._domainkey.good.test TXT", text)

    async def test_nothing_published(self) -> None:
        """Each missing record gets the exact record to publish; the domain is not verified."""
        await self.add("missing.test")
        answer, findings = await self.check("missing.test")
        self.assertFalse(answer["status"]["verified"])
        self.assertEqual({kind: finding["status"] for kind, finding in findings.items()},
                         {"spf": "missing", "dkims1": "missing", "dmarc": "missing", "tracking": "missing",
                          "return-path": "missing"})
        self.assertEqual(findings["spf"]["fix"], 'publish: missing.test. IN TXT "v=spf1 include:_spf.relay.test ~all"')
        self.assertTrue(findings["dkims1"]["fix"].startswith('publish: s1._domainkey.missing.test. IN TXT "v=DKIM1; k=rsa; p='))
        self.assertEqual(findings["dmarc"]["fix"],
                         'publish: _dmarc.missing.test. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@missing.test"')
        self.assertEqual(findings["tracking"]["fix"], "publish: track.missing.test. IN CNAME track.relay.test.")
        self.assertFalse((await self.store.domain_key("missing.test")).may_sign)  # type: ignore[union-attr]
        text = render_check(answer)
        self.assertIn("[MISSING] SPF missing.test TXT\n    fix: publish: missing.test. IN TXT", text)
        self.assertIn("[MISSING] TRACKING (optional) track.missing.test CNAME", text)

    async def test_wrong_records(self) -> None:
        """Too many SPF lookups and no include of the server, another DKIM key, DMARC p=none without
        rua, a tracking CNAME elsewhere: each is wrong (or advised) with what was found and the fix."""
        await self.add("wrong.test")
        answer, findings = await self.check("wrong.test")
        self.assertFalse(answer["status"]["verified"])
        spf = findings["spf"]
        self.assertEqual(spf["status"], "wrong")
        self.assertIn(f"{SENDING}: permerror (more than 10 DNS lookups (RFC 7208 4.6.4) at include:i10.wrong.test)",
                      spf["notes"])
        self.assertIn("it needs 11 DNS lookups; receivers give up (permerror) after 10 (RFC 7208 4.6.4)",
                      spf["notes"])
        self.assertIn("include:i10.wrong.test include:_spf.relay.test -all", spf["fix"])
        self.assertIn("remove include: mechanisms of services that no longer send", spf["fix"])
        dkim = findings["dkims1"]
        self.assertEqual(dkim["status"], "wrong")
        self.assertIn("it publishes another key than the rsa key stored for selector s1", dkim["notes"][0])
        self.assertEqual(dkim["found"], dns_record(DomainKey("shop", "wrong.test", "s1", OTHER_KEY))[1])
        self.assertTrue(dkim["fix"].startswith("replace it: s1._domainkey.wrong.test. IN TXT"))
        dmarc = findings["dmarc"]
        self.assertEqual(dmarc["status"], "ok")
        self.assertTrue(any("policy none only reports" in note and "p=quarantine, then to p=reject" in note
                            for note in dmarc["notes"]), dmarc["notes"])
        self.assertIn("no rua=: nobody receives aggregate reports; add rua=mailto:<a mailbox that reads them>",
                      dmarc["notes"])
        self.assertEqual((findings["tracking"]["status"], findings["tracking"]["found"]),
                         ("wrong", "elsewhere.example.test"))
        self.assertFalse((await self.store.domain_key("wrong.test")).may_sign)  # type: ignore[union-attr]

    async def test_subdomain_without_its_own_dmarc(self) -> None:
        """news.good.test is covered by _dmarc.good.test through sp=; the check says so and explains
        relaxed alignment under the organisational domain."""
        await self.add("news.good.test")
        answer, findings = await self.check("news.good.test")
        dmarc = findings["dmarc"]
        self.assertEqual((dmarc["status"], dmarc["name"]), ("ok", "_dmarc.good.test"))
        self.assertIn("news.good.test has no DMARC record of its own: good.test's record covers it with "
                      "sp=quarantine; publish _dmarc.news.good.test to give it its own policy", dmarc["notes"])
        self.assertIn("alignment: DKIM d= may be any domain under good.test (adkim=r, relaxed); the MAIL FROM "
                      "domain may be any domain under good.test (aspf=r, relaxed)", dmarc["notes"])
        self.assertIn("policy quarantine: once the reports stay clean, move to p=reject", dmarc["notes"])
        self.assertEqual(findings["spf"]["status"], "ok")
        self.assertEqual(findings["dkims1"]["status"], "ok")
        self.assertTrue(answer["status"]["verified"])

    async def test_rotation_keeps_both_keys_checked(self) -> None:
        """After rotate-key both selectors are checked; the new one verifies once published."""
        await self.add("good.test")
        answer = await self.admin.rotate_key("good.test", "s2")
        self.assertEqual(answer["added"], ["s2"])
        _, findings = await self.check("good.test")
        self.assertEqual((findings["dkims1"]["status"], findings["dkims2"]["status"]), ("ok", "missing"))
        self.assertEqual([(key.selector, key.may_sign) for key in await self.store.domain_keys("good.test")],
                         [("s1", True), ("s2", False)])

    async def test_cli_check(self) -> None:
        """jangomail-admin domain check, as text and as JSON, through the configured resolvers."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config_path = os.path.join(directory, "jangomail.toml")
        document = config_document(os.path.join(directory, "data"), ("", ""),
                                   delivery={"dns_servers": list(self.dns_servers), "spf_include": "_spf.relay.test",
                                             "sending_addresses": [SENDING]})
        document.pop("tls")
        document["smtp"]["tls_listen"] = []
        with open(config_path, "w") as handle:
            handle.write(toml(document))

        async def admin(*argv: str) -> str:
            out, err, code = await getProcessOutputAndValue(
                sys.executable, ["-m", "jangotw.admin.cli", "--config", config_path, *argv],
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            self.assertEqual(code, 0, f"{argv}: {out!r} {err!r}")
            return out.decode("utf-8")

        await admin("account", "add", "shop", "--no-password")
        added = await admin("domain", "add", "shop", "missing.test", "--selector", "s1")
        self.assertIn('missing.test. IN TXT "v=spf1 include:_spf.relay.test ~all"', added)
        text = await admin("domain", "check", "missing.test")
        self.assertIn("missing.test (account shop): NOT verified (checked ", text)
        self.assertIn("[MISSING] DKIM s1._domainkey.missing.test TXT", text)
        checked = json.loads(await admin("--json", "domain", "check", "missing.test"))
        self.assertEqual([finding["status"] for finding in checked["findings"]], ["missing", "missing", "missing"])
        forced = await admin("domain", "force-sign", "missing.test", "s1")
        self.assertEqual(forced.strip(), "key s1 of missing.test: forced, signs")
