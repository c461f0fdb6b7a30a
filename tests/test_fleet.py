"""Fleets: refusals first, then the splice-equals-builder proof, the store, determinism and scale shape."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certstorm.fleet import add_fleet_arguments, fleet_command
from devicekit.fleet import (
    DATA_FILE,
    META_FILE,
    Fleet,
    RecordMaker,
    Template,
    device_key_label,
    generate_fleet,
    new_fleet_id,
    record_size,
    san_names,
)
from devicekit.pki import SupplyChain, generate_key
from hubsim import verify_signature

DER = serialization.Encoding.DER
_FLEETS: dict = {}


def fleet(tmp_path_factory, alg: str, count: int = 200, seed=None, workers: int = 2) -> Fleet:
    """Shared small fleets (generation dominates the run time of this file)."""
    key = (alg, count, seed, workers)
    if key not in _FLEETS:
        out = tmp_path_factory.mktemp(f"fleet-{alg}")
        _FLEETS[key] = generate_fleet(out, count, alg=alg, seed=seed, workers=workers, progress=False)
    return _FLEETS[key]


# --- refusals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("devices", [0, -5, 1.5, True, "10"])
def test_bad_device_count_refused(tmp_path, devices):
    with pytest.raises(ValueError, match="devices must be a positive integer"):
        generate_fleet(tmp_path, devices, progress=False)
    assert not (tmp_path / META_FILE).exists()


def test_bad_depth_algorithm_workers_and_rsa_seed_refused(tmp_path):
    with pytest.raises(ValueError, match="depth must be an integer from 0 to 5"):
        generate_fleet(tmp_path, 5, depth=6, progress=False)
    with pytest.raises(ValueError, match="unknown algorithm"):
        generate_fleet(tmp_path, 5, alg="dsa", progress=False)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        generate_fleet(tmp_path, 5, workers=0, progress=False)
    with pytest.raises(ValueError, match="cannot be derived from a seed"):
        generate_fleet(tmp_path, 5, alg="rsa2048", seed=b"s", progress=False)


def test_index_out_of_range_refused(tmp_path_factory):
    f = fleet(tmp_path_factory, "p256")
    for bad in (-1, len(f), 10**9):
        with pytest.raises(IndexError, match="out of range"):
            f.identity(bad)
    with pytest.raises(TypeError):
        f.identity("3")


def test_opening_a_non_fleet_directory_refused(tmp_path):
    with pytest.raises(ValueError, match="not a certstorm fleet"):
        Fleet.open(tmp_path)
    (tmp_path / META_FILE).write_text('{"hello": "world"}')
    with pytest.raises(ValueError, match="not certstorm fleet metadata"):
        Fleet.open(tmp_path)
    (tmp_path / META_FILE).write_text("not json")
    with pytest.raises(ValueError, match="not readable"):
        Fleet.open(tmp_path)


def test_truncated_or_missing_devices_file_refused(tmp_path):
    generate_fleet(tmp_path, 10, workers=1, progress=False).close()
    data = tmp_path / DATA_FILE
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size - 1)
    with pytest.raises(ValueError, match="truncated"):
        Fleet.open(tmp_path)
    data.unlink()
    with pytest.raises(ValueError, match="missing"):
        Fleet.open(tmp_path)


def test_unknown_custodian_key_refused(tmp_path_factory):
    with pytest.raises(KeyError, match="no key for custodian"):
        fleet(tmp_path_factory, "p256").custodian_key("Mallory")


# --- the splice is CertificateBuilder, byte for byte -----------------------------------------------------
@pytest.mark.parametrize("alg", ["p256", "p384", "ed25519"])
def test_spliced_certificate_equals_certificate_builder(alg):
    seed = b"splice"
    chain = SupplyChain.build(2, alg, seed=seed)
    fleet_id, width = new_fleet_id(seed), 7
    template = Template.build(chain.issuer, alg, fleet_id, "device-", width)
    maker = RecordMaker(chain.issuer, alg, template, width, seed)
    raw = maker.records(40, 43)
    for n, index in enumerate(range(40, 43)):
        rec = raw[n * maker.record_size : (n + 1) * maker.record_size]
        key = generate_key(alg, seed=seed, label=device_key_label(index))
        public = key.public_key()
        device_id = f"device-{index:07d}"
        reference = chain.issuer.sign_device(
            device_id, public, serial=int.from_bytes(fleet_id + index.to_bytes(8, "big"), "big")
        )
        p, q = maker.priv_len, maker.priv_len + maker.pub_len
        sig_len = rec[q]
        spliced = template.certificate(index, f"{index:07d}".encode(), rec[p:q], rec[q + 1 : q + 1 + sig_len])
        assert spliced == reference.public_bytes(DER)
        cert = x509.load_der_x509_certificate(spliced)
        cert.verify_directly_issued_by(chain.issuer.certificate)
        assert cert.public_key() == public


@pytest.mark.parametrize(
    "alg,san", [("p256", "dns"), ("p256", "uri"), ("p256", "both"), ("ed25519", "both"), ("p384", "dns")]
)
def test_spliced_san_certificate_equals_certificate_builder(alg, san):
    """A per-device SAN holds the id digits a second (and third) time; splicing them there keeps every DER
    length, so the certificate is still exactly what CertificateBuilder makes for the same fields."""
    seed = b"splice-san"
    chain = SupplyChain.build(1, alg, seed=seed)
    fleet_id, width = new_fleet_id(seed), 6
    template = Template.build(chain.issuer, alg, fleet_id, "device-", width, san)
    assert template.fields.count("digits") == 1 + len(san_names(san, "x"))
    maker = RecordMaker(chain.issuer, alg, template, width, seed)
    raw = maker.records(7, 10)
    for n, index in enumerate(range(7, 10)):
        rec = raw[n * maker.record_size : (n + 1) * maker.record_size]
        public = generate_key(alg, seed=seed, label=device_key_label(index)).public_key()
        device_id = f"device-{index:06d}"
        reference = chain.issuer.sign_device(
            device_id,
            public,
            san=san_names(san, device_id),
            serial=int.from_bytes(fleet_id + index.to_bytes(8, "big"), "big"),
        )
        p, q = maker.priv_len, maker.priv_len + maker.pub_len
        spliced = template.certificate(index, f"{index:06d}".encode(), rec[p:q], rec[q + 1 : q + 1 + rec[q]])
        assert spliced == reference.public_bytes(DER)
        names = (
            x509.load_der_x509_certificate(spliced)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
        assert [name.value for name in names] == [name.value for name in san_names(san, device_id)]
        assert device_id in names[0].value


def test_san_fleet_identities_carry_their_own_names(tmp_path):
    f = generate_fleet(tmp_path, 30, depth=1, workers=2, san="both", progress=False)  # unseeded: the hot loop
    reopened = Fleet.open(tmp_path)
    assert reopened.san == "both"
    for index in (0, 13, 29):
        ident = reopened.identity(index)
        cert = ident.certificate
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [n.value for n in san] == [
            f"{ident.device_id}.devices.example",
            f"urn:certstorm:device:{ident.device_id}",
        ]
        cert.verify_directly_issued_by(f.issuer_certificate)
        assert cert.public_key() == ident.private_key.public_key()


def test_unknown_san_kind_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown SAN kind 'ip'; choose one of dns, uri, both"):
        generate_fleet(tmp_path, 3, san="ip", progress=False)
    assert not (tmp_path / META_FILE).exists()
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--devices", "3", "--out", str(tmp_path), "--san", "ip"])
    assert exit.value.code == 2
    assert "argument --san: invalid choice: 'ip'" in capsys.readouterr().err


def test_a_template_with_unknown_fields_is_refused():
    with pytest.raises(ValueError, match="a fleet template splices"):
        Template([b""] * 5, {}, b"", ("serial", "digits", "public", "colour"))


def test_san_fleet_devices_take_the_warm_path(tmp_path):
    """The hub judges each device certificate itself and caches only the path above it: devices whose
    SAN differs per device are admitted warm after the first sight of their issuer."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from hubsim import AuthEngine, sign

    f = generate_fleet(tmp_path, 6, depth=2, san="both", workers=1, progress=False)
    engine = AuthEngine(secret=b"s" * 32, clock=time.time, random=os.urandom)
    company = f.custodian()
    record = engine.register_ca(company.certificate.public_bytes(Encoding.DER))
    engine.verify_ca(record.id, signature=company.sign_code(record.verification_code))
    warm = []
    for index in range(6):
        ident = f.identity(index)
        challenge = engine.begin(ident.chain_der())
        warm.append(challenge.warm)
        assert engine.complete(challenge.token, sign(ident.private_key, challenge.token)).device_id == ident.device_id
    assert warm == [False] + [True] * 5
    assert engine.stats()["warm"] == 5


def test_unseeded_splice_matches_builder_tbs(tmp_path_factory):
    f = fleet(tmp_path_factory, "p256")
    ident = f.identity(17)
    cert = ident.certificate
    # Same fields through the builder give the same TBS (signatures differ: random nonces).
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    rebuilt = builder.sign(f.custodian_key("Technician-Z"), hashes.SHA256())
    assert rebuilt.tbs_certificate_bytes == cert.tbs_certificate_bytes


# --- the store -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg,count", [("p256", 200), ("p384", 200), ("ed25519", 200), ("rsa2048", 3)])
def test_identity_round_trip(tmp_path_factory, alg, count):
    f = fleet(tmp_path_factory, alg, count)
    reopened = Fleet.open(f.path)
    assert len(reopened) == count and reopened.alg == alg and reopened.depth == 2
    assert reopened.record_size == record_size(alg)
    issuer = reopened.issuer_certificate
    indices = sorted({0, 1, count // 2, count - 1})
    for i in indices:
        ident = reopened.identity(i)
        cert = x509.load_der_x509_certificate(ident.certificate_der)
        cert.verify_directly_issued_by(issuer)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == ident.device_id == f"device-{i:06d}"
        assert cert.public_key() == ident.private_key.public_key()
        assert verify_signature(cert.public_key(), ident.sign(b"nonce"), b"nonce")
        ders = ident.chain_der()
        assert ders[0] == ident.certificate_der
        assert [x509.load_der_x509_certificate(d) for d in ders[1:]] == reopened.intermediates
        pems = x509.load_pem_x509_certificates(ident.chain_pem())
        assert pems == [cert, *reopened.intermediates]
    # intermediates are nearest first and chain up to the registered CA
    certs = [issuer, *reopened.intermediates[1:], reopened.ca_certificate]
    for child, parent in itertools.pairwise(certs):
        child.verify_directly_issued_by(parent)
    reopened.close()


def test_custodian_keys_match_their_certificates(tmp_path_factory):
    f = fleet(tmp_path_factory, "p256")
    assert f.custodian_names == ["Company-X", "Factory-Y", "Technician-Z"]
    assert f.custodian_key("Company-X").public_key() == f.ca_certificate.public_key()
    assert f.custodian_key("Technician-Z").public_key() == f.intermediates[0].public_key()
    assert f.custodian_key("Factory-Y").public_key() == f.intermediates[1].public_key()
    for rel in f.meta["key_files"].values():
        assert (f.path / rel).stat().st_mode & 0o077 == 0


def test_all_device_ids_and_keys_distinct(tmp_path_factory):
    f = fleet(tmp_path_factory, "p256")
    raw = (f.path / DATA_FILE).read_bytes()
    records = [raw[i : i + f.record_size] for i in range(0, len(raw), f.record_size)]
    assert len(records) == len(f) == 200
    assert len({r[:32] for r in records}) == 200  # private scalars, across both worker processes
    assert len({r[32:97] for r in records}) == 200
    assert len({f.identity(i).device_id for i in range(len(f))}) == 200
    serials = {f.identity(i).certificate.serial_number for i in range(0, 200, 7)}
    assert len(serials) == len(range(0, 200, 7))


def test_p256_record_is_compact(tmp_path_factory):
    f = fleet(tmp_path_factory, "p256")
    assert f.record_size == 170 <= 400
    assert (f.path / DATA_FILE).stat().st_size == 170 * len(f)


def test_open_is_lazy_and_identity_is_o1(tmp_path_factory):
    f = fleet(tmp_path_factory, "p256")
    reopened = Fleet.open(f.path)
    # Opening maps the file; it never reads devices.bin through Python file reads.
    assert len(reopened._mm) == (f.path / DATA_FILE).stat().st_size
    ident = reopened.identity(199)
    assert ident._key is None and ident._cert_der is None  # built lazily
    assert len(ident._record) == reopened.record_size
    reopened.close()


# --- determinism -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["p256", "ed25519"])
def test_seeded_fleets_are_byte_identical(tmp_path, alg):
    a = generate_fleet(tmp_path / "a", 60, alg=alg, seed=b"fleet-seed", workers=2, progress=False)
    b = generate_fleet(tmp_path / "b", 60, alg=alg, seed=b"fleet-seed", workers=1, progress=False)
    c = generate_fleet(tmp_path / "c", 60, alg=alg, seed=b"other-seed", workers=1, progress=False)
    data = [(x.path / DATA_FILE).read_bytes() for x in (a, b, c)]
    assert data[0] == data[1] != data[2]
    assert a.ca_certificate == b.ca_certificate != c.ca_certificate
    assert a.identity(59).certificate_der == b.identity(59).certificate_der
    key = generate_key(alg, seed=b"fleet-seed", label=device_key_label(59))
    assert key.public_key() == a.identity(59).private_key.public_key()


def test_unseeded_fleets_differ(tmp_path):
    a = generate_fleet(tmp_path / "a", 5, workers=1, progress=False)
    b = generate_fleet(tmp_path / "b", 5, workers=1, progress=False)
    assert (a.path / DATA_FILE).read_bytes() != (b.path / DATA_FILE).read_bytes()


def test_regeneration_replaces_the_fleet(tmp_path):
    generate_fleet(tmp_path, 8, workers=1, progress=False).close()
    f = generate_fleet(tmp_path, 3, workers=1, progress=False)
    assert len(Fleet.open(tmp_path)) == 3 == len(f)


def test_metadata_is_self_describing(tmp_path_factory):
    f = fleet(tmp_path_factory, "p256")
    meta = json.loads((f.path / META_FILE).read_text())
    assert meta["template"]["fields"] == list(Template.FIELDS) and meta["san"] is None
    for field in (
        "alg",
        "depth",
        "count",
        "seed",
        "id_prefix",
        "id_width",
        "record_size",
        "template",
        "intermediates",
        "ca_certificate",
        "created",
        "key_files",
    ):
        assert field in meta
    assert meta["seed"] is None


# --- command line ----------------------------------------------------------------------------------------
def test_fleet_command(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
    args = parser.parse_args(
        [
            "--devices",
            "20",
            "--out",
            str(tmp_path),
            "--depth",
            "1",
            "--alg",
            "p384",
            "--seed",
            "abc",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert fleet_command(args) == 0
    out = capsys.readouterr().out
    assert "20 devices" in out and "devices/s" in out and "250 bytes per device" in out
    f = Fleet.open(tmp_path)
    assert (f.alg, f.depth, f.seed) == ("p384", 1, b"abc")


def test_fleet_command_reports_bad_input(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--devices", "0", "--out", str(tmp_path), "--no-progress"])
    assert exit.value.code == 2
    assert "argument --devices: must be an integer of at least 1, got '0'" in capsys.readouterr().err


# --- the derived-fleet cache ----------------------------------------------------------------------------------
def test_derived_fleet_is_made_once_and_waits_for_a_process_holding_the_lock(tmp_path):
    from filelock import FileLock

    from devicekit.fleet import cache_key, derive_fleet

    target = tmp_path / cache_key("s", 5, "p256", 1, "")
    # another process holds the lock: it is deriving the same fleet
    with FileLock(target.with_suffix(".lock")), pytest.raises(TimeoutError, match="waited 0 s for another process"):
        derive_fleet(5, alg="p256", depth=1, seed="s", cache_dir=str(tmp_path), timeout=0.3)
    assert not target.exists()
    said = []
    fleet = derive_fleet(5, alg="p256", depth=1, seed="s", cache_dir=str(tmp_path), log=said.append)
    assert len(fleet) == 5 and len(said) == 2
    again = derive_fleet(5, alg="p256", depth=1, seed="s", cache_dir=str(tmp_path), log=said.append)
    assert again.identity(4).certificate_der == fleet.identity(4).certificate_der and len(said) == 2


def test_derived_fleet_with_san_is_its_own_fleet(tmp_path):
    from devicekit.fleet import derive_fleet

    plain = derive_fleet(4, depth=1, seed="s", cache_dir=str(tmp_path))
    named = derive_fleet(4, depth=1, seed="s", cache_dir=str(tmp_path), san="uri")
    assert plain.path != named.path and (plain.san, named.san) == (None, "uri")
    uri = named.identity(3).certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.value for n in uri] == [f"urn:certstorm:device:{named.identity(3).device_id}"]
    assert derive_fleet(4, depth=1, seed="s", cache_dir=str(tmp_path), san="uri").path == named.path  # cached
