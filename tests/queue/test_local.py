"""The bounce mailbox: asynchronous bounces to signed VERP return paths update the Bounce list."""
from __future__ import annotations

from jangotw.model import BOUNCE_LIST, RecipientStatus
from jangotw.queue.local import BounceMailbox
from jangotw.queue.verp import VerpSigner
from jangotw.tracking.links import TokenSigner

from .test_bounces import OUTLOOK_OUT_OF_OFFICE, POSTFIX_MAILBOX_FULL_DELAYED, POSTFIX_USER_UNKNOWN
from .test_manager import QueueTestCase


class BounceMailboxTests(QueueTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.signer = VerpSigner(b"k" * 32)
        self.tokens = TokenSigner(b"t" * 32)
        self.mailbox = BounceMailbox(self.spool, self.store, self.signer, self.clock, self.tokens.parse_unsubscribe)
        self.successResultOf(self.store.record_send("18ABC0F3E2D41ZX7Q9", "shop", ["gone@remote.test"], 0.0))
        self.return_path = self.signer.return_path("18ABC0F3E2D41ZX7Q9", 0, "b.test")

    def receive(self, data: bytes, recipient: str | None = None) -> str:
        record = self.spooled((recipient or self.return_path,), sender="", account=None, data=data)
        [result] = self.successResultOf(self.mailbox.deliver(record, [recipient or self.return_path]))
        self.assertEqual(result.status, RecipientStatus.DELIVERED)  # consumed either way
        return result.text

    def test_hard_bounce_lists_the_original_recipient(self) -> None:
        self.assertIn("hard bounce", self.receive(POSTFIX_USER_UNKNOWN))
        [entry] = self.successResultOf(self.store.list_suppressed("shop", BOUNCE_LIST))
        self.assertEqual(entry.address, "gone@remote.test")
        self.assertIn("asynchronous bounce", entry.reason)

    def test_soft_bounces_list_after_the_limit(self) -> None:
        for count in range(1, 4):
            self.assertIn(f"soft bounce {count}", self.receive(POSTFIX_MAILBOX_FULL_DELAYED))
        self.assertEqual(len(self.successResultOf(self.store.list_suppressed("shop", BOUNCE_LIST))), 1)

    def test_auto_reply_changes_nothing(self) -> None:
        self.assertIn("auto-reply", self.receive(OUTLOOK_OUT_OF_OFFICE))
        self.assertEqual(self.successResultOf(self.store.list_suppressed("shop", BOUNCE_LIST)), [])

    def test_forged_token_ignored(self) -> None:
        forged = self.return_path.replace("-0-", "-1-")
        self.assertIn("not a valid signed return path", self.receive(POSTFIX_USER_UNKNOWN, forged))
        self.assertEqual(self.successResultOf(self.store.list_suppressed("shop", BOUNCE_LIST)), [])

    def test_unknown_message_ignored(self) -> None:
        other = self.signer.return_path("18ABC0F3E2D41ZX7QQ", 0, "b.test")
        self.assertIn("unknown message", self.receive(POSTFIX_USER_UNKNOWN, other))

    def test_mailto_unsubscribe(self) -> None:
        """Mail to unsubscribe+ID@bounce_domain (List-Unsubscribe's mailto:) unsubscribes that recipient."""
        address = f"unsubscribe+{self.tokens.unsubscribe_id('18ABC0F3E2D41ZX7Q9', 0)}@b.test"
        self.assertIn("unsubscribed", self.receive(b"Subject: unsubscribe\r\n\r\n", address))
        self.assertEqual(self.successResultOf(self.store.suppressed("shop", "unsubscribe", ["gone@remote.test"])),
                         {"gone@remote.test"})
        self.assertIn("not a valid", self.receive(b"Subject: x\r\n\r\n", "unsubscribe+forged@b.test"))
