"""jangomail-admin, run as a real process against a configuration in a temporary directory."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

import attrs

import jangotw
from jangotw.model import AccountSettings
from jangotw.admin.cli import CONFIG_ENV, DEFAULT_CONFIG, build_parser

STRONG = "violet harbour tractor whisper"
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(jangotw.__file__)))


class CommandLineTestCase(TestCase):
    """Runs the console script against a configuration in a temporary directory."""

    workers = 1  # [server] workers: one spool, data_dir/spool

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.data_dir = os.path.join(self.directory, "data")
        self.config = os.path.join(self.directory, "jangomail.toml")
        with open(self.config, "w") as handle:
            handle.write(f"[server]\ndata_dir = {json.dumps(self.data_dir)}\nworkers = {self.workers}\n"
                         "[smtp]\ntls_listen = []\n")
        self.env = {"PYTHONPATH": _PROJECT, "PATH": os.environ.get("PATH", "")}

    async def run_cli(self, *args: str, stdin: bytes | None = None,
                      env: dict[str, str] | None = None, config: bool = True) -> tuple[str, str, int]:
        argv = ["-m", "jangotw.admin.cli", *(["--config", self.config] if config else []), *args]
        out, err, code = await getProcessOutputAndValue(
            sys.executable, argv, env=env or self.env, path=self.directory, reactor=reactor,
            stdinBytes=stdin)
        return out.decode("utf-8"), err.decode("utf-8"), code

    async def ok(self, *args: str, stdin: bytes | None = None) -> str:
        """Run a command that must succeed silently on stderr; its standard output."""
        out, err, code = await self.run_cli(*args, stdin=stdin)
        self.assertEqual((err, code), ("", 0), args)
        return out

    async def ok_json(self, *args: str) -> Any:
        return json.loads(await self.ok("--json", *args))

    async def refused(self, *args: str, stdin: bytes | None = None, status: int = 1) -> str:
        """Run a command that must fail with C{status}, printing nothing on stdout; its stderr."""
        out, err, code = await self.run_cli(*args, stdin=stdin)
        self.assertEqual((out, code), ("", status), (args, err))
        return err

    async def add_alice(self) -> None:
        await self.ok("account", "add", "alice", "--no-password")


class CommandLineTests(CommandLineTestCase):
    """The console script's commands, output and exit statuses."""

    # accounts

    async def test_add_list_show(self) -> None:
        """An account added with --password-stdin is listed and shown; no password or hash is printed."""
        added = await self.ok("account", "add", "alice", "--password-stdin", stdin=STRONG.encode() + b"\n")
        self.assertEqual(added, "added account alice\n")
        listed = await self.ok_json("account", "list")
        self.assertEqual([(a["name"], a["disabled"], a["has_password"]) for a in listed],
                         [("alice", False, True)])
        shown = await self.ok_json("account", "show", "ALICE")
        self.assertEqual((shown["name"], shown["ips"], shown["from"]), ("alice", [], []))
        self.assertEqual(shown["settings"], attrs.asdict(AccountSettings()))
        text = await self.ok("account", "show", "alice")
        self.assertIn("account:  alice", text)
        self.assertIn("password: set", text)
        for output in (added, json.dumps(listed), json.dumps(shown), text):
            self.assertNotIn("violet", output)
            self.assertNotIn("argon2", output)
        self.assertTrue(os.path.exists(os.path.join(self.data_dir, "jangotw.sqlite3")))

    async def test_list_text(self) -> None:
        """The text listing is a table with a header row."""
        await self.add_alice()
        lines = (await self.ok("account", "list")).splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "STATUS", "PASSWORD", "CREATED"])
        self.assertEqual(lines[1].split()[:3], ["alice", "enabled", "none"])

    async def test_json_after_command(self) -> None:
        """--json may also follow the command."""
        await self.add_alice()
        out = await self.ok("account", "list", "--json")
        self.assertEqual(json.loads(out)[0]["name"], "alice")

    async def test_weak_password(self) -> None:
        """A weak password exits 1 with the reason on one line of stderr; no account is created."""
        err = await self.refused("account", "add", "alice", "--password-stdin", stdin=b"password1234\n")
        self.assertTrue(err.startswith("jangomail-admin: error: password refused: "), err)
        self.assertEqual(err.count("\n"), 1)
        self.assertNotIn("password1234", err)
        self.assertEqual(await self.ok_json("account", "list"), [])

    async def test_empty_password_on_stdin(self) -> None:
        """--password-stdin with nothing to read is refused."""
        err = await self.refused("account", "add", "alice", "--password-stdin", stdin=b"")
        self.assertIn("no password", err)

    async def test_password_needs_terminal_or_flag(self) -> None:
        """Without --password-stdin and with no terminal, adding is a usage error naming the flag."""
        err = await self.refused("account", "add", "alice", stdin=b"", status=2)
        self.assertIn("--password-stdin", err)
        self.assertIn("usage:", err)

    async def test_passwd(self) -> None:
        """passwd sets a new password read from stdin; weak ones are refused."""
        await self.add_alice()
        await self.refused("account", "passwd", "alice", "--password-stdin", stdin=b"alicealice12\n")
        out = await self.ok("account", "passwd", "alice", "--password-stdin", stdin=STRONG.encode() + b"\n")
        self.assertEqual(out, "changed the password of alice\n")
        self.assertTrue((await self.ok_json("account", "show", "alice"))["has_password"])

    async def test_duplicate(self) -> None:
        """Adding a name that exists, in any case, exits 1."""
        await self.add_alice()
        err = await self.refused("account", "add", "ALICE", "--no-password")
        self.assertEqual(err, "jangomail-admin: error: an account named 'alice' already exists\n")

    async def test_unknown_account(self) -> None:
        """Naming an account that does not exist exits 1."""
        for args in (("account", "show", "ghost"), ("account", "disable", "ghost"),
                     ("ip", "list", "ghost"), ("from", "add", "ghost", "@example.com")):
            err = await self.refused(*args)
            self.assertEqual(err, "jangomail-admin: error: no account named 'ghost'\n")

    async def test_disable_enable(self) -> None:
        """disable and enable change and report the account's status."""
        await self.add_alice()
        self.assertEqual(await self.ok("account", "disable", "alice"), "disabled account alice\n")
        self.assertTrue((await self.ok_json("account", "show", "alice"))["disabled"])
        self.assertIn("status:   disabled", await self.ok("account", "show", "alice"))
        self.assertFalse((await self.ok_json("account", "enable", "alice"))["disabled"])
        self.assertFalse((await self.ok_json("account", "show", "alice"))["disabled"])

    async def test_set_restrict_from(self) -> None:
        """account set parses the value for the setting; show reports it."""
        await self.add_alice()
        self.assertEqual(await self.ok("account", "set", "alice", "restrict_from", "true"),
                         "alice: restrict_from = true\n")
        self.assertTrue((await self.ok_json("account", "show", "alice"))["settings"]["restrict_from"])
        err = await self.refused("account", "set", "alice", "restrict_from", "perhaps")
        self.assertIn("true or false", err)
        err = await self.refused("account", "set", "alice", "colour", "blue")
        self.assertIn("unknown setting 'colour'", err)

    # networks

    async def test_ip_add_list_remove(self) -> None:
        """Networks are added, listed one per line and removed."""
        await self.add_alice()
        self.assertEqual(await self.ok("ip", "add", "alice", "192.0.2.0/24"), "authorised 192.0.2.0/24 for alice\n")
        await self.ok("ip", "add", "alice", "2001:db8::1")
        self.assertEqual(sorted((await self.ok("ip", "list", "alice")).splitlines()),
                         ["192.0.2.0/24", "2001:db8::1/128"])
        self.assertEqual(await self.ok("ip", "remove", "alice", "192.0.2.0/24"), "removed 192.0.2.0/24 from alice\n")
        self.assertEqual(await self.ok_json("ip", "list", "alice"), ["2001:db8::1/128"])
        await self.refused("ip", "remove", "alice", "192.0.2.0/24")

    async def test_invalid_cidr(self) -> None:
        """Text that is no address or range exits 1, quoting it."""
        await self.add_alice()
        err = await self.refused("ip", "add", "alice", "192.0.2.0/33")
        self.assertEqual(err, "jangomail-admin: error: invalid address or CIDR range: '192.0.2.0/33'\n")

    async def test_host_bits_set(self) -> None:
        """A range with host bits set exits 1 naming the network that was probably meant."""
        await self.add_alice()
        err = await self.refused("ip", "add", "alice", "198.51.2.3/16")
        self.assertIn("the network is 198.51.0.0/16", err)
        self.assertEqual(await self.ok_json("ip", "list", "alice"), [])

    # From addresses

    async def test_from_add_list_remove(self) -> None:
        """From addresses and domains are added (domain lower-cased), listed and removed."""
        await self.add_alice()
        self.assertEqual(await self.ok("from", "add", "alice", "@Example.COM"),
                         "authorised From @example.com for alice\n")
        await self.ok("from", "add", "alice", "news@example.org")
        self.assertEqual(sorted((await self.ok("from", "list", "alice")).splitlines()),
                         ["@example.com", "news@example.org"])
        await self.ok("from", "remove", "alice", "@example.com")
        self.assertEqual(await self.ok_json("from", "list", "alice"), ["news@example.org"])
        self.assertIn("invalid From address", await self.refused("from", "add", "alice", "example.org"))

    # usage and configuration

    async def test_usage_errors(self) -> None:
        """Missing or unknown arguments exit 2 with argparse's usage message."""
        for args in (("account",), ("account", "add"), ("bogus",), ("ip", "add", "alice"),
                     ("account", "add", "alice", "--password-stdin", "--no-password")):
            err = await self.refused(*args, status=2)
            self.assertIn("usage:", err)

    async def test_bad_config(self) -> None:
        """An unreadable or invalid configuration file exits 1 naming the problem."""
        out, err, code = await self.run_cli("--config", os.path.join(self.directory, "missing.toml"),
                                            "account", "list", config=False)
        self.assertEqual((out, code), ("", 1))
        self.assertIn("missing.toml: cannot read", err)
        with open(self.config, "a") as handle:
            handle.write("colour = 1\n")
        err = await self.refused("account", "list")
        self.assertIn("smtp.colour: unknown key", err)

    async def test_unreachable_redis_store(self) -> None:
        """A Redis store that does not answer is one clear error line, exit status 1."""
        with open(self.config, "w") as handle:  # nothing listens on port 1
            handle.write('[server]\nstore = "redis://127.0.0.1:1/0"\n[smtp]\ntls_listen = []\n')
        err = await self.refused("account", "list")
        self.assertIn("state store unavailable", err)
        self.assertEqual(err.count("\n"), 1)

    async def test_config_from_environment(self) -> None:
        """Without --config the file named by $JANGOMAIL_CONFIG is used."""
        env = {**self.env, CONFIG_ENV: self.config}
        out, err, code = await self.run_cli("account", "add", "alice", "--no-password", env=env, config=False)
        self.assertEqual((out, err, code), ("added account alice\n", "", 0))
        self.assertEqual([a["name"] for a in await self.ok_json("account", "list")], ["alice"])


class ParserTests(SynchronousTestCase):
    """Defaults of the argument parser."""

    def test_config_default(self) -> None:
        """--config defaults to $JANGOMAIL_CONFIG, else the system path."""
        self.assertEqual(build_parser({}).parse_args(["account", "list"]).config, DEFAULT_CONFIG)
        args = build_parser({CONFIG_ENV: "/tmp/x.toml"}).parse_args(["account", "list"])
        self.assertEqual((args.config, args.json), ("/tmp/x.toml", False))
