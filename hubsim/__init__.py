"""The hub simulator: an I/O-free authentication engine and the thin HTTP service around it.

The engine's public face (the service, the benchmarks and the tests use nothing else of ``hubsim``'s
internals)::

    from hubsim import AuthEngine, EnginePolicy, ChainPolicy, AuthError

    engine = AuthEngine(secret=..., clock=time.time, random=os.urandom)
    record = engine.register_ca(pem)                       # then engine.verify_ca(record.id, ...)
    challenge = engine.begin(chain)                        # the device's upload, leaf first
    admission = engine.complete(challenge.token, signature)

The device registry and the replay guard are pluggable (:class:`DeviceRegistry`, :class:`ReplayGuard`);
the in-memory ones serve one process.
"""

from hubsim.algorithms import UnsupportedKey, key_algorithm, sign, verify_signature
from hubsim.chain import ChainPolicy, Validated
from hubsim.challenge import MemoryReplayGuard, ReplayGuard
from hubsim.engine import Admission, AuthEngine, CARecord, Challenge, DeviceRegistry, EnginePolicy, MemoryRegistry
from hubsim.errors import CODES, AuthError

__all__ = [
    "Admission", "AuthEngine", "AuthError", "CARecord", "CODES", "ChainPolicy", "Challenge", "DeviceRegistry",
    "EnginePolicy", "MemoryRegistry", "MemoryReplayGuard", "ReplayGuard", "UnsupportedKey", "Validated",
    "key_algorithm", "sign", "verify_signature",
]
