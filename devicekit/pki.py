"""The supply-chain PKI on the device side: CA holders ("custodians") and the devices they certify.

The model is Azure IoT Hub's X.509 CA authentication. Company-X registers its CA certificate with the hub
and proves possession of its key; custodians down the supply chain (Factory-Y, then Technician-Z, ...)
each hold an intermediate CA signed by the one before; the last signs each device's public key. Every
:class:`Custodian` owns exactly one private key, and its issuer only ever sees the public half; device
keys are made on the device (:meth:`Device.create`). A key may be held by a PKCS#11 token
(:mod:`devicekit.hsm`): such a custodian signs in its token (:meth:`Custodian.self_signed`,
:meth:`Custodian.restore`), and custodians enrol each other by certificate request
(:func:`certificate_request`, :meth:`Custodian.sign_csr`), never by key.

Device certificates name the device by their CN and carry no SubjectAltName; Ed25519 fleets have Ed25519
device keys under a P-256 chain; everything is valid from 2025 to 2050, and a seed makes keys, serials
and signatures deterministic, so a seeded chain is byte-identical on any day. The reasons for each are
in docs/design.md ("Device certificates and determinism").
"""

from __future__ import annotations

import datetime as _dt
import functools
import hmac

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hubsim import key_algorithm, sign

ALGORITHMS = ("p256", "p384", "ed25519", "rsa2048")
DEFAULT_CUSTODIANS = ("Factory-Y", "Technician-Z", "Integrator-W", "Distributor-V", "Installer-U")
MAX_DEPTH = len(DEFAULT_CUSTODIANS)
COMPANY = "Company-X"
PUBLIC_ROOT = "Public-Root-CA"

NOT_BEFORE = _dt.datetime(2025, 1, 1, tzinfo=_dt.UTC)
NOT_AFTER = _dt.datetime(2050, 1, 1, tzinfo=_dt.UTC)

CURVES = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}
# Group orders, for mapping an HMAC output onto a valid private scalar in [1, n-1].
ORDERS = {
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "p384": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
}
# HMAC digest per curve: at least as wide as the order, so every scalar is reachable.
SEED_DIGESTS = {"p256": "sha256", "p384": "sha512"}
_CERT_HASHES = {"p256": hashes.SHA256, "p384": hashes.SHA384, "rsa2048": hashes.SHA256}


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """digitalSignature for every key; keyCertSign and cRLSign for a CA's alone."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


_CA_KEY_USAGE = _key_usage(ca=True)
_LEAF_KEY_USAGE = _key_usage(ca=False)
_CLIENT_AUTH = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])


def _check_alg(alg: str) -> None:
    if alg not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {alg!r}; choose one of {', '.join(ALGORITHMS)}")


def ca_algorithm(alg: str) -> str:
    """The key algorithm the custodians of an ``alg`` chain use (Ed25519 devices sit under P-256 CAs)."""
    _check_alg(alg)
    return "p256" if alg == "ed25519" else alg


def _as_bytes(seed) -> bytes:
    if isinstance(seed, str):
        return seed.encode("utf-8")
    return bytes(seed)


def derive_scalar(alg: str, seed: bytes, label: bytes) -> int:
    """The EC private scalar for (seed, label): HMAC(seed, label) mapped into [1, n-1]."""
    n = ORDERS[alg]
    digest = hmac.digest(seed, label, SEED_DIGESTS[alg])
    return int.from_bytes(digest, "big") % (n - 1) + 1


def generate_key(alg: str, *, seed: bytes | None = None, label: bytes = b""):
    """A new private key for ``alg``; with ``seed`` it is derived deterministically from HMAC(seed, label).

    EC keys come from ``ec.derive_private_key`` on HMAC(seed, label) mapped into [1, n-1] (HMAC-SHA256 for
    P-256, HMAC-SHA512 for P-384 so the whole range is reachable); Ed25519 keys from ``from_private_bytes``
    on HMAC-SHA256(seed, label). RSA keys cannot be derived from a seed with cryptography.
    """
    _check_alg(alg)
    if seed is None:
        if alg in CURVES:
            return ec.generate_private_key(CURVES[alg])
        if alg == "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    seed = _as_bytes(seed)
    if alg in CURVES:
        return ec.derive_private_key(derive_scalar(alg, seed, label), CURVES[alg])
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(hmac.digest(seed, label, "sha256"))
    raise ValueError(
        "rsa2048 keys cannot be derived from a seed (cryptography has no seeded RSA key generation); "
        "use an EC or Ed25519 algorithm for seeded, reproducible fleets, or drop the seed"
    )


def derive_serial(seed: bytes, label: bytes) -> int:
    """A 16-byte positive serial number from (seed, label); its first byte is 0x40..0x7f, so the DER
    INTEGER is always exactly 16 content bytes."""
    raw = bytearray(hmac.digest(seed, b"serial:" + label, "sha256")[:16])
    raw[0] = (raw[0] & 0x3F) | 0x40
    return int.from_bytes(raw, "big")


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


class Custodian:
    """A CA holder; owns exactly one private key.

    The key never leaves the object: other custodians and devices get certificates and signatures from it,
    never the key. :meth:`enroll` makes the *next* custodian, which creates its own key pair; this one only
    signs the new public key.
    """

    __slots__ = (
        "_certificate",
        "_deterministic",
        "_hash",
        "_key",
        "_not_after",
        "_not_before",
        "_seed",
        "_tbs_args",
        "algorithm",
        "name",
    )

    def __init__(self, name: str, key, *, seed: bytes | None, not_before, not_after):
        # Internal: use root() or enroll(). The certificate is attached by the issuer.
        self.name = name
        self.algorithm = key_algorithm(key)
        if self.algorithm not in _CERT_HASHES:
            raise ValueError(f"a custodian key must be P-256, P-384 or RSA-2048, not {self.algorithm}")
        self._key = key
        self._certificate: x509.Certificate | None = None
        self._seed = seed
        self._not_before = not_before
        self._not_after = not_after
        self._hash = _CERT_HASHES[self.algorithm]()
        self._deterministic = seed is not None and self.algorithm in CURVES
        if self.algorithm in CURVES:
            self._tbs_args = (ec.ECDSA(self._hash, deterministic_signing=self._deterministic),)
        else:
            self._tbs_args = (padding.PKCS1v15(), self._hash)

    @classmethod
    def _with_new_key(cls, name: str, alg: str, seed, not_before, not_after) -> Custodian:
        seed = None if seed is None else _as_bytes(seed)
        key = generate_key(ca_algorithm(alg), seed=seed, label=b"custodian:" + name.encode("utf-8"))
        return cls(name, key, seed=seed, not_before=not_before or NOT_BEFORE, not_after=not_after or NOT_AFTER)

    @classmethod
    def self_signed(cls, name: str, key, *, path_length=None, not_before=None, not_after=None) -> Custodian:
        """A top-level CA whose key was made elsewhere, e.g. inside a token (:mod:`devicekit.hsm`): its
        self-signed certificate is signed with that key."""
        new = cls(name, key, seed=None, not_before=not_before or NOT_BEFORE, not_after=not_after or NOT_AFTER)
        new._certificate = new._build_ca(
            name, new.public_key, path_length=path_length, not_before=new._not_before, not_after=new._not_after
        )
        return new

    @classmethod
    def restore(cls, name: str, key, certificate: x509.Certificate) -> Custodian:
        """A custodian reloaded from its own key file and its certificate (e.g. Company-X of a stored fleet)."""
        new = cls(
            name, key, seed=None, not_before=certificate.not_valid_before_utc, not_after=certificate.not_valid_after_utc
        )
        new._certificate = certificate
        return new

    # --- what everyone may see -------------------------------------------------------------------------
    @property
    def certificate(self) -> x509.Certificate:
        if self._certificate is None:
            raise RuntimeError(f"custodian {self.name} has no certificate yet")
        return self._certificate

    @property
    def public_key(self):
        return self._key.public_key()

    @property
    def deterministic(self) -> bool:
        """True when this custodian's signatures are deterministic (seeded EC custodian)."""
        return self._deterministic

    def __repr__(self) -> str:
        return f"Custodian({self.name!r}, {self.algorithm})"

    # --- making custodians ------------------------------------------------------------------------------
    @classmethod
    def root(
        cls,
        name: str = COMPANY,
        alg: str = "p256",
        *,
        issuer: Custodian | None = None,
        seed=None,
        not_before=None,
        not_after=None,
        path_length=None,
    ) -> Custodian:
        """A top-level CA: self-signed, or signed by ``issuer`` (an outside public root: a purchased CA).

        ``alg`` names the chain's algorithm; for ``"ed25519"`` the CA key is P-256 (see module docs).
        """
        new = cls._with_new_key(name, alg, seed, not_before, not_after)
        if issuer is None:
            new._certificate = new._build_ca(
                name, new.public_key, path_length=path_length, not_before=new._not_before, not_after=new._not_after
            )
        else:
            new._certificate = issuer.sign_ca(
                name, new.public_key, path_length=path_length, not_before=new._not_before, not_after=new._not_after
            )
        return new

    def enroll(self, name: str, *, seed=None, path_length=None, not_before=None, not_after=None) -> Custodian:
        """The next custodian: it makes its own key pair; this custodian signs only its public key."""
        new = Custodian._with_new_key(
            name, self.algorithm, seed, not_before or self._not_before, not_after or self._not_after
        )
        new._certificate = self.sign_ca(
            name, new.public_key, path_length=path_length, not_before=new._not_before, not_after=new._not_after
        )
        return new

    # --- signing ----------------------------------------------------------------------------------------
    def _serial(self, label: str) -> int:
        if self._seed is None:
            return x509.random_serial_number()
        return derive_serial(self._seed, f"{self.name}/{label}".encode())

    def _aki(self) -> x509.AuthorityKeyIdentifier:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _sign_builder(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        if self.algorithm in CURVES:
            return builder.sign(self._key, self._hash, ecdsa_deterministic=self._deterministic)
        return builder.sign(self._key, self._hash)

    def _build_ca(self, subject_cn, public_key, *, path_length, not_before, not_after, aki=None):
        if aki is None:  # self-signed: the authority is this key itself
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_cn(subject_cn))
            .issuer_name(_cn(self.name) if self._certificate is None else self._certificate.subject)
            .public_key(public_key)
            .serial_number(self._serial("ca:" + subject_cn))
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(aki, critical=False)
        )
        return self._sign_builder(builder)

    def sign_ca(
        self, subject_cn: str, public_key, *, path_length=None, not_before=None, not_after=None
    ) -> x509.Certificate:
        """An intermediate CA certificate for someone else's public key."""
        return self._build_ca(
            subject_cn,
            public_key,
            path_length=path_length,
            not_before=not_before or self._not_before,
            not_after=not_after or self._not_after,
            aki=self._aki(),
        )

    def device_builder(
        self,
        device_id: str,
        public_key,
        *,
        serial: int | None = None,
        not_before=None,
        not_after=None,
        san: list[x509.GeneralName] | None = None,
    ) -> x509.CertificateBuilder:
        """The unsigned device certificate (the fleet template and tests use it); ``san``: the names of a
        SubjectAlternativeName placed after ExtendedKeyUsage, none by default."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(_cn(device_id))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(self._serial("device:" + device_id) if serial is None else serial)
            .not_valid_before(not_before or self._not_before)
            .not_valid_after(not_after or self._not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_LEAF_KEY_USAGE, critical=True)
            .add_extension(_CLIENT_AUTH, critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        ).add_extension(self._aki(), critical=False)

    def sign_device(
        self,
        device_id: str,
        public_key,
        *,
        serial: int | None = None,
        not_before=None,
        not_after=None,
        san: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        """A device certificate: CN = device id, clientAuth, CA:FALSE; no SAN unless ``san`` names one."""
        return self._sign_builder(
            self.device_builder(
                device_id, public_key, serial=serial, not_before=not_before, not_after=not_after, san=san
            )
        )

    def sign_csr(self, csr: x509.CertificateSigningRequest, *, path_length=None) -> x509.Certificate:
        """An intermediate CA certificate for whoever sent ``csr``: its subject CN and public key, once its
        signature shows the sender holds the key. Nothing else in the request is copied."""
        return self.sign_ca(requested_name(csr), csr.public_key(), path_length=path_length)

    def sign_device_csr(self, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        """A device certificate (CN = device id) for the key that signed ``csr``."""
        return self.sign_device(requested_name(csr), csr.public_key())

    def sign_tbs(self, tbs: bytes) -> bytes:
        """The certificate signature over DER ``tbs`` bytes (the fleet generator splices TBS by hand)."""
        return self._key.sign(tbs, *self._tbs_args)

    def tbs_signer(self):
        """``sign_tbs`` as a bare callable for hot loops: it closes over this custodian's key, which it
        never hands out."""
        if self.algorithm in CURVES:
            return functools.partial(self._key.sign, signature_algorithm=self._tbs_args[0])
        return functools.partial(self._key.sign, padding=self._tbs_args[0], algorithm=self._tbs_args[1])

    def verification_certificate(self, code: str) -> x509.Certificate:
        """Proof of possession for registration: subject CN = ``code``, issued and signed by this CA.

        Not a CA certificate. Its subject key is a throwaway key (derived from the seed when seeded), as in
        the Azure and AWS walk-throughs.
        """
        subject_key = generate_key("p256", seed=self._seed, label=b"verification:" + code.encode("utf-8"))
        public_key = subject_key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_cn(code))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(self._serial("verification:" + code))
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_LEAF_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._aki(), critical=False)
        )
        return self._sign_builder(builder)

    def sign_code(self, code: str) -> bytes:
        """A raw signature over ``code`` (ASCII) with this CA's key (:func:`hubsim.algorithms.sign`)."""
        return sign(self._key, code.encode("ascii"))

    def private_key_pem(self) -> bytes:
        """This custodian's own key as unencrypted PKCS#8 PEM, for writing its key file in a fleet store."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def certificate_request(key, name: str) -> x509.CertificateSigningRequest:
    """A request for a certificate with subject CN = ``name``, signed by ``key`` (a token key signs it in its
    token): what a custodian or a device sends its issuer instead of ever sending a key."""
    alg = key_algorithm(key)
    digest = None if alg == "ed25519" else _CERT_HASHES.get(alg, hashes.SHA256)()
    return x509.CertificateSigningRequestBuilder().subject_name(_cn(name)).sign(key, digest)


def requested_name(csr: x509.CertificateSigningRequest) -> str:
    """The subject CN of ``csr`` once its signature verifies; ValueError for a request whose sender does not
    hold its key, whose subject is anything but one CN, or whose key certstorm does not accept."""
    if not csr.is_signature_valid:
        raise ValueError("the request's signature does not verify: its sender does not hold the requested key")
    attributes = list(csr.subject)
    if len(attributes) != 1 or attributes[0].oid != NameOID.COMMON_NAME or not isinstance(attributes[0].value, str):
        raise ValueError(f"the request's subject must be one common name, not {csr.subject.rfc4514_string()!r}")
    key_algorithm(csr.public_key())  # UnsupportedKey (a ValueError) for keys certstorm refuses
    return attributes[0].value


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Device:
    """A device identity: its own key, its certificate and the custodian certificates above it."""

    __slots__ = ("_key", "certificate", "chain", "device_id")

    def __init__(self, device_id: str, key, certificate: x509.Certificate, chain: list[x509.Certificate]):
        self.device_id = device_id
        self._key = key
        self.certificate = certificate
        self.chain = list(chain)

    @classmethod
    def create(cls, device_id: str, issuer: Custodian, chain: list[x509.Certificate], *, alg=None, seed=None) -> Device:
        """The device makes its own key; ``issuer`` signs its public key. ``chain`` is the custodian
        certificates below the registered CA, nearest issuer first."""
        alg = alg or issuer.algorithm
        seed = None if seed is None else _as_bytes(seed)
        key = generate_key(alg, seed=seed, label=b"device:" + device_id.encode("utf-8"))
        return cls(device_id, key, issuer.sign_device(device_id, key.public_key()), chain)

    @property
    def public_key(self):
        return self._key.public_key()

    @property
    def private_key(self):
        """The device's own key (a TLS client presents it; a fleet identity has the same property)."""
        return self._key

    @property
    def algorithm(self) -> str:
        return key_algorithm(self._key)

    def chain_der(self) -> list[bytes]:
        """Leaf first, then the intermediates."""
        enc = serialization.Encoding.DER
        return [self.certificate.public_bytes(enc)] + [c.public_bytes(enc) for c in self.chain]

    def chain_pem(self) -> bytes:
        """A PEM bundle, leaf first."""
        return b"".join(_pem(c) for c in [self.certificate, *self.chain])

    def sign(self, challenge: bytes) -> bytes:
        """Proof of possession over ``challenge`` (:func:`hubsim.algorithms.sign`)."""
        return sign(self._key, challenge)

    def __repr__(self) -> str:
        return f"Device({self.device_id!r})"


class SupplyChain:
    """Company-X's CA (optionally bought from a public root) and the custodians below it."""

    def __init__(self, public_root, company, custodians, alg, seed):
        self.public_root: Custodian | None = public_root
        self.company: Custodian = company
        self.custodians: list[Custodian] = list(custodians)
        self.alg = alg
        self.seed = seed

    @property
    def issuer(self) -> Custodian:
        """The custodian that signs device certificates."""
        return self.custodians[-1] if self.custodians else self.company

    @property
    def depth(self) -> int:
        return len(self.custodians)

    @classmethod
    def build(
        cls,
        depth: int = 2,
        alg: str = "p256",
        *,
        purchased: bool = False,
        seed: bytes | None = None,
        not_before=None,
        not_after=None,
    ) -> SupplyChain:
        """Company-X plus ``depth`` (0..5) custodians, each enrolled by the previous one.

        ``purchased=True`` makes Company-X's CA an intermediate bought from an outside public root; the
        registered CA is still Company-X. Intermediate custodians get decreasing path lengths (the last
        one 0).
        """
        _check_alg(alg)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be an integer from 0 to {MAX_DEPTH}, got {depth!r}")
        if seed is not None:
            seed = _as_bytes(seed)
            if alg == "rsa2048":
                generate_key(alg, seed=seed)  # raises the explanatory ValueError
        public_root = None
        if purchased:
            public_root = Custodian.root(PUBLIC_ROOT, alg, seed=seed, not_before=not_before, not_after=not_after)
        company = Custodian.root(
            COMPANY, alg, issuer=public_root, seed=seed, not_before=not_before, not_after=not_after
        )
        custodians: list[Custodian] = []
        issuer = company
        for i, name in enumerate(DEFAULT_CUSTODIANS[:depth]):
            issuer = issuer.enroll(name, seed=seed, path_length=depth - 1 - i)
            custodians.append(issuer)
        return cls(public_root, company, custodians, alg, seed)

    def intermediates(self) -> list[x509.Certificate]:
        """Custodian certificates below the registered CA, nearest to the device first."""
        return [c.certificate for c in reversed(self.custodians)]

    def device(self, device_id: str, *, seed=None) -> Device:
        """A device of this chain's algorithm; seeded from the chain's seed unless ``seed`` is given."""
        return Device.create(
            device_id, self.issuer, self.intermediates(), alg=self.alg, seed=self.seed if seed is None else seed
        )


__all__ = [
    "ALGORITHMS",
    "COMPANY",
    "CURVES",
    "DEFAULT_CUSTODIANS",
    "MAX_DEPTH",
    "NOT_AFTER",
    "NOT_BEFORE",
    "ORDERS",
    "PUBLIC_ROOT",
    "SEED_DIGESTS",
    "Custodian",
    "Device",
    "SupplyChain",
    "ca_algorithm",
    "certificate_request",
    "derive_scalar",
    "derive_serial",
    "generate_key",
    "requested_name",
]
