# -*- test-case-name: tests.test_reload -*-
"""SIGHUP: which changes to the configuration file apply without a restart.

The keys in L{jangotw.config.RELOADABLE} (SMTP limits, AUTH throttling, the
shutdown grace, the TLS certificate and key) are taken from the new file;
every other changed key is named as needing a restart and keeps its running
value, so the running server never mixes two configurations of one part. A
file that does not load changes nothing. The certificate files are re-read on
every reload, so a renewed certificate at the same path is picked up; sessions
and listeners already open keep the context they started with.
"""
from __future__ import annotations

import attrs
from attrs import frozen
from OpenSSL.SSL import Context
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import CertificateOptions
from zope.interface import implementer

from .config import RELOADABLE, SECTIONS, Config

__all__ = ["Reload", "merge", "CurrentCertificate"]

_TLS = ("tls.certificate", "tls.key")


@frozen
class Reload:
    config: Config  # the running configuration with the reloadable changes applied
    applied: tuple[str, ...]  # "section.key" changed and applied
    needs_restart: tuple[str, ...]  # "section.key" changed in the file, not applied


def merge(running: Config, loaded: Config) -> Reload:
    """Take the reloadable keys of C{loaded} into C{running}. Turning TLS on or off changes
    which commands and listeners exist, so that needs a restart."""
    tls_toggled = bool(running.tls.certificate) != bool(loaded.tls.certificate)
    applied: list[str] = []
    needs_restart: list[str] = []
    sections = {}
    for name, cls in SECTIONS.items():
        old, new = getattr(running, name), getattr(loaded, name)
        changes = {}
        for field in attrs.fields(cls):
            key = f"{name}.{field.name}"
            if getattr(old, field.name) == getattr(new, field.name):
                continue
            if key in RELOADABLE and not (key in _TLS and tls_toggled):
                changes[field.name] = getattr(new, field.name)
                applied.append(key)
            else:
                needs_restart.append(key)
        sections[name] = attrs.evolve(old, **changes)
    return Reload(attrs.evolve(running, **sections), tuple(applied), tuple(needs_restart))


@implementer(IOpenSSLContextFactory)
class CurrentCertificate:
    """A server TLS context factory whose certificate can be replaced while listeners run."""

    def __init__(self, options: CertificateOptions) -> None:
        self._options = options

    def replace(self, options: CertificateOptions) -> None:
        self._options = options

    def getContext(self) -> Context:
        """The context for a new connection (Twisted asks once per STARTTLS or implicit-TLS accept)."""
        return self._options.getContext()
