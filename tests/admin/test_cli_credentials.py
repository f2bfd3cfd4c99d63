"""jangomail-admin's login, token, 2fa and login-ip commands, run as a real process on a real SQLite store."""
from __future__ import annotations

import json
import re

import pyotp

from jangotw.auth.tokens import parse_token

from .test_cli import STRONG, CommandLineTestCase

OTHER_STRONG = "correct horse battery staple"


class LoginCommandTests(CommandLineTestCase):
    """login add, list, show, restrict, passwd, disable, enable and delete."""

    async def add_bob(self, *options: str) -> str:
        await self.add_alice()
        return await self.ok("login", "add", "alice", "bob", "--password-stdin", *options,
                             stdin=STRONG.encode() + b"\n")

    async def test_add_show_list(self) -> None:
        """A login added with --password-stdin may relay only, names its SMTP user, and shows no password."""
        added = await self.add_bob()
        self.assertIn("SMTP user:    bob@alice", added)
        self.assertIn("may:          relay", added)
        shown = await self.ok_json("login", "show", "alice", "BOB")
        self.assertEqual({k: shown[k] for k in ("name", "smtp_user", "capabilities", "two_factor", "ip_rules",
                                                "tokens", "disabled")},
                         {"name": "bob", "smtp_user": "bob@alice", "capabilities": ["relay"], "two_factor": "off",
                          "ip_rules": [], "tokens": [], "disabled": False})
        listed = await self.ok("login", "list", "alice")
        self.assertEqual(listed.splitlines()[1].split()[:4], ["bob", "bob@alice", "enabled", "relay"])
        for output in (added, json.dumps(shown), listed):
            self.assertNotIn("violet", output)
            self.assertNotIn("argon2", output)

    async def test_refusals(self) -> None:
        """Unknown capabilities, weak passwords and unknown logins exit 1 with one line; usage errors exit 2."""
        await self.add_alice()
        err = await self.refused("login", "add", "alice", "bob", "--allow", "relay,root", "--password-stdin",
                                 stdin=STRONG.encode() + b"\n")
        self.assertEqual(err, "jangomail-admin: error: unknown capability 'root': choose from relay, initiation, "
                              "api, reports, settings\n")
        err = await self.refused("login", "add", "alice", "bob", "--password-stdin", stdin=b"password1234\n")
        self.assertTrue(err.startswith("jangomail-admin: error: password refused: "), err)
        err = await self.refused("login", "show", "alice", "ghost")
        self.assertEqual(err, "jangomail-admin: error: account 'alice' has no login named 'ghost'\n")
        err = await self.refused("login", "add", "alice", "bob", stdin=b"", status=2)
        self.assertIn("--password-stdin", err)
        self.assertNotIn("--no-password", err)
        await self.refused("login", "restrict", "alice", "bob", status=2)

    async def test_change_and_delete(self) -> None:
        """restrict replaces capabilities; passwd, disable and enable change the login; delete removes it."""
        await self.add_bob("--allow", "relay,api")
        self.assertEqual((await self.ok_json("login", "restrict", "alice", "bob", "--allow", "reports"))["capabilities"],
                         ["reports"])
        out = await self.ok("login", "passwd", "alice", "bob", "--password-stdin", stdin=OTHER_STRONG.encode() + b"\n")
        self.assertEqual(out, "changed the password of login bob of alice\n")
        self.assertEqual(await self.ok("login", "disable", "alice", "bob"), "disabled login bob of alice\n")
        self.assertTrue((await self.ok_json("login", "show", "alice", "bob"))["disabled"])
        self.assertEqual(await self.ok("login", "enable", "alice", "bob"), "enabled login bob of alice\n")
        self.assertEqual(await self.ok("login", "delete", "alice", "bob"),
                         "deleted login bob of alice (0 tokens, 0 IP rules)\n")
        self.assertEqual(await self.ok_json("login", "list", "alice"), [])


class TokenCommandTests(CommandLineTestCase):
    """token create prints the token once; token list never shows it; token revoke."""

    async def test_create_list_revoke(self) -> None:
        """The token is printed once with its id and a warning; listings show its prefix, never its
        secret; revoking works at once, and again says it already was."""
        await self.add_alice()
        out = await self.ok("token", "create", "alice", "--expires", "90d", "--label", "CI deploys")
        lines = out.splitlines()
        token = lines[0]
        parsed = parse_token(token)
        assert parsed is not None
        token_id = parsed[0]
        self.assertRegex(token, r"\Ajgt_[0-9a-f]{12}_[A-Za-z0-9_-]{32}\Z")
        self.assertEqual(lines[1], "Copy this token now: it cannot be shown again (only its hash is kept).")
        self.assertIn(f"id:       {token_id}", lines)
        self.assertIn("scopes:   smtp, api", lines)
        self.assertIn("label:    CI deploys", lines)
        self.assertTrue(any(re.match(r"expires:  \d{4}-\d\d-\d\dT", line) for line in lines), lines)

        listed = await self.ok("token", "list", "alice")
        listed_json = await self.ok("--json", "token", "list", "alice")
        secret = token.split("_", 2)[2]  # the secret itself may hold "_"
        for output in (listed, listed_json):
            self.assertNotIn(secret, output)
        self.assertIn(f"jgt_{token_id}", listed)
        entry = json.loads(listed_json)[0]
        self.assertEqual((entry["id"], entry["prefix"], entry["label"], entry["scopes"], entry["state"],
                          entry["last_used"], entry["revoked"]),
                         (token_id, f"jgt_{token_id}", "CI deploys", ["smtp", "api"], "active", None, None))

        self.assertEqual(await self.ok("token", "revoke", f"jgt_{token_id}"),
                         f"revoked token {token_id} of alice: it is refused from now on\n")
        again = await self.ok("token", "revoke", token_id)
        self.assertIn("was already revoked", again)
        self.assertEqual((await self.ok_json("token", "list", "alice"))[0]["state"], "revoked")

    async def test_json_create_and_refusals(self) -> None:
        """--json create holds the token once; unknown ids and logins exit 1."""
        await self.add_alice()
        created = await self.ok_json("token", "create", "alice", "--scope", "smtp", "--expires", "never")
        self.assertEqual((created["scopes"], created["expires"]), (["smtp"], None))
        self.assertIsNotNone(parse_token(created["token"]))
        err = await self.refused("token", "revoke", "0123456789ab")
        self.assertEqual(err, "jangomail-admin: error: no token with id 0123456789ab\n")
        err = await self.refused("token", "create", "alice", "--login", "bob")
        self.assertEqual(err, "jangomail-admin: error: account 'alice' has no login named 'bob'\n")


class TwoFactorCommandTests(CommandLineTestCase):
    """2fa enable (pending, then --code), status and disable, as a script would drive them."""

    async def test_enable_confirm_disable_with_recovery_code(self) -> None:
        """Without a terminal, enable prints the set-up and leaves it pending; --code with a code from the
        printed URI turns it on; that code is not accepted again; a printed recovery code turns it off."""
        await self.add_alice()
        out = await self.ok("2fa", "enable", "alice")
        uri = re.search(r"^URI: (otpauth://\S+)$", out, re.MULTILINE)
        assert uri is not None
        codes = re.findall(r"^  ([a-z2-7]{4}(?:-[a-z2-7]{4}){3})$", out, re.MULTILINE)
        self.assertEqual(len(codes), 10)
        self.assertIn("█", out)
        self.assertIn("Confirm it with: jangomail-admin 2fa enable alice --code CODE", out)
        self.assertIn("two-factor is pending", await self.ok("2fa", "status", "alice"))

        code = pyotp.parse_uri(uri.group(1)).now()
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        self.assertIn("code refused", await self.refused("2fa", "enable", "alice", "--code", wrong))
        confirmed = await self.ok("2fa", "enable", "alice", "--code", code)
        self.assertEqual(confirmed, "two-factor is on for alice with a code; 10 unused recovery codes\n")
        self.assertEqual((await self.ok_json("2fa", "status", "alice"))["state"], "on")

        err = await self.refused("2fa", "disable", "alice", "--code", code)
        self.assertIn("already used", err)
        await self.refused("2fa", "disable", "alice", status=2)
        out = await self.ok("2fa", "disable", "alice", "--code", codes[0])
        self.assertEqual(out, "two-factor is off for alice with a recovery code\n")
        self.assertEqual((await self.ok_json("2fa", "status", "alice"))["state"], "off")

    async def test_login_json_and_force(self) -> None:
        """A login is named LOGIN@ACCOUNT; --json prints the set-up as one document; --force needs no code."""
        await self.add_alice()
        await self.ok("login", "add", "alice", "bob", "--password-stdin", stdin=STRONG.encode() + b"\n")
        setup = await self.ok_json("2fa", "enable", "bob@alice")
        self.assertEqual((setup["name"], setup["state"], len(setup["recovery_codes"])), ("bob@alice", "pending", 10))
        self.assertEqual((await self.ok_json("login", "show", "alice", "bob"))["two_factor"], "pending")
        out = await self.ok("2fa", "disable", "bob@alice", "--force")
        self.assertEqual(out, "two-factor is off for bob@alice without a code (forced by an operator)\n")


class LoginIPCommandTests(CommandLineTestCase):
    """login-ip add, list and remove."""

    async def test_add_list_remove(self) -> None:
        """Rules are added for the account or a login, listed with their scopes and removed by range."""
        await self.add_alice()
        await self.ok("login", "add", "alice", "bob", "--password-stdin", stdin=STRONG.encode() + b"\n")
        self.assertEqual(await self.ok("login-ip", "list", "alice"),
                         "no login IP rules: the credentials work from any address\n")
        self.assertEqual(await self.ok("login-ip", "add", "alice", "192.0.2.0/24"),
                         "limited alice to 192.0.2.0/24 for smtp, api\n")
        self.assertEqual(await self.ok("login-ip", "add", "alice", "198.51.100.10-198.51.100.20", "--login", "bob",
                                       "--scope", "smtp"),
                         "limited login bob of alice to 198.51.100.10-198.51.100.20 for smtp\n")
        rules = await self.ok_json("login-ip", "list", "alice")
        self.assertEqual([(r["login"], r["range"], r["scopes"]) for r in rules],
                         [(None, "192.0.2.0/24", ["smtp", "api"]), ("bob", "198.51.100.10-198.51.100.20", ["smtp"])])
        self.assertEqual([r["range"] for r in await self.ok_json("login-ip", "list", "alice", "--login", "bob")],
                         ["198.51.100.10-198.51.100.20"])
        err = await self.refused("login-ip", "add", "alice", "not-an-address")
        self.assertEqual(err.count("\n"), 1)
        self.assertEqual(await self.ok("login-ip", "remove", "alice", "192.0.2.0/24"),
                         "alice is no longer limited to 192.0.2.0/24\n")
        err = await self.refused("login-ip", "remove", "alice", "192.0.2.0/24")
        self.assertEqual(err, "jangomail-admin: error: account 'alice' has no login IP rule for 192.0.2.0/24\n")
