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
        for name in ("smtp", "delivery", "tracking", "initiation", "ldap"):
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

    def test_ldap_keys_named(self) -> None:
        ldap = {"url": "ldap://ldap.test", "user_base": "ou=people,dc=test", "group_base": "ou=groups,dc=test",
                "group_map": ["cn=mail,ou=groups,dc=test -> shop relay,reports"]}

        def refused(**changes: object) -> str:
            return self.refused({"smtp": {"tls_listen": []}, "ldap": {**ldap, **changes}})

        self.assertIn("ldap.url: must be", refused(url="ldap.test"))
        self.assertIn("ldap.url: must be", refused(url="http://ldap.test"))
        self.assertIn("ldap.group_map: 'cn=mail -> shop'", refused(group_map=["cn=mail -> shop"]))
        self.assertIn("unknown capability 'send'", refused(group_map=["cn=mail -> shop relay,send"]))
        self.assertIn("is not a DN", refused(group_map=["mail-group -> shop relay"]))
        self.assertIn("ldap.group_map: 'cn=mail shop relay'", refused(group_map=["cn=mail shop relay"]))
        self.assertIn("ldap.user_filter: must contain {username}", refused(user_filter="(uid=alice)"))
        self.assertIn("ldap.user_filter: may use only", refused(user_filter="(uid={user})"))
        self.assertIn("ldap.group_filter: must be an LDAP filter", refused(group_filter="member={dn}"))
        self.assertIn("ldap.group_base: needed", refused(group_base=""))
        self.assertIn("ldap.group_map: needed", refused(group_map=[]))
        self.assertIn("ldap.bind_password_file: bind_dn and", refused(bind_dn="cn=svc,dc=test"))
        self.assertIn("ldap.start_tls: ldaps://", refused(url="ldaps://ldap.test", start_tls=True))
        self.assertIn("ldap.ca_certificate: needs", refused(ca_certificate="ca.pem"))
        self.assertIn("ldap.timeout: must be at least 1", refused(timeout=0))

    def test_ldap_group_map_parsed(self) -> None:
        config = parse_config({"smtp": {"tls_listen": []}, "ldap": {
            "url": "ldaps://ldap.test:636", "user_base": "ou=people,dc=test", "group_base": "ou=groups,dc=test",
            "group_map": ["cn=Mail Relay,ou=groups,dc=test  ->  shop relay,reports"]}})
        [mapping] = config.ldap.mappings
        self.assertEqual((mapping.group_dn, mapping.account, mapping.capabilities),
                         ("cn=Mail Relay,ou=groups,dc=test", "shop", frozenset({"relay", "reports"})))

    def test_receiving_domains(self) -> None:
        config = parse_config({"smtp": {"tls_listen": [], "local_domains": ["Mail.Test"]},
                               "initiation": {"domain": "in.test"}, "delivery": {"bounce_domain": "b.test"}})
        self.assertEqual(config.receiving_domains, {"mail.test", "in.test", "b.test"})
