"""The hub simulator: an I/O-free authentication engine and the service around it.

The engine's face, with the signature schemes and certificate framing both ends of the protocol share::

    from hubsim import AuthEngine, EnginePolicy, ChainPolicy, AuthError

    engine = AuthEngine(secret=..., clock=time.time, random=os.urandom)
    record = engine.register_ca(pem)                       # then engine.verify_ca(record.id, ...)
    challenge = engine.begin(chain)                        # the device's upload, leaf first
    admission = engine.complete(challenge.token, signature)

The device registry and the replay guard are pluggable (:class:`DeviceRegistry`, :class:`ReplayGuard`);
the in-memory ones serve one process. Other packages use this face and the public modules that stand for
a protocol or a program of their own: :mod:`hubsim.mqtt` (the MQTT packets hub and devices speak),
:mod:`hubsim.tlsbio` (pyOpenSSL over memory BIOs), :mod:`hubsim.argtypes` (argument types of every
command line) and :mod:`hubsim.service` (the hub as a service).
"""

from hubsim.algorithms import UnsupportedKey, key_algorithm, sign, signature_args, verify_signature
from hubsim.chain import ChainPolicy, Validated
from hubsim.challenge import MemoryReplayGuard, ReplayGuard
from hubsim.encoding import der_header, pem_certificate, read_der_header
from hubsim.engine import Admission, AuthEngine, CARecord, Challenge, DeviceRegistry, EnginePolicy, MemoryRegistry
from hubsim.errors import CODES, AuthError

__all__ = [
    "CODES",
    "Admission",
    "AuthEngine",
    "AuthError",
    "CARecord",
    "ChainPolicy",
    "Challenge",
    "DeviceRegistry",
    "EnginePolicy",
    "MemoryRegistry",
    "MemoryReplayGuard",
    "ReplayGuard",
    "UnsupportedKey",
    "Validated",
    "der_header",
    "key_algorithm",
    "pem_certificate",
    "read_der_header",
    "sign",
    "signature_args",
    "verify_signature",
]
