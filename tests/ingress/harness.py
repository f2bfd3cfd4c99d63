"""A session on StringTransport over an in-memory store and spool: synchronous, no sockets."""
from __future__ import annotations

import base64
from ipaddress import ip_network
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from jangotw.ingress.session import SessionSettings, SMTPSession
from jangotw.model import SpoolRecord
from jangotw.store.memory import MemoryStore
from jangotw.testing import MemorySpool, fast_hasher, memory_gate

PASSWORD = "copper lantern orbit meadow"


class TLSCapableTransport(StringTransport):
    """Records STARTTLS instead of performing it (the handshake is tested on real sockets)."""

    tls_started_with: object = None

    def startTLS(self, context: object) -> None:
        self.tls_started_with = context


def plain(username: str, password: str) -> str:
    return base64.b64encode(f"\0{username}\0{password}".encode()).decode()


class SessionTestCase(SynchronousTestCase):
    """Builds one session per test; C{say} sends bytes and returns what the server answered."""

    peer = "192.0.2.10"
    settings = SessionSettings(hostname="mx.test", auth_requires_tls=False, max_errors=20,
                               max_recipients=3, max_message_size=10_000, max_header_size=4096)
    domains: dict[str, str] = {"initiation_domain": "in.test", "bounce_domain": "b.test"}

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.spool = MemorySpool()
        self.hasher = fast_hasher()
        self.gate = memory_gate(self.store, self.clock, self.hasher, **self.domains)

    def account(self, name: str, password: str | None = PASSWORD, ips: tuple[str, ...] = (),
                senders: tuple[str, ...] = (), **settings: Any) -> None:
        self.successResultOf(self.store.add_account(name, self.hasher.hash(password) if password else None))
        for network in ips:
            self.successResultOf(self.store.add_ip(name, ip_network(network)))
        for sender in senders:
            self.successResultOf(self.store.add_from(name, sender))
        for key, value in settings.items():
            self.successResultOf(self.store.set_setting(name, key, value))

    def connect(self, settings: SessionSettings | None = None, tls_context: object = None,
                implicit_tls: bool = False) -> str:
        self.session = SMTPSession(self.gate, self.spool, settings or self.settings, self.clock,
                                   tls_context, implicit_tls)
        self.transport = TLSCapableTransport(peerAddress=IPv4Address("TCP", self.peer, 40000))
        self.session.makeConnection(self.transport)
        return self.read()

    def read(self) -> str:
        text = self.transport.value().decode()
        self.transport.clear()
        return text

    def say(self, data: str | bytes) -> str:
        self.session.dataReceived(data.encode() if isinstance(data, str) else data)
        return self.read()

    def codes(self, data: str | bytes) -> list[str]:
        """The status codes (with enhanced codes) of the replies to C{data}, in order."""
        return [" ".join(line.split()[:2]) for line in self.say(data).splitlines() if line[3:4] == " "]

    def ehlo(self) -> None:
        self.say("EHLO client.test\r\n")

    def send_message(self, sender: str, recipients: list[str], message: bytes) -> str:
        """A whole pipelined transaction; returns every reply."""
        commands = f"MAIL FROM:<{sender}>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in recipients) + "DATA\r\n"
        return self.say(commands.encode() + message + b".\r\n")

    def spooled(self) -> list[tuple[SpoolRecord, bytes]]:
        return list(self.spool.messages.values())
