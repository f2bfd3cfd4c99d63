# -*- test-case-name: tests.spool.test_reader -*-
"""Read committed messages back out of the spool, a chunk at a time.

Delivery and rewriting stages stream a body rather than load it, so a 30 MB
message costs one chunk of memory. Reads block: call these in a thread pool
(or accept the short local-disk reads the delivery code is designed around).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ..interfaces import ISpool

__all__ = ["open_body", "iter_body", "CHUNK_SIZE"]

CHUNK_SIZE = 65536


def open_body(spool: ISpool, message_id: str) -> BinaryIO:
    """Open a committed message's bytes for reading; the caller closes the file.

    @raise ValueError: C{message_id} is not a queue id.
    @raise FileNotFoundError: no such committed message.
    """
    return open(spool.body_path(message_id), "rb")


def iter_body(path: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the file at C{path} in chunks of at most C{chunk_size} bytes.

    The file is opened on the first C{next()} and closed when the iterator is
    exhausted or closed.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    return _chunks(path, chunk_size)


def _chunks(path: str, chunk_size: int) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            yield chunk
