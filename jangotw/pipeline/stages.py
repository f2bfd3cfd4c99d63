# -*- test-case-name: tests.pipeline.test_stages -*-
"""The policy pipeline's contract: one small stage object per job, on a L{PipelineWork} value."""
from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from ..model import PipelineWork

__all__ = ["Stage"]


class Stage(Protocol):
    """A pipeline stage: looks at the work, fires with the (possibly changed) work."""

    name: str

    def process(self, work: PipelineWork) -> "Deferred[PipelineWork]": ...
