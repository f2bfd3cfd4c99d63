"""Verified From-address authentication end to end: smtplib clients, a real server, loopback DNS.

Mail authorised only by its From address is accepted when SPF passes for the
client (127.0.0.1) and the MAIL FROM domain aligned with the From domain, or
a DKIM signature aligned with it verifies; otherwise the relay refusal. The
accepted message carries an Authentication-Results field when delivered,
placed before the server's own DKIM signatures, which dkimpy verifies
against the same DNS server.
"""
from __future__ import annotations

from email import message_from_bytes
from email.policy import default
from typing import Any

import dkim
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from twisted.names import client
from twisted.names import dns as names_dns

from jangotw.auth.passwords import PasswordHasher
from jangotw.model import DomainKey, ListMember
from jangotw.pipeline.dkim import dns_record, new_ed25519_key, new_rsa_key, split_txt
from tests.support.capture import start_capture
from tests.support.dns import SERVFAIL, start_dns, txt

from .replies import RECIPIENT_OK, relaying_denied
from .server import ServerTestCase

CLIENT_KEY = new_rsa_key(1024)  # what the client's own mail system signs with (d=signed.test)
SERVER_KEY = DomainKey("shop", "shop.test", "jt1", new_rsa_key(1024), 0.0, forced=True)
SERVER_ED_KEY = DomainKey("shop", "shop.test", "jt1-ed", new_ed25519_key(), 0.0, "ed25519", forced=True)
UNVERIFIED = "451 4.7.0 Temporary failure verifying the sender; try again later"
NOT_VERIFIED_INITIATION = ("550 5.7.1 the message could not be verified as sent by its From address's domain: "
                           "send it through that domain's own mail server")


def published(key: DomainKey) -> list[Any]:
    return [txt(*split_txt(dns_record(key)[1]))]


ZONES: dict[str, dict[str, Any]] = {
    "shop.test": {
        "shop.test": [txt("v=spf1 ip4:127.0.0.1 -all")],  # the client's address may send for shop.test
        "jt1._domainkey": published(SERVER_KEY),
        "jt1-ed._domainkey": published(SERVER_ED_KEY),
    },
    "signed.test": {
        "signed.test": [txt("v=spf1 ip4:192.0.2.1 -all")],  # SPF fails for the client: DKIM must carry it
        "s1._domainkey": published(DomainKey("x", "signed.test", "s1", CLIENT_KEY)),
        "_dmarc": [txt("v=DMARC1; p=reject; rua=mailto:dmarc@signed.test")],
    },
    "strict.test": {
        "strict.test": [txt("v=spf1 ip4:127.0.0.1 -all")],
        "_dmarc": [txt("v=DMARC1; p=reject; aspf=s")],  # strict: a subdomain's From does not align
    },
    "broken.test": {"broken.test": SERVFAIL, "_dmarc.broken.test": SERVFAIL},
}


def message(header_from: str, subject: str = "offer", to: str = "you@remote.test") -> bytes:
    return (f"From: {header_from}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Message-ID: <m1@client.test>\r\n\r\nHello there.\r\n").encode()


def client_signed(header_from: str) -> bytes:
    """A message signed by the client's mail system with d=signed.test."""
    text = message(header_from)
    signature: bytes = dkim.sign(text, b"s1", b"signed.test", CLIENT_KEY.encode(),
                                 include_headers=[b"from", b"to", b"subject", b"message-id"])
    return signature + text


class SenderVerificationTests(ServerTestCase):
    async def setUp(self) -> None:
        self.dns_port = await start_dns(self, ZONES)

    async def serve(self, delivery: dict[str, Any] | None = None, **sections: Any) -> None:
        await self.start(self.config(delivery={"dns_servers": [f"127.0.0.1:{self.dns_port}"], **(delivery or {})},
                                     **sections))
        store = self.service.store
        assert store is not None
        await store.add_account("shop", None)
        for sender in ("@shop.test", "@signed.test", "@news.signed.test", "@strict.test", "@sub.strict.test", "@nospf.test",
                       "@broken.test"):
            await store.add_from("shop", sender)

    def send(self, sender: str, text: bytes) -> tuple[str, str]:
        """One unauthenticated transaction from 127.0.0.1: the RCPT reply and the reply to the text."""
        with self.smtp() as smtp:
            smtp.ehlo()
            smtp.mail(sender)
            rcpt_code, rcpt_reply = smtp.rcpt("you@remote.test")
            code, reply = smtp.data(text)
            return f"{rcpt_code} {rcpt_reply.decode()}", f"{code} {reply.decode()}"

    async def accepted_results(self, sender: str, text: bytes) -> str:
        rcpt, reply = await self.in_thread(self.send, sender, text)
        self.assertEqual(rcpt, RECIPIENT_OK)
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        [record] = [record for record in await self.service.spool.recover() if record.message_id in reply]
        self.assertEqual(record.auth_method.value, "from")
        return record.authentication_results

    async def test_spf_aligned_passes(self) -> None:
        """SPF passes for the client and MAIL FROM news@shop.test, aligned with From shop.test."""
        await self.serve()
        results = await self.accepted_results("news@shop.test", message("Shop News <news@shop.test>"))
        self.assertEqual(results, "relay.test; spf=pass smtp.mailfrom=news@shop.test; dmarc=none header.from=shop.test")

    async def test_dkim_aligned_passes(self) -> None:
        """SPF fails, but the client's DKIM signature d=signed.test verifies and aligns."""
        await self.serve()
        results = await self.accepted_results("news@signed.test", client_signed("news@signed.test"))
        self.assertRegex(results, r"^relay\.test; spf=fail smtp\.mailfrom=news@signed\.test; "
                                  r"dkim=pass header\.d=signed\.test header\.s=s1 header\.b=\S{12}; "
                                  r"dmarc=pass header\.from=signed\.test$")

    async def test_relaxed_alignment_through_the_organisational_domain(self) -> None:
        """From news.signed.test aligns (relaxed) with d=signed.test: same organisational domain."""
        await self.serve()
        results = await self.accepted_results("news@news.signed.test", client_signed("news@news.signed.test"))
        self.assertIn("dkim=pass header.d=signed.test", results)
        self.assertTrue(results.endswith("dmarc=pass header.from=news.signed.test"), results)

    async def test_strict_spf_alignment_refuses_a_subdomain(self) -> None:
        """aspf=s: SPF passes for strict.test, but From sub.strict.test is not the same domain."""
        await self.serve()
        _, reply = await self.in_thread(self.send, "news@strict.test", message("Sub <news@sub.strict.test>"))
        self.assertEqual(reply, relaying_denied("127.0.0.1", "Sub"))

    async def test_broken_signature_without_spf_refused(self) -> None:
        """A DKIM signature that does not verify (the text changed after signing) and failing SPF:
        the relay refusal, naming the From display name; nothing is spooled."""
        await self.serve()
        tampered = client_signed('"Signed News" <news@signed.test>').replace(b"Hello there.", b"Hello here.")
        _, reply = await self.in_thread(self.send, "news@signed.test", tampered)
        self.assertEqual(reply, relaying_denied("127.0.0.1", "Signed News"))
        self.assertEqual(await self.service.spool.recover(), [])

    async def test_neither_spf_nor_dkim_refused(self) -> None:
        """An authorised From address alone no longer relays: no SPF record, no signature."""
        await self.serve()
        rcpt, reply = await self.in_thread(self.send, "news@nospf.test", message("news@nospf.test"))
        self.assertEqual(rcpt, RECIPIENT_OK)
        self.assertEqual(reply, relaying_denied("127.0.0.1", "news@nospf.test"))
        self.assertEqual(await self.service.spool.recover(), [])

    async def test_dns_failure_is_temporary(self) -> None:
        """SERVFAIL for the domain's SPF and DMARC: try again later, not a refusal."""
        await self.serve()
        _, reply = await self.in_thread(self.send, "news@broken.test", message("news@broken.test"))
        self.assertEqual(reply, UNVERIFIED)

    async def test_verification_off(self) -> None:
        """from_auth_verification = "none": the From address alone authorises, as before."""
        await self.serve(smtp={"from_auth_verification": "none"})
        results = await self.accepted_results("news@nospf.test", message("news@nospf.test"))
        self.assertEqual(results, "")

    async def test_delivered_with_authentication_results_and_signatures(self) -> None:
        """The delivered copy carries Authentication-Results (a client's forged one removed) and the
        server's RSA and Ed25519 signatures, which dkimpy verifies against the loopback DNS."""
        capture = await start_capture(self)
        await self.serve(delivery={"hold": False, "relay_host": f"127.0.0.1:{capture.port}"})
        store = self.service.store
        assert store is not None
        await store.add_domain(SERVER_KEY)
        await store.add_domain(SERVER_ED_KEY)
        forged = b"Authentication-Results: relay.test; spf=pass smtp.mailfrom=ceo@bank.test\r\n"

        def send() -> dict[str, Any]:
            with self.smtp() as smtp:
                return smtp.sendmail("news@shop.test", ["you@remote.test"], forged + message("news@shop.test"))
        self.assertEqual(await self.in_thread(send), {})
        await capture.when_received(1)
        [transaction] = capture.transactions
        received = message_from_bytes(transaction.data, policy=default)
        self.assertEqual(received.get_all("Authentication-Results"),
                         ["relay.test; spf=pass smtp.mailfrom=news@shop.test; dmarc=none header.from=shop.test"])
        head = transaction.data.split(b"\r\n\r\n")[0]
        self.assertLess(head.index(b"DKIM-Signature"), head.index(b"Authentication-Results"))
        resolver = client.Resolver(servers=[("127.0.0.1", self.dns_port)], reactor=reactor)

        def verify() -> list[bool]:
            def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
                answers, _, _ = blockingCallFromThread(reactor, resolver.lookupText, name.decode().rstrip("."))
                found = [b"".join(answer.payload.data) for answer in answers if answer.type == names_dns.TXT]
                return found[0] if found else None
            verifier = dkim.DKIM(transaction.data)
            return [bool(verifier.verify(idx=index, dnsfunc=dnsfunc)) for index in (0, 1)]
        self.assertEqual(await self.in_thread(verify), [True, True])
        self.assertEqual(len(received.get_all("DKIM-Signature")), 2)


class InitiationByFromTests(ServerTestCase):
    """Initiation by From address ([send List] subjects) needs a verified From domain too."""

    async def setUp(self) -> None:
        dns_port = await start_dns(self, ZONES)
        await self.start(self.config(delivery={"dns_servers": [f"127.0.0.1:{dns_port}"]},
                                     initiation={"domain": "in.relay.test"}))
        store = self.service.store
        assert store is not None
        await store.add_account("shop", None)
        await store.set_setting("shop", "initiation_method", "from")
        await store.set_initiation_password_hash("shop", PasswordHasher().hash("violet harbour tractor whisper"))
        for name, sender in (("Verified", "news@shop.test"), ("Unverified", "news@nospf.test")):
            await store.add_list("shop", name, "News", sender)
            await store.add_members("shop", name, [ListMember("member@remote.test")])

    def initiate(self, sender: str, list_name: str) -> tuple[int, bytes]:
        with self.smtp() as smtp:
            smtp.ehlo()
            smtp.mail(sender)
            smtp.rcpt("shop@in.relay.test")
            return smtp.data(message(f"News <{sender}>", f"[send {list_name}] Spring offers", "shop@in.relay.test"))

    async def test_verified_from_initiates(self) -> None:
        code, reply = await self.in_thread(self.initiate, "news@shop.test", "Verified")
        self.assertEqual(code, 250, reply)
        [record] = [record for record in await self.service.spool.recover()
                    if record.message_id in reply.decode()]
        self.assertEqual((record.auth_method.value, record.initiation_list), ("initiation", "Verified"))
        self.assertIn("spf=pass smtp.mailfrom=news@shop.test", record.authentication_results)

    async def test_unverified_from_refused(self) -> None:
        code, reply = await self.in_thread(self.initiate, "news@nospf.test", "Unverified")
        self.assertEqual(f"{code} {reply.decode()}", NOT_VERIFIED_INITIATION)
