"""Real servers for integration tests: in-process on loopback port 0, or as a twistd process."""
from __future__ import annotations

import os
import re
import smtplib
import ssl
import sys
from typing import Any, Callable, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from jangotw.admin.certificate import write_self_signed
from jangotw.config import Config, parse_config
from jangotw.service import RelayService

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
        "server": {"hostname": "relay.test", "data_dir": data_dir},
        "smtp": {"listen": ["tcp:0:interface=127.0.0.1"], "tls_listen": ["tcp:0:interface=127.0.0.1"]},
        "tls": {"certificate": cert[0], "key": cert[1]},
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

    async def start(self, config: Config | None = None) -> RelayService:
        service = RelayService(config or self.config(), reactor)
        service.startService()
        self.addCleanup(service.stopService)
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


_LISTENING = re.compile(r"listening on (\S+) at .*port=(\d+)")


class TwistdProcess:
    """C{twistd -n jangomail} as a child process, for crash and memory tests."""

    def __init__(self, config_path: str, log_path: str, listeners: int = 2) -> None:
        self.config_path = config_path
        self.listeners = listeners
        self.log_path = log_path
        self.transport: Any = None
        self.ports: dict[str, int] = {}

    def start(self) -> "Deferred[dict[str, int]]":
        from twisted.internet.protocol import ProcessProtocol

        ready: Deferred[dict[str, int]] = Deferred()
        self.ended: Deferred[int] = Deferred()
        process = self

        class Output(ProcessProtocol):
            buffer = ""

            def outReceived(self, data: bytes) -> None:
                with open(process.log_path, "ab") as handle:
                    handle.write(data)
                self.buffer += data.decode("utf-8", "replace")
                for name, port in _LISTENING.findall(self.buffer):
                    process.ports[name] = int(port)
                if not ready.called and len(process.ports) >= process.listeners:
                    ready.callback(process.ports)

            errReceived = outReceived

            def processEnded(self, reason: Any) -> None:
                code = reason.value.exitCode if reason.value.exitCode is not None else -(reason.value.signal or 0)
                if not ready.called:
                    ready.errback(RuntimeError(f"twistd exited ({code}) before listening; see {process.log_path}"))
                process.ended.callback(code)

        argv = [sys.executable, "-m", "twisted", "-n", "--pidfile=", "jangomail", "--config", self.config_path]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.transport = reactor.spawnProcess(Output(), sys.executable, argv, env=env)
        return ready

    @property
    def pid(self) -> int:
        return int(self.transport.pid)

    def kill(self, signal_name: str = "KILL") -> "Deferred[int]":
        self.transport.signalProcess(signal_name)
        return self.ended
