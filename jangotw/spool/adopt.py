# -*- test-case-name: tests.spool.test_adopt -*-
"""Spool roots for one process or several workers, and mail left in a root no one serves.

One process uses C{<data_dir>/spool/}; with C{[server] workers = N > 1} worker
I uses C{spool/w<I>/}, so no message is ever owned by two processes. When N
changes (or a one-process spool meets workers), the roots no one will serve
are emptied into the first served one before anyone starts: committed
messages (body and journal, then the envelope, the commit marker, last),
quarantined ones and campaign progress files move, so nothing acknowledged is
stranded. Blocking, at start-up, while no process uses the spool.
"""
from __future__ import annotations

import os
import re
from contextlib import suppress

from twisted.logger import Logger

from .layout import CORRUPT, INCOMING, FileSystem, parse_name

__all__ = ["spool_root", "adopt_orphans", "CAMPAIGNS"]

log = Logger()

CAMPAIGNS = "campaigns"
_WORKER_ROOT = re.compile(r"w\d+\Z")


def spool_root(spool_dir: str, workers: int, index: int | None) -> str:
    """The spool root of worker C{index} of C{workers} (None: the only process)."""
    if index is None or workers <= 1:
        return spool_dir
    return os.path.join(spool_dir, f"w{index}")


def adopt_orphans(spool_dir: str, served: list[str], fs: FileSystem = FileSystem()) -> int:
    """Move what the roots under C{spool_dir} outside C{served} hold into C{served[0]}.

    Returns the number of committed messages moved.
    """
    target = served[0]
    candidates = [spool_dir] + [os.path.join(spool_dir, name) for name in sorted(_listdir(spool_dir))
                                if _WORKER_ROOT.match(name)]
    moved = 0
    for root in candidates:
        if root in served or not os.path.isdir(os.path.join(root, INCOMING)):
            continue
        count = _move_queue(fs, root, target, INCOMING) + _move_queue(fs, root, target, CORRUPT)
        _move_files(fs, os.path.join(root, CAMPAIGNS), os.path.join(target, CAMPAIGNS))
        if count:
            log.info("moved {count} message(s) from {source} to {target}: no process serves {source}",
                     count=count, source=root, target=target)
        moved += count
    return moved


def _move_queue(fs: FileSystem, root: str, target: str, queue: str) -> int:
    source, destination = os.path.join(root, queue), os.path.join(target, queue)
    names = _listdir(source)
    if not names:
        return 0
    fs.makedirs(destination)
    envelopes = []
    for name in sorted(names):
        parsed = parse_name(name)
        if parsed is None:
            continue
        if name.endswith(".json"):
            envelopes.append(name)
        else:
            fs.rename(os.path.join(source, name), os.path.join(destination, name))
    fs.fsync_directory(destination)  # bodies and journals are in place before any marker moves
    for name in envelopes:
        fs.rename(os.path.join(source, name), os.path.join(destination, name))
    fs.fsync_directory(destination)
    fs.fsync_directory(source)
    return len(envelopes)


def _move_files(fs: FileSystem, source: str, destination: str) -> None:
    names = _listdir(source)
    if not names:
        return
    fs.makedirs(destination)
    for name in names:
        fs.rename(os.path.join(source, name), os.path.join(destination, name))
    fs.fsync_directory(destination)


def _listdir(path: str) -> list[str]:
    with suppress(FileNotFoundError, NotADirectoryError):
        return os.listdir(path)
    return []
