# -*- test-case-name: tests.test_config -*-
"""The configuration file: one TOML document loaded into one frozen, validated tree.

Unknown keys and bad values stop start-up with a message naming the key
(C{smtp.max_recipients: must be at least 1}), so a typo never silently falls
back to a default. Relative paths are resolved against the file's directory.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from typing import Any, Callable

import attrs
from attrs import frozen
from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

from .errors import ConfigError

__all__ = [
    "Config",
    "ServerConfig",
    "SMTPConfig",
    "TLSConfig",
    "DeliveryConfig",
    "TrackingConfig",
    "InitiationConfig",
    "AdminConfig",
    "LDAPConfig",
    "GroupMapping",
    "CAPABILITIES",
    "parse_group_mapping",
    "SECTIONS",
    "RELOADABLE",
    "load_config",
    "parse_config",
]

Check = Callable[[Any], str | None]


def _key(default: Any, doc: str, check: Check | None = None, path: bool = False) -> Any:
    """A config key: its default, its documentation and an optional value check."""
    metadata = {"doc": doc, "check": check, "path": path}
    if isinstance(default, list):
        return attrs.field(factory=lambda: tuple(default), metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


def _at_least(minimum: int) -> Check:
    return lambda value: None if value >= minimum else f"must be at least {minimum}"


def _one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(map(repr, choices))}"


def _store_url(value: str) -> str | None:
    if value == "sqlite" or value.startswith(("redis://", "rediss://", "unix:")):
        return None
    return 'must be "sqlite" or a redis://host:port/db URL'


def _host_port(value: str) -> str | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return 'must be "host:port", e.g. "127.0.0.1:2599"'
    return None


def _base_url(value: str) -> str | None:
    if not value or (value.startswith(("http://", "https://")) and "?" not in value and "#" not in value):
        return None
    return 'must be an http:// or https:// URL without query, e.g. "https://track.example.com"'


def _host_ports(values: tuple[str, ...]) -> str | None:
    for value in values:
        problem = _host_port(value)
        if problem:
            return f"{value!r} {problem}"
    return None


def _addresses(values: tuple[str, ...]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return f"{value!r} is not an IPv4 or IPv6 address"
    return None


def _ldap_url(value: str) -> str | None:
    scheme, separator, rest = value.partition("://")
    host = rest.rstrip("/")
    if not value or (separator and scheme in ("ldap", "ldaps") and host and "/" not in host):
        return None
    return 'must be "" (LDAP off) or ldap://host[:port] or ldaps://host[:port]'


def _filter_template(required: tuple[str, ...], allowed: tuple[str, ...]) -> Check:
    """A search filter with C{{name}} placeholders: parenthesised, known names only, one required."""
    example = "{" + required[0] + "}"

    def check(value: str) -> str | None:
        if not (value.startswith("(") and value.endswith(")")):
            return f'must be an LDAP filter in parentheses, e.g. "(uid={example})"'
        try:
            value.format(**{name: "x" for name in allowed})
        except (KeyError, IndexError, ValueError):
            return f"may use only the placeholders {', '.join('{' + name + '}' for name in allowed)}"
        if not any("{" + name + "}" in value for name in required):
            return f"must contain {' or '.join('{' + name + '}' for name in required)}"
        return None

    return check


CAPABILITIES = frozenset({"relay", "initiation", "api", "reports", "settings"})


@frozen
class GroupMapping:
    """One C{[ldap] group_map} entry: members of C{group_dn} act as C{account} with C{capabilities}."""

    group_dn: str
    account: str
    capabilities: frozenset[str]


def parse_group_mapping(text: str) -> GroupMapping:
    """Parse C{"GROUP_DN -> ACCOUNT capability,capability"}.

    An unescaped C{>} cannot occur in a DN (RFC 4514), so the first C{->} separates the two sides.

    @raise ValueError: saying what is wrong with C{text}.
    """
    group_dn, arrow, target = text.partition("->")
    group_dn = group_dn.strip()
    if not arrow or not group_dn:
        raise ValueError('must read "GROUP_DN -> ACCOUNT capability,capability"')
    try:
        parse_dn(group_dn, strip=True)
    except LDAPInvalidDnError as error:
        raise ValueError(f"group {group_dn!r} is not a DN ({error})") from None
    parts = target.split()
    if len(parts) != 2:
        raise ValueError('after "->" give the account and its comma-separated capabilities, '
                         'e.g. "shop relay,reports"')
    account, listed = parts
    capabilities = frozenset(name.strip() for name in listed.split(","))
    unknown = capabilities - CAPABILITIES
    if unknown:
        raise ValueError(f"unknown capability {', '.join(sorted(map(repr, unknown)))} "
                         f"(known: {', '.join(sorted(CAPABILITIES))})")
    return GroupMapping(group_dn, account, capabilities)


def _group_map(values: tuple[str, ...]) -> str | None:
    for value in values:
        try:
            parse_group_mapping(value)
        except ValueError as error:
            return f"{value!r}: {error}"
    return None


@frozen
class ServerConfig:
    hostname: str = _key("", "Name this server gives in its banner, EHLO reply and Received headers "
                             "(default: the machine's host name).")
    data_dir: str = _key("/var/lib/jangotw", "Directory holding the spool, the embedded database "
                                             "and secrets.", path=True)
    store: str = _key("sqlite", 'State store: "sqlite" (embedded, under data_dir) or '
                                '"redis://host:port/db".', _store_url)
    shutdown_grace: int = _key(30, "Seconds open SMTP sessions get, after SIGTERM, to finish the transaction "
                                   "in progress; then 421 4.3.2 closes the rest.", _at_least(0))
    workers: int = _key(0, "Reactor processes serving the listeners, each with its own spool (spool/w<N>/) "
                           "and queue, supervised by the twistd process; 0: one per CPU; 1: a single "
                           "process with spool/ (no supervisor). Needs a restart.", _at_least(0))


@frozen
class SMTPConfig:
    listen: tuple[str, ...] = _key(["tcp:2525", "tcp:587", "tcp:25"],
                                   "ESMTP listeners (Twisted endpoint strings); STARTTLS is offered "
                                   "when [tls] has a certificate.")
    tls_listen: tuple[str, ...] = _key(["tcp:465"], "Implicit-TLS listeners (RFC 8314); need [tls].")
    max_message_size: int = _key(31457280, "Largest message accepted, in bytes (advertised as SIZE).",
                                 _at_least(1024))
    max_recipients: int = _key(100, "Recipients per message; extras get 452 4.5.3.", _at_least(1))
    auth_requires_tls: bool = _key(True, "Offer and accept AUTH only once TLS is up.")
    max_errors: int = _key(10, "Refused commands per session before 421 4.7.0 and disconnect.",
                           _at_least(1))
    idle_timeout: int = _key(300, "Seconds a session may stay silent before 421 4.4.2.", _at_least(1))
    max_connections: int = _key(1000, "Concurrent sessions in total; more get 421 4.7.0.",
                                _at_least(1))
    max_connections_per_ip: int = _key(50, "Concurrent sessions from one client address.",
                                       _at_least(1))
    max_header_size: int = _key(1048576, "Bytes of header section kept in memory per message; "
                                         "a larger header section gets 552 5.3.4.", _at_least(4096))
    bare_newline: str = _key("reject", 'A bare CR or LF in DATA: "reject" (550 5.6.0) or '
                                       '"normalise" (to CRLF). Never an end of data.',
                             _one_of("reject", "normalise"))
    auth_failures: int = _key(5, "Failed AUTH attempts from one client address, or for one user name, "
                                 "within auth_failure_window before 454 4.7.0.", _at_least(1))
    auth_failure_window: int = _key(300, "Seconds failed AUTH attempts are remembered.",
                                    _at_least(1))
    local_domains: tuple[str, ...] = _key([], "Extra domains this server receives mail for "
                                              "without relay authorisation (besides the initiation "
                                              "and bounce domains).")
    from_auth_verification: str = _key("dmarc", 'Mail authorised only by its From address (no AUTH, no '
                                                'authorised client address) must also be authenticated for '
                                                'the From domain: "dmarc" (SPF for the client address and '
                                                'MAIL FROM, or a valid DKIM signature, aligned with the From '
                                                'domain; else 550 5.7.1) or "none" (the From address alone '
                                                'authorises).', _one_of("dmarc", "none"))


@frozen
class TLSConfig:
    certificate: str = _key("", "PEM certificate chain for STARTTLS and implicit TLS.", path=True)
    key: str = _key("", "PEM private key for the certificate.", path=True)


@frozen
class DeliveryConfig:
    relay_host: str = _key("", 'Smarthost "host:port" that receives all outbound mail '
                               '(empty: deliver by MX).', _host_port)
    mx_port: int = _key(25, "Port of remote mail exchangers.", _at_least(1))
    dns_servers: tuple[str, ...] = _key([], 'Resolvers "host:port" for MX lookups; empty: the '
                                            "system resolver.", _host_ports)
    bounce_domain: str = _key("", "Domain of VERP return paths; bounces to it are accepted "
                                  "without relay authorisation.")
    require_verified_tls: tuple[str, ...] = _key([], "Destination domains (or the relay_host name) that "
                                                     "must offer TLS with a certificate valid for the "
                                                     "MX host name; others get opportunistic STARTTLS.")
    relay_user: str = _key("", "User name for AUTH PLAIN to relay_host (sent only over TLS).")
    relay_password_file: str = _key("", "File holding the relay_host password on its first line "
                                        "(keep it mode 0600).", path=True)
    blocklist_file: str = _key("", "Server-wide block list: addresses and @domains (one per line, # comments) "
                                   "that no account's mail is delivered to; read at start-up.", path=True)
    hold: bool = _key(False, "Accept and spool mail but start no deliveries (maintenance, or draining "
                             "a node); set false and restart to release the queue.")
    max_active: int = _key(200, "Delivery attempts in progress at once, in total.", _at_least(1))
    max_per_destination: int = _key(20, "Delivery attempts in progress at once to one destination "
                                        "domain (or to relay_host).", _at_least(1))
    retry_base: int = _key(60, "Seconds before the first retry after a temporary failure; each "
                               "further retry waits twice as long.", _at_least(1))
    retry_max: int = _key(3600, "Longest wait between retries, in seconds.", _at_least(1))
    max_queue_lifetime: int = _key(432000, "Seconds a message may stay queued (default 5 days) "
                                           "before its undelivered recipients fail.", _at_least(60))
    spf_include: str = _key("", "DNS name of this server's own SPF record (e.g. _spf.relay.example.com) that "
                                "sender domains include (v=spf1 include:<name> ~all); empty: they list "
                                "sending_addresses themselves.")
    sending_addresses: tuple[str, ...] = _key([], "Addresses this server's mail reaches the internet from "
                                                  "(as receivers see them): the SPF records sender domains "
                                                  "publish must allow them; domain check evaluates SPF for "
                                                  "each.", _addresses)


@frozen
class TrackingConfig:
    listen: tuple[str, ...] = _key([], "Tracking web server listeners (endpoint strings).")
    base_url: str = _key("", "Tracking URL base for open, click and unsubscribe links when an account has "
                             "no tracking_domain, e.g. https://track.example.com.", _base_url)


@frozen
class InitiationConfig:
    listen: tuple[str, ...] = _key([], "Initiation mailbox listeners (endpoint strings).")
    domain: str = _key("", "Domain of the initiation mailbox: <account>@<domain>.")


@frozen
class AdminConfig:
    listen: tuple[str, ...] = _key(["tcp:8025:interface=127.0.0.1"],
                                   "Admin web server listeners (endpoint strings): /metrics (Prometheus), "
                                   "/healthz, /readyz without authentication, and the JSON admin API under "
                                   "/api/v1 (Bearer tokens). Keep them on loopback or a firewalled network.")
    operators: tuple[str, ...] = _key([], "Accounts whose logins may use the admin API on every account, the "
                                          "whole queue and the audit log; every other login acts only on its "
                                          "own account.")


@frozen
class LDAPConfig:
    """Logins of directory users (SMTP AUTH names no local account has); see L{jangotw.auth.ldap}."""

    url: str = _key("", 'Directory server, ldap://host[:port] or ldaps://host[:port]; "" turns LDAP '
                        "logins off. Local accounts are always tried first.", _ldap_url)
    start_tls: bool = _key(False, "Upgrade ldap:// connections with StartTLS before binding (not with "
                                  "ldaps://); the server certificate is verified.")
    bind_dn: str = _key("", 'DN of the service account that searches for users and groups ("": search '
                            "anonymously).")
    bind_password_file: str = _key("", "File holding the service account's password on its first line "
                                       "(keep it mode 0600).", path=True)
    user_base: str = _key("", "Subtree searched for the user, e.g. ou=people,dc=example,dc=com.")
    user_filter: str = _key("(uid={username})", "Filter that finds exactly one user; {username} is the "
                                                "SMTP AUTH name, escaped (RFC 4515).",
                            _filter_template(("username",), ("username",)))
    group_base: str = _key("", "Subtree searched for the user's groups, e.g. ou=groups,dc=example,dc=com.")
    group_filter: str = _key("(member={dn})", "Filter for the groups the user belongs to; {dn} is the user's "
                                              "DN and {username} the AUTH name, both escaped. Nested groups "
                                              "are not followed.",
                             _filter_template(("dn", "username"), ("dn", "username")))
    group_map: tuple[str, ...] = _key([], 'Entries "GROUP_DN -> ACCOUNT capability,capability": members of '
                                          "the group act as that local account. The first entry (in this "
                                          "order) whose group the user is in decides; users in none are "
                                          f"refused. Capabilities: {', '.join(sorted(CAPABILITIES))} (SMTP "
                                          "AUTH needs relay).", _group_map)
    timeout: int = _key(5, "Seconds allowed for connecting and for each LDAP operation; a slower server "
                           "gets 454 4.7.0 (try later), never 535.", _at_least(1))
    pool_size: int = _key(4, "Threads for LDAP calls: logins checked at once.", _at_least(1))
    ca_certificate: str = _key("", "PEM CA certificate(s) that verify the server for ldaps:// and StartTLS "
                                   '("": the system CAs).', path=True)

    @property
    def mappings(self) -> tuple[GroupMapping, ...]:
        return tuple(parse_group_mapping(entry) for entry in self.group_map)


@frozen
class Config:
    """The whole configuration; built only by L{parse_config}."""

    server: ServerConfig = ServerConfig()
    smtp: SMTPConfig = SMTPConfig()
    tls: TLSConfig = TLSConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    tracking: TrackingConfig = TrackingConfig()
    initiation: InitiationConfig = InitiationConfig()
    admin: AdminConfig = AdminConfig()
    ldap: LDAPConfig = LDAPConfig()

    @property
    def receiving_domains(self) -> frozenset[str]:
        """Domains mail is accepted for without relay authorisation."""
        names = {*self.smtp.local_domains, self.initiation.domain, self.delivery.bounce_domain}
        return frozenset(name.lower() for name in names if name)


SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "smtp": SMTPConfig,
    "tls": TLSConfig,
    "delivery": DeliveryConfig,
    "tracking": TrackingConfig,
    "initiation": InitiationConfig,
    "admin": AdminConfig,
    "ldap": LDAPConfig,
}

#: Keys SIGHUP applies without a restart (L{jangotw.reload}); the TLS files are re-read even when
#: their paths are unchanged, so a renewed certificate is picked up.
RELOADABLE = frozenset({
    "server.shutdown_grace",
    "smtp.max_message_size", "smtp.max_recipients", "smtp.auth_requires_tls", "smtp.max_errors",
    "smtp.idle_timeout", "smtp.max_connections", "smtp.max_connections_per_ip", "smtp.max_header_size",
    "smtp.bare_newline",
    "tls.certificate", "tls.key",
})

_TYPES: dict[Any, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "tuple[str, ...]": (list,),
}


def _section(cls: type, table: Any, name: str, base: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table")
    fields = attrs.fields_dict(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{name}.{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key (known: {', '.join(fields)})")
        field = fields[key]
        expected = _TYPES[field.type]
        if not isinstance(value, expected) or (expected == (int,) and isinstance(value, bool)):
            raise ConfigError(f"{where}: must be of type {field.type}, not {type(value).__name__}")
        if expected == (list,):
            if not all(isinstance(item, str) for item in value):
                raise ConfigError(f"{where}: must be a list of strings")
            value = tuple(value)
        if field.metadata["path"] and value:
            value = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
        check = field.metadata["check"]
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{where}: {problem}")
        values[key] = value
    return cls(**values)


def parse_config(document: dict[str, Any], base: str = ".") -> Config:
    """Build a L{Config} from a parsed TOML document.

    @raise ConfigError: naming the first unknown or invalid key.
    """
    built: dict[str, Any] = {}
    for name, table in document.items():
        if name not in SECTIONS:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(SECTIONS)})")
        built[name] = _section(SECTIONS[name], table, name, base)
    config = Config(**built)
    if not config.server.hostname:
        config = attrs.evolve(config, server=attrs.evolve(config.server, hostname=socket.gethostname()))
    if config.smtp.tls_listen and not (config.tls.certificate and config.tls.key):
        raise ConfigError("tls.certificate: smtp.tls_listen needs a certificate and key")
    if bool(config.delivery.relay_user) != bool(config.delivery.relay_password_file):
        raise ConfigError("delivery.relay_password_file: relay_user and relay_password_file are set together")
    if bool(config.tls.certificate) != bool(config.tls.key):
        raise ConfigError("tls.key: certificate and key are set together")
    _check_ldap(config.ldap)
    return config


def _check_ldap(ldap: LDAPConfig) -> None:
    """Keys that only make sense together, checked when LDAP logins are on."""
    if not ldap.url:
        return
    for key in ("user_base", "group_base", "group_map"):
        if not getattr(ldap, key):
            raise ConfigError(f"ldap.{key}: needed when ldap.url is set")
    if bool(ldap.bind_dn) != bool(ldap.bind_password_file):
        raise ConfigError("ldap.bind_password_file: bind_dn and bind_password_file are set together")
    if ldap.start_tls and ldap.url.startswith("ldaps://"):
        raise ConfigError("ldap.start_tls: ldaps:// is TLS already; use one or the other")
    if ldap.ca_certificate and not (ldap.start_tls or ldap.url.startswith("ldaps://")):
        raise ConfigError("ldap.ca_certificate: needs ldaps:// or start_tls (the password would travel in clear)")


def load_config(path: str) -> Config:
    """Read and validate the TOML file at C{path}.

    @raise ConfigError: unreadable file, TOML syntax error, or an invalid key.
    """
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    return parse_config(document, base=os.path.dirname(os.path.abspath(path)))
