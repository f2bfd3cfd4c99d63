# -*- test-case-name: tests.spool.test_recycle -*-
"""Empty files kept for reuse, so that short-lived files cost no inode allocation.

Every delivery attempt of tracked mail writes one copy per recipient and
deletes them all once the message is done. Creating a file allocates an inode,
which on ext4 without a journal (as on this project's benchmark VMs) scans for
recently deleted inodes: about 250 microseconds of kernel time each, under a
lock the other threads spin on. Renaming an emptied file into place allocates
nothing. L{Recycler.give} truncates a finished file and parks it in its
directory; L{Recycler.take} renames a parked one to the new name, or does
nothing (the caller's open then creates the file). Nothing here needs to
survive a restart: the owner empties the directory at start-up.
Thread-safe; blocking (file system calls), so called in pool threads or where
the owner already deletes files.
"""
from __future__ import annotations

import os
import threading
from contextlib import suppress

from attrs import define, field

__all__ = ["Recycler"]


@define
class Recycler:
    """Parked empty files in C{directory}, at most C{limit} of them."""

    directory: str
    limit: int = 20_000
    _free: list[str] = field(factory=list, init=False)
    _parked: int = field(default=0, init=False)  # names given so far
    _lock: threading.Lock = field(factory=threading.Lock, init=False)

    def take(self, path: str) -> None:
        """Move a parked file to C{path} if there is one (open it with C{"wb"} next)."""
        with self._lock:
            if not self._free:
                return
            free = self._free.pop()
        try:
            os.rename(free, path)
        except FileNotFoundError:
            pass  # removed behind our back: the caller's open creates one

    def give(self, path: str) -> None:
        """Empty C{path} and park it for reuse, or delete it when enough are parked.
        A missing C{path} is ignored."""
        with self._lock:
            full = len(self._free) >= self.limit
            self._parked += 1
            parked = os.path.join(self.directory, f"free.{self._parked}")
        with suppress(FileNotFoundError):
            if full:
                os.unlink(path)
                return
            os.truncate(path, 0)
            os.rename(path, parked)
            with self._lock:
                self._free.append(parked)
