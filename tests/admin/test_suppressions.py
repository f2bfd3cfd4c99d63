"""jangomail-admin suppress …: the Bounce and Unsubscribe lists from the command line."""
from __future__ import annotations

import os

from .test_cli import CommandLineTestCase


class SuppressCommandTests(CommandLineTestCase):
    async def test_add_list_remove(self) -> None:
        await self.add_alice()
        self.assertIn("is on the bounce list", await self.ok("suppress", "add", "alice", "Gone@Remote.TEST",
                                                              "--list", "bounce", "--reason", "550 5.1.1"))
        await self.ok("suppress", "add", "alice", "@spam.test", "--list", "unsubscribe")
        [entry] = await self.ok_json("suppress", "list", "alice", "--list", "bounce")
        self.assertEqual((entry["address"], entry["reason"]), ("Gone@remote.test", "550 5.1.1"))
        await self.ok("suppress", "remove", "alice", "gone@remote.test", "--list", "bounce")
        self.assertEqual(await self.ok_json("suppress", "list", "alice", "--list", "bounce"), [])
        self.assertIn("not on the bounce list",
                      await self.refused("suppress", "remove", "alice", "gone@remote.test", "--list", "bounce"))

    async def test_import_reports_bad_rows_and_export_round_trips(self) -> None:
        await self.add_alice()
        source = os.path.join(self.directory, "in.csv")
        with open(source, "w") as handle:
            handle.write("address,reason\nok@remote.test,asked\nnot an address\n@domain.test\nok@remote.test\n")
        report = await self.ok_json("suppress", "import", "alice", source, "--list", "unsubscribe")
        self.assertEqual((report["added"], report["already_listed"]), (2, 1))
        self.assertEqual([row["line"] for row in report["invalid"]], [3])
        target = os.path.join(self.directory, "out.csv")
        await self.ok("suppress", "export", "alice", target, "--list", "unsubscribe")
        with open(target) as handle:
            lines = handle.read().splitlines()
        self.assertEqual(lines[0], "address,reason,added")
        self.assertEqual(sorted(line.split(",")[0] for line in lines[1:]), ["@domain.test", "ok@remote.test"])

    async def test_bad_input(self) -> None:
        await self.add_alice()
        self.assertIn("invalid address", await self.refused("suppress", "add", "alice", "nope", "--list", "bounce"))
        self.assertIn("no account", await self.refused("suppress", "list", "bob", "--list", "bounce"))
        await self.refused("suppress", "add", "alice", "a@b.test", "--list", "spam", status=2)
        await self.refused("suppress", "add", "alice", "a@b.test", status=2)
