"""The hub simulator: an I/O-free authentication engine and the service around it.

The engine's face, with the signature schemes and certificate framing both ends of the protocol share::

    engine = AuthEngine(secret=..., clock=time.time, random=os.urandom)
    record = engine.register_ca(pem)                       # then engine.verify_ca(record.id, ...)
    challenge = engine.begin(chain)                        # the device's upload, leaf first
    admission = engine.complete(challenge.token, signature)

Registry and replay guard are pluggable (:class:`DeviceRegistry`, :class:`ReplayGuard`). Other packages
use this face and the modules that stand for a protocol or a program of their own: :mod:`hubsim.mqtt`,
:mod:`hubsim.tlsbio`, :mod:`hubsim.argtypes` (every command line's argument types), :mod:`hubsim.service`.
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
