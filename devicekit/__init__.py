"""The device side of certstorm: custodians and devices of the supply-chain PKI, fleets of millions of
device identities on disk, and the clients a device or an operator uses to reach a hub (HTTP two-step,
MQTT over mutual TLS, the management API), with the reconnect backoff of real device SDKs; keys held in
PKCS#11 tokens (:mod:`devicekit.hsm`).

The hub (:mod:`hubsim`) never imports this package: the hub cannot reach a device's private key.
"""

from devicekit.backoff import PRESETS, Backoff, preset
from devicekit.fleet import DeviceIdentity, Fleet, derive_fleet, generate_fleet
from devicekit.httpdevice import authenticate, authenticate_all, register_and_prove
from devicekit.hubclient import HubClient, HubError, admin_token
from devicekit.mqtts import MqttsClient, MqttsFailure, MqttsTarget
from devicekit.pki import ALGORITHMS, COMPANY, MAX_DEPTH, Custodian, Device, SupplyChain

__all__ = [
    "ALGORITHMS",
    "COMPANY",
    "MAX_DEPTH",
    "PRESETS",
    "Backoff",
    "Custodian",
    "Device",
    "DeviceIdentity",
    "Fleet",
    "HubClient",
    "HubError",
    "MqttsClient",
    "MqttsFailure",
    "MqttsTarget",
    "SupplyChain",
    "admin_token",
    "authenticate",
    "authenticate_all",
    "derive_fleet",
    "generate_fleet",
    "preset",
    "register_and_prove",
]
