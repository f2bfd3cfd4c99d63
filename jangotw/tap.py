# -*- test-case-name: tests.integration.test_server -*-
"""The composition root for C{twistd jangomail}: options in, services out.

The only module that imports the global reactor. Process-level behaviour lives
here too: which log observer twistd starts (L{jangotw.logs}), and the signals
(SIGTERM stops gracefully and exits 0, SIGHUP reloads). With C{[server] workers}
above 1 the process is the L{jangotw.workers.Supervisor} of that many worker
processes (each a L{RelayService} started with C{--worker N}).
"""
from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python import usage

from .config import load_config
from .errors import ConfigError
from .logs import FORMATS, LEVELS, observer_name
from .service import RelayService
from .workers import Inherited, Supervisor, die_with_supervisor, worker_count

__all__ = ["Options", "makeService"]

log = Logger()

DEFAULT_CONFIG = "/etc/jangotw/jangomail.toml"


class Options(usage.Options):
    synopsis = "--config FILE [--log-format text|json] [--log-level info|debug]"
    longdesc = ("Run the jangotw mail relay. Logs go to standard output (run with twistd -n, e.g. under "
                "systemd); --logfile, --syslog or --logger given to twistd take precedence.")
    optParameters = [
        ["config", "c", os.environ.get("JANGOMAIL_CONFIG", DEFAULT_CONFIG), "Configuration file (TOML)."],
        ["log-format", None, None, "text (default: human-readable) or json (one JSON object per line)."],
        ["log-level", None, None, "info (default) or debug (adds the SMTP transcripts)."],
        ["worker", None, None, "Internal: run as worker N of [server] workers (the supervisor starts them)."],
    ]

    def postOptions(self) -> None:
        for name, choices in (("log-format", FORMATS), ("log-level", LEVELS)):
            if self[name] is not None and self[name] not in choices:
                raise usage.UsageError(f"--{name} must be one of {', '.join(choices)}")
        if self["worker"] is not None and not self["worker"].isdigit():
            raise usage.UsageError("--worker takes a worker number")
        self._choose_logger()
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as error:
            raise usage.UsageError(f"configuration: {error}") from None

    def _choose_logger(self) -> None:
        """Point twistd's C{--logger} at our observer when twistd would write to standard
        output anyway (-n, no --logfile/--syslog/--logger). twistd resolves the name after
        this runs and starts the observer before the service."""
        twistd = self.parent
        if twistd is None:  # not run by twistd (tests)
            return
        to_stdout = (twistd.get("nodaemon") and twistd.get("logfile") in (None, "", "-")
                     and not twistd.get("syslog") and twistd.get("logger") is None)
        if to_stdout:
            twistd["logger"] = observer_name(self["log-format"] or "text", self["log-level"] or "info")
        elif self["log-format"] is not None or self["log-level"] is not None:
            raise usage.UsageError("--log-format and --log-level write to standard output: run twistd with -n "
                                   "and without --logfile, --syslog or --logger")


def makeService(options: Options) -> RelayService | Supervisor:
    from twisted.internet import reactor

    config = options["loaded"]
    service: RelayService | Supervisor
    if options["worker"] is not None:
        die_with_supervisor()
        service = RelayService(config, reactor, options["config"], Inherited.from_environment(int(options["worker"])))
    elif worker_count(config) > 1:
        passed = [f"--{name}={options[name]}" for name in ("log-format", "log-level") if options[name] is not None]
        service = Supervisor(config, options["config"], reactor, worker_count(config), tuple(passed))
    else:
        service = RelayService(config, reactor, options["config"])
    service.ready.addErrback(lambda failure: reactor.stop())  # already logged: exit, don't limp on
    reactor.callWhenRunning(_handle_signals, reactor, service)  # after the reactor installs its own
    return service


def _handle_signals(reactor: Any, service: RelayService | Supervisor) -> None:
    """SIGTERM: stop gracefully and exit 0 (the reactor's own handler re-raises the signal,
    so the process would die by it). SIGHUP: reload. Both run on the reactor thread."""
    def stop() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            log.info("already stopping")

    signal.signal(signal.SIGTERM, lambda number, frame: reactor.callFromThread(stop))
    signal.signal(signal.SIGHUP, lambda number, frame: reactor.callFromThread(service.reload))
