"""SIGHUP's rule: reloadable keys apply, every other change waits for a restart."""
from __future__ import annotations

from typing import Any

import attrs

from twisted.trial.unittest import SynchronousTestCase

from jangotw.config import RELOADABLE, SECTIONS, Config, parse_config
from jangotw.reload import merge

BASE: dict[str, Any] = {"server": {"hostname": "relay.test"}, "smtp": {"tls_listen": []}}
TLS = {"certificate": "/etc/jangotw/tls/fullchain.pem", "key": "/etc/jangotw/tls/privkey.pem"}


def config(**sections: dict[str, Any]) -> Config:
    document = {name: dict(table) for name, table in BASE.items()}
    for name, table in sections.items():
        document.setdefault(name, {}).update(table)
    return parse_config(document)


class MergeTests(SynchronousTestCase):
    def test_limits_apply_and_listeners_wait(self) -> None:
        running = config()
        loaded = config(smtp={"max_recipients": 5, "idle_timeout": 60, "listen": ["tcp:2526"]},
                        delivery={"relay_host": "smarthost.test:25"}, server={"shutdown_grace": 10})
        change = merge(running, loaded)
        self.assertEqual(change.applied, ("server.shutdown_grace", "smtp.max_recipients", "smtp.idle_timeout"))
        self.assertEqual(change.needs_restart, ("smtp.listen", "delivery.relay_host"))
        self.assertEqual(change.config.smtp.max_recipients, 5)
        self.assertEqual(change.config.server.shutdown_grace, 10)
        self.assertEqual(change.config.smtp.listen, running.smtp.listen, "the running listeners stay")
        self.assertEqual(change.config.delivery, running.delivery)

    def test_nothing_changed(self) -> None:
        change = merge(config(), config())
        self.assertEqual((change.applied, change.needs_restart), ((), ()))
        self.assertEqual(change.config, config())

    def test_new_certificate_paths_apply(self) -> None:
        running = config(tls=TLS)
        loaded = config(tls={"certificate": "/etc/jangotw/tls/new.pem", "key": "/etc/jangotw/tls/new.key"})
        change = merge(running, loaded)
        self.assertEqual(change.applied, ("tls.certificate", "tls.key"))
        self.assertEqual(change.config.tls, loaded.tls)

    def test_turning_tls_on_needs_a_restart(self) -> None:
        """STARTTLS and implicit-TLS listeners exist only when TLS was on at start-up."""
        change = merge(config(), config(tls=TLS))
        self.assertEqual(change.applied, ())
        self.assertEqual(change.needs_restart, ("tls.certificate", "tls.key"))
        self.assertEqual(change.config.tls.certificate, "")

    def test_reloadable_names_real_keys(self) -> None:
        known = {f"{name}.{field.name}" for name, cls in SECTIONS.items() for field in attrs.fields(cls)}
        self.assertLessEqual(RELOADABLE, known)
