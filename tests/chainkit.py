"""A free-hand certificate kit for tests: any field, any defect, with the engine clock fixed.

The supply-chain factory in loadgen only makes well-formed chains; refusal tests need the broken ones.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hubsim import AuthEngine, EnginePolicy, sign

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, tzinfo=UTC)
PAST = (NOW - dt.timedelta(days=400), NOW - dt.timedelta(days=1))
CURRENT = (NOW - dt.timedelta(days=30), NOW + dt.timedelta(days=365))
FUTURE = (NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=400))

_serials = itertools.count(1000)


def new_key(alg: str = "p256"):
    if alg == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "secp256k1":
        return ec.generate_private_key(ec.SECP256K1())
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if alg.startswith("rsa"):
        return _rsa_key(int(alg[3:]), os.getpid())
    raise ValueError(alg)


@functools.cache
def _rsa_key(bits: int, _pid: int):
    # RSA key generation costs tens of milliseconds; tests share one key per size.
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def name(cn: str | None) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])


def _default_hash(key):
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return hashes.SHA384()
    return hashes.SHA256()


def make_cert(
    subject,
    public_key,
    issuer_name,
    signing_key,
    *,
    ca: bool,
    path_length=None,
    validity=CURRENT,
    key_usage="default",
    eku="default",
    ski=True,
    aki_key=None,
    digest="default",
    extra=(),
    bc=True,
    serial=None,
) -> x509.Certificate:
    """One certificate; every argument can be bent to make a defect."""
    b = (
        x509.CertificateBuilder()
        .subject_name(subject if isinstance(subject, x509.Name) else name(subject))
        .issuer_name(issuer_name if isinstance(issuer_name, x509.Name) else name(issuer_name))
        .public_key(public_key)
        .serial_number(serial or next(_serials))
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
    )
    if bc:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    if key_usage == "default":
        key_usage = ("key_cert_sign", "crl_sign") if ca else ("digital_signature",)
    if key_usage:
        flags = {
            f: f in key_usage
            for f in (
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
            )
        }
        b = b.add_extension(x509.KeyUsage(**flags, encipher_only=False, decipher_only=False), critical=True)
    if eku == "default":
        eku = None if ca else [ExtendedKeyUsageOID.CLIENT_AUTH]
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if aki_key is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(aki_key), critical=False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    return b.sign(signing_key, _default_hash(signing_key) if digest == "default" else digest)


class CA:
    """A CA with its key, for tests (the device-side factory models custody properly)."""

    def __init__(
        self, cn: str, alg: str = "p256", *, parent: CA | None = None, path_length=None, validity=CURRENT, **kwargs
    ):
        self.cn = cn
        self.key = new_key(alg)
        signer = parent.key if parent else self.key
        issuer = parent.cn if parent else cn
        self.cert = make_cert(
            cn,
            self.key.public_key(),
            issuer,
            signer,
            ca=True,
            path_length=path_length,
            validity=validity,
            aki_key=signer.public_key(),
            **kwargs,
        )
        self.parent = parent

    def chain(self) -> list[x509.Certificate]:
        """This CA and its parents below the root, nearest first (what a device sends after its leaf)."""
        out, ca = [], self
        while ca.parent is not None:
            out.append(ca.cert)
            ca = ca.parent
        return out

    def issue(self, device_id: str, alg: str = "p256", **kwargs):
        """(device key, device certificate)."""
        key = new_key(alg)
        cert = make_cert(
            device_id, key.public_key(), self.cn, self.key, ca=False, aki_key=self.key.public_key(), **kwargs
        )
        return key, cert


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


class FakeClock:
    def __init__(self, t: float = NOW.timestamp()):
        self.t = t

    def __call__(self) -> float:
        return self.t


def engine(clock: FakeClock | None = None, policy: EnginePolicy | None = None, **kwargs) -> AuthEngine:
    return AuthEngine(secret=b"k" * 32, clock=clock or FakeClock(), random=os.urandom, policy=policy, **kwargs)


def trust(eng: AuthEngine, root: CA) -> str:
    """Register and prove ``root`` with the engine; returns the CA id."""
    record = eng.register_ca(der(root.cert))
    eng.verify_ca(record.id, signature=sign(root.key, record.verification_code.encode()))
    return record.id


def authenticate(eng: AuthEngine, key, chain):
    challenge = eng.begin(chain)
    return eng.complete(challenge.token, sign(key, challenge.token))


def openssl_sha1(issuer: CA | None, cn: str, *, ca: bool, tmp_path) -> tuple[x509.Certificate, object]:
    """A certificate signed with RSA/SHA-1, which cryptography refuses to make: the openssl CLI can.
    Returns (certificate, its RSA private key). ``issuer=None`` makes it self-signed."""
    import subprocess

    from cryptography.hazmat.primitives import serialization

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    run("genrsa", "-out", "k.pem", "2048")
    ext = (
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        if ca
        else "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    )
    (tmp_path / "ext.cnf").write_text(ext)
    run("req", "-new", "-key", "k.pem", "-subj", f"/CN={cn}", "-out", "r.csr")
    if issuer is None:
        run(
            "x509",
            "-req",
            "-in",
            "r.csr",
            "-signkey",
            "k.pem",
            "-sha1",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-out",
            "c.pem",
        )
    else:
        (tmp_path / "ca.pem").write_bytes(pem(issuer.cert))
        (tmp_path / "cakey.pem").write_bytes(
            issuer.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        run(
            "x509",
            "-req",
            "-in",
            "r.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "cakey.pem",
            "-set_serial",
            "7",
            "-sha1",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-out",
            "c.pem",
        )
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "k.pem").read_bytes(), None)
    return cert, key
