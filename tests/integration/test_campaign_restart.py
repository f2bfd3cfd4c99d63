"""A 10,000-member mailing through a real twistd process killed mid-campaign and restarted:
every member gets exactly one copy, each with its own unsubscribe link."""
from __future__ import annotations

import json
import os
import re
import smtplib
from email import message_from_bytes
from email.policy import default

from twisted.internet import reactor
from twisted.internet.task import deferLater

from jangotw.auth.passwords import PasswordHasher
from jangotw.store.opening import open_store

from tests.support.capture import Script, start_capture

from .server import ProcessTestCase, TwistdProcess

MEMBERS = 10_000
PASSWORD = "violet harbour tractor whisper"
MESSAGE = ("From: Shop News <news@shop.test>\r\nTo: shop@in.relay.test\r\n"
           "Subject: [{password}-send Spring News] Spring offers\r\n\r\n"
           "Hello! Unsubscribe: https://track.relay.test/u.z?***uniqueid***\r\n")
_UNSUBSCRIBE = re.compile(r"/u\.z\?(\w+)")


class CampaignRestartTests(ProcessTestCase):
    timeout = 300

    async def wait_for(self, condition, what: str, seconds: float = 60) -> None:  # type: ignore[no-untyped-def]
        """Poll C{condition} every 10 ms until it is true; fail after C{seconds}."""
        for _ in range(int(seconds * 100)):
            if condition():
                return
            await deferLater(reactor, 0.01)
        self.fail(f"timed out waiting for {what}")

    def progress(self) -> dict | None:
        directory = os.path.join(self.data_dir, "spool", "campaigns")
        for name in os.listdir(directory) if os.path.isdir(directory) else ():
            if name.endswith(".json"):
                try:
                    with open(os.path.join(directory, name)) as handle:
                        return json.load(handle)  # type: ignore[no-any-return]
                except ValueError:  # caught between truncate and write: read again
                    return None
        return None

    async def test_killed_mid_campaign_resumes_without_duplicates(self) -> None:
        capture = await start_capture(self)
        # The destination defers everything until the restart, so any repeat would come
        # from the campaign itself, not from deliveries in flight at the kill.
        capture.script.answer("MAIL", "451 4.3.0 Not yet", times=None)
        process = await self.start_twistd(
            delivery={"hold": False, "relay_host": f"127.0.0.1:{capture.port}", "retry_base": 1, "retry_max": 2},
            initiation={"listen": ["tcp:0:interface=127.0.0.1"], "domain": "in.relay.test"},
            tracking={"base_url": "https://track.relay.test"})
        members = os.path.join(os.path.dirname(self.config_path), "members.csv")
        with open(members, "w") as handle:
            handle.write("email\n" + "".join(f"member{index:05d}@remote.test\n" for index in range(MEMBERS)))
        await self.admin("list", "add", "shop", "Spring News", "--from", "Shop News <news@shop.test>")
        await self.admin("list", "import", "shop", "Spring News", members)
        store = await open_store(reactor, self.relay_config)
        await store.set_initiation_password_hash("shop", PasswordHasher().hash(PASSWORD))
        await store.close()
        await self.wait_for(lambda: any(name.startswith("initiation:") for name in process.ports),
                            "the initiation listener")
        [inbox] = [port for name, port in process.ports.items() if name.startswith("initiation:")]

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", inbox, timeout=60) as client:
                client.sendmail("news@shop.test", ["shop@in.relay.test"], MESSAGE.format(password=PASSWORD))
        await self.in_thread(send)

        def halfway() -> bool:
            progress = self.progress()
            return progress is not None and progress["queued"] >= 3000
        await self.wait_for(halfway, "the campaign to be under way")
        await process.kill("KILL")
        progress = self.progress()
        assert progress is not None
        self.assertFalse(progress["done"], "the kill came after the campaign ended: nothing was tested")

        capture.script = Script()
        restarted = TwistdProcess(self.config_path, os.path.join(os.path.dirname(self.config_path), "again.log"))
        self.addCleanup(restarted.stop)
        await restarted.start()
        await capture.when_received(MEMBERS + 1)  # every member, and the confirmation to the sender

        copies = [t for t in capture.transactions if t.recipients[0].startswith("member")]
        recipients = sorted(r for t in copies for r in t.recipients)
        self.assertEqual(len(recipients), MEMBERS, "no member mailed twice")
        self.assertEqual(recipients, [f"member{index:05d}@remote.test" for index in range(MEMBERS)])
        unsubscribe_ids = set()
        for transaction in copies:
            message = message_from_bytes(transaction.data, policy=default)
            self.assertEqual(str(message["To"]), transaction.recipients[0])
            unsubscribe_ids.add(_UNSUBSCRIBE.search(message.get_content()).group(1))  # type: ignore[union-attr]
        self.assertEqual(len(unsubscribe_ids), MEMBERS, "one unique unsubscribe link per member")
        [confirmation] = [t for t in capture.transactions if t.recipients == ["news@shop.test"]]
        text = message_from_bytes(confirmation.data, policy=default).get_content().replace("\r\n", "\n")
        self.assertIn(f"Members: {MEMBERS}\nQueued: {MEMBERS}\n", text)
