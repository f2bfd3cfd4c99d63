"""swaks, a real SMTP client in another process, relaying through STARTTLS and implicit TLS with AUTH."""
from __future__ import annotations

import os
import re

from twisted.internet.utils import getProcessOutputAndValue

from jangotw.auth.passwords import PasswordHasher

from .replies import QUEUED
from .server import ServerTestCase

SWAKS = "/usr/bin/swaks"
PASSWORD = "copper lantern orbit meadow"
_QUEUED_LINE = re.compile(r"^<~  " + re.escape(QUEUED) + r"([0-9A-Z]+)$", re.MULTILINE)


class SwaksTests(ServerTestCase):
    async def setUp(self) -> None:
        await self.start()
        assert self.service.store is not None
        await self.service.store.add_account("alice", PasswordHasher().hash(PASSWORD))

    async def swaks(self, port: int, *options: str) -> str:
        """Run swaks for one message from news@shop.test; its transcript, after checking it exited 0."""
        out, err, code = await getProcessOutputAndValue(SWAKS, [
            "--server", "127.0.0.1", "--port", str(port), "--helo", "client.test",
            "--from", "news@shop.test", "--to", "you@remote.test",
            "--auth-user", "alice", "--auth-password", PASSWORD, *options,
        ], env=dict(os.environ))
        transcript = out.decode("utf-8", "replace")
        self.assertEqual(code, 0, transcript + err.decode("utf-8", "replace"))
        return transcript

    async def assert_queued_for_alice(self, transcript: str) -> None:
        """The transcript has the 250 queued line (over TLS: "<~") and the spool holds that message for alice."""
        found = _QUEUED_LINE.findall(transcript)
        self.assertEqual(len(found), 1, transcript)
        [record] = await self.service.spool.recover()
        self.assertEqual(record.message_id, found[0])
        self.assertEqual((record.account, record.auth_method.value), ("alice", "smtp-auth"))
        self.assertEqual((record.envelope.sender, record.envelope.recipients), ("news@shop.test", ("you@remote.test",)))
        assert record.tls is not None
        self.assertTrue(record.tls.version.startswith("TLSv1."), record.tls)
        with open(self.service.spool.body_path(record.message_id), "rb") as handle:
            self.assertIn(b"This is a test mailing", handle.read())

    async def test_starttls_auth_plain(self) -> None:
        """swaks --tls --auth PLAIN on the STARTTLS listener: exit 0, 250 queued, spooled as alice over TLS."""
        transcript = await self.swaks(self.smtp_port, "--tls", "--auth", "PLAIN")
        self.assertIn("<-  220 2.0.0 Ready to start TLS", transcript)
        self.assertIn("<~  235 2.7.0 Authentication successful", transcript)
        await self.assert_queued_for_alice(transcript)

    async def test_starttls_auth_login(self) -> None:
        """swaks --tls --auth LOGIN on the STARTTLS listener: exit 0, 250 queued, spooled as alice over TLS."""
        transcript = await self.swaks(self.smtp_port, "--tls", "--auth", "LOGIN")
        self.assertIn("<~  334 VXNlcm5hbWU6", transcript)
        self.assertIn("<~  235 2.7.0 Authentication successful", transcript)
        await self.assert_queued_for_alice(transcript)

    async def test_implicit_tls_auth_plain(self) -> None:
        """swaks --tls-on-connect --auth PLAIN on the implicit-TLS listener (RFC 8314): exit 0, queued as alice."""
        transcript = await self.swaks(self.smtps_port, "--tls-on-connect", "--auth", "PLAIN")
        self.assertIn("<~  220 relay.test ESMTP jangotw", transcript)
        self.assertNotIn("STARTTLS", transcript)
        await self.assert_queued_for_alice(transcript)

    async def test_implicit_tls_auth_login(self) -> None:
        """swaks --tlsc --auth LOGIN on the implicit-TLS listener: exit 0, queued as alice."""
        transcript = await self.swaks(self.smtps_port, "--tlsc", "--auth", "LOGIN")
        self.assertIn("<~  220 relay.test ESMTP jangotw", transcript)
        self.assertIn("<~  235 2.7.0 Authentication successful", transcript)
        await self.assert_queued_for_alice(transcript)

    async def test_wrong_password_fails_swaks(self) -> None:
        """A wrong password: swaks sees 535 5.7.8, exits non-zero, and nothing is spooled."""
        out, _, code = await getProcessOutputAndValue(SWAKS, [
            "--server", "127.0.0.1", "--port", str(self.smtps_port), "--tlsc", "--helo", "client.test",
            "--from", "news@shop.test", "--to", "you@remote.test",
            "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "wrong horse",
        ], env=dict(os.environ))
        self.assertNotEqual(code, 0)
        self.assertIn("<~* 535 5.7.8 Authentication credentials invalid", out.decode("utf-8", "replace"))
        self.assertEqual(await self.service.spool.recover(), [])
