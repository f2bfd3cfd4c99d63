"""Operations on a real server: metrics as mail flows, SIGHUP reload, graceful SIGTERM, JSON logs."""
from __future__ import annotations

import json
import os
import shutil
import smtplib
import ssl
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.logger import capturedLogs, formatEvent
from twisted.web.client import Agent, readBody

from jangotw.admin.certificate import write_self_signed
from jangotw.config import load_config

from tests.support.capture import start_capture

from .server import (ProcessTestCase, RawSMTP, ServerTestCase, TwistdProcess, certificate, client_tls,
                     config_document, queue_id, toml, transaction)

MESSAGE = b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: ops\r\n\r\nHello\r\n"
SHUTTING_DOWN = "421 4.3.2 relay.test Service shutting down; try again later"
WRONG_PASSWORD = "amber-walrus-9f2c-never-logged"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


class MetricsFlowTests(ServerTestCase):
    async def scrape(self) -> Samples:
        port = self.service.listening(f"admin:{self.service.config.admin.listen[0]}").getHost().port
        response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
        return samples((await readBody(response)).decode())

    async def test_metrics_change_as_mail_flows(self) -> None:
        """A relay refusal, a failed AUTH, an accepted and delivered message and an open are
        each counted; the queue is empty again once the message is delivered."""
        capture = await start_capture(self)
        await self.start(self.config(delivery={"hold": False, "relay_host": f"127.0.0.1:{capture.port}"},
                                     tracking={"listen": ["tcp:0:interface=127.0.0.1"]}))
        before = await self.scrape()

        def refused_relay() -> int:
            with self.smtp() as client:
                client.ehlo()
                client.mail("news@shop.test")
                return client.rcpt("you@remote.test")[0]

        def failed_auth() -> int:
            with self.smtps() as client:
                try:
                    client.login("shop", WRONG_PASSWORD)
                except smtplib.SMTPAuthenticationError as error:
                    return error.smtp_code
                return 235

        self.assertEqual(await self.in_thread(refused_relay), 550)
        self.assertEqual(await self.in_thread(failed_auth), 535)
        await self.ip_account()

        def send() -> str:
            with self.smtp() as client:
                return transaction(client, "news@shop.test", ["you@remote.test"], MESSAGE)

        message_id = await self.in_thread(send)
        await capture.when_received(1)
        await self.service.queue.settled()
        assert self.service.store is not None
        await self.service.store.record_send(message_id, "shop", ["you@remote.test"], 0.0)
        tracking = self.service.listening(f"tracking:{self.service.config.tracking.listen[0]}").getHost().port
        pixel = f"http://127.0.0.1:{tracking}/o.z?{self.service.tracking_signer.open_token(message_id, 0)}"
        self.assertEqual((await Agent(reactor).request(b"GET", pixel.encode())).code, 200)
        after = await self.scrape()

        self.assertEqual(delta(before, after, "jangotw_smtp_sessions_total"), 3)
        self.assertEqual(delta(before, after, "jangotw_recipients_refused_total", reason="5.7.1"), 1)
        self.assertEqual(delta(before, after, "jangotw_auth_failures_total", mechanism="PLAIN", reason="5.7.8"), 1)
        self.assertEqual(delta(before, after, "jangotw_messages_accepted_total"), 1)
        self.assertEqual(delta(before, after, "jangotw_deliveries_total", outcome="delivered"), 1)
        self.assertEqual(delta(before, after, "jangotw_delivery_latency_seconds_count"), 1)
        self.assertEqual(delta(before, after, "jangotw_tracking_events_total", kind="open"), 1)
        self.assertEqual(after[("jangotw_queue_messages", ())], 0)

    async def test_queue_gauges_while_mail_waits(self) -> None:
        """With delivery on hold, an accepted message shows in the queue size and age."""
        await self.start()
        await self.ip_account()

        def send() -> str:
            with self.smtp() as client:
                return transaction(client, "news@shop.test", ["you@remote.test"], MESSAGE)

        await self.in_thread(send)
        after = await self.scrape()
        self.assertEqual(after[("jangotw_queue_messages", ())], 1)
        self.assertGreaterEqual(after[("jangotw_queue_oldest_age_seconds", ())], 0)


class ReloadTests(ServerTestCase):
    """RelayService.reload, which SIGHUP calls, on an in-process server."""

    async def start_with_file(self, **sections: dict[str, Any]) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.data_dir = os.path.join(directory, "data")
        paths = (os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"))
        for shared, own in zip(certificate(os.path.abspath("certs")), paths):
            shutil.copy(shared, own)
        self.document = config_document(self.data_dir, paths, **sections)
        self.path = os.path.join(directory, "jangomail.toml")
        self.rewrite()
        await self.start(load_config(self.path), self.path)
        await self.ip_account()
        return directory

    def rewrite(self, **sections: dict[str, Any]) -> None:
        for name, values in sections.items():
            self.document.setdefault(name, {}).update(values)
        with open(self.path, "w") as handle:
            handle.write(toml(self.document))

    def recipients_accepted(self, count: int) -> list[int]:
        with self.smtp() as client:
            client.ehlo()
            client.mail("news@shop.test")
            return [client.rcpt(f"r{number}@remote.test")[0] for number in range(count)]

    async def reload(self) -> list[str]:
        with capturedLogs() as events:
            await self.service.reload()
        return [formatEvent(event) for event in events]

    async def test_limits_apply_to_new_sessions(self) -> None:
        await self.start_with_file()
        self.rewrite(smtp={"max_recipients": 1, "listen": ["tcp:0:interface=127.0.0.2"]})
        logged = await self.reload()
        self.assertTrue([line for line in logged if line.startswith(f"reloaded {self.path}: smtp.max_recipients;")],
                        logged)
        self.assertIn(f"changed in {self.path} but applied only by a restart: smtp.listen", logged)
        self.assertEqual(await self.in_thread(self.recipients_accepted, 2), [250, 452])
        self.assertEqual(self.service.config.smtp.listen, ("tcp:0:interface=127.0.0.1",))

    async def test_bad_file_changes_nothing(self) -> None:
        await self.start_with_file()
        self.rewrite(smtp={"max_recipients": 0})
        logged = await self.reload()
        self.assertIn("reload refused, running configuration kept: smtp.max_recipients: must be at least 1",
                      logged)
        self.assertEqual(await self.in_thread(self.recipients_accepted, 2), [250, 250])

    async def test_renewed_certificate_at_the_same_path(self) -> None:
        """New STARTTLS and implicit-TLS connections present the renewed certificate."""
        directory = await self.start_with_file()

        def presented(implicit: bool) -> bytes:
            if implicit:
                with RawSMTP(self.smtps_port) as raw:
                    raw.starttls(client_tls())
                    return raw.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined, no-any-return]
            with self.smtp() as client:
                client.starttls(context=client_tls())
                return client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]

        old = await self.in_thread(presented, False)
        write_self_signed(os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"),
                          hostname="renewed.test")
        await self.reload()
        renewed = ssl.DER_cert_to_PEM_cert(await self.in_thread(presented, False))
        self.assertNotEqual(ssl.PEM_cert_to_DER_cert(renewed), old)
        with open(os.path.join(directory, "cert.pem")) as handle:
            self.assertEqual(ssl.PEM_cert_to_DER_cert(handle.read()), ssl.PEM_cert_to_DER_cert(renewed))
        self.assertEqual(await self.in_thread(presented, True), ssl.PEM_cert_to_DER_cert(renewed))


class GracefulShutdownTests(ProcessTestCase):
    async def test_sigterm_lets_the_transaction_finish(self) -> None:
        """SIGTERM with one session mid-DATA, one stalled after RCPT and one idle: the idle one
        gets 421 4.3.2 at once, the sender finishes and gets 250, the stalled one gets 421 4.3.2
        when the grace ends, the process exits 0, and the message is there after a restart."""
        process = await self.start_twistd(server={"shutdown_grace": 2})
        port = self.smtp_port

        def open_session(*commands: str) -> RawSMTP:
            raw = RawSMTP(port)
            raw.reply()
            for command in commands:
                raw.command(command)
            return raw

        sending = await self.in_thread(open_session, "EHLO client.test", "MAIL FROM:<news@shop.test>",
                                       "RCPT TO:<you@remote.test>", "DATA")
        stalled = await self.in_thread(open_session, "EHLO client.test", "MAIL FROM:<news@shop.test>",
                                       "RCPT TO:<other@remote.test>")
        idle = await self.in_thread(open_session, "EHLO client.test")
        for raw in (sending, stalled, idle):
            self.addCleanup(raw.close)
        await self.in_thread(sending.send, MESSAGE[:30])

        process.transport.signalProcess("TERM")
        self.assertEqual(await self.in_thread(idle.reply), SHUTTING_DOWN)  # the drain has begun

        def finish() -> tuple[str, str]:
            sending.send(MESSAGE[30:] + b".\r\n")
            return sending.reply(), sending.reply()

        accepted, closing = await self.in_thread(finish)
        message_id = queue_id(accepted)
        self.assertEqual(closing, SHUTTING_DOWN)
        self.assertEqual(await self.in_thread(stalled.reply), SHUTTING_DOWN)
        self.assertEqual(await process.ended, 0)
        self.assertIn("closing 1 SMTP session(s) still open after 2s", process.output)

        restarted = TwistdProcess(self.config_path, os.path.join(os.path.dirname(self.config_path), "again.log"))
        self.addCleanup(restarted.stop)
        await restarted.start()
        await restarted.logged("queue resumed 1 message(s)")
        self.assertIn(message_id, await self.admin("queue", "show", message_id))
        restarted.transport.signalProcess("TERM")
        self.assertEqual(await restarted.ended, 0)


class SignalTests(ProcessTestCase):
    async def test_sighup_reloads_limits(self) -> None:
        """SIGHUP re-reads the file: a new session gets the new limit. The default log is text
        without debug lines."""
        process = await self.start_twistd()
        with open(self.config_path) as handle:
            text = handle.read()
        with open(self.config_path, "w") as handle:
            handle.write(text.replace("[smtp]\n", "[smtp]\nmax_recipients = 1\n"))
        process.transport.signalProcess("HUP")
        await process.logged(f"reloaded {self.config_path}: smtp.max_recipients")

        def recipients() -> list[int]:
            with self.smtp() as client:
                client.ehlo()
                client.mail("news@shop.test")
                return [client.rcpt(address)[0] for address in ("a@remote.test", "b@remote.test")]

        self.assertEqual(await self.in_thread(recipients), [250, 452])
        process.transport.signalProcess("TERM")
        self.assertEqual(await process.ended, 0)
        self.assertIn("[jangotw.service#info] listening on smtp:", process.output)
        self.assertNotIn("#debug]", process.output)


class JSONLogTests(ProcessTestCase):
    async def test_queue_id_followed_from_accept_to_delivery(self) -> None:
        """twistd jangomail --log-format json: every line is a JSON object, and the accept,
        pipeline, delivery and completion events all carry the message's queue_id. A failed
        AUTH's password appears nowhere."""
        capture = await start_capture(self)
        process = await self.start_twistd(arguments=("--log-format", "json"),
                                          delivery={"hold": False, "relay_host": f"127.0.0.1:{capture.port}"})
        smtps_port = process.ports[f"smtps:{self.relay_config.smtp.tls_listen[0]}"]

        def failed_auth() -> None:
            with smtplib.SMTP_SSL("127.0.0.1", smtps_port, context=client_tls(), timeout=60) as client:
                self.assertRaises(smtplib.SMTPAuthenticationError, client.login, "shop", WRONG_PASSWORD)

        def send() -> str:
            with self.smtp() as client:
                return transaction(client, "news@shop.test", ["you@remote.test"], MESSAGE)

        await self.in_thread(failed_auth)
        message_id = await self.in_thread(send)
        await capture.when_received(1)
        await process.logged(f"done with {message_id}")
        process.transport.signalProcess("TERM")
        self.assertEqual(await process.ended, 0)

        with open(process.log_path, encoding="utf-8") as handle:
            text = handle.read()
        self.assertNotIn(WRONG_PASSWORD, text)
        lines = [json.loads(line) for line in text.splitlines()]
        for line in lines:
            self.assertLessEqual({"ts", "level", "namespace", "message"}, set(line))
        trail = [(line["namespace"], line["message"].split()[0]) for line in lines if line.get("queue_id") == message_id]
        self.assertEqual(trail, [("jangotw.ingress.session", "accepted"), ("jangotw.queue.manager", "pipeline"),
                                 ("jangotw.outbound.client", "delivery"), ("jangotw.queue.manager", "done")])
        accepted = next(line for line in lines if line.get("queue_id") == message_id)
        self.assertEqual((accepted["account"], accepted["peer"], accepted["level"]), ("shop", "127.0.0.1", "info"))
