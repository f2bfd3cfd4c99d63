"""A message near the 30 MB limit streams to disk: the server's memory does not grow with it."""
from __future__ import annotations

import base64
import os
import re

from twisted.logger import Logger

from .server import ProcessTestCase, transaction

log = Logger()

MESSAGE_SIZE = 29 * 1024 * 1024
MAX_GROWTH_KB = 15 * 1024
_RECEIVED = re.compile(rb"Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n(\t[^\r\n]*\r\n)+\Z")


def big_message() -> bytes:
    """About 29 MB: headers, then base64 lines of 76 characters (random, so nothing compresses)."""
    headers = (b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: large\r\n"
               b"Date: Tue, 24 Nov 2026 07:00:00 +0000\r\nMessage-ID: <large@shop.test>\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n")
    lines = (MESSAGE_SIZE - len(headers)) // 78
    return headers + base64.encodebytes(os.urandom(lines * 57)).replace(b"\n", b"\r\n")


class LargeMessageMemoryTests(ProcessTestCase):
    async def test_29_mb_message_with_bounded_memory(self) -> None:
        """A 29 MB message (under the default 30 MB max_message_size) sent with smtplib to twistd is
        spooled whole, with only our Received field added, while the server's peak resident memory
        (VmHWM) rises less than 15 MB above its resident memory just before sending (VmRSS)."""
        process = await self.start_twistd()
        message = big_message()
        self.assertTrue(MESSAGE_SIZE - 78 < len(message) <= MESSAGE_SIZE, len(message))

        def send(text: bytes) -> str:
            with self.smtp() as client:
                return transaction(client, "news@shop.test", ["you@remote.test"], text)
        await self.in_thread(send, b"From: news@shop.test\r\n\r\nwarm-up\r\n")  # first-use imports
        before = process.status()
        message_id = await self.in_thread(send, message)
        after = process.status()

        growth = after["VmHWM"] - before["VmRSS"]
        figures = (f"server VmRSS before {before['VmRSS']} kB, VmHWM before {before['VmHWM']} kB, "
                   f"VmHWM after {after['VmHWM']} kB, VmRSS after {after['VmRSS']} kB: peak growth "
                   f"{growth} kB for a {len(message)}-byte message (limit {MAX_GROWTH_KB} kB)")
        log.info("{figures}", figures=figures)  # in _trial_temp/test.log, for the record
        self.assertLess(growth, MAX_GROWTH_KB, figures)

        path = self.offline_spool().body_path(message_id)
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            added = handle.read(size - len(message))
            self.assertEqual(handle.read(), message)
        self.assertRegex(added, _RECEIVED)
        self.assertEqual(size, len(message) + len(added))
