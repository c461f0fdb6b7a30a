"""Fleet generation on every core: device keys made and certificates spliced and signed by the issuing
custodian, written as fixed-size records (:mod:`devicekit.fleet.layout`).

Seeded fleets are deterministic: the chain comes from :meth:`SupplyChain.build` with the seed, device keys
derive from HMAC(seed, ``device_key_label(index)``), signatures are RFC 6979, so two generations write
byte-identical ``devices.bin`` files whatever the number of workers. ``bench/bench_fleet.py`` measures
generation against the keygen + sign floor (docs/design.md).
"""

from __future__ import annotations

import datetime as _dt
import hmac
import json
import math
import multiprocessing
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from devicekit.fleet.layout import (
    CA_FILE,
    CHAIN_FILE,
    DATA_FILE,
    DEFAULT_PREFIX,
    DER,
    FORMAT,
    INDEX,
    KEY_DIR,
    LAYOUTS,
    META_FILE,
    MIN_WIDTH,
    NOENC,
    PKCS8,
    UNCOMPRESSED,
    VERSION,
    X962,
    device_key_label,
    record_size,
    sha1_digest,
)
from devicekit.fleet.reader import Fleet
from devicekit.fleet.template import Template, check_san, new_fleet_id, public_bits
from devicekit.pki import ALGORITHMS, CURVES, MAX_DEPTH, ORDERS, SEED_DIGESTS, SupplyChain, generate_key

__all__ = ["RecordMaker", "generate_fleet"]

CHUNK = 2000  # devices per work unit: a fraction of a second (docs/design.md), for a smooth progress bar


class RecordMaker:
    """Makes device records ``[start, stop)``: the one code path that both generate_fleet and the
    benchmark run. Holds the issuing custodian (the only key that signs device certificates)."""

    def __init__(self, issuer, alg: str, template: Template, width: int, seed: bytes | None):
        self.issuer = issuer
        self.alg = alg
        self.template = template
        self.width = width
        self.seed = seed
        self.priv_len, self.pub_len, self.sig_max, self.siglen_bytes = LAYOUTS[alg]
        self.record_size = record_size(alg)
        # pad[n] completes an n-byte signature to its slot; siglen[n] encodes n.
        self._pad = [bytes(self.sig_max - n) for n in range(self.sig_max + 1)]
        self._siglen = [n.to_bytes(self.siglen_bytes, "big") for n in range(self.sig_max + 1)]
        if alg in CURVES:
            probe = ec.generate_private_key(CURVES[alg])
            p8 = probe.private_bytes(DER, PKCS8, NOENC)
            scalar = probe.private_numbers().private_value.to_bytes(self.priv_len, "big")
            point = probe.public_key().public_bytes(X962, UNCOMPRESSED)
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
        der, p8, noenc = DER, PKCS8, NOENC
        tmpl = self.template
        plain = tmpl.fields == Template.FIELDS  # no SAN: the pieces are joined inline, the hottest shape
        p0, p1, p2, p3, p4 = tmpl.pieces if plain else (b"",) * 5
        sign = self.issuer.tbs_signer()
        sha1, join, pack, width = sha1_digest, b"".join, INDEX.pack, self.width
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
            pub = derive(scalar, curve).public_key().public_bytes(X962, UNCOMPRESSED)
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
            p8 = key.private_bytes(DER, PKCS8, NOENC)
            if len(p8) > self.priv_len - 2:
                raise RuntimeError("RSA PKCS#8 key larger than its record slot")
            private = len(p8).to_bytes(2, "big") + p8 + bytes(self.priv_len - 2 - len(p8))
        public = public_bits(self.alg, key.public_key())
        if len(public) != self.pub_len:
            raise RuntimeError(f"{self.alg} public key of unexpected length {len(public)}")
        sig = self.issuer.sign_tbs(self.template.tbs(i, f"{i:0{self.width}d}".encode(), public))
        n = len(sig)
        return b"".join((private, public, self._siglen[n], sig, self._pad[n]))


# Multi-core generation forks: workers inherit the RecordMaker, and with it the issuer's key.
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


def generate_fleet(
    out_dir,
    devices: int,
    *,
    depth: int = 2,
    alg: str = "p256",
    seed: bytes | None = None,
    workers: int | None = None,
    progress: bool = True,
    prefix: str = DEFAULT_PREFIX,
    san: str | None = None,
) -> Fleet:
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
    san = check_san(san)
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
    bar = tqdm(
        total=devices,
        unit="dev",
        unit_scale=True,
        file=sys.stderr,
        disable=not progress,
        desc=f"fleet {alg}",
        smoothing=0.1,
    )
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
    # what a broker needs to admit the fleet: the registered CA, and the intermediates a device presents
    (out / CA_FILE).write_text(pem(chain.company.certificate))
    (out / CHAIN_FILE).write_text("".join(pem(c) for c in chain.intermediates()))
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
        "layout": dict(zip(("private", "public", "signature", "signature_length"), LAYOUTS[alg])),
        "template": template.to_json(),
        "custodians": [c.name for c in [chain.company, *chain.custodians]],
        "issuer": chain.issuer.name,
        "key_files": key_files,
        "intermediates": [pem(c) for c in chain.intermediates()],
        "ca_certificate": pem(chain.company.certificate),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, meta_path)
    return Fleet.open(out)
