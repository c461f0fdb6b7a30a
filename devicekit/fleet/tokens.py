"""Fleets whose device keys live in a PKCS#11 token: each key pair is made inside the token, each device
asks for its certificate with a CSR its key signs there, and the last custodian issues the certificate from
that request. The fleet directory holds requests, certificates and the token's name; never a key.

The steps, each with one token open (``certstorm pki`` runs them, docs/hsm.md walks through them):

1. :func:`make_device_keys` -- in the devices' token: the key pairs, and ``requests.pem`` (one CSR each);
2. the issuing custodian signs the requests in its own token (:meth:`devicekit.pki.Custodian.sign_device_csr`)
   into ``devices.pem``;
3. :func:`assemble_token_fleet` -- checks every certificate against its request and the chain, and writes
   ``fleet.json`` with ``"keys": "pkcs11"``: the module, the token, the PIN file's path (never the PIN), and
   optionally Company-X's token, with which a swarm proves possession of the CA to a hub.

``Fleet.open`` returns a :class:`TokenFleet` for such a directory; opening one logs in to the token and
checks that every device's key is there and matches its certificate, so a wrong PIN, a missing token or a
missing key is found before a run starts.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devicekit.fleet.identity import FleetBase, IdentityBase
from devicekit.fleet.layout import CA_FILE, CHAIN_FILE, DEFAULT_PREFIX, FORMAT, META_FILE, MIN_WIDTH, VERSION
from devicekit.hsm import Token, TokenError, open_token
from devicekit.pki import COMPANY, Custodian, certificate_request, requested_name
from hubsim import key_algorithm

__all__ = [
    "CERTIFICATES_FILE",
    "KEYS",
    "NO_TOKEN_KEYS_OVER_MQTTS",
    "REQUESTS_FILE",
    "TOKEN_PREFIX",
    "RegisteredCA",
    "TokenFleet",
    "TokenIdentity",
    "assemble_token_fleet",
    "make_device_keys",
    "read_requests",
]

KEYS = "pkcs11"  # fleet.json's "keys" for a token fleet
# The swarm's TLS stack is pyOpenSSL on cryptography's bundled OpenSSL, which loads no engine and no PKCS#11
# provider: it cannot use a private key that stays in a token.
NO_TOKEN_KEYS_OVER_MQTTS = (
    "its device keys are in a PKCS#11 token, and the swarm's TLS stack (pyOpenSSL on cryptography's bundled "
    "OpenSSL) cannot use a key that stays in a token; drive this fleet over HTTP, or connect its devices with "
    "mosquitto_pub and Debian's PKCS#11 engine (docs/hsm.md)"
)
REQUESTS_FILE = "requests.pem"
CERTIFICATES_FILE = "devices.pem"
TOKEN_PREFIX = "hsm-" + DEFAULT_PREFIX  # hsm-device-000000: not to be mistaken for a software fleet's devices
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


def make_device_keys(
    out_dir, token: Token, count: int, *, prefix: str = TOKEN_PREFIX, alg: str = "p256", progress=None
) -> Path:
    """Make ``count`` device key pairs inside ``token`` (labelled by device id) and write each device's CSR,
    signed in the token by its own key, to ``out_dir/requests.pem``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"devices must be a positive integer, got {count!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(MIN_WIDTH, len(str(count - 1)))
    requests = []
    for i in range(count):
        device_id = f"{prefix}{i:0{width}d}"
        key = token.generate_key(device_id, alg)
        requests.append(certificate_request(key, device_id).public_bytes(PEM))
        if progress is not None:
            progress(i + 1, count)
    path = out / REQUESTS_FILE
    path.write_bytes(b"".join(requests))
    return path


def read_requests(path) -> list[x509.CertificateSigningRequest]:
    """The CSRs of a PEM file, each checked (:func:`devicekit.pki.requested_name`)."""
    try:
        text = Path(path).read_bytes()
        requests = [x509.load_pem_x509_csr(block) for block in _pem_blocks(text, b"CERTIFICATE REQUEST")]
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a file of PEM certificate requests ({exc})") from None
    if not requests:
        raise ValueError(f"{path}: holds no certificate request")
    for request in requests:
        requested_name(request)
    return requests


def _pem_blocks(text: bytes, kind: bytes) -> list[bytes]:
    """Each ``-----BEGIN kind-----`` .. ``-----END kind-----`` block of ``text`` (cryptography loads one CSR
    per call)."""
    begin, end = b"-----BEGIN " + kind + b"-----", b"-----END " + kind + b"-----"
    blocks, at = [], 0
    while (start := text.find(begin, at)) >= 0:
        stop = text.find(end, start)
        if stop < 0:
            raise ValueError("a PEM block without its END line")
        at = stop + len(end)
        blocks.append(text[start:at])
    return blocks


def _company_ref(company: dict | None) -> dict | None:
    if company is None:
        return None
    ref = {k: company[k] for k in ("module", "token", "pin_file", "key")}
    ref["pin_file"] = str(Path(ref["pin_file"]).resolve())
    return ref


def assemble_token_fleet(
    out_dir,
    *,
    module: str,
    token: str,
    pin_file: str,
    certificates: list[x509.Certificate],
    intermediates: list[x509.Certificate],
    ca_certificate: x509.Certificate,
    custodians: list[str],
    company: dict | None = None,
) -> Path:
    """Check each certificate against the device's own request in ``out_dir/requests.pem`` and the chain
    (``intermediates`` nearest the devices first, up to ``ca_certificate``), then write ``fleet.json``."""
    out = Path(out_dir)
    requests = {requested_name(r): r for r in read_requests(out / REQUESTS_FILE)}
    chain = [*intermediates, ca_certificate]
    for lower, upper in itertools.pairwise(chain):
        lower.verify_directly_issued_by(upper)  # ValueError or InvalidSignature on a broken chain
    issuer = chain[0]
    by_id: dict[str, x509.Certificate] = {}
    for cert in certificates:
        names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        device_id = names[0].value if names else ""
        request = requests.get(device_id)
        if request is None:
            raise ValueError(f"certificate for {device_id!r}: no device of {out / REQUESTS_FILE} asked for it")
        if cert.public_key() != request.public_key():
            raise ValueError(f"certificate for {device_id!r}: its key is not the key the device's request holds")
        cert.verify_directly_issued_by(issuer)
        by_id[device_id] = cert
    missing = sorted(set(requests) - set(by_id))
    if missing:
        raise ValueError(f"no certificate for {len(missing)} device(s), e.g. {missing[0]!r}")
    ids = sorted(by_id)
    pem = lambda c: c.public_bytes(PEM).decode("ascii")  # noqa: E731
    alg = key_algorithm(by_id[ids[0]].public_key())
    prefix = ids[0].rstrip("0123456789")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "keys": KEYS,
        "alg": alg,
        "ca_alg": key_algorithm(ca_certificate.public_key()),
        "depth": len(intermediates),
        "count": len(ids),
        "seed": None,
        "id_prefix": prefix,
        "id_width": len(ids[0]) - len(prefix),
        "san": None,
        "pkcs11": {"module": module, "token": token, "pin_file": str(Path(pin_file).resolve())},
        "company_token": _company_ref(company),
        "certificates": [pem(by_id[i]) for i in ids],
        "custodians": list(custodians),
        "issuer": custodians[-1] if custodians else COMPANY,
        "intermediates": [pem(c) for c in intermediates],
        "ca_certificate": pem(ca_certificate),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    (out / CA_FILE).write_text(pem(ca_certificate))
    (out / CHAIN_FILE).write_text("".join(pem(c) for c in intermediates))
    (out / CERTIFICATES_FILE).write_text("".join(meta["certificates"]))
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, out / META_FILE)
    return out / META_FILE


class TokenIdentity(IdentityBase):
    """One device of a token fleet: its certificate and chain, and its key, which the token holds."""

    __slots__ = ("_fleet", "device_id", "index")

    def __init__(self, fleet: TokenFleet, index: int):
        self._fleet = fleet
        self.index = index
        self.device_id = fleet.device_id(index)

    @property
    def certificate_der(self) -> bytes:
        return self._fleet.certificates_der[self.index]

    @property
    def private_key(self):
        """The device's :class:`~devicekit.hsm.TokenKey`: signing happens in the token."""
        return self._fleet.key(self.index)


class RegisteredCA:
    """Company-X's certificate without its key, for a fleet that does not name Company-X's token: a hub that
    already holds the CA verified admits the fleet; proving it again needs Company-X's token."""

    def __init__(self, certificate: x509.Certificate):
        self.certificate = certificate
        self.name = COMPANY

    def verification_certificate(self, code: str):
        raise TokenError(
            "company_key_absent",
            "this hub asks Company-X to prove possession of its CA and the fleet does not name Company-X's token: "
            "run certstorm pki prove with Company-X's token first, or assemble the fleet with --company-token",
        )


class TokenFleet(FleetBase):
    """A fleet whose device keys live in a PKCS#11 token (``fleet.json`` with ``"keys": "pkcs11"``)."""

    record_size = 0  # nothing per device on disk but its certificate

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = meta
        try:
            self.alg: str = meta["alg"]
            self.depth: int = int(meta["depth"])
            self.count: int = int(meta["count"])
            self.id_prefix: str = meta["id_prefix"]
            self.id_width: int = int(meta["id_width"])
            ref = meta["pkcs11"]
            self.module, self.token_label, self.pin_file = ref["module"], ref["token"], ref["pin_file"]
            self.certificates_der = [
                x509.load_pem_x509_certificate(p.encode()).public_bytes(DER) for p in meta["certificates"]
            ]
            self.intermediates = [x509.load_pem_x509_certificate(p.encode()) for p in meta["intermediates"]]
            self.ca_certificate = x509.load_pem_x509_certificate(meta["ca_certificate"].encode())
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path / META_FILE} is not a complete token fleet ({exc!r})") from None
        if len(self.certificates_der) != self.count:
            raise ValueError(
                f"{path / META_FILE} lists {len(self.certificates_der)} certificates for {self.count} devices"
            )
        self.seed = None
        self.san = None
        self.custodian_names: list[str] = list(meta.get("custodians", []))
        self.intermediates_der = [c.public_bytes(DER) for c in self.intermediates]
        self.intermediates_pem = "".join(meta["intermediates"]).encode("ascii")
        self._token: Token | None = None
        self._company: Token | None = None  # Company-X's token, opened when a hub asks for proof
        self._keys: list | None = None
        self._pid = None

    @classmethod
    def open(cls, path, meta: dict) -> TokenFleet:
        """The fleet, with its token opened and every device's key found and matched to its certificate."""
        fleet = cls(Path(path), meta)
        fleet._open_token()
        return fleet

    def _open_token(self) -> None:
        token = open_token(self.module, self.token_label, self.pin_file, rw=False)
        try:
            found = token.keys()
            keys = []
            for i in range(self.count):
                device_id = self.device_id(i)
                key = found.get(device_id)
                if key is None:
                    raise TokenError("key_missing", f"token {self.token_label!r} holds no key labelled {device_id!r}")
                if key.public_key() != x509.load_der_x509_certificate(self.certificates_der[i]).public_key():
                    raise TokenError(
                        "key_mismatch",
                        f"token {self.token_label!r}: the key {device_id!r} is not the one its certificate names",
                    )
                keys.append(key)
        except BaseException:
            token.close()  # logged out, so the next attempt in this process is not refused as busy
            raise
        self._token, self._keys, self._pid = token, keys, os.getpid()

    def key(self, index: int):
        if self._keys is None or self._pid != os.getpid():  # a forked process logs in for itself
            self._open_token()
        return self._keys[index]

    def __repr__(self) -> str:
        return f"TokenFleet({str(self.path)!r}, {self.count} x {self.alg} in token {self.token_label!r})"

    def close(self) -> None:
        for token in (self._token, self._company):
            if token is not None:
                token.close()
        self._token, self._company, self._keys = None, None, None

    def _identity(self, index: int) -> TokenIdentity:
        return TokenIdentity(self, index)

    def custodian(self, name: str = COMPANY):
        """Company-X, with its key in its own token when the fleet names that token (its PIN file is read when
        the hub asks for proof), else its certificate alone (:class:`RegisteredCA`)."""
        if name != COMPANY:
            raise KeyError(f"a token fleet keeps no custodian's key but Company-X's token reference, not {name!r}")
        ref = self.meta.get("company_token")
        if not ref:
            return RegisteredCA(self.ca_certificate)
        if self._company is None:
            self._company = open_token(
                ref["module"], ref["token"], ref["pin_file"], rw=False, what="Company-X's PIN file"
            )
        return Custodian.restore(COMPANY, self._company.key(ref["key"]), self.ca_certificate)

    def custodian_key(self, name: str):
        raise KeyError(f"{name}'s key is in its token; a token fleet holds no key file")
