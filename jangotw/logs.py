# -*- test-case-name: tests.test_logs -*-
"""Log output: readable text by default, JSON lines for log shippers.

twistd chooses the process's log observer from its C{--logger} option before
the server starts. C{twistd -n jangomail --log-format json} sets that option to
L{json_observer} (see L{jangotw.tap}); C{twistd -n --logger
jangotw.logs.json_observer jangomail ...} is the same thing spelled by hand.
Every observer here writes to standard output (journald under systemd) and
drops debug events (the SMTP transcripts) unless it is a C{*_debug_observer}.

A JSON line is one object with standard names first: C{ts} (UTC, ISO 8601),
C{level}, C{namespace}, C{message} (the formatted text), then the event's own
fields (C{queue_id}, C{account}, C{peer}, C{session_id}, ...) and
C{traceback} for failures. Our events call the queue id C{message_id} (the
spool's name for it); here it is C{queue_id}, so one C{jq 'select(.queue_id ==
"...")'} follows a message from acceptance to its last delivery. Twisted's own
C{jsonFileLogObserver} is not used: it writes Twisted's internal keys
(C{log_time}, C{log_level} objects) rather than these names.

Secrets never reach the output: a field named like a secret (C{password},
C{bind_password}, C{token}, C{secret}, ...) is written as C{"***"}, and
values of unknown types are written with C{str()}, which for
L{jangotw.auth.credentials.Secret} is C{'***'}.
"""
from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (FileLogObserver, FilteringLogObserver, ILogObserver, LogLevel,
                            LogLevelFilterPredicate, formatEvent, textFileLogObserver)

__all__ = [
    "FORMATS",
    "LEVELS",
    "format_json",
    "make_observer",
    "observer_name",
    "text_observer",
    "json_observer",
    "text_debug_observer",
    "json_debug_observer",
]

FORMATS = ("text", "json")
LEVELS = ("info", "debug")

_RENAMED = {"message_id": "queue_id"}
_SECRET = re.compile(r"(?:^|_)(?:password|passwd|secret|token|totp|authorization|credentials?)$", re.IGNORECASE)
_STANDARD = ("ts", "level", "namespace", "message", "traceback")
_LEGACY = frozenset({"message", "format", "isError", "system", "time", "why", "failure"})  # twisted.python.log keys
_PLAIN = (str, int, float, bool, type(None))


def format_json(event: dict[str, Any]) -> str:
    """One event as a JSON line (with its newline)."""
    line: dict[str, Any] = {
        "ts": datetime.fromtimestamp(event.get("log_time", 0.0), timezone.utc)
        .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY:
            continue
        name = _RENAMED.get(key, key)
        if name in _STANDARD:
            name = "field_" + name
        line[name] = "***" if _SECRET.search(key) else _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        line["traceback"] = failure.getTraceback()
    return json.dumps(line, ensure_ascii=False) + "\n"


def _plain(value: object) -> object:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(item, _PLAIN) for item in value):
        return list(value)
    return str(value)


def make_observer(log_format: str, level: str, stream: IO[str]) -> ILogObserver:
    """An observer writing C{log_format} ("text" or "json") to C{stream}, from C{level} up."""
    if log_format == "json":
        output: ILogObserver = FileLogObserver(stream, format_json)
    else:
        output = textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    return FilteringLogObserver(output, [predicate])


def observer_name(log_format: str, level: str) -> str:
    """The dotted name of the factory below for twistd's C{--logger} option."""
    return f"{__name__}.{log_format}{'_debug' if level == 'debug' else ''}_observer"


#: Whether a debug event can reach an observer. The info-level observers twistd starts below
#: turn it off, so hot paths (the outbound SMTP transcript, a few events per message) skip
#: building events that would only be dropped.
debug_wanted = True


def _info_observer(log_format: str) -> ILogObserver:
    global debug_wanted
    debug_wanted = False
    return make_observer(log_format, "info", sys.stdout)


def text_observer() -> ILogObserver:
    """Text on standard output, info and above (the default)."""
    return _info_observer("text")


def json_observer() -> ILogObserver:
    """JSON lines on standard output, info and above."""
    return _info_observer("json")


def text_debug_observer() -> ILogObserver:
    """Text on standard output, debug events (SMTP transcripts) included."""
    return make_observer("text", "debug", sys.stdout)


def json_debug_observer() -> ILogObserver:
    """JSON lines on standard output, debug events included."""
    return make_observer("json", "debug", sys.stdout)
