"""Mass email initiation end to end: mail to the initiation mailbox goes to every list member."""
from __future__ import annotations

import re
from email import message_from_bytes
from email.policy import default

from tests.support.capture import start_capture


from jangotw.admin.campaigns import CampaignAdmin
from jangotw.auth.passwords import PasswordHasher
from jangotw.model import ListMember

from .server import ServerTestCase

PASSWORD = "violet harbour tractor whisper"
MESSAGE = ("From: Marketing <me@shop.test>\r\nTo: shop@in.relay.test\r\n"
           "Subject: [{password}-send Spring News] Spring offers\r\n\r\n"
           "Hello, unsubscribe: http://x/u.z?***uniqueid***\r\n")


class InitiationTests(ServerTestCase):
    async def test_list_mailing_with_suppression_and_confirmation(self) -> None:
        capture = await start_capture(self)
        await self.start(self.config(
            delivery={"hold": False, "relay_host": f"127.0.0.1:{capture.port}"},
            initiation={"domain": "in.relay.test"},
            tracking={"base_url": "https://track.relay.test"}))
        store = self.service.store
        await store.add_account("shop", None)
        await store.set_initiation_password_hash("shop", PasswordHasher().hash(PASSWORD))
        await store.add_list("shop", "Spring News", "Shop News", "news@shop.test")
        await store.add_members("shop", "Spring News", [ListMember(f"member{i}@remote.test") for i in range(5)])
        await store.suppress("shop", "unsubscribe", "member3@remote.test", "asked")

        def send() -> dict:
            with self.smtp() as client:
                return client.sendmail("me@shop.test", ["shop@in.relay.test"], MESSAGE.format(password=PASSWORD))
        self.assertEqual(await self.in_thread(send), {})
        await capture.when_received(5)  # four members and the confirmation
        await self.service.queue.settled()
        copies = [t for t in capture.transactions if t.recipients[0].startswith("member")]
        self.assertEqual(sorted(r for t in copies for r in t.recipients),
                         [f"member{i}@remote.test" for i in (0, 1, 2, 4)])
        ids = set()
        for transaction in copies:
            message = message_from_bytes(transaction.data, policy=default)
            self.assertEqual(str(message["To"]), transaction.recipients[0])
            self.assertEqual(str(message["From"]), "Shop News <news@shop.test>")
            self.assertEqual(str(message["Subject"]), "Spring offers")
            self.assertNotIn(PASSWORD, transaction.data.decode())
            self.assertIn("List-Unsubscribe", message)
            ids.add(re.search(r"/u\.z\?(\w+)", message.get_content()).group(1))
        self.assertEqual(len(ids), 4, "one unique unsubscribe id per member")
        [confirmation] = [t for t in capture.transactions if t.recipients == ["me@shop.test"]]
        text = message_from_bytes(confirmation.data, policy=default).get_content()
        self.assertIn("Members: 5", text)
        self.assertIn("Queued: 4", text)
        self.assertIn("Suppressed (Bounce/Unsubscribe lists): 1", text)
        campaigns = CampaignAdmin(store)
        [campaign] = await campaigns.list("shop")
        self.assertEqual((campaign["list_name"], campaign["subject"], campaign["members"], campaign["queued"],
                          campaign["suppressed"], campaign["state"]),
                         ("Spring News", "Spring offers", 5, 4, 1, "queued"))

    async def test_wrong_password_refused_in_session(self) -> None:
        await self.start(self.config(initiation={"domain": "in.relay.test"}))
        await self.service.store.add_account("shop", None)
        await self.service.store.set_initiation_password_hash("shop", PasswordHasher().hash(PASSWORD))

        def send() -> tuple[int, bytes]:
            with self.smtp() as client:
                client.ehlo()
                client.mail("me@shop.test")
                client.rcpt("shop@in.relay.test")
                return client.data(MESSAGE.format(password="not-it"))
        self.assertEqual(await self.in_thread(send), (550, b"5.7.1 wrong initiation password"))
        self.assertEqual(await self.service.spool.recover(), [])
