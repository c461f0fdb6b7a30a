"""Device and network profiles: how long a device takes to sign, and how long each of its exchanges with the
hub waits on the network, drawn per device from distributions taken from public datasheets and measurements
(docs/profiles.md cites each one).

A profile is a mix of device classes and a mix of networks, e.g. ``secure-element:70,tpm:30`` over
``lte-m``. Each device keeps one class and one network for the whole run, chosen from its index so that every
process and every run agree (a low-discrepancy sequence: the shares of a fleet of any size match the mix
within one device). The swarm waits what it draws -- with ``gevent.sleep``, so the generator's CPU does not
pay for it -- and the storm simulator draws from the same distributions.

Where the waits fall, per attempt (the hub sees each exchange as soon as it is sent; the device waits the
round trip before it reads the reply):

* HTTP two-step: round trip, challenge; signing; round trip, proof. A throttled challenge ends the attempt
  after the first round trip. The hub holds a challenge for a round trip plus the signing time.
* MQTT over mutual TLS: round trip, TCP connect; round trip, the server's flight; signing (the
  CertificateVerify); the client's flight and CONNECT; round trip, CONNACK. The hub holds a handshake for a
  round trip plus the signing time, and decides (admits or throttles) at CONNECT.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist

import numpy as np

from hubsim.argtypes import checked

__all__ = [
    "DEVICE_CLASSES",
    "NETWORKS",
    "Latency",
    "Mix",
    "Profile",
    "device_profile",
    "network_profile",
    "parse_mix",
]

_PHI = (math.sqrt(5) - 1) / 2  # the golden ratio's fractional part: the Weyl sequence i * phi mod 1


@dataclass(frozen=True)
class Latency:
    """A latency distribution in seconds: ``zero``, ``uniform`` on [a, b], ``loguniform`` on [a, b], or
    ``lognormal`` with median ``a`` and ``b`` at quantile ``q``."""

    kind: str
    a: float = 0.0
    b: float = 0.0
    q: float = 0.5

    @cached_property  # drawn from on every attempt: worked out once per distribution
    def sigma(self) -> float:
        return math.log(self.b / self.a) / NormalDist().inv_cdf(self.q)

    @cached_property
    def _log_bounds(self) -> tuple[float, float]:
        return math.log(self.a), math.log(self.b)

    @property
    def mean(self) -> float:
        if self.kind == "zero":
            return 0.0
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "loguniform":
            return (self.b - self.a) / math.log(self.b / self.a)
        return self.a * math.exp(self.sigma**2 / 2)

    def draw(self, rng: random.Random) -> float:
        """One latency (the swarm's per-attempt draw; Python's random, no array overhead)."""
        if self.kind == "zero":
            return 0.0
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(*self._log_bounds))
        return rng.lognormvariate(self._log_bounds[0], self.sigma)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` latencies at once (the simulator's draw)."""
        if self.kind == "zero":
            return np.zeros(n)
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b, n)
        if self.kind == "loguniform":
            return np.exp(rng.uniform(math.log(self.a), math.log(self.b), n))
        return rng.lognormal(math.log(self.a), self.sigma, n)

    def describe(self) -> str:
        ms = lambda s: f"{s * 1000:g} ms"  # noqa: E731
        if self.kind == "zero":
            return "none added"
        if self.kind == "uniform":
            return f"uniform {ms(self.a)} to {ms(self.b)}"
        if self.kind == "loguniform":
            return f"log-uniform {ms(self.a)} to {ms(self.b)}"
        return f"log-normal, median {ms(self.a)}, p{self.q * 100:g} {ms(self.b)}"


@dataclass(frozen=True)
class Kind:
    """A device class or a network: its latency and where the figures come from (docs/profiles.md)."""

    name: str
    latency: Latency
    source: str


# Signing latency of one P-256 ECDSA signature, by where the device keeps its key.
DEVICE_CLASSES = {
    k.name: k
    for k in (
        Kind("software", Latency("zero"), "the signature is computed for real by cryptography, in microseconds"),
        Kind(
            "secure-element",
            Latency("uniform", 0.065, 0.115),
            "Infineon OPTIGA Trust M CalcSign ECDSA P-256 ~65 ms (Solution Reference Manual v3.70, 4.4.3); "
            "Microchip ATECC608 Sign 115 ms, the time CryptoAuthLib waits (calib_execution.c)",
        ),
        Kind(
            "tpm",
            Latency("lognormal", 0.200, 0.600, 0.95),
            "Chrome's study of TPM ECDSA P-256 signatures: 200 ms at p50, 600 ms at p95 (S. Kristoffersen, "
            "'TPM performance')",
        ),
        Kind(
            "smart-card",
            Latency("uniform", 0.241, 0.392),
            "ECTester's JavaCard table, ECDSA on 256-bit curves: 241 ms (NXP JCOP CJ2A081) to 392 ms "
            "(NXP JCOP31 v2.4.1)",
        ),
        Kind(
            "hsm-token",
            Latency("uniform", 0.114, 0.146),
            "YubiHSM 2 signatures measured by yubihsm-rs: 114 ms and 145.9 ms (Ed25519; no P-256 figure found)",
        ),
    )
}

# Round-trip time added to each exchange with the hub, by the device's network.
NETWORKS = {
    k.name: k
    for k in (
        Kind("loopback", Latency("zero"), "nothing added: the hub on this machine"),
        Kind(
            "wifi",
            Latency("lognormal", 0.020, 0.100, 0.90),
            "WiFi hop latency in the wild: over 50% of TCP packets above 20 ms, 10% above 100 ms (Sui et al., "
            "'WiFi can be the weakest link of round trip network latency in the wild', INFOCOM 2016)",
        ),
        Kind(
            "lte-m",
            Latency("uniform", 0.010, 0.015),
            "LTE Cat-M1 latency 10-15 ms (Keysight, 'NB-IoT and LTE Cat-M1 Field Measurements and SLA "
            "Verification'): the technology's figure, a lower bound for a round trip through a real core",
        ),
        Kind(
            "nb-iot",
            Latency("loguniform", 0.100, 8.0),
            "NB-IoT latency 100 ms to 8 s (same Keysight note); 837 ms measured by Ugwuanyi et al., "
            "Electronics 10(18):2224, 2021",
        ),
    )
}


@dataclass(frozen=True)
class Mix:
    """Named kinds with their shares of the fleet (shares sum to 1)."""

    kinds: tuple[Kind, ...]
    shares: tuple[float, ...]

    def pick(self, index: int, salt: float) -> Kind:
        """The kind of device ``index``: the same in every process, shares matched within one device."""
        u = (index * _PHI + salt) % 1.0
        edge = 0.0
        for kind, share in zip(self.kinds, self.shares):
            edge += share
            if u < edge:
                return kind
        return self.kinds[-1]

    @property
    def mean(self) -> float:
        return sum(k.latency.mean * s for k, s in zip(self.kinds, self.shares))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` latencies, each from a kind drawn by the shares (the simulator treats attempts alike)."""
        out = np.empty(n)
        which = rng.choice(len(self.kinds), size=n, p=np.array(self.shares))
        for i, kind in enumerate(self.kinds):
            hit = which == i
            out[hit] = kind.latency.sample(int(hit.sum()), rng)
        return out

    def describe(self) -> str:
        if len(self.kinds) == 1:
            return self.kinds[0].name
        return ", ".join(f"{k.name} {s:.0%}" for k, s in zip(self.kinds, self.shares))

    def to_json(self) -> dict[str, float]:
        return {k.name: round(s, 6) for k, s in zip(self.kinds, self.shares)}

    @property
    def waits(self) -> bool:
        return any(k.latency.kind != "zero" for k in self.kinds)


def parse_mix(text: str, table: dict[str, Kind], what: str) -> Mix:
    """``name`` or ``name:share,name:share`` (shares are relative: 70,30 and 7,3 are alike); ValueError naming
    the known kinds."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{what} is empty; choose from {', '.join(table)}")
    kinds, weights = [], []
    for part in parts:
        name, _, share = part.partition(":")
        name = name.strip().lower()
        if name not in table:
            raise ValueError(f"{what} {name!r} does not exist; the known ones are {', '.join(table)}")
        if name in (k.name for k in kinds):
            raise ValueError(f"{what} {name!r} is named twice")
        try:
            weight = float(share) if share.strip() else (100.0 if len(parts) == 1 else math.nan)
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"{what} {part!r}: give each kind a positive share, e.g. secure-element:70,tpm:30")
        kinds.append(table[name])
        weights.append(weight)
    total = sum(weights)
    return Mix(tuple(kinds), tuple(w / total for w in weights))


def _argtype(table: dict[str, Kind], what: str):
    """An argparse type: the mix checked, kept as its canonical text (``secure-element:70,tpm:30``) so that
    it travels in option lists and messages between processes."""

    def canonical(text: str) -> str:
        mix = parse_mix(text, table, what)
        return ",".join(f"{k.name}:{round(s * 100, 4):g}" for k, s in zip(mix.kinds, mix.shares))

    return checked(canonical)


device_profile = _argtype(DEVICE_CLASSES, "device class")  # --device-profile's argparse type
network_profile = _argtype(NETWORKS, "network")  # --network's


@dataclass(frozen=True)
class Profile:
    """A fleet's device classes and networks; what each device waits, and what that means on average."""

    devices: Mix
    network: Mix

    @classmethod
    def parse(cls, devices: str = "software", network: str = "loopback") -> Profile:
        return cls(parse_mix(devices, DEVICE_CLASSES, "device class"), parse_mix(network, NETWORKS, "network"))

    @classmethod
    def from_json(cls, data: dict | None) -> Profile:
        if not data:
            return cls.parse()
        return cls.parse(
            ",".join(f"{k}:{v}" for k, v in data["devices"].items()),
            ",".join(f"{k}:{v}" for k, v in data["network"].items()),
        )

    def to_json(self) -> dict:
        return {"devices": self.devices.to_json(), "network": self.network.to_json()}

    @property
    def waits(self) -> bool:
        return self.devices.waits or self.network.waits

    def describe(self) -> str:
        return f"devices {self.devices.describe()} over {self.network.describe()}"

    def device_class(self, index: int) -> Kind:
        return self.devices.pick(index, 0.0)

    def network_of(self, index: int) -> Kind:
        return self.network.pick(index, 0.5)

    def sign_delay(self, index: int, rng: random.Random) -> float:
        return self.device_class(index).latency.draw(rng)

    def round_trip(self, index: int, rng: random.Random) -> float:
        return self.network_of(index).latency.draw(rng)

    # -- what the waits add up to (Little's law: in flight = rate x time in flight) -----------------------
    def attempt_seconds(self, transport: str, admitted: bool = True) -> float:
        """The mean time the profile adds to one attempt, device side: HTTP two round trips and a signature
        (one round trip when the challenge is throttled), MQTT over TLS three round trips and a signature."""
        rtt, sign = self.network.mean, self.devices.mean
        if transport == "mqtts":
            return 3 * rtt + sign
        return 2 * rtt + sign if admitted else rtt

    def hub_holds_seconds(self) -> float:
        """The mean time the hub holds an attempt's state because of the device: a challenge awaiting its
        proof, or a TLS handshake awaiting the client's flight -- a round trip plus a signature."""
        return self.network.mean + self.devices.mean
