"""The hub over HTTP: one authentication round trip on loopback, and the hub's own CPU per
authentication against the two-verify floor (issue: hub CPU per authentication <= 2x the floor).

The hub runs as one worker pinned to one core and this process (the client) to another where there are
two or more, so the client's speed does not change the hub's CPU accounting, which comes from /proc for
the worker.
"""

from __future__ import annotations

import http.client

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from bench.measure import bench_cores, raw_verify_on_core
from certstorm.processes import cpu_seconds
from devicekit.fleet import generate_fleet
from devicekit.httpdevice import authenticate, authenticate_all, register_and_prove
from hubsim import sign

DEVICES = 1800
CORES = bench_cores()  # (hub's core, client's core), or None on one core


@pytest.fixture(scope="module")
def hub(pinned_hub):
    return pinned_hub


@pytest.fixture(scope="module")
def fleet_and_conn(hub, tmp_path_factory):
    fleet = generate_fleet(tmp_path_factory.mktemp("fleet"), DEVICES + 10, progress=False)
    register_and_prove(hub, fleet.custodian())
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    authenticate(conn, fleet.identity(0))  # the first sight of the intermediates
    yield fleet, conn
    conn.close()


def test_http_authentication_round_trip(benchmark, calibration, fleet_and_conn):
    fleet, conn = fleet_and_conn
    idents = iter(range(1, DEVICES))

    def setup():
        return (conn, fleet.identity(next(idents))), {}

    result = benchmark.pedantic(authenticate, setup=setup, rounds=300, iterations=1)
    assert result["first_connection"]
    calibration.record(benchmark)


class SanDevice:
    """A device whose certificate carries its own SubjectAlternativeName (DNS name and URI), the common
    shape of real fleets, made with cryptography's builder under the fleet's issuing custodian: nothing
    from the fleet's template."""

    def __init__(self, fleet, issuer_key, index: int):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        issuer = fleet.issuer_certificate
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = f"san-device-{index:06d}"
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(issuer.not_valid_before_utc)
            .not_valid_after(issuer.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(f"{name}.devices.example.com"), x509.UniformResourceIdentifier(f"urn:dev:{name}")]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        self._pem = cert.public_bytes(Encoding.PEM) + b"".join(
            c.public_bytes(Encoding.PEM) for c in fleet.intermediates
        )

    def chain_pem(self) -> bytes:
        return self._pem

    def sign(self, challenge: bytes) -> bytes:
        return sign(self.key, challenge)


@pytest.mark.parametrize("shape", ["cn-only", "per-device-san", "reconnect"])
def test_hub_cpu_per_authentication(benchmark, calibration, hub, fleet_and_conn, shape):
    """Hub worker CPU over a fixed number of authentications, from the worker's own accounting: first
    connections of the fleet's CN-only devices, of devices with per-device SANs, and reconnects of
    devices admitted before (the device cache)."""
    fleet, _conn = fleet_and_conn
    pids = hub.healthz()["workers"]
    count = 800
    if shape == "cn-only":
        identities = [fleet.identity(i) for i in range(DEVICES - count, DEVICES)]
    elif shape == "per-device-san":
        issuer_key = fleet.custodian_key(fleet.issuer_certificate.subject.rfc4514_string()[3:])
        identities = [SanDevice(fleet, issuer_key, i) for i in range(count)]
        authenticate_all(
            hub.host, hub.port, identities[:1]
        )  # first sight of this shape: no different from any other device
        identities = [*identities[1:], SanDevice(fleet, issuer_key, count)]
    else:
        identities = [fleet.identity(i) for i in range(1, 1 + count)]
        authenticate_all(
            hub.host, hub.port, identities
        )  # admitted once (some already were), so every timed one is a reconnect
    hub_core = CORES[0] if CORES is not None else None
    floors = [raw_verify_on_core(hub_core)]

    def run():
        before = cpu_seconds(pids)
        authenticate_all(hub.host, hub.port, identities)
        return cpu_seconds(pids) - before

    spent = benchmark.pedantic(run, rounds=1, iterations=1)
    floors.append(raw_verify_on_core(hub_core))
    per_auth = spent / count
    verify = sum(floors) / 2  # before and after, on the hub's core
    floor = 2 * verify
    benchmark.extra_info.update(
        shape=shape,
        hub_cpu_us_per_auth=round(per_auth * 1e6, 1),
        floor_us=round(floor * 1e6, 1),
        floor_multiple=round(per_auth / floor, 3),
        authentications=count,
        hub_core_verify_us=[round(f * 1e6, 1) for f in floors],
        operations_per_round=count,
        cpu_seconds_per_operation=per_auth,
        cpu_verify_seconds=verify,
        verifies=round(per_auth / verify, 4),
        verifies_min=round(per_auth / verify, 4),
    )
    print(
        f"\nhub CPU per authentication ({shape}): {per_auth * 1e6:.0f} µs = {per_auth / floor:.2f}x the "
        f"two-verify floor measured on the hub's core ({floor * 1e6:.0f} µs)"
    )
