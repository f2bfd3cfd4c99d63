"""An acknowledged message is never lost: across a clean restart, and across SIGKILL of twistd."""
from __future__ import annotations

import os

from jangotw.spool.layout import TMP

from .replies import BANNER, START_DATA
from .server import ProcessTestCase, RawSMTP, ServerTestCase, transaction


def numbered(number: int) -> bytes:
    return (f"From: Shop <news@shop.test>\r\nTo: r{number}@remote.test\r\nSubject: number {number}\r\n"
            f"Date: Tue, 24 Nov 2026 07:00:00 +0000\r\nMessage-ID: <{number}@shop.test>\r\n\r\n"
            f"This is message {number}.\r\n" + "0123456789" * number + "\r\n").encode()


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


class RestartTests(ServerTestCase):
    async def test_accepted_messages_recovered_by_a_new_service(self) -> None:
        """Three acknowledged messages are still queued after stopService and a new RelayService on
        the same data_dir: same queue ids, same envelopes and records, byte-identical bodies; and
        the new service accepts mail."""
        config = self.config()
        first = await self.start(config)
        await self.ip_account()

        def send(count: int) -> list[str]:
            with self.smtp() as client:
                return [transaction(client, "news@shop.test", [f"r{number}@remote.test"], numbered(number))
                        for number in range(count)]
        acknowledged = await self.in_thread(send, 3)
        before = await first.spool.recover()
        bodies = {record.message_id: read(first.spool.body_path(record.message_id)) for record in before}
        await first.stopService()

        second = await self.start(config)
        after = await second.spool.recover()
        self.assertEqual([record.message_id for record in after], acknowledged)
        self.assertEqual(after, before)
        for number, record in enumerate(after):
            self.assertEqual(record.envelope.recipients, (f"r{number}@remote.test",))
            self.assertEqual((record.account, record.auth_method.value), ("shop", "ip"))
            body = read(second.spool.body_path(record.message_id))
            self.assertEqual(body, bodies[record.message_id])
            self.assertTrue(body.endswith(numbered(number)))
        [fourth] = await self.in_thread(send, 1)
        self.assertEqual(len(await second.spool.recover()), 4)
        self.assertNotIn(fourth, acknowledged)


class CrashTests(ProcessTestCase):
    async def test_acknowledged_messages_survive_sigkill(self) -> None:
        """twistd killed with SIGKILL right after 20 acknowledged messages and during a 21st:
        a fresh Spool recovers exactly the 20 acknowledged queue ids with their envelopes and
        bodies, and the unacknowledged partial file in tmp/ is removed."""
        process = await self.start_twistd()
        messages = [numbered(number) for number in range(20)]
        spool_root = os.path.join(self.data_dir, "spool")

        def send() -> tuple[list[str], RawSMTP]:
            with self.smtp() as client:
                acknowledged = [transaction(client, "news@shop.test", [f"r{number}@remote.test"], message)
                                for number, message in enumerate(messages)]
            unfinished = RawSMTP(self.smtp_port)
            self.assertEqual(unfinished.reply(), BANNER)
            unfinished.command("EHLO client.test")
            unfinished.command("MAIL FROM:<news@shop.test>")
            unfinished.command("RCPT TO:<r20@remote.test>")
            self.assertEqual(unfinished.command("DATA"), START_DATA)  # the server has created tmp/<id>.msg
            unfinished.send(b"From: news@shop.test\r\nSubject: never finished\r\n\r\nhalf a mess")
            return acknowledged, unfinished

        acknowledged, unfinished = await self.in_thread(send)
        self.addCleanup(unfinished.close)
        self.assertEqual(len(os.listdir(os.path.join(spool_root, TMP))), 1)
        self.assertEqual(await process.kill("KILL"), -9)

        spool = self.offline_spool()
        records = await spool.recover()
        self.assertEqual([record.message_id for record in records], acknowledged)
        for number, record in enumerate(records):
            self.assertEqual(record.envelope.sender, "news@shop.test")
            self.assertEqual(record.envelope.recipients, (f"r{number}@remote.test",))
            self.assertEqual((record.account, record.auth_method.value), ("shop", "ip"))
            body = read(spool.body_path(record.message_id))
            self.assertTrue(body.endswith(messages[number]), record.message_id)
            self.assertEqual(record.size, len(body))
        self.assertEqual(os.listdir(os.path.join(spool_root, TMP)), [])
