"""Fleets of device identities at scale: generate once, open anywhere, index by device number in O(1).

How generation is fast enough
-----------------------------
``CertificateBuilder`` costs about 130 us per certificate, more than a key generation and a signature
together. So the generator builds ONE template device certificate with ``CertificateBuilder`` whose
per-device fields all have a fixed length -- the device id ``f"{prefix}{index:0{width}d}"``, a 16-byte
serial (8-byte fleet id + 8-byte big-endian index, first byte 0x40..0x7f), the subject public key (fixed
length per algorithm) and the SubjectKeyIdentifier (SHA-1 of the public key bit string) -- finds those
fields' byte offsets in the template's TBSCertificate, and splices each device's values in (with a
per-device SubjectAlternativeName, ``--san``, the id digits once more inside each SAN name). The lengths do
not change, so no DER is re-encoded; the issuing custodian signs the spliced TBS
(:meth:`~devicekit.pki.Custodian.sign_tbs`) and the certificate is
``SEQUENCE { tbs, signatureAlgorithm (from the template), BIT STRING (0x00 + signature) }``.
With deterministic signing the result is byte-identical to what ``CertificateBuilder`` makes for the same
fields (the tests check this).

On-disk store (``DIR``)
-----------------------
* ``fleet.json`` -- algorithm, depth, count, seed (hex or null), id prefix and width, record layout, the
  template pieces (base64), the intermediates (PEM, nearest to the device first), the registered CA
  certificate (Company-X), custodian names and key files, creation time. Written last: a directory
  without it is not a fleet.
* ``devices.bin`` -- fixed-size records, one per device, at ``index * record_size``:
  ``private | public | signature length | signature (zero padded)``. Device certificates are not stored;
  they are re-spliced from the template on demand (about a microsecond).

  =========  =======================================================================  =======
  alg        record                                                                   bytes
  =========  =======================================================================  =======
  p256       32 scalar + 65 point + 1 + 72 ECDSA-P-256 signature                      170
  p384       48 scalar + 97 point + 1 + 104 ECDSA-P-384 signature                     250
  ed25519    32 private + 32 public + 1 + 72 (certificates are signed by a P-256 CA)  137
  rsa2048    2 + 1280 PKCS#8 DER + 270 RSAPublicKey + 2 + 256 signature               1810
  =========  =======================================================================  =======

* ``keys/<custodian>.pem`` -- each custodian's own key, unencrypted PKCS#8 PEM, one file per custodian.
  The load generator needs Company-X's key to prove possession of the CA to the hub.

Seeded fleets are deterministic: the chain comes from :meth:`SupplyChain.build` with the seed, device keys
derive from HMAC(seed, ``device_key_label(index)``), signatures are RFC 6979, so two generations write
byte-identical ``devices.bin`` files whatever the number of workers.

Figures (2-vCPU AMD EPYC, cryptography 50, Python 3.11)
-------------------------------------------------------
"Usable within 60 s" means: ``generate_fleet(DIR, 1_000_000)`` returns -- every record written, key files
and ``fleet.json`` in place -- so :meth:`Fleet.open` works and any identity can be served, in at most 60 s
of wall clock. Measured once with
``time .venv/bin/python -c 'from devicekit.fleet import generate_fleet; generate_fleet("/tmp/fleet1m", 1_000_000)'``:
see ``MEASURED_1M`` below (50.2 s wall, 87 s CPU on 2 workers).

Per core, the unseeded P-256 path costs about 64-71 us per device against a floor of about 48 us for one
``ec.generate_private_key`` plus one ECDSA signature: an efficiency of 0.69-0.76, short of the 0.85
target (``bench/bench_fleet.py`` measures it). About half of the gap is exporting each new key pair
(PKCS#8 DER, one call that carries both the scalar and the point: ~7 us) plus the cost of alternating
keygen, export and sign, which are slower interleaved than in separate tight loops -- with no glue at all,
keygen + export + sign measures about 0.83 of the floor here. The other half is the Python glue (splice,
SHA-1 for the SKI, record packing). Seeded fleets reach about 0.49
(``derive_private_key`` re-checks the key and RFC 6979 nonces cost extra HMACs).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import hmac
import json
import math
import mmap
import multiprocessing
import os
import struct
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hubsim.algorithms import sign as _pop_sign
from hubsim.argtypes import integer
from hubsim.encoding import der_header, pem_certificate, read_der_header
from devicekit.pki import CURVES, ORDERS, SEED_DIGESTS, ALGORITHMS, COMPANY, MAX_DEPTH, Custodian, SupplyChain, generate_key

MEASURED_1M = "1,000,000 P-256 devices, depth 2, 2 workers: 50.2 s wall, 87 s CPU, 170 MB devices.bin"

FORMAT = "certstorm-fleet"
VERSION = 1
META_FILE = "fleet.json"
DATA_FILE = "devices.bin"
KEY_DIR = "keys"
DEFAULT_PREFIX = "device-"
MIN_WIDTH = 6
CHUNK = 2000  # devices per work unit: ~0.1 s of work, small enough for a smooth progress bar

_DER = serialization.Encoding.DER
_PKCS8 = serialization.PrivateFormat.PKCS8
_NOENC = serialization.NoEncryption()
_X962 = serialization.Encoding.X962
_UNCOMPRESSED = serialization.PublicFormat.UncompressedPoint

# alg -> (private slot, public slot, max signature, signature length field bytes)
_INDEX = struct.Struct(">Q")
try:  # CPython's built-in SHA-1 is cheaper per call than the OpenSSL-backed hashlib.sha1
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - other interpreters
    _sha1 = hashlib.sha1

_LAYOUTS = {
    "p256": (32, 65, 72, 1),
    "p384": (48, 97, 104, 1),
    "ed25519": (32, 32, 72, 1),
    "rsa2048": (2 + 1280, 270, 256, 2),
}


def record_size(alg: str) -> int:
    priv, pub, sig, siglen = _LAYOUTS[alg]
    return priv + pub + siglen + sig


def device_key_label(index: int) -> bytes:
    """The HMAC label a seeded fleet derives device ``index``'s key from."""
    return b"device/" + index.to_bytes(8, "big")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def new_fleet_id(seed: bytes | None) -> bytes:
    raw = bytearray(os.urandom(8) if seed is None else hmac.digest(seed, b"fleet-id", "sha256")[:8])
    raw[0] = (raw[0] & 0x3F) | 0x40  # positive, no leading zero: the DER INTEGER is always 16 bytes
    return bytes(raw)


def _public_bits(alg: str, public_key) -> bytes:
    """The subjectPublicKey BIT STRING contents (what the SKI hashes)."""
    if alg in CURVES:
        return public_key.public_bytes(_X962, _UNCOMPRESSED)
    if alg == "ed25519":
        return public_key.public_bytes_raw()
    return public_key.public_bytes(_DER, serialization.PublicFormat.PKCS1)


SAN_KINDS = ("dns", "uri", "both")
SAN_DNS_SUFFIX = ".devices.example"  # a reserved name (RFC 6761): no real host is ever named
SAN_URI_PREFIX = "urn:certstorm:device:"


def _check_san(kind: str | None) -> str | None:
    if kind is not None and kind not in SAN_KINDS:
        raise ValueError(f"unknown SAN kind {kind!r}; choose one of {', '.join(SAN_KINDS)}")
    return kind


def san_names(kind: str | None, device_id: str) -> list[x509.GeneralName]:
    """The per-device SubjectAlternativeName of a ``--san`` fleet: the device's own DNS name and/or URI,
    each holding the device id (so the id digits are spliced there too)."""
    if _check_san(kind) is None:
        return []
    names: list[x509.GeneralName] = []
    if kind in ("dns", "both"):
        names.append(x509.DNSName(device_id + SAN_DNS_SUFFIX))
    if kind in ("uri", "both"):
        names.append(x509.UniformResourceIdentifier(SAN_URI_PREFIX + device_id))
    return names


class Template:
    """A device certificate cut at its per-device fields: index (serial tail), id digits (in the CN and in
    every SAN name), public key, SKI. ``fields`` names them in TBS order; "digits" may occur more than once."""

    FIELDS = ("serial", "digits", "public", "ski")  # a fleet without SAN (and every fleet.json without "fields")

    def __init__(self, pieces: list[bytes], lengths: dict[str, int], signature_algorithm: bytes,
                 fields: tuple[str, ...] = FIELDS):
        fields = tuple(fields)
        if sorted(set(fields)) != sorted(self.FIELDS) or any(fields.count(f) != 1 for f in ("serial", "public", "ski")):
            raise ValueError(f"a fleet template splices {', '.join(self.FIELDS)} (digits possibly more than once), "
                             f"got {list(fields)}")
        if len(pieces) != len(fields) + 1:
            raise ValueError("a fleet template has one fixed piece more than it has fields")
        self.pieces = pieces
        self.lengths = lengths
        self.signature_algorithm = signature_algorithm
        self.fields = fields
        self.tbs_length = sum(map(len, pieces)) + sum(lengths[f] for f in fields)

    @classmethod
    def build(cls, issuer, alg: str, fleet_id: bytes, prefix: str, width: int, san: str | None = None) -> "Template":
        sample = generate_key(alg)
        public = _public_bits(alg, sample.public_key())
        index = 10 ** width - 1
        digits = f"{index:0{width}d}".encode("ascii")
        device_id = prefix.encode("utf-8") + digits
        serial = fleet_id + index.to_bytes(8, "big")
        names = san_names(san, device_id.decode("utf-8"))
        cert = issuer.sign_device(device_id.decode("utf-8"), sample.public_key(),
                                  serial=int.from_bytes(serial, "big"), san=names)
        tbs = cert.tbs_certificate_bytes
        cn_tlv = der_header(0x0C, len(device_id)) + device_id

        def locate(needle: bytes, what: str) -> int:
            at = tbs.find(needle)
            if at < 0 or tbs.find(needle, at + 1) >= 0:
                raise RuntimeError(f"template {what} is not unique in the TBS; cannot splice")
            return at

        spots = [
            (locate(der_header(0x02, 16) + serial, "serial") + 2 + 8, 8, "serial"),
            (locate(cn_tlv, "subject CN") + len(cn_tlv) - width, width, "digits"),
            (locate(public, "public key"), len(public), "public"),
            (locate(hashlib.sha1(public).digest(), "SKI"), 20, "ski"),
        ]
        for name in names:  # the id digits inside each SAN name, found by the whole name around them
            text = name.value.encode("ascii")
            end = text.index(device_id) + len(device_id)
            spots.append((locate(text, "SAN name") + end - width, width, "digits"))
        spots.sort()
        pieces, pos = [], 0
        for at, length, _ in spots:
            if at < pos:
                raise RuntimeError("template fields overlap")
            pieces.append(tbs[pos:at])
            pos = at + length
        pieces.append(tbs[pos:])
        der = cert.public_bytes(_DER)
        hdr, _ = read_der_header(der, 0)
        start = hdr + len(tbs)
        alg_hdr, alg_len = read_der_header(der, start)
        template = cls(pieces, {name: length for _, length, name in spots}, der[start:start + alg_hdr + alg_len],
                       tuple(name for _, _, name in spots))
        if template.certificate(index, digits, public, cert.signature) != der:
            raise RuntimeError("re-spliced template differs from the CertificateBuilder original")
        return template

    def tbs(self, index: int, digits: bytes, public: bytes) -> bytes:
        p = self.pieces
        if self.fields == self.FIELDS:  # the common shape, without the general loop below
            return b"".join((p[0], index.to_bytes(8, "big"), p[1], digits, p[2], public, p[3],
                             hashlib.sha1(public).digest(), p[4]))
        values = {"serial": index.to_bytes(8, "big"), "digits": digits, "public": public,
                  "ski": hashlib.sha1(public).digest()}
        parts = [p[0]]
        for field, piece in zip(self.fields, p[1:]):
            parts += (values[field], piece)
        return b"".join(parts)

    def wrap(self, tbs: bytes, signature: bytes) -> bytes:
        """Certificate ::= SEQUENCE { tbs, signatureAlgorithm, BIT STRING (0 unused bits + signature) }."""
        bits = der_header(0x03, len(signature) + 1) + b"\x00" + signature
        body_len = len(tbs) + len(self.signature_algorithm) + len(bits)
        return b"".join((der_header(0x30, body_len), tbs, self.signature_algorithm, bits))

    def certificate(self, index: int, digits: bytes, public: bytes, signature: bytes) -> bytes:
        return self.wrap(self.tbs(index, digits, public), signature)

    def to_json(self) -> dict:
        return {"pieces": [_b64(p) for p in self.pieces], "lengths": self.lengths,
                "signature_algorithm": _b64(self.signature_algorithm), "fields": list(self.fields)}

    @classmethod
    def from_json(cls, data: dict) -> "Template":
        return cls([_unb64(p) for p in data["pieces"]], {k: int(v) for k, v in data["lengths"].items()},
                   _unb64(data["signature_algorithm"]), tuple(data.get("fields", cls.FIELDS)))


class RecordMaker:
    """Makes device records ``[start, stop)``: the one code path that both generate_fleet and the
    benchmark run. Holds the issuing custodian (the only key that signs device certificates)."""

    def __init__(self, issuer, alg: str, template: Template, width: int, seed: bytes | None):
        self.issuer = issuer
        self.alg = alg
        self.template = template
        self.width = width
        self.seed = seed
        self.priv_len, self.pub_len, self.sig_max, self.siglen_bytes = _LAYOUTS[alg]
        self.record_size = record_size(alg)
        # pad[n] completes an n-byte signature to its slot; siglen[n] encodes n.
        self._pad = [bytes(self.sig_max - n) for n in range(self.sig_max + 1)]
        self._siglen = [n.to_bytes(self.siglen_bytes, "big") for n in range(self.sig_max + 1)]
        if alg in CURVES:
            probe = ec.generate_private_key(CURVES[alg])
            p8 = probe.private_bytes(_DER, _PKCS8, _NOENC)
            scalar = probe.private_numbers().private_value.to_bytes(self.priv_len, "big")
            point = probe.public_key().public_bytes(_X962, _UNCOMPRESSED)
            self._p8_len = len(p8)
            self._scalar_at = p8.find(scalar)
            self._point_at = p8.find(point)
            if self._scalar_at < 0 or self._point_at + self.pub_len != len(p8):
                raise RuntimeError("unexpected PKCS#8 layout for EC keys in this cryptography version")

    def records(self, start: int, stop: int) -> bytes:
        if self.alg in CURVES:
            if self.seed is None:
                return self._ec_random(start, stop)
            return self._ec_seeded(start, stop)
        return b"".join(self._generic(i) for i in range(start, stop))

    def _ec_random(self, start: int, stop: int) -> bytes:
        # The hot loop: one keygen, one PKCS#8 export that carries both scalar and point, one SHA-1,
        # one join, one signature. Everything is bound to locals; see bench/bench_fleet.py.
        gen, curve = ec.generate_private_key, CURVES[self.alg]
        der, p8, noenc = _DER, _PKCS8, _NOENC
        tmpl = self.template
        plain = tmpl.fields == Template.FIELDS  # no SAN: the pieces are joined inline, the hottest shape
        p0, p1, p2, p3, p4 = tmpl.pieces if plain else (b"",) * 5
        sign = self.issuer.tbs_signer()
        sha1, join, pack, width = _sha1, b"".join, _INDEX.pack, self.width
        s_at, s_end, pt_at, p8_len = self._scalar_at, self._scalar_at + self.priv_len, self._point_at, self._p8_len
        pad, siglen = self._pad, self._siglen
        out = []
        add = out.extend
        for i in range(start, stop):
            d = gen(curve).private_bytes(der, p8, noenc)
            pub = d[pt_at:]
            if plain:
                sig = sign(join((p0, pack(i), p1, b"%0*d" % (width, i), p2, pub, p3, sha1(pub).digest(), p4)))
            else:
                sig = sign(tmpl.tbs(i, b"%0*d" % (width, i), pub))
            n = len(sig)
            add((d[s_at:s_end], pub, siglen[n], sig, pad[n]))
            if len(d) != p8_len:
                raise RuntimeError("unexpected PKCS#8 length for an EC key")
        return join(out)

    def _ec_seeded(self, start: int, stop: int) -> bytes:
        curve, n_1, digest = CURVES[self.alg], ORDERS[self.alg] - 1, SEED_DIGESTS[self.alg]
        seed, plen, derive, mac = self.seed, self.priv_len, ec.derive_private_key, hmac.digest
        tmpl, sign = self.template, self.issuer.tbs_signer()
        fmt = f"0{self.width}d"
        pad, siglen = self._pad, self._siglen
        out = []
        for i in range(start, stop):
            scalar = int.from_bytes(mac(seed, device_key_label(i), digest), "big") % n_1 + 1
            pub = derive(scalar, curve).public_key().public_bytes(_X962, _UNCOMPRESSED)
            sig = sign(tmpl.tbs(i, format(i, fmt).encode(), pub))
            n = len(sig)
            out.extend((scalar.to_bytes(plen, "big"), pub, siglen[n], sig, pad[n]))
        return b"".join(out)

    def _generic(self, i: int) -> bytes:
        if self.alg == "ed25519":
            if self.seed is None:
                key = ed25519.Ed25519PrivateKey.generate()
            else:
                key = generate_key("ed25519", seed=self.seed, label=device_key_label(i))
            private = key.private_bytes_raw()
        else:  # rsa2048, never seeded
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            p8 = key.private_bytes(_DER, _PKCS8, _NOENC)
            if len(p8) > self.priv_len - 2:
                raise RuntimeError("RSA PKCS#8 key larger than its record slot")
            private = len(p8).to_bytes(2, "big") + p8 + bytes(self.priv_len - 2 - len(p8))
        public = _public_bits(self.alg, key.public_key())
        if len(public) != self.pub_len:
            raise RuntimeError(f"{self.alg} public key of unexpected length {len(public)}")
        sig = self.issuer.sign_tbs(self.template.tbs(i, f"{i:0{self.width}d}".encode(), public))
        n = len(sig)
        return b"".join((private, public, self._siglen[n], sig, self._pad[n]))


# --- multi-core generation (fork: workers inherit the RecordMaker, and with it the issuer's key) ----------
_WORKER: dict = {}


def _work(chunk: tuple[int, int]) -> int:
    start, stop = chunk
    maker = _WORKER["maker"]
    fd = _WORKER.get("fd")
    if fd is None or _WORKER.get("pid") != os.getpid():
        fd = _WORKER["fd"] = os.open(_WORKER["path"], os.O_WRONLY)
        _WORKER["pid"] = os.getpid()
    data = maker.records(start, stop)
    view, offset = memoryview(data), start * maker.record_size
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    return stop - start


def _check_count(devices) -> int:
    if isinstance(devices, bool) or not isinstance(devices, int) or devices <= 0:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    return devices


def generate_fleet(out_dir, devices: int, *, depth: int = 2, alg: str = "p256", seed: bytes | None = None,
                   workers: int | None = None, progress: bool = True, prefix: str = DEFAULT_PREFIX,
                   san: str | None = None) -> "Fleet":
    """Generate ``devices`` identities under a fresh supply chain into ``out_dir`` and open the fleet.

    ``seed`` (bytes or str) makes the whole fleet reproducible. ``workers`` defaults to the usable CPUs.
    ``san`` ("dns", "uri" or "both") gives every device a SubjectAlternativeName with its own names.
    An existing fleet in ``out_dir`` is replaced.
    """
    devices = _check_count(devices)
    if alg not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {alg!r}; choose one of {', '.join(ALGORITHMS)}")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an integer from 0 to {MAX_DEPTH}, got {depth!r}")
    san = _check_san(san)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if seed is not None:
        seed = seed.encode("utf-8") if isinstance(seed, str) else bytes(seed)

    chain = SupplyChain.build(depth, alg, seed=seed)  # refuses rsa2048 + seed with an explanation
    width = max(MIN_WIDTH, len(str(devices - 1)))
    fleet_id = new_fleet_id(seed)
    template = Template.build(chain.issuer, alg, fleet_id, prefix, width, san)
    maker = RecordMaker(chain.issuer, alg, template, width, seed)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META_FILE
    meta_path.unlink(missing_ok=True)  # a half-written directory must not open as a fleet
    data_path = out / DATA_FILE
    with open(data_path, "wb") as f:
        f.truncate(devices * maker.record_size)

    from tqdm import tqdm

    chunk = max(1, min(CHUNK, math.ceil(devices / (workers * 4))))
    chunks = [(s, min(s + chunk, devices)) for s in range(0, devices, chunk)]
    bar = tqdm(total=devices, unit="dev", unit_scale=True, file=sys.stderr, disable=not progress,
               desc=f"fleet {alg}", smoothing=0.1)
    _WORKER.clear()
    _WORKER.update(maker=maker, path=str(data_path))
    try:
        if workers == 1 or len(chunks) == 1:
            for c in chunks:
                bar.update(_work(c))
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(min(workers, len(chunks))) as pool:
                for done in pool.imap_unordered(_work, chunks):
                    bar.update(done)
    finally:
        bar.close()
        fd = _WORKER.pop("fd", None)
        if fd is not None:
            os.close(fd)
        _WORKER.clear()

    keys = out / KEY_DIR
    keys.mkdir(exist_ok=True)
    key_files = {}
    for custodian in [chain.company, *chain.custodians]:
        name = f"{custodian.name}.pem"
        path = keys / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(custodian.private_key_pem())
        key_files[custodian.name] = f"{KEY_DIR}/{name}"

    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode("ascii")  # noqa: E731
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "alg": alg,
        "ca_alg": chain.company.algorithm,
        "depth": depth,
        "count": devices,
        "seed": None if seed is None else seed.hex(),
        "fleet_id": fleet_id.hex(),
        "id_prefix": prefix,
        "id_width": width,
        "san": san,
        "record_size": maker.record_size,
        "layout": dict(zip(("private", "public", "signature", "signature_length"), _LAYOUTS[alg])),
        "template": template.to_json(),
        "custodians": [c.name for c in [chain.company, *chain.custodians]],
        "issuer": chain.issuer.name,
        "key_files": key_files,
        "intermediates": [pem(c) for c in chain.intermediates()],
        "ca_certificate": pem(chain.company.certificate),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, meta_path)
    return Fleet.open(out)


# --- reading a fleet --------------------------------------------------------------------------------------
class DeviceIdentity:
    """One device of a fleet. The private key and certificate are built on first use."""

    __slots__ = ("_fleet", "index", "device_id", "_record", "_key", "_cert_der")

    def __init__(self, fleet: "Fleet", index: int, record: bytes):
        self._fleet = fleet
        self.index = index
        self.device_id = f"{fleet.id_prefix}{index:0{fleet.id_width}d}"
        self._record = record
        self._key = None
        self._cert_der = None

    @property
    def public_bytes(self) -> bytes:
        f = self._fleet
        return self._record[f._priv_len:f._priv_len + f._pub_len]

    @property
    def private_key(self):
        if self._key is None:
            self._key = self._fleet._load_key(self._record)
        return self._key

    @property
    def certificate_der(self) -> bytes:
        if self._cert_der is None:
            f, rec = self._fleet, self._record
            n = int.from_bytes(rec[f._siglen_at:f._sig_at], "big")
            signature = rec[f._sig_at:f._sig_at + n]
            self._cert_der = f._template.certificate(self.index, self.device_id[-f.id_width:].encode("ascii"),
                                                     self.public_bytes, signature)
        return self._cert_der

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)

    def chain_der(self) -> list[bytes]:
        """Leaf first, then the intermediates (nearest issuer first)."""
        return [self.certificate_der, *self._fleet._intermediates_der]

    def chain_pem(self) -> bytes:
        """A PEM bundle, leaf first."""
        return pem_certificate(self.certificate_der) + self._fleet._intermediates_pem

    def sign(self, challenge: bytes) -> bytes:
        """Proof of possession over ``challenge`` (:func:`hubsim.algorithms.sign`)."""
        return _pop_sign(self.private_key, challenge)

    def __repr__(self) -> str:
        return f"DeviceIdentity({self.device_id!r})"


class Fleet:
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
        self._priv_len, self._pub_len, sig_max, siglen_bytes = _LAYOUTS[self.alg]
        self._siglen_at = self._priv_len + self._pub_len
        self._sig_at = self._siglen_at + siglen_bytes
        self.ca_certificate: x509.Certificate = x509.load_pem_x509_certificate(meta["ca_certificate"].encode())
        self.intermediates: list[x509.Certificate] = [x509.load_pem_x509_certificate(p.encode())
                                                      for p in meta["intermediates"]]
        self._intermediates_der = [c.public_bytes(_DER) for c in self.intermediates]
        self._intermediates_pem = "".join(meta["intermediates"]).encode("ascii")
        self._curve = CURVES.get(self.alg)

    @classmethod
    def open(cls, path) -> "Fleet":
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
        if meta.get("version") != VERSION:
            raise ValueError(f"{meta_path} has fleet format version {meta.get('version')}, expected {VERSION}")
        if meta.get("alg") not in _LAYOUTS or meta.get("record_size") != record_size(meta["alg"]):
            raise ValueError(f"{meta_path} names an unknown algorithm or record layout")
        data_path = path / DATA_FILE
        expected = meta["count"] * meta["record_size"]
        try:
            size = data_path.stat().st_size
        except FileNotFoundError:
            raise ValueError(f"{path} is not a complete fleet: {DATA_FILE} is missing") from None
        if size != expected:
            raise ValueError(f"{data_path} holds {size} bytes but {meta['count']} devices need {expected}: "
                             "the file is truncated or belongs to another fleet; generate the fleet again")
        f = open(data_path, "rb")
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except Exception:
            f.close()
            raise
        return cls(path, meta, f, mm)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"Fleet({str(self.path)!r}, {self.count} x {self.alg}, depth {self.depth})"

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._file.close()
            self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def issuer_certificate(self) -> x509.Certificate:
        """The certificate that signs device certificates (nearest intermediate, or the CA at depth 0)."""
        return self.intermediates[0] if self.intermediates else self.ca_certificate

    def device_id(self, index: int) -> str:
        return f"{self.id_prefix}{index:0{self.id_width}d}"

    def identity(self, index: int) -> DeviceIdentity:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"device index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.count:
            raise IndexError(f"device index {index} out of range for a fleet of {self.count}")
        if self._mm is None:
            raise ValueError("the fleet is closed")
        at = index * self.record_size
        return DeviceIdentity(self, index, self._mm[at:at + self.record_size])

    def _load_key(self, record: bytes):
        p = self._priv_len
        if self._curve is not None:
            half = (self._pub_len - 1) // 2
            pub = record[p:p + self._pub_len]
            public = ec.EllipticCurvePublicNumbers(int.from_bytes(pub[1:1 + half], "big"),
                                                   int.from_bytes(pub[1 + half:], "big"), self._curve)
            return ec.EllipticCurvePrivateNumbers(int.from_bytes(record[:p], "big"), public).private_key()
        if self.alg == "ed25519":
            return ed25519.Ed25519PrivateKey.from_private_bytes(record[:p])
        n = int.from_bytes(record[:2], "big")
        return serialization.load_der_private_key(record[2:2 + n], None)

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


# --- command line -----------------------------------------------------------------------------------------
def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=integer(1), required=True, metavar="N",
                        help="number of device identities, at least 1")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="fleet directory to write; it must be empty or missing unless --force")
    parser.add_argument("--force", action="store_true",
                        help="write into DIR even when it holds a fleet or other files (an old fleet is replaced)")
    parser.add_argument("--depth", type=integer(0, MAX_DEPTH), default=2, metavar="K",
                        help=f"custodian intermediates below Company-X, 0..{MAX_DEPTH} (default 2)")
    parser.add_argument("--alg", choices=ALGORITHMS, default="p256", metavar="ALG",
                        help="device key algorithm: %(choices)s (default p256)")
    parser.add_argument("--san", choices=SAN_KINDS, default=None, metavar="KIND",
                        help="give each device a SubjectAlternativeName with its own DNS name "
                             f"(<id>{SAN_DNS_SUFFIX}), URI ({SAN_URI_PREFIX}<id>) or both: %(choices)s "
                             "(default: none, the device id is only the CN)")
    parser.add_argument("--seed", default=None, metavar="S",
                        help="make the fleet reproducible from this text (not with --alg rsa2048)")
    parser.add_argument("--workers", type=integer(1), default=None, metavar="W",
                        help="processes, at least 1 (default: all CPUs)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _refused(message: str) -> int:
    print(f"certstorm fleet: error: {message}", file=sys.stderr)
    return 2


def fleet_command(args: argparse.Namespace) -> int:
    """Refuses to write into a directory that holds anything without ``--force``: an old fleet there would
    be replaced, whatever its size."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _refused(f"argument --out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        what = "a fleet" if (out / META_FILE).exists() else "files"
        return _refused(f"argument --out: {out} already holds {what}; choose an empty or new directory, "
                        "or add --force to write over it")
    if args.seed is not None and args.alg == "rsa2048":
        return _refused("argument --seed: rsa2048 keys cannot be derived from a seed; leave out --seed or "
                        "choose --alg p256, p384 or ed25519")
    started = time.perf_counter()
    try:
        fleet = generate_fleet(args.out, args.devices, depth=args.depth, alg=args.alg, seed=args.seed,
                               workers=args.workers, progress=getattr(args, "progress", True),
                               san=getattr(args, "san", None))
    except ValueError as exc:
        return _refused(str(exc))
    seconds = time.perf_counter() - started
    n = len(fleet)
    on_disk = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"fleet: {n} devices ({fleet.alg}, depth {fleet.depth}) in {seconds:.1f} s = "
          f"{n / seconds:,.0f} devices/s, {fleet.record_size} bytes per device record "
          f"({on_disk / n:.1f} on disk) -> {args.out}")
    fleet.close()
    return 0
