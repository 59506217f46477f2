"""Self-managed webhook TLS as a plan: what the shared Secret should hold next, from what it holds.

The CA outlives many serving certificates, so renewing the serving certificate never changes
what the API server trusts. When the CA itself is renewed, the trust bundle carries the old and
the new CA until the old one expires: a replica still serving a certificate of the old CA is
trusted throughout. Pure: the caller reads and writes the Secret.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from kafka_sidecar_operator.certificates import CertificateAuthority, KeyPair

CA_NAME = "kafka-sidecar-webhook-ca"
CA_VALIDITY = datetime.timedelta(days=365)
KEYS = ("tls.crt", "tls.key", "ca.crt", "ca-signer.crt", "ca-signer.key")


@dataclass(frozen=True)
class TlsMaterial:
    """The Secret's content: the serving pair, the trust bundle, and the CA that signs."""

    cert: bytes
    key: bytes
    bundle: bytes
    ca_cert: bytes
    ca_key: bytes

    def as_secret_data(self) -> dict[str, bytes]:
        return dict(
            zip(KEYS, (self.cert, self.key, self.bundle, self.ca_cert, self.ca_key), strict=True)
        )

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes]) -> TlsMaterial | None:
        """None when a key is missing (also a Secret written before the CA was kept)."""
        if not all(data.get(k) for k in KEYS):
            return None
        return cls(*(data[k] for k in KEYS))


def needs_renewal(cert_pem: bytes, now: datetime.datetime) -> bool:
    """True when less than a third of the certificate's lifetime is left."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now < lifetime / 3


def still_valid(bundle: bytes, now: datetime.datetime) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(bundle)
    except ValueError:
        return []
    return [c for c in certs if c.not_valid_after_utc > now]


def pem(certs: list[x509.Certificate]) -> bytes:
    """Certificates as one PEM bundle, each once, newest first."""
    unique = {c.fingerprint(hashes.SHA256()): c for c in certs}
    ordered = sorted(unique.values(), key=lambda c: c.not_valid_before_utc, reverse=True)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ordered)


def plan(
    current: TlsMaterial | None,
    hosts: tuple[str, ...],
    now: datetime.datetime,
    previous_bundle: bytes = b"",
) -> TlsMaterial | None:
    """The material to store next, or None when ``current`` is good as it is.

    ``previous_bundle`` is what the API server trusts today when there is no usable ``current``
    (a Secret of an older format): it stays trusted until it expires.
    """
    if current is not None and not needs_renewal(current.ca_cert, now):
        if not needs_renewal(current.cert, now):
            return None
        return _issue(current.ca_cert, current.ca_key, hosts, current.bundle, now)
    with tempfile.TemporaryDirectory() as tmp:
        ca = CertificateAuthority.create(Path(tmp), CA_NAME, validity=CA_VALIDITY)
        ca_cert, ca_key = ca.pair.cert.read_bytes(), ca.pair.key.read_bytes()
    trusted = current.bundle if current is not None else previous_bundle
    return _issue(ca_cert, ca_key, hosts, trusted, now)


def _issue(
    ca_cert: bytes, ca_key: bytes, hosts: tuple[str, ...], trusted: bytes, now: datetime.datetime
) -> TlsMaterial:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "ca.crt").write_bytes(ca_cert)
        (directory / "ca.key").write_bytes(ca_key)
        ca = CertificateAuthority(KeyPair(directory / "ca.crt", directory / "ca.key"))
        pair = ca.issue(directory, "tls", common_name=hosts[0], hosts=hosts)
        cert, key = pair.cert.read_bytes(), pair.key.read_bytes()
    signer = x509.load_pem_x509_certificate(ca_cert)
    bundle = pem([signer, *still_valid(trusted, now)])
    return TlsMaterial(cert, key, bundle, ca_cert, ca_key)
