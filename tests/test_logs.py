"""Log output: JSON field names, secrets kept out, debug dropped by default, and how twistd picks it."""
from __future__ import annotations

import io
import json
import os
from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from jangotw import logs
from jangotw.auth.credentials import Secret

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc", "jangomail.toml")


def emitted(observer_format: str, level: str, emit: Any) -> str:
    """What an observer of ours writes for the events C{emit(log)} sends."""
    stream = io.StringIO()
    emit(Logger(namespace="jangotw.test", observer=logs.make_observer(observer_format, level, stream)))
    return stream.getvalue()


class JSONFormatTests(SynchronousTestCase):
    def test_standard_fields_and_queue_id(self) -> None:
        """ts, level, namespace, message come first; the spool's message_id is written as queue_id."""
        line = json.loads(logs.format_json({
            "log_time": 1795515715.25, "log_level": LogLevel.info, "log_namespace": "jangotw.ingress.session",
            "log_format": "accepted {message_id} from {peer}", "message_id": "18ABC0F3E2D41ZX7Q9",
            "peer": "192.0.2.1", "recipients": 2, "account": "shop"}))
        self.assertEqual(list(line)[:4], ["ts", "level", "namespace", "message"])
        self.assertEqual(line["ts"], "2026-11-24T10:21:55.250Z")
        self.assertEqual(line["level"], "info")
        self.assertEqual(line["namespace"], "jangotw.ingress.session")
        self.assertEqual(line["message"], "accepted 18ABC0F3E2D41ZX7Q9 from 192.0.2.1")
        self.assertEqual(line["queue_id"], "18ABC0F3E2D41ZX7Q9")
        self.assertNotIn("message_id", line)
        self.assertEqual((line["peer"], line["recipients"], line["account"]), ("192.0.2.1", 2, "shop"))
        self.assertFalse([key for key in line if key.startswith("log_")])

    def test_secrets_never_written(self) -> None:
        """Fields named like secrets are masked whatever their value; Secret values print as ***."""
        line = json.loads(logs.format_json({
            "log_format": "login {username}", "username": "alice", "password": "hunter2 hunter2",
            "bind_password": "s3cret", "token": "jt_abc", "token_id": "abc", "credential": Secret("x9"),
            "other": Secret("y8")}))
        self.assertEqual(line["password"], "***")
        self.assertEqual(line["bind_password"], "***")
        self.assertEqual(line["token"], "***")
        self.assertEqual(line["credential"], "***")
        self.assertEqual(line["other"], "'***'")
        self.assertEqual(line["token_id"], "abc", "an identifier, not a secret")
        text = json.dumps(line)
        for secret in ("hunter2", "s3cret", "jt_abc", "x9", "y8"):
            self.assertNotIn(secret, text)

    def test_other_values_become_text(self) -> None:
        line = json.loads(logs.format_json({"log_format": "x", "error": OSError(28, "No space left on device"),
                                            "domains": ("a.test", "b.test"), "missing": None}))
        self.assertEqual(line["error"], "[Errno 28] No space left on device")
        self.assertEqual(line["domains"], ["a.test", "b.test"])
        self.assertIsNone(line["missing"])

    def test_failure_has_traceback(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        line = json.loads(logs.format_json({"log_format": "crashed", "log_failure": failure,
                                            "log_level": LogLevel.critical}))
        self.assertEqual(line["level"], "critical")
        self.assertIn("ZeroDivisionError", line["traceback"])

    def test_legacy_keys_do_not_clobber_the_message(self) -> None:
        """twisted.python.log events carry message/system/time keys of their own."""
        line = json.loads(logs.format_json({"log_format": "{log_text}", "log_text": "Port 25 closed",
                                            "message": ("Port 25 closed",), "system": "-", "time": 1.0,
                                            "isError": 0, "format": None}))
        self.assertEqual(line["message"], "Port 25 closed")
        for key in ("system", "time", "isError", "format"):
            self.assertNotIn(key, line)


class ObserverTests(SynchronousTestCase):
    def test_debug_dropped_by_default(self) -> None:
        """The SMTP transcript (debug) stays out unless asked for."""
        def emit(log: Logger) -> None:
            log.debug("smtp {peer} > {line}", peer="192.0.2.1", line="EHLO x")
            log.info("accepted {message_id}", message_id="Q1")

        for log_format in logs.FORMATS:
            normal = emitted(log_format, "info", emit)
            self.assertIn("Q1", normal)
            self.assertNotIn("EHLO", normal)
            self.assertIn("EHLO", emitted(log_format, "debug", emit))

    def test_text_is_one_readable_line(self) -> None:
        text = emitted("text", "info", lambda log: log.warn("auth failed {peer}", peer="192.0.2.1"))
        self.assertRegex(text, r"^\S+ \[jangotw\.test#warn\] auth failed 192\.0\.2\.1\n$")

    def test_json_is_one_object_per_line(self) -> None:
        def emit(log: Logger) -> None:
            log.info("one {n}", n=1)
            log.info("two\nlines {n}", n=2)

        lines = emitted("json", "info", emit).splitlines()
        self.assertEqual([json.loads(line)["n"] for line in lines], [1, 2])

    def test_factories_for_twistd_logger(self) -> None:
        """Every name the plugin can choose resolves to a factory (twistd calls it with no argument)."""
        for log_format in logs.FORMATS:
            for level in logs.LEVELS:
                name = logs.observer_name(log_format, level)
                module, _, attribute = name.rpartition(".")
                self.assertEqual(module, "jangotw.logs")
                self.assertTrue(callable(getattr(logs, attribute)))

    def test_info_observers_let_hot_paths_skip_debug_events(self) -> None:
        """Under an info-level observer no debug event can be written, so the outbound transcript
        is not even built; the debug observers keep it."""
        self.patch(logs, "debug_wanted", True)
        logs.json_debug_observer()
        self.assertTrue(logs.debug_wanted)
        logs.text_observer()
        self.assertFalse(logs.debug_wanted)


class TwistdOptionTests(SynchronousTestCase):
    """The plugin option, parsed by twistd's real ServerOptions."""

    def parse(self, *argv: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions(list(argv))
        return options

    def test_json_option_points_twistd_at_json_observer(self) -> None:
        options = self.parse("-n", "jangomail", "--config", ETC, "--log-format", "json")
        self.assertIs(options["logger"], logs.json_observer)

    def test_default_is_text_without_debug(self) -> None:
        self.assertIs(self.parse("-n", "jangomail", "--config", ETC)["logger"], logs.text_observer)
        self.assertIs(self.parse("-n", "jangomail", "--config", ETC, "--log-level", "debug")["logger"],
                      logs.text_debug_observer)

    def test_explicit_twistd_logger_wins(self) -> None:
        options = self.parse("-n", "--logger", "jangotw.logs.json_debug_observer", "jangomail", "--config", ETC)
        self.assertIs(options["logger"], logs.json_debug_observer)

    def test_logfile_keeps_twistd_logging(self) -> None:
        """--logfile is twistd's; our format options then cannot apply and say so."""
        self.assertIsNone(self.parse("-n", "--logfile", "x.log", "jangomail", "--config", ETC)["logger"])
        error = self.assertRaises(UsageError, self.parse, "--logfile", "x.log", "jangomail", "--config", ETC,
                                  "--log-format", "json")
        self.assertIn("standard output", str(error))

    def test_unknown_format_refused(self) -> None:
        error = self.assertRaises(UsageError, self.parse, "-n", "jangomail", "--config", ETC, "--log-format", "xml")
        self.assertIn("--log-format must be one of text, json", str(error))
