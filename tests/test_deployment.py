"""The deployment files in etc/: the production example loads, and the systemd unit agrees with it."""
from __future__ import annotations

import configparser
import os
import shlex

import attrs
from twisted.trial.unittest import SynchronousTestCase

from jangotw.config import load_config
from jangotw.ingress.drain import LINGER
from jangotw.queue.manager import QueueManager

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc")


def unit() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # systemd keys are case-sensitive
    parser.read(os.path.join(ETC, "jangomail.service"))
    return parser["Service"]


class ProductionConfigTests(SynchronousTestCase):
    def test_production_example_loads(self) -> None:
        config = load_config(os.path.join(ETC, "jangomail.production.toml"))
        self.assertEqual(config.server.hostname, "mail.example.com")
        self.assertEqual(config.smtp.listen, ("tcp:25", "tcp:587"))
        self.assertTrue(config.tls.certificate and config.smtp.auth_requires_tls)
        self.assertTrue(all("interface=127.0.0.1" in listen for listen in config.admin.listen),
                        "the unauthenticated admin server stays on loopback")


class SystemdUnitTests(SynchronousTestCase):
    def test_runs_twistd_in_the_foreground_with_the_production_paths(self) -> None:
        service = unit()
        argv = shlex.split(service["ExecStart"])
        self.assertEqual(argv[:4], ["/opt/jangotw/bin/twistd", "--nodaemon", "--pidfile=", "jangomail"])
        self.assertEqual(argv[argv.index("--config") + 1], "/etc/jangotw/jangomail.toml")
        config = load_config(os.path.join(ETC, "jangomail.production.toml"))
        self.assertIn(config.server.data_dir, service["ReadWritePaths"].split())

    def test_unprivileged_and_hardened(self) -> None:
        service = unit()
        self.assertEqual((service["User"], service["Group"]), ("jangotw", "jangotw"))
        self.assertEqual(service["AmbientCapabilities"], "CAP_NET_BIND_SERVICE")
        self.assertEqual(service["CapabilityBoundingSet"], "CAP_NET_BIND_SERVICE")
        for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                           ("PrivateTmp", "yes")):
            self.assertEqual(service[key], value, key)

    def test_signals_match_the_server(self) -> None:
        """SIGHUP reloads, SIGTERM drains; systemd waits longer than the longest graceful stop."""
        service = unit()
        self.assertEqual(service["ExecReload"], "/bin/kill -HUP $MAINPID")
        self.assertEqual(service["KillSignal"], "SIGTERM")
        config = load_config(os.path.join(ETC, "jangomail.production.toml"))
        longest_stop = config.server.shutdown_grace + LINGER + attrs.fields(QueueManager).stop_timeout.default
        self.assertGreater(int(service["TimeoutStopSec"]), longest_stop)
