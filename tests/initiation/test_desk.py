"""Mail to an initiation mailbox, through a real session: accepted or refused in-session."""
from __future__ import annotations

from jangotw.initiation.rules import FROM_MISMATCH, NO_DEFAULT_LIST, UNKNOWN_LIST, WRONG_PASSWORD

from tests.ingress.harness import SessionTestCase

INITIATION_PASSWORD = "violet harbour tractor whisper"


def mail(subject: str, sender: str = "News <news@shop.test>") -> bytes:
    return f"From: {sender}\r\nTo: shop@in.test\r\nSubject: {subject}\r\n\r\nSpring!\r\n".encode()


class InitiationSessionTests(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account("shop")
        self.successResultOf(self.store.set_initiation_password_hash("shop", self.hasher.hash(INITIATION_PASSWORD)))
        self.successResultOf(self.store.add_list("shop", "Spring News", "News", "news@shop.test"))
        self.connect()
        self.ehlo()

    def send(self, subject: str, **options: str) -> str:
        return self.send_message("anyone@else.test", ["shop@in.test"], mail(subject, **options))

    def test_password_form_accepted_and_password_never_spooled(self) -> None:
        """The command is removed from the Subject before the message reaches the disk."""
        self.assertIn("250 2.0.0", self.send(f"[{INITIATION_PASSWORD}-send spring news] Spring offers"))
        [(record, data)] = self.spooled()
        self.assertEqual((record.account, record.auth_method.value, record.initiation_list),
                         ("shop", "initiation", "Spring News"))
        self.assertIn(b"\r\nSubject: Spring offers\r\n", data)
        self.assertNotIn(INITIATION_PASSWORD.encode(), data)

    def test_refusals_in_session(self) -> None:
        self.assertIn(f"550 5.7.1 {WRONG_PASSWORD}", self.send("[wrong-send Spring News] x"))
        self.assertIn(f"550 5.7.1 {UNKNOWN_LIST}", self.send(f"[{INITIATION_PASSWORD}-send Autumn] x"))
        self.assertIn(f"550 5.7.1 {NO_DEFAULT_LIST}", self.send(f"[{INITIATION_PASSWORD}-send] x"))
        self.assertIn("550 5.7.1", self.send("no command here"))
        self.assertEqual(self.spooled(), [])

    def test_default_list(self) -> None:
        self.successResultOf(self.store.set_default_list("shop", "spring news"))
        self.assertIn("250 2.0.0", self.send(f"[{INITIATION_PASSWORD}-send] Offers"))

    def test_from_method(self) -> None:
        self.successResultOf(self.store.set_setting("shop", "initiation_method", "from"))
        self.assertIn("250 2.0.0", self.send("[send Spring News] Offers"))
        self.assertIn(f"550 5.7.1 {FROM_MISMATCH}", self.send("[send Spring News] Offers",
                                                              sender="Mallory <mallory@evil.test>"))

    def test_failed_passwords_throttled(self) -> None:
        for _ in range(3):
            self.send("[wrong-send Spring News] x")
        self.assertIn("454 4.7.0", self.send(f"[{INITIATION_PASSWORD}-send Spring News] x"))

    def test_one_mailbox_per_message(self) -> None:
        self.account("other")
        replies = self.send_message("a@else.test", ["shop@in.test", "other@in.test"],
                                    mail(f"[{INITIATION_PASSWORD}-send Spring News] x"))
        self.assertIn("550 5.7.1 Address a mailing to one initiation mailbox alone", replies)
