"""MAIL/RCPT argument parsing."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from jangotw.errors import ReplyError
from jangotw.ingress.paths import parse_parameters, parse_path


class PathTests(SynchronousTestCase):
    def reply(self, argument: str, keyword: str = "FROM") -> str:
        error = self.assertRaises(ReplyError, parse_path, argument, keyword, keyword == "FROM")
        return f"{error.code} {error.enhanced}"

    def test_accepts_ordinary_addresses(self) -> None:
        self.assertEqual(parse_path("FROM:<Jo.Bloggs+tag@Example.COM>", "FROM", True),
                         ("Jo.Bloggs+tag@example.com", ""))
        self.assertEqual(parse_path("from: <a@b.test> SIZE=10", "FROM", True), ("a@b.test", "SIZE=10"))
        self.assertEqual(parse_path('TO:<"john doe"@b.test>', "TO", False), ('"john doe"@b.test', ""))
        self.assertEqual(parse_path("TO:<a@[192.0.2.1]>", "TO", False), ("a@[192.0.2.1]", ""))

    def test_null_sender_only_for_mail(self) -> None:
        self.assertEqual(parse_path("FROM:<>", "FROM", True), ("", ""))
        self.assertEqual(self.reply("TO:<>", "TO"), "501 5.1.3")

    def test_refusals(self) -> None:
        self.assertEqual(self.reply("FROM:a@b.test"), "501 5.1.7")
        self.assertEqual(self.reply("FROM:<a@b.test>SIZE=1"), "501 5.1.7")
        self.assertEqual(self.reply("FROM:<@x.test:a@b.test>"), "553 5.1.7")
        self.assertEqual(self.reply("FROM:<a@-bad-.test>"), "553 5.1.7")
        self.assertEqual(self.reply("FROM:<" + "x" * 65 + "@b.test>"), "553 5.1.7")
        self.assertEqual(self.reply("FROM:<jö@b.test>"), "553 5.6.7")
        self.assertEqual(self.reply("TO:<a@b.test>"), "501 5.5.4")

    def test_parameters(self) -> None:
        self.assertEqual(parse_parameters("size=10 BODY=8BITMIME AUTH=<>"),
                         {"SIZE": "10", "BODY": "8BITMIME", "AUTH": "<>"})
        self.assertRaises(ReplyError, parse_parameters, "SIZE=1 SIZE=2")
        self.assertRaises(ReplyError, parse_parameters, "=x")
