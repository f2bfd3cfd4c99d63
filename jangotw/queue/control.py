# -*- test-case-name: tests.queue.test_control -*-
"""Requests from jangomail-admin to the running server: "retry this now", "delete that".

The command line and the server are separate processes sharing the spool
directory, so a request is a file in C{<spool>/control/} (written atomically);
the server takes and removes them every second. A request made while the
server is down waits for its next start.
"""
from __future__ import annotations

import os
import re

from attrs import frozen

__all__ = ["ControlRequests", "RETRY", "DELETE", "RESEND_HELD", "ALL"]

RETRY = "retry"
DELETE = "delete"
RESEND_HELD = "resend-held"  # target: an account name
ALL = "all"
_NAME = re.compile(r"(retry|delete)-([0-9A-Z]{16,20}|all)\Z|(resend-held)-([A-Za-z0-9][A-Za-z0-9._-]{0,63})\Z")


@frozen
class ControlRequests:
    directory: str

    def request(self, action: str, target: str) -> None:
        """File a request (blocking; for the CLI)."""
        name = f"{action}-{target}"
        if not _NAME.match(name):
            raise ValueError(f"not a control request: {name!r}")
        os.makedirs(self.directory, exist_ok=True)
        temporary = os.path.join(self.directory, f".{name}.tmp")
        with open(temporary, "w") as handle:
            handle.write("\n")
        os.rename(temporary, os.path.join(self.directory, name))

    def take(self) -> list[tuple[str, str]]:
        """Every pending request, oldest name first, removed from the directory (blocking)."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        taken = []
        for name in names:
            match = _NAME.match(name)
            if match is None:
                continue
            try:
                os.unlink(os.path.join(self.directory, name))
            except FileNotFoundError:
                continue  # another worker took it
            taken.append((match.group(1) or match.group(3), match.group(2) or match.group(4)))
        return taken
