"""The on-disk fleet format (``DIR``).

* ``fleet.json`` -- algorithm, depth, count, seed (hex or null), id prefix and width, record layout, the
  template pieces (base64), the intermediates (PEM, nearest to the device first), the registered CA
  certificate (Company-X), custodian names and key files, creation time. Written last: a directory
  without it is not a fleet.
* ``devices.bin`` -- one fixed-size record per device at ``index * record_size``: ``private | public |
  signature length | signature (zero padded)``, sized by :data:`LAYOUTS` (170 bytes for P-256; every
  algorithm's in docs/design.md). Certificates are not stored: they are re-spliced from the template.
* ``keys/<custodian>.pem`` -- each custodian's own key, unencrypted PKCS#8 PEM. The load generator needs
  Company-X's key to prove possession of the CA to the hub.
* ``ca.pem`` -- Company-X's CA certificate, what a broker trusts to admit the fleet (Mosquitto's ``cafile``);
  ``chain.pem`` -- the custodians' intermediates, nearest the devices first, which every device presents.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.hazmat.primitives import serialization

__all__ = [
    "CA_FILE",
    "CHAIN_FILE",
    "DATA_FILE",
    "FORMAT",
    "KEY_DIR",
    "LAYOUTS",
    "META_FILE",
    "VERSION",
    "device_key_label",
    "record_size",
]

FORMAT = "certstorm-fleet"
VERSION = 1
META_FILE = "fleet.json"
CA_FILE = "ca.pem"
CHAIN_FILE = "chain.pem"
DATA_FILE = "devices.bin"
KEY_DIR = "keys"
DEFAULT_PREFIX = "device-"
MIN_WIDTH = 6

DER = serialization.Encoding.DER
PKCS8 = serialization.PrivateFormat.PKCS8
NOENC = serialization.NoEncryption()
X962 = serialization.Encoding.X962
UNCOMPRESSED = serialization.PublicFormat.UncompressedPoint

# alg -> (private slot, public slot, max signature, signature length field bytes)
INDEX = struct.Struct(">Q")
try:  # CPython's built-in SHA-1: it measured cheaper per call than hashlib.sha1 (docs/design.md)
    from _sha1 import sha1 as sha1_digest
except ImportError:  # pragma: no cover - other interpreters
    sha1_digest = hashlib.sha1

LAYOUTS = {
    "p256": (32, 65, 72, 1),
    "p384": (48, 97, 104, 1),
    "ed25519": (32, 32, 72, 1),
    "rsa2048": (2 + 1280, 270, 256, 2),
}


def record_size(alg: str) -> int:
    priv, pub, sig, siglen = LAYOUTS[alg]
    return priv + pub + siglen + sig


def device_key_label(index: int) -> bytes:
    """The HMAC label a seeded fleet derives device ``index``'s key from."""
    return b"device/" + index.to_bytes(8, "big")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
