"""Every admin API route over real HTTP: what it does, and how it refuses.

The fixture (L{ApiTestCase}, in test_api) runs a real RelayService; tokens
C{self.shop}, C{self.other} (plain accounts) and C{self.ops} (an operator)
act as their accounts.
"""
from __future__ import annotations

import csv
import io
import json
from ipaddress import ip_network

import attrs
import pyotp

from jangotw.initiation.fanout import CampaignProgress
from jangotw.model import BOUNCE_LIST, TrackingEvent
from jangotw.pipeline.quota import month_of
from tests.integration.server import transaction
from tests.support.dns import start_dns

from .test_api import OTHER_PASSWORD, PASSWORD, ApiTestCase

NEW_PASSWORD = "amber socket walrus drift"
MESSAGE = b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: hi\r\n\r\nHello\r\n"


class AccountRouteTests(ApiTestCase):
    async def test_create_an_account_and_log_in_as_it(self) -> None:
        created = await self.call("POST", "/accounts", {"name": "newco", "password": NEW_PASSWORD}, self.ops)
        self.assertEqual((created.status, created.json["name"], created.json["has_password"]), (201, "newco", True))
        login = await self.call("POST", "/session", {"username": "newco", "password": NEW_PASSWORD})
        self.assertEqual(login.status, 200, login.body)
        bare = await self.call("POST", "/accounts", {"name": "bare"}, self.ops)
        self.assertEqual((bare.status, bare.json["has_password"]), (201, False))
        self.assertError(await self.call("POST", "/accounts", {"name": "bad name"}, self.ops), 400, "invalid_input")
        weak = await self.call("POST", "/accounts", {"name": "weak", "password": "Password123!"}, self.ops)
        self.assertError(weak, 400, "invalid_input")
        self.assertIn("password refused", weak.error["message"])

    async def test_show_disable_enable(self) -> None:
        shown = (await self.get("/accounts/shop", self.shop)).json
        self.assertEqual((shown["name"], shown["ips"], shown["from"], shown["settings"]["wrap"]), ("shop", [], [], 76))
        self.assertEqual((await self.call("POST", "/accounts/other/disable", token=self.ops)).json["disabled"], True)
        self.assertEqual((await self.call("POST", "/accounts/other/enable", token=self.ops)).json["disabled"], False)
        self.assertEqual((await self.get("/accounts/other", self.other)).status, 200)
        self.assertError(await self.call("POST", "/accounts/ghost/enable", token=self.ops), 404, "not_found")

    async def test_change_the_password(self) -> None:
        changed = await self.call("PUT", "/accounts/shop/password", {"password": NEW_PASSWORD}, self.shop)
        self.assertEqual(changed.status, 200, changed.body)
        self.assertEqual((await self.call("POST", "/session", {"username": "shop", "password": NEW_PASSWORD})).status,
                         200)
        self.assertError(await self.call("PUT", "/accounts/shop/password", {"password": "short"}, self.shop),
                         400, "invalid_input")

    async def test_settings_typed_and_checked_before_storing(self) -> None:
        self.assertEqual((await self.get("/accounts/shop/settings", self.shop)).json["settings"]["open_tracking"],
                         False)
        changed = await self.call("PATCH", "/accounts/shop/settings",
                                  {"open_tracking": True, "wrap": 0, "manager_email": "boss@shop.test"}, self.shop)
        self.assertEqual(changed.status, 200, changed.body)
        settings = changed.json["settings"]
        self.assertEqual((settings["open_tracking"], settings["wrap"], settings["manager_email"]),
                         (True, 0, "boss@shop.test"))
        refused = await self.call("PATCH", "/accounts/shop/settings",
                                  {"wrap": 60, "suppression_reply": "bounce"}, self.shop)
        self.assertError(refused, 400, "invalid_value", "suppression_reply")
        self.assertEqual((await self.get("/accounts/shop/settings", self.shop)).json["settings"]["wrap"], 0)
        self.assertError(await self.call("PATCH", "/accounts/shop/settings", {"wrap": -1}, self.shop),
                         400, "invalid_value", "wrap")
        self.assertError(await self.call("PATCH", "/accounts/shop/settings", {"colour": "red"}, self.shop),
                         400, "unknown_field", "colour")

    async def test_initiation_password(self) -> None:
        done = await self.call("PUT", "/accounts/shop/initiation-password", {"password": NEW_PASSWORD}, self.shop)
        self.assertEqual((done.status, done.json["initiation_password"]), (200, True))
        self.assertTrue((await self.get("/accounts/shop/lists", self.shop)).json["initiation_password"])
        same = await self.call("PUT", "/accounts/shop/initiation-password", {"password": PASSWORD}, self.shop)
        self.assertError(same, 400, "invalid_input")

    async def test_usage(self) -> None:
        month = month_of(self.service.reactor.seconds())
        await self.call("PATCH", "/accounts/shop/settings", {"monthly_messages": 100}, self.shop)
        await self.store.charge("shop", month, 25, 2500, 100, 0, False)
        usage = (await self.get("/accounts/shop/usage", self.shop)).json
        self.assertEqual((usage["month"], usage["messages"], usage["bytes"], usage["monthly_messages"],
                          usage["messages_percent"], usage["bytes_percent"]), (month, 25, 2500, 100, 25.0, None))
        self.assertEqual((await self.get("/accounts/shop/usage?month=2001-01", self.shop)).json["messages"], 0)
        self.assertError(await self.get("/accounts/shop/usage?month=2001-13", self.shop), 400, "invalid_input")
        self.assertError(await self.get("/accounts/ghost/usage", self.ops), 404, "not_found")


class RelayAuthorisationRouteTests(ApiTestCase):
    async def test_relay_networks(self) -> None:
        added = await self.call("POST", "/accounts/shop/ips", {"network": "2001:db8::/32"}, self.shop)
        self.assertEqual((added.status, added.json), (201, {"account": "shop", "network": "2001:db8::/32"}))
        self.assertEqual((await self.get("/accounts/shop/ips", self.shop)).json, ["2001:db8::/32"])
        removed = await self.call("DELETE", "/accounts/shop/ips/2001:db8::%2F32", token=self.shop)
        self.assertEqual(removed.status, 200, removed.body)
        self.assertEqual((await self.get("/accounts/shop/ips", self.shop)).json, [])
        self.assertError(await self.call("POST", "/accounts/shop/ips", {"network": "nowhere"}, self.shop),
                         400, "invalid_input")
        self.assertError(await self.call("POST", "/accounts/shop/ips", {}, self.shop), 400, "missing_field", "network")

    async def test_from_addresses(self) -> None:
        added = await self.call("POST", "/accounts/shop/from", {"address": "@Shop.Test"}, self.shop)
        self.assertEqual((added.status, added.json["address"]), (201, "@shop.test"))
        self.assertEqual((await self.get("/accounts/shop/from", self.shop)).json, ["@shop.test"])
        self.assertEqual((await self.call("DELETE", "/accounts/shop/from/@shop.test", token=self.shop)).status, 200)
        self.assertError(await self.call("DELETE", "/accounts/shop/from/@shop.test", token=self.shop),
                         404, "not_found")
        self.assertError(await self.call("POST", "/accounts/shop/from", {"address": "no-at-sign"}, self.shop),
                         400, "invalid_input")


class LoginRouteTests(ApiTestCase):
    async def test_login_life_cycle(self) -> None:
        created = await self.call("POST", "/accounts/shop/logins",
                                  {"name": "sales", "password": OTHER_PASSWORD, "capabilities": ["relay", "api"]},
                                  self.shop)
        self.assertEqual((created.status, created.json["smtp_user"], created.json["capabilities"]),
                         (201, "sales@shop", ["relay", "api"]))
        self.assertError(await self.call("POST", "/accounts/shop/logins", {"name": "sales", "password": NEW_PASSWORD},
                                         self.shop), 409, "conflict")
        self.assertEqual([login["name"] for login in (await self.get("/accounts/shop/logins", self.shop)).json],
                         ["sales"])
        shown = (await self.get("/accounts/shop/logins/sales", self.shop)).json
        self.assertEqual((shown["two_factor"], shown["ip_rules"], shown["tokens"]), ("off", [], []))
        changed = await self.call("PATCH", "/accounts/shop/logins/sales",
                                  {"capabilities": ["reports"], "disabled": True}, self.shop)
        self.assertEqual((changed.json["capabilities"], changed.json["disabled"]), (["reports"], True))
        self.assertError(await self.call("PATCH", "/accounts/shop/logins/sales", {"capabilities": ["fly"]},
                                         self.shop), 400, "invalid_input")
        password = await self.call("PUT", "/accounts/shop/logins/sales/password", {"password": NEW_PASSWORD},
                                   self.shop)
        self.assertEqual(password.status, 200, password.body)
        deleted = await self.call("DELETE", "/accounts/shop/logins/sales", token=self.shop)
        self.assertEqual((deleted.status, deleted.json["name"]), (200, "sales"))
        self.assertError(await self.get("/accounts/shop/logins/sales", self.shop), 404, "not_found")
        self.assertError(await self.call("POST", "/accounts/shop/logins", {"name": "x", "password": "weak"}, self.shop),
                         400, "invalid_input")

    async def test_login_ip_rules(self) -> None:
        await self.login("shop", "sales", "relay")
        added = await self.call("POST", "/accounts/shop/login-ips",
                                {"range": "198.51.100.0/24", "login": "sales", "scopes": ["smtp"]}, self.shop)
        self.assertEqual((added.status, added.json["login"], added.json["scopes"], added.json["new"]),
                         (201, "sales", ["smtp"], True))
        rules = (await self.get("/accounts/shop/login-ips", self.shop)).json
        self.assertEqual([rule["range"] for rule in rules], ["198.51.100.0/24"])
        self.assertEqual((await self.get("/accounts/shop/login-ips?login=sales", self.shop)).json, rules)
        self.assertError(await self.call("DELETE", "/accounts/shop/login-ips/198.51.100.0%2F24", token=self.shop),
                         404, "not_found")  # the account has no such rule: the login has
        removed = await self.call("DELETE", "/accounts/shop/login-ips/198.51.100.0%2F24?login=sales", token=self.shop)
        self.assertEqual((removed.status, removed.json["removed"]), (200, True))
        self.assertError(await self.call("POST", "/accounts/shop/login-ips", {"range": "1.2.3"}, self.shop),
                         400, "invalid_input")
        self.assertError(await self.call("POST", "/accounts/shop/login-ips", {"range": "192.0.2.1", "login": "nobody"},
                                         self.shop), 404, "not_found")

    async def test_tokens(self) -> None:
        await self.login("shop", "sales", "relay")
        created = await self.call("POST", "/accounts/shop/tokens",
                                  {"login": "sales", "scopes": ["smtp"], "expires": "90d", "label": "shop app"},
                                  self.shop)
        self.assertEqual(created.status, 201, created.body)
        token = created.json
        self.assertTrue(token["token"].startswith(f"jgt_{token['id']}_"))
        self.assertEqual((token["login"], token["scopes"], token["label"]), ("sales", ["smtp"], "shop app"))
        listed = (await self.get("/accounts/shop/tokens", self.shop)).json
        self.assertIn(token["id"], [entry["id"] for entry in listed])
        self.assertNotIn(token["token"], json.dumps(listed))
        self.assertError(await self.call("POST", "/accounts/shop/tokens", {"login": "sales", "scopes": ["api"]},
                                         self.shop), 400, "invalid_input")
        self.assertError(await self.call("POST", "/accounts/shop/tokens", {"expires": "soon"}, self.shop),
                         400, "invalid_input")
        other_id = (await self.get("/accounts/other/tokens", self.other)).json[0]["id"]
        self.assertError(await self.call("DELETE", f"/accounts/shop/tokens/{other_id}", token=self.shop),
                         404, "not_found")
        self.assertEqual((await self.get("/accounts/other", self.other)).status, 200)
        revoked = await self.call("DELETE", f"/accounts/shop/tokens/jgt_{token['id']}", token=self.shop)
        self.assertEqual((revoked.json["state"], revoked.json["already_revoked"]), ("revoked", False))
        self.assertError(await self.call("DELETE", "/accounts/shop/tokens/zzz", token=self.shop), 400, "invalid_input")

    async def test_two_factor_set_up_and_off(self) -> None:
        self.assertEqual((await self.get("/accounts/shop/two-factor", self.shop)).json["state"], "off")
        setup = await self.call("POST", "/accounts/shop/two-factor", {}, self.shop)
        self.assertEqual((setup.status, setup.json["state"], len(setup.json["recovery_codes"])), (201, "pending", 10))
        totp = pyotp.TOTP(setup.json["secret"])
        self.assertError(await self.call("POST", "/accounts/shop/two-factor/confirm", {"code": "12"}, self.shop),
                         400, "invalid_input")
        confirmed = await self.call("POST", "/accounts/shop/two-factor/confirm", {"code": self.code(totp)}, self.shop)
        self.assertEqual((confirmed.status, confirmed.json["state"]), (200, "on"), confirmed.body)
        self.assertEqual((await self.get("/accounts/shop/two-factor", self.shop)).json["state"], "on")
        self.assertError(await self.call("POST", "/session", {"username": "shop", "password": PASSWORD}),
                         401, "two_factor_required")
        off = await self.call("POST", "/accounts/shop/two-factor/disable",
                              {"code": setup.json["recovery_codes"][0]}, self.shop)
        self.assertEqual((off.json["state"], off.json["method"]), ("off", "recovery code"))
        self.assertError(await self.call("POST", "/accounts/shop/two-factor/disable", {"code": "123456"}, self.shop),
                         400, "invalid_input")
        await self.login("shop", "sales", "relay")
        for_login = await self.call("POST", "/accounts/shop/two-factor", {"login": "sales"}, self.shop)
        self.assertEqual(for_login.json["name"], "sales@shop")
        self.assertEqual((await self.get("/accounts/shop/two-factor?login=sales", self.shop)).json["state"], "pending")
        self.assertError(await self.get("/accounts/shop/two-factor?login=ghost", self.shop), 404, "not_found")


class ListRouteTests(ApiTestCase):
    async def test_list_life_cycle(self) -> None:
        created = await self.call("POST", "/accounts/shop/lists", {"name": "News Letter", "from": "News <n@shop.test>"},
                                  self.shop)
        self.assertEqual((created.status, created.json["from_address"], created.json["members"]),
                         (201, "n@shop.test", 0))
        self.assertError(await self.call("POST", "/accounts/shop/lists", {"name": "news letter"}, self.shop),
                         409, "conflict")
        self.assertEqual((await self.get("/accounts/shop/lists/news%20letter", self.shop)).json["name"], "News Letter")
        changed = await self.call("PATCH", "/accounts/shop/lists/News%20Letter", {"from": "", "default": True},
                                  self.shop)
        self.assertEqual((changed.json["from"], changed.json["default"]), ("", True))
        self.assertError(await self.call("PATCH", "/accounts/shop/lists/News%20Letter", {"default": False},
                                         self.shop), 400, "invalid_value", "default")
        self.assertEqual((await self.get("/accounts/shop/lists", self.shop)).json["default"], "News Letter")
        self.assertEqual((await self.call("DELETE", "/accounts/shop/lists/News%20Letter", token=self.shop)).status, 200)
        self.assertError(await self.get("/accounts/shop/lists/News%20Letter", self.shop), 404, "not_found")
        self.assertError(await self.call("POST", "/accounts/shop/lists", {"name": "[bad]"}, self.shop),
                         400, "invalid_input")

    async def test_members_import_streamed_and_paged(self) -> None:
        """A CSV body past twisted.web's in-memory limit (it is then read from a temporary file) imports
        every row; bad rows are reported by line; members come back page by page."""
        await self.call("POST", "/accounts/shop/lists", {"name": "News"}, self.shop)
        rows = ["email,name,city"] + [f"user{index:05}@example.com,User {index},Town" for index in range(4000)]
        rows.insert(3, "not-an-address,Nobody,Nowhere")
        body = ("\r\n".join(rows) + "\r\n").encode()
        self.assertGreater(len(body), 100_000)
        imported = await self.call("POST", "/accounts/shop/lists/News/members", raw=body, token=self.shop,
                                   headers={"Content-Type": "text/csv"})
        self.assertEqual(imported.status, 200, imported.body)
        answer = imported.json
        self.assertEqual((answer["rows"], answer["added"], answer["invalid"], answer["members"], answer["fields"]),
                         (4001, 4000, 1, 4000, ["name", "city"]))
        self.assertEqual(answer["errors"][0]["line"], 4)
        page = (await self.get("/accounts/shop/lists/News/members?limit=2", self.shop)).json
        self.assertEqual([member["address"] for member in page["members"]],
                         ["user00000@example.com", "user00001@example.com"])
        self.assertEqual(page["members"][0]["fields"], {"name": "User 0", "city": "Town"})
        following = (await self.get(f"/accounts/shop/lists/News/members?limit=2&after={page['next']}",
                                    self.shop)).json
        self.assertEqual(following["members"][0]["address"], "user00002@example.com")
        self.assertError(await self.get("/accounts/shop/lists/News/members?limit=1001", self.shop),
                         400, "invalid_value", "limit")
        removed = await self.call("DELETE", "/accounts/shop/lists/News/members/user00000@example.com",
                                  token=self.shop)
        self.assertEqual(removed.json["removed"], True)
        self.assertError(await self.call("DELETE", "/accounts/shop/lists/News/members/user00000@example.com",
                                         token=self.shop), 404, "not_found")
        self.assertError(await self.call("POST", "/accounts/shop/lists/Gone/members", raw=b"a@b.test\r\n",
                                         token=self.shop), 404, "not_found")

    async def test_import_refuses_bytes_that_are_not_utf8_row_by_row(self) -> None:
        await self.call("POST", "/accounts/shop/lists", {"name": "News"}, self.shop)
        imported = await self.call("POST", "/accounts/shop/lists/News/members", token=self.shop,
                                   raw=b"a@shop.test,Ann\r\nb@shop.test,B\xe9a\r\n")
        self.assertEqual((imported.json["added"], imported.json["invalid"]), (1, 1))


class SuppressionRouteTests(ApiTestCase):
    async def test_add_query_remove(self) -> None:
        added = await self.call("POST", "/accounts/shop/suppressions/unsubscribe", {"address": "@spam.test"},
                                self.shop)
        self.assertEqual((added.status, added.json["added"]), (201, True))
        query = (await self.get("/accounts/shop/suppressions/unsubscribe/bob@spam.test", self.shop)).json
        self.assertEqual((query["address"], query["suppressed"]), ("bob@spam.test", True))
        self.assertFalse((await self.get("/accounts/shop/suppressions/bounce/bob@spam.test", self.shop)).json[
            "suppressed"])
        self.assertFalse((await self.get("/accounts/other/suppressions/unsubscribe/bob@spam.test", self.other)).json[
            "suppressed"])
        removed = await self.call("DELETE", "/accounts/shop/suppressions/unsubscribe/@spam.test", token=self.shop)
        self.assertEqual(removed.json["removed"], True)
        self.assertError(await self.call("DELETE", "/accounts/shop/suppressions/unsubscribe/@spam.test",
                                         token=self.shop), 404, "not_found")
        self.assertError(await self.get("/accounts/shop/suppressions/greylist/bob@spam.test", self.shop),
                         400, "invalid_input")
        self.assertError(await self.get("/accounts/shop/suppressions/bounce/nobody", self.shop), 400, "invalid_input")

    async def test_export_streams_csv_and_import_reads_csv(self) -> None:
        body = b"address,reason\r\na@x.test,hard\r\nbroken\r\n@y.test,\r\n"
        imported = await self.call("POST", "/accounts/shop/suppressions/bounce/import", raw=body, token=self.shop,
                                   headers={"Content-Type": "text/csv"})
        self.assertEqual((imported.json["added"], len(imported.json["invalid"])), (2, 1), imported.body)
        exported = await self.get("/accounts/shop/suppressions/bounce/export", self.shop)
        self.assertEqual(exported.status, 200)
        self.assertEqual(exported.headers["content-type"], "text/csv; charset=utf-8")
        self.assertIn("attachment", exported.headers["content-disposition"])
        rows = list(csv.reader(io.StringIO(exported.body.decode())))
        self.assertEqual(rows[0], ["address", "reason", "added"])
        self.assertEqual(sorted((row[0], row[1]) for row in rows[1:]), [("@y.test", "imported"), ("a@x.test", "hard")])
        self.assertError(await self.get("/accounts/ghost/suppressions/bounce/export", self.ops), 404, "not_found")
        self.assertError(await self.get("/accounts/shop/suppressions/grey/export", self.shop), 400, "invalid_input")


class QueueRouteTests(ApiTestCase):
    async def queued(self) -> str:
        """A message of shop, held in the queue (the test server delivers nothing)."""
        await self.store.add_ip("shop", ip_network("127.0.0.0/8"))

        def send() -> str:
            with self.smtp() as client:
                return transaction(client, "news@shop.test", ["you@remote.test"], MESSAGE)
        return await self.in_thread(send)

    async def test_owner_sees_and_acts_on_its_messages(self) -> None:
        message_id = await self.queued()
        listed = (await self.get("/queue", self.shop)).json
        self.assertEqual([entry["id"] for entry in listed], [message_id])
        self.assertEqual((await self.get("/queue", self.other)).json, [])
        self.assertEqual([entry["id"] for entry in (await self.get("/queue?account=shop", self.ops)).json],
                         [message_id])
        self.assertError(await self.get("/queue?account=shop", self.other), 403, "forbidden_account", "account")
        shown = (await self.get(f"/queue/{message_id}", self.shop)).json
        self.assertEqual((shown["account"], shown["recipient_states"][0]["address"]), ("shop", "you@remote.test"))
        self.assertError(await self.get(f"/queue/{message_id}", self.other), 404, "not_found")
        self.assertError(await self.call("DELETE", f"/queue/{message_id}", token=self.other), 404, "not_found")
        retried = await self.call("POST", f"/queue/{message_id}/retry", token=self.shop)
        self.assertEqual(retried.json, {"requested": "retry", "target": message_id})
        deleted = await self.call("DELETE", f"/queue/{message_id}", token=self.shop)
        self.assertEqual(deleted.json, {"requested": "delete", "target": message_id})
        self.assertError(await self.get("/queue/0000000000000000", self.ops), 404, "not_found")

    async def test_retry_all_and_resend_held(self) -> None:
        self.assertEqual((await self.call("POST", "/queue/retry", token=self.ops)).json,
                         {"requested": "retry", "target": "all"})
        resent = await self.call("POST", "/accounts/shop/queue/resend-held", token=self.shop)
        self.assertEqual(resent.json, {"requested": "resend-held", "target": "shop"})
        self.assertError(await self.call("POST", "/accounts/ghost/queue/resend-held", token=self.ops),
                         404, "not_found")


class ReportRouteTests(ApiTestCase):
    async def test_report(self) -> None:
        now = self.service.reactor.seconds()
        await self.store.record_event("shop", TrackingEvent("open", "M1", "you@remote.test", now))
        await self.store.suppress("shop", BOUNCE_LIST, "gone@remote.test", "550")
        report = (await self.get("/accounts/shop/report", self.shop)).json
        self.assertEqual((report["opens"], report["bounce_list"], report["sends"]), (1, 1, 0))
        self.assertEqual((await self.get("/accounts/shop/report?message=M1", self.shop)).json["opens"], 1)
        self.assertError(await self.get("/accounts/ghost/report", self.ops), 404, "not_found")

    async def test_campaigns(self) -> None:
        progress = CampaignProgress("0123456789ABCDEF", "shop", "News", "Hello", "n@shop.test", members=3, queued=3,
                                    done=True)
        await self.service.store.save_campaign("shop", progress.id, json.dumps(attrs.asdict(progress)))
        listed = (await self.get("/accounts/shop/campaigns", self.shop)).json
        self.assertEqual([(c["id"], c["state"], c["queued"]) for c in listed], [("0123456789ABCDEF", "queued", 3)])
        self.assertEqual((await self.get("/accounts/shop/campaigns/0123456789abcdef", self.shop)).json["subject"],
                         "Hello")
        self.assertEqual((await self.get("/accounts/other/campaigns", self.other)).json, [])
        self.assertError(await self.get("/accounts/other/campaigns/0123456789ABCDEF", self.other), 404, "not_found")


class DomainRouteTests(ApiTestCase):
    async def setUp(self) -> None:
        port = await start_dns(self, {"shop.test": {}})
        await self.start_api(delivery={"dns_servers": [f"127.0.0.1:{port}"]})

    async def test_domain_life_cycle(self) -> None:
        added = await self.call("POST", "/accounts/shop/domains", {"domain": "Shop.Test", "selector": "s1"}, self.shop)
        self.assertEqual(added.status, 201, added.body)
        self.assertEqual((added.json["domain"], added.json["added"]), ("shop.test", ["s1"]))
        self.assertIn("dkim", [record["kind"] for record in added.json["records"]])
        self.assertEqual([d["domain"] for d in (await self.get("/accounts/shop/domains", self.shop)).json],
                         ["shop.test"])
        self.assertEqual((await self.get("/accounts/shop/domains/shop.test", self.shop)).json["keys"][0]["selector"],
                         "s1")
        checked = await self.call("POST", "/accounts/shop/domains/shop.test/check", token=self.shop)
        self.assertEqual(checked.status, 200, checked.body)
        self.assertEqual(checked.json["status"]["verified"], False)
        self.assertIn("missing", {finding["status"] for finding in checked.json["findings"]})
        forced = await self.call("POST", "/accounts/shop/domains/shop.test/keys/s1/force-sign", {}, self.shop)
        self.assertEqual((forced.json["state"], forced.json["signs"]), ("forced", True))
        rotated = await self.call("POST", "/accounts/shop/domains/shop.test/keys", {"selector": "s2"}, self.shop)
        self.assertEqual((rotated.status, rotated.json["added"]), (201, ["s2"]))
        retired = await self.call("DELETE", "/accounts/shop/domains/shop.test/keys/s1", token=self.shop)
        self.assertEqual(retired.json["selector"], "s1")
        self.assertError(await self.call("DELETE", "/accounts/shop/domains/shop.test/keys/s2", token=self.shop),
                         400, "invalid_input")  # the last RSA key stays

    async def test_domains_of_another_account_are_unknown(self) -> None:
        await self.call("POST", "/accounts/shop/domains", {"domain": "shop.test"}, self.shop)
        self.assertError(await self.get("/accounts/other/domains/shop.test", self.other), 404, "not_found")
        self.assertError(await self.call("POST", "/accounts/other/domains/shop.test/check", token=self.other),
                         404, "not_found")
        self.assertError(await self.call("POST", "/accounts/other/domains", {"domain": "shop.test"}, self.other),
                         400, "invalid_input")
        self.assertError(await self.call("POST", "/accounts/shop/domains", {"domain": "not a domain"}, self.shop),
                         400, "invalid_input")
        self.assertError(await self.get("/accounts/shop/domains/nothing.test", self.shop), 404, "not_found")
