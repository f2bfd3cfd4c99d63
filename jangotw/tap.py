# -*- test-case-name: tests.integration.test_server -*-
"""The composition root for C{twistd jangomail}: options in, services out.

The only module that imports the global reactor.
"""
from __future__ import annotations

import os

from twisted.python import usage

from .config import load_config
from .errors import ConfigError
from .service import RelayService

__all__ = ["Options", "makeService"]

DEFAULT_CONFIG = "/etc/jangotw/jangomail.toml"


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = "Run the jangotw mail relay."
    optParameters = [
        ["config", "c", os.environ.get("JANGOMAIL_CONFIG", DEFAULT_CONFIG), "Configuration file (TOML)."],
    ]

    def postOptions(self) -> None:
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as error:
            raise usage.UsageError(f"configuration: {error}") from None


def makeService(options: Options) -> RelayService:
    from twisted.internet import reactor

    service = RelayService(options["loaded"], reactor)
    service.ready.addErrback(lambda failure: reactor.stop())  # already logged: exit, don't limp on
    return service
