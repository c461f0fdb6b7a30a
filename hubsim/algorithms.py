"""Which key algorithms certstorm accepts, and the one signature scheme each uses for proof of possession.

Both sides of the protocol use this table: devices and CA holders sign with :func:`signature_args`,
the engine verifies with :func:`verify_signature`. The schemes are what ``openssl dgst -sign`` writes:

====================  ===============================================
key                   signature over the raw bytes
====================  ===============================================
ECDSA P-256           DER ECDSA with SHA-256
ECDSA P-384           DER ECDSA with SHA-384
ECDSA P-521           DER ECDSA with SHA-512
Ed25519               pure Ed25519 (64 bytes, no pre-hash)
RSA (>= 2048 bits)    PKCS #1 v1.5 with SHA-256
====================  ===============================================
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

MIN_RSA_BITS = 2048
# RSA public exponents: odd, 2^16+1 .. 2^256-1 (the CA/Browser Forum bounds). A huge exponent turns each
# signature check into the cost of a private-key operation, so it is refused, never verified.
MIN_RSA_EXPONENT = 65537
MAX_RSA_EXPONENT = 2**256 - 1

_EC_HASHES = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}

# One ECDSA/PKCS1 parameter object per scheme: building them on every call costs measurable time.
_EC_ARGS = {name: (ec.ECDSA(h()),) for name, h in _EC_HASHES.items()}
_RSA_ARGS = (padding.PKCS1v15(), hashes.SHA256())


class UnsupportedKey(ValueError):
    """The key's algorithm, curve or size is outside what certstorm accepts."""


def key_algorithm(key) -> str:
    """A short stable name for a public or private key: p256, p384, p521, ed25519, rsa2048 ..."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        name = key.curve.name
        if name not in _EC_HASHES:
            raise UnsupportedKey(f"elliptic curve {name} is not supported")
        return {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}[name]
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "ed25519"
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        if key.key_size < MIN_RSA_BITS:
            raise UnsupportedKey(f"RSA keys need at least {MIN_RSA_BITS} bits, got {key.key_size}")
        numbers = key.public_numbers() if isinstance(key, rsa.RSAPublicKey) else key.private_numbers().public_numbers
        e = numbers.e
        if not (MIN_RSA_EXPONENT <= e <= MAX_RSA_EXPONENT and e % 2):
            raise UnsupportedKey("RSA public exponent outside 65537 .. 2^256-1")
        return f"rsa{key.key_size}"
    raise UnsupportedKey(f"{type(key).__name__} keys are not supported")


def signature_args(key) -> tuple:
    """The extra arguments ``key.sign(data, *args)`` / ``key.verify(sig, data, *args)`` take."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        try:
            return _EC_ARGS[key.curve.name]
        except KeyError:
            raise UnsupportedKey(f"elliptic curve {key.curve.name} is not supported") from None
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return ()
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        if key.key_size < MIN_RSA_BITS:
            raise UnsupportedKey(f"RSA keys need at least {MIN_RSA_BITS} bits, got {key.key_size}")
        return _RSA_ARGS
    raise UnsupportedKey(f"{type(key).__name__} keys are not supported")


def sign(private_key, data: bytes) -> bytes:
    """Sign ``data`` with the scheme that belongs to ``private_key``."""
    return private_key.sign(data, *signature_args(private_key))


def verify_signature(public_key, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` over ``data`` verifies under ``public_key`` with its scheme."""
    try:
        public_key.verify(signature, data, *signature_args(public_key))
    except InvalidSignature:
        return False
    return True


__all__ = [
    "MAX_RSA_EXPONENT",
    "MIN_RSA_BITS",
    "MIN_RSA_EXPONENT",
    "UnsupportedKey",
    "key_algorithm",
    "sign",
    "signature_args",
    "verify_signature",
]
