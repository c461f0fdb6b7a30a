"""The hub's own TLS identity for its MQTT listener: a hub CA and a server certificate it signed, made on
first start and kept beside the database (``DB.tls/``), so devices trust one file across restarts.

The CA key signs the server certificate once and is kept (0600) only so that a later start with a host
name the certificate lacks can issue a new server certificate under the same CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=3650)
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


class TlsFiles(NamedTuple):
    ca: str  # the certificate devices trust (PEM)
    cert: str  # the server certificate (PEM)
    key: str  # the server key (PEM, 0600)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write(path: str, data: bytes, private: bool = False) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(subject: str, issuer: x509.Name | None, public_key, now: dt.datetime) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _issue_server(directory: str, ca_cert: x509.Certificate, ca_key, names: list[str], service: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        _builder(f"certstorm {service}", ca_cert.subject, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(os.path.join(directory, "server.key"), _pem_key(key), private=True)
    _write(os.path.join(directory, "server.pem"), cert.public_bytes(serialization.Encoding.PEM))


def _server_names(path: str) -> set[str]:
    cert = x509.load_pem_x509_certificate(open(path, "rb").read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def ensure_hub_tls(db: str, host: str, service: str = "hub") -> TlsFiles:
    """The hub's TLS files for database ``db``, made if missing; the server certificate names localhost,
    the loopback addresses and ``host`` (re-issued under the same CA when ``host`` is new). ``service``
    names the CA and server certificates (DPS uses the same files for its own listener)."""
    directory = db + ".tls"
    os.makedirs(directory, mode=0o700, exist_ok=True)
    files = TlsFiles(*(os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key")))
    ca_key_path = os.path.join(directory, "ca.key")
    names = list(dict.fromkeys([*DEFAULT_NAMES, *([host] if host not in ("", "0.0.0.0", "::") else [])]))
    if not (os.path.exists(files.ca) and os.path.exists(ca_key_path)):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        ca_cert = (
            _builder(f"certstorm {service} CA", None, ca_key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write(ca_key_path, _pem_key(ca_key), private=True)
        _write(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
        _issue_server(directory, ca_cert, ca_key, names, service)
    elif not (os.path.exists(files.cert) and os.path.exists(files.key)) or not set(names) <= _server_names(files.cert):
        ca_cert = x509.load_pem_x509_certificate(open(files.ca, "rb").read())
        ca_key = serialization.load_pem_private_key(open(ca_key_path, "rb").read(), None)
        _issue_server(directory, ca_cert, ca_key, names, service)
    return files


__all__ = ["DEFAULT_NAMES", "VALIDITY", "TlsFiles", "ensure_hub_tls"]
