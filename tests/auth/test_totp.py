"""TOTP codes (RFC 6238) with one step of drift, and one-time recovery codes."""
from __future__ import annotations

import base64
import re

import pyotp
from twisted.trial.unittest import SynchronousTestCase

from jangotw.auth.totp import (STEP_SECONDS, looks_like_code, matching_step, new_recovery_codes, new_secret,
                               provisioning_uri, qr_text, recovery_hash)

# RFC 6238 appendix B: the SHA-1 seed "12345678901234567890"; codes are the last six digits.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
NOW = 1_700_000_000.0


class SecretTests(SynchronousTestCase):
    def test_secret_is_160_bits_of_base32(self) -> None:
        secret = new_secret()
        self.assertRegex(secret, r"[A-Z2-7]{32}\Z")
        self.assertEqual(len(base64.b32decode(secret)), 20)
        self.assertNotEqual(secret, new_secret())

    def test_provisioning_uri_and_qr(self) -> None:
        secret = new_secret()
        uri = provisioning_uri(secret, "sales@alice")
        self.assertTrue(uri.startswith("otpauth://totp/jangotw:sales%40alice?"))
        self.assertIn(f"secret={secret}", uri)
        self.assertIn("issuer=jangotw", uri)
        drawing = qr_text(uri)
        self.assertGreater(len(drawing.splitlines()), 20)


class MatchingStepTests(SynchronousTestCase):
    def test_rfc_6238_vectors(self) -> None:
        self.assertEqual(matching_step(RFC_SECRET, "287082", 59), 1)
        self.assertEqual(matching_step(RFC_SECRET, "081804", 1111111109), 1111111109 // STEP_SECONDS)
        self.assertEqual(matching_step(RFC_SECRET, "005924", 1234567890), 1234567890 // STEP_SECONDS)

    def test_one_step_of_drift_either_side(self) -> None:
        secret = new_secret()
        totp, current = pyotp.TOTP(secret), int(NOW // STEP_SECONDS)
        for offset in (-1, 0, 1):
            code = totp.at(NOW + offset * STEP_SECONDS)
            self.assertEqual(matching_step(secret, code, NOW), current + offset)
        for offset in (-2, 2):
            code = totp.at(NOW + offset * STEP_SECONDS)
            if code not in {totp.at(NOW + near * STEP_SECONDS) for near in (-1, 0, 1)}:
                self.assertIsNone(matching_step(secret, code, NOW))

    def test_surrounding_space_ignored_other_text_refused(self) -> None:
        secret = new_secret()
        code = pyotp.TOTP(secret).at(NOW)
        self.assertIsNotNone(matching_step(secret, f" {code}\n", NOW))
        for text in ("", code[:5], code + "0", f"{code[:3]} {code[3:]}", "abcdef", "١٢٣٤٥٦"):
            self.assertIsNone(matching_step(secret, text, NOW), text)

    def test_near_the_epoch(self) -> None:
        """No step before step 0 is tried (pyotp refuses negative counters)."""
        totp = pyotp.TOTP(RFC_SECRET)
        self.assertEqual(matching_step(RFC_SECRET, totp.generate_otp(0), 10), 0)
        self.assertEqual(matching_step(RFC_SECRET, totp.generate_otp(1), 10), 1)

    def test_looks_like_code(self) -> None:
        self.assertTrue(looks_like_code("123456"))
        self.assertTrue(looks_like_code(" 123456 "))
        for text in ("12345", "1234567", "k7wq-3mza-pp2x-9fte", ""):
            self.assertFalse(looks_like_code(text), text)


class RecoveryCodeTests(SynchronousTestCase):
    def test_ten_distinct_codes_of_80_bits(self) -> None:
        codes = new_recovery_codes()
        self.assertEqual(len(set(codes)), 10)
        for code in codes:
            self.assertRegex(code, r"[a-z2-7]{4}(-[a-z2-7]{4}){3}\Z")
            self.assertFalse(looks_like_code(code))

    def test_hash_ignores_dashes_spaces_and_case(self) -> None:
        code = "k7wq-3mza-pp2x-9fte"
        for written in ("K7WQ-3MZA-PP2X-9FTE", "k7wq3mzapp2x9fte", " k7wq 3mza pp2x 9fte "):
            self.assertEqual(recovery_hash(written), recovery_hash(code))
        self.assertNotEqual(recovery_hash("k7wq-3mza-pp2x-9ftf"), recovery_hash(code))
        self.assertRegex(recovery_hash(code), re.compile(r"[0-9a-f]{64}\Z"))
