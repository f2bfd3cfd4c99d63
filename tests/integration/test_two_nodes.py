"""Two jangotw processes sharing one redis-server: what one node changes or charges, the other sees.

Each node is C{twistd -n jangomail} with its own data_dir (its own spool) and
ports, C{[server] store} naming the test's redis-server and C{[delivery] hold}
(mail is accepted, charged and checked, never delivered). Clients are smtplib in
threads, so both nodes are sent to at once.
"""
from __future__ import annotations

import json
import os
import shutil
import smtplib
import sys
from typing import Any

from attrs import frozen
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from jangotw.config import load_config
from jangotw.pipeline.quota import month_of
from jangotw.spool.layout import INCOMING, parse_name
from jangotw.store.redis import open_redis_store

from ..support.redis import RedisServer, start_redis
from .server import TwistdProcess, certificate, client_tls, config_document, toml, transaction

_LIMIT = 10  # messages a month
_PER_NODE = 15  # messages sent through each node at once: 30 in all, 20 over the limit
_WAIT = 60  # seconds a node may take to log what a test waits for
_POLLS = 100  # queue listings (a jangomail-admin process each) before a test gives up waiting
_UNREACHABLE = "store unreachable"
_REACHABLE = "store reachable again"
_TEMPORARY = (451, "4.3.0")
_AUTHENTICATED = 235
_AUTH_FAILED = 535


@frozen
class _Node:
    """One running node: its configuration file, data directory, process and SMTP port."""

    name: str
    config_path: str
    data_dir: str
    process: TwistdProcess
    smtp_port: int

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.test", timeout=60)

    def spool(self, *parts: str) -> str:
        return os.path.join(self.data_dir, "spool", *parts)


def _message(number: int) -> bytes:
    return f"From: news@shop.test\r\nSubject: message {number}\r\n\r\nbody {number}\r\n".encode("ascii")


def _send_many(node: _Node, count: int) -> list[str]:
    """C{count} messages on one connection; the queue ids of those accepted."""
    with node.smtp() as client:
        return [transaction(client, "news@shop.test", [f"r{number}@remote.test"], _message(number))
                for number in range(count)]


def _login(node: _Node, user: str, secret: str) -> int:
    """SMTP AUTH PLAIN after STARTTLS; the reply code."""
    with node.smtp() as client:
        client.starttls(context=client_tls())
        try:
            return client.login(user, secret)[0]
        except smtplib.SMTPAuthenticationError as error:
            return error.smtp_code


def _replies(client: smtplib.SMTP, recipient: str) -> list[tuple[int, str]]:
    """MAIL, RCPT and (if both were accepted) DATA on an open session; each reply's code and
    enhanced status code."""
    client.ehlo_or_helo_if_needed()
    replies = [client.mail("news@shop.test"), client.rcpt(recipient)]
    if all(code == 250 for code, _ in replies):
        replies.append(client.data(_message(0)))
    client.rset()
    return [(code, text.decode("utf-8", "replace").split(" ", 1)[0]) for code, text in replies]


class TwoNodesTests(TestCase):
    """Quota, suppression and outages across two nodes on one redis-server."""

    timeout = 180

    async def cluster(self, *settings: tuple[str, str], persistent: bool = False) -> tuple[RedisServer, _Node, _Node]:
        """A redis-server, account C{shop} (IP 127.0.0.0/8, with C{settings}) made through the admin
        CLI of the first node, and two running nodes sharing them."""
        server = await start_redis(self, persistent=persistent)
        directory = os.path.abspath(self.mktemp())
        paths = {}
        for name in ("a", "b"):
            os.makedirs(os.path.join(directory, name))
            paths[name] = os.path.join(directory, name, "jangomail.toml")
            document = config_document(os.path.join(directory, name, "data"), certificate(os.path.abspath("certs")),
                                       server={"store": server.url()})
            with open(paths[name], "w") as handle:
                handle.write(toml(document))
        await self.admin(paths["a"], "account", "add", "shop", "--no-password")
        await self.admin(paths["a"], "ip", "add", "shop", "127.0.0.0/8")
        for key, value in settings:
            await self.admin(paths["b"], "account", "set", "shop", key, value)
        first, second = await gatherResults([Deferred.fromCoroutine(self.start_node(name, paths[name]))
                                             for name in ("a", "b")], consumeErrors=True)
        return server, first, second

    async def start_node(self, name: str, config_path: str, log_name: str = "twistd.log") -> _Node:
        """Run C{twistd -n jangomail} with the configuration file; fires once it listens."""
        config = load_config(config_path)
        process = TwistdProcess(config_path, os.path.join(os.path.dirname(config_path), log_name))
        self.addCleanup(process.stop)
        ports = await process.start()
        return _Node(name, config_path, config.server.data_dir, process, ports[f"smtp:{config.smtp.listen[0]}"])

    async def admin(self, config_path: str, *argv: str) -> str:
        """C{jangomail-admin --config CONFIG ARGV...}; fails the test unless it exits 0."""
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "jangotw.admin.cli", "--config", config_path, *argv],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, reactor=reactor)
        self.assertEqual(code, 0, f"jangomail-admin {' '.join(argv)}: {out!r} {err!r}")
        return out.decode("utf-8")

    async def queue(self, node: _Node) -> list[dict[str, Any]]:
        return json.loads(await self.admin(node.config_path, "--json", "queue", "list"))  # type: ignore[no-any-return]

    def logged(self, *waits: tuple[_Node, str]) -> "Deferred[Any]":
        """Fires once each node has logged its text; fails the test after L{_WAIT} seconds."""
        waiting = gatherResults([node.process.logged(text) for node, text in waits], consumeErrors=True)
        return waiting.addTimeout(_WAIT, reactor)

    def assert_running(self, *nodes: _Node) -> None:
        for node in nodes:
            self.assertIsNone(node.process.exit_code, f"node {node.name} exited; see {node.process.log_path}")

    async def test_quota_enforced_across_nodes(self) -> None:
        """30 messages sent at once through two nodes against a monthly limit of 10: all are accepted
        (the quota applies after acceptance), and exactly 10 are charged and the other 20 held,
        whichever node took them."""
        server, first, second = await self.cluster(("monthly_messages", str(_LIMIT)))
        accepted = await gatherResults([self.in_thread(_send_many, node, _PER_NODE) for node in (first, second)],
                                       consumeErrors=True)
        self.assertEqual([len(ids) for ids in accepted], [_PER_NODE, _PER_NODE])
        over = 2 * _PER_NODE - _LIMIT
        for _ in range(_POLLS):  # each listing is a process run: the wait between looks
            queues = [[entry for entry in await self.queue(node) if entry["id"] in ids]
                      for node, ids in zip((first, second), accepted)]  # not the over-quota notices
            held = sum(bool(entry["held"]) for queue in queues for entry in queue)
            if held >= over:
                break
        self.assertEqual(held, over)
        self.assertEqual([sorted(entry["id"] for entry in queue) for queue in queues],
                         [sorted(ids) for ids in accepted])
        store = await open_redis_store(reactor, server.url())
        self.addCleanup(store.close)
        usage = await store.usage("shop", month_of(reactor.seconds()))
        self.assertEqual((usage.messages, usage.overage_messages), (_LIMIT, 0))
        self.assert_running(first, second)

    async def test_suppression_added_on_one_node_applies_on_the_other(self) -> None:
        """An address put on the Bounce list through the first node's admin CLI is refused at RCPT
        by the second node (the account refuses suppressed recipients in-session)."""
        _, first, second = await self.cluster(("suppression_reply", "reject"))

        def replies(node: _Node, recipient: str) -> list[tuple[int, str]]:
            with node.smtp() as client:
                return _replies(client, recipient)
        self.assertEqual((await self.in_thread(replies, second, "gone@remote.test"))[-1][0], 250)
        await self.admin(first.config_path, "suppress", "add", "shop", "Gone@Remote.test", "--list", "bounce")
        self.assertEqual(await self.in_thread(replies, second, "gone@remote.test"), [(250, "2.1.0"), (550, "5.1.1")])
        self.assertEqual((await self.in_thread(replies, second, "other@remote.test"))[-1][0], 250)
        self.assert_running(first, second)

    async def test_redis_restarted_during_a_session(self) -> None:
        """Redis stops while a session is open: that session, and a new one on the other node, get
        451 4.3.0 instead of acceptance; once Redis is back (with its data) the same session sends
        again. Each node logs the outage once and neither exits."""
        server, first, second = await self.cluster(persistent=True)
        client = await self.in_thread(first.smtp)
        self.addCleanup(client.close)
        self.assertEqual((await self.in_thread(_replies, client, "a@remote.test"))[-1], (250, "2.0.0"))

        await server.stop()
        await self.logged((first, _UNREACHABLE), (second, _UNREACHABLE))
        self.assertIn(_TEMPORARY, await self.in_thread(_replies, client, "b@remote.test"))

        def new_session(node: _Node) -> list[tuple[int, str]]:
            with node.smtp() as other:
                return _replies(other, "c@remote.test")
        self.assertIn(_TEMPORARY, await self.in_thread(new_session, second))

        await server.start()
        await self.logged((first, _REACHABLE), (second, _REACHABLE))
        self.assertEqual((await self.in_thread(_replies, client, "d@remote.test"))[-1], (250, "2.0.0"))
        self.assertEqual((await self.in_thread(new_session, second))[-1], (250, "2.0.0"))
        for node in (first, second):
            self.assertEqual(node.process.output.count(_UNREACHABLE), 1, node.name)
        self.assert_running(first, second)

    async def test_lost_node_spool_recovered_by_another(self) -> None:
        """A node's spool moved into another (stopped) node's spool directory is recovered by it:
        after a restart the other node holds its own message and the lost node's."""
        _, first, second = await self.cluster()
        [lost] = await self.in_thread(_send_many, first, 1)
        [own] = await self.in_thread(_send_many, second, 1)
        await first.process.kill("KILL")
        await second.process.kill("TERM")
        for filename in os.listdir(first.spool(INCOMING)):
            if parse_name(filename) is not None:
                shutil.move(first.spool(INCOMING, filename), second.spool(INCOMING, filename))
        restarted = await self.start_node("b", second.config_path, "again.log")
        await self.logged((restarted, "spool holds 2 message(s)"))
        self.assertEqual(sorted(entry["id"] for entry in await self.queue(restarted)), sorted([lost, own]))
        self.assert_running(restarted)

    async def test_token_revoked_through_one_node_refused_by_the_other(self) -> None:
        """An API token made and revoked with the first node's admin CLI logs in on both nodes until
        it is revoked, and on neither after."""
        _, first, second = await self.cluster()
        token = json.loads(await self.admin(first.config_path, "--json", "token", "create", "shop", "--scope", "smtp"))
        for node in (first, second):
            self.assertEqual(await self.in_thread(_login, node, "shop", token["token"]), _AUTHENTICATED)
        await self.admin(first.config_path, "token", "revoke", token["id"])
        for node in (second, first):
            self.assertEqual(await self.in_thread(_login, node, "shop", token["token"]), _AUTH_FAILED)
        self.assert_running(first, second)

    def in_thread(self, function: Any, *args: Any) -> "Deferred[Any]":
        return deferToThread(function, *args)
