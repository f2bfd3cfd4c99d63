"""TLS on real sockets: STARTTLS command injection (CVE-2011-0411) and the TLS 1.2 floor."""
from __future__ import annotations

import ssl
import warnings

from .replies import BANNER, OK, READY_FOR_TLS, SENDER_OK
from .server import RawSMTP, ServerTestCase, client_tls


def tls_1_1_client() -> ssl.SSLContext:
    """A client that offers at most TLS 1.1.

    OpenSSL 3 refuses to offer TLS 1.0/1.1 at its default security level (the
    handshake fails client-side with NO_CIPHERS_AVAILABLE before a byte is
    sent), so the level is lowered to 0: the ClientHello then really offers
    TLS 1.1, and it is the server that must refuse it.
    """
    with warnings.catch_warnings():  # TLSVersion.TLSv1_1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def handshake_error(raw: RawSMTP, context: ssl.SSLContext) -> str:
    """The reason the handshake failed, or "" if it succeeded."""
    try:
        raw.starttls(context)
    except ssl.SSLError as error:
        return str(error.reason)
    return ""


class StartTLSInjectionTests(ServerTestCase):
    async def test_plaintext_pipelined_with_starttls_is_never_executed(self) -> None:
        """Commands sent in the same packet as STARTTLS are discarded, not run after the handshake
        (RFC 3207 section 6, CVE-2011-0411): the first reply over TLS answers the first command
        sent over TLS, and the session starts afresh (EHLO needed; STARTTLS gone, AUTH offered)."""
        await self.start()
        await self.ip_account()

        def session() -> list[str]:
            with self.connect() as raw:
                self.assertEqual(raw.reply(), BANNER)
                self.assertIn("250 STARTTLS", raw.command("EHLO x").split("\n"))
                raw.send(b"STARTTLS\r\nMAIL FROM:<a@b.test>\r\n")
                self.assertEqual(raw.reply(), READY_FOR_TLS)
                raw.starttls(client_tls())
                return [raw.command("NOOP"), raw.command("EHLO x"), raw.command("MAIL FROM:<c@d.test>"),
                        raw.command("QUIT")]

        noop, ehlo, mail, quit = await self.in_thread(session)
        self.assertEqual(noop, OK)
        lines = ehlo.split("\n")
        self.assertEqual(lines[0], "250-relay.test greets x")
        self.assertNotIn("STARTTLS", ehlo)
        self.assertEqual(lines[-1], "250 AUTH PLAIN LOGIN")
        self.assertEqual(mail, SENDER_OK)
        self.assertEqual(quit, "221 2.0.0 Bye")


class TLSVersionTests(ServerTestCase):
    async def test_tls_1_1_refused_on_implicit_tls_port(self) -> None:
        """The implicit-TLS listener accepts TLS 1.2 or newer only: a client offering at most
        TLS 1.1 gets a protocol_version alert and never sees the banner (see L{tls_1_1_client}
        for why the client's security level is lowered)."""
        await self.start()
        context = tls_1_1_client()

        def attempt() -> str:
            with RawSMTP(self.smtps_port) as raw:
                return handshake_error(raw, context)

        self.assertEqual(await self.in_thread(attempt), "TLSV1_ALERT_PROTOCOL_VERSION")

    async def test_tls_1_1_refused_after_starttls(self) -> None:
        """STARTTLS has the same floor: the 220 is followed by a protocol_version alert for TLS 1.1."""
        await self.start()
        context = tls_1_1_client()

        def attempt() -> str:
            with self.connect() as raw:
                raw.reply()
                raw.command("EHLO x")
                self.assertEqual(raw.command("STARTTLS"), READY_FOR_TLS)
                return handshake_error(raw, context)

        self.assertEqual(await self.in_thread(attempt), "TLSV1_ALERT_PROTOCOL_VERSION")

    async def test_tls_1_2_accepted_on_implicit_tls_port(self) -> None:
        """The same weakened client allowed TLS 1.2 completes the handshake and gets the banner:
        the refusal above is about the version alone."""
        await self.start()
        context = tls_1_1_client()
        context.maximum_version = ssl.TLSVersion.TLSv1_2

        def attempt() -> tuple[str, str]:
            with RawSMTP(self.smtps_port) as raw:
                raw.starttls(context)
                return str(raw.sock.version()), raw.reply()  # type: ignore[attr-defined]

        self.assertEqual(await self.in_thread(attempt), ("TLSv1.2", BANNER))
