"""The configuration file: documented defaults, and refusals that name the key."""
from __future__ import annotations

import os
import tomllib

import attrs
from twisted.trial.unittest import SynchronousTestCase

from jangotw.config import SECTIONS, Config, load_config, parse_config
from jangotw.errors import ConfigError

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc", "jangomail.toml")


class DocumentedConfigTests(SynchronousTestCase):
    def test_etc_file_is_the_defaults(self) -> None:
        """etc/jangomail.toml loads, documents every key, and states the real defaults."""
        config = load_config(ETC)
        with open(ETC, "rb") as handle:
            document = tomllib.load(handle)
        for name, cls in SECTIONS.items():
            self.assertEqual(set(document[name]), set(attrs.fields_dict(cls)), f"[{name}] keys")
        defaults = Config()
        for name in ("smtp", "delivery", "tracking", "initiation"):
            self.assertEqual(getattr(config, name), getattr(defaults, name), name)
        self.assertEqual(config.server.data_dir, "/var/lib/jangotw")
        self.assertTrue(config.server.hostname, "the host name defaults to the machine's")
        self.assertEqual(config.tls.certificate, "/etc/jangotw/tls/fullchain.pem")

    def test_every_key_has_a_description(self) -> None:
        for cls in SECTIONS.values():
            for field in attrs.fields(cls):
                self.assertTrue(field.metadata["doc"], f"{cls.__name__}.{field.name}")


class RefusalTests(SynchronousTestCase):
    def refused(self, document: dict, base: str = "/") -> str:
        return str(self.assertRaises(ConfigError, parse_config, document, base))

    def test_unknown_key_named(self) -> None:
        self.assertIn("smtp.max_recipient: unknown key", self.refused({"smtp": {"max_recipient": 5}}))

    def test_unknown_section_named(self) -> None:
        self.assertIn("[smpt]: unknown section", self.refused({"smpt": {}}))

    def test_wrong_type_named(self) -> None:
        self.assertIn("smtp.max_recipients: must be of type int", self.refused({"smtp": {"max_recipients": "5"}}))
        self.assertIn("smtp.auth_requires_tls: must be of type bool",
                      self.refused({"smtp": {"auth_requires_tls": 1}}))
        self.assertIn("smtp.listen: must be a list of strings", self.refused({"smtp": {"listen": [1]}}))

    def test_bad_values_named(self) -> None:
        self.assertIn("smtp.max_recipients: must be at least 1", self.refused({"smtp": {"max_recipients": 0}}))
        self.assertIn("smtp.bare_newline: must be one of", self.refused({"smtp": {"bare_newline": "allow"}}))
        self.assertIn("server.store:", self.refused({"server": {"store": "mysql://x"}}))
        self.assertIn("delivery.relay_host:", self.refused({"delivery": {"relay_host": "nohost"}}))
        self.assertIn("delivery.dns_servers:", self.refused({"delivery": {"dns_servers": ["1.2.3.4"]}}))

    def test_implicit_tls_needs_certificate(self) -> None:
        self.assertIn("tls.certificate", self.refused({"smtp": {"tls_listen": ["tcp:465"]}}))

    def test_relative_paths_resolved_against_file(self) -> None:
        config = parse_config({"server": {"data_dir": "data"}, "smtp": {"tls_listen": []}}, base="/srv/jango")
        self.assertEqual(config.server.data_dir, "/srv/jango/data")

    def test_unreadable_and_malformed_files(self) -> None:
        self.assertIn("cannot read", str(self.assertRaises(ConfigError, load_config, "/nonexistent.toml")))
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write("[smtp\nlisten = 1\n")
        self.assertIn(path, str(self.assertRaises(ConfigError, load_config, path)))

    def test_receiving_domains(self) -> None:
        config = parse_config({"smtp": {"tls_listen": [], "local_domains": ["Mail.Test"]},
                               "initiation": {"domain": "in.test"}, "delivery": {"bounce_domain": "b.test"}})
        self.assertEqual(config.receiving_domains, {"mail.test", "in.test", "b.test"})
