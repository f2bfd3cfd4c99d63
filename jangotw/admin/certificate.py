# -*- test-case-name: tests.integration.test_tls -*-
"""A self-signed certificate for a first start and for tests.

Production deployments configure a real certificate in C{[tls]}; this only
makes STARTTLS and port 465 work out of the box.
C{python -m jangotw.admin.certificate CERT KEY HOSTNAME}
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["write_self_signed"]


def write_self_signed(certificate_path: str, key_path: str, hostname: str, days: int = 825) -> None:
    """Write a PEM key (mode 0600) and a self-signed certificate for C{hostname}, localhost and loopback."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alternatives = [x509.DNSName(hostname), x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .sign(key, hashes.SHA256())
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with open(certificate_path, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m jangotw.admin.certificate CERT KEY HOSTNAME")
    write_self_signed(*sys.argv[1:4])
