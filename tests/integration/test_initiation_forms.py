"""Every subject form under every initiation method, through smtplib to the mailbox on loopback,
with a capture SMTP server as the members' destination; and each refusal, with nothing sent."""
from __future__ import annotations

from email import message_from_bytes
from email.header import Header
from email.policy import default

from jangotw.auth.passwords import PasswordHasher
from jangotw.initiation import rules
from jangotw.model import ListMember

from tests.support.capture import CaptureServer, start_capture
from tests.support.dns import start_dns, txt

from .server import ServerTestCase

# A '-' and a ']' in the password: the command still ends at the right bracket.
PASSWORD = "blue-ocean]tide 42"
SPRING = [f"spring{index}@remote.test" for index in range(3)]
WEEKLY = [f"weekly{index}@remote.test" for index in range(2)]


class InitiationFormTests(ServerTestCase):
    async def start_mailbox(self, method: str) -> CaptureServer:
        capture = await start_capture(self)
        # shop.test lets the client (127.0.0.1) send for it: the "from" method's From address verifies (SPF).
        dns_port = await start_dns(self, {"shop.test": {"shop.test": [txt("v=spf1 ip4:127.0.0.1 -all")]}})
        await self.start(self.config(delivery={"hold": False, "relay_host": f"127.0.0.1:{capture.port}",
                                               "dns_servers": [f"127.0.0.1:{dns_port}"]},
                                     initiation={"domain": "in.relay.test"}))
        store = self.service.store
        await store.add_account("shop", None)
        await store.set_setting("shop", "initiation_method", method)
        await store.set_initiation_password_hash("shop", PasswordHasher().hash(PASSWORD))
        await store.add_list("shop", "Spring News", "Spring", "news@shop.test")
        await store.add_members("shop", "Spring News", [ListMember(address) for address in SPRING])
        await store.add_list("shop", "Weekly Digest", "Weekly", "digest@shop.test")
        await store.add_members("shop", "Weekly Digest", [ListMember(address) for address in WEEKLY])
        await store.set_default_list("shop", "Weekly Digest")
        return capture

    def send(self, subject: str, sender: str, mailbox: str = "shop@in.relay.test") -> "object":
        message = (f"From: Marketing <{sender}>\r\nTo: {mailbox}\r\nSubject: {subject}\r\n"
                   "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello members\r\n")

        def transaction() -> tuple[int, bytes]:
            with self.smtp() as client:
                client.ehlo()
                client.mail(sender)
                client.rcpt(mailbox)
                return client.data(message.encode("utf-8"))
        return self.in_thread(transaction)

    async def assert_mailed(self, capture: CaptureServer, members: list[str], subject: str,
                            list_from: str) -> None:
        """Every member got one copy with the command gone from the subject, and the sender
        got the confirmation."""
        await capture.when_received(len(members) + 1)
        await self.service.queue.settled()
        copies = [t for t in capture.transactions if t.recipients[0] in members]
        self.assertEqual(sorted(r for t in copies for r in t.recipients), sorted(members))
        for transaction in copies:
            message = message_from_bytes(transaction.data, policy=default)
            self.assertEqual(str(message["Subject"]), subject)
            self.assertEqual(message["From"].addresses[0].addr_spec, list_from)
            self.assertNotIn(PASSWORD, transaction.data.decode("utf-8", "replace"))
        self.assertEqual(len(capture.transactions), len(members) + 1, "the confirmation, and nothing else")

    async def assert_refused(self, reply: "object", reason: str) -> None:
        self.assertEqual(await reply, (550, f"5.7.1 {reason}".encode()))  # type: ignore[misc]
        self.assertEqual(await self.service.spool.recover(), [], "nothing spooled, nothing sent")

    # -- every form under every method

    async def test_password_method_named_list(self) -> None:
        capture = await self.start_mailbox("password")
        self.assertEqual((await self.send(f"[{PASSWORD}-send Spring News] Spring offers", "me@else.test"))[0], 250)  # type: ignore[index]
        await self.assert_mailed(capture, SPRING, "Spring offers", "news@shop.test")

    async def test_password_method_default_list(self) -> None:
        capture = await self.start_mailbox("password")
        self.assertEqual((await self.send(f"[{PASSWORD}-send] This week", "me@else.test"))[0], 250)  # type: ignore[index]
        await self.assert_mailed(capture, WEEKLY, "This week", "digest@shop.test")

    async def test_from_method_named_list(self) -> None:
        capture = await self.start_mailbox("from")
        self.assertEqual((await self.send("[send Spring News] Spring offers", "news@shop.test"))[0], 250)  # type: ignore[index]
        await self.assert_mailed(capture, SPRING, "Spring offers", "news@shop.test")

    async def test_from_method_default_list(self) -> None:
        capture = await self.start_mailbox("from")
        self.assertEqual((await self.send("[SEND] This week", "digest@shop.test"))[0], 250)  # type: ignore[index]
        await self.assert_mailed(capture, WEEKLY, "This week", "digest@shop.test")

    async def test_both_method_named_list_in_any_case(self) -> None:
        capture = await self.start_mailbox("both")
        self.assertEqual((await self.send(f"[{PASSWORD}-Send spring news] Spring offers", "news@shop.test"))[0], 250)  # type: ignore[index]
        await self.assert_mailed(capture, SPRING, "Spring offers", "news@shop.test")

    async def test_both_method_default_list(self) -> None:
        capture = await self.start_mailbox("both")
        self.assertEqual((await self.send(f"[{PASSWORD}-send] This week", "digest@shop.test"))[0], 250)  # type: ignore[index]
        await self.assert_mailed(capture, WEEKLY, "This week", "digest@shop.test")

    async def test_encoded_word_subject(self) -> None:
        """An RFC 2047 subject is decoded before the command is read; the rest is sent as written."""
        capture = await self.start_mailbox("password")
        subject = Header(f"[{PASSWORD}-send Spring News] Frühlingsangebote", "utf-8").encode()
        self.assertTrue(subject.startswith("=?utf-8?"))
        self.assertEqual((await self.send(subject, "me@else.test"))[0], 250)  # type: ignore[index]
        await self.assert_mailed(capture, SPRING, "Frühlingsangebote", "news@shop.test")

    # -- refusals: a 550 with the reason in the session, and nothing sent

    async def test_wrong_password(self) -> None:
        await self.start_mailbox("password")
        await self.assert_refused(self.send("[not-it-send Spring News] Hi", "me@else.test"), rules.WRONG_PASSWORD)

    async def test_unknown_list(self) -> None:
        await self.start_mailbox("password")
        await self.assert_refused(self.send(f"[{PASSWORD}-send Autumn News] Hi", "me@else.test"),
                                  rules.UNKNOWN_LIST)

    async def test_missing_default_list(self) -> None:
        await self.start_mailbox("password")
        await self.service.store.delete_list("shop", "Weekly Digest")
        await self.assert_refused(self.send(f"[{PASSWORD}-send] Hi", "me@else.test"), rules.NO_DEFAULT_LIST)

    async def test_from_mismatch(self) -> None:
        await self.start_mailbox("from")
        await self.assert_refused(self.send("[send Spring News] Hi", "digest@shop.test"), rules.FROM_MISMATCH)

    async def test_no_command(self) -> None:
        """A subject without the bracket is refused with the accepted forms in the reply."""
        await self.start_mailbox("password")
        code, text = await self.send("Spring offers", "me@else.test")  # type: ignore[misc]
        self.assertEqual(code, 550)
        self.assertIn(b"[YourPassword-send ListName] Subject", text)
        self.assertEqual(await self.service.spool.recover(), [])
