# -*- test-case-name: tests.integration.test_tls -*-
"""The server's TLS context: the configured certificate chain, TLS 1.2 or newer only."""
from __future__ import annotations

import re

from twisted.internet.ssl import Certificate, CertificateOptions, KeyPair, TLSVersion

from ..errors import ConfigError

__all__ = ["server_tls_options"]

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def server_tls_options(certificate_path: str, key_path: str) -> CertificateOptions:
    """Context options for STARTTLS and implicit TLS.

    @raise ConfigError: a file is unreadable or holds no usable certificate/key.
    """
    try:
        with open(certificate_path, "rb") as handle:
            chain = _PEM_CERTIFICATE.findall(handle.read())
        with open(key_path, "rb") as handle:
            key = KeyPair.load(handle.read(), format=1)  # FILETYPE_PEM
    except OSError as error:
        raise ConfigError(f"tls: cannot read {error.filename}: {error.strerror}") from None
    except Exception as error:  # pyOpenSSL raises its own Error for a bad PEM
        raise ConfigError(f"tls.key: {key_path} is not a PEM private key ({error})") from None
    if not chain:
        raise ConfigError(f"tls.certificate: {certificate_path} holds no PEM certificate")
    certificates = [Certificate.loadPEM(pem) for pem in chain]
    return CertificateOptions(
        privateKey=key.original,
        certificate=certificates[0].original,
        extraCertChain=[certificate.original for certificate in certificates[1:]],
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
