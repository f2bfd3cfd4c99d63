"""Real servers for integration tests: in-process on loopback port 0, or as a twistd process."""
from __future__ import annotations

import os
import re
import smtplib
import socket
import ssl
import sys
from ipaddress import ip_network
from typing import Any, Callable, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from jangotw.admin.certificate import write_self_signed
from jangotw.config import Config, parse_config
from jangotw.service import RelayService
from jangotw.spool.writer import Spool

T = TypeVar("T")

_CERTIFICATE_CACHE: dict[str, tuple[str, str]] = {}


def certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate and key for localhost, written once per test run."""
    if "paths" not in _CERTIFICATE_CACHE:
        os.makedirs(directory, exist_ok=True)
        paths = (os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"))
        write_self_signed(*paths, hostname="localhost")
        _CERTIFICATE_CACHE["paths"] = paths
    return _CERTIFICATE_CACHE["paths"]


def client_tls() -> ssl.SSLContext:
    """What a mail client does with a self-signed server: encrypt, don't verify."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def config_document(data_dir: str, cert: tuple[str, str], **sections: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {
        # One process: tests of several worker processes (test_workers) ask for them.
        "server": {"hostname": "relay.test", "data_dir": data_dir, "shutdown_grace": 5, "workers": 1},
        "admin": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "smtp": {"listen": ["tcp:0:interface=127.0.0.1"], "tls_listen": ["tcp:0:interface=127.0.0.1"]},
        "tls": {"certificate": cert[0], "key": cert[1]},
        # Ingress tests look at the spool: keep mail there. Delivery tests override both keys;
        # no query ever leaves loopback (nothing listens on port 1).
        "delivery": {"hold": True, "dns_servers": ["127.0.0.1:1"]},
    }
    for name, values in sections.items():
        document.setdefault(name, {}).update(values)
    return document


def toml(document: dict[str, Any]) -> str:
    """Just enough TOML writing for test configurations (strings, ints, bools, string lists)."""
    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int):
            return str(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(element) for element in item) + "]"
        return '"' + str(item).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "".join(f"[{name}]\n" + "".join(f"{key} = {value(item)}\n" for key, item in table.items())
                   for name, table in document.items())


class ServerTestCase(TestCase):
    """Runs a real RelayService on loopback; clients run in threads so the reactor keeps serving."""

    timeout = 60

    def config(self, **sections: dict[str, Any]) -> Config:
        self.data_dir = os.path.abspath(self.mktemp())
        return parse_config(config_document(self.data_dir, certificate(os.path.abspath("certs")), **sections))

    async def start(self, config: Config | None = None, config_path: str = "") -> RelayService:
        service = RelayService(config or self.config(), reactor, config_path)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        await service.ready
        self.service = service
        self.smtp_port = service.listening(f"smtp:{service.config.smtp.listen[0]}").getHost().port
        self.smtps_port = service.listening(f"smtps:{service.config.smtp.tls_listen[0]}").getHost().port
        return service

    def in_thread(self, function: Callable[..., T], *args: Any) -> "Deferred[T]":
        return deferToThread(function, *args)

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.test", timeout=30)

    def smtps(self) -> smtplib.SMTP_SSL:
        return smtplib.SMTP_SSL("127.0.0.1", self.smtps_port, local_hostname="client.test",
                                context=client_tls(), timeout=30)

    def connect(self, port: int | None = None) -> "RawSMTP":
        """A raw socket to the STARTTLS listener (or C{port}); call it in a thread."""
        return RawSMTP(port or self.smtp_port)

    async def ip_account(self, name: str = "shop", network: str = "127.0.0.0/8") -> None:
        """An account that every loopback client relays as (IP authorisation)."""
        assert self.service.store is not None
        await self.service.store.add_account(name, None)
        await self.service.store.add_ip(name, ip_network(network))


def queue_id(reply: bytes | str) -> str:
    """The queue id in a C{250 2.0.0 Ok: queued as <id>} reply (code stripped or not)."""
    text = reply.decode("ascii") if isinstance(reply, bytes) else reply
    found = _QUEUED.search(text)
    if found is None:
        raise AssertionError(f"not a queued reply: {text!r}")
    return found.group(1)


_QUEUED = re.compile(r"2\.0\.0 Ok: queued as ([0-9A-Z]{16,20})\b")


def transaction(client: smtplib.SMTP, sender: str, recipients: list[str], message: bytes) -> str:
    """(EHLO,) MAIL, RCPT, DATA on an open smtplib client; the queue id from the final 250."""
    def accepted(command: str, reply: tuple[int, bytes]) -> bytes:
        if reply[0] != 250:
            raise AssertionError(f"{command} refused: {reply[0]} {reply[1].decode('utf-8', 'replace')}")
        return reply[1]

    client.ehlo_or_helo_if_needed()
    accepted("MAIL", client.mail(sender))
    for recipient in recipients:
        accepted("RCPT", client.rcpt(recipient))
    return queue_id(accepted("DATA", client.data(message)))


class RawSMTP:
    """A blocking SMTP client that sends exactly the bytes it is given, for protocol abuse.

    Replies are read whole (every line of a multi-line reply) and returned
    without their final CRLF, lines joined by "\\n". Use it in a thread.
    """

    def __init__(self, port: int, timeout: float = 20) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""

    def __enter__(self) -> "RawSMTP":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: str) -> str:
        """Send one command line (CRLF added) and read its reply."""
        self.send(line.encode("utf-8") + b"\r\n")
        return self.reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed with {self._buffer!r} unread")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def reply(self) -> str:
        """The next complete reply; EOFError if the server closed first."""
        lines = [self._line()]
        while lines[-1][3:4] == b"-":
            lines.append(self._line())
        return b"\n".join(lines).decode("utf-8")

    def rest(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        data, self._buffer = self._buffer, b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    def starttls(self, context: ssl.SSLContext) -> None:
        """Handshake on the same socket (after the 220 to STARTTLS, or at once for implicit TLS)."""
        assert not self._buffer, f"plaintext left unread before TLS: {self._buffer!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")


_LISTENING = re.compile(r"listening on (\S+) at .*port=(\d+)")


class TwistdProcess:
    """C{twistd -n jangomail} as a child process, for crash and memory tests."""

    def __init__(self, config_path: str, log_path: str, listeners: int = 2, arguments: tuple[str, ...] = ()) -> None:
        self.config_path = config_path
        self.listeners = listeners
        self.log_path = log_path
        self.arguments = arguments  # given to the jangomail plugin, e.g. ("--log-format", "json")
        self.transport: Any = None
        self.ports: dict[str, int] = {}
        self.output = ""
        self._waiting: list[tuple[str, Deferred[None]]] = []

    def logged(self, text: str) -> "Deferred[None]":
        """Fires once the process's output contains C{text} (at once if it already does)."""
        found: Deferred[None] = Deferred()
        self._waiting.append((text, found))
        self._check_output()
        return found

    def _check_output(self) -> None:
        for entry in list(self._waiting):
            if entry[0] in self.output:
                self._waiting.remove(entry)
                entry[1].callback(None)

    def start(self) -> "Deferred[dict[str, int]]":
        from twisted.internet.protocol import ProcessProtocol

        ready: Deferred[dict[str, int]] = Deferred()
        self.ended: Deferred[int] = Deferred()
        self.exit_code: int | None = None
        process = self

        class Output(ProcessProtocol):
            buffer = ""

            def outReceived(self, data: bytes) -> None:
                with open(process.log_path, "ab") as handle:
                    handle.write(data)
                self.buffer += data.decode("utf-8", "replace")
                process.output = self.buffer
                process._check_output()
                for name, port in _LISTENING.findall(self.buffer):
                    process.ports[name] = int(port)
                if not ready.called and len(process.ports) >= process.listeners:
                    ready.callback(process.ports)

            errReceived = outReceived

            def processEnded(self, reason: Any) -> None:
                code = reason.value.exitCode if reason.value.exitCode is not None else -(reason.value.signal or 0)
                process.exit_code = code
                if not ready.called:
                    ready.errback(RuntimeError(f"twistd exited ({code}) before listening; see {process.log_path}"))
                process.ended.callback(code)

        # "python -m twisted" is twist(1), which knows no -n: run twistd itself.
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "jangomail", "--config", self.config_path, *self.arguments]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.transport = reactor.spawnProcess(Output(), sys.executable, argv, env=env)
        return ready

    @property
    def pid(self) -> int:
        return int(self.transport.pid)

    def kill(self, signal_name: str = "KILL") -> "Deferred[int]":
        self.transport.signalProcess(signal_name)
        return self.ended

    def stop(self) -> "Deferred[object]":
        """Kill the process unless it has already ended (for addCleanup)."""
        if self.transport is None or self.exit_code is not None:
            return succeed(None)
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass
        return self.ended  # type: ignore[return-value]

    def status(self) -> dict[str, int]:
        """The memory lines of /proc/<pid>/status (VmRSS, VmHWM, ...), in kB."""
        with open(f"/proc/{self.pid}/status") as handle:
            return {name: int(value.split()[0]) for name, _, value in
                    (line.partition(":") for line in handle) if name.startswith("Vm")}


class ProcessTestCase(TestCase):
    """Runs C{twistd -n jangomail} as a child process with a TOML configuration file."""

    timeout = 120

    async def start_twistd(self, arguments: tuple[str, ...] = (), **sections: dict[str, Any]) -> TwistdProcess:
        """Write the configuration, create account C{shop} (IP 127.0.0.0/8) with the admin
        CLI, start twistd (with plugin C{arguments}) and wait until both listeners listen."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.data_dir = os.path.join(directory, "data")
        self.config_path = os.path.join(directory, "jangomail.toml")
        document = config_document(self.data_dir, certificate(os.path.abspath("certs")), **sections)
        with open(self.config_path, "w") as handle:
            handle.write(toml(document))
        self.relay_config = parse_config(document)
        await self.admin("account", "add", "shop", "--no-password")
        await self.admin("ip", "add", "shop", "127.0.0.0/8")
        process = TwistdProcess(self.config_path, os.path.join(directory, "twistd.log"), arguments=arguments)
        self.addCleanup(process.stop)
        ports = await process.start()
        self.smtp_port = ports[f"smtp:{self.relay_config.smtp.listen[0]}"]
        return process

    async def admin(self, *argv: str) -> str:
        """Run C{jangomail-admin --config <ours> ARGV...}; fails the test unless it exits 0."""
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "jangotw.admin.cli", "--config", self.config_path, *argv],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        self.assertEqual(code, 0, f"jangomail-admin {' '.join(argv)}: {out!r} {err!r}")
        return out.decode("utf-8")

    def in_thread(self, function: Callable[..., T], *args: Any) -> "Deferred[T]":
        return deferToThread(function, *args)

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.test", timeout=60)

    def offline_spool(self) -> Spool:
        """The server's spool opened afresh by this process (as a restarted server would),
        with its own thread pool, stopped at cleanup."""
        pool = ThreadPool(minthreads=1, maxthreads=1, name="offline-spool")
        pool.start()
        self.addCleanup(pool.stop)
        return Spool(os.path.join(self.data_dir, "spool"), reactor, reactor, pool)
