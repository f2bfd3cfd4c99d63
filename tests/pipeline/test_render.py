"""The rewrite stages together, as the renderer applies them: rewrite, then DKIM last.

The policy issue's property: whatever MIME message comes in, the rewritten and
signed copy parses, has no line over 998 bytes, and DKIM-verifies as written
and after the SMTP client's encoding on the way out.
"""
from __future__ import annotations

import io
import os

import dkim
from hypothesis import given, settings
from twisted.trial.unittest import SynchronousTestCase

from jangotw.pipeline.dkim import sign_message
from jangotw.pipeline.rewrite import rewrite

from .test_dkim import a_key, over_the_wire, serve
from .test_rewrite import _messages, _plans

KEY = a_key(domain="shop.test")


class RewriteThenSignTests(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(message=_messages(), plan=_plans)
    def test_rewritten_copies_sign_and_verify(self, message: bytes, plan: object) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        rewritten_path, signed_path = os.path.join(directory, "copy"), os.path.join(directory, "signed")
        with open(rewritten_path, "wb") as sink:
            rewrite(io.BytesIO(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")), sink, plan)  # type: ignore[arg-type]
        with open(rewritten_path, "rb") as handle:
            rewritten = handle.read()
        self.assertLessEqual(max(map(len, rewritten.split(b"\r\n"))), 998)
        self.assertTrue(sign_message(rewritten_path, signed_path, [KEY], 1_700_000_000.0))  # a past time: verifiers refuse t= in the future
        with open(signed_path, "rb") as handle:
            signed = handle.read()
        self.assertTrue(dkim.verify(signed, dnsfunc=serve(KEY)))
        self.assertTrue(dkim.verify(over_the_wire(signed), dnsfunc=serve(KEY)))
