"""Reading a fleet: memory-mapped, O(1) per identity; certificates re-spliced from the template on demand."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from devicekit.fleet.identity import FleetBase, IdentityBase
from devicekit.fleet.layout import DATA_FILE, DER, FORMAT, LAYOUTS, META_FILE, VERSION, record_size
from devicekit.fleet.template import Template
from devicekit.pki import COMPANY, CURVES, Custodian

__all__ = ["DeviceIdentity", "Fleet"]


class DeviceIdentity(IdentityBase):
    """One device of a fleet. The private key and certificate are built on first use."""

    __slots__ = ("_cert_der", "_fleet", "_key", "_record", "device_id", "index")

    def __init__(self, fleet: Fleet, index: int, record: bytes):
        self._fleet = fleet
        self.index = index
        self.device_id = fleet.device_id(index)
        self._record = record
        self._key = None
        self._cert_der = None

    @property
    def public_bytes(self) -> bytes:
        f = self._fleet
        return self._record[f._priv_len : f._priv_len + f._pub_len]

    @property
    def private_key(self):
        if self._key is None:
            self._key = self._fleet._load_key(self._record)
        return self._key

    @property
    def certificate_der(self) -> bytes:
        if self._cert_der is None:
            f, rec = self._fleet, self._record
            n = int.from_bytes(rec[f._siglen_at : f._sig_at], "big")
            signature = rec[f._sig_at : f._sig_at + n]
            self._cert_der = f._template.certificate(
                self.index, self.device_id[-f.id_width :].encode("ascii"), self.public_bytes, signature
            )
        return self._cert_der


class Fleet(FleetBase):
    """A generated fleet, memory-mapped: opening it reads only ``fleet.json``; identities are O(1)."""

    def __init__(self, path: Path, meta: dict, fd_file, mm):
        self.path = path
        self.meta = meta
        self.alg: str = meta["alg"]
        self.depth: int = meta["depth"]
        self.count: int = meta["count"]
        self.seed = None if meta["seed"] is None else bytes.fromhex(meta["seed"])
        self.id_prefix: str = meta["id_prefix"]
        self.id_width: int = meta["id_width"]
        self.san: str | None = meta.get("san")
        self.record_size: int = meta["record_size"]
        self.custodian_names: list[str] = list(meta["custodians"])
        self._file, self._mm = fd_file, mm
        self._template = Template.from_json(meta["template"])
        self._priv_len, self._pub_len, _sig_max, siglen_bytes = LAYOUTS[self.alg]
        self._siglen_at = self._priv_len + self._pub_len
        self._sig_at = self._siglen_at + siglen_bytes
        self.ca_certificate: x509.Certificate = x509.load_pem_x509_certificate(meta["ca_certificate"].encode())
        self.intermediates: list[x509.Certificate] = [
            x509.load_pem_x509_certificate(p.encode()) for p in meta["intermediates"]
        ]
        self.intermediates_der = [c.public_bytes(DER) for c in self.intermediates]
        self.intermediates_pem = "".join(meta["intermediates"]).encode("ascii")
        self._curve = CURVES.get(self.alg)

    @classmethod
    def open(cls, path) -> Fleet:
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise ValueError(f"{path} is not a certstorm fleet: {META_FILE} is missing")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{meta_path} is not readable fleet metadata: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path} is not certstorm fleet metadata")
        if meta.get("keys") == "pkcs11":  # device keys in a token: devicekit.fleet.tokens
            from devicekit.fleet.tokens import TokenFleet

            return TokenFleet.open(path, meta)
        if meta.get("version") != VERSION:
            raise ValueError(f"{meta_path} has fleet format version {meta.get('version')}, expected {VERSION}")
        if meta.get("alg") not in LAYOUTS or meta.get("record_size") != record_size(meta["alg"]):
            raise ValueError(f"{meta_path} names an unknown algorithm or record layout")
        data_path = path / DATA_FILE
        expected = meta["count"] * meta["record_size"]
        try:
            size = data_path.stat().st_size
        except FileNotFoundError:
            raise ValueError(f"{path} is not a complete fleet: {DATA_FILE} is missing") from None
        if size != expected:
            raise ValueError(
                f"{data_path} holds {size} bytes but {meta['count']} devices need {expected}: "
                "the file is truncated or belongs to another fleet; generate the fleet again"
            )
        f = open(data_path, "rb")
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except Exception:
            f.close()
            raise
        return cls(path, meta, f, mm)

    def __repr__(self) -> str:
        return f"Fleet({str(self.path)!r}, {self.count} x {self.alg}, depth {self.depth})"

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._file.close()
            self._mm = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _identity(self, index: int) -> DeviceIdentity:
        if self._mm is None:
            raise ValueError("the fleet is closed")
        at = index * self.record_size
        return DeviceIdentity(self, index, self._mm[at : at + self.record_size])

    def _load_key(self, record: bytes):
        p = self._priv_len
        if self._curve is not None:
            half = (self._pub_len - 1) // 2
            pub = record[p : p + self._pub_len]
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(pub[1 : 1 + half], "big"), int.from_bytes(pub[1 + half :], "big"), self._curve
            )
            return ec.EllipticCurvePrivateNumbers(int.from_bytes(record[:p], "big"), public).private_key()
        if self.alg == "ed25519":
            return ed25519.Ed25519PrivateKey.from_private_bytes(record[:p])
        n = int.from_bytes(record[:2], "big")
        return serialization.load_der_private_key(record[2 : 2 + n], None)

    def custodian_key(self, name: str):
        """A custodian's own private key from ``keys/<name>.pem`` (e.g. ``"Company-X"``)."""
        rel = self.meta["key_files"].get(name)
        if rel is None:
            raise KeyError(f"no key for custodian {name!r}; this fleet has {', '.join(self.meta['key_files'])}")
        return serialization.load_pem_private_key((self.path / rel).read_bytes(), None)

    def custodian(self, name: str = COMPANY) -> Custodian:
        """A custodian of this fleet's chain, with its own key: Company-X proves possession of its CA."""
        by_subject = {c.subject.rfc4514_string(): c for c in [self.ca_certificate, *self.intermediates]}
        certificate = by_subject.get(f"CN={name}")
        if certificate is None:
            raise KeyError(f"no certificate for custodian {name!r}")
        return Custodian.restore(name, self.custodian_key(name), certificate)
