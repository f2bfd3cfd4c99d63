"""Crash safety: SIGKILL while mail is being accepted and delivered loses nothing acknowledged."""
from __future__ import annotations

import os
import smtplib
import threading
from email import message_from_bytes

from twisted.logger import Logger

from tests.support.capture import start_capture

from .server import ProcessTestCase, TwistdProcess

log = Logger()


class KillDuringDeliveryTests(ProcessTestCase):
    async def test_every_acknowledged_message_arrives_after_sigkill(self) -> None:
        """twistd is killed (SIGKILL) after ten deliveries while a client keeps sending and earlier
        messages wait for a retry (the first 30 were refused with 451); after a restart every
        message that got 250 reaches the destination. Duplicates are possible only for
        deliveries in flight at the kill (the journal's documented crash window)."""
        capture = await start_capture(self)
        capture.script.answer("RCPT", "451 4.3.0 try again in a second", times=30)
        process = await self.start_twistd(delivery={
            "hold": False, "relay_host": f"127.0.0.1:{capture.port}", "retry_base": 1})
        acknowledged: list[str] = []
        stop = threading.Event()

        def send() -> None:
            try:
                with self.smtp() as client:
                    for number in range(400):
                        if stop.is_set():
                            return
                        subject = f"crash-{number}"
                        client.sendmail("news@shop.test", [f"r{number}@remote.test"],
                                        f"Subject: {subject}\r\n\r\nbody {number}\r\n")
                        acknowledged.append(subject)
            except (smtplib.SMTPException, OSError):
                pass  # the server died under us: what was acknowledged so far counts

        sending = self.in_thread(send)
        await capture.when_received(10)
        await process.kill("KILL")
        stop.set()
        await sending
        self.assertGreaterEqual(len(acknowledged), 40)

        restarted = TwistdProcess(self.config_path, os.path.join(os.path.dirname(self.config_path), "again.log"))
        self.addCleanup(restarted.stop)
        await restarted.start()

        def subjects() -> set[str]:
            return {str(message_from_bytes(t.data)["Subject"]) for t in capture.transactions}

        while not set(acknowledged) <= subjects():
            await capture.when_received(len(capture.transactions) + 1)
        duplicates = len(capture.transactions) - len(subjects())
        log.info("crash test: {acknowledged} acknowledged, {received} received, {duplicates} duplicates",
                 acknowledged=len(acknowledged), received=len(capture.transactions), duplicates=duplicates)
        self.assertLessEqual(duplicates, 20, "only deliveries in flight at the kill may repeat")
