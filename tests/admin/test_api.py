"""The JSON admin API over real HTTP on loopback, against the admin listener of a real RelayService.

This module holds the fixture (L{ApiTestCase}) and the tests of what every
route shares: credentials, authorisation, errors, the audit log and the
OpenAPI document. The routes themselves are tested in test_api_routes.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import sys
from ipaddress import ip_network
from typing import Any

import pyotp
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import provider

from jangotw.admin.routes import ROUTES
from jangotw.auth.tokens import new_token
from jangotw.auth.totp import new_secret, recovery_hash
from jangotw.interfaces import ICredentialStore
from jangotw.model import PRIMARY, ApiToken, IPRule, Login, TwoFactor
from jangotw.testing import fast_hasher
from tests.integration.server import ServerTestCase, certificate, config_document, toml

PASSWORD = "copper lantern orbit meadow"
OTHER_PASSWORD = "velvet canyon ladder frost"
ADDRESS_REFUSED = ("UnauthorizedAddressException: The current IP Address (127.0.0.1) is not authorized to "
                   "access the API.")
AUTH_FAILURES = 3


@frozen
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        document: dict[str, Any] = self.json["error"]
        return document


class ApiTestCase(ServerTestCase):
    """A RelayService on loopback (SQLite store, mail held in the spool) whose admin listener serves
    the API. Account C{shop} (password L{PASSWORD}) and account C{other}; C{ops} is an operator.
    At most L{AUTH_FAILURES} failed authentications per client or name."""

    async def setUp(self) -> None:
        await self.start_api()

    async def start_api(self, **sections: dict[str, Any]) -> None:
        sections.setdefault("admin", {}).setdefault("operators", ["ops"])
        sections.setdefault("smtp", {}).setdefault("auth_failures", AUTH_FAILURES)
        await self.start(self.config(**sections))
        self.api_port = self.service.listening(f"admin:{self.service.config.admin.listen[0]}").getHost().port
        assert self.service.store is not None
        self.store = self.service.store
        self.credentials = ICredentialStore(self.store)
        hasher = fast_hasher()
        for name in ("shop", "other", "ops"):
            await self.store.add_account(name, hasher.hash(PASSWORD))
        self.shop = await self.token("shop")
        self.other = await self.token("other")
        self.ops = await self.token("ops")

    # -- credentials made straight in the store ------------------------------------------

    async def token(self, account: str, login: str = PRIMARY, scopes: frozenset[str] = frozenset({"api"})) -> str:
        text, token_id, secret_hash = new_token()
        await self.credentials.add_token(ApiToken(id=token_id, account=account, login=login, scopes=scopes,
                                                  label="test", created=self.service.reactor.seconds(),
                                                  secret_hash=secret_hash))
        return text

    async def login(self, account: str, name: str, capabilities: str) -> str:
        """An additional login allowed C{capabilities} (comma-separated), and an API token of it."""
        await self.credentials.add_login(Login(account=account, name=name,
                                               capabilities=frozenset(capabilities.split(",")),
                                               password_hash=fast_hasher().hash(OTHER_PASSWORD)))
        return await self.token(account, name)

    async def ip_rule(self, account: str, network: str, login: str = PRIMARY) -> None:
        parsed = ip_network(network)
        await self.credentials.add_ip_rule(IPRule(account=account, login=login, first=str(parsed[0]),
                                                  last=str(parsed[-1]), scopes=frozenset({"api"})))

    async def two_factor(self, account: str, login: str = PRIMARY) -> tuple[pyotp.TOTP, str]:
        """Two-factor on for the login: its TOTP and one recovery code."""
        secret, code = new_secret(), "abcd-efgh-ijkl-mnop"
        await self.credentials.set_two_factor(TwoFactor(account=account, login=login, secret=secret, enabled=True,
                                                        recovery_hashes=frozenset({recovery_hash(code)})))
        return pyotp.TOTP(secret), code

    def code(self, totp: pyotp.TOTP, steps: int = 0) -> str:
        """The code for the server's clock, C{steps} time steps on."""
        return str(totp.at(self.service.reactor.seconds() + 30 * steps))

    # -- HTTP -----------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             raw: bytes | None = None, headers: dict[str, str] | None = None) -> "Deferred[Response]":
        """One request to C{/api/v1<path>} from a thread (the reactor keeps serving)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if data is not None and "Content-Type" not in sent:
            sent["Content-Type"] = "application/json"

        def run() -> Response:
            connection = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=30)
            try:
                connection.request(method, "/api/v1" + path, body=data, headers=sent)
                answer = connection.getresponse()
                return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
            finally:
                connection.close()
        return self.in_thread(run)

    def get(self, path: str, token: str | None = None) -> "Deferred[Response]":
        return self.call("GET", path, token=token)

    def assertError(self, response: Response, status: int, code: str, field: str | None = None) -> None:
        self.assertEqual((response.status, response.error["code"]), (status, code), response.body)
        self.assertEqual(response.headers["content-type"], "application/json; charset=utf-8")
        self.assertTrue(response.error["message"])
        if field is not None:
            self.assertEqual(response.error.get("field"), field, response.body)

    def audit_lines(self) -> list[dict[str, Any]]:
        with open(os.path.join(self.data_dir, "audit.log"), encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    def audit_text(self) -> str:
        with open(os.path.join(self.data_dir, "audit.log"), encoding="utf-8") as handle:
            return handle.read()


class BearerTokenTests(ApiTestCase):
    async def test_token_reads_its_own_account(self) -> None:
        """An API token of scope api is a Bearer credential acting as its account."""
        response = await self.get("/accounts/shop", self.shop)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json["name"], "shop")
        who = (await self.get("/session", self.shop)).json
        self.assertEqual((who["name"], who["account"], who["operator"]), ("shop", "shop", False))
        self.assertRegex(who["via"], r"\Atoken [0-9a-f]{12}\Z")

    async def test_no_credential_is_401_with_a_bearer_challenge(self) -> None:
        response = await self.get("/accounts/shop")
        self.assertError(response, 401, "authentication_required")
        self.assertEqual(response.headers["www-authenticate"], 'Bearer realm="jangotw"')
        basic = await self.call("GET", "/accounts/shop", headers={"Authorization": "Basic c2hvcDp4"})
        self.assertError(basic, 401, "authentication_required")

    async def test_wrong_token_is_401(self) -> None:
        forged = self.shop[:-4] + "AAAA"
        response = await self.get("/accounts/shop", forged)
        self.assertError(response, 401, "invalid_credentials")
        self.assertIn('error="invalid_token"', response.headers["www-authenticate"])
        self.assertError(await self.get("/accounts/shop", "not-a-token"), 401, "invalid_credentials")

    async def test_token_of_another_account_is_refused(self) -> None:
        """A principal acts only on its own account: another account's paths are 403 whether they exist or not."""
        self.assertError(await self.get("/accounts/shop", self.other), 403, "forbidden_account", "account")
        self.assertError(await self.get("/accounts/nobody", self.other), 403, "forbidden_account", "account")
        self.assertError(await self.call("POST", "/accounts/shop/ips", {"network": "192.0.2.0/24"}, self.other),
                         403, "forbidden_account")
        self.assertEqual(await self.store.list_ips("shop"), [])

    async def test_revoked_token_is_refused_at_once(self) -> None:
        created = await self.call("POST", "/accounts/shop/tokens", {"label": "ci"}, self.shop)
        self.assertEqual(created.status, 201)
        token = created.json["token"]
        self.assertEqual((await self.get("/accounts/shop", token)).status, 200)
        revoked = await self.call("DELETE", f"/accounts/shop/tokens/{created.json['id']}", token=self.shop)
        self.assertEqual((revoked.status, revoked.json["state"]), (200, "revoked"))
        self.assertError(await self.get("/accounts/shop", token), 401, "invalid_credentials")

    async def test_smtp_only_token_is_refused(self) -> None:
        smtp_only = await self.token("shop", scopes=frozenset({"smtp"}))
        self.assertError(await self.get("/accounts/shop", smtp_only), 401, "invalid_credentials")

    async def test_login_without_api_capability_is_refused(self) -> None:
        token = await self.login("shop", "mailer", "relay,api")
        self.assertEqual((await self.get("/accounts/shop", token)).status, 200)
        await self.credentials.update_login("shop", "mailer", capabilities=frozenset({"relay"}))
        self.assertError(await self.get("/accounts/shop", token), 401, "invalid_credentials")

    async def test_capability_is_needed_for_changes_and_reports(self) -> None:
        """A login with api alone may read and manage lists, but not change settings or read reports."""
        token = await self.login("shop", "app", "api")
        self.assertEqual((await self.get("/accounts/shop/ips", token)).status, 200)
        refused = await self.call("POST", "/accounts/shop/ips", {"network": "192.0.2.0/24"}, token)
        self.assertError(refused, 403, "capability_required")
        self.assertIn("settings", refused.error["message"])
        self.assertError(await self.get("/accounts/shop/report", token), 403, "capability_required")
        self.assertEqual((await self.call("POST", "/accounts/shop/lists", {"name": "News"}, token)).status, 201)


class AddressAndThrottleTests(ApiTestCase):
    async def test_login_ip_rules_refuse_with_the_exact_text(self) -> None:
        """Outside the api rules: 403 with JangoMail's exact text, for tokens and session logins alike."""
        await self.ip_rule("shop", "192.0.2.0/24")
        response = await self.get("/accounts/shop", self.shop)
        self.assertError(response, 403, "address_not_authorized")
        self.assertEqual(response.error["message"], ADDRESS_REFUSED)
        login = await self.call("POST", "/session", {"username": "shop", "password": PASSWORD})
        self.assertError(login, 403, "address_not_authorized")
        self.assertEqual(login.error["message"], ADDRESS_REFUSED)
        self.assertEqual((await self.get("/accounts/other", self.other)).status, 200)  # other accounts unaffected

    async def test_login_ip_rules_apply_to_session_tokens_on_every_call(self) -> None:
        session = (await self.call("POST", "/session", {"username": "shop", "password": PASSWORD})).json["token"]
        self.assertEqual((await self.get("/accounts/shop", session)).status, 200)
        await self.ip_rule("shop", "192.0.2.7/32")
        response = await self.get("/accounts/shop", session)
        self.assertError(response, 403, "address_not_authorized")
        self.assertEqual(response.error["message"], ADDRESS_REFUSED)

    async def test_throttled_after_failures_with_retry_after(self) -> None:
        """Beyond auth_failures failures from the client, even a good token gets 429 with Retry-After."""
        for _ in range(AUTH_FAILURES):
            self.assertError(await self.get("/accounts/shop", self.shop[:-4] + "AAAA"), 401, "invalid_credentials")
        response = await self.get("/accounts/shop", self.shop)
        self.assertError(response, 429, "too_many_failures")
        self.assertEqual(response.headers["retry-after"], "300")
        login = await self.call("POST", "/session", {"username": "other", "password": PASSWORD})
        self.assertError(login, 429, "too_many_failures")

    async def test_forged_session_tokens_count_as_failures(self) -> None:
        for _ in range(AUTH_FAILURES):
            self.assertError(await self.get("/accounts/shop", "jgs_e30.AAAA"), 401, "invalid_credentials")
        self.assertError(await self.get("/accounts/shop", self.shop), 429, "too_many_failures")


class SessionLoginTests(ApiTestCase):
    async def test_password_login_gives_a_session_token(self) -> None:
        response = await self.call("POST", "/session", {"username": "shop", "password": PASSWORD})
        self.assertEqual(response.status, 200, response.body)
        answer = response.json
        self.assertEqual((answer["token_type"], answer["account"], answer["name"]), ("Bearer", "shop", "shop"))
        self.assertTrue(answer["token"].startswith("jgs_"))
        who = await self.get("/session", answer["token"])
        self.assertEqual((who.json["name"], who.json["via"]), ("shop", "session"))

    async def test_wrong_password_is_401(self) -> None:
        response = await self.call("POST", "/session", {"username": "shop", "password": "not it at all, sorry"})
        self.assertError(response, 401, "invalid_credentials")
        self.assertError(await self.call("POST", "/session", {"username": "shop", "password": self.shop}),
                         401, "invalid_credentials")  # a token is no password

    async def test_two_factor_login_needs_a_code_once(self) -> None:
        """With two-factor on: no code 401 two_factor_required; a current code once; a reused one refused;
        a recovery code once."""
        totp, recovery = await self.two_factor("shop")
        without = await self.call("POST", "/session", {"username": "shop", "password": PASSWORD})
        self.assertError(without, 401, "two_factor_required", "code")
        code = self.code(totp)
        first = await self.call("POST", "/session", {"username": "shop", "password": PASSWORD, "code": code})
        self.assertEqual(first.status, 200, first.body)
        self.assertEqual((await self.get("/accounts/shop", first.json["token"])).status, 200)
        again = await self.call("POST", "/session", {"username": "shop", "password": PASSWORD, "code": code})
        self.assertError(again, 401, "code_refused", "code")
        wrong = str((int(code) + 1) % 1_000_000).zfill(6)  # not this step's code (nor, in practice, a neighbour's)
        self.assertError(await self.call("POST", "/session", {"username": "shop", "password": PASSWORD,
                                                             "code": wrong}), 401, "code_refused")
        with_recovery = await self.call("POST", "/session",
                                        {"username": "shop", "password": PASSWORD, "code": recovery})
        self.assertEqual(with_recovery.status, 200, with_recovery.body)
        reused = await self.call("POST", "/session", {"username": "shop", "password": PASSWORD, "code": recovery})
        self.assertError(reused, 401, "code_refused")

    async def test_additional_login_session_follows_the_login(self) -> None:
        """A session of an additional login acts with its capabilities; disabling the login ends it."""
        await self.login("shop", "sales", "api,reports")
        response = await self.call("POST", "/session", {"username": "sales@shop", "password": OTHER_PASSWORD})
        self.assertEqual(response.status, 200, response.body)
        session = response.json["token"]
        self.assertEqual(sorted(response.json["capabilities"]), ["api", "reports"])
        self.assertEqual((await self.get("/accounts/shop/report", session)).status, 200)
        self.assertError(await self.call("POST", "/accounts/shop/ips", {"network": "192.0.2.1"}, session),
                         403, "capability_required")
        await self.credentials.update_login("shop", "sales", disabled=True)
        self.assertError(await self.get("/accounts/shop", session), 401, "invalid_credentials")

    async def test_session_of_a_disabled_account_is_refused(self) -> None:
        session = (await self.call("POST", "/session", {"username": "shop", "password": PASSWORD})).json["token"]
        await self.store.set_disabled("shop", True)
        self.assertError(await self.get("/accounts/shop", session), 401, "invalid_credentials")

    async def test_session_token_signed_with_another_key_is_refused(self) -> None:
        session = (await self.call("POST", "/session", {"username": "shop", "password": PASSWORD})).json["token"]
        payload, _, mac = session.partition(".")
        self.assertError(await self.get("/accounts/shop", payload + "." + mac[::-1]), 401, "invalid_credentials")

    async def test_login_needs_username_and_password(self) -> None:
        self.assertError(await self.call("POST", "/session", {"username": "shop"}), 400, "missing_field", "password")
        self.assertError(await self.call("POST", "/session", {"username": "shop", "password": 5}),
                         400, "wrong_type", "password")


class RoutingAndErrorTests(ApiTestCase):
    async def test_unknown_route_is_404(self) -> None:
        self.assertError(await self.get("/nothing/here", self.shop), 404, "unknown_route")
        self.assertError(await self.get("/accounts/shop/nothing", self.shop), 404, "unknown_route")

    async def test_wrong_method_is_405_with_allow(self) -> None:
        response = await self.call("PUT", "/accounts/shop/ips", {}, self.shop)
        self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(response.headers["allow"], "GET, POST")

    async def test_bad_json_is_400(self) -> None:
        self.assertError(await self.call("POST", "/accounts/shop/ips", raw=b"{not json", token=self.shop),
                         400, "bad_json")
        self.assertError(await self.call("POST", "/accounts/shop/ips", ["192.0.2.1"], self.shop), 400, "bad_json")
        self.assertError(await self.call("POST", "/accounts/shop/ips", raw=b'{"network": "\xff"}', token=self.shop),
                         400, "bad_json")

    async def test_other_media_types_and_huge_bodies_are_refused(self) -> None:
        form = await self.call("POST", "/accounts/shop/ips", raw=b"network=192.0.2.1", token=self.shop,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertError(form, 415, "unsupported_media_type")
        huge = await self.call("POST", "/accounts/shop/ips", raw=b"[" + b" " * (1 << 20) + b"]", token=self.shop)
        self.assertError(huge, 413, "body_too_large")

    async def test_unknown_field_is_400_naming_it(self) -> None:
        response = await self.call("POST", "/accounts/shop/ips", {"network": "192.0.2.1", "netmask": "x"},
                                   self.shop)
        self.assertError(response, 400, "unknown_field", "netmask")
        self.assertIn("netmask", response.error["message"])
        self.assertError(await self.call("POST", "/accounts/shop/disable", {"why": "x"}, self.ops),
                         400, "unknown_field", "why")
        self.assertError(await self.call("GET", "/accounts/shop/usage?mnth=2026-01", token=self.shop),
                         400, "unknown_field", "mnth")

    async def test_wrong_type_is_400_naming_the_field(self) -> None:
        self.assertError(await self.call("POST", "/accounts/shop/ips", {"network": 7}, self.shop),
                         400, "wrong_type", "network")
        self.assertError(await self.call("PATCH", "/accounts/shop/settings", {"wrap": "76"}, self.shop),
                         400, "wrong_type", "wrap")
        self.assertError(await self.call("PATCH", "/accounts/shop/settings", {"open_tracking": 1}, self.shop),
                         400, "wrong_type", "open_tracking")
        self.assertError(await self.get("/accounts/shop/lists/News/members?limit=lots", self.shop),
                         400, "wrong_type", "limit")

    async def test_input_errors_are_400_or_404(self) -> None:
        """The service layer's sentence decides: something named that does not exist is 404."""
        bad = await self.call("POST", "/accounts/shop/ips", {"network": "10.0.0.1/8"}, self.shop)
        self.assertError(bad, 400, "invalid_input")
        self.assertIn("host bits set", bad.error["message"])
        missing = await self.call("DELETE", "/accounts/shop/ips/192.0.2.0%2F24", token=self.shop)
        self.assertError(missing, 404, "not_found")
        self.assertEqual(missing.error["message"], "account 'shop' has no authorised network 192.0.2.0/24")
        self.assertError(await self.get("/accounts/nobody", self.ops), 404, "not_found")
        self.assertError(await self.call("POST", "/accounts", {"name": "shop"}, self.ops), 409, "conflict")


class OperatorTests(ApiTestCase):
    async def test_operator_acts_on_every_account(self) -> None:
        names = [account["name"] for account in (await self.get("/accounts", self.ops)).json]
        self.assertEqual(sorted(names), ["ops", "other", "shop"])
        self.assertEqual([account["name"] for account in (await self.get("/accounts", self.shop)).json], ["shop"])
        added = await self.call("POST", "/accounts/shop/ips", {"network": "192.0.2.0/24"}, self.ops)
        self.assertEqual(added.status, 201)
        self.assertEqual(await self.store.list_ips("shop"), ["192.0.2.0/24"])

    async def test_operator_only_routes(self) -> None:
        self.assertError(await self.call("POST", "/accounts", {"name": "new"}, self.shop), 403, "operator_required")
        self.assertError(await self.call("POST", "/accounts/shop/disable", token=self.shop), 403,
                         "operator_required")
        self.assertError(await self.get("/audit", self.shop), 403, "operator_required")
        self.assertError(await self.call("POST", "/queue/retry", token=self.shop), 403, "operator_required")
        disabled = await self.call("POST", "/accounts/shop/disable", token=self.ops)
        self.assertEqual((disabled.status, disabled.json["disabled"]), (200, True))
        self.assertError(await self.get("/accounts/shop", self.shop), 401, "invalid_credentials")


class AuditTests(ApiTestCase):
    async def test_mutations_are_audited_without_secrets(self) -> None:
        """Who, what, when, from where and the outcome, for successes and refusals; reads are not audited;
        no password, code or token ever reaches the file."""
        events: list[dict[str, Any]] = []

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            if event.get("audit"):
                events.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        await self.get("/accounts/shop", self.shop)
        await self.call("POST", "/accounts/shop/ips", {"network": "192.0.2.0/24"}, self.shop)
        await self.call("PUT", "/accounts/shop/password", {"password": "weak"}, self.shop)
        created = await self.call("POST", "/accounts/shop/logins",
                                  {"name": "sales", "password": OTHER_PASSWORD, "capabilities": ["relay"]}, self.shop)
        self.assertEqual(created.status, 201, created.body)
        token = (await self.call("POST", "/accounts/shop/tokens", {"label": "ci"}, self.shop)).json["token"]
        await self.call("POST", "/session", {"username": "shop", "password": PASSWORD})
        await self.call("POST", "/accounts/shop/ips", {"network": "192.0.2.9"}, self.other)

        lines = self.audit_lines()
        self.assertEqual([(line["method"], line["route"], line["status"]) for line in lines], [
            ("POST", "/accounts/{account}/ips", 201),
            ("PUT", "/accounts/{account}/password", 400),
            ("POST", "/accounts/{account}/logins", 201),
            ("POST", "/accounts/{account}/tokens", 201),
            ("POST", "/session", 200),
            ("POST", "/accounts/{account}/ips", 403),
        ])
        first = lines[0]
        self.assertEqual((first["principal"], first["account"], first["client_ip"], first["error"]),
                         ("shop", "shop", "127.0.0.1", None))
        self.assertEqual(first["target"], {"account": "shop", "network": "192.0.2.0/24"})
        self.assertRegex(first["time"], r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\Z")
        self.assertTrue(first["via"].startswith("token "))
        self.assertEqual(lines[1]["error"], "invalid_input")
        self.assertEqual(lines[2]["target"], {"account": "shop", "name": "sales", "capabilities": ["relay"]})
        self.assertEqual((lines[4]["principal"], lines[4]["target"]), (None, {"username": "shop"}))
        self.assertEqual((lines[5]["principal"], lines[5]["error"]), ("other", "forbidden_account"))
        text = self.audit_text()
        for secret in (PASSWORD, OTHER_PASSWORD, "weak", token, token[len("jgt_0123456789ab_"):], self.shop):
            self.assertNotIn(secret, text)
        self.assertEqual(len(events), len(lines))
        self.assertEqual(events[0]["principal"], "shop")

    async def test_operators_read_the_audit_log_in_pages(self) -> None:
        for index in range(5):
            await self.call("POST", "/accounts/shop/from", {"address": f"n{index}@shop.test"}, self.shop)
        page = (await self.get("/audit?limit=2", self.ops)).json
        self.assertEqual([entry["target"]["address"] for entry in page["entries"]], ["n4@shop.test", "n3@shop.test"])
        self.assertEqual([entry["seq"] for entry in page["entries"]], [5, 4])
        older = (await self.get(f"/audit?limit=2&before={page['next']}", self.ops)).json
        self.assertEqual([entry["seq"] for entry in older["entries"]], [3, 2])
        last = (await self.get(f"/audit?before={older['next']}", self.ops)).json
        self.assertEqual(([entry["seq"] for entry in last["entries"]], last["next"]), ([1], None))
        self.assertError(await self.get("/audit?limit=0", self.ops), 400, "invalid_value", "limit")


class OpenAPITests(ApiTestCase):
    async def document(self) -> dict[str, Any]:
        response = await self.get("/openapi.json")
        self.assertEqual(response.status, 200)
        document: dict[str, Any] = response.json
        return document

    async def test_document_is_openapi_3_1(self) -> None:
        document = await self.document()
        self.assertEqual(document["openapi"], "3.1.0")
        self.assertEqual(document["servers"], [{"url": "/api/v1"}])
        ids = [operation["operationId"] for path in document["paths"].values() for operation in path.values()]
        self.assertEqual(len(ids), len(set(ids)))

    async def test_every_documented_route_is_served_and_nothing_else(self) -> None:
        """Each documented method and path reaches a handler (it answers 401 without a credential, never
        404 or 405); each other method on a documented path is 405; the routes served are the documented."""
        document = await self.document()
        served = {(route.method, route.path) for route in ROUTES}
        documented = {(method.upper(), path) for path, operations in document["paths"].items()
                      for method in operations}
        self.assertEqual(served, documented)
        for method, path in sorted(documented):
            concrete = re.sub(r"\{[a-z_]+\}", "x", path)
            response = await self.call(method, concrete)
            operation = document["paths"][path][method.lower()]
            if operation.get("security") == []:
                self.assertNotIn(response.status, (401, 404, 405), (method, path))
            else:
                self.assertError(response, 401, "authentication_required")
            for other in {"GET", "POST", "PUT", "PATCH", "DELETE"} - {m.upper() for m in document["paths"][path]}:
                if any(re.fullmatch(re.sub(r"\{[a-z_]+\}", "[^/]+", p), concrete)
                       and other.lower() in document["paths"][p] for p in document["paths"]):
                    continue  # another template serves that method on the same concrete path
                self.assertError(await self.call(other, concrete, token=self.ops), 405, "method_not_allowed")

    async def test_request_bodies_match_what_the_handlers_accept(self) -> None:
        """For every route taking a JSON body: an undocumented member is refused naming it, and leaving out
        the first required member is refused naming that one; a route documenting no body refuses any member."""
        document = await self.document()
        for path, operations in document["paths"].items():
            concrete = re.sub(r"\{[a-z_]+\}", "ops", path)
            for method, operation in operations.items():
                content = operation.get("requestBody", {}).get("content", {})
                if "application/json" not in content and content:
                    continue  # a streamed CSV body
                schema = content.get("application/json", {}).get("schema", {"properties": {}, "required": []})
                unknown = await self.call(method.upper(), concrete, {"zz_not_documented": 1}, self.ops)
                self.assertError(unknown, 400, "unknown_field", "zz_not_documented")
                if schema["required"]:
                    missing = await self.call(method.upper(), concrete, {}, self.ops)
                    self.assertError(missing, 400, "missing_field", schema["required"][0])
                for name, field in schema["properties"].items():
                    wrong = {"string": 1, "integer": "1", "boolean": "yes", "array": "x"}[field["type"]]
                    body = {required: "x" for required in schema["required"]}
                    body[name] = wrong
                    response = await self.call(method.upper(), concrete, body, self.ops)
                    self.assertError(response, 400, "wrong_type", name)


class SharedServicesTests(ApiTestCase):
    async def test_cli_shows_what_the_api_changed(self) -> None:
        """jangomail-admin and the API call the same service layers: the CLI's JSON is the API's."""
        await self.call("PATCH", "/accounts/shop/settings", {"wrap": 0, "suppression_reply": "reject"}, self.shop)
        await self.call("POST", "/accounts/shop/from", {"address": "@shop.test"}, self.shop)
        config = os.path.abspath(self.mktemp() + ".toml")
        with open(config, "w") as handle:
            handle.write(toml(config_document(self.data_dir, certificate(os.path.abspath("certs")))))
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "jangotw.admin.cli", "--config", config, "--json", "account", "show", "shop"],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), (await self.get("/accounts/shop", self.shop)).json)

